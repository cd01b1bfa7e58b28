//! The runtime against the independent numpy reference (tools/reference.py).
//!
//! tests/golden/manifest.tsv lists cases made by tools/make_goldens.py: a random
//! model from the maker (rebuilt here from the same seed and shapes; its FNV-1a
//! hash proves it is the file the reference read), a 17-token prompt run as one
//! prefill, then 16 greedily decoded tokens fed one at a time. We replay the same
//! sequence and compare the logits of all 33 positions.
//!
//! The device is the CPU unless `RD_TEST_BACKEND` names another (e.g.
//! `vulkan`; .ci/run runs this file on Mesa's lavapipe too).
//!
//! Bounds (max |runtime - reference| / logit range of the case, and top-1 agreement
//! over every position of every case of the type), per device precision:
//! - F32 on the CPU: 1e-4 and identical greedy tokens (the requirement).
//! - The other types and devices: the bounds in `bound_for` and the agreement
//!   in `min_agreement`, measured and documented in docs/architecture.md and
//!   docs/vulkan.md.

mod common;

use recurrent_depth::gguf::GgmlType;
use recurrent_depth::model::Model;
use recurrent_depth::npy;
use recurrent_depth::session::{Session, SessionParams, StateInit};
use recurrent_depth::testmodel::{self, TestModelSpec};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

struct Case {
    name: String,
    spec: TestModelSpec,
    iterations: usize,
    kv_budget: usize,
    init: String,
    n_prompt: usize,
    fnv: u64,
}

fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden")
}

fn cases() -> Vec<Case> {
    common::read_tsv(&golden_dir().join("manifest.tsv"))
        .iter()
        .map(|r| Case {
            name: common::col(r, "name").to_string(),
            spec: common::spec_from_row(r),
            iterations: common::num(r, "iterations"),
            kv_budget: common::num(r, "kv_budget"),
            init: common::col(r, "init").to_string(),
            n_prompt: common::num(r, "n_prompt"),
            fnv: u64::from_str_radix(common::col(r, "fnv1a64"), 16).unwrap(),
        })
        .collect()
}

struct Outcome {
    rel_err: f32,
    agree: usize,
    rows: usize,
    greedy_same: bool,
}

fn run_case(c: &Case, dir: &Path) -> Outcome {
    let path = dir.join(format!("{}.gguf", c.name));
    testmodel::write(&c.spec, &path).unwrap();
    let bytes = std::fs::read(&path).unwrap();
    assert_eq!(
        common::fnv1a64(&bytes),
        c.fnv,
        "{}: the maker no longer reproduces the file the goldens were made from; rerun tools/make_goldens.py",
        c.name
    );
    let logits_ref: npy::NpyArray<f32> =
        npy::read(&std::fs::read(golden_dir().join(format!("{}.logits.npy", c.name))).unwrap())
            .unwrap();
    let tokens: npy::NpyArray<i32> =
        npy::read(&std::fs::read(golden_dir().join(format!("{}.tokens.npy", c.name))).unwrap())
            .unwrap();
    let tokens: Vec<u32> = tokens.data.iter().map(|&t| t as u32).collect();
    let v = c.spec.n_vocab;
    assert_eq!(logits_ref.shape, vec![tokens.len(), v]);

    let model = Model::load(&path, &common::load_params(2)).unwrap();
    let (state_init, seed) = match c.init.strip_prefix("seed:") {
        Some(s) => (StateInit::Random, s.parse().unwrap()),
        None => (StateInit::Zeros, 0),
    };
    let params = SessionParams {
        n_ctx: 128,
        kv_budget: c.kv_budget,
        seed,
        state_init,
        ..SessionParams::default()
    };
    let mut s = Session::new(Arc::new(model), &params).unwrap();
    let mut got = s
        .eval_all_logits(&tokens[..c.n_prompt], c.iterations)
        .unwrap();
    for &t in &tokens[c.n_prompt..] {
        s.eval(&[t], c.iterations).unwrap();
        got.extend_from_slice(s.logits());
    }
    assert_eq!(got.len(), logits_ref.data.len());
    let want = &logits_ref.data;
    let (lo, hi) = want
        .iter()
        .fold((f32::MAX, f32::MIN), |(a, b), &x| (a.min(x), b.max(x)));
    let max_diff = got
        .iter()
        .zip(want)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    let rows = tokens.len();
    let agree = (0..rows)
        .filter(|&r| {
            common::argmax(&got[r * v..(r + 1) * v]) == common::argmax(&want[r * v..(r + 1) * v])
        })
        .count();
    // The reference decoded greedily: token r+1 is the argmax of row r for r >= n_prompt - 1.
    let greedy_same = (c.n_prompt - 1..rows - 1)
        .all(|r| common::argmax(&got[r * v..(r + 1) * v]) as u32 == tokens[r + 1]);
    Outcome {
        rel_err: max_diff / (hi - lo),
        agree,
        rows,
        greedy_same,
    }
}

