#!/usr/bin/env bash
# Installs what a fresh Debian 12 machine lacks (it has Node.js, npm, g++, make, cmake, python3) and the
# workspace's npm dependencies. Safe to run again: it only installs what is missing.
source "$(dirname "$0")/lib.sh"

# Build: clang/llvm (BPF compiler, llvm-strip), libbpf-dev, bpftool (vmlinux.h, skeletons), libelf/zlib.
# Tests: iproute2 (ip, tc), util-linux (setpriv), curl, tshark (checksum cross-checks); the second kernel of
# ../shared/tools/guest-kernel (qemu, Debian's stock kernel, busybox), for the 6.1 verifier and fallbacks.
# Metrics tests: hey (load), prometheus (promtool, a real server), nginx-light, nghttp2-client (h2load, nghttp),
# python3-h2 (an h2c-upgrade server for Debian's python3); bench:metrics: wrk.
# bench/mesh: haproxy (the proxy-per-pod stand-in), openssl (its certificates).
# mesh-dataplane: libssl-dev (Debian's OpenSSL 3, linked by the native data plane).
# The agent's page and meshctl top: chromium (headless, reads the page's DOM, docs/ui.png), tmux (a real terminal).
APT_PACKAGES=(clang llvm libbpf-dev bpftool libelf-dev zlib1g-dev pkg-config iproute2 util-linux curl tshark
  qemu-system-x86 linux-image-amd64 busybox-static
  hey prometheus nginx-light nghttp2-client python3-h2 haproxy openssl wrk libssl-dev
  chromium tmux)

missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if ((${#missing[@]})); then
  if [ "$(id -u)" != 0 ]; then
    echo "error: missing Debian packages: ${missing[*]}; run as root or: sudo apt-get install ${missing[*]}" >&2
    exit 1
  fi
  log "apt-get install ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# bpffs, for pinning (tests and the agent pin under /sys/fs/bpf).
if [ "$(id -u)" = 0 ] && ! grep -qs ' /sys/fs/bpf bpf ' /proc/mounts; then
  mount -t bpf bpf /sys/fs/bpf
fi

log "pnpm install"
cd "$ROOT"
pnpm install --frozen-lockfile --reporter=silent
