//! Next-token sampling: repetition penalty, greedy, top-k, temperature, top-p,
//! min-p and a seeded draw.
//!
//! The order (top-k does not depend on the temperature, so this equals
//! Hugging Face transformers' temperature, top-k, top-p, min-p; llama.cpp's
//! default chain instead scales by the temperature last, after top-p and
//! min-p, so with a temperature other than 1 the two keep different sets):
//!
//! 1. repetition penalty over the last `repeat_last_n` recent tokens (each
//!    distinct token once: a positive logit is divided by the penalty, a
//!    negative one multiplied);
//! 2. greedy (argmax, ties to the lowest id) when [`SamplingParams::greedy`] is
//!    set or the temperature is 0; otherwise
//! 3. top-k, temperature, softmax, top-p (the smallest prefix of the sorted
//!    distribution whose cumulative probability reaches `top_p`, at least one
//!    token), min-p (drop tokens with `p < min_p * p_max`), renormalise, and
//!    draw with a [`SplitMix64`] seeded from [`SamplingParams::seed`].
//!
//! NaN logits are treated as `-inf`. If some logits are `+inf`, the draw is
//! uniform over those tokens (greedy picks the lowest such id); if every logit
//! is `-inf` (or NaN), the lowest id is returned.
//!
//! # Allocation
//!
//! [`Sampler::new`] allocates every scratch buffer once, sized by the
//! vocabulary. [`Sampler::sample`] only reuses them: it copies the logits into
//! a preallocated work buffer, selects top-k with `select_nth_unstable_by` and
//! sorts survivors with `sort_unstable_by`, both of which work in place
//! without allocating. The unit tests check that the buffers' addresses and
//! capacities never change across many calls.

use std::cmp::Ordering;

use crate::rng::SplitMix64;
use crate::{Error, Result};

/// Parameters of the sampler. A feature is switched off by its neutral value
/// (`top_k = 0`, `top_p = 1`, `min_p = 0`, `repeat_penalty = 1`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SamplingParams {
    /// Softmax temperature (`>= 0`); 0 means greedy.
    pub temperature: f32,
    /// Keep only the `top_k` most likely tokens; 0 switches it off.
    pub top_k: usize,
    /// Nucleus sampling: keep the smallest set of tokens whose cumulative
    /// probability is at least `top_p`, in `(0, 1]`; 1 switches it off.
    pub top_p: f32,
    /// Drop tokens whose probability is below `min_p` times the largest
    /// probability, in `[0, 1]`; 0 switches it off.
    pub min_p: f32,
    /// Repetition penalty (`> 0`); 1 switches it off.
    pub repeat_penalty: f32,
    /// How many of the most recent tokens the repetition penalty looks at;
    /// 0 switches it off.
    pub repeat_last_n: usize,
    /// Seed of the sampler's random generator.
    pub seed: u64,
    /// Always pick the most likely token (after the repetition penalty).
    pub greedy: bool,
}

impl Default for SamplingParams {
    /// Temperature 0.8, top-k 40, top-p 0.95, min-p 0.05, no repetition
    /// penalty (1.0, last 64 tokens), seed 0, not greedy.
    fn default() -> Self {
        Self {
            temperature: 0.8,
            top_k: 40,
            top_p: 0.95,
            min_p: 0.05,
            repeat_penalty: 1.0,
            repeat_last_n: 64,
            seed: 0,
            greedy: false,
        }
    }
}

impl SamplingParams {
    /// Greedy decoding: the defaults with [`SamplingParams::greedy`] set.
    pub fn greedy() -> Self {
        Self {
            greedy: true,
            ..Self::default()
        }
    }

    /// Checks every field's range.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`] naming the field when `temperature` is NaN or
    /// negative, `top_p` is outside `(0, 1]`, `min_p` is outside `[0, 1]`, or
    /// `repeat_penalty` is NaN or `<= 0`.
    pub fn validate(&self) -> Result<()> {
        if self.temperature.is_nan() || self.temperature < 0.0 {
            return Err(Error::InvalidArgument(format!(
                "temperature must be >= 0, got {}",
                self.temperature
            )));
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return Err(Error::InvalidArgument(format!(
                "top_p must be in (0, 1], got {}",
                self.top_p
            )));
        }
        if !(0.0..=1.0).contains(&self.min_p) {
            return Err(Error::InvalidArgument(format!(
                "min_p must be in [0, 1], got {}",
                self.min_p
            )));
        }
        if self.repeat_penalty.is_nan() || self.repeat_penalty <= 0.0 {
            return Err(Error::InvalidArgument(format!(
                "repeat_penalty must be > 0, got {}",
                self.repeat_penalty
            )));
        }
        Ok(())
    }

    /// Whether these parameters select the argmax (greedy flag or
    /// temperature 0).
    pub fn is_greedy(&self) -> bool {
        self.greedy || self.temperature == 0.0
    }
}

/// A token sampler with preallocated scratch buffers and its own seeded
/// generator. Create one per generation stream and reuse it for every token.
#[derive(Debug, Clone)]
pub struct Sampler {
    params: SamplingParams,
    vocab_size: usize,
    rng: SplitMix64,
    /// Logits after NaN sanitising and the repetition penalty.
    work: Vec<f32>,
    /// Candidate token ids.
    cand: Vec<u32>,
    /// Unnormalised probabilities, indexed by token id.
    weights: Vec<f64>,
    /// Marks tokens already penalised in this call (cleared after use).
    seen: Vec<bool>,
}

