//! Builds ggml alone (base, CPU, and Vulkan or Metal behind features) as
//! static libraries in Release, from one pinned registry source, with the
//! patches in `patches/` applied to a private copy.
//!
//! Source: the ggml directory of the crates.io package `llama-cpp-sys-2`
//! (exactly [`SOURCE_VERSION`]), which cargo downloads and checks against the
//! registry index like any dependency. Only its `llama.cpp/ggml` directory is
//! used; nothing of llama.cpp itself is compiled. `GGML_SYS_SOURCE_DIR` may
//! name another ggml directory instead (an offline mirror of the same files).
//!
//! Other inputs: `GGML_SYS_ARM_ARCH` (the `-march` of aarch64 builds, see
//! README.md), `GGML_SYS_X86_LEVEL` (`auto`, the default on x86-64 Linux:
//! both of the following, chosen at run time; `v3`, the default elsewhere;
//! `avx512`: the instruction sets of x86-64 builds, see README.md),
//! `VULKAN_SDK` (where the
//! Vulkan loader lives, feature `vulkan`).

use std::env;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The registry package whose `llama.cpp/ggml` directory is built.
const SOURCE_CRATE: &str = "llama-cpp-sys-2";
/// Its pinned version (ggml 0.26.0 as shipped there).
const SOURCE_VERSION: &str = "0.1.161";
/// `-march` of aarch64 builds unless `GGML_SYS_ARM_ARCH` says otherwise.
const DEFAULT_ARM_ARCH: &str = "armv8.2-a+dotprod+fp16";

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=patches");
    println!("cargo:rerun-if-changed=wrapper.h");
    for var in [
        "GGML_SYS_SOURCE_DIR",
        "GGML_SYS_ARM_ARCH",
        "GGML_SYS_X86_LEVEL",
        "VULKAN_SDK",
        "CARGO_HOME",
        "NM",
        "OBJCOPY",
        "READELF",
    ] {
        println!("cargo:rerun-if-env-changed={var}");
    }
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("OUT_DIR"));
    let manifest = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    let source = ggml_source(&out);
    let work = out.join("ggml");
    prepare_tree(&source, &work, &manifest.join("patches"));
    let level = x86_level();
    let install = build(&work, level == "avx512");
    let variant = (level == "auto").then(|| build_avx512_copy(&work, &out));
    link(&install, variant.as_deref());
    #[cfg(feature = "bindgen")]
    generate_bindings(&work, &manifest, &out);
}

/// The pristine ggml directory (with `CMakeLists.txt`, `include/`, `src/`).
fn ggml_source(out: &Path) -> PathBuf {
    if let Some(dir) = env::var_os("GGML_SYS_SOURCE_DIR") {
        let dir = PathBuf::from(dir);
        assert!(
            dir.join("CMakeLists.txt").is_file() && dir.join("include/ggml.h").is_file(),
            "GGML_SYS_SOURCE_DIR={} is not a ggml source directory",
            dir.display()
        );
        return dir;
    }
    if let Some(dir) = find_in_registry() {
        return dir;
    }
    fetch_source_crate(out);
    find_in_registry().unwrap_or_else(|| {
        panic!(
            "{SOURCE_CRATE} {SOURCE_VERSION} was fetched but its ggml directory is not in \
             {}/registry/src; set GGML_SYS_SOURCE_DIR to a copy of it",
            cargo_home().display()
        )
    })
}

fn cargo_home() -> PathBuf {
    if let Some(h) = env::var_os("CARGO_HOME") {
        return PathBuf::from(h);
    }
    let home = env::var_os("HOME")
        .or_else(|| env::var_os("USERPROFILE"))
        .expect("neither CARGO_HOME nor HOME is set");
    PathBuf::from(home).join(".cargo")
}

