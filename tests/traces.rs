//! The generation loop (`Session::generate`) against the numpy reference, and
//! properties of per-token compute limits that need no reference.
//!
//! tests/golden_traces/traces.tsv lists cases made by tools/make_traces.py: a
//! random F32 model from the maker (rebuilt here from the same seed and shapes;
//! its FNV-1a hash proves it is the file the reference read), a 9-token prompt
//! prefilled in one chunk, then 12 greedily generated tokens under the case's
//! limits (min/max iterations, exit criterion and threshold, check interval,
//! warm start, KV budget B). The reference chose thresholds with every exit
//! decision and every argmax that matters well away from its edge (see the
//! margins columns), so the trace — each token and the iterations it used —
//! must match exactly.
//!
//! tests/golden_traces/authors.tsv has the same columns (plus
//! `exit_in_prefill`) for traces made by the authors' own code
//! (tools/authors_traces.py) on the same kind of models: full cache and
//! compressed cache, several criteria.

mod common;

use recurrent_depth::Error;
use recurrent_depth::exit::{ExitCriterion, ExitSpec};
use recurrent_depth::generate::{
    AUTO_PREFILL_EXIT, ComputeLimits, GenerateParams, GenerateStats, StopReason, TokenEvent,
};
use recurrent_depth::model::Model;
use recurrent_depth::sampling::SamplingParams;
use recurrent_depth::session::{Session, SessionParams};
use recurrent_depth::testmodel::{self, TestModelSpec};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

fn traces_path(file: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden_traces")
        .join(file)
}

