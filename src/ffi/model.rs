//! `rd_model`: loading, freeing and describing a model.

use super::RD_TOKEN_NONE;
use super::boundary::{Out, OutStruct, Versioned, arg_ref, check_ptr, guard, read_struct};
use super::params::rd_model_params;
use super::rd_token;
use super::status::{Fail, rd_status};
use super::text::ModelText;
use crate::model::Model;
use std::ffi::{CStr, CString, c_char};
use std::path::PathBuf;
use std::sync::Arc;

/// A loaded model: validated hyper-parameters and weights (memory-mapped and
/// used in place on the CPU and Metal, copied once to a Vulkan device), and
/// the tokenizer and chat template of the file when it has them. Opaque.
///
/// Created by `rd_model_load()`, destroyed by `rd_model_free()`. Immutable
/// after loading: one model may be used from any number of threads at once
/// and shared by any number of sessions. Sessions keep the model's weights
/// alive, so `rd_model_free()` may be called while sessions still exist.
pub struct rd_model {
    pub(crate) model: Arc<Model>,
    /// Tokenizer and chat template, shared with the sessions.
    pub(crate) text: Arc<ModelText>,
    architecture: CString,
    backend_name: CString,
    device_description: CString,
}

// The C API promises that models can be shared across threads.
const _: () = {
    const fn shareable<T: Send + Sync>() {}
    shareable::<rd_model>();
};

/// The file system path of a C string.
pub(crate) fn path_of(path: &CStr) -> Result<PathBuf, Fail> {
    if path.is_empty() {
        return Err(Fail::invalid("path is empty"));
    }
    #[cfg(unix)]
    {
        use std::os::unix::ffi::OsStrExt;
        Ok(PathBuf::from(std::ffi::OsStr::from_bytes(path.to_bytes())))
    }
    #[cfg(not(unix))]
    {
        path.to_str()
            .map(PathBuf::from)
            .map_err(|_| Fail::invalid("path is not valid UTF-8"))
    }
}

/// Locks the model's file bytes in RAM (`use_mlock`).
fn lock_memory(model: &Model) -> Result<(), Fail> {
    model.gguf().lock_in_ram().map_err(|e| {
        if e.kind() == std::io::ErrorKind::Unsupported {
            Fail::new(rd_status::RD_ERR_UNSUPPORTED, format!("use_mlock: {e}"))
        } else {
            Fail::new(
                rd_status::RD_ERR_IO,
                format!(
                    "mlock of the model file failed: {e} (raise RLIMIT_MEMLOCK or load without use_mlock)"
                ),
            )
        }
    })
}

/// Loads a `huginn` GGUF model, with its tokenizer and chat template when the
/// file has them (a model without them loads too; see
/// `rd_model_info.has_tokenizer`).
///
/// - `path`: NUL-terminated file path (bytes on Unix, UTF-8 elsewhere);
///   read only during the call.
/// - `params`: from `rd_model_default_params()`, possibly changed; read only
///   during the call.
/// - `out_model`: on `RD_OK` receives a new model, owned by the caller, to be
///   released with `rd_model_free()`; untouched on failure.
///
/// Errors: `RD_ERR_INVALID_ARGUMENT` (a NULL pointer, bad params),
/// `RD_ERR_IO` (missing file, a directory, unreadable, mlock refused),
/// `RD_ERR_INVALID_MODEL` (truncated or corrupt GGUF, bad metadata or
/// tensors), `RD_ERR_UNSUPPORTED_ARCHITECTURE` (a valid GGUF of an
/// architecture other than `huginn` and `llama`), `RD_ERR_BACKEND` (no such device), `RD_ERR_OUT_OF_MEMORY`,
/// `RD_ERR_CANCELLED` (the progress callback returned false).
///
/// A tokenizer or chat template that is present but cannot be used (corrupt
/// or unsupported) does not fail the load: the calls that need it return
/// `RD_ERR_TOKENIZER` or `RD_ERR_CHAT_TEMPLATE` with the reason.
///
/// The file is untrusted input: a bad file gives an error, never a crash.
/// With `use_mmap` the file must not be modified while the model is alive.
/// Thread-safe: several models may be loaded at once from several threads.
///
/// # Safety
///
/// `path` must be NULL or a NUL-terminated string; `params` NULL or a
/// valid `rd_model_params` of `params->struct_size` bytes; `out_model` NULL or
/// writable. `progress_callback`, if set, must be a valid function.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn rd_model_load(
    path: *const c_char,
    params: *const rd_model_params,
    out_model: *mut *mut rd_model,
) -> rd_status {
    guard("rd_model_load", || {
        check_ptr(path, "path")?;
        // SAFETY: `params` points to a readable rd_model_params (contract).
        let params = unsafe { read_struct(params, "params")? };
        // SAFETY: `out_model` is writable until we return (contract).
        let out = unsafe { Out::new(out_model, "out_model")? };
        // SAFETY: `path` is a non-NULL NUL-terminated string (contract).
        let path = path_of(unsafe { CStr::from_ptr(path) })?;
        let label = path.display().to_string();
        let model = load(&params, &label, |use_mmap| {
            Model::open_file(&path, use_mmap)
        })?;
        out.write(model);
        Ok(())
    })
}

