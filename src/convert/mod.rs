//! Hugging Face Huginn checkpoints to `huginn` GGUF files, and re-quantization
//! of GGUF files.
//!
//! [`convert`] reads a checkpoint directory as the authors' `save_pretrained`
//! writes it (`config.json`, `model.safetensors` or a sharded
//! `model.safetensors.index.json`, `tokenizer.json`, `tokenizer_config.json`),
//! checks every tensor against the configuration, and writes the GGUF file of
//! `docs/gguf.md` in two passes: first the header (metadata and every tensor's
//! name, type and shape), then the data, tensor by tensor and in chunks of rows,
//! so memory stays a few tens of MiB whatever the model size (see
//! `docs/convert.md`). Ouro checkpoints (`model_type` `ouro`) become `ouro`
//! files. [`requantize`] rewrites a `huginn`, `ouro` or `llama` GGUF in
//! another type.

mod checkpoint;
mod config;
mod error;
mod plan;
mod tokenizer_meta;

use std::fs::File;
use std::io::{BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

pub use checkpoint::{INDEX_FILE, SINGLE_FILE};
pub use config::HfConfig;
pub use error::ConvertError;
pub use plan::{head_type, row_fallback};
pub use tokenizer_meta::TokenizerSummary;

use crate::error::{Error, Result};
use crate::gguf::{GgmlType, GgufFile, GgufWriter, TensorInfo, Value};
use checkpoint::{Checkpoint, SourceTensor, to_f32};
use plan::{Kind, Piece, Planned};

/// Elements converted per chunk (16 MiB of f32): bounds the working memory.
const CHUNK_ELEMENTS: usize = 4 << 20;

/// The output types `rd convert` and `rd quantize` accept.
pub const OUTPUT_TYPES: [GgmlType; 11] = [
    GgmlType::F32,
    GgmlType::F16,
    GgmlType::BF16,
    GgmlType::Q8_0,
    GgmlType::Q6_K,
    GgmlType::Q5_K,
    GgmlType::Q4_K,
    GgmlType::Q5_1,
    GgmlType::Q5_0,
    GgmlType::Q4_1,
    GgmlType::Q4_0,
];

/// Parses an output type name (`q4_k`, `F16`, ...); only [`OUTPUT_TYPES`].
pub fn parse_type(name: &str) -> std::result::Result<GgmlType, ConvertError> {
    GgmlType::from_name(name)
        .filter(|t| OUTPUT_TYPES.contains(t))
        .ok_or_else(|| ConvertError::UnsupportedType(name.to_string()))
}

/// Options of [`convert`].
#[derive(Clone, Debug, PartialEq)]
pub struct ConvertOptions {
    /// Type of the weight matrices (norms and biases are always F32).
    pub out_type: GgmlType,
    /// `general.name`; default: `name` from config.json, else the directory name.
    pub name: Option<String>,
    /// Threads for quantization (0 = all available).
    pub threads: usize,
}

impl Default for ConvertOptions {
    fn default() -> Self {
        ConvertOptions {
            out_type: GgmlType::F16,
            name: None,
            threads: 0,
        }
    }
}

/// Progress of a conversion, reported after every chunk of data.
#[derive(Clone, Copy, Debug)]
pub struct Progress<'a> {
    /// Output tensor being written.
    pub tensor: &'a str,
    /// Its index.
    pub index: usize,
    /// Number of output tensors.
    pub n_tensors: usize,
    /// Input bytes processed so far.
    pub bytes_done: u64,
    /// Input bytes in total.
    pub bytes_total: u64,
}

/// How the output head was handled.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HeadDecision {
    /// No `lm_head.weight` in the checkpoint; the model is tied.
    Tied,
    /// `lm_head.weight` ignored because config.json ties the embeddings
    /// (`identical` tells whether it equalled the embedding anyway).
    TiedByConfig {
        /// Whether it was byte-identical to `transformer.wte.weight`.
        identical: bool,
    },
    /// `lm_head.weight` dropped because it equals the embedding byte for byte.
    DroppedDuplicate,
    /// Stored as `output.weight`.
    Separate,
}

