//! Llama (`llama`, the GGUF layout llama.cpp writes for Llama, SmolLM,
//! Mistral and similar models): pre-norm blocks (RMSNorm, grouped-query
//! attention with RoPE over adjacent pairs, SwiGLU MLP), a final RMSNorm and
//! a head, tied to the embedding when `output.weight` is absent.
//!
//! Such a file has no recurrence: its blocks form the prelude, there is no
//! core and no coda, and every token runs once through them (iteration
//! limits do not apply, exit criteria are refused).
//!
//! llama.cpp's converter permutes the rows of `attn_q` and `attn_k` so that
//! RoPE rotates adjacent pairs (ggml's "normal" mode) where the Hugging Face
//! code rotates the two halves of each head; the same mode is used here.

use super::Keys;
use crate::error::{Error, Result};
use crate::ggml::Tensor;
use crate::gguf::GgufFile;
use crate::model::config::{Architecture, BlockType, ModelConfig, RopePairing};
use crate::model::graph::{BatchInputs, GraphBuilder, KvLayer};
use crate::model::weights::{ArchTensors, Binder, BlockWeights, Kind};

/// Reads the `llama.*` keys.
pub(crate) fn config(file: &GgufFile) -> Result<ModelConfig> {
    let k = Keys {
        file,
        arch: "llama",
    };
    if k.opt("expert_count")?.unwrap_or(0) > 0 {
        return Err(Error::InvalidModel(
            "mixture-of-experts llama models are not supported".into(),
        ));
    }
    let n_embd = k.req("embedding_length")?;
    let n_head = k.req("attention.head_count")?;
    let head_dim = k.head_dim(n_embd, n_head)?;
    if let Some(v) = k.opt("attention.value_length")?
        && v != head_dim
    {
        return Err(Error::InvalidModel(format!(
            "llama.attention.value_length {v} differs from the key length {head_dim}"
        )));
    }
    let rope_freq_scale = match k.str("rope.scaling.type")?.unwrap_or("none") {
        "none" => 1.0,
        "linear" => match k.f32("rope.scaling.factor")? {
            Some(f) if f.is_finite() && f > 0.0 => 1.0 / f,
            Some(f) => {
                return Err(Error::InvalidModel(format!(
                    "invalid llama.rope.scaling.factor {f}"
                )));
            }
            None => 1.0,
        },
        other => {
            return Err(Error::InvalidModel(format!(
                "unsupported llama.rope.scaling.type {other:?} (supported: none, linear)"
            )));
        }
    };
    Ok(ModelConfig {
        architecture: Architecture::Llama,
        context_length: k.req("context_length")?,
        n_embd,
        n_ff: k.req("feed_forward_length")?,
        n_head,
        n_head_kv: k.opt("attention.head_count_kv")?.unwrap_or(n_head),
        head_dim,
        n_vocab: super::n_vocab(file)?,
        n_prelude: k.req("block_count")?,
        n_core: 0,
        n_coda: 0,
        norm_eps: k.req_f32("attention.layer_norm_rms_epsilon")?,
        n_rot: k.opt("rope.dimension_count")?.unwrap_or(head_dim),
        rope_base: k.f32("rope.freq_base")?.unwrap_or(10000.0),
        rope_freq_scale,
        rope_pairing: RopePairing::Adjacent,
        block_type: BlockType::PreNorm,
        embedding_scale: 1.0,
        default_iterations: 1,
        state_init_std: 0.0,
        norm_after_recurrence: false,
        norm_after_step: false,
        state_from_embedding: false,
        tied_embeddings: file.tensor("output.weight").is_none(),
    })
}

/// Binds the blocks (separate q/k/v and gate/up, optional q/k/v biases),
/// the final norm, the (optional) head and RoPE frequency factors.
pub(crate) fn bind(b: &mut Binder, cfg: &ModelConfig) -> Result<ArchTensors> {
    let d = cfg.n_embd;
    let (q_dim, kv_dim) = (cfg.q_dim(), cfg.kv_dim());
    let mut blocks = Vec::with_capacity(cfg.n_blocks());
    for i in 0..cfg.n_blocks() {
        let n = |s: &str| format!("blk.{i}.{s}");
        let p = b.split_projections(i, cfg)?;
        blocks.push(BlockWeights {
            attn_norm: b.get(&n("attn_norm.weight"), &[d], Kind::Vector)?,
            qkv: p.qkv,
            q_bias: b.opt(&n("attn_q.bias"), &[q_dim], Kind::Vector)?,
            k_bias: b.opt(&n("attn_k.bias"), &[kv_dim], Kind::Vector)?,
            v_bias: b.opt(&n("attn_v.bias"), &[kv_dim], Kind::Vector)?,
            attn_output: p.attn_output,
            attn_post_norm: None,
            ffn_norm: b.get(&n("ffn_norm.weight"), &[d], Kind::Vector)?,
            gate_up: p.gate_up,
            ffn_down: p.ffn_down,
            ffn_post_norm: None,
        });
    }
    Ok(ArchTensors {
        blocks,
        adapter: None,
        output_norm: b.get("output_norm.weight", &[d], Kind::Vector)?,
        output: b.opt("output.weight", &[d, cfg.n_vocab], Kind::Matrix)?,
        rope_factors: b.opt("rope_freqs.weight", &[cfg.n_rot / 2], Kind::Vector)?,
    })
}

/// Pre-norm block: `x = x + attn(n1(x)); x = x + mlp(n2(x))`.
pub(crate) fn block(
    gb: &mut GraphBuilder,
    bw: &BlockWeights,
    x: Tensor,
    inp: &BatchInputs,
    kv: KvLayer,
) -> Result<Tensor> {
    let eps = gb.cfg.norm_eps;
    let h = gb.ctx.rms_norm(x, bw.attn_norm, eps);
    let a = gb.attention(bw, h, inp, kv)?;
    let x = gb.residual(x);
    let x = gb.ctx.add(a, x);
    let h = gb.ctx.rms_norm(x, bw.ffn_norm, eps);
    let m = gb.mlp(bw, h);
    let x = gb.ctx.add(m, x);
    gb.graph.expand(x)?;
    Ok(x)
}
