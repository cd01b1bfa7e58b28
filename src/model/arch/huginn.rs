//! Huginn (`huginn`): Huginn-0125 (Geiping et al. 2025) and models of its
//! design. Prelude blocks embed the tokens, a core of blocks is applied again
//! and again to a latent state (each step starts with an adapter over
//! `concat(state, embedding)`), coda blocks and the head decode it. Blocks
//! are "sandwiches" (RMSNorm before and after both the attention and the
//! MLP; Huginn-0125) or pre-norm Llama blocks (`huginn.block_type = prenorm`:
//! the layout of Llama models retrofitted with recurrence, McLeish et al.
//! 2025, whose blocks are run by `arch::llama::block`). Tensors: fused
//! `attn_qkv` and `ffn_gate_up`. Keys: docs/gguf.md.

use super::Keys;
use crate::error::{Error, Result};
use crate::ggml::Tensor;
use crate::gguf::GgufFile;
use crate::model::config::{Architecture, BlockType, ModelConfig, RopePairing};
use crate::model::graph::{BatchInputs, GraphBuilder, KvLayer};
use crate::model::weights::{ArchTensors, Binder, BlockWeights, GateUpWeights, Kind, QkvWeights};

/// Reads the `huginn.*` keys.
pub(crate) fn config(file: &GgufFile) -> Result<ModelConfig> {
    let k = Keys {
        file,
        arch: "huginn",
    };
    let n_embd = k.req("embedding_length")?;
    let n_head = k.req("attention.head_count")?;
    let head_dim = k.head_dim(n_embd, n_head)?;
    let block_type = match k.str("block_type")?.unwrap_or("sandwich") {
        "sandwich" => BlockType::Sandwich,
        "prenorm" => BlockType::PreNorm,
        other => {
            return Err(Error::InvalidModel(format!(
                "unsupported huginn.block_type {other:?} (sandwich or prenorm)"
            )));
        }
    };
    let rope_pairing = match k.str("rope.pairing")?.unwrap_or("adjacent") {
        "adjacent" => RopePairing::Adjacent,
        "neox" => RopePairing::Neox,
        other => {
            return Err(Error::InvalidModel(format!(
                "unsupported huginn.rope.pairing {other:?}"
            )));
        }
    };
    let cfg = ModelConfig {
        architecture: Architecture::Huginn,
        context_length: k.req("context_length")?,
        n_embd,
        n_ff: k.req("feed_forward_length")?,
        n_head,
        n_head_kv: k.opt("attention.head_count_kv")?.unwrap_or(n_head),
        head_dim,
        n_vocab: super::n_vocab(file)?,
        n_prelude: k.req("prelude_block_count")?,
        n_core: k.req("core_block_count")?,
        n_coda: k.req("coda_block_count")?,
        norm_eps: k.req_f32("attention.layer_norm_rms_epsilon")?,
        n_rot: head_dim,
        rope_base: k.f32("rope.freq_base")?.unwrap_or(10000.0),
        rope_freq_scale: 1.0,
        rope_pairing,
        block_type,
        embedding_scale: k.f32("embedding_scale")?.unwrap_or((n_embd as f32).sqrt()),
        default_iterations: k.opt("recurrence.default")?.unwrap_or(32),
        state_init_std: k
            .f32("recurrence.state_init_std")?
            .unwrap_or((2.0 / (5.0 * n_embd as f32)).sqrt()),
        norm_after_recurrence: k.bool("norm_after_recurrence")?.unwrap_or(true),
        norm_after_step: false,
        state_from_embedding: false,
        tied_embeddings: file.tensor("output.weight").is_none(),
    };
    let blocks = k.req("block_count")?;
    if blocks
        != cfg
            .n_prelude
            .saturating_add(cfg.n_core)
            .saturating_add(cfg.n_coda)
    {
        return Err(Error::InvalidModel(format!(
            "huginn.block_count {blocks} != prelude {} + core {} + coda {}",
            cfg.n_prelude, cfg.n_core, cfg.n_coda
        )));
    }
    if cfg.n_core == 0 {
        return Err(Error::InvalidModel(
            "huginn.core_block_count must be at least 1".into(),
        ));
    }
    Ok(cfg)
}

