//! Graph operations. Each wraps one ggml op; shapes are the caller's
//! responsibility (the graph builder derives them from validated model
//! hyper-parameters), and the checks here catch mistakes before ggml would abort.

use super::context::{Context, Tensor};
use super::sys;
use std::ptr::NonNull;

/// RoPE pairing conventions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum RopeMode {
    /// Rotate adjacent pairs `(x[2i], x[2i+1])` (ggml "normal" mode; Huginn).
    Adjacent,
    /// Rotate `(x[i], x[i + n/2])` (GPT-NeoX style).
    Neox,
}

/// Parameters of [`Context::rope`].
#[derive(Clone, Copy)]
pub(crate) struct RopeParams {
    pub mode: RopeMode,
    /// Dimensions rotated at the start of each head (even).
    pub n_dims: i32,
    pub base: f32,
    /// Position scale (1 / the linear scaling factor).
    pub freq_scale: f32,
    /// Per-pair frequency divisors (Llama 3's `rope_freqs.weight`).
    pub factors: Option<Tensor>,
}

fn wrap(t: *mut sys::ggml_tensor) -> Tensor {
    // ggml never returns NULL from op constructors: it aborts on exhaustion, which
    // contexts are sized to avoid. A null here would be a bug in this module.
    match NonNull::new(t) {
        Some(nn) => Tensor(nn),
        None => panic!("ggml returned a null tensor"),
    }
}

impl Context {
    /// Matrix product: `a` is `[k, m]` (weights), `b` is `[k, n]`; result `[m, n]`.
    pub(crate) fn mul_mat(&mut self, a: Tensor, b: Tensor) -> Tensor {
        debug_assert_eq!(a.ne()[0], b.ne()[0]);
        // SAFETY: tensors from live contexts; inner dimensions agree.
        let t = wrap(unsafe { sys::ggml_mul_mat(self.ptr(), a.ptr(), b.ptr()) });
        // Accumulate in f32 on every backend: GPU backends otherwise may use
        // f16 accumulators, and the recurrence compounds that error over its
        // iterations (the CPU always accumulates in f32 and ignores this).
        // SAFETY: a mul_mat node just created in this context.
        unsafe { sys::ggml_mul_mat_set_prec(t.ptr(), sys::GGML_PREC_F32) };
        t
    }

    /// RMS normalisation over ne0 followed by an element-wise weight.
    pub(crate) fn rms_norm(&mut self, x: Tensor, weight: Tensor, eps: f32) -> Tensor {
        // SAFETY: valid tensors; weight broadcasts along rows.
        let n = unsafe { sys::ggml_rms_norm(self.ptr(), x.ptr(), eps) };
        // SAFETY: `n` was just created in this context; `weight` is valid.
        wrap(unsafe { sys::ggml_mul(self.ptr(), n, weight.ptr()) })
    }

    /// Element-wise sum with row broadcasting of `b`.
    pub(crate) fn add(&mut self, a: Tensor, b: Tensor) -> Tensor {
        // SAFETY: valid tensors; b broadcasts into a.
        wrap(unsafe { sys::ggml_add(self.ptr(), a.ptr(), b.ptr()) })
    }

    /// Element-wise difference `a - b`, `b` broadcast over `a`.
    pub(crate) fn sub(&mut self, a: Tensor, b: Tensor) -> Tensor {
        // SAFETY: valid tensors; b repeats into a (caller).
        wrap(unsafe { sys::ggml_sub(self.ptr(), a.ptr(), b.ptr()) })
    }

    /// Element-wise product, `b` broadcast over `a`.
    pub(crate) fn mul(&mut self, a: Tensor, b: Tensor) -> Tensor {
        // SAFETY: valid tensors; b repeats into a (caller).
        wrap(unsafe { sys::ggml_mul(self.ptr(), a.ptr(), b.ptr()) })
    }

    /// Element-wise `e^x`.
    pub(crate) fn exp(&mut self, a: Tensor) -> Tensor {
        // SAFETY: valid tensor.
        wrap(unsafe { sys::ggml_exp(self.ptr(), a.ptr()) })
    }

    /// Element-wise natural logarithm.
    pub(crate) fn log(&mut self, a: Tensor) -> Tensor {
        // SAFETY: valid tensor.
        wrap(unsafe { sys::ggml_log(self.ptr(), a.ptr()) })
    }

