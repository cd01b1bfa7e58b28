//! Self-speculative decoding: greedy output with speculation equals greedy
//! output without it, token for token, on random models and the demo model
//! (fixed limits, B >= r), whatever the drafts are; the cache is left as
//! plain decoding leaves it, wherever generation stops; sampling is
//! reproducible; settings speculation cannot honour are refused.

mod common;

use recurrent_depth::Error;
use recurrent_depth::exit::{ExitCriterion, ExitSpec};
use recurrent_depth::generate::{
    ComputeLimits, DraftParams, GenerateParams, GenerateStats, StopReason,
};
use recurrent_depth::gguf::GgmlType;
use recurrent_depth::model::Model;
use recurrent_depth::sampling::SamplingParams;
use recurrent_depth::session::{Session, SessionParams, StateInit};
use recurrent_depth::testmodel::{self, TestModelSpec};
use recurrent_depth::tokenizer::Tokenizer;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

fn load(spec: &TestModelSpec, tag: &str) -> Arc<Model> {
    // Tests run in parallel and each writes its own files.
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let path = std::env::temp_dir().join(format!("rd-spec-{tag}-{}-{n}.gguf", std::process::id()));
    testmodel::write(spec, &path).unwrap();
    // One compute thread: the tests run in parallel, and ggml's threads spin
    // at every barrier, so two tests with two threads each on a 2-core
    // machine wait on descheduled threads at every node (a CI run took 491 s
    // for this file, 15 times its usual time).
    let model = Model::load(&path, &common::load_params(1)).unwrap();
    let _ = std::fs::remove_file(&path);
    Arc::new(model)
}

/// The models: the default shape, grouped queries with an untied head and
/// no q/k biases, and a wider one with more core blocks.
fn models() -> Vec<(&'static str, Arc<Model>)> {
    let base = TestModelSpec {
        n_ctx: 256,
        ..TestModelSpec::default()
    };
    vec![
        ("default", load(&base, "default")),
        (
            "gqa-untied",
            load(
                &TestModelSpec {
                    seed: 5,
                    n_embd: 128,
                    n_head: 4,
                    n_head_kv: 2,
                    tied: false,
                    qk_bias: false,
                    n_vocab: 300,
                    ..base
                },
                "gqa",
            ),
        ),
        (
            "wide",
            load(
                &TestModelSpec {
                    seed: 9,
                    n_embd: 192,
                    n_ff: 256,
                    n_head: 3,
                    n_head_kv: 3,
                    n_core: 3,
                    n_prelude: 2,
                    ..base
                },
                "wide",
            ),
        ),
    ]
}

struct Run {
    tokens: Vec<u32>,
    logprobs: Vec<f32>,
    iterations: Vec<usize>,
    stats: GenerateStats,
    n_past: usize,
    logits: Vec<f32>,
}

fn session(model: &Arc<Model>, kv_budget: usize, init: StateInit) -> Session {
    let sp = SessionParams {
        n_ctx: 256.min(model.config().context_length),
        n_batch: 64,
        kv_budget,
        state_init: init,
        seed: 42,
        ..SessionParams::default()
    };
    Session::new(Arc::clone(model), &sp).unwrap()
}

fn generate(s: &mut Session, prompt: &[u32], gp: &GenerateParams) -> Run {
    let mut tokens = Vec::new();
    let mut logprobs = Vec::new();
    let mut iterations = Vec::new();
    let stats = s
        .generate(prompt, gp, |ev, _| {
            assert_eq!(ev.index, tokens.len());
            tokens.push(ev.token);
            logprobs.push(ev.logprob);
            iterations.push(ev.iterations);
            true
        })
        .unwrap();
    Run {
        tokens,
        logprobs,
        iterations,
        stats,
        n_past: s.n_past(),
        logits: s.logits().to_vec(),
    }
}

fn params(r: usize, max_tokens: usize, draft: DraftParams) -> GenerateParams {
    GenerateParams {
        max_tokens,
        limits: ComputeLimits::fixed(r),
        draft,
        ..GenerateParams::default()
    }
}

