//! Self-speculative decoding: the model drafts a few tokens at a small
//! iteration count, then one batch at the full budget verifies them all.
//!
//! A round starts from a token that was reported but not evaluated. The
//! drafts run one position at a time at [`DraftParams::iterations`] (each
//! writing its rows of the cache), then the verifier evaluates the token and
//! every draft together at the target's fixed budget, overwriting those rows.
//! Greedy decoding keeps drafts while they equal the verifier's pick and adds
//! the verifier's own token after them; sampling uses the speculative
//! sampling rule (accept a draft with probability `min(1, p/q)`, otherwise
//! draw from `max(0, p - q)`), so tokens follow the target's distribution.
//! The session then rewinds to the last kept position (docs/semantics.md,
//! section "Speculative decoding").

use super::{ComputeLimits, Work, recent};
use crate::error::{Error, Result};
use crate::exit::ExitCriterion;
use crate::sampling::Sampler;
use crate::session::{
    CodaMode, MAX_ITERATIONS, RoundStart, STEPS_PER_GRAPH, Segment, Session, verify_segments,
};

/// Most tokens drafted per round.
pub const MAX_DRAFT_TOKENS: usize = 64;

/// Self-speculative decoding settings (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DraftParams {
    /// Tokens drafted per verification pass (0 = no speculation, the
    /// default; at most [`MAX_DRAFT_TOKENS`] and `n_batch - 1`).
    pub tokens: usize,
    /// Core iterations of each draft token (default 4).
    pub iterations: usize,
    /// Adapt the number of drafted tokens: one more after a round whose
    /// drafts were all accepted, accepted + 1 after a rejection, within
    /// `1..=tokens`.
    pub adaptive: bool,
}

impl Default for DraftParams {
    fn default() -> Self {
        DraftParams {
            tokens: 0,
            iterations: 4,
            adaptive: false,
        }
    }
}

impl DraftParams {
    /// Whether speculation is on.
    pub fn enabled(&self) -> bool {
        self.tokens > 0
    }

    /// Checks ranges (only when speculation is on).
    pub fn validate(&self) -> Result<()> {
        if !self.enabled() {
            return Ok(());
        }
        if self.tokens > MAX_DRAFT_TOKENS {
            return Err(Error::InvalidArgument(format!(
                "draft tokens {} out of range 0..={MAX_DRAFT_TOKENS}",
                self.tokens
            )));
        }
        if self.iterations == 0 || self.iterations > MAX_ITERATIONS {
            return Err(Error::InvalidArgument(format!(
                "draft iterations {} out of range 1..={MAX_ITERATIONS}",
                self.iterations
            )));
        }
        Ok(())
    }
}

/// Whether tokens under `limits` can be verified in a batch: a fixed budget
/// (no exit criterion: every token runs `max_iterations`) and no warm start
/// (which chains each position's state to the previous one's).
pub(crate) fn verifiable(limits: &ComputeLimits) -> bool {
    limits.exit.criterion == ExitCriterion::None && !limits.warm_start
}

/// The generation call's working state a round uses.
pub(super) struct Decoding<'a> {
    pub sampler: &'a mut Sampler,
    /// Reported tokens (drafts are pushed and popped during a round).
    pub history: &'a mut Vec<u32>,
    pub w: &'a mut Work,
}

/// Working memory and counters of speculation over one generation call
/// (sized once: nothing is allocated per round).
pub(crate) struct Speculator {
    params: DraftParams,
    /// Tokens to draft in the next round.
    k: usize,
    greedy: bool,
    n_vocab: usize,
    drafts: Vec<u32>,
    /// The verified batch: the round's first token, then the drafts.
    batch: Vec<u32>,
    /// The verifier's logits, a row per batch position.
    rows: Vec<f32>,
    /// Draft distributions, a row per draft (sampling only).
    q: Vec<f32>,
    /// The verifier's distribution at the position being decided.
    p: Vec<f32>,
    /// The round's outcome: accepted drafts, then the verifier's token.
    pub out: Vec<u32>,
    /// Tokens drafted so far.
    pub drafted: usize,
    /// Drafts accepted so far.
    pub accepted: usize,
    /// Verification passes so far.
    pub passes: usize,
}

