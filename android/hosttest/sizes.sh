#!/usr/bin/env bash
# Measures the library sizes quoted in docs/android.md and docs/ios.md, on
# THIS machine (the host: x86_64 Linux), from a release build:
#   - librecurrent_depth.so (the cdylib), as built and stripped (strip --strip-all)
#   - librecurrent_depth.a, as built and without debug info (strip --strip-debug)
#   - librecurrent_depth_jni.so: the JNI bridge linked with the static
#     library the way Android builds it (gc-sections, only JNI_OnLoad
#     exported), stripped: the closest host analogue of what an APK carries
#     per ABI (Android also packages libc++_shared.so, not measured here)
# and gzip -9 of each stripped file (a rough idea of download size).
#
#   android/hosttest/sizes.sh        (runs cargo build --release --lib first)
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$PWD
cargo build --release --lib >&2
rel="$root/target/release"
out="$root/android/build/sizes"
rm -rf "$out"; mkdir -p "$out"
java_home="$(dirname "$(dirname "$(readlink -f "$(command -v javac)")")")"
cmake -S android/src/main/cpp -B "$out/cmake" -DCMAKE_BUILD_TYPE=Release \
  -DRD_LIBRARY="$rel/librecurrent_depth.a" -DJNI_INCLUDE_DIR="$java_home/include" >/dev/null
cmake --build "$out/cmake" >/dev/null

cp "$rel/librecurrent_depth.so" "$out/cdylib.so"; strip --strip-all "$out/cdylib.so"
cp "$rel/librecurrent_depth.a" "$out/static.a"; strip --strip-debug "$out/static.a"
cp "$out/cmake/librecurrent_depth_jni.so" "$out/jni.so"; strip --strip-all "$out/jni.so"

mib() { awk -v b="$1" 'BEGIN { printf "%.1f MiB", b / 1048576 }'; }
size() { stat -c %s "$1"; }
gz() { gzip -9 -c "$1" | wc -c; }
echo "host: $(uname -m) $(uname -s), $(rustc --version)"
printf '| file | as built | stripped | gzip -9 of stripped |\n|---|---|---|---|\n'
printf '| librecurrent_depth.so | %s | %s | %s |\n' "$(mib "$(size "$rel/librecurrent_depth.so")")" \
  "$(mib "$(size "$out/cdylib.so")")" "$(mib "$(gz "$out/cdylib.so")")"
printf '| librecurrent_depth.a | %s | %s (debug info removed) | %s |\n' \
  "$(mib "$(size "$rel/librecurrent_depth.a")")" "$(mib "$(size "$out/static.a")")" \
  "$(mib "$(gz "$out/static.a")")"
printf '| librecurrent_depth_jni.so (bridge + static library) | %s | %s | %s |\n' \
  "$(mib "$(size "$out/cmake/librecurrent_depth_jni.so")")" "$(mib "$(size "$out/jni.so")")" \
  "$(mib "$(gz "$out/jni.so")")"
