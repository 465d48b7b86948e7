"""Saved crossover measurements (`zctrace bench --suite crossover`) and the paths they hold for.

A measurement is a JSON file in the state directory, one per (target, protocol):
$ZCTRACE_STATE_DIR, else systemd's $STATE_DIRECTORY (the exporter unit's StateDirectory=zctrace),
else /var/lib/zctrace. It holds where it was measured (the target and the path: the egress
device's kind, driver and MTU), the kernel release, date, engine and zctrace version, and per size
the median CPU time per request (and requests/s) of every column with the kernel's verdict; and
per API the crossover size. trace, top and the exporter read it for their advice (advice.py):
a measurement from another kernel release or another path is not used, and the advice says why.
docs/advice.md is the reference.
"""

from __future__ import annotations

import ctypes
import fcntl
import json
import os
import platform
import socket
import struct
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path
from typing import Callable

DEFAULT_STATE_DIR = Path("/var/lib/zctrace")
PREFIX = "crossover-"
FORMAT = 1

# The APIs the suite compares, each zerocopy column against its baselines (the first one is the
# baseline the advice uses for that API).
APIS = {
    "msg_zerocopy": ("msg_zc/32", ("copy",)),
    "send_zc": ("zc/8", ("uring", "copy")),
    "send_zc_fixed": ("zc-fixed/8", ("uring", "copy")),
}
COMMAND = "zctrace bench --suite crossover"


def state_dir() -> Path:
    """Where saved measurements live (see the module doc)."""
    return Path(os.environ.get("ZCTRACE_STATE_DIR") or os.environ.get("STATE_DIRECTORY", "").split(":")[0]
                or DEFAULT_STATE_DIR)


def version() -> str:
    try:
        return metadata.version("zctrace")
    except metadata.PackageNotFoundError:
        return "unknown"


@dataclass(frozen=True)
class NetPath:
    """What a send's path is, for matching measurements: the egress device's kind (rtnetlink
    kind: veth, dummy, ..., `loopback`, or `device` for hardware), its driver and MTU."""

    kind: str
    driver: str
    mtu: int
    ifname: str = ""  # informational: names differ between runs (the sink's veth is made per run)
    qdisc: str = ""  # informational: the root qdisc (the sink drops at enqueue)

    def same(self, other: NetPath) -> bool:
        return (self.kind, self.mtu) == (other.kind, other.mtu)

    def describe(self) -> str:
        return f"{self.kind} (driver {self.driver}, MTU {self.mtu})"

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, doc: dict) -> NetPath:
        return cls(str(doc["kind"]), str(doc.get("driver", "")), int(doc["mtu"]), str(doc.get("ifname", "")),
                   str(doc.get("qdisc", "")))


def _ethtool_driver(ifname: str) -> str:
    """The driver ethtool reports for a device (ETHTOOL_GDRVINFO over an AF_INET socket: no
    netlink, which the exporter's unit does not allow); '' if it reports none."""
    info = ctypes.create_string_buffer(struct.pack("I", 3), 196)  # ETHTOOL_GDRVINFO; struct ethtool_drvinfo
    ifreq = struct.pack("16sP", ifname.encode()[:15], ctypes.addressof(info)).ljust(40, b"\0")
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            fcntl.ioctl(s.fileno(), 0x8946, ifreq)  # SIOCETHTOOL
    except OSError:
        return ""
    return info.raw[4:36].split(b"\0")[0].decode(errors="replace")


def _qdisc(ifindex: int) -> str:
    """The root qdisc (informational; needs rtnetlink: '' where it is not allowed)."""
    try:
        from pyroute2 import IPRoute
        with IPRoute() as ipr:
            for q in ipr.get_qdiscs(index=ifindex):
                if q["parent"] == 0xFFFFFFFF:
                    opts = q.get_attr("TCA_OPTIONS")
                    limit = opts.get("limit") if isinstance(opts, dict) else None
                    return q.get_attr("TCA_KIND") + (f" limit {limit}" if limit is not None else "")
    except Exception:  # no netlink here (the exporter's unit), or a device gone: it is informational
        pass
    return ""


def _route_device(dest: str) -> int | None:
    """The egress device index of the route to `dest`."""
    from pyroute2 import IPRoute
    with IPRoute() as ipr:
        routes = ipr.route("get", dst=dest)
    return routes[0].get_attr("RTA_OIF") if routes else None


