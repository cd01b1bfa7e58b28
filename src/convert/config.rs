//! `config.json` of a Huginn ("raven") checkpoint.

use serde_json::{Map, Value as Json};

use super::ConvertError;

/// Upper bound on every width and count read from `config.json`; keeps derived
/// sizes far from overflow (the runtime's own limit is the same).
const MAX_DIM: usize = 1 << 20;
/// Most blocks a configuration may declare.
const MAX_BLOCKS: usize = 4096;

/// How a checkpoint's blocks are built. `config.json` does not say (the
/// retrofitted checkpoints keep Huginn-0125's `block_class_name`): the
/// converter tells them apart by their tensors (see [`HfConfig::layout`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    /// Huginn-0125: sandwich blocks (`norm_1`..`norm_4`), RoPE over adjacent
    /// pairs, the state normed before the coda.
    Huginn,
    /// A Llama model retrofitted with recurrence (McLeish et al. 2025): the
    /// source model's pre-norm blocks (`norm_1` before attention, `norm_2`
    /// before the MLP), its RoPE over head halves (`rope_theta`), no norm
    /// between the recurrence and the coda.
    Retrofitted,
    /// Ouro (`model_type` `ouro`): Llama-style tensor names, every layer
    /// looped `total_ut_steps` times, four norms per layer, an exit gate.
    Ouro,
}

/// Llama 3's RoPE frequency scaling: long wavelengths are divided by
/// `factor`, short ones kept, those in between interpolated.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Llama3Rope {
    /// `factor`.
    pub factor: f32,
    /// `low_freq_factor`.
    pub low_freq_factor: f32,
    /// `high_freq_factor`.
    pub high_freq_factor: f32,
    /// `original_max_position_embeddings`.
    pub original_context: f32,
}

impl Llama3Rope {
    /// The divisor of each rotated pair's frequency (`head_dim / 2` values,
    /// stored as `rope_freqs.weight`): pair `i` turns at
    /// `base^(-2i/head_dim) / divisor_i`.
    pub fn divisors(&self, base: f32, head_dim: usize) -> Vec<f32> {
        let (low, high) = (
            f64::from(self.low_freq_factor),
            f64::from(self.high_freq_factor),
        );
        let orig = f64::from(self.original_context);
        let factor = f64::from(self.factor);
        let (low_wavelen, high_wavelen) = (orig / low, orig / high);
        (0..head_dim / 2)
            .map(|i| {
                let freq = f64::from(base).powf(-2.0 * i as f64 / head_dim as f64);
                let wavelen = 2.0 * std::f64::consts::PI / freq;
                let d = if wavelen < high_wavelen {
                    1.0
                } else if wavelen > low_wavelen {
                    factor
                } else {
                    let smooth = (orig / wavelen - low) / (high - low);
                    1.0 / ((1.0 - smooth) / factor + smooth)
                };
                d as f32
            })
            .collect()
    }
}

/// Reads `rope_scaling`: absent or null, or Llama 3's.
fn rope_scaling(m: &Map<String, Json>) -> Result<Option<Llama3Rope>, ConvertError> {
    let rs = match m.get("rope_scaling") {
        None | Some(Json::Null) => return Ok(None),
        Some(Json::Object(rs)) => rs,
        Some(v) => {
            return Err(ConvertError::config(
                "rope_scaling",
                format!("{v} is not an object"),
            ));
        }
    };
    let kind = rs
        .get("rope_type")
        .or_else(|| rs.get("type"))
        .and_then(Json::as_str)
        .unwrap_or("");
    if kind != "llama3" {
        return Err(ConvertError::config(
            "rope_scaling",
            format!("type {kind:?} is not supported (only llama3)"),
        ));
    }
    let num = |k: &str| -> Result<f32, ConvertError> {
        match optional_f32(rs, k) {
            Ok(Some(v)) if v.is_finite() && v > 0.0 => Ok(v),
            _ => Err(ConvertError::config(
                &format!("rope_scaling.{k}"),
                "missing or not a positive number",
            )),
        }
    };
    let r = Llama3Rope {
        factor: num("factor")?,
        low_freq_factor: num("low_freq_factor")?,
        high_freq_factor: num("high_freq_factor")?,
        original_context: num("original_max_position_embeddings")?,
    };
    if r.high_freq_factor <= r.low_freq_factor {
        return Err(ConvertError::config(
            "rope_scaling.high_freq_factor",
            "must exceed low_freq_factor",
        ));
    }
    Ok(Some(r))
}

