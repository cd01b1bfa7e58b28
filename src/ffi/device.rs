//! Devices: what this build can run on (`rd_device_count()`,
//! `rd_device_get_info()`), for choosing `rd_model_params.backend`.

use super::boundary::{OutStruct, Versioned, guard, guard_value};
use super::params::{
    RD_BACKEND_CPU, RD_BACKEND_GPU, RD_BACKEND_METAL, RD_BACKEND_VULKAN, rd_backend,
};
use super::status::{Fail, rd_status};
use crate::ggml::{BackendKind, DeviceInfo, list_devices};
use std::ffi::{CString, c_char};
use std::sync::OnceLock;

/// The `rd_backend` code that names `kind` exactly.
pub(crate) fn backend_code(kind: BackendKind) -> rd_backend {
    match kind {
        BackendKind::Cpu => RD_BACKEND_CPU,
        BackendKind::Vulkan(_) => RD_BACKEND_VULKAN,
        BackendKind::Metal => RD_BACKEND_METAL,
        BackendKind::Gpu | BackendKind::Auto => RD_BACKEND_GPU,
    }
}

/// The device index that goes with [`backend_code`].
pub(crate) fn device_index(kind: BackendKind) -> u32 {
    match kind {
        BackendKind::Vulkan(i) => u32::try_from(i).unwrap_or(u32::MAX),
        _ => 0,
    }
}

/// Names of the devices, made once: the list of devices is fixed for the
/// life of the process, and the strings must outlive every caller.
struct Names {
    name: CString,
    description: CString,
    api: CString,
}

fn names() -> &'static [Names] {
    static NAMES: OnceLock<Vec<Names>> = OnceLock::new();
    NAMES.get_or_init(|| {
        let c = |s: &str| CString::new(s.replace('\0', "")).unwrap_or_default();
        list_devices()
            .iter()
            .map(|d: &DeviceInfo| Names {
                name: c(&d.name),
                description: c(&d.description),
                api: c(&d.api),
            })
            .collect()
    })
}

/// Number of devices this build can run on (the CPU included), as listed by
/// `rd_device_get_info()`. Vulkan devices that are CPUs (Mesa's lavapipe) are
/// hidden unless the environment variable `GGML_VK_VISIBLE_DEVICES` lists
/// them before the first call. Thread-safe.
#[unsafe(no_mangle)]
pub extern "C" fn rd_device_count() -> u32 {
    guard_value(0, || u32::try_from(names().len()).unwrap_or(u32::MAX))
}

/// One device, written by `rd_device_get_info()`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct rd_device_info {
    /// Set by the caller to `sizeof(rd_device_info)` before the call.
    pub struct_size: usize,
    /// ggml's name for the device (e.g. "CPU", "Vulkan0", "MTL0"); static,
    /// valid for the life of the process.
    pub name: *const c_char,
    /// Human-readable description (e.g. the GPU's name); static.
    pub description: *const c_char,
    /// The API: "CPU", "Vulkan" or "Metal"; static.
    pub api: *const c_char,
    /// The `rd_model_params.backend` value that selects this device.
    pub backend: rd_backend,
    /// The `rd_model_params.device_index` value that selects this device.
    pub device_index: u32,
    /// Whether this is the CPU.
    pub is_cpu: bool,
    /// Whether the device uses the memory-mapped weights in place (the CPU,
    /// Metal on unified memory); otherwise they are copied to it at load.
    pub maps_host_memory: bool,
    /// Free device memory in bytes as the driver reports it now (0 if unknown).
    pub memory_free: u64,
    /// Total device memory in bytes (0 if unknown).
    pub memory_total: u64,
}

// SAFETY: repr(C), starts with `struct_size: usize`; only written by the
// library (pointers, numbers, C bools).
unsafe impl Versioned for rd_device_info {
    const NAME: &'static str = "rd_device_info";
    const OUTPUT: bool = true;
    const RELEASED_SIZES: &'static [usize] = &[];
    fn defaults() -> Self {
        rd_device_info {
            struct_size: size_of::<Self>(),
            name: std::ptr::null(),
            description: std::ptr::null(),
            api: std::ptr::null(),
            backend: RD_BACKEND_CPU,
            device_index: 0,
            is_cpu: false,
            maps_host_memory: false,
            memory_free: 0,
            memory_total: 0,
        }
    }
}

/// Describes device `index` (`0 <= index < rd_device_count()`).
/// `out_info->struct_size` must be set by the caller. Errors:
/// `RD_ERR_INVALID_ARGUMENT` (NULL, bad struct_size, index out of range).
/// Thread-safe.
///
/// # Safety
///
/// `out_info` must be NULL or a writable `rd_device_info` of
/// `out_info->struct_size` bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn rd_device_get_info(
    index: u32,
    out_info: *mut rd_device_info,
) -> rd_status {
    guard("rd_device_get_info", || {
        // SAFETY: `out_info` is writable for its struct_size (contract).
        let out = unsafe { OutStruct::new(out_info, "out_info")? };
        let all = names();
        let i = index as usize;
        let n = all.get(i).ok_or_else(|| {
            Fail::invalid(format!(
                "device index {index} out of range (0..{})",
                all.len()
            ))
        })?;
        // Memory is read fresh; the list itself does not change.
        let d = list_devices()
            .into_iter()
            .nth(i)
            .ok_or_else(|| Fail::new(rd_status::RD_ERR_BACKEND, "device list changed"))?;
        out.write(rd_device_info {
            struct_size: size_of::<rd_device_info>(),
            name: n.name.as_ptr(),
            description: n.description.as_ptr(),
            api: n.api.as_ptr(),
            backend: backend_code(d.backend),
            device_index: device_index(d.backend),
            is_cpu: d.is_cpu(),
            maps_host_memory: d.maps_host_memory,
            memory_free: d.memory_free as u64,
            memory_total: d.memory_total as u64,
        });
        Ok(())
    })
}