/// Binds the blocks, the adapter, the final norm and the (optional) head.
pub(crate) fn bind(b: &mut Binder, cfg: &ModelConfig) -> Result<ArchTensors> {
    let d = cfg.n_embd;
    // Sandwich blocks have norms after the residual adds; pre-norm ones none.
    let post_norm = |b: &mut Binder, name: &str| -> Result<Option<Tensor>> {
        match cfg.block_type {
            BlockType::Sandwich | BlockType::PeriNorm => b.get(name, &[d], Kind::Vector).map(Some),
            BlockType::PreNorm => Ok(None),
        }
    };
    let mut blocks = Vec::with_capacity(cfg.n_blocks());
    for i in 0..cfg.n_blocks() {
        let n = |s: &str| format!("blk.{i}.{s}");
        let q_bias = b.opt(&n("attn_q.bias"), &[cfg.q_dim()], Kind::Vector)?;
        let k_bias = b.opt(&n("attn_k.bias"), &[cfg.kv_dim()], Kind::Vector)?;
        if q_bias.is_some() != k_bias.is_some() {
            return Err(Error::InvalidModel(format!(
                "block {i}: attn_q.bias and attn_k.bias must both be present or both absent"
            )));
        }
        let qkv_rows = cfg.q_dim() + 2 * cfg.kv_dim();
        blocks.push(BlockWeights {
            attn_norm: b.get(&n("attn_norm.weight"), &[d], Kind::Vector)?,
            qkv: QkvWeights::Fused(b.get(&n("attn_qkv.weight"), &[d, qkv_rows], Kind::Matrix)?),
            q_bias,
            k_bias,
            v_bias: None,
            attn_output: b.get(&n("attn_output.weight"), &[cfg.q_dim(), d], Kind::Matrix)?,
            attn_post_norm: post_norm(b, &n("attn_post_norm.weight"))?,
            ffn_norm: b.get(&n("ffn_norm.weight"), &[d], Kind::Vector)?,
            gate_up: GateUpWeights::Fused(b.get(
                &n("ffn_gate_up.weight"),
                &[d, 2 * cfg.n_ff],
                Kind::Matrix,
            )?),
            ffn_down: b.get(&n("ffn_down.weight"), &[cfg.n_ff, d], Kind::Matrix)?,
            ffn_post_norm: post_norm(b, &n("ffn_post_norm.weight"))?,
        });
    }
    Ok(ArchTensors {
        blocks,
        adapter: Some(b.get("adapter.weight", &[2 * d, d], Kind::Matrix)?),
        output_norm: b.get("output_norm.weight", &[d], Kind::Vector)?,
        output: b.opt("output.weight", &[d, cfg.n_vocab], Kind::Matrix)?,
        // Llama 3's frequency divisors (retrofitted Llama 3.x models).
        rope_factors: b.opt("rope_freqs.weight", &[cfg.n_rot / 2], Kind::Vector)?,
    })
}

/// Sandwich block: `x = n2(attn(n1(x)) + x); x = n4(mlp(n3(x)) + x)`.
pub(crate) fn block(
    gb: &mut GraphBuilder,
    bw: &BlockWeights,
    x: Tensor,
    inp: &BatchInputs,
    kv: KvLayer,
) -> Result<Tensor> {
    let eps = gb.cfg.norm_eps;
    let (Some(attn_post_norm), Some(ffn_post_norm)) = (bw.attn_post_norm, bw.ffn_post_norm) else {
        return Err(Error::InvalidModel(
            "a sandwich block without its post norms".into(),
        ));
    };
    let h = gb.ctx.rms_norm(x, bw.attn_norm, eps);
    let a = gb.attention(bw, h, inp, kv)?;
    let x = gb.residual(x);
    let x = gb.ctx.add(a, x);
    let x = gb.ctx.rms_norm(x, attn_post_norm, eps);
    let h = gb.ctx.rms_norm(x, bw.ffn_norm, eps);
    let m = gb.mlp(bw, h);
    let x = gb.ctx.add(m, x);
    let x = gb.ctx.rms_norm(x, ffn_post_norm, eps);
    gb.graph.expand(x)?;
    Ok(x)
}
