//! Do early exits pay? Accuracy and compute time of exit strategies against
//! fixed budgets on the bundled demo model (addition), measured in one run.
//!
//! `cargo bench --bench exits` (env: `RD_BENCH_N` problems, default 60;
//! `RD_BENCH_THREADS`, default 1; `RD_BENCH_VULKAN=N` runs on Vulkan device N
//! in a `--features vulkan` build). Every strategy answers the same random
//! problems (1 to 6 digits, drawn by a seeded SplitMix64, so they are not the
//! training set's) greedily in one reused session; compute time is the
//! generation's prefill + decode time, the fastest of `RD_BENCH_REPS`
//! (default 2) alternating repetitions after a warm-up. The table prints each strategy's
//! right answers, mean iterations per generated token, compute time and its
//! ratio to the fixed budget of 8 iterations (the model's default).
//!
//! This is a benchmark, not a test: it asserts nothing and is not run in CI.

use recurrent_depth::exit::{ExitCriterion, ExitSpec};
use recurrent_depth::generate::{ComputeLimits, GenerateParams};
use recurrent_depth::model::{BackendKind, LoadParams, Model};
use recurrent_depth::rng::SplitMix64;
use recurrent_depth::sampling::SamplingParams;
use recurrent_depth::session::{Session, SessionParams};
use recurrent_depth::tokenizer::Tokenizer;
use std::path::Path;
use std::sync::Arc;

struct Strategy {
    name: String,
    limits: ComputeLimits,
    prefill_iterations: Option<usize>,
}

fn fixed(r: usize) -> Strategy {
    Strategy {
        name: format!("fixed {r}"),
        limits: ComputeLimits::fixed(r),
        prefill_iterations: None,
    }
}

fn exit(
    name: &str,
    criterion: ExitCriterion,
    threshold: f64,
    f: impl Fn(&mut Strategy),
) -> Strategy {
    let mut s = Strategy {
        name: name.to_string(),
        limits: ComputeLimits {
            min_iterations: 2,
            max_iterations: 32,
            exit: ExitSpec {
                criterion,
                threshold,
            },
            ..ComputeLimits::default()
        },
        prefill_iterations: None,
    };
    f(&mut s);
    s
}

/// The default KL exit from `min` iterations behind a latent screen.
fn screened(name: &str, min: usize, screen: ExitCriterion, threshold: f64) -> Strategy {
    exit(name, ExitCriterion::Kl, 5e-4, |s| {
        s.limits.min_iterations = min;
        s.limits.exit_screen = ExitSpec {
            criterion: screen,
            threshold,
        };
    })
}

fn operand(rng: &mut SplitMix64, max_digits: u32) -> u64 {
    let n = 1 + (rng.next_u64() % max_digits as u64) as u32;
    if n == 1 {
        return rng.next_u64() % 10;
    }
    let lo = 10u64.pow(n - 1);
    lo + rng.next_u64() % (9 * lo)
}

