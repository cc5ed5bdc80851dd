#!/bin/sh
# Runs an x86-64 executable under qemu-x86_64 (user mode) posing as CPUs without AVX-512, to
# prove DESIGN.md's claim that a binary built here runs on any x86-64: the kernel set is picked
# from CPUID at run time, and nothing outside src/cpu/avx512.cpp executes AVX-512.
#
#   tests/portability/run_without_avx512.sh <executable> [args...]
#
# For each "model:isa" in QUARRY_QEMU_CPUS (default below) it runs the program with
# `qemu-x86_64 -cpu <model>` and requires exit status 0. When the program's output names the
# ISA it picked ("active isa: X", as quarry_demo and test_cpu_features print, or "(active: X)",
# as the conformance test prints), that must be <isa>, unless QUARRY_FORCE_ISA is set.
#
# Default models: Haswell (AVX2, FMA, F16C, BMI2: expects avx2), SandyBridge (AVX but no AVX2
# or F16C: expects scalar) and Nehalem (SSE4.2 only: expects scalar).
#
# What it proves, with qemu 7.2 (Debian bookworm): its TCG has no AVX-512 at all, so any AVX-512
# instruction raises SIGILL under every model, and a stray one fails the run. TCG does execute
# AVX2 instructions even under -cpu Nehalem (it does not check CPUID for them), so the pre-AVX2
# runs prove that dispatch picks scalar there, not that no AVX2 instruction runs.
#
# Exit status: 0 all passed; 1 a run failed or picked the wrong ISA; 77 (ctest: skipped) when
# qemu-x86_64 is not installed (QUARRY_QEMU_X86_64 names another binary), the program is not an
# x86-64 executable, or the program skipped itself (77) under every model.
set -u

if [ $# -lt 1 ]; then
  echo "usage: $0 <executable> [args...]" >&2
  exit 2
fi
exe=$1
shift

qemu=${QUARRY_QEMU_X86_64:-qemu-x86_64}
if ! command -v "$qemu" >/dev/null 2>&1; then
  echo "skipped: $qemu is not installed (Debian: apt-get install qemu-user)"
  exit 77
fi
if [ ! -x "$exe" ]; then
  echo "error: $exe is not an executable file" >&2
  exit 2
fi
# ELF header: class 2 (64-bit) at byte 4, e_machine 0x3e (x86-64) at bytes 18-19.
if [ "$(od -An -tx1 -j4 -N1 "$exe" | tr -d ' ')" != "02" ] ||
   [ "$(od -An -tx1 -j18 -N2 "$exe" | tr -d ' ')" != "3e00" ]; then
  echo "skipped: $exe is not an x86-64 ELF executable"
  exit 77
fi

cases=${QUARRY_QEMU_CPUS:-"Haswell:avx2 SandyBridge:scalar Nehalem:scalar"}
log=$(mktemp)
trap 'rm -f "$log"' EXIT

now() { date +%s.%N 2>/dev/null || date +%s; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", b - a }'; }

start_all=$(now)
failed=0
ran=0
for c in $cases; do
  model=${c%%:*}
  want=${c#*:}
  t0=$(now)
  "$qemu" -cpu "$model" "$exe" "$@" >"$log" 2>&1
  rc=$?
  t1=$(now)
  # qemu warns about every feature of the model that TCG lacks (tsc-deadline, hle, ...): noise.
  grep -v "TCG doesn't support requested feature" "$log"
  got=$(grep -oE 'active isa: [a-z0-9]+|\(active: [a-z0-9]+\)' "$log" | head -n 1 | sed -E 's/.*: ([a-z0-9]+)\)?$/\1/')
  verdict=ok
  if [ "$rc" -eq 77 ]; then
    verdict="skipped (exit 77)"
  elif [ "$rc" -ne 0 ]; then
    verdict="FAILED (exit $rc$( [ "$rc" -eq 132 ] && echo ': SIGILL, an instruction this CPU lacks'))"
    failed=1
  elif [ -n "$got" ] && [ -z "${QUARRY_FORCE_ISA:-}" ] && [ "$got" != "$want" ]; then
    verdict="FAILED (picked isa $got, expected $want)"
    failed=1
  fi
  [ "$rc" -ne 77 ] && ran=$((ran + 1))
  echo "run_without_avx512: qemu-x86_64 -cpu $model: $verdict; isa ${got:-(not printed)}, expected $want; $(elapsed "$t0" "$t1") s"
done
echo "run_without_avx512: $(basename "$exe"): $(echo $cases | wc -w) CPU models in $(elapsed "$start_all" "$(now)") s"

if [ "$failed" -ne 0 ]; then exit 1; fi
if [ "$ran" -eq 0 ]; then exit 77; fi
exit 0