/// One tensor of the output.
#[derive(Clone, Debug, PartialEq)]
pub struct TensorReport {
    /// GGUF name.
    pub name: String,
    /// Storage type.
    pub ty: GgmlType,
    /// ggml shape.
    pub shape: Vec<u64>,
    /// Why the type differs from the requested one, if it does.
    pub note: Option<String>,
}

/// What a conversion or re-quantization wrote.
#[derive(Clone, Debug, PartialEq)]
pub struct ConvertReport {
    /// The checkpoint's configuration (conversion only).
    pub config: Option<HfConfig>,
    /// Output tensors in file order.
    pub tensors: Vec<TensorReport>,
    /// The head decision (conversion only).
    pub head: Option<HeadDecision>,
    /// Checkpoint tensors that were not stored, with the reason.
    pub dropped: Vec<(String, String)>,
    /// Tokenizer facts (conversion only; `None` without `tokenizer.json`).
    pub tokenizer: Option<TokenizerSummary>,
    /// Notes for the user (e.g. re-quantizing already quantized weights).
    pub notes: Vec<String>,
    /// Size of the output file.
    pub bytes_written: u64,
}

impl ConvertReport {
    /// Tensors stored in another type than requested, with the reason.
    pub fn fallbacks(&self) -> impl Iterator<Item = &TensorReport> {
        self.tensors.iter().filter(|t| t.note.is_some())
    }
}