    /// Sum of all elements, a one-element tensor.
    pub(crate) fn sum(&mut self, a: Tensor) -> Tensor {
        // SAFETY: valid tensor.
        wrap(unsafe { sys::ggml_sum(self.ptr(), a.ptr()) })
    }

    /// Index of the largest element of each row (I32, first on ties).
    pub(crate) fn argmax(&mut self, a: Tensor) -> Tensor {
        // SAFETY: valid F32 matrix.
        wrap(unsafe { sys::ggml_argmax(self.ptr(), a.ptr()) })
    }

    /// A 1-d view of `n` elements starting at byte `offset`.
    pub(crate) fn view_1d(&mut self, a: Tensor, n: i64, offset: usize) -> Tensor {
        // SAFETY: the view lies inside `a` (caller).
        wrap(unsafe { sys::ggml_view_1d(self.ptr(), a.ptr(), n, offset) })
    }

    /// Multiplies every element by `s`.
    pub(crate) fn scale(&mut self, a: Tensor, s: f32) -> Tensor {
        // SAFETY: valid tensor.
        wrap(unsafe { sys::ggml_scale(self.ptr(), a.ptr(), s) })
    }

    /// Rows of `table` (`[d, n_rows]`) selected by the I32 `ids`; result F32 `[d, n]`.
    pub(crate) fn get_rows(&mut self, table: Tensor, ids: Tensor) -> Tensor {
        // SAFETY: ids are validated against the vocabulary before upload.
        wrap(unsafe { sys::ggml_get_rows(self.ptr(), table.ptr(), ids.ptr()) })
    }

    /// Concatenation along dimension `dim`.
    pub(crate) fn concat(&mut self, a: Tensor, b: Tensor, dim: i32) -> Tensor {
        // SAFETY: other dimensions agree (caller).
        wrap(unsafe { sys::ggml_concat(self.ptr(), a.ptr(), b.ptr(), dim) })
    }

    /// `silu(a) * b`, element-wise.
    pub(crate) fn swiglu(&mut self, a: Tensor, b: Tensor) -> Tensor {
        // SAFETY: same shapes, row-contiguous.
        wrap(unsafe { sys::ggml_swiglu_split(self.ptr(), a.ptr(), b.ptr()) })
    }

    /// 2-D view with explicit row stride and byte offset.
    pub(crate) fn view_2d(
        &mut self,
        a: Tensor,
        ne0: i64,
        ne1: i64,
        nb1: usize,
        offset: usize,
    ) -> Tensor {
        // SAFETY: callers keep the view inside `a`.
        wrap(unsafe { sys::ggml_view_2d(self.ptr(), a.ptr(), ne0, ne1, nb1, offset) })
    }

