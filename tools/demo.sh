#!/usr/bin/env bash
# Builds quarry in Release (with CUDA when nvcc is found) and runs the main demo (arguments go to
# quarry_demo, e.g. a GGUF model), text generation when a GGUF model is given, then the
# vector-search example on generated data.
set -euo pipefail
cd "$(dirname "$0")/.."
. tools/env.sh
cmake --preset release
cmake --build --preset release -j "$jobs"
./build/release/examples/quarry_demo "$@"
printf '\n== text generation: examples/generate.cpp\n'
model=""
for a in "$@"; do case "$a" in *.gguf) model="$a" ;; esac; done
if [ -n "$model" ]; then
  ./build/release/examples/generate --model "$model" --prompt "Once upon a time" -n 60 --weights int8 --kv int8
else
  echo "Give a Llama GGUF model to generate text, e.g. ./tools/demo.sh ../shared/data/models/stories260K/stories260K.gguf"
  echo "(or run ./build/release/examples/generate --model FILE.gguf --prompt \"...\"; --help lists the options)"
fi
printf '\n== vector search: examples/search_vectors.cpp on generated data\n'
./build/release/examples/search_vectors
ann=../shared/data/ann/bigann10k
[ -f "$ann/base.bvecs" ] || ann=DIR
cat <<EOF

On real vectors (.fvecs or .bvecs, with .ivecs ground truth; e.g. SIFT/BIGANN from corpus-texmex.irisa.fr):
  ./build/release/examples/search_vectors --base $ann/base.bvecs --query $ann/query.bvecs --gt $ann/groundtruth.ivecs
  add --nbits 4 (fast-scan), --refine 8 (re-ranking), --nprobe P, --metric ip|cosine; --help lists all options
EOF