impl Sampler {
    /// A sampler for a vocabulary of `vocab_size` tokens; every scratch buffer
    /// is allocated here, once.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`] when `vocab_size` is 0 or does not fit a
    /// `u32` token id, or when `params` fail [`SamplingParams::validate`].
    pub fn new(vocab_size: usize, params: SamplingParams) -> Result<Self> {
        params.validate()?;
        if vocab_size == 0 || u32::try_from(vocab_size).is_err() {
            return Err(Error::InvalidArgument(format!(
                "vocab_size must be in 1..=2^32-1, got {vocab_size}"
            )));
        }
        Ok(Self {
            params,
            vocab_size,
            rng: SplitMix64::new(params.seed),
            work: vec![0.0; vocab_size],
            cand: vec![0; vocab_size],
            weights: vec![0.0; vocab_size],
            seen: vec![false; vocab_size],
        })
    }

    /// The current parameters.
    pub fn params(&self) -> &SamplingParams {
        &self.params
    }

    /// The vocabulary size the buffers were sized for.
    pub fn vocab_size(&self) -> usize {
        self.vocab_size
    }

    /// Replaces the parameters. The generator keeps its position unless
    /// `params.seed` differs from the current seed, in which case it is
    /// reseeded; call [`Sampler::reset`] to restart a sequence explicitly.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`] when `params` fail
    /// [`SamplingParams::validate`]; the sampler is then left unchanged.
    pub fn set_params(&mut self, params: SamplingParams) -> Result<()> {
        params.validate()?;
        if params.seed != self.params.seed {
            self.rng = SplitMix64::new(params.seed);
        }
        self.params = params;
        Ok(())
    }

    /// Reseeds the generator with `seed` (also stored in the parameters), so
    /// the same inputs give the same sequence of tokens again.
    pub fn reset(&mut self, seed: u64) {
        self.params.seed = seed;
        self.rng = SplitMix64::new(seed);
    }

    /// Like [`Sampler::sample`], but rejects logits whose length is not the
    /// vocabulary size.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`] when `logits.len() != vocab_size`.
    pub fn try_sample(&mut self, logits: &[f32], recent_tokens: &[u32]) -> Result<u32> {
        if logits.len() != self.vocab_size {
            return Err(Error::InvalidArgument(format!(
                "expected {} logits, got {}",
                self.vocab_size,
                logits.len()
            )));
        }
        Ok(self.sample(logits, recent_tokens))
    }

    /// Picks the next token from `logits` (one per vocabulary entry), given
    /// the tokens generated or read so far (`recent_tokens`, oldest first; only
    /// the last `repeat_last_n` are penalised). Does not allocate.
    ///
    /// Only the first `min(logits.len(), vocab_size)` logits are considered
    /// (use [`Sampler::try_sample`] to reject a length mismatch); with no
    /// logits at all the result is 0. Recent tokens outside that range are
    /// ignored.
    pub fn sample(&mut self, logits: &[f32], recent_tokens: &[u32]) -> u32 {
        let n = logits.len().min(self.vocab_size);
        if n == 0 {
            return 0;
        }
        if self.params.is_greedy() && !self.penalises(recent_tokens) {
            // Nothing to rewrite: the argmax of the logits themselves (NaN
            // never wins there either), without copying the vocabulary.
            return argmax(&logits[..n]);
        }
        let work = &mut self.work[..n];
        for (w, &l) in work.iter_mut().zip(logits) {
            *w = if l.is_nan() { f32::NEG_INFINITY } else { l };
        }
        self.apply_repeat_penalty(n, recent_tokens);

        if self.params.is_greedy() {
            return argmax(&self.work[..n]);
        }
        self.sample_stochastic(n)
    }

    /// Whether the repetition penalty changes anything given `recent_tokens`.
    fn penalises(&self, recent_tokens: &[u32]) -> bool {
        self.params.repeat_penalty != 1.0
            && self.params.repeat_last_n != 0
            && !recent_tokens.is_empty()
    }

    /// Applies the repetition penalty to `work[..n]`, each distinct token once.
    fn apply_repeat_penalty(&mut self, n: usize, recent_tokens: &[u32]) {
        if !self.penalises(recent_tokens) {
            return;
        }
        let penalty = self.params.repeat_penalty;
        let last_n = self.params.repeat_last_n;
        let window = &recent_tokens[recent_tokens.len().saturating_sub(last_n)..];
        for &t in window {
            let t = t as usize;
            if t >= n || self.seen[t] {
                continue;
            }
            self.seen[t] = true;
            let l = &mut self.work[t];
            if *l > 0.0 {
                *l /= penalty;
            } else {
                *l *= penalty;
            }
        }
        for &t in window {
            if let Some(s) = self.seen.get_mut(t as usize) {
                *s = false;
            }
        }
    }

    /// Top-k, temperature, softmax, top-p, min-p and the draw over `work[..n]`.
    fn sample_stochastic(&mut self, n: usize) -> u32 {
        let (len, kept_total, best) = match self.filter(n) {
            Filtered::Only(t) => return t,
            Filtered::Kept { len, total, best } => (len, total, best),
        };
        let r = self.rng.next_f64() * kept_total;
        let mut cum = 0.0;
        for &c in &self.cand[..len] {
            let w = self.weights[c as usize];
            cum += w;
            if r < cum && w > 0.0 {
                return c;
            }
        }
        // Rounding left r at or past the end: the last token with weight.
        self.cand[..len]
            .iter()
            .rev()
            .copied()
            .find(|&c| self.weights[c as usize] > 0.0)
            .unwrap_or(best)
    }