/// `$CARGO_HOME/registry/src/<index>/llama-cpp-sys-2-<version>/llama.cpp/ggml`.
fn find_in_registry() -> Option<PathBuf> {
    let src = cargo_home().join("registry/src");
    let mut dirs: Vec<PathBuf> = fs::read_dir(src)
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    dirs.sort();
    dirs.into_iter()
        .map(|d| d.join(format!("{SOURCE_CRATE}-{SOURCE_VERSION}/llama.cpp/ggml")))
        .find(|d| d.join("CMakeLists.txt").is_file() && d.join("include/ggml.h").is_file())
}

/// Lets cargo download the pinned package (verified against the registry
/// index) through a throw-away manifest that only depends on it.
fn fetch_source_crate(out: &Path) {
    let dir = out.join("source-fetch");
    fs::create_dir_all(&dir).expect("create source-fetch");
    let manifest = format!(
        "[package]\nname = \"ggml-sys-source-fetch\"\nversion = \"0.0.0\"\nedition = \"2021\"\n\
         publish = false\n\n[lib]\npath = \"lib.rs\"\n\n[dependencies]\n\
         {SOURCE_CRATE} = {{ version = \"={SOURCE_VERSION}\", default-features = false }}\n\n\
         [workspace]\n"
    );
    fs::write(dir.join("Cargo.toml"), manifest).expect("write fetch manifest");
    fs::write(dir.join("lib.rs"), "").expect("write fetch lib.rs");
    let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let host = env::var("HOST").expect("HOST");
    let status = Command::new(cargo)
        .arg("fetch")
        .arg("--manifest-path")
        .arg(dir.join("Cargo.toml"))
        .arg("--target")
        .arg(host)
        .env_remove("CARGO_TARGET_DIR")
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .status()
        .unwrap_or_else(|e| panic!("cannot run cargo to fetch {SOURCE_CRATE}: {e}"));
    assert!(
        status.success(),
        "cargo fetch of {SOURCE_CRATE} {SOURCE_VERSION} failed ({status}); offline builds can \
         set GGML_SYS_SOURCE_DIR to its llama.cpp/ggml directory"
    );
}

/// Copies the pristine source to `work` and applies our patches there (the
/// registry copy is never modified). Redone whenever this script reruns.
fn prepare_tree(source: &Path, work: &Path, patches: &Path) {
    if work.exists() {
        fs::remove_dir_all(work).expect("remove old ggml copy");
    }
    copy_tree(source, work);
    // The registry package leaves out ggml's pkg-config template, which a
    // top-level ggml build configures; ours describes the static libraries.
    let pc = work.join("ggml.pc.in");
    if !pc.exists() {
        fs::write(
            &pc,
            "prefix=@CMAKE_INSTALL_PREFIX@\nlibdir=${prefix}/lib\nincludedir=${prefix}/include\n\n\
             Name: ggml\nDescription: tensor library (built by ggml-sys)\nVersion: 0.26.0\n\
             Libs: -L${libdir} -lggml -lggml-cpu -lggml-base\nCflags: -I${includedir}\n",
        )
        .expect("write ggml.pc.in");
    }
    let mut files: Vec<PathBuf> = fs::read_dir(patches)
        .expect("ggml-sys/patches")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "patch"))
        .collect();
    files.sort();
    for p in files {
        let text = fs::read_to_string(&p).expect("read patch");
        apply_patch(work, &p, &text);
    }
}

fn copy_tree(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap_or_else(|e| panic!("{}: {e}", to.display()));
    for entry in fs::read_dir(from).unwrap_or_else(|e| panic!("{}: {e}", from.display())) {
        let entry = entry.expect("read_dir entry");
        let (src, dst) = (entry.path(), to.join(entry.file_name()));
        if entry.file_type().expect("file type").is_dir() {
            copy_tree(&src, &dst);
        } else {
            fs::copy(&src, &dst).unwrap_or_else(|e| panic!("{}: {e}", src.display()));
        }
    }
}

