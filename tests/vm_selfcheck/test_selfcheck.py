"""A vm test that must fail: proves `python3 scripts/vmtest.py` reports failures.

Collected only with ZCTRACE_VM_SELFCHECK=1 (see tests/conftest.py); run by
tests/test_vm_harness.py::test_harness_reports_vm_test_failure.
"""
import pytest


@pytest.mark.vm
def test_wrong_probe_name_attaches():
    # A kprobe on a function that does not exist: the kernel refuses it, so this fails.
    with open("/sys/kernel/tracing/kprobe_events", "a") as f:
        f.write("p:zctrace_selfcheck zctrace_no_such_function\n")
