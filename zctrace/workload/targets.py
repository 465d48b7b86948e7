"""Network targets for the zerocopy workload: where the sends go, and how they end.

- ``loopback``: 127.0.0.1 with a receiver thread; zerocopy always ends COPIED (local delivery).
- ``sink``: a veth pair into a private netns whose host side drops every packet at enqueue
  (root ``pfifo limit 0``, MTU 65535); UDP sends up to the MTU really go out zero-copy.
- ``netns``: a veth pair into a private netns with a receiver process inside (netns_receiver.py);
  COPIED on delivery.
- ``dummy``: a dummy device (where the kernel has one): frees every packet after transmit.
- ``bridge``: a bridge without ports, ARP off: like dummy (packet taps and TX timestamps see
  every packet, then it is freed), where such a bridge has carrier (6.18 yes, 6.12 no).

Every target is a context manager that removes what it created (namespace, veth pair, qdisc,
receiver) on any exit, including exceptions and KeyboardInterrupt. Names carry the pid and a
per-process sequence number; veth subnets are /30s of 198.18.0.0/15 picked under a file lock,
so parallel runs do not collide. Traffic only ever goes to 127.0.0.1 or into our namespaces.
What a process killed with SIGKILL could not remove, `reclaim()` finds by those names and
removes once that process is gone.
"""

from __future__ import annotations

import fcntl
import ipaddress
import itertools
import os
import re
import select
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

from pyroute2 import IPRoute, netns
from pyroute2.netlink.exceptions import NetlinkError

from .teardown import signals_deferred, unwind_on_sigterm

TARGETS = ("loopback", "sink", "netns", "dummy", "bridge")
UDP_ONLY = ("sink", "dummy", "bridge")  # nothing answers there: no TCP handshake
PROTOS = ("udp", "tcp")

VETH_MTU = 65535
BENCH_NET = ipaddress.ip_network("198.18.0.0/15")  # RFC 2544 benchmark range
RECEIVER_PORT = 9000
_LOCK_PATH = "/run/lock/zctrace-workload.lock"
_NUD_PERMANENT = 0x80
RECEIVER = Path(__file__).with_name("netns_receiver.py")  # the netns target's receiver program
_READY_TIMEOUT = 30.0  # a Python receiver starting under TCG on a busy host has taken over 10 s
_seq = itertools.count()
# zc<pid><kind letter><seq>: a namespace or dummy/bridge; a veth's host end adds "h".
_OWNED = re.compile(r"zc(\d+)[a-z]\d+h?")
_open_here = 0  # targets this process has open (its own names are leftovers when none is)


@dataclass(frozen=True)
class Endpoint:
    """Where a workload sends: target name, destination address, family, egress interface."""

    name: str
    addr: tuple[str, int]
    family: int
    ifname: str | None


@dataclass(frozen=True)
class _Veth:
    netns: str
    host: str
    peer: str
    host_addr: str
    peer_addr: str


def check_target(name: str, proto: str) -> None:
    """Raise ValueError (one sentence) if ``name``/``proto`` is not a usable combination."""
    if name not in TARGETS:
        raise ValueError(f"unknown target {name!r}; choose one of {', '.join(TARGETS)}")
    if proto not in PROTOS:
        raise ValueError(f"unknown protocol {proto!r}; choose udp or tcp")
    if name in UDP_ONLY and proto == "tcp":
        raise ValueError(f"tcp cannot use the {name} target (it drops every packet, so no "
                         "handshake completes); use udp, or the loopback or netns target")


