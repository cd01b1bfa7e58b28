//! Binding GGUF tensors to ggml tensors: names, shapes and types are checked
//! against the configuration, then the data is used where it is mapped (CPU,
//! and devices that can wrap host memory such as Metal) or uploaded once (Vulkan).

use super::arch::{huginn, llama, ouro};
use super::config::{Architecture, ModelConfig};
use crate::error::{Error, Result};
use crate::ggml::{Backend, Buffer, Context, RepackBuffers, Tensor};
use crate::gguf::{GgmlType, GgufFile, TensorInfo};
use std::collections::HashSet;

/// Query, key and value projections of a block.
pub(crate) enum QkvWeights {
    /// One matrix whose output rows are q, then k, then v (`attn_qkv`).
    Fused(Tensor),
    /// Three matrices (`attn_q`, `attn_k`, `attn_v`).
    Split { q: Tensor, k: Tensor, v: Tensor },
}

/// The two MLP input projections (SwiGLU gate and up).
pub(crate) enum GateUpWeights {
    /// One matrix whose output rows are gate, then up (`ffn_gate_up`).
    Fused(Tensor),
    /// Two matrices (`ffn_gate`, `ffn_up`).
    Split { gate: Tensor, up: Tensor },
}

/// Weights of one transformer block (any architecture's; the block graph
/// of its architecture file says which norms it uses).
pub(crate) struct BlockWeights {
    pub attn_norm: Tensor,
    pub qkv: QkvWeights,
    pub q_bias: Option<Tensor>,
    pub k_bias: Option<Tensor>,
    pub v_bias: Option<Tensor>,
    pub attn_output: Tensor,
    /// Norm after the attention's residual add (sandwich blocks).
    pub attn_post_norm: Option<Tensor>,
    pub ffn_norm: Tensor,
    pub gate_up: GateUpWeights,
    pub ffn_down: Tensor,
    /// Norm after the MLP's residual add (sandwich blocks).
    pub ffn_post_norm: Option<Tensor>,
}

impl BlockWeights {
    /// Bytes of the block's weight matrices (what one pass streams).
    pub(crate) fn matrix_bytes(&self) -> usize {
        let qkv = match &self.qkv {
            QkvWeights::Fused(t) => t.nbytes(),
            QkvWeights::Split { q, k, v } => q.nbytes() + k.nbytes() + v.nbytes(),
        };
        let gate_up = match &self.gate_up {
            GateUpWeights::Fused(t) => t.nbytes(),
            GateUpWeights::Split { gate, up } => gate.nbytes() + up.nbytes(),
        };
        qkv + gate_up + self.attn_output.nbytes() + self.ffn_down.nbytes()
    }
}

/// The tensors an architecture binds besides the token embedding.
pub(crate) struct ArchTensors {
    /// Blocks in file order: prelude, core, coda.
    pub blocks: Vec<BlockWeights>,
    /// `[2d, d]` map of `concat(state, embedding)` at the start of each
    /// recurrence (`None` without recurrence).
    pub adapter: Option<Tensor>,
    pub output_norm: Tensor,
    /// `None` when tied to `token_embd`.
    pub output: Option<Tensor>,
    /// Per-pair RoPE frequency divisors (`rope_freqs.weight`), if any.
    pub rope_factors: Option<Tensor>,
}

/// All weights of a model, as ggml tensors in the model's context.
pub(crate) struct Weights {
    pub token_embd: Tensor,
    /// Blocks in file order: prelude, core, coda.
    pub blocks: Vec<BlockWeights>,
    pub adapter: Option<Tensor>,
    pub output_norm: Tensor,
    /// `None` when tied to `token_embd` (unless repacking made the head a
    /// repacked copy of it).
    pub output: Option<Tensor>,
    pub rope_factors: Option<Tensor>,
    /// Keeps the ggml tensor metadata alive.
    _ctx: Context,
    /// Metadata of the repacked matrices, one context per buffer type.
    _repack_ctx: Vec<Context>,
    /// The buffer holding (or wrapping) the data.
    pub buffer: Buffer,
    /// The repacked matrices' data (anonymous memory), one buffer per
    /// repacking buffer type used.
    pub repacked: Vec<Buffer>,
    /// Whether the data is used in place from the memory map.
    pub mapped: bool,
}