fn tmp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("rd-traces-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

struct Case {
    name: String,
    model: String,
    spec: TestModelSpec,
    limits: ComputeLimits,
    prefill_iterations: usize,
    kv_budget: usize,
    prompt: Vec<u32>,
    tokens: Vec<u32>,
    iterations: Vec<usize>,
    values: Vec<f64>,
    fnv: u64,
}

fn cases(file: &str) -> Vec<Case> {
    use common::{col, list, num};
    common::read_tsv(&traces_path(file))
        .iter()
        .map(|r| Case {
            name: col(r, "name").to_string(),
            model: col(r, "model").to_string(),
            spec: common::spec_from_row(r),
            limits: ComputeLimits {
                min_iterations: num(r, "min_iterations"),
                max_iterations: num(r, "max_iterations"),
                exit: col(r, "exit").parse().unwrap(),
                exit_screen: ExitSpec::default(),
                check_every: num(r, "check_every"),
                // Only the authors' traces have the column: their generation
                // checks exits during the prompt too.
                exit_in_prefill: r.get("exit_in_prefill").is_some_and(|v| v == "1"),
                prefill_exit: ExitSpec::default(),
                warm_start: num::<u32>(r, "warm_start") == 1,
                // Only the reference's traces have the column; the authors'
                // first check may end a token (no lead-in).
                lead_in: r.get("lead_in").is_some_and(|v| v == "1"),
            },
            prefill_iterations: num(r, "prefill_iterations"),
            kv_budget: num(r, "kv_budget"),
            prompt: list(col(r, "prompt")),
            tokens: list(col(r, "tokens")),
            iterations: list(col(r, "iterations")),
            values: list(col(r, "values")),
            fnv: u64::from_str_radix(col(r, "fnv1a64"), 16).unwrap(),
        })
        .collect()
}

/// What the callback saw: (token, iterations, exit value) per token.
type Trace = Vec<(u32, usize, f64)>;

fn run(
    s: &mut Session,
    prompt: &[u32],
    params: &GenerateParams,
) -> Result<(Trace, GenerateStats), Error> {
    let mut trace = Vec::new();
    let stats = s.generate(prompt, params, |ev: &TokenEvent, _| {
        trace.push((ev.token, ev.iterations, ev.exit_value));
        true
    })?;
    Ok((trace, stats))
}

/// How close an exit value must be to the trace's: `|got - want| <=
/// max(rel * |want|, abs)`, `abs` per criterion.
struct ValueTolerance {
    rel: f64,
    abs: fn(ExitCriterion) -> f64,
}

#[test]
fn generation_traces_match_reference() {
    // The reference computes in f64 and the runtime in f32 (logits) and f64
    // (criteria on the host): values agree to rounding.
    check_traces(
        "traces.tsv",
        10,
        ValueTolerance {
            rel: 0.05,
            abs: |_| 5e-5,
        },
    );
}

/// Traces made by the authors' own code (their `generate_with_adaptive_compute`
/// and exit evaluators, `tools/authors_traces.py`) on our test models: the
/// same tokens, the same iterations per token and the same exit values up to
/// their float32 arithmetic (measured against our float64 reference: at most
/// 4e-7 for kl and minp-kl; 5e-6 for entropy-diff, whose entropies they take
/// as `-sum p ln(p + 1e-10)`). On a GPU the logits carry the device's own
/// rounding (sums in another order): entropy-diff, a difference of two
/// entropies of a few nats, then moves by up to about 1e-5 more (measured on
/// lavapipe: 1.05e-5 against a 6.7e-4 value), so its bound is 2e-5 there.
#[test]
fn generation_traces_match_the_authors_code() {
    let tol = if common::on_gpu() {
        ValueTolerance {
            rel: 3e-3,
            abs: |c| match c {
                ExitCriterion::EntropyDiff => 2e-5,
                _ => 1e-6,
            },
        }
    } else {
        ValueTolerance {
            rel: 3e-3,
            abs: |c| match c {
                ExitCriterion::EntropyDiff => 1e-5,
                _ => 1e-6,
            },
        }
    };
    check_traces("authors.tsv", 6, tol);
}

fn check_traces(file: &str, min_cases: usize, tol: ValueTolerance) {
    let all = cases(file);
    assert!(all.len() >= min_cases, "{file} lists too few cases");
    let mut models: BTreeMap<String, Arc<Model>> = BTreeMap::new();
    let mut failures = Vec::new();
    let mut worst_value_err = 0.0f64;
    let mut extra_modes_done = false;
    let mut kinds_done = std::collections::HashSet::new();
    for c in &all {
        // On a GPU (CI runs lavapipe, a software Vulkan device, where one
        // of these generations takes seconds) and under emulation
        // (common::case_subset) one case of each kind runs: each criterion
        // with and without warm start, a check grid, a budget below the
        // iterations and exits in the prompt. The native CPU, and
        // RD_TEST_ALL_CASES=1, run every case.
        let kind = (
            c.limits.exit.criterion,
            c.limits.warm_start,
            c.limits.check_every > 1,
            c.kv_budget < c.limits.max_iterations,
            c.limits.exit_in_prefill,
            c.limits.lead_in,
        );
        if !kinds_done.insert(kind) && common::case_subset() {
            continue;
        }
        let model = models
            .entry(c.model.clone())
            .or_insert_with(|| {
                let path = tmp(&format!("{file}-{}.gguf", c.model));
                testmodel::write(&c.spec, &path).unwrap();
                let bytes = std::fs::read(&path).unwrap();
                assert_eq!(
                    common::fnv1a64(&bytes),
                    c.fnv,
                    "{}: the maker no longer reproduces the file the traces were made from; \
                     rerun the script that made {file} (tools/make_traces.py or tools/authors_traces.py)",
                    c.name
                );
                Arc::new(Model::load(&path, &common::load_params(1)).unwrap())
            })
            .clone();
        // Both places an exit value can be computed: the default for the
        // device (host f64 on the CPU, in the graph on a GPU) and, for the
        // criteria the graph can compute, the other one.
        let mut modes = vec![(None, false, c.limits.lead_in)];
        // In the case subset the two extra modes run for the first case
        // with a criterion on the distribution only (the CPU runs them for every
        // case; they test the exit logic, not the device's arithmetic).
        let extra_modes =
            !common::case_subset() || (!extra_modes_done && c.limits.exit.criterion.needs_logits());
        extra_modes_done |= extra_modes;
        if extra_modes && c.limits.exit.criterion.device_computable() {
            modes.push((Some(!common::on_gpu()), false, c.limits.lead_in));
        }
        // Behind a screen that passes at once, a criterion on the
        // distribution must decide exactly as without one: the same checks,
        // with the coda in a graph of its own after the state is compared
        // (and the lead-in check in a graph of its own, not fused).
        if extra_modes && c.limits.exit.criterion.needs_logits() {
            modes.push((None, true, c.limits.lead_in));
        }
        for (exit_on_device, screened, lead_in) in modes {
            let mut limits = c.limits;
            limits.lead_in = lead_in;
            if screened {
                limits.exit_screen =
                    ExitSpec::with_threshold(ExitCriterion::Cosine, f64::INFINITY).unwrap();
            }
            let params = SessionParams {
                n_ctx: 64,
                kv_budget: c.kv_budget,
                exit_on_device,
                ..SessionParams::default()
            };
            let mut s = Session::new(Arc::clone(&model), &params).unwrap();
            let gp = GenerateParams {
                max_tokens: c.tokens.len(),
                limits,
                prefill_iterations: Some(c.prefill_iterations),
                sampling: SamplingParams::greedy(),
                ..GenerateParams::default()
            };
            let (trace, stats) = run(&mut s, &c.prompt, &gp).unwrap();
            let tokens: Vec<u32> = trace.iter().map(|t| t.0).collect();
            let iterations: Vec<usize> = trace.iter().map(|t| t.1).collect();
            println!(
                "{:32} tokens {tokens:?}\n{:32} iters  {iterations:?} (exit on device: {exit_on_device:?}, screened: {screened}, lead-in: {lead_in})",
                c.name, ""
            );
            if tokens != c.tokens || iterations != c.iterations {
                failures.push(format!(
                "{} (exit on device {exit_on_device:?}, screened {screened}, lead-in {lead_in}): expected tokens {:?} iterations {:?}\n{:>w$} got      tokens {tokens:?} iterations {iterations:?}",
                c.name,
                c.tokens,
                c.iterations,
                "",
                w = c.name.len() + 1
            ));
                continue;
            }
            assert_eq!(stats.tokens, c.tokens.len());
            assert_eq!(stats.stop, StopReason::MaxTokens);
            // With exits in the prompt it ran the steps of the first token's
            // distribution; without, its fixed count.
            let prefill = if c.limits.exit_in_prefill {
                iterations[0]
            } else {
                c.prefill_iterations
            };
            assert_eq!(stats.prefill_iterations, prefill, "{}", c.name);
            let mean = iterations.iter().sum::<usize>() as f64 / iterations.len() as f64;
            assert!(
                (stats.mean_iterations - mean).abs() < 1e-9,
                "{}: mean_iterations",
                c.name
            );
            // The exit value of each token's last check: the same criterion
            // value the reference computed, up to f32-vs-f64 rounding.
            for (i, (&(_, _, got), &want)) in trace.iter().zip(&c.values).enumerate() {
                if want.is_nan() || got.is_nan() {
                    if want.is_nan() != got.is_nan() {
                        failures.push(format!(
                            "{} token {i}: exit value {got} vs reference {want}",
                            c.name
                        ));
                    }
                    continue;
                }
                let err = (got - want).abs();
                let allowed = (tol.rel * want.abs()).max((tol.abs)(c.limits.exit.criterion));
                worst_value_err = worst_value_err.max(err / allowed);
                if err > allowed {
                    failures.push(format!(
                        "{} token {i}: exit value {got} vs reference {want}",
                        c.name
                    ));
                }
            }
        }
    }
    println!(
        "{file}: worst exit-value difference, as a fraction of its tolerance: {worst_value_err:.3}"
    );
    assert!(
        failures.is_empty(),
        "trace mismatches:\n{}",
        failures.join("\n")
    );
}

// ---------------------------------------------------------------------------
// Properties (no reference needed)
// ---------------------------------------------------------------------------

const PROMPT: [u32; 9] = [1, 11, 35, 73, 125, 191, 15, 109, 217];

fn small_model(name: &str) -> Arc<Model> {
    let spec = TestModelSpec {
        seed: 21,
        ..TestModelSpec::default()
    };
    let path = tmp(&format!("prop-{name}.gguf"));
    testmodel::write(&spec, &path).unwrap();
    Arc::new(Model::load(&path, &common::load_params(1)).unwrap())
}

fn session(model: &Arc<Model>, kv_budget: usize, n_ctx: usize) -> Session {
    let params = SessionParams {
        n_ctx,
        kv_budget,
        ..SessionParams::default()
    };
    Session::new(Arc::clone(model), &params).unwrap()
}

fn limits(min: usize, max: usize, exit: &str, check_every: usize) -> ComputeLimits {
    ComputeLimits {
        min_iterations: min,
        max_iterations: max,
        exit: exit.parse().unwrap(),
        exit_screen: ExitSpec::default(),
        check_every,
        exit_in_prefill: false,
        prefill_exit: ExitSpec::default(),
        warm_start: false,
        lead_in: true,
    }
}

fn params(l: ComputeLimits, max_tokens: usize) -> GenerateParams {
    GenerateParams {
        max_tokens,
        limits: l,
        prefill_iterations: Some(4),
        sampling: SamplingParams::greedy(),
        ..GenerateParams::default()
    }
}

/// Iterations of the generated tokens after the first (which reports the prefill's).
fn decode_iterations(t: &Trace) -> Vec<usize> {
    t.iter().skip(1).map(|e| e.1).collect()
}

#[test]
fn zero_threshold_never_exits_before_max() {
    let m = small_model("zero");
    for exit in [
        "kl:0",
        "minp-kl:0",
        "entropy-diff:0",
        "latent-diff:0",
        "cosine:0",
        "argmax-stability:inf",
        "confidence:inf",
    ] {
        for warm in [false, true] {
            let mut s = session(&m, 3, 64);
            let l = ComputeLimits {
                warm_start: warm,
                ..limits(1, 7, exit, 1)
            };
            let (t, _) = run(&mut s, &PROMPT, &params(l, 8)).unwrap();
            assert_eq!(decode_iterations(&t), vec![7; 7], "{exit} warm {warm}");
        }
    }
}

/// A threshold every value passes: without the lead-in a token exits at its
/// first check, `min`; with it (the default) at its second, `min + every`
/// (or the maximum), the first check having run in the same graph. The
/// exit step's logits are those of a fixed budget of that many steps,
/// wherever the check's statistics are computed.
#[test]
fn infinite_threshold_exits_at_the_first_allowed_check() {
    let m = small_model("inf");
    // The case subset (a GPU, emulation): two criteria, two grids, the
    // device's default place for the statistics.
    let subset = common::case_subset();
    let exits: &[&str] = if subset {
        &["kl", "cosine"]
    } else {
        &["kl", "minp-kl", "entropy-diff", "latent-diff", "cosine"]
    };
    let grids: &[(usize, usize, usize)] = if subset {
        &[(3, 2, 12), (1, 16, 30)]
    } else {
        &[(1, 1, 12), (3, 2, 12), (5, 4, 12), (2, 3, 4), (1, 16, 30)]
    };
    let modes: &[(bool, Option<bool>)] = if subset {
        &[(false, None), (true, None)]
    } else {
        &[(false, None), (true, None), (true, Some(true))]
    };
    for &exit in exits {
        for &(min, every, max) in grids {
            for &(lead_in, on_device) in modes {
                let l = ComputeLimits {
                    exit: ExitSpec::with_threshold(
                        exit.parse::<ExitCriterion>().unwrap(),
                        f64::INFINITY,
                    )
                    .unwrap(),
                    lead_in,
                    ..limits(min, max, "none", every)
                };
                let want = if lead_in { (min + every).min(max) } else { min };
                let sp = SessionParams {
                    n_ctx: 64,
                    kv_budget: 2,
                    exit_on_device: on_device,
                    ..SessionParams::default()
                };
                let mut s = Session::new(Arc::clone(&m), &sp).unwrap();
                let (t, _) = run(&mut s, &PROMPT, &params(l, 6)).unwrap();
                let what = format!("{exit} min {min} every {every} lead-in {lead_in}");
                assert_eq!(decode_iterations(&t), vec![want; 5], "{what}");
                let mut f = session(&m, 2, 64);
                let fixed = GenerateParams {
                    prefill_iterations: Some(4),
                    ..params(ComputeLimits::fixed(want), 6)
                };
                let (tf, _) = run(&mut f, &PROMPT, &fixed).unwrap();
                let toks = |t: &Trace| t.iter().skip(1).map(|e| e.0).collect::<Vec<_>>();
                assert_eq!(toks(&t), toks(&tf), "{what}");
                let d = s
                    .logits()
                    .iter()
                    .zip(f.logits())
                    .map(|(a, b)| (a - b).abs())
                    .fold(0f32, f32::max);
                assert!(d < 1e-4, "{what}: logits differ from fixed {want} by {d}");
            }
        }
    }
}

/// Confidence needs no previous check: at threshold 0 every token exits at
/// its first check, `min_iterations`, whatever the check interval.
#[test]
fn zero_confidence_exits_at_the_first_check() {
    let m = small_model("conf0");
    for (min, every) in [(1, 1), (3, 2), (5, 4)] {
        let mut s = session(&m, 2, 64);
        let (t, _) = run(
            &mut s,
            &PROMPT,
            &params(limits(min, 12, "confidence:0", every), 6),
        )
        .unwrap();
        assert_eq!(
            decode_iterations(&t),
            vec![min; 5],
            "min {min} every {every}"
        );
        // Each reported value is the exit check's top probability.
        for e in t.iter().skip(1) {
            assert!(e.2 > 0.0 && e.2 <= 1.0, "{:?}", e);
        }
    }
}

/// Without a prompt budget of the caller's (`prefill_iterations: None`) and
/// with an exit criterion for the tokens, the prompt runs up to the model's
/// default count and stops when its states settle: exactly the prompt's
/// exit `AUTO_PREFILL_EXIT` at that budget. A budget of the caller's, exits
/// in the prompt or no criterion keep the prompt at its fixed count.
#[test]
fn an_automatic_prompt_budget_stops_when_the_prompt_settles() {
    let m = small_model("auto-prompt");
    let prompt: Vec<u32> = (0..12).map(|i| (i * 37 + 5) % 256).collect();
    let default = m.config().default_iterations;
    let mut saved = 0;
    // The case subset (a GPU, emulation) runs the first criterion: the rest
    // is exit logic, which the native CPU runs for all three.
    let n_exits = if common::case_subset() { 1 } else { 3 };
    let exits = [(2, "kl:1e-3"), (1, "confidence:0.9"), (2, "cosine:1e-3")];
    for &(min, exit) in exits.iter().take(n_exits) {
        for b in [1, 4] {
            let l = limits(min, 16, exit, 1);
            let auto = GenerateParams {
                prefill_iterations: None,
                ..params(l, 6)
            };
            let (t, stats) = run(&mut session(&m, b, 64), &prompt, &auto).unwrap();
            let explicit = GenerateParams {
                prefill_iterations: Some(default),
                limits: ComputeLimits {
                    prefill_exit: AUTO_PREFILL_EXIT,
                    ..l
                },
                ..auto.clone()
            };
            let (t2, stats2) = run(&mut session(&m, b, 64), &prompt, &explicit).unwrap();
            let bits = |t: &Trace| {
                t.iter()
                    .map(|e| (e.0, e.1, e.2.to_bits()))
                    .collect::<Vec<_>>()
            };
            assert_eq!(bits(&t), bits(&t2), "{exit} B={b}");
            assert_eq!(stats.prefill_iterations, stats2.prefill_iterations);
            let k = stats.prefill_iterations;
            assert!((min..=default).contains(&k), "{exit}: prompt ran {k}");
            saved += default - k;
            // The caller's budget: the prompt runs it, whatever settles.
            let fixed = GenerateParams {
                prefill_iterations: Some(default),
                ..auto.clone()
            };
            let (_, stats3) = run(&mut session(&m, b, 64), &prompt, &fixed).unwrap();
            assert_eq!(stats3.prefill_iterations, default, "{exit} B={b}");
        }
    }
    assert!(saved > 0, "no automatic prompt stopped before its budget");
    // No criterion: the prompt runs the tokens' maximum. Exits in the
    // prompt (the authors' behaviour): the criterion decides, no prompt exit.
    let none = GenerateParams {
        prefill_iterations: None,
        ..params(limits(3, 5, "none", 1), 2)
    };
    let (_, stats) = run(&mut session(&m, 2, 64), &prompt, &none).unwrap();
    assert_eq!(stats.prefill_iterations, 5);
    let mut l = limits(2, 16, "kl:0", 1);
    l.exit_in_prefill = true;
    assert_eq!(l.prompt_exit(true), ExitSpec::default());
    let inside = GenerateParams {
        prefill_iterations: None,
        ..params(l, 2)
    };
    let (_, stats) = run(&mut session(&m, 2, 64), &prompt, &inside).unwrap();
    assert_eq!(stats.prefill_iterations, default, "kl:0 never exits");
    // The learned gate and a prompt exit of the caller's keep their own.
    assert_eq!(
        limits(1, 8, "gate:0.9", 1).prompt_exit(true),
        ExitSpec::default()
    );
    let mut l = limits(1, 8, "kl", 1);
    l.prefill_exit = "latent-diff:0.1".parse().unwrap();
    assert_eq!(l.prompt_exit(true), l.prefill_exit);
    assert_eq!(
        limits(1, 8, "kl", 1).prompt_exit(false),
        ExitSpec::default()
    );
    assert_eq!(limits(1, 8, "kl", 1).prompt_exit(true), AUTO_PREFILL_EXIT);
}

/// The prompt's exit stops the prompt at the first step from `min` where
/// every position's state has settled; what follows is exactly a prompt run
/// at that many iterations.
#[test]
fn prefill_exit_equals_a_prompt_of_the_iterations_it_chose() {
    let m = small_model("prefill-exit");
    let prompt: Vec<u32> = (0..12).map(|i| (i * 37 + 5) % 256).collect();
    let mut chosen = Vec::new();
    // The case subset (a GPU, emulation) runs one threshold per criterion.
    let cases = [
        ("cosine:1e-2", 2, 16),
        ("latent-diff:0.1", 2, 12),
        ("cosine:1e-3", 1, 16),
        ("latent-diff:0.03", 3, 16),
    ];
    let n_cases = if common::case_subset() {
        2
    } else {
        cases.len()
    };
    for &(pre, min, budget) in cases.iter().take(n_cases) {
        for b in [1, 4] {
            let mut l = limits(min, 16, "kl:1e-3", 1);
            l.prefill_exit = pre.parse().unwrap();
            let p = GenerateParams {
                prefill_iterations: Some(budget),
                ..params(l, 6)
            };
            let mut s = session(&m, b, 64);
            let (t, stats) = run(&mut s, &prompt, &p).unwrap();
            let k = stats.prefill_iterations;
            assert!((min..=budget).contains(&k), "{pre}: prompt ran {k}");
            assert_eq!(
                t[0].1, k,
                "{pre}: the first token reports the prompt's iterations"
            );
            chosen.push(k);
            // The same prompt at a fixed k, no prompt exit: the same tokens,
            // iterations and exit values.
            let fixed = GenerateParams {
                prefill_iterations: Some(k),
                limits: ComputeLimits {
                    prefill_exit: ExitSpec::default(),
                    ..l
                },
                ..p.clone()
            };
            let mut s2 = session(&m, b, 64);
            let (t2, _) = run(&mut s2, &prompt, &fixed).unwrap();
            let strip = |t: &Trace| t.iter().skip(1).map(|e| (e.0, e.1)).collect::<Vec<_>>();
            assert_eq!(strip(&t), strip(&t2), "{pre} B={b} k={k}");
            assert_eq!(t[0].0, t2[0].0, "{pre} B={b} k={k}");
        }
    }
    // The thresholds are not all on one side of every prompt's values.
    assert!(
        chosen.iter().any(|&k| k < 12),
        "no prompt exited early: {chosen:?}"
    );
    // Threshold 0 never passes (the prompt runs its budget); +inf passes at
    // the first check that may pass: `min + 1` after the lead-in (`min`
    // without it; a latent criterion's first check is 1.0).
    for (pre, lead_in, want) in [
        ("cosine:0", true, 9),
        ("latent-diff:inf", true, 4),
        ("latent-diff:inf", false, 3),
    ] {
        let mut l = limits(3, 16, "none", 1);
        l.lead_in = lead_in;
        l.prefill_exit = pre.parse().unwrap();
        let p = GenerateParams {
            prefill_iterations: Some(9),
            ..params(l, 3)
        };
        let mut s = session(&m, 2, 64);
        let (_, stats) = run(&mut s, &prompt, &p).unwrap();
        assert_eq!(stats.prefill_iterations, want, "{pre}");
    }
    // A prompt longer than the batch: each chunk decides on its own
    // positions, and every chunk's exit stays within [min, budget].
    for (pre, lo, hi) in [
        ("latent-diff:inf", 4, 4),
        ("cosine:0", 9, 9),
        ("cosine:1e-2", 3, 9),
    ] {
        let mut l = limits(3, 16, "kl:1e-3", 1);
        l.prefill_exit = pre.parse().unwrap();
        let p = GenerateParams {
            prefill_iterations: Some(9),
            ..params(l, 3)
        };
        let sp = SessionParams {
            n_ctx: 64,
            n_batch: 5,
            kv_budget: 4,
            ..SessionParams::default()
        };
        let mut s = Session::new(Arc::clone(&m), &sp).unwrap();
        let (t, stats) = run(&mut s, &prompt, &p).unwrap();
        assert!(
            (lo..=hi).contains(&stats.prefill_iterations),
            "{pre} chunked"
        );
        assert_eq!(t.len(), 3);
    }
    // A one-token prompt decides on its one position (at its second check,
    // after the lead-in; at its first without).
    for (lead_in, want) in [(true, 2), (false, 1)] {
        let mut l = limits(1, 16, "none", 1);
        l.prefill_exit = "cosine:inf".parse().unwrap();
        l.lead_in = lead_in;
        let mut s = session(&m, 2, 64);
        let (_, stats) = run(&mut s, &prompt[..1], &params(l, 2)).unwrap();
        assert_eq!(stats.prefill_iterations, want, "lead-in {lead_in}");
    }
}

#[test]
fn iterations_stay_on_the_check_grid() {
    let m = small_model("grid");
    let configs = [
        (1, 11, "kl:1e-2", 3),
        (2, 11, "kl:1e-3", 3),
        (3, 13, "minp-kl:1e-3", 2),
        (2, 9, "entropy-diff:1e-2", 4),
        (2, 16, "latent-diff:0.05", 5),
        (1, 10, "cosine:1e-3", 3),
        (2, 13, "argmax-stability:2", 2),
        (1, 12, "confidence:0.5", 3),
        (4, 4, "kl:1e-3", 1),
    ];
    for (b, &(min, max, exit, every)) in [1, 4]
        .iter()
        .flat_map(|b| configs.iter().map(move |c| (*b, c)))
    {
        let mut s = session(&m, b, 64);
        let l = limits(min, max, exit, every);
        let (t, stats) = run(&mut s, &PROMPT, &params(l, 10)).unwrap();
        assert_eq!(t.len(), 10);
        assert_eq!(
            t[0].1, 4,
            "the first token reports the prefill's iterations"
        );
        for it in decode_iterations(&t) {
            assert!(
                (min..=max).contains(&it),
                "{exit} B={b}: {it} outside [{min}, {max}]"
            );
            assert!(
                it == max || (it - min) % every == 0,
                "{exit} B={b}: {it} is not a check step (min {min}, every {every}, max {max})"
            );
        }
        assert_eq!(stats.kv_bytes, s.kv_bytes());
    }
}

#[test]
fn a_closed_screen_runs_every_token_to_max() {
    // A screen of threshold 0 never passes (a distance is never below 0):
    // every token runs `max` steps and ends in the same logits as a fixed
    // budget, so greedy tokens are those of `fixed(max)`.
    let m = small_model("screen-closed");
    for (b, min, max, every) in [(1, 1, 7, 1), (3, 2, 9, 2), (2, 3, 20, 1)] {
        let mut s = session(&m, b, 64);
        let (want, _) = run(&mut s, &PROMPT, &params(ComputeLimits::fixed(max), 8)).unwrap();
        for screen in ["cosine:0", "latent-diff:0"] {
            let l = ComputeLimits {
                exit_screen: screen.parse().unwrap(),
                ..limits(min, max, "kl:1e-1", every)
            };
            let mut s = session(&m, b, 64);
            let (t, _) = run(&mut s, &PROMPT, &params(l, 8)).unwrap();
            assert_eq!(decode_iterations(&t), vec![max; 7], "{screen} B={b}");
            let tokens = |t: &Trace| t.iter().map(|e| e.0).collect::<Vec<_>>();
            assert_eq!(tokens(&t), tokens(&want), "{screen} B={b}");
            // The criterion never ran: no value to report.
            assert!(t.iter().skip(1).all(|e| e.2.is_nan()), "{screen} B={b}");
        }
    }
}

#[test]
fn a_screen_only_delays_the_first_exit() {
    // Screened, the first decoded token (same prompt, same cache) can only
    // exit where the unscreened criterion could: at a check after its
    // screen passed, never before the unscreened exit and never before the
    // second check (the screen has nothing to compare at the first).
    let m = small_model("screen-delay");
    let (mut early, mut later) = (0, 0);
    for (min, max, exit, every) in [
        (1, 16, "kl:1e-2", 1),
        (2, 16, "kl:1e-3", 2),
        (1, 12, "entropy-diff:1e-2", 1),
        (2, 14, "argmax-stability:2", 1),
    ] {
        for screen in [
            "cosine:1e-2",
            "cosine:1e-1",
            "latent-diff:0.3",
            "latent-diff:1",
        ] {
            let mut s = session(&m, 2, 64);
            let (plain, _) =
                run(&mut s, &PROMPT, &params(limits(min, max, exit, every), 3)).unwrap();
            let l = ComputeLimits {
                exit_screen: screen.parse().unwrap(),
                ..limits(min, max, exit, every)
            };
            let mut s = session(&m, 2, 64);
            let (t, _) = run(&mut s, &PROMPT, &params(l, 3)).unwrap();
            let (got, unscreened) = (t[1].1, plain[1].1);
            early += usize::from(got < max);
            later += usize::from(got > unscreened);
            assert!(
                got >= unscreened && got >= (min + every).min(max),
                "{exit} {screen}: exit at {got}, unscreened {unscreened}, min {min} every {every}"
            );
            for it in decode_iterations(&t) {
                assert!((min..=max).contains(&it), "{exit} {screen}: {it}");
                assert!(
                    it == max || (it - min) % every == 0,
                    "{exit} {screen}: {it}"
                );
            }
        }
    }
    // The cases are live: screens pass, and some exits come later.
    assert!(early > 0 && later > 0, "early {early}, later {later}");
}

#[test]
fn budget_one_memory_does_not_grow_with_iterations() {
    let m = small_model("budget");
    let mut sizes = Vec::new();
    for max in [4, 64] {
        let mut s = session(&m, 1, 64);
        let before = s.kv_bytes();
        let (_, stats) = run(&mut s, &PROMPT, &params(ComputeLimits::fixed(max), 4)).unwrap();
        assert_eq!(s.kv_bytes(), before);
        assert_eq!(stats.kv_bytes, before);
        sizes.push(before);
    }
    assert_eq!(sizes[0], sizes[1]);
    // A larger budget does cost memory (the measurement is live).
    assert!(session(&m, 8, 64).kv_bytes() > sizes[0]);
}

fn invalid<T: std::fmt::Debug>(r: Result<T, Error>, what: &str) {
    match r {
        Err(Error::InvalidArgument(_)) => {}
        other => panic!("{what}: expected InvalidArgument, got {other:?}"),
    }
}

#[test]
fn invalid_limits_are_rejected() {
    let m = small_model("invalid");
    let mut s = session(&m, 2, 64);
    let ok = limits(2, 8, "kl:1e-3", 1);
    let bad = [
        (
            "a screen that is not latent",
            ComputeLimits {
                exit_screen: "entropy-diff".parse().unwrap(),
                ..ok
            },
        ),
        (
            "a screen before a latent criterion",
            ComputeLimits {
                exit_screen: "cosine".parse().unwrap(),
                ..limits(2, 8, "latent-diff", 1)
            },
        ),
        (
            "a screen without a criterion",
            ComputeLimits {
                exit_screen: "latent-diff".parse().unwrap(),
                ..limits(2, 8, "none", 1)
            },
        ),
        (
            "a prompt exit that is not latent",
            ComputeLimits {
                prefill_exit: "kl".parse().unwrap(),
                ..ok
            },
        ),
        (
            "a prompt exit with exit_in_prefill",
            ComputeLimits {
                prefill_exit: "cosine".parse().unwrap(),
                exit_in_prefill: true,
                ..ok
            },
        ),
        (
            "a prompt exit with a negative threshold",
            ComputeLimits {
                prefill_exit: ExitSpec {
                    criterion: ExitCriterion::Cosine,
                    threshold: -1.0,
                },
                ..ok
            },
        ),
        (
            "min > max",
            ComputeLimits {
                min_iterations: 9,
                ..ok
            },
        ),
        (
            "max = 0",
            ComputeLimits {
                min_iterations: 0,
                max_iterations: 0,
                ..ok
            },
        ),
        (
            "min = 0",
            ComputeLimits {
                min_iterations: 0,
                ..ok
            },
        ),
        (
            "max too large",
            ComputeLimits {
                max_iterations: 1 << 20,
                ..ok
            },
        ),
        (
            "NaN threshold",
            ComputeLimits {
                exit: ExitSpec {
                    criterion: ExitCriterion::Kl,
                    threshold: f64::NAN,
                },
                ..ok
            },
        ),
        (
            "negative threshold",
            ComputeLimits {
                exit: ExitSpec {
                    criterion: ExitCriterion::Kl,
                    threshold: -1e-3,
                },
                ..ok
            },
        ),
    ];
    for (what, l) in bad {
        invalid(run(&mut s, &PROMPT, &params(l, 3)), what);
        assert_eq!(s.n_past(), 0, "{what}: nothing was evaluated");
    }
    invalid(
        ExitSpec::with_threshold(ExitCriterion::Kl, f64::NAN),
        "with_threshold NaN",
    );
    invalid("kl:nan".parse::<ExitSpec>(), "kl:nan");
    invalid("kl:-1".parse::<ExitSpec>(), "kl:-1");
    invalid(
        run(
            &mut s,
            &PROMPT,
            &GenerateParams {
                prefill_iterations: Some(0),
                ..params(ok, 3)
            },
        ),
        "prefill_iterations 0",
    );
    invalid(
        run(&mut s, &[], &params(ok, 3)),
        "empty prompt, empty cache",
    );
    invalid(
        run(&mut s, &[100_000], &params(ok, 3)),
        "token out of range",
    );
    invalid(
        run(
            &mut s,
            &PROMPT,
            &GenerateParams {
                stop_tokens: vec![100_000],
                ..params(ok, 3)
            },
        ),
        "stop token out of range",
    );
    assert_eq!(s.n_past(), 0, "nothing was evaluated");
    // A callback that makes the limits invalid stops the call with an error.
    let r = s.generate(&PROMPT, &params(ok, 4), |_, l| {
        l.min_iterations = l.max_iterations + 1;
        true
    });
    invalid(r, "callback set min > max");
    // The session still works.
    s.reset();
    let (t, _) = run(&mut s, &PROMPT, &params(ok, 3)).unwrap();
    assert_eq!(t.len(), 3);
    // B = 0 is rejected when the session is made.
    let p = SessionParams {
        n_ctx: 64,
        kv_budget: 0,
        ..SessionParams::default()
    };
    invalid(Session::new(Arc::clone(&m), &p).map(|_| ()), "kv_budget 0");
}

#[test]
fn sampling_seed_determines_the_tokens() {
    let m = small_model("seed");
    let sample = |seed: u64| -> Vec<u32> {
        let mut s = session(&m, 2, 64);
        let gp = GenerateParams {
            sampling: SamplingParams {
                greedy: false,
                temperature: 1.0,
                seed,
                ..SamplingParams::default()
            },
            ..params(limits(2, 6, "kl:1e-2", 1), 16)
        };
        run(&mut s, &PROMPT, &gp)
            .unwrap()
            .0
            .iter()
            .map(|t| t.0)
            .collect()
    };
    let a = sample(1);
    assert_eq!(a, sample(1), "same seed, same tokens");
    let others: Vec<Vec<u32>> = (2..5).map(sample).collect();
    assert!(
        others.iter().all(|o| *o != a),
        "different seeds gave the same 16 tokens: {a:?} {others:?}"
    );
}

#[test]
fn callback_can_stop_and_change_limits() {
    let m = small_model("callback");
    // Returning false stops after that token.
    let mut s = session(&m, 2, 64);
    let mut seen = Vec::new();
    let stats = s
        .generate(&PROMPT, &params(ComputeLimits::fixed(3), 10), |ev, _| {
            seen.push(ev.index);
            ev.index < 2
        })
        .unwrap();
    assert_eq!(seen, vec![0, 1, 2]);
    assert_eq!(stats.tokens, 3);
    assert_eq!(stats.stop, StopReason::Callback);
    // Only tokens 0 and 1 were fed back: the prompt plus two positions.
    assert_eq!(s.n_past(), PROMPT.len() + 2);

    // Changing max_iterations takes effect from the next token on.
    let mut s = session(&m, 2, 64);
    let mut its = Vec::new();
    s.generate(&PROMPT, &params(limits(1, 8, "none", 1), 9), |ev, l| {
        its.push(ev.iterations);
        match ev.index {
            0 => l.max_iterations = 3,
            4 => l.max_iterations = 5,
            _ => {}
        }
        true
    })
    .unwrap();
    assert_eq!(its, vec![4, 3, 3, 3, 3, 5, 5, 5, 5]);

    // A stop token is reported, then generation ends.
    let mut s = session(&m, 2, 64);
    let (t, _) = run(&mut s, &PROMPT, &params(ComputeLimits::fixed(3), 6)).unwrap();
    let stop = t[2].0;
    let mut s = session(&m, 2, 64);
    let gp = GenerateParams {
        stop_tokens: vec![stop],
        ..params(ComputeLimits::fixed(3), 6)
    };
    let (t2, stats) = run(&mut s, &PROMPT, &gp).unwrap();
    let first = t.iter().position(|e| e.0 == stop).unwrap();
    assert_eq!(t2.len(), first + 1);
    assert_eq!(stats.stop, StopReason::StopToken);
}

#[test]
fn context_full_then_reset() {
    let m = small_model("ctx");
    let mut s = session(&m, 2, 16);
    let gp = params(limits(2, 6, "kl:1e-2", 1), 12);
    // 9 prompt tokens leave room for 7 evaluated tokens, so 8 are sampled and
    // the last one ends the generation (it is reported as the last).
    let mut lasts = Vec::new();
    let stats = s
        .generate(&PROMPT, &gp, |ev, _| {
            lasts.push(ev.last);
            true
        })
        .unwrap();
    assert_eq!(stats.stop, StopReason::ContextFull);
    assert_eq!(stats.tokens, 8);
    assert_eq!(s.n_past(), 16);
    assert_eq!(lasts.iter().filter(|&&l| l).count(), 1);
    assert_eq!(lasts.last(), Some(&true));
    // Nothing more fits, but the last logits can still be sampled from once.
    let (t, stats) = run(&mut s, &[], &gp).unwrap();
    assert_eq!((t.len(), stats.stop), (1, StopReason::ContextFull));
    match run(&mut s, &PROMPT[..1], &gp) {
        Err(Error::ContextFull { needed, n_ctx }) => {
            assert_eq!((needed, n_ctx), (17, 16));
        }
        other => panic!("expected ContextFull, got {other:?}"),
    }
    // A prompt that alone is too long.
    s.reset();
    let long: Vec<u32> = (0..17).collect();
    assert!(matches!(
        run(&mut s, &long, &gp),
        Err(Error::ContextFull { .. })
    ));
    // After reset the session works and agrees with a fresh one.
    s.reset();
    let short = params(limits(2, 6, "kl:1e-2", 1), 5);
    let (t, _) = run(&mut s, &PROMPT, &short).unwrap();
    let (fresh, _) = run(&mut session(&m, 2, 16), &PROMPT, &short).unwrap();
    assert_eq!(t.len(), 5);
    assert_eq!(
        t.iter().map(|e| (e.0, e.1)).collect::<Vec<_>>(),
        fresh.iter().map(|e| (e.0, e.1)).collect::<Vec<_>>()
    );
}

#[test]
fn automatic_check_every_follows_the_check_cost() {
    let m = small_model("auto-every");
    let c = m.check_cost_in_steps();
    assert!(c > 0.0 && c.is_finite(), "check cost {c}");
    let kl = limits(2, 20, "kl:1e-2", 0);
    let t = m.config().default_iterations.clamp(2, 20) as f64;
    let want = ((2.0 * c * t).sqrt().round() as usize).clamp(1, 8);
    assert_eq!(kl.resolve_check_every(&m).check_every, want);
    // Latent criteria check for free; explicit values are kept.
    assert_eq!(
        limits(2, 20, "cosine:1e-3", 0)
            .resolve_check_every(&m)
            .check_every,
        1
    );
    assert_eq!(
        limits(2, 20, "kl:1e-2", 3)
            .resolve_check_every(&m)
            .check_every,
        3
    );
    // Generated tokens stop on that grid (or at the maximum).
    let mut s = session(&m, 2, 64);
    let (trace, _) = run(&mut s, &PROMPT, &params(kl, 8)).unwrap();
    for &(_, it, _) in &trace[1..] {
        assert!(
            it == 20 || (it >= 2 && (it - 2) % want == 0),
            "{it} iterations: not on the grid 2 + {want}j"
        );
    }
}
