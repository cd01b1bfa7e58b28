//! ggml-backend devices, backends, buffers, the CPU threadpool, direct graph
//! execution and the scheduler.

use super::context::{Context, Graph, Tensor};
use super::sys;
use crate::error::{Error, Result};
use std::ffi::CStr;
use std::ptr::NonNull;
use std::sync::Once;
use std::sync::atomic::AtomicBool;

/// Which device to run on. Parse one from text with [`str::parse`]: `auto`,
/// `cpu`, `gpu`, `vulkan`, `vulkan:N`, `metal` (the forms `rd --device` takes).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum BackendKind {
    /// The first GPU (discrete, then integrated) this build has and the system
    /// shows, else the CPU.
    #[default]
    Auto,
    /// The CPU backend.
    Cpu,
    /// The first GPU of any API this build has (Vulkan or Metal); an error
    /// when there is none.
    Gpu,
    /// Vulkan device N, numbered as `rd devices` lists them (needs the
    /// `vulkan` feature).
    Vulkan(usize),
    /// The Metal device (needs the `metal` feature; Apple platforms).
    Metal,
}

impl std::str::FromStr for BackendKind {
    type Err = Error;
    fn from_str(s: &str) -> Result<BackendKind> {
        let t = s.trim().to_ascii_lowercase();
        Ok(match t.as_str() {
            "auto" => BackendKind::Auto,
            "cpu" => BackendKind::Cpu,
            "gpu" => BackendKind::Gpu,
            "vulkan" => BackendKind::Vulkan(0),
            "metal" | "mtl" => BackendKind::Metal,
            _ => match t.strip_prefix("vulkan:").map(str::parse::<usize>) {
                Some(Ok(i)) => BackendKind::Vulkan(i),
                _ => {
                    return Err(Error::InvalidArgument(format!(
                        "unknown device {s:?} (expected auto, cpu, gpu, vulkan, vulkan:N or metal)"
                    )));
                }
            },
        })
    }
}

impl std::fmt::Display for BackendKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BackendKind::Auto => f.write_str("auto"),
            BackendKind::Cpu => f.write_str("cpu"),
            BackendKind::Gpu => f.write_str("gpu"),
            BackendKind::Vulkan(i) => write!(f, "vulkan:{i}"),
            BackendKind::Metal => f.write_str("metal"),
        }
    }
}

/// What kind of hardware a device is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeviceType {
    /// The host CPU.
    Cpu,
    /// A discrete GPU (or a GPU-API device ggml does not call integrated, such
    /// as Mesa's lavapipe).
    Gpu,
    /// An integrated GPU sharing host memory.
    IntegratedGpu,
    /// An accelerator used next to the CPU (e.g. BLAS).
    Accelerator,
}

/// A device ggml can run on.
#[derive(Clone, Debug)]
pub struct DeviceInfo {
    /// ggml's name for the device (e.g. `CPU`, `Vulkan0`, `MTL0`).
    pub name: String,
    /// Human-readable description (e.g. the GPU's name).
    pub description: String,
    /// The API: `CPU`, `Vulkan`, `Metal`, or ggml's registry name for others.
    pub api: String,
    /// The choice that selects this device (e.g. `vulkan:1`).
    pub backend: BackendKind,
    /// Hardware kind.
    pub device_type: DeviceType,
    /// Free device memory in bytes, as the driver reports it (0 if unknown).
    pub memory_free: usize,
    /// Total device memory in bytes (0 if unknown).
    pub memory_total: usize,
    /// Whether the device can use host memory (the memory-mapped weights) in
    /// place, without a copy.
    pub maps_host_memory: bool,
}

/// Instruction-set extensions the ggml CPU code of this build was compiled
/// with (ggml-sys/README.md), as `std::arch` names them.
#[cfg(target_arch = "x86_64")]
const REQUIRED_CPU_FEATURES: &[&str] = &["sse4.2", "avx", "avx2", "bmi2", "fma", "f16c"];
#[cfg(not(target_arch = "x86_64"))]
const REQUIRED_CPU_FEATURES: &[&str] = &[];

/// The AVX-512 extensions an `avx512` x86-64 build adds
/// (`GGML_SYS_X86_LEVEL`, ggml-sys/README.md).
#[cfg(target_arch = "x86_64")]
fn required_x86_level_features() -> &'static [&'static str] {
    if sys::X86_LEVEL == "avx512" {
        &[
            "avx512f",
            "avx512cd",
            "avx512vl",
            "avx512dq",
            "avx512bw",
            "avx512vbmi",
            "avx512vnni",
        ]
    } else {
        &[]
    }
}

