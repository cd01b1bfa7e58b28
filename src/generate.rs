//! The generation loop: per-token compute limits (iteration budget, early exit,
//! warm start), sampling, stop conditions and the token callback.
//!
//! Per token: the prelude runs once, then the core runs step by step in graphs
//! of several steps; at each check step (from `min_iterations` on, every
//! `check_every` steps, and always at `max_iterations`) the exit criterion is
//! evaluated: criteria on the next-token distribution run the coda and head
//! (which rewrites the coda's K/V rows for this token; the last write is the one
//! of the exit step), latent criteria read the state. Slots of the KV budget the
//! token did not reach get its deepest entry (latest-entry semantics).
//! Nothing is allocated per token: buffers are sized per call.

use crate::error::{Error, Result};
use crate::exit::{BatchLatentState, ExitCriterion, ExitSpec, ExitState};
use crate::model::Model;
use crate::sampling::{Sampler, SamplingParams};
use crate::session::{CodaMode, MAX_ITERATIONS, STEPS_PER_GRAPH, Segment, Session};
use std::time::Instant;

mod speculative;

use speculative::Speculator;
pub use speculative::{DraftParams, MAX_DRAFT_TOKENS};

/// How much a token may think.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ComputeLimits {
    /// Fewest core iterations per token (>= 1).
    pub min_iterations: usize,
    /// Most core iterations per token (>= min_iterations).
    pub max_iterations: usize,
    /// Early-exit criterion and threshold.
    pub exit: ExitSpec,
    /// A screen for a criterion on the next-token distribution: a latent
    /// criterion (`cosine` or `latent-diff`, which reads the state and
    /// needs no coda) that must pass its threshold before `exit` is
    /// evaluated at all. Until it passes, check steps only compare states;
    /// from the check where it passes to the end of the token, `exit` is
    /// checked as without a screen (its first check compares with the
    /// uniform distribution, as at any token's first check). Default
    /// `none`: no screen, `exit` is checked at every check step
    /// (docs/semantics.md, "Screened exits").
    pub exit_screen: ExitSpec,
    /// Evaluate the criterion every this many steps once `min_iterations` is
    /// reached; 0 = automatic (see [`ComputeLimits::resolve_check_every`]).
    pub check_every: usize,
    /// Allow early exit while prefilling the prompt (decided on the last position).
    pub exit_in_prefill: bool,
    /// The prompt's own exit: a latent criterion (`cosine` or `latent-diff`)
    /// decided over every position of the prompt at once (the largest value
    /// must pass), from `min_iterations` on, at every step up to the
    /// prompt's budget; a prompt longer than the session's batch decides
    /// each chunk on its own positions. It stops the prompt when all of its
    /// states have settled, whatever `exit` the generated tokens use; each
    /// check reads the batch's states back (no coda). Default `none`: the
    /// prompt runs its budget (or `exit` on the last position with
    /// `exit_in_prefill`, which cannot be combined with this), except that a
    /// budget chosen by the runtime (`GenerateParams::prefill_iterations`
    /// `None`) with an exit criterion uses [`AUTO_PREFILL_EXIT`]
    /// ([`ComputeLimits::prompt_exit`]). docs/semantics.md, "The prompt's
    /// exit".
    pub prefill_exit: ExitSpec,
    /// Start each new token's state from the previous token's final state.
    pub warm_start: bool,
    /// A token's first check of a criterion that compares two checks (kl,
    /// minp-kl, entropy-diff, argmax-stability, latent-diff, cosine) is a
    /// lead-in: it sets the reference of the next check and cannot end the
    /// token, and it runs in the same graph as that next check (one graph
    /// launch less per token). Its only reference is a convention (the
    /// uniform distribution for kl), so the exits this rules out are those
    /// the convention alone would allow. Default true; false is the
    /// authors' behaviour (their first check may exit). Added in 0.7
    /// (docs/semantics.md, "The lead-in check").
    pub lead_in: bool,
}

impl Default for ComputeLimits {
    fn default() -> Self {
        ComputeLimits {
            min_iterations: 1,
            max_iterations: 32,
            exit: ExitSpec::default(),
            exit_screen: ExitSpec::default(),
            check_every: 1,
            exit_in_prefill: false,
            prefill_exit: ExitSpec::default(),
            warm_start: false,
            lead_in: true,
        }
    }
}

impl ComputeLimits {
    /// A fixed number of iterations, no exit.
    pub fn fixed(iterations: usize) -> Self {
        ComputeLimits {
            min_iterations: iterations,
            max_iterations: iterations,
            ..Self::default()
        }
    }

