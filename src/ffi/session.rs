//! `rd_session`: creation, reset, cancellation, compute limits changed during
//! generation, evaluation and logits.

use super::boundary::{
    Out, OutStruct, Versioned, arg_ref, arg_slice, check_ptr, guard, read_struct,
};
use super::model::rd_model;
use super::params::{rd_compute_limits, rd_session_params};
use super::rd_token;
use super::status::{Fail, rd_status};
use super::text::ModelText;
use crate::generate::ComputeLimits;
use crate::session::{MAX_ITERATIONS, Session};
use crate::tokenizer::StreamDecoder;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, TryLockError};

/// A conversation over a model: its KV cache, recurrent state and compute
/// buffers, all allocated by `rd_session_new()`. Opaque.
///
/// Created by `rd_session_new()`, destroyed by `rd_session_free()`. A session
/// must be used by one thread at a time; the exceptions are `rd_cancel()`,
/// callable from any thread at any time while the session exists, and
/// `rd_set_compute_limits()`, callable from any thread while `rd_generate()`
/// runs. A call that finds the session in use (by another thread, or
/// re-entered from a token callback) fails with `RD_ERR_BUSY` instead of
/// racing. Different sessions may run in parallel on different threads, also
/// over the same model.
pub struct rd_session {
    inner: Mutex<Inner>,
    /// The model's tokenizer and chat template.
    pub(crate) text: Arc<ModelText>,
    cancel: Arc<AtomicBool>,
    /// Limits set by `rd_set_compute_limits` during a generation, applied from
    /// the next token.
    pub(crate) pending: Mutex<Option<ComputeLimits>>,
    pub(crate) generating: AtomicBool,
}

/// The parts of a session used by one call at a time.
pub(crate) struct Inner {
    pub(crate) session: Session,
    /// Streams generated tokens as text (whole UTF-8 characters); its buffer
    /// is reserved at creation for the longest token.
    pub(crate) decoder: StreamDecoder,
    /// The text of the current token event (NUL-terminated), reserved at
    /// creation so that no token needs an allocation.
    pub(crate) piece: String,
}

// The C API promises that rd_cancel works from any thread.
const _: () = {
    const fn shareable<T: Send + Sync>() {}
    shareable::<rd_session>();
};

impl rd_session {
    /// The session, or `RD_ERR_BUSY` when another call holds it.
    pub(crate) fn lock(&self) -> Result<MutexGuard<'_, Inner>, Fail> {
        match self.inner.try_lock() {
            Ok(g) => Ok(g),
            Err(TryLockError::WouldBlock) => Err(Fail::new(
                rd_status::RD_ERR_BUSY,
                "the session is in use (a call from inside one of its callbacks, \
                 or from two threads at once)",
            )),
            Err(TryLockError::Poisoned(_)) => Err(Fail::new(
                rd_status::RD_ERR_INVALID_STATE,
                "the session was interrupted by an internal error; call rd_session_reset",
            )),
        }
    }

    /// Clears a cancellation requested before the current call started.
    pub(crate) fn clear_cancel(&self) {
        self.cancel.store(false, Ordering::Relaxed);
    }
}

/// Creates a session over `model`, allocating its KV cache (for `n_ctx`
/// positions and `kv_budget` slots per core block), compute buffers and the
/// buffers that turn generated tokens into text. Nothing is allocated per
/// token afterwards.
///
/// - `model`: a live model; the session keeps its weights, tokenizer and chat
///   template alive, so the model may be freed before the session.
/// - `params`: from `rd_session_default_params()`; read during the call only.
/// - `out_session`: on `RD_OK` receives the new session, owned by the caller,
///   to be released with `rd_session_free()`; untouched on failure.
///
/// Errors: `RD_ERR_INVALID_ARGUMENT` (NULL, `n_ctx` 0 or above the model's
/// context length, `kv_budget` 0 or above 4096, unknown enum values),
/// `RD_ERR_OUT_OF_MEMORY`, `RD_ERR_BACKEND`. Thread-safe: sessions of one
/// model may be created concurrently.
///
/// # Safety
///
/// `model` must be NULL or a live model; `params` NULL or a valid
/// `rd_session_params`; `out_session` NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn rd_session_new(
    model: *const rd_model,
    params: *const rd_session_params,
    out_session: *mut *mut rd_session,
) -> rd_status {
    guard("rd_session_new", || {
        // SAFETY: a non-NULL `model` is a live model (contract).
        let model = unsafe { arg_ref(model, "model")? };
        // SAFETY: `params` points to a readable struct (contract).
        let params = unsafe { read_struct(params, "params")? };
        // SAFETY: `out_session` is writable until we return (contract).
        let out = unsafe { Out::new(out_session, "out_session")? };
        let sp = params.to_session_params()?;
        let ctx_len = model.model.config().context_length;
        if sp.n_ctx > ctx_len {
            return Err(Fail::invalid(format!(
                "n_ctx {} exceeds the model's context length {ctx_len}",
                sp.n_ctx
            )));
        }
        let session = Session::new(Arc::clone(&model.model), &sp)?;
        let text = Arc::clone(&model.text);
        let (pending_cap, piece_cap) = text.stream_capacities();
        let mut decoder = StreamDecoder::new(false);
        decoder.reserve(pending_cap);
        let mut piece = String::new();
        piece
            .try_reserve_exact(piece_cap)
            .map_err(|_| Fail::new(rd_status::RD_ERR_OUT_OF_MEMORY, "token text buffer"))?;
        let handle = rd_session {
            cancel: session.cancel_flag(),
            inner: Mutex::new(Inner {
                session,
                decoder,
                piece,
            }),
            text,
            pending: Mutex::new(None),
            generating: AtomicBool::new(false),
        };
        out.write(Box::into_raw(Box::new(handle)));
        Ok(())
    })
}