/// The extensions aarch64 ggml was compiled for, from its `-march`.
#[cfg(target_arch = "aarch64")]
fn required_arm_features() -> Vec<&'static str> {
    let arch = sys::ARM_ARCH;
    let mut v = Vec::new();
    if arch.contains("+dotprod") {
        v.push("dotprod");
    }
    if arch.contains("+fp16") {
        v.push("fp16");
    }
    if arch.contains("+i8mm") {
        v.push("i8mm");
    }
    if arch.contains("+sve") {
        v.push("sve");
    }
    v
}

/// `feature` checked against `names` with `std::arch`'s detection macro
/// `detect` (which only takes literals, hence one arm per name).
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
macro_rules! detected {
    ($feature:expr, $detect:ident, [$($name:tt),* $(,)?]) => {
        match $feature {
            $($name => std::arch::$detect!($name),)*
            _ => false,
        }
    };
}

fn cpu_has(feature: &str) -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        detected!(
            feature,
            is_x86_feature_detected,
            [
                "sse4.2",
                "avx",
                "avx2",
                "bmi2",
                "fma",
                "f16c",
                "avx512f",
                "avx512cd",
                "avx512vl",
                "avx512dq",
                "avx512bw",
                "avx512vbmi",
                "avx512vnni",
            ]
        )
    }
    #[cfg(target_arch = "aarch64")]
    {
        detected!(
            feature,
            is_aarch64_feature_detected,
            ["dotprod", "fp16", "i8mm", "sve"]
        )
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    {
        let _ = feature;
        false
    }
}

/// The features of `required` that `has` says are missing, in order.
fn missing_features<'a>(required: &[&'a str], has: impl Fn(&str) -> bool) -> Vec<&'a str> {
    required.iter().copied().filter(|f| !has(f)).collect()
}

/// Refuses to run ggml's CPU code on a CPU without the extensions it was
/// compiled with (it would die of SIGILL), naming what is missing.
pub(crate) fn check_cpu_features() -> Result<()> {
    #[allow(unused_mut)]
    let mut required: Vec<&str> = REQUIRED_CPU_FEATURES.to_vec();
    #[cfg(target_arch = "aarch64")]
    required.extend(required_arm_features());
    #[cfg(target_arch = "x86_64")]
    required.extend(required_x86_level_features());
    let missing = missing_features(&required, cpu_has);
    if missing.is_empty() {
        return Ok(());
    }
    Err(Error::Backend(format!(
        "this CPU lacks {}, which this build's ggml CPU code was compiled for (needs {}); \
         see ggml-sys/README.md to build for older CPUs",
        missing.join(", "),
        required.join(", ")
    )))
}

fn init_backends() -> Result<()> {
    check_cpu_features()?;
    super::log::install();
    static INIT: Once = Once::new();
    // SAFETY: one-time global initialisation of the CPU feature tables of
    // ggml's CPU code (the baseline copy, which the device registry uses,
    // and the one that runs the kernels, when they differ).
    INIT.call_once(|| unsafe {
        sys::ggml_cpu_init();
        (sys::cpu::cpu_backend().cpu_init)();
    });
    Ok(())
}

fn cstr(p: *const std::os::raw::c_char) -> String {
    if p.is_null() {
        return String::new();
    }
    // SAFETY: ggml returns NUL-terminated static strings.
    unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
}

