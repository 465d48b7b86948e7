#!/usr/bin/env bash
# Everything the full-kernel VM tests need (python3 scripts/vmtest.py), on Debian 12 as root:
# Debian's 6.12 and 6.1 kernels (image + headers for bcc inside the VM; the newest of each),
# QEMU, busybox for virtme-ng's initramfs, and virtme-ng. Idempotent; quiet unless it fails.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
export DEBIAN_FRONTEND=noninteractive
APT=(apt-get -y -qq -o DPkg::Lock::Timeout=600 --no-install-recommends)

# Run quietly; show the output only if the command fails.
quiet() {
  local log rc=0
  log=$(mktemp)
  "$@" >"$log" 2>&1 || rc=$?
  [ "$rc" = 0 ] || { cat "$log" >&2; echo "setup-vm: failed ($rc): $*" >&2; }
  rm -f "$log"
  return "$rc"
}

# The tests in the VM use the host's Python with bcc and the project (scripts/setup.sh).
$PY -c 'import bcc, pytest, zctrace' 2>/dev/null || quiet bash scripts/setup.sh

# Debian's two kernels for the VM matrix, generic amd64 flavour only (not -rt, not -cloud):
# 6.12 (6.12.N+debM-amd64, from bookworm's backports line) and 6.1 (6.1.0-N-amd64, Debian 12's
# default). Per series: the regular expression of its release names.
declare -A SERIES=([6.12]='6\.12\.[0-9]+\+deb[0-9]+' [6.1]='6\.1\.0-[0-9]+')

# A kernel is there when its image, its modules and its headers (the build link) are.
installed_kernel() {
  local re=${SERIES[$1]} k v
  for k in /boot/vmlinuz-"$1".*-amd64; do
    v=${k#/boot/vmlinuz-}
    if [[ $v =~ ^${re}-amd64$ ]] \
       && [ -e "/lib/modules/$v/build/include" ] && [ -d "/lib/modules/$v/kernel" ]; then
      echo "$v"
    fi
  done | sort -V | tail -n 1
}

have_pkgs() {
  local p
  for p; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || return 1
  done
}

# Newest release of a series with both the unsigned image and the headers.
newest_release() {
  local re=${SERIES[$1]}
  apt-cache pkgnames "linux-image-$1." \
    | sed -nE "s/^linux-image-(${re})-amd64-unsigned\$/\1/p" \
    | while read -r v; do
        apt-cache show "linux-headers-$v-amd64" >/dev/null 2>&1 && echo "$v"
      done | sort -V | tail -n 1 || true
}

want=()
for series in 6.12 6.1; do
  [ -n "$(installed_kernel "$series")" ] || want+=("$series")
done
if [ "${#want[@]}" -gt 0 ] || ! have_pkgs qemu-system-x86 busybox-static; then
  quiet apt-get update -qq -o DPkg::Lock::Timeout=600
  pkgs=(qemu-system-x86 busybox-static)
  for series in "${want[@]}"; do
    ver=$(newest_release "$series")
    if [ -z "$ver" ]; then
      echo "setup-vm: Debian offers no linux-image-$series.*-amd64-unsigned with headers" >&2
      exit 1
    fi
    pkgs+=("linux-image-$ver-amd64-unsigned" "linux-headers-$ver-amd64")
  done
  # INITRD=No: virtme-ng builds its own initramfs; skip initramfs-tools' slow, unused one.
  quiet env INITRD=No "${APT[@]}" install "${pkgs[@]}"
fi

$PY -c 'import virtme_ng' 2>/dev/null || quiet $PY -m pip install -q 'virtme-ng==1.42'

kernels=()
for series in 6.12 6.1; do
  k=$(installed_kernel "$series")
  [ -n "$k" ] || { echo "setup-vm: no usable $series kernel after install" >&2; exit 1; }
  kernels+=("$k")
done
command -v qemu-system-x86_64 >/dev/null
echo "zctrace VM setup done: kernels ${kernels[*]}"
