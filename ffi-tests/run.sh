#!/usr/bin/env bash
# Builds the library and runs the C API tests on this machine.
#
#   ffi-tests/run.sh [plain|asan|valgrind|all|qemu-aarch64|adb|ios-sim]   (default: plain)
#
# plain:    every test program against the static and the shared library, and
#           the examples
# asan:     test_api, test_text and test_state under AddressSanitizer + UBSan
# valgrind: test_api, test_text and test_state under valgrind memcheck, failing on
#           definite leaks
# all:      the three in turn
# qemu-aarch64: cross-compiles the library and the test programs for
#           aarch64 Linux and runs them under qemu-user on this machine, with
#           the Rust golden/trace/demo tests and the load-time CPU
#           check (tools/test_aarch64.sh): the closest stand-in for a phone
# adb:      cross-compiles test_api and example for the Android device adb
#           sees (its ABI, the NDK in ANDROID_NDK_HOME), pushes them with a
#           test model and runs them there (android/ffi-tests-adb.sh)
# ios-sim:  on macOS with Xcode: builds the simulator slice (feature metal),
#           runs test_api and example in a booted iOS simulator
#           (ios/ffi-tests-simulator.sh; SIMULATOR="iPhone 15" picks one)
#
# Set PROFILE=release to test target/release (host modes). The adb and
# ios-sim modes need hardware or SDKs this project's CI does not have; CI
# checks their scripts' syntax only (docs/c-api.md).
set -euo pipefail
cd "$(dirname "$0")/.."
mode="${1:-plain}"
profile="${PROFILE:-debug}"
case "$mode" in
  qemu-aarch64) exec bash tools/test_aarch64.sh ;;
  adb) exec bash android/ffi-tests-adb.sh ;;
  ios-sim) exec bash ios/ffi-tests-simulator.sh ;;
esac
if [ "$profile" = release ]; then
  cargo build --release --lib --bins
else
  cargo build --lib --bins
fi
run() { make -C ffi-tests --no-print-directory PROFILE="$profile" "$@"; }
case "$mode" in
  plain) run test ;;
  asan) run test-asan ;;
  valgrind)
    if ! command -v valgrind >/dev/null 2>&1; then
      SUDO=""; [ "$(id -u)" != 0 ] && SUDO="sudo"
      $SUDO apt-get update -qq
      DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq valgrind >/dev/null
    fi
    run test-valgrind ;;
  all) "$0" asan && "$0" valgrind && "$0" plain ;;
  *) echo "usage: $0 [plain|asan|valgrind|all|qemu-aarch64|adb|ios-sim]" >&2; exit 2 ;;
esac
