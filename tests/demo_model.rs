//! The bundled demo model (models/huginn-demo-addition.gguf) answers fixed
//! addition problems correctly at its default iteration count, and measurably
//! worse with a single iteration: the model really uses its recurrence.

use recurrent_depth::generate::{ComputeLimits, GenerateParams};
use recurrent_depth::model::{BackendKind, LoadParams, Model};
use recurrent_depth::session::{Session, SessionParams};
use recurrent_depth::tokenizer::Tokenizer;
use std::path::Path;
use std::sync::Arc;

/// 16 problems drawn with a fixed LCG (1 to 6 digits per operand, like the
/// training distribution), not picked by looking at the model's answers. The
/// model's held-out accuracy at its default iterations is about 96%
/// (docs/demo.md); long runs of carries (e.g. 999+1) are its known weak spot.
fn problems() -> Vec<(u64, u64)> {
    let mut state: u64 = 20261128;
    let mut next = move || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        state >> 33
    };
    let mut number = move || {
        let digits = 1 + next() % 6;
        next() % 10u64.pow(digits as u32)
    };
    (0..16).map(|_| (number(), number())).collect()
}

fn answer(s: &mut Session, tok: &Tokenizer, a: u64, b: u64, iterations: usize) -> String {
    s.reset();
    let prompt = tok.encode(&format!("{a}+{b}="), true, false).unwrap();
    let params = GenerateParams {
        max_tokens: 10,
        limits: ComputeLimits::fixed(iterations),
        stop_tokens: tok.stop_tokens(),
        ..GenerateParams::default()
    };
    let mut ids = Vec::new();
    s.generate(&prompt, &params, |ev, _| {
        ids.push(ev.token);
        true
    })
    .unwrap();
    tok.decode(&ids, true)
}

#[test]
fn demo_model_adds_and_needs_its_iterations() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/huginn-demo-addition.gguf");
    let model = Model::load(
        &path,
        &LoadParams {
            backend: BackendKind::Cpu,
            n_threads: 1,
            use_mmap: true,
            ..LoadParams::default()
        },
    )
    .unwrap();
    let default_iters = model.config().default_iterations;
    let tok = Tokenizer::from_gguf(model.gguf()).unwrap();
    let model = Arc::new(model);
    let mut s = Session::new(
        model,
        &SessionParams {
            n_ctx: 64,
            kv_budget: default_iters,
            ..SessionParams::default()
        },
    )
    .unwrap();
    let problems = problems();
    let score = |s: &mut Session, r: usize| {
        problems
            .iter()
            .filter(|&&(a, b)| answer(s, &tok, a, b, r) == (a + b).to_string())
            .count()
    };
    let at_default = score(&mut s, default_iters);
    let at_one = score(&mut s, 1);
    for &(a, b) in &problems {
        println!(
            "{a}+{b}= {} (8 it) {} (1 it)",
            answer(&mut s, &tok, a, b, default_iters),
            answer(&mut s, &tok, a, b, 1)
        );
    }
    println!(
        "correct: {at_default}/{} at {default_iters} iterations, {at_one} at 1",
        problems.len()
    );
    assert!(
        at_default >= problems.len() - 2,
        "default iterations: only {at_default} correct"
    );
    assert!(
        at_one + 3 <= at_default,
        "1 iteration ({at_one}) is not clearly worse than {default_iters} ({at_default})"
    );
}

/// Text the demo model's small vocabulary (digits, `+`, `=`, specials) cannot
/// spell is refused, naming the first byte it has no token for, instead of
/// being dropped silently.
#[test]
fn demo_tokenizer_refuses_text_it_cannot_spell() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/huginn-demo-addition.gguf");
    let file = recurrent_depth::gguf::GgufFile::open(&path).unwrap();
    let tok = Tokenizer::from_gguf(&file).unwrap();
    assert!(!tok.encode("12+34=", true, true).unwrap().is_empty());
    for (text, offset) in [("abc", 0), ("1a2", 1), ("12+34=x", 6), ("1é", 1)] {
        let err = tok.encode(text, false, true).unwrap_err().to_string();
        assert!(
            err.contains(&format!("byte offset {offset}")),
            "{text:?}: {err}"
        );
    }
}
