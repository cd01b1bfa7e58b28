//! ggml-backend devices, backends, buffers, the CPU threadpool and the scheduler.

use super::context::{Context, Graph, Tensor};
use super::sys;
use crate::error::{Error, Result};
use std::ffi::CStr;
use std::ptr::NonNull;
use std::sync::Once;
use std::sync::atomic::AtomicBool;

/// Which kind of device to run on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum BackendKind {
    /// The best available: a GPU when one is compiled in and present, else the CPU.
    #[default]
    Auto,
    /// The CPU backend.
    Cpu,
    /// A GPU (Vulkan or Metal, whichever this build has).
    Gpu,
}

/// A device ggml can run on.
#[derive(Clone, Debug)]
pub struct DeviceInfo {
    /// Short name (e.g. `CPU`, `Vulkan0`).
    pub name: String,
    /// Human-readable description.
    pub description: String,
    /// Whether this is the CPU device.
    pub is_cpu: bool,
}

fn init_backends() {
    static INIT: Once = Once::new();
    // SAFETY: one-time global initialisation of ggml's CPU feature tables.
    INIT.call_once(|| unsafe { sys::ggml_cpu_init() });
}

fn cstr(p: *const std::os::raw::c_char) -> String {
    if p.is_null() {
        return String::new();
    }
    // SAFETY: ggml returns NUL-terminated static strings.
    unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
}

/// Lists the devices compiled into this build.
pub fn list_devices() -> Vec<DeviceInfo> {
    init_backends();
    // SAFETY: registry queries.
    let n = unsafe { sys::ggml_backend_dev_count() };
    (0..n)
        .filter_map(|i| {
            // SAFETY: i < count.
            let dev = unsafe { sys::ggml_backend_dev_get(i) };
            if dev.is_null() {
                return None;
            }
            // SAFETY: valid device.
            let ty = unsafe { sys::ggml_backend_dev_type(dev) };
            Some(DeviceInfo {
                // SAFETY: valid device.
                name: cstr(unsafe { sys::ggml_backend_dev_name(dev) }),
                // SAFETY: valid device.
                description: cstr(unsafe { sys::ggml_backend_dev_description(dev) }),
                is_cpu: ty == sys::GGML_BACKEND_DEVICE_TYPE_CPU,
            })
        })
        .collect()
}

/// Number of physical CPU cores (Linux: distinct (package, core) pairs in
/// /proc/cpuinfo), falling back to the logical count.
pub(crate) fn physical_cores() -> usize {
    let logical = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let Ok(info) = std::fs::read_to_string("/proc/cpuinfo") else {
        return logical;
    };
    let mut cores = std::collections::BTreeSet::new();
    let mut phys = "";
    for line in info.lines() {
        if let Some((k, v)) = line.split_once(':') {
            match k.trim() {
                "physical id" => phys = v.trim(),
                "core id" => {
                    cores.insert((phys.to_string(), v.trim().to_string()));
                }
                _ => {}
            }
        }
    }
    if cores.is_empty() {
        logical
    } else {
        cores.len().min(logical)
    }
}

/// An initialised compute backend: the chosen device plus the CPU backend (which
/// ggml's scheduler always needs last), with a persistent CPU threadpool.
pub(crate) struct Backend {
    main: NonNull<sys::ggml_backend>,
    cpu: Option<NonNull<sys::ggml_backend>>,
    threadpool: NonNull<sys::ggml_threadpool>,
    n_threads: usize,
    is_cpu: bool,
}

// SAFETY: a Backend is used by one session at a time (owned, &mut for compute).
unsafe impl Send for Backend {}