impl Speculator {
    /// Working memory for `params` (enabled) over a vocabulary of `n_vocab`.
    pub(crate) fn new(params: DraftParams, greedy: bool, n_vocab: usize) -> Result<Speculator> {
        let k = params.tokens;
        let oom = |_| Error::OutOfMemory("speculative decoding buffers".into());
        let mut rows = Vec::new();
        rows.try_reserve_exact((k + 1) * n_vocab).map_err(oom)?;
        let mut q = Vec::new();
        let mut p = Vec::new();
        if !greedy {
            q.try_reserve_exact(k * n_vocab).map_err(oom)?;
            q.resize(k * n_vocab, 0.0);
            p.try_reserve_exact(n_vocab).map_err(oom)?;
            p.resize(n_vocab, 0.0);
        }
        Ok(Speculator {
            params,
            k,
            greedy,
            n_vocab,
            drafts: Vec::with_capacity(k),
            batch: Vec::with_capacity(k + 1),
            rows,
            q,
            p,
            out: Vec::with_capacity(k + 1),
            drafted: 0,
            accepted: 0,
            passes: 0,
        })
    }

    /// Draft iterations under `limits` (never past the verifier's).
    fn draft_iterations(&self, limits: &ComputeLimits) -> usize {
        self.params.iterations.min(limits.max_iterations)
    }

    /// Plans the memory of every graph a round under `limits` runs (drafts,
    /// the last draft's steps without coda, the verification), so that
    /// rounds allocate nothing.
    pub(crate) fn plan(&self, session: &mut Session, limits: &ComputeLimits) -> Result<()> {
        let d = self.draft_iterations(limits);
        let mut shapes = Vec::new();
        ComputeLimits::fixed(d).token_segments(false, &mut shapes)?;
        prefix_segments(d, |seg| {
            shapes.push((seg, 0));
            Ok(())
        })?;
        session.plan_token_graphs(&shapes)?;
        shapes.clear();
        verify_segments(d, limits.max_iterations, |seg| {
            shapes.push((seg, 0));
            Ok(())
        })?;
        session.plan_verify_graphs(self.max_batch(), &shapes)
    }

    /// Most positions a verification batch holds.
    pub(crate) fn max_batch(&self) -> usize {
        self.params.tokens + 1
    }

    /// Tokens to draft next, given how many more may be reported after the
    /// round's first token and the free positions of the context (0: decode
    /// plainly).
    pub(crate) fn next_k(&self, tokens_left: usize, free_positions: usize) -> usize {
        // The round reports up to k + 1 tokens and verifies k + 1 positions.
        self.k
            .min(tokens_left.saturating_sub(1))
            .min(free_positions.saturating_sub(1))
    }

    /// The verifier's logits of batch position `i`.
    pub(crate) fn row(&self, i: usize) -> &[f32] {
        &self.rows[i * self.n_vocab..(i + 1) * self.n_vocab]
    }

    /// Counts a round that verified `k` drafts and adapts the next `k`.
    fn finish_round(&mut self, k: usize) {
        let m = self.out.len().saturating_sub(1);
        self.drafted += k;
        self.accepted += m;
        self.passes += 1;
        if self.params.adaptive {
            self.k = if m == k {
                (self.k + 1).min(self.params.tokens)
            } else {
                (m + 1).min(self.params.tokens)
            };
        }
    }
}

