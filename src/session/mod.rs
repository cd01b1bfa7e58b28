//! A session: one conversation's KV cache, recurrent state and compute buffers,
//! over a shared [`Model`].
//!
//! Everything a token needs is allocated when the session is created: the KV
//! cache (`P + C*B + K` layer instances of `n_ctx` rows, B = the recurrence
//! budget), persistent state/embedding stores, host scratch, and compute buffers
//! reserved for the largest graph. Per token the session only rebuilds graph
//! metadata in a pre-sized arena and reuses everything else.

use crate::error::{Error, Result};
use crate::ggml::{Backend, Buffer, Compute, Context, Shape, Tensor};
use crate::gguf::GgmlType;
use crate::model::Model;
use crate::model::graph::{BatchInputs, GraphBuilder, KvLayer};
use crate::rng::SplitMix64;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

mod state;
mod stores;
mod verify;

use stores::Stores;
pub(crate) use verify::{RoundStart, verify_segments};

/// Element type of the KV cache.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum KvType {
    /// 32-bit floats (exact).
    #[default]
    F32,
    /// 16-bit floats (half the memory).
    F16,
}

/// How the recurrent state of a new position starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum StateInit {
    /// All zeros.
    #[default]
    Zeros,
    /// Truncated normal from the session's seeded generator (docs/gguf.md), or
    /// zeros when the model's `state_init_std` is 0.
    Random,
}

/// Session creation parameters.
#[derive(Clone, Debug)]
pub struct SessionParams {
    /// Context length in positions (0 = the model's training context).
    pub n_ctx: usize,
    /// Most positions processed in one graph during prefill (0 = min(n_ctx, 256)).
    pub n_batch: usize,
    /// Recurrence budget B: KV slots per core block (step t uses slot (t-1) mod B).
    pub kv_budget: usize,
    /// KV cache element type.
    pub kv_type: KvType,
    /// Seed of the initial-state generator.
    pub seed: u64,
    /// How new positions' states start.
    pub state_init: StateInit,
    /// Where the logits-based exit criteria that reduce to a few numbers
    /// (`kl`, `entropy-diff`, `argmax-stability`) are computed: `Some(true)`
    /// inside the graph on the device, so a check reads back three numbers
    /// instead of the logits (which are then read once per token);
    /// `Some(false)` on the host in f64 from the logits; `None` (default):
    /// on the device for GPU backends, on the host for the CPU.
    pub exit_on_device: Option<bool>,
    /// How hard idle CPU threads poll for work between graph nodes before
    /// sleeping, 0..=100 (default 50, ggml's): higher can shorten each token
    /// on a busy core, lower saves power (on a phone, spinning threads cost
    /// battery). Only the CPU backend's threads.
    pub thread_poll: u32,
    /// Attention as one fused op (`ggml_flash_attn_ext`, with V stored like
    /// K) instead of two products around a softmax: `Some(true)` fused,
    /// `Some(false)` separate, `None` (default): separate. On the CPU fused
    /// attention is faster at prefill; at decode it was 20% slower at 400
    /// positions with the AVX2 kernels and is level with separate attention
    /// with the AVX-512 kernels (docs/performance.md); ggml-vulkan's fused
    /// kernel has not been measured here. Results differ in rounding only;
    /// a saved session state records the layout, and one of the other
    /// layout is converted when loaded.
    pub flash_attention: Option<bool>,
}

impl Default for SessionParams {
    fn default() -> Self {
        SessionParams {
            n_ctx: 0,
            n_batch: 0,
            kv_budget: 1,
            kv_type: KvType::F32,
            seed: 0,
            state_init: StateInit::Zeros,
            exit_on_device: None,
            thread_poll: 50,
            flash_attention: None,
        }
    }
}

/// Most recurrence steps placed in one graph; longer runs use several graphs.
pub(crate) const STEPS_PER_GRAPH: usize = 16;
/// Upper bound on graph nodes per block (the builder uses about 45).
const NODES_PER_BLOCK: usize = 64;
/// Marks the shape keys of speculative verification graphs.
const VERIFY_SHAPE: u64 = 1 << 63;
/// Most iterations a single token may run.
pub const MAX_ITERATIONS: usize = 4096;

/// Which logits a forward pass produces.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum CodaMode {
    /// No coda (state only).
    None,
    /// Logits of the last position of the batch.
    Last,
    /// Logits of every position of the batch.
    All,
}

/// One graph's worth of work on the current batch.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Segment {
    /// Run embedding and prelude on the batch tokens and start the state from `x0`.
    pub prelude: bool,
    /// First recurrence step (1-based) in this graph.
    pub first_step: usize,
    /// Number of steps in this graph.
    pub n_steps: usize,
    /// Whether to run the coda and head, and for which positions.
    pub coda: CodaMode,
    /// With `coda` = `Last`: compute the exit statistics of the logits in the
    /// graph (see [`ExitStats`]) and keep the logits on the device instead of
    /// reading them back.
    pub exit_stats: bool,
    /// A lead-in check inside this graph: after this many of its steps (0:
    /// none; less than `n_steps`), run the coda on the state too
    /// (`lead_coda`: logits, or exit statistics with `exit_stats`, of the
    /// last position) or keep the state in the lead store (latent
    /// criteria). The token's first check, whose successor ends the graph.
    pub lead_at: usize,
    /// With `lead_at`: a coda (criteria on the distribution), not a state.
    pub lead_coda: bool,
}

/// What a check computed on the device reports: enough for the `kl`,
/// `entropy-diff`, `argmax-stability` and `confidence` criteria.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct ExitStats {
    /// `sum p ln p` of this check's next-token distribution (= -entropy).
    pub neg_entropy: f64,
    /// `sum ln p` at the first check of the batch, `sum p_prev ln p` against
    /// the previous check after it (see [`crate::exit::ExitState::observe_stats`]).
    pub kl_term: f64,
    /// Index of the largest logit.
    pub argmax: usize,
    /// `ln p` of that token: minus the log-sum-exp of the logits shifted by
    /// their maximum.
    pub max_logp: f64,
}

