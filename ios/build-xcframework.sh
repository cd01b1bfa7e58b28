#!/usr/bin/env bash
# Builds ios/build/RecurrentDepthC.xcframework: the static library for
#   iOS devices      aarch64-apple-ios
#   iOS simulator    aarch64-apple-ios-sim + x86_64-apple-ios   (lipo)
#   macOS            aarch64-apple-darwin  + x86_64-apple-darwin (lipo)
# each with the `metal` feature (ggml's Metal backend, shaders embedded),
# plus include/recurrent_depth.h and a module map (module RecurrentDepthC).
#
#   ios/build-xcframework.sh                 # then: cd ios && swift build
#
# Runs on macOS with Xcode (xcodebuild, lipo) and rustup; see ios/README.md.
# Environment: RD_DEBUG_INFO=1 keeps line tables (bigger archives);
# IPHONEOS_DEPLOYMENT_TARGET / MACOSX_DEPLOYMENT_TARGET (15.0 / 12.0, as in
# Package.swift).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
out="$root/ios/build"
name=RecurrentDepthC

[ "$(uname -s)" = Darwin ] || { echo "this script needs macOS with Xcode" >&2; exit 1; }
export IPHONEOS_DEPLOYMENT_TARGET="${IPHONEOS_DEPLOYMENT_TARGET:-15.0}"
export MACOSX_DEPLOYMENT_TARGET="${MACOSX_DEPLOYMENT_TARGET:-12.0}"
if [ "${RD_DEBUG_INFO:-0}" = 1 ]; then
  export CARGO_PROFILE_RELEASE_DEBUG=line-tables-only
else
  export CARGO_PROFILE_RELEASE_DEBUG=false
fi

targets="aarch64-apple-ios aarch64-apple-ios-sim x86_64-apple-ios aarch64-apple-darwin x86_64-apple-darwin"
# shellcheck disable=SC2086
rustup target add $targets

rm -rf "$out"
mkdir -p "$out/headers" "$out/libs"
for t in $targets; do
  # A static library only (`--crate-type staticlib`), without the rd CLI's
  # dependencies, and the list of system libraries it needs.
  log="$out/libs/$t.log"
  cargo rustc --release --lib --crate-type staticlib --target "$t" \
    --no-default-features --features metal -- --print native-static-libs 2>&1 | tee "$log"
  grep -o 'native-static-libs: .*' "$log" > "$out/libs/$t.native-libs" || true
done

lib() { echo "$root/target/$1/release/librecurrent_depth.a"; }
mkdir -p "$out/libs/ios" "$out/libs/ios-sim" "$out/libs/macos"
cp "$(lib aarch64-apple-ios)" "$out/libs/ios/librecurrent_depth.a"
lipo -create "$(lib aarch64-apple-ios-sim)" "$(lib x86_64-apple-ios)" \
  -output "$out/libs/ios-sim/librecurrent_depth.a"
lipo -create "$(lib aarch64-apple-darwin)" "$(lib x86_64-apple-darwin)" \
  -output "$out/libs/macos/librecurrent_depth.a"

cp "$root/include/recurrent_depth.h" "$out/headers/"
# `link` lines let Xcode autolink what the library needs when the module is
# imported; Package.swift also lists them for SwiftPM.
cat > "$out/headers/module.modulemap" <<'EOF'
module RecurrentDepthC {
    header "recurrent_depth.h"
    link "c++"
    link framework "Foundation"
    link framework "Metal"
    link framework "MetalKit"
    link framework "Accelerate"
    export *
}
EOF

xcodebuild -create-xcframework \
  -library "$out/libs/ios/librecurrent_depth.a" -headers "$out/headers" \
  -library "$out/libs/ios-sim/librecurrent_depth.a" -headers "$out/headers" \
  -library "$out/libs/macos/librecurrent_depth.a" -headers "$out/headers" \
  -output "$out/$name.xcframework"

# The system libraries rustc reported must be linked by Package.swift (or be
# part of every Apple SDK's defaults: System, c, m, objc).
pkg="$root/ios/Package.swift"
for f in "$out"/libs/*.native-libs; do
  for item in $(sed 's/^native-static-libs: //' "$f" | sed 's/-framework /-framework:/g'); do
    case "$item" in
      -framework:*) n="${item#-framework:}"; want="linkedFramework(\"$n\")" ;;
      -l*) n="${item#-l}"; want="linkedLibrary(\"$n\")" ;;
      *) continue ;;
    esac
    case "$n" in System | c | m | objc) continue ;; esac
    grep -qF "$want" "$pkg" || echo "WARNING: $(basename "$f" .native-libs) needs ${item/:/ }; add .$want to Package.swift" >&2
  done
done

echo "built $out/$name.xcframework"
ls -l "$out"/libs/*/librecurrent_depth.a
