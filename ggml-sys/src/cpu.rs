//! The CPU backend's entry points, from the build of ggml's CPU code that
//! suits this processor.
//!
//! x86-64 Linux builds (`GGML_SYS_X86_LEVEL=auto`, their default) link ggml's
//! CPU backend twice: once for x86-64-v3 (AVX2, every x86-64 CPU since
//! Haswell) and once for AVX-512 with VNNI, whose symbols build.rs renamed
//! with the prefix `rd_avx512_`. [`cpu_backend`] picks the AVX-512 copy when
//! the processor has every extension it was compiled for, unless
//! `GGML_SYS_CPU_KERNELS=v3` asks for the baseline. Other builds have one
//! copy, which this returns.
//!
//! Everything that runs CPU kernels must come from the same copy: a
//! threadpool's workers run the kernels of the copy that created it, and
//! repacked weights are recognised only by the copy whose buffer type
//! repacked them. Callers therefore use these entry points instead of the
//! plain `ggml_cpu_*`/`ggml_backend_cpu_*` functions, and take the CPU
//! device from [`CpuBackend::backend_cpu_reg`] rather than from ggml's
//! device registry (which lists the baseline copy).

use crate::*;
use std::os::raw::{c_int, c_void};
use std::sync::OnceLock;

/// One build of ggml's CPU backend: its name and its entry points.
#[derive(Debug)]
pub struct CpuBackend {
    /// The instruction sets its kernels use: `v3`, `avx512` (x86-64), or
    /// the build's target elsewhere (`native`).
    pub kernels: &'static str,
    pub cpu_init: unsafe extern "C" fn(),
    pub backend_cpu_init: unsafe extern "C" fn() -> ggml_backend_t,
    pub backend_cpu_reg: unsafe extern "C" fn() -> ggml_backend_reg_t,
    pub set_n_threads: unsafe extern "C" fn(ggml_backend_t, c_int),
    pub set_threadpool: unsafe extern "C" fn(ggml_backend_t, ggml_threadpool_t),
    pub set_abort_callback: unsafe extern "C" fn(ggml_backend_t, ggml_abort_callback, *mut c_void),
    pub graph_plan:
        unsafe extern "C" fn(*const ggml_cgraph, c_int, *mut ggml_threadpool) -> ggml_cplan,
    pub graph_compute: unsafe extern "C" fn(*mut ggml_cgraph, *mut ggml_cplan) -> ggml_status,
    pub threadpool_new: unsafe extern "C" fn(*mut ggml_threadpool_params) -> *mut ggml_threadpool,
    pub threadpool_free: unsafe extern "C" fn(*mut ggml_threadpool),
}

/// `a == b`, in a constant.
const fn same(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    let mut i = 0;
    while i < a.len() {
        if a[i] != b[i] {
            return false;
        }
        i += 1;
    }
    true
}

/// The copy built with the build's baseline instruction sets.
static BASELINE: CpuBackend = CpuBackend {
    kernels: if X86_LEVEL.is_empty() {
        "native"
    } else if same(X86_LEVEL, "avx512") {
        "avx512"
    } else {
        "v3"
    },
    cpu_init: ggml_cpu_init,
    backend_cpu_init: ggml_backend_cpu_init,
    backend_cpu_reg: ggml_backend_cpu_reg,
    set_n_threads: ggml_backend_cpu_set_n_threads,
    set_threadpool: ggml_backend_cpu_set_threadpool,
    set_abort_callback: ggml_backend_cpu_set_abort_callback,
    graph_plan: ggml_graph_plan,
    graph_compute: ggml_graph_compute,
    threadpool_new: ggml_threadpool_new,
    threadpool_free: ggml_threadpool_free,
};

#[cfg(ggml_cpu_avx512_copy)]
mod avx512 {
    use super::*;

