#!/usr/bin/env bash
# Builds and runs the whole test suite: Release (with the CUDA component when nvcc is found;
# CUDA tests are skipped without a GPU), then Debug with ASan+UBSan. Every CPU test runs under
# each ISA this machine supports (QUARRY_FORCE_ISA).
set -euo pipefail
cd "$(dirname "$0")/.."
. tools/env.sh
cmake --preset release
cmake --build --preset release -j "$jobs"
ctest --preset release -j "$jobs"
cmake --preset asan
cmake --build --preset asan -j "$jobs"
ctest --preset asan -j "$jobs"
