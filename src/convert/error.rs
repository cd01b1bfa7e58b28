//! Errors of checkpoint conversion.

use std::path::PathBuf;

/// Everything that can be wrong with a Hugging Face checkpoint, or go wrong
/// converting it. Variants name the file, key or tensor involved.
#[derive(Debug, thiserror::Error)]
pub enum ConvertError {
    /// A file could not be opened, read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A file the checkpoint needs is absent.
    #[error("{}: not found ({what})", path.display())]
    MissingFile {
        /// The path looked for.
        path: PathBuf,
        /// What the file is for.
        what: &'static str,
    },
    /// A JSON file does not parse or lacks a required structure.
    #[error("{}: {reason}", path.display())]
    BadJson {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A `config.json` entry is missing, has the wrong type or an unsupported value.
    #[error("config.json: `{key}`: {reason}")]
    BadConfig {
        /// The key.
        key: String,
        /// What is wrong.
        reason: String,
    },
    /// A safetensors file is malformed (bad header, offsets or size).
    #[error("{}: invalid safetensors file: {reason}", path.display())]
    BadSafetensors {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// `model.safetensors.index.json` disagrees with the shards it names.
    #[error("{}: {reason}", path.display())]
    BadIndex {
        /// The index file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The checkpoint holds a tensor that is not part of a Huginn model.
    #[error("unknown tensor `{0}` in the checkpoint (not part of a Huginn model)")]
    UnknownTensor(String),
    /// A tensor the model needs is absent.
    #[error("missing tensor `{0}`")]
    MissingTensor(String),
    /// The same tensor name appears in two shards.
    #[error("tensor `{0}` appears in more than one shard")]
    DuplicateTensor(String),
    /// A tensor's shape disagrees with `config.json`.
    #[error("tensor `{name}` has shape {found:?}, expected {expected:?} from config.json")]
    WrongShape {
        /// The checkpoint tensor name.
        name: String,
        /// The shape implied by the configuration (PyTorch order).
        expected: Vec<usize>,
        /// The shape in the file.
        found: Vec<usize>,
    },
    /// A tensor is stored in an element type the converter does not read.
    #[error("tensor `{name}` has unsupported dtype {dtype} (supported: BF16, F16, F32, F64)")]
    UnsupportedDtype {
        /// The checkpoint tensor name.
        name: String,
        /// The safetensors dtype.
        dtype: String,
    },
    /// A tensor holds NaN or infinite values.
    #[error("tensor `{0}` contains NaN or infinite values")]
    NonFinite(String),
    /// `tokenizer.json` or `tokenizer_config.json` cannot be used.
    #[error("tokenizer: {0}")]
    BadTokenizer(String),
    /// The requested output type is not supported.
    #[error("unsupported output type {0:?} (supported: {SUPPORTED})")]
    UnsupportedType(String),
    /// The input GGUF of a re-quantization cannot be used.
    #[error("cannot re-quantize: {0}")]
    BadInput(String),
}

/// Output types named in [`ConvertError::UnsupportedType`].
const SUPPORTED: &str = "f32, f16, bf16, q8_0, q6_k, q5_k, q4_k, q5_1, q5_0, q4_1, q4_0";

impl ConvertError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        ConvertError::Io {
            path: path.into(),
            source,
        }
    }

    pub(crate) fn config(key: &str, reason: impl Into<String>) -> Self {
        ConvertError::BadConfig {
            key: key.to_string(),
            reason: reason.into(),
        }
    }
}
