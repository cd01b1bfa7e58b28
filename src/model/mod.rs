//! A loaded model: validated hyper-parameters plus weights bound to a backend.
//! One model can serve several sessions on several threads.

pub(crate) mod arch;
pub mod config;
pub(crate) mod graph;
pub(crate) mod weights;

pub use crate::ggml::BackendKind;
pub use config::{Architecture, BlockType, ModelConfig, RopePairing};

use crate::error::{Error, Result};
use crate::ggml::{Backend, Buffer};
use crate::gguf::GgufFile;
use std::path::Path;
use weights::Weights;

/// How to load a model.
#[derive(Clone, Debug)]
pub struct LoadParams {
    /// Device choice (default [`BackendKind::Auto`]: the first GPU, else the CPU).
    pub backend: BackendKind,
    /// CPU threads for sessions of this model (0 = number of physical cores).
    pub n_threads: usize,
    /// Memory-map the file (weights are then used in place on the CPU and on
    /// devices that can wrap host memory, such as Metal; Vulkan copies them to
    /// the device once). When false the file is read into memory.
    pub use_mmap: bool,
    /// Repack weight matrices for the CPU's interleaved kernels (default
    /// [`Repack::Auto`]).
    pub repack: Repack,
    /// Read every weight used in place from the mapped file once while
    /// loading (default true), so that the first tokens do not stop on page
    /// faults: every token of a dense model reads every weight, so this
    /// moves that cost to the load rather than adding to it. Only weights
    /// used in place (the CPU and Metal with `use_mmap`); pages stay clean,
    /// reclaimable file cache. False maps lazily: a faster load, and the
    /// first graphs take the page faults (on a file already in the page
    /// cache the difference was within measurement noise here;
    /// docs/performance.md).
    pub prefetch: bool,
}

/// Whether weight matrices are repacked for the CPU (see [`LoadParams::repack`]).
///
/// ggml has matrix kernels for some quantized types that read the blocks of
/// several rows interleaved (x86-64 with AVX2: Q4_0, Q4_K; ARM with dot
/// product: also Q5_K, Q6_K, Q8_0; Xeons with AMX: ggml's AMX layout for
/// Q4_0, Q4_1, Q8_0). Repacking converts those matrices once at
/// load, into anonymous memory: faster products, but those weights are no
/// longer used in place from the mapped file (their bytes count as the
/// process's own memory, not as shared, reclaimable file cache; on a phone
/// that is memory the system cannot take back under pressure).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Repack {
    /// Repack every matrix ggml has such a kernel for on this CPU (the
    /// embedding, read by rows, stays as stored; a head tied to it gets a
    /// repacked copy). CPU backend only.
    #[default]
    Auto,
    /// Use every weight as stored.
    Off,
}

impl std::str::FromStr for Repack {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "auto" => Ok(Repack::Auto),
            "off" => Ok(Repack::Off),
            _ => Err(Error::InvalidArgument(format!(
                "repack {s:?}: expected auto or off"
            ))),
        }
    }
}

impl Default for LoadParams {
    fn default() -> Self {
        LoadParams {
            backend: BackendKind::Auto,
            n_threads: 0,
            use_mmap: true,
            repack: Repack::Auto,
            prefetch: true,
        }
    }
}

/// A loaded recurrent-depth model. Immutable after load; share it with `Arc`.
pub struct Model {
    // Field order is drop order: weights (which may point into the file's
    // mapping) and the backend go before the file.
    pub(crate) weights: Weights,
    /// The learned exit gate, on the host (Ouro).
    exit_gate: Option<crate::exit::ExitGate>,
    backend_name: String,
    device_description: String,
    config: ModelConfig,
    params: LoadParams,
    file: GgufFile,
}

impl Model {
    /// Opens and validates a GGUF file of a supported architecture
    /// ([`Architecture`]).
    pub fn load(path: impl AsRef<Path>, params: &LoadParams) -> Result<Model> {
        Self::load_with_progress(path, params, &mut |_| true)
    }

