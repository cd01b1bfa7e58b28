//! The test-model maker: small random `huginn` GGUF files from a seed, in any
//! weight type ggml can quantize to. Tests, benchmarks and the reference use
//! them; the same seed and shapes give the same underlying f32 weights whatever
//! the storage type, so types can be compared against each other.
//!
//! Weights are scaled so that random models still have peaked, position-
//! dependent next-token distributions (a flat distribution would make logit
//! comparisons insensitive): unit-variance projections, non-trivial norm
//! weights and q/k biases, and a head whose logits have a standard deviation of
//! about five.

use crate::error::{Error, Result};
use crate::gguf::{GgmlType, GgufWriter, Value};
use crate::rng::SplitMix64;
use std::path::Path;

/// Factor on the adapter's state inputs (see `build`).
const STATE_DAMPING: f32 = 0.3;

/// Shapes and types of a test model.
#[derive(Clone, Debug, PartialEq)]
pub struct TestModelSpec {
    /// Seed of the weight generator.
    pub seed: u64,
    /// Residual width `d`.
    pub n_embd: usize,
    /// Width of one MLP half.
    pub n_ff: usize,
    /// Query heads.
    pub n_head: usize,
    /// Key/value heads.
    pub n_head_kv: usize,
    /// Vocabulary size.
    pub n_vocab: usize,
    /// Training context length written to the file.
    pub n_ctx: usize,
    /// Prelude blocks.
    pub n_prelude: usize,
    /// Core blocks.
    pub n_core: usize,
    /// Coda blocks.
    pub n_coda: usize,
    /// Tie the head to the embedding (no `output.weight`).
    pub tied: bool,
    /// Store q/k biases.
    pub qk_bias: bool,
    /// Storage type of the weight matrices.
    pub weight_type: GgmlType,
    /// Default recurrence written to the file.
    pub default_iterations: usize,
    /// RoPE base.
    pub rope_base: f32,
    /// RMSNorm epsilon.
    pub norm_eps: f32,
    /// The layout of Llama models retrofitted with recurrence (McLeish et
    /// al. 2025) instead of Huginn-0125's: pre-norm blocks (no post norms),
    /// RoPE over the two halves of each head, no embedding scale, no norm
    /// between the recurrence and the coda, initial-state std 0.0087.
    pub retrofitted: bool,
    /// An `ouro` file instead (every block looped, norms around each
    /// sublayer, an exit gate): `n_core` blocks; `n_prelude` and `n_coda`
    /// must be 0, q/k biases are not written.
    pub ouro: bool,
}

impl Default for TestModelSpec {
    fn default() -> Self {
        TestModelSpec {
            seed: 1,
            n_embd: 96,
            n_ff: 128,
            n_head: 2,
            n_head_kv: 2,
            n_vocab: 256,
            n_ctx: 128,
            n_prelude: 1,
            n_core: 2,
            n_coda: 1,
            tied: true,
            qk_bias: true,
            weight_type: GgmlType::F32,
            default_iterations: 8,
            rope_base: 50000.0,
            norm_eps: 1e-6,
            retrofitted: false,
            ouro: false,
        }
    }
}

impl TestModelSpec {
    fn head_dim(&self) -> usize {
        self.n_embd / self.n_head
    }

    fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::InvalidArgument(m));
        if self.n_head == 0
            || !self.n_embd.is_multiple_of(self.n_head)
            || !self.head_dim().is_multiple_of(2)
        {
            return bad(format!(
                "n_embd {} must split into {} heads of even size",
                self.n_embd, self.n_head
            ));
        }
        if self.n_head_kv == 0 || !self.n_head.is_multiple_of(self.n_head_kv) {
            return bad("n_head must be a multiple of n_head_kv".into());
        }
        if self.n_core == 0 || self.n_vocab == 0 || self.n_ff == 0 || self.n_ctx == 0 {
            return bad("n_core, n_vocab, n_ff and n_ctx must be positive".into());
        }
        let bs = self.weight_type.block_size();
        for (what, n) in [
            ("n_embd", self.n_embd),
            ("n_ff", self.n_ff),
            ("attention width", self.n_head * self.head_dim()),
        ] {
            if !n.is_multiple_of(bs) {
                return bad(format!(
                    "{what} {n} is not a multiple of {}'s block size {bs}",
                    self.weight_type.name()
                ));
            }
        }
        Ok(())
    }
}