/// The hyper-parameters of a Huginn checkpoint, as read from `config.json`.
///
/// Keys absent from the file take the defaults of the authors' `RavenConfig`
/// where that class has one that cannot change tensor shapes (`rope_base`
/// 50000, `norm_eps` 1e-6, `block_size` 4096, `mean_recurrence` 32, `qk_bias`
/// and `tie_embeddings` true); widths and block counts are required.
#[derive(Clone, Debug, PartialEq)]
pub struct HfConfig {
    /// `n_embd`: residual width `d`.
    pub n_embd: usize,
    /// `n_heads` (or `num_attention_heads`).
    pub n_head: usize,
    /// `num_key_value_heads`, default `n_heads`.
    pub n_head_kv: usize,
    /// `intermediate_size`: width of one MLP half.
    pub n_ff: usize,
    /// `vocab_size` (or `padded_vocab_size` when larger): rows of the embedding.
    pub n_vocab: usize,
    /// `block_size`: training context length.
    pub n_ctx: usize,
    /// `norm_eps`.
    pub norm_eps: f32,
    /// `rope_base`; for the retrofitted layout `rope_theta` when present
    /// (their `rope_base` is a leftover the modeling code does not read).
    pub rope_base: f32,
    /// `rope_theta`, if present.
    pub rope_theta: Option<f32>,
    /// `init_values.embed_scale`, if present (else `sqrt(n_embd)`).
    pub embed_scale: Option<f32>,
    /// `init_values.std`, if present (else `sqrt(2 / (5 n_embd))`).
    pub state_init_std: Option<f32>,
    /// Block layout; [`Layout::Huginn`] until the converter has looked at
    /// the tensors.
    pub layout: Layout,
    /// Llama 3's RoPE scaling (`rope_scaling` with `rope_type` `llama3`), if
    /// any; only the retrofitted layout accepts it.
    pub rope_llama3: Option<Llama3Rope>,
    /// `n_layers_in_prelude`.
    pub n_prelude: usize,
    /// `n_layers_in_recurrent_block`.
    pub n_core: usize,
    /// `n_layers_in_coda`.
    pub n_coda: usize,
    /// `mean_recurrence`: default iteration count.
    pub mean_recurrence: usize,
    /// `qk_bias`.
    pub qk_bias: bool,
    /// `tie_embeddings` (or `tie_word_embeddings`).
    pub tie_embeddings: bool,
    /// `name` or `_name_or_path`, for `general.name`.
    pub name: Option<String>,
}

impl HfConfig {
    /// Head dimension `n_embd / n_head`.
    pub fn head_dim(&self) -> usize {
        self.n_embd / self.n_head.max(1)
    }

    /// Total blocks.
    pub fn n_blocks(&self) -> usize {
        self.n_prelude + self.n_core + self.n_coda
    }

    /// Parses and validates the text of `config.json`.
    pub fn from_json(text: &str) -> Result<HfConfig, ConvertError> {
        let json: Json = serde_json::from_str(text)
            .map_err(|e| ConvertError::config("(file)", format!("invalid JSON: {e}")))?;
        let Json::Object(map) = json else {
            return Err(ConvertError::config("(file)", "not a JSON object"));
        };
        Self::from_map(&map)
    }

