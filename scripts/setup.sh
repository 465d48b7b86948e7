#!/usr/bin/env bash
# One-shot setup on Debian 12 (as root): system packages, kernel headers for bcc, tracefs,
# bcc importable from this Python, the project itself, then what the full-kernel VM tests
# need (scripts/setup-vm.sh; skip it with ZCTRACE_NO_VM=1 if you only want the tool).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
export DEBIAN_FRONTEND=noninteractive

apt-get update -qq
# gcc and python3-dev: the install below builds the compiled send engine (zctrace.workload._engine);
# liburing-dev: the example scripts/bench_engine_anchor.py checks the engine against;
# podman and mmdebstrap: tests/test_image.py builds the container image.
apt-get install -y -qq python3-bpfcc iproute2 bpftool linux-headers-amd64 tmux prometheus \
  gcc python3-dev liburing-dev podman mmdebstrap >/dev/null

# bcc compiles against kernel headers; use the running kernel's if Debian has them, else
# Debian's default headers (struct offsets never come from them: zctrace reads BTF).
K=$(uname -r)
if [ ! -e "/lib/modules/$K/build/include" ]; then
  apt-get install -y -qq "linux-headers-$K" >/dev/null 2>&1 || true
fi
if [ ! -e "/lib/modules/$K/build/include" ]; then
  hdr=$(ls -d /usr/src/linux-headers-*-amd64 | sort -V | tail -n 1)
  common=${hdr%-amd64}-common
  mkdir -p "/lib/modules/$K"
  ln -sfn "$hdr" "/lib/modules/$K/build"
  ln -sfn "$common" "/lib/modules/$K/source"
fi

# bcc and the tracepoints live in debugfs/tracefs.
mountpoint -q /sys/kernel/debug || mount -t debugfs none /sys/kernel/debug || true
mountpoint -q /sys/kernel/tracing || mount -t tracefs none /sys/kernel/tracing || true

# Debian's bcc is pure Python over libbcc: expose just that package to this interpreter.
site=$($PY -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
mkdir -p /opt/zctrace-bcc
ln -sfn /usr/lib/python3/dist-packages/bcc /opt/zctrace-bcc/bcc
echo /opt/zctrace-bcc > "$site/zctrace-bcc.pth"

$PY -m pip install -q -e '.[test,bench]'
$PY -c 'import bcc, zctrace, zctrace.workload._engine'
[ "${ZCTRACE_NO_VM:-0}" = 1 ] || bash scripts/setup-vm.sh
echo "zctrace setup done"
# tests/test_deploy.py: systemd-analyze (verify, security --offline, syscall-filter) and strace.
apt-get install -y -qq systemd strace >/dev/null
# tests/test_kubernetes.py: PyYAML and kubernetes-validate (Kubernetes schemas shipped in the package).
$PY -m pip install -q pyyaml kubernetes-validate