    /// Like [`Model::load`], reporting weight placement to `progress` (the
    /// fraction done, 0..=1; large uploads to a GPU report per tensor).
    /// Returning false from `progress` stops the load with [`Error::Cancelled`].
    ///
    /// [`Error::Cancelled`]: crate::Error::Cancelled
    pub fn load_with_progress(
        path: impl AsRef<Path>,
        params: &LoadParams,
        progress: &mut dyn FnMut(f32) -> bool,
    ) -> Result<Model> {
        let file = Self::open_file(path.as_ref(), params.use_mmap)?;
        Self::from_file_with_progress(file, params, progress)
    }

    /// Opens and parses a model file, memory-mapped or read into memory.
    /// Anything but a regular file (a device, pipe, socket or directory) is
    /// refused before it is read; without the map, the file is read up to
    /// the size it had when opened and a file too large for memory is
    /// [`Error::OutOfMemory`].
    pub fn open_file(path: &Path, use_mmap: bool) -> Result<GgufFile> {
        Ok(if use_mmap {
            GgufFile::open(path)?
        } else {
            GgufFile::from_bytes(read_whole(path)?)?
        })
    }

    /// Opens and parses a model stored as `len` bytes of `file` from `offset`
    /// (`len` 0: up to the end of the file), e.g. an uncompressed asset inside
    /// an Android APK. The file must be a regular file and the range must lie
    /// within it. With `use_mmap` the range is mapped, and its weights are
    /// used in place when `offset` is a multiple of 32 (else copied once, as
    /// ggml needs 32-byte aligned data); without it the range is read into
    /// memory (too large: [`Error::OutOfMemory`]). The file's read position
    /// is not used or changed.
    pub fn open_range(
        file: &std::fs::File,
        offset: u64,
        len: u64,
        use_mmap: bool,
    ) -> Result<GgufFile> {
        let len = if len == 0 {
            let size = file.metadata()?.len();
            size.checked_sub(offset).ok_or_else(|| {
                Error::Io(std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    format!("offset {offset} is past the end of the file ({size} bytes)"),
                ))
            })?
        } else {
            len
        };
        Ok(if use_mmap {
            GgufFile::open_range(file, offset, len)?
        } else {
            GgufFile::from_bytes(read_range(file, offset, len)?)?
        })
    }

    /// Builds a model from an already parsed GGUF file.
    pub fn from_file(file: GgufFile, params: &LoadParams) -> Result<Model> {
        Self::from_file_with_progress(file, params, &mut |_| true)
    }

    /// Like [`Model::from_file`], with a progress callback (see
    /// [`Model::load_with_progress`]).
    pub fn from_file_with_progress(
        file: GgufFile,
        params: &LoadParams,
        progress: &mut dyn FnMut(f32) -> bool,
    ) -> Result<Model> {
        let config = ModelConfig::from_gguf(&file)?;
        // The backend is only needed to place the weights; sessions make their own
        // on the same device (ggml buffers outlive the backend that allocated them).
        let backend = Backend::new(params.backend, params.n_threads)?;
        let repack = params.repack == Repack::Auto;
        let weights = Weights::load(&file, &config, &backend, repack, params.prefetch, progress)?;
        let exit_gate = match config.architecture {
            config::Architecture::Ouro => Some(arch::ouro::exit_gate(&file)?),
            _ => None,
        };
        let mut params = params.clone();
        params.n_threads = backend.n_threads();
        params.backend = backend.kind();
        Ok(Model {
            weights,
            exit_gate,
            backend_name: backend.name(),
            device_description: backend.description(),
            config,
            params,
            file,
        })
    }

    /// What one exit check on the next-token distribution costs, in
    /// recurrence steps, estimated from the weight bytes each streams
    /// (decoding is bound by reading weights): a check runs the coda blocks
    /// and the head, a step the adapter and the core blocks. On the full
    /// Huginn shape this gives 0.70; measured there, with the host's KL over
    /// the vocabulary, a check costs 0.85 steps (docs/performance.md).
    pub fn check_cost_in_steps(&self) -> f64 {
        let w = &self.weights;
        let c = &self.config;
        let block = |b: &weights::BlockWeights| b.matrix_bytes();
        let core = c.n_prelude..c.n_prelude + c.n_core;
        let step: usize =
            w.adapter.map_or(0, |a| a.nbytes()) + w.blocks[core].iter().map(block).sum::<usize>();
        let check: usize = w.head().nbytes()
            + w.blocks[c.n_prelude + c.n_core..]
                .iter()
                .map(block)
                .sum::<usize>();
        check as f64 / step.max(1) as f64
    }

    /// The model's learned exit gate (Ouro), used by the `gate` criterion.
    pub fn exit_gate(&self) -> Option<&crate::exit::ExitGate> {
        self.exit_gate.as_ref()
    }

    /// Hyper-parameters.
    pub fn config(&self) -> &ModelConfig {
        &self.config
    }

    /// The parsed GGUF file (metadata, tokenizer keys).
    pub fn gguf(&self) -> &GgufFile {
        &self.file
    }

    /// Load parameters, with `n_threads` and `backend` resolved (the backend is
    /// the concrete device: `Cpu`, `Vulkan(i)` or `Metal`).
    pub fn load_params(&self) -> &LoadParams {
        &self.params
    }

    /// Name of the backend the weights live on (e.g. `CPU`, `Vulkan0`).
    pub fn backend_name(&self) -> &str {
        &self.backend_name
    }

    /// Description of the device the model runs on (e.g. the GPU's name).
    pub fn device_description(&self) -> &str {
        &self.device_description
    }

    /// Whether weight data is used in place from the memory-mapped file.
    pub fn weights_are_mapped(&self) -> bool {
        self.weights.mapped
    }

    /// Bytes of weight matrices repacked for the CPU at load (anonymous
    /// memory; 0 when none were, see [`Repack`]).
    pub fn repacked_bytes(&self) -> usize {
        self.weights.repacked.iter().map(Buffer::size).sum()
    }

    /// ggml's names of the buffer types holding repacked matrices (`AMX`,
    /// `CPU_REPACK`), most preferred first; empty when none were repacked.
    pub fn repacked_types(&self) -> Vec<String> {
        self.weights
            .repacked
            .iter()
            .map(Buffer::type_name)
            .collect()
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

/// Reads `len` bytes of a regular file from `offset` into memory, with a clean
/// out-of-memory error.
fn read_range(file: &std::fs::File, offset: u64, len: u64) -> Result<Vec<u8>> {
    crate::gguf::check_range(file, offset, len)?;
    let n =
        usize::try_from(len).map_err(|_| Error::OutOfMemory(format!("a range of {len} bytes")))?;
    let mut bytes = Vec::new();
    bytes
        .try_reserve_exact(n)
        .map_err(|_| Error::OutOfMemory(format!("cannot hold {len} bytes in memory")))?;
    bytes.resize(n, 0);
    read_exact_at(file, &mut bytes, offset)?;
    Ok(bytes)
}

#[cfg(unix)]
fn read_exact_at(file: &std::fs::File, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
    std::os::unix::fs::FileExt::read_exact_at(file, buf, offset)
}

#[cfg(windows)]
fn read_exact_at(file: &std::fs::File, mut buf: &mut [u8], mut offset: u64) -> std::io::Result<()> {
    use std::os::windows::fs::FileExt;
    while !buf.is_empty() {
        match file.seek_read(buf, offset)? {
            0 => return Err(std::io::ErrorKind::UnexpectedEof.into()),
            n => {
                buf = &mut buf[n..];
                offset += n as u64;
            }
        }
    }
    Ok(())
}

/// Reads a regular file into memory: exactly the size it had when opened (a
/// file growing meanwhile is not followed), with a clean out-of-memory error.
fn read_whole(path: &Path) -> Result<Vec<u8>> {
    use std::io::Read;
    let (file, len) = crate::gguf::open_regular_file(path)?;
    let len = usize::try_from(len)
        .map_err(|_| Error::OutOfMemory(format!("{}: {len} bytes", path.display())))?;
    let mut bytes = Vec::new();
    bytes.try_reserve_exact(len).map_err(|_| {
        Error::OutOfMemory(format!(
            "{}: cannot hold {len} bytes in memory",
            path.display()
        ))
    })?;
    file.take(len as u64).read_to_end(&mut bytes)?;
    if bytes.len() != len {
        return Err(Error::Io(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            format!("{}: shrank while being read", path.display()),
        )));
    }
    Ok(bytes)
}
