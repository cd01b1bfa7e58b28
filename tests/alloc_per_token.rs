//! No Rust heap allocation per generated token: a counting global allocator
//! sees every allocation, reallocation and free the library's Rust code makes
//! (ggml's own C allocations are counted by ffi-tests/test_alloc.c). From the
//! second to the last token of a 300-token generation the count must be 0,
//! for fixed budgets, KL exits (B = 1 and a budget with latest-entry fill),
//! a latent criterion with warm start, checks every 3 steps, sampling, and
//! speculative decoding (greedy and sampled, with an adaptive draft length).
//!
//! Only the generating thread is counted: the library starts no Rust thread
//! while it generates (ggml's CPU workers are C threads of its threadpool),
//! and the test harness's own main thread may allocate at any time (under
//! qemu it prints "has been running for over 60 seconds", which allocates).
//! One test function runs the scenarios in turn.

mod common;

use recurrent_depth::exit::{ExitCriterion, ExitSpec};
use recurrent_depth::generate::{ComputeLimits, DraftParams, GenerateParams};
use recurrent_depth::model::Model;
use recurrent_depth::sampling::SamplingParams;
use recurrent_depth::session::{Session, SessionParams};
use recurrent_depth::testmodel::{self, TestModelSpec};
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::Arc;

/// Counts every call into the allocator (alloc, zeroed alloc, realloc, free)
/// made by the calling thread.
struct Counting;

thread_local! {
    // Const-initialised and without a destructor: touching it never allocates.
    static CALLS: Cell<usize> = const { Cell::new(0) };
}

fn count() {
    // `try_with`: a thread being torn down may still free memory.
    let _ = CALLS.try_with(|c| c.set(c.get() + 1));
}

/// Allocator calls the current thread has made so far.
fn calls() -> usize {
    CALLS.with(Cell::get)
}

// SAFETY: forwards every call unchanged to the system allocator.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count();
        // SAFETY: the caller's contract is passed through.
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count();
        // SAFETY: as above.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count();
        // SAFETY: as above.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        count();
        // SAFETY: as above.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const N_TOKENS: usize = 300;

fn limits(min: usize, max: usize, criterion: ExitCriterion, every: usize) -> ComputeLimits {
    let mut l = ComputeLimits::fixed(max);
    l.min_iterations = min;
    l.exit = ExitSpec {
        criterion,
        threshold: criterion.default_threshold(),
    };
    l.check_every = every;
    l
}

/// Allocator calls between the second and the last token callback.
fn calls_per_window(model: &Arc<Model>, kv_budget: usize, params: &GenerateParams) -> usize {
    let sp = SessionParams {
        n_ctx: 512,
        kv_budget,
        ..SessionParams::default()
    };
    let mut s = Session::new(Arc::clone(model), &sp).unwrap();
    let mut at = [0usize; N_TOKENS];
    let prompt = [3u32, 1, 4, 1, 5, 9];
    let stats = s
        .generate(&prompt, params, |ev, _| {
            at[ev.index] = calls();
            true
        })
        .unwrap();
    assert_eq!(stats.tokens, N_TOKENS);
    at[N_TOKENS - 1] - at[1]
}

