"""The BPF layout by concern (probes/): single-purpose headers, and no .bpf.c that leans on
another .bpf.c except through a header both include. Read from the text: no bcc, no root."""

import random
import re

from zctrace.paths import PROBE_DIR
from zctrace.probes import load_manifest, module_text

HEADERS = sorted(PROBE_DIR.glob("*.bpf.h"))
SOURCES = sorted(PROBE_DIR.glob("*.bpf.c"))
MAX_HEADER_LINES = 200

_DEFINED = [
    re.compile(r"^BPF_\w+\(\s*(?:\"\w+\",\s*[^,]+,\s*[^,]+,\s*)?(zc_\w+)", re.M),  # maps
    re.compile(r"^static __always_inline [\w *]*?\b(zc_\w+)\(", re.M),  # helpers
    re.compile(r"^int (zc_\w+)\(", re.M),  # programs (tail-call targets)
    re.compile(r"^#define (ZC_\w+)", re.M),
    re.compile(r"^struct (zc_\w+) \{", re.M),
]


def defined(text: str) -> set[str]:
    return {name for pattern in _DEFINED for name in pattern.findall(text)}


def test_there_is_no_catch_all_header():
    assert not (PROBE_DIR / "common.bpf.h").exists()
    assert {h.name for h in HEADERS} >= {"maps.bpf.h", "kread.bpf.h", "kfunc.bpf.h", "msgzc_ranges.bpf.h",
                                         "uring_ring.bpf.h", "uring_chain.bpf.h"}


def test_headers_are_short_guarded_and_say_what_they_hold():
    for h in HEADERS:
        text = h.read_text()
        assert len(text.splitlines()) < MAX_HEADER_LINES, h.name
        assert text.startswith(f"/* {h.name}: "), f"{h.name}: its first line says what it holds"
        assert "Included by" in text.split("*/", 1)[0], f"{h.name}: its top comment says who includes it"
        guard = "ZC_" + h.name.upper().replace(".", "_")
        assert f"#ifndef {guard}\n#define {guard}\n" in text and text.rstrip().endswith(f"#endif /* {guard} */")


def test_no_source_uses_what_another_source_defines():
    """A map, helper, macro or program of one .bpf.c appears in no other .bpf.c: what two files
    share is in a header (uring_notif used uring_send's rings, uring_send called uring_notif's
    walkers)."""
    defs = {src.name: defined(src.read_text()) for src in SOURCES}
    for src in SOURCES:
        text = src.read_text()
        for other, names in defs.items():
            if other != src.name:
                used = sorted(n for n in names if re.search(rf"\b{n}\b", text))
                assert not used, f"{src.name} uses {used} of {other}"


def test_every_source_includes_the_headers_it_uses():
    """What a .bpf.c uses of a header is in a header it includes (directly or through another)."""
    by_header = {h.name: defined(h.read_text()) for h in HEADERS}
    for src in SOURCES:
        text = src.read_text()
        inlined = module_text_of(src.name)
        for header, names in by_header.items():
            used = [n for n in names if re.search(rf"\b{n}\b", text)]
            if used:
                assert f"/* {header}: " in inlined, f"{src.name} uses {used[:3]} of {header} without it"


def module_text_of(file: str) -> str:
    return module_text([p for p in load_manifest() if p.file == file])


def test_each_header_is_inlined_once_whatever_the_order():
    progs = load_manifest()
    for seed in range(5):
        order = progs[:]
        random.Random(seed).shuffle(order)
        text = module_text(order)
        for h in HEADERS:
            assert text.count(f"/* {h.name}: ") == 1, (h.name, [p.name for p in order])
        defines = text.split("\n", len(order))
        assert all(line.startswith("#define ZC_PROG_") for line in defines[:len(order)])


def test_tail_calls_are_declared_where_they_are_defined():
    """The manifest's tail calls: the program array is in a header the caller includes, the
    program in the declaring file."""
    progs = load_manifest()
    calls = [(p, tc) for p in progs for tc in p.tail_calls]
    assert calls, "uring_notif declares its walkers"
    for prog, tc in calls:
        assert re.search(rf"^int {tc.fn}\(", prog.source(), re.M), tc
        assert tc.kind in ("raw_tracepoint", "tracepoint")
        assert any(f"BPF_PROG_ARRAY({tc.array}," in h.read_text() for h in HEADERS), tc


def test_the_model_knows_every_name_of_io_urings_skb_callback():
    """model.URING_SKB_CALLBACKS (whose skipped runs REPORT_USAGE's flags can give back) is the
    manifest's io_tx_ubuf_complete with its kfunc_variants: a kernel's name missing there would
    leave those runs counted lost."""
    from zctrace import model
    (notif,) = [p for p in load_manifest() if p.name == "uring_notif"]
    names = ("io_tx_ubuf_complete", *notif.kfunc_variants.get("io_tx_ubuf_complete", ()))
    assert set(model.URING_SKB_CALLBACKS) == set(names)