/// Destroys a session and its buffers. NULL is ignored.
///
/// No other thread may use the session during or after this call (including
/// `rd_cancel()`), and it must not be freed twice. Calling it from inside one
/// of the session's own callbacks is an error that is detected and ignored
/// (the session is not freed; `rd_last_error()` says so).
///
/// # Safety
///
/// `session` must be NULL or a session from `rd_session_new()` that was
/// not freed yet.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn rd_session_free(session: *mut rd_session) {
    let _ = guard("rd_session_free", || {
        if session.is_null() {
            return Ok(());
        }
        {
            // SAFETY: a non-NULL `session` is live until this call (contract).
            let handle = unsafe { &*session };
            if let Err(TryLockError::WouldBlock) = handle.inner.try_lock() {
                return Err(Fail::new(
                    rd_status::RD_ERR_BUSY,
                    "the session is in use (called from its own callback?); not freed",
                ));
            }
        }
        // SAFETY: came from rd_session_new, not in use, freed once (contract).
        drop(unsafe { Box::from_raw(session) });
        Ok(())
    });
}

/// Forgets every cached position (the next call starts an empty context),
/// clears a pending cancellation and re-seeds the initial-state generator.
/// Buffers are kept. Also recovers a session after `RD_ERR_PANIC`.
///
/// Errors: `RD_ERR_INVALID_ARGUMENT` (NULL), `RD_ERR_BUSY` (called from a
/// callback of this session). Not thread-safe for the same session.
///
/// # Safety
///
/// `session` must be NULL or a live session.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn rd_session_reset(session: *mut rd_session) -> rd_status {
    guard("rd_session_reset", || {
        // SAFETY: a non-NULL `session` is live (contract).
        let handle = unsafe { arg_ref(session, "session")? };
        let mut inner = match handle.inner.try_lock() {
            Ok(g) => g,
            Err(TryLockError::Poisoned(p)) => {
                handle.inner.clear_poison();
                p.into_inner()
            }
            Err(TryLockError::WouldBlock) => {
                return Err(Fail::new(
                    rd_status::RD_ERR_BUSY,
                    "the session is in use (called from its own callback?)",
                ));
            }
        };
        inner.session.reset();
        Ok(())
    })
}

/// Drops the cached positions from `n_keep` on, keeping the first `n_keep`
/// (an app edits a message and regenerates from there): the next
/// `rd_eval()` or `rd_generate()` continues at position `n_keep`, exactly as
/// if the dropped tokens had never been evaluated. `n_keep` at or beyond the
/// cached positions changes nothing; `n_keep = 0` empties the cache (unlike
/// `rd_session_reset()` the initial-state generator is not re-seeded).
/// Dropping positions also drops the logits (`rd_get_logits()` and a
/// token-less `rd_generate()` then fail with `RD_ERR_INVALID_STATE` until
/// the next evaluation). Allocates nothing.
///
/// Errors: `RD_ERR_INVALID_ARGUMENT` (NULL), `RD_ERR_BUSY` (called from a
/// callback of this session). Not thread-safe for the same session.
///
/// # Safety
///
/// `session` must be a live session (NULL is rejected).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn rd_session_truncate(session: *mut rd_session, n_keep: u32) -> rd_status {
    guard("rd_session_truncate", || {
        // SAFETY: a non-NULL `session` is live (contract).
        let handle = unsafe { arg_ref(session, "session")? };
        handle.lock()?.session.truncate(n_keep as usize);
        Ok(())
    })
}

