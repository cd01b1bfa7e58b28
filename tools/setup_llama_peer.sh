#!/usr/bin/env bash
# Builds llama.cpp as shared libraries from the llama.cpp source shipped in the
# registry package llama-cpp-sys-2 (the same pinned version whose ggml
# ggml-sys builds), for tests that compare against llama.cpp (the tokenizer
# reference in tests/tokenizer.rs, the logits of tests/llama_reference.rs
# through tools/peer/llama_logits.c, built here) and for side-by-side benchmarks. Nothing
# of it is linked into recurrent-depth.
# Usage: tools/setup_llama_peer.sh [DIR=target/llama-peer]
# Prints the path of libllama.so on its last line (export it as RD_LLAMA_CPP_LIB).
set -euo pipefail
cd "$(dirname "$0")/.."
D=$(realpath -m "${1:-target/llama-peer}")
VER=0.1.161
mkdir -p "$D"
find_src() { ls -d "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/llama-cpp-sys-2-$VER/llama.cpp 2>/dev/null | head -1; }
SRC=$(find_src)
if [ -z "$SRC" ]; then
  # Let cargo fetch the package (checked against the registry index).
  mkdir -p "$D/fetch"
  printf '[package]\nname = "peer-fetch"\nversion = "0.0.0"\nedition = "2021"\n[lib]\npath = "lib.rs"\n[dependencies]\nllama-cpp-sys-2 = { version = "=%s", default-features = false }\n[workspace]\n' "$VER" > "$D/fetch/Cargo.toml"
  : > "$D/fetch/lib.rs"
  cargo fetch --quiet --manifest-path "$D/fetch/Cargo.toml" --target "$(rustc -vV | sed -n 's/^host: //p')"
  SRC=$(find_src)
fi
[ -n "$SRC" ] || { echo "llama-cpp-sys-2 $VER source not found" >&2; exit 1; }
B="$D/build"
ISA=()
# The kernels rd runs here: AVX-512 when ggml-sys is built for it, or when
# it chooses at run time (`auto`, the default on x86-64 Linux) on a CPU with
# every extension its AVX-512 copy uses (ggml-sys/README.md), unless
# GGML_SYS_CPU_KERNELS=v3 keeps the baseline.
avx512_cpu() {
  local f
  for f in avx512f avx512cd avx512vl avx512dq avx512bw avx512vbmi avx512_vnni; do
    grep -qw "$f" /proc/cpuinfo 2>/dev/null || return 1
  done
}
LEVEL=${GGML_SYS_X86_LEVEL:-auto}
if [ "$(uname -m)" = x86_64 ] && { [ "$LEVEL" = avx512 ] ||
  { [ "$LEVEL" = auto ] && [ "${GGML_SYS_CPU_KERNELS:-}" != v3 ] && avx512_cpu; }; }; then
  # As ggml-sys's AVX-512 build (ggml-sys/README.md), AMX buffer type
  # included (used where the kernel grants the tile state, as in rd), with
  # ggml-sys's fix of its tile configuration (patch 0003), without which
  # every batched product on AMX dies with SIGILL.
  B="$D/build-avx512-amx"
  ISA=(-DGGML_AVX512=ON -DGGML_AVX512_VBMI=ON -DGGML_AVX512_VNNI=ON -DGGML_AMX_TILE=ON -DGGML_AMX_INT8=ON)
  P="$D/src-amx"
  PATCH=ggml-sys/patches/0003-amx-tile-config-and-quiet-init.patch
  # The copy is redone (and the library rebuilt) when the patch changes.
  STAMP="$P/.patched-$(sha256sum "$PATCH" | cut -c1-16)"
  if [ ! -f "$STAMP" ]; then
    rm -rf "$B"
    rm -rf "$P"
    cp -r "$SRC" "$P"
    python3 - "$P/ggml" "$PATCH" <<'PY'
# Applies a ggml-sys patch (format: ggml-sys/build.rs, apply_patch) to a copy.
import sys
root, patch = sys.argv[1], open(sys.argv[2]).read().split("\n")
i = 0
while i < len(patch):
    if not patch[i].startswith("@@ "):
        i += 1
        continue
    path = root + "/" + patch[i][3:].strip()
    assert patch[i + 1] == "<<<<<<<"
    j = patch.index("=======", i)
    k = patch.index(">>>>>>>", j)
    old, new = "\n".join(patch[i + 2:j]), "\n".join(patch[j + 1:k])
    body = open(path).read()
    assert body.count(old) == 1, path
    open(path, "w").write(body.replace(old, new))
    i = k + 1
PY
    touch "$STAMP"
  fi
  SRC="$P"
fi
if [ ! -f "$B/bin/libllama.so" ]; then
  # Same instruction sets as ggml-sys's x86-64 build (GGML_NATIVE off).
  cmake -S "$SRC" -B "$B" -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=OFF -DGGML_OPENMP=OFF "${ISA[@]}" \
    -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF \
    -DLLAMA_BUILD_SERVER=OFF -DLLAMA_BUILD_TOOLS=OFF -DLLAMA_BUILD_COMMON=OFF -DLLAMA_BUILD_APP=OFF \
    -DBUILD_SHARED_LIBS=ON >"$D/cmake.log"
  cmake --build "$B" -j"$(nproc)" --target llama >>"$D/cmake.log"
fi
# The reference-logits program of tests/llama_reference.rs, next to the library.
L="$B/bin"
if [ ! "$L/llama_logits" -nt tools/peer/llama_logits.c ]; then
  cc -O2 -o "$L/llama_logits" tools/peer/llama_logits.c -I"$SRC/include" -I"$SRC/ggml/include" \
    -L"$L" -lllama -lggml -lggml-base -Wl,-rpath,"$L"
fi
echo "$B/bin/libllama.so"
