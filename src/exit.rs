//! Early-exit criteria for the recurrent core (docs/semantics.md, section 2).
//!
//! Per generated token the caller runs the recurrence and, at each check
//! (every `check_every` steps after `min_iterations`), feeds either the
//! next-token logits (criteria that need the coda and the head) or the latent
//! state `x_t` (the cheap criteria) to an [`ExitState`], then asks the
//! [`ExitSpec`] whether to stop:
//!
//! | criterion | value at a check | exits when |
//! |---|---|---|
//! | `kl` | `KL(p_{t-1} ‖ p_t)` | value < threshold |
//! | `minp-kl` | the same between min-p(0.1) filtered distributions | value < threshold |
//! | `entropy-diff` | `abs(H_t - H_{t-1})` | value < threshold |
//! | `latent-diff` | `‖x_t - x_{t-1}‖ / ‖x_t‖` | value < threshold |
//! | `cosine` | `1 - cos(x_t, x_{t-1})` | value < threshold |
//! | `argmax-stability` | consecutive checks with an unchanged argmax | value >= threshold |
//! | `gate` | a learned gate's exit probability, accumulated (Ouro) | value >= threshold |
//!
//! These are the authors' definitions (`raven_modeling_minimal.py`'s exit
//! evaluators; docs/semantics.md): the KL divergence runs from the previous
//! check's distribution to the current one. At the first check of a token
//! (after [`ExitState::reset`]) the previous distribution is uniform, so `kl`
//! gives `KL(uniform ‖ p) = -ln V - mean(ln p)`; `entropy-diff` compares with
//! an entropy of 100 nats (so the first check never exits); min-p filtering
//! (`minp-kl`) sets every probability below `0.1 p_max` to `1/V` and
//! renormalises; `argmax-stability` gives 0; `latent-diff` and `cosine` give
//! 1.0 (no previous state, never "converged").
//!
//! All arithmetic is in `f64` over the `f32` inputs, with a numerically stable
//! log-softmax. [`ExitState::new`] allocates every buffer once; the `observe_*`
//! calls never allocate.

use std::fmt;
use std::str::FromStr;

use crate::{Error, Result};

/// Min-p level used by the `minp-kl` criterion: tokens with
/// `p < MINP_KL_LEVEL * p_max` are dropped before the KL divergence.
pub const MINP_KL_LEVEL: f64 = 0.1;

/// Floor on a current probability that is zero where the previous one is not
/// (KL terms of `kl`), so the divergence stays finite.
pub const KL_PROB_FLOOR: f64 = 1e-10;

/// The entropy (nats) `entropy-diff` compares the first check of a token
/// with: far above any vocabulary's `ln V`, so the first check never exits
/// (the authors' convention).
pub const FIRST_CHECK_ENTROPY: f64 = 100.0;

/// An early-exit criterion.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum ExitCriterion {
    /// Never exit early: always run `max_iterations`.
    #[default]
    None,
    /// KL divergence between successive next-token distributions.
    Kl,
    /// KL divergence after min-p(0.1) filtering of both distributions.
    MinpKl,
    /// Absolute change of the next-token distribution's entropy.
    EntropyDiff,
    /// Relative change of the latent state: `‖x_t - x_{t-1}‖ / ‖x_t‖`.
    LatentDiff,
    /// Cosine distance between successive latent states: `1 - cos`.
    Cosine,
    /// Number of consecutive checks with an unchanged argmax.
    ArgmaxStability,
    /// The model's learned exit gate (Ouro): the probability, accumulated
    /// over the steps so far, that the token has exited (see [`ExitGate`]).
    /// Observed at every step; needs a model with a gate.
    Gate,
    /// The top probability of the current check's next-token distribution
    /// ("softmax confidence"). The only logits criterion that needs no
    /// previous check, so a token's first check can already exit: one coda
    /// per check instead of at least two. Added in 0.5.
    Confidence,
}

impl ExitCriterion {
    /// Every criterion, in declaration order.
    pub const ALL: [ExitCriterion; 9] = [
        ExitCriterion::None,
        ExitCriterion::Kl,
        ExitCriterion::MinpKl,
        ExitCriterion::EntropyDiff,
        ExitCriterion::LatentDiff,
        ExitCriterion::Cosine,
        ExitCriterion::ArgmaxStability,
        ExitCriterion::Gate,
        ExitCriterion::Confidence,
    ];

    /// The criterion's name as parsed by [`FromStr`] (`"kl"`, `"minp-kl"`, ...).
    pub fn name(self) -> &'static str {
        match self {
            ExitCriterion::None => "none",
            ExitCriterion::Kl => "kl",
            ExitCriterion::MinpKl => "minp-kl",
            ExitCriterion::EntropyDiff => "entropy-diff",
            ExitCriterion::LatentDiff => "latent-diff",
            ExitCriterion::Cosine => "cosine",
            ExitCriterion::ArgmaxStability => "argmax-stability",
            ExitCriterion::Gate => "gate",
            ExitCriterion::Confidence => "confidence",
        }
    }

    /// The usual threshold (docs/semantics.md): kl 5e-4, minp-kl 1e-5,
    /// entropy-diff 1e-3, latent-diff 0.03, cosine 1e-3, argmax-stability 5,
    /// gate 0.9, confidence 0.9; 0 for `none` (unused).
    pub fn default_threshold(self) -> f64 {
        match self {
            ExitCriterion::None => 0.0,
            ExitCriterion::Kl => 5e-4,
            ExitCriterion::MinpKl => 1e-5,
            ExitCriterion::EntropyDiff => 1e-3,
            ExitCriterion::LatentDiff => 0.03,
            ExitCriterion::Cosine => 1e-3,
            ExitCriterion::ArgmaxStability => 5.0,
            ExitCriterion::Gate => 0.9,
            ExitCriterion::Confidence => 0.9,
        }
    }

    /// Whether a check needs the next-token logits (running the coda and the
    /// head): true for kl, minp-kl, entropy-diff, argmax-stability and
    /// confidence.
    pub fn needs_logits(self) -> bool {
        matches!(
            self,
            ExitCriterion::Kl
                | ExitCriterion::MinpKl
                | ExitCriterion::EntropyDiff
                | ExitCriterion::ArgmaxStability
                | ExitCriterion::Confidence
        )
    }

    /// Whether a check's value follows from `sum p ln p`, `sum p ln p_prev`,
    /// the argmax and its log-probability alone (see
    /// [`ExitState::observe_stats`]), which a GPU computes in the graph: kl,
    /// entropy-diff, argmax-stability and confidence.
    pub fn device_computable(self) -> bool {
        matches!(
            self,
            ExitCriterion::Kl
                | ExitCriterion::EntropyDiff
                | ExitCriterion::ArgmaxStability
                | ExitCriterion::Confidence
        )
    }

    /// Whether a check needs only the latent state: true for latent-diff,
    /// cosine and gate.
    pub fn needs_latent(self) -> bool {
        matches!(
            self,
            ExitCriterion::LatentDiff | ExitCriterion::Cosine | ExitCriterion::Gate
        )
    }

    /// Whether a check compares this check with the token's previous one:
    /// kl, minp-kl, entropy-diff, argmax-stability, latent-diff and cosine.
    /// Their first check has only a conventional reference (the uniform
    /// distribution, 100 nats, no argmax, distance 1.0); with a lead-in
    /// (`ComputeLimits::lead_in`, the default) it cannot end a token.
    pub fn compares_checks(self) -> bool {
        // Every criterion on the distribution but confidence (one check
        // alone), and the latent ones but gate (which accumulates).
        (self.needs_logits() && self != ExitCriterion::Confidence)
            || (self.needs_latent() && self != ExitCriterion::Gate)
    }

    /// Whether the criterion accumulates over every step (gate), so that it
    /// is observed after each one, whatever `min_iterations` and
    /// `check_every` say (they still decide where it may exit).
    pub fn observes_every_step(self) -> bool {
        self == ExitCriterion::Gate
    }
}

