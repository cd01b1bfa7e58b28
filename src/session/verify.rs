//! Speculative verification: one batch of drafted positions at the full
//! budget, then a rewind to the positions the verifier agreed with.
//!
//! The cache holds a row per position, so dropping rejected positions is
//! moving `n_past` back; their rows are overwritten before anything reads
//! them. The seeded initial-state generator is rewound too, so that every
//! committed position drew the same initial state it would have drawn in
//! plain decoding.

use super::{Session, StateInit};
use crate::error::{Error, Result};
use crate::rng::SplitMix64;

/// Where a speculative round started: enough to rewind to it.
#[derive(Clone, Debug)]
pub(crate) struct RoundStart {
    n_past: usize,
    rng: SplitMix64,
}

impl Session {
    /// Marks the start of a speculative round (before the drafts run).
    pub(crate) fn round_start(&self) -> RoundStart {
        RoundStart {
            n_past: self.n_past,
            rng: self.rng.clone(),
        }
    }

    /// Evaluates `tokens` from the round's first position at a fixed
    /// `iterations` in one batch and writes every position's logits to
    /// `out` (cleared first; `tokens.len() * n_vocab` floats, position-major;
    /// reserve its capacity beforehand and nothing is allocated). Drafted
    /// rows from `start` on are overwritten. The positions stay in the cache
    /// until [`Session::commit_round`] keeps a prefix of them.
    pub(crate) fn verify(
        &mut self,
        start: &RoundStart,
        tokens: &[u32],
        iterations: usize,
        out: &mut Vec<f32>,
    ) -> Result<()> {
        if tokens.len() > self.n_batch {
            return Err(Error::InvalidArgument(format!(
                "{} positions to verify exceed n_batch {}",
                tokens.len(),
                self.n_batch
            )));
        }
        self.rewind(start);
        out.clear();
        self.verifying = tokens.len() > 1;
        let res = self.eval_impl(tokens, iterations, Some(out));
        self.verifying = false;
        res
    }

    /// Keeps the first `n` positions of the round (`n` >= 1, at most the
    /// verified ones) and makes `logits` (the verifier's row of the last
    /// kept position) the session's logits, as if those positions had been
    /// decoded one by one.
    pub(crate) fn commit_round(&mut self, start: &RoundStart, n: usize, logits: &[f32]) {
        self.rewind(start);
        self.advance_state_rng(n);
        self.n_past = start.n_past + n;
        self.logits.copy_from_slice(logits);
        self.logits_valid = true;
    }

    /// Drops everything the round added (after an error or cancellation):
    /// the session is as before the round, without logits.
    pub(crate) fn abandon_round(&mut self, start: &RoundStart) {
        self.rewind(start);
        self.n_cur = 0;
        self.logits_valid = false;
        self.last_iterations = 0;
    }

    /// Back to the round's first position and generator state.
    fn rewind(&mut self, start: &RoundStart) {
        self.n_past = start.n_past;
        self.rng = start.rng.clone();
    }

    /// Draws the initial states of `n` positions (what [`Session::begin_batch`]
    /// draws for them) and discards them.
    fn advance_state_rng(&mut self, n: usize) {
        let cfg = self.model.config();
        let std = cfg.state_init_std as f64;
        if self.params.state_init != StateInit::Random || std <= 0.0 {
            return;
        }
        let (d, scale) = (cfg.n_embd, cfg.embedding_scale as f64);
        let row = &mut self.host.x0[..d];
        for _ in 0..n {
            self.rng.fill_state(row, std, scale);
        }
    }
}