impl ExitStats {
    /// No check yet.
    const NONE: ExitStats = ExitStats {
        neg_entropy: f64::NAN,
        kl_term: f64::NAN,
        argmax: 0,
        max_logp: f64::NAN,
    };

    /// From the three floats a check writes to the stats store and its argmax.
    fn from_store(st: &[f32], argmax: i32) -> ExitStats {
        ExitStats {
            neg_entropy: st[0] as f64,
            kl_term: st[1] as f64,
            argmax: argmax.max(0) as usize,
            max_logp: -(st[2] as f64),
        }
    }
}

/// A conversation over a model: KV cache, state and compute buffers.
pub struct Session {
    model: Arc<Model>,
    params: SessionParams,
    n_ctx: usize,
    n_batch: usize,
    graph_size: usize,
    /// Graph plans and compute buffers (dropped before the backend).
    compute: Compute,
    backend: Backend,
    graph_ctx: Context,
    // KV cache and persistent stores, in `kv_buf`.
    _kv_ctx: Context,
    kv_buf: Buffer,
    // Exit-statistics stores (logits, log-probabilities, scalars, lead-in states), in `exit_buf`.
    _exit_ctx: Context,
    exit_buf: Buffer,
    prelude_kv: Vec<KvLayer>,
    /// Core KV, indexed `[slot * n_core + block]`.
    core_kv: Vec<KvLayer>,
    coda_kv: Vec<KvLayer>,
    state_store: Tensor,
    /// `[n_embd, n_batch]`: the states of a lead-in check (see
    /// [`Segment::lead_at`]), laid out like `state_store`.
    lead_store: Tensor,
    embed_store: Tensor,
    /// Logits of the last position, kept on the device by exit-stat checks.
    logits_store: Tensor,
    /// Log-probabilities of the last two exit-stat checks (`[n_vocab, 2]`,
    /// used alternately so a graph never overwrites what it reads).
    logp_store: Tensor,
    /// `[neg_entropy, kl_term, -max_logp]` of the last exit-stat check,
    /// then the same of a lead-in check in its graph.
    stats_store: Tensor,
    /// Whether generation computes exit statistics on the device.
    exit_on_device: bool,
    /// Fused attention, with V stored like K (see [`SessionParams::flash_attention`]).
    flash: bool,
    /// Exit-stat checks run on the current batch.
    device_checks: usize,
    last_stats: ExitStats,
    /// The statistics of the lead-in check of the last graph that had one.
    lead_stats: ExitStats,
    /// The logits of the last lead-in check computed on the host path.
    lead_logits: Vec<f32>,
    host: HostInputs,
    logits: Vec<f32>,
    rng: SplitMix64,
    n_past: usize,
    /// Tokens of the batch being processed.
    n_cur: usize,
    cancel: Arc<AtomicBool>,
    /// Most device splits seen in one graph (see [`Session::graph_splits`]).
    max_splits: usize,
    /// Iterations the last committed batch ran (0 before any).
    last_iterations: usize,
    /// Whether `logits` belong to the last cached position.
    logits_valid: bool,
    /// Whether the current batch is a speculative verification, whose graphs
    /// have plans of their own (see [`Session::verify`]).
    verifying: bool,
    /// Batch size verification graphs are planned for (0 before any).
    verify_n: usize,
    /// Row of the state and embedding stores a single-token batch uses
    /// (drafts keep their states in rows 0.. for the verification that
    /// continues them; 0 otherwise).
    store_row: usize,
}

impl Session {
    /// Creates a session, allocating its KV cache and compute buffers.
    pub fn new(model: Arc<Model>, params: &SessionParams) -> Result<Session> {
        let cfg = model.config().clone();
        let n_ctx = if params.n_ctx == 0 {
            cfg.context_length
        } else {
            params.n_ctx
        };
        if n_ctx > cfg.context_length {
            return Err(Error::InvalidArgument(format!(
                "n_ctx {n_ctx} exceeds the model's context length {}",
                cfg.context_length
            )));
        }
        let b = params.kv_budget;
        if b == 0 || b > MAX_ITERATIONS {
            return Err(Error::InvalidArgument(format!(
                "kv_budget {b} out of range 1..={MAX_ITERATIONS}"
            )));
        }
        let n_batch = if params.n_batch == 0 {
            n_ctx.min(256)
        } else {
            params.n_batch.min(n_ctx)
        };
        // Host scratch; the mask is the largest ([n_ctx, n_batch] floats).
        let mask_len = n_ctx
            .checked_mul(n_batch)
            .filter(|&m| m <= (1usize << 31))
            .ok_or_else(|| {
                Error::InvalidArgument(format!("n_ctx {n_ctx} x n_batch {n_batch} is too large"))
            })?;
        let mut mask = Vec::new();
        mask.try_reserve_exact(mask_len)
            .map_err(|_| Error::OutOfMemory(format!("attention mask of {mask_len} floats")))?;
        mask.resize(mask_len, 0.0);

        let lp = model.load_params();
        let mut backend = Backend::new(lp.backend, lp.n_threads)?;
        backend.set_poll(params.thread_poll)?;
        let flash = params.flash_attention.unwrap_or(false);
        let st = Stores::alloc(&backend, &cfg, b, params.kv_type, n_ctx, n_batch, flash)?;

        // (The coda twice: a lead-in check's and the graph's own.)
        let graph_size = NODES_PER_BLOCK * (cfg.n_prelude + 2 * cfg.n_coda)
            + 640
            + STEPS_PER_GRAPH * (NODES_PER_BLOCK * cfg.n_core + 16);
        let graph_ctx = Context::new(graph_size * 3, graph_size)?;
        let compute = Compute::new(&backend);
        let backend_is_cpu = backend.is_cpu();
        let mut s = Session {
            n_ctx,
            n_batch,
            graph_size,
            compute,
            backend,
            graph_ctx,
            _kv_ctx: st.kv_ctx,
            kv_buf: st.kv_buf,
            _exit_ctx: st.exit_ctx,
            exit_buf: st.exit_buf,
            prelude_kv: st.prelude,
            core_kv: st.core,
            coda_kv: st.coda,
            state_store: st.state,
            lead_store: st.lead,
            embed_store: st.embed,
            logits_store: st.logits,
            logp_store: st.logp,
            stats_store: st.stats,
            exit_on_device: params.exit_on_device.unwrap_or(!backend_is_cpu),
            flash,
            device_checks: 0,
            last_stats: ExitStats::NONE,
            lead_stats: ExitStats::NONE,
            lead_logits: vec![0.0; cfg.n_vocab],
            host: HostInputs {
                ids: vec![0; n_batch],
                pos: vec![0; n_batch],
                mask,
                x0: vec![0.0; cfg.n_embd * n_batch],
            },
            logits: vec![0.0; cfg.n_vocab],
            rng: SplitMix64::new(params.seed),
            n_past: 0,
            n_cur: 0,
            cancel: Arc::new(AtomicBool::new(false)),
            max_splits: 0,
            last_iterations: 0,
            logits_valid: false,
            verifying: false,
            verify_n: 0,
            store_row: 0,
            params: params.clone(),
            model,
        };
        s.reserve()?;
        Ok(s)
    }