    fn from_map(m: &Map<String, Json>) -> Result<HfConfig, ConvertError> {
        if m.get("model_type").and_then(Json::as_str) == Some("ouro") {
            return Self::from_ouro_map(m);
        }
        check_architecture(m)?;
        let n_embd = required_usize(m, &["n_embd", "hidden_size"])?;
        let n_head = required_usize(m, &["n_heads", "num_attention_heads"])?;
        let n_head_kv = optional_usize(m, &["num_key_value_heads"])?.unwrap_or(n_head);
        let n_ff = required_usize(m, &["intermediate_size"])?;
        let vocab = required_usize(m, &["vocab_size"])?;
        let padded = optional_usize(m, &["padded_vocab_size"])?.unwrap_or(vocab);
        let cfg = HfConfig {
            n_embd,
            n_head,
            n_head_kv,
            n_ff,
            n_vocab: vocab.max(padded),
            n_ctx: optional_usize(m, &["block_size", "max_position_embeddings"])?.unwrap_or(4096),
            norm_eps: optional_f32(m, "norm_eps")?.unwrap_or(1e-6),
            rope_base: optional_f32(m, "rope_base")?.unwrap_or(50_000.0),
            rope_theta: optional_f32(m, "rope_theta")?,
            embed_scale: init_value(m, "embed_scale")?,
            state_init_std: init_value(m, "std")?,
            layout: Layout::Huginn,
            rope_llama3: rope_scaling(m)?,
            n_prelude: required_usize(m, &["n_layers_in_prelude"])?,
            n_core: required_usize(m, &["n_layers_in_recurrent_block"])?,
            n_coda: required_usize(m, &["n_layers_in_coda"])?,
            mean_recurrence: optional_usize(m, &["mean_recurrence"])?.unwrap_or(32),
            qk_bias: optional_bool(m, "qk_bias")?.unwrap_or(true),
            tie_embeddings: match optional_bool(m, "tie_embeddings")? {
                Some(t) => t,
                None => optional_bool(m, "tie_word_embeddings")?.unwrap_or(true),
            },
            name: ["name", "_name_or_path"]
                .iter()
                .find_map(|k| m.get(*k).and_then(Json::as_str))
                .filter(|s| !s.is_empty())
                .map(str::to_string),
        };
        cfg.validate()?;
        Ok(cfg)
    }

    /// An Ouro `config.json` (the Hugging Face `OuroConfig` keys).
    fn from_ouro_map(m: &Map<String, Json>) -> Result<HfConfig, ConvertError> {
        expect_str(m, "hidden_act", &["silu"])?;
        if let Some(v) = m.get("rope_scaling").filter(|v| !v.is_null()) {
            return Err(ConvertError::config(
                "rope_scaling",
                format!("{v} is not supported (only checkpoints without RoPE scaling)"),
            ));
        }
        if optional_bool(m, "use_sliding_window")? == Some(true)
            || m.get("layer_types")
                .and_then(Json::as_array)
                .is_some_and(|a| a.iter().any(|t| t.as_str() != Some("full_attention")))
        {
            return Err(ConvertError::config(
                "layer_types",
                "sliding-window attention layers are not supported",
            ));
        }
        let n_embd = required_usize(m, &["hidden_size"])?;
        let n_head = required_usize(m, &["num_attention_heads"])?;
        if let Some(hd) = optional_usize(m, &["head_dim"])?
            && hd * n_head != n_embd
        {
            return Err(ConvertError::config(
                "head_dim",
                format!("{hd} x {n_head} heads differs from hidden_size {n_embd} (not supported)"),
            ));
        }
        let cfg = HfConfig {
            n_embd,
            n_head,
            n_head_kv: optional_usize(m, &["num_key_value_heads"])?.unwrap_or(n_head),
            n_ff: required_usize(m, &["intermediate_size"])?,
            n_vocab: required_usize(m, &["vocab_size"])?,
            n_ctx: optional_usize(m, &["max_position_embeddings"])?.unwrap_or(4096),
            norm_eps: optional_f32(m, "rms_norm_eps")?.unwrap_or(1e-6),
            rope_base: optional_f32(m, "rope_theta")?.unwrap_or(10_000.0),
            rope_theta: None,
            embed_scale: Some(1.0),
            state_init_std: Some(0.0),
            layout: Layout::Ouro,
            rope_llama3: None,
            n_prelude: 0,
            n_core: required_usize(m, &["num_hidden_layers"])?,
            n_coda: 0,
            mean_recurrence: optional_usize(m, &["total_ut_steps"])?.unwrap_or(4),
            qk_bias: false,
            tie_embeddings: optional_bool(m, "tie_word_embeddings")?.unwrap_or(true),
            name: ["name", "_name_or_path"]
                .iter()
                .find_map(|k| m.get(*k).and_then(Json::as_str))
                .filter(|s| !s.is_empty())
                .map(str::to_string),
        };
        cfg.validate()?;
        Ok(cfg)
    }