/// Every device of this build with its ggml handle, in registry order, with
/// per-API indices assigned.
fn devices() -> Vec<(NonNull<sys::ggml_backend_device>, DeviceInfo)> {
    if init_backends().is_err() {
        // A CPU ggml cannot run on: no devices (Backend::new says why).
        return Vec::new();
    }
    // SAFETY: registry query.
    let n = unsafe { sys::ggml_backend_dev_count() };
    let mut out: Vec<(NonNull<sys::ggml_backend_device>, DeviceInfo)> = Vec::new();
    for i in 0..n {
        // SAFETY: i < count; NULL-checked.
        let Some(dev) = NonNull::new(unsafe { sys::ggml_backend_dev_get(i) }) else {
            continue;
        };
        let mut props = std::mem::MaybeUninit::<sys::ggml_backend_dev_props>::zeroed();
        // SAFETY: valid device; ggml fills every field of `props`.
        let props = unsafe {
            sys::ggml_backend_dev_get_props(dev.as_ptr(), props.as_mut_ptr());
            props.assume_init()
        };
        // SAFETY: valid device; the registry outlives the process.
        let reg = unsafe { sys::ggml_backend_dev_backend_reg(dev.as_ptr()) };
        let reg_name = if reg.is_null() {
            String::new()
        } else {
            // SAFETY: valid registry.
            cstr(unsafe { sys::ggml_backend_reg_name(reg) })
        };
        let device_type = match props.type_ {
            sys::GGML_BACKEND_DEVICE_TYPE_CPU => DeviceType::Cpu,
            sys::GGML_BACKEND_DEVICE_TYPE_IGPU => DeviceType::IntegratedGpu,
            sys::GGML_BACKEND_DEVICE_TYPE_GPU => DeviceType::Gpu,
            _ => DeviceType::Accelerator,
        };
        let api = match reg_name.as_str() {
            "MTL" | "Metal" => "Metal".to_string(),
            _ => reg_name,
        };
        let same_api = out.iter().filter(|(_, d)| d.api == api).count();
        let backend = match (device_type, api.as_str()) {
            (DeviceType::Cpu, _) => BackendKind::Cpu,
            (_, "Vulkan") => BackendKind::Vulkan(same_api),
            (_, "Metal") => BackendKind::Metal,
            _ => BackendKind::Gpu,
        };
        let mut description = cstr(props.description);
        if device_type == DeviceType::Cpu && !sys::X86_LEVEL.is_empty() {
            // Which build of ggml's CPU code runs the kernels (ggml-sys's
            // `cpu_backend`: x86-64 builds may choose at run time).
            description = format!(
                "{description} (kernels: {})",
                sys::cpu::cpu_backend().kernels
            );
        }
        out.push((
            dev,
            DeviceInfo {
                name: cstr(props.name),
                description,
                api,
                backend,
                device_type,
                memory_free: props.memory_free,
                memory_total: props.memory_total,
                maps_host_memory: props.caps.buffer_from_host_ptr,
            },
        ));
    }
    out
}

impl DeviceInfo {
    /// Whether this is the CPU device.
    pub fn is_cpu(&self) -> bool {
        self.device_type == DeviceType::Cpu
    }
}

/// Lists the devices compiled into this build and present on this system.
///
/// Vulkan devices that are CPUs (Mesa's lavapipe) are hidden by ggml unless
/// the environment variable `GGML_VK_VISIBLE_DEVICES` names them.
pub fn list_devices() -> Vec<DeviceInfo> {
    devices().into_iter().map(|(_, d)| d).collect()
}

/// Finds the device for `kind`: `Ok(None)` means the CPU.
fn resolve(kind: BackendKind) -> Result<Option<(NonNull<sys::ggml_backend_device>, DeviceInfo)>> {
    let all = devices();
    let gpu = |all: Vec<(NonNull<sys::ggml_backend_device>, DeviceInfo)>| {
        let mut gpus: Vec<_> = all
            .into_iter()
            .filter(|(_, d)| matches!(d.device_type, DeviceType::Gpu | DeviceType::IntegratedGpu))
            .collect();
        // Discrete before integrated; stable, so registry order otherwise.
        gpus.sort_by_key(|(_, d)| d.device_type != DeviceType::Gpu);
        gpus.into_iter().next()
    };
    match kind {
        BackendKind::Cpu => Ok(None),
        BackendKind::Auto => Ok(gpu(all)),
        BackendKind::Gpu => gpu(all).map(Some).ok_or_else(|| {
            Error::Backend("no GPU device: this build has no GPU backend or none is present".into())
        }),
        BackendKind::Vulkan(i) => {
            if !cfg!(feature = "vulkan") {
                return Err(Error::Backend(
                    "this build has no Vulkan backend (build with the `vulkan` feature)".into(),
                ));
            }
            let n = all.iter().filter(|(_, d)| d.api == "Vulkan").count();
            all.into_iter()
                .find(|(_, d)| d.backend == BackendKind::Vulkan(i))
                .map(Some)
                .ok_or_else(|| {
                    Error::Backend(format!(
                        "no Vulkan device {i}: {n} present (CPU-type devices such as lavapipe \
                         are hidden unless GGML_VK_VISIBLE_DEVICES lists them)"
                    ))
                })
        }
        BackendKind::Metal => {
            if !cfg!(feature = "metal") {
                return Err(Error::Backend(
                    "this build has no Metal backend (build with the `metal` feature)".into(),
                ));
            }
            all.into_iter()
                .find(|(_, d)| d.backend == BackendKind::Metal)
                .map(Some)
                .ok_or_else(|| Error::Backend("no Metal device present".into()))
        }
    }
}

