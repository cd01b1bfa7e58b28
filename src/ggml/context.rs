//! ggml contexts (tensor metadata arenas), tensor handles and graphs.

use super::{ggml_type, sys};
use crate::error::{Error, Result};
use crate::gguf::GgmlType;
use std::ffi::CString;
use std::ptr::NonNull;

/// A handle to a tensor owned by a [`Context`]. Copyable; valid while that
/// context lives and has not been reset.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Tensor(pub(super) NonNull<sys::ggml_tensor>);

// SAFETY: a Tensor is a pointer to metadata that is only mutated while the owning
// context is exclusively borrowed (graph building) or by ggml during a compute the
// owner drives; weight tensors are read-only after load and may be shared.
unsafe impl Send for Tensor {}
// SAFETY: see above; shared access only reads.
unsafe impl Sync for Tensor {}

impl Tensor {
    pub(super) fn ptr(self) -> *mut sys::ggml_tensor {
        self.0.as_ptr()
    }

    fn raw(&self) -> &sys::ggml_tensor {
        // SAFETY: the handle points into a live context (module invariant).
        unsafe { self.0.as_ref() }
    }

    /// Number of elements along each of the four dimensions (ne0 first).
    pub(crate) fn ne(&self) -> [i64; 4] {
        self.raw().ne
    }

    /// Stride in bytes of each dimension.
    pub(crate) fn nb(&self) -> [usize; 4] {
        self.raw().nb
    }

    /// Total bytes of the tensor's data.
    pub(crate) fn nbytes(&self) -> usize {
        // SAFETY: valid tensor pointer.
        unsafe { sys::ggml_nbytes(self.ptr()) }
    }

    /// Address of the tensor's data (null until allocated).
    pub(crate) fn data_ptr(&self) -> *const u8 {
        self.raw().data as *const u8
    }

    /// Whether the tensor has memory (a tensor no graph node uses never does).
    pub(crate) fn is_allocated(&self) -> bool {
        !self.data_ptr().is_null()
    }

    /// Marks the tensor as a graph input (allocated before the graph's other tensors).
    pub(crate) fn set_input(self) {
        // SAFETY: valid tensor pointer.
        unsafe { sys::ggml_set_input(self.ptr()) }
    }

    /// Marks the tensor as a graph output (its memory is not reused inside the graph).
    pub(crate) fn set_output(self) {
        // SAFETY: valid tensor pointer.
        unsafe { sys::ggml_set_output(self.ptr()) }
    }

    /// Uploads `data` into the tensor at byte `offset` (tensor must be allocated).
    pub(crate) fn write_bytes(self, offset: usize, data: &[u8]) -> Result<()> {
        if self.data_ptr().is_null() || offset.saturating_add(data.len()) > self.nbytes() {
            return Err(Error::Backend(
                "tensor write out of bounds or unallocated".into(),
            ));
        }
        // SAFETY: range checked above; the tensor is allocated in a backend buffer.
        unsafe {
            sys::ggml_backend_tensor_set(self.ptr(), data.as_ptr().cast(), offset, data.len())
        };
        Ok(())
    }

    /// Uploads f32 values (the tensor must be F32 and large enough).
    pub(crate) fn write_f32(self, offset_elems: usize, data: &[f32]) -> Result<()> {
        let bytes: &[u8] = f32_bytes(data);
        self.write_bytes(offset_elems * 4, bytes)
    }

    /// Uploads i32 values.
    pub(crate) fn write_i32(self, data: &[i32]) -> Result<()> {
        // SAFETY: i32 has no padding and any byte pattern read back is valid.
        let bytes =
            unsafe { std::slice::from_raw_parts(data.as_ptr().cast::<u8>(), data.len() * 4) };
        self.write_bytes(0, bytes)
    }

    /// Downloads f32 values starting at element `offset_elems` into `out`.
    pub(crate) fn read_f32(self, offset_elems: usize, out: &mut [f32]) -> Result<()> {
        let offset = offset_elems * 4;
        let size = out.len() * 4;
        if self.data_ptr().is_null() || offset.saturating_add(size) > self.nbytes() {
            return Err(Error::Backend(
                "tensor read out of bounds or unallocated".into(),
            ));
        }
        // SAFETY: range checked; `out` is a writable region of `size` bytes.
        unsafe { sys::ggml_backend_tensor_get(self.ptr(), out.as_mut_ptr().cast(), offset, size) };
        Ok(())
    }

