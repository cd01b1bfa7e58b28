#!/usr/bin/env bash
# Installs what building and testing the Vulkan backend needs on Debian 12
# (docs/vulkan.md):
# - from Debian 12: Mesa's lavapipe (a conformant Vulkan driver that runs on
#   the CPU), the Vulkan loader, glslc and vulkaninfo;
# - from Debian 13, unpacked into a local prefix (nothing installed
#   system-wide): the Vulkan headers 1.4.309 (ggml-vulkan needs >= 1.3.261, Debian
#   12 ships 1.3.239) and SPIRV-Headers. The .deb files are checked against
#   their SHA-256 from Debian's package index.
#
# Usage: bash tools/setup_vulkan.sh [PREFIX]     (default: target/vulkan-sdk)
# Then:  source PREFIX/env.sh && cargo test --features vulkan
set -euo pipefail
cd "$(dirname "$0")/.."
PREFIX="${1:-target/vulkan-sdk}"
mkdir -p "$PREFIX"
PREFIX="$(cd "$PREFIX" && pwd)"
SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi

need_apt=0
command -v glslc >/dev/null 2>&1 || need_apt=1
command -v vulkaninfo >/dev/null 2>&1 || need_apt=1
ls /usr/share/vulkan/icd.d/lvp_icd*.json >/dev/null 2>&1 || need_apt=1
ls /usr/lib/*/libvulkan.so.1 >/dev/null 2>&1 || need_apt=1
if [ "$need_apt" = 1 ]; then
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq \
    mesa-vulkan-drivers libvulkan1 glslc vulkan-tools >/dev/null
fi

MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
fetch_deb() { # path sha256
  local path="$1" sum="$2" file
  file="$PREFIX/debs/$(basename "$path")"
  mkdir -p "$PREFIX/debs"
  if ! echo "$sum  $file" | sha256sum -c --quiet >/dev/null 2>&1; then
    curl -fsSL --retry 3 -o "$file" "$MIRROR/$path"
    echo "$sum  $file" | sha256sum -c --quiet
  fi
  dpkg-deb -x "$file" "$PREFIX/root"
}
fetch_deb pool/main/v/vulkan-loader/libvulkan-dev_1.4.309.0-1_amd64.deb \
  8d329d465e16168afff58b1bd0dd6db46aac2cc3f56054a481b25a04e90b345a
fetch_deb pool/main/s/spirv-headers/spirv-headers_1.6.1+1.4.309.0-1_all.deb \
  dc18db866d63680351c40ac6b6bece34cb52da64a7799ce1cc4f16f6bff4d064

# A VULKAN_SDK-shaped tree: include/ from Debian 13, lib/libvulkan.so pointing
# at the system's loader (the loader's ABI is stable; the headers are what
# ggml needs to be new).
loader="$(ls /usr/lib/*/libvulkan.so.1 | head -n1)"
mkdir -p "$PREFIX/lib"
ln -sfn "$PREFIX/root/usr/include" "$PREFIX/include"
ln -sfn "$loader" "$PREFIX/lib/libvulkan.so"
ln -sfn "$loader" "$PREFIX/lib/libvulkan.so.1"

cat >"$PREFIX/env.sh" <<EOF
# Source this before building with --features vulkan (tools/setup_vulkan.sh).
export VULKAN_SDK="$PREFIX"
export CMAKE_PREFIX_PATH="$PREFIX/root/usr\${CMAKE_PREFIX_PATH:+:\$CMAKE_PREFIX_PATH}"
# ggml hides CPU-type Vulkan devices (lavapipe) unless asked for them.
export GGML_VK_VISIBLE_DEVICES="\${GGML_VK_VISIBLE_DEVICES:-0}"
EOF
echo "Vulkan build prefix ready: source $PREFIX/env.sh"
