//! Ouro files (`ouro`: every block looped from the token embedding, norms
//! around each sublayer, the final norm after every loop, a learned exit
//! gate) against the independent float64 reference (tools/reference.py, run
//! here on the same random files): logits at several loop counts and KV
//! budgets, and generations under the `gate` exit criterion (tokens and
//! loops per token).

mod common;

use recurrent_depth::Error;
use recurrent_depth::exit::ExitSpec;
use recurrent_depth::generate::{ComputeLimits, GenerateParams};
use recurrent_depth::gguf::GgmlType;
use recurrent_depth::model::{Architecture, Model};
use recurrent_depth::sampling::SamplingParams;
use recurrent_depth::session::{Session, SessionParams};
use recurrent_depth::testmodel::{self, TestModelSpec};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

const PROMPT: [u32; 9] = [1, 2, 3, 4, 77, 140, 9, 200, 31];

fn tmp(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("rd-ouro-{}-{name}", std::process::id()))
}

fn spec(seed: u64, tied: bool, n_head_kv: usize, ty: GgmlType) -> TestModelSpec {
    TestModelSpec {
        seed,
        n_embd: 128,
        n_head: 4,
        n_head_kv,
        n_prelude: 0,
        n_core: 3,
        n_coda: 0,
        tied,
        qk_bias: false,
        weight_type: ty,
        default_iterations: 4,
        ouro: true,
        ..TestModelSpec::default()
    }
}

fn model(path: &Path) -> Arc<Model> {
    Arc::new(Model::load(path, &common::load_params(2)).unwrap())
}

#[test]
fn loops_match_the_reference() {
    for (name, sp) in [
        ("tied-gqa", spec(31, true, 2, GgmlType::F32)),
        ("untied", spec(32, false, 4, GgmlType::F32)),
    ] {
        let path = tmp(&format!("{name}.gguf"));
        testmodel::write(&sp, &path).unwrap();
        let m = model(&path);
        assert_eq!(m.config().architecture, Architecture::Ouro);
        assert_eq!(m.config().default_iterations, 4);
        assert!(m.exit_gate().is_some());
        for (r, b) in [(1, 1), (2, 2), (4, 4), (4, 1), (8, 3)] {
            let (want, tokens) = common::reference_logits(&path, &PROMPT, r, b, "zeros", 5);
            let params = SessionParams {
                n_ctx: 64,
                kv_budget: b,
                ..SessionParams::default()
            };
            let mut s = Session::new(Arc::clone(&m), &params).unwrap();
            let mut got = s.eval_all_logits(&PROMPT, r).unwrap();
            for &t in &tokens[PROMPT.len()..] {
                s.eval(&[t], r).unwrap();
                got.extend_from_slice(s.logits());
            }
            let err = common::rel_err(&got, &want);
            eprintln!("{name} loops={r} B={b}: {err:.2e} of the logit range");
            assert!(err < 1e-4, "{name} loops={r} B={b}: {err:.3e}");
            let v = sp.n_vocab;
            for row in PROMPT.len() - 1..tokens.len() - 1 {
                assert_eq!(
                    common::argmax(&got[row * v..(row + 1) * v]) as u32,
                    tokens[row + 1],
                    "{name} loops={r} B={b}: greedy differs at row {row}"
                );
            }
        }
        let _ = std::fs::remove_file(&path);
    }
}

/// The reference's trace: `(tokens, loops per token)`.
fn reference_trace(
    path: &Path,
    exit: &str,
    min: usize,
    b: usize,
    n: usize,
) -> (Vec<u32>, Vec<usize>) {
    let prompt: Vec<String> = PROMPT.iter().map(|t| t.to_string()).collect();
    let out = Command::new("python3")
        .arg("tools/reference.py")
        .arg("--model")
        .arg(path)
        .args(["--tokens", &prompt.join(",")])
        .args(["--generate", &n.to_string(), "--exit", exit])
        .args([
            "--min-iterations",
            &min.to_string(),
            "--max-iterations",
            "4",
        ])
        .args(["--prefill-iterations", "4", "--kv-budget", &b.to_string()])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "reference failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let line = |prefix: &str| -> Vec<usize> {
        text.lines()
            .find_map(|l| l.strip_prefix(prefix))
            .unwrap()
            .split(',')
            .map(|x| x.trim().parse().unwrap())
            .collect()
    };
    let tokens = line("tokens: ").into_iter().map(|t| t as u32).collect();
    (tokens, line("iterations: "))
}

