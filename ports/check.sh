#!/usr/bin/env bash
# Checks quarry's vcpkg port for real, offline: installs ports/quarry from this checkout in
# classic mode, then configures, builds and runs examples/vcpkg-consumer in manifest mode (in
# Release, and also in Debug where the triplet builds debug libraries).
# Not part of tools/test.sh or CI (they have no vcpkg). See ports/README.md.
#
#   ports/check.sh <vcpkg root> [--triplet T] [--cuda] [--online] [--work DIR]
#
#   <vcpkg root>  a clone of github.com/microsoft/vcpkg with a `vcpkg` executable in it
#   --triplet T   vcpkg triplet (default x64-linux: static libraries, debug and release);
#                 x64-linux-release builds release only, in half the time
#   --cuda        install quarry[cuda] and build the consumer with its "cuda" feature
#   --online      use vcpkg's own eigen3, fmt and xsimd ports (they download their sources)
#                 instead of the stand-ins for the Debian packages in ports/offline
#   --work DIR    where everything vcpkg writes goes (default: a new directory under /tmp);
#                 it is emptied first
#
# Environment: VCPKG_MAX_CONCURRENCY (default 2) limits parallel compile jobs.
set -euo pipefail

usage() { sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//'; exit 2; }

[[ $# -ge 1 ]] || usage
vcpkg_root=$(cd "$1" && pwd)
shift
triplet=x64-linux
cuda=0
offline=1
work=""
while [[ $# -gt 0 ]]; do
  case "$1" in
    --triplet) triplet="$2"; shift 2 ;;
    --cuda) cuda=1; shift ;;
    --online) offline=0; shift ;;
    --work) work="$2"; shift 2 ;;
    *) usage ;;
  esac
done

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
vcpkg="$vcpkg_root/vcpkg"
[[ -x "$vcpkg" ]] || { echo "check.sh: no vcpkg executable at $vcpkg (build vcpkg-tool, see ports/README.md)" >&2; exit 2; }
if [[ -z "$work" ]]; then
  work=$(mktemp -d /tmp/quarry-vcpkg-check.XXXXXX)
else
  rm -rf "$work" && mkdir -p "$work"
fi
work=$(cd "$work" && pwd)

# vcpkg may use the cmake, ninja (and patchelf) on PATH instead of downloading its own.
export VCPKG_FORCE_SYSTEM_BINARIES=1
export VCPKG_MAX_CONCURRENCY="${VCPKG_MAX_CONCURRENCY:-2}"
export VCPKG_DISABLE_METRICS=1
# vcpkg's package hash covers the port's files but not the checkout the overlay port builds, so
# a binary cache could hand back a package built from older sources. Only a cache made by this
# run is used: the classic install fills it, the manifest install takes quarry from it.
export VCPKG_BINARY_SOURCES="clear;files,$work/archives,readwrite"
mkdir -p "$work/archives" "$work/downloads"
unset VCPKG_ROOT VCPKG_DEFAULT_TRIPLET VCPKG_OVERLAY_PORTS X_VCPKG_ASSET_SOURCES

overlays=("--overlay-ports=$repo/ports")
consumer_overlays=""
if [[ $offline == 1 ]]; then
  overlays+=("--overlay-ports=$repo/ports/offline")
  consumer_overlays="$repo/ports/offline"  # ../../ports comes from vcpkg-configuration.json
fi
spec=quarry
consumer_features=""
if [[ $cuda == 1 ]]; then
  spec="quarry[cuda]"
  consumer_features=cuda
fi
common=(--triplet="$triplet" --downloads-root="$work/downloads" --x-buildtrees-root="$work/buildtrees"
        --x-packages-root="$work/packages")

step() { printf '\n== %s\n' "$*"; }

step "vcpkg $("$vcpkg" version | head -n 1 | sed 's/.*version //'), root $vcpkg_root ($(git -C "$vcpkg_root" rev-parse --short HEAD 2>/dev/null || echo 'not a git tree'))"
echo "checkout: $repo; triplet $triplet; work directory $work"

step "classic mode: vcpkg install $spec (overlay port ports/quarry)"
"$vcpkg" install "$spec" "${overlays[@]}" "${common[@]}" --x-install-root="$work/classic/installed"

installed="$work/classic/installed/$triplet"
for f in share/quarry/quarryConfig.cmake share/quarry/quarryConfigVersion.cmake share/quarry/quarryTargets.cmake \
         share/quarry/usage share/quarry/copyright include/quarry/quarry.hpp include/quarry/config.hpp; do
  [[ -f "$installed/$f" ]] || { echo "check.sh: the installed package lacks $f" >&2; exit 1; }
done
[[ ! -e "$installed/lib/cmake/quarry" ]] || { echo "check.sh: lib/cmake/quarry left behind by the config fixup" >&2; exit 1; }
[[ ! -e "$installed/debug/include" ]] || { echo "check.sh: debug/include is installed" >&2; exit 1; }
if [[ $cuda == 1 ]]; then
  [[ -f "$installed/share/quarry/quarryCudaTargets.cmake" ]] || { echo "check.sh: quarry[cuda] installed no quarryCudaTargets.cmake" >&2; exit 1; }
fi
echo "installed: $(cd "$installed" && find . -path ./include -prune -o -type f -print | sort | tr '\n' ' ')"

# The consumer in Release and, where the triplet builds debug libraries too, in Debug: that one
# links debug/lib's quarry through the IMPORTED_LOCATION_DEBUG of the fixed-up targets file.
configs=(Release)
if [[ $triplet != *-release ]]; then
  configs+=(Debug)
  [[ -f "$installed/share/quarry/quarryTargets-debug.cmake" ]] || { echo "check.sh: no quarryTargets-debug.cmake for triplet $triplet" >&2; exit 1; }
fi
for config in "${configs[@]}"; do
  build="$work/consumer"
  [[ $config == Release ]] || build="$work/consumer-$config"
  step "manifest mode: examples/vcpkg-consumer, $config (vcpkg installs quarry while CMake configures)"
  cmake -S "$repo/examples/vcpkg-consumer" -B "$build" -G Ninja \
    -DCMAKE_BUILD_TYPE="$config" \
    -DCMAKE_TOOLCHAIN_FILE="$vcpkg_root/scripts/buildsystems/vcpkg.cmake" \
    -DVCPKG_TARGET_TRIPLET="$triplet" \
    -DVCPKG_OVERLAY_PORTS="$consumer_overlays" \
    -DVCPKG_MANIFEST_FEATURES="$consumer_features" \
    "-DVCPKG_INSTALL_OPTIONS=--downloads-root=$work/downloads;--x-buildtrees-root=$work/buildtrees;--x-packages-root=$work/packages"
  cmake --build "$build" -j "$VCPKG_MAX_CONCURRENCY" -v > "$build.log" 2>&1 || { cat "$build.log"; exit 1; }
  echo "linked: $(grep -o '[^ ]*libquarry[^ ]*' "$build.log" | sort -u | tr '\n' ' ')"

  step "run the consumer ($config)"
  "$build/quarry_vcpkg_consumer"
done

step "ok: the port installed and the manifest-mode consumer built and ran ($work)"