/// The token embedding (read by rows, and the head when tied).
const EMBEDDING: &str = "token_embd.weight";

/// Alignment ggml requires of host memory wrapped as a buffer.
const HOST_PTR_ALIGNMENT: usize = 32;

/// Types accepted for weight matrices.
const MATRIX_TYPES: &[GgmlType] = &[
    GgmlType::F32,
    GgmlType::F16,
    GgmlType::BF16,
    GgmlType::Q8_0,
    GgmlType::Q4_0,
    GgmlType::Q4_1,
    GgmlType::Q5_0,
    GgmlType::Q5_1,
    GgmlType::Q2_K,
    GgmlType::Q3_K,
    GgmlType::Q4_K,
    GgmlType::Q5_K,
    GgmlType::Q6_K,
];

/// What a tensor is used as: a matrix of products (any supported type) or
/// a vector (norm weights, biases: F32).
#[derive(Clone, Copy)]
pub(crate) enum Kind {
    Matrix,
    Vector,
}

/// Collects the expected tensors, checking each one as it is requested.
pub(crate) struct Binder<'a> {
    file: &'a GgufFile,
    ctx: Context,
    bound: Vec<(Tensor, &'a TensorInfo)>,
    seen: HashSet<&'a str>,
    /// Where matrices go that ggml can repack for this CPU (when repacking).
    repack: Option<RepackBuffers>,
    /// Per repacking buffer type: the metadata and the tensors bound there.
    repack_ctx: Vec<Context>,
    repack_bound: Vec<Vec<(Tensor, &'a TensorInfo)>>,
}

impl<'a> Binder<'a> {
    /// A tensor that must be present, with this shape (ggml order).
    pub(crate) fn get(&mut self, name: &str, shape: &[usize], kind: Kind) -> Result<Tensor> {
        self.opt(name, shape, kind)?
            .ok_or_else(|| Error::InvalidModel(format!("missing tensor {name}")))
    }

    /// A tensor that may be absent; when present it must have this shape.
    pub(crate) fn opt(
        &mut self,
        name: &str,
        shape: &[usize],
        kind: Kind,
    ) -> Result<Option<Tensor>> {
        let Some(info) = self.file.tensor(name) else {
            return Ok(None);
        };
        let actual: Vec<u64> = info.shape.clone();
        let want: Vec<u64> = shape.iter().map(|&n| n as u64).collect();
        if actual != want {
            return Err(Error::InvalidModel(format!(
                "tensor {name} has shape {actual:?}, expected {want:?}"
            )));
        }
        let ok = match kind {
            Kind::Matrix => MATRIX_TYPES.contains(&info.ty),
            Kind::Vector => info.ty == GgmlType::F32,
        };
        if !ok {
            return Err(Error::InvalidModel(format!(
                "tensor {name} has unsupported type {}",
                info.ty.name()
            )));
        }
        if info.ty.row_size(shape[0] as u64).is_none() {
            return Err(Error::InvalidModel(format!(
                "tensor {name}: row length {} is not a multiple of {}'s block size {}",
                shape[0],
                info.ty.name(),
                info.ty.block_size()
            )));
        }
        let ne: Vec<i64> = shape.iter().map(|&n| n as i64).collect();
        // Matrices of products only: the embedding is also read by rows.
        let repack = match (&self.repack, kind) {
            (Some(r), Kind::Matrix) if name != EMBEDDING && shape.len() == 2 => {
                r.choose(info.ty, shape[0], shape[1])?
            }
            _ => None,
        };
        let ctx = match repack {
            Some(i) => &mut self.repack_ctx[i],
            None => &mut self.ctx,
        };
        let t = ctx.new_tensor(info.ty, &ne)?;
        t.set_name(name);
        if t.nbytes() as u64 != info.size {
            return Err(Error::InvalidModel(format!("tensor {name}: size mismatch")));
        }
        self.seen.insert(info.name.as_str());
        match repack {
            Some(i) => self.repack_bound[i].push((t, info)),
            None => self.bound.push((t, info)),
        }
        Ok(Some(t))
    }
}

impl Binder<'_> {
    /// With the head tied to the token embedding, a repacked copy of the
    /// embedding for the head's products, when ggml has a faster kernel for
    /// it on this CPU (the embedding itself stays as stored: it is also read
    /// by rows). `None` when not repacking or no kernel applies. Costs the
    /// embedding's size again in anonymous memory (counted as repacked).
    fn repacked_head_copy(&mut self) -> Result<Option<Tensor>> {
        let (Some(r), Some(info)) = (&self.repack, self.file.tensor(EMBEDDING)) else {
            return Ok(None);
        };
        let [ne0, ne1] = info.shape[..] else {
            return Ok(None);
        };
        let Some(i) = r.choose(info.ty, ne0 as usize, ne1 as usize)? else {
            return Ok(None);
        };
        let t = self.repack_ctx[i].new_tensor(info.ty, &[ne0 as i64, ne1 as i64])?;
        t.set_name("output.weight (token_embd)");
        self.repack_bound[i].push((t, info));
        Ok(Some(t))
    }
}

