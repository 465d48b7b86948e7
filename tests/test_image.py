"""The container image of exporters/Containerfile, built without a registry: its base is a Debian 12
root filesystem made by mmdebstrap and imported into podman, the image adds Debian's bcc and the
wheels of this checkout. Its exporter then runs with the host's mounts and reports the host's
sends to Debian's Prometheus.

podman cannot start a container on this test host: its root lacks CAP_SYS_RESOURCE, so crun and
runc both fail to set the container's rlimits (and crun refuses the hybrid cgroup layout). So the
image's files run under chroot in a podman-created container's root filesystem, with the mounts
and capability set of the documented `podman run` line (docs/install.md), in the host's pid and
network namespaces as --pid=host --network=host give; what is not exercised is the OCI runtime.

The base image and the apt layer are kept in podman's storage: built once per machine (~3 min),
later runs rebuild only the wheel layers.
"""
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import REPO, copy_checkout
from test_exporter import TAG, Prometheus, comm_python, free_port, http_get, run_workload

BASE = "localhost/debian:12"
IMAGE = "localhost/zctrace:test"
CAPS = "-all,+bpf,+perfmon,+syslog"  # the Containerfile's --cap-add set, less SYS_RESOURCE (not ours to give)
HOST_MOUNTS = ("proc", "sys", "dev", "lib/modules", "usr/src")


def _run(argv: list[str], timeout: float = 900, **kw) -> str:
    r = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, **kw)
    assert r.returncode == 0, f"{argv} exited {r.returncode}:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    return r.stdout


@pytest.fixture(scope="module")
def rootfs(tmp_path_factory):
    """The built image's files, writable, with the host's kernel interfaces mounted in."""
    if not (shutil.which("podman") and shutil.which("mmdebstrap")):
        pytest.skip("needs podman and mmdebstrap (scripts/setup.sh installs them)")
    tmp = tmp_path_factory.mktemp("image")
    if subprocess.run(["podman", "image", "exists", BASE]).returncode:
        _run(["mmdebstrap", "--variant=minbase", "--quiet", "bookworm", str(tmp / "base.tar")])
        _run(["podman", "import", "-q", str(tmp / "base.tar"), BASE])
        (tmp / "base.tar").unlink()
    context = tmp / "context"
    (context / "exporters").mkdir(parents=True)
    shutil.copy(REPO / "exporters" / "Containerfile", context / "exporters")
    _run([sys.executable, "-m", "pip", "wheel", "-q", "--no-build-isolation", "-w", str(context / "dist"),
          str(copy_checkout(tmp / "src"))])
    _run(["podman", "build", "--isolation", "chroot", "--network", "host", "--build-arg", f"BASE={BASE}",
          "-f", "exporters/Containerfile", "-t", IMAGE, "."], cwd=context)
    container = _run(["podman", "create", IMAGE]).strip()
    root = Path(_run(["podman", "mount", container]).strip())
    mounted = []
    try:
        for name in HOST_MOUNTS:
            (root / name).mkdir(parents=True, exist_ok=True)
            _run(["mount", "--rbind", f"/{name}", str(root / name)])
            _run(["mount", "--make-rslave", str(root / name)])
            mounted.append(root / name)
        yield root
    finally:
        for path in reversed(mounted):
            subprocess.run(["umount", "-R", str(path)])
        subprocess.run(["podman", "rm", "-f", container], capture_output=True)
        subprocess.run(["podman", "image", "prune", "-f"], capture_output=True)  # earlier builds' images


def test_image_holds_debian_bcc_and_the_wheel(rootfs):
    out = _run(["chroot", str(rootfs), "/opt/zctrace/bin/python", "-c",
                "import bcc, zctrace.paths as p; print(bcc.__file__, p.PROBE_DIR)"])
    assert out.split() == ["/usr/lib/python3/dist-packages/bcc/__init__.py",
                           "/opt/zctrace/lib/python3.11/site-packages/zctrace/_probes"]


def test_exporter_in_the_image_reports_the_hosts_sends(rootfs, tmp_path):
    port = free_port()
    log = open(tmp_path / "exporter.log", "w")
    exporter = subprocess.Popen(
        ["chroot", str(rootfs), "setpriv", f"--bounding-set={CAPS}", "--inh-caps=-all",
         "env", "PATH=/opt/zctrace/bin:/usr/bin:/bin", "XDG_CACHE_HOME=/tmp/cache",
         "zctrace", "export", "--listen", f"127.0.0.1:{port}", "--top-comms", "100"], stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while "serving" not in (tmp_path / "exporter.log").read_text():
            assert exporter.poll() is None and time.monotonic() < deadline, (tmp_path / "exporter.log").read_text()
            time.sleep(0.2)
        status = next(l for l in Path(f"/proc/{exporter.pid}/status").read_text().splitlines()
                      if l.startswith("CapBnd"))
        assert int(status.split()[1], 16) == (1 << 39) | (1 << 38) | (1 << 34)  # BPF, PERFMON, SYSLOG
        prom = Prometheus(tmp_path, {"global": {"scrape_interval": "1s"}, "scrape_configs": [
            {"job_name": "zctrace-image", "static_configs": [{"targets": [f"127.0.0.1:{port}"]}]}]})
        try:
            comm = f"zcimage{TAG}"
            kernel = run_workload(comm_python(tmp_path, comm), "--mode", "msg_zerocopy", "--target", "sink",
                                  "--count", "300", "--size", "1000")
            assert kernel["kernel_zerocopied"] == 300, kernel
            query = f'sum(zctrace_zerocopy_requests_total{{verdict="zerocopied",comm="{comm}"}})'
            deadline = time.monotonic() + 30
            while True:
                result = prom.query(query)
                if result and float(result[0]["value"][1]) == 300:
                    break
                assert time.monotonic() < deadline, (result, http_get(f"http://127.0.0.1:{port}/metrics")[2][-3000:])
                time.sleep(0.5)
        finally:
            prom.proc.terminate()
            prom.proc.wait()
    finally:
        exporter.terminate()
        exporter.wait(timeout=60)
        log.close()
    assert exporter.returncode == 0, (tmp_path / "exporter.log").read_text()
