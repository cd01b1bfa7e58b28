//! Speculative verification: one batch of drafted positions at the full
//! budget, then a rewind to the positions the verifier agreed with.
//!
//! The cache holds a row per position, so dropping rejected positions is
//! moving `n_past` back; their rows are overwritten before anything reads
//! them. The seeded initial-state generator is rewound too, so that every
//! committed position drew the same initial state it would have drawn in
//! plain decoding.

use super::{CodaMode, STEPS_PER_GRAPH, Segment, Session, StateInit};
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

    /// Runs the drafts that follow with their recurrent state and
    /// embedding in row `row` of the state stores (`None`: back to row 0 for
    /// everything else), so that [`Session::verify`] can continue them.
    pub(crate) fn set_draft_row(&mut self, row: Option<usize>) {
        self.store_row = row.unwrap_or(0);
    }

    /// Continues the round's drafts to the full depth in one batch: `tokens`
    /// (the round's first token and its drafts) ran `from_step` steps one by
    /// one, each with its state in row `i` of the stores (see
    /// [`Session::set_draft_row`]); this runs steps `from_step + 1 ..=
    /// iterations` on all of them together and the coda, and writes every
    /// position's logits to `out` (cleared first; `tokens.len() * n_vocab`
    /// floats, position-major; reserve its capacity beforehand and nothing
    /// is allocated). The positions stay in the cache until
    /// [`Session::commit_round`] keeps a prefix of them.
    ///
    /// Step `s` of a position depends only on steps up to `s` of it and of
    /// the positions before it, so the drafts' first steps are the first
    /// steps of the full computation (exactly, when the budget B gives each
    /// step its own slot) and need not run again.
    pub(crate) fn verify(
        &mut self,
        start: &RoundStart,
        tokens: &[u32],
        from_step: usize,
        iterations: usize,
        out: &mut Vec<f32>,
    ) -> Result<()> {
        if tokens.len() > self.n_batch || from_step > iterations {
            return Err(Error::InvalidArgument(format!(
                "cannot verify {} positions from step {from_step} of {iterations} (n_batch {})",
                tokens.len(),
                self.n_batch
            )));
        }
        self.n_past = start.n_past;
        self.store_row = 0;
        out.clear();
        self.check_tokens(tokens)?;
        self.begin_batch(tokens)?;
        self.verifying = tokens.len() > 1;
        let res = verify_segments(from_step, iterations, |seg| {
            let logits = (seg.coda == CodaMode::All).then_some(&mut *out);
            self.run_segment(seg, logits)
        });
        self.verifying = false;
        res?;
        self.fill_unreached_slots(iterations)?;
        self.end_batch();
        self.last_iterations = iterations;
        Ok(())
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

    /// After a cancellation during a round's reporting: the committed
    /// positions stay, the logits count as not belonging to them (as after
    /// a cancelled evaluation).
    pub(crate) fn cancelled_after_round(&mut self) {
        self.logits_valid = false;
    }

    /// Drops everything the round added (after an error or cancellation):
    /// the session is as before the round, without logits.
    pub(crate) fn abandon_round(&mut self, start: &RoundStart) {
        self.rewind(start);
        self.n_cur = 0;
        self.store_row = 0;
        self.verifying = false;
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

/// Calls `f` with each graph of a verification that continues drafts from
/// step `from` to `iterations` (at most [`STEPS_PER_GRAPH`] steps a graph),
/// the last one with every position's coda.
pub(crate) fn verify_segments(
    from: usize,
    iterations: usize,
    mut f: impl FnMut(Segment) -> Result<()>,
) -> Result<()> {
    let mut step = from + 1;
    loop {
        let n_steps = (iterations + 1).saturating_sub(step).min(STEPS_PER_GRAPH);
        let last = step + n_steps > iterations;
        f(Segment {
            prelude: false,
            first_step: step,
            n_steps,
            coda: if last { CodaMode::All } else { CodaMode::None },
            exit_stats: false,
            lead_at: 0,
            lead_coda: false,
        })?;
        step += n_steps;
        if last {
            return Ok(());
        }
    }
}
