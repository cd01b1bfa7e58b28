//! A loaded model: validated hyper-parameters plus weights bound to a backend.
//! One model can serve several sessions on several threads.

pub mod config;
pub(crate) mod graph;
pub(crate) mod weights;

pub use crate::ggml::BackendKind;
pub use config::{BlockType, ModelConfig, RopePairing};

use crate::error::Result;
use crate::ggml::Backend;
use crate::gguf::GgufFile;
use std::path::Path;
use weights::Weights;

/// How to load a model.
#[derive(Clone, Debug)]
pub struct LoadParams {
    /// Device preference.
    pub backend: BackendKind,
    /// CPU threads for sessions of this model (0 = number of physical cores).
    pub n_threads: usize,
    /// Memory-map the file (weights are then used in place on the CPU). When
    /// false the file is read into memory.
    pub use_mmap: bool,
}

impl Default for LoadParams {
    fn default() -> Self {
        LoadParams {
            backend: BackendKind::Auto,
            n_threads: 0,
            use_mmap: true,
        }
    }
}

/// A loaded recurrent-depth model. Immutable after load; share it with `Arc`.
pub struct Model {
    // Field order is drop order: weights (which may point into the file's
    // mapping) and the backend go before the file.
    pub(crate) weights: Weights,
    backend_name: String,
    config: ModelConfig,
    params: LoadParams,
    file: GgufFile,
}

impl Model {
    /// Opens and validates a `huginn` GGUF file.
    pub fn load(path: impl AsRef<Path>, params: &LoadParams) -> Result<Model> {
        let path = path.as_ref();
        let file = if params.use_mmap {
            GgufFile::open(path)?
        } else {
            let bytes = std::fs::read(path)?;
            GgufFile::from_bytes(bytes)?
        };
        Self::from_file(file, params)
    }

    /// Builds a model from an already parsed GGUF file.
    pub fn from_file(file: GgufFile, params: &LoadParams) -> Result<Model> {
        let config = ModelConfig::from_gguf(&file)?;
        // The backend is only needed to place the weights; sessions make their own
        // (ggml buffers outlive the backend that allocated them).
        let backend = Backend::new(params.backend, params.n_threads)?;
        let weights = Weights::load(&file, &config, &backend)?;
        let mut params = params.clone();
        params.n_threads = backend.n_threads();
        params.backend = if backend.is_cpu() {
            BackendKind::Cpu
        } else {
            BackendKind::Gpu
        };
        Ok(Model {
            weights,
            backend_name: backend.name(),
            config,
            params,
            file,
        })
    }

    /// Hyper-parameters.
    pub fn config(&self) -> &ModelConfig {
        &self.config
    }

    /// The parsed GGUF file (metadata, tokenizer keys).
    pub fn gguf(&self) -> &GgufFile {
        &self.file
    }

    /// Load parameters, with `n_threads` resolved.
    pub fn load_params(&self) -> &LoadParams {
        &self.params
    }

    /// Name of the backend the weights live on (e.g. `CPU`).
    pub fn backend_name(&self) -> &str {
        &self.backend_name
    }

    /// Whether weight data is used in place from the memory-mapped file.
    pub fn weights_are_mapped(&self) -> bool {
        self.weights.mapped
    }

    /// Address range of the weight buffer (for diagnostics and tests).
    pub fn weights_buffer_range(&self) -> std::ops::Range<usize> {
        let base = self.weights.buffer.base() as usize;
        base..base + self.weights.buffer.size()
    }

    /// Address range of the file's bytes in memory.
    pub fn file_range(&self) -> std::ops::Range<usize> {
        let b = self.file.bytes();
        let base = b.as_ptr() as usize;
        base..base + b.len()
    }
}
