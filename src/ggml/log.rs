//! ggml's log messages, routed through one place.
//!
//! ggml prints every message, debug ones included, to stderr unless a
//! callback is installed (ggml-vulkan, for one, announces each device it
//! finds). A library must not do that to its host program: this module
//! installs a callback when the first backend is created and, by default,
//! forwards warnings and errors to stderr with a `ggml: ` prefix and drops
//! the rest. [`set_log_handler`] sends messages to the caller instead.

use super::sys;
use std::ffi::CStr;
use std::sync::{Mutex, Once, RwLock};

/// Severity of a log message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum LogLevel {
    /// Detail for debugging (device enumeration, buffer sizes).
    Debug,
    /// Progress information.
    Info,
    /// Something unexpected that the library can live with.
    Warn,
    /// A failure (the call that hit it also returns an error).
    Error,
}

/// Receives one whole message (without its trailing newline).
pub type LogHandler = Box<dyn Fn(LogLevel, &str) + Send + Sync>;

struct Sink {
    min_level: LogLevel,
    handler: Option<LogHandler>,
}

static SINK: RwLock<Sink> = RwLock::new(Sink {
    min_level: LogLevel::Warn,
    handler: None,
});

/// Pieces of the message being assembled (ggml sends continuations
/// separately) and its level.
static PENDING: Mutex<(String, Option<LogLevel>)> = Mutex::new((String::new(), None));

/// Sends messages of `min_level` and above to `handler`, or to stderr when
/// `handler` is `None`. Applies process-wide (ggml's logger is global),
/// from the next message on. Thread-safe. The handler may be called from any
/// thread that runs ggml, must not block for long, and must not call
/// `set_log_handler` itself.
pub fn set_log_handler(min_level: LogLevel, handler: Option<LogHandler>) {
    install();
    let mut s = SINK.write().unwrap_or_else(|p| p.into_inner());
    *s = Sink { min_level, handler };
}

/// Installs the callback into ggml (once per process).
pub(crate) fn install() {
    static ONCE: Once = Once::new();
    // SAFETY: `forward` matches ggml's callback type and touches only
    // process-global state; the user data pointer is unused.
    ONCE.call_once(|| unsafe { sys::ggml_log_set(Some(forward), std::ptr::null_mut()) });
}

fn level_of(l: sys::ggml_log_level) -> Option<LogLevel> {
    match l {
        sys::GGML_LOG_LEVEL_DEBUG => Some(LogLevel::Debug),
        sys::GGML_LOG_LEVEL_INFO => Some(LogLevel::Info),
        sys::GGML_LOG_LEVEL_WARN => Some(LogLevel::Warn),
        sys::GGML_LOG_LEVEL_ERROR => Some(LogLevel::Error),
        // CONT continues the previous message; NONE is treated likewise.
        _ => None,
    }
}

unsafe extern "C" fn forward(
    level: sys::ggml_log_level,
    text: *const std::os::raw::c_char,
    _user: *mut std::os::raw::c_void,
) {
    if text.is_null() {
        return;
    }
    // SAFETY: ggml passes a NUL-terminated string valid for this call.
    let piece = unsafe { CStr::from_ptr(text) }.to_string_lossy();
    // Never unwind into C: a panicking handler is contained here.
    let _ = std::panic::catch_unwind(|| {
        let mut done = Vec::new();
        {
            let mut p = PENDING.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(l) = level_of(level) {
                if !p.0.is_empty() {
                    let lvl = p.1.unwrap_or(LogLevel::Info);
                    done.push((lvl, std::mem::take(&mut p.0)));
                }
                p.1 = Some(l);
            }
            p.0.push_str(&piece);
            if p.0.ends_with('\n') {
                let lvl = p.1.unwrap_or(LogLevel::Info);
                let msg = std::mem::take(&mut p.0);
                done.push((lvl, msg.trim_end_matches('\n').to_string()));
            }
        }
        let s = SINK.read().unwrap_or_else(|e| e.into_inner());
        for (lvl, msg) in done {
            if lvl < s.min_level {
                continue;
            }
            match &s.handler {
                Some(h) => h(lvl, &msg),
                None => eprintln!("ggml: {msg}"),
            }
        }
    });
}