/// Loads a model stored as `length` bytes of an open file from `offset`
/// (`length` 0: to the end of the file): an Android app passes the
/// `(fd, offset, length)` of an uncompressed APK asset
/// (`AAssetManager`'s `AAsset_openFileDescriptor64`, or
/// `AssetFileDescriptor`). Otherwise as `rd_model_load()`.
///
/// - `fd`: an open file descriptor of a regular file, readable; borrowed:
///   the library duplicates it and never closes or moves the caller's, which
///   may be closed as soon as the call returns.
/// - With `use_mmap` the range is memory-mapped; its weights are used in
///   place when `offset` is a multiple of 32 (APK assets aligned by
///   `zipalign -p` are), otherwise copied once (`rd_model_info.weights_mapped`
///   says which). Without `use_mmap` the range is read into memory.
///
/// Errors: `RD_ERR_INVALID_ARGUMENT` (negative `fd`, NULL pointers, bad
/// params), `RD_ERR_IO` (an fd that is not open, not readable or not a
/// regular file: a pipe, socket or device; a range that does not lie within
/// the file), then as `rd_model_load()` for the bytes of the range (a range
/// that is not exactly one GGUF file is `RD_ERR_INVALID_MODEL`).
/// `RD_ERR_UNSUPPORTED` on platforms without file descriptors.
///
/// # Safety
///
/// `fd` must not be closed by another thread during the call; `params` must
/// be NULL or a valid `rd_model_params` of `params->struct_size` bytes;
/// `out_model` NULL or writable. `progress_callback`, if set, must be a
/// valid function.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn rd_model_load_fd(
    fd: std::ffi::c_int,
    offset: u64,
    length: u64,
    params: *const rd_model_params,
    out_model: *mut *mut rd_model,
) -> rd_status {
    guard("rd_model_load_fd", || {
        // SAFETY: `params` points to a readable rd_model_params (contract).
        let params = unsafe { read_struct(params, "params")? };
        // SAFETY: `out_model` is writable until we return (contract).
        let out = unsafe { Out::new(out_model, "out_model")? };
        if fd < 0 {
            return Err(Fail::invalid(format!("fd {fd} is not a file descriptor")));
        }
        let file = dup_fd(fd)?;
        let label = format!("fd {fd} bytes {offset}+{length}");
        let model = load(&params, &label, |use_mmap| {
            Model::open_range(&file, offset, length, use_mmap)
        })?;
        out.write(model);
        Ok(())
    })
}

