"""Probe programs, BTF offsets and the shared header, checked against this kernel."""

import os
import shutil
import subprocess

import pytest

from zctrace import header, tiers
from zctrace.btf import Btf, BtfError
from zctrace.offsets import FIELDS, OPTIONAL, links_notifications
from zctrace.probes import Session, import_bcc, load_manifest, quiet_stderr


@pytest.fixture(scope="module")
def btf():
    return Btf.load()


@pytest.mark.skipif(shutil.which("bpftool") is None, reason="bpftool not installed")
@pytest.mark.parametrize("struct,member", [
    ("sock", "sk_zckey"), ("sk_buff", "cb"), ("sk_buff", "len"), ("io_kiocb", "opcode"),
    ("io_notif_data", "zc_report"), ("io_notif_data", "uarg"), ("file", "private_data"),
])
def test_offsets_agree_with_bpftool(btf, struct, member):
    """Our reader and bpftool's read the same BTF the same way."""
    raw = subprocess.run(["bpftool", "btf", "dump", "file", "/sys/kernel/btf/vmlinux", "format", "raw"],
                         capture_output=True, text=True, check=True).stdout
    lines = iter(raw.splitlines())
    for line in lines:
        if line.split(" ")[1:3] == ["STRUCT", f"'{struct}'"]:
            break
    for line in lines:
        if not line.startswith("\t"):
            pytest.fail(f"{member} not found in bpftool's {struct}")
        if line.strip().startswith(f"'{member}' "):
            bits = int(line.split("bits_offset=")[1].split()[0])
            assert btf.offset(struct, member) == bits // 8
            return


def test_bitfields_and_nested_members(btf):
    zc = btf.field("ubuf_info_msgzc", "zerocopy")  # u16 zerocopy:1 right after u16 len
    length = btf.field("ubuf_info_msgzc", "len")
    assert zc.bits == 1
    assert zc.offset * 8 + zc.bit_shift == (length.offset + 2) * 8
    flags = btf.field("sock", "__sk_common.skc_flags")
    assert flags.size == 8
    assert btf.enum_value("SOCK_ZEROCOPY") >= 0


def test_missing_names_are_errors(btf):
    with pytest.raises(BtfError):
        btf.field("sock", "no_such_member")
    with pytest.raises(BtfError):
        btf.field("no_such_struct", "x")
    assert not btf.has_function("no_such_function_zc")


def test_header_names_match_the_c_enums():
    counters = header.enums()["zc_counter"]
    assert counters["ZC_NR_COUNTERS"] == len(header.COUNTERS)
    assert [counters["ZC_" + c.upper()] for c in header.COUNTERS] == list(range(len(header.COUNTERS)))


def test_manifest_files_and_entry_points_exist():
    for prog in load_manifest():
        text = prog.source()
        for tp in prog.tracepoints:
            cat, event = tp.split(":")
            assert f"TRACEPOINT_PROBE({cat}, {event})" in text
        for func in prog.kfuncs:
            assert f"({func}," in text


@pytest.mark.parametrize("tier", ["fentry", "kprobe"])
def test_kernel_function_tiers_compile_here(btf, tier):
    """Every program of the fentry and kprobe tiers builds with bcc on this host, and the
    kprobe ones pass the verifier, even where this kernel refuses to attach them."""
    opt_in = frozenset(p.name for p in load_manifest() if p.opt_in)
    s = Session.open(tier, btf, extra=opt_in)  # the tracepoints of the tier attach everywhere
    try:
        assert s.skipped == {}
        kfuncs = [f for p in s.programs for f in p.kfuncs]
        assert len(kfuncs) >= 7
        # The walkers of long chains (raw tracepoint and tracepoint programs) load wherever the
        # kernel links notifications: 6.18's verifier refused them (over 1,000,000 instructions)
        # while the walk looked for its chain among 4 cursors per ring.
        links = [st for st in s.statuses if "(tail call:" in st.target]
        assert all(st.attached for st in links), links
        assert len(links) == (2 if links_notifications(btf) else 0), links
        if tier == "kprobe":
            bpf_type = import_bcc().KPROBE
            for func in kfuncs:
                with quiet_stderr():
                    s.bpf.load_func(f"kprobe__{func}", bpf_type)
    finally:
        s.close()


def test_tier_checks_report_why():
    best, checks = tiers.best()
    assert best in ("fentry", "kprobe", "tracepoint")
    for c in checks[:-1]:
        assert not c.ok and c.error


