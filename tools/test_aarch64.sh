#!/usr/bin/env bash
# Cross-builds recurrent-depth for aarch64-unknown-linux-gnu (the CPU of every
# phone we target) and runs under qemu-user, on this x86-64 machine: the
# golden tests (every weight type), the generation traces (every exit
# criterion; a subset of the cases of both, see below), the demo-model test, the C ffi-tests against the aarch64 static
# and shared libraries, and the load-time CPU check (a Cortex-A53, which lacks the dot-product
# instructions the default build uses, is refused with a message; a
# Cortex-A76 runs the demo). docs/android.md, "aarch64 under emulation".
#
# Usage: tools/test_aarch64.sh            (installs what it needs on Debian)
# Env:   QEMU_CPU (default max) for the tests; GGML_SYS_ARM_ARCH as in
#        ggml-sys/README.md (the CPU check then expects what that build needs);
#        RD_AARCH64_ALL=1 runs every golden and trace case, also runs
#        tests/alloc_per_token.rs and every C test
#        program against both libraries, test_alloc included (what CI runs is
#        the subset that exercises the ARM kernels and the C API).
set -euo pipefail
cd "$(dirname "$0")/.."
T=aarch64-unknown-linux-gnu
SYSROOT=/usr/aarch64-linux-gnu
SUDO=""; [ "$(id -u)" != 0 ] && SUDO="sudo"
need=0
for c in aarch64-linux-gnu-gcc aarch64-linux-gnu-g++ qemu-aarch64; do
  command -v "$c" >/dev/null 2>&1 || need=1
done
if [ "$need" = 1 ]; then
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq \
    gcc-aarch64-linux-gnu g++-aarch64-linux-gnu qemu-user >/dev/null
fi
rustup target list --installed | grep -qx "$T" || rustup target add "$T"

export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUNNER="qemu-aarch64 -L $SYSROOT -cpu ${QEMU_CPU:-max}"
export CC_aarch64_unknown_linux_gnu=aarch64-linux-gnu-gcc
export CXX_aarch64_unknown_linux_gnu=aarch64-linux-gnu-g++
export AR_aarch64_unknown_linux_gnu=aarch64-linux-gnu-ar

ALL="${RD_AARCH64_ALL:-0}"
QEMU="qemu-aarch64 -L $SYSROOT"

echo "== Rust tests on aarch64 under qemu (-cpu ${QEMU_CPU:-max})"
# Every weight type's kernels (golden), every exit criterion (traces) and the
# trained demo model.
tests=(--test golden --test traces --test demo_model)
[ "$ALL" = 1 ] && tests+=(--test alloc_per_token)
# A representative subset of the golden and trace cases (tests/common's
# case_subset): the same kernels and exit logic, a third of the emulated time.
[ "$ALL" = 1 ] || export RD_TEST_SUBSET=1
cargo test --target "$T" "${tests[@]}"

echo "== load-time CPU check"
cargo build --target "$T" --bin rd
RD_A64="target/$T/debug/rd"
DEMO=models/huginn-demo-addition.gguf
out=$($QEMU -cpu cortex-a76 "$RD_A64" run -m "$DEMO" --prompt "31415+27182=" \
  --max-iterations 32 --exit kl:5e-4 --max-tokens 10 2>&1)
grep -q 58597 <<< "$out" || { echo "cortex-a76: wrong or no answer: $out" >&2; exit 1; }
echo "cortex-a76: 58597 (as on x86-64)"
if [ -z "${GGML_SYS_ARM_ARCH:-}" ]; then
  # The default build needs dot product and fp16 arithmetic (ggml-sys/README.md).
  if out=$($QEMU -cpu cortex-a53 "$RD_A64" run -m "$DEMO" --prompt "1+2=" 2>&1); then
    echo "cortex-a53: expected a refusal, the demo ran: $out" >&2; exit 1
  fi
  grep -q "lacks dotprod, fp16" <<< "$out" || { echo "cortex-a53: unexpected error: $out" >&2; exit 1; }
  echo "cortex-a53: refused: $(grep -o 'this CPU lacks[^;]*' <<< "$out" | head -1)"
fi

echo "== C ffi-tests on aarch64 under qemu"
cargo build --target "$T" --lib
cargo build --bin rd   # the host rd makes the test models
# Inside ffi-tests/build/ (ignored by git: the static test programs are
# ~100 MB each and must never be committed).
B="$PWD/ffi-tests/build/aarch64"
make_args=(LIBDIR="$PWD/target/$T/debug" RD="$PWD/target/debug/rd" BUILD="$B"
  CC=aarch64-linux-gnu-gcc CXX=aarch64-linux-gnu-g++
  RUNNER="$QEMU -cpu ${QEMU_CPU:-max}")
if [ "$ALL" != 1 ]; then
  # The C API through both libraries, the text and app calls through the
  # static one. Not test_alloc (about 4 minutes per library under emulation;
  # RD_AARCH64_ALL=1 runs it).
  make_args+=(BINS="$B/test_api_static $B/test_api_shared $B/test_text_static $B/test_state_static")
fi
make -C ffi-tests --no-print-directory test "${make_args[@]}"