/// Applies one patch file of ours. Format (see patches/README in README.md):
/// lines before the first `@@ ` are the description; each `@@ PATH` names a
/// file under the ggml directory, followed by a `<<<<<<<` block of text that
/// must occur exactly once, `=======`, and its replacement up to `>>>>>>>`.
fn apply_patch(work: &Path, patch: &Path, text: &str) {
    let name = patch.display();
    let mut lines = text.lines().peekable();
    let mut applied = 0;
    while let Some(line) = lines.next() {
        let Some(rel) = line.strip_prefix("@@ ") else {
            continue;
        };
        let take_until = |lines: &mut std::iter::Peekable<std::str::Lines>, end: &str| {
            let mut block = Vec::new();
            for l in lines.by_ref() {
                if l == end {
                    return block.join("\n");
                }
                block.push(l);
            }
            panic!("{name}: missing {end}");
        };
        assert_eq!(
            lines.next(),
            Some("<<<<<<<"),
            "{name}: expected <<<<<<< after @@"
        );
        let old = take_until(&mut lines, "=======");
        let new = take_until(&mut lines, ">>>>>>>");
        let file = work.join(rel.trim());
        let body = fs::read_to_string(&file).unwrap_or_else(|e| panic!("{name}: {rel}: {e}"));
        let hits = body.matches(old.as_str()).count();
        assert_eq!(
            hits, 1,
            "{name}: the text to replace occurs {hits} times in {rel} (expected once): \
             the ggml source is not the pinned one"
        );
        fs::write(&file, body.replacen(old.as_str(), &new, 1)).expect("write patched file");
        applied += 1;
    }
    assert!(applied > 0, "{name}: no @@ section");
}

/// The x86-64 instruction-set level (`GGML_SYS_X86_LEVEL`): `v3`, `avx512`,
/// or `auto` (the default on x86-64 Linux, where `nm` and `objcopy` come with
/// the C toolchain): ggml's CPU backend built for both, the AVX-512 copy's
/// symbols renamed, the copy the CPU supports chosen at run time
/// (`src/cpu.rs`). Elsewhere the default is `v3`. Empty off x86-64.
fn x86_level() -> String {
    let arch = env::var("CARGO_CFG_TARGET_ARCH").expect("CARGO_CFG_TARGET_ARCH");
    if arch != "x86_64" {
        return String::new();
    }
    let os = env::var("CARGO_CFG_TARGET_OS").expect("CARGO_CFG_TARGET_OS");
    let host_linux = env::var("HOST").is_ok_and(|h| h.contains("linux"));
    let default = if os == "linux" && host_linux {
        "auto"
    } else {
        "v3"
    };
    let level = env::var("GGML_SYS_X86_LEVEL").unwrap_or_else(|_| default.into());
    match level.as_str() {
        "v3" | "avx512" => {}
        "auto" => assert!(
            os == "linux" && host_linux,
            "GGML_SYS_X86_LEVEL=auto needs a Linux target built on Linux (nm, objcopy)"
        ),
        other => panic!("GGML_SYS_X86_LEVEL={other:?}: expected auto, v3 or avx512"),
    }
    println!("cargo:rustc-env=GGML_SYS_X86_LEVEL={level}");
    level
}

/// Prefix of the AVX-512 copy's renamed symbols (`src/cpu.rs` names them).
const AVX512_PREFIX: &str = "rd_avx512_";