fn draft(tokens: usize, iterations: usize, adaptive: bool) -> DraftParams {
    DraftParams {
        tokens,
        iterations,
        adaptive,
    }
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// The speculative run agrees with the plain one: same tokens, logprobs and
/// final logits to rounding, same cache length.
fn assert_same(what: &str, plain: &Run, spec: &Run) {
    assert_eq!(plain.tokens, spec.tokens, "{what}: tokens");
    assert_eq!(plain.iterations, spec.iterations, "{what}: iterations");
    assert_eq!(plain.stats.stop, spec.stats.stop, "{what}: stop");
    assert_eq!(plain.n_past, spec.n_past, "{what}: cached positions");
    let lp = max_abs_diff(&plain.logprobs, &spec.logprobs);
    assert!(lp < 1e-3, "{what}: logprobs differ by {lp}");
    let range = plain.logits.iter().fold(0f32, |m, &x| m.max(x.abs()));
    let dl = max_abs_diff(&plain.logits, &spec.logits);
    assert!(
        dl <= 1e-4 * range.max(1.0),
        "{what}: final logits differ by {dl}"
    );
}

#[test]
fn greedy_speculation_equals_plain_decoding() {
    let prompt = [3u32, 1, 4, 1, 5, 9, 2, 6];
    for (name, model) in models() {
        // r = 20 runs two graphs per token (16 steps each at most).
        for r in [4, 8, 20] {
            let mut s = session(&model, r, StateInit::Zeros);
            let plain = generate(&mut s, &prompt, &params(r, 40, DraftParams::default()));
            assert_eq!(plain.tokens.len(), 40);
            for (k, di, adaptive) in [(1, 1, false), (3, 2, false), (6, 1, true), (4, r, false)] {
                s.reset();
                let spec = generate(&mut s, &prompt, &params(r, 40, draft(k, di, adaptive)));
                let what = format!("{name} r={r} k={k} draft it={di} adaptive={adaptive}");
                assert_same(&what, &plain, &spec);
                let st = spec.stats;
                assert!(st.verify_passes > 0, "{what}: no verification pass");
                assert!(st.draft_accepted <= st.draft_tokens, "{what}");
                eprintln!(
                    "{what}: {}/{} drafts accepted in {} passes",
                    st.draft_accepted, st.draft_tokens, st.verify_passes
                );
                if di == r {
                    // Drafts at the full budget are the verifier's own picks.
                    assert_eq!(st.draft_accepted, st.draft_tokens, "{what}");
                }
            }
        }
    }
}

#[test]
fn speculation_is_exact_with_a_larger_budget_and_random_initial_states() {
    let model = &models()[1].1;
    let prompt = [7u32, 7, 1, 2];
    // B > r: the verifier's unreached slots get the latest-entry fill.
    for (b, init) in [
        (12, StateInit::Random),
        (6, StateInit::Random),
        (9, StateInit::Zeros),
    ] {
        let mut s = session(model, b, init);
        let plain = generate(&mut s, &prompt, &params(6, 30, DraftParams::default()));
        s.reset();
        let spec = generate(&mut s, &prompt, &params(6, 30, draft(5, 2, true)));
        assert_same(&format!("B={b} {init:?}"), &plain, &spec);
        // The state generator was rewound: the next token draws the same
        // initial state in both sessions.
        let mut a = session(model, b, init);
        let mut c = session(model, b, init);
        let first = generate(&mut a, &prompt, &params(6, 13, DraftParams::default()));
        let second = generate(&mut c, &prompt, &params(6, 13, draft(4, 1, false)));
        assert_same("prefix", &first, &second);
        let more_a = generate(&mut a, &[], &params(6, 9, DraftParams::default()));
        let more_c = generate(&mut c, &[], &params(6, 9, DraftParams::default()));
        assert_same("continued", &more_a, &more_c);
    }
}

#[test]
fn the_cache_ends_where_plain_decoding_ends() {
    let model = &models()[0].1;
    let prompt = [2u32, 4, 6, 8];
    let r = 5;
    let mut plain_s = session(model, r, StateInit::Zeros);
    let mut spec_s = session(model, r, StateInit::Zeros);
    let full = generate(
        &mut plain_s,
        &prompt,
        &params(r, 24, DraftParams::default()),
    );
    // Every length ends somewhere inside a round for some draft size.
    for max_tokens in 1..=12 {
        for k in [2, 5] {
            plain_s.reset();
            spec_s.reset();
            let gp = params(r, max_tokens, DraftParams::default());
            let plain = generate(&mut plain_s, &prompt, &gp);
            let spec = generate(
                &mut spec_s,
                &prompt,
                &params(r, max_tokens, draft(k, 1, false)),
            );
            let what = format!("max_tokens {max_tokens}, k {k}");
            assert_same(&what, &plain, &spec);
            assert_eq!(spec.tokens, full.tokens[..max_tokens], "{what}");
            // Continuing plainly from both caches gives the same tokens.
            let cont = params(r, 6, DraftParams::default());
            let a = generate(&mut plain_s, &[], &cont);
            let b = generate(&mut spec_s, &[], &cont);
            assert_same(&format!("{what}, continued"), &a, &b);
        }
    }
    // A stop token inside a round ends there too.
    let stop = full.tokens[9];
    let first_stop = full.tokens.iter().position(|&t| t == stop).unwrap();
    for k in [3, 8] {
        plain_s.reset();
        spec_s.reset();
        let mut gp = params(r, 24, DraftParams::default());
        gp.stop_tokens = vec![stop];
        let plain = generate(&mut plain_s, &prompt, &gp);
        gp.draft = draft(k, 2, false);
        let spec = generate(&mut spec_s, &prompt, &gp);
        assert_eq!(plain.tokens.len(), first_stop + 1);
        assert_eq!(spec.stats.stop, StopReason::StopToken);
        assert_same(&format!("stop token, k {k}"), &plain, &spec);
    }
}

#[test]
fn callbacks_stop_and_change_limits_inside_a_round() {
    let model = &models()[2].1;
    let prompt = [1u32, 2, 3];
    // Tokens 0..=6 at r = 8, then r = 6 (B = 8 covers both), stop after 15.
    let run = |s: &mut Session, gp: &GenerateParams| {
        let mut tokens = Vec::new();
        let mut iters = Vec::new();
        s.generate(&prompt, gp, |ev, limits| {
            tokens.push(ev.token);
            iters.push(ev.iterations);
            if ev.index == 6 {
                *limits = ComputeLimits::fixed(6);
            }
            ev.index < 15
        })
        .unwrap();
        (tokens, iters, s.n_past(), s.logits().to_vec())
    };
    let mut a = session(model, 8, StateInit::Zeros);
    let mut b = session(model, 8, StateInit::Zeros);
    let plain = run(&mut a, &params(8, 40, DraftParams::default()));
    for k in [2, 4, 7] {
        b.reset();
        let spec = run(&mut b, &params(8, 40, draft(k, 1, false)));
        assert_eq!(plain.0, spec.0, "k {k}: tokens");
        assert_eq!(plain.1, spec.1, "k {k}: iterations");
        assert_eq!(plain.2, spec.2, "k {k}: cached positions");
        assert!(max_abs_diff(&plain.3, &spec.3) < 1e-3, "k {k}: logits");
    }
    assert_eq!(plain.0.len(), 16);
    assert_eq!(plain.1[7], 6);
}

#[test]
fn a_cancel_inside_a_round_ends_where_plain_decoding_ends() {
    let model = &models()[0].1;
    let prompt = [4u32, 3, 2, 1];
    // Cancel from the callback of token `at`: plain decoding stops in the
    // evaluation of that token, speculation after reporting it.
    let run = |s: &mut Session, gp: &GenerateParams, at: usize| {
        let flag = s.cancel_flag();
        let mut tokens = Vec::new();
        let res = s.generate(&prompt, gp, |ev, _| {
            tokens.push(ev.token);
            if ev.index == at {
                flag.store(true, std::sync::atomic::Ordering::Relaxed);
            }
            true
        });
        assert!(matches!(res, Err(Error::Cancelled)), "{res:?}");
        (tokens, s.n_past(), s.has_logits())
    };
    for at in [1, 5, 6, 9] {
        let mut a = session(model, 8, StateInit::Zeros);
        let mut b = session(model, 8, StateInit::Zeros);
        let plain = run(&mut a, &params(8, 30, DraftParams::default()), at);
        let spec = run(&mut b, &params(8, 30, draft(4, 2, false)), at);
        assert_eq!(plain, spec, "cancel at {at}");
        assert_eq!(plain.0.len(), at + 1);
        // Both continue alike from the last reported token.
        let last = [*plain.0.last().unwrap()];
        let ga = generate(&mut a, &last, &params(8, 8, DraftParams::default()));
        let gb = generate(&mut b, &last, &params(8, 8, DraftParams::default()));
        assert_same(&format!("after a cancel at {at}"), &ga, &gb);
    }
}

#[test]
fn invalid_limits_from_the_callback_inside_a_round_end_like_plain_decoding() {
    let model = &models()[1].1;
    let prompt = [8u32, 9];
    let run = |s: &mut Session, gp: &GenerateParams| {
        let mut tokens = Vec::new();
        let res = s.generate(&prompt, gp, |ev, limits| {
            tokens.push(ev.token);
            if ev.index == 6 {
                limits.max_iterations = 0;
            }
            true
        });
        assert!(matches!(res, Err(Error::InvalidArgument(_))), "{res:?}");
        (tokens, s.n_past(), s.has_logits(), s.logits().to_vec())
    };
    let mut a = session(model, 8, StateInit::Zeros);
    let mut b = session(model, 8, StateInit::Zeros);
    let plain = run(&mut a, &params(8, 30, DraftParams::default()));
    let spec = run(&mut b, &params(8, 30, draft(5, 2, false)));
    assert_eq!(plain.0, spec.0);
    assert_eq!((plain.1, plain.2), (spec.1, spec.2));
    assert!(max_abs_diff(&plain.3, &spec.3) < 1e-3);
}

#[test]
fn an_exit_criterion_set_by_the_callback_decodes_plainly() {
    let model = &models()[0].1;
    let prompt = [5u32, 6];
    let kl = ExitSpec {
        criterion: ExitCriterion::Kl,
        threshold: 1e-2,
    };
    let run = |s: &mut Session, gp: &GenerateParams| {
        let mut out = Vec::new();
        s.generate(&prompt, gp, |ev, limits| {
            out.push((ev.token, ev.iterations));
            if ev.index == 3 {
                limits.min_iterations = 1;
                limits.exit = kl;
            }
            true
        })
        .unwrap();
        out
    };
    let mut s = session(model, 8, StateInit::Zeros);
    let plain = run(&mut s, &params(8, 20, DraftParams::default()));
    s.reset();
    let spec = run(&mut s, &params(8, 20, draft(4, 2, false)));
    assert_eq!(plain, spec);
}

#[test]
fn sampling_with_speculation_is_reproducible() {
    let model = &models()[1].1;
    let prompt = [9u32, 8, 7];
    let mut gp = params(6, 48, draft(4, 2, true));
    gp.sampling = SamplingParams {
        seed: 11,
        temperature: 0.9,
        top_k: 50,
        top_p: 0.95,
        min_p: 0.02,
        repeat_penalty: 1.1,
        ..SamplingParams::default()
    };
    let mut s = session(model, 6, StateInit::Zeros);
    let a = generate(&mut s, &prompt, &gp);
    s.reset();
    let b = generate(&mut s, &prompt, &gp);
    assert_eq!(a.tokens, b.tokens);
    assert_eq!(a.stats.draft_accepted, b.stats.draft_accepted);
    assert!(a.stats.verify_passes > 0);
    assert!(a.stats.draft_accepted < a.stats.draft_tokens || a.stats.draft_tokens > 0);
    gp.sampling.seed = 12;
    s.reset();
    let c = generate(&mut s, &prompt, &gp);
    assert_ne!(a.tokens, c.tokens, "another seed, the same 48 tokens");
    // Every reported logprob is the verifier's: finite for tokens the
    // filters kept.
    assert!(a.logprobs.iter().all(|l| l.is_finite()));
}

#[test]
fn a_smaller_budget_than_the_iterations_is_deterministic() {
    // With B < r a verified batch sees the other positions' same-step
    // entries, as a prompt chunk does, so its tokens may differ from
    // one-by-one decoding; the same settings give the same tokens.
    let model = &models()[0].1;
    let prompt = [3u32, 3, 3, 4];
    let gp = params(8, 40, draft(4, 2, false));
    let mut s = session(model, 1, StateInit::Zeros);
    let a = generate(&mut s, &prompt, &gp);
    s.reset();
    let b = generate(&mut s, &prompt, &gp);
    assert_eq!(a.tokens, b.tokens);
    s.reset();
    let plain = generate(&mut s, &prompt, &params(8, 40, DraftParams::default()));
    let same = a
        .tokens
        .iter()
        .zip(&plain.tokens)
        .take_while(|(x, y)| x == y)
        .count();
    eprintln!("B=1, r=8: the first {same} of 40 tokens equal plain decoding");
    // At r = 1 a batch and single positions compute the same.
    let mut s1 = session(model, 1, StateInit::Zeros);
    let plain = generate(&mut s1, &prompt, &params(1, 30, DraftParams::default()));
    s1.reset();
    let spec = generate(&mut s1, &prompt, &params(1, 30, draft(3, 1, false)));
    assert_same("B=1, r=1", &plain, &spec);
}

#[test]
fn settings_speculation_cannot_honour_are_refused() {
    let model = &models()[0].1;
    let mut s = session(model, 4, StateInit::Zeros);
    let prompt = [1u32, 2];
    let check = |s: &mut Session, gp: &GenerateParams, want: &str| {
        let n_past = s.n_past();
        match s.generate(&prompt, gp, |_, _| true) {
            Err(Error::InvalidArgument(m)) => assert!(m.contains(want), "{m}"),
            other => panic!("expected an invalid argument about {want}, got {other:?}"),
        }
        assert_eq!(s.n_past(), n_past, "nothing is evaluated");
    };
    let mut gp = params(4, 8, draft(3, 2, false));
    gp.limits.exit = ExitSpec {
        criterion: ExitCriterion::Kl,
        threshold: 5e-4,
    };
    gp.limits.min_iterations = 1;
    check(&mut s, &gp, "fixed budget");
    let mut gp = params(4, 8, draft(3, 2, false));
    gp.limits.warm_start = true;
    check(&mut s, &gp, "warm start");
    check(&mut s, &params(4, 8, draft(64, 2, false)), "n_batch");
    check(&mut s, &params(4, 8, draft(65, 2, false)), "draft tokens");
    check(
        &mut s,
        &params(4, 8, draft(3, 0, false)),
        "draft iterations",
    );
    check(
        &mut s,
        &params(4, 8, draft(3, 5000, false)),
        "draft iterations",
    );
    // The session still works.
    let ok = generate(&mut s, &prompt, &params(4, 8, draft(3, 2, false)));
    assert_eq!(ok.tokens.len(), 8);
}

#[test]
fn demo_model_answers_the_same_with_speculation() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/huginn-demo-addition.gguf");
    // One compute thread, as in `load`.
    let model = Arc::new(Model::load(&path, &common::load_params(1)).unwrap());
    let tok = Tokenizer::from_gguf(model.gguf()).unwrap();
    let problems = [
        (12u64, 34u64),
        (999, 1),
        (45678, 9876),
        (5, 7),
        (31415, 27182),
    ];
    for r in [8, 16, 32] {
        let mut s = session(&model, r, StateInit::Zeros);
        for &(a, b) in &problems {
            let prompt = tok.encode(&format!("{a}+{b}="), true, false).unwrap();
            let mut gp = params(r, 10, DraftParams::default());
            gp.stop_tokens = tok.stop_tokens();
            s.reset();
            let plain = generate(&mut s, &prompt, &gp);
            for d in [draft(4, 2, false), draft(6, 4, true)] {
                gp.draft = d;
                s.reset();
                let spec = generate(&mut s, &prompt, &gp);
                assert_same(&format!("{a}+{b} r={r} {d:?}"), &plain, &spec);
            }
        }
    }
}