    /// Reserves compute memory with the largest graph this session can build.
    fn reserve(&mut self) -> Result<()> {
        self.n_cur = self.n_batch;
        let n_past = self.n_ctx - self.n_batch;
        let seg = Segment {
            prelude: true,
            first_step: 1,
            n_steps: STEPS_PER_GRAPH,
            coda: CodaMode::All,
            exit_stats: self.exit_on_device,
            lead_at: 0,
            lead_coda: false,
        };
        let graph_size = self.graph_size;
        let shape = self.shape_of(seg);
        let res = self.build_and(seg, n_past, |compute, backend, graph| {
            compute.fit_to(backend, graph_size, &graph.graph)?;
            compute.reserve(backend, shape, &mut graph.graph)
        });
        self.n_cur = 0;
        self.max_splits = self.compute.n_splits();
        res
    }

    /// The allocation shape of a graph for `seg` on the current batch: graphs
    /// of one shape have the same nodes in the same order (sizes may differ).
    fn shape_of(&self, seg: Segment) -> Shape {
        let coda = match seg.coda {
            CodaMode::None => 0u64,
            CodaMode::Last => 1,
            CodaMode::All => 2,
        };
        let cross = seg.exit_stats && self.device_checks > 0;
        let key = (seg.lead_at as u64) << 16
            | (seg.n_steps as u64) << 8
            | coda << 4
            | (seg.lead_coda as u64) << 3
            | (seg.prelude as u64) << 2
            | (seg.exit_stats as u64) << 1
            | cross as u64;
        if self.n_cur == 1 {
            Shape::Token(key)
        } else if self.verifying {
            // Planned once at the largest verification batch; smaller ones
            // have the same nodes and fit (like tokens at a shorter context).
            Shape::Token(key | VERIFY_SHAPE)
        } else {
            Shape::Batch(key)
        }
    }

    /// Plans compute memory for every single-token graph `segments` lists
    /// (at the full context, each graph's largest size), so that generating
    /// tokens later places tensors without allocating. `segments` yields each
    /// segment with the number of exit-statistic checks run before it in its
    /// token.
    pub(crate) fn plan_token_graphs(&mut self, segments: &[(Segment, usize)]) -> Result<()> {
        let saved = self.verifying;
        self.verifying = false;
        let res = self.plan_graphs(1, segments);
        self.verifying = saved;
        res
    }

    /// Plans compute memory for the graphs of a speculative verification of
    /// up to `n` positions (`segments` as for [`Session::plan_token_graphs`]),
    /// at the full context.
    pub(crate) fn plan_verify_graphs(
        &mut self,
        n: usize,
        segments: &[(Segment, usize)],
    ) -> Result<()> {
        if n < 2 || n > self.n_batch {
            return Err(Error::InvalidArgument(format!(
                "a verification batch of {n} positions (2..={} with n_batch {})",
                self.n_batch, self.n_batch
            )));
        }
        let saved = self.verifying;
        self.verifying = true;
        self.verify_n = self.verify_n.max(n);
        let res = self.plan_graphs(self.verify_n, segments);
        self.verifying = saved;
        res
    }

    /// Plans every graph `segments` lists for a batch of `n` positions at
    /// the end of the context (each shape's largest graph).
    fn plan_graphs(&mut self, n: usize, segments: &[(Segment, usize)]) -> Result<()> {
        let (saved_cur, saved_checks) = (self.n_cur, self.device_checks);
        self.n_cur = n;
        let mut res = Ok(());
        for &(seg, checks) in segments {
            self.device_checks = checks;
            let shape = self.shape_of(seg);
            if self.compute.is_planned(shape) {
                continue;
            }
            // At the end of the context: the shape's largest graph.
            res = self.build_and(seg, self.n_ctx - n, |compute, backend, graph| {
                compute.reserve(backend, shape, &mut graph.graph)
            });
            if res.is_err() {
                break;
            }
        }
        self.n_cur = saved_cur;
        self.device_checks = saved_checks;
        res
    }

