//! The CPU kernels chosen at run time (ggml-sys's `cpu_backend`): on x86-64
//! Linux builds ggml's CPU code is linked twice, for x86-64-v3 and for
//! AVX-512, and the copy the processor supports runs; `GGML_SYS_CPU_KERNELS=v3`
//! keeps the baseline. Each choice is made once per process, so the two are
//! compared through the `rd` binary. On a CPU without AVX-512 both runs use
//! the baseline and the comparison only checks determinism (said on stderr).

use recurrent_depth::gguf::GgmlType;
use recurrent_depth::npy;
use recurrent_depth::testmodel::{self, TestModelSpec};
use std::path::{Path, PathBuf};
use std::process::Command;

fn rd(kernels: Option<&str>) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_rd"));
    match kernels {
        Some(k) => c.env("GGML_SYS_CPU_KERNELS", k),
        None => c.env_remove("GGML_SYS_CPU_KERNELS"),
    };
    c
}

/// Whether `rd` runs the AVX-512 copy when the environment does not say v3.
fn avx512_chosen() -> bool {
    ggml_sys::cpu::avx512_copy_usable()
}

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("rd-cpu-kernels-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d.join(name)
}

fn logits(model: &Path, kernels: Option<&str>, repack: &str, out: &Path) -> Vec<f32> {
    let st = rd(kernels)
        .args([
            "logits",
            "--threads",
            "2",
            "--iterations",
            "4",
            "--repack",
            repack,
        ])
        .arg("-m")
        .arg(model)
        .args(["--tokens", "1,7,42,99,3,250,17,64,5,11,200,31"])
        .arg("--out")
        .arg(out)
        .status()
        .unwrap();
    assert!(st.success(), "rd logits failed ({kernels:?})");
    npy::read::<f32>(&std::fs::read(out).unwrap()).unwrap().data
}

#[test]
fn rd_devices_names_the_kernels_in_use() {
    if ggml_sys::X86_LEVEL.is_empty() {
        return; // Only x86-64 builds name them.
    }
    let text = |k: Option<&str>| {
        let out = rd(k).arg("devices").output().unwrap();
        assert!(out.status.success());
        String::from_utf8(out.stdout).unwrap()
    };
    let default = text(None);
    let want = if avx512_chosen() || ggml_sys::X86_LEVEL == "avx512" {
        "(kernels: avx512)"
    } else {
        "(kernels: v3)"
    };
    assert!(default.contains(want), "{want} missing from:\n{default}");
    if ggml_sys::cpu::CHOOSES_CPU_KERNELS {
        let v3 = text(Some("v3"));
        assert!(v3.contains("(kernels: v3)"), "{v3}");
    }
}

/// Both copies give the same logits up to the summation order of their
/// kernels, for weight types with (Q4_0: repacked) and without interleaved
/// kernels, and F16; with the weights as stored, and repacked for each copy's
/// kernels (on AMX Xeons the AVX-512 copy puts Q4_0, Q4_1 and Q8_0 in ggml's
/// AMX buffer type, the baseline copy Q4_0 in CPU_REPACK).
#[test]
fn both_kernel_sets_agree() {
    if !avx512_chosen() {
        eprintln!("this CPU or build runs only the baseline kernels: comparing v3 with itself");
    }
    for (i, ty) in [
        GgmlType::Q4_0,
        GgmlType::Q8_0,
        GgmlType::Q4_1,
        GgmlType::F16,
    ]
    .into_iter()
    .enumerate()
    {
        let p = tmp(&format!("m{i}.gguf"));
        let spec = TestModelSpec {
            weight_type: ty,
            n_embd: 256,
            n_ff: 512,
            n_head: 4,
            n_head_kv: 2,
            seed: 40 + i as u64,
            ..TestModelSpec::default()
        };
        testmodel::write(&spec, &p).unwrap();
        for repack in ["off", "auto"] {
            let base = logits(
                &p,
                Some("v3"),
                repack,
                &tmp(&format!("v3-{i}-{repack}.npy")),
            );
            let chosen = logits(&p, None, repack, &tmp(&format!("auto-{i}-{repack}.npy")));
            assert_eq!(base.len(), chosen.len());
            let range = base.iter().fold(f32::MIN, |a, &b| a.max(b))
                - base.iter().fold(f32::MAX, |a, &b| a.min(b));
            let worst = base
                .iter()
                .zip(&chosen)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0f32, f32::max);
            eprintln!("{ty:?}, repack {repack}: worst difference {worst:e} of a range of {range}");
            // Quantized types as stored: the same integer products and the same
            // order of their f32 sums (measured bitwise equal on an AVX-512
            // Xeon). F16: products of f16 activations summed in f32 in 16 lanes
            // instead of 8, an order the recurrence amplifies (measured 7e-4 of
            // the range); bounded like the golden tests' F16. Repacked: the AMX
            // batch kernels add the blocks' scaled sums in another order; a
            // last-bit difference that moves an activation across a rounding
            // boundary of its 8-bit quantization changes that product by a
            // quantum, which 4 iterations carry (measured 1.0e-2 of the range
            // for Q8_0 and Q4_1, each as close to the f64 reference as the
            // baseline: 1.5e-2 and 1.7e-2 against 1.5e-2 and 1.4e-2).
            let bound = match (ty, repack) {
                (GgmlType::F16, _) => 2e-3,
                (_, "off") => 1e-4,
                _ => 3e-2,
            };
            assert!(
                worst <= bound * range,
                "{ty:?}, repack {repack}: the kernel sets differ by {worst} (range {range})"
            );
        }
    }
}
