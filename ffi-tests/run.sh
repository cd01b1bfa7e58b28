#!/usr/bin/env bash
# Builds the library and runs the C API tests on this machine.
#
#   ffi-tests/run.sh [plain|asan|valgrind|all]   (default: plain)
#
# plain:    every test program against the static and the shared library, and
#           the examples
# asan:     test_api and test_text under AddressSanitizer + UBSan
# valgrind: test_api and test_text under valgrind memcheck, failing on
#           definite leaks
# all:      the three in turn
#
# Set PROFILE=release to test target/release. Cross-compiled runs (Android over
# adb, the iOS simulator) are not implemented yet.
set -euo pipefail
cd "$(dirname "$0")/.."
mode="${1:-plain}"
profile="${PROFILE:-debug}"
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
  *) echo "usage: $0 [plain|asan|valgrind|all]" >&2; exit 2 ;;
esac