    /// Checks ranges: 1 <= min <= max <= MAX_ITERATIONS, valid thresholds,
    /// and a screen only of a latent criterion, before a logits criterion.
    pub fn validate(&self) -> Result<()> {
        if self.max_iterations == 0 || self.max_iterations > MAX_ITERATIONS {
            return Err(Error::InvalidArgument(format!(
                "max_iterations {} out of range 1..={MAX_ITERATIONS}",
                self.max_iterations
            )));
        }
        if self.min_iterations == 0 || self.min_iterations > self.max_iterations {
            return Err(Error::InvalidArgument(format!(
                "min_iterations {} must be in 1..=max_iterations ({})",
                self.min_iterations, self.max_iterations
            )));
        }
        self.exit.validate()?;
        let screen = self.exit_screen.criterion;
        if screen != ExitCriterion::None {
            if !matches!(screen, ExitCriterion::Cosine | ExitCriterion::LatentDiff) {
                return Err(Error::InvalidArgument(format!(
                    "exit screen {:?}: a screen is a latent criterion (cosine or latent-diff)",
                    screen.name()
                )));
            }
            if !self.exit.criterion.needs_logits() {
                return Err(Error::InvalidArgument(format!(
                    "exit screen {:?} with exit criterion {:?}: a screen only goes before a \
                     criterion on the next-token distribution (kl, minp-kl, entropy-diff, \
                     argmax-stability, confidence)",
                    screen.name(),
                    self.exit.criterion.name()
                )));
            }
            self.exit_screen.validate().map_err(|e| match e {
                Error::InvalidArgument(m) => Error::InvalidArgument(format!("exit screen: {m}")),
                e => e,
            })?;
        }
        let pre = self.prefill_exit.criterion;
        if pre != ExitCriterion::None {
            if !matches!(pre, ExitCriterion::Cosine | ExitCriterion::LatentDiff) {
                return Err(Error::InvalidArgument(format!(
                    "prefill exit {:?}: the prompt's exit is a latent criterion (cosine or \
                     latent-diff)",
                    pre.name()
                )));
            }
            if self.exit_in_prefill {
                return Err(Error::InvalidArgument(
                    "prefill exit with exit_in_prefill: the prompt has one exit, choose either"
                        .into(),
                ));
            }
            self.prefill_exit.validate().map_err(|e| match e {
                Error::InvalidArgument(m) => Error::InvalidArgument(format!("prefill exit: {m}")),
                e => e,
            })?;
        }
        Ok(())
    }

    /// Whether a screen goes before the exit criterion (see
    /// [`ComputeLimits::exit_screen`]).
    pub fn is_screened(&self) -> bool {
        self.exit_screen.criterion.needs_latent()
            && self.exit_screen.criterion != ExitCriterion::Gate
            && self.exit.criterion.needs_logits()
    }

    /// The prompt's exit a generation uses when it chooses the prompt's
    /// budget itself (`GenerateParams::prefill_iterations` = `None`): with an
    /// exit criterion for the tokens (other than `gate`), no exits in the
    /// prompt and no `prefill_exit` of its own, [`AUTO_PREFILL_EXIT`]; the
    /// limits' own `prefill_exit` otherwise.
    pub fn prompt_exit(&self, automatic: bool) -> ExitSpec {
        let c = self.exit.criterion;
        if automatic
            && self.prefill_exit.criterion == ExitCriterion::None
            && c != ExitCriterion::None
            && c != ExitCriterion::Gate
            && !self.exit_in_prefill
        {
            AUTO_PREFILL_EXIT
        } else {
            self.prefill_exit
        }
    }

    /// [`ComputeLimits::validate`], and whether `model` can honour the
    /// limits: a model without recurrence has no exit criteria.
    pub fn validate_for(&self, model: &Model) -> Result<()> {
        self.validate()?;
        if !model.config().has_recurrence() && self.exit.criterion != ExitCriterion::None {
            return Err(Error::InvalidArgument(format!(
                "exit criterion {:?}: the model has no recurrence to exit from",
                self.exit.criterion.name()
            )));
        }
        if !model.config().has_recurrence() && self.prefill_exit.criterion != ExitCriterion::None {
            return Err(Error::InvalidArgument(format!(
                "prefill exit {:?}: the model has no recurrence to exit from",
                self.prefill_exit.criterion.name()
            )));
        }
        if self.exit.criterion == ExitCriterion::Gate && model.exit_gate().is_none() {
            return Err(Error::InvalidArgument(
                "exit criterion \"gate\": the model has no learned exit gate".into(),
            ));
        }
        Ok(())
    }

