//! Ouro (`ouro`; ByteDance Seed's Ouro-1.4B and 2.6B, "Scaling Latent
//! Reasoning via Looped Language Models", 2025). Every block is looped: the
//! state starts as the token embedding, each loop runs all blocks and ends
//! with the final RMSNorm, whose output feeds the next loop and, at the
//! last loop, the head. Blocks have four norms, around the attention and
//! around the MLP, with the residual outside them. A learned exit gate (a
//! linear map from the normed state to one logit) gives each loop an exit
//! probability; see [`crate::exit::ExitGate`].
//!
//! In this runtime's terms: no prelude, no coda, every block in the core,
//! no adapter (`state_from_embedding`, `norm_after_step`). The authors keep
//! one KV cache per (loop, block): a KV budget B equal to the loop count.
//! Facts and sources: docs/families-notes.md; keys: docs/gguf.md.

use super::Keys;
use crate::error::{Error, Result};
use crate::exit::ExitGate;
use crate::ggml::Tensor;
use crate::gguf::{GgmlType, GgufFile};
use crate::model::config::{Architecture, BlockType, ModelConfig, RopePairing};
use crate::model::graph::{BatchInputs, GraphBuilder, KvLayer};
use crate::model::weights::{ArchTensors, Binder, BlockWeights, Kind};

/// Loops when the file does not say (`total_ut_steps` of the released models).
const DEFAULT_LOOPS: usize = 4;

/// Reads the `ouro.*` keys.
pub(crate) fn config(file: &GgufFile) -> Result<ModelConfig> {
    let k = Keys { file, arch: "ouro" };
    let n_embd = k.req("embedding_length")?;
    let n_head = k.req("attention.head_count")?;
    let head_dim = k.head_dim(n_embd, n_head)?;
    Ok(ModelConfig {
        architecture: Architecture::Ouro,
        context_length: k.req("context_length")?,
        n_embd,
        n_ff: k.req("feed_forward_length")?,
        n_head,
        n_head_kv: k.opt("attention.head_count_kv")?.unwrap_or(n_head),
        head_dim,
        n_vocab: super::n_vocab(file)?,
        n_prelude: 0,
        n_core: k.req("block_count")?,
        n_coda: 0,
        norm_eps: k.req_f32("attention.layer_norm_rms_epsilon")?,
        n_rot: head_dim,
        rope_base: k.f32("rope.freq_base")?.unwrap_or(10000.0),
        rope_freq_scale: 1.0,
        rope_pairing: RopePairing::Neox,
        block_type: BlockType::PeriNorm,
        embedding_scale: 1.0,
        default_iterations: k.opt("loop_count")?.unwrap_or(DEFAULT_LOOPS),
        state_init_std: 0.0,
        norm_after_recurrence: false,
        norm_after_step: true,
        state_from_embedding: true,
        tied_embeddings: file.tensor("output.weight").is_none(),
    })
}

/// Binds the blocks (separate q/k/v and gate/up, four norms), the final
/// norm, the (optional) head and the exit gate.
pub(crate) fn bind(b: &mut Binder, cfg: &ModelConfig) -> Result<ArchTensors> {
    let d = cfg.n_embd;
    let mut blocks = Vec::with_capacity(cfg.n_blocks());
    for i in 0..cfg.n_blocks() {
        let n = |s: &str| format!("blk.{i}.{s}");
        let p = b.split_projections(i, cfg)?;
        blocks.push(BlockWeights {
            attn_norm: b.get(&n("attn_norm.weight"), &[d], Kind::Vector)?,
            qkv: p.qkv,
            q_bias: None,
            k_bias: None,
            v_bias: None,
            attn_output: p.attn_output,
            attn_post_norm: Some(b.get(&n("attn_post_norm.weight"), &[d], Kind::Vector)?),
            ffn_norm: b.get(&n("ffn_norm.weight"), &[d], Kind::Vector)?,
            gate_up: p.gate_up,
            ffn_down: p.ffn_down,
            ffn_post_norm: Some(b.get(&n("ffn_post_norm.weight"), &[d], Kind::Vector)?),
        });
    }
    // The gate is evaluated on the host (see `exit_gate`); bound here so the
    // file's tensors are all accounted for.
    b.get(GATE_WEIGHT, &[d], Kind::Vector)?;
    b.get(GATE_BIAS, &[1], Kind::Vector)?;
    Ok(ArchTensors {
        blocks,
        adapter: None,
        output_norm: b.get("output_norm.weight", &[d], Kind::Vector)?,
        output: b.opt("output.weight", &[d, cfg.n_vocab], Kind::Matrix)?,
        rope_factors: None,
    })
}

const GATE_WEIGHT: &str = "exit_gate.weight";
const GATE_BIAS: &str = "exit_gate.bias";

/// The exit gate's weights, read from the file (F32, checked by `bind`).
pub(crate) fn exit_gate(file: &GgufFile) -> Result<ExitGate> {
    let read = |name: &str| -> Result<Vec<f32>> {
        let info = file
            .tensor(name)
            .ok_or_else(|| Error::InvalidModel(format!("missing tensor {name}")))?;
        if info.ty != GgmlType::F32 {
            return Err(Error::InvalidModel(format!("tensor {name} must be F32")));
        }
        Ok(file
            .tensor_data(info)
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect())
    };
    let weight = read(GATE_WEIGHT)?;
    let bias = read(GATE_BIAS)?;
    Ok(ExitGate {
        weight,
        bias: bias.first().copied().unwrap_or(0.0),
    })
}

/// Block with norms around each sublayer:
/// `x = x + n2(attn(n1(x))); x = x + n4(mlp(n3(x)))`.
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
            "an Ouro block without its post norms".into(),
        ));
    };
    let h = gb.ctx.rms_norm(x, bw.attn_norm, eps);
    let a = gb.attention(bw, h, inp, kv)?;
    let a = gb.ctx.rms_norm(a, attn_post_norm, eps);
    let x = gb.residual(x);
    let x = gb.ctx.add(x, a);
    let h = gb.ctx.rms_norm(x, bw.ffn_norm, eps);
    let m = gb.mlp(bw, h);
    let m = gb.ctx.rms_norm(m, ffn_post_norm, eps);
    let x = gb.ctx.add(x, m);
    gb.graph.expand(x)?;
    Ok(x)
}