@contextmanager
def open_target(name: str, proto: str) -> Iterator[Endpoint]:
    """Set up target ``name`` for ``proto`` ("udp"/"tcp"), yield its Endpoint, always tear down."""
    global _open_here
    check_target(name, proto)
    owner = os.getpid()
    stack = ExitStack()
    sigterm = unwind_on_sigterm()
    _open_here += 1
    try:
        # Setup is never interrupted half-way (an interrupt inside pyroute2's event loop or a
        # fork hook is lost or leaves pyroute2 broken); a signal lands once it is done.
        with signals_deferred():
            if name == "loopback":
                endpoint = _loopback(stack, proto)
            elif name == "sink":
                endpoint = _sink(stack)
            elif name in ("dummy", "bridge"):
                endpoint = _freeing_device(stack, name)
            else:
                endpoint = _netns(stack, proto)
        yield endpoint
    finally:
        if os.getpid() != owner:
            # A fork child (pyroute2 forks for netns work) unwinding an exception through our
            # frames: the target is the parent's, so leave it alone and end the child here.
            os._exit(1)
        try:
            with signals_deferred():
                stack.close()
        finally:
            _open_here -= 1
            sigterm.close()


# --- loopback --------------------------------------------------------------------------------

def _loopback(stack: ExitStack, proto: str) -> Endpoint:
    tcp = proto == "tcp"
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM if tcp else socket.SOCK_DGRAM)
    stack.callback(sock.close)
    sock.bind(("127.0.0.1", 0))
    if tcp:
        sock.listen(8)
    drain = _DrainThread(sock, tcp)
    stack.callback(drain.stop)
    drain.start()
    return Endpoint("loopback", sock.getsockname(), socket.AF_INET, "lo")


class _DrainThread(threading.Thread):
    """Reads and discards everything arriving on a bound UDP or listening TCP socket."""

    def __init__(self, sock: socket.socket, tcp: bool) -> None:
        super().__init__(name="zctrace-drain", daemon=True)
        self._sock = sock
        self._tcp = tcp
        self._conn: socket.socket | None = None
        self._stopping = False

    def run(self) -> None:
        buf = bytearray(1 << 16)
        try:
            if not self._tcp:
                recv_into = self._sock.recv_into
                while not self._stopping:
                    recv_into(buf)
                return
            while not self._stopping:
                conn, _ = self._sock.accept()
                self._conn = conn
                with conn:
                    recv_into = conn.recv_into
                    while recv_into(buf):
                        pass
        except OSError:
            pass  # socket shut down by stop()

    def stop(self) -> None:
        """Wake the thread (shutdown), wait for it, close any accepted connection."""
        self._stopping = True
        for sock in (self._sock, self._conn):
            if sock is not None:
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass  # not connected (still wakes readers) or already closed
        if self.is_alive():
            self.join(2.0)


# --- veth targets ----------------------------------------------------------------------------

def _sink(stack: ExitStack) -> Endpoint:
    veth = _veth_pair(stack, "s")
    # No ARP on the sink (like a dummy device): its permanent neighbour entry has been seen to
    # vanish a second after creation in the VM, and then packets wait for ARP replies the drop
    # qdisc never lets out, so they never reach the device (tc egress, timestamps, taps).
    subprocess.run(["ip", "link", "set", "dev", veth.host, "arp", "off"], check=True)
    with IPRoute() as ipr:
        (index,) = ipr.link_lookup(ifname=veth.host)
        ipr.tc("add", "pfifo", index=index, handle="1:", limit=0)
    return Endpoint("sink", (veth.peer_addr, RECEIVER_PORT), socket.AF_INET, veth.host)