    /// These limits with an automatic `check_every` (0) made concrete for
    /// `model`; other values are kept. For a model without recurrence every
    /// token runs once through the blocks: the iteration limits become 1.
    ///
    /// A token that could stop after `T` steps, checked every `k` steps,
    /// runs on average `(k - 1) / 2` steps past `T` and pays about `T / k`
    /// checks of `c` steps each (`c`: [`Model::check_cost_in_steps`]); the
    /// sum is least at `k = sqrt(2 c T)`. `T` is the model's default
    /// iteration count within `[min_iterations, max_iterations]`, a stand-in
    /// for where tokens stop. Latent criteria read the state, not the head:
    /// their checks are nearly free and `k` is 1. The choice depends only on
    /// the model file, so generations stay reproducible.
    pub fn resolve_check_every(mut self, model: &Model) -> ComputeLimits {
        if !model.config().has_recurrence() {
            self.min_iterations = 1;
            self.max_iterations = 1;
        }
        if self.check_every != 0 {
            return self;
        }
        self.check_every = if self.exit.criterion.needs_logits() {
            let t = model
                .config()
                .default_iterations
                .clamp(self.min_iterations, self.max_iterations.max(1));
            let k = (2.0 * model.check_cost_in_steps() * t as f64)
                .sqrt()
                .round();
            (k as usize).clamp(1, 8)
        } else {
            1
        };
        self
    }

    /// Whether a token's first check of the exit criterion is a lead-in that
    /// cannot end it (see [`ComputeLimits::lead_in`]).
    pub fn has_lead_in(&self) -> bool {
        self.lead_in && self.exit.criterion.compares_checks()
    }

    /// Whether the criterion is evaluated after step `t` (1-based).
    fn is_check(&self, t: usize) -> bool {
        t == self.max_iterations
            || self.exit.criterion.observes_every_step()
            || (self.exit.criterion != ExitCriterion::None
                && t >= self.min_iterations
                && (t - self.min_iterations).is_multiple_of(self.check_every))
    }

    /// The first check step after step `t`.
    fn next_check(&self, t: usize) -> usize {
        let mut c = t + 1;
        while !self.is_check(c) {
            c += 1;
        }
        c
    }

    /// The graphs a token runs from after step `t` to the next check: calls
    /// `f` with each segment and returns the step of that check. With
    /// `logits` the check's graph ends with the coda and head (always at
    /// `max_iterations`). With `lead`, the next check is a lead-in
    /// ([`ComputeLimits::lead_in`]): when the check after it is less than
    /// [`STEPS_PER_GRAPH`] steps further and not past the maximum, both
    /// share one graph and the step of the second is returned (the lead-in's
    /// result is in the session, see [`Segment::lead_at`]).
    fn segments_to_next_check(
        &self,
        t: usize,
        on_device: bool,
        logits: bool,
        lead: bool,
        mut f: impl FnMut(Segment) -> Result<()>,
    ) -> Result<usize> {
        let mut target = self.next_check(t);
        let mut lead_step = None;
        if lead && target < self.max_iterations {
            let second = self.next_check(target);
            if second - target < STEPS_PER_GRAPH {
                lead_step = Some(target);
                target = second;
            }
        }
        let mut t = t;
        while t < target {
            let rest = target - t;
            // With a lead-in the last graph holds a full STEPS_PER_GRAPH
            // steps when it can, so that the lead-in falls inside it.
            let n = if lead_step.is_some() && rest > STEPS_PER_GRAPH {
                (rest - STEPS_PER_GRAPH).min(STEPS_PER_GRAPH)
            } else {
                rest.min(STEPS_PER_GRAPH)
            };
            let at_target = t + n == target;
            let coda = if at_target && (logits || target == self.max_iterations) {
                CodaMode::Last
            } else {
                CodaMode::None
            };
            let lead_at = match lead_step {
                Some(l) if at_target => l - t,
                _ => 0,
            };
            f(Segment {
                prelude: t == 0,
                first_step: t + 1,
                n_steps: n,
                coda,
                exit_stats: on_device && coda == CodaMode::Last,
                lead_at,
                lead_coda: lead_at > 0 && logits,
            })?;
            t += n;
        }
        Ok(target)
    }

    /// The coda a latent criterion runs after it decided to exit at step `t`.
    fn latent_exit_coda(t: usize) -> Segment {
        Segment {
            prelude: false,
            first_step: t + 1,
            n_steps: 0,
            coda: CodaMode::Last,
            exit_stats: false,
            lead_at: 0,
            lead_coda: false,
        }
    }

    /// Appends every graph a one-token batch can run under these limits
    /// (whatever step it exits at) to `out`, each with the number of
    /// exit-statistic checks its token ran before it.
    fn token_segments(&self, on_device: bool, out: &mut Vec<(Segment, usize)>) -> Result<()> {
        let needs_logits = self.exit.criterion.needs_logits();
        // A screened token runs the check graphs without the coda until its
        // screen passes, with it after: the same segments, both ways.
        let ways: &[bool] = if self.is_screened() {
            &[true, false]
        } else {
            &[needs_logits]
        };
        let lead = self.has_lead_in() && !self.is_screened();
        for &logits in ways {
            let mut t = 0;
            let mut checks = 0;
            while t < self.max_iterations {
                t = self.segments_to_next_check(t, on_device, logits, lead && t == 0, |seg| {
                    out.push((seg, checks));
                    checks += seg.exit_stats as usize * (1 + seg.lead_coda as usize);
                    Ok(())
                })?;
            }
        }
        if (self.exit.criterion.needs_latent() && !needs_logits) || self.is_screened() {
            out.push((Self::latent_exit_coda(self.max_iterations), 0));
        }
        Ok(())
    }
}