/// Serialises creating and freeing GPU backends: ggml-vulkan creates its
/// logical device lazily on the first backend of a device without a lock, so
/// two sessions created at once from two threads would race (seen: an abort
/// inside vkCreateFence). Submissions are locked by ggml itself.
fn gpu_lifecycle_lock() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
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

/// The thread count `n` asks for: 0 = the physical cores; at most 512.
fn resolve_threads(n: usize) -> Result<usize> {
    match n {
        0 => Ok(physical_cores()),
        1..=512 => Ok(n),
        _ => Err(Error::InvalidArgument(format!(
            "n_threads {n} out of range 0..=512"
        ))),
    }
}

/// ggml's default polling level of idle CPU threads.
pub(crate) const DEFAULT_POLL: u32 = 50;

/// A new CPU threadpool of `n_threads` threads whose idle threads poll for
/// work at level `poll` (0..=100), freed by the caller.
fn new_threadpool(n_threads: usize, poll: u32) -> Result<NonNull<sys::ggml_threadpool>> {
    // SAFETY: default params for n_threads; NULL on failure.
    let tp = unsafe {
        let mut p = sys::ggml_threadpool_params_default(n_threads as i32);
        p.poll = poll.min(100);
        // Start paused: the first graph resumes it. Until then (loading,
        // planning) idle threads sleep instead of spinning on a core.
        p.paused = true;
        (sys::cpu::cpu_backend().threadpool_new)(&mut p)
    };
    NonNull::new(tp).ok_or_else(|| Error::Backend("cannot create the CPU threadpool".into()))
}

/// An initialised compute backend: the chosen device plus the CPU backend (which
/// ggml's scheduler always needs last), with a persistent CPU threadpool.
pub(crate) struct Backend {
    main: NonNull<sys::ggml_backend>,
    cpu: Option<NonNull<sys::ggml_backend>>,
    threadpool: NonNull<sys::ggml_threadpool>,
    n_threads: usize,
    /// Polling level of the threadpool's idle threads (0..=100).
    poll: u32,
    /// The non-CPU device, if any.
    device: Option<(NonNull<sys::ggml_backend_device>, DeviceInfo)>,
    /// The flag polled between graph nodes (see [`Backend::set_abort_flag`]).
    abort: Option<NonNull<AtomicBool>>,
}

// SAFETY: a Backend is used by one session at a time (owned, &mut for compute);
// ggml device handles are process-global and immutable.
unsafe impl Send for Backend {}

impl Backend {
    /// Initialises a backend of `kind` with `n_threads` CPU threads (0 = physical cores).
    pub(crate) fn new(kind: BackendKind, n_threads: usize) -> Result<Backend> {
        init_backends()?;
        let n_threads = resolve_threads(n_threads)?;
        let device = resolve(kind)?;
        // SAFETY: creates the CPU backend; NULL on failure.
        let cpu = NonNull::new(unsafe { (sys::cpu::cpu_backend().backend_cpu_init)() })
            .ok_or_else(|| Error::Backend("cannot initialise the CPU backend".into()))?;
        let threadpool = match new_threadpool(n_threads, DEFAULT_POLL) {
            Ok(tp) => tp,
            Err(e) => {
                // SAFETY: freeing what we created.
                unsafe { sys::ggml_backend_free(cpu.as_ptr()) };
                return Err(e);
            }
        };
        // SAFETY: valid CPU backend and pool; the pool outlives the backend's use.
        unsafe {
            (sys::cpu::cpu_backend().set_n_threads)(cpu.as_ptr(), n_threads as i32);
            (sys::cpu::cpu_backend().set_threadpool)(cpu.as_ptr(), threadpool.as_ptr());
        }
        let mut b = Backend {
            main: cpu,
            cpu: None,
            threadpool,
            n_threads,
            poll: DEFAULT_POLL,
            device: None,
            abort: None,
        };
        if let Some((dev, info)) = device {
            let _serial = gpu_lifecycle_lock();
            // SAFETY: a valid device from the registry; NULL on failure.
            let g =
                NonNull::new(unsafe { sys::ggml_backend_dev_init(dev.as_ptr(), std::ptr::null()) })
                    .ok_or_else(|| {
                        Error::Backend(format!(
                            "cannot initialise device {} ({})",
                            info.name, info.description
                        ))
                    })?;
            b.cpu = Some(b.main);
            b.main = g;
            b.device = Some((dev, info));
        }
        Ok(b)
    }

