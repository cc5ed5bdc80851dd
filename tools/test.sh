#!/usr/bin/env bash
# Builds and runs the whole test suite: Release (with the CUDA component when nvcc is found;
# CUDA tests are skipped without a GPU), then Debug with ASan+UBSan, then with TSan. Every CPU
# test runs under each ISA this machine supports (QUARRY_FORCE_ISA). Then, with clang, the suite again (release,
# CPU only: Clang inlines and diagnoses otherwise than GCC), and every libFuzzer target in fuzz/
# for a fixed time (QUARRY_FUZZ_SECONDS each, default 25) on its seeds.
set -euo pipefail
cd "$(dirname "$0")/.."
. tools/env.sh
# Under CI (CI set, as CI machines do) a stage's build directory is removed once its tests pass:
# the five builds together outgrow a small CI disk (one ran out linking the last fuzzer). Set
# QUARRY_KEEP_BUILDS=1 to keep them; outside CI they are kept.
prune() {
  if [ -n "${CI:-}" ] && [ -z "${QUARRY_KEEP_BUILDS:-}" ]; then
    echo "test.sh: removing $1 ($(du -sh "$1" | cut -f1)) to keep the CI disk free"
    rm -rf "$1"
  fi
}
cmake --preset release
cmake --build --preset release -j "$jobs"
ctest --preset release -j "$jobs"
prune build/release
cmake --preset asan
cmake --build --preset asan -j "$jobs"
ctest --preset asan -j "$jobs"
prune build/asan
# ThreadSanitizer (the tsan preset: CPU only): every test once (no ISA repeats), so the thread
# pool, the multi-threaded kernels and the kv module's concurrent calls run under TSan; and the
# emulated CUDA kernels as racecheck (tests/cuda_emulated/simt.cpp: a kernel thread's access that
# no __syncthreads or __syncwarp orders after another's is a data race, whatever the results).
cmake --preset tsan >/dev/null
cmake --build --preset tsan -j "$jobs"
ctest --preset tsan -j "$jobs"
prune build/tsan
fuzz_seconds=${QUARRY_FUZZ_SECONDS:-25}
if command -v clang++ >/dev/null 2>&1; then
  # The suite built with Clang (the clang preset: release, CPU only), whose inlining and
  # diagnostics differ from GCC's: every test with every ISA this machine has, the ISA rule
  # (tests/core/check_isa_symbols.cmake: no inline function shared between an AVX2 / AVX-512
  # object and the rest) and the emulated CUDA tests forward, but for the longest (the attention
  # cases per head_dim and IVF-PQ, which GCC's builds run in both orders).
  cmake --preset clang >/dev/null
  cmake --build --preset clang -j "$jobs"
  ctest --preset clang -j "$jobs"
  prune build/clang
  # Fuzzing: every libFuzzer target in fuzz/ (clang, ASan + UBSan) built at -O0 with the scalar
  # kernels only (the optimizer and the AVX TUs would triple the build; the SIMD kernels are
  # checked against the scalar ones by the conformance tests), then run for a fixed time on the
  # seeds its *_seeds program writes, $jobs at a time. A crash, leak or timeout fails the script;
  # the input is kept as build/fuzz/crashes/<target>-crash-*.
  fuzz_dir=build/fuzz
  cmake -S . -B "$fuzz_dir" -DCMAKE_CXX_COMPILER=clang++ -DCMAKE_BUILD_TYPE= -DQUARRY_BUILD_FUZZERS=ON -DQUARRY_CUDA=OFF \
    -DQUARRY_BUILD_TESTS=OFF -DQUARRY_BUILD_BENCH=OFF -DQUARRY_BUILD_EXAMPLES=OFF -DQUARRY_INSTALL=OFF \
    -DQUARRY_CXX_HAS_AVX2=0 -DQUARRY_CXX_HAS_AVX512=0 \
    -DCMAKE_CXX_FLAGS="-fsanitize=fuzzer-no-link,address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer -O0 -gline-tables-only"
  fuzzers=(fuzz_section_file fuzz_ivf_pq_load fuzz_gguf fuzz_safetensors)
  seeders=(quarry_fuzz_section_file_seeds quarry_fuzz_ivf_pq_seeds quarry_fuzz_gguf_seeds quarry_fuzz_safetensors_seeds)
  cmake --build "$fuzz_dir" -j "$jobs" --target "${fuzzers[@]}" "${seeders[@]}"
  rm -rf "$fuzz_dir/seeds" "$fuzz_dir/corpus" "$fuzz_dir/crashes"
  mkdir -p "$fuzz_dir/crashes"
  model="${QUARRY_DATA_DIR:-../shared/data}/models/stories260K/stories260K.gguf"
  for i in "${!fuzzers[@]}"; do
    mkdir -p "$fuzz_dir/seeds/${fuzzers[$i]}" "$fuzz_dir/corpus/${fuzzers[$i]}"
    extra=()
    if [ "${fuzzers[$i]}" = fuzz_gguf ] && [ -f "$model" ]; then extra=("$model"); fi
    "$fuzz_dir/fuzz/${seeders[$i]}" "$fuzz_dir/seeds/${fuzzers[$i]}" "${extra[@]}"
  done
  run_fuzzer() {
    local name=$1 args=()
    [ "$name" = fuzz_safetensors ] && args=(-dict=fuzz/safetensors.dict)
    "$fuzz_dir/fuzz/$name" "${args[@]}" -max_total_time="$fuzz_seconds" -timeout=20 -rss_limit_mb=2048 -print_final_stats=1 \
      -artifact_prefix="$fuzz_dir/crashes/$name-" "$fuzz_dir/corpus/$name" "$fuzz_dir/seeds/$name" >"$fuzz_dir/$name.log" 2>&1
  }
  failed=()
  for ((start = 0; start < ${#fuzzers[@]}; start += jobs)); do  # $jobs fuzzers at a time, one core each
    batch=("${fuzzers[@]:start:jobs}") pids=()
    for name in "${batch[@]}"; do
      run_fuzzer "$name" &
      pids+=("$!")
    done
    for i in "${!batch[@]}"; do
      name=${batch[$i]}
      if wait "${pids[$i]}"; then
        echo "fuzz: $name: $(grep -o 'number_of_executed_units: *[0-9]*' "$fuzz_dir/$name.log" | grep -o '[0-9]*$') inputs in ${fuzz_seconds} s, no crash"
      else
        failed+=("$name")
        tail -n 60 "$fuzz_dir/$name.log"
      fi
    done
  done
  if ((${#failed[@]})); then
    echo "fuzz: ${failed[*]} failed; inputs in $fuzz_dir/crashes/" >&2
    exit 1
  fi
else
  echo "test.sh: clang++ not found (tools/install-deps.sh installs it): the Clang suite and the fuzz stage are skipped" >&2
fi
