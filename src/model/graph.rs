//! The compute graph of a recurrent-depth model, built from pieces: prelude,
//! one recurrence step, coda. A session strings them into segments (see
//! `session`). The pieces every architecture shares (attention over the KV
//! cache, SwiGLU MLP) are here; each architecture's block is in its file
//! under `arch/`.
//!
//! Shapes use ggml order (`[ne0, ne1, ...]`); activations are `[d, n_tokens]`.

use super::arch;
use super::config::{BlockType, ModelConfig, RopePairing};
use super::weights::{BlockWeights, GateUpWeights, QkvWeights, Weights};
use crate::error::Result;
use crate::ggml::{Context, Graph, RopeMode, RopeParams, Tensor};

/// K/V storage of one attention layer instance: `k` is `[kv_dim, n_ctx]` (a
/// row per position); `v` is stored transposed, `[n_ctx, kv_dim]`, for the
/// separate attention products (which then read it without a copy), and like
/// `k` for fused attention.
#[derive(Clone, Copy)]
pub(crate) struct KvLayer {
    pub k: Tensor,
    pub v: Tensor,
}

/// Per-batch inputs shared by every layer of a graph.
#[derive(Clone, Copy)]
pub(crate) struct BatchInputs {
    /// Positions (I32 `[n]`).
    pub pos: Tensor,
    /// Causal mask (F32 `[n_kv, n]`): 0 where attention is allowed, -inf elsewhere.
    pub mask: Tensor,
    /// The mask in F16, for fused attention (`None` without it).
    pub mask_f16: Option<Tensor>,
    /// Tokens in the batch.
    pub n: usize,
    /// Cached positions before the batch.
    pub n_past: usize,
}

impl BatchInputs {
    fn n_kv(&self) -> usize {
        self.n_past + self.n
    }
}

/// Builds graph pieces for one model.
pub(crate) struct GraphBuilder<'a> {
    pub cfg: &'a ModelConfig,
    pub w: &'a Weights,
    pub ctx: &'a mut Context,
    pub graph: &'a mut Graph,
    /// Copy attention operands to contiguous memory before the two attention
    /// products. GPU backends (Vulkan) convert non-contiguous matmul operands to
    /// f16, which costs about 1e-3 of the logit range over a recurrence; the
    /// copies keep the arithmetic in f32. The CPU handles strided f32 operands
    /// exactly and skips them.
    pub contiguous_attention: bool,
    /// Fused attention (`ggml_flash_attn_ext`) over V stored like K; needs
    /// `BatchInputs::mask_f16`.
    pub flash_attention: bool,
    /// Set by [`GraphBuilder::coda`] while it builds the last coda block of a
    /// batch whose head reads only the last position: that block stores K/V
    /// for every position and attends for all of them, then keeps only the
    /// last position for the output projection, the MLP and the norms
    /// ([`GraphBuilder::kept_rows`]). Starts `false`.
    pub last_position_only: bool,
}