/// The prompt's exit of an automatic prompt budget (see
/// [`ComputeLimits::prompt_exit`]): stop the prompt once no position's
/// state turns by more than a cosine distance of 1e-2 in a step. On the
/// demo model it took `kl:5e-4` (2..32) from 0.78x to 0.61x of the time of
/// 8 fixed iterations, with 294 of 300 answers right against 293
/// (docs/performance.md, "Do exits pay?").
pub const AUTO_PREFILL_EXIT: ExitSpec = ExitSpec {
    criterion: ExitCriterion::Cosine,
    threshold: 1e-2,
};

/// Parameters of one generation call.
#[derive(Clone, Debug, PartialEq)]
pub struct GenerateParams {
    /// Most tokens to generate.
    pub max_tokens: usize,
    /// Limits for generated tokens (changeable from the callback).
    pub limits: ComputeLimits,
    /// Iterations for the prompt. Default `None`, chosen by the runtime:
    /// without an exit criterion `limits.max_iterations` (what every token
    /// runs); with one, up to the model's default iteration count (the
    /// recurrence it was trained for, GGUF `huginn.recurrence.default`) kept
    /// within `[limits.min_iterations, limits.max_iterations]`, so that an
    /// exit criterion with a large maximum does not pay the maximum for
    /// every prompt position, and stopping early once the prompt's states
    /// settle ([`ComputeLimits::prompt_exit`], [`AUTO_PREFILL_EXIT`];
    /// docs/semantics.md, section 4). `Some(n)` runs the prompt at exactly
    /// `n` (with `limits.prefill_exit`, if set, up to `n`).
    /// `Some(limits.max_iterations)` is the authors' behaviour.
    pub prefill_iterations: Option<usize>,
    /// Sampling.
    pub sampling: SamplingParams,
    /// Generation stops after producing one of these (it is reported, then
    /// stop). Ids must be in the vocabulary.
    pub stop_tokens: Vec<u32>,
    /// Self-speculative decoding (off by default; docs/semantics.md,
    /// section "Speculative decoding"). Needs limits with a fixed budget
    /// (no exit criterion) and no warm start; while a callback sets limits
    /// that are not, tokens are decoded one by one.
    pub draft: DraftParams,
}

impl Default for GenerateParams {
    fn default() -> Self {
        GenerateParams {
            max_tokens: 64,
            limits: ComputeLimits::default(),
            prefill_iterations: None,
            sampling: SamplingParams::greedy(),
            stop_tokens: Vec::new(),
            draft: DraftParams::default(),
        }
    }
}

/// One generated token, as reported to the callback.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TokenEvent {
    /// Token id.
    pub token: u32,
    /// Core iterations this token's distribution came from.
    pub iterations: usize,
    /// Value of the exit criterion at the last check (NaN if none was
    /// evaluated). For the first token, the prompt's last check: of the
    /// prompt's exit (`prefill_exit`, the largest over the positions) or of
    /// `exit` with `exit_in_prefill`.
    pub exit_value: f64,
    /// Index of the token in this generation (0-based).
    pub index: usize,
    /// Natural log of the probability the model gave this token: the log
    /// softmax of the raw logits it was sampled from (before temperature,
    /// penalties and filters).
    pub logprob: f32,
    /// Generation ends after this token whatever the callback returns: it is
    /// the last of `max_tokens`, a stop token, or the context has no room to
    /// evaluate it. A streaming detokenizer flushes what it holds back here.
    pub last: bool,
}

/// Why generation ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopReason {
    /// `max_tokens` reached.
    MaxTokens,
    /// A stop token was produced.
    StopToken,
    /// The callback asked to stop.
    Callback,
    /// The context had no room to evaluate the last token reported (which
    /// was sampled, and reported, but is not in the cache).
    ContextFull,
}

/// Statistics of one generation call.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct GenerateStats {
    /// Tokens generated.
    pub tokens: usize,
    /// Prompt tokens evaluated.
    pub prompt_tokens: usize,
    /// Seconds spent on the prompt.
    pub prefill_seconds: f64,
    /// Seconds spent generating.
    pub decode_seconds: f64,
    /// Mean core iterations per generated token.
    pub mean_iterations: f64,
    /// Iterations the prompt ran.
    pub prefill_iterations: usize,
    /// KV cache bytes of the session.
    pub kv_bytes: usize,
    /// Why generation ended.
    pub stop: StopReason,
    /// Tokens drafted by speculative decoding (0 without it).
    pub draft_tokens: usize,
    /// Drafted tokens the verifier accepted.
    pub draft_accepted: usize,
    /// Speculative verification passes (each reports its accepted drafts
    /// and one token of its own).
    pub verify_passes: usize,
}

