//! Repacked CPU weights: ggml's `CPU_REPACK` buffer type, which stores weight
//! matrices of some quantized types with the blocks of several rows
//! interleaved, so that its matrix-vector and matrix-matrix kernels read them
//! in one stream. Which types and shapes qualify depends on the CPU ggml runs
//! on (x86-64 with AVX2: Q4_0, Q4_K, IQ4_NL; ARM with dot product or int8
//! matrix instructions: also Q5_K, Q6_K and Q8_0), and ggml decides it per
//! tensor when asked whether it supports a product with that weight. On Xeons
//! with AMX (AVX-512 builds), ggml's `AMX` buffer type comes first: its own
//! layout for Q4_0, Q4_1, Q8_0 and some K types, with kernels on AVX-512 VNNI
//! for one row and on AMX tiles for batches.
//!
//! Repacked data lives in anonymous memory the buffer owns (a copy of the
//! mapped bytes in another layout): the file's pages are no longer read after
//! loading, and the copy is not shared with other processes mapping the file.

use super::backend::Buffer;
use super::context::Context;
use super::sys;
use crate::error::{Error, Result};
use crate::gguf::GgmlType;
use std::ffi::CStr;
use std::ptr::NonNull;

/// The CPU's repacking buffer types this build and CPU have, in order of
/// preference: ggml's `AMX` type (AVX-512 builds on CPUs whose kernel grants
/// the AMX tile state: Q4_0, Q4_1, Q8_0 and some K types, products on AVX-512
/// VNNI for one row and AMX tiles for batches), then `CPU_REPACK`.
#[derive(Clone)]
pub(crate) struct RepackBuffers {
    bufts: Vec<sys::ggml_backend_buffer_type_t>,
    cpu: sys::ggml_backend_dev_t,
}

/// The names of the buffer types used, most preferred first.
const PREFERRED: [&[u8]; 2] = [b"AMX", b"CPU_REPACK"];

impl RepackBuffers {
    /// Finds the repacking buffer types among the CPU device's extra buffer
    /// types; `None` when ggml offers none (a build without repacking).
    /// ggml's backends must be initialised (any [`super::Backend`] does it).
    pub(crate) fn find() -> Option<RepackBuffers> {
        // The CPU device of the kernels this process runs (ggml-sys's
        // `cpu_backend`): only their copy of ggml's CPU code recognises the
        // buffers its repacking buffer types make.
        // SAFETY: returns the (static) registry of that copy's CPU backend.
        let reg = unsafe { (sys::cpu::cpu_backend().backend_cpu_reg)() };
        if reg.is_null() {
            return None;
        }
        // SAFETY: valid registry; the CPU registry has one device; NULL-checked.
        let cpu = unsafe { sys::ggml_backend_reg_dev_get(reg, 0) };
        if cpu.is_null() {
            return None;
        }
        // SAFETY: valid registry and NUL-terminated name; NULL when unknown.
        let f = unsafe {
            sys::ggml_backend_reg_get_proc_address(
                reg,
                c"ggml_backend_dev_get_extra_bufts".as_ptr(),
            )
        };
        if f.is_null() {
            return None;
        }
        // SAFETY: the CPU registry returns this name's function, whose type
        // is `ggml_backend_dev_get_extra_bufts_t` (ggml-backend.h).
        let get: sys::ggml_backend_dev_get_extra_bufts_t = unsafe { std::mem::transmute(f) };
        let get = get?;
        // SAFETY: returns a NULL-terminated static array of buffer types.
        let mut p = unsafe { get(cpu) };
        if p.is_null() {
            return None;
        }
        let mut found: Vec<(usize, sys::ggml_backend_buffer_type_t)> = Vec::new();
        loop {
            // SAFETY: `p` points into the NULL-terminated array.
            let buft = unsafe { *p };
            if buft.is_null() {
                break;
            }
            // SAFETY: a valid buffer type has a static NUL-terminated name.
            let name = unsafe { CStr::from_ptr(sys::ggml_backend_buft_name(buft)) };
            if let Some(rank) = PREFERRED.iter().position(|n| *n == name.to_bytes()) {
                found.push((rank, buft));
            }
            // SAFETY: not at the terminator yet, so the next element exists.
            p = unsafe { p.add(1) };
        }
        found.sort_by_key(|&(rank, _)| rank);
        let bufts: Vec<_> = found.into_iter().map(|(_, b)| b).collect();
        (!bufts.is_empty()).then_some(RepackBuffers { bufts, cpu })
    }

    /// How many buffer types there are (the range of [`RepackBuffers::choose`]).
    pub(crate) fn len(&self) -> usize {
        self.bufts.len()
    }

    /// The most preferred buffer type with a kernel for products with a
    /// weight of type `ty` and shape `[ne0, ne1]`; `None` when none has one.
    pub(crate) fn choose(&self, ty: GgmlType, ne0: usize, ne1: usize) -> Result<Option<usize>> {
        for i in 0..self.bufts.len() {
            if self.supports(i, ty, ne0, ne1)? {
                return Ok(Some(i));
            }
        }
        Ok(None)
    }

    /// Whether ggml has a kernel, on this CPU, for products with a weight of
    /// type `ty` and shape `[ne0, ne1]` in buffer type `i` (asked as llama.cpp
    /// does: a product whose weight sits in a buffer of that type).
    fn supports(&self, i: usize, ty: GgmlType, ne0: usize, ne1: usize) -> Result<bool> {
        let mut ctx = Context::new(4, 0)?;
        let w = ctx.new_tensor(ty, &[ne0 as i64, ne1 as i64])?;
        let x = ctx.new_tensor(GgmlType::F32, &[ne0 as i64, 1])?;
        let op = ctx.mul_mat(w, x);
        // SAFETY: a zero-size buffer of this type is a dummy with no memory.
        let dummy = NonNull::new(unsafe { sys::ggml_backend_buft_alloc_buffer(self.bufts[i], 0) })
            .ok_or_else(|| Error::OutOfMemory("a repack buffer handle".into()))?;
        // SAFETY: `w` is metadata in our no_alloc context; pointing its buffer
        // at the dummy only tells supports_op where the weight would live, and
        // the field is cleared before the dummy is freed.
        let ok = unsafe {
            (*w.ptr()).buffer = dummy.as_ptr();
            let ok = sys::ggml_backend_dev_supports_op(self.cpu, op.ptr());
            (*w.ptr()).buffer = std::ptr::null_mut();
            sys::ggml_backend_buffer_free(dummy.as_ptr());
            ok
        };
        Ok(ok)
    }

    /// Allocates every not yet allocated tensor of `ctx` in one buffer of
    /// type `i` (all of them must have been [`RepackBuffers::choose`]n for
    /// it); `None` when there is none. Data written to them afterwards
    /// ([`Tensor::write_bytes`] of the whole tensor) is repacked.
    pub(crate) fn alloc_rest(&self, i: usize, ctx: &Context) -> Result<Option<Buffer>> {
        if !ctx.tensors().any(|t| t.data_ptr().is_null()) {
            return Ok(None);
        }
        // SAFETY: valid no_alloc context and buffer type; allocated tensors
        // are skipped; NULL on allocation failure.
        let buf =
            unsafe { sys::ggml_backend_alloc_ctx_tensors_from_buft(ctx.ptr(), self.bufts[i]) };
        NonNull::new(buf)
            .map(|b| Some(Buffer::from_raw(b)))
            .ok_or_else(|| Error::OutOfMemory("repacked weights".into()))
    }
}