/// Builds ggml's CPU backend a second time for AVX-512 and renames every
/// symbol it defines (`nm`, `objcopy --redefine-syms`), so that both copies
/// link into one binary; returns the directory of `libggml-cpu-avx512.a`.
fn build_avx512_copy(work: &Path, out: &Path) -> PathBuf {
    let dir = out.join("avx512");
    let mut cfg = config(work, true);
    cfg.out_dir(&dir).build_target("ggml-cpu");
    let built = cfg.build();
    let lib = [
        "build/src/libggml-cpu.a",
        "build/ggml-cpu/libggml-cpu.a",
        "src/libggml-cpu.a",
    ]
    .iter()
    .map(|p| built.join(p))
    .find(|p| p.is_file())
    .unwrap_or_else(|| panic!("libggml-cpu.a not found under {}", built.display()));
    let listing = Command::new(env::var("NM").unwrap_or_else(|_| "nm".into()))
        .args(["--defined-only", "--extern-only", "--format=posix"])
        .arg(&lib)
        .output()
        .expect("run nm (binutils) on the AVX-512 copy of ggml-cpu");
    assert!(listing.status.success(), "nm failed on {}", lib.display());
    let mut names: Vec<&str> = std::str::from_utf8(&listing.stdout)
        .expect("nm output is UTF-8")
        .lines()
        // Archive member headers end with ':'; symbol lines are "name type ...".
        .filter(|l| !l.ends_with(':'))
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    // COMDAT groups (C++ inline functions, templates) are merged by the
    // linker by their signature, which for constructors and destructors is a
    // local symbol (`...C5Ev`, `...D5Ev`) that nm does not list: left as it
    // is, the linker would keep the baseline copy's group and drop this
    // one's, leaving the renamed functions undefined.
    let groups = Command::new(env::var("READELF").unwrap_or_else(|_| "readelf".into()))
        .args(["-g", "-W"])
        .arg(&lib)
        .output()
        .expect("run readelf (binutils) on the AVX-512 copy of ggml-cpu");
    assert!(
        groups.status.success(),
        "readelf failed on {}",
        lib.display()
    );
    let groups = String::from_utf8(groups.stdout).expect("readelf output is UTF-8");
    names.extend(
        groups
            .lines()
            .filter(|l| l.starts_with("COMDAT group section"))
            .filter_map(|l| Some(l.split_once("] contains")?.0.rsplit_once('[')?.1)),
    );
    names.sort_unstable();
    names.dedup();
    let map: String = names
        .iter()
        .map(|n| format!("{n} {AVX512_PREFIX}{n}\n"))
        .collect();
    let map_file = dir.join("redefine-syms.txt");
    fs::write(&map_file, map).expect("write the symbol map");
    let libdir = dir.join("lib");
    fs::create_dir_all(&libdir).expect("create the AVX-512 lib directory");
    let status = Command::new(env::var("OBJCOPY").unwrap_or_else(|_| "objcopy".into()))
        .arg(format!("--redefine-syms={}", map_file.display()))
        .arg(&lib)
        .arg(libdir.join("libggml-cpu-avx512.a"))
        .status()
        .expect("run objcopy (binutils) on the AVX-512 copy of ggml-cpu");
    assert!(status.success(), "objcopy failed on {}", lib.display());
    libdir
}

/// Configures and builds ggml with CMake; returns the install prefix.
fn build(work: &Path, avx512: bool) -> PathBuf {
    config(work, avx512).build()
}

