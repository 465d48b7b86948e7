"""Shared pytest setup.

VM split: tests marked ``@pytest.mark.vm`` need the full-kernel VM (fentry/kprobe tiers) and
run only there (``python3 -m zctrace.vmtest``, which sets ZCTRACE_IN_VM=1); inside the VM
every other test is skipped.
"""
import contextlib
import os

import pytest

from zctrace.workload.targets import open_target

IN_VM = os.environ.get("ZCTRACE_IN_VM") == "1"

# tests/vm_selfcheck/ holds a deliberately failing vm test: collected only on request.
collect_ignore = [] if os.environ.get("ZCTRACE_VM_SELFCHECK") == "1" else ["vm_selfcheck"]


def pytest_collection_modifyitems(config, items):
    if IN_VM:
        skip = pytest.mark.skip(reason="inside the VM only vm-marked tests run")
    else:
        skip = pytest.mark.skip(reason="needs the full-kernel VM: python3 -m zctrace.vmtest")
    for item in items:
        if (item.get_closest_marker("vm") is not None) != IN_VM:
            item.add_marker(skip)


@pytest.fixture
def dummy():
    """The dummy-device target (the published benchmark's sink), where the kernel has one."""
    with contextlib.ExitStack() as stack:
        try:
            endpoint = stack.enter_context(open_target("dummy", "udp"))
        except RuntimeError as e:
            pytest.skip(f"{e}: runs in the VM")
        yield endpoint
