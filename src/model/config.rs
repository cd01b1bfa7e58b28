//! Hyper-parameters of a model, read from GGUF metadata by its architecture's
//! file (`arch/`) and validated here (schema: docs/gguf.md).

use super::arch;
use crate::error::{Error, Result};
use crate::gguf::GgufFile;

/// The model families this runtime runs (GGUF `general.architecture`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Architecture {
    /// Huginn-0125 and models of its design (`huginn`): sandwich blocks,
    /// prelude / recurrent core with an adapter / coda.
    Huginn,
    /// A plain Llama-family transformer (`llama`, as llama.cpp writes it):
    /// pre-norm blocks run once each, no recurrence.
    Llama,
    /// Ouro (`ouro`): every block is looped, the state starts as the token
    /// embedding and is normed after each loop; a learned exit gate.
    Ouro,
}

impl Architecture {
    /// The GGUF name (`general.architecture` and the metadata key prefix).
    pub fn name(self) -> &'static str {
        match self {
            Architecture::Huginn => "huginn",
            Architecture::Llama => "llama",
            Architecture::Ouro => "ouro",
        }
    }
}

/// How each block arranges its norms.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BlockType {
    /// Huginn: `x = n2(attn(n1(x)) + x); x = n4(mlp(n3(x)) + x)`.
    Sandwich,
    /// Llama: `x = x + attn(n1(x)); x = x + mlp(n2(x))`.
    PreNorm,
    /// Ouro: `x = x + n2(attn(n1(x))); x = x + n4(mlp(n3(x)))` (norms around
    /// each sublayer, the residual outside them).
    PeriNorm,
}

/// RoPE pairing convention.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RopePairing {
    /// Rotate `(x[2i], x[2i+1])` (Huginn).
    Adjacent,
    /// Rotate `(x[i], x[i + head_dim/2])`.
    Neox,
}

/// Validated hyper-parameters of a recurrent-depth model.
#[derive(Clone, Debug, PartialEq)]
pub struct ModelConfig {
    /// Model family.
    pub architecture: Architecture,
    /// Training context length (sessions may not exceed it).
    pub context_length: usize,
    /// Width of the residual stream (`d`).
    pub n_embd: usize,
    /// Width of one MLP half.
    pub n_ff: usize,
    /// Query heads.
    pub n_head: usize,
    /// Key/value heads.
    pub n_head_kv: usize,
    /// Dimension of one head.
    pub head_dim: usize,
    /// Vocabulary size (rows of the token embedding).
    pub n_vocab: usize,
    /// Prelude blocks.
    pub n_prelude: usize,
    /// Core (recurrent) blocks; 0 for a model without recurrence.
    pub n_core: usize,
    /// Coda blocks.
    pub n_coda: usize,
    /// RMSNorm epsilon.
    pub norm_eps: f32,
    /// Dimensions RoPE rotates at the start of each head (even; usually
    /// `head_dim`).
    pub n_rot: usize,
    /// RoPE base frequency.
    pub rope_base: f32,
    /// RoPE position scale (1 / the linear scaling factor; 1 without scaling).
    pub rope_freq_scale: f32,
    /// RoPE pairing.
    pub rope_pairing: RopePairing,
    /// Norm arrangement of the blocks.
    pub block_type: BlockType,
    /// Multiplier of token embeddings and of a random initial state.
    pub embedding_scale: f32,
    /// Default number of core iterations.
    pub default_iterations: usize,
    /// Std of the truncated-normal initial state (0: start from zeros).
    pub state_init_std: f32,
    /// Whether `output_norm` is applied once after the recurrence.
    pub norm_after_recurrence: bool,
    /// Whether every recurrence step ends with `output_norm` (Ouro); the
    /// head then reads the state without another norm.
    pub norm_after_step: bool,
    /// Whether the state starts as the prelude's output (the token
    /// embedding; Ouro) instead of zeros or a random draw.
    pub state_from_embedding: bool,
    /// Whether the output head is tied to the token embedding.
    pub tied_embeddings: bool,
}