/// A `File` of its own for the caller's descriptor `fd` (a duplicate).
#[cfg(unix)]
fn dup_fd(fd: std::ffi::c_int) -> Result<std::fs::File, Fail> {
    use std::os::fd::{FromRawFd, OwnedFd};
    unsafe extern "C" {
        // POSIX, in the C library every Unix target links.
        fn fcntl(fd: std::ffi::c_int, cmd: std::ffi::c_int, ...) -> std::ffi::c_int;
    }
    #[cfg(any(target_os = "linux", target_os = "android"))]
    const F_DUPFD_CLOEXEC: std::ffi::c_int = 1030;
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    const F_DUPFD_CLOEXEC: std::ffi::c_int = 67;
    // SAFETY: fcntl(F_DUPFD_CLOEXEC) only creates a new descriptor; on a
    // descriptor that is not open it fails with EBADF and touches nothing.
    let new = unsafe { fcntl(fd, F_DUPFD_CLOEXEC, 0) };
    if new < 0 {
        let e = std::io::Error::last_os_error();
        return Err(Fail::new(rd_status::RD_ERR_IO, format!("fd {fd}: {e}")));
    }
    // SAFETY: `new` was just created by fcntl and is owned by nobody else.
    Ok(std::fs::File::from(unsafe { OwnedFd::from_raw_fd(new) }))
}

#[cfg(not(unix))]
fn dup_fd(_fd: std::ffi::c_int) -> Result<std::fs::File, Fail> {
    Err(Fail::new(
        rd_status::RD_ERR_UNSUPPORTED,
        "loading from a file descriptor needs a Unix platform",
    ))
}

/// The load both entry points share: `open` parses the GGUF bytes (mapped or
/// read); then weights are placed, reporting progress, and the handle made.
/// Messages are prefixed with `label` (the path, or the fd and range).
fn load(
    params: &rd_model_params,
    label: &str,
    open: impl FnOnce(bool) -> crate::Result<crate::gguf::GgufFile>,
) -> Result<*mut rd_model, Fail> {
    let load = params.to_load_params()?;
    let progress = |p: f32| -> Result<(), Fail> {
        match params.progress_callback {
            // SAFETY: a valid C function pointer with this signature
            // (contract); user data is passed through unchanged.
            Some(cb) if !unsafe { cb(p, params.progress_user_data) } => Err(Fail::new(
                rd_status::RD_ERR_CANCELLED,
                "cancelled by the progress callback",
            )),
            _ => Ok(()),
        }
    };
    let with_label = |e: crate::Error| Fail::from(e).context(label);
    progress(0.0)?;
    let file = open(load.use_mmap).map_err(with_label)?;
    progress(0.5)?;
    // Weight placement reports 0.5..0.95 (per tensor when uploading to a
    // GPU); 1 comes after mlock.
    let mut placing = |p: f32| progress(0.5 + 0.45 * p.clamp(0.0, 1.0)).is_ok();
    let model = Model::from_file_with_progress(file, &load, &mut placing).map_err(|e| {
        if matches!(e, crate::Error::Cancelled) {
            Fail::new(
                rd_status::RD_ERR_CANCELLED,
                "cancelled by the progress callback",
            )
        } else {
            with_label(e)
        }
    })?;
    if params.use_mlock {
        lock_memory(&model)?;
    }
    progress(1.0)?;
    let architecture = model
        .gguf()
        .get_str("general.architecture")
        .ok()
        .flatten()
        .unwrap_or_default()
        .replace('\0', "");
    let text = Arc::new(ModelText::from_gguf(model.gguf()));
    let handle = rd_model {
        text,
        architecture: CString::new(architecture).unwrap_or_default(),
        backend_name: CString::new(model.backend_name().replace('\0', "")).unwrap_or_default(),
        device_description: CString::new(model.device_description().replace('\0', ""))
            .unwrap_or_default(),
        model: Arc::new(model),
    };
    Ok(Box::into_raw(Box::new(handle)))
}