    unsafe extern "C" {
        #[link_name = "rd_avx512_ggml_cpu_init"]
        fn cpu_init();
        #[link_name = "rd_avx512_ggml_backend_cpu_init"]
        fn backend_cpu_init() -> ggml_backend_t;
        #[link_name = "rd_avx512_ggml_backend_cpu_reg"]
        fn backend_cpu_reg() -> ggml_backend_reg_t;
        #[link_name = "rd_avx512_ggml_backend_cpu_set_n_threads"]
        fn set_n_threads(backend_cpu: ggml_backend_t, n_threads: c_int);
        #[link_name = "rd_avx512_ggml_backend_cpu_set_threadpool"]
        fn set_threadpool(backend_cpu: ggml_backend_t, threadpool: ggml_threadpool_t);
        #[link_name = "rd_avx512_ggml_backend_cpu_set_abort_callback"]
        fn set_abort_callback(
            backend_cpu: ggml_backend_t,
            abort_callback: ggml_abort_callback,
            abort_callback_data: *mut c_void,
        );
        #[link_name = "rd_avx512_ggml_graph_plan"]
        fn graph_plan(
            cgraph: *const ggml_cgraph,
            n_threads: c_int,
            threadpool: *mut ggml_threadpool,
        ) -> ggml_cplan;
        #[link_name = "rd_avx512_ggml_graph_compute"]
        fn graph_compute(cgraph: *mut ggml_cgraph, cplan: *mut ggml_cplan) -> ggml_status;
        #[link_name = "rd_avx512_ggml_threadpool_new"]
        fn threadpool_new(params: *mut ggml_threadpool_params) -> *mut ggml_threadpool;
        #[link_name = "rd_avx512_ggml_threadpool_free"]
        fn threadpool_free(threadpool: *mut ggml_threadpool);
    }

    /// The renamed AVX-512 copy (build.rs, `build_avx512_copy`).
    pub(super) static AVX512: CpuBackend = CpuBackend {
        kernels: "avx512",
        cpu_init,
        backend_cpu_init,
        backend_cpu_reg,
        set_n_threads,
        set_threadpool,
        set_abort_callback,
        graph_plan,
        graph_compute,
        threadpool_new,
        threadpool_free,
    };

    /// Every extension the AVX-512 copy was compiled with (build.rs).
    pub fn supported() -> bool {
        std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512cd")
            && std::arch::is_x86_feature_detected!("avx512vl")
            && std::arch::is_x86_feature_detected!("avx512dq")
            && std::arch::is_x86_feature_detected!("avx512bw")
            && std::arch::is_x86_feature_detected!("avx512vbmi")
            && std::arch::is_x86_feature_detected!("avx512vnni")
    }
}

/// The CPU backend this process uses, chosen once: the AVX-512 copy where it
/// is linked and the processor supports it, unless the environment variable
/// `GGML_SYS_CPU_KERNELS` is `v3` (read once, at the first call).
pub fn cpu_backend() -> &'static CpuBackend {
    static CHOSEN: OnceLock<&'static CpuBackend> = OnceLock::new();
    CHOSEN.get_or_init(|| {
        #[cfg(ggml_cpu_avx512_copy)]
        {
            let wanted = std::env::var("GGML_SYS_CPU_KERNELS").unwrap_or_default();
            if wanted != "v3" && avx512::supported() {
                return &avx512::AVX512;
            }
        }
        &BASELINE
    })
}

/// Whether this build can choose between CPU kernels at run time.
pub const CHOOSES_CPU_KERNELS: bool = cfg!(ggml_cpu_avx512_copy);

/// Whether this build links the AVX-512 copy and this CPU can run it (what
/// [`cpu_backend`] picks unless `GGML_SYS_CPU_KERNELS=v3`).
pub fn avx512_copy_usable() -> bool {
    #[cfg(ggml_cpu_avx512_copy)]
    return avx512::supported();
    #[cfg(not(ggml_cpu_avx512_copy))]
    false
}