/// Reports tokens to the callback and keeps the call's counts.
struct Reporter<'a> {
    stats: GenerateStats,
    /// The prompt and the tokens reported so far.
    history: Vec<u32>,
    total_iters: usize,
    /// Tokens this call may report (`requested`, capped by the context).
    max_tokens: usize,
    requested: usize,
    stop_tokens: &'a [u32],
}

impl Reporter<'_> {
    /// Reports `token` and returns why generation stops after it, if it does.
    fn report(
        &mut self,
        token: u32,
        iterations: usize,
        exit_value: f64,
        logprob: f32,
        limits: &mut ComputeLimits,
        on_token: &mut impl FnMut(&TokenEvent, &mut ComputeLimits) -> bool,
    ) -> Result<Option<StopReason>> {
        let index = self.stats.tokens;
        self.history.push(token);
        self.stats.tokens += 1;
        self.total_iters += iterations;
        let at_end = index + 1 == self.max_tokens;
        let is_stop = self.stop_tokens.contains(&token);
        let ev = TokenEvent {
            token,
            iterations,
            exit_value,
            index,
            logprob,
            last: at_end || is_stop,
        };
        let go_on = on_token(&ev, limits);
        Ok(if is_stop {
            Some(StopReason::StopToken)
        } else if !go_on {
            Some(StopReason::Callback)
        } else if at_end {
            Some(if self.max_tokens < self.requested {
                StopReason::ContextFull
            } else {
                StopReason::MaxTokens
            })
        } else {
            None
        })
    }
}

/// The last `n` entries of `history` (the repetition penalty's window).
fn recent(history: &[u32], n: usize) -> &[u32] {
    &history[history.len().saturating_sub(n)..]
}

/// Per-call working memory, allocated once per call.
struct Work {
    exit: ExitState,
    state: Vec<f32>,
    prev_state: Vec<f32>,
    have_prev: bool,
    /// Running speculative drafts: the slots a draft does not reach are
    /// neither read by the next drafts nor kept (the verification rewrites
    /// them), so the latest-entry fill is skipped.
    drafting: bool,
    /// The prompt's exit over every position (`prefill_exit`): the states
    /// read back and the previous check's; empty without one.
    batch_exit: Option<(Vec<f32>, BatchLatentState)>,
}