impl fmt::Display for ExitCriterion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for ExitCriterion {
    type Err = Error;

    /// Parses a criterion name (see [`ExitCriterion::name`]); surrounding
    /// whitespace is ignored, case matters.
    fn from_str(s: &str) -> Result<Self> {
        let s = s.trim();
        ExitCriterion::ALL
            .into_iter()
            .find(|c| c.name() == s)
            .ok_or_else(|| {
                Error::InvalidArgument(format!(
                    "unknown exit criterion {s:?} (expected one of none, kl, minp-kl, \
                     entropy-diff, latent-diff, cosine, argmax-stability, gate, confidence)"
                ))
            })
    }
}

/// A criterion and its threshold, written `"name"` or `"name:threshold"`
/// (e.g. `"kl:5e-4"`, `"argmax-stability:3"`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ExitSpec {
    /// The criterion.
    pub criterion: ExitCriterion,
    /// The threshold; see [`ExitSpec::should_exit`] for its direction.
    pub threshold: f64,
}

impl Default for ExitSpec {
    /// No early exit.
    fn default() -> Self {
        Self::new(ExitCriterion::None)
    }
}

impl ExitSpec {
    /// `criterion` with its [default threshold](ExitCriterion::default_threshold).
    pub fn new(criterion: ExitCriterion) -> Self {
        Self {
            criterion,
            threshold: criterion.default_threshold(),
        }
    }

    /// `criterion` with an explicit threshold, validated.
    ///
    /// # Errors
    ///
    /// As [`ExitSpec::validate`].
    pub fn with_threshold(criterion: ExitCriterion, threshold: f64) -> Result<Self> {
        let spec = Self {
            criterion,
            threshold,
        };
        spec.validate()?;
        Ok(spec)
    }

    /// Checks the threshold: not NaN, not negative (`+inf` is allowed); for
    /// `argmax-stability` an integer `>= 1` (or `+inf`, never exit).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`] describing the bad threshold.
    pub fn validate(&self) -> Result<()> {
        let t = self.threshold;
        if t.is_nan() || t < 0.0 {
            return Err(Error::InvalidArgument(format!(
                "exit threshold for {} must be >= 0, got {t}",
                self.criterion
            )));
        }
        if self.criterion == ExitCriterion::ArgmaxStability
            && t.is_finite()
            && (t < 1.0 || t.fract() != 0.0)
        {
            return Err(Error::InvalidArgument(format!(
                "exit threshold for argmax-stability must be an integer >= 1, got {t}"
            )));
        }
        Ok(())
    }

    /// Whether a check's `value` (from [`ExitState::observe_logits`] or
    /// [`ExitState::observe_latent`]) means stop: `value < threshold` for kl,
    /// minp-kl, entropy-diff, latent-diff and cosine; `value >= threshold` for
    /// argmax-stability, gate and confidence; never for `none`. A NaN value
    /// never exits.
    pub fn should_exit(&self, value: f64) -> bool {
        match self.criterion {
            ExitCriterion::None => false,
            ExitCriterion::ArgmaxStability | ExitCriterion::Gate | ExitCriterion::Confidence => {
                value >= self.threshold
            }
            _ => value < self.threshold,
        }
    }
}

/// Free-function form of [`ExitSpec::should_exit`].
pub fn should_exit(spec: &ExitSpec, value: f64) -> bool {
    spec.should_exit(value)
}

impl fmt::Display for ExitSpec {
    /// Writes `name:threshold`, which [`FromStr`] parses back.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.criterion, self.threshold)
    }
}

impl FromStr for ExitSpec {
    type Err = Error;

    /// Parses `"name"` (default threshold) or `"name:threshold"`, then
    /// validates. The threshold accepts anything `f64` parses (`5e-4`,
    /// `0.03`, `inf`).
    fn from_str(s: &str) -> Result<Self> {
        let (name, threshold) = match s.split_once(':') {
            Some((name, t)) => (name, Some(t.trim())),
            None => (s, None),
        };
        let criterion = name.parse::<ExitCriterion>()?;
        let threshold = match threshold {
            None => criterion.default_threshold(),
            Some(t) => t.parse::<f64>().map_err(|e| {
                Error::InvalidArgument(format!("bad exit threshold {t:?} in {s:?}: {e}"))
            })?,
        };
        Self::with_threshold(criterion, threshold)
    }
}

/// A learned exit gate (Ouro): after step `t` the gate gives
/// `lambda_t = sigmoid(weight . x_t + bias)` on the step's (normed) state, the
/// probability of stopping at `t` given that the token has not stopped
/// before. The probability of having stopped by step `t` is
/// `1 - prod_{j <= t} (1 - lambda_j)`, which the `gate` criterion compares
/// with its threshold. (At the last step the authors give every remaining
/// probability to it; here the last step always ends the token anyway.)
#[derive(Debug, Clone, PartialEq)]
pub struct ExitGate {
    /// One weight per state feature.
    pub weight: Vec<f32>,
    /// The bias.
    pub bias: f32,
}

impl ExitGate {
    /// `sigmoid(weight . x + bias)`, in f64.
    pub fn lambda(&self, x: &[f32]) -> f64 {
        let z: f64 = self
            .weight
            .iter()
            .zip(x)
            .map(|(&w, &v)| f64::from(w) * f64::from(v))
            .sum::<f64>()
            + f64::from(self.bias);
        1.0 / (1.0 + (-z).exp())
    }
}