def _freeing_device(stack: ExitStack, kind: str) -> Endpoint:
    """A device that frees every packet it transmits, after packet taps and TX timestamps have
    seen it (unlike the sink's qdisc drop), MTU 65535: a dummy device (the published benchmark's
    sink), or a bridge without ports (it floods to no one) with ARP off."""
    if kind == "dummy":
        subprocess.run(["modprobe", "dummy"], capture_output=True)  # built in, or absent: fine
    name = f"zc{os.getpid()}{kind[0]}{next(_seq) % 1000}"
    stack.callback(_delete_link, name)
    with _lock(), IPRoute() as ipr:
        try:
            ipr.link("add", ifname=name, kind=kind)
        except NetlinkError:
            raise RuntimeError(f"this kernel has no {kind} network device (modprobe {kind} failed); "
                               "use the sink target") from None
        net = _free_subnet(ipr)
        host_addr, peer_addr = (str(a) for a in net.hosts())
        (index,) = ipr.link_lookup(ifname=name)
        _disable_ipv6(name)
        ipr.link("set", index=index, mtu=VETH_MTU)
        ipr.addr("add", index=index, address=host_addr, prefixlen=net.prefixlen)
        ipr.link("set", index=index, state="up")
        if kind == "dummy":
            ipr.neigh("add", dst=peer_addr, lladdr="02:00:00:00:00:01", ifindex=index, state=_NUD_PERMANENT)
        elif not ipr.link("get", index=index)[0].get("IFLA_CARRIER"):
            # Seen on 6.12: no carrier without ports, and every packet is dropped before transmit.
            raise RuntimeError("a bridge without ports has no carrier on this kernel (it drops "
                               "before transmit); use the dummy or sink target")
    if kind == "bridge":
        subprocess.run(["ip", "link", "set", "dev", name, "arp", "off"], check=True)
    return Endpoint(kind, (peer_addr, RECEIVER_PORT), socket.AF_INET, name)


def _netns(stack: ExitStack, proto: str) -> Endpoint:
    veth = _veth_pair(stack, "n")
    _start_receiver(stack, veth, proto)
    return Endpoint("netns", (veth.peer_addr, RECEIVER_PORT), socket.AF_INET, veth.host)


def _veth_pair(stack: ExitStack, tag: str) -> _Veth:
    """A veth pair (MTU 65535, up, a free /30) with its peer in a new private netns.

    Cleanups are registered before each resource exists and tolerate its absence, so an
    interrupt at any point leaves nothing behind.
    """
    base = f"zc{os.getpid()}{tag}{next(_seq) % 1000}"  # <= 14 chars + suffix <= IFNAMSIZ-1
    host, peer = base + "h", base + "p"
    stack.callback(_remove_netns, base)
    stack.callback(_delete_link, host)  # LIFO: the link goes first, then the namespace
    netns.create(base)
    with _lock(), IPRoute() as ipr:
        net = _free_subnet(ipr)
        host_addr, peer_addr = (str(a) for a in net.hosts())
        ipr.link("add", ifname=host, kind="veth", peer={"ifname": peer, "net_ns_fd": base})
        (index,) = ipr.link_lookup(ifname=host)
        _disable_ipv6(host)  # keep router/neighbour solicitations off the traced device
        ipr.link("set", index=index, mtu=VETH_MTU)
        ipr.addr("add", index=index, address=host_addr, prefixlen=net.prefixlen)
        ipr.link("set", index=index, state="up")
    with IPRoute(netns=base) as nsr:
        (pindex,) = nsr.link_lookup(ifname=peer)
        nsr.link("set", index=pindex, mtu=VETH_MTU, state="up")
        nsr.addr("add", index=pindex, address=peer_addr, prefixlen=net.prefixlen)
        mac = nsr.link("get", index=pindex)[0].get("IFLA_ADDRESS")
    with IPRoute() as ipr:
        ipr.neigh("add", dst=peer_addr, lladdr=mac, ifindex=index, state=_NUD_PERMANENT)
    return _Veth(base, host, peer, host_addr, peer_addr)