impl Session {
    /// Evaluates `prompt` (may be empty to continue from the cache), then
    /// generates up to `params.max_tokens` tokens. `on_token` sees every token and
    /// may change the limits of the next token; returning false stops.
    ///
    /// A prompt that does not fit in the context is [`Error::ContextFull`]
    /// (nothing is evaluated); a generation that fills the context ends with
    /// [`StopReason::ContextFull`]. An empty prompt continues from the logits
    /// of the last cached position: [`Error::InvalidArgument`] on an empty
    /// cache, [`Error::InvalidState`] when the last evaluation failed or was
    /// cancelled.
    pub fn generate(
        &mut self,
        prompt: &[u32],
        params: &GenerateParams,
        mut on_token: impl FnMut(&TokenEvent, &mut ComputeLimits) -> bool,
    ) -> Result<GenerateStats> {
        let prefill_iters = self.check_request(prompt, params)?;
        let mut limits = params.limits.resolve_check_every(self.model());
        // Every generated token but the last needs a free position.
        let room = self.n_ctx() - (self.n_past() + prompt.len());
        let max_tokens = params.max_tokens.min(room + 1);
        let cfg = self.model().config().clone();
        // Plan the memory of every graph a generated token can run, so that
        // decoding allocates nothing (limits changed by the callback to ones
        // never planned are planned on first use).
        let mut shapes = Vec::new();
        limits.token_segments(self.token_exit_on_device(&limits), &mut shapes)?;
        self.plan_token_graphs(&shapes)?;
        let mut sampler = Sampler::new(cfg.n_vocab, params.sampling)?;
        let mut spec = None;
        if params.draft.enabled() {
            let sp = Speculator::new(params.draft, params.sampling.is_greedy(), cfg.n_vocab)?;
            sp.plan(self, &limits)?;
            spec = Some(sp);
        }
        // Reported tokens, and drafts during a speculative round.
        let history_len = prompt.len() + max_tokens + params.draft.tokens;
        let mut history: Vec<u32> = Vec::with_capacity(history_len);
        history.extend_from_slice(prompt);
        let mut exit = ExitState::new(cfg.n_vocab, cfg.n_embd);
        exit.set_gate(self.model().exit_gate().cloned());
        let mut w = Work {
            exit,
            state: vec![0.0; cfg.n_embd],
            prev_state: vec![0.0; cfg.n_embd],
            have_prev: false,
            drafting: false,
            batch_exit: None,
        };

        let t0 = Instant::now();
        let mut prefill_used = 0;
        let mut prefill_value = f64::NAN;
        if !prompt.is_empty() {
            let mut pl = limits;
            pl.max_iterations = prefill_iters;
            pl.min_iterations = pl.min_iterations.min(prefill_iters);
            let prompt_exit = limits.prompt_exit(params.prefill_iterations.is_none());
            if prompt_exit.criterion != ExitCriterion::None {
                // Every position's state, read back at each step.
                pl.exit = prompt_exit;
                pl.exit_screen = ExitSpec::default();
                pl.check_every = 1;
                let rows = self.n_batch().min(prompt.len());
                w.batch_exit = Some((
                    vec![0.0; rows * cfg.n_embd],
                    BatchLatentState::new(rows, cfg.n_embd),
                ));
            } else if !limits.exit_in_prefill {
                pl.exit = ExitSpec::default();
            }
            let n_chunks = prompt.len().div_ceil(self.n_batch());
            // The prompt's exit decides each chunk on its own positions; a
            // criterion on the last position only decides the last chunk.
            let per_chunk = w.batch_exit.is_some();
            for (i, chunk) in prompt.chunks(self.n_batch()).enumerate() {
                let last = i + 1 == n_chunks;
                let chunk_limits = if last || per_chunk {
                    pl
                } else {
                    ComputeLimits {
                        exit: ExitSpec::default(),
                        ..pl
                    }
                };
                let (used, value) = self.run_token(chunk, &chunk_limits, &mut w)?;
                prefill_used = used;
                prefill_value = value;
            }
        }
        w.batch_exit = None;
        let prefill_seconds = t0.elapsed().as_secs_f64();
        let t1 = Instant::now();
        let stats = GenerateStats {
            tokens: 0,
            prompt_tokens: prompt.len(),
            prefill_seconds,
            decode_seconds: 0.0,
            mean_iterations: 0.0,
            prefill_iterations: prefill_used,
            kv_bytes: self.kv_bytes(),
            stop: StopReason::MaxTokens,
            draft_tokens: 0,
            draft_accepted: 0,
            verify_passes: 0,
        };
        // Without a prompt the first token is sampled from the logits the cache
        // already holds (e.g. after `eval`): report the iterations they used.
        let first_iterations = if prompt.is_empty() {
            self.last_iterations()
        } else {
            prefill_used
        };
        let mut out = Reporter {
            stats,
            history,
            total_iters: 0,
            max_tokens,
            requested: params.max_tokens,
            stop_tokens: &params.stop_tokens,
        };
        if max_tokens > 0 {
            // The first token's exit value: the prompt's last check (NaN
            // unless exits were checked in the prompt).
            self.decode(
                params,
                &mut limits,
                &mut sampler,
                &mut spec,
                &mut w,
                &mut out,
                (first_iterations, prefill_value),
                &mut on_token,
            )?;
        }
        let mut stats = out.stats;
        stats.decode_seconds = t1.elapsed().as_secs_f64();
        stats.mean_iterations = if stats.tokens > 0 {
            out.total_iters as f64 / stats.tokens as f64
        } else {
            0.0
        };
        if let Some(sp) = &spec {
            stats.draft_tokens = sp.drafted;
            stats.draft_accepted = sp.accepted;
            stats.verify_passes = sp.passes;
        }
        Ok(stats)
    }

