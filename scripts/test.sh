#!/usr/bin/env bash
# Every test: the host suite (tracepoint tier and all that needs no special kernel), then the
# vm-marked tests inside a full 6.12 kernel (fentry and kprobe tiers) in one VM boot.
set -uo pipefail
cd "$(dirname "$0")/.."
python3 -m pytest -q "$@"
host=$?
python3 -m zctrace.vmtest -q
vm=$?
echo "zctrace tests: host exit $host, VM exit $vm"
[ "$host" -eq 0 ] && [ "$vm" -eq 0 ]