    /// Threads used by the CPU backend.
    pub(crate) fn n_threads(&self) -> usize {
        self.n_threads
    }

    /// Runs later CPU work on `n_threads` threads (0 = physical cores): a new
    /// threadpool replaces the old one, whose threads end. On failure the
    /// backend keeps its old threads.
    pub(crate) fn set_threads(&mut self, n_threads: usize) -> Result<()> {
        let n_threads = resolve_threads(n_threads)?;
        if n_threads == self.n_threads {
            return Ok(());
        }
        self.replace_threadpool(n_threads, self.poll)
    }

    /// Polling level of idle CPU threads (0..=100).
    pub(crate) fn poll(&self) -> u32 {
        self.poll
    }

    /// Sets how hard idle CPU threads poll for the next piece of work before
    /// they sleep: 0 sleeps at once (least power, more latency per graph
    /// node), 100 spins longest (ggml's default is 50). A new threadpool
    /// replaces the old one.
    pub(crate) fn set_poll(&mut self, poll: u32) -> Result<()> {
        if poll > 100 {
            return Err(Error::InvalidArgument(format!(
                "thread_poll {poll} out of range 0..=100"
            )));
        }
        if poll == self.poll {
            return Ok(());
        }
        self.replace_threadpool(self.n_threads, poll)
    }

    fn replace_threadpool(&mut self, n_threads: usize, poll: u32) -> Result<()> {
        let tp = new_threadpool(n_threads, poll)?;
        let cpu = self.cpu.unwrap_or(self.main);
        // SAFETY: valid CPU backend and pools; no graph runs (we hold &mut
        // self), so the old pool is idle and freed after the backend stops
        // referring to it.
        unsafe {
            (sys::cpu::cpu_backend().set_n_threads)(cpu.as_ptr(), n_threads as i32);
            (sys::cpu::cpu_backend().set_threadpool)(cpu.as_ptr(), tp.as_ptr());
            (sys::cpu::cpu_backend().threadpool_free)(self.threadpool.as_ptr());
        }
        self.threadpool = tp;
        self.n_threads = n_threads;
        self.poll = poll;
        Ok(())
    }

    /// Whether the main device is the CPU.
    pub(crate) fn is_cpu(&self) -> bool {
        self.device.is_none()
    }

    /// The concrete device choice (never `Auto` or `Gpu`), for sessions to
    /// open the same device.
    pub(crate) fn kind(&self) -> BackendKind {
        match &self.device {
            None => BackendKind::Cpu,
            Some((_, info)) => info.backend,
        }
    }

    /// Name of the main device's backend.
    pub(crate) fn name(&self) -> String {
        // SAFETY: valid backend.
        cstr(unsafe { sys::ggml_backend_name(self.main.as_ptr()) })
    }

    /// Human-readable description of the main device.
    pub(crate) fn description(&self) -> String {
        match &self.device {
            None => "CPU".to_string(),
            Some((_, info)) => info.description.clone(),
        }
    }

    /// Free and total memory of the main device in bytes, as the driver reports
    /// them now; `None` for the CPU.
    pub(crate) fn device_memory(&self) -> Option<(usize, usize)> {
        let (dev, _) = self.device.as_ref()?;
        let (mut free, mut total) = (0usize, 0usize);
        // SAFETY: valid device; writes two integers.
        unsafe { sys::ggml_backend_dev_memory(dev.as_ptr(), &mut free, &mut total) };
        Some((free, total))
    }

    /// Fails with a clear out-of-memory error when the device reports less free
    /// memory than `bytes` (GPU devices only; the CPU relies on allocation
    /// failure). Apple GPUs report their recommended working-set limit here.
    pub(crate) fn check_fits(&self, bytes: usize, what: &str) -> Result<()> {
        if let Some((free, total)) = self.device_memory()
            && total > 0
            && bytes > free
        {
            return Err(Error::OutOfMemory(format!(
                "{what} needs {} MiB but device {} has {} MiB free of {} MiB",
                bytes >> 20,
                self.name(),
                free >> 20,
                total >> 20
            )));
        }
        Ok(())
    }

