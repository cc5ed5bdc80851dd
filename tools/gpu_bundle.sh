#!/usr/bin/env bash
# Packs the CUDA tests and GPU benchmarks, built here by the release preset, into .gpu/ (git
# ignores it) with the shared libraries a bare GPU machine lacks (libfmt; the CUDA runtime and
# cuBLAS are the machine's own), and writes .gpu/run.sh, which runs them there:
#
#   tools/gpu_bundle.sh                      # here, after cmake --build --preset release
#   (device tool) run: bash .gpu/run.sh      carry: [".gpu"]
#
# run.sh runs every CUDA test binary (a failure does not stop the others), then the three GPU
# benchmarks (paged attention first) with --json into $OUT (or .gpu/out without $OUT), and prints a
# summary line per binary; it exits non-zero when any test failed. `run.sh NAME...` runs only
# those binaries ("tests", "benches": each group), in that order: a device command runs for 10
# minutes at most, so run the tests and one benchmark per command. Set QUIET_BENCH=1 to skip the
# benchmarks, QUARRY_GPU_QUICK=1 to run them with --quick, QUARRY_GPU_TINY=1 with --tiny
# (seconds; no figures).
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build/release}
out=.gpu
tests=(test_cuda_device test_cuda_tensor test_cuda_convert test_cuda_qgemm test_cuda_ivf_pq test_cuda_paged_attention test_cuda_kv_cache)
benches=(bench_cuda_paged_attention bench_cuda_qgemm bench_cuda_ivf_pq)
rm -rf "$out"
mkdir -p "$out/lib"
for t in "${tests[@]}"; do
  f=$(find "$build/tests" -name "$t" -type f -perm -u+x | head -1)
  [[ -n "$f" ]] || { echo "gpu_bundle: $t not built in $build (cmake --build --preset release first)" >&2; exit 1; }
  cp "$f" "$out/"
done
for b in "${benches[@]}"; do
  [[ -x "$build/bench/$b" ]] || { echo "gpu_bundle: $build/bench/$b not built" >&2; exit 1; }
  cp "$build/bench/$b" "$out/"
done
# The libraries the binaries need beyond glibc, libstdc++ and CUDA's own.
ldd "$out"/test_cuda_paged_attention "$out"/bench_cuda_qgemm | awk '/=> \// {print $3}' | sort -u | while read -r lib; do
  case "$(basename "$lib")" in
    libfmt*) cp -L "$lib" "$out/lib/" ;;
  esac
done
if ! grep -qs '^/.gpu/$' .git/info/exclude; then
  mkdir -p .git/info
  echo '/.gpu/' >> .git/info/exclude
fi
cat > "$out/run.sh" <<'EOF'
#!/usr/bin/env bash
# Written by tools/gpu_bundle.sh: the CUDA tests, then the GPU benchmarks, on a GPU machine.
#   bash .gpu/run.sh [NAME...]   NAME: a test or benchmark binary, or "tests" or "benches";
#                                none: every test, then every benchmark
# One device command runs for at most 10 minutes: run the tests and one benchmark per command.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
export LD_LIBRARY_PATH="$here/lib:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}"
dest=${OUT:-$here/out}
mkdir -p "$dest"
tests=(TESTS)
benches=(BENCHES)
names=()
for a in "${@:-tests benches}"; do
  for n in $a; do
    case "$n" in
      tests) names+=("${tests[@]}") ;;
      benches) [[ -z "${QUIET_BENCH:-}" ]] && names+=("${benches[@]}") ;;
      *) [[ -x "$here/$n" ]] || { echo "run.sh: no binary $n in $here" >&2; exit 2; }; names+=("$n") ;;
    esac
  done
done
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
bench_args=${QUARRY_GPU_QUICK:+--quick}
[[ -n "${QUARRY_GPU_TINY:-}" ]] && bench_args="$bench_args --tiny"
failed=0
summary=()
for n in "${names[@]}"; do
  start=$(date +%s)
  if [[ "$n" == bench_* ]]; then
    "$here/$n" $bench_args --json "$dest/$n.json" 2>&1 | tee "$dest/$n.log"
    rc=${PIPESTATUS[0]}
  else
    "$here/$n" --no-colors 2>&1 | tee "$dest/$n.log" | tail -4
    rc=${PIPESTATUS[0]}
    if [[ $rc -ne 0 && $rc -ne 77 ]]; then failed=1; fi
  fi
  summary+=("$n: exit $rc ($(( $(date +%s) - start )) s)")
  echo "run.sh: ${summary[-1]}"
done
printf '%s\n' "${summary[@]}"
exit $failed
EOF
sed -i "s/TESTS/${tests[*]}/; s/BENCHES/${benches[*]}/" "$out/run.sh"
chmod +x "$out/run.sh"
du -sh "$out" | awk '{print "gpu_bundle: " $1 " in .gpu/ (the device tool carries at most 64 MiB)"}'