/// Draws normals (untruncated for weights: limit 6 keeps tails finite).
fn normals(rng: &mut SplitMix64, n: usize, std: f32, mean: f32) -> Vec<f32> {
    (0..n)
        .map(|_| mean + std * rng.next_normal_truncated(6.0) as f32)
        .collect()
}

/// Builds the GGUF file in memory.
pub fn build(spec: &TestModelSpec) -> Result<GgufWriter> {
    spec.validate()?;
    if spec.ouro {
        return build_ouro(spec);
    }
    let d = spec.n_embd;
    let hd = spec.head_dim();
    let q_dim = spec.n_head * hd;
    let kv_dim = spec.n_head_kv * hd;
    let mut rng = SplitMix64::new(spec.seed);
    let mut w = GgufWriter::new();
    let u32v = |v: usize| Value::U32(v as u32);
    w.add_kv("general.architecture", Value::String("huginn".into()))?;
    w.add_kv(
        "general.name",
        Value::String(format!("huginn-test-seed{}", spec.seed)),
    )?;
    w.add_kv("huginn.context_length", u32v(spec.n_ctx))?;
    w.add_kv("huginn.embedding_length", u32v(d))?;
    w.add_kv("huginn.feed_forward_length", u32v(spec.n_ff))?;
    w.add_kv(
        "huginn.block_count",
        u32v(spec.n_prelude + spec.n_core + spec.n_coda),
    )?;
    w.add_kv("huginn.prelude_block_count", u32v(spec.n_prelude))?;
    w.add_kv("huginn.core_block_count", u32v(spec.n_core))?;
    w.add_kv("huginn.coda_block_count", u32v(spec.n_coda))?;
    w.add_kv("huginn.attention.head_count", u32v(spec.n_head))?;
    w.add_kv("huginn.attention.head_count_kv", u32v(spec.n_head_kv))?;
    w.add_kv("huginn.attention.key_length", u32v(hd))?;
    w.add_kv(
        "huginn.attention.layer_norm_rms_epsilon",
        Value::F32(spec.norm_eps),
    )?;
    w.add_kv("huginn.rope.freq_base", Value::F32(spec.rope_base))?;
    let (pairing, block_type, embedding_scale, state_std) = if spec.retrofitted {
        ("neox", "prenorm", 1.0, 0.008_703_883)
    } else {
        (
            "adjacent",
            "sandwich",
            (d as f32).sqrt(),
            (2.0 / (5.0 * d as f32)).sqrt(),
        )
    };
    w.add_kv("huginn.rope.pairing", Value::String(pairing.into()))?;
    w.add_kv("huginn.block_type", Value::String(block_type.into()))?;
    w.add_kv("huginn.embedding_scale", Value::F32(embedding_scale))?;
    w.add_kv("huginn.recurrence.default", u32v(spec.default_iterations))?;
    w.add_kv("huginn.recurrence.state_init_std", Value::F32(state_std))?;
    w.add_kv(
        "huginn.norm_after_recurrence",
        Value::Bool(!spec.retrofitted),
    )?;

    let ty = spec.weight_type;
    let matrix = |w: &mut GgufWriter,
                  rng: &mut SplitMix64,
                  name: &str,
                  n_in: usize,
                  n_out: usize,
                  std: f32| {
        let vals = normals(rng, n_in * n_out, std, 0.0);
        let data = crate::ggml::quantize(ty, &vals, n_in)?;
        w.add_tensor(name, ty, &[n_in as u64, n_out as u64], data)?;
        Ok::<(), Error>(())
    };
    let vector =
        |w: &mut GgufWriter, rng: &mut SplitMix64, name: &str, n: usize, std: f32, mean: f32| {
            let vals = normals(rng, n, std, mean);
            let data = crate::ggml::quantize(GgmlType::F32, &vals, n)?;
            w.add_tensor(name, GgmlType::F32, &[n as u64], data)?;
            Ok::<(), Error>(())
        };
    let head_std = 5.0 / (d as f32).sqrt();
    let embd_std = if spec.tied {
        head_std
    } else {
        1.0 / (d as f32).sqrt()
    };
    matrix(
        &mut w,
        &mut rng,
        "token_embd.weight",
        d,
        spec.n_vocab,
        embd_std,
    )?;
    for i in 0..spec.n_prelude + spec.n_core + spec.n_coda {
        let n = |s: &str| format!("blk.{i}.{s}");
        vector(&mut w, &mut rng, &n("attn_norm.weight"), d, 0.2, 1.0)?;
        matrix(
            &mut w,
            &mut rng,
            &n("attn_qkv.weight"),
            d,
            q_dim + 2 * kv_dim,
            1.0 / (d as f32).sqrt(),
        )?;
        if spec.qk_bias {
            vector(&mut w, &mut rng, &n("attn_q.bias"), q_dim, 0.5, 0.0)?;
            vector(&mut w, &mut rng, &n("attn_k.bias"), kv_dim, 0.5, 0.0)?;
        }
        matrix(
            &mut w,
            &mut rng,
            &n("attn_output.weight"),
            q_dim,
            d,
            1.0 / (q_dim as f32).sqrt(),
        )?;
        if !spec.retrofitted {
            vector(&mut w, &mut rng, &n("attn_post_norm.weight"), d, 0.2, 1.0)?;
        }
        vector(&mut w, &mut rng, &n("ffn_norm.weight"), d, 0.2, 1.0)?;
        matrix(
            &mut w,
            &mut rng,
            &n("ffn_gate_up.weight"),
            d,
            2 * spec.n_ff,
            1.0 / (d as f32).sqrt(),
        )?;
        matrix(
            &mut w,
            &mut rng,
            &n("ffn_down.weight"),
            spec.n_ff,
            d,
            1.0 / (spec.n_ff as f32).sqrt(),
        )?;
        if !spec.retrofitted {
            vector(&mut w, &mut rng, &n("ffn_post_norm.weight"), d, 0.2, 1.0)?;
        }
    }
    // The adapter sees concat(state, embedding). Damping the state half keeps the
    // random recurrence contractive, like a trained model's (which converges to a
    // fixed point) rather than chaotic, so comparisons stay well-conditioned at
    // high iteration counts.
    let mut adapter = normals(&mut rng, 2 * d * d, 1.0 / (2.0 * d as f32).sqrt(), 0.0);
    for row in adapter.chunks_mut(2 * d) {
        row[..d].iter_mut().for_each(|v| *v *= STATE_DAMPING);
    }
    w.add_tensor(
        "adapter.weight",
        ty,
        &[2 * d as u64, d as u64],
        crate::ggml::quantize(ty, &adapter, 2 * d)?,
    )?;
    vector(&mut w, &mut rng, "output_norm.weight", d, 0.2, 1.0)?;
    if !spec.tied {
        matrix(&mut w, &mut rng, "output.weight", d, spec.n_vocab, head_std)?;
    }
    Ok(w)
}

