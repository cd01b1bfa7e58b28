//! Decode cost on a mid-size random model from the maker (d=512, 8 heads of 64,
//! 2/4/2 blocks, Q8_0, 1024 vocabulary): latency per token at 1, 4, 8, 32
//! iterations; the cost of KL checks (check_every 1, 2, 4) against the same
//! iterations without checks; where the KL value is computed (host f64 from
//! the logits, or inside the graph); and KV bytes against the budget B.
//! Compare ratios within one run; docs/performance.md records them.
//! `RD_BENCH_DEVICE` (any `rd --device` form, default cpu) picks the device.

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use recurrent_depth::generate::{ComputeLimits, GenerateParams};
use recurrent_depth::gguf::GgmlType;
use recurrent_depth::model::{BackendKind, LoadParams, Model};
use recurrent_depth::session::{Session, SessionParams};
use recurrent_depth::testmodel::{self, TestModelSpec};
use std::sync::Arc;
use std::time::Duration;

fn model() -> Arc<Model> {
    let path = std::env::temp_dir().join("rd-bench-model.gguf");
    let spec = TestModelSpec {
        seed: 3,
        n_embd: 512,
        n_ff: 1024,
        n_head: 8,
        n_head_kv: 8,
        n_vocab: 1024,
        n_ctx: 1024,
        n_prelude: 2,
        n_core: 4,
        n_coda: 2,
        weight_type: GgmlType::Q8_0,
        ..TestModelSpec::default()
    };
    testmodel::write(&spec, &path).expect("write bench model");
    Arc::new(
        Model::load(
            &path,
            &LoadParams {
                backend: std::env::var("RD_BENCH_DEVICE")
                    .map(|d| d.parse().expect("RD_BENCH_DEVICE"))
                    .unwrap_or(BackendKind::Cpu),
                ..LoadParams::default()
            },
        )
        .expect("load"),
    )
}

/// Generates `n` tokens after a short prompt under `limits` (timed per call).
fn decode(s: &mut Session, limits: ComputeLimits, n: usize) {
    s.reset();
    let params = GenerateParams {
        max_tokens: n,
        limits,
        ..GenerateParams::default()
    };
    s.generate(&[1, 2, 3, 4], &params, |_, _| true)
        .expect("generate");
}

fn benches(c: &mut Criterion) {
    let m = model();
    let mut s = Session::new(
        Arc::clone(&m),
        &SessionParams {
            n_ctx: 256,
            kv_budget: 1,
            ..SessionParams::default()
        },
    )
    .expect("session");
    let mut g = c.benchmark_group("decode_8_tokens");
    g.sample_size(10)
        .measurement_time(Duration::from_secs(4))
        .warm_up_time(Duration::from_secs(1));
    for r in [1usize, 4, 8, 32] {
        g.bench_with_input(BenchmarkId::new("fixed_iterations", r), &r, |b, &r| {
            b.iter(|| decode(&mut s, ComputeLimits::fixed(r), 8))
        });
    }
    // KL checks that never exit (threshold 0): every check costs a coda + head.
    for every in [1usize, 2, 4] {
        let limits = ComputeLimits {
            min_iterations: 1,
            max_iterations: 8,
            exit: "kl:0".parse().expect("spec"),
            check_every: every,
            ..ComputeLimits::default()
        };
        g.bench_with_input(
            BenchmarkId::new("kl_check_every_r8", every),
            &limits,
            |b, l| b.iter(|| decode(&mut s, *l, 8)),
        );
    }
    g.finish();
    // The same KL checks (every step, never exiting), the value computed on
    // the host from the logits or in the graph from three numbers.
    let mut g = c.benchmark_group("kl_where");
    g.sample_size(10)
        .measurement_time(Duration::from_secs(4))
        .warm_up_time(Duration::from_secs(1));
    for (name, on_device) in [("host", false), ("graph", true)] {
        let mut s = Session::new(
            Arc::clone(&m),
            &SessionParams {
                n_ctx: 256,
                kv_budget: 1,
                exit_on_device: Some(on_device),
                ..SessionParams::default()
            },
        )
        .expect("session");
        let limits = ComputeLimits {
            min_iterations: 1,
            max_iterations: 8,
            exit: "kl:0".parse().expect("spec"),
            check_every: 1,
            ..ComputeLimits::default()
        };
        g.bench_function(BenchmarkId::new("kl_every_step_r8", name), |b| {
            b.iter(|| decode(&mut s, limits, 8))
        });
    }
    g.finish();
    for bud in [1usize, 4, 32] {
        let s = Session::new(
            Arc::clone(&m),
            &SessionParams {
                n_ctx: 1024,
                kv_budget: bud,
                ..SessionParams::default()
            },
        )
        .expect("session");
        println!("kv_bytes n_ctx=1024 B={bud}: {}", s.kv_bytes());
    }
}

criterion_group!(decode_benches, benches);
criterion_main!(decode_benches);