    fn cpu_backend(&self) -> *mut sys::ggml_backend {
        self.cpu.unwrap_or(self.main).as_ptr()
    }

    /// Installs (or clears with `None`) a flag polled by the CPU between
    /// graph nodes; when it reads true the compute stops with "aborted".
    ///
    /// The flag must outlive every compute until it is cleared again.
    pub(crate) fn set_abort_flag(&mut self, flag: Option<&AtomicBool>) {
        let (cb, data) = abort_callback(flag);
        self.abort = flag.map(NonNull::from);
        // SAFETY: valid CPU backend; the flag's lifetime is the caller's contract.
        unsafe { (sys::cpu::cpu_backend().set_abort_callback)(self.cpu_backend(), cb, data) };
    }

    /// The main device's default buffer type (compute buffers).
    pub(crate) fn buffer_type(&self) -> sys::ggml_backend_buffer_type_t {
        // SAFETY: valid backend.
        unsafe { sys::ggml_backend_get_default_buffer_type(self.main.as_ptr()) }
    }

    /// Whether the main device runs every node of `graph` itself.
    pub(crate) fn supports_graph(&self, graph: &Graph) -> bool {
        graph
            .nodes()
            // SAFETY: valid backend and graph node.
            .all(|n| unsafe { sys::ggml_backend_supports_op(self.main.as_ptr(), n) })
    }

    /// Bytes of work buffer the CPU needs to run `graph` with this backend's
    /// threads (CPU backends only).
    pub(crate) fn cpu_work_size(&self, graph: &Graph) -> usize {
        // SAFETY: valid graph and threadpool; planning only reads the graph.
        let plan = unsafe {
            (sys::cpu::cpu_backend().graph_plan)(
                graph.g.as_ptr(),
                self.n_threads as i32,
                self.threadpool.as_ptr(),
            )
        };
        plan.work_size
    }

    /// Runs an allocated graph on the CPU with the persistent threadpool and
    /// the caller's work buffer, grown (allocating) only when this graph needs
    /// more than it holds: graphs planned beforehand never do. The graph is
    /// planned (`ggml_graph_plan`) once, here.
    pub(crate) fn cpu_compute(&mut self, graph: &mut Graph, work: &mut Vec<u8>) -> Result<()> {
        // SAFETY: valid graph and threadpool.
        let mut plan = unsafe {
            (sys::cpu::cpu_backend().graph_plan)(
                graph.g.as_ptr(),
                self.n_threads as i32,
                self.threadpool.as_ptr(),
            )
        };
        if plan.work_size > work.len() {
            work.try_reserve_exact(plan.work_size - work.len())
                .map_err(|_| Error::OutOfMemory("CPU work buffer".into()))?;
            work.resize(plan.work_size, 0);
        }
        plan.work_data = if plan.work_size > 0 {
            work.as_mut_ptr()
        } else {
            std::ptr::null_mut()
        };
        // SAFETY: the flag, when set, outlives the compute (set_abort_flag's contract).
        let (cb, data) = abort_callback(self.abort.map(|f| unsafe { f.as_ref() }));
        plan.abort_callback = cb;
        plan.abort_callback_data = data;
        // SAFETY: every tensor of the graph is allocated; the work buffer has
        // `work_size` bytes and outlives the call.
        status(unsafe { (sys::cpu::cpu_backend().graph_compute)(graph.g.as_ptr(), &mut plan) })
    }