/// Computes with `n_threads` CPU threads from the next call on (0 = the
/// number of physical cores; at most 512): e.g. one thread while an app is
/// in the background, all cores in the foreground. A new thread pool
/// replaces the session's old one; results do not depend on the count. On a
/// GPU session this sets the threads of the ops that run on the CPU.
///
/// Errors: `RD_ERR_INVALID_ARGUMENT` (NULL, `n_threads` above 512),
/// `RD_ERR_BUSY` (called from a callback of this session, or while another
/// thread uses it), `RD_ERR_BACKEND` (the threads could not be created; the
/// session keeps its old ones). Not thread-safe for the same session.
///
/// # Safety
///
/// `session` must be a live session (NULL is rejected).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn rd_session_set_threads(
    session: *mut rd_session,
    n_threads: u32,
) -> rd_status {
    guard("rd_session_set_threads", || {
        // SAFETY: a non-NULL `session` is live (contract).
        let handle = unsafe { arg_ref(session, "session")? };
        let mut inner = handle.lock()?;
        inner.session.set_threads(n_threads as usize)?;
        Ok(())
    })
}

/// Asks the computation running on `session` to stop. Callable from any
/// thread (and from the session's callbacks) while the session exists.
///
/// The running `rd_generate()` or `rd_eval*()` returns `RD_ERR_CANCELLED`
/// within one graph node of the current recurrence step; positions committed
/// before that stay in the cache and the session stays usable. A request made
/// while nothing runs is dropped when the next call starts, so it never
/// cancels a later call. Lock-free; does not allocate.
///
/// Errors: `RD_ERR_INVALID_ARGUMENT` (NULL).
///
/// # Safety
///
/// `session` must be NULL or a live session that no thread frees during
/// the call.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn rd_cancel(session: *const rd_session) -> rd_status {
    guard("rd_cancel", || {
        // SAFETY: a non-NULL `session` is live (contract: not freed
        // concurrently); only an atomic field is touched.
        let handle = unsafe { arg_ref(session, "session")? };
        handle.cancel.store(true, Ordering::Relaxed);
        Ok(())
    })
}

/// Changes the compute limits of the running `rd_generate()`. Callable from
/// the token callback or from another thread while `rd_generate()` runs on
/// `session`. The limits are copied and validated now, and take effect when
/// the current (or, from another thread, the next) token callback returns:
/// every token computed after that uses them. The most recent call wins.
///
/// Errors: `RD_ERR_INVALID_ARGUMENT` (NULL, invalid limits; the running
/// limits are then unchanged), `RD_ERR_INVALID_STATE` (no generation is
/// running: pass limits to `rd_generate()` instead).
///
/// # Safety
///
/// `session` must be NULL or a live session; `limits` NULL or a valid
/// `rd_compute_limits`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn rd_set_compute_limits(
    session: *mut rd_session,
    limits: *const rd_compute_limits,
) -> rd_status {
    guard("rd_set_compute_limits", || {
        // SAFETY: a non-NULL `session` is live (contract).
        let handle = unsafe { arg_ref(session, "session")? };
        // SAFETY: `limits` points to a readable struct (contract).
        let limits = unsafe { read_struct(limits, "limits")? }.to_limits()?;
        if !handle.generating.load(Ordering::Acquire) {
            return Err(Fail::new(
                rd_status::RD_ERR_INVALID_STATE,
                "no generation is running on this session",
            ));
        }
        let mut pending = handle.pending.lock().unwrap_or_else(|p| p.into_inner());
        *pending = Some(limits);
        Ok(())
    })
}

/// Checks an iteration count of `rd_eval*`.
fn check_iterations(iterations: u32) -> Result<usize, Fail> {
    let it = iterations as usize;
    if it == 0 || it > MAX_ITERATIONS {
        return Err(Fail::invalid(format!(
            "iterations {iterations} out of range 1..={MAX_ITERATIONS}"
        )));
    }
    Ok(it)
}