    /// Replaces the device backend and scheduler with new ones (after a GPU
    /// failure) and reserves compute memory again.
    fn rebuild_backend(&mut self) -> Result<()> {
        let mut backend = Backend::new(self.backend.kind(), self.backend.n_threads())?;
        backend.set_poll(self.backend.poll())?;
        // The old plans and buffers go before the backend they belong to.
        self.compute = Compute::new(&backend);
        self.backend = backend;
        self.reserve()
    }

    /// The model this session runs.
    pub fn model(&self) -> &Arc<Model> {
        &self.model
    }

    /// Context length in positions.
    pub fn n_ctx(&self) -> usize {
        self.n_ctx
    }

    /// Positions currently in the cache.
    pub fn n_past(&self) -> usize {
        self.n_past
    }

    /// Recurrence budget B (KV slots per core block).
    pub fn kv_budget(&self) -> usize {
        self.params.kv_budget
    }

    /// Bytes of device memory held by the KV cache and state stores.
    pub fn kv_bytes(&self) -> usize {
        self.kv_buf.size()
    }

    /// Bytes of compute buffers reserved for graphs, plus the small stores
    /// of the exit statistics (`3 * n_vocab + 2` floats).
    pub fn compute_bytes(&self) -> usize {
        self.compute.compute_bytes(&self.backend) + self.exit_buf.size()
    }

    /// Most pieces one graph of this session was split into between devices.
    /// 1 means every op ran on the session's device; on a GPU, more means some
    /// ops fell back to the CPU (ggml's scheduler copies tensors at each
    /// boundary). Measured on the largest graph at creation and updated as
    /// graphs run.
    pub fn graph_splits(&self) -> usize {
        self.max_splits
    }

    /// Name of the backend this session computes on (e.g. `CPU`, `Vulkan0`).
    pub fn backend_name(&self) -> String {
        self.backend.name()
    }

    /// A flag that, when set from any thread, stops the running computation:
    /// on the CPU within one graph node, on a GPU at the end of the running
    /// graph (at most 16 recurrence steps); the call then returns
    /// [`Error::Cancelled`].
    pub fn cancel_flag(&self) -> Arc<AtomicBool> {
        Arc::clone(&self.cancel)
    }

    /// Forgets every cached position and re-seeds the state generator.
    pub fn reset(&mut self) {
        self.n_past = 0;
        self.n_cur = 0;
        self.rng = SplitMix64::new(self.params.seed);
        self.last_iterations = 0;
        self.logits_valid = false;
        self.cancel.store(false, Ordering::Relaxed);
    }

    /// Drops cached positions from `n` on (keeps the first `n`; an `n` at or
    /// past [`Session::n_past`] changes nothing). The next evaluation
    /// continues from position `n`, as if the dropped tokens had never been
    /// seen. When positions are dropped, [`Session::logits`] no longer belong
    /// to the last cached position (and [`Session::last_iterations`] reads 0)
    /// until the next evaluation.
    pub fn truncate(&mut self, n: usize) {
        if n < self.n_past {
            self.n_past = n;
            self.last_iterations = 0;
            self.logits_valid = false;
        }
    }

    /// Whether [`Session::logits`] are those of the last cached position:
    /// false on a new, reset or truncated session, and after an evaluation
    /// that failed or was cancelled (its logits may belong to a position that
    /// was never committed).
    pub fn has_logits(&self) -> bool {
        self.logits_valid
    }

    /// CPU threads this session computes with.
    pub fn n_threads(&self) -> usize {
        self.backend.n_threads()
    }

    /// Computes with `n_threads` CPU threads from the next call on (0 = the
    /// physical cores, at most 512), e.g. fewer while an app is in the
    /// background. Results do not depend on the thread count. Graphs that
    /// need a larger CPU work buffer with more threads grow it once.
    pub fn set_threads(&mut self, n_threads: usize) -> Result<()> {
        self.backend.set_threads(n_threads)
    }

    /// Logits of the last evaluated position.
    pub fn logits(&self) -> &[f32] {
        &self.logits
    }

    /// Runs `tokens` through the model with a fixed number of recurrences,
    /// appending them to the cache, and keeps the last position's logits
    /// (see [`Session::logits`]). Prompts longer than `n_batch` run in chunks.
    /// A model without recurrence runs once whatever `iterations` (1..) says.
    pub fn eval(&mut self, tokens: &[u32], iterations: usize) -> Result<()> {
        self.eval_impl(tokens, iterations, None)
    }

    /// Like [`Session::eval`] but returns the logits of every position
    /// (`tokens.len() * n_vocab` floats, position-major).
    pub fn eval_all_logits(&mut self, tokens: &[u32], iterations: usize) -> Result<Vec<f32>> {
        let n_vocab = self.model.config().n_vocab;
        let mut out = Vec::new();
        out.try_reserve_exact(tokens.len().saturating_mul(n_vocab))
            .map_err(|_| Error::OutOfMemory("logits".into()))?;
        self.eval_impl(tokens, iterations, Some(&mut out))?;
        Ok(out)
    }

    fn eval_impl(
        &mut self,
        tokens: &[u32],
        iterations: usize,
        mut all: Option<&mut Vec<f32>>,
    ) -> Result<()> {
        if iterations == 0 || iterations > MAX_ITERATIONS {
            return Err(Error::InvalidArgument(format!(
                "iterations {iterations} out of range 1..={MAX_ITERATIONS}"
            )));
        }
        self.check_tokens(tokens)?;
        // Without recurrence every token runs once through the blocks.
        let iterations = if self.model.config().has_recurrence() {
            iterations
        } else {
            1
        };
        for chunk in tokens.chunks(self.n_batch) {
            self.begin_batch(chunk)?;
            let coda = if all.is_some() {
                CodaMode::All
            } else {
                CodaMode::Last
            };
            let mut step = 1;
            while step <= iterations {
                let n_steps = (iterations - step + 1).min(STEPS_PER_GRAPH);
                let last = step + n_steps > iterations;
                let seg = Segment {
                    prelude: step == 1,
                    first_step: step,
                    n_steps,
                    coda: if last { coda } else { CodaMode::None },
                    exit_stats: false,
                    lead_at: 0,
                    lead_coda: false,
                };
                if let (true, Some(out)) = (last, all.as_deref_mut()) {
                    self.run_segment(seg, Some(out))?;
                } else {
                    self.run_segment(seg, None)?;
                }
                step += n_steps;
            }
            self.fill_unreached_slots(iterations)?;
            self.end_batch();
            self.last_iterations = iterations;
        }
        Ok(())
    }