/// Per-token state of the exit check: the previous check's distribution and
/// latent state. Allocated once (sized by vocabulary and model width) and
/// reused for every token; call [`ExitState::reset`] at the start of each
/// token.
///
/// Each `observe_logits` call records everything every logits criterion needs
/// (log-probabilities, entropy, argmax, the min-p normaliser), so the value of
/// any logits criterion is well defined whichever one the previous check used.
#[derive(Debug, Clone)]
pub struct ExitState {
    vocab: usize,
    d_model: usize,
    /// Log-probabilities of the previous check (valid when `has_prev_logits`).
    prev_logp: Vec<f64>,
    /// Log-probabilities of the current check (swapped into `prev_logp`).
    cur_logp: Vec<f64>,
    prev_entropy: f64,
    /// `ln p_max` of the previous distribution.
    prev_max_logp: f64,
    /// `ln` of the normaliser of the previous min-p(0.1) filtered distribution.
    prev_minp_log_norm: f64,
    prev_argmax: usize,
    /// Consecutive checks whose argmax equals the previous check's.
    argmax_run: u64,
    has_prev_logits: bool,
    prev_latent: Vec<f32>,
    has_prev_latent: bool,
    checks: u64,
    /// The model's exit gate, if set ([`ExitState::set_gate`]).
    gate: Option<ExitGate>,
    /// `prod (1 - lambda_j)` over this token's steps so far.
    gate_survival: f64,
}

/// Summary of one log-softmax.
struct Dist {
    entropy: f64,
    max_logp: f64,
    /// `ln Z` of the min-p(0.1) filtered distribution: kept mass plus `1/V`
    /// for every token below the cut.
    minp_log_norm: f64,
    argmax: usize,
}

impl ExitState {
    /// State for a vocabulary of `vocab` tokens and latent width `d_model`;
    /// all buffers are allocated here, once.
    pub fn new(vocab: usize, d_model: usize) -> Self {
        Self {
            vocab,
            d_model,
            prev_logp: vec![0.0; vocab],
            cur_logp: vec![0.0; vocab],
            prev_entropy: 0.0,
            prev_max_logp: 0.0,
            prev_minp_log_norm: 0.0,
            prev_argmax: 0,
            argmax_run: 0,
            has_prev_logits: false,
            prev_latent: vec![0.0; d_model],
            has_prev_latent: false,
            checks: 0,
            gate: None,
            gate_survival: 1.0,
        }
    }

    /// Sets the exit gate the `gate` criterion uses (a model's; without one
    /// that criterion gives NaN, which never exits).
    pub fn set_gate(&mut self, gate: Option<ExitGate>) {
        self.gate = gate;
    }

    /// The vocabulary size the state was built for.
    pub fn vocab_size(&self) -> usize {
        self.vocab
    }

    /// The latent width the state was built for.
    pub fn d_model(&self) -> usize {
        self.d_model
    }

    /// Forgets the previous check: call at the start of each token. O(1).
    pub fn reset(&mut self) {
        self.has_prev_logits = false;
        self.has_prev_latent = false;
        self.gate_survival = 1.0;
        self.argmax_run = 0;
        self.checks = 0;
    }

    /// Checks observed since the last [`ExitState::reset`].
    pub fn checks(&self) -> u64 {
        self.checks
    }

    /// Entropy (nats) of the last observed distribution, if any this token.
    pub fn entropy(&self) -> Option<f64> {
        self.has_prev_logits.then_some(self.prev_entropy)
    }

    /// Argmax (ties to the lowest id) of the last observed logits, if any
    /// this token.
    pub fn argmax(&self) -> Option<usize> {
        self.has_prev_logits.then_some(self.prev_argmax)
    }

    /// Observes the next-token `logits` of this check, returns the value of
    /// `spec`'s criterion and makes this distribution the previous one.
    ///
    /// NaN logits count as `-inf`; if some logits are `+inf` the distribution
    /// is uniform over them; if all are `-inf` it is uniform. For a criterion
    /// that does not use logits (`none`, `latent-diff`, `cosine`) the state is
    /// still updated and the result is NaN (which never exits). If
    /// `logits.len()` differs from the vocabulary size the result is NaN and
    /// the state is left unchanged.
    pub fn observe_logits(&mut self, spec: &ExitSpec, logits: &[f32]) -> f64 {
        if logits.len() != self.vocab || self.vocab == 0 {
            return f64::NAN;
        }
        let cur = log_softmax(logits, &mut self.cur_logp);
        let ln_v = (self.vocab as f64).ln();
        let first = !self.has_prev_logits;

        let value = match spec.criterion {
            ExitCriterion::Kl => {
                let floor = KL_PROB_FLOOR.ln();
                let cur_lp = |i: usize| self.cur_logp[i].max(floor);
                if first {
                    kl_from_uniform(self.vocab, ln_v, cur_lp)
                } else {
                    kl_from(&self.prev_logp, |lp| lp, cur_lp)
                }
            }
            ExitCriterion::MinpKl => {
                let cur_f = MinpFilter::new(cur.max_logp, cur.minp_log_norm, ln_v);
                let cur_lp = |i: usize| cur_f.apply(self.cur_logp[i]);
                if first {
                    kl_from_uniform(self.vocab, ln_v, cur_lp)
                } else {
                    let prev_f = MinpFilter::new(self.prev_max_logp, self.prev_minp_log_norm, ln_v);
                    kl_from(&self.prev_logp, |lp| prev_f.apply(lp), cur_lp)
                }
            }
            ExitCriterion::EntropyDiff => {
                let prev_h = if first {
                    FIRST_CHECK_ENTROPY
                } else {
                    self.prev_entropy
                };
                (cur.entropy - prev_h).abs()
            }
            ExitCriterion::ArgmaxStability => {
                if !first && cur.argmax == self.prev_argmax {
                    (self.argmax_run + 1) as f64
                } else {
                    0.0
                }
            }
            ExitCriterion::Confidence => cur.max_logp.exp(),
            ExitCriterion::None
            | ExitCriterion::LatentDiff
            | ExitCriterion::Cosine
            | ExitCriterion::Gate => f64::NAN,
        };

        self.argmax_run = if !first && cur.argmax == self.prev_argmax {
            self.argmax_run + 1
        } else {
            0
        };
        std::mem::swap(&mut self.prev_logp, &mut self.cur_logp);
        self.prev_entropy = cur.entropy;
        self.prev_max_logp = cur.max_logp;
        self.prev_minp_log_norm = cur.minp_log_norm;
        self.prev_argmax = cur.argmax;
        self.has_prev_logits = true;
        self.checks += 1;
        value
    }

