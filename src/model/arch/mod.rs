//! One file per model architecture: how its hyper-parameters are read from
//! GGUF metadata, which tensors it has, and its block's graph. The shared
//! pieces (attention over the KV cache, SwiGLU MLP, norms, the prelude /
//! recurrence / coda skeleton) are in `model::graph` and `model::weights`.
//!
//! Adding an architecture: docs/architecture.md.

pub(crate) mod huginn;
pub(crate) mod llama;
pub(crate) mod ouro;

use crate::error::{Error, Result};
use crate::gguf::GgufFile;

/// Reads the `{arch}.*` metadata keys of a file.
pub(crate) struct Keys<'a> {
    pub file: &'a GgufFile,
    pub arch: &'static str,
}

impl Keys<'_> {
    fn key(&self, k: &str) -> String {
        format!("{}.{k}", self.arch)
    }

    /// An integer key that must be present.
    pub fn req(&self, k: &str) -> Result<usize> {
        self.opt(k)?
            .ok_or_else(|| Error::InvalidModel(format!("missing metadata key {}", self.key(k))))
    }

    /// An optional integer key.
    pub fn opt(&self, k: &str) -> Result<Option<usize>> {
        let key = self.key(k);
        match self.file.get_u64(&key)? {
            Some(v) => usize::try_from(v)
                .map(Some)
                .map_err(|_| Error::InvalidModel(format!("{key} = {v} is too large"))),
            None => Ok(None),
        }
    }

    /// An optional float key.
    pub fn f32(&self, k: &str) -> Result<Option<f32>> {
        Ok(self.file.get_f32(&self.key(k))?)
    }

    /// A float key that must be present.
    pub fn req_f32(&self, k: &str) -> Result<f32> {
        self.f32(k)?
            .ok_or_else(|| Error::InvalidModel(format!("missing metadata key {}", self.key(k))))
    }

    /// An optional string key.
    pub fn str(&self, k: &str) -> Result<Option<&str>> {
        Ok(self.file.get_str(&self.key(k))?)
    }

    /// An optional boolean key.
    pub fn bool(&self, k: &str) -> Result<Option<bool>> {
        Ok(self.file.get_bool(&self.key(k))?)
    }

    /// The head dimension: `attention.key_length`, else the embedding
    /// width over the head count.
    pub fn head_dim(&self, n_embd: usize, n_head: usize) -> Result<usize> {
        match self.opt("attention.key_length")? {
            Some(h) => Ok(h),
            None if n_head > 0 && n_embd.is_multiple_of(n_head) => Ok(n_embd / n_head),
            None => Err(Error::InvalidModel(format!(
                "embedding_length {n_embd} is not divisible by head_count {n_head}"
            ))),
        }
    }
}

/// Rows of the token embedding (the vocabulary size).
pub(crate) fn n_vocab(file: &GgufFile) -> Result<usize> {
    let token_embd = file
        .tensor("token_embd.weight")
        .ok_or_else(|| Error::InvalidModel("missing tensor token_embd.weight".into()))?;
    if token_embd.shape.len() != 2 {
        return Err(Error::InvalidModel("token_embd.weight must be 2-D".into()));
    }
    usize::try_from(token_embd.shape[1])
        .map_err(|_| Error::InvalidModel("vocabulary too large".into()))
}