    /// Downloads `out.len()` bytes from byte `offset` of the tensor.
    pub(crate) fn read_bytes(self, offset: usize, out: &mut [u8]) -> Result<()> {
        if self.data_ptr().is_null() || offset.saturating_add(out.len()) > self.nbytes() {
            return Err(Error::Backend(
                "tensor read out of bounds or unallocated".into(),
            ));
        }
        // SAFETY: range checked; `out` is a writable region of its length.
        unsafe {
            sys::ggml_backend_tensor_get(self.ptr(), out.as_mut_ptr().cast(), offset, out.len())
        };
        Ok(())
    }

    /// Downloads i32 values from the start of an I32 tensor into `out`.
    pub(crate) fn read_i32(self, out: &mut [i32]) -> Result<()> {
        let size = out.len() * 4;
        if self.data_ptr().is_null() || size > self.nbytes() {
            return Err(Error::Backend(
                "tensor read out of bounds or unallocated".into(),
            ));
        }
        // SAFETY: range checked; `out` is a writable region of `size` bytes and
        // any bit pattern is a valid i32.
        unsafe { sys::ggml_backend_tensor_get(self.ptr(), out.as_mut_ptr().cast(), 0, size) };
        Ok(())
    }

    /// Sets the tensor's debug name.
    pub(crate) fn set_name(self, name: &str) {
        if let Ok(c) = CString::new(name) {
            // SAFETY: valid tensor; ggml copies (and truncates) the name.
            unsafe { sys::ggml_set_name(self.ptr(), c.as_ptr()) };
        }
    }
}

fn f32_bytes(data: &[f32]) -> &[u8] {
    // SAFETY: f32 has no padding; reading its bytes is always valid.
    unsafe { std::slice::from_raw_parts(data.as_ptr().cast::<u8>(), std::mem::size_of_val(data)) }
}

/// An arena of tensor metadata (`no_alloc`: data lives in backend buffers).
pub(crate) struct Context {
    ctx: NonNull<sys::ggml_context>,
    /// Backing memory for the arena, owned here so that `reset` never allocates.
    _mem: Vec<u8>,
}

// SAFETY: the context is only touched through &mut self (building) or read-only.
unsafe impl Send for Context {}
// SAFETY: shared references only read tensor metadata.
unsafe impl Sync for Context {}

impl Context {
    /// Creates an arena able to hold `max_tensors` tensors and, optionally, one
    /// graph of `graph_size` nodes.
    pub(crate) fn new(max_tensors: usize, graph_size: usize) -> Result<Context> {
        // SAFETY: pure size queries.
        let overhead = unsafe { sys::ggml_tensor_overhead() };
        let mut size = max_tensors.saturating_mul(overhead).saturating_add(1024);
        if graph_size > 0 {
            // SAFETY: pure size query.
            size =
                size.saturating_add(unsafe { sys::ggml_graph_overhead_custom(graph_size, false) });
        }
        let mut mem = Vec::new();
        mem.try_reserve_exact(size)
            .map_err(|_| Error::OutOfMemory(format!("ggml context of {size} bytes")))?;
        mem.resize(size, 0u8);
        let params = sys::ggml_init_params {
            mem_size: size,
            mem_buffer: mem.as_mut_ptr().cast(),
            no_alloc: true,
        };
        // SAFETY: the buffer outlives the context (both owned by Self; the context
        // is freed in Drop before `mem`).
        let ctx = unsafe { sys::ggml_init(params) };
        let ctx = NonNull::new(ctx).ok_or_else(|| Error::OutOfMemory("ggml_init".into()))?;
        Ok(Context { ctx, _mem: mem })
    }

    pub(super) fn ptr(&self) -> *mut sys::ggml_context {
        self.ctx.as_ptr()
    }