/// Runs `tokens` through the model with a fixed number of core iterations,
/// appending them to the cache, and keeps the logits of the last one for
/// `rd_get_logits()` (for scoring, or to prime a conversation).
///
/// `tokens[0..n_tokens]` is read during the call only; `n_tokens >= 1`.
/// `iterations` is in 1..=4096.
///
/// Errors: `RD_ERR_INVALID_ARGUMENT` (NULL, n_tokens 0, a token id >=
/// n_vocab, iterations out of range), `RD_ERR_CONTEXT_FULL` (the tokens do not
/// fit after the cached positions; nothing is evaluated), `RD_ERR_CANCELLED`,
/// `RD_ERR_BUSY`. Not thread-safe for the same session.
///
/// # Safety
///
/// `session` must be NULL or a live session; `tokens` must hold
/// `n_tokens` readable ids (or be anything when `n_tokens` is 0).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn rd_eval(
    session: *mut rd_session,
    tokens: *const rd_token,
    n_tokens: usize,
    iterations: u32,
) -> rd_status {
    guard("rd_eval", || {
        // SAFETY: a non-NULL `session` is live (contract).
        let handle = unsafe { arg_ref(session, "session")? };
        // SAFETY: `tokens` holds `n_tokens` ids (contract).
        let tokens = unsafe { arg_slice(tokens, n_tokens, "tokens")? };
        let it = check_iterations(iterations)?;
        let mut inner = handle.lock()?;
        inner.session.check_tokens(tokens)?;
        handle.clear_cancel();
        inner.session.eval(tokens, it)?;
        Ok(())
    })
}

/// Like `rd_eval()`, and writes the logits of every position:
/// `n_tokens * n_vocab` floats, position-major, to `out_logits` (capacity
/// `capacity` floats). The capacity is checked before anything runs
/// (`RD_ERR_BUFFER_TOO_SMALL`, nothing evaluated); `out_logits` is written
/// only on `RD_OK`. Uses a temporary buffer of the same size inside the
/// library.
///
/// # Safety
///
/// As `rd_eval()`; `out_logits` must be NULL or writable for `capacity`
/// floats.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn rd_eval_all_logits(
    session: *mut rd_session,
    tokens: *const rd_token,
    n_tokens: usize,
    iterations: u32,
    out_logits: *mut f32,
    capacity: usize,
) -> rd_status {
    guard("rd_eval_all_logits", || {
        // SAFETY: a non-NULL `session` is live (contract).
        let handle = unsafe { arg_ref(session, "session")? };
        // SAFETY: `tokens` holds `n_tokens` ids (contract).
        let tokens = unsafe { arg_slice(tokens, n_tokens, "tokens")? };
        check_ptr(out_logits, "out_logits")?;
        let it = check_iterations(iterations)?;
        let mut inner = handle.lock()?;
        inner.session.check_tokens(tokens)?;
        let n_vocab = inner.session.model().config().n_vocab;
        let needed = n_tokens.saturating_mul(n_vocab);
        if capacity < needed {
            return Err(Fail::new(
                rd_status::RD_ERR_BUFFER_TOO_SMALL,
                format!("capacity {capacity} < {n_tokens} x {n_vocab} logits"),
            ));
        }
        handle.clear_cancel();
        let all = inner.session.eval_all_logits(tokens, it)?;
        // SAFETY: `out_logits` has room for `capacity >= all.len()` floats
        // (contract) and cannot overlap the library's own buffer.
        unsafe { std::ptr::copy_nonoverlapping(all.as_ptr(), out_logits, all.len()) };
        Ok(())
    })
}