/// Converts the Hugging Face Huginn checkpoint in `dir` to a GGUF file at `out`.
///
/// The file is written to `out` with `.partial` appended and renamed when
/// complete; on error nothing is left at `out`. `progress` is called after every
/// chunk of data.
pub fn convert(
    dir: &Path,
    out: &Path,
    opts: &ConvertOptions,
    progress: &mut dyn FnMut(&Progress),
) -> Result<ConvertReport> {
    if !OUTPUT_TYPES.contains(&opts.out_type) {
        return Err(ConvertError::UnsupportedType(opts.out_type.name().to_string()).into());
    }
    let config_path = dir.join("config.json");
    let config_text = std::fs::read_to_string(&config_path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => ConvertError::MissingFile {
            path: config_path.clone(),
            what: "the model configuration",
        },
        _ => ConvertError::io(&config_path, e),
    })?;
    let mut cfg = HfConfig::from_json(&config_text)?;
    let mut ck = Checkpoint::open(dir)?;
    if cfg.layout != config::Layout::Ouro {
        cfg.layout = plan::detect_layout(&cfg, |n| ck.tensors().contains_key(n));
    }
    if cfg.layout == config::Layout::Huginn && cfg.rope_llama3.is_some() {
        return Err(ConvertError::config(
            "rope_scaling",
            "Llama 3 RoPE scaling in a checkpoint with Huginn's sandwich blocks",
        )
        .into());
    }

    // Every checkpoint tensor must be one the model has (or one we ignore).
    let expected = plan::expected(&cfg, true);
    let mut dropped = Vec::new();
    for name in ck.tensors().keys() {
        if plan::IGNORED.contains(&name.as_str()) {
            dropped.push((
                name.clone(),
                "RoPE table, recomputed at run time".to_string(),
            ));
        } else if !expected.iter().any(|e| e.name == *name) {
            return Err(ConvertError::UnknownTensor(name.clone()).into());
        }
    }
    for e in &expected {
        let Some(t) = ck.tensors().get(&e.name) else {
            if e.name == plan::LM_HEAD {
                continue;
            }
            return Err(ConvertError::MissingTensor(e.name.clone()).into());
        };
        if t.shape != e.shape {
            return Err(ConvertError::WrongShape {
                name: e.name.clone(),
                expected: e.shape.clone(),
                found: t.shape.clone(),
            }
            .into());
        }
        if t.float_size().is_none() {
            return Err(ConvertError::UnsupportedDtype {
                name: e.name.clone(),
                dtype: format!("{:?}", t.dtype),
            }
            .into());
        }
    }
    let head = decide_head(&mut ck, &cfg)?;
    let with_head = head == HeadDecision::Separate;
    if !with_head && ck.tensors().contains_key(plan::LM_HEAD) {
        let why = match head {
            HeadDecision::DroppedDuplicate => "identical to transformer.wte.weight; stored tied",
            _ => "config.json ties the head to transformer.wte.weight",
        };
        dropped.push((plan::LM_HEAD.to_string(), why.to_string()));
    }
    let planned = plan::plan(&cfg, with_head, opts.out_type);

    let mut w = GgufWriter::new();
    let name = opts
        .name
        .clone()
        .or_else(|| cfg.name.clone())
        .or_else(|| dir.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_else(|| "huginn".to_string());
    let metadata = if cfg.layout == config::Layout::Ouro {
        ouro_metadata(&cfg, &name)
    } else {
        model_metadata(&cfg, &name)
    };
    for (k, v) in metadata {
        w.add_kv(k, v)?;
    }
    let tokenizer = if dir.join("tokenizer.json").is_file() {
        let (kvs, summary) = tokenizer_meta::tokenizer_metadata(dir, cfg.n_vocab)?;
        for (k, v) in kvs {
            w.add_kv(k, v)?;
        }
        Some(summary)
    } else {
        None
    };
    for p in &planned {
        w.add_tensor_info(p.name.clone(), p.ty, &p.shape)?;
    }

    let bytes_total: u64 = planned.iter().map(|p| source_bytes(&ck, p)).sum();
    let threads = thread_count(opts.threads);
    let n_tensors = planned.len();
    let bytes_written = write_file(out, &mut w, |sink| {
        let mut done = 0u64;
        for (index, p) in planned.iter().enumerate() {
            if p.piece == Piece::RopeFactors {
                // Computed, not read: Llama 3's frequency divisors.
                let divisors = cfg
                    .rope_llama3
                    .map(|r| r.divisors(cfg.rope_base(), cfg.head_dim()))
                    .unwrap_or_default();
                sink.begin(&p.name)?;
                sink.write(&crate::ggml::quantize(
                    GgmlType::F32,
                    &divisors,
                    divisors.len(),
                )?)?;
                continue;
            }
            let src = ck
                .tensors()
                .get(&p.source)
                .cloned()
                .ok_or_else(|| ConvertError::MissingTensor(p.source.clone()))?;
            let mut report = |bytes: u64| {
                done += bytes;
                progress(&Progress {
                    tensor: &p.name,
                    index,
                    n_tensors,
                    bytes_done: done,
                    bytes_total,
                });
            };
            sink.begin(&p.name)?;
            convert_tensor(&mut ck, &src, p, threads, sink, &mut report)?;
        }
        Ok(())
    })?;
    Ok(ConvertReport {
        config: Some(cfg),
        tensors: planned
            .into_iter()
            .map(|p| TensorReport {
                name: p.name,
                ty: p.ty,
                shape: p.shape,
                note: p.note,
            })
            .collect(),
        head: Some(head),
        dropped,
        tokenizer,
        notes: Vec::new(),
        bytes_written,
    })
}