/// The separate projections of block `i` in the llama.cpp layout
/// (`attn_q`, `attn_k`, `attn_v`, `attn_output`, `ffn_gate`, `ffn_up`,
/// `ffn_down`), shared by the architectures that store them so.
pub(crate) struct SplitProjections {
    pub qkv: QkvWeights,
    pub attn_output: Tensor,
    pub gate_up: GateUpWeights,
    pub ffn_down: Tensor,
}

impl Binder<'_> {
    /// Binds block `i`'s separate projections.
    pub(crate) fn split_projections(
        &mut self,
        i: usize,
        cfg: &ModelConfig,
    ) -> Result<SplitProjections> {
        let d = cfg.n_embd;
        let (q_dim, kv_dim) = (cfg.q_dim(), cfg.kv_dim());
        let n = |s: &str| format!("blk.{i}.{s}");
        Ok(SplitProjections {
            qkv: QkvWeights::Split {
                q: self.get(&n("attn_q.weight"), &[d, q_dim], Kind::Matrix)?,
                k: self.get(&n("attn_k.weight"), &[d, kv_dim], Kind::Matrix)?,
                v: self.get(&n("attn_v.weight"), &[d, kv_dim], Kind::Matrix)?,
            },
            attn_output: self.get(&n("attn_output.weight"), &[q_dim, d], Kind::Matrix)?,
            gate_up: GateUpWeights::Split {
                gate: self.get(&n("ffn_gate.weight"), &[d, cfg.n_ff], Kind::Matrix)?,
                up: self.get(&n("ffn_up.weight"), &[d, cfg.n_ff], Kind::Matrix)?,
            },
            ffn_down: self.get(&n("ffn_down.weight"), &[cfg.n_ff, d], Kind::Matrix)?,
        })
    }
}

/// Writes each tensor's bytes from the file into its allocated buffer,
/// reporting the fraction of `total` bytes done after each.
fn write_all(
    file: &GgufFile,
    tensors: &[(Tensor, &TensorInfo)],
    done: &mut usize,
    total: usize,
    progress: &mut dyn FnMut(f32) -> bool,
) -> Result<()> {
    for (t, info) in tensors {
        t.write_bytes(0, file.tensor_data(info))?;
        *done += t.nbytes();
        if !progress(*done as f32 / total.max(1) as f32) {
            return Err(Error::Cancelled);
        }
    }
    Ok(())
}