/// ggml's CMake configuration for this target (x86-64: AVX-512 or not).
fn config(work: &Path, avx512: bool) -> cmake::Config {
    let target = env::var("TARGET").expect("TARGET");
    let arch = env::var("CARGO_CFG_TARGET_ARCH").expect("CARGO_CFG_TARGET_ARCH");
    let os = env::var("CARGO_CFG_TARGET_OS").expect("CARGO_CFG_TARGET_OS");
    let mut cfg = cmake::Config::new(work);
    cfg.profile("Release")
        .define("BUILD_SHARED_LIBS", "OFF")
        .define("GGML_BUILD_TESTS", "OFF")
        .define("GGML_BUILD_EXAMPLES", "OFF")
        .define("GGML_BACKEND_DL", "OFF")
        .define("GGML_CCACHE", "OFF")
        // Our threadpool drives the threads (abort callback, no libgomp on phones).
        .define("GGML_OPENMP", "OFF")
        // Instruction sets are chosen here, never from the build machine.
        .define("GGML_NATIVE", "OFF")
        // The llamafile matrix kernels, as in llama.cpp's own builds.
        .define("GGML_LLAMAFILE", "ON")
        .define("GGML_BLAS", "OFF")
        .define("GGML_VULKAN", on(cfg!(feature = "vulkan")))
        .define("GGML_METAL", on(cfg!(feature = "metal")));
    if cfg!(feature = "metal") {
        cfg.define("GGML_METAL_EMBED_LIBRARY", "ON");
    }
    if arch == "aarch64" {
        // No fused multiply-add where the source writes a*b+c: GCC and clang
        // contract such expressions on aarch64 by default, which changes the
        // bytes ggml's reference quantizers produce (Q6_K, ...) from those of
        // an x86-64 build, so one set of test models serves every CPU.
        // ggml's own NEON kernels use explicit FMA intrinsics and are unchanged.
        cfg.cflag("-ffp-contract=off").cxxflag("-ffp-contract=off");
    }
    match arch.as_str() {
        "x86_64" => {
            // x86-64-v3 without AVX-512: every x86 CPU since Haswell / Zen 1.
            // With `avx512`, also AVX-512 (F, CD, VL, DQ, BW), VBMI and VNNI:
            // Ice Lake / Zen 4 and later only, faster quantized dot products.
            for isa in ["SSE42", "AVX", "AVX2", "BMI2", "FMA", "F16C"] {
                cfg.define(format!("GGML_{isa}"), "ON");
            }
            // The AVX-512 build also compiles ggml's AMX buffer type (Sapphire
            // Rapids and later Xeons): its weights get their own layout and its
            // products run on AVX-512 VNNI (one row) or AMX tiles (batches).
            // Tile instructions only run once the kernel has granted the tile
            // state (ggml asks at start-up); elsewhere the type is absent.
            for isa in [
                "AVX512",
                "AVX512_VBMI",
                "AVX512_VNNI",
                "AMX_TILE",
                "AMX_INT8",
            ] {
                cfg.define(format!("GGML_{isa}"), on(avx512));
            }
            for isa in ["AVX512_BF16", "AVX_VNNI", "AMX_BF16"] {
                cfg.define(format!("GGML_{isa}"), "OFF");
            }
        }
        "aarch64" if os != "macos" && os != "ios" => {
            let arm = env::var("GGML_SYS_ARM_ARCH").unwrap_or_else(|_| DEFAULT_ARM_ARCH.into());
            cfg.define("GGML_CPU_ARM_ARCH", &arm);
            println!("cargo:rustc-env=GGML_SYS_ARM_ARCH={arm}");
        }
        _ => {}
    }
    if os == "android" {
        if let Some(ndk) = env::var_os("ANDROID_NDK_HOME").or_else(|| env::var_os("ANDROID_NDK")) {
            let ndk = PathBuf::from(ndk);
            cfg.define(
                "CMAKE_TOOLCHAIN_FILE",
                ndk.join("build/cmake/android.toolchain.cmake"),
            );
            let abi = match arch.as_str() {
                "aarch64" => "arm64-v8a",
                "arm" => "armeabi-v7a",
                "x86_64" => "x86_64",
                "x86" => "x86",
                other => panic!("unsupported Android architecture {other}"),
            };
            cfg.define("ANDROID_ABI", abi);
            let api = env::var("ANDROID_API_LEVEL").unwrap_or_else(|_| "28".into());
            cfg.define("ANDROID_PLATFORM", format!("android-{api}"));
            cfg.define("ANDROID_STL", "c++_static");
        }
        println!("cargo:rerun-if-env-changed=ANDROID_NDK_HOME");
        println!("cargo:rerun-if-env-changed=ANDROID_NDK");
        println!("cargo:rerun-if-env-changed=ANDROID_API_LEVEL");
    }
    if target != env::var("HOST").expect("HOST") && os == "linux" {
        // Plain cross builds (e.g. aarch64-linux-gnu-gcc): CMake must not
        // run the target's programs.
        cfg.define("CMAKE_SYSTEM_NAME", "Linux");
        cfg.define("CMAKE_SYSTEM_PROCESSOR", &arch);
    }
    cfg
}