fn main() {
    let n: usize = std::env::var("RD_BENCH_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(60);
    let threads: usize = std::env::var("RD_BENCH_THREADS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1);
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/huginn-demo-addition.gguf");
    // RD_BENCH_VULKAN=N runs on Vulkan device N (a build with `--features
    // vulkan`); the CPU otherwise.
    let backend = match std::env::var("RD_BENCH_VULKAN")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        Some(n) => BackendKind::Vulkan(n),
        None => BackendKind::Cpu,
    };
    let params = LoadParams {
        backend,
        n_threads: threads,
        use_mmap: true,
        ..LoadParams::default()
    };
    let model = Arc::new(Model::load(&path, &params).expect("demo model"));
    let tok = Tokenizer::from_gguf(model.gguf()).expect("tokenizer");
    let sp = tok.special_tokens();
    let stop: Vec<u32> = sp.eos.into_iter().chain(sp.eot).collect();
    let mut rng = SplitMix64::new(20261129);
    let problems: Vec<(u64, u64)> = (0..n)
        .map(|_| (operand(&mut rng, 6), operand(&mut rng, 6)))
        .collect();

    let only = std::env::var("RD_BENCH_ONLY").unwrap_or_default();
    let mut strategies: Vec<Strategy> =
        [1, 2, 4, 6, 8, 12, 16, 32].into_iter().map(fixed).collect();
    strategies.extend(extra_strategies());
    // RD_BENCH_ONLY=text keeps fixed 8 and the strategies whose name has it
    // (or one of several texts separated by `|`).
    if !only.is_empty() {
        strategies.retain(|s| s.name == "fixed 8" || only.split('|').any(|o| s.name.contains(o)));
    }

    let mut session = Session::new(Arc::clone(&model), &SessionParams::default()).expect("session");
    println!("demo model, {n} problems, {threads} thread(s)\n");
    println!(
        "| strategy | right | mean iterations | compute ms | of which prompt ms | vs fixed 8 |"
    );
    println!("|---|---|---|---|---|---|");
    let reps: usize = std::env::var("RD_BENCH_REPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2);
    // Warm-up: every strategy on a few problems (first-use planning, caches).
    for s in &strategies {
        run(
            &mut session,
            &tok,
            &stop,
            s,
            &problems[..problems.len().min(3)],
        );
    }
    // Repetitions alternate over the strategies; the fastest time counts.
    let mut best = vec![f64::INFINITY; strategies.len()];
    let mut prompt = vec![0f64; strategies.len()];
    let mut stats = vec![(0usize, 0f64); strategies.len()];
    for _ in 0..reps {
        for (i, s) in strategies.iter().enumerate() {
            let (right, iters, secs, pre) = run(&mut session, &tok, &stop, s, &problems);
            if secs < best[i] {
                best[i] = secs;
                prompt[i] = pre;
            }
            stats[i] = (right, iters);
        }
    }
    let mut base = None;
    let mut rows = Vec::new();
    for (i, s) in strategies.iter().enumerate() {
        if s.name == "fixed 8" {
            base = Some(best[i]);
        }
        rows.push((s.name.clone(), stats[i].0, stats[i].1, best[i], prompt[i]));
    }
    let base = base.unwrap_or(1.0);
    for (name, right, it, secs, pre) in rows {
        println!(
            "| {name} | {right}/{n} | {it:.2} | {:.0} | {:.0} | {:.2}x |",
            secs * 1e3,
            pre * 1e3,
            secs / base
        );
    }
}

/// Answers every problem under `s`; returns (right answers, mean iterations
/// per generated token, compute seconds, of which the prompt's).
fn run(
    session: &mut Session,
    tok: &Tokenizer,
    stop: &[u32],
    s: &Strategy,
    problems: &[(u64, u64)],
) -> (usize, f64, f64, f64) {
    let (mut right, mut secs, mut iters, mut toks) = (0usize, 0f64, 0f64, 0usize);
    let mut prompt_s = 0f64;
    for &(a, b) in problems {
        session.reset();
        let prompt = tok
            .encode(&format!("{a}+{b}="), true, true)
            .expect("prompt");
        let gp = GenerateParams {
            max_tokens: 9,
            limits: s.limits,
            prefill_iterations: s.prefill_iterations,
            sampling: SamplingParams {
                greedy: true,
                ..SamplingParams::default()
            },
            stop_tokens: stop.to_vec(),
            ..GenerateParams::default()
        };
        let mut out = Vec::new();
        let st = session
            .generate(&prompt, &gp, |ev, _| {
                out.push(ev.token);
                true
            })
            .expect("generate");
        secs += st.prefill_seconds + st.decode_seconds;
        prompt_s += st.prefill_seconds;
        iters += st.mean_iterations * st.tokens as f64;
        toks += st.tokens;
        if tok.decode(&out, true).trim() == (a + b).to_string() {
            right += 1;
        }
    }
    (right, iters / toks.max(1) as f64, secs, prompt_s)
}

/// The exit strategies compared with the fixed budgets.
fn extra_strategies() -> Vec<Strategy> {
    vec![
        exit("kl 5e-4, 1..32 (defaults)", ExitCriterion::Kl, 5e-4, |s| {
            s.limits.min_iterations = 1
        }),
        exit(
            "kl 5e-4, 1..32, no lead-in (0.6)",
            ExitCriterion::Kl,
            5e-4,
            |s| {
                s.limits.min_iterations = 1;
                s.limits.lead_in = false;
            },
        ),
        exit("kl 5e-4, 2..32", ExitCriterion::Kl, 5e-4, |_| {}),
        exit(
            "kl 5e-4, 2..32, no lead-in (0.6)",
            ExitCriterion::Kl,
            5e-4,
            |s| s.limits.lead_in = false,
        ),
        exit(
            "confidence 0.9, 2..32",
            ExitCriterion::Confidence,
            0.9,
            |_| {},
        ),
        exit(
            "confidence 0.99, 2..32",
            ExitCriterion::Confidence,
            0.99,
            |_| {},
        ),
        exit(
            "confidence 0.9, 1..32",
            ExitCriterion::Confidence,
            0.9,
            |s| s.limits.min_iterations = 1,
        ),
        exit(
            "confidence 0.9, 2..32, prompt exit cosine 1e-2",
            ExitCriterion::Confidence,
            0.9,
            |s| {
                s.limits.prefill_exit = ExitSpec {
                    criterion: ExitCriterion::Cosine,
                    threshold: 1e-2,
                }
            },
        ),
        exit(
            "confidence 0.9, 2..32, prompt exit latent-diff 0.1",
            ExitCriterion::Confidence,
            0.9,
            |s| {
                s.limits.prefill_exit = ExitSpec {
                    criterion: ExitCriterion::LatentDiff,
                    threshold: 0.1,
                }
            },
        ),
        exit(
            "kl 5e-4, 2..32, prompt exit cosine 1e-2",
            ExitCriterion::Kl,
            5e-4,
            |s| {
                s.limits.prefill_exit = ExitSpec {
                    criterion: ExitCriterion::Cosine,
                    threshold: 1e-2,
                }
            },
        ),
        exit(
            "confidence 0.9, 2..32, prompt at 4",
            ExitCriterion::Confidence,
            0.9,
            |s| s.prefill_iterations = Some(4),
        ),
        exit(
            "kl 5e-4, 2..32, prompt at 4",
            ExitCriterion::Kl,
            5e-4,
            |s| s.prefill_iterations = Some(4),
        ),
        exit(
            "confidence 0.99, 2..32, exit in prefill",
            ExitCriterion::Confidence,
            0.99,
            |s| {
                s.limits.exit_in_prefill = true;
            },
        ),
        screened(
            "kl 5e-4, 2..32, screen cosine 1e-2",
            2,
            ExitCriterion::Cosine,
            1e-2,
        ),
        screened(
            "kl 5e-4, 2..32, screen cosine 3e-2",
            2,
            ExitCriterion::Cosine,
            3e-2,
        ),
        screened(
            "kl 5e-4, 2..32, screen cosine 1e-1",
            2,
            ExitCriterion::Cosine,
            1e-1,
        ),
        screened(
            "kl 5e-4, 1..32, screen cosine 1e-2",
            1,
            ExitCriterion::Cosine,
            1e-2,
        ),
        screened(
            "kl 5e-4, 1..32, screen cosine 3e-2",
            1,
            ExitCriterion::Cosine,
            3e-2,
        ),
        screened(
            "kl 5e-4, 1..32, screen latent-diff 0.1",
            1,
            ExitCriterion::LatentDiff,
            0.1,
        ),
        screened(
            "kl 5e-4, 1..32, screen latent-diff 0.3",
            1,
            ExitCriterion::LatentDiff,
            0.3,
        ),
        exit(
            "kl 5e-4, 2..32, automatic check_every",
            ExitCriterion::Kl,
            5e-4,
            |s| s.limits.check_every = 0,
        ),
        exit(
            "kl 5e-4, 2..32, prompt at 32 (authors')",
            ExitCriterion::Kl,
            5e-4,
            |s| s.prefill_iterations = Some(32),
        ),
        exit(
            "kl 5e-4, 2..32, prompt at 8",
            ExitCriterion::Kl,
            5e-4,
            |s| s.prefill_iterations = Some(8),
        ),
        exit(
            "confidence 0.9, 2..32, prompt at 8",
            ExitCriterion::Confidence,
            0.9,
            |s| s.prefill_iterations = Some(8),
        ),
        exit(
            "kl 5e-4, 2..32, check every 2, prompt at 8",
            ExitCriterion::Kl,
            5e-4,
            |s| {
                s.prefill_iterations = Some(8);
                s.limits.check_every = 2;
            },
        ),
        exit(
            "kl 5e-4, 4..32, prompt at 8",
            ExitCriterion::Kl,
            5e-4,
            |s| {
                s.prefill_iterations = Some(8);
                s.limits.min_iterations = 4;
            },
        ),
        exit(
            "cosine 1e-3, 2..32, prompt at 8",
            ExitCriterion::Cosine,
            1e-3,
            |s| s.prefill_iterations = Some(8),
        ),
        exit(
            "kl 5e-4, 2..32, exit in prefill",
            ExitCriterion::Kl,
            5e-4,
            |s| s.limits.exit_in_prefill = true,
        ),
        exit(
            "kl 5e-4, 2..32, check every 2, exit in prefill",
            ExitCriterion::Kl,
            5e-4,
            |s| {
                s.limits.exit_in_prefill = true;
                s.limits.check_every = 2;
            },
        ),
        exit(
            "kl 1e-2, 2..32, exit in prefill",
            ExitCriterion::Kl,
            1e-2,
            |s| s.limits.exit_in_prefill = true,
        ),
        exit(
            "cosine 1e-3, 2..32, exit in prefill",
            ExitCriterion::Cosine,
            1e-3,
            |s| s.limits.exit_in_prefill = true,
        ),
        exit(
            "latent-diff 0.03, 2..32, exit in prefill",
            ExitCriterion::LatentDiff,
            0.03,
            |s| s.limits.exit_in_prefill = true,
        ),
    ]
}