#[test]
fn gate_exits_match_the_reference() {
    let path = tmp("gate.gguf");
    testmodel::write(&spec(33, true, 2, GgmlType::F32), &path).unwrap();
    let m = model(&path);
    let n = 16;
    let mut spread = std::collections::BTreeSet::new();
    for (threshold, min, b) in [
        (0.3, 1, 4),
        (0.5, 1, 4),
        (0.5, 2, 4),
        (0.8, 1, 4),
        (0.5, 1, 1),
    ] {
        let exit = format!("gate:{threshold}");
        let (want_tokens, want_iters) = reference_trace(&path, &exit, min, b, n);
        let params = GenerateParams {
            max_tokens: n,
            limits: ComputeLimits {
                min_iterations: min,
                max_iterations: 4,
                exit: exit.parse::<ExitSpec>().unwrap(),
                ..ComputeLimits::default()
            },
            prefill_iterations: Some(4),
            sampling: SamplingParams::greedy(),
            ..GenerateParams::default()
        };
        let sp = SessionParams {
            n_ctx: 64,
            kv_budget: b,
            ..SessionParams::default()
        };
        let mut s = Session::new(Arc::clone(&m), &sp).unwrap();
        let (mut tokens, mut iters) = (Vec::new(), Vec::new());
        s.generate(&PROMPT, &params, |ev, _| {
            tokens.push(ev.token);
            iters.push(ev.iterations);
            true
        })
        .unwrap();
        eprintln!("{exit} min {min} B {b}: loops {iters:?}");
        assert_eq!(tokens, want_tokens, "{exit} min {min} B {b}: tokens");
        assert_eq!(iters, want_iters, "{exit} min {min} B {b}: loops");
        assert!(iters.iter().all(|&i| (min..=4).contains(&i)));
        spread.extend(iters);
    }
    // The thresholds above make tokens stop at different loops.
    assert!(spread.len() >= 3, "loops used: {spread:?}");
    let _ = std::fs::remove_file(&path);
}

#[test]
fn gate_needs_a_gate_and_quantized_ouro_runs() {
    // A Huginn model has no gate: the criterion is refused before anything runs.
    let hpath = tmp("huginn.gguf");
    testmodel::write(&TestModelSpec::default(), &hpath).unwrap();
    let h = model(&hpath);
    let mut s = Session::new(h, &SessionParams::default()).unwrap();
    let params = GenerateParams {
        max_tokens: 2,
        limits: ComputeLimits {
            exit: "gate".parse().unwrap(),
            ..ComputeLimits::default()
        },
        ..GenerateParams::default()
    };
    match s.generate(&PROMPT, &params, |_, _| true) {
        Err(Error::InvalidArgument(msg)) => assert!(msg.contains("gate"), "{msg}"),
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert_eq!(s.n_past(), 0);
    let _ = std::fs::remove_file(&hpath);

    // Q8_0 weights: close to the F32 reference.
    let path = tmp("q8.gguf");
    let sp = spec(34, true, 2, GgmlType::Q8_0);
    testmodel::write(&sp, &path).unwrap();
    let (want, _) = common::reference_logits(&path, &PROMPT, 4, 4, "zeros", 0);
    let params = SessionParams {
        n_ctx: 64,
        kv_budget: 4,
        ..SessionParams::default()
    };
    let got = Session::new(model(&path), &params)
        .unwrap()
        .eval_all_logits(&PROMPT, 4)
        .unwrap();
    let v = sp.n_vocab;
    let agree = (0..PROMPT.len())
        .filter(|&r| {
            common::argmax(&got[r * v..(r + 1) * v]) == common::argmax(&want[r * v..(r + 1) * v])
        })
        .count();
    eprintln!("Q8_0 ouro: top-1 {agree}/{}", PROMPT.len());
    assert!(agree * 10 >= PROMPT.len() * 8);
    let _ = std::fs::remove_file(&path);
}

#[test]
fn speculative_decoding_equals_plain_decoding() {
    let path = tmp("spec.gguf");
    testmodel::write(&spec(35, true, 2, GgmlType::F32), &path).unwrap();
    let m = model(&path);
    let run = |draft: usize| {
        let sp = SessionParams {
            n_ctx: 64,
            kv_budget: 4,
            ..SessionParams::default()
        };
        let mut s = Session::new(Arc::clone(&m), &sp).unwrap();
        let params = GenerateParams {
            max_tokens: 24,
            limits: ComputeLimits::fixed(4),
            sampling: SamplingParams::greedy(),
            draft: recurrent_depth::generate::DraftParams {
                tokens: draft,
                iterations: 1,
                adaptive: false,
            },
            ..GenerateParams::default()
        };
        let mut tokens = Vec::new();
        let stats = s
            .generate(&PROMPT, &params, |ev, _| {
                tokens.push(ev.token);
                true
            })
            .unwrap();
        (tokens, stats.verify_passes)
    };
    let (plain, _) = run(0);
    let (spec_tokens, passes) = run(3);
    assert!(passes > 0);
    assert_eq!(spec_tokens, plain);
    let _ = std::fs::remove_file(&path);
}