    /// RoPE base of this layout.
    pub fn rope_base(&self) -> f32 {
        match (self.layout, self.rope_theta) {
            (Layout::Retrofitted, Some(theta)) => theta,
            _ => self.rope_base,
        }
    }

    /// Embedding multiplier.
    pub fn embedding_scale(&self) -> f32 {
        self.embed_scale
            .unwrap_or_else(|| (self.n_embd as f32).sqrt())
    }

    /// Standard deviation of the random initial state (before scaling).
    pub fn state_init_std(&self) -> f32 {
        self.state_init_std
            .unwrap_or_else(|| (2.0 / (5.0 * self.n_embd as f64)).sqrt() as f32)
    }

    fn validate(&self) -> Result<(), ConvertError> {
        for (key, v) in [
            ("n_embd", self.n_embd),
            ("n_heads", self.n_head),
            ("num_key_value_heads", self.n_head_kv),
            ("intermediate_size", self.n_ff),
            ("vocab_size", self.n_vocab),
            ("block_size", self.n_ctx),
            ("mean_recurrence", self.mean_recurrence),
        ] {
            if v == 0 || v > MAX_DIM {
                return Err(ConvertError::config(
                    key,
                    format!("{v} is out of range 1..={MAX_DIM}"),
                ));
            }
        }
        if self.n_core == 0 {
            return Err(ConvertError::config(
                "n_layers_in_recurrent_block",
                "the recurrent core needs at least one block",
            ));
        }
        if self.n_blocks() > MAX_BLOCKS {
            return Err(ConvertError::config(
                "n_layers_in_recurrent_block",
                format!("more than {MAX_BLOCKS} blocks in total"),
            ));
        }
        if !self.n_embd.is_multiple_of(self.n_head) || !self.head_dim().is_multiple_of(2) {
            return Err(ConvertError::config(
                "n_heads",
                format!(
                    "n_embd {} does not split into {} heads of even size",
                    self.n_embd, self.n_head
                ),
            ));
        }
        if !self.n_head.is_multiple_of(self.n_head_kv) {
            return Err(ConvertError::config(
                "num_key_value_heads",
                format!("{} does not divide n_heads {}", self.n_head_kv, self.n_head),
            ));
        }
        if self.qk_bias && self.n_head_kv != self.n_head {
            return Err(ConvertError::config(
                "qk_bias",
                "q/k biases are only defined without grouped-query attention",
            ));
        }
        if !(self.norm_eps.is_finite() && self.norm_eps >= 0.0) {
            return Err(ConvertError::config(
                "norm_eps",
                format!("{} is not a finite non-negative number", self.norm_eps),
            ));
        }
        for (key, v) in [
            ("rope_base", Some(self.rope_base)),
            ("rope_theta", self.rope_theta),
        ] {
            if let Some(v) = v
                && !(v.is_finite() && v > 0.0)
            {
                return Err(ConvertError::config(
                    key,
                    format!("{v} is not a finite positive number"),
                ));
            }
        }
        for (key, v) in [
            ("init_values.embed_scale", self.embed_scale),
            ("init_values.std", self.state_init_std),
        ] {
            if let Some(v) = v
                && !(v.is_finite() && v >= 0.0)
            {
                return Err(ConvertError::config(
                    key,
                    format!("{v} is not a finite non-negative number"),
                ));
            }
        }
        Ok(())
    }
}