    /// Top-k, temperature, softmax, min-p and top-p over `work[..n]`: the
    /// surviving candidates in `cand[..len]` (sorted when a filter needed it) with
    /// their unnormalised weights in `weights`, or the single token a
    /// degenerate distribution reduces to.
    fn filter(&mut self, n: usize) -> Filtered {
        let work = &self.work[..n];
        let cand = &mut self.cand[..n];
        for (i, c) in cand.iter_mut().enumerate() {
            // n <= vocab_size fits u32 (checked in `new`).
            *c = i as u32;
        }
        // Descending logit, ties to the lowest id: a total order (no NaN left).
        let by_logit_desc = |a: &u32, b: &u32| -> Ordering {
            let (la, lb) = (work[*a as usize], work[*b as usize]);
            lb.partial_cmp(&la)
                .unwrap_or(Ordering::Equal)
                .then(a.cmp(b))
        };

        // Top-k by partial selection: O(n).
        let mut len = n;
        let mut sorted = false;
        let k = self.params.top_k;
        if k > 0 && k < n {
            cand.select_nth_unstable_by(k - 1, by_logit_desc);
            len = k;
            cand[..len].sort_unstable_by(by_logit_desc);
            sorted = true;
        }

        // The most likely candidate.
        let best = if sorted {
            cand[0]
        } else {
            argmax(work) // candidates are all of 0..n here
        };
        let max_logit = work[best as usize];
        if max_logit == f32::NEG_INFINITY {
            return Filtered::Only(best);
        }

        // Temperature and softmax (unnormalised weights; the max has weight 1).
        let inv_t = 1.0 / f64::from(self.params.temperature);
        let max_l = f64::from(max_logit);
        let mut total = 0.0f64;
        for &c in &cand[..len] {
            let l = work[c as usize];
            let w = if max_logit == f32::INFINITY {
                if l == f32::INFINITY { 1.0 } else { 0.0 }
            } else if l == f32::NEG_INFINITY {
                0.0
            } else {
                ((f64::from(l) - max_l) * inv_t).exp()
            };
            self.weights[c as usize] = w;
            total += w;
        }

        // Min-p: keep w >= min_p * w_max (w_max = 1), preserving order. The
        // kept set is a prefix of the sorted order, like the top-p set, so the
        // intersection of the two does not depend on which filter runs first;
        // running min-p first shrinks the sort that top-p needs.
        let min_p = f64::from(self.params.min_p);
        if min_p > 0.0 {
            let mut kept = 0;
            for i in 0..len {
                let c = cand[i];
                if self.weights[c as usize] >= min_p {
                    cand[kept] = c;
                    kept += 1;
                }
            }
            len = kept.max(1); // the max always passes; guard anyway
        }

        // Top-p over the distribution after top-k and temperature.
        let top_p = f64::from(self.params.top_p);
        if top_p < 1.0 {
            if !sorted {
                cand[..len].sort_unstable_by(by_logit_desc);
            }
            let target = top_p * total;
            let mut cum = 0.0;
            let mut keep = len;
            for (i, &c) in cand[..len].iter().enumerate() {
                cum += self.weights[c as usize];
                if cum >= target {
                    keep = i + 1;
                    break;
                }
            }
            len = keep.max(1);
        }

        let kept_total: f64 = cand[..len].iter().map(|&c| self.weights[c as usize]).sum();
        if kept_total.is_nan() || kept_total <= 0.0 || kept_total.is_infinite() {
            return Filtered::Only(best);
        }
        Filtered::Kept {
            len,
            total: kept_total,
            best,
        }
    }

    /// The distribution [`Sampler::sample`] draws from for these `logits`
    /// and `recent_tokens`, written to `out` (one probability per token,
    /// zero for filtered tokens, summing to 1; one-hot at the pick for
    /// greedy parameters). Used by speculative decoding, which needs the
    /// probabilities, not just a draw. Does not allocate and does not move
    /// the generator.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`] when `logits` or `out` are not
    /// `vocab_size` long.
    pub fn distribution(
        &mut self,
        logits: &[f32],
        recent_tokens: &[u32],
        out: &mut [f32],
    ) -> Result<()> {
        let n = self.vocab_size;
        if logits.len() != n || out.len() != n {
            return Err(Error::InvalidArgument(format!(
                "expected {n} logits and probabilities, got {} and {}",
                logits.len(),
                out.len()
            )));
        }
        for (w, &l) in self.work.iter_mut().zip(logits) {
            *w = if l.is_nan() { f32::NEG_INFINITY } else { l };
        }
        self.apply_repeat_penalty(n, recent_tokens);
        out.fill(0.0);
        let only = if self.params.is_greedy() {
            argmax(&self.work[..n])
        } else {
            match self.filter(n) {
                Filtered::Only(t) => t,
                Filtered::Kept { len, total, .. } => {
                    for &c in &self.cand[..len] {
                        out[c as usize] = (self.weights[c as usize] / total) as f32;
                    }
                    return Ok(());
                }
            }
        };
        out[only as usize] = 1.0;
        Ok(())
    }

    /// Draws a token from the probabilities `probs` (non-negative, summing
    /// to about 1; the sum is taken, not assumed) with this sampler's
    /// generator. The lowest id with weight when rounding leaves the draw
    /// past the end; 0 when every weight is 0.
    pub fn draw(&mut self, probs: &[f32]) -> u32 {
        let total: f64 = probs.iter().map(|&p| f64::from(p.max(0.0))).sum();
        if total.is_nan() || total <= 0.0 {
            return 0;
        }
        let r = self.rng.next_f64() * total;
        let mut cum = 0.0;
        let mut last = 0;
        for (i, &p) in probs.iter().enumerate() {
            let w = f64::from(p.max(0.0));
            if w > 0.0 {
                cum += w;
                last = i;
                if r < cum {
                    return i as u32;
                }
            }
        }
        last as u32
    }