@contextmanager
def _lock() -> Iterator[None]:
    """Serialise subnet choice between concurrent runs on this machine."""
    fd = os.open(_LOCK_PATH, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _free_subnet(ipr: IPRoute) -> ipaddress.IPv4Network:
    """The first /30 of 198.18.0.0/15 that no IPv4 address or route in this netns touches."""
    used = [ipaddress.ip_network(f"{m.get('IFA_ADDRESS')}/{m['prefixlen']}", strict=False)
            for m in ipr.addr("dump", family=socket.AF_INET)]
    used += [ipaddress.ip_network(f"{m.get('RTA_DST')}/{m['dst_len']}")
             for m in ipr.route("dump", family=socket.AF_INET)
             if m.get("RTA_DST") and m["dst_len"] > 0]
    for net in BENCH_NET.subnets(new_prefix=30):
        if not any(net.overlaps(u) for u in used):
            return net
    raise RuntimeError("no free /30 left in 198.18.0.0/15 for a veth target")


def _disable_ipv6(ifname: str) -> None:
    try:
        with open(f"/proc/sys/net/ipv6/conf/{ifname}/disable_ipv6", "w") as f:
            f.write("1")
    except OSError:
        pass  # IPv6 disabled or absent: nothing to quieten


def _delete_link(ifname: str) -> None:
    with IPRoute() as ipr:
        for index in ipr.link_lookup(ifname=ifname):
            try:
                ipr.link("del", index=index)
            except NetlinkError as e:
                if e.code != 19:  # ENODEV: already gone
                    raise


def _remove_netns(name: str) -> None:
    if name in netns.listnetns():
        netns.remove(name)


# --- leftovers of killed processes --------------------------------------------------------

@dataclass(frozen=True)
class Leftover:
    """A namespace or network device a target made, whose process is gone."""

    kind: str  # "netns", or the device's kind: veth, dummy, bridge
    name: str
    pid: int


def leftovers() -> list[Leftover]:
    """What targets of processes that no longer exist left in /run/netns and in this network
    namespace (devices first: a veth goes with its pair)."""
    found = []
    with IPRoute() as ipr:
        for link in ipr.get_links():
            name = link.get("IFLA_IFNAME")
            info = link.get("IFLA_LINKINFO")
            kind = info.get("IFLA_INFO_KIND") if info else None
            owner = _OWNED.fullmatch(name or "")
            if owner and kind in ("veth", "dummy", "bridge") and not _alive(int(owner[1])):
                found.append(Leftover(kind, name, int(owner[1])))
    for name in sorted(netns.listnetns()):
        owner = _OWNED.fullmatch(name)
        if owner and not _alive(int(owner[1])):
            found.append(Leftover("netns", name, int(owner[1])))
    return found


def remove(leftover: Leftover) -> None:
    """Delete a leftover (OSError or NetlinkError if that is not allowed)."""
    if leftover.kind == "netns":
        _remove_netns(leftover.name)
    else:
        _delete_link(leftover.name)


def reclaim() -> tuple[list[Leftover], list[tuple[Leftover, str]]]:
    """Remove every leftover: (removed, [(not removed, why)])."""
    removed, failed = [], []
    with signals_deferred():
        for leftover in leftovers():
            try:
                remove(leftover)
                removed.append(leftover)
            except (OSError, NetlinkError) as e:
                failed.append((leftover, str(e)))
    return removed, failed


def _alive(pid: int) -> bool:
    """Is the process that made a name still there (a zombie is not)?"""
    if pid == os.getpid():
        return _open_here > 0
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rpartition(")")[2].split()[0] != "Z"
    except (OSError, IndexError):
        return False


# --- receiver process inside the namespace ---------------------------------------------------

def _start_receiver(stack: ExitStack, veth: _Veth, proto: str) -> None:
    nsfd = os.open(f"/run/netns/{veth.netns}", os.O_RDONLY)
    try:
        proc = subprocess.Popen(
            [sys.executable, str(RECEIVER), str(nsfd), proto, veth.peer_addr,
             str(RECEIVER_PORT), str(os.getpid())],
            pass_fds=(nsfd,), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE)
    finally:
        os.close(nsfd)
    stack.callback(_stop_process, proc)
    ready, _, _ = select.select([proc.stdout], [], [], _READY_TIMEOUT)
    if not ready or proc.stdout.readline() != b"ready\n":
        proc.kill()
        proc.wait()
        err = proc.stderr.read().decode(errors="replace").strip().splitlines()
        raise RuntimeError(f"netns receiver did not start: {err[-1] if err else 'timed out'}")


def _stop_process(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(2.0)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    for pipe in (proc.stdout, proc.stderr):
        if pipe is not None:
            pipe.close()