    /// Like [`ExitState::observe_logits`] for a check whose distribution was
    /// summarised elsewhere (inside the graph, in f32): `neg_entropy` is
    /// `sum p ln p`; `kl_term` is `sum ln p` at the first check of the token
    /// and `sum p_prev ln p` against the previous check after it; `argmax` the
    /// index of the largest logit; `max_logp` its log-probability (`ln
    /// p_max`, i.e. minus the log-sum-exp of the logits shifted by their
    /// maximum). Gives the same values as `observe_logits` for kl,
    /// entropy-diff, argmax-stability and confidence (up to the summary's
    /// rounding, and without the floor on zero probabilities), NaN for other
    /// criteria. Do not mix with `observe_logits` within one token (call
    /// [`ExitState::reset`] between tokens as usual). (`max_logp` was added in
    /// 0.5.)
    pub fn observe_stats(
        &mut self,
        spec: &ExitSpec,
        neg_entropy: f64,
        kl_term: f64,
        argmax: usize,
        max_logp: f64,
    ) -> f64 {
        let entropy = -neg_entropy;
        let v = self.vocab as f64;
        let first = !self.has_prev_logits;
        let same_argmax = !first && argmax == self.prev_argmax;
        let value = match spec.criterion {
            // KL(uniform || p) = -ln V - (sum ln p) / V;
            // KL(p_prev || p) = sum p_prev ln p_prev - sum p_prev ln p.
            ExitCriterion::Kl if first => (-v.ln() - kl_term / v).max(0.0),
            ExitCriterion::Kl => (-self.prev_entropy - kl_term).max(0.0),
            ExitCriterion::EntropyDiff => {
                let prev_h = if first {
                    FIRST_CHECK_ENTROPY
                } else {
                    self.prev_entropy
                };
                (entropy - prev_h).abs()
            }
            ExitCriterion::ArgmaxStability => {
                if same_argmax {
                    (self.argmax_run + 1) as f64
                } else {
                    0.0
                }
            }
            ExitCriterion::Confidence => max_logp.exp(),
            _ => f64::NAN,
        };
        self.argmax_run = if same_argmax { self.argmax_run + 1 } else { 0 };
        self.prev_entropy = entropy;
        self.prev_max_logp = max_logp;
        self.prev_argmax = argmax;
        self.has_prev_logits = true;
        self.checks += 1;
        value
    }

    /// Observes the latent state `x` of this check, returns the value of
    /// `spec`'s criterion and makes `x` the previous state.
    ///
    /// * `latent-diff`: `‖x - x_prev‖ / ‖x‖`; 1.0 at the first check of a token
    ///   (as if the previous state were zeros); when `‖x‖ = 0` the value is 0
    ///   if `x_prev` is zero too, `+inf` otherwise.
    /// * `cosine`: `1 - cos(x, x_prev)`, clamped at 0 against rounding; 1.0 at
    ///   the first check; when one vector is zero, 0 if both are, 1 otherwise.
    ///
    /// For any other criterion the state is still updated and the result is
    /// NaN (never exits). If `x.len()` differs from `d_model` the result is
    /// NaN and the state is left unchanged. NaN inputs give a NaN value.
    pub fn observe_latent(&mut self, spec: &ExitSpec, x: &[f32]) -> f64 {
        if x.len() != self.d_model {
            return f64::NAN;
        }
        let first = !self.has_prev_latent;
        let value = match spec.criterion {
            ExitCriterion::LatentDiff | ExitCriterion::Cosine if first => 1.0,
            c @ (ExitCriterion::LatentDiff | ExitCriterion::Cosine) => {
                latent_change(c, x, &self.prev_latent)
            }
            ExitCriterion::Gate => match &self.gate {
                Some(g) if g.weight.len() == x.len() => {
                    self.gate_survival *= 1.0 - g.lambda(x);
                    1.0 - self.gate_survival
                }
                _ => f64::NAN,
            },
            _ => f64::NAN,
        };
        self.prev_latent.copy_from_slice(x);
        self.has_prev_latent = true;
        self.checks += 1;
        value
    }
}

/// The change from `prev` to `x` that a latent criterion measures:
/// `‖x - prev‖ / ‖x‖` for latent-diff (0 when both are zero, `+inf` when
/// only `x` is), `1 - cos(x, prev)` clamped at 0 for cosine (0 when both are
/// zero, 1 when one is); NaN for any other criterion.
fn latent_change(criterion: ExitCriterion, x: &[f32], prev: &[f32]) -> f64 {
    match criterion {
        ExitCriterion::LatentDiff => {
            let (mut diff2, mut norm2, mut prev2) = (0.0f64, 0.0f64, 0.0f64);
            for (&a, &b) in x.iter().zip(prev) {
                let (a, b) = (f64::from(a), f64::from(b));
                diff2 += (a - b) * (a - b);
                norm2 += a * a;
                prev2 += b * b;
            }
            if norm2 == 0.0 {
                if prev2 == 0.0 { 0.0 } else { f64::INFINITY }
            } else {
                (diff2 / norm2).sqrt()
            }
        }
        ExitCriterion::Cosine => {
            let (mut dot, mut na, mut nb) = (0.0f64, 0.0f64, 0.0f64);
            for (&a, &b) in x.iter().zip(prev) {
                let (a, b) = (f64::from(a), f64::from(b));
                dot += a * b;
                na += a * a;
                nb += b * b;
            }
            if na == 0.0 || nb == 0.0 {
                if na == nb { 0.0 } else { 1.0 }
            } else {
                let d = 1.0 - dot / (na.sqrt() * nb.sqrt());
                if d.is_nan() { d } else { d.max(0.0) }
            }
        }
        _ => f64::NAN,
    }
}

/// The latent states of every position of a batch at the previous check,
/// for a criterion decided over all positions at once (the prompt's exit,
/// [`crate::generate::ComputeLimits::prefill_exit`]). Sized once for the
/// largest batch; nothing is allocated per check.
#[derive(Debug, Clone)]
pub struct BatchLatentState {
    d_model: usize,
    prev: Vec<f32>,
    /// Positions in `prev`; 0 before the first check of a batch.
    n_prev: usize,
}

impl BatchLatentState {
    /// State for batches of up to `max_rows` positions of width `d_model`.
    pub fn new(max_rows: usize, d_model: usize) -> Self {
        Self {
            d_model,
            prev: vec![0.0; max_rows.saturating_mul(d_model)],
            n_prev: 0,
        }
    }

    /// Forgets the previous check: call at the start of each batch.
    pub fn reset(&mut self) {
        self.n_prev = 0;
    }