    /// Checks token ids and context room for `tokens`.
    pub(crate) fn check_tokens(&self, tokens: &[u32]) -> Result<()> {
        if tokens.is_empty() {
            return Err(Error::InvalidArgument("no tokens".into()));
        }
        let n_vocab = self.model.config().n_vocab;
        if let Some(&t) = tokens.iter().find(|&&t| t as usize >= n_vocab) {
            return Err(Error::InvalidArgument(format!(
                "token id {t} out of range (vocabulary {n_vocab})"
            )));
        }
        let needed = self.n_past + tokens.len();
        if needed > self.n_ctx {
            return Err(Error::ContextFull {
                needed,
                n_ctx: self.n_ctx,
            });
        }
        Ok(())
    }

    /// Prepares host inputs for a batch of at most `n_batch` tokens at `n_past`.
    pub(crate) fn begin_batch(&mut self, tokens: &[u32]) -> Result<()> {
        let n = tokens.len();
        if n == 0 || n > self.n_batch || self.n_past + n > self.n_ctx {
            return Err(Error::InvalidArgument("batch does not fit".into()));
        }
        self.n_cur = n;
        self.device_checks = 0;
        // The batch's graphs overwrite the logits before it is committed.
        self.logits_valid = false;
        let h = &mut self.host;
        for (i, &t) in tokens.iter().enumerate() {
            h.ids[i] = t as i32;
            h.pos[i] = (self.n_past + i) as i32;
        }
        let n_kv = self.n_past + n;
        for i in 0..n {
            let row = &mut h.mask[i * n_kv..(i + 1) * n_kv];
            let limit = self.n_past + i;
            for (j, m) in row.iter_mut().enumerate() {
                *m = if j <= limit { 0.0 } else { f32::NEG_INFINITY };
            }
        }
        let d = self.model.config().n_embd;
        let x0 = &mut h.x0[..n * d];
        let std = self.model.config().state_init_std as f64;
        match self.params.state_init {
            StateInit::Random if std > 0.0 => {
                let scale = self.model.config().embedding_scale as f64;
                self.rng.fill_state(x0, std, scale);
            }
            _ => x0.fill(0.0),
        }
        Ok(())
    }

    /// Replaces the initial state of every position of the current batch with
    /// `row` (warm start: the previous token's final state).
    pub(crate) fn set_initial_state(&mut self, row: &[f32]) {
        let d = self.model.config().n_embd;
        for i in 0..self.n_cur {
            self.host.x0[i * d..(i + 1) * d].copy_from_slice(&row[..d]);
        }
    }

    /// Reads the recurrent state of the last position of the current batch.
    /// Reads the states of every position of the running batch into the
    /// front of `out` (positions one after another); returns the number of
    /// values written (positions x width).
    /// With `lead`, the states of the last graph's lead-in check.
    pub(crate) fn read_batch_states(&self, out: &mut [f32], lead: bool) -> Result<usize> {
        let d = self.model.config().n_embd;
        if self.n_cur <= 1 {
            let dst = out.get_mut(..d).ok_or_else(|| {
                Error::Backend("batch states: a buffer shorter than one state".into())
            })?;
            self.read_state(dst, lead)?;
            return Ok(d);
        }
        let n = self.n_cur * d;
        let Some(dst) = out.get_mut(..n) else {
            return Err(Error::Backend(format!(
                "batch states: {n} values do not fit a buffer of {}",
                out.len()
            )));
        };
        self.states(lead).read_f32(0, dst)?;
        Ok(n)
    }

    /// The store of the batch's states: the lead-in check's with `lead`.
    fn states(&self, lead: bool) -> Tensor {
        if lead {
            self.lead_store
        } else {
            self.state_store
        }
    }

    pub(crate) fn read_last_state(&self, out: &mut [f32]) -> Result<()> {
        self.read_state(out, false)
    }

    /// The state of the last position of the current batch, or with `lead`
    /// its state at the last graph's lead-in check.
    pub(crate) fn read_state(&self, out: &mut [f32], lead: bool) -> Result<()> {
        let d = self.model.config().n_embd;
        let store = self.states(lead);
        let row = if self.n_cur <= 1 {
            self.store_row
        } else {
            self.n_cur - 1
        };
        store.read_f32(row * d, &mut out[..d])
    }

