#!/bin/sh
# Compiles quarry's per-ISA kernel files (src/cpu/<isa>.cpp) against several xsimd releases, to
# show that src/cpu/xsimd_compat.hpp covers every API change between them. Compile only (-c):
# the full build and test run against one xsimd is `cmake -Dxsimd_DIR=...` + ctest.
#
#   tests/portability/xsimd_versions.sh <xsimd git dir> <quarry build dir> [tag...]
#
# <xsimd git dir>: a clone (or bare repository) of github.com/xtensor-stack/xsimd with its tags.
# <quarry build dir>: any configured quarry build (for include/quarry/config.hpp).
# Tags default to the last release of each major version from 8 to 14. The NEON file is
# compiled when aarch64-linux-gnu-g++ is installed. Exits 77 (skipped) without git or the repo,
# 1 when any compile fails.
set -u
xsimd_git=${1:?usage: xsimd_versions.sh <xsimd git dir> <quarry build dir> [tag...]}
build_dir=${2:?usage: xsimd_versions.sh <xsimd git dir> <quarry build dir> [tag...]}
shift 2
tags=${*:-8.1.0 9.0.1 10.0.0 11.2.0 12.1.1 13.2.0 14.3.0}
src=$(cd "$(dirname "$0")/../.." && pwd)
cxx=${CXX:-c++}
cross=aarch64-linux-gnu-g++

command -v git >/dev/null 2>&1 || { echo "skipped: git not installed"; exit 77; }
git --git-dir="$xsimd_git" rev-parse -q --verify HEAD >/dev/null 2>&1 ||
  git -C "$xsimd_git" rev-parse -q --verify HEAD >/dev/null 2>&1 || { echo "skipped: $xsimd_git is not a git repository"; exit 77; }
[ -f "$build_dir/include/quarry/config.hpp" ] || { echo "error: $build_dir has no include/quarry/config.hpp"; exit 2; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
common="-std=c++20 -O2 -Wall -Wextra -Wpedantic -Werror -I$src/include -I$build_dir/include -I$src/src -isystem /usr/include/eigen3"
failed=0
for tag in $tags; do
  dir=$work/$tag
  mkdir -p "$dir"
  if ! { git --git-dir="$xsimd_git" archive "$tag" include 2>/dev/null || git -C "$xsimd_git" archive "$tag" include 2>/dev/null; } | tar -x -C "$dir"; then
    echo "xsimd $tag: no such tag"; failed=1; continue
  fi
  line="xsimd $tag:"
  for isa in scalar avx2 avx512; do
    case $isa in
      avx2) flags="-mavx2 -mfma -mf16c -mbmi2" ;;
      # -Wno-*uninitialized as in src/CMakeLists.txt: GCC 12's avx512fintrin.h trips them.
      avx512) flags="-mavx512f -mavx512bw -mavx512vl -mavx512dq -mavx512cd -mavx2 -mfma -mf16c -mbmi2 -Wno-uninitialized -Wno-maybe-uninitialized" ;;
      *) flags="" ;;
    esac
    # shellcheck disable=SC2086
    if $cxx $common $flags -isystem "$dir/include" -c "$src/src/cpu/$isa.cpp" -o "$dir/$isa.o" 2>"$dir/$isa.log"; then
      line="$line $isa=ok"
    else
      line="$line $isa=FAIL"; failed=1; sed -n 1,20p "$dir/$isa.log"
    fi
  done
  if command -v $cross >/dev/null 2>&1; then
    # The host's /usr/include (Eigen, xtl) goes last: the cross compiler's C library comes first.
    # shellcheck disable=SC2086
    if $cross $common -isystem "$dir/include" -idirafter /usr/include -c "$src/src/cpu/neon.cpp" -o "$dir/neon.o" 2>"$dir/neon.log"; then
      line="$line neon=ok"
    else
      line="$line neon=FAIL"; failed=1; sed -n 1,20p "$dir/neon.log"
    fi
  fi
  echo "$line"
done
exit $failed