def device_path(ifindex: int | None = None, ifname: str | None = None, dest: str | None = None) -> NetPath | None:
    """The path of a device of this network namespace, by index or name, or of the route to the
    address `dest`; None if it is not there (any more). From sysfs and ethtool: the kind is
    `loopback`, `device` for hardware (a sysfs device), else the virtual device's driver (veth,
    dummy, tun, bridge, ...: rtnetlink's kind)."""
    try:
        if ifindex is None and ifname is None and dest is not None:
            ifindex = _route_device(dest)
        name = ifname or socket.if_indextoname(ifindex)
        base = Path("/sys/class/net") / name
        mtu = int((base / "mtu").read_text())
        flags = int((base / "flags").read_text(), 16)
        index = int((base / "ifindex").read_text())
    except (OSError, ValueError, TypeError):
        return None
    driver = _ethtool_driver(name)
    if flags & 0x8:  # IFF_LOOPBACK
        kind, driver = "loopback", driver or "loopback"
    elif (base / "device").exists():
        kind = "device"
    else:
        kind = driver or "unknown"
    return NetPath(kind, driver or kind, mtu, name, _qdisc(index))


def own_netns() -> int:
    """The inode of this process's network namespace (the probes record sockets' by it)."""
    return os.stat("/proc/self/ns/net").st_ino


class DevicePaths:
    """The paths of the devices sockets sent through, looked up while they exist and remembered
    (a workload's sink device can be gone by the time the report is built). Only devices of our
    own network namespace can be looked up; others are unknown."""

    def __init__(self, lookup=device_path, netns: int | None = None) -> None:
        self._lookup = lookup
        self._netns = own_netns() if netns is None else netns
        self._known: dict[int, NetPath | None] = {}

    def observe(self, sockets) -> None:
        """Look up the egress devices of `sockets` (snapshot.SocketRow) not seen yet."""
        for s in sockets:
            if s.netns == self._netns and s.ifindex and s.ifindex not in self._known:
                self._known[s.ifindex] = self._lookup(ifindex=s.ifindex)

    def get(self, netns: int, ifindex: int) -> tuple[NetPath | None, str]:
        """(path, why not) of a socket's egress device."""
        if not ifindex:
            return None, "the socket had no route (no egress device) when the probes saw it"
        if netns != self._netns:
            return None, (f"the socket is in another network namespace (netns {netns}), whose devices "
                          "zctrace cannot look up")
        if ifindex not in self._known:
            self._known[ifindex] = self._lookup(ifindex=ifindex)
        path = self._known[ifindex]
        return (path, "") if path else (None, f"device {ifindex} was gone before zctrace could look it up")


# --- saving and loading ------------------------------------------------------------------------

def file_name(target: str, proto: str) -> str:
    safe = "".join(c if c.isalnum() or c in "-._" else "_" for c in target)
    return f"{PREFIX}{safe}-{proto}.json"


def save(record: dict, directory: Path | None = None) -> Path:
    """Write one measurement (replacing the one of the same target and protocol); its path."""
    directory = directory or state_dir()
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / file_name(record["target"], record["proto"])
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    tmp.write_text(json.dumps(record, indent=2) + "\n")
    os.chmod(tmp, 0o644)  # the exporter (another user) reads it
    tmp.replace(path)
    return path


@dataclass
class Saved:
    """The measurements of a state directory, and those that could not be read (file, why)."""

    records: list[dict]
    unreadable: list[tuple[str, str]]
    directory: Path

    @classmethod
    def load(cls, directory: Path | None = None) -> Saved:
        directory = directory or state_dir()
        records, bad = [], []
        try:
            names = sorted(p for p in directory.iterdir() if p.name.startswith(PREFIX) and p.suffix == ".json")
        except OSError:
            names = []
        for path in names:
            try:
                doc = json.loads(path.read_text())
                NetPath.from_json(doc["path"])
                if doc.get("format") != FORMAT or not isinstance(doc.get("sizes"), list):
                    raise ValueError(f"not a format {FORMAT} crossover measurement")
            except (OSError, ValueError, KeyError, TypeError) as e:
                bad.append((str(path), str(e)))
                continue
            doc["file"] = str(path)
            records.append(doc)
        return cls(records, bad, directory)