#[test]
fn no_rust_allocation_per_token() {
    let path = std::env::temp_dir().join(format!("rd-alloc-{}.gguf", std::process::id()));
    let spec = TestModelSpec {
        n_ctx: 512,
        ..TestModelSpec::default()
    };
    testmodel::write(&spec, &path).unwrap();
    let model = Arc::new(Model::load(&path, &common::cpu_params(1)).unwrap());
    let _ = std::fs::remove_file(&path);
    let plain = |l: ComputeLimits| GenerateParams {
        max_tokens: N_TOKENS,
        limits: l,
        ..GenerateParams::default()
    };
    let mut screened = limits(1, 32, ExitCriterion::Kl, 1);
    screened.exit_screen = ExitSpec {
        criterion: ExitCriterion::Cosine,
        threshold: 1e-2,
    };
    let mut warm = limits(1, 40, ExitCriterion::Cosine, 1);
    warm.warm_start = true;
    let sampled = GenerateParams {
        sampling: SamplingParams {
            seed: 7,
            greedy: false,
            temperature: 0.8,
            top_k: 40,
            top_p: 0.95,
            min_p: 0.05,
            repeat_penalty: 1.1,
            ..SamplingParams::default()
        },
        ..plain(limits(2, 16, ExitCriterion::Kl, 1))
    };
    let cases = [
        ("fixed 8", 1, plain(ComputeLimits::fixed(8))),
        (
            "fixed 40 (3 graphs a token), B=2",
            2,
            plain(ComputeLimits::fixed(40)),
        ),
        (
            "kl 2..32, B=1",
            1,
            plain(limits(2, 32, ExitCriterion::Kl, 1)),
        ),
        (
            "kl 2..32, B=4",
            4,
            plain(limits(2, 32, ExitCriterion::Kl, 1)),
        ),
        ("cosine 1..40, warm start", 1, plain(warm)),
        ("kl 1..32 behind a cosine screen, B=2", 2, plain(screened)),
        (
            "argmax-stability every 3",
            2,
            plain(limits(3, 24, ExitCriterion::ArgmaxStability, 3)),
        ),
        (
            "confidence 1..24",
            2,
            plain(limits(1, 24, ExitCriterion::Confidence, 1)),
        ),
        ("sampled, kl 2..16", 1, sampled.clone()),
        (
            "speculative, greedy, 4 drafts at 2 of 8 (B=8)",
            8,
            GenerateParams {
                draft: DraftParams {
                    tokens: 4,
                    iterations: 2,
                    adaptive: false,
                },
                ..plain(ComputeLimits::fixed(8))
            },
        ),
        (
            "speculative, sampled, adaptive up to 6 drafts at 1 of 20 (B=2)",
            2,
            GenerateParams {
                limits: ComputeLimits::fixed(20),
                draft: DraftParams {
                    tokens: 6,
                    iterations: 1,
                    adaptive: true,
                },
                ..sampled.clone()
            },
        ),
    ];
    let mut failures = Vec::new();
    for (name, b, params) in &cases {
        let n = calls_per_window(&model, *b, params);
        eprintln!("{name}: {n} allocator calls in tokens 2..{N_TOKENS}");
        if n != 0 {
            failures.push(format!("{name}: {n}"));
        }
    }
    // Ouro: loops from the embedding, the gate criterion read every step.
    let opath = std::env::temp_dir().join(format!("rd-alloc-ouro-{}.gguf", std::process::id()));
    let ospec = TestModelSpec {
        n_ctx: 512,
        n_prelude: 0,
        n_core: 3,
        n_coda: 0,
        qk_bias: false,
        ouro: true,
        ..TestModelSpec::default()
    };
    testmodel::write(&ospec, &opath).unwrap();
    let ouro = Arc::new(Model::load(&opath, &common::cpu_params(1)).unwrap());
    let _ = std::fs::remove_file(&opath);
    let mut gate = limits(1, 4, ExitCriterion::Gate, 1);
    gate.exit.threshold = 0.5;
    for (name, b, params) in [
        ("ouro, gate 0.5, B=4", 4, plain(gate)),
        ("ouro, fixed 4, B=1", 1, plain(ComputeLimits::fixed(4))),
    ] {
        let n = calls_per_window(&ouro, b, &params);
        eprintln!("{name}: {n} allocator calls in tokens 2..{N_TOKENS}");
        if n != 0 {
            failures.push(format!("{name}: {n}"));
        }
    }
    // A model without recurrence (a plain llama file), greedy and sampled.
    if let Some(p) = common::smollm2_or_skip() {
        let smol = Arc::new(Model::load(&p, &common::cpu_params(1)).unwrap());
        for (name, params) in [
            ("llama (SmolLM2), greedy", plain(ComputeLimits::fixed(1))),
            (
                "llama (SmolLM2), sampled",
                GenerateParams {
                    limits: ComputeLimits::fixed(1),
                    ..sampled
                },
            ),
        ] {
            let n = calls_per_window(&smol, 1, &params);
            eprintln!("{name}: {n} allocator calls in tokens 2..{N_TOKENS}");
            if n != 0 {
                failures.push(format!("{name}: {n}"));
            }
        }
    }
    assert!(failures.is_empty(), "allocations per token: {failures:?}");
}
