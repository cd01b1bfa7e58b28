//! End-to-end tests of the Hugging Face converter and re-quantizer.
//!
//! Each test writes a random tiny Huginn checkpoint the way the authors'
//! `save_pretrained` lays it out (safetensors under HF names, config.json,
//! tokenizer.json, tokenizer_config.json), from the weights of a
//! `testmodel` GGUF. The runtime's logits on the converted F32 file must then
//! equal its logits on the directly written GGUF of the same weights (which
//! `tests/golden.rs` checks against the independent reference), so the name
//! mapping, the q/k bias split and the head handling are all exercised.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use recurrent_depth::Error;
use recurrent_depth::chat::{ChatMessage, ChatTemplate, TemplateTokens};
use recurrent_depth::convert::{self, ConvertError, ConvertOptions, HeadDecision};
use recurrent_depth::gguf::{GgmlType, GgufFile};
use recurrent_depth::model::{LoadParams, Model};
use recurrent_depth::session::{Session, SessionParams};
use recurrent_depth::testmodel::{self, TestModelSpec};
use recurrent_depth::tokenizer::Tokenizer;
use safetensors::Dtype;
use safetensors::tensor::TensorView;
use serde_json::json;

/// A fresh directory under the target's temporary folder.
fn temp_dir(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("convert-{name}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// How the test checkpoint is written.
#[derive(Clone)]
struct CkptOptions {
    dtype: Dtype,
    /// Number of shards (1 = model.safetensors).
    shards: usize,
    /// Store `lm_head.weight` even when tied (as a copy of the embedding).
    duplicate_head: bool,
    /// `tie_embeddings` in config.json (default: the spec's).
    tie_in_config: Option<bool>,
    /// Store the RoPE table, as the authors' model does.
    freqs_cis: bool,
    /// `rope_scaling` in config.json.
    rope_scaling: Option<serde_json::Value>,
}

impl Default for CkptOptions {
    fn default() -> Self {
        CkptOptions {
            dtype: Dtype::F32,
            shards: 1,
            duplicate_head: false,
            tie_in_config: None,
            freqs_cis: true,
            rope_scaling: None,
        }
    }
}

/// Small widths (multiples of 32, not of 256).
fn small_spec(tied: bool) -> TestModelSpec {
    TestModelSpec {
        seed: 7,
        n_embd: 64,
        n_ff: 96,
        n_head: 2,
        n_head_kv: 2,
        n_vocab: 300,
        n_ctx: 64,
        n_prelude: 1,
        n_core: 2,
        n_coda: 1,
        tied,
        ..TestModelSpec::default()
    }
}

/// Widths that K-quants divide.
fn k_spec(tied: bool) -> TestModelSpec {
    TestModelSpec {
        seed: 11,
        n_embd: 256,
        n_ff: 256,
        n_head: 4,
        n_head_kv: 4,
        n_vocab: 300,
        n_ctx: 64,
        n_prelude: 1,
        n_core: 1,
        n_coda: 1,
        tied,
        ..TestModelSpec::default()
    }
}

/// The HF name of a GGUF tensor of a model with `p` prelude and `c` core
/// blocks (`retrofitted`: pre-norm blocks, whose MLP norm is `norm_2`).
fn hf_name(gguf: &str, p: usize, c: usize, retrofitted: bool) -> String {
    let fixed = [
        ("token_embd.weight", "transformer.wte.weight"),
        ("output.weight", "lm_head.weight"),
        ("output_norm.weight", "transformer.ln_f.weight"),
        ("adapter.weight", "transformer.adapter.weight"),
    ];
    if let Some((_, hf)) = fixed.iter().find(|(g, _)| *g == gguf) {
        return hf.to_string();
    }
    let rest = gguf.strip_prefix("blk.").unwrap();
    let (n, what) = rest.split_once('.').unwrap();
    let n: usize = n.parse().unwrap();
    let block = if n < p {
        format!("transformer.prelude.{n}")
    } else if n < p + c {
        format!("transformer.core_block.{}", n - p)
    } else {
        format!("transformer.coda.{}", n - p - c)
    };
    let part = match what {
        "attn_norm.weight" => "norm_1.weight",
        "attn_post_norm.weight" => "norm_2.weight",
        "ffn_norm.weight" if retrofitted => "norm_2.weight",
        "ffn_norm.weight" => "norm_3.weight",
        "ffn_post_norm.weight" => "norm_4.weight",
        "attn_qkv.weight" => "attn.Wqkv.weight",
        "attn_output.weight" => "attn.proj.weight",
        "ffn_gate_up.weight" => "mlp.fc.weight",
        "ffn_down.weight" => "mlp.proj.weight",
        other => panic!("unexpected tensor {other}"),
    };
    format!("{block}.{part}")
}

fn f32s(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}

fn encode(vals: &[f32], dtype: Dtype) -> Vec<u8> {
    match dtype {
        Dtype::F32 => vals.iter().flat_map(|v| v.to_le_bytes()).collect(),
        Dtype::F16 => vals
            .iter()
            .flat_map(|&v| half::f16::from_f32(v).to_le_bytes())
            .collect(),
        Dtype::BF16 => vals
            .iter()
            .flat_map(|&v| half::bf16::from_f32(v).to_le_bytes())
            .collect(),
        other => panic!("no encoder for {other:?}"),
    }
}

/// GPT-2's byte-to-character table, written independently of the crate's.
fn gpt2_bytes() -> Vec<char> {
    let mut n = 0;
    (0u32..256)
        .map(|b| {
            let printable = (33..=126).contains(&b) || (161..=172).contains(&b) || b >= 174;
            if printable {
                char::from_u32(b).unwrap()
            } else {
                n += 1;
                char::from_u32(255 + n).unwrap()
            }
        })
        .collect()
}

/// Huginn's special tokens, at the end of the test vocabulary.
const SPECIALS: [&str; 6] = [
    "<|begin_text|>",
    "<|end_text|>",
    "<|begin_header|>",
    "<|end_header|>",
    "<|end_turn|>",
    "<|pad|>",
];

/// A Huginn-style chat template (the turn format of docs/semantics.md, section 5, with the
/// `transformers` `{% generation %}` block of the original).
const HUGINN_STYLE_TEMPLATE: &str = "{% for message in messages %}\
{% set head = '<|begin_header|>' %}\
{% if loop.index0 == 0 %}{% set head = bos_token + head %}{% endif %}\
{% if message['role'] in ['assistant', 'Huginn'] %}{{ head }}Huginn<|end_header|>\n\n\
{% generation %}{{ message['content'] | trim }}<|end_turn|>{% endgeneration %}\
{% else %}{{ head }}{{ message['role'] }}<|end_header|>\n\n{{ message['content'] | trim }}<|end_turn|>{% endif %}\
{% endfor %}\
{% if add_generation_prompt %}<|begin_header|>Huginn<|end_header|>\n\n{% else %}<|end_text|>{% endif %}";

/// A byte-level BPE tokenizer.json with a few merges and Huginn's special
/// tokens, `n_tokens` ids in all (the model's vocabulary may be larger).
fn tokenizer_json() -> String {
    use tokenizers::models::bpe::BPE;
    let bytes = gpt2_bytes();
    let mut vocab: Vec<(String, u32)> = bytes
        .iter()
        .enumerate()
        .map(|(i, c)| (c.to_string(), i as u32))
        .collect();
    let merges = [
        ("Ġ", "t"),
        ("h", "e"),
        ("Ġt", "he"),
        ("i", "n"),
        ("Ġ", "a"),
        ("e", "r"),
    ];
    for (a, b) in merges {
        let id = vocab.len() as u32;
        vocab.push((format!("{a}{b}"), id));
    }
    let mut vocab_map = tokenizers::models::bpe::Vocab::default();
    vocab_map.extend(vocab);
    let merges: Vec<(String, String)> = merges
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
    let bpe = BPE::builder()
        .vocab_and_merges(vocab_map, merges)
        .build()
        .unwrap();
    let mut tok = tokenizers::Tokenizer::new(bpe);
    tok.with_pre_tokenizer(Some(
        tokenizers::pre_tokenizers::byte_level::ByteLevel::new(false, true, true),
    ));
    tok.with_decoder(Some(tokenizers::decoders::byte_level::ByteLevel::default()));
    let specials: Vec<tokenizers::AddedToken> = SPECIALS
        .iter()
        .map(|s| tokenizers::AddedToken::from(*s, true))
        .collect();
    tok.add_special_tokens(&specials);
    tok.to_string(false).unwrap()
}

/// Writes a checkpoint of `spec`'s weights to `dir`; returns the directly
/// written F32 GGUF of the same weights.
fn write_checkpoint(spec: &TestModelSpec, opts: &CkptOptions, dir: &Path) -> PathBuf {
    let direct = dir.join("direct.gguf");
    testmodel::write(spec, &direct).unwrap();
    let gguf = GgufFile::open(&direct).unwrap();
    let (p, c) = (spec.n_prelude, spec.n_core);
    let hd = spec.n_embd / spec.n_head;
    // (name, shape, f32 values)
    let mut tensors: BTreeMap<String, (Vec<usize>, Vec<f32>)> = BTreeMap::new();
    let mut biases: BTreeMap<String, (Vec<f32>, Vec<f32>)> = BTreeMap::new();
    for t in gguf.tensors() {
        let vals = f32s(gguf.tensor_data(t));
        if let Some(n) = t.name.strip_suffix(".attn_q.bias") {
            biases.entry(n.to_string()).or_default().0 = vals;
            continue;
        }
        if let Some(n) = t.name.strip_suffix(".attn_k.bias") {
            biases.entry(n.to_string()).or_default().1 = vals;
            continue;
        }
        let shape: Vec<usize> = t.shape.iter().rev().map(|&d| d as usize).collect();
        tensors.insert(hf_name(&t.name, p, c, spec.retrofitted), (shape, vals));
    }
    for (blk, (q, k)) in biases {
        let name = hf_name(&format!("{blk}.attn_norm.weight"), p, c, spec.retrofitted)
            .replace("norm_1.weight", "attn.qk_bias");
        tensors.insert(name, (vec![2, 1, spec.n_head, hd], [q, k].concat()));
    }
    if opts.duplicate_head {
        let wte = tensors["transformer.wte.weight"].clone();
        tensors.insert("lm_head.weight".into(), wte);
    }
    if opts.freqs_cis {
        let n = spec.n_ctx * hd / 2 * 2;
        tensors.insert(
            "freqs_cis".into(),
            (vec![1, spec.n_ctx, 1, hd / 2, 2], vec![0.5; n]),
        );
    }
    let encoded: Vec<(String, Vec<usize>, Vec<u8>)> = tensors
        .into_iter()
        .map(|(name, (shape, vals))| {
            let dtype = if name == "freqs_cis" {
                Dtype::F32
            } else {
                opts.dtype
            };
            let data = encode(&vals, dtype);
            (name, shape, data)
        })
        .collect();
    let dtype_of = |name: &str| {
        if name == "freqs_cis" {
            Dtype::F32
        } else {
            opts.dtype
        }
    };
    if opts.shards <= 1 {
        let views: Vec<(String, TensorView)> = encoded
            .iter()
            .map(|(n, s, d)| {
                (
                    n.clone(),
                    TensorView::new(dtype_of(n), s.clone(), d).unwrap(),
                )
            })
            .collect();
        safetensors::serialize_to_file(views, None, &dir.join("model.safetensors")).unwrap();
    } else {
        let mut weight_map = serde_json::Map::new();
        let per = encoded.len().div_ceil(opts.shards);
        for (i, chunk) in encoded.chunks(per).enumerate() {
            let file = format!("model-{:05}-of-{:05}.safetensors", i + 1, opts.shards);
            let views: Vec<(String, TensorView)> = chunk
                .iter()
                .map(|(n, s, d)| {
                    (
                        n.clone(),
                        TensorView::new(dtype_of(n), s.clone(), d).unwrap(),
                    )
                })
                .collect();
            safetensors::serialize_to_file(views, None, &dir.join(&file)).unwrap();
            for (n, _, _) in chunk {
                weight_map.insert(n.clone(), json!(file));
            }
        }
        let index = json!({"metadata": {"total_size": 0}, "weight_map": weight_map});
        std::fs::write(dir.join("model.safetensors.index.json"), index.to_string()).unwrap();
    }
    let config = json!({
        "architectures": ["RavenForCausalLM"],
        "model_type": "huginn_raven",
        "name": "tiny-huginn",
        "n_embd": spec.n_embd,
        "n_heads": spec.n_head,
        "num_key_value_heads": spec.n_head_kv,
        "n_layers": p + c + spec.n_coda,
        "block_size": spec.n_ctx,
        "vocab_size": spec.n_vocab,
        "padding_multiple": 4096,
        "tie_embeddings": opts.tie_in_config.unwrap_or(spec.tied),
        "intermediate_size": spec.n_ff,
        "bias": false,
        "block_class_name": "SandwichBlock",
        "norm_class_name": "RMSNorm_llama",
        "norm_eps": spec.norm_eps,
        "mlp_class_name": "GatedMLP",
        "nonlin_name": "SiLU",
        "injection_type": "linear",
        "n_layers_in_recurrent_block": c,
        "mean_recurrence": spec.default_iterations,
        "n_layers_in_prelude": p,
        "n_layers_in_coda": spec.n_coda,
        "qk_bias": spec.qk_bias,
        "rope_base": spec.rope_base,
        "torch_dtype": "float32",
    });
    let config = if spec.retrofitted {
        // As the retrofitting scripts write it: Huginn-0125's configuration
        // with the source model's shapes, `rope_theta` (their `rope_base` is
        // a leftover the modeling code does not read) and `init_values`.
        let mut c = config;
        c["rope_base"] = json!(500000.0);
        c["rope_theta"] = json!(spec.rope_base);
        c["init_values"] = json!({"std": 0.008_703_883, "embed_scale": 1.0});
        if let Some(rs) = &opts.rope_scaling {
            c["rope_scaling"] = rs.clone();
        }
        c
    } else {
        config
    };
    std::fs::write(
        dir.join("config.json"),
        serde_json::to_string_pretty(&config).unwrap(),
    )
    .unwrap();
    std::fs::write(dir.join("tokenizer.json"), tokenizer_json()).unwrap();
    let tok_config = json!({
        "bos_token": "<|begin_text|>",
        "eos_token": {"content": "<|end_text|>"},
        "pad_token": "<|pad|>",
        "add_bos_token": true,
        "chat_template": HUGINN_STYLE_TEMPLATE,
    });
    std::fs::write(dir.join("tokenizer_config.json"), tok_config.to_string()).unwrap();
    direct
}

fn run_convert(dir: &Path, ty: GgmlType) -> Result<(PathBuf, convert::ConvertReport), Error> {
    let out = dir.join(format!("out-{}.gguf", ty.name()));
    let opts = ConvertOptions {
        out_type: ty,
        ..ConvertOptions::default()
    };
    let mut last = 0u64;
    let report = convert::convert(dir, &out, &opts, &mut |p| {
        assert!(p.bytes_done >= last && p.bytes_done <= p.bytes_total);
        last = p.bytes_done;
    })?;
    Ok((out, report))
}

const TOKENS: [u32; 7] = [1, 17, 250, 3, 99, 42, 7];

fn logits(path: &Path, iterations: usize) -> Vec<f32> {
    let model = Arc::new(Model::load(path, &LoadParams::default()).unwrap());
    let mut s = Session::new(model, &SessionParams::default()).unwrap();
    s.eval_all_logits(&TOKENS, iterations).unwrap()
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// Max |a - b| relative to the range of `a`, the measure of `tests/golden.rs`.
fn rel_err(a: &[f32], b: &[f32]) -> f32 {
    let hi = a.iter().copied().fold(f32::MIN, f32::max);
    let lo = a.iter().copied().fold(f32::MAX, f32::min);
    max_abs_diff(a, b) / (hi - lo)
}

#[test]
fn f32_conversion_matches_direct_gguf_tied_and_untied() {
    for tied in [true, false] {
        let dir = temp_dir(&format!("f32-tied-{tied}"));
        let spec = small_spec(tied);
        let direct = write_checkpoint(&spec, &CkptOptions::default(), &dir);
        let (out, report) = run_convert(&dir, GgmlType::F32).unwrap();
        let expected_head = if tied {
            HeadDecision::Tied
        } else {
            HeadDecision::Separate
        };
        assert_eq!(report.head, Some(expected_head));
        assert!(report.dropped.iter().any(|(n, _)| n == "freqs_cis"));
        // Same tensors, same data, same order as the maker's file.
        let (a, b) = (
            GgufFile::open(&direct).unwrap(),
            GgufFile::open(&out).unwrap(),
        );
        let names = |f: &GgufFile| {
            f.tensors()
                .iter()
                .map(|t| t.name.clone())
                .collect::<Vec<_>>()
        };
        assert_eq!(names(&a), names(&b));
        for t in a.tensors() {
            let u = b.tensor(&t.name).unwrap();
            assert_eq!((u.ty, &u.shape), (t.ty, &t.shape), "{}", t.name);
            assert!(a.tensor_data(t) == b.tensor_data(u), "data of {}", t.name);
        }
        for key in [
            "huginn.context_length",
            "huginn.embedding_length",
            "huginn.feed_forward_length",
            "huginn.block_count",
            "huginn.prelude_block_count",
            "huginn.core_block_count",
            "huginn.coda_block_count",
            "huginn.attention.head_count",
            "huginn.attention.head_count_kv",
            "huginn.attention.key_length",
            "huginn.attention.layer_norm_rms_epsilon",
            "huginn.rope.freq_base",
            "huginn.rope.pairing",
            "huginn.block_type",
            "huginn.embedding_scale",
            "huginn.recurrence.default",
            "huginn.recurrence.state_init_std",
            "huginn.norm_after_recurrence",
        ] {
            assert_eq!(a.get(key), b.get(key), "{key}");
        }
        assert_eq!(b.get_str("general.name").unwrap(), Some("tiny-huginn"));
        // And so the same logits, at several iteration counts.
        for iters in [1, 4] {
            let (x, y) = (logits(&direct, iters), logits(&out, iters));
            assert_eq!(max_abs_diff(&x, &y), 0.0, "tied {tied}, {iters} iterations");
        }
    }
}

#[test]
fn retrofitted_checkpoint_converts_to_prenorm() {
    for tied in [false, true] {
        let dir = temp_dir(&format!("retro-tied-{tied}"));
        let spec = TestModelSpec {
            retrofitted: true,
            qk_bias: false,
            n_head: 4,
            n_head_kv: 2,
            ..small_spec(tied)
        };
        let direct = write_checkpoint(&spec, &CkptOptions::default(), &dir);
        let (out, _) = run_convert(&dir, GgmlType::F32).unwrap();
        let (a, b) = (
            GgufFile::open(&direct).unwrap(),
            GgufFile::open(&out).unwrap(),
        );
        assert_eq!(a.tensors().len(), b.tensors().len());
        for t in a.tensors() {
            let u = b.tensor(&t.name).unwrap();
            assert_eq!((u.ty, &u.shape), (t.ty, &t.shape), "{}", t.name);
            assert!(a.tensor_data(t) == b.tensor_data(u), "data of {}", t.name);
        }
        for key in [
            "huginn.rope.freq_base",
            "huginn.rope.pairing",
            "huginn.block_type",
            "huginn.embedding_scale",
            "huginn.recurrence.state_init_std",
            "huginn.norm_after_recurrence",
            "huginn.attention.head_count_kv",
        ] {
            assert_eq!(a.get(key), b.get(key), "{key}");
        }
        assert_eq!(b.get_str("huginn.block_type").unwrap(), Some("prenorm"));
        for iters in [1, 4] {
            let (x, y) = (logits(&direct, iters), logits(&out, iters));
            assert_eq!(max_abs_diff(&x, &y), 0.0, "tied {tied}, {iters} iterations");
        }
    }
}

/// The Hugging Face name of a tensor of an `ouro` GGUF.
fn ouro_hf_name(gguf: &str) -> String {
    let fixed = [
        ("token_embd.weight", "model.embed_tokens.weight"),
        ("output.weight", "lm_head.weight"),
        ("output_norm.weight", "model.norm.weight"),
        ("exit_gate.weight", "model.early_exit_gate.weight"),
        ("exit_gate.bias", "model.early_exit_gate.bias"),
    ];
    if let Some((_, hf)) = fixed.iter().find(|(g, _)| *g == gguf) {
        return hf.to_string();
    }
    let rest = gguf.strip_prefix("blk.").unwrap();
    let (n, what) = rest.split_once('.').unwrap();
    let part = match what {
        "attn_norm.weight" => "input_layernorm.weight",
        "attn_q.weight" => "self_attn.q_proj.weight",
        "attn_k.weight" => "self_attn.k_proj.weight",
        "attn_v.weight" => "self_attn.v_proj.weight",
        "attn_output.weight" => "self_attn.o_proj.weight",
        "attn_post_norm.weight" => "input_layernorm_2.weight",
        "ffn_norm.weight" => "post_attention_layernorm.weight",
        "ffn_gate.weight" => "mlp.gate_proj.weight",
        "ffn_up.weight" => "mlp.up_proj.weight",
        "ffn_down.weight" => "mlp.down_proj.weight",
        "ffn_post_norm.weight" => "post_attention_layernorm_2.weight",
        other => panic!("unexpected tensor {other}"),
    };
    format!("model.layers.{n}.{part}")
}

#[test]
fn ouro_checkpoint_converts() {
    for tied in [false, true] {
        let dir = temp_dir(&format!("ouro-tied-{tied}"));
        let spec = TestModelSpec {
            ouro: true,
            n_prelude: 0,
            n_core: 3,
            n_coda: 0,
            n_head: 4,
            n_head_kv: 2,
            qk_bias: false,
            default_iterations: 4,
            ..small_spec(tied)
        };
        let direct = dir.join("direct.gguf");
        testmodel::write(&spec, &direct).unwrap();
        let gguf = GgufFile::open(&direct).unwrap();
        let views: Vec<(String, Vec<usize>, Vec<u8>)> = gguf
            .tensors()
            .iter()
            .map(|t| {
                let mut shape: Vec<usize> = t.shape.iter().rev().map(|&d| d as usize).collect();
                if t.name == "exit_gate.weight" {
                    shape.insert(0, 1); // nn.Linear(hidden, 1): (1, hidden)
                }
                let vals = f32s(gguf.tensor_data(t));
                (ouro_hf_name(&t.name), shape, encode(&vals, Dtype::BF16))
            })
            .collect();
        let tensors: Vec<(String, TensorView)> = views
            .iter()
            .map(|(n, s, d)| {
                (
                    n.clone(),
                    TensorView::new(Dtype::BF16, s.clone(), d).unwrap(),
                )
            })
            .collect();
        safetensors::serialize_to_file(tensors, None, &dir.join("model.safetensors")).unwrap();
        let config = json!({
            "architectures": ["OuroForCausalLM"],
            "model_type": "ouro",
            "hidden_size": spec.n_embd,
            "num_hidden_layers": spec.n_core,
            "num_attention_heads": spec.n_head,
            "num_key_value_heads": spec.n_head_kv,
            "intermediate_size": spec.n_ff,
            "hidden_act": "silu",
            "rms_norm_eps": spec.norm_eps,
            "vocab_size": spec.n_vocab,
            "max_position_embeddings": spec.n_ctx,
            "rope_theta": spec.rope_base,
            "rope_scaling": null,
            "tie_word_embeddings": tied,
            "total_ut_steps": 4,
            "early_exit_threshold": 1.0,
            "torch_dtype": "bfloat16",
        });
        std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
        let (out, report) = run_convert(&dir, GgmlType::F32).unwrap();
        let expected_head = if tied {
            HeadDecision::Tied
        } else {
            HeadDecision::Separate
        };
        assert_eq!(report.head, Some(expected_head));
        let b = GgufFile::open(&out).unwrap();
        assert_eq!(gguf.tensors().len(), b.tensors().len());
        for key in [
            "general.architecture",
            "ouro.context_length",
            "ouro.embedding_length",
            "ouro.feed_forward_length",
            "ouro.block_count",
            "ouro.attention.head_count",
            "ouro.attention.head_count_kv",
            "ouro.attention.layer_norm_rms_epsilon",
            "ouro.rope.freq_base",
            "ouro.loop_count",
        ] {
            assert_eq!(gguf.get(key), b.get(key), "{key}");
        }
        // Widened from BF16: equal to the direct file's values rounded to BF16.
        for t in gguf.tensors() {
            let u = b.tensor(&t.name).unwrap();
            assert_eq!((u.ty, &u.shape), (t.ty, &t.shape), "{}", t.name);
            let want: Vec<f32> = f32s(gguf.tensor_data(t))
                .iter()
                .map(|&v| half::bf16::from_f32(v).to_f32())
                .collect();
            assert_eq!(f32s(b.tensor_data(u)), want, "data of {}", t.name);
        }
        // The converted model runs, with its exit gate.
        let m = Model::load(&out, &LoadParams::default()).unwrap();
        assert!(m.exit_gate().is_some());
        assert_eq!(m.config().default_iterations, 4);
        let x = logits(&out, 4);
        assert!(x.iter().all(|v| v.is_finite()));
    }
}

#[test]
fn retrofitted_llama3_rope_scaling() {
    let dir = temp_dir("retro-llama3");
    let spec = TestModelSpec {
        retrofitted: true,
        qk_bias: false,
        n_embd: 128,
        n_head: 4,
        n_head_kv: 2,
        ..small_spec(false)
    };
    // With head_dim 32, base 50000 and an original context of 256, pairs 0-3
    // keep their frequency, 4-5 are interpolated and 6-15 divided by 8.
    let opts = CkptOptions {
        rope_scaling: Some(json!({
            "rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
            "high_freq_factor": 4.0, "original_max_position_embeddings": 256
        })),
        ..CkptOptions::default()
    };
    write_checkpoint(&spec, &opts, &dir);
    let (out, _) = run_convert(&dir, GgmlType::F32).unwrap();
    let f = GgufFile::open(&out).unwrap();
    let t = f.tensor("rope_freqs.weight").unwrap();
    assert_eq!(t.shape, vec![16]);
    let got = f32s(f.tensor_data(t));
    for (i, &g) in got.iter().enumerate() {
        let freq = 50000f64.powf(-2.0 * i as f64 / 32.0);
        let wavelen = 2.0 * std::f64::consts::PI / freq;
        let want = if wavelen < 64.0 {
            1.0
        } else if wavelen > 256.0 {
            8.0
        } else {
            let smooth = (256.0 / wavelen - 1.0) / 3.0;
            1.0 / ((1.0 - smooth) / 8.0 + smooth)
        };
        assert!((g as f64 - want).abs() < 1e-5, "pair {i}: {g} vs {want}");
    }
    assert_eq!(got[..4], [1.0; 4]);
    assert!(got[4] > 1.0 && got[5] < 8.0 && got[4] < got[5]);
    assert_eq!(got[6..], [8.0; 10]);
    // The runtime applies them as the independent reference does.
    let prompt = [1u32, 17, 250, 3, 99, 42, 7, 11, 12, 13];
    for r in [1, 4] {
        let (want, _) = recurrent_depth_reference(&out, &prompt, r);
        let model = Arc::new(Model::load(&out, &LoadParams::default()).unwrap());
        let params = SessionParams {
            kv_budget: r,
            ..SessionParams::default()
        };
        let got = Session::new(model, &params)
            .unwrap()
            .eval_all_logits(&prompt, r)
            .unwrap();
        let err = rel_err(&want, &got);
        assert!(err < 1e-4, "{r} iterations: {err:.3e}");
    }
}

/// The independent reference's logits for `prompt` (one chunk, `r` steps, B = r).
fn recurrent_depth_reference(model: &Path, prompt: &[u32], r: usize) -> (Vec<f32>, Vec<u32>) {
    let ids: Vec<String> = prompt.iter().map(|t| t.to_string()).collect();
    let out = dir_file(model, "ref.npy");
    let script = format!(
        "import sys, numpy as np\nsys.path.insert(0, 'tools')\nimport reference as r\n\
         m = r.Model({model:?})\nl, t, _, _ = r.run(m, [{}], {r}, {r})\n\
         np.save({out:?}, l.astype(np.float32))\n",
        ids.join(",")
    );
    let run = std::process::Command::new("python3")
        .arg("-c")
        .arg(&script)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let a: recurrent_depth::npy::NpyArray<f32> =
        recurrent_depth::npy::read(&std::fs::read(&out).unwrap()).unwrap();
    (a.data, prompt.to_vec())
}

fn dir_file(p: &Path, name: &str) -> PathBuf {
    p.parent().unwrap().join(name)
}

#[test]
fn half_precision_sources_are_widened_exactly() {
    for dtype in [Dtype::BF16, Dtype::F16] {
        let dir = temp_dir(&format!("src-{dtype:?}"));
        let spec = small_spec(true);
        let opts = CkptOptions {
            dtype,
            ..CkptOptions::default()
        };
        let direct = write_checkpoint(&spec, &opts, &dir);
        let (out, _) = run_convert(&dir, GgmlType::F32).unwrap();
        let (a, b) = (
            GgufFile::open(&direct).unwrap(),
            GgufFile::open(&out).unwrap(),
        );
        for t in a.tensors() {
            let want: Vec<f32> = f32s(a.tensor_data(t))
                .into_iter()
                .map(|v| match dtype {
                    Dtype::BF16 => half::bf16::from_f32(v).to_f32(),
                    _ => half::f16::from_f32(v).to_f32(),
                })
                .collect();
            assert_eq!(
                f32s(b.tensor_data(b.tensor(&t.name).unwrap())),
                want,
                "{}",
                t.name
            );
        }
        // BF16 output from a BF16 checkpoint keeps the bits.
        if dtype == Dtype::BF16 {
            let (out16, _) = run_convert(&dir, GgmlType::BF16).unwrap();
            let c = GgufFile::open(&out16).unwrap();
            let t = c.tensor("blk.0.attn_qkv.weight").unwrap();
            assert_eq!(t.ty, GgmlType::BF16);
            let raw = c.tensor_data(t);
            let src = a.tensor("blk.0.attn_qkv.weight").unwrap();
            let want = encode(&f32s(a.tensor_data(src)), Dtype::BF16);
            assert!(raw == &want[..]);
        }
    }
}

#[test]
fn every_type_converts_and_runs() {
    for (spec, name) in [(small_spec(true), "small"), (k_spec(false), "kquant")] {
        let dir = temp_dir(&format!("types-{name}"));
        let direct = write_checkpoint(
            &spec,
            &CkptOptions {
                dtype: Dtype::BF16,
                ..CkptOptions::default()
            },
            &dir,
        );
        let (f32_out, _) = run_convert(&dir, GgmlType::F32).unwrap();
        let reference = logits(&f32_out, 4);
        // The direct file is f32 (not rounded to bf16): close, not equal.
        assert!(rel_err(&reference, &logits(&direct, 4)) < 2e-2);
        for ty in convert::OUTPUT_TYPES {
            let (out, report) = run_convert(&dir, ty).unwrap();
            let file = GgufFile::open(&out).unwrap();
            for t in file.tensors() {
                if t.shape.len() == 1 {
                    assert_eq!(t.ty, GgmlType::F32, "{}", t.name);
                }
            }
            let qkv = file.tensor("blk.0.attn_qkv.weight").unwrap();
            let down = file.tensor("blk.0.ffn_down.weight").unwrap();
            if name == "kquant" || ty.block_size() == 32 || !ty.is_quantized() {
                assert_eq!(qkv.ty, ty, "{name} {ty}");
            } else {
                // Rows of 64 are not whole K-quant blocks.
                assert_ne!(qkv.ty, ty);
                assert!(report.fallbacks().any(|t| t.name == qkv.name));
            }
            assert!(
                down.ty == ty || name == "small",
                "{name} {ty} {:?}",
                down.ty
            );
            if name == "kquant" {
                let head = file.tensor("output.weight").unwrap();
                assert_eq!(head.ty, convert::head_type(ty), "head for {ty}");
            }
            let got = logits(&out, 4);
            let err = rel_err(&reference, &got);
            // Quantized weights against F32 weights (ggml also rounds the
            // activations to the weights' dot-product type). Measured on these
            // models (max over 7 positions x 300 logits): F16 1e-3, BF16 1e-2,
            // Q8_0 2-3.5e-2, Q6_K 4.4e-2, 5-bit 8-14e-2, 4-bit 1-3.8e-1. The
            // name mapping itself is checked exactly by the F32 test.
            let tolerance = match ty {
                GgmlType::F32 => 0.0,
                GgmlType::F16 => 2e-3,
                GgmlType::BF16 => 1.5e-2,
                GgmlType::Q8_0 | GgmlType::Q6_K => 6e-2,
                GgmlType::Q5_K | GgmlType::Q5_1 | GgmlType::Q5_0 => 0.2,
                _ => 0.45,
            };
            eprintln!("{name} {ty}: max |logit error| / logit range = {err:.4}");
            assert!(err <= tolerance, "{name} {ty}: error {err} > {tolerance}");
        }
    }
}

#[test]
fn sharded_checkpoint_matches_single_file() {
    let spec = small_spec(false);
    let single = temp_dir("single");
    write_checkpoint(&spec, &CkptOptions::default(), &single);
    let sharded = temp_dir("sharded");
    write_checkpoint(
        &spec,
        &CkptOptions {
            shards: 3,
            ..CkptOptions::default()
        },
        &sharded,
    );
    assert!(!sharded.join("model.safetensors").exists());
    let (a, _) = run_convert(&single, GgmlType::Q8_0).unwrap();
    let (b, _) = run_convert(&sharded, GgmlType::Q8_0).unwrap();
    assert_eq!(std::fs::read(a).unwrap(), std::fs::read(b).unwrap());
}

#[test]
fn duplicated_and_config_tied_heads_are_dropped() {
    // Untied in config but lm_head == wte: stored tied.
    let dir = temp_dir("dup-head");
    let spec = small_spec(true);
    let opts = CkptOptions {
        duplicate_head: true,
        tie_in_config: Some(false),
        ..CkptOptions::default()
    };
    let direct = write_checkpoint(&spec, &opts, &dir);
    let (out, report) = run_convert(&dir, GgmlType::F32).unwrap();
    assert_eq!(report.head, Some(HeadDecision::DroppedDuplicate));
    assert!(
        GgufFile::open(&out)
            .unwrap()
            .tensor("output.weight")
            .is_none()
    );
    assert_eq!(max_abs_diff(&logits(&direct, 2), &logits(&out, 2)), 0.0);

    // Tied in config with a copy stored: dropped.
    let dir = temp_dir("tied-copy");
    let opts = CkptOptions {
        duplicate_head: true,
        ..CkptOptions::default()
    };
    write_checkpoint(&spec, &opts, &dir);
    let (out, report) = run_convert(&dir, GgmlType::F16).unwrap();
    assert_eq!(
        report.head,
        Some(HeadDecision::TiedByConfig { identical: true })
    );
    assert!(report.dropped.iter().any(|(n, _)| n == "lm_head.weight"));
    assert!(
        GgufFile::open(&out)
            .unwrap()
            .tensor("output.weight")
            .is_none()
    );

    // Untied in config and no lm_head: an error naming it.
    let dir = temp_dir("no-head");
    let opts = CkptOptions {
        tie_in_config: Some(false),
        ..CkptOptions::default()
    };
    write_checkpoint(&spec, &opts, &dir);
    let err = run_convert(&dir, GgmlType::F16).unwrap_err().to_string();
    assert!(err.contains("missing tensor `lm_head.weight"), "{err}");
}

#[test]
fn tokenizer_and_chat_template_are_stored() {
    let dir = temp_dir("tokenizer");
    let spec = small_spec(true);
    write_checkpoint(&spec, &CkptOptions::default(), &dir);
    let (out, report) = run_convert(&dir, GgmlType::Q8_0).unwrap();
    let summary = report.tokenizer.unwrap();
    assert!(summary.ggml_keys && summary.chat_template);
    assert_eq!(summary.pre.as_deref(), Some("gpt-2"));
    let n_real = 256 + 6 + SPECIALS.len();
    assert_eq!(summary.n_tokens, n_real);
    let file = GgufFile::open(&out).unwrap();
    assert_eq!(file.get_str("tokenizer.ggml.model").unwrap(), Some("gpt2"));
    let tokens = file.require_array("tokenizer.ggml.tokens").unwrap();
    assert_eq!(tokens.len(), spec.n_vocab);
    assert_eq!(
        tokens[n_real].as_str(),
        Some(format!("[PAD{n_real}]").as_str())
    );
    assert_eq!(
        file.require_array("tokenizer.ggml.merges").unwrap().len(),
        6
    );
    let bos = n_real - 6;
    assert_eq!(
        file.get_u32("tokenizer.ggml.bos_token_id").unwrap(),
        Some(bos as u32)
    );
    assert_eq!(
        file.get_u32("tokenizer.ggml.eos_token_id").unwrap(),
        Some(bos as u32 + 1)
    );
    assert_eq!(
        file.get_u32("tokenizer.ggml.eot_token_id").unwrap(),
        Some(bos as u32 + 4)
    );
    assert_eq!(
        file.get_u32("tokenizer.ggml.padding_token_id").unwrap(),
        Some(bos as u32 + 5)
    );
    assert_eq!(
        file.get_bool("tokenizer.ggml.add_bos_token").unwrap(),
        Some(true)
    );
    assert_eq!(
        file.get_str("tokenizer.huggingface.json").unwrap(),
        Some(
            std::fs::read_to_string(dir.join("tokenizer.json"))
                .unwrap()
                .as_str()
        )
    );
    let types = file.require_array("tokenizer.ggml.token_type").unwrap();
    assert_eq!(types[bos].as_i128(), Some(3));
    assert_eq!(types[0].as_i128(), Some(1));
    assert_eq!(types[n_real].as_i128(), Some(5));

    // Both tokenizer paths agree on the converted file.
    let tok = Tokenizer::from_gguf(&file).unwrap();
    let text = "<|begin_header|>user<|end_header|>\n\nthe inner the\u{e9}\u{1F600}<|end_turn|>";
    let ids = tok.encode(text, true, true).unwrap();
    assert_eq!(ids[0], bos as u32);
    assert_eq!(ids[1], bos as u32 + 2);
    assert_eq!(tok.decode(&ids[1..], false), text);
    let mut keys_only = recurrent_depth::gguf::GgufWriter::new();
    for (k, v) in file.metadata() {
        if k != "tokenizer.huggingface.json" {
            keys_only.add_kv(k.clone(), v.clone()).unwrap();
        }
    }
    let keys_file = GgufFile::from_bytes(keys_only.to_bytes().unwrap()).unwrap();
    let tok2 = Tokenizer::from_gguf(&keys_file).unwrap();
    assert_eq!(
        tok2.source(),
        recurrent_depth::tokenizer::TokenizerSource::GgmlKeys
    );
    assert_eq!(tok2.encode(text, true, true).unwrap(), ids);

    // The chat template renders the turn format of docs/semantics.md, section 5.
    let template = ChatTemplate::from_gguf(&file).unwrap().unwrap();
    let msgs = [ChatMessage::new("user", "Hi!")];
    let tokens = TemplateTokens {
        bos: "<|begin_text|>".into(),
        eos: "<|end_text|>".into(),
    };
    assert_eq!(
        template.render(&msgs, true, &tokens).unwrap(),
        "<|begin_text|><|begin_header|>user<|end_header|>\n\nHi!<|end_turn|><|begin_header|>Huginn<|end_header|>\n\n"
    );
}

#[test]
fn requantize_matches_direct_conversion() {
    let dir = temp_dir("requantize");
    let spec = k_spec(true);
    write_checkpoint(&spec, &CkptOptions::default(), &dir);
    let (f32_out, _) = run_convert(&dir, GgmlType::F32).unwrap();
    for ty in [GgmlType::Q8_0, GgmlType::Q4_K, GgmlType::F16] {
        let (direct, _) = run_convert(&dir, ty).unwrap();
        let requant = dir.join(format!("requant-{}.gguf", ty.name()));
        let report = convert::requantize(&f32_out, &requant, ty, 2, &mut |_| {}).unwrap();
        assert!(report.notes.is_empty());
        let (a, b) = (
            GgufFile::open(&direct).unwrap(),
            GgufFile::open(&requant).unwrap(),
        );
        assert_eq!(a.tensors(), b.tensors());
        for t in a.tensors() {
            assert!(a.tensor_data(t) == b.tensor_data(t), "{} {ty}", t.name);
        }
    }
    // From a quantized file: decoded by ggml, re-encoded, noted.
    let (q8, _) = run_convert(&dir, GgmlType::Q8_0).unwrap();
    let out = dir.join("q8-to-q4k.gguf");
    let report = convert::requantize(&q8, &out, GgmlType::Q4_K, 0, &mut |_| {}).unwrap();
    assert!(!report.notes.is_empty());
    let reference = logits(&f32_out, 3);
    let err = rel_err(&reference, &logits(&out, 3));
    assert!(err < 0.2, "{err}");
    // Input of another architecture is refused.
    let bad = dir.join("not-huginn.gguf");
    let mut w = recurrent_depth::gguf::GgufWriter::new();
    w.add_kv("general.architecture", "gpt2").unwrap();
    w.write_to_file(&bad).unwrap();
    let err = convert::requantize(&bad, &out, GgmlType::Q4_K, 0, &mut |_| {}).unwrap_err();
    assert!(
        err.to_string().contains("not huginn, ouro or llama"),
        "{err}"
    );
}

/// Converts after `edit` damaged a fresh checkpoint; returns the error text.
fn broken(name: &str, edit: impl FnOnce(&Path)) -> String {
    let dir = temp_dir(&format!("broken-{name}"));
    write_checkpoint(&small_spec(true), &CkptOptions::default(), &dir);
    edit(&dir);
    let out = dir.join("out.gguf");
    let err = convert::convert(&dir, &out, &ConvertOptions::default(), &mut |_| {}).unwrap_err();
    assert!(!out.exists(), "{name}: output left behind");
    let mut partial = out.into_os_string();
    partial.push(".partial");
    assert!(
        !Path::new(&partial).exists(),
        "{name}: partial output left behind"
    );
    err.to_string()
}

/// Rewrites the single-file checkpoint with `f` applied to its tensors.
fn rewrite_tensors(
    dir: &Path,
    f: impl FnOnce(&mut BTreeMap<String, (Dtype, Vec<usize>, Vec<u8>)>),
) {
    let path = dir.join("model.safetensors");
    let bytes = std::fs::read(&path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut map: BTreeMap<String, (Dtype, Vec<usize>, Vec<u8>)> = st
        .tensors()
        .into_iter()
        .map(|(n, v)| (n, (v.dtype(), v.shape().to_vec(), v.data().to_vec())))
        .collect();
    f(&mut map);
    let views: Vec<(String, TensorView)> = map
        .iter()
        .map(|(n, (d, s, b))| (n.clone(), TensorView::new(*d, s.clone(), b).unwrap()))
        .collect();
    safetensors::serialize_to_file(views, None, &path).unwrap();
}

#[test]
fn broken_checkpoints_give_clear_errors() {
    let e = broken("no-config", |d| {
        std::fs::remove_file(d.join("config.json")).unwrap()
    });
    assert!(e.contains("config.json: not found"), "{e}");
    let e = broken("no-weights", |d| {
        std::fs::remove_file(d.join("model.safetensors")).unwrap()
    });
    assert!(e.contains("model.safetensors: not found"), "{e}");
    let e = broken("bad-config", |d| {
        std::fs::write(d.join("config.json"), r#"{"n_embd": 64, "n_heads": 2}"#).unwrap()
    });
    assert!(e.contains("`intermediate_size`: missing"), "{e}");
    let e = broken("odd-heads", |d| {
        let mut c: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(d.join("config.json")).unwrap()).unwrap();
        c["n_heads"] = json!(3);
        std::fs::write(d.join("config.json"), c.to_string()).unwrap();
    });
    assert!(e.contains("`n_heads`"), "{e}");
    let e = broken("truncated", |d| {
        let p = d.join("model.safetensors");
        let bytes = std::fs::read(&p).unwrap();
        std::fs::write(&p, &bytes[..bytes.len() - 100]).unwrap();
    });
    assert!(e.contains("invalid safetensors file"), "{e}");
    let e = broken("garbage", |d| {
        std::fs::write(
            d.join("model.safetensors"),
            b"\x10\0\0\0\0\0\0\0{not json}......",
        )
        .unwrap()
    });
    assert!(e.contains("invalid safetensors file"), "{e}");
    let e = broken("missing-tensor", |d| {
        rewrite_tensors(d, |m| {
            m.remove("transformer.core_block.1.mlp.fc.weight");
        })
    });
    assert!(
        e.contains("missing tensor `transformer.core_block.1.mlp.fc.weight`"),
        "{e}"
    );
    let e = broken("unknown-tensor", |d| {
        rewrite_tensors(d, |m| {
            m.insert(
                "transformer.core_block.9.norm_1.weight".into(),
                (Dtype::F32, vec![64], vec![0; 256]),
            );
        })
    });
    assert!(
        e.contains("unknown tensor `transformer.core_block.9.norm_1.weight`"),
        "{e}"
    );
    let e = broken("wrong-shape", |d| {
        rewrite_tensors(d, |m| {
            let t = m.get_mut("transformer.adapter.weight").unwrap();
            t.1 = vec![128, 64];
        })
    });
    assert!(
        e.contains("`transformer.adapter.weight` has shape [128, 64], expected [64, 128]"),
        "{e}"
    );
    let e = broken("int-dtype", |d| {
        rewrite_tensors(d, |m| {
            m.get_mut("transformer.ln_f.weight").unwrap().0 = Dtype::I32;
        })
    });
    assert!(e.contains("unsupported dtype I32"), "{e}");
    let e = broken("nan", |d| {
        rewrite_tensors(d, |m| {
            m.get_mut("transformer.ln_f.weight").unwrap().2[..4]
                .copy_from_slice(&f32::NAN.to_le_bytes());
        })
    });
    assert!(e.contains("NaN"), "{e}");
    let e = broken("bad-tokenizer", |d| {
        std::fs::write(d.join("tokenizer.json"), "{}").unwrap()
    });
    assert!(e.contains("tokenizer"), "{e}");

    // Sharded: a missing shard, an index that lies, a path outside the directory.
    let sharded = |name: &str, edit: &dyn Fn(&Path)| {
        let dir = temp_dir(&format!("broken-sharded-{name}"));
        write_checkpoint(
            &small_spec(true),
            &CkptOptions {
                shards: 2,
                ..CkptOptions::default()
            },
            &dir,
        );
        edit(&dir);
        convert::convert(
            &dir,
            &dir.join("o.gguf"),
            &ConvertOptions::default(),
            &mut |_| {},
        )
        .unwrap_err()
        .to_string()
    };
    let e = sharded("missing", &|d| {
        std::fs::remove_file(d.join("model-00002-of-00002.safetensors")).unwrap()
    });
    assert!(
        e.contains("model-00002-of-00002.safetensors: not found"),
        "{e}"
    );
    let edit_index = |d: &Path, f: &dyn Fn(&mut serde_json::Value)| {
        let p = d.join("model.safetensors.index.json");
        let mut v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
        f(&mut v);
        std::fs::write(&p, v.to_string()).unwrap();
    };
    let e = sharded("lying", &|d| {
        edit_index(d, &|v| {
            v["weight_map"]["transformer.ln_f.weight"] = json!("model-00001-of-00002.safetensors");
            v["weight_map"]["freqs_cis"] = json!("model-00002-of-00002.safetensors");
        })
    });
    assert!(e.contains("is listed in"), "{e}");
    let e = sharded("escape", &|d| {
        edit_index(d, &|v| {
            v["weight_map"]["freqs_cis"] = json!("../x.safetensors")
        })
    });
    assert!(e.contains("not a file name inside"), "{e}");
    let e = sharded("not-json", &|d| {
        std::fs::write(d.join("model.safetensors.index.json"), "[").unwrap()
    });
    assert!(e.contains("invalid JSON"), "{e}");

    // The typed error is reachable.
    let dir = temp_dir("typed");
    let err = convert::convert(
        &dir,
        &dir.join("o.gguf"),
        &ConvertOptions::default(),
        &mut |_| {},
    )
    .unwrap_err();
    assert!(
        matches!(err, Error::Convert(ConvertError::MissingFile { .. })),
        "{err:?}"
    );
    assert!(convert::parse_type("q2_k").is_err() && convert::parse_type("Q4_K").is_ok());
}

#[cfg(feature = "cli")]
#[test]
fn cli_convert_then_run_prompt() {
    use std::process::Command;
    let dir = temp_dir("cli");
    write_checkpoint(
        &small_spec(true),
        &CkptOptions {
            dtype: Dtype::BF16,
            ..CkptOptions::default()
        },
        &dir,
    );
    let rd = env!("CARGO_BIN_EXE_rd");
    for ty in ["q8_0", "q4_k"] {
        let out = dir.join(format!("m-{ty}.gguf"));
        let o = Command::new(rd)
            .args([
                "convert",
                dir.to_str().unwrap(),
                out.to_str().unwrap(),
                "--type",
                ty,
                "--quiet",
            ])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&o.stderr);
        assert!(o.status.success(), "{stderr}");
        assert!(stderr.contains("wrote"), "{stderr}");
        let o = Command::new(rd)
            .args([
                "run",
                "-m",
                out.to_str().unwrap(),
                "--prompt",
                "the answer is",
                "--max-tokens",
                "5",
                "--json",
            ])
            .args(["--iterations", "3"])
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&o.stdout);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let lines: Vec<&str> = stdout.lines().collect();
        assert!(lines.len() >= 2, "{stdout}");
        let first: serde_json::Value = serde_json::from_str(lines[0]).unwrap();
        assert!(first["text"].is_string(), "{stdout}");
        assert!(
            lines.last().unwrap().contains("\"prompt_tokens\":11"),
            "{stdout}"
        );
        let o = Command::new(rd)
            .args([
                "tokenize",
                "-m",
                out.to_str().unwrap(),
                "--add-special",
                "the answer",
            ])
            .output()
            .unwrap();
        assert!(o.status.success());
        let stdout = String::from_utf8_lossy(&o.stdout);
        assert!(
            stdout.lines().last().unwrap().starts_with("262,"),
            "{stdout}"
        );
    }
    let o = Command::new(rd)
        .args([
            "convert",
            dir.to_str().unwrap(),
            "/nonexistent-dir/x.gguf",
            "--type",
            "q3_k",
        ])
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("unsupported output type"));
}
