"""Probe programs, BTF offsets and the shared header, checked against this kernel."""

import shutil
import subprocess

import pytest

from zctrace import header, tiers
from zctrace.btf import Btf, BtfError
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
    s = Session.open(tier, btf)  # the tracepoints of the tier attach everywhere
    try:
        assert s.skipped == {}
        kfuncs = [f for p in s.programs for f in p.kfuncs]
        assert len(kfuncs) >= 7
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