    /// Latest-entry semantics for a batch that ran `steps` recurrences with
    /// `steps < B`: slots the batch never reached get a copy of its deepest entry,
    /// so later tokens never read stale rows.
    pub(crate) fn fill_unreached_slots(&mut self, steps: usize) -> Result<()> {
        let b = self.params.kv_budget;
        if steps == 0 || steps >= b {
            return Ok(());
        }
        let c = self.model.config().n_core;
        let n = self.n_cur as i64;
        let kv_dim = self.model.config().kv_dim() as i64;
        let src_slot = steps - 1;
        let total = (b - steps) * c;
        let mut next = 0;
        while next < total {
            self.graph_ctx.reset();
            let mut graph = self.graph_ctx.new_graph(self.graph_size)?;
            while next < total && graph.has_room(8) {
                let (s, j) = (steps + next / c, next % c);
                next += 1;
                let src = self.core_kv[src_slot * c + j];
                let dst = self.core_kv[s * c + j];
                let ctx = &mut self.graph_ctx;
                let k_row = src.k.nb()[1];
                let ks = ctx.view_2d(src.k, kv_dim, n, k_row, self.n_past * k_row);
                let kd = ctx.view_2d(dst.k, kv_dim, n, k_row, self.n_past * k_row);
                let kc = ctx.cpy(ks, kd);
                graph.expand(kc)?;
                let (v_el, v_row) = (src.v.nb()[0], src.v.nb()[1]);
                let (vs, vd) = if self.flash {
                    // V rows per position, like K.
                    (
                        ctx.view_2d(src.v, kv_dim, n, v_row, self.n_past * v_row),
                        ctx.view_2d(dst.v, kv_dim, n, v_row, self.n_past * v_row),
                    )
                } else {
                    (
                        ctx.view_2d(src.v, n, kv_dim, v_row, self.n_past * v_el),
                        ctx.view_2d(dst.v, n, kv_dim, v_row, self.n_past * v_el),
                    )
                };
                let vc = ctx.cpy(vs, vd);
                graph.expand(vc)?;
            }
            self.compute.run_in_place(&mut self.backend, &mut graph)?;
        }
        Ok(())
    }

    /// Whether attention runs fused (V stored like K).
    pub fn flash_attention(&self) -> bool {
        self.flash
    }

    /// Whether generation computes exit statistics on the device.
    pub(crate) fn exit_on_device(&self) -> bool {
        self.exit_on_device
    }

    /// The statistics of the last exit-stat check.
    pub(crate) fn last_exit_stats(&self) -> ExitStats {
        self.last_stats
    }

    /// The statistics of the lead-in check of the last graph that had one.
    pub(crate) fn lead_exit_stats(&self) -> ExitStats {
        self.lead_stats
    }

    /// The logits of the last lead-in check run without exit statistics.
    pub(crate) fn lead_logits(&self) -> &[f32] {
        &self.lead_logits
    }

    /// Reads the logits an exit-stat check kept on the device into
    /// [`Session::logits`] (one read per token).
    pub(crate) fn load_stored_logits(&mut self) -> Result<()> {
        self.logits_store.read_f32(0, &mut self.logits)
    }

    /// Whether cancellation was requested (clears the request).
    pub(crate) fn take_cancel(&self) -> bool {
        self.cancel.swap(false, Ordering::Relaxed)
    }

    /// Most positions evaluated in one graph.
    pub fn n_batch(&self) -> usize {
        self.n_batch
    }

    /// Iterations the last batch committed to the cache ran (0 before any):
    /// what the logits of [`Session::logits`] were computed with.
    pub fn last_iterations(&self) -> usize {
        self.last_iterations
    }

    /// Records the iterations of the batch just committed.
    pub(crate) fn set_last_iterations(&mut self, n: usize) {
        self.last_iterations = n;
    }

    /// Commits the current batch to the cache.
    pub(crate) fn end_batch(&mut self) {
        self.n_past += self.n_cur;
        self.n_cur = 0;
        self.logits_valid = true;
    }

    /// Builds, allocates and runs one segment on the current batch. Logits go to
    /// `self.logits` (last position) or are appended to `all`.
    pub(crate) fn run_segment(&mut self, seg: Segment, all: Option<&mut Vec<f32>>) -> Result<()> {
        let n_past = self.n_past;
        let shape = self.shape_of(seg);
        if let Shape::Token(_) = shape
            && !self.compute.is_planned(shape)
        {
            // A single-token shape generate() did not foresee (eval, or limits
            // changed by a callback): plan it once for the full context, so
            // that later tokens of this shape do not re-plan as the cache grows.
            let n = if self.verifying {
                self.verify_n = self.verify_n.max(self.n_cur);
                self.verify_n
            } else {
                1
            };
            self.plan_graphs(n, &[(seg, self.device_checks)])?;
        }
        // Take the scratch out (a move, no allocation) so the graph can borrow self.
        let host = std::mem::take(&mut self.host);
        let (ids, pos, mask, x0) = (&host.ids, &host.pos, &host.mask, &host.x0);
        let n = self.n_cur;
        let d = self.model.config().n_embd;
        let n_kv = n_past + n;
        let mut out_t = None;
        self.backend.set_abort_flag(Some(&self.cancel));
        let mut splits = 0;
        let mut argmax_t = None;
        let mut lead_t = (None, None);
        let res = self.build_and(seg, n_past, |compute, backend, graph| {
            compute.alloc(backend, shape, &mut graph.graph)?;
            splits = compute.n_splits();
            argmax_t = graph.argmax;
            lead_t = (graph.lead_logits, graph.lead_argmax);
            let inp = graph.inputs;
            // A graph without attention (the head alone, after a latent exit
            // of a model without coda blocks) leaves these out.
            if inp.pos.is_allocated() {
                inp.pos.write_i32(&pos[..n])?;
            }
            if inp.mask.is_allocated() {
                inp.mask.write_f32(0, &mask[..n * n_kv])?;
            }
            if let Some(ids_t) = inp.ids {
                ids_t.write_i32(&ids[..n])?;
            }
            if let Some(x0_t) = inp.x0 {
                x0_t.write_f32(0, &x0[..n * d])?;
            }
            compute.compute(backend, &mut graph.graph)?;
            out_t = graph.logits;
            Ok(())
        });
        self.backend.set_abort_flag(None);
        self.host = host;
        self.max_splits = self.max_splits.max(splits);
        if let Err(Error::Backend(_)) = &res
            && !self.backend.is_cpu()
        {
            // A GPU backend can stay failed after an error (Metal refuses work
            // while an iOS app is in the background, and its backend then
            // fails every later graph). The cache and stores live in device
            // buffers that outlive the backend, and the failed batch was not
            // committed, so a fresh backend makes the session usable again.
            // If that fails too, the next call reports it.
            let _ = self.rebuild_backend();
        }
        if self.cancel.swap(false, Ordering::Relaxed) && res.is_ok() {
            // Raised after the last node ran: the work is done, report it anyway.
            return Err(Error::Cancelled);
        }
        res?;
        if let Some(t) = lead_t.0 {
            t.read_f32(0, &mut self.lead_logits)?;
        }
        if seg.exit_stats {
            let mut st = [0f32; 6];
            self.stats_store.read_f32(0, &mut st)?;
            let mut am = [0i32; 1];
            if let Some(t) = lead_t.1 {
                t.read_i32(&mut am)?;
                self.lead_stats = ExitStats::from_store(&st[3..], am[0]);
                self.device_checks += 1;
            }
            if let Some(t) = argmax_t {
                t.read_i32(&mut am)?;
            }
            self.last_stats = ExitStats::from_store(&st, am[0]);
            self.device_checks += 1;
            // The logits stay on the device (logits_store) until the token ends.
            return Ok(());
        }
        if let Some(t) = out_t {
            let v = self.model.config().n_vocab;
            match (seg.coda, all) {
                (CodaMode::All, Some(out)) => {
                    let start = out.len();
                    out.resize(start + n * v, 0.0);
                    t.read_f32(0, &mut out[start..])?;
                    self.logits.copy_from_slice(&out[start + (n - 1) * v..]);
                }
                (CodaMode::All, None) => t.read_f32((n - 1) * v, &mut self.logits)?,
                _ => t.read_f32(0, &mut self.logits)?,
            }
        }
        Ok(())
    }

