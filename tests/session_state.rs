//! Session state save/restore and truncation through the Rust API: a
//! restored session continues token for token (F16 cache, random initial
//! states, a KV budget with latest-entry fill, a latent exit with warm
//! start), and every corrupted byte of a state is refused without changing
//! the session.

mod common;

use recurrent_depth::exit::{ExitCriterion, ExitSpec};
use recurrent_depth::generate::{ComputeLimits, GenerateParams};
use recurrent_depth::model::Model;
use recurrent_depth::session::{KvType, Session, SessionParams, StateInit};
use recurrent_depth::testmodel::{self, TestModelSpec};
use std::sync::Arc;

fn model(seed: u64) -> Arc<Model> {
    let path = std::env::temp_dir().join(format!("rd-state-{}-{seed}.gguf", std::process::id()));
    let spec = TestModelSpec {
        seed,
        ..TestModelSpec::default()
    };
    testmodel::write(&spec, &path).unwrap();
    let m = Arc::new(Model::load(&path, &common::cpu_params(1)).unwrap());
    let _ = std::fs::remove_file(&path);
    m
}

fn params(max_tokens: usize) -> GenerateParams {
    let mut limits = ComputeLimits::fixed(12);
    limits.min_iterations = 1;
    limits.exit = ExitSpec {
        criterion: ExitCriterion::LatentDiff,
        threshold: ExitCriterion::LatentDiff.default_threshold(),
    };
    limits.warm_start = true;
    GenerateParams {
        max_tokens,
        limits,
        ..GenerateParams::default()
    }
}

fn tokens(s: &mut Session, prompt: &[u32], n: usize) -> Vec<(u32, usize)> {
    let mut out = Vec::new();
    s.generate(prompt, &params(n), |ev, _| {
        out.push((ev.token, ev.iterations));
        true
    })
    .unwrap();
    out
}

fn session(m: &Arc<Model>, n_ctx: usize) -> Session {
    session_with(m, n_ctx, true)
}

/// A session with fused attention (V stored by position) or without.
fn session_with(m: &Arc<Model>, n_ctx: usize, flash: bool) -> Session {
    let sp = SessionParams {
        flash_attention: Some(flash),
        n_ctx,
        kv_budget: 3,
        kv_type: KvType::F16,
        state_init: StateInit::Random,
        seed: 5,
        ..SessionParams::default()
    };
    Session::new(Arc::clone(m), &sp).unwrap()
}

#[test]
fn restored_session_continues_exactly() {
    for flash in [true, false] {
        restore_and_continue(flash);
    }
}

fn restore_and_continue(flash: bool) {
    let m = model(21);
    let mut a = session_with(&m, 128, flash);
    let first = tokens(&mut a, &[7, 3, 9, 1, 4], 9);
    assert!(a.has_logits());
    let mut state = vec![0u8; a.state_size()];
    assert_eq!(a.save_state(&mut state).unwrap(), state.len());
    // The last reported token is the first of the continuation.
    let last = first.last().unwrap().0;
    let want = tokens(&mut a, &[last], 10);

    let mut b = session_with(&m, 64, flash);
    b.load_state(&state).unwrap();
    assert_eq!(b.n_past(), 5 + 8);
    assert!(b.has_logits());
    assert_eq!(tokens(&mut b, &[last], 10), want);

    // Through a file.
    let path = std::env::temp_dir().join(format!("rd-state-{}.bin", std::process::id()));
    b.reset();
    b.load_state(&state).unwrap();
    b.save_state_file(&path).unwrap();
    b.reset();
    b.load_state_file(&path).unwrap();
    let _ = std::fs::remove_file(&path);
    assert_eq!(tokens(&mut b, &[last], 10), want);

    // Truncation: nothing dropped keeps the logits, dropping loses them
    // (ffi-tests/test_state.c checks the continuation after a truncation).
    let n = b.n_past();
    b.truncate(n + 5);
    b.truncate(n);
    assert!(b.has_logits(), "nothing was dropped");
    assert_eq!(b.n_past(), n);
    b.truncate(n - 1);
    assert!(!b.has_logits());
    assert_eq!(b.n_past(), n - 1);
}

#[test]
fn every_corrupted_byte_is_refused_and_changes_nothing() {
    let m = model(22);
    let mut a = session(&m, 32);
    tokens(&mut a, &[1, 2, 3], 4);
    let mut state = vec![0u8; a.state_size()];
    a.save_state(&mut state).unwrap();
    let mut b = session(&m, 32);
    tokens(&mut b, &[9, 9], 2);
    let (n_past, logits) = (b.n_past(), b.logits().to_vec());
    for i in 0..state.len() {
        let mut bad = state.clone();
        bad[i] ^= 0x01;
        assert!(b.load_state(&bad).is_err(), "byte {i} flipped was accepted");
        assert_eq!(b.n_past(), n_past);
    }
    assert!(b.load_state(&state[..state.len() - 1]).is_err());
    assert!(b.load_state(&[]).is_err());
    assert_eq!(b.logits(), &logits[..]);
    // Another model of the same shape, another budget, a short context.
    let other = model(23);
    assert!(session(&other, 32).load_state(&state).is_err());
    let sp = SessionParams {
        n_ctx: 32,
        kv_budget: 2,
        kv_type: KvType::F16,
        ..SessionParams::default()
    };
    assert!(
        Session::new(Arc::clone(&m), &sp)
            .unwrap()
            .load_state(&state)
            .is_err()
    );
    assert!(session(&m, 4).load_state(&state).is_err());
    // The other attention layout: V is transposed on the way in, both ways.
    let mut sep = session_with(&m, 32, false);
    sep.load_state(&state).unwrap();
    assert_eq!(sep.n_past(), a.n_past());
    assert_eq!(sep.logits(), a.logits());
    let mut sep_state = vec![0u8; sep.state_size()];
    sep.save_state(&mut sep_state).unwrap();
    assert_ne!(sep_state, state, "the layouts differ");
    let mut fused = session_with(&m, 32, true);
    fused.load_state(&sep_state).unwrap();
    let mut again = vec![0u8; fused.state_size()];
    fused.save_state(&mut again).unwrap();
    assert_eq!(again, state, "fused -> separate -> fused changed the state");
    // And the separate session continues like the fused one, to rounding.
    assert_eq!(tokens(&mut sep, &[4], 3), tokens(&mut fused, &[4], 3));
    b.load_state(&state).unwrap();
    assert_eq!(b.n_past(), a.n_past());
}
