#!/usr/bin/env bash
# Every test: the unit tests first (tests/unit: model, report, top and the collector on
# hand-written maps; seconds, no root, no BPF; a failure stops here), then the host suite
# (tracepoint tier and all that needs no special kernel), then the vm-marked tests (fentry and
# kprobe tiers) inside each kernel of ZCTRACE_VM_KERNELS (default "6.12 6.1": Debian's 6.12 and
# Debian 12's own 6.1; docs/kernel.md says what differs), one VM boot each, all at once, with the
# time of each run and its slowest tests (--durations: where CI's time goes).
#
# Started in the background (`scripts/test.sh &`, `nohup scripts/test.sh &`), this shell and all
# it starts inherit SIGINT ignored: a non-interactive shell cannot undo that (`trap - INT` keeps a
# signal ignored at entry ignored) and zctrace keeps it so too, on purpose. The tests do not rely
# on it: a process a test signals is started by conftest's `procs` fixture with SIGINT and SIGTERM
# at their defaults, and stopped if the test fails or times out (tests/test_launch.py checks it).
set -uo pipefail
cd "$(dirname "$0")/.."
start=$SECONDS
python3 -m pytest -q tests/unit
unit=$?
if [ "$unit" -ne 0 ]; then
  echo "zctrace tests: unit exit $unit in $((SECONDS - start)) s: host and VM suites not run"
  exit 1
fi
status="unit exit 0 in $((SECONDS - start)) s"
python3 -m pytest -q --durations=15 --ignore=tests/unit "$@"
host=$?
status+=", host exit $host"
failed=$host
# The VMs run side by side, each with its share of the CPUs (at most 2, at least 1): under TCG
# a guest with more vCPUs than it gets host CPUs crawls (a vCPU spins on a lock whose holder's
# thread is not running), while two 1-vCPU guests on 2 CPUs each run at 0.93 of one 2-vCPU
# guest alone (docs/vm-tests.md). Each VM's output is printed whole when it ends.
kernels=(${ZCTRACE_VM_KERNELS:-6.12 6.1})
if [ "${#kernels[@]}" -gt 0 ]; then
  cpus=$(( $(nproc) / ${#kernels[@]} ))
  cpus=$(( cpus < 1 ? 1 : (cpus > 2 ? 2 : cpus) ))
  logs=$(mktemp -d)
  for kernel in "${kernels[@]}"; do
    (
      begin=$SECONDS
      python3 scripts/vmtest.py --kernel "$kernel" --cpus "$cpus" -q --durations=30 > "$logs/$kernel.log" 2>&1
      echo "$? $((SECONDS - begin))" > "$logs/$kernel.rc"
    ) &
  done
  wait
  for kernel in "${kernels[@]}"; do
    echo "=== VM $kernel ($cpus CPU) ==="
    cat "$logs/$kernel.log"
    read -r rc secs < "$logs/$kernel.rc" || { rc=1; secs=?; }
    status+=", VM $kernel exit $rc in $secs s"
    [ "$rc" -eq 0 ] || failed=1
  done
  rm -rf "$logs"
fi
echo "zctrace tests: $status"
[ "$failed" -eq 0 ]