/// The `general.*` and `huginn.*` keys of `docs/gguf.md` for `cfg`.
fn model_metadata(cfg: &HfConfig, name: &str) -> Vec<(&'static str, Value)> {
    let u = |v: usize| Value::U32(v as u32);
    // Huginn-0125's layout, or a Llama retrofitted with recurrence (pre-norm
    // blocks, RoPE over head halves on unpermuted q/k, no norm before the coda).
    let huginn = cfg.layout == config::Layout::Huginn;
    let d = cfg.n_embd;
    vec![
        ("general.architecture", Value::from("huginn")),
        ("general.name", Value::from(name)),
        ("huginn.context_length", u(cfg.n_ctx)),
        ("huginn.embedding_length", u(d)),
        ("huginn.feed_forward_length", u(cfg.n_ff)),
        ("huginn.block_count", u(cfg.n_blocks())),
        ("huginn.prelude_block_count", u(cfg.n_prelude)),
        ("huginn.core_block_count", u(cfg.n_core)),
        ("huginn.coda_block_count", u(cfg.n_coda)),
        ("huginn.attention.head_count", u(cfg.n_head)),
        ("huginn.attention.head_count_kv", u(cfg.n_head_kv)),
        ("huginn.attention.key_length", u(cfg.head_dim())),
        (
            "huginn.attention.layer_norm_rms_epsilon",
            Value::F32(cfg.norm_eps),
        ),
        ("huginn.rope.freq_base", Value::F32(cfg.rope_base())),
        (
            "huginn.rope.pairing",
            Value::from(if huginn { "adjacent" } else { "neox" }),
        ),
        (
            "huginn.block_type",
            Value::from(if huginn { "sandwich" } else { "prenorm" }),
        ),
        ("huginn.embedding_scale", Value::F32(cfg.embedding_scale())),
        ("huginn.recurrence.default", u(cfg.mean_recurrence)),
        (
            "huginn.recurrence.state_init_std",
            Value::F32(cfg.state_init_std()),
        ),
        ("huginn.norm_after_recurrence", Value::Bool(huginn)),
    ]
}

/// The `general.*` and `ouro.*` keys of `docs/gguf.md` for an Ouro `cfg`.
fn ouro_metadata(cfg: &HfConfig, name: &str) -> Vec<(&'static str, Value)> {
    let u = |v: usize| Value::U32(v as u32);
    vec![
        ("general.architecture", Value::from("ouro")),
        ("general.name", Value::from(name)),
        ("ouro.context_length", u(cfg.n_ctx)),
        ("ouro.embedding_length", u(cfg.n_embd)),
        ("ouro.feed_forward_length", u(cfg.n_ff)),
        ("ouro.block_count", u(cfg.n_core)),
        ("ouro.attention.head_count", u(cfg.n_head)),
        ("ouro.attention.head_count_kv", u(cfg.n_head_kv)),
        (
            "ouro.attention.layer_norm_rms_epsilon",
            Value::F32(cfg.norm_eps),
        ),
        ("ouro.rope.freq_base", Value::F32(cfg.rope_base)),
        ("ouro.loop_count", u(cfg.mean_recurrence)),
    ]
}

/// Decides what happens to `lm_head.weight` (shape and dtype already checked).
fn decide_head(ck: &mut Checkpoint, cfg: &HfConfig) -> Result<HeadDecision> {
    let (Some(head), Some(wte)) = (
        ck.tensors().get(plan::LM_HEAD).cloned(),
        ck.tensors().get(plan::wte(cfg)).cloned(),
    ) else {
        if cfg.tie_embeddings {
            return Ok(HeadDecision::Tied);
        }
        return Err(ConvertError::MissingTensor(format!(
            "{} (config.json says tie_embeddings is false)",
            plan::LM_HEAD
        ))
        .into());
    };
    let identical = head.dtype == wte.dtype && same_bytes(ck, &head, &wte)?;
    Ok(match (cfg.tie_embeddings, identical) {
        (true, identical) => HeadDecision::TiedByConfig { identical },
        (false, true) => HeadDecision::DroppedDuplicate,
        (false, false) => HeadDecision::Separate,
    })
}

/// Whether two tensors of equal length hold the same bytes (read in chunks).
fn same_bytes(ck: &mut Checkpoint, a: &SourceTensor, b: &SourceTensor) -> Result<bool> {
    if a.len != b.len {
        return Ok(false);
    }
    if a.shard == b.shard && a.offset == b.offset {
        return Ok(true);
    }
    let chunk = (CHUNK_ELEMENTS as u64).min(a.len) as usize;
    let (mut x, mut y) = (vec![0u8; chunk], vec![0u8; chunk]);
    let mut at = 0u64;
    while at < a.len {
        let n = (a.len - at).min(chunk as u64) as usize;
        ck.read(a, at, &mut x[..n])?;
        ck.read(b, at, &mut y[..n])?;
        if x[..n] != y[..n] {
            return Ok(false);
        }
        at += n as u64;
    }
    Ok(true)
}