fn on(b: bool) -> &'static str {
    if b { "ON" } else { "OFF" }
}

/// Tells cargo what to link, in dependency order for static linking;
/// `avx512_copy`: the directory of the renamed AVX-512 CPU backend.
fn link(install: &Path, avx512_copy: Option<&Path>) {
    println!("cargo::rustc-check-cfg=cfg(ggml_cpu_avx512_copy)");
    let os = env::var("CARGO_CFG_TARGET_OS").expect("CARGO_CFG_TARGET_OS");
    let env_ = env::var("CARGO_CFG_TARGET_ENV").unwrap_or_default();
    for dir in ["lib", "lib64"] {
        let d = install.join(dir);
        if d.is_dir() {
            println!("cargo:rustc-link-search=native={}", d.display());
        }
    }
    println!("cargo:rustc-link-lib=static=ggml");
    println!("cargo:rustc-link-lib=static=ggml-cpu");
    if let Some(dir) = avx512_copy {
        println!("cargo:rustc-link-search=native={}", dir.display());
        println!("cargo:rustc-link-lib=static=ggml-cpu-avx512");
        println!("cargo:rustc-cfg=ggml_cpu_avx512_copy");
    }
    if cfg!(feature = "vulkan") {
        println!("cargo:rustc-link-lib=static=ggml-vulkan");
    }
    if cfg!(feature = "metal") {
        println!("cargo:rustc-link-lib=static=ggml-metal");
    }
    println!("cargo:rustc-link-lib=static=ggml-base");
    if cfg!(feature = "vulkan") {
        if let Some(sdk) = env::var_os("VULKAN_SDK") {
            let lib = PathBuf::from(sdk).join("lib");
            println!("cargo:rustc-link-search=native={}", lib.display());
        }
        println!("cargo:rustc-link-lib=vulkan");
    }
    match os.as_str() {
        "macos" | "ios" => {
            println!("cargo:rustc-link-lib=c++");
            println!("cargo:rustc-link-lib=framework=Foundation");
            if cfg!(feature = "metal") {
                println!("cargo:rustc-link-lib=framework=Metal");
                println!("cargo:rustc-link-lib=framework=MetalKit");
            }
        }
        "android" => {
            println!("cargo:rustc-link-lib=c++_static");
            println!("cargo:rustc-link-lib=c++abi");
        }
        _ if env_ == "gnu" || os == "linux" => println!("cargo:rustc-link-lib=stdc++"),
        _ => {}
    }
    println!("cargo:include={}", install.join("include").display());
    println!("cargo:root={}", install.display());
}

/// Regenerates the bindings from the patched headers into
/// `$OUT_DIR/bindings.rs` (feature `bindgen`).
#[cfg(feature = "bindgen")]
fn generate_bindings(work: &Path, manifest: &Path, out: &Path) {
    let bindings = bindgen::Builder::default()
        .header(manifest.join("wrapper.h").display().to_string())
        .clang_arg(format!("-I{}", work.join("include").display()))
        .allowlist_function("ggml_.*|gguf_.*")
        .allowlist_type("ggml_.*|gguf_.*")
        .allowlist_var("GGML_.*|GGUF_.*")
        .layout_tests(false)
        .derive_default(true)
        .prepend_enum_name(false)
        .sort_semantically(true)
        .merge_extern_blocks(true)
        .generate()
        .expect("bindgen failed on wrapper.h");
    bindings
        .write_to_file(out.join("bindings.rs"))
        .expect("write bindings.rs");
}