    /// 3-D view with explicit strides and byte offset.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn view_3d(
        &mut self,
        a: Tensor,
        ne0: i64,
        ne1: i64,
        ne2: i64,
        nb1: usize,
        nb2: usize,
        offset: usize,
    ) -> Tensor {
        // SAFETY: callers keep the view inside `a`.
        wrap(unsafe { sys::ggml_view_3d(self.ptr(), a.ptr(), ne0, ne1, ne2, nb1, nb2, offset) })
    }

    /// Reinterprets a contiguous tensor with a new 2-D shape.
    /// Reshape of a contiguous tensor to 3-D.
    pub(crate) fn reshape_3d(&mut self, a: Tensor, ne0: i64, ne1: i64, ne2: i64) -> Tensor {
        // SAFETY: element counts agree and `a` is contiguous (caller).
        wrap(unsafe { sys::ggml_reshape_3d(self.ptr(), a.ptr(), ne0, ne1, ne2) })
    }

    pub(crate) fn reshape_2d(&mut self, a: Tensor, ne0: i64, ne1: i64) -> Tensor {
        // SAFETY: element counts agree (caller).
        wrap(unsafe { sys::ggml_reshape_2d(self.ptr(), a.ptr(), ne0, ne1) })
    }

    /// Reorders dimensions.
    pub(crate) fn permute(&mut self, a: Tensor, p: [i32; 4]) -> Tensor {
        // SAFETY: p is a permutation of 0..4.
        wrap(unsafe { sys::ggml_permute(self.ptr(), a.ptr(), p[0], p[1], p[2], p[3]) })
    }

    /// Swaps the first two dimensions (a view).
    pub(crate) fn transpose(&mut self, a: Tensor) -> Tensor {
        // SAFETY: valid tensor.
        wrap(unsafe { sys::ggml_transpose(self.ptr(), a.ptr()) })
    }

    /// Makes a contiguous copy with the given 2-D shape.
    /// A contiguous copy of `a` (same shape).
    pub(crate) fn cont(&mut self, a: Tensor) -> Tensor {
        // SAFETY: valid tensor.
        wrap(unsafe { sys::ggml_cont(self.ptr(), a.ptr()) })
    }

    pub(crate) fn cont_2d(&mut self, a: Tensor, ne0: i64, ne1: i64) -> Tensor {
        // SAFETY: element counts agree (caller).
        wrap(unsafe { sys::ggml_cont_2d(self.ptr(), a.ptr(), ne0, ne1) })
    }

    /// Copies `src` into `dst` (converting type); returns the op node.
    pub(crate) fn cpy(&mut self, src: Tensor, dst: Tensor) -> Tensor {
        // SAFETY: same element counts (caller).
        wrap(unsafe { sys::ggml_cpy(self.ptr(), src.ptr(), dst.ptr()) })
    }

    /// `a` converted to type `ty` (a new tensor).
    pub(crate) fn cast(&mut self, a: Tensor, ty: crate::gguf::GgmlType) -> Tensor {
        // SAFETY: valid tensor; ggml converts between float types.
        wrap(unsafe { sys::ggml_cast(self.ptr(), a.ptr(), super::ggml_type(ty)) })
    }

    /// Fused attention: `softmax(k^T q * scale + mask) v` per head, never
    /// materialising the scores. `q` is `[head_dim, n, n_head]`, `k` and `v`
    /// `[head_dim, n_kv, n_head_kv]` (`n_head` a multiple of `n_head_kv`),
    /// `mask` F16 `[n_kv, n]`; the result is `[head_dim, n_head, n]`.
    /// Accumulates in f32.
    pub(crate) fn flash_attn(
        &mut self,
        q: Tensor,
        k: Tensor,
        v: Tensor,
        mask: Tensor,
        scale: f32,
    ) -> Tensor {
        debug_assert_eq!(q.ne()[0], k.ne()[0]);
        debug_assert_eq!(q.ne()[2] % k.ne()[2], 0);
        // SAFETY: shapes as documented (caller); mask is F16 and contiguous.
        let t = wrap(unsafe {
            sys::ggml_flash_attn_ext(
                self.ptr(),
                q.ptr(),
                k.ptr(),
                v.ptr(),
                mask.ptr(),
                scale,
                0.0,
                0.0,
            )
        });
        // SAFETY: `t` is a flash-attention node.
        unsafe { sys::ggml_flash_attn_ext_set_prec(t.ptr(), sys::GGML_PREC_F32) };
        t
    }

    /// Softmax over rows of `a * scale + mask` (mask `[ne0, >= ne1]`).
    pub(crate) fn soft_max_masked(&mut self, a: Tensor, mask: Tensor, scale: f32) -> Tensor {
        // SAFETY: mask shape matches (caller).
        wrap(unsafe { sys::ggml_soft_max_ext(self.ptr(), a.ptr(), mask.ptr(), scale, 0.0) })
    }

    /// Rotary position embedding over the first `n_dims` of each head.
    /// `a` is `[head_dim, n_heads, n_tokens]`, `pos` an I32 `[n_tokens]`;
    /// angles are `pos * freq_scale / (base^(2i/n_dims) * factor_i)`, with the
    /// per-pair `factors` (F32 `[n_dims / 2]`) 1 when absent.
    pub(crate) fn rope(&mut self, a: Tensor, pos: Tensor, rope: &RopeParams) -> Tensor {
        let mode = match rope.mode {
            RopeMode::Adjacent => 0,
            RopeMode::Neox => 2,
        };
        let factors = rope.factors.map_or(std::ptr::null_mut(), |t| t.ptr());
        // SAFETY: shapes checked by the caller (`factors` was bound with
        // n_dims / 2 elements); no YaRN extrapolation.
        wrap(unsafe {
            sys::ggml_rope_ext(
                self.ptr(),
                a.ptr(),
                pos.ptr(),
                factors,
                rope.n_dims,
                mode,
                0,
                rope.base,
                rope.freq_scale,
                0.0,
                1.0,
                0.0,
                0.0,
            )
        })
    }
}
