#!/usr/bin/env bash
# Everything the full-kernel VM tests need (python3 -m zctrace.vmtest), on Debian 12 as root:
# Debian's 6.12 kernel (image + headers for bcc inside the VM; the newest 6.12 Debian offers),
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

# A 6.12 kernel is there when its image, its modules and its headers (the build link) are.
# Only the generic amd64 flavour (6.12.N+debM-amd64): not -rt, not -cloud.
installed_kernel() {
  local k v
  for k in /boot/vmlinuz-6.12.*-amd64; do
    v=${k#/boot/vmlinuz-}
    if [[ $v =~ ^6\.12\.[0-9]+\+deb[0-9]+-amd64$ ]] \
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

if [ -z "$(installed_kernel)" ] || ! have_pkgs qemu-system-x86 busybox-static; then
  quiet apt-get update -qq -o DPkg::Lock::Timeout=600
  # Newest 6.12 version with both the unsigned image and the headers (generic flavour).
  ver=$(apt-cache pkgnames linux-image-6.12. \
        | sed -n 's/^linux-image-\(6\.12\.[0-9]*+deb[0-9]*\)-amd64-unsigned$/\1/p' \
        | while read -r v; do
            apt-cache show "linux-headers-$v-amd64" >/dev/null 2>&1 && echo "$v"
          done | sort -V | tail -n 1 || true)
  if [ -z "$ver" ]; then
    echo "setup-vm: Debian offers no linux-image-6.12.*-amd64-unsigned with headers" >&2
    exit 1
  fi
  # INITRD=No: virtme-ng builds its own initramfs; skip initramfs-tools' slow, unused one.
  quiet env INITRD=No "${APT[@]}" install qemu-system-x86 busybox-static \
    "linux-image-$ver-amd64-unsigned" "linux-headers-$ver-amd64"
fi

$PY -c 'import virtme_ng' 2>/dev/null || quiet $PY -m pip install -q 'virtme-ng==1.42'

kernel=$(installed_kernel)
[ -n "$kernel" ] || { echo "setup-vm: no usable 6.12 kernel after install" >&2; exit 1; }
command -v qemu-system-x86_64 >/dev/null
echo "zctrace VM setup done: kernel $kernel"
