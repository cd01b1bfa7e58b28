//! Saving and restoring a session's state (a conversation that survives the
//! app's process), and its file form.

use super::boundary::{Out, arg_ref, arg_slice, check_ptr, guard};
use super::model::path_of;
use super::session::rd_session;
use super::status::{Fail, rd_status};
use std::ffi::{CStr, c_char};

/// Bytes `rd_session_state_save()` would write now: it grows with the cached
/// positions (each one costs `2 * kv_dim * (element size)` bytes per layer
/// instance), plus the logits and a small header.
///
/// Errors: `RD_ERR_INVALID_ARGUMENT` (NULL), `RD_ERR_BUSY`.
///
/// # Safety
///
/// `session` must be NULL or a live session; `out_size` NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn rd_session_state_size(
    session: *mut rd_session,
    out_size: *mut usize,
) -> rd_status {
    guard("rd_session_state_size", || {
        // SAFETY: a non-NULL `session` is live (contract).
        let handle = unsafe { arg_ref(session, "session")? };
        // SAFETY: `out_size` is writable (contract).
        let out = unsafe { Out::new(out_size, "out_size")? };
        out.write(handle.lock()?.session.state_size());
        Ok(())
    })
}

/// Writes the session's state into `buf`: the cached positions of every
/// layer (the KV cache), the logits of the last position, the iterations
/// they came from and the initial-state generator, with the model file's
/// fingerprint and a checksum (format in docs/c-api.md, "Session state").
/// A new session over the same model file, with the same `kv_budget` and
/// `kv_type` and a context at least as long, continues from it exactly
/// (`rd_session_state_load()`). Generation parameters (limits, sampling,
/// seed) are arguments of each call and are not part of the state.
///
/// Size negotiation: `*out_len` receives the state's size on `RD_OK` and on
/// `RD_ERR_BUFFER_TOO_SMALL`; pass `buf = NULL, capacity = 0` to ask for it.
/// Allocates nothing.
///
/// Errors: `RD_ERR_INVALID_ARGUMENT` (NULL session or out_len, NULL buf with
/// a non-zero capacity), `RD_ERR_BUFFER_TOO_SMALL`, `RD_ERR_BUSY`.
///
/// # Safety
///
/// `session` must be NULL or a live session; `buf` NULL or writable for
/// `capacity` bytes; `out_len` NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn rd_session_state_save(
    session: *mut rd_session,
    buf: *mut u8,
    capacity: usize,
    out_len: *mut usize,
) -> rd_status {
    guard("rd_session_state_save", || {
        // SAFETY: a non-NULL `session` is live (contract).
        let handle = unsafe { arg_ref(session, "session")? };
        // SAFETY: `out_len` is writable (contract).
        let len_out = unsafe { Out::new(out_len, "out_len")? };
        if capacity > 0 {
            check_ptr(buf, "buf")?;
        }
        let inner = handle.lock()?;
        let need = inner.session.state_size();
        if capacity < need {
            len_out.write(need);
            return Err(Fail::new(
                rd_status::RD_ERR_BUFFER_TOO_SMALL,
                format!("capacity {capacity} < {need} bytes of state"),
            ));
        }
        // SAFETY: `buf` is non-NULL (capacity >= need > 0) and writable for
        // `capacity` bytes (contract); nothing else refers to it during the call.
        let out = unsafe { std::slice::from_raw_parts_mut(buf, capacity) };
        let n = inner.session.save_state(out)?;
        len_out.write(n);
        Ok(())
    })
}

/// Restores a state written by `rd_session_state_save()` (or
/// `rd_session_state_save_file()`): afterwards the session holds the saved
/// positions and logits, and the same calls produce the same tokens as they
/// would have in the saved session.
///
/// Everything is checked before anything changes: a state of another model
/// file, another `kv_budget` or `kv_type`, more positions than this
/// session's context, a corrupt or truncated buffer, or a format version
/// this library does not read is `RD_ERR_INVALID_ARGUMENT` naming the
/// mismatch, and the session is left as it was.
///
/// Errors: `RD_ERR_INVALID_ARGUMENT` (NULL, or a state that does not fit as
/// above), `RD_ERR_BUSY`.
///
/// # Safety
///
/// `session` must be NULL or a live session; `buf` NULL or readable for `len`
/// bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn rd_session_state_load(
    session: *mut rd_session,
    buf: *const u8,
    len: usize,
) -> rd_status {
    guard("rd_session_state_load", || {
        // SAFETY: a non-NULL `session` is live (contract).
        let handle = unsafe { arg_ref(session, "session")? };
        // SAFETY: `buf` holds `len` readable bytes (contract).
        let data = unsafe { arg_slice(buf, len, "buf")? };
        handle.lock()?.session.load_state(data)?;
        Ok(())
    })
}

/// `rd_session_state_save()` into a file at `path` (created, or replaced).
///
/// Errors: as `rd_session_state_save()`, and `RD_ERR_IO` (the file cannot be
/// written), `RD_ERR_OUT_OF_MEMORY`.
///
/// # Safety
///
/// `session` must be NULL or a live session; `path` NULL or a NUL-terminated
/// string.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn rd_session_state_save_file(
    session: *mut rd_session,
    path: *const c_char,
) -> rd_status {
    guard("rd_session_state_save_file", || {
        // SAFETY: a non-NULL `session` is live (contract).
        let handle = unsafe { arg_ref(session, "session")? };
        check_ptr(path, "path")?;
        // SAFETY: `path` is a non-NULL NUL-terminated string (contract).
        let path = path_of(unsafe { CStr::from_ptr(path) })?;
        let inner = handle.lock()?;
        inner
            .session
            .save_state_file(&path)
            .map_err(|e| Fail::from(e).context(&path.display().to_string()))
    })
}

/// `rd_session_state_load()` from a file written by
/// `rd_session_state_save_file()`. Only regular files are read (a device or
/// pipe is refused before reading), and no more bytes than the largest state
/// this session could hold.
///
/// Errors: as `rd_session_state_load()`, and `RD_ERR_IO` (missing,
/// unreadable or not a regular file).
///
/// # Safety
///
/// `session` must be NULL or a live session; `path` NULL or a NUL-terminated
/// string.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn rd_session_state_load_file(
    session: *mut rd_session,
    path: *const c_char,
) -> rd_status {
    guard("rd_session_state_load_file", || {
        // SAFETY: a non-NULL `session` is live (contract).
        let handle = unsafe { arg_ref(session, "session")? };
        check_ptr(path, "path")?;
        // SAFETY: `path` is a non-NULL NUL-terminated string (contract).
        let path = path_of(unsafe { CStr::from_ptr(path) })?;
        let mut inner = handle.lock()?;
        inner
            .session
            .load_state_file(&path)
            .map_err(|e| Fail::from(e).context(&path.display().to_string()))
    })
}
