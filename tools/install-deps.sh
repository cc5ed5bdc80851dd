#!/usr/bin/env bash
# Installs what quarry needs from Debian's packages, if anything is missing (run as root).
# Idempotent: when everything is present it changes nothing and needs no network.
set -euo pipefail
# qemu-user runs the tests as CPUs without AVX-512 / AVX2 (tests/portability/). clang and its
# runtime libraries (libFuzzer, ASan, UBSan: libclang-rt-14-dev, only recommended by clang-14 on
# bookworm) build and run the fuzz targets in fuzz/.
packages=(cmake g++ make binutils libeigen3-dev libxsimd-dev xtl-dev libfmt-dev doctest-dev qemu-user clang libclang-rt-14-dev)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "install-deps: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}"
else
  echo "install-deps: all of ${packages[*]} present"
fi