/// How precisely the device under test computes (docs/vulkan.md).
#[derive(Clone, Copy, Debug, PartialEq)]
enum Precision {
    /// ggml's CPU backend: f32 arithmetic, activations quantized to the
    /// weights' vec_dot type (BF16, Q8_0, Q8_K) before each product.
    Cpu,
    /// ggml's CPU backend on aarch64 built with `+fp16` (ggml-sys's default
    /// `-march`): F16 weight products sum in half precision, so F16 is looser
    /// than on x86-64 (measured under qemu: 2.3e-3 of the range, 97.7% top-1).
    /// Every other type is as on x86-64.
    CpuArmFp16,
    /// Vulkan with `GGML_VK_DISABLE_F16=1`: f32 arithmetic throughout and f32
    /// activations even against quantized weights.
    VulkanF32,
    /// Vulkan as shipped on an fp16-capable device: matrix-matrix products
    /// stage both operands as f16 in shared memory (f32 accumulation).
    VulkanF16,
}

fn precision() -> Precision {
    if !common::on_gpu() {
        if cfg!(target_arch = "aarch64") && ggml_sys::ARM_ARCH.contains("+fp16") {
            Precision::CpuArmFp16
        } else {
            Precision::Cpu
        }
    } else if std::env::var_os("GGML_VK_DISABLE_F16").is_some() {
        Precision::VulkanF32
    } else {
        Precision::VulkanF16
    }
}

/// Largest allowed max-abs-difference relative to the logit range.
fn bound_for(ty: GgmlType, p: Precision) -> f32 {
    match (p, ty) {
        (_, GgmlType::BF16) => 1e-2,
        (Precision::CpuArmFp16, GgmlType::F16) => 5e-3,
        (Precision::Cpu | Precision::CpuArmFp16, GgmlType::F32) => 1e-4,
        (Precision::Cpu, GgmlType::F16) => 2e-3,
        (Precision::Cpu | Precision::CpuArmFp16, GgmlType::Q8_0) => 6e-2,
        (Precision::Cpu | Precision::CpuArmFp16, _) => 0.1,
        // Measured at most 1.7e-6 for every type but BF16 (whose activations
        // are converted to bf16).
        (Precision::VulkanF32, _) => 1e-4,
        // Measured at most 1.6e-3.
        (Precision::VulkanF16, _) => 4e-3,
    }
}

