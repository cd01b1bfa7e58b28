//! Log messages of the compute library (ggml): `rd_log_set()`.

use super::boundary::guard;
use super::status::{Fail, rd_status};
use crate::ggml::{LogLevel, set_log_handler};
use std::ffi::{CString, c_char, c_void};

/// Severity of a log message (`rd_log_set()`).
pub type rd_log_level = u32;
/// Detail for debugging (device enumeration, buffer sizes).
pub const RD_LOG_DEBUG: rd_log_level = 1;
/// Progress information.
pub const RD_LOG_INFO: rd_log_level = 2;
/// Something unexpected the library can live with.
pub const RD_LOG_WARN: rd_log_level = 3;
/// A failure (the call that hit it also returns an error).
pub const RD_LOG_ERROR: rd_log_level = 4;

/// Receives one whole log message (NUL-terminated UTF-8, no trailing
/// newline), valid only during the call. May be called from any thread that
/// runs the library; must return quickly, must not call `rd_log_set()`, and
/// must not unwind (no C++ exceptions or longjmp across it).
pub type rd_log_callback = Option<
    unsafe extern "C" fn(level: rd_log_level, message: *const c_char, user_data: *mut c_void),
>;

/// A C callback and its user data, callable from any thread (the contract
/// of `rd_log_set()`).
struct CLogger {
    cb: unsafe extern "C" fn(rd_log_level, *const c_char, *mut c_void),
    user_data: *mut c_void,
}

// SAFETY: `rd_log_set()` requires the callback to be callable from any
// thread with this user data.
unsafe impl Send for CLogger {}
// SAFETY: as above; the logger is only read.
unsafe impl Sync for CLogger {}

impl CLogger {
    fn call(&self, l: LogLevel, msg: &str) {
        let text = CString::new(msg.replace('\0', "")).unwrap_or_default();
        // SAFETY: a valid callback for this user data on any thread
        // (contract of rd_log_set); the text lives for the call.
        unsafe { (self.cb)(level_code(l), text.as_ptr(), self.user_data) };
    }
}

fn level_code(l: LogLevel) -> rd_log_level {
    match l {
        LogLevel::Debug => RD_LOG_DEBUG,
        LogLevel::Info => RD_LOG_INFO,
        LogLevel::Warn => RD_LOG_WARN,
        LogLevel::Error => RD_LOG_ERROR,
    }
}

/// Chooses where the log messages of the compute library go: messages of
/// `min_level` and above are passed to `callback` with `user_data`, or
/// written to stderr when `callback` is NULL. The default, before any call,
/// is warnings and errors to stderr. Applies to the whole process (every
/// model and session) from the next message on. Errors:
/// `RD_ERR_INVALID_ARGUMENT` (a level outside `RD_LOG_DEBUG..RD_LOG_ERROR`).
/// Thread-safe, but do not call it from inside the callback.
///
/// # Safety
///
/// `callback`, if set, must be a valid function that may be called with
/// `user_data` from any thread until `rd_log_set()` replaces it.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn rd_log_set(
    callback: rd_log_callback,
    user_data: *mut c_void,
    min_level: rd_log_level,
) -> rd_status {
    guard("rd_log_set", || {
        let level = match min_level {
            RD_LOG_DEBUG => LogLevel::Debug,
            RD_LOG_INFO => LogLevel::Info,
            RD_LOG_WARN => LogLevel::Warn,
            RD_LOG_ERROR => LogLevel::Error,
            l => {
                return Err(Fail::new(
                    rd_status::RD_ERR_INVALID_ARGUMENT,
                    format!("unknown log level {l}"),
                ));
            }
        };
        let handler = callback.map(|cb| {
            let logger = CLogger { cb, user_data };
            Box::new(move |l: LogLevel, msg: &str| logger.call(l, msg)) as crate::ggml::LogHandler
        });
        set_log_handler(level, handler);
        Ok(())
    })
}