    /// Builds the graph for `seg` and hands it to `f` (reserve or run).
    fn build_and<F>(&mut self, seg: Segment, n_past: usize, f: F) -> Result<()>
    where
        F: FnOnce(&mut Compute, &mut Backend, &mut BuiltGraph) -> Result<()>,
    {
        let model = Arc::clone(&self.model);
        let cfg = model.config();
        let n = self.n_cur;
        let d = cfg.n_embd as i64;
        let ctx = &mut self.graph_ctx;
        ctx.reset();
        let mut graph = ctx.new_graph(self.graph_size)?;
        let n_kv = n_past + n;
        let pos = ctx.new_tensor(GgmlType::I32, &[n as i64])?;
        pos.set_input();
        let mask = ctx.new_tensor(GgmlType::F32, &[n_kv as i64, n as i64])?;
        mask.set_input();
        let mask_f16 = if self.flash {
            Some(ctx.cast(mask, GgmlType::F16))
        } else {
            None
        };
        let inp = BatchInputs {
            pos,
            mask,
            mask_f16,
            n,
            n_past,
        };
        let mut ids_t = None;
        let mut x0_t = None;
        let row = self.state_store.nb()[1];
        // Single tokens may use another row (drafts; see `store_row`).
        let at = if n == 1 { self.store_row * row } else { 0 };
        let logits;
        let mut argmax = None;
        let (mut lead_logits, mut lead_argmax, mut lead_logp) = (None, None, None);
        let stores = ExitStores {
            logits: self.logits_store,
            logp: self.logp_store,
            stats: self.stats_store,
            checks: self.device_checks,
            n_vocab: cfg.n_vocab,
        };
        {
            let mut gb = GraphBuilder {
                cfg,
                w: &model.weights,
                ctx,
                graph: &mut graph,
                contiguous_attention: !self.backend.is_cpu(),
                flash_attention: self.flash,
                last_position_only: false,
            };
            let (mut x, e) = if seg.prelude {
                let ids = gb.ctx.new_tensor(GgmlType::I32, &[n as i64])?;
                ids.set_input();
                let x0 = gb.ctx.new_tensor(GgmlType::F32, &[d, n as i64])?;
                x0.set_input();
                ids_t = Some(ids);
                // Without recurrence, or when the loop starts from the
                // embedding (Ouro), the state is the prelude's output: no x0.
                let from_embedding = !cfg.has_recurrence() || cfg.state_from_embedding;
                x0_t = (!from_embedding).then_some(x0);
                let e = gb.prelude(ids, &inp, &self.prelude_kv)?;
                if seg.n_steps > 0 || seg.coda == CodaMode::None {
                    let dst = gb.ctx.view_2d(self.embed_store, d, n as i64, row, at);
                    let st = gb.ctx.cpy(e, dst);
                    gb.graph.expand(st)?;
                }
                (if cfg.state_from_embedding { e } else { x0 }, e)
            } else {
                let x = gb.ctx.view_2d(self.state_store, d, n as i64, row, at);
                let e = gb.ctx.view_2d(self.embed_store, d, n as i64, row, at);
                (x, e)
            };
            let b = self.params.kv_budget;
            for (i, t) in (seg.first_step..seg.first_step + seg.n_steps).enumerate() {
                let slot = (t - 1) % b;
                let slots = &self.core_kv[slot * cfg.n_core..(slot + 1) * cfg.n_core];
                x = gb.step(x, e, &inp, slots)?;
                if i + 1 != seg.lead_at {
                    continue;
                }
                // The lead-in check: the coda on this state (its K/V rows are
                // rewritten by the graph's own coda below), or the state kept.
                if seg.lead_coda {
                    let l = gb.coda(x, &inp, &self.coda_kv, true)?;
                    if seg.exit_stats {
                        let (am, lp) = stores.add_nodes(&mut gb, l, n, None, true)?;
                        lead_argmax = Some(am);
                        lead_logp = Some(lp);
                    } else {
                        l.set_output();
                        gb.graph.expand(l)?;
                        lead_logits = Some(l);
                    }
                } else {
                    let dst = gb.ctx.view_2d(self.lead_store, d, n as i64, row, at);
                    let st = gb.ctx.cpy(x, dst);
                    gb.graph.expand(st)?;
                }
            }
            if seg.prelude || seg.n_steps > 0 {
                let dst = gb.ctx.view_2d(self.state_store, d, n as i64, row, at);
                let st = gb.ctx.cpy(x, dst);
                gb.graph.expand(st)?;
            }
            logits = match seg.coda {
                CodaMode::None => None,
                mode => {
                    let l = gb.coda(x, &inp, &self.coda_kv, mode == CodaMode::Last)?;
                    l.set_output();
                    gb.graph.expand(l)?;
                    Some(l)
                }
            };
            if let (true, Some(l)) = (seg.exit_stats, logits) {
                let stores = ExitStores {
                    checks: stores.checks + lead_logp.is_some() as usize,
                    ..stores
                };
                argmax = Some(stores.add_nodes(&mut gb, l, n, lead_logp, false)?.0);
            }
        }
        let mut built = BuiltGraph {
            graph,
            inputs: GraphInputs {
                pos,
                mask,
                ids: ids_t,
                x0: x0_t,
            },
            logits,
            argmax,
            lead_logits,
            lead_argmax,
        };
        f(&mut self.compute, &mut self.backend, &mut built)
    }
}

