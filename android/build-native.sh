#!/usr/bin/env bash
# Builds the Rust library for Android with cargo-ndk and (with --aar) the AAR.
#
#   android/build-native.sh          # android/build/rust/<ABI>/librecurrent_depth.{a,so}
#   android/build-native.sh --aar    # then `gradle assembleRelease`: build/outputs/aar/
#
# ABIs: arm64-v8a, armeabi-v7a, x86_64 (override with ABIS="arm64-v8a").
# Needs (docs/android.md): the Android NDK r27 or newer in ANDROID_NDK_HOME,
# rustup, cargo-ndk (`cargo install cargo-ndk`), cmake and libclang (as for
# the host build), and for --aar Gradle 8.9+ with the Android SDK
# (ANDROID_HOME, platform 35, CMake 3.22.1).
#
# 16 KB pages: every shared object is linked with -z max-page-size=16384
# (the cdylib here through RUSTFLAGS, the JNI bridge in CMakeLists.txt) and
# the script checks the LOAD segment alignment of what it built.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

ABIS="${ABIS:-arm64-v8a armeabi-v7a x86_64}"
# minSdk of build.gradle.kts; ggml-sys's build script reads ANDROID_API_LEVEL.
export ANDROID_API_LEVEL="${ANDROID_API_LEVEL:-28}"
: "${ANDROID_NDK_HOME:?set ANDROID_NDK_HOME to an Android NDK r27 or newer}"
# cargo-ndk and ggml-sys's build script read ANDROID_NDK_HOME (ggml-sys also ANDROID_NDK).
export ANDROID_NDK="$ANDROID_NDK_HOME"

command -v cargo-ndk >/dev/null 2>&1 || {
  echo "cargo-ndk is missing: cargo install cargo-ndk" >&2
  exit 1
}

triple() {
  case "$1" in
    arm64-v8a) echo aarch64-linux-android ;;
    armeabi-v7a) echo armv7-linux-androideabi ;;
    x86_64) echo x86_64-linux-android ;;
    x86) echo i686-linux-android ;;
    *) echo "unknown ABI $1" >&2; exit 1 ;;
  esac
}

if command -v rustup >/dev/null 2>&1; then
  # shellcheck disable=SC2046
  rustup target add $(for abi in $ABIS; do triple "$abi"; done)
fi

readelf="$(ls "$ANDROID_NDK_HOME"/toolchains/llvm/prebuilt/*/bin/llvm-readelf 2>/dev/null | head -n1 || true)"
[ -n "$readelf" ] || readelf=readelf
check_16k() {
  # Every PT_LOAD segment must be aligned to at least 16 KB (0x4000).
  local a bad=0
  for a in $("$readelf" -lW "$1" | awk '$1 == "LOAD" { print $NF }'); do
    [ $((a)) -ge 16384 ] || bad=1
  done
  if [ "$bad" = 1 ]; then
    echo "FAIL: $1 is not 16 KB aligned:" >&2
    "$readelf" -lW "$1" | grep LOAD >&2
    exit 1
  fi
  echo "16 KB aligned: $1"
}

# The cdylib (for apps that call the C API from their own native code) is
# linked by rustc: give it the 16 KB alignment. With --target, RUSTFLAGS does
# not reach build scripts, which run on the host.
export RUSTFLAGS="${RUSTFLAGS:-} -C link-arg=-Wl,-z,max-page-size=16384"

for abi in $ABIS; do
  t="$(triple "$abi")"
  # --no-default-features: the `cli` feature only serves the rd binary.
  # RD_FEATURES=vulkan adds the Vulkan backend (docs/android.md).
  cargo ndk -t "$abi" --platform "$ANDROID_API_LEVEL" build --release --lib --no-default-features \
    ${RD_FEATURES:+--features "$RD_FEATURES"}
  dest="$root/android/build/rust/$abi"
  mkdir -p "$dest"
  cp "$root/target/$t/release/librecurrent_depth.a" "$root/target/$t/release/librecurrent_depth.so" "$dest/"
  check_16k "$dest/librecurrent_depth.so"
done

if [ "${1:-}" = "--aar" ]; then
  (cd "$root/android" && gradle --no-daemon assembleRelease)
  aar="$(ls "$root"/android/build/outputs/aar/*release*.aar | head -n1)"
  check="$root/android/build/aar-check"
  rm -rf "$check"
  mkdir -p "$check"
  (cd "$check" && unzip -q "$aar" 'jni/*')
  for so in "$check"/jni/*/*.so; do
    check_16k "$so"
  done
  echo "AAR: $aar"
  ls -l "$check"/jni/*/*.so
fi