    /// Observes the states `rows` (positions one after another, `d_model`
    /// each) of this check and returns the largest value of `spec`'s latent
    /// criterion over the positions: every position must have settled for
    /// the batch to pass. 1.0 at the first check of a batch (as for one
    /// position), NaN for a criterion that is not latent-diff or cosine, for
    /// a length that is not a whole number of rows or exceeds the sized
    /// batch, or a batch whose size changed since the previous check (the
    /// state is then left unchanged).
    pub fn observe(&mut self, spec: &ExitSpec, rows: &[f32]) -> f64 {
        let d = self.d_model;
        let ok = matches!(
            spec.criterion,
            ExitCriterion::LatentDiff | ExitCriterion::Cosine
        );
        if !ok || d == 0 || !rows.len().is_multiple_of(d) || rows.len() > self.prev.len() {
            return f64::NAN;
        }
        let n = rows.len() / d;
        if self.n_prev != 0 && self.n_prev != n {
            return f64::NAN;
        }
        let value = if self.n_prev == 0 {
            1.0
        } else {
            rows.chunks_exact(d)
                .zip(self.prev.chunks_exact(d))
                .map(|(x, p)| latent_change(spec.criterion, x, p))
                // A NaN position makes the batch NaN (never passes).
                .fold(0.0f64, |m, v| {
                    if m.is_nan() || v.is_nan() {
                        f64::NAN
                    } else {
                        m.max(v)
                    }
                })
        };
        self.prev[..rows.len()].copy_from_slice(rows);
        self.n_prev = n;
        value
    }
}

/// Stable log-softmax of `logits` into `out` (same length), in f64, with the
/// summary statistics the criteria need.
fn log_softmax(logits: &[f32], out: &mut [f64]) -> Dist {
    // Largest logit (NaN -> -inf) and its lowest index.
    let mut argmax = 0usize;
    let mut max = f32::NEG_INFINITY;
    for (i, &l) in logits.iter().enumerate() {
        if l > max {
            max = l;
            argmax = i;
        }
    }
    if max.is_infinite() {
        // Uniform over the tokens equal to the max (+inf), or over all tokens
        // when none is above -inf.
        let count = if max == f32::INFINITY {
            logits.iter().filter(|&&l| l == f32::INFINITY).count()
        } else {
            logits.len()
        };
        let lp = -(count as f64).ln();
        for (o, &l) in out.iter_mut().zip(logits) {
            *o = if max == f32::NEG_INFINITY || l == max {
                lp
            } else {
                f64::NEG_INFINITY
            };
        }
        // Every token with p > 0 has p = p_max: min-p keeps those (mass 1)
        // and gives the others 1/V.
        let dropped = logits.len() - count;
        return Dist {
            entropy: -lp,
            max_logp: lp,
            minp_log_norm: (1.0 + dropped as f64 / logits.len() as f64).ln(),
            argmax,
        };
    }
    let m = f64::from(max);
    let mut sum = 0.0f64;
    for (o, &l) in out.iter_mut().zip(logits) {
        // NaN and -inf both give exp(-inf) = 0.
        let s = if l.is_nan() {
            f64::NEG_INFINITY
        } else {
            f64::from(l) - m
        };
        *o = s;
        sum += s.exp();
    }
    // sum >= 1 (the max contributes exp(0)).
    let log_z = sum.ln();
    let cut = MINP_KL_LEVEL.ln() - log_z; // ln(0.1 * p_max), p_max = exp(-log_z)
    let mut entropy = 0.0f64;
    let mut kept = 0.0f64;
    let mut dropped = 0usize;
    for o in out.iter_mut() {
        *o -= log_z;
        if *o > f64::NEG_INFINITY {
            let p = o.exp();
            entropy -= p * *o;
        }
        if *o >= cut {
            kept += o.exp();
        } else {
            dropped += 1;
        }
    }
    Dist {
        entropy: entropy.max(0.0),
        max_logp: -log_z,
        minp_log_norm: (kept + dropped as f64 / out.len() as f64).ln(),
        argmax,
    }
}

/// The authors' min-p(0.1) filter of one distribution: probabilities below
/// `0.1 p_max` become `1/V`, then everything is renormalised (by
/// `exp(log_norm)`).
#[derive(Clone, Copy)]
struct MinpFilter {
    cut: f64,
    ln_v: f64,
    log_norm: f64,
}

impl MinpFilter {
    fn new(max_logp: f64, log_norm: f64, ln_v: f64) -> Self {
        MinpFilter {
            cut: max_logp + MINP_KL_LEVEL.ln(),
            ln_v,
            log_norm,
        }
    }

    /// The filtered log-probability of a token of log-probability `lp`.
    fn apply(&self, lp: f64) -> f64 {
        (if lp >= self.cut { lp } else { -self.ln_v }) - self.log_norm
    }
}

/// `KL(P || Q) = sum P (ln P - ln Q)` where `ln P_i = p(prev[i])` and
/// `ln Q_i = q(i)`; terms with `P_i = 0` contribute 0.
fn kl_from(prev: &[f64], p: impl Fn(f64) -> f64, q: impl Fn(usize) -> f64) -> f64 {
    let mut acc = 0.0f64;
    for (i, &lp) in prev.iter().enumerate() {
        let lp = p(lp);
        if lp > f64::NEG_INFINITY {
            acc += lp.exp() * (lp - q(i));
        }
    }
    acc.max(0.0)
}

