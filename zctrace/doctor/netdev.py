"""Network interfaces of this network namespace, and whether zerocopy sends can succeed on them.

Only the namespace zctrace runs in is looked at (run `nsenter --net=... zctrace doctor` for
another). Facts come from rtnetlink (MTU, kind, root qdisc), ethtool netlink (the device's
active features: pyroute2 0.9 has no ethtool netlink FEATURES_GET of its own, so the request is
built here on its generic netlink classes) and /proc/net/packet (packet taps).

What the verdicts rest on (docs/kernel.md, "What the verdicts rest on"; kernel 6.12-6.18):
- UDP (`__ip_append_data`) goes zero-copy only with NETIF_F_SG and CHECKSUM_PARTIAL, which needs
  checksum offload and payload + 28 B (IPv4; 48 B IPv6) <= MTU, or UDP_SEGMENT; otherwise the data
  is copied at send and the notification says COPIED.
- TCP sockets always get SG and HW_CSUM in their route caps (`sk_setup_caps`: TCP is always
  GSO), so the send pins pages; a device without SG then gets the data copied into linear
  segments by software GSO / linearisation, which the notification does not report.
- Local delivery (loopback, a veth peer handing the packet to its IP stack), packet taps
  (AF_PACKET ETH_P_ALL), tun/tap and netkit copy late (skb_copy_ubufs): COPIED.
- A root qdisc that drops at enqueue (pfifo/bfifo limit 0) frees the packet before any of
  that: a sink, where UDP zerocopy succeeds (checked on the sink veth) — and so does a dummy device.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field

from pyroute2 import IPRoute
from pyroute2.netlink import NLM_F_REQUEST, genlmsg
from pyroute2.netlink.exceptions import NetlinkError
from pyroute2.netlink.generic import GenericNetlinkSocket
from pyroute2.netlink.generic.ethtool import (ETHTOOL_GENL_NAME, ETHTOOL_GENL_VERSION,
                                              ETHTOOL_MSG_FEATURES_GET, ethtoolbitset,
                                              ethtoolheader)

UDP4_OVERHEAD = 28  # IPv4 + UDP headers
UDP6_OVERHEAD = 48  # IPv6 + UDP headers
_IFF_UP = 0x1
_IFF_LOOPBACK = 0x8
_TC_H_ROOT = 0xFFFFFFFF
_ETH_P_ALL = 0x0003

# ethtool feature names (netdev_features_strings) -> our short names.
FEATURES = {
    "tx-scatter-gather": "sg",
    "tx-checksum-ipv4": "ip_csum",
    "tx-checksum-ipv6": "ipv6_csum",
    "tx-checksum-ip-generic": "hw_csum",
    "tx-tcp-segmentation": "tso",
    "tx-generic-segmentation": "gso",
    "tx-udp-segmentation": "udp_gso",
}


@dataclass(frozen=True)
class Tap:
    """An AF_PACKET socket that receives every packet sent (ETH_P_ALL) on one or all devices."""

    inode: int
    ifindex: int  # 0: all devices
    pid: int | None
    comm: str

    def label(self) -> str:
        return f"pid {self.pid} {self.comm}" if self.pid else f"socket inode {self.inode}"


@dataclass(frozen=True)
class Interface:
    """What decides zerocopy on one device; `features` is None when ethtool could not tell."""

    name: str
    index: int
    kind: str  # loopback, veth, tun, dummy, ..., or "device" (no rtnetlink kind: hardware)
    mtu: int
    up: bool
    qdisc: str  # root qdisc, e.g. "pfifo limit 0"; "" if none
    drops_all: bool  # the root qdisc drops every packet at enqueue
    features: dict[str, bool] | None
    features_error: str = ""
    taps: tuple[Tap, ...] = ()

    def csum(self, ipv6: bool = False) -> bool:
        """TX checksum offload for TCP/UDP over IPv4 (or IPv6)."""
        f = self.features or {}
        return f.get("hw_csum", False) or f.get("ipv6_csum" if ipv6 else "ip_csum", False)


@dataclass(frozen=True)
class Problem:
    """Why zerocopy fails (or may fail) on an interface: a reason name, what, what to do."""

    reason: str
    detail: str
    advice: str


@dataclass(frozen=True)
class Assessment:
    """Can a zerocopy send through this interface end zero-copy? udp/tcp: yes, no, depends, -."""

    udp: str
    tcp: str
    summary: str
    problems: list[Problem] = field(default_factory=list)


# --- facts -----------------------------------------------------------------------------------

class _FeaturesMsg(genlmsg):
    nla_map = (("ETHTOOL_A_FEATURES_UNSPEC", "none"),
               ("ETHTOOL_A_FEATURES_HEADER", "ethtoolheader"),
               ("ETHTOOL_A_FEATURES_HW", "ethtoolbitset"),
               ("ETHTOOL_A_FEATURES_WANTED", "ethtoolbitset"),
               ("ETHTOOL_A_FEATURES_ACTIVE", "ethtoolbitset"),
               ("ETHTOOL_A_FEATURES_NOCHANGE", "ethtoolbitset"))
    ethtoolheader = ethtoolheader
    ethtoolbitset = ethtoolbitset


def read_features(ifname: str) -> dict[str, bool]:
    """Active features of `ifname` (ETHTOOL_MSG_FEATURES_GET, verbose bitset), short names."""
    sock = GenericNetlinkSocket()
    try:
        sock.bind(ETHTOOL_GENL_NAME, _FeaturesMsg)
        msg = _FeaturesMsg()
        msg["cmd"] = ETHTOOL_MSG_FEATURES_GET
        msg["version"] = ETHTOOL_GENL_VERSION
        msg["attrs"].append(("ETHTOOL_A_FEATURES_HEADER",
                             {"attrs": [["ETHTOOL_A_HEADER_DEV_NAME", ifname]]}))
        (reply,) = list(sock.nlm_request(msg, msg_type=sock.prid, msg_flags=NLM_F_REQUEST))
    finally:
        sock.close()
    active = reply.get_attr("ETHTOOL_A_FEATURES_ACTIVE")
    nomask = _has(active, "ETHTOOL_A_BITSET_NOMASK")  # then only the bits that are set are listed
    on = {bit.get_attr("ETHTOOL_A_BITSET_BIT_NAME")
          for bit in active.get_attr("ETHTOOL_A_BITSET_BITS").get_attrs("ETHTOOL_A_BITSET_BITS_BIT")
          if nomask or _has(bit, "ETHTOOL_A_BITSET_BIT_VALUE")}
    return {short: name in on for name, short in FEATURES.items()}


def _has(nla, name: str) -> bool:
    """Whether attribute `name` is present (pyroute2 decodes a flag attribute's value as None)."""
    return any(attr[0] == name for attr in nla["attrs"])


def packet_taps() -> list[Tap]:
    """ETH_P_ALL packet sockets of this namespace (/proc/net/packet), with their owner if found."""
    taps = []
    with open("/proc/net/packet") as f:
        next(f)
        for line in f:
            cols = line.split()
            if int(cols[3], 16) == _ETH_P_ALL:
                taps.append((int(cols[8]), int(cols[4])))
    owners = _socket_owners({inode for inode, _ in taps}) if taps else {}
    return [Tap(inode, ifindex, *owners.get(inode, (None, ""))) for inode, ifindex in taps]


def _socket_owners(inodes: set[int]) -> dict[int, tuple[int, str]]:
    """{socket inode: (pid, comm)} for the processes holding those sockets."""
    want = {f"socket:[{i}]": i for i in inodes}
    found: dict[int, tuple[int, str]] = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            for fd in os.listdir(f"/proc/{pid}/fd"):
                inode = want.get(os.readlink(f"/proc/{pid}/fd/{fd}"))
                if inode is not None and inode not in found:
                    with open(f"/proc/{pid}/comm") as c:
                        found[inode] = (int(pid), c.read().strip())
        except OSError:
            continue  # gone, or not ours to read
    return found


def _root_qdiscs(ipr: IPRoute) -> dict[int, tuple[str, bool]]:
    """{ifindex: (description, drops every packet at enqueue)} of root qdiscs."""
    out = {}
    for q in ipr.get_qdiscs():
        if q["parent"] != _TC_H_ROOT:
            continue
        kind = q.get_attr("TCA_KIND")
        opts = q.get_attr("TCA_OPTIONS")
        limit = opts.get("limit") if kind in ("pfifo", "bfifo") and isinstance(opts, dict) else None
        out[q["index"]] = (f"{kind} limit {limit}" if limit is not None else kind, limit == 0)
    return out


def interfaces() -> list[Interface]:
    """Every interface of this network namespace, with its features, qdisc and taps."""
    taps = packet_taps()
    with IPRoute() as ipr:
        links = list(ipr.get_links())
        qdiscs = _root_qdiscs(ipr)
    out = []
    for link in links:
        name = link.get_attr("IFLA_IFNAME")
        info = link.get_attr("IFLA_LINKINFO")
        kind = (info.get_attr("IFLA_INFO_KIND") if info else None) or "device"
        if link["flags"] & _IFF_LOOPBACK:
            kind = "loopback"
        qdisc, drops = qdiscs.get(link["index"], ("", False))
        try:
            features, error = read_features(name), ""
        except (NetlinkError, OSError) as e:
            features, error = None, str(e)
        out.append(Interface(
            name=name, index=link["index"], kind=kind, mtu=link.get_attr("IFLA_MTU"),
            up=bool(link["flags"] & _IFF_UP), qdisc=qdisc, drops_all=drops, features=features,
            features_error=error,
            taps=tuple(t for t in taps if t.ifindex in (0, link["index"]))))
    return out


# --- verdicts --------------------------------------------------------------------------------

def assess(iface: Interface, size: int | None = None) -> Assessment:
    """Whether zerocopy sends leaving through `iface` can end zero-copy; `size` = UDP payload."""
    name = iface.name
    if iface.kind == "loopback":
        return Assessment("no", "no", "local delivery always copies", [Problem(
            "local_delivery",
            f"{name} is loopback: every packet is received on this host, and delivery to a local "
            "socket copies it (skb_orphan_frags_rx); sends to this host's own addresses go here too",
            "benchmark against another host or the sink veth; loopback can never be zero-copy")])
    if not iface.up:
        return Assessment("-", "-", "down", [])
    if iface.kind in ("tun", "tap", "netkit"):
        return Assessment("no", "no", f"{iface.kind} transmit copies", [Problem(
            "tun_tap", f"{name} is a {iface.kind} device: its transmit copies zerocopy frags "
                       "before handing the packet on (skb_orphan_frags)",
            "zerocopy cannot succeed through tun/tap/netkit; send over the underlying device")])
    if iface.features is None:
        return Assessment("?", "?", "features unknown", [Problem(
            "unknown", f"ethtool netlink could not read the features of {name}: "
                       f"{iface.features_error}", "check with `ethtool -k " + name + "`")])
    if not iface.features["sg"]:
        return Assessment("no", "no", "no scatter-gather", [Problem(
            "no_sg",
            f"{name} has scatter-gather off: UDP zerocopy sends are copied at send (COPIED); "
            "TCP pins the pages but software GSO/linearisation copies them for this device, "
            "and the notification does not say so",
            f"turn scatter-gather on: ethtool -K {name} sg on")])
    problems: list[Problem] = []
    udp_ok = True
    if not iface.csum():
        udp_ok = False
        problems.append(Problem(
            "no_csum_offload",
            f"{name} has no IPv4 TX checksum offload: UDP zerocopy sends are copied at send "
            "(no CHECKSUM_PARTIAL); TCP checksums in software at transmit, which may linearise "
            "(copy) the data", f"turn checksum offload on: ethtool -K {name} tx on"))
    if size is not None and size + UDP4_OVERHEAD > iface.mtu:
        udp_ok = False
        problems.append(Problem(
            "over_mtu",
            f"UDP payload {size} B + {UDP4_OVERHEAD} B headers > MTU {iface.mtu}: copied at send "
            "unless the application segments with UDP_SEGMENT",
            f"set MTU >= {size + UDP4_OVERHEAD} on {name} (ip link set {name} mtu "
            f"{size + UDP4_OVERHEAD}) or use UDP_SEGMENT"))
    udp_limit = (f"UDP datagrams up to {iface.mtu - UDP4_OVERHEAD} B (IPv4; "
                 f"{iface.mtu - UDP6_OVERHEAD} B IPv6) per send, larger with UDP_SEGMENT")
    if iface.drops_all or iface.kind == "dummy":
        why = f"root qdisc {iface.qdisc}" if iface.drops_all else "dummy device"
        return Assessment("yes" if udp_ok else "no", "no",
                          f"sink ({why} drops every packet before taps or delivery; TCP cannot "
                          "connect): " + (udp_limit if udp_ok else "UDP copied at send"), problems)
    if iface.taps:
        who = ", ".join(t.label() for t in iface.taps)
        problems.append(Problem(
            "packet_tap",
            f"packet capture on {name} ({who}): each packet is copied for it "
            "(dev_queue_xmit_nit), so notifications say COPIED though the wire send is zero-copy",
            f"stop the packet capture on {name} ({who})"))
        return Assessment("no", "no", "packet tap", problems)
    if iface.kind == "veth":
        problems.append(Problem(
            "local_delivery",
            f"{name} is a veth: its peer receives every packet. Zerocopy holds only if the peer "
            "drops it or passes it on below IP (bridge port, tc redirect); handing it to the IP "
            "stack copies it (skb_orphan_frags_rx in __netif_receive_skb_core, before the "
            "protocol handler: a local socket and IP forwarding alike, up to 6.18)",
            f"to measure the sender alone, drop at {name} (tc qdisc replace dev {name} root "
            "pfifo limit 0) as the sink target does"))
        return Assessment("depends" if udp_ok else "no", "depends", "veth: depends on the peer",
                          problems)
    tcp = "yes" if iface.csum() else "depends"
    return Assessment("yes" if udp_ok else "no", tcp,
                      udp_limit if udp_ok else "UDP copied at send", problems)


def to_json(iface: Interface, verdict: Assessment) -> dict:
    """One interface and its verdict as plain data."""
    return {**asdict(iface), **asdict(verdict)}
