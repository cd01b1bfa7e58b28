#!/usr/bin/env bash
# Noise-free cost ratios: counts instructions (valgrind callgrind) of `rd run`
# generating a few tokens on one thread, for several iteration counts and KL
# check frequencies, and prints each as a ratio against a peer from the same run.
# Instruction counts do not depend on machine load, unlike wall time.
# Usage: tools/bench_instructions.sh [path/to/rd]
set -euo pipefail
RD=${1:-target/release/rd}
command -v valgrind >/dev/null || { echo "needs valgrind (apt-get install valgrind)"; exit 1; }
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
model="$dir/m.gguf"
"$RD" make-test-model --out "$model" --seed 3 --type q8_0 --n-embd 256 --n-ff 512 --n-head 4 \
  --n-vocab 512 --n-ctx 128 --blocks 2,4,2 2>/dev/null

count() { # args: label, rd run options...
  local label=$1; shift
  valgrind --tool=callgrind --callgrind-out-file="$dir/cg.out" \
    "$RD" run -m "$model" --threads 1 --prompt-tokens 1,2,3,4 --max-tokens 5 --kv-budget 1 "$@" \
    >/dev/null 2>"$dir/vg.log"
  grep -E "Collected" "$dir/vg.log" | awk '{print $NF}'
}

base=$(count base --iterations 1)
echo "instructions for 4 prompt + 5 generated tokens, 1 thread (ratios vs 1 iteration):"
for r in 1 4 8 32; do
  n=$(count "r$r" --iterations "$r")
  eval "r$r=$n"
  awk -v n="$n" -v b="$base" -v r="$r" 'BEGIN { printf "  fixed %2d iterations: %14d  %6.2fx\n", r, n, n / b }'
done
echo "KL checks at 8 iterations that never exit (kl:0), vs fixed 8:"
for c in 1 2 4; do
  n=$(count "kl$c" --min-iterations 1 --max-iterations 8 --exit kl:0 --check-every "$c")
  awk -v n="$n" -v b="$r8" -v c="$c" 'BEGIN { printf "  check_every %d: %14d  %6.3fx\n", c, n, n / b }'
done
# One core step vs one check: (r8 - r4) / 4 per step; (kl1 - r8) / 7 checks per token.