impl Backend {
    /// Initialises a backend of `kind` with `n_threads` CPU threads (0 = physical cores).
    pub(crate) fn new(kind: BackendKind, n_threads: usize) -> Result<Backend> {
        init_backends();
        let n_threads = if n_threads == 0 {
            physical_cores()
        } else {
            n_threads
        };
        if n_threads > 512 {
            return Err(Error::InvalidArgument(format!(
                "n_threads {n_threads} > 512"
            )));
        }
        let want_gpu = match kind {
            BackendKind::Cpu => false,
            BackendKind::Gpu => true,
            // SAFETY: registry query.
            BackendKind::Auto => {
                !unsafe { sys::ggml_backend_dev_by_type(sys::GGML_BACKEND_DEVICE_TYPE_GPU) }
                    .is_null()
            }
        };
        // SAFETY: creates the CPU backend; NULL on failure.
        let cpu = NonNull::new(unsafe { sys::ggml_backend_cpu_init() })
            .ok_or_else(|| Error::Backend("cannot initialise the CPU backend".into()))?;
        // SAFETY: default params for n_threads; pool freed in Drop.
        let tp = unsafe {
            let mut p = sys::ggml_threadpool_params_default(n_threads as i32);
            sys::ggml_threadpool_new(&mut p)
        };
        let threadpool = match NonNull::new(tp) {
            Some(tp) => tp,
            None => {
                // SAFETY: freeing what we created.
                unsafe { sys::ggml_backend_free(cpu.as_ptr()) };
                return Err(Error::Backend("cannot create the CPU threadpool".into()));
            }
        };
        // SAFETY: valid CPU backend and pool; the pool outlives the backend's use.
        unsafe {
            sys::ggml_backend_cpu_set_n_threads(cpu.as_ptr(), n_threads as i32);
            sys::ggml_backend_cpu_set_threadpool(cpu.as_ptr(), threadpool.as_ptr());
        }
        let mut b = Backend {
            main: cpu,
            cpu: None,
            threadpool,
            n_threads,
            is_cpu: true,
        };
        if want_gpu {
            // SAFETY: NULL when no such device is compiled in or present.
            let gpu = unsafe {
                sys::ggml_backend_init_by_type(sys::GGML_BACKEND_DEVICE_TYPE_GPU, std::ptr::null())
            };
            match NonNull::new(gpu) {
                Some(g) => {
                    b.cpu = Some(b.main);
                    b.main = g;
                    b.is_cpu = false;
                }
                None if kind == BackendKind::Gpu => {
                    return Err(Error::Backend(
                        "no GPU device available in this build".into(),
                    ));
                }
                None => {}
            }
        }
        Ok(b)
    }

    /// Threads used by the CPU backend.
    pub(crate) fn n_threads(&self) -> usize {
        self.n_threads
    }

    /// Whether the main device is the CPU.
    pub(crate) fn is_cpu(&self) -> bool {
        self.is_cpu
    }

    /// Name of the main device's backend.
    pub(crate) fn name(&self) -> String {
        // SAFETY: valid backend.
        cstr(unsafe { sys::ggml_backend_name(self.main.as_ptr()) })
    }

    fn cpu_backend(&self) -> *mut sys::ggml_backend {
        self.cpu.unwrap_or(self.main).as_ptr()
    }

    /// Installs (or clears with `None`) a flag polled by the CPU backend between
    /// graph nodes; when it reads true the compute stops with "aborted".
    ///
    /// The flag must outlive every compute until it is cleared again.
    pub(crate) fn set_abort_flag(&mut self, flag: Option<&AtomicBool>) {
        unsafe extern "C" fn poll(data: *mut std::os::raw::c_void) -> bool {
            // SAFETY: `data` is the AtomicBool registered below, alive while set.
            let flag = unsafe { &*(data as *const AtomicBool) };
            flag.load(std::sync::atomic::Ordering::Relaxed)
        }
        let (cb, data): (sys::ggml_abort_callback, *mut std::os::raw::c_void) = match flag {
            Some(f) => (Some(poll), f as *const AtomicBool as *mut _),
            None => (None, std::ptr::null_mut()),
        };
        // SAFETY: valid CPU backend; the flag's lifetime is the caller's contract.
        unsafe { sys::ggml_backend_cpu_set_abort_callback(self.cpu_backend(), cb, data) };
    }

