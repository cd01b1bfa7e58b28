//! Hyper-parameters of a `huginn` model, read and validated from GGUF metadata
//! (schema: docs/gguf.md).

use crate::error::{Error, Result};
use crate::gguf::GgufFile;

/// How each block arranges its norms.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BlockType {
    /// Huginn: `x = n2(attn(n1(x)) + x); x = n4(mlp(n3(x)) + x)`.
    Sandwich,
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
    /// Core (recurrent) blocks.
    pub n_core: usize,
    /// Coda blocks.
    pub n_coda: usize,
    /// RMSNorm epsilon.
    pub norm_eps: f32,
    /// RoPE base frequency.
    pub rope_base: f32,
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
    /// Whether the output head is tied to the token embedding.
    pub tied_embeddings: bool,
}

/// Upper bounds that keep every derived size far from overflow.
const MAX_DIM: usize = 1 << 20;
const MAX_BLOCKS: usize = 4096;

impl ModelConfig {
    /// Reads the `huginn.*` keys of `file`.
    pub fn from_gguf(file: &GgufFile) -> Result<ModelConfig> {
        let arch = file
            .get_str("general.architecture")?
            .unwrap_or_default()
            .to_string();
        if arch != "huginn" {
            return Err(Error::UnsupportedArchitecture(if arch.is_empty() {
                "(none)".into()
            } else {
                arch
            }));
        }
        let req = |k: &str| -> Result<usize> {
            let key = format!("huginn.{k}");
            match file.get_u64(&key)? {
                Some(v) => usize::try_from(v)
                    .map_err(|_| Error::InvalidModel(format!("{key} = {v} is too large"))),
                None => Err(Error::InvalidModel(format!("missing metadata key {key}"))),
            }
        };
        let opt = |k: &str| -> Result<Option<usize>> {
            let key = format!("huginn.{k}");
            match file.get_u64(&key)? {
                Some(v) => usize::try_from(v)
                    .map(Some)
                    .map_err(|_| Error::InvalidModel(format!("{key} = {v} is too large"))),
                None => Ok(None),
            }
        };
        let optf = |k: &str| -> Result<Option<f32>> { Ok(file.get_f32(&format!("huginn.{k}"))?) };

        let n_embd = req("embedding_length")?;
        let n_head = req("attention.head_count")?;
        let n_head_kv = opt("attention.head_count_kv")?.unwrap_or(n_head);
        let head_dim = match opt("attention.key_length")? {
            Some(h) => h,
            None if n_head > 0 && n_embd % n_head == 0 => n_embd / n_head,
            None => {
                return Err(Error::InvalidModel(format!(
                    "embedding_length {n_embd} is not divisible by head_count {n_head}"
                )));
            }
        };
        let block_type = match file.get_str("huginn.block_type")?.unwrap_or("sandwich") {
            "sandwich" => BlockType::Sandwich,
            other => {
                return Err(Error::InvalidModel(format!(
                    "unsupported huginn.block_type {other:?}"
                )));
            }
        };
        let rope_pairing = match file.get_str("huginn.rope.pairing")?.unwrap_or("adjacent") {
            "adjacent" => RopePairing::Adjacent,
            "neox" => RopePairing::Neox,
            other => {
                return Err(Error::InvalidModel(format!(
                    "unsupported huginn.rope.pairing {other:?}"
                )));
            }
        };
        let token_embd = file
            .tensor("token_embd.weight")
            .ok_or_else(|| Error::InvalidModel("missing tensor token_embd.weight".into()))?;
        if token_embd.shape.len() != 2 {
            return Err(Error::InvalidModel("token_embd.weight must be 2-D".into()));
        }
        let n_vocab = usize::try_from(token_embd.shape[1])
            .map_err(|_| Error::InvalidModel("vocabulary too large".into()))?;
        let cfg = ModelConfig {
            context_length: req("context_length")?,
            n_embd,
            n_ff: req("feed_forward_length")?,
            n_head,
            n_head_kv,
            head_dim,
            n_vocab,
            n_prelude: req("prelude_block_count")?,
            n_core: req("core_block_count")?,
            n_coda: req("coda_block_count")?,
            norm_eps: file
                .get_f32("huginn.attention.layer_norm_rms_epsilon")?
                .ok_or_else(|| {
                    Error::InvalidModel("missing huginn.attention.layer_norm_rms_epsilon".into())
                })?,
            rope_base: optf("rope.freq_base")?.unwrap_or(10000.0),
            rope_pairing,
            block_type,
            embedding_scale: optf("embedding_scale")?.unwrap_or((n_embd as f32).sqrt()),
            default_iterations: opt("recurrence.default")?.unwrap_or(32),
            state_init_std: optf("recurrence.state_init_std")?
                .unwrap_or((2.0 / (5.0 * n_embd as f32)).sqrt()),
            norm_after_recurrence: file
                .get_bool("huginn.norm_after_recurrence")?
                .unwrap_or(true),
            tied_embeddings: file.tensor("output.weight").is_none(),
        };
        let blocks = req("block_count")?;
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
                    "huginn.{name} = {v} is out of range (1..={MAX_DIM})"
                ));
            }
        }
        if self.n_core == 0 {
            return bad("huginn.core_block_count must be at least 1".into());
        }
        if self.n_prelude + self.n_core + self.n_coda > MAX_BLOCKS {
            return bad("too many blocks".into());
        }
        if !self.head_dim.is_multiple_of(2) {
            return bad(format!(
                "head dimension {} must be even for RoPE",
                self.head_dim
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
