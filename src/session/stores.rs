//! The memory a session keeps between graphs: the KV cache (one K/V pair per
//! prelude block, per (core block, slot) and per coda block), the state and
//! embedding stores that carry a batch from one graph to the next, and the
//! small stores of the in-graph exit statistics.

use super::KvType;
use crate::error::Result;
use crate::ggml::{Backend, Buffer, Context, Tensor};
use crate::gguf::GgmlType;
use crate::model::ModelConfig;
use crate::model::graph::KvLayer;

/// A session's persistent tensors and the buffers holding them.
pub(super) struct Stores {
    pub kv_ctx: Context,
    /// The KV cache and the state stores (what `kv_bytes` reports).
    pub kv_buf: Buffer,
    pub prelude: Vec<KvLayer>,
    /// `n_core * kv_budget` layers, slot-major: slot `s` of core block `j` is
    /// `core[s * n_core + j]`.
    pub core: Vec<KvLayer>,
    pub coda: Vec<KvLayer>,
    /// `[n_embd, n_batch]`: the recurrent state between step graphs.
    pub state: Tensor,
    /// `[n_embd, n_batch]`: the prelude's output, an input of every step.
    pub embed: Tensor,
    pub exit_ctx: Context,
    /// The exit-statistics stores, apart from the KV cache.
    pub exit_buf: Buffer,
    /// `[n_vocab]`: the logits of the last check.
    pub logits: Tensor,
    /// `[n_vocab, 2]`: log-probabilities of the last two checks.
    pub logp: Tensor,
    /// `[n_embd, n_batch]`: the states of a lead-in check (latent criteria).
    pub lead: Tensor,
    /// `[6]`: negative entropy, KL term and `-ln p_max` of the last check,
    /// then of a lead-in check in the same graph.
    pub stats: Tensor,
}

impl Stores {
    /// Allocates (zeroed) the stores of a session with `n_ctx` positions,
    /// batches of up to `n_batch`, `kv_budget` slots per core block and
    /// values stored by position (`v_by_position`, fused attention) or
    /// transposed.
    pub(super) fn alloc(
        backend: &Backend,
        cfg: &ModelConfig,
        kv_budget: usize,
        kv_type: KvType,
        n_ctx: usize,
        n_batch: usize,
        v_by_position: bool,
    ) -> Result<Stores> {
        let kv_ty = match kv_type {
            KvType::F32 => GgmlType::F32,
            KvType::F16 => GgmlType::F16,
        };
        let n_layers = cfg.n_prelude + cfg.n_core * kv_budget + cfg.n_coda;
        let mut kv_ctx = Context::new(2 * n_layers + 8, 0)?;
        let kv_dim = cfg.kv_dim() as i64;
        let n = n_ctx as i64;
        let mut layers = |count: usize| -> Result<Vec<KvLayer>> {
            (0..count)
                .map(|_| {
                    Ok(KvLayer {
                        k: kv_ctx.new_tensor(kv_ty, &[kv_dim, n])?,
                        v: if v_by_position {
                            kv_ctx.new_tensor(kv_ty, &[kv_dim, n])?
                        } else {
                            kv_ctx.new_tensor(kv_ty, &[n, kv_dim])?
                        },
                    })
                })
                .collect()
        };
        let prelude = layers(cfg.n_prelude)?;
        let core = layers(cfg.n_core * kv_budget)?;
        let coda = layers(cfg.n_coda)?;
        let d = cfg.n_embd as i64;
        let state = kv_ctx.new_tensor(GgmlType::F32, &[d, n_batch as i64])?;
        let embed = kv_ctx.new_tensor(GgmlType::F32, &[d, n_batch as i64])?;
        // Exit-statistics stores: their own small buffer, so that kv_bytes
        // stays the cache and state stores (counted with the compute buffers).
        let mut exit_ctx = Context::new(5, 0)?;
        let v = cfg.n_vocab as i64;
        let logits = exit_ctx.new_tensor(GgmlType::F32, &[v])?;
        let logp = exit_ctx.new_tensor(GgmlType::F32, &[v, 2])?;
        let stats = exit_ctx.new_tensor(GgmlType::F32, &[6])?;
        let lead = exit_ctx.new_tensor(GgmlType::F32, &[d, n_batch as i64])?;
        let el = if kv_ty == GgmlType::F32 { 4 } else { 2 };
        let need = 2 * n_layers * cfg.kv_dim() * n_ctx * el
            + 3 * cfg.n_embd * n_batch * 4
            + (3 * cfg.n_vocab + 6) * 4;
        backend.check_fits(need, "the KV cache")?;
        let kv_buf = backend.alloc_ctx_tensors(&kv_ctx)?;
        kv_buf.clear();
        let exit_buf = backend.alloc_ctx_tensors(&exit_ctx)?;
        Ok(Stores {
            kv_ctx,
            kv_buf,
            prelude,
            core,
            coda,
            state,
            lead,
            embed,
            exit_ctx,
            exit_buf,
            logits,
            logp,
            stats,
        })
    }
}