    /// Allocates a buffer on the main device holding every tensor of `ctx`.
    pub(crate) fn alloc_ctx_tensors(&self, ctx: &Context) -> Result<Buffer> {
        // SAFETY: valid backend; the context's tensors are unallocated.
        let buft = unsafe { sys::ggml_backend_get_default_buffer_type(self.main.as_ptr()) };
        // SAFETY: valid context and buffer type; NULL on allocation failure.
        let buf = unsafe { sys::ggml_backend_alloc_ctx_tensors_from_buft(ctx.ptr(), buft) };
        NonNull::new(buf)
            .map(|b| Buffer { buf: b })
            .ok_or_else(|| Error::OutOfMemory("backend buffer".into()))
    }

    /// Wraps host memory (e.g. a memory-mapped file) as a CPU buffer without
    /// copying. The memory must outlive the returned buffer and every tensor in it.
    pub(crate) fn host_buffer_from_ptr(&self, ptr: *const u8, size: usize) -> Result<Buffer> {
        // SAFETY: ggml only records the pointer; weights are never written.
        let buf = unsafe { sys::ggml_backend_cpu_buffer_from_ptr(ptr as *mut _, size) };
        let buf =
            NonNull::new(buf).ok_or_else(|| Error::Backend("cannot wrap mapped memory".into()))?;
        // SAFETY: valid buffer.
        unsafe {
            sys::ggml_backend_buffer_set_usage(buf.as_ptr(), sys::GGML_BACKEND_BUFFER_USAGE_WEIGHTS)
        };
        Ok(Buffer { buf })
    }

    /// Creates a scheduler over this backend able to run graphs of `graph_size` nodes.
    pub(crate) fn scheduler(&self, graph_size: usize) -> Result<Scheduler> {
        let mut backends: Vec<*mut sys::ggml_backend> = vec![self.main.as_ptr()];
        if let Some(cpu) = self.cpu {
            backends.push(cpu.as_ptr());
        }
        // SAFETY: valid backends; NULL buffer types mean "default".
        let s = unsafe {
            sys::ggml_backend_sched_new(
                backends.as_mut_ptr(),
                std::ptr::null_mut(),
                backends.len() as i32,
                graph_size,
                false,
                true,
            )
        };
        NonNull::new(s)
            .map(|s| Scheduler { sched: s })
            .ok_or_else(|| Error::Backend("cannot create the scheduler".into()))
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        // SAFETY: each handle was created by us and is freed once; the threadpool
        // is freed after the backend that uses it.
        unsafe {
            sys::ggml_backend_free(self.main.as_ptr());
            if let Some(cpu) = self.cpu {
                sys::ggml_backend_free(cpu.as_ptr());
            }
            sys::ggml_threadpool_free(self.threadpool.as_ptr());
        }
    }
}

/// A backend buffer (device or host memory), freed on drop.
pub(crate) struct Buffer {
    buf: NonNull<sys::ggml_backend_buffer>,
}

// SAFETY: buffers are plain memory owned by one owner; ggml's buffer API is
// thread-safe for distinct buffers.
unsafe impl Send for Buffer {}
// SAFETY: shared references only read the buffer's properties.
unsafe impl Sync for Buffer {}

impl Buffer {
    /// Size in bytes.
    pub(crate) fn size(&self) -> usize {
        // SAFETY: valid buffer.
        unsafe { sys::ggml_backend_buffer_get_size(self.buf.as_ptr()) }
    }

    /// Base address (host-visible only for host buffers).
    pub(crate) fn base(&self) -> *const u8 {
        // SAFETY: valid buffer.
        unsafe { sys::ggml_backend_buffer_get_base(self.buf.as_ptr()) as *const u8 }
    }