/// Bytes of input a planned tensor reads.
fn source_bytes(ck: &Checkpoint, p: &Planned) -> u64 {
    let len = ck.tensors().get(&p.source).map_or(0, |t| t.len);
    match p.piece {
        Piece::Whole | Piece::Row => len,
        Piece::QkHalf(_) => len / 2,
        Piece::RopeFactors => 0,
    }
}

fn thread_count(requested: usize) -> usize {
    if requested > 0 {
        requested
    } else {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    }
}

/// Streams one planned tensor from the checkpoint into `sink`.
fn convert_tensor(
    ck: &mut Checkpoint,
    src: &SourceTensor,
    p: &Planned,
    threads: usize,
    sink: &mut Sink,
    report: &mut dyn FnMut(u64),
) -> Result<()> {
    let elem = src.float_size().unwrap_or(4);
    let (first, count) = match p.piece {
        Piece::Whole | Piece::Row | Piece::RopeFactors => (0, src.n_elements()),
        Piece::QkHalf(h) => {
            let half = src.n_elements() / 2;
            (h * half, half)
        }
    };
    let row_len = match p.kind {
        Kind::Matrix => p.row_len(),
        Kind::Vector => count.max(1),
    };
    let rows_per_chunk = (CHUNK_ELEMENTS / row_len).max(1);
    let total_rows = count / row_len;
    let mut raw = Vec::new();
    let mut vals = Vec::new();
    let mut row = 0;
    while row < total_rows {
        let rows = rows_per_chunk.min(total_rows - row);
        let n = rows * row_len;
        raw.resize(n * elem, 0);
        vals.resize(n, 0f32);
        ck.read(src, ((first + row * row_len) * elem) as u64, &mut raw)?;
        to_f32(src.dtype, &raw, &mut vals);
        if vals.iter().any(|v| !v.is_finite()) {
            return Err(ConvertError::NonFinite(p.source.clone()).into());
        }
        let bytes = quantize_rows(p.ty, &vals, row_len, threads)?;
        sink.write(&bytes)?;
        report(raw.len() as u64);
        row += rows;
    }
    Ok(())
}

/// Quantizes whole rows, splitting them over `threads` threads when worthwhile.
fn quantize_rows(ty: GgmlType, vals: &[f32], row_len: usize, threads: usize) -> Result<Vec<u8>> {
    let rows = vals.len() / row_len;
    if !ty.is_quantized() || threads <= 1 || rows < 2 * threads {
        return crate::ggml::quantize(ty, vals, row_len);
    }
    let per = rows.div_ceil(threads);
    let parts: Vec<Result<Vec<u8>>> = std::thread::scope(|s| {
        let handles: Vec<_> = vals
            .chunks(per * row_len)
            .map(|part| s.spawn(move || crate::ggml::quantize(ty, part, row_len)))
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join().unwrap_or_else(|_| {
                    Err(Error::Backend("a quantization thread panicked".into()))
                })
            })
            .collect()
    });
    let mut out = Vec::with_capacity(ty.row_size(vals.len() as u64).unwrap_or(0) as usize);
    for part in parts {
        out.extend_from_slice(&part?);
    }
    Ok(out)
}

/// The data section of a GGUF file being streamed: writes tensor data at the
/// offsets the writer laid out, with the zero padding between tensors.
struct Sink<'a> {
    w: BufWriter<File>,
    path: &'a Path,
    tensors: Vec<TensorInfo>,
    alignment: u64,
    /// Bytes of the data section written so far.
    pos: u64,
    /// Index of the tensor being written.
    current: Option<usize>,
}