/// Q8_0 quantizes each matrix product's activations: a rounding-level
/// difference between a batch and a single position (the F32 parts of
/// attention) can flip one activation's quantization step, which moves a
/// logprob by up to ~0.1 on this random model (measured) while the picks
/// stay the same. Tokens and the cache must agree.
#[test]
fn quantized_weights_keep_greedy_tokens() {
    let spec = TestModelSpec {
        n_ctx: 256,
        n_embd: 128,
        n_head: 4,
        n_head_kv: 2,
        weight_type: GgmlType::Q8_0,
        ..TestModelSpec::default()
    };
    let model = load(&spec, "q8");
    for prompt in [&[4u32, 40, 44][..], &[4, 40, 44, 1]] {
        let mut s = session(&model, 8, StateInit::Zeros);
        let plain = generate(&mut s, prompt, &params(8, 32, DraftParams::default()));
        for (k, di) in [(1, 2), (5, 8), (3, 2)] {
            s.reset();
            let spec = generate(&mut s, prompt, &params(8, 32, draft(k, di, false)));
            let what = format!("Q8_0 k {k} draft it {di}");
            assert_eq!(plain.tokens, spec.tokens, "{what}");
            assert_eq!(plain.n_past, spec.n_past, "{what}");
            let lp = max_abs_diff(&plain.logprobs, &spec.logprobs);
            eprintln!("{what}: logprobs within {lp}");
            assert!(lp < 0.3, "{what}: logprobs differ by {lp}");
        }
    }
}