/// An `ouro` test model: `n_core` looped blocks, an exit gate whose
/// probabilities spread tokens over several loops.
fn build_ouro(spec: &TestModelSpec) -> Result<GgufWriter> {
    if spec.n_prelude != 0 || spec.n_coda != 0 || spec.retrofitted {
        return Err(Error::InvalidArgument(
            "an ouro test model has only looped (core) blocks".into(),
        ));
    }
    let d = spec.n_embd;
    let hd = spec.head_dim();
    let (q_dim, kv_dim) = (spec.n_head * hd, spec.n_head_kv * hd);
    let mut rng = SplitMix64::new(spec.seed);
    let mut w = GgufWriter::new();
    let u32v = |v: usize| Value::U32(v as u32);
    w.add_kv("general.architecture", Value::String("ouro".into()))?;
    w.add_kv(
        "general.name",
        Value::String(format!("ouro-test-seed{}", spec.seed)),
    )?;
    w.add_kv("ouro.context_length", u32v(spec.n_ctx))?;
    w.add_kv("ouro.embedding_length", u32v(d))?;
    w.add_kv("ouro.feed_forward_length", u32v(spec.n_ff))?;
    w.add_kv("ouro.block_count", u32v(spec.n_core))?;
    w.add_kv("ouro.attention.head_count", u32v(spec.n_head))?;
    w.add_kv("ouro.attention.head_count_kv", u32v(spec.n_head_kv))?;
    w.add_kv(
        "ouro.attention.layer_norm_rms_epsilon",
        Value::F32(spec.norm_eps),
    )?;
    w.add_kv("ouro.rope.freq_base", Value::F32(spec.rope_base))?;
    w.add_kv("ouro.loop_count", u32v(spec.default_iterations))?;
    let ty = spec.weight_type;
    let matrix =
        |w: &mut GgufWriter, rng: &mut SplitMix64, name: &str, n_in: usize, n_out: usize| {
            let vals = normals(rng, n_in * n_out, 1.0 / (n_in as f32).sqrt(), 0.0);
            let data = crate::ggml::quantize(ty, &vals, n_in)?;
            w.add_tensor(name, ty, &[n_in as u64, n_out as u64], data)?;
            Ok::<(), Error>(())
        };
    let vector =
        |w: &mut GgufWriter, rng: &mut SplitMix64, name: &str, n: usize, std: f32, mean: f32| {
            let vals = normals(rng, n, std, mean);
            let data = crate::ggml::quantize(GgmlType::F32, &vals, n)?;
            w.add_tensor(name, GgmlType::F32, &[n as u64], data)?;
            Ok::<(), Error>(())
        };
    let head_std = 5.0 / (d as f32).sqrt();
    let vals = normals(&mut rng, d * spec.n_vocab, head_std, 0.0);
    w.add_tensor(
        "token_embd.weight",
        ty,
        &[d as u64, spec.n_vocab as u64],
        crate::ggml::quantize(ty, &vals, d)?,
    )?;
    for i in 0..spec.n_core {
        let n = |s: &str| format!("blk.{i}.{s}");
        vector(&mut w, &mut rng, &n("attn_norm.weight"), d, 0.2, 1.0)?;
        matrix(&mut w, &mut rng, &n("attn_q.weight"), d, q_dim)?;
        matrix(&mut w, &mut rng, &n("attn_k.weight"), d, kv_dim)?;
        matrix(&mut w, &mut rng, &n("attn_v.weight"), d, kv_dim)?;
        matrix(&mut w, &mut rng, &n("attn_output.weight"), q_dim, d)?;
        // Small post norms keep each loop a moderate change of the state.
        vector(&mut w, &mut rng, &n("attn_post_norm.weight"), d, 0.2, 1.0)?;
        vector(&mut w, &mut rng, &n("ffn_norm.weight"), d, 0.2, 1.0)?;
        matrix(&mut w, &mut rng, &n("ffn_gate.weight"), d, spec.n_ff)?;
        matrix(&mut w, &mut rng, &n("ffn_up.weight"), d, spec.n_ff)?;
        matrix(&mut w, &mut rng, &n("ffn_down.weight"), spec.n_ff, d)?;
        vector(&mut w, &mut rng, &n("ffn_post_norm.weight"), d, 0.2, 1.0)?;
    }
    vector(&mut w, &mut rng, "output_norm.weight", d, 0.2, 1.0)?;
    if !spec.tied {
        let vals = normals(&mut rng, d * spec.n_vocab, head_std, 0.0);
        w.add_tensor(
            "output.weight",
            ty,
            &[d as u64, spec.n_vocab as u64],
            crate::ggml::quantize(ty, &vals, d)?,
        )?;
    }
    // Gate logits of about N(-1, 1): exit probabilities of 0.1..0.6 per loop.
    vector(
        &mut w,
        &mut rng,
        "exit_gate.weight",
        d,
        1.0 / (d as f32).sqrt(),
        0.0,
    )?;
    vector(&mut w, &mut rng, "exit_gate.bias", 1, 0.0, -1.0)?;
    Ok(w)
}

/// Writes a test model to `path`.
pub fn write(spec: &TestModelSpec, path: impl AsRef<Path>) -> Result<()> {
    build(spec)?.write_to_file(path.as_ref())?;
    Ok(())
}

/// Adds a tokenizer (the text of a Hugging Face `tokenizer.json`, stored as
/// `tokenizer.huggingface.json`) and optionally a chat template
/// (`tokenizer.chat_template`) to a test model built by [`build`]. Both are
/// checked by building them as the runtime does. Without this call the file
/// is exactly what [`build`] makes.
pub fn add_text_metadata(
    w: &mut GgufWriter,
    tokenizer_json: &str,
    chat_template: Option<&str>,
) -> Result<()> {
    crate::tokenizer::Tokenizer::from_hf_json(tokenizer_json)?;
    w.add_kv(
        crate::tokenizer::HF_JSON_KEY,
        Value::String(tokenizer_json.to_string()),
    )?;
    if let Some(t) = chat_template {
        crate::chat::ChatTemplate::new(t)?;
        w.add_kv(crate::chat::CHAT_TEMPLATE_KEY, Value::String(t.to_string()))?;
    }
    Ok(())
}
