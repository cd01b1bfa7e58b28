#!/usr/bin/env bash
# Host test of the Android JNI bridge: builds android/src/main/cpp (the same
# CMakeLists.txt and rd_jni.c Gradle builds for each ABI) against the host
# build of the library, compiles the Java sources of the Android library
# (src/main/java: RdNative and friends, the classes whose native methods the
# Kotlin API calls) plus HostTest.java with javac, and runs HostTest in a
# desktop JVM on a model made by `rd make-test-model`.
#
#   android/hosttest/run.sh            # uses target/debug (run `cargo build` first)
#   PROFILE=release android/hosttest/run.sh
#
# Then compiles the Kotlin API with a test of it (KotlinHostTest.kt) and runs
# that too (see below for where the Kotlin compiler comes from).
#
# Installs Debian's default JDK (default-jdk-headless) when javac is missing.
# The last line of the output is "N passed, M failed" (the Java and Kotlin tests together).
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$PWD
profile="${PROFILE:-debug}"
libdir="$root/target/$profile"
out="$root/android/build/hosttest"

if ! command -v javac >/dev/null 2>&1; then
  SUDO=""; [ "$(id -u)" != 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq default-jdk-headless >/dev/null
fi
java_home="$(dirname "$(dirname "$(readlink -f "$(command -v javac)")")")"

for f in "$libdir/librecurrent_depth.a" "$libdir/rd"; do
  [ -e "$f" ] || { echo "missing $f: run cargo build --lib --bins (with --release for PROFILE=release) first" >&2; exit 1; }
done

mkdir -p "$out"
# The bridge, linked with the static library like on Android.
cmake -S android/src/main/cpp -B "$out/cmake" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DRD_LIBRARY="$libdir/librecurrent_depth.a" -DJNI_INCLUDE_DIR="$java_home/include" >/dev/null
cmake --build "$out/cmake" >/dev/null
lib="$out/cmake/librecurrent_depth_jni.so"

# What the linker flags promise: only JNI_OnLoad exported, 16 KB aligned segments.
exported=$(nm -D --defined-only "$lib" | awk '{print $3}' | sort | tr '\n' ' ')
if [ "$exported" != "JNI_OnLoad " ]; then
  echo "FAIL: $lib exports: $exported" >&2; exit 1
fi
for a in $(readelf -lW "$lib" | awk '$1 == "LOAD" { print $NF }'); do
  if [ $((a)) -lt 16384 ]; then
    echo "FAIL: $lib has LOAD segments not aligned to 16 KB:" >&2
    readelf -lW "$lib" | grep LOAD >&2; exit 1
  fi
done
echo "bridge: $lib ($(stat -c %s "$lib") bytes, exports JNI_OnLoad only, LOAD align 16 KB)"

# Java: the library's Java sources and the test.
rm -rf "$out/classes"
javac -Xlint:all -Werror -d "$out/classes" \
  android/src/main/java/dev/recurrentdepth/*.java android/hosttest/HostTest.java

model="$out/model.gguf"
"$libdir/rd" make-test-model --out "$model" >/dev/null 2>&1
# A model with a tokenizer and chat template: the fixture of ffi-tests.
tokmodel=""
if [ -f ffi-tests/data/tokenizer.json ] && [ -f ffi-tests/data/chat_template.jinja ]; then
  tokmodel="$out/tok-model.gguf"
  "$libdir/rd" make-test-model --n-vocab 276 --tokenizer ffi-tests/data/tokenizer.json \
    --chat-template ffi-tests/data/chat_template.jinja --out "$tokmodel" >/dev/null 2>&1
fi
# What the Rust CLI generates for the same prompt and limits: the bridge must agree.
reference=$("$libdir/rd" run --model "$model" --threads 2 --device cpu --prompt-tokens 1,2,3,4,5 \
  --iterations 4 --kv-budget 1 --max-tokens 8 --json | grep -o '"id":[0-9]*' | cut -d: -f2 | paste -sd,)
[ -n "$reference" ] || { echo "FAIL: no reference tokens from rd run --json" >&2; exit 1; }

# The model inside a larger file, as an APK asset is: the JVM inherits fd 7
# open on it (exec below) and loads the range through rd_model_load_fd.
embedded="$out/embedded.bin"
fdoffset=4099
{ head -c "$fdoffset" /dev/zero; cat "$model"; head -c 333 /dev/zero; } > "$embedded"
fdlength=$(stat -c %s "$model")

props=(-Xcheck:jni -Drecurrent_depth.jni.path="$lib" -Drd.model="$model" -Drd.reference="$reference"
  -Drd.fd=7 -Drd.fdoffset="$fdoffset" -Drd.fdlength="$fdlength")
[ -n "$tokmodel" ] && props+=(-Drd.tokmodel="$tokmodel")

# 1. The native methods, from Java.
set +e
java "${props[@]}" -cp "$out/classes" dev.recurrentdepth.HostTest 7<"$embedded" | tee "$out/java.log"
set -e

# 2. The Kotlin API (src/main/kotlin) over the same bridge. Debian has no
# usable Kotlin compiler (its kotlin 1.3 and kotlinx-coroutines 1.0 predate
# Flow), so this uses the compiler and kotlinx-coroutines that PyPI's
# kotlin-jupyter-kernel package ships in its jars (fetched with pip once into
# android/build). Without it (no network) the Kotlin part is reported as not
# run, as the issue allows ("javac is enough if Kotlin is not available").
kver=0.19.0.944
kdir="$root/android/build/kotlin-toolchain-$kver"
if [ ! -f "$kdir/ok" ]; then
  rm -rf "$kdir"
  mkdir -p "$kdir"
  if python3 -m pip download -q --disable-pip-version-check --no-deps -d "$kdir" \
      "kotlin-jupyter-kernel==$kver" >/dev/null 2>&1; then
    (cd "$kdir" && unzip -q -j ./*.whl 'run_kotlin_kernel/jars/kotlin-jupyter-kernel-*-all.jar' \
        'run_kotlin_kernel/jars/kotlin-stdlib-*.jar' &&
      mkdir coroutines && cd coroutines &&
      unzip -q ../kotlin-jupyter-kernel-*-all.jar 'kotlinx/coroutines/*' \
        'META-INF/kotlinx-coroutines-core.kotlin_module' &&
      cd .. && rm ./*.whl && touch ok) || true
  fi
fi
if [ -f "$kdir/ok" ]; then
  compiler=$(echo "$kdir"/kotlin-jupyter-kernel-*-all.jar)
  stdlib=$(echo "$kdir"/kotlin-stdlib-*.jar)
  rm -rf "$out/kotlin-classes"
  java -cp "$compiler:$stdlib" org.jetbrains.kotlin.cli.jvm.K2JVMCompiler -no-stdlib -no-reflect \
    -jvm-target 17 -Werror -cp "$out/classes:$kdir/coroutines:$stdlib" -d "$out/kotlin-classes" \
    android/src/main/kotlin/dev/recurrentdepth/*.kt android/hosttest/KotlinHostTest.kt
  set +e
  java "${props[@]}" -cp "$out/classes:$out/kotlin-classes:$kdir/coroutines:$stdlib" \
    dev.recurrentdepth.KotlinHostTestKt 7<"$embedded" | tee "$out/kotlin.log"
  set -e
else
  echo "Kotlin API NOT TESTED: could not fetch kotlin-jupyter-kernel==$kver (the Kotlin compiler) with pip"
  : > "$out/kotlin.log"
fi

# One summary line for both.
pass=0; fail=0
for log in "$out/java.log" "$out/kotlin.log"; do
  [ -s "$log" ] || continue
  line=$(grep -E '^[0-9]+ passed, [0-9]+ failed$' "$log" | tail -n1)
  if [ -z "$line" ]; then echo "FAIL: $(basename "$log" .log) test ended without a summary"; fail=$((fail + 1)); continue; fi
  p=${line%% passed*}; f=${line#*passed, }; f=${f%% failed*}
  pass=$((pass + p)); fail=$((fail + f))
done
echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