    /// The decoding loop: samples and reports tokens from the logits the
    /// session holds, evaluating each reported token (one by one, or in
    /// speculative rounds) until a stop.
    #[allow(clippy::too_many_arguments)]
    fn decode(
        &mut self,
        params: &GenerateParams,
        limits: &mut ComputeLimits,
        sampler: &mut Sampler,
        spec: &mut Option<Speculator>,
        w: &mut Work,
        out: &mut Reporter,
        (mut iterations, mut exit_value): (usize, f64),
        on_token: &mut impl FnMut(&TokenEvent, &mut ComputeLimits) -> bool,
    ) -> Result<()> {
        let last_n = params.sampling.repeat_last_n;
        let mut token = sampler.sample(self.logits(), recent(&out.history, last_n));
        let logprob = crate::sampling::log_softmax_at(self.logits(), token);
        let mut flow = out.report(token, iterations, exit_value, logprob, limits, on_token)?;
        limits.validate_for(self.model())?;
        *limits = limits.resolve_check_every(self.model());
        // Here `token` is reported and not evaluated.
        while flow.is_none() {
            let tokens_left = out.max_tokens - out.stats.tokens;
            let free = self.n_ctx() - self.n_past();
            let k = match spec {
                Some(sp) if speculative::verifiable(limits) => sp.next_k(tokens_left, free),
                _ => 0,
            };
            if let (true, Some(sp)) = (k > 0, spec.as_mut()) {
                let mut dec = speculative::Decoding {
                    sampler,
                    history: &mut out.history,
                    w,
                };
                let start = self.speculative_round(token, k, limits, sp, &mut dec)?;
                // Report the round's tokens until a stop, or until the callback
                // changes the limits (later tokens were computed under the
                // old ones: they are dropped and decoded again).
                let mut kept = sp.out.len();
                let mut failed = None;
                for i in 0..sp.out.len() {
                    let before = *limits;
                    let t = sp.out[i];
                    let logprob = crate::sampling::log_softmax_at(sp.row(i), t);
                    let r = limits.max_iterations;
                    let reported = out
                        .report(t, r, f64::NAN, logprob, limits, on_token)
                        .and_then(|f| limits.validate_for(self.model()).map(|()| f));
                    match reported {
                        Ok(f) => flow = f,
                        Err(e) => failed = Some(e),
                    }
                    *limits = limits.resolve_check_every(self.model());
                    if failed.is_none() && self.take_cancel() {
                        // Raised while the round's tokens were reported: stop
                        // as plain decoding stops in the next evaluation.
                        failed = Some(Error::Cancelled);
                    }
                    if flow.is_some() || failed.is_some() || *limits != before {
                        kept = i + 1;
                        break;
                    }
                }
                // Whatever ended the reporting, the cache holds what plain
                // decoding would hold after the last reported token.
                self.commit_round(&start, kept, sp.row(kept - 1));
                token = sp.out[kept - 1];
                match failed {
                    Some(Error::Cancelled) => {
                        self.cancelled_after_round();
                        return Err(Error::Cancelled);
                    }
                    Some(e) => return Err(e),
                    None => {}
                }
            } else {
                (iterations, exit_value) = self.run_token(&[token], limits, w)?;
                token = sampler.sample(self.logits(), recent(&out.history, last_n));
                let logprob = crate::sampling::log_softmax_at(self.logits(), token);
                flow = out.report(token, iterations, exit_value, logprob, limits, on_token)?;
                limits.validate_for(self.model())?;
                *limits = limits.resolve_check_every(self.model());
            }
        }
        if let Some(reason) = flow {
            out.stats.stop = reason;
        }
        Ok(())
    }

    /// Validates a generation request before anything runs; returns the
    /// prompt's iteration count.
    fn check_request(&self, prompt: &[u32], params: &GenerateParams) -> Result<usize> {
        params.limits.validate_for(self.model())?;
        params.sampling.validate()?;
        params.draft.validate()?;
        let recurrent = self.model().config().has_recurrence();
        if params.draft.enabled() {
            if !recurrent {
                return Err(Error::InvalidArgument(
                    "speculative decoding drafts with fewer iterations: the model has \
                     no recurrence"
                        .into(),
                ));
            }
            if !speculative::verifiable(&params.limits) {
                return Err(Error::InvalidArgument(
                    "speculative decoding verifies at a fixed budget: it needs limits \
                     without an exit criterion and without warm start"
                        .into(),
                ));
            }
            if params.draft.tokens >= self.n_batch() {
                return Err(Error::InvalidArgument(format!(
                    "draft tokens {} need a batch of {} positions; the session's n_batch is {}",
                    params.draft.tokens,
                    params.draft.tokens + 1,
                    self.n_batch()
                )));
            }
        }
        let n_vocab = self.model().config().n_vocab;
        if let Some(t) = params.stop_tokens.iter().find(|&&t| t as usize >= n_vocab) {
            return Err(Error::InvalidArgument(format!(
                "stop token id {t} out of range (vocabulary {n_vocab})"
            )));
        }
        let prefill_iters = params.prefill_iterations.unwrap_or_else(|| {
            let l = &params.limits;
            if l.exit.criterion == ExitCriterion::None {
                // Every token runs the maximum; so does the prompt.
                l.max_iterations
            } else {
                self.model()
                    .config()
                    .default_iterations
                    .clamp(l.min_iterations, l.max_iterations)
            }
        });
        if prefill_iters == 0 || prefill_iters > MAX_ITERATIONS {
            return Err(Error::InvalidArgument(format!(
                "prefill_iterations {prefill_iters} out of range 1..={MAX_ITERATIONS}"
            )));
        }
        let prefill_iters = if recurrent { prefill_iters } else { 1 };
        if !prompt.is_empty() {
            self.check_tokens(prompt)?;
        } else if self.n_past() == 0 {
            return Err(Error::InvalidArgument(
                "no tokens and an empty cache: nothing to generate from".into(),
            ));
        } else if !self.has_logits() {
            return Err(Error::InvalidState(
                "no tokens, and the last evaluation failed or was cancelled: \
                 pass the tokens to continue from"
                    .into(),
            ));
        }
        Ok(prefill_iters)
    }

