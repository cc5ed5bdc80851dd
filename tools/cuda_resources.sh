#!/usr/bin/env bash
# What each CUDA kernel of src/cuda costs an SM, from ptxas (no GPU needed): registers per thread,
# spilled bytes, static shared memory, and for the paged decode kernel (blocks of 128 threads)
# how many blocks an SM holds by registers. Read it beside a GPU run's figures: a
# memory-bound kernel with few resident warps needs many loads in flight per thread.
#
#   tools/cuda_resources.sh [ARCH] [FILE.cu...]     # default: sm_90, every src/cuda/*.cu
set -euo pipefail
cd "$(dirname "$0")/.."
arch=${1:-sm_90}
shift || true
files=("$@")
((${#files[@]})) || files=(src/cuda/*.cu)
nvcc=${NVCC:-$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)}
[[ -x "$nvcc" ]] || { echo "cuda_resources: nvcc not found (set NVCC)" >&2; exit 1; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
printf '%-80s %5s %7s %7s %s\n' kernel regs spill smem "decode blocks (128 threads) per SM, by registers"
for f in "${files[@]}"; do
  "$nvcc" -O3 -std=c++17 -arch="$arch" -Isrc/cuda -Iinclude -c "$f" -o "$tmp/k.o" -Xptxas -v 2>"$tmp/log"
  # ptxas prints, per entry: "Compiling entry function 'NAME'", a spill line, a "Used N registers" line.
  awk '
    /Compiling entry function/ { match($0, /\x27[^\x27]+\x27/); name = substr($0, RSTART + 1, RLENGTH - 2) }
    /bytes spill stores/ { spill = $5 }
    /Used [0-9]+ registers/ {
      regs = 0; smem = 0
      for (i = 1; i <= NF; ++i) { if ($(i + 1) == "registers,") regs = $i; if ($(i + 1) == "bytes" && $(i + 2) == "smem") smem = $i }
      print name, regs, spill, smem
    }' "$tmp/log" | while read -r name regs spill smem; do
    demangled=$(echo "$name" | c++filt | sed -e 's/quarry::cuda_kernels:://g' -e 's/(anonymous namespace):://g' \
      -e 's/(KvType)0/f32/; s/(KvType)1/f16/; s/(KvType)2/bf16/; s/(KvType)3/i8/; s/(KvType)4/i4/')
    blocks=-
    if [[ $demangled == "void decode_kernel<"* ]]; then
      # Registers are allocated per warp in units of 256 (8 per thread); an SM has 65,536.
      blocks=$((65536 / ((regs + 7) / 8 * 8 * 32 * 4)))
    fi
    printf '%-80.80s %5s %7s %7s %s\n' "$demangled" "$regs" "$spill" "$smem" "$blocks"
  done
done