/// The persistent tensors an exit-stat check writes, and which check of the
/// batch it is.
#[derive(Clone, Copy)]
struct ExitStores {
    logits: Tensor,
    logp: Tensor,
    stats: Tensor,
    checks: usize,
    n_vocab: usize,
}

impl ExitStores {
    /// Adds the exit statistics of the last position's logits `l` (`[V, n]`)
    /// to the graph: the logits go to `logits_store`, `sum p ln p`, the KL
    /// term (`sum ln p` at the batch's first check, `sum p_prev ln p` after
    /// it) and the log-sum-exp of the shifted logits (`-ln p_max`) to
    /// `stats_store`, this check's log-probabilities to a
    /// `logp_store` slot; returns the argmax node (I32, one element) and the
    /// log-probabilities node. `prev`: the previous check's
    /// log-probabilities node when it is in the same graph (read from the
    /// store otherwise). A `lead` check (see [`Segment::lead_at`]) writes its
    /// scalars after the graph's own and leaves `logits_store` alone.
    fn add_nodes(
        self,
        gb: &mut GraphBuilder,
        l: Tensor,
        n: usize,
        prev: Option<Tensor>,
        lead: bool,
    ) -> Result<(Tensor, Tensor)> {
        let v = self.n_vocab as i64;
        let f = 4usize;
        let ctx = &mut *gb.ctx;
        let l = if l.ne()[1] > 1 {
            // The reservation graph computes every position's logits.
            ctx.view_1d(l, v, (n - 1) * l.nb()[1])
        } else {
            ctx.view_1d(l, v, 0)
        };
        if !lead {
            let keep = ctx.cpy(l, self.logits);
            gb.graph.expand(keep)?;
        }
        let base = if lead { 3 * f } else { 0 };
        // Stable log-softmax: z = l - max, ln p = z - ln sum e^z.
        let argmax = ctx.argmax(l);
        argmax.set_output();
        gb.graph.expand(argmax)?;
        let rows = ctx.reshape_2d(l, 1, v);
        let max = ctx.get_rows(rows, argmax);
        let max = ctx.view_1d(max, 1, 0);
        let z = ctx.sub(l, max);
        let ez = ctx.exp(z);
        let se = ctx.sum(ez);
        let lse = ctx.log(se);
        let st2 = ctx.view_1d(self.stats, 1, base + 2 * f);
        let w = ctx.cpy(lse, st2);
        gb.graph.expand(w)?;
        let logp = ctx.sub(z, lse);
        let p = ctx.exp(logp);
        let plogp = ctx.mul(p, logp);
        let neg_h = ctx.sum(plogp);
        let st0 = ctx.view_1d(self.stats, 1, base);
        let w = ctx.cpy(neg_h, st0);
        gb.graph.expand(w)?;
        let slot_bytes = v as usize * f;
        let cur = self.checks % 2;
        let kl_term = if let Some(prev) = prev {
            let p_prev = ctx.exp(prev);
            let terms = ctx.mul(p_prev, logp);
            ctx.sum(terms)
        } else if self.checks > 0 {
            let prev = ctx.view_1d(self.logp, v, (1 - cur) * slot_bytes);
            let p_prev = ctx.exp(prev);
            let terms = ctx.mul(p_prev, logp);
            ctx.sum(terms)
        } else {
            ctx.sum(logp)
        };
        let st1 = ctx.view_1d(self.stats, 1, base + f);
        let w = ctx.cpy(kl_term, st1);
        gb.graph.expand(w)?;
        let dst = ctx.view_1d(self.logp, v, cur * slot_bytes);
        let w = ctx.cpy(logp, dst);
        gb.graph.expand(w)?;
        Ok((argmax, logp))
    }
}

/// Host-side inputs of the current batch, sized at session creation.
#[derive(Default)]
struct HostInputs {
    ids: Vec<i32>,
    pos: Vec<i32>,
    /// `[n_kv, n]` causal mask, row per batch position.
    mask: Vec<f32>,
    /// Initial state `[d, n]`.
    x0: Vec<f32>,
}

/// Input tensors of a built graph.
#[derive(Clone, Copy)]
struct GraphInputs {
    pos: Tensor,
    mask: Tensor,
    ids: Option<Tensor>,
    x0: Option<Tensor>,
}

/// A graph ready to allocate, with its inputs and output.
struct BuiltGraph {
    graph: crate::ggml::Graph,
    inputs: GraphInputs,
    logits: Option<Tensor>,
    /// Argmax node of an exit-stat check.
    argmax: Option<Tensor>,
    /// Logits of a lead-in check on the host path.
    lead_logits: Option<Tensor>,
    /// Argmax node of a lead-in exit-stat check.
    lead_argmax: Option<Tensor>,
}