class OlderKernel:
    """This kernel's BTF as an older kernel would show it: only the last (oldest) name of each
    function the manifest gives variants for, and none of the optional struct members."""

    def __init__(self, btf: Btf):
        self.btf = btf
        variants = {f: v for p in load_manifest() for f, v in p.kfunc_variants.items()}
        self.hidden = set(variants) | {n for v in variants.values() for n in v[:-1]}
        self.oldest = {v[-1] for v in variants.values()}

    def has_function(self, name: str) -> bool:
        return name not in self.hidden and (name in self.oldest or self.btf.has_function(name))

    def field(self, struct: str, path: str):
        if (struct, path) in _OPTIONAL_PATHS:
            raise BtfError(f"{struct}.{path} is not in this kernel's BTF")
        return self.btf.field(struct, path)

    def __getattr__(self, name):
        return getattr(self.btf, name)


_OPTIONAL_PATHS = {FIELDS[m.removeprefix("ZC_OFF_")] for m in OPTIONAL}


@pytest.mark.parametrize("tier", ["fentry", "kprobe"])
def test_older_function_names_and_missing_members_compile(btf, tier):
    """A kernel with the older names of the attach points (6.1's: io_uring_tx_zerocopy_callback,
    __io_notif_complete_tw, __zerocopy_sg_from_iter with its 5 arguments) and without the
    optional members loads every program: the variants are attached under their own names,
    the fallbacks are said, and the kprobe programs pass the verifier."""
    older = OlderKernel(btf)
    s = Session.open(tier, older, extra=frozenset(p.name for p in load_manifest() if p.opt_in))
    try:
        assert s.skipped == {}
        assert s.kfuncs["io_tx_ubuf_complete"] == "io_uring_tx_zerocopy_callback"
        assert s.kfuncs["io_notif_tw_complete"] == "__io_notif_complete_tw"
        assert s.kfuncs["zerocopy_fill_skb_from_iter"] == "__zerocopy_sg_from_iter"
        assert set(s.fallbacks) == {"msgzc_send", "uring_notif"}, s.fallbacks
        by_target = {st.target: st for st in s.statuses}
        assert by_target["io_uring_tx_zerocopy_callback"].variant_of == "io_tx_ubuf_complete"
        from bcc.libbcc import lib
        for func, name in s.kfuncs.items():
            fn = f"kfunc__{name}" if tier == "fentry" else f"kprobe__{func}"
            assert by_target[name].fn_name == fn
            assert lib.bpf_function_start(s.bpf.module, fn.encode()), f"{fn} not compiled"
        if tier == "kprobe":
            for func in s.kfuncs:
                with quiet_stderr():
                    s.bpf.load_func(f"kprobe__{func}", import_bcc().KPROBE)
    finally:
        s.close()


def test_a_function_no_kernel_name_fits_skips_its_program_with_the_names(btf):
    class NoNotif(OlderKernel):
        def has_function(self, name):
            return "notif" not in name and super().has_function(name)

    s = Session.open("kprobe", NoNotif(btf))
    try:
        assert s.skipped["uring_notif"] == "kernel has no function io_notif_tw_complete or __io_notif_complete_tw"
    finally:
        s.close()


def test_the_manifest_order_does_not_matter(btf, monkeypatch):
    """The programs compiled in the reverse of the manifest's order build and attach as in its
    order (uring_notif used to lean on uring_send's maps coming first), and the walkers of long
    chains still go to the program arrays the CQE programs call (host kernel 6.18: linked
    notifications)."""
    import zctrace.probes as probes
    forward = probes.load_manifest()
    opt_in = frozenset(p.name for p in forward if p.opt_in)
    seen = []
    for order in (forward, forward[::-1]):
        monkeypatch.setattr(probes, "load_manifest", lambda order=order: order)
        s = Session.open("fentry", btf, extra=opt_in)
        try:
            assert s.skipped == {}
            assert [p.name for p in s.programs] == [p.name for p in order if p in s.programs]
            assert s.programs[0].name != forward[0].name or order is forward
            seen.append(sorted((st.program, st.target, st.fn_name, st.attached) for st in s.statuses))
        finally:
            s.close()
    assert seen[0] == seen[1]
    walkers = {fn for _, target, fn, _ in seen[1] if "tail call" in target}
    assert walkers == {"zc_chain_walk_raw", "zc_chain_walk_tp"}


def test_each_module_gets_its_tier_session_as_new(tier_sessions):
    """The tests share a compiled session per tier (conftest's TierSessions): the next module
    must not inherit the last one's probe state, including what Session.clear keeps (calls
    inside syscalls here, and pids traced for an earlier test's children), and traces this
    process as a new session does."""
    with tier_sessions.attached("tracepoint") as session:
        calls = session.bpf[b"zc_send_calls"]
        calls[calls.Key(12345)] = calls.Leaf()
        session.add_pid(4_000_000)  # (an earlier test's child, gone; its pid could come back)
        session.clear()
        assert len(calls) == 1  # (kept by clear: a benchmark cell's sends in flight)
    with tier_sessions.attached("tracepoint") as session:
        assert len(session.bpf[b"zc_send_calls"]) == 0
        targets = session.bpf[b"zc_targets"]
        assert [k.value for k in targets.keys()] == [os.getpid()]