/// `KL(uniform || Q) = -ln V - (sum_i ln Q_i) / V`.
fn kl_from_uniform(vocab: usize, ln_v: f64, q: impl Fn(usize) -> f64) -> f64 {
    let sum: f64 = (0..vocab).map(q).sum();
    (-ln_v - sum / vocab as f64).max(0.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn logits_of(p: &[f64]) -> Vec<f32> {
        p.iter().map(|x| x.ln() as f32).collect()
    }

    fn spec(s: &str) -> ExitSpec {
        s.parse().unwrap()
    }

    fn close(a: f64, b: f64, tol: f64) {
        assert!((a - b).abs() <= tol, "{a} vs {b} (tol {tol})");
    }

    #[test]
    fn comparing_criteria() {
        let comparing: Vec<&str> = ExitCriterion::ALL
            .into_iter()
            .filter(|c| c.compares_checks())
            .map(|c| c.name())
            .collect();
        assert_eq!(
            comparing,
            [
                "kl",
                "minp-kl",
                "entropy-diff",
                "latent-diff",
                "cosine",
                "argmax-stability"
            ]
        );
    }

    #[test]
    fn names_parse_and_defaults() {
        for c in ExitCriterion::ALL {
            assert_eq!(c.name().parse::<ExitCriterion>().unwrap(), c);
            assert_eq!(c.to_string(), c.name());
            let s = ExitSpec::new(c);
            assert_eq!(s.threshold, c.default_threshold());
            assert!(s.validate().is_ok());
            assert_eq!(s.to_string().parse::<ExitSpec>().unwrap(), s);
        }
        assert!("KL".parse::<ExitCriterion>().is_err());
        assert!("bogus".parse::<ExitCriterion>().is_err());
        assert_eq!(ExitCriterion::Kl.default_threshold(), 5e-4);
        assert_eq!(ExitCriterion::MinpKl.default_threshold(), 1e-5);
        assert_eq!(ExitCriterion::EntropyDiff.default_threshold(), 1e-3);
        assert_eq!(ExitCriterion::LatentDiff.default_threshold(), 0.03);
        assert_eq!(ExitCriterion::Cosine.default_threshold(), 1e-3);
        assert_eq!(ExitCriterion::ArgmaxStability.default_threshold(), 5.0);
        assert_eq!(ExitCriterion::Confidence.default_threshold(), 0.9);
        assert!(ExitCriterion::Confidence.needs_logits());
        assert!(ExitCriterion::Confidence.device_computable());
        assert!(ExitCriterion::Kl.needs_logits());
        assert!(ExitCriterion::MinpKl.needs_logits());
        assert!(ExitCriterion::EntropyDiff.needs_logits());
        assert!(ExitCriterion::ArgmaxStability.needs_logits());
        assert!(!ExitCriterion::LatentDiff.needs_logits());
        assert!(!ExitCriterion::Cosine.needs_logits());
        assert!(!ExitCriterion::None.needs_logits());
        assert!(ExitCriterion::Cosine.needs_latent());
        assert!(!ExitCriterion::Kl.needs_latent());
    }

    #[test]
    fn spec_parsing_and_validation() {
        let s = spec("kl:1e-3");
        assert_eq!(s.criterion, ExitCriterion::Kl);
        assert_eq!(s.threshold, 1e-3);
        assert_eq!(spec("kl").threshold, 5e-4);
        assert_eq!(spec("minp-kl").threshold, 1e-5);
        assert_eq!(spec("argmax-stability:3").threshold, 3.0);
        assert_eq!(spec("cosine:inf").threshold, f64::INFINITY);
        assert_eq!(spec("argmax-stability:inf").threshold, f64::INFINITY);
        assert_eq!(spec("latent-diff:0").threshold, 0.0);
        for bad in [
            "kl:nan",
            "kl:-1",
            "kl:abc",
            "kl:",
            "argmax-stability:0",
            "argmax-stability:2.5",
            "nope:1",
            "",
        ] {
            match bad.parse::<ExitSpec>() {
                Err(Error::InvalidArgument(_)) => {}
                other => panic!("{bad:?} gave {other:?}"),
            }
        }
        assert!(ExitSpec::with_threshold(ExitCriterion::Kl, f64::NAN).is_err());
        assert_eq!(ExitSpec::default().criterion, ExitCriterion::None);
    }

    #[test]
    fn should_exit_directions() {
        let kl = spec("kl:1e-3");
        assert!(kl.should_exit(5e-4));
        assert!(!kl.should_exit(1e-3));
        assert!(!kl.should_exit(f64::NAN));
        let am = spec("argmax-stability:3");
        assert!(!am.should_exit(2.0));
        assert!(am.should_exit(3.0));
        assert!(should_exit(&am, 4.0));
        let none = ExitSpec::new(ExitCriterion::None);
        assert!(!none.should_exit(-1.0));
        assert!(!none.should_exit(f64::INFINITY));
        let inf = spec("cosine:inf");
        assert!(inf.should_exit(1.0));
        assert!(!spec("argmax-stability:inf").should_exit(1e18));
    }

    #[test]
    fn kl_first_check_is_divergence_from_uniform() {
        let p = [0.5, 0.25, 0.125, 0.125];
        let h: f64 = -p.iter().map(|x: &f64| x * x.ln()).sum::<f64>();
        let mut st = ExitState::new(4, 8);
        let v = st.observe_logits(&spec("kl"), &logits_of(&p));
        // KL(uniform || p) = sum 1/4 ln((1/4) / p_i).
        let want: f64 = p.iter().map(|x: &f64| 0.25 * (0.25 / x).ln()).sum();
        close(v, want, 1e-7);
        close(st.entropy().unwrap(), h, 1e-7);
        // Uniform logits at the first check: 0.
        st.reset();
        assert!(st.observe_logits(&spec("kl"), &[3.0; 4]).abs() < 1e-12);
    }

    #[test]
    fn kl_identical_is_zero_and_known_case() {
        let p = [0.7f64, 0.2, 0.1];
        let q = [0.5f64, 0.3, 0.2];
        // The previous distribution q against the current p: KL(q || p).
        let kl_qp: f64 = q.iter().zip(&p).map(|(a, b)| a * (a / b).ln()).sum();
        let s = spec("kl");
        let mut st = ExitState::new(3, 1);
        st.observe_logits(&s, &logits_of(&q));
        let v = st.observe_logits(&s, &logits_of(&p));
        close(v, kl_qp, 1e-7);
        let v = st.observe_logits(&s, &logits_of(&p));
        assert_eq!(v, 0.0);
        // Shift invariance: logits + c is the same distribution.
        let shifted: Vec<f32> = logits_of(&p).iter().map(|l| l + 100.0).collect();
        assert!(st.observe_logits(&s, &shifted) < 1e-10);
        // Hand-checked: KL([1,0] (previous) || [0.5,0.5]) = ln 2.
        let mut st = ExitState::new(2, 1);
        st.observe_logits(&s, &[0.0, f32::NEG_INFINITY]);
        close(st.observe_logits(&s, &[0.0, 0.0]), 2f64.ln(), 1e-12);
        // A current zero where the previous is not uses the 1e-10 floor:
        // KL([0.5,0.5] || [0,1]) = 0.5 ln(0.5 / 1e-10) + 0.5 ln(0.5).
        close(
            st.observe_logits(&s, &[f32::NEG_INFINITY, 0.0]),
            0.5 * (0.5f64 / 1e-10).ln() + 0.5 * 0.5f64.ln(),
            1e-9,
        );
    }

    #[test]
    fn kl_large_logits_are_stable() {
        let s = spec("kl");
        let mut st = ExitState::new(3, 1);
        st.observe_logits(&s, &[1000.0, 999.0, -1000.0]);
        let v = st.observe_logits(&s, &[1000.0, 999.0, -1000.0]);
        assert_eq!(v, 0.0);
        let v = st.observe_logits(&s, &[f32::NAN, 0.0, 0.0]);
        assert!(v.is_finite());
    }

    /// KL(a || b) of two explicit distributions.
    fn kl_of(a: &[f64], b: &[f64]) -> f64 {
        a.iter().zip(b).map(|(x, y)| x * (x / y).ln()).sum()
    }

    #[test]
    fn minp_kl_filters_both_distributions() {
        let s = spec("minp-kl");
        // p = [0.6, 0.35, 0.05]: 0.05 < 0.06 becomes 1/3, then renormalised.
        // q = [0.4, 0.4, 0.2]: all kept.
        let p = [0.6, 0.35, 0.05];
        let q = [0.4, 0.4, 0.2];
        let z = 0.6 + 0.35 + 1.0 / 3.0;
        let pf = [0.6 / z, 0.35 / z, (1.0 / 3.0) / z];
        let mut st = ExitState::new(3, 1);
        st.observe_logits(&s, &logits_of(&q));
        close(st.observe_logits(&s, &logits_of(&p)), kl_of(&q, &pf), 1e-6);
        // Now the previous is p (filtered) and the current q.
        close(st.observe_logits(&s, &logits_of(&q)), kl_of(&pf, &q), 1e-6);
        // Identical -> 0.
        assert_eq!(st.observe_logits(&s, &logits_of(&q)), 0.0);
        // First check: uniform vs the filtered p.
        st.reset();
        let u = [1.0 / 3.0; 3];
        close(st.observe_logits(&s, &logits_of(&p)), kl_of(&u, &pf), 1e-6);
        // A zero probability is below the cut too: it gets 1/V.
        let mut st = ExitState::new(4, 1);
        let l = [0.0f32, 0.0, f32::NEG_INFINITY, 0.0];
        // p = [1/3, 1/3, 0, 1/3] -> [1/3, 1/3, 1/4, 1/3] / (1 + 1/4).
        let (t, zf) = (1.0 / 3.0, 1.25);
        let f = [t / zf, t / zf, 0.25 / zf, t / zf];
        close(st.observe_logits(&s, &l), kl_of(&[0.25; 4], &f), 1e-9);
    }

    #[test]
    fn entropy_diff() {
        let s = spec("entropy-diff");
        let p = [0.5, 0.5, 1e-30];
        let mut st = ExitState::new(3, 1);
        // First check: against an entropy of 100 nats (never exits).
        let v = st.observe_logits(&s, &logits_of(&p));
        close(v, FIRST_CHECK_ENTROPY - 2f64.ln(), 1e-6);
        assert!(!s.should_exit(v));
        // Identical -> 0; a permutation has the same entropy -> 0 as well.
        assert_eq!(st.observe_logits(&s, &logits_of(&p)), 0.0);
        let perm = [1e-30, 0.5, 0.5];
        assert!(st.observe_logits(&s, &logits_of(&perm)) < 1e-12);
        let q = [1.0, 1e-30, 1e-30];
        close(st.observe_logits(&s, &logits_of(&q)), 2f64.ln(), 1e-6);
    }

    #[test]
    fn confidence_is_the_top_probability_of_this_check_alone() {
        let s = spec("confidence");
        assert_eq!(s.threshold, 0.9);
        let mut st = ExitState::new(4, 1);
        // The first check of a token already has a value (no previous one).
        let v = st.observe_logits(&s, &logits_of(&[0.95, 0.03, 0.01, 0.01]));
        close(v, 0.95, 1e-6);
        assert!(s.should_exit(v));
        // Only the current distribution counts, whatever came before.
        let v = st.observe_logits(&s, &logits_of(&[0.25, 0.25, 0.25, 0.25]));
        close(v, 0.25, 1e-6);
        assert!(!s.should_exit(v));
        st.reset();
        close(
            st.observe_logits(&s, &[0.0, f32::NAN, 0.0, 0.0]),
            1.0 / 3.0,
            1e-12,
        );
        assert!(spec("confidence:1").should_exit(1.0));
        assert!(!spec("confidence:inf").should_exit(1.0));
        assert!(spec("confidence:0").should_exit(0.0));
    }

    /// Over a batch, the value is the largest of what each position alone
    /// would give.
    #[test]
    fn batch_latent_state_takes_the_worst_position() {
        let d = 3;
        let rows0 = [1.0f32, 2.0, 2.0, 0.0, 1.0, 0.0];
        let rows1 = [1.0f32, 2.0, 2.1, 0.0, 1.0, 0.5];
        for c in ["latent-diff:0.1", "cosine:1e-2"] {
            let s = spec(c);
            let mut b = BatchLatentState::new(2, d);
            assert_eq!(b.observe(&s, &rows0), 1.0);
            let mut one = [ExitState::new(2, d), ExitState::new(2, d)];
            for (st, r) in one.iter_mut().zip(rows0.chunks(d)) {
                st.observe_latent(&s, r);
            }
            let want = one
                .iter_mut()
                .zip(rows1.chunks(d))
                .map(|(st, r)| st.observe_latent(&s, r))
                .fold(0.0f64, f64::max);
            assert!(want > 0.0);
            assert_eq!(b.observe(&s, &rows1), want, "{c}");
            assert!(b.observe(&s, &rows1) < 1e-12, "{c}: settled");
            // A batch of another size, or too long, is NaN; reset starts over.
            assert!(b.observe(&s, &rows1[..d]).is_nan());
            assert!(b.observe(&s, &[0.0; 9]).is_nan());
            b.reset();
            assert_eq!(b.observe(&s, &rows1[..d]), 1.0);
        }
        let mut b = BatchLatentState::new(2, d);
        assert!(b.observe(&spec("kl"), &rows0).is_nan());
        assert!(b.observe(&spec("cosine"), &rows0[..2]).is_nan());
    }

    #[test]
    fn argmax_stability_counts_consecutive_checks() {
        let s = spec("argmax-stability:2");
        let a = [1.0f32, 3.0, 2.0];
        let b = [5.0f32, 3.0, 2.0];
        let mut st = ExitState::new(3, 1);
        let mut vals = vec![];
        for l in [&a, &a, &a, &b, &b, &a] {
            vals.push(st.observe_logits(&s, l));
        }
        assert_eq!(vals, vec![0.0, 1.0, 2.0, 0.0, 1.0, 0.0]);
        assert!(!s.should_exit(vals[1]));
        assert!(s.should_exit(vals[2]));
        assert_eq!(st.argmax(), Some(1));
        // Ties go to the lowest id; reset restarts the count.
        st.reset();
        assert_eq!(st.argmax(), None);
        assert_eq!(st.observe_logits(&s, &[2.0, 2.0, 1.0]), 0.0);
        assert_eq!(st.argmax(), Some(0));
        assert_eq!(st.observe_logits(&s, &[2.0, 2.0, 1.0]), 1.0);
    }

    #[test]
    fn latent_diff_and_cosine() {
        let ld = spec("latent-diff");
        let cs = spec("cosine");
        let mut st = ExitState::new(2, 3);
        // First check: 1.0 by convention.
        assert_eq!(st.observe_latent(&ld, &[1.0, 2.0, 2.0]), 1.0);
        // Identical -> 0.
        assert_eq!(st.observe_latent(&ld, &[1.0, 2.0, 2.0]), 0.0);
        // ||(1,2,2) - (1,2,4)|| / ||(1,2,4)|| = 2 / sqrt(21).
        close(
            st.observe_latent(&ld, &[1.0, 2.0, 4.0]),
            2.0 / 21f64.sqrt(),
            1e-12,
        );
        st.reset();
        assert_eq!(st.observe_latent(&cs, &[1.0, 0.0, 0.0]), 1.0);
        assert!(st.observe_latent(&cs, &[1.0, 0.0, 0.0]).abs() < 1e-15);
        // Orthogonal: 1; opposite: 2; 45 degrees: 1 - 1/sqrt(2).
        assert_eq!(st.observe_latent(&cs, &[0.0, 3.0, 0.0]), 1.0);
        assert_eq!(st.observe_latent(&cs, &[0.0, -1.0, 0.0]), 2.0);
        close(
            st.observe_latent(&cs, &[1.0, -1.0, 0.0]),
            1.0 - 1.0 / 2f64.sqrt(),
            1e-12,
        );
        // Scale invariance of cosine.
        assert!(st.observe_latent(&cs, &[10.0, -10.0, 0.0]).abs() < 1e-12);
        // Zero vectors.
        st.reset();
        st.observe_latent(&ld, &[0.0; 3]);
        assert_eq!(st.observe_latent(&ld, &[0.0; 3]), 0.0);
        assert_eq!(st.observe_latent(&cs, &[0.0; 3]), 0.0);
        assert_eq!(st.observe_latent(&cs, &[1.0, 0.0, 0.0]), 1.0);
        assert_eq!(st.observe_latent(&ld, &[0.0; 3]), f64::INFINITY);
        // Thresholds.
        assert!(ld.should_exit(0.01));
        assert!(!ld.should_exit(0.05));
    }

    #[test]
    fn mismatches_and_wrong_kind_give_nan() {
        let mut st = ExitState::new(4, 3);
        assert!(st.observe_logits(&spec("kl"), &[1.0; 3]).is_nan());
        assert_eq!(st.checks(), 0);
        assert!(st.observe_latent(&spec("cosine"), &[1.0; 4]).is_nan());
        assert!(st.observe_logits(&spec("cosine"), &[1.0; 4]).is_nan());
        assert!(st.observe_latent(&spec("kl"), &[1.0; 3]).is_nan());
        assert!(st.observe_logits(&ExitSpec::default(), &[1.0; 4]).is_nan());
        // The logits were still recorded: KL vs the same distribution is 0.
        assert_eq!(st.observe_logits(&spec("kl"), &[1.0; 4]), 0.0);
        // Degenerate logits.
        st.reset();
        let v = st.observe_logits(&spec("kl"), &[f32::NAN; 4]);
        close(v, 0.0, 1e-12); // uniform
        // Previous uniform, current [.5, 0, .5, 0] (zeros floored at 1e-10):
        // KL = 0.5 ln(0.25 / 0.5) + 0.5 ln(0.25 / 1e-10).
        let v = st.observe_logits(&spec("kl"), &[f32::INFINITY, 0.0, f32::INFINITY, 1.0]);
        close(v, 0.5 * 0.5f64.ln() + 0.5 * (0.25f64 / 1e-10).ln(), 1e-9);
    }

    /// The `observe_*` calls must not allocate; a per-module counting
    /// allocator is not possible, so this checks that no buffer moves or
    /// grows across many calls of every criterion.
    #[test]
    fn no_reallocation_after_construction() {
        let (v, d) = (5000, 64);
        let mut st = ExitState::new(v, d);
        let snap = |s: &ExitState| {
            (
                (s.prev_logp.capacity(), s.cur_logp.capacity()),
                s.prev_latent.as_ptr(),
                s.prev_latent.capacity(),
            )
        };
        let ptrs = |s: &ExitState| {
            let mut a = [s.prev_logp.as_ptr() as usize, s.cur_logp.as_ptr() as usize];
            a.sort();
            a
        };
        let before = (snap(&st), ptrs(&st));
        let logits: Vec<f32> = (0..v).map(|i| ((i as f32) * 0.1).sin()).collect();
        let latent: Vec<f32> = (0..d).map(|i| i as f32).collect();
        for _ in 0..20 {
            st.reset();
            for c in ExitCriterion::ALL {
                let s = ExitSpec::new(c);
                st.observe_logits(&s, &logits);
                st.observe_latent(&s, &latent);
            }
        }
        assert_eq!((snap(&st), ptrs(&st)), before);
    }

    /// The summary path (what a GPU computes in the graph) gives the values
    /// of the logits path for kl, entropy-diff, argmax-stability and
    /// confidence.
    #[test]
    fn observe_stats_matches_observe_logits() {
        let v = 50;
        let mut rng = crate::rng::SplitMix64::new(7);
        let checks: Vec<Vec<f32>> = (0..6)
            .map(|k| {
                (0..v)
                    .map(|i| {
                        let noise = (rng.next_u64() % 1000) as f32 / 1000.0;
                        // Converging towards a fixed distribution, argmax at 3.
                        (if i == 3 { 4.0 } else { 0.0 }) + noise / (k + 1) as f32
                    })
                    .collect()
            })
            .collect();
        for name in [
            "kl:1e-3",
            "entropy-diff:1e-3",
            "argmax-stability:3",
            "confidence:0.5",
        ] {
            let sp = spec(name);
            let mut a = ExitState::new(v, 4);
            let mut b = ExitState::new(v, 4);
            let mut prev_logp: Option<Vec<f64>> = None;
            for l in &checks {
                let want = a.observe_logits(&sp, l);
                let mut logp = vec![0.0f64; v];
                let d = log_softmax(l, &mut logp);
                let neg_h = -d.entropy;
                let kl_term = match &prev_logp {
                    None => logp.iter().sum::<f64>(),
                    Some(q) => q.iter().zip(&logp).map(|(lq, lp)| lq.exp() * lp).sum(),
                };
                let got = b.observe_stats(&sp, neg_h, kl_term, d.argmax, d.max_logp);
                close(got, want, 1e-9);
                prev_logp = Some(logp);
            }
        }
        // Criteria that need more than the summary give NaN.
        let mut c = ExitState::new(v, 4);
        assert!(
            c.observe_stats(&spec("minp-kl:1e-5"), -1.0, 0.0, 0, -0.5)
                .is_nan()
        );
    }
}