    /// The speculative-sampling test for a token the draft proposed with
    /// probability `q` and the target gives probability `p`: accepted with
    /// probability `min(1, p / q)` (one uniform draw from the generator).
    /// Together with [`Sampler::draw_residual`] on rejection, the accepted
    /// or redrawn token is distributed exactly as the target (Leviathan et
    /// al. 2023; Chen et al. 2023).
    pub fn accept_draft(&mut self, p: f32, q: f32) -> bool {
        let u = self.rng.next_f64();
        u * f64::from(q) < f64::from(p)
    }

    /// After a rejected draft token: draws from the residual distribution
    /// `max(0, p - q)` (renormalised), overwriting `p` with it; from `p`
    /// itself when the residual is all zero (then `p` equals `q`, and the
    /// rejection had probability 0).
    pub fn draw_residual(&mut self, p: &mut [f32], q: &[f32]) -> u32 {
        if p.iter().zip(q).all(|(&pi, &qi)| pi <= qi) {
            // Only when p == q (rejection then had probability 0).
            return self.draw(p);
        }
        for (pi, &qi) in p.iter_mut().zip(q) {
            *pi = (*pi - qi).max(0.0);
        }
        self.draw(p)
    }
}

/// What filtering left of a distribution.
enum Filtered {
    /// A single possible token (degenerate distributions).
    Only(u32),
    /// `cand[..len]` survive with unnormalised weights summing to `total`;
    /// `best` is the most likely.
    Kept { len: usize, total: f64, best: u32 },
}

/// Log-probability of `token` under the softmax of the raw `logits` (before
/// temperature, penalties or filters: what the model itself assigns), with
/// the largest logit subtracted. `-inf` for a token whose logit is `-inf`;
/// NaN when `token` is out of range, no logit is finite or any is NaN.
///
/// It runs once per generated token over the whole vocabulary, on the thread
/// that drives the graphs while the others wait, so it is written to be
/// vectorised: lanes of f32 with a polynomial exponential (within a few ulp
/// of the exact one), each run of [`SUM_RUN`] values summed in f32 lanes and
/// the runs in f64. The result is within about 1e-6 of an all-f64 sum.
pub fn log_softmax_at(logits: &[f32], token: u32) -> f32 {
    let Some(&l) = logits.get(token as usize) else {
        return f32::NAN;
    };
    let Some(max) = finite_max(logits) else {
        return f32::NAN;
    };
    let mut sum = 0f64;
    for run in logits.chunks(SUM_RUN) {
        let mut acc = [0f32; LANES];
        let mut lanes = run.chunks_exact(LANES);
        for c in &mut lanes {
            for (a, &x) in acc.iter_mut().zip(c) {
                *a += exp_nonpositive(x - max);
            }
        }
        for (a, &x) in acc.iter_mut().zip(lanes.remainder()) {
            *a += exp_nonpositive(x - max);
        }
        sum += acc.iter().map(|&a| f64::from(a)).sum::<f64>();
    }
    (f64::from(l) - f64::from(max) - sum.ln()) as f32
}

/// Lanes of the vectorised loops of [`log_softmax_at`].
const LANES: usize = 16;
/// Values summed in f32 before the partial sum joins the f64 total.
const SUM_RUN: usize = 256;

/// The largest logit; `None` when none is finite or any is NaN.
fn finite_max(values: &[f32]) -> Option<f32> {
    let mut m = [f32::NEG_INFINITY; LANES];
    let mut nan = [false; LANES];
    let mut lanes = values.chunks_exact(LANES);
    for c in &mut lanes {
        for ((m, n), &x) in m.iter_mut().zip(&mut nan).zip(c) {
            *m = if x > *m { x } else { *m };
            *n |= x.is_nan();
        }
    }
    for ((m, n), &x) in m.iter_mut().zip(&mut nan).zip(lanes.remainder()) {
        *m = if x > *m { x } else { *m };
        *n |= x.is_nan();
    }
    let max = m.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    (max.is_finite() && !nan.contains(&true)).then_some(max)
}

/// `e^x` for `x <= 0` (`-inf` gives 0), in f32 without a library call, so
/// that loops over it vectorise: `e^x = 2^k e^r` with `k = round(x / ln 2)`,
/// `r` reduced with a two-part ln 2 and `e^r` a degree-7 Taylor polynomial
/// (|r| <= ln 2 / 2, truncation below 1e-8 relative).
#[inline(always)]
fn exp_nonpositive(x: f32) -> f32 {
    // Below this, e^x is under f32's smallest normal: the result is 0.
    const LOWEST: f32 = -87.0;
    // 1.5 * 2^23: adding and subtracting it rounds to an integer (|v| < 2^22).
    const ROUND: f32 = 12_582_912.0;
    const LN2_HI: f32 = 0.693_145_75;
    const LN2_LO: f32 = 1.428_606_8e-6;
    let under = x < LOWEST;
    let x = if under { LOWEST } else { x };
    let k = (x * std::f32::consts::LOG2_E + ROUND) - ROUND;
    let r = (x - k * LN2_HI) - k * LN2_LO;
    let p = 1.0
        + r * (1.0
            + r * (0.5
                + r * (1.0 / 6.0
                    + r * (1.0 / 24.0
                        + r * (1.0 / 120.0 + r * (1.0 / 720.0 + r * (1.0 / 5040.0)))))));
    // k is in [-126, 0]: 2^k is a normal number built from its exponent bits.
    let scale = f32::from_bits(((k as i32 + 127) as u32) << 23);
    if under { 0.0 } else { p * scale }
}