class SavedCache:
    """Saved.load(), re-read only when the directory's files change (trace reads once; top and the
    exporter every refresh)."""

    def __init__(self, directory: Path | None = None) -> None:
        self._directory = directory
        self._stamp: tuple | None = None
        self._saved: Saved | None = None

    def get(self) -> Saved:
        directory = self._directory or state_dir()
        try:
            stamp = tuple(sorted((p.name, p.stat().st_mtime_ns) for p in directory.iterdir()
                                 if p.name.startswith(PREFIX)))
        except OSError:
            stamp = ()
        if self._saved is None or stamp != self._stamp:
            self._saved, self._stamp = Saved.load(directory), stamp
        return self._saved


def kernel_release() -> str:
    return platform.release()


def command_for(target: str | None, proto: str) -> str:
    """The command that measures the crossover for a target ('...' when it is not known)."""
    where = f"--target {target}" if target else "--target ADDR:PORT (a receiver behind the device)"
    return f"{COMMAND} {where} --proto {proto}"


def target_for(path: NetPath) -> str | None:
    """The bench target whose path is `path`'s kind and MTU, if one is (the sink and dummy
    targets have MTU 65535); None: a remote receiver behind the device (ADDR:PORT)."""
    if path.kind == "loopback":
        return "loopback"
    if path.mtu == 65535 and path.kind in ("veth", "dummy"):
        return "sink" if path.kind == "veth" else "dummy"
    return None


def nearest(record: dict, size: float) -> dict:
    """The measured size row of `record` nearest to `size` (by ratio)."""
    import math
    return min(record["sizes"], key=lambda row: abs(math.log(row["size"] / max(size, 1.0))))


# --- matching measurements ---------------------------------------------------------------------

@dataclass
class Match:
    record: dict | None
    ignored: list[dict]  # {"file", "target", "why"}: saved measurements not used, and why


def match(saved: Saved, kernel: str, proto: str, api: str, path: NetPath | None,
          want: Callable[[dict], bool] | None = None) -> Match:
    """The newest saved measurement of `api` over `proto` on `path` (or satisfying `want`) from
    this kernel release; the others of that protocol, with why they are not used."""
    ok, ignored = [], []
    for rec in saved.records:
        if rec.get("proto") != proto:
            continue
        rec_path = NetPath.from_json(rec["path"]) if rec.get("path") else None
        why = ""
        if rec.get("kernel") != kernel:
            why = f"measured on kernel {rec.get('kernel')}, this is {kernel}"
        elif want is not None and not want(rec):
            why = f"measured on target {rec['target']}, another kind of path"
        elif want is None and (rec_path is None or path is None or not rec_path.same(path)):
            why = (f"measured on path {rec_path.describe() if rec_path else 'not known'} (target "
                   f"{rec['target']}), this flow's path is {path.describe() if path else 'not known'}")
        elif api not in rec.get("crossovers", {}):
            why = f"{api} was not measured there ({rec.get('skipped') or 'column skipped'})"
        if why:
            ignored.append({"file": rec.get("file"), "target": rec.get("target"), "why": why})
        else:
            ok.append(rec)
    ok.sort(key=lambda r: r.get("date", ""), reverse=True)
    return Match(ok[0] if ok else None, ignored)


def record_evidence(rec: dict) -> dict:
    return {k: rec.get(k) for k in ("file", "target", "proto", "path", "kernel", "date", "engine", "version",
                                    "load_average")}


def measured_at(rec: dict, api: str, base: str, size: float) -> dict:
    col = rec["crossovers"][api]["column"]
    row = nearest(rec, size)
    z, b = row["columns"].get(col), row["columns"].get(base)
    out = {"size": row["size"], "column": col, "baseline": base,
           "zerocopy_cpu_us_per_request": z and z["cpu_us_per_request"],
           "baseline_cpu_us_per_request": b and b["cpu_us_per_request"],
           "zerocopy_verdict": z and z["verdict"]}
    if z and b and b["cpu_us_per_request"]:
        out["extra_cpu_us_per_request"] = round(z["cpu_us_per_request"] - b["cpu_us_per_request"], 4)
        out["extra_percent"] = round((z["cpu_us_per_request"] / b["cpu_us_per_request"] - 1) * 100, 1)
    return out
