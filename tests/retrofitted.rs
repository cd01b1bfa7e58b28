//! Huginn files with pre-norm Llama blocks (`huginn.block_type = prenorm`,
//! the layout of Llama models retrofitted with recurrence: RoPE over head
//! halves, no embedding scale, no norm before the coda) against the
//! independent float64 reference (tools/reference.py, run here on the same
//! file): every position's logits of a prompt and of greedy decoding, at
//! several iteration counts, KV budgets and initial states.

mod common;

use recurrent_depth::gguf::GgmlType;
use recurrent_depth::model::{BlockType, Model};
use recurrent_depth::session::{Session, SessionParams, StateInit};
use recurrent_depth::testmodel::{self, TestModelSpec};
use std::path::PathBuf;
use std::sync::Arc;

const PROMPT: [u32; 11] = [5, 17, 200, 3, 99, 42, 7, 130, 64, 250, 11];
const N_DECODE: usize = 6;

fn tmp(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("rd-retro-{}-{name}", std::process::id()))
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
            let (want, tokens) = common::reference_logits(&path, &PROMPT, r, b, init, N_DECODE);
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
            let err = common::rel_err(&got, &want);
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
    let (want, _) = common::reference_logits(&path, &PROMPT, 4, 4, "zeros", N_DECODE);
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
