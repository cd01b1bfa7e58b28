//! Huginn files with pre-norm Llama blocks (`huginn.block_type = prenorm`,
//! the layout of Llama models retrofitted with recurrence: RoPE over head
//! halves, no embedding scale, no norm before the coda) against the
//! independent float64 reference (tools/reference.py, run here on the same
//! file): every position's logits of a prompt and of greedy decoding, at
//! several iteration counts, KV budgets and initial states.

mod common;

use recurrent_depth::gguf::GgmlType;
use recurrent_depth::model::{BlockType, Model};
use recurrent_depth::npy;
use recurrent_depth::session::{Session, SessionParams, StateInit};
use recurrent_depth::testmodel::{self, TestModelSpec};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

const PROMPT: [u32; 11] = [5, 17, 200, 3, 99, 42, 7, 130, 64, 250, 11];
const N_DECODE: usize = 6;

fn tmp(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("rd-retro-{}-{name}", std::process::id()))
}

/// The reference's logits (f32, `[n_tokens, vocab]`) and fed tokens.
fn reference(model: &Path, iterations: usize, b: usize, init: &str) -> (Vec<f32>, Vec<u32>) {
    // Unique names: the tests of this file run in parallel.
    static CALLS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let k = CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let (lo, to) = (
        tmp(&format!("ref-logits-{k}.npy")),
        tmp(&format!("ref-tokens-{k}.npy")),
    );
    let prompt: Vec<String> = PROMPT.iter().map(|t| t.to_string()).collect();
    let script = format!(
        "import sys, numpy as np\nsys.path.insert(0, 'tools')\nimport reference as r\n\
         m = r.Model({model:?})\n\
         logits, tokens, _, _ = r.run(m, [{}], {iterations}, {b}, {init}, {N_DECODE})\n\
         np.save({lo:?}, logits.astype(np.float32))\n\
         np.save({to:?}, np.asarray(tokens, dtype=np.int32))\n",
        prompt.join(","),
        init = if init == "zeros" {
            "'zeros'".to_string()
        } else {
            init.to_string()
        },
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
    let logits: npy::NpyArray<f32> = npy::read(&std::fs::read(&lo).unwrap()).unwrap();
    let tokens: npy::NpyArray<i32> = npy::read(&std::fs::read(&to).unwrap()).unwrap();
    let _ = (std::fs::remove_file(lo), std::fs::remove_file(to));
    (logits.data, tokens.data.iter().map(|&t| t as u32).collect())
}

#[test]
fn prenorm_recurrence_matches_the_reference() {
    let models = [
        (
            "gqa",
            TestModelSpec {
                seed: 21,
                n_head: 4,
                n_head_kv: 2,
                n_embd: 128,
                retrofitted: true,
                ..TestModelSpec::default()
            },
        ),
        (
            "untied-2-3-2",
            TestModelSpec {
                seed: 22,
                n_prelude: 2,
                n_core: 3,
                n_coda: 2,
                tied: false,
                qk_bias: false,
                retrofitted: true,
                ..TestModelSpec::default()
            },
        ),
    ];
    // (iterations, KV budget, initial state)
    let cases = [
        (1, 1, "zeros"),
        (4, 4, "7"),
        (8, 8, "zeros"),
        (8, 1, "zeros"),
        (16, 3, "9"),
    ];
    for (name, spec) in &models {
        let path = tmp(&format!("{name}.gguf"));
        testmodel::write(spec, &path).unwrap();
        let model = Arc::new(Model::load(&path, &common::load_params(2)).unwrap());
        assert_eq!(model.config().block_type, BlockType::PreNorm);
        assert!(!model.config().norm_after_recurrence);
        for &(r, b, init) in &cases {
            let (want, tokens) = reference(&path, r, b, init);
            let (state_init, seed) = match init {
                "zeros" => (StateInit::Zeros, 0),
                s => (StateInit::Random, s.parse().unwrap()),
            };
            let sp = SessionParams {
                n_ctx: 64,
                kv_budget: b,
                seed,
                state_init,
                ..SessionParams::default()
            };
            let mut s = Session::new(Arc::clone(&model), &sp).unwrap();
            let mut got = s.eval_all_logits(&PROMPT, r).unwrap();
            for &t in &tokens[PROMPT.len()..] {
                s.eval(&[t], r).unwrap();
                got.extend_from_slice(s.logits());
            }
            assert_eq!(got.len(), want.len());
            let (lo, hi) = want
                .iter()
                .fold((f32::MAX, f32::MIN), |(a, b), &x| (a.min(x), b.max(x)));
            let err = got
                .iter()
                .zip(&want)
                .map(|(a, b)| (a - b).abs())
                .fold(0f32, f32::max)
                / (hi - lo);
            let v = spec.n_vocab;
            // The reference decoded greedily from its own logits.
            let greedy_same = (PROMPT.len() - 1..tokens.len() - 1)
                .all(|row| common::argmax(&got[row * v..(row + 1) * v]) as u32 == tokens[row + 1]);
            eprintln!(
                "{name} r={r} B={b} init={init}: {:.2e} of the logit range, greedy same: {greedy_same}",
                err
            );
            assert!(err < 1e-4, "{name} r={r} B={b} init={init}: {err:.3e}");
            assert!(
                greedy_same,
                "{name} r={r} B={b} init={init}: greedy differs"
            );
        }
        let _ = std::fs::remove_file(&path);
    }
}

#[test]
fn prenorm_quantized_runs_close_to_f32() {
    let spec = TestModelSpec {
        seed: 23,
        retrofitted: true,
        weight_type: GgmlType::Q8_0,
        ..TestModelSpec::default()
    };
    let path = tmp("q8.gguf");
    testmodel::write(&spec, &path).unwrap();
    let (want, _) = reference(&path, 4, 4, "zeros");
    let model = Arc::new(Model::load(&path, &common::load_params(2)).unwrap());
    let sp = SessionParams {
        n_ctx: 64,
        kv_budget: 4,
        ..SessionParams::default()
    };
    let got = Session::new(model, &sp)
        .unwrap()
        .eval_all_logits(&PROMPT, 4)
        .unwrap();
    let v = spec.n_vocab;
    let rows = PROMPT.len();
    let agree = (0..rows)
        .filter(|&r| {
            common::argmax(&got[r * v..(r + 1) * v]) == common::argmax(&want[r * v..(r + 1) * v])
        })
        .count();
    eprintln!("Q8_0 prenorm: top-1 agreement {agree}/{rows}");
    assert!(agree * 10 >= rows * 8, "top-1 agreement {agree}/{rows}");
    let _ = std::fs::remove_file(&path);
}