    /// Every tensor of this context, in creation order.
    pub(crate) fn tensors(&self) -> impl Iterator<Item = Tensor> + '_ {
        // SAFETY: valid context; NULL ends the list.
        let first = unsafe { sys::ggml_get_first_tensor(self.ptr()) };
        std::iter::successors(NonNull::new(first), move |t| {
            // SAFETY: `t` is a tensor of this context.
            NonNull::new(unsafe { sys::ggml_get_next_tensor(self.ptr(), t.as_ptr()) })
        })
        .map(Tensor)
    }

    /// Forgets every tensor and graph of this context (handles become invalid).
    pub(crate) fn reset(&mut self) {
        // SAFETY: valid context; callers drop their handles (module invariant).
        unsafe { sys::ggml_reset(self.ptr()) }
    }

    /// Creates a tensor of type `ty` and shape `ne` (1 to 4 dims, ne0 first).
    pub(crate) fn new_tensor(&mut self, ty: GgmlType, ne: &[i64]) -> Result<Tensor> {
        if ne.is_empty() || ne.len() > 4 || ne.iter().any(|&n| n <= 0) {
            return Err(Error::Backend(format!("invalid tensor shape {ne:?}")));
        }
        // SAFETY: shape validated; the context has room (sized by the caller; ggml
        // returns NULL-free or aborts, so callers size contexts generously).
        let t = unsafe {
            sys::ggml_new_tensor(self.ptr(), ggml_type(ty), ne.len() as i32, ne.as_ptr())
        };
        NonNull::new(t)
            .map(Tensor)
            .ok_or_else(|| Error::OutOfMemory("ggml context full".into()))
    }

    /// Starts a graph with room for `size` nodes in this context.
    pub(crate) fn new_graph(&mut self, size: usize) -> Result<Graph> {
        // SAFETY: valid context sized for this graph at creation.
        let g = unsafe { sys::ggml_new_graph_custom(self.ptr(), size, false) };
        NonNull::new(g)
            .map(|g| Graph { g, capacity: size })
            .ok_or_else(|| Error::OutOfMemory("ggml graph".into()))
    }
}

impl Drop for Context {
    fn drop(&mut self) {
        // SAFETY: freed once; `_mem` is dropped after this.
        unsafe { sys::ggml_free(self.ptr()) }
    }
}

/// A compute graph living in a [`Context`].
pub(crate) struct Graph {
    pub(super) g: NonNull<sys::ggml_cgraph>,
    capacity: usize,
}

impl Graph {
    /// Adds `t` and everything it depends on to the graph, in dependency order.
    pub(crate) fn expand(&mut self, t: Tensor) -> Result<()> {
        // Leave headroom: ggml aborts when a graph overflows.
        if self.n_nodes() + 512 > self.capacity {
            return Err(Error::Backend("compute graph too large".into()));
        }
        // SAFETY: valid graph and tensor from the same context family.
        unsafe { sys::ggml_build_forward_expand(self.g.as_ptr(), t.ptr()) };
        Ok(())
    }

    /// Whether `n` more nodes fit (with the same headroom `expand` keeps).
    pub(crate) fn has_room(&self, n: usize) -> bool {
        self.n_nodes() + n + 512 <= self.capacity
    }

    /// The graph's nodes, in execution order.
    pub(crate) fn nodes(&self) -> impl Iterator<Item = *mut sys::ggml_tensor> + '_ {
        // SAFETY: valid graph; indices below the node count.
        (0..self.n_nodes()).map(|i| unsafe { sys::ggml_graph_node(self.g.as_ptr(), i as i32) })
    }

    /// Gives every view node the buffer of the tensor it views (what the
    /// graph allocator does for views), for graphs that need no other memory.
    pub(crate) fn init_views(&mut self) -> Result<()> {
        for n in self.nodes() {
            // SAFETY: a valid node of this graph.
            let t = unsafe { &*n };
            if !t.view_src.is_null() && t.buffer.is_null() {
                // SAFETY: the viewed tensor is allocated (cache stores).
                let st = unsafe { sys::ggml_backend_view_init(n) };
                if st != sys::GGML_STATUS_SUCCESS {
                    return Err(Error::Backend(format!("view initialisation failed ({st})")));
                }
            }
        }
        Ok(())
    }

    /// Number of nodes (operations) in the graph.
    pub(crate) fn n_nodes(&self) -> usize {
        // SAFETY: valid graph.
        unsafe { sys::ggml_graph_n_nodes(self.g.as_ptr()) as usize }
    }
}