    /// Places `tensor` at `addr`, which must lie inside this buffer with room for
    /// the tensor's bytes.
    pub(crate) fn place(&self, tensor: Tensor, addr: *const u8) -> Result<()> {
        let base = self.base() as usize;
        let a = addr as usize;
        if a < base || a.saturating_add(tensor.nbytes()) > base.saturating_add(self.size()) {
            return Err(Error::Backend("tensor placement outside its buffer".into()));
        }
        // SAFETY: bounds checked above.
        let st = unsafe {
            sys::ggml_backend_tensor_alloc(self.buf.as_ptr(), tensor.ptr(), addr as *mut _)
        };
        if st != sys::GGML_STATUS_SUCCESS {
            return Err(Error::Backend(format!("tensor placement failed ({st})")));
        }
        Ok(())
    }

    /// Fills the whole buffer with zeros.
    pub(crate) fn clear(&self) {
        // SAFETY: valid buffer.
        unsafe { sys::ggml_backend_buffer_clear(self.buf.as_ptr(), 0) }
    }
}

impl Drop for Buffer {
    fn drop(&mut self) {
        // SAFETY: created by us, freed once.
        unsafe { sys::ggml_backend_buffer_free(self.buf.as_ptr()) }
    }
}

/// ggml's backend scheduler: assigns graph nodes to devices and owns the compute
/// buffers, which are reserved once for the largest graph and then reused.
pub(crate) struct Scheduler {
    sched: NonNull<sys::ggml_backend_sched>,
}

// SAFETY: owned by one session, used through &mut.
unsafe impl Send for Scheduler {}

impl Scheduler {
    /// Reserves compute memory for `graph` (the worst case the owner will run).
    pub(crate) fn reserve(&mut self, graph: &mut Graph) -> Result<()> {
        // SAFETY: valid scheduler and graph.
        let ok = unsafe { sys::ggml_backend_sched_reserve(self.sched.as_ptr(), graph.g.as_ptr()) };
        if ok {
            Ok(())
        } else {
            Err(Error::OutOfMemory("compute buffer reservation".into()))
        }
    }

    /// Allocates the graph's intermediate tensors in the reserved compute buffers.
    pub(crate) fn alloc(&mut self, graph: &mut Graph) -> Result<()> {
        // SAFETY: valid scheduler and graph; reset first so the graph can change.
        let ok = unsafe {
            sys::ggml_backend_sched_reset(self.sched.as_ptr());
            sys::ggml_backend_sched_alloc_graph(self.sched.as_ptr(), graph.g.as_ptr())
        };
        if ok {
            Ok(())
        } else {
            Err(Error::OutOfMemory("compute graph allocation".into()))
        }
    }

    /// Runs an allocated graph to completion (or until the abort flag is raised).
    pub(crate) fn compute(&mut self, graph: &mut Graph) -> Result<()> {
        // SAFETY: graph allocated by `alloc` on this scheduler.
        let st =
            unsafe { sys::ggml_backend_sched_graph_compute(self.sched.as_ptr(), graph.g.as_ptr()) };
        match st {
            sys::GGML_STATUS_SUCCESS => Ok(()),
            sys::GGML_STATUS_ABORTED => Err(Error::Cancelled),
            sys::GGML_STATUS_ALLOC_FAILED => Err(Error::OutOfMemory("graph compute".into())),
            other => Err(Error::Backend(format!("graph compute failed ({other})"))),
        }
    }

    /// Bytes of compute buffers held (all devices).
    pub(crate) fn compute_bytes(&self, backend: &Backend) -> usize {
        let mut total = 0;
        for b in [Some(backend.main), backend.cpu].into_iter().flatten() {
            // SAFETY: the backend belongs to this scheduler.
            total +=
                unsafe { sys::ggml_backend_sched_get_buffer_size(self.sched.as_ptr(), b.as_ptr()) };
        }
        total
    }
}

impl Drop for Scheduler {
    fn drop(&mut self) {
        // SAFETY: created by us, freed once.
        unsafe { sys::ggml_backend_sched_free(self.sched.as_ptr()) }
    }
}