/// A string key that, when present, must be one of `allowed`.
fn expect_str(m: &Map<String, Json>, key: &str, allowed: &[&str]) -> Result<(), ConvertError> {
    match m.get(key) {
        None | Some(Json::Null) => Ok(()),
        Some(Json::String(s)) if allowed.contains(&s.as_str()) => Ok(()),
        Some(other) => Err(ConvertError::config(
            key,
            format!(
                "{other} is not supported (expected {})",
                allowed.join(" or ")
            ),
        )),
    }
}

/// Rejects configurations of other model families, and Huginn variants whose
/// blocks this runtime does not implement, with the key that says so.
fn check_architecture(m: &Map<String, Json>) -> Result<(), ConvertError> {
    let expect = |key: &str, allowed: &[&str]| expect_str(m, key, allowed);
    expect("model_type", &["huginn_raven"])?;
    expect("block_class_name", &["SandwichBlock"])?;
    expect("norm_class_name", &["RMSNorm_llama"])?;
    expect("mlp_class_name", &["GatedMLP"])?;
    expect("nonlin_name", &["SiLU"])?;
    expect("injection_type", &["linear"])?;
    if optional_bool(m, "bias")? == Some(true) {
        return Err(ConvertError::config(
            "bias",
            "linear layers with biases are not supported",
        ));
    }
    Ok(())
}

/// A number of the `init_values` object, if present.
fn init_value(m: &Map<String, Json>, key: &str) -> Result<Option<f32>, ConvertError> {
    match m.get("init_values") {
        None | Some(Json::Null) => Ok(None),
        Some(Json::Object(iv)) => optional_f32(iv, key)
            .map_err(|_| ConvertError::config(&format!("init_values.{key}"), "not a number")),
        Some(v) => Err(ConvertError::config(
            "init_values",
            format!("{v} is not an object"),
        )),
    }
}

fn first<'m>(m: &'m Map<String, Json>, keys: &[&str]) -> Option<(&'m Json, String)> {
    keys.iter().find_map(|k| {
        m.get(*k)
            .filter(|v| !v.is_null())
            .map(|v| (v, k.to_string()))
    })
}

fn optional_usize(m: &Map<String, Json>, keys: &[&str]) -> Result<Option<usize>, ConvertError> {
    let Some((v, key)) = first(m, keys) else {
        return Ok(None);
    };
    match v.as_u64().and_then(|n| usize::try_from(n).ok()) {
        Some(n) => Ok(Some(n)),
        None => Err(ConvertError::config(
            &key,
            format!("{v} is not a non-negative integer"),
        )),
    }
}

fn required_usize(m: &Map<String, Json>, keys: &[&str]) -> Result<usize, ConvertError> {
    optional_usize(m, keys)?.ok_or_else(|| ConvertError::config(keys[0], "missing"))
}

fn optional_f32(m: &Map<String, Json>, key: &str) -> Result<Option<f32>, ConvertError> {
    match m.get(key) {
        None | Some(Json::Null) => Ok(None),
        Some(v) => v
            .as_f64()
            .map(|x| Some(x as f32))
            .ok_or_else(|| ConvertError::config(key, format!("{v} is not a number"))),
    }
}