    /// Runs an allocated graph on the main (GPU) device.
    pub(crate) fn device_compute(&mut self, graph: &mut Graph) -> Result<()> {
        // SAFETY: every tensor of the graph is allocated on this device.
        status(unsafe { sys::ggml_backend_graph_compute(self.main.as_ptr(), graph.g.as_ptr()) })
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

    /// Whether the main device can use host memory (the memory-mapped weights)
    /// in place: the CPU, and devices such as Metal on unified memory.
    pub(crate) fn maps_host_memory(&self) -> bool {
        match &self.device {
            None => true,
            Some((_, info)) => info.maps_host_memory,
        }
    }

    /// Wraps host memory (e.g. a memory-mapped file) as a weight buffer of the
    /// main device without copying; `max_tensor` is the largest tensor that will
    /// be placed in it. The memory must outlive the returned buffer and every
    /// tensor in it. Only for devices where [`Backend::maps_host_memory`].
    pub(crate) fn host_buffer_from_ptr(
        &self,
        ptr: *const u8,
        size: usize,
        max_tensor: usize,
    ) -> Result<Buffer> {
        let buf = match &self.device {
            // SAFETY: ggml only records the pointer; weights are never written.
            None => unsafe { sys::ggml_backend_cpu_buffer_from_ptr(ptr as *mut _, size) },
            // SAFETY: the device supports host pointers (caller checked); ggml
            // records the pointer, weights are never written.
            Some((dev, _)) => unsafe {
                sys::ggml_backend_dev_buffer_from_host_ptr(
                    dev.as_ptr(),
                    ptr as *mut _,
                    size,
                    max_tensor,
                )
            },
        };
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
        let _serial = self.device.as_ref().map(|_| gpu_lifecycle_lock());
        // SAFETY: each handle was created by us and is freed once; the threadpool
        // is freed after the backend that uses it.
        unsafe {
            sys::ggml_backend_free(self.main.as_ptr());
            if let Some(cpu) = self.cpu {
                sys::ggml_backend_free(cpu.as_ptr());
            }
            (sys::cpu::cpu_backend().threadpool_free)(self.threadpool.as_ptr());
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
    /// Takes ownership of a buffer ggml allocated.
    pub(super) fn from_raw(buf: NonNull<sys::ggml_backend_buffer>) -> Buffer {
        Buffer { buf }
    }

    /// Size in bytes.
    pub(crate) fn size(&self) -> usize {
        // SAFETY: valid buffer.
        unsafe { sys::ggml_backend_buffer_get_size(self.buf.as_ptr()) }
    }

    /// The name of the buffer's type (`CPU`, `CPU_REPACK`, `AMX`, ...).
    pub(crate) fn type_name(&self) -> String {
        // SAFETY: valid buffer; its type has a static NUL-terminated name.
        cstr(unsafe {
            sys::ggml_backend_buft_name(sys::ggml_backend_buffer_get_type(self.buf.as_ptr()))
        })
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
        status(unsafe {
            sys::ggml_backend_sched_graph_compute(self.sched.as_ptr(), graph.g.as_ptr())
        })
    }

    /// Number of pieces the last allocated graph was split into between
    /// devices: 1 when the whole graph runs on the main device; more when some
    /// ops fell back to the CPU (each split boundary copies tensors).
    pub(crate) fn n_splits(&self) -> usize {
        // SAFETY: valid scheduler.
        unsafe { sys::ggml_backend_sched_get_n_splits(self.sched.as_ptr()) }.max(0) as usize
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

/// ggml's abort callback for an optional flag.
fn abort_callback(
    flag: Option<&AtomicBool>,
) -> (sys::ggml_abort_callback, *mut std::os::raw::c_void) {
    unsafe extern "C" fn poll(data: *mut std::os::raw::c_void) -> bool {
        // SAFETY: `data` is the AtomicBool registered with it, alive while set.
        let flag = unsafe { &*(data as *const AtomicBool) };
        flag.load(std::sync::atomic::Ordering::Relaxed)
    }
    match flag {
        Some(f) => (Some(poll), f as *const AtomicBool as *mut _),
        None => (None, std::ptr::null_mut()),
    }
}

/// Maps a ggml compute status to our errors.
fn status(st: sys::ggml_status) -> Result<()> {
    match st {
        sys::GGML_STATUS_SUCCESS => Ok(()),
        sys::GGML_STATUS_ABORTED => Err(Error::Cancelled),
        sys::GGML_STATUS_ALLOC_FAILED => Err(Error::OutOfMemory("graph compute".into())),
        other => Err(Error::Backend(format!("graph compute failed ({other})"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_features_are_named_in_order() {
        let req = ["sse4.2", "avx", "avx2", "fma"];
        assert!(missing_features(&req, |_| true).is_empty());
        assert_eq!(
            missing_features(&req, |f| f.starts_with("sse")),
            ["avx", "avx2", "fma"]
        );
        assert_eq!(missing_features(&req, |f| f != "avx2"), ["avx2"]);
    }

    #[test]
    fn this_cpu_runs_this_build() {
        // The test machine runs the tests, so it has what the build needs.
        check_cpu_features().unwrap();
    }
}
