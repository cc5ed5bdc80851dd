#!/usr/bin/env bash
# Builds quarry's Conan 2 package from this checkout and runs its test_package, offline: exports
# the recipes in recipes/ (eigen, xsimd, fmt made from the system's Debian packages), then runs
# `conan create` with with_cuda=False and, when nvcc is found, with with_cuda=True.
#
# Usage: packaging/conan/create.sh [extra conan create arguments, e.g. -o '&:shared=True']
# Environment:
#   CONAN  the conan command (default: conan), e.g. CONAN="python3 -m conans.conan" with
#          PYTHONPATH naming a conan checkout; see README.md
#   JOBS   parallel build jobs (default 2)
#   CUDA   auto (default: also build with_cuda=True when nvcc is found) or off (CPU only)
# Use a CONAN_HOME of its own (e.g. CONAN_HOME=/tmp/conan-home): the script makes a default
# profile there when it has none, and never asks a remote for anything (--no-remote).
set -euo pipefail

read -r -a conan <<< "${CONAN:-conan}"
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "${here}/../.." && pwd)"

# test_package/ builds out of the source tree.
test_build="$(mktemp -d "${TMPDIR:-/tmp}/quarry-conan-test.XXXXXX")"
trap 'rm -rf "${test_build}"' EXIT

"${conan[@]}" --version
if ! "${conan[@]}" profile path default > /dev/null 2>&1; then
  "${conan[@]}" profile detect
fi

for recipe in eigen xsimd fmt; do
  "${conan[@]}" export "${here}/recipes/${recipe}"
done

common=(--no-remote --build=missing
        -s compiler.cppstd=20
        -c "tools.build:jobs=${JOBS:-2}"
        -c "tools.cmake.cmake_layout:test_folder=${test_build}")

echo "== quarry, CPU only (with_cuda=False)"
"${conan[@]}" create "${repo}" "${common[@]}" -o '&:with_cuda=False' "$@"

if [[ "${CUDA:-auto}" == off ]]; then
  echo "== CUDA=off: with_cuda=True not tried"
  exit 0
fi
nvcc="$(command -v nvcc || true)"
if [[ -z "${nvcc}" && -x /usr/local/cuda/bin/nvcc ]]; then
  nvcc=/usr/local/cuda/bin/nvcc
fi
if [[ -n "${nvcc}" ]]; then
  echo "== quarry with its CUDA backend (with_cuda=True, ${nvcc})"
  "${conan[@]}" create "${repo}" "${common[@]}" -o '&:with_cuda=True' \
    -c "tools.build:compiler_executables={\"cuda\": \"${nvcc}\"}" "$@"
else
  echo "== no nvcc (not on PATH, not in /usr/local/cuda/bin): with_cuda=True not tried"
fi