fn optional_bool(m: &Map<String, Json>, key: &str) -> Result<Option<bool>, ConvertError> {
    match m.get(key) {
        None | Some(Json::Null) => Ok(None),
        Some(Json::Bool(b)) => Ok(Some(*b)),
        Some(v) => Err(ConvertError::config(key, format!("{v} is not a boolean"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HUGINN: &str = r#"{
        "architectures": ["RavenForCausalLM"], "model_type": "huginn_raven",
        "n_embd": 5280, "n_heads": 55, "n_layers": 8, "block_size": 4096,
        "vocab_size": 65536, "padding_multiple": 4096, "tie_embeddings": true,
        "intermediate_size": 17920, "bias": false, "block_class_name": "SandwichBlock",
        "norm_class_name": "RMSNorm_llama", "norm_eps": 1e-06, "mlp_class_name": "GatedMLP",
        "nonlin_name": "SiLU", "injection_type": "linear", "n_layers_in_recurrent_block": 4,
        "mean_recurrence": 32, "n_layers_in_prelude": 2, "n_layers_in_coda": 2,
        "qk_bias": true, "rope_base": 50000, "torch_dtype": "bfloat16"
    }"#;

    #[test]
    fn parses_huginn_0125() {
        let c = HfConfig::from_json(HUGINN).unwrap();
        assert_eq!(
            (c.n_embd, c.n_head, c.n_head_kv, c.head_dim()),
            (5280, 55, 55, 96)
        );
        assert_eq!((c.n_prelude, c.n_core, c.n_coda), (2, 4, 2));
        assert_eq!((c.n_ff, c.n_vocab, c.n_ctx), (17920, 65536, 4096));
        assert_eq!((c.rope_base, c.norm_eps), (50000.0, 1e-6));
        assert!(c.qk_bias && c.tie_embeddings);
        assert_eq!(c.mean_recurrence, 32);
    }

    #[test]
    fn reads_retrofitted_keys() {
        let mut m: Map<String, Json> = serde_json::from_str(HUGINN).unwrap();
        m.insert("rope_theta".into(), 500000.0.into());
        m.insert("rope_base".into(), 10000.0.into());
        m.insert(
            "init_values".into(),
            serde_json::json!({"std": 0.0087, "embed_scale": 1.0}),
        );
        let mut c = HfConfig::from_map(&m).unwrap();
        // Huginn's layout reads rope_base; the retrofitted one rope_theta.
        assert_eq!(c.rope_base(), 10000.0);
        c.layout = Layout::Retrofitted;
        assert_eq!(c.rope_base(), 500000.0);
        assert_eq!((c.embedding_scale(), c.state_init_std()), (1.0, 0.0087));
        m.insert(
            "rope_scaling".into(),
            serde_json::json!({"rope_type": "llama3", "factor": 32.0}),
        );
        let e = HfConfig::from_map(&m).unwrap_err().to_string();
        assert!(e.contains("rope_scaling"), "{e}");
        m.remove("rope_scaling");
        m.insert("init_values".into(), serde_json::json!({"std": "x"}));
        let e = HfConfig::from_map(&m).unwrap_err().to_string();
        assert!(e.contains("init_values.std"), "{e}");
        // Without init_values: Huginn's formulas.
        let c = HfConfig::from_json(HUGINN).unwrap();
        assert_eq!(c.embedding_scale(), (5280f32).sqrt());
        assert!((c.state_init_std() - 0.008_703_883).abs() < 1e-9);
    }

    #[test]
    fn rejects_bad_configs() {
        let with = |edit: &str, value: Json| {
            let mut m: Map<String, Json> = serde_json::from_str(HUGINN).unwrap();
            if value.is_null() {
                m.remove(edit);
            } else {
                m.insert(edit.into(), value);
            }
            HfConfig::from_map(&m).unwrap_err().to_string()
        };
        assert!(with("n_embd", Json::Null).contains("`n_embd`: missing"));
        assert!(with("n_embd", "big".into()).contains("not a non-negative integer"));
        assert!(with("n_heads", 7.into()).contains("heads of even size"));
        assert!(with("n_layers_in_recurrent_block", 0.into()).contains("at least one"));
        assert!(with("model_type", "llama".into()).contains("`model_type`"));
        assert!(with("bias", true.into()).contains("biases"));
        assert!(with("rope_base", (-1.0).into()).contains("rope_base"));
        assert!(with("qk_bias", "yes".into()).contains("not a boolean"));
        assert!(with("vocab_size", 0.into()).contains("out of range"));
        assert!(
            HfConfig::from_json("[1]")
                .unwrap_err()
                .to_string()
                .contains("object")
        );
        assert!(
            HfConfig::from_json("{")
                .unwrap_err()
                .to_string()
                .contains("invalid JSON")
        );
    }
}
