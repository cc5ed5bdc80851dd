#!/usr/bin/env bash
# Builds quarry in Release (with CUDA when nvcc is found) and runs the main demo.
set -euo pipefail
cd "$(dirname "$0")/.."
. tools/env.sh
cmake --preset release
cmake --build --preset release -j "$jobs"
./build/release/examples/quarry_demo "$@"