/// Releases the caller's reference to a model. NULL is ignored.
///
/// Sessions created from the model stay valid (they hold their own
/// reference); the weights are released when the last of them is freed.
/// Strings returned by `rd_model_get_info()` become invalid. The model must
/// not be used by another thread during or after this call, and must not be
/// freed twice.
///
/// # Safety
///
/// `model` must be NULL or a model from `rd_model_load()` that was not
/// freed yet.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn rd_model_free(model: *mut rd_model) {
    let _ = guard("rd_model_free", || {
        if !model.is_null() {
            // SAFETY: a non-NULL `model` came from rd_model_load and is freed
            // once (contract).
            drop(unsafe { Box::from_raw(model) });
        }
        Ok(())
    });
}

/// Hyper-parameters and placement of a model, written by `rd_model_get_info()`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct rd_model_info {
    /// Set by the caller to `sizeof(rd_model_info)` before the call.
    pub struct_size: usize,
    /// `general.architecture` ("huginn" or "llama"); owned by the model, valid until
    /// `rd_model_free()`.
    pub architecture: *const c_char,
    /// Name of the backend holding the weights (e.g. "CPU"); owned by the
    /// model, valid until `rd_model_free()`.
    pub backend_name: *const c_char,
    /// Vocabulary size: valid token ids are `0..n_vocab-1`.
    pub n_vocab: u32,
    /// Training context length (the largest `n_ctx` a session may use).
    pub context_length: u32,
    /// Width of the residual stream.
    pub n_embd: u32,
    /// Attention query heads.
    pub n_head: u32,
    /// Attention key/value heads.
    pub n_head_kv: u32,
    /// Prelude blocks (run once per token).
    pub n_prelude: u32,
    /// Core blocks (the recurrent part, run once per iteration); 0 for a
    /// model without recurrence (a plain `llama` file), which runs each
    /// token once through its prelude blocks and ignores iteration limits.
    pub n_core: u32,
    /// Coda blocks (run once per token, and at every logits-based exit check).
    pub n_coda: u32,
    /// Default number of core iterations stored in the file (1 without
    /// recurrence).
    pub default_iterations: u32,
    /// CPU threads sessions use.
    pub n_threads: u32,
    /// Whether the weights are used in place from the file's bytes: the
    /// memory map with `use_mmap` (no copy), or, without it, the in-memory
    /// copy of the file when the allocator happened to align it to 32 bytes
    /// (else the weights were copied a second time into a ggml buffer).
    pub weights_mapped: bool,
    /// Whether the model has a usable tokenizer: `rd_tokenize()`,
    /// `rd_detokenize()`, `rd_generate_text()` and `rd_token_event.text` work.
    pub has_tokenizer: bool,
    /// Whether the model has a usable chat template
    /// (`rd_chat_apply_template()`).
    pub has_chat_template: bool,
    /// Whether `RD_TOKENIZE_ADD_SPECIAL` puts `bos_token` first.
    pub add_bos: bool,
    /// The tokenizer's beginning-of-text token, or `RD_TOKEN_NONE`.
    pub bos_token: rd_token,
    /// The tokenizer's end-of-text token, or `RD_TOKEN_NONE`.
    pub eos_token: rd_token,
    /// The tokenizer's end-of-turn token (chat), or `RD_TOKEN_NONE`.
    pub eot_token: rd_token,
    /// The device the model runs on, an `rd_backend` that names it exactly
    /// (`RD_BACKEND_CPU`, `RD_BACKEND_VULKAN` or `RD_BACKEND_METAL`, never
    /// `RD_BACKEND_AUTO`). Added in 0.2.
    pub backend: u32,
    /// With `RD_BACKEND_VULKAN`: the Vulkan device index; else 0. Added in 0.2.
    pub device_index: u32,
    /// Description of the device (e.g. the GPU's name, or "CPU"); owned by the
    /// model, valid until `rd_model_free()`. Added in 0.2.
    pub device_description: *const c_char,
    /// Bytes of weight matrices repacked for the CPU at load (memory the
    /// library owns, in addition to the mapped file; 0 when none were: see
    /// `rd_model_params.repack`). Added in 0.3.
    pub repacked_bytes: u64,
}

