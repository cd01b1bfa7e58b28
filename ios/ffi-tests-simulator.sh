#!/usr/bin/env bash
# Runs the C API tests (ffi-tests/test_api.c and example.c) in the iOS
# simulator, against the simulator slice of the library.
#
#   ios/ffi-tests-simulator.sh             # SIMULATOR="iPhone 15" to pick a device type
#
# Steps: build the static library for the simulator of this Mac's
# architecture (aarch64-apple-ios-sim or x86_64-apple-ios, feature metal);
# compile the tests with the iphonesimulator SDK; make the test model with a
# host build of `rd`; boot a simulator; run the binaries with
# `xcrun simctl spawn` (it runs command-line programs inside the simulator,
# which sees the Mac's file system); read the "N passed, M failed" line.
# Needs macOS with Xcode and its iOS simulator runtime, and rustup.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
out="$root/ios/build/ffi-tests"
export IPHONEOS_DEPLOYMENT_TARGET="${IPHONEOS_DEPLOYMENT_TARGET:-15.0}"

case "$(uname -m)" in
  arm64) target=aarch64-apple-ios-sim; clang_target="arm64-apple-ios$IPHONEOS_DEPLOYMENT_TARGET-simulator" ;;
  x86_64) target=x86_64-apple-ios; clang_target="x86_64-apple-ios$IPHONEOS_DEPLOYMENT_TARGET-simulator" ;;
  *) echo "unknown Mac architecture" >&2; exit 1 ;;
esac

rustup target add "$target"
cargo build --release --lib --target "$target" --no-default-features --features metal
lib="$root/target/$target/release/librecurrent_depth.a"

mkdir -p "$out/fixtures"
sdk="$(xcrun --sdk iphonesimulator --show-sdk-path)"
for t in test_api example; do
  xcrun --sdk iphonesimulator clang -target "$clang_target" -isysroot "$sdk" \
    -std=c11 -O1 -g -Wall -Wextra -Iinclude "ffi-tests/$t.c" "$lib" \
    -lc++ -framework Foundation -framework Metal -framework MetalKit -framework Accelerate \
    -o "$out/$t"
done

cargo build --bin rd
"$root/target/debug/rd" make-test-model --out "$out/fixtures/model.gguf"

device="${SIMULATOR:-iPhone 15}"
udid="$(xcrun simctl list devices available | grep -F "$device (" | head -n1 | grep -oE '[0-9A-F-]{36}' || true)"
if [ -z "$udid" ]; then
  echo "no available simulator named '$device' (xcrun simctl list devices available)" >&2
  exit 1
fi
xcrun simctl boot "$udid" 2>/dev/null || true # already booted is fine
xcrun simctl bootstatus "$udid" -b >/dev/null

xcrun simctl spawn "$udid" "$out/example" "$out/fixtures/model.gguf"
log="$out/test_api.log"
SIMCTL_CHILD_RD_TEST_SLOW=1 xcrun simctl spawn "$udid" "$out/test_api" "$out/fixtures" | tee "$log"
line="$(grep -E '^[0-9]+ passed, [0-9]+ failed$' "$log" | tail -n1)"
[ -n "$line" ] || { echo "no summary line: test_api crashed?" >&2; exit 1; }
[ "${line#*passed, }" = "0 failed" ]
