//! Typed errors of the library.

use crate::gguf::GgufError;

/// Every failure the library reports. The C ABI maps each variant to a status code.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The GGUF file is malformed or cannot be read.
    #[error(transparent)]
    Gguf(#[from] GgufError),
    /// The GGUF file is well formed but is not a model this runtime can run.
    #[error("invalid model: {0}")]
    InvalidModel(String),
    /// The file declares an architecture other than `huginn`.
    #[error("unsupported architecture: {0}")]
    UnsupportedArchitecture(String),
    /// A caller-supplied argument is out of range or inconsistent.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// The call is not valid in the session's current state (e.g. continuing
    /// from logits an evaluation that failed left behind).
    #[error("invalid state: {0}")]
    InvalidState(String),
    /// The session's context is full.
    #[error("context full: {needed} positions needed, context length is {n_ctx}")]
    ContextFull {
        /// Positions the request would need.
        needed: usize,
        /// The session's context length.
        n_ctx: usize,
    },
    /// Generation was cancelled (through `cancel` or the token callback).
    #[error("cancelled")]
    Cancelled,
    /// A backend could not allocate memory.
    #[error("out of memory: {0}")]
    OutOfMemory(String),
    /// A ggml backend failed.
    #[error("backend error: {0}")]
    Backend(String),
    /// A Hugging Face checkpoint could not be converted or a GGUF re-quantized.
    #[error(transparent)]
    Convert(#[from] crate::convert::ConvertError),
    /// A tokenizer could not be built from the file, or could not encode.
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    /// A chat template could not be parsed or rendered.
    #[error("chat template: {0}")]
    ChatTemplate(String),
    /// An I/O error outside GGUF parsing (e.g. writing an output file).
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
}

/// Result alias used throughout the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