/// Copies the logits (one float per vocabulary entry, unnormalised) of the
/// last evaluated position: the last token of `rd_eval()`, or the position
/// the last token of `rd_generate()` was sampled from.
///
/// Size negotiation: `*out_len` receives the number of logits (n_vocab) on
/// `RD_OK` and also on `RD_ERR_BUFFER_TOO_SMALL`, which is returned when
/// `capacity < n_vocab`; pass `out_logits = NULL, capacity = 0` to ask for the
/// size. `out_len` is required.
///
/// Errors: `RD_ERR_INVALID_ARGUMENT` (NULL session or out_len, NULL
/// out_logits with a non-zero capacity), `RD_ERR_INVALID_STATE` (nothing
/// evaluated since creation or reset, or the last call failed or was
/// cancelled), `RD_ERR_BUFFER_TOO_SMALL`, `RD_ERR_BUSY`.
///
/// # Safety
///
/// `session` must be NULL or a live session; `out_logits` NULL or
/// writable for `capacity` floats; `out_len` NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn rd_get_logits(
    session: *mut rd_session,
    out_logits: *mut f32,
    capacity: usize,
    out_len: *mut usize,
) -> rd_status {
    guard("rd_get_logits", || {
        // SAFETY: a non-NULL `session` is live (contract).
        let handle = unsafe { arg_ref(session, "session")? };
        // SAFETY: `out_len` is writable (contract).
        let len_out = unsafe { Out::new(out_len, "out_len")? };
        if capacity > 0 {
            check_ptr(out_logits, "out_logits")?;
        }
        let inner = handle.lock()?;
        if !inner.session.has_logits() {
            return Err(Fail::new(
                rd_status::RD_ERR_INVALID_STATE,
                "no logits: nothing was evaluated since the session was created or \
                 reset, or the last evaluation failed",
            ));
        }
        let logits = inner.session.logits();
        if capacity < logits.len() {
            len_out.write(logits.len());
            return Err(Fail::new(
                rd_status::RD_ERR_BUFFER_TOO_SMALL,
                format!("capacity {capacity} < {} logits", logits.len()),
            ));
        }
        // SAFETY: `out_logits` is non-NULL (capacity > 0 here since n_vocab >=
        // 1), aligned, and has room for `capacity >= logits.len()` floats
        // (contract).
        unsafe { std::ptr::copy_nonoverlapping(logits.as_ptr(), out_logits, logits.len()) };
        len_out.write(logits.len());
        Ok(())
    })
}

/// Sizes and fill level of a session, written by `rd_session_get_info()`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct rd_session_info {
    /// Set by the caller to `sizeof(rd_session_info)` before the call.
    pub struct_size: usize,
    /// Context length in positions.
    pub n_ctx: u32,
    /// Positions currently in the cache.
    pub n_past: u32,
    /// Most positions per prefill graph.
    pub n_batch: u32,
    /// Recurrence budget B (KV slots per core block).
    pub kv_budget: u32,
    /// Bytes of the KV cache and state stores.
    pub kv_bytes: u64,
    /// Bytes of compute buffers reserved for graphs, plus the exit-statistics
    /// stores (`3 * n_vocab + 2` floats).
    pub compute_bytes: u64,
    /// Most pieces one of the session's graphs was split into between
    /// devices: 1 when everything runs on the model's device; more on a GPU
    /// means some ops fall back to the CPU (tensors are copied at each split).
    /// Added in 0.2.
    pub graph_splits: u32,
}

// SAFETY: repr(C), starts with `struct_size: usize`; numbers only.
unsafe impl Versioned for rd_session_info {
    const NAME: &'static str = "rd_session_info";
    const OUTPUT: bool = true;
    // The first published layout ended before `graph_splits`.
    const RELEASED_SIZES: &'static [usize] = &[std::mem::offset_of!(rd_session_info, graph_splits)];
    fn defaults() -> Self {
        rd_session_info {
            struct_size: size_of::<Self>(),
            n_ctx: 0,
            n_past: 0,
            n_batch: 0,
            kv_budget: 0,
            kv_bytes: 0,
            compute_bytes: 0,
            graph_splits: 0,
        }
    }
}

/// Describes a session. `out_info->struct_size` must be set by the caller.
/// Errors: `RD_ERR_INVALID_ARGUMENT`, `RD_ERR_BUSY` (e.g. from inside a token
/// callback). Not thread-safe for the same session.
///
/// # Safety
///
/// `session` must be NULL or a live session; `out_info` NULL or a
/// writable `rd_session_info` of `out_info->struct_size` bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn rd_session_get_info(
    session: *mut rd_session,
    out_info: *mut rd_session_info,
) -> rd_status {
    guard("rd_session_get_info", || {
        // SAFETY: a non-NULL `session` is live (contract).
        let handle = unsafe { arg_ref(session, "session")? };
        // SAFETY: `out_info` is writable for its struct_size (contract).
        let out = unsafe { OutStruct::new(out_info, "out_info")? };
        let inner = handle.lock()?;
        let s = &inner.session;
        let u32_of = |v: usize| u32::try_from(v).unwrap_or(u32::MAX);
        out.write(rd_session_info {
            struct_size: size_of::<rd_session_info>(),
            n_ctx: u32_of(s.n_ctx()),
            n_past: u32_of(s.n_past()),
            n_batch: u32_of(s.n_batch()),
            kv_budget: u32_of(s.kv_budget()),
            kv_bytes: s.kv_bytes() as u64,
            compute_bytes: s.compute_bytes() as u64,
            graph_splits: u32_of(s.graph_splits()),
        });
        Ok(())
    })
}