    /// Whether checks under `limits` compute their statistics in the graph:
    /// kl, entropy-diff, argmax-stability and confidence reduce to four numbers the graph
    /// can compute; on a GPU a check then reads those, not the logits.
    fn token_exit_on_device(&self, limits: &ComputeLimits) -> bool {
        let c = limits.exit.criterion;
        c.needs_logits() && self.exit_on_device() && c.device_computable() && !limits.is_screened()
    }

    /// Runs one batch (a prompt chunk or one token) under `limits`; returns the
    /// iterations used and the last exit value. Leaves logits of the last
    /// position in [`Session::logits`].
    fn run_token(
        &mut self,
        tokens: &[u32],
        limits: &ComputeLimits,
        w: &mut Work,
    ) -> Result<(usize, f64)> {
        self.begin_batch(tokens)?;
        if limits.warm_start && w.have_prev && tokens.len() == 1 {
            self.set_initial_state(&w.prev_state);
        }
        w.exit.reset();
        if let Some((_, b)) = &mut w.batch_exit {
            b.reset();
        }
        let spec = limits.exit;
        let needs_logits = spec.criterion.needs_logits();
        let on_device = self.token_exit_on_device(limits);
        // Until the screen (if any) passes, checks compare states only.
        let mut screening = limits.is_screened();
        // A lead-in shares the first graph with the check after it.
        let fuse_lead = limits.has_lead_in() && !screening;
        // Checks of `spec` this token (the first is a lead-in when
        // `limits.has_lead_in()`).
        let mut checks = 0usize;
        let mut t = 0;
        let mut value = f64::NAN;
        loop {
            // Up to the next step at which something must be observed.
            let logits = needs_logits && !screening;
            let mut lead_ran = false;
            t = limits.segments_to_next_check(
                t,
                on_device,
                logits,
                fuse_lead && t == 0,
                |seg| {
                    lead_ran |= seg.lead_at > 0;
                    self.run_segment(seg, None)?;
                    if self.take_cancel() {
                        return Err(Error::Cancelled);
                    }
                    Ok(())
                },
            )?;
            if lead_ran {
                // The lead-in check, observed before the check that ended the graph.
                if on_device {
                    let st = self.lead_exit_stats();
                    w.exit
                        .observe_stats(&spec, st.neg_entropy, st.kl_term, st.argmax, st.max_logp);
                } else if needs_logits {
                    w.exit.observe_logits(&spec, self.lead_logits());
                } else if let Some((rows, b)) = &mut w.batch_exit {
                    let n = self.read_batch_states(rows, true)?;
                    b.observe(&spec, &rows[..n]);
                } else {
                    self.read_state(&mut w.state, true)?;
                    w.exit.observe_latent(&spec, &w.state);
                }
                checks += 1;
            }
            if screening {
                if t >= limits.max_iterations {
                    // The last step's graph ran the coda: the token ends.
                    break;
                }
                self.read_last_state(&mut w.state)?;
                let screen = w.exit.observe_latent(&limits.exit_screen, &w.state);
                if !limits.exit_screen.should_exit(screen) {
                    continue;
                }
                // Passed: the coda on this state, and the criterion's first check.
                screening = false;
                self.run_segment(ComputeLimits::latent_exit_coda(t), None)?;
                value = w.exit.observe_logits(&spec, self.logits());
            } else if on_device {
                let st = self.last_exit_stats();
                value =
                    w.exit
                        .observe_stats(&spec, st.neg_entropy, st.kl_term, st.argmax, st.max_logp);
            } else if needs_logits {
                value = w.exit.observe_logits(&spec, self.logits());
            } else if let Some((rows, b)) = &mut w.batch_exit {
                let n = self.read_batch_states(rows, false)?;
                value = b.observe(&spec, &rows[..n]);
            } else if spec.criterion.needs_latent() {
                self.read_last_state(&mut w.state)?;
                value = w.exit.observe_latent(&spec, &w.state);
            }
            if !screening {
                checks += 1;
            }
            if t >= limits.max_iterations {
                break;
            }
            let lead_in = limits.has_lead_in() && checks == 1;
            if t >= limits.min_iterations && !lead_in && spec.should_exit(value) {
                if !needs_logits {
                    // Latent exit: the coda has not run at this step yet.
                    self.run_segment(ComputeLimits::latent_exit_coda(t), None)?;
                }
                break;
            }
        }
        if on_device {
            // Every coda of this batch ran at a check: the last logits are
            // the stored ones.
            self.load_stored_logits()?;
        }
        if !w.drafting {
            self.fill_unreached_slots(t)?;
        }
        if limits.warm_start {
            self.read_last_state(&mut w.prev_state)?;
            w.have_prev = true;
        }
        self.end_batch();
        self.set_last_iterations(t);
        Ok((t, value))
    }
}