impl Weights {
    /// Binds every tensor of `file` according to `cfg` and makes the data
    /// available to `backend`; with `repack` on the CPU, the matrices ggml
    /// can repack for this CPU are repacked (copied into anonymous memory in
    /// an interleaved layout). `progress` receives the fraction placed (0..=1)
    /// and stops the load with [`Error::Cancelled`] by returning false.
    pub(crate) fn load(
        file: &GgufFile,
        cfg: &ModelConfig,
        backend: &Backend,
        repack: bool,
        prefetch: bool,
        progress: &mut dyn FnMut(f32) -> bool,
    ) -> Result<Weights> {
        let n_tensors = file.tensors().len();
        let repack = if repack && backend.is_cpu() {
            RepackBuffers::find()
        } else {
            None
        };
        let n_repack = repack.as_ref().map_or(0, RepackBuffers::len);
        let mut b = Binder {
            file,
            ctx: Context::new(n_tensors + 8, 0)?,
            bound: Vec::new(),
            seen: HashSet::new(),
            repack,
            repack_ctx: (0..n_repack)
                .map(|_| Context::new(n_tensors + 8, 0))
                .collect::<Result<_>>()?,
            repack_bound: vec![Vec::new(); n_repack],
        };
        let token_embd = b.get(EMBEDDING, &[cfg.n_embd, cfg.n_vocab], Kind::Matrix)?;
        let arch = match cfg.architecture {
            Architecture::Huginn => huginn::bind(&mut b, cfg)?,
            Architecture::Llama => llama::bind(&mut b, cfg)?,
            Architecture::Ouro => ouro::bind(&mut b, cfg)?,
        };
        if let Some(extra) = file
            .tensors()
            .iter()
            .find(|t| !b.seen.contains(t.name.as_str()))
        {
            return Err(Error::InvalidModel(format!(
                "unexpected tensor {}",
                extra.name
            )));
        }
        let output = match arch.output {
            Some(o) => Some(o),
            None => b.repacked_head_copy()?,
        };
        let Binder {
            ctx,
            bound,
            repack,
            repack_ctx,
            repack_bound,
            ..
        } = b;
        let repack_total: usize = repack_bound.iter().flatten().map(|(t, _)| t.nbytes()).sum();
        let total: usize = bound.iter().map(|(t, _)| t.nbytes()).sum::<usize>() + repack_total;
        // ggml wraps host memory only at 32-byte alignment; a page-aligned mapping
        // always qualifies, an in-memory copy may not (then the data is copied).
        let aligned = (file.bytes().as_ptr() as usize).is_multiple_of(HOST_PTR_ALIGNMENT);
        let mut done = 0usize;
        let (buffer, mapped) = if backend.maps_host_memory() && aligned {
            // Use the weights where they are mapped: wrap the whole file.
            let bytes = file.bytes();
            let max_tensor = bound.iter().map(|(t, _)| t.nbytes()).max().unwrap_or(0);
            backend.check_fits(bytes.len(), "the memory-mapped weights")?;
            let buffer = backend.host_buffer_from_ptr(bytes.as_ptr(), bytes.len(), max_tensor)?;
            for (t, info) in &bound {
                let data = file.tensor_data(info);
                buffer.place(*t, data.as_ptr())?;
                if prefetch {
                    touch_pages(data);
                    if !progress(done as f32 / total.max(1) as f32) {
                        return Err(Error::Cancelled);
                    }
                }
                done += t.nbytes();
            }
            (buffer, true)
        } else {
            // Upload once: device memory (or a host copy), filled tensor by tensor.
            backend.check_fits(total, "the weights")?;
            let buffer = backend.alloc_ctx_tensors(&ctx)?;
            write_all(file, &bound, &mut done, total, progress)?;
            (buffer, false)
        };
        // Repacked matrices: written whole, which converts their layout.
        let mut repacked = Vec::new();
        if let Some(r) = &repack {
            backend.check_fits(repack_total, "the repacked weights")?;
            for (i, (rctx, rbound)) in repack_ctx.iter().zip(&repack_bound).enumerate() {
                if rbound.is_empty() {
                    continue;
                }
                let buf = r.alloc_rest(i, rctx)?;
                write_all(file, rbound, &mut done, total, progress)?;
                repacked.extend(buf);
            }
        }
        if !progress(1.0) {
            return Err(Error::Cancelled);
        }
        Ok(Weights {
            token_embd,
            blocks: arch.blocks,
            adapter: arch.adapter,
            output_norm: arch.output_norm,
            output,
            rope_factors: arch.rope_factors,
            _ctx: ctx,
            _repack_ctx: repack_ctx,
            buffer,
            repacked,
            mapped,
        })
    }

    /// The matrix used as output head.
    pub(crate) fn head(&self) -> Tensor {
        self.output.unwrap_or(self.token_embd)
    }
}

/// Reads one byte of every page of `data`, so that the pages of a mapped file
/// are read in (or found in the page cache) and mapped now rather than on
/// first use by a graph.
fn touch_pages(data: &[u8]) {
    const PAGE: usize = 4096;
    let mut sum = 0u8;
    for chunk in data.chunks(PAGE) {
        sum = sum.wrapping_add(chunk[0]);
    }
    std::hint::black_box(sum);
}