impl GraphBuilder<'_> {
    /// `token_embd[ids] * embedding_scale`, then the prelude blocks.
    pub fn prelude(&mut self, ids: Tensor, inp: &BatchInputs, kv: &[KvLayer]) -> Result<Tensor> {
        let e = self.ctx.get_rows(self.w.token_embd, ids);
        let mut e = self.ctx.scale(e, self.cfg.embedding_scale);
        for (i, layer) in kv.iter().enumerate().take(self.cfg.n_prelude) {
            e = self.block(&self.w.blocks[i], e, inp, *layer)?;
        }
        Ok(e)
    }

    /// One recurrence: `x = adapter(concat(x, e))`, then the core blocks with the
    /// given K/V slots (one per core block). A model without recurrence has
    /// no adapter and no core: its "step" hands the prelude's output on.
    pub fn step(
        &mut self,
        x: Tensor,
        e: Tensor,
        inp: &BatchInputs,
        slots: &[KvLayer],
    ) -> Result<Tensor> {
        let mut x = match self.w.adapter {
            Some(adapter) => {
                let xe = self.ctx.concat(x, e, 0);
                self.ctx.mul_mat(adapter, xe)
            }
            // No recurrence: the prelude's output is the state.
            None if slots.is_empty() => return Ok(e),
            // A loop without input injection (Ouro).
            None => x,
        };
        for (j, layer) in slots.iter().enumerate() {
            let bw = &self.w.blocks[self.cfg.n_prelude + j];
            x = self.block(bw, x, inp, *layer)?;
        }
        if self.cfg.norm_after_step {
            x = self.ctx.rms_norm(x, self.w.output_norm, self.cfg.norm_eps);
        }
        Ok(x)
    }

    /// Coda: `output_norm` (if configured), coda blocks, `output_norm` (unless
    /// every step already ended with it), head.
    /// With `last_only`, the head runs on the last position only (the coda blocks
    /// still process every position, as their K/V rows are needed later).
    pub fn coda(
        &mut self,
        x: Tensor,
        inp: &BatchInputs,
        kv: &[KvLayer],
        last_only: bool,
    ) -> Result<Tensor> {
        let mut x = x;
        if self.cfg.norm_after_recurrence {
            x = self.ctx.rms_norm(x, self.w.output_norm, self.cfg.norm_eps);
        }
        let first = self.cfg.n_prelude + self.cfg.n_core;
        let narrow = last_only && inp.n > 1;
        for (k, layer) in kv.iter().enumerate() {
            // The last block's K/V rows are stored for every position; past
            // its attention only the last position goes on.
            self.last_position_only = narrow && k + 1 == kv.len();
            let out = self.block(&self.w.blocks[first + k], x, inp, *layer);
            self.last_position_only = false;
            x = out?;
        }
        if narrow && kv.is_empty() {
            x = self.kept_rows(x, true);
        }
        if !self.cfg.norm_after_step {
            // (With a norm after every step the state is already normed.)
            x = self.ctx.rms_norm(x, self.w.output_norm, self.cfg.norm_eps);
        }
        Ok(self.ctx.mul_mat(self.w.head(), x))
    }

    /// `x` (`[d, n]`), or a view of its last column when `last` holds (for the
    /// blocks: when [`GraphBuilder::last_position_only`] is set). Blocks pass
    /// their residual through it after the attention.
    pub(crate) fn kept_rows(&mut self, x: Tensor, last: bool) -> Tensor {
        let n = x.ne()[1];
        if !last || n <= 1 {
            return x;
        }
        let nb1 = x.nb()[1];
        self.ctx
            .view_2d(x, x.ne()[0], 1, nb1, (n as usize - 1) * nb1)
    }

    /// The residual of a block past its attention: every position, or the
    /// last one in the last coda block of a last-position-only batch.
    pub(crate) fn residual(&mut self, x: Tensor) -> Tensor {
        self.kept_rows(x, self.last_position_only)
    }

    /// One block of the model's architecture.
    fn block(
        &mut self,
        bw: &BlockWeights,
        x: Tensor,
        inp: &BatchInputs,
        kv: KvLayer,
    ) -> Result<Tensor> {
        match self.cfg.block_type {
            BlockType::Sandwich => arch::huginn::block(self, bw, x, inp, kv),
            BlockType::PreNorm => arch::llama::block(self, bw, x, inp, kv),
            BlockType::PeriNorm => arch::ouro::block(self, bw, x, inp, kv),
        }
    }

    /// SwiGLU MLP: `down(silu(gate x) * (up x))`.
    pub(crate) fn mlp(&mut self, bw: &BlockWeights, x: Tensor) -> Tensor {
        let (gate, up) = match bw.gate_up {
            GateUpWeights::Fused(gate_up) => {
                let n = x.ne()[1];
                let ff = self.cfg.n_ff as i64;
                let gu = self.ctx.mul_mat(gate_up, x);
                let nb1 = gu.nb()[1];
                (
                    self.ctx.view_2d(gu, ff, n, nb1, 0),
                    self.ctx.view_2d(gu, ff, n, nb1, self.cfg.n_ff * 4),
                )
            }
            GateUpWeights::Split { gate, up } => {
                (self.ctx.mul_mat(gate, x), self.ctx.mul_mat(up, x))
            }
        };
        let h = self.ctx.swiglu(gate, up);
        self.ctx.mul_mat(bw.ffn_down, h)
    }

    /// Self-attention of the batch over the cache: projections (and
    /// biases), RoPE, this batch's K/V rows stored at `n_past..`, softmax
    /// attention over every cached row (causal mask), output projection.
    pub(crate) fn attention(
        &mut self,
        bw: &BlockWeights,
        x: Tensor,
        inp: &BatchInputs,
        kv: KvLayer,
    ) -> Result<Tensor> {
        let cfg = self.cfg;
        let (hd, nh, nkv) = (cfg.head_dim as i64, cfg.n_head as i64, cfg.n_head_kv as i64);
        let n = inp.n as i64;
        let n_kv = inp.n_kv() as i64;
        let f = 4usize; // bytes of f32
        let (mut q, mut k, mut v) = match bw.qkv {
            QkvWeights::Fused(w) => {
                let qkv = self.ctx.mul_mat(w, x);
                let row = qkv.nb()[1];
                let q = self.ctx.view_3d(qkv, hd, nh, n, hd as usize * f, row, 0);
                let k = self
                    .ctx
                    .view_3d(qkv, hd, nkv, n, hd as usize * f, row, cfg.q_dim() * f);
                let v = self.ctx.view_2d(
                    qkv,
                    cfg.kv_dim() as i64,
                    n,
                    row,
                    (cfg.q_dim() + cfg.kv_dim()) * f,
                );
                (q, k, v)
            }
            QkvWeights::Split { q, k, v } => {
                let q = self.ctx.mul_mat(q, x);
                let k = self.ctx.mul_mat(k, x);
                let v = self.ctx.mul_mat(v, x);
                (
                    self.ctx.reshape_3d(q, hd, nh, n),
                    self.ctx.reshape_3d(k, hd, nkv, n),
                    v,
                )
            }
        };
        if let Some(qb) = bw.q_bias {
            let qb = self.ctx.reshape_2d(qb, hd, nh);
            q = self.ctx.add(q, qb);
        }
        if let Some(kb) = bw.k_bias {
            let kb = self.ctx.reshape_2d(kb, hd, nkv);
            k = self.ctx.add(k, kb);
        }
        if let Some(vb) = bw.v_bias {
            v = self.ctx.add(v, vb);
        }
        let rope = RopeParams {
            mode: match cfg.rope_pairing {
                RopePairing::Adjacent => RopeMode::Adjacent,
                RopePairing::Neox => RopeMode::Neox,
            },
            n_dims: cfg.n_rot as i32,
            base: cfg.rope_base,
            freq_scale: cfg.rope_freq_scale,
            factors: self.w.rope_factors,
        };
        let q = self.ctx.rope(q, inp.pos, &rope);
        let k = self.ctx.rope(k, inp.pos, &rope);

        // Store this batch's keys and values at rows n_past.. of the cache.
        let kv_dim = cfg.kv_dim() as i64;
        let k_row = kv.k.nb()[1];
        let k_dst = self.ctx.view_2d(kv.k, kv_dim, n, k_row, inp.n_past * k_row);
        let k_store = self.ctx.cpy(k, k_dst);
        self.graph.expand(k_store)?;
        if self.flash_attention {
            return self.fused_attention(bw, q, v, inp, kv);
        }
        let v_elem = kv.v.nb()[0];
        let v_row = kv.v.nb()[1];
        let v_dst = self
            .ctx
            .view_2d(kv.v, n, kv_dim, v_row, inp.n_past * v_elem);
        let vt = self.ctx.transpose(v);
        let v_store = self.ctx.cpy(vt, v_dst);
        self.graph.expand(v_store)?;

        // Attend over every cached row up to the end of this batch.
        let keys = self
            .ctx
            .view_3d(kv.k, hd, nkv, n_kv, hd as usize * kv.k.nb()[0], k_row, 0);
        let mut keys = self.ctx.permute(keys, [0, 2, 1, 3]);
        let mut q = self.ctx.permute(q, [0, 2, 1, 3]);
        if self.contiguous_attention {
            keys = self.ctx.cont(keys);
            q = self.ctx.cont(q);
        }
        let kq = self.ctx.mul_mat(keys, q);
        let kq = self
            .ctx
            .soft_max_masked(kq, inp.mask, 1.0 / (cfg.head_dim as f32).sqrt());
        let mut vals = self
            .ctx
            .view_3d(kv.v, n_kv, hd, nkv, v_row, v_row * hd as usize, 0);
        if self.contiguous_attention {
            vals = self.ctx.cont(vals);
        }
        let out = self.ctx.mul_mat(vals, kq);
        let out = self.ctx.permute(out, [0, 2, 1, 3]);
        let out = self.ctx.cont_2d(out, cfg.q_dim() as i64, n);
        let out = self.residual(out);
        Ok(self.ctx.mul_mat(bw.attn_output, out))
    }

    /// Attention in one fused op over a cache whose V rows are stored like
    /// K's (`q` roped `[hd, n_head, n]`, `v` this batch's values
    /// `[kv_dim, n]`); K is already stored.
    fn fused_attention(
        &mut self,
        bw: &BlockWeights,
        q: Tensor,
        v: Tensor,
        inp: &BatchInputs,
        kv: KvLayer,
    ) -> Result<Tensor> {
        let cfg = self.cfg;
        let (hd, nkv) = (cfg.head_dim as i64, cfg.n_head_kv as i64);
        let n = inp.n as i64;
        let n_kv = inp.n_kv() as i64;
        let kv_dim = cfg.kv_dim() as i64;
        let mask = inp
            .mask_f16
            .ok_or_else(|| crate::Error::Backend("fused attention without an F16 mask".into()))?;
        let v_row = kv.v.nb()[1];
        let v_dst = self.ctx.view_2d(kv.v, kv_dim, n, v_row, inp.n_past * v_row);
        let v_store = self.ctx.cpy(v, v_dst);
        self.graph.expand(v_store)?;
        // [hd, n_head_kv, n_kv] rows of the cache, viewed as [hd, n_kv, n_head_kv].
        let el = kv.k.nb()[0];
        let keys = self
            .ctx
            .view_3d(kv.k, hd, nkv, n_kv, hd as usize * el, kv.k.nb()[1], 0);
        let keys = self.ctx.permute(keys, [0, 2, 1, 3]);
        let vals = self
            .ctx
            .view_3d(kv.v, hd, nkv, n_kv, hd as usize * el, v_row, 0);
        let vals = self.ctx.permute(vals, [0, 2, 1, 3]);
        let q = self.ctx.permute(q, [0, 2, 1, 3]);
        let scale = 1.0 / (cfg.head_dim as f32).sqrt();
        let out = self.ctx.flash_attn(q, keys, vals, mask, scale);
        let out = self.ctx.reshape_2d(out, cfg.q_dim() as i64, n);
        let out = self.residual(out);
        Ok(self.ctx.mul_mat(bw.attn_output, out))
    }
}
