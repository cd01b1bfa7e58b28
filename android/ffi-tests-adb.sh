#!/usr/bin/env bash
# Runs the C API tests (ffi-tests/test_api.c and example.c) on an Android
# device or emulator over adb, against the library build-native.sh makes.
#
#   android/ffi-tests-adb.sh               # the device adb sees (one only, or set ANDROID_SERIAL)
#
# Steps: detect the device's ABI; build the static library for it
# (build-native.sh with ABIS=<abi>); compile the tests with the NDK's clang,
# linking libc++ statically so nothing else must be pushed; make the test
# model with the host's `rd`; push to /data/local/tmp/rd-ffi-tests; run;
# read the "N passed, M failed" line. Needs what build-native.sh needs, adb,
# and a host build (`cargo build`) for `rd make-test-model`.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
: "${ANDROID_NDK_HOME:?set ANDROID_NDK_HOME to an Android NDK r27 or newer}"
api="${ANDROID_API_LEVEL:-28}"
remote=/data/local/tmp/rd-ffi-tests
out="$root/android/build/ffi-tests"

abi="$(adb shell getprop ro.product.cpu.abi | tr -d '\r')"
case "$abi" in
  arm64-v8a) clang_triple=aarch64-linux-android ;;
  armeabi-v7a) clang_triple=armv7a-linux-androideabi ;;
  x86_64) clang_triple=x86_64-linux-android ;;
  *) echo "unsupported device ABI '$abi'" >&2; exit 1 ;;
esac
echo "device ABI: $abi"

ABIS="$abi" "$root/android/build-native.sh"
lib="$root/android/build/rust/$abi/librecurrent_depth.a"

cc="$(ls "$ANDROID_NDK_HOME"/toolchains/llvm/prebuilt/*/bin/"$clang_triple$api"-clang++ | head -n1)"
mkdir -p "$out"
for t in test_api example; do
  # clang++ drives the link (ggml is C++); the sources are compiled as C11.
  "$cc" -x c -std=c11 -O1 -g -Wall -Wextra -Iinclude "ffi-tests/$t.c" -x none "$lib" \
    -static-libstdc++ -llog -landroid -ldl -lm -Wl,-z,max-page-size=16384 -o "$out/$t"
done

cargo build --bin rd
mkdir -p "$out/fixtures"
"$root/target/debug/rd" make-test-model --out "$out/fixtures/model.gguf"

adb shell "rm -rf $remote && mkdir -p $remote/fixtures"
adb push "$out/test_api" "$out/example" "$remote/" >/dev/null
adb push "$out/fixtures/model.gguf" "$remote/fixtures/" >/dev/null

adb shell "cd $remote && ./example fixtures/model.gguf" | tr -d '\r'
log="$out/test_api.log"
adb shell "cd $remote && RD_TEST_SLOW=1 ./test_api fixtures" | tr -d '\r' | tee "$log"
line="$(grep -E '^[0-9]+ passed, [0-9]+ failed$' "$log" | tail -n1)"
[ -n "$line" ] || { echo "no summary line: test_api crashed?" >&2; exit 1; }
[ "${line#*passed, }" = "0 failed" ]