/// Index of the largest value, ties to the lowest index; 0 when every value is
/// `-inf` (NaN never wins).
fn argmax(values: &[f32]) -> u32 {
    let mut best = 0usize;
    let mut best_v = f32::NEG_INFINITY;
    for (i, &v) in values.iter().enumerate() {
        if v > best_v {
            best = i;
            best_v = v;
        }
    }
    best as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_softmax_at_matches_the_definition() {
        let l = [1.0f32, 2.0, 3.0, f32::NEG_INFINITY];
        let z: f64 = l.iter().map(|&x| (x as f64).exp()).sum();
        for t in 0..3 {
            let want = (l[t] as f64) - z.ln();
            assert!((log_softmax_at(&l, t as u32) as f64 - want).abs() < 1e-6);
        }
        assert_eq!(log_softmax_at(&l, 3), f32::NEG_INFINITY);
        assert!(log_softmax_at(&l, 4).is_nan());
        // Large logits do not overflow.
        let big = [1000.0f32, 1000.0];
        assert!((log_softmax_at(&big, 1) - (0.5f32).ln()).abs() < 1e-6);
        let probs: f64 = (0..3).map(|t| (log_softmax_at(&l, t) as f64).exp()).sum();
        assert!((probs - 1.0).abs() < 1e-6);
    }

    #[test]
    fn exp_nonpositive_is_within_a_few_ulp() {
        let mut worst = 0f64;
        let mut x = 0f32;
        while x > -87.0 {
            let got = f64::from(exp_nonpositive(x));
            let want = f64::from(x).exp();
            worst = worst.max((got - want).abs() / want);
            x -= 0.000_731;
        }
        eprintln!("exp_nonpositive: worst relative error {worst:e}");
        assert!(worst < 2e-7, "relative error {worst}");
        assert_eq!(exp_nonpositive(0.0), 1.0);
        assert_eq!(exp_nonpositive(f32::NEG_INFINITY), 0.0);
        assert_eq!(exp_nonpositive(-100.0), 0.0);
    }

    #[test]
    fn log_softmax_at_agrees_with_an_f64_sum_over_a_vocabulary() {
        let l = logits_ramp(49_157);
        let max = l.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
        let z: f64 = l.iter().map(|&x| (x as f64 - max).exp()).sum();
        for t in [0u32, 1, 4096, 49_156] {
            let want = l[t as usize] as f64 - max - z.ln();
            let got = log_softmax_at(&l, t) as f64;
            assert!((got - want).abs() < 2e-6, "token {t}: {got} vs {want}");
        }
        let mut nan = l.clone();
        nan[30_000] = f32::NAN;
        assert!(log_softmax_at(&nan, 0).is_nan());
        assert!(log_softmax_at(&[f32::NEG_INFINITY; 20], 3).is_nan());
    }

    fn logits_ramp(v: usize) -> Vec<f32> {
        // A smooth, non-monotone landscape with a unique maximum.
        (0..v)
            .map(|i| ((i as f32) * 0.37).sin() * 3.0 + (i as f32) * 1e-3)
            .collect()
    }

    fn stochastic(seed: u64) -> SamplingParams {
        SamplingParams {
            temperature: 1.0,
            top_k: 0,
            top_p: 1.0,
            min_p: 0.0,
            repeat_penalty: 1.0,
            repeat_last_n: 64,
            seed,
            greedy: false,
        }
    }

    fn naive_argmax(l: &[f32]) -> u32 {
        let mut b = 0;
        for i in 0..l.len() {
            if l[i] > l[b] {
                b = i;
            }
        }
        b as u32
    }

    #[test]
    fn defaults_and_validation() {
        let d = SamplingParams::default();
        assert!(!d.greedy);
        assert_eq!(d.temperature, 0.8);
        assert_eq!(d.top_k, 40);
        assert_eq!(d.top_p, 0.95);
        assert_eq!(d.min_p, 0.05);
        assert_eq!(d.repeat_penalty, 1.0);
        assert_eq!(d.repeat_last_n, 64);
        assert_eq!(d.seed, 0);
        assert!(d.validate().is_ok());
        assert!(SamplingParams::greedy().greedy);

        let bad = |f: fn(&mut SamplingParams), field: &str| {
            let mut p = SamplingParams::default();
            f(&mut p);
            match p.validate() {
                Err(Error::InvalidArgument(m)) => assert!(m.contains(field), "{m}"),
                other => panic!("expected error for {field}, got {other:?}"),
            }
        };
        bad(|p| p.temperature = f32::NAN, "temperature");
        bad(|p| p.temperature = -0.1, "temperature");
        bad(|p| p.top_p = 0.0, "top_p");
        bad(|p| p.top_p = 1.5, "top_p");
        bad(|p| p.top_p = f32::NAN, "top_p");
        bad(|p| p.min_p = -0.1, "min_p");
        bad(|p| p.min_p = 1.1, "min_p");
        bad(|p| p.min_p = f32::NAN, "min_p");
        bad(|p| p.repeat_penalty = 0.0, "repeat_penalty");
        bad(|p| p.repeat_penalty = -1.0, "repeat_penalty");
        bad(|p| p.repeat_penalty = f32::NAN, "repeat_penalty");

        assert!(Sampler::new(0, SamplingParams::default()).is_err());
        let p = SamplingParams {
            top_p: 2.0,
            ..SamplingParams::default()
        };
        assert!(Sampler::new(10, p).is_err());
        let mut s = Sampler::new(10, SamplingParams::default()).unwrap();
        assert!(s.set_params(p).is_err());
        assert_eq!(s.params().top_p, 0.95);
    }

    #[test]
    fn greedy_is_argmax_with_lowest_tie() {
        let l = logits_ramp(1000);
        let mut s = Sampler::new(1000, SamplingParams::greedy()).unwrap();
        assert_eq!(s.sample(&l, &[]), naive_argmax(&l));

        let tied = [1.0, 5.0, 2.0, 5.0, 5.0];
        let mut s = Sampler::new(5, SamplingParams::greedy()).unwrap();
        assert_eq!(s.sample(&tied, &[]), 1);

        // Temperature 0 is greedy too.
        let mut p = stochastic(3);
        p.temperature = 0.0;
        let mut s = Sampler::new(1000, p).unwrap();
        for _ in 0..10 {
            assert_eq!(s.sample(&l, &[]), naive_argmax(&l));
        }
    }

    #[test]
    fn top_k_one_equals_greedy() {
        let v = 4096;
        let l = logits_ramp(v);
        let mut g = Sampler::new(v, SamplingParams::greedy()).unwrap();
        let want = g.sample(&l, &[]);
        for seed in 0..20 {
            let p = SamplingParams {
                top_k: 1,
                seed,
                ..SamplingParams::default()
            };
            let mut s = Sampler::new(v, p).unwrap();
            assert_eq!(s.sample(&l, &[]), want);
        }
        // Ties: top-k keeps the lowest id.
        let tied = [0.0, 3.0, 3.0, 1.0];
        let mut p = stochastic(9);
        p.top_k = 1;
        let mut s = Sampler::new(4, p).unwrap();
        assert_eq!(s.sample(&tied, &[]), 1);
    }

    #[test]
    fn top_k_restricts_to_k_best() {
        let v = 500;
        let l = logits_ramp(v);
        let mut sorted: Vec<u32> = (0..v as u32).collect();
        sorted.sort_by(|&a, &b| l[b as usize].partial_cmp(&l[a as usize]).unwrap());
        let top: Vec<u32> = sorted[..5].to_vec();
        let mut p = stochastic(11);
        p.top_k = 5;
        p.temperature = 5.0; // flatten so all five are hit
        let mut s = Sampler::new(v, p).unwrap();
        let mut hit = [false; 5];
        for _ in 0..2000 {
            let t = s.sample(&l, &[]);
            let pos = top.iter().position(|&x| x == t).expect("outside top-k");
            hit[pos] = true;
        }
        assert!(hit.iter().all(|&h| h));
    }

    #[test]
    fn seeds_reproducible_and_different() {
        let v = 2048;
        let l = logits_ramp(v);
        let run = |seed: u64| -> Vec<u32> {
            let mut p = stochastic(seed);
            p.temperature = 2.0;
            let mut s = Sampler::new(v, p).unwrap();
            (0..64).map(|_| s.sample(&l, &[])).collect()
        };
        assert_eq!(run(1), run(1));
        assert_ne!(run(1), run(2));

        // reset() restarts the sequence.
        let mut p = stochastic(5);
        p.temperature = 2.0;
        let mut s = Sampler::new(v, p).unwrap();
        let a: Vec<u32> = (0..32).map(|_| s.sample(&l, &[])).collect();
        s.reset(5);
        let b: Vec<u32> = (0..32).map(|_| s.sample(&l, &[])).collect();
        assert_eq!(a, b);
    }

    #[test]
    fn tiny_top_p_keeps_only_argmax() {
        let v = 3000;
        let l = logits_ramp(v);
        let want = naive_argmax(&l);
        let mut p = stochastic(7);
        p.top_p = 1e-6;
        p.temperature = 10.0;
        let mut s = Sampler::new(v, p).unwrap();
        for _ in 0..200 {
            assert_eq!(s.sample(&l, &[]), want);
        }
    }

    #[test]
    fn top_p_keeps_smallest_prefix() {
        // probs with T=1: proportional to exp(logit).
        let p4 = [0.5f64, 0.3, 0.15, 0.05];
        let l: Vec<f32> = p4.iter().map(|p| p.ln() as f32).collect();
        let mut p = stochastic(21);
        p.top_p = 0.75; // 0.5 + 0.3 >= 0.75 > 0.5: tokens {0, 1}
        let mut s = Sampler::new(4, p).unwrap();
        let mut counts = [0usize; 4];
        for _ in 0..4000 {
            counts[s.sample(&l, &[]) as usize] += 1;
        }
        assert_eq!(counts[2] + counts[3], 0, "{counts:?}");
        // Renormalised: 0.625 / 0.375.
        let f0 = counts[0] as f64 / 4000.0;
        assert!((f0 - 0.625).abs() < 0.04, "{counts:?}");
    }

    #[test]
    fn min_p_filters_relative_to_max() {
        // probs 0.6, 0.3, 0.08, 0.02: min_p 0.2 -> threshold 0.12 keeps {0, 1}.
        let p4 = [0.6f64, 0.3, 0.08, 0.02];
        let l: Vec<f32> = p4.iter().map(|p| p.ln() as f32).collect();
        let mut p = stochastic(33);
        p.min_p = 0.2;
        let mut s = Sampler::new(4, p).unwrap();
        let mut counts = [0usize; 4];
        for _ in 0..3000 {
            counts[s.sample(&l, &[]) as usize] += 1;
        }
        assert_eq!(counts[2] + counts[3], 0, "{counts:?}");
        assert!(counts[0] > 0 && counts[1] > 0);
        // min_p 1 keeps only the max.
        p.min_p = 1.0;
        s.set_params(p).unwrap();
        for _ in 0..100 {
            assert_eq!(s.sample(&l, &[]), 0);
        }
        // Without min-p every token appears.
        p.min_p = 0.0;
        s.set_params(p).unwrap();
        let mut seen = [false; 4];
        for _ in 0..5000 {
            seen[s.sample(&l, &[]) as usize] = true;
        }
        assert!(seen.iter().all(|&x| x));
    }

    #[test]
    fn repetition_penalty_changes_pick() {
        let l = [2.0f32, 1.5, -1.0, -3.0];
        let mut p = SamplingParams::greedy();
        let mut s = Sampler::new(4, p).unwrap();
        assert_eq!(s.sample(&l, &[0, 0, 0]), 0); // penalty 1: off
        p.repeat_penalty = 1.5; // 2.0 / 1.5 = 1.33 < 1.5
        s.set_params(p).unwrap();
        assert_eq!(s.sample(&l, &[0, 0, 0]), 1);
        // Only the last repeat_last_n tokens count.
        p.repeat_last_n = 1;
        s.set_params(p).unwrap();
        assert_eq!(s.sample(&l, &[0, 3]), 0);
        assert_eq!(s.sample(&l, &[3, 0]), 1);
        // Distinct tokens penalised once: 2.0 / 1.5 once, not 2.0 / 1.5^3.
        let l2 = [2.0f32, 1.0, 1.3];
        p.repeat_last_n = 64;
        s = Sampler::new(3, p).unwrap();
        assert_eq!(s.sample(&l2, &[0, 0, 0]), 0); // 1.33 > 1.3
        // Negative logits are multiplied (pushed further down).
        let l3 = [-1.0f32, -1.2];
        s = Sampler::new(2, p).unwrap();
        assert_eq!(s.sample(&l3, &[0]), 1); // -1.5 < -1.2
        // Out-of-range recent ids are ignored.
        assert_eq!(s.sample(&l3, &[99, 7]), 0);
        // The caller's logits are untouched.
        assert_eq!(l3, [-1.0, -1.2]);
    }

    #[test]
    fn nan_and_infinite_logits_do_not_panic() {
        let l = [f32::NAN, 1.0, f32::NAN, 0.5];
        let mut s = Sampler::new(4, SamplingParams::greedy()).unwrap();
        assert_eq!(s.sample(&l, &[]), 1);
        let mut s = Sampler::new(4, SamplingParams::default()).unwrap();
        for _ in 0..50 {
            let t = s.sample(&l, &[]);
            assert!(t == 1 || t == 3);
        }
        let all_nan = [f32::NAN; 4];
        assert_eq!(s.sample(&all_nan, &[]), 0);
        let all_neg_inf = [f32::NEG_INFINITY; 4];
        assert_eq!(s.sample(&all_neg_inf, &[]), 0);
        let pos_inf = [0.0, f32::INFINITY, 3.0, f32::INFINITY];
        for _ in 0..50 {
            let t = s.sample(&pos_inf, &[]);
            assert!(t == 1 || t == 3);
        }
        let mut p = stochastic(1);
        p.temperature = f32::INFINITY; // uniform over finite logits
        let mut s = Sampler::new(4, p).unwrap();
        let l = [0.0, -5.0, f32::NEG_INFINITY, 2.0];
        for _ in 0..50 {
            assert_ne!(s.sample(&l, &[]), 2);
        }
        // Length mismatch.
        assert_eq!(s.sample(&[], &[]), 0);
        assert!(s.try_sample(&[1.0, 2.0], &[]).is_err());
        assert!(s.try_sample(&[1.0, 2.0, 3.0, 4.0], &[]).is_ok());
    }

    #[test]
    fn default_params_sample_plausibly() {
        let v = 65536;
        let l = logits_ramp(v);
        let mut s = Sampler::new(v, SamplingParams::default()).unwrap();
        let mut sorted: Vec<u32> = (0..v as u32).collect();
        sorted.sort_by(|&a, &b| l[b as usize].partial_cmp(&l[a as usize]).unwrap());
        for _ in 0..100 {
            let t = s.sample(&l, &[]);
            assert!(sorted[..40].contains(&t));
        }
    }

    /// `sample` must not allocate. A counting `#[global_allocator]` would
    /// apply to the whole test binary (and other modules' tests running in
    /// parallel), so instead this checks that no scratch buffer is ever
    /// reallocated or grown: their addresses and capacities are the same
    /// after many calls over every code path. The remaining operations
    /// (`select_nth_unstable_by`, `sort_unstable_by`, iterators) are in-place.
    #[test]
    fn sample_does_not_reallocate_buffers() {
        let v = 10_000;
        let l = logits_ramp(v);
        let recent: Vec<u32> = (0..200).map(|i| (i * 37) % v as u32).collect();
        let mut s = Sampler::new(v, SamplingParams::default()).unwrap();
        let snapshot = |s: &Sampler| {
            (
                (s.work.as_ptr(), s.work.capacity()),
                (s.cand.as_ptr(), s.cand.capacity()),
                (s.weights.as_ptr(), s.weights.capacity()),
                (s.seen.as_ptr(), s.seen.capacity()),
            )
        };
        let before = snapshot(&s);
        let variants = [
            SamplingParams::default(),
            SamplingParams::greedy(),
            SamplingParams {
                repeat_penalty: 1.3,
                ..SamplingParams::default()
            },
            SamplingParams {
                top_k: 0,
                min_p: 0.0,
                ..stochastic(4)
            },
            SamplingParams {
                top_k: 0,
                top_p: 0.5,
                min_p: 0.01,
                ..stochastic(4)
            },
        ];
        for p in variants {
            s.set_params(p).unwrap();
            for _ in 0..50 {
                s.sample(&l, &recent);
            }
        }
        assert_eq!(snapshot(&s), before);
        assert!(s.seen.iter().all(|&x| !x), "seen marks must be cleared");
    }

    /// One speculative step on hand-made distributions: draft `x ~ q`,
    /// accept with `min(1, p/q)`, else draw from `max(0, p - q)`.
    fn speculative_step(s: &mut Sampler, p: &[f32], q: &[f32], scratch: &mut [f32]) -> u32 {
        let x = s.draw(q);
        if s.accept_draft(p[x as usize], q[x as usize]) {
            x
        } else {
            scratch.copy_from_slice(p);
            s.draw_residual(scratch, q)
        }
    }

    #[test]
    fn speculative_acceptance_keeps_the_target_distribution() {
        let cases: [([f32; 4], [f32; 4]); 4] = [
            // The draft overweights token 0 and misses token 3.
            ([0.1, 0.2, 0.3, 0.4], [0.7, 0.2, 0.1, 0.0]),
            // The draft is uniform.
            ([0.05, 0.05, 0.6, 0.3], [0.25; 4]),
            // Equal distributions: always accepted.
            ([0.5, 0.25, 0.125, 0.125], [0.5, 0.25, 0.125, 0.125]),
            // Disjoint supports: always rejected.
            ([0.0, 0.0, 0.5, 0.5], [0.5, 0.5, 0.0, 0.0]),
        ];
        let n = 200_000;
        for (p, q) in cases {
            let mut s = Sampler::new(4, stochastic(99)).unwrap();
            let mut counts = [0usize; 4];
            let mut scratch = [0f32; 4];
            for _ in 0..n {
                counts[speculative_step(&mut s, &p, &q, &mut scratch) as usize] += 1;
            }
            for t in 0..4 {
                let f = counts[t] as f64 / n as f64;
                // Five standard deviations of a binomial frequency.
                let sd = (p[t] as f64 * (1.0 - p[t] as f64) / n as f64).sqrt();
                assert!(
                    (f - p[t] as f64).abs() <= 5.0 * sd + 1e-9,
                    "p {p:?} q {q:?}: token {t} drawn {f}, want {}",
                    p[t]
                );
            }
        }
    }

    #[test]
    fn acceptance_probability_is_min_one_p_over_q() {
        let mut s = Sampler::new(4, stochastic(3)).unwrap();
        let n = 100_000;
        for (p, q, want) in [(0.2f32, 0.8f32, 0.25), (0.8, 0.2, 1.0), (0.0, 0.5, 0.0)] {
            let hits = (0..n).filter(|_| s.accept_draft(p, q)).count();
            let f = hits as f64 / n as f64;
            assert!(
                (f - want).abs() < 0.01,
                "p {p} q {q}: accepted {f}, want {want}"
            );
        }
        // The residual is max(0, p - q), renormalised.
        let mut p = [0.1f32, 0.2, 0.3, 0.4];
        let q = [0.7f32, 0.2, 0.1, 0.0];
        for _ in 0..1000 {
            let mut r = p;
            let t = s.draw_residual(&mut r, &q);
            assert!(t == 2 || t == 3, "drew {t} with no residual mass");
            let want = [0.0, 0.0, 0.2, 0.4];
            assert!(
                r.iter().zip(want).all(|(a, b)| (a - b).abs() < 1e-6),
                "{r:?}"
            );
        }
        // Equal distributions leave no residual: p itself.
        p = q;
        let t = s.draw_residual(&mut p, &q);
        assert!(q[t as usize] > 0.0);
    }

    #[test]
    fn distribution_matches_what_sample_draws() {
        let v = 64;
        let logits = logits_ramp(v);
        let params = SamplingParams {
            temperature: 0.7,
            top_k: 20,
            top_p: 0.9,
            min_p: 0.05,
            repeat_penalty: 1.3,
            repeat_last_n: 8,
            seed: 5,
            greedy: false,
        };
        let recent = [3u32, 17, 17, 40];
        let mut s = Sampler::new(v, params).unwrap();
        let mut probs = vec![0f32; v];
        s.distribution(&logits, &recent, &mut probs).unwrap();
        let total: f32 = probs.iter().sum();
        assert!((total - 1.0).abs() < 1e-5);
        assert!(probs.iter().filter(|&&x| x > 0.0).count() <= 20);
        let n = 100_000;
        let mut counts = vec![0usize; v];
        for _ in 0..n {
            counts[s.sample(&logits, &recent) as usize] += 1;
        }
        for t in 0..v {
            let f = counts[t] as f64 / n as f64;
            let sd = (probs[t] as f64 * (1.0 - probs[t] as f64) / n as f64).sqrt();
            assert!(
                (f - probs[t] as f64).abs() <= 5.0 * sd + 1e-9,
                "token {t}: {f} vs {}",
                probs[t]
            );
        }
        // Greedy parameters give a one-hot distribution at the pick.
        let mut g = Sampler::new(v, SamplingParams::greedy()).unwrap();
        g.distribution(&logits, &[], &mut probs).unwrap();
        let pick = g.sample(&logits, &[]) as usize;
        assert_eq!(probs[pick], 1.0);
        assert_eq!(probs.iter().sum::<f32>(), 1.0);
        // Wrong lengths are refused.
        assert!(g.distribution(&logits[1..], &[], &mut probs).is_err());
    }
}
