//! Adds the Vulkan SDK's library folder to the link path (feature `vulkan`)
//! and generates the C header from `src/ffi` with cbindgen (configuration in
//! `cbindgen.toml`) into `$OUT_DIR/recurrent_depth.h`. `tests/header.rs`
//! checks that it matches the committed `include/recurrent_depth.h`;
//! `RD_WRITE_HEADER=1 cargo build` also writes it there.
//!
//! Only `src/ffi` and the configuration are parsed and watched, so edits
//! elsewhere in the crate do not rerun this script.

use std::env;
use std::path::PathBuf;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=cbindgen.toml");
    println!("cargo:rerun-if-changed=src/ffi");
    println!("cargo:rerun-if-env-changed=RD_WRITE_HEADER");
    println!("cargo:rerun-if-env-changed=VULKAN_SDK");

    // The Vulkan loader to link against: llama-cpp-sys-2 asks for `-lvulkan`
    // but does not always add `$VULKAN_SDK/lib` to the search path (the prefix
    // tools/setup_vulkan.sh makes keeps the loader there).
    if env::var_os("CARGO_FEATURE_VULKAN").is_some()
        && let Some(sdk) = env::var_os("VULKAN_SDK")
    {
        let lib = PathBuf::from(sdk).join("lib");
        println!("cargo:rustc-link-search=native={}", lib.display());
    }

    let root = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    let config = cbindgen::Config::from_file(root.join("cbindgen.toml"))
        .unwrap_or_else(|e| panic!("cannot read cbindgen.toml: {e}"));
    let bindings = cbindgen::Builder::new()
        .with_config(config)
        .with_after_include(format!(
            "\n/** The library's version as a string literal, \"MAJOR.MINOR.PATCH\". */\n\
             #define RD_VERSION_STRING \"{}\"",
            env::var("CARGO_PKG_VERSION").unwrap_or_default()
        ))
        .with_src(root.join("src/ffi/mod.rs"))
        .generate()
        .unwrap_or_else(|e| panic!("cbindgen failed on src/ffi: {e}"));
    let mut raw = Vec::new();
    bindings.write(&mut raw);
    let header = unsigned_literals(&String::from_utf8(raw).expect("cbindgen wrote UTF-8"));
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("OUT_DIR")).join("recurrent_depth.h");
    std::fs::write(&out, &header).unwrap_or_else(|e| panic!("{}: {e}", out.display()));
    if env::var_os("RD_WRITE_HEADER").is_some_and(|v| !v.is_empty() && v != "0") {
        let dst = root.join("include/recurrent_depth.h");
        if let Some(dir) = dst.parent() {
            std::fs::create_dir_all(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        }
        std::fs::write(&dst, &header).unwrap_or_else(|e| panic!("{}: {e}", dst.display()));
        println!("cargo:warning=wrote {}", dst.display());
    }
}

/// Gives `#define NAME <number>` lines whose value does not fit a C `int`
/// an unsigned suffix (`u`, or `ull` past 32 bits): cbindgen writes the bare
/// number, whose C type would then be `long`, and comparing it with an
/// `rd_token` would mix signedness.
fn unsigned_literals(header: &str) -> String {
    let mut out = String::with_capacity(header.len() + 64);
    for line in header.split_inclusive('\n') {
        let body = line.trim_end_matches('\n');
        let mut parts = body.split(' ');
        let fixed = match (parts.next(), parts.next(), parts.next(), parts.next()) {
            (Some("#define"), Some(name), Some(value), None) => value
                .parse::<u64>()
                .ok()
                .filter(|&v| v > i32::MAX as u64)
                .map(|v| {
                    let suffix = if v > u32::MAX as u64 { "ull" } else { "u" };
                    format!("#define {name} {value}{suffix}")
                }),
            _ => None,
        };
        match fixed {
            Some(f) => {
                out.push_str(&f);
                out.push_str(&line[body.len()..]);
            }
            None => out.push_str(line),
        }
    }
    out
}