/// Upper bounds that keep every derived size far from overflow.
const MAX_DIM: usize = 1 << 20;
const MAX_BLOCKS: usize = 4096;

impl ModelConfig {
    /// Reads the hyper-parameters of `file`'s architecture.
    pub fn from_gguf(file: &GgufFile) -> Result<ModelConfig> {
        let name = file
            .get_str("general.architecture")?
            .unwrap_or_default()
            .to_string();
        let cfg = match name.as_str() {
            "huginn" => arch::huginn::config(file)?,
            "llama" => arch::llama::config(file)?,
            "ouro" => arch::ouro::config(file)?,
            "" => return Err(Error::UnsupportedArchitecture("(none)".into())),
            _ => return Err(Error::UnsupportedArchitecture(name)),
        };
        cfg.validate()?;
        Ok(cfg)
    }

    fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::InvalidModel(m));
        for (name, v) in [
            ("embedding_length", self.n_embd),
            ("feed_forward_length", self.n_ff),
            ("attention.head_count", self.n_head),
            ("attention.head_count_kv", self.n_head_kv),
            ("attention.key_length", self.head_dim),
            ("vocabulary", self.n_vocab),
            ("context_length", self.context_length),
        ] {
            if v == 0 || v > MAX_DIM {
                return bad(format!(
                    "{}.{name} = {v} is out of range (1..={MAX_DIM})",
                    self.architecture.name()
                ));
            }
        }
        if self.n_core == 0 && self.n_coda > 0 {
            return bad("a model without core blocks cannot have coda blocks".into());
        }
        if self.n_prelude + self.n_core == 0 {
            return bad("the model has no blocks".into());
        }
        if self.n_prelude + self.n_core + self.n_coda > MAX_BLOCKS {
            return bad("too many blocks".into());
        }
        if !self.n_rot.is_multiple_of(2) || self.n_rot == 0 || self.n_rot > self.head_dim {
            return bad(format!(
                "RoPE dimensions {} must be even and within the head dimension {}",
                self.n_rot, self.head_dim
            ));
        }
        if !self.n_head.is_multiple_of(self.n_head_kv) {
            return bad(format!(
                "head_count {} is not a multiple of head_count_kv {}",
                self.n_head, self.n_head_kv
            ));
        }
        if self.n_head * self.head_dim > MAX_DIM {
            return bad("attention width too large".into());
        }
        if !(self.norm_eps.is_finite() && self.norm_eps >= 0.0) {
            return bad(format!("invalid rms epsilon {}", self.norm_eps));
        }
        if !(self.rope_base.is_finite() && self.rope_base > 0.0) {
            return bad(format!("invalid rope.freq_base {}", self.rope_base));
        }
        if !(self.rope_freq_scale.is_finite() && self.rope_freq_scale > 0.0) {
            return bad(format!("invalid RoPE scale {}", self.rope_freq_scale));
        }
        if !(self.embedding_scale.is_finite()) {
            return bad("invalid embedding_scale".into());
        }
        if !(self.state_init_std.is_finite() && self.state_init_std >= 0.0) {
            return bad("invalid recurrence.state_init_std".into());
        }
        if self.default_iterations == 0 || self.default_iterations > 4096 {
            return bad(format!(
                "recurrence.default {} out of range",
                self.default_iterations
            ));
        }
        Ok(())
    }

    /// Whether the model has a recurrent core (a model without one runs
    /// each token once through its blocks: iteration limits do not apply).
    pub fn has_recurrence(&self) -> bool {
        self.n_core > 0
    }

    /// Total blocks (prelude + core + coda).
    pub fn n_blocks(&self) -> usize {
        self.n_prelude + self.n_core + self.n_coda
    }

    /// Width of all query heads together.
    pub fn q_dim(&self) -> usize {
        self.n_head * self.head_dim
    }

    /// Width of all key (or value) heads together.
    pub fn kv_dim(&self) -> usize {
        self.n_head_kv * self.head_dim
    }
}