/// Required top-1 agreement over every position of every case of the type.
/// On the CPU, F32 and F16 meet the 99%. BF16, Q8_0 and the 4/6-bit
/// types do not reach the 99% / 95% against a float64 reference:
/// ggml's CPU backend quantizes the activations too (its vec_dot types: BF16,
/// Q8_0, Q8_K), which on these small random models moves logits about as much
/// as the weight quantization itself (measured: Q8_0 weights vs F32 weights
/// differ by the same 0.6-0.9 logits), so near-ties flip. Vulkan keeps f32
/// activations and agrees on (nearly) every position. We assert the measured
/// levels with a little room; see docs/architecture.md and docs/vulkan.md.
fn min_agreement(ty: GgmlType, p: Precision) -> f64 {
    match (p, ty) {
        (Precision::CpuArmFp16, GgmlType::F16) => 0.95,
        (Precision::Cpu | Precision::CpuArmFp16, GgmlType::F32 | GgmlType::F16) => 0.99,
        (Precision::Cpu | Precision::CpuArmFp16, GgmlType::BF16) => 0.95,
        (Precision::Cpu | Precision::CpuArmFp16, GgmlType::Q8_0) => 0.90,
        (Precision::Cpu | Precision::CpuArmFp16, _) => 0.85,
        (_, GgmlType::BF16) => 0.95,
        (Precision::VulkanF32, _) => 0.99,
        (Precision::VulkanF16, _) => 0.97,
    }
}

/// Whether greedy decoding must reproduce the reference's tokens (F32 only:
/// quantized weights legitimately move near-ties).
fn requires_same_greedy(ty: GgmlType, p: Precision) -> bool {
    ty == GgmlType::F32 && p != Precision::VulkanF16
}

#[test]
fn runtime_matches_reference() {
    let dir = std::env::temp_dir().join(format!("rd-golden-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut per_type: BTreeMap<&'static str, (usize, usize, f32)> = BTreeMap::new();
    let mut failures = Vec::new();
    let all = cases();
    assert!(all.len() >= 10, "manifest lists too few cases");
    let p = precision();
    println!("device {:?}, precision {p:?}", common::test_backend());
    for c in &all {
        let ty = c.spec.weight_type;
        // In the case subset (common::case_subset: a GPU, where CI's
        // lavapipe takes tens of seconds per 32-iteration case, and qemu
        // emulation) the 32-iteration cases run for F32 and Q4_K weights
        // only; every type runs its 1-, 2- and 7-iteration cases, which use
        // the same kernels. The native CPU, and RD_TEST_ALL_CASES=1, run
        // every case.
        let long_in_subset = [GgmlType::F32, GgmlType::Q4_K];
        if common::case_subset() && c.iterations > 8 && !long_in_subset.contains(&ty) {
            println!("{:28} skipped (case subset)", c.name);
            continue;
        }
        let o = run_case(c, &dir);
        println!(
            "{:28} rel_err {:.2e}  top-1 {}/{}  greedy {}",
            c.name,
            o.rel_err,
            o.agree,
            o.rows,
            if o.greedy_same { "same" } else { "differs" }
        );
        let e = per_type.entry(ty.name()).or_insert((0, 0, 0.0));
        e.0 += o.agree;
        e.1 += o.rows;
        e.2 = e.2.max(o.rel_err);
        if o.rel_err > bound_for(ty, p) {
            failures.push(format!(
                "{}: rel_err {:.3e} > {:.1e}",
                c.name,
                o.rel_err,
                bound_for(ty, p)
            ));
        }
        if requires_same_greedy(ty, p) && !o.greedy_same {
            failures.push(format!(
                "{}: greedy tokens differ from the reference",
                c.name
            ));
        }
    }
    for (ty, (agree, rows, worst)) in &per_type {
        let frac = *agree as f64 / *rows as f64;
        println!(
            "{ty:5}: top-1 agreement {agree}/{rows} = {:.1}%, worst rel_err {worst:.2e}",
            frac * 100.0
        );
        let ty = GgmlType::from_name(ty).unwrap();
        if frac < min_agreement(ty, p) {
            failures.push(format!(
                "{}: top-1 agreement {:.1}% < {:.0}%",
                ty.name(),
                frac * 100.0,
                min_agreement(ty, p) * 100.0
            ));
        }
    }
    std::fs::remove_dir_all(&dir).ok();
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