impl Session {
    /// One speculative round from `token` (reported, not yet evaluated):
    /// drafts `k` tokens, verifies them at `limits.max_iterations` and leaves
    /// the accepted drafts and the verifier's next token in `sp.out`. The
    /// verified positions stay cached until the caller commits a prefix
    /// (`Session::commit_round`) with the returned start; on an error the
    /// round is undone. `history` is restored before returning.
    pub(super) fn speculative_round(
        &mut self,
        token: u32,
        k: usize,
        limits: &ComputeLimits,
        sp: &mut Speculator,
        dec: &mut Decoding,
    ) -> Result<RoundStart> {
        let start = self.round_start();
        let base = dec.history.len();
        dec.w.drafting = true;
        let res = self.draft_and_verify(&start, token, k, limits, sp, dec);
        dec.w.drafting = false;
        dec.history.truncate(base);
        // A warm start would read the state of a draft position.
        dec.w.have_prev = false;
        match res {
            Ok(()) => {
                sp.finish_round(k);
                Ok(start)
            }
            Err(e) => {
                self.abandon_round(&start);
                Err(e)
            }
        }
    }

    fn draft_and_verify(
        &mut self,
        start: &RoundStart,
        token: u32,
        k: usize,
        limits: &ComputeLimits,
        sp: &mut Speculator,
        dec: &mut Decoding,
    ) -> Result<()> {
        let Decoding {
            sampler,
            history,
            w,
        } = dec;
        let base = history.len();
        let last_n = sampler.params().repeat_last_n;
        let v = sp.n_vocab;
        sp.drafts.clear();
        let d_it = sp.draft_iterations(limits);
        let draft_limits = ComputeLimits::fixed(d_it);
        let mut cur = token;
        for j in 0..k {
            // Each draft keeps its state in its own row for the verifier.
            self.set_draft_row(Some(j));
            self.run_token(&[cur], &draft_limits, w)?;
            let d = if sp.greedy {
                sampler.sample(self.logits(), recent(history, last_n))
            } else {
                let q = &mut sp.q[j * v..(j + 1) * v];
                sampler.distribution(self.logits(), recent(history, last_n), q)?;
                sampler.draw(q)
            };
            sp.drafts.push(d);
            history.push(d);
            cur = d;
        }
        history.truncate(base);
        // The last draft's first steps (its logits are not needed).
        self.set_draft_row(Some(k));
        self.begin_batch(&[cur])?;
        prefix_segments(d_it, |seg| self.run_segment(seg, None))?;
        self.end_batch();
        self.set_draft_row(None);

        sp.batch.clear();
        sp.batch.push(token);
        sp.batch.extend_from_slice(&sp.drafts);
        self.verify(start, &sp.batch, d_it, limits.max_iterations, &mut sp.rows)?;

        sp.out.clear();
        for i in 0..=k {
            let row = &sp.rows[i * v..(i + 1) * v];
            let recent_tokens = recent(history, last_n);
            if i == k {
                // Every draft was accepted: the verifier's token after them.
                sp.out.push(sampler.sample(row, recent_tokens));
                break;
            }
            let x = sp.drafts[i];
            if sp.greedy {
                let t = sampler.sample(row, recent_tokens);
                sp.out.push(t);
                if t != x {
                    break;
                }
            } else {
                sampler.distribution(row, recent_tokens, &mut sp.p)?;
                let q = &sp.q[i * v..(i + 1) * v];
                let xi = x as usize;
                if sampler.accept_draft(sp.p[xi], q[xi]) {
                    sp.out.push(x);
                } else {
                    sp.out.push(sampler.draw_residual(&mut sp.p, q));
                    break;
                }
            }
            history.push(x);
        }
        Ok(())
    }
}

/// Calls `f` with each graph that runs steps `1..=d` of a new token without
/// its coda.
fn prefix_segments(d: usize, mut f: impl FnMut(Segment) -> Result<()>) -> Result<()> {
    let mut t = 0;
    while t < d {
        let n_steps = (d - t).min(STEPS_PER_GRAPH);
        f(Segment {
            prelude: t == 0,
            first_step: t + 1,
            n_steps,
            coda: CodaMode::None,
            exit_stats: false,
            lead_at: 0,
            lead_coda: false,
        })?;
        t += n_steps;
    }
    Ok(())
}