impl Sink<'_> {
    /// Starts tensor `name`, which must be the next one.
    fn begin(&mut self, name: &str) -> Result<()> {
        let next = self.current.map_or(0, |i| i + 1);
        let info = self.tensors.get(next).ok_or_else(|| {
            Error::Backend(format!("tensor `{name}` written after the last tensor"))
        })?;
        if info.name != name {
            return Err(Error::Backend(format!(
                "expected tensor `{}` next, got `{name}`",
                info.name
            )));
        }
        let offset = info.offset;
        self.finish_current()?;
        self.pad_to(offset)?;
        self.current = Some(next);
        Ok(())
    }

    fn write(&mut self, bytes: &[u8]) -> Result<()> {
        self.w
            .write_all(bytes)
            .map_err(|e| ConvertError::io(self.path, e))?;
        self.pos += bytes.len() as u64;
        Ok(())
    }

    /// Checks that the current tensor is complete.
    fn finish_current(&mut self) -> Result<()> {
        if let Some(i) = self.current {
            let t = &self.tensors[i];
            if self.pos != t.offset + t.size {
                return Err(Error::Backend(format!(
                    "tensor `{}`: wrote {} bytes, expected {}",
                    t.name,
                    self.pos - t.offset,
                    t.size
                )));
            }
        }
        Ok(())
    }

    fn pad_to(&mut self, offset: u64) -> Result<()> {
        if offset < self.pos {
            return Err(Error::Backend("tensor data overlaps".into()));
        }
        let zeros = [0u8; 64];
        while self.pos < offset {
            let n = ((offset - self.pos) as usize).min(zeros.len());
            self.write(&zeros[..n])?;
        }
        Ok(())
    }

    /// Checks every tensor was written, pads the last one, flushes.
    fn finish(mut self) -> Result<()> {
        self.finish_current()?;
        if self.current.map_or(0, |i| i + 1) != self.tensors.len() {
            return Err(Error::Backend("not every tensor was written".into()));
        }
        let end = self.pos.div_ceil(self.alignment) * self.alignment;
        self.pad_to(end)?;
        self.w.flush().map_err(|e| ConvertError::io(self.path, e))?;
        Ok(())
    }
}

/// Writes `w`'s header to `out.partial`, lets `body` stream the data, then
/// renames the file to `out`. Returns the file size.
fn write_file(
    out: &Path,
    w: &mut GgufWriter,
    body: impl FnOnce(&mut Sink) -> Result<()>,
) -> Result<u64> {
    let mut partial = out.as_os_str().to_owned();
    partial.push(".partial");
    let partial = PathBuf::from(partial);
    let result = (|| -> Result<u64> {
        let file = File::create(&partial).map_err(|e| ConvertError::io(&partial, e))?;
        let mut bw = BufWriter::with_capacity(1 << 20, file);
        w.write_header(&mut bw)?;
        let mut sink = Sink {
            w: bw,
            path: &partial,
            tensors: w.tensors().to_vec(),
            alignment: w.alignment(),
            pos: 0,
            current: None,
        };
        body(&mut sink)?;
        sink.finish()?;
        std::fs::rename(&partial, out).map_err(|e| ConvertError::io(out, e))?;
        std::fs::metadata(out)
            .map(|m| m.len())
            .map_err(|e| ConvertError::io(out, e).into())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&partial);
    }
    result
}

