//! Self-speculative decoding against plain decoding, same session settings,
//! measured side by side in one run (alternating, median of
//! `RD_BENCH_REPS`, default 3): tokens/s of greedy generation at r = 8, 16
//! and 32 with B = r (where speculation is exact), for several draft lengths
//! and draft iteration counts, on the bundled demo model and on a mid-size
//! random model (d = 1024, 2/4/2 blocks, Q8_0, made by the test-model
//! maker). Prints the ratio to plain decoding, the acceptance rate and the
//! tokens per verification pass; docs/performance.md records results.
//!
//! Environment: `RD_BENCH_THREADS` (default 2), `RD_BENCH_TOKENS` (default
//! 64), `RD_BENCH_ONLY` (a substring of the model name: `demo`, `random`),
//! `RD_BENCH_DEVICE` (any `rd --device` form, default cpu), `RD_BENCH_DRAFTS`
//! (the draft settings to try, `K:D[a],...`; `a` for adaptive).

use recurrent_depth::generate::{ComputeLimits, DraftParams, GenerateParams, GenerateStats};
use recurrent_depth::gguf::GgmlType;
use recurrent_depth::model::{BackendKind, LoadParams, Model};
use recurrent_depth::session::{Session, SessionParams};
use recurrent_depth::testmodel::{self, TestModelSpec};
use recurrent_depth::tokenizer::Tokenizer;
use std::path::Path;
use std::sync::Arc;

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn load_params() -> LoadParams {
    LoadParams {
        backend: std::env::var("RD_BENCH_DEVICE")
            .map(|d| d.parse().expect("RD_BENCH_DEVICE"))
            .unwrap_or(BackendKind::Cpu),
        n_threads: env_or("RD_BENCH_THREADS", 2),
        ..LoadParams::default()
    }
}

fn random_model() -> Arc<Model> {
    let path = std::env::temp_dir().join("rd-bench-speculative.gguf");
    let spec = TestModelSpec {
        seed: 21,
        n_embd: 1024,
        n_ff: 2816,
        n_head: 16,
        n_head_kv: 16,
        n_vocab: 8192,
        n_ctx: 1024,
        n_prelude: 2,
        n_core: 4,
        n_coda: 2,
        weight_type: GgmlType::Q8_0,
        default_iterations: 32,
        ..TestModelSpec::default()
    };
    testmodel::write(&spec, &path).expect("write bench model");
    let m = Model::load(&path, &load_params()).expect("load");
    let _ = std::fs::remove_file(&path);
    Arc::new(m)
}

fn demo_model() -> (Arc<Model>, Vec<u32>) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/huginn-demo-addition.gguf");
    let m = Model::load(&path, &load_params()).expect("load demo model");
    let tok = Tokenizer::from_gguf(m.gguf()).expect("tokenizer");
    // Generation runs past the answer (no stop tokens) to the context's end.
    let prompt = tok.encode("31415+27182=", true, false).expect("prompt");
    (Arc::new(m), prompt)
}

/// The draft settings tried: `(tokens, iterations, adaptive)`. The default
/// grid, or `RD_BENCH_DRAFTS`: comma-separated `K:D`, with a trailing `a`
/// for adaptive (`4:8,8:8a`).
fn draft_grid() -> Vec<(usize, usize, bool)> {
    let Ok(spec) = std::env::var("RD_BENCH_DRAFTS") else {
        return vec![
            (2, 2, false),
            (4, 2, false),
            (4, 4, false),
            (6, 4, false),
            (4, 8, false),
            (8, 4, true),
        ];
    };
    spec.split(',')
        .map(|item| {
            let item = item.trim();
            let (item, adaptive) = match item.strip_suffix('a') {
                Some(rest) => (rest, true),
                None => (item, false),
            };
            let (k, d) = item.split_once(':').expect("RD_BENCH_DRAFTS: K:D[a],...");
            (
                k.parse().expect("RD_BENCH_DRAFTS: draft tokens"),
                d.parse().expect("RD_BENCH_DRAFTS: draft iterations"),
                adaptive,
            )
        })
        .collect()
}

/// One timed generation; returns tokens/s after the first token (the decode
/// rate) and the stats.
fn run(s: &mut Session, prompt: &[u32], gp: &GenerateParams) -> (f64, GenerateStats) {
    s.reset();
    let stats = s.generate(prompt, gp, |_, _| true).expect("generate");
    let tps = (stats.tokens.saturating_sub(1)) as f64 / stats.decode_seconds;
    (tps, stats)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn bench_model(name: &str, model: &Arc<Model>, prompt: &[u32]) {
    let reps: usize = env_or("RD_BENCH_REPS", 3);
    let n_tokens: usize = env_or("RD_BENCH_TOKENS", 64);
    let n_ctx = model.config().context_length.min(1024);
    for r in [8usize, 16, 32] {
        let mut s = Session::new(
            Arc::clone(model),
            &SessionParams {
                n_ctx,
                kv_budget: r,
                ..SessionParams::default()
            },
        )
        .expect("session");
        let plain = GenerateParams {
            max_tokens: n_tokens,
            limits: ComputeLimits::fixed(r),
            ..GenerateParams::default()
        };
        let drafts = draft_grid();
        // Warm-up (plans the graphs once).
        run(&mut s, prompt, &plain);
        let mut best = (0.0f64, String::new());
        for (k, di, adaptive) in drafts {
            let gp = GenerateParams {
                draft: DraftParams {
                    tokens: k,
                    iterations: di,
                    adaptive,
                },
                ..plain.clone()
            };
            run(&mut s, prompt, &gp);
            let (mut base, mut spec) = (Vec::new(), Vec::new());
            let mut st = None;
            for _ in 0..reps {
                base.push(run(&mut s, prompt, &plain).0);
                let (tps, stats) = run(&mut s, prompt, &gp);
                spec.push(tps);
                st = Some(stats);
            }
            let st = st.expect("reps >= 1");
            let (b, sp) = (median(base), median(spec));
            let label = format!(
                "k={k} draft_it={di}{}",
                if adaptive { " adaptive" } else { "" }
            );
            println!(
                "{name} r={r:>2} {label:<24} plain {b:7.1} tok/s  speculative {sp:7.1} tok/s  \
                 ratio {:.2}  accepted {:>3}/{:<3} ({:>3.0}%)  tokens/pass {:.2}",
                sp / b,
                st.draft_accepted,
                st.draft_tokens,
                100.0 * st.draft_accepted as f64 / st.draft_tokens.max(1) as f64,
                (st.draft_accepted + st.verify_passes) as f64 / st.verify_passes.max(1) as f64,
            );
            if sp / b > best.0 {
                best = (sp / b, label);
            }
        }
        println!("{name} r={r:>2} best: {} at {:.2}x", best.1, best.0);
    }
}

fn main() {
    // `cargo bench` passes `--bench`; nothing else is parsed.
    let only = std::env::var("RD_BENCH_ONLY").unwrap_or_default();
    if "demo".contains(&only) || only.is_empty() {
        let (m, prompt) = demo_model();
        bench_model("demo", &m, &prompt);
    }
    if "random".contains(&only) || only.is_empty() {
        let m = random_model();
        let prompt: Vec<u32> = (0..16u32).map(|i| (i * 977 + 13) % 8192).collect();
        bench_model("random-d1024", &m, &prompt);
    }
}