// SAFETY: repr(C), starts with `struct_size: usize`; only written by the
// library (a C bool, numbers, pointers).
unsafe impl Versioned for rd_model_info {
    const NAME: &'static str = "rd_model_info";
    const OUTPUT: bool = true;
    // 0.1 ended before `backend`, 0.2 before `repacked_bytes`.
    const RELEASED_SIZES: &'static [usize] = &[
        std::mem::offset_of!(rd_model_info, backend),
        std::mem::offset_of!(rd_model_info, repacked_bytes),
    ];
    fn defaults() -> Self {
        rd_model_info {
            struct_size: size_of::<Self>(),
            architecture: std::ptr::null(),
            backend_name: std::ptr::null(),
            n_vocab: 0,
            context_length: 0,
            n_embd: 0,
            n_head: 0,
            n_head_kv: 0,
            n_prelude: 0,
            n_core: 0,
            n_coda: 0,
            default_iterations: 0,
            n_threads: 0,
            weights_mapped: false,
            has_tokenizer: false,
            has_chat_template: false,
            add_bos: false,
            bos_token: RD_TOKEN_NONE,
            eos_token: RD_TOKEN_NONE,
            eot_token: RD_TOKEN_NONE,
            backend: 0,
            device_index: 0,
            device_description: std::ptr::null(),
            repacked_bytes: 0,
        }
    }
}

fn u32_of(v: usize) -> u32 {
    u32::try_from(v).unwrap_or(u32::MAX)
}

/// Describes a model.
///
/// `out_info->struct_size` must be set by the caller (e.g.
/// `rd_model_info info = { .struct_size = sizeof info };`); on `RD_OK` the
/// rest is filled in. Thread-safe (the model is immutable).
///
/// # Safety
///
/// `model` must be NULL or a live model; `out_info` NULL or a writable
/// `rd_model_info` of `out_info->struct_size` bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn rd_model_get_info(
    model: *const rd_model,
    out_info: *mut rd_model_info,
) -> rd_status {
    guard("rd_model_get_info", || {
        // SAFETY: a non-NULL `model` is a live model (contract).
        let handle = unsafe { arg_ref(model, "model")? };
        // SAFETY: `out_info` is writable for its struct_size (contract).
        let out = unsafe { OutStruct::new(out_info, "out_info")? };
        let m = &handle.model;
        let c = m.config();
        let tok = handle.text.ready_tokenizer();
        let special = tok.map(|t| t.special_tokens().clone()).unwrap_or_default();
        let id = |t: Option<u32>| t.unwrap_or(RD_TOKEN_NONE);
        out.write(rd_model_info {
            struct_size: size_of::<rd_model_info>(),
            architecture: handle.architecture.as_ptr(),
            backend_name: handle.backend_name.as_ptr(),
            n_vocab: u32_of(c.n_vocab),
            context_length: u32_of(c.context_length),
            n_embd: u32_of(c.n_embd),
            n_head: u32_of(c.n_head),
            n_head_kv: u32_of(c.n_head_kv),
            n_prelude: u32_of(c.n_prelude),
            n_core: u32_of(c.n_core),
            n_coda: u32_of(c.n_coda),
            default_iterations: u32_of(c.default_iterations),
            n_threads: u32_of(m.load_params().n_threads),
            weights_mapped: m.weights_are_mapped(),
            has_tokenizer: tok.is_some(),
            has_chat_template: handle.text.has_template(),
            add_bos: special.add_bos && special.bos.is_some(),
            bos_token: id(special.bos),
            eos_token: id(special.eos),
            eot_token: id(special.eot),
            backend: super::device::backend_code(m.load_params().backend),
            device_index: super::device::device_index(m.load_params().backend),
            device_description: handle.device_description.as_ptr(),
            repacked_bytes: m.repacked_bytes() as u64,
        });
        Ok(())
    })
}