/// Rewrites the `huginn` GGUF `input` with its weight matrices in `ty`, using
/// the same rules as [`convert`] (head type, row-length fallbacks; norms and
/// biases stay F32). Quantized inputs are decoded with ggml's dequantizers
/// first, which compounds their error: the report says so.
pub fn requantize(
    input: &Path,
    out: &Path,
    ty: GgmlType,
    threads: usize,
    progress: &mut dyn FnMut(&Progress),
) -> Result<ConvertReport> {
    if !OUTPUT_TYPES.contains(&ty) {
        return Err(ConvertError::UnsupportedType(ty.name().to_string()).into());
    }
    let file = GgufFile::open(input)?;
    let arch = file.get_str("general.architecture")?.unwrap_or("");
    if !["huginn", "ouro", "llama"].contains(&arch) {
        return Err(ConvertError::BadInput(format!(
            "general.architecture is {arch:?}, not huginn, ouro or llama"
        ))
        .into());
    }
    let tied = file.tensor("output.weight").is_none();
    let mut w = GgufWriter::new();
    for (k, v) in file.metadata() {
        w.add_kv(k.clone(), v.clone())?;
    }
    let mut requantized = Vec::new();
    let mut plans = Vec::with_capacity(file.tensors().len());
    for t in file.tensors() {
        let is_matrix =
            t.shape.len() == 2 && t.name.ends_with(".weight") && !t.name.contains("norm");
        let (new_ty, note) = if !is_matrix {
            (t.ty, None)
        } else {
            let is_head = t.name == "output.weight" || (tied && t.name == "token_embd.weight");
            let wanted = if is_head { head_type(ty) } else { ty };
            let (new_ty, why) = row_fallback(wanted, t.shape[0]);
            let note = why.or_else(|| {
                (wanted != ty).then(|| format!("output head kept at {}", wanted.name()))
            });
            (new_ty, note)
        };
        if is_matrix && t.ty.is_quantized() && new_ty != t.ty {
            requantized.push(t.name.clone());
        }
        w.add_tensor_info(t.name.clone(), new_ty, &t.shape)?;
        plans.push((t.clone(), new_ty, note));
    }
    let mut notes = Vec::new();
    if let Some(first) = requantized.first() {
        notes.push(format!(
            "{} matrices (e.g. {first}) were already quantized: re-quantizing their decoded \
             values adds the errors of both types; convert from the checkpoint for the best quality",
            requantized.len()
        ));
    }
    let threads = thread_count(threads);
    let bytes_total: u64 = file.tensors().iter().map(|t| t.size).sum();
    let n_tensors = plans.len();
    let in_path = input;
    let mut input = File::open(in_path).map_err(|e| ConvertError::io(in_path, e))?;
    let (mut buf, mut vals) = (Vec::new(), Vec::new());
    let bytes_written = write_file(out, &mut w, |sink| {
        let mut done = 0u64;
        for (index, (t, new_ty, _)) in plans.iter().enumerate() {
            sink.begin(&t.name)?;
            // Positioned reads rather than the map, so the input's pages do
            // not accumulate in this process's resident memory.
            let start = file.data_offset() as u64 + t.offset;
            let row_bytes = t.ty.row_size(t.shape[0]).unwrap_or(1).max(1) as usize;
            let row_len = t.shape[0] as usize;
            let rows_per_chunk = (CHUNK_ELEMENTS / row_len.max(1)).max(1);
            let chunk_bytes = rows_per_chunk * row_bytes;
            let mut at = 0u64;
            while at < t.size {
                let n = (t.size - at).min(chunk_bytes as u64) as usize;
                buf.resize(n, 0);
                input
                    .seek(SeekFrom::Start(start + at))
                    .and_then(|_| input.read_exact(&mut buf))
                    .map_err(|e| ConvertError::io(in_path, e))?;
                if *new_ty == t.ty {
                    sink.write(&buf)?;
                } else {
                    vals.resize(n / row_bytes * row_len, 0f32);
                    crate::ggml::dequantize(t.ty, &buf, &mut vals)?;
                    sink.write(&quantize_rows(*new_ty, &vals, row_len, threads)?)?;
                }
                at += n as u64;
            }
            done += t.size;
            progress(&Progress {
                tensor: &t.name,
                index,
                n_tensors,
                bytes_done: done,
                bytes_total,
            });
        }
        Ok(())
    })?;
    Ok(ConvertReport {
        config: None,
        tensors: plans
            .into_iter()
            .map(|(t, ty, note)| TensorReport {
                name: t.name,
                ty,
                shape: t.shape,
                note,
            })
            .collect(),
        head: None,
        dropped: Vec::new(),
        tokenizer: None,
        notes,
        bytes_written,
    })
}
