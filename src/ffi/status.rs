//! Status codes, the mapping from library errors, and the thread-local
//! last-error message.

use super::boundary;
use crate::convert::ConvertError;
use crate::error::Error;
use crate::gguf::GgufError;
use std::cell::RefCell;
use std::ffi::{c_char, c_int};

/// Result of every fallible call. `RD_OK` is 0; every other value is a failure
/// whose message `rd_last_error()` returns on the same thread.
///
/// New codes may be added at the end in later versions: treat an unknown code
/// as a failure.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum rd_status {
    /// Success.
    RD_OK = 0,
    /// A NULL, misaligned or out-of-range argument, an unknown enumeration
    /// value, a `struct_size` the library does not know, or an inconsistent
    /// combination (e.g. `min_iterations > max_iterations`, a NaN threshold, a
    /// token id outside the vocabulary).
    RD_ERR_INVALID_ARGUMENT = 1,
    /// A file could not be opened or read (missing, a directory, no
    /// permission), or memory could not be locked.
    RD_ERR_IO = 2,
    /// The file is not a valid GGUF file or not a valid model of its architecture
    /// (truncated, corrupt, missing or inconsistent metadata or tensors).
    RD_ERR_INVALID_MODEL = 3,
    /// The GGUF file is valid but declares an architecture this runtime does
    /// not run (supported: `huginn`, `llama`).
    RD_ERR_UNSUPPORTED_ARCHITECTURE = 4,
    /// The request is valid but this build or platform cannot do it.
    RD_ERR_UNSUPPORTED = 5,
    /// Memory (host or device) could not be allocated.
    RD_ERR_OUT_OF_MEMORY = 6,
    /// The compute backend failed (including: no GPU for `RD_BACKEND_GPU`).
    RD_ERR_BACKEND = 7,
    /// The tokens do not fit in the session's remaining context.
    RD_ERR_CONTEXT_FULL = 8,
    /// `rd_cancel()` or a progress callback stopped the call.
    RD_ERR_CANCELLED = 9,
    /// The output buffer is too small; the required length was written.
    RD_ERR_BUFFER_TOO_SMALL = 10,
    /// The call is not valid in the object's current state (e.g. reading
    /// logits before anything was evaluated).
    RD_ERR_INVALID_STATE = 11,
    /// The session is in use: a call re-entered it from one of its callbacks,
    /// or two threads used it at once.
    RD_ERR_BUSY = 12,
    /// An internal error (a bug: a Rust panic was caught at the boundary).
    RD_ERR_PANIC = 13,
    /// The call needs a tokenizer and the model file has none (neither
    /// `tokenizer.huggingface.json` nor `tokenizer.ggml.*` keys). Pass token
    /// ids instead.
    RD_ERR_NO_TOKENIZER = 14,
    /// The call needs a chat template and the model file has none
    /// (`tokenizer.chat_template`).
    RD_ERR_NO_TEMPLATE = 15,
    /// The model's tokenizer cannot be used: its data in the file is corrupt
    /// or of an unsupported kind (the message says which), or it failed on
    /// the input. The model itself loads and works with token ids.
    RD_ERR_TOKENIZER = 16,
    /// The model's chat template cannot be parsed, or rendering it failed
    /// (e.g. the template rejected the messages with `raise_exception`, or ran
    /// out of its instruction budget).
    RD_ERR_CHAT_TEMPLATE = 17,
}

impl rd_status {
    const ALL: [rd_status; 18] = [
        rd_status::RD_OK,
        rd_status::RD_ERR_INVALID_ARGUMENT,
        rd_status::RD_ERR_IO,
        rd_status::RD_ERR_INVALID_MODEL,
        rd_status::RD_ERR_UNSUPPORTED_ARCHITECTURE,
        rd_status::RD_ERR_UNSUPPORTED,
        rd_status::RD_ERR_OUT_OF_MEMORY,
        rd_status::RD_ERR_BACKEND,
        rd_status::RD_ERR_CONTEXT_FULL,
        rd_status::RD_ERR_CANCELLED,
        rd_status::RD_ERR_BUFFER_TOO_SMALL,
        rd_status::RD_ERR_INVALID_STATE,
        rd_status::RD_ERR_BUSY,
        rd_status::RD_ERR_PANIC,
        rd_status::RD_ERR_NO_TOKENIZER,
        rd_status::RD_ERR_NO_TEMPLATE,
        rd_status::RD_ERR_TOKENIZER,
        rd_status::RD_ERR_CHAT_TEMPLATE,
    ];

    /// The code's name and meaning, NUL-terminated.
    fn describe(self) -> &'static std::ffi::CStr {
        match self {
            rd_status::RD_OK => c"RD_OK: success",
            rd_status::RD_ERR_INVALID_ARGUMENT => c"RD_ERR_INVALID_ARGUMENT: invalid argument",
            rd_status::RD_ERR_IO => c"RD_ERR_IO: input/output error",
            rd_status::RD_ERR_INVALID_MODEL => c"RD_ERR_INVALID_MODEL: invalid model file",
            rd_status::RD_ERR_UNSUPPORTED_ARCHITECTURE => {
                c"RD_ERR_UNSUPPORTED_ARCHITECTURE: unsupported model architecture"
            }
            rd_status::RD_ERR_UNSUPPORTED => c"RD_ERR_UNSUPPORTED: not supported",
            rd_status::RD_ERR_OUT_OF_MEMORY => c"RD_ERR_OUT_OF_MEMORY: out of memory",
            rd_status::RD_ERR_BACKEND => c"RD_ERR_BACKEND: compute backend error",
            rd_status::RD_ERR_CONTEXT_FULL => c"RD_ERR_CONTEXT_FULL: context full",
            rd_status::RD_ERR_CANCELLED => c"RD_ERR_CANCELLED: cancelled",
            rd_status::RD_ERR_BUFFER_TOO_SMALL => c"RD_ERR_BUFFER_TOO_SMALL: buffer too small",
            rd_status::RD_ERR_INVALID_STATE => c"RD_ERR_INVALID_STATE: invalid state",
            rd_status::RD_ERR_BUSY => c"RD_ERR_BUSY: session in use",
            rd_status::RD_ERR_PANIC => c"RD_ERR_PANIC: internal error",
            rd_status::RD_ERR_NO_TOKENIZER => c"RD_ERR_NO_TOKENIZER: the model has no tokenizer",
            rd_status::RD_ERR_NO_TEMPLATE => c"RD_ERR_NO_TEMPLATE: the model has no chat template",
            rd_status::RD_ERR_TOKENIZER => c"RD_ERR_TOKENIZER: tokenizer error",
            rd_status::RD_ERR_CHAT_TEMPLATE => c"RD_ERR_CHAT_TEMPLATE: chat template error",
        }
    }
}

/// A failure on its way to the C caller: a status and a message.
#[derive(Debug)]
pub(crate) struct Fail {
    pub(crate) status: rd_status,
    pub(crate) message: String,
}

impl Fail {
    pub(crate) fn new(status: rd_status, message: impl Into<String>) -> Fail {
        Fail {
            status,
            message: message.into(),
        }
    }

    /// `RD_ERR_INVALID_ARGUMENT` with `message`.
    pub(crate) fn invalid(message: impl Into<String>) -> Fail {
        Fail::new(rd_status::RD_ERR_INVALID_ARGUMENT, message)
    }

    /// `RD_ERR_INVALID_ARGUMENT` for a NULL pointer argument.
    pub(crate) fn null(what: &str) -> Fail {
        Fail::invalid(format!("{what} is NULL"))
    }

    /// The same failure with `prefix: ` (e.g. a file's name) before its message.
    pub(crate) fn context(self, prefix: &str) -> Fail {
        Fail::new(self.status, format!("{prefix}: {}", self.message))
    }
}

/// The status code of a library error. Every variant is listed (no
/// wildcard), so a new one cannot be added without choosing its code here.
pub(crate) fn status_of(err: &Error) -> rd_status {
    match err {
        Error::Gguf(GgufError::Io(_)) | Error::Io(_) => rd_status::RD_ERR_IO,
        Error::Gguf(_) | Error::InvalidModel(_) => rd_status::RD_ERR_INVALID_MODEL,
        Error::UnsupportedArchitecture(_) => rd_status::RD_ERR_UNSUPPORTED_ARCHITECTURE,
        Error::InvalidArgument(_) => rd_status::RD_ERR_INVALID_ARGUMENT,
        Error::InvalidState(_) => rd_status::RD_ERR_INVALID_STATE,
        Error::ContextFull { .. } => rd_status::RD_ERR_CONTEXT_FULL,
        Error::Cancelled => rd_status::RD_ERR_CANCELLED,
        Error::OutOfMemory(_) => rd_status::RD_ERR_OUT_OF_MEMORY,
        Error::Backend(_) => rd_status::RD_ERR_BACKEND,
        Error::Convert(e) => status_of_convert(e),
        Error::Tokenizer(_) => rd_status::RD_ERR_TOKENIZER,
        Error::ChatTemplate(_) => rd_status::RD_ERR_CHAT_TEMPLATE,
    }
}

/// The status code of a conversion error (checkpoint conversion and
/// re-quantization are not in the C API yet; this keeps the mapping total).
fn status_of_convert(err: &ConvertError) -> rd_status {
    match err {
        ConvertError::Io { .. } | ConvertError::MissingFile { .. } => rd_status::RD_ERR_IO,
        ConvertError::UnsupportedType(_) => rd_status::RD_ERR_INVALID_ARGUMENT,
        ConvertError::UnsupportedDtype { .. } => rd_status::RD_ERR_UNSUPPORTED,
        ConvertError::BadTokenizer(_) => rd_status::RD_ERR_TOKENIZER,
        ConvertError::BadJson { .. }
        | ConvertError::BadConfig { .. }
        | ConvertError::BadSafetensors { .. }
        | ConvertError::BadIndex { .. }
        | ConvertError::UnknownTensor(_)
        | ConvertError::MissingTensor(_)
        | ConvertError::DuplicateTensor(_)
        | ConvertError::WrongShape { .. }
        | ConvertError::NonFinite(_)
        | ConvertError::BadInput(_) => rd_status::RD_ERR_INVALID_MODEL,
    }
}

impl From<Error> for Fail {
    fn from(err: Error) -> Fail {
        Fail::new(status_of(&err), err.to_string())
    }
}

/// Bytes of the per-thread error message buffer (longer messages are cut).
const LAST_ERROR_CAP: usize = 1024;

thread_local! {
    /// This thread's last error message, NUL-terminated, rewritten in place
    /// so that a pointer from `rd_last_error` stays valid for the thread's life.
    static LAST_ERROR: RefCell<[u8; LAST_ERROR_CAP]> = const { RefCell::new([0; LAST_ERROR_CAP]) };
}

/// Stores `message` as this thread's last error, prefixed with the function name.
pub(crate) fn set_last_error(function: &str, message: &str) {
    let text = format!("{function}: {message}").replace('\0', "\\0");
    // Cut at a character boundary, leaving room for the NUL.
    let mut end = text.len().min(LAST_ERROR_CAP - 1);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    // Ignore the error of a thread that is being torn down.
    let _ = LAST_ERROR.try_with(|slot| {
        if let Ok(mut buf) = slot.try_borrow_mut() {
            buf[..end].copy_from_slice(&text.as_bytes()[..end]);
            buf[end] = 0;
        }
    });
}

/// The message of the most recent failed call on the calling thread, or an
/// empty string when no call has failed on this thread.
///
/// The message names the function and the problem (e.g.
/// `"rd_model_load: i/o error: No such file or directory (os error 2)"`).
/// The string is owned by the library: a per-thread buffer whose address
/// stays valid for the life of the calling thread. Its text is replaced in
/// place by the next failing call on the same thread (successful calls do not
/// change it), so copy it before such a call if you need to keep it. Messages
/// longer than 1023 bytes are cut. Never NULL. Thread-safe: every thread has
/// its own message.
#[unsafe(no_mangle)]
pub extern "C" fn rd_last_error() -> *const c_char {
    boundary::guard_value(c"".as_ptr(), || {
        LAST_ERROR
            // The thread-local array never moves while the thread lives.
            .try_with(|slot| slot.as_ptr().cast::<c_char>().cast_const())
            .unwrap_or(c"".as_ptr())
    })
}

/// A static, NUL-terminated description of a status code (e.g.
/// `"RD_ERR_IO: input/output error"`); `"unknown status"` for a value that is
/// not an `rd_status`. Never NULL; owned by the library, valid for the life of
/// the process. Thread-safe.
///
/// It takes an `int` rather than an `rd_status` on purpose: any integer is
/// safe to pass (a value read from a log, a status of a newer library), while
/// an `rd_status` holding a value outside the enumeration would be undefined
/// behaviour on the Rust side.
#[unsafe(no_mangle)]
pub extern "C" fn rd_status_string(status: c_int) -> *const c_char {
    boundary::guard_value(c"unknown status".as_ptr(), || {
        rd_status::ALL
            .iter()
            .find(|s| **s as c_int == status)
            .map_or(c"unknown status".as_ptr(), |s| s.describe().as_ptr())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::CStr;

    #[test]
    fn every_status_has_a_distinct_description() {
        for (i, s) in rd_status::ALL.iter().enumerate() {
            assert_eq!(*s as usize, i, "codes are dense from 0");
            // SAFETY: rd_status_string returns a static NUL-terminated string.
            let d = unsafe { CStr::from_ptr(rd_status_string(*s as c_int)) };
            assert!(d.to_str().unwrap().contains(&format!("{s:?}")));
        }
        // SAFETY: as above.
        let d = unsafe { CStr::from_ptr(rd_status_string(-1)) };
        assert_eq!(d.to_str().unwrap(), "unknown status");
    }

    #[test]
    fn library_errors_map_to_their_codes() {
        use std::path::PathBuf;
        let cases = [
            (Error::Tokenizer("x".into()), rd_status::RD_ERR_TOKENIZER),
            (
                Error::ChatTemplate("x".into()),
                rd_status::RD_ERR_CHAT_TEMPLATE,
            ),
            (
                Error::InvalidModel("x".into()),
                rd_status::RD_ERR_INVALID_MODEL,
            ),
            (Error::Io(std::io::Error::other("x")), rd_status::RD_ERR_IO),
            (
                ConvertError::MissingFile {
                    path: PathBuf::from("config.json"),
                    what: "the configuration",
                }
                .into(),
                rd_status::RD_ERR_IO,
            ),
            (
                ConvertError::BadTokenizer("x".into()).into(),
                rd_status::RD_ERR_TOKENIZER,
            ),
            (
                ConvertError::UnsupportedType("q3".into()).into(),
                rd_status::RD_ERR_INVALID_ARGUMENT,
            ),
            (
                ConvertError::UnsupportedDtype {
                    name: "w".into(),
                    dtype: "I8".into(),
                }
                .into(),
                rd_status::RD_ERR_UNSUPPORTED,
            ),
            (
                ConvertError::MissingTensor("w".into()).into(),
                rd_status::RD_ERR_INVALID_MODEL,
            ),
        ];
        for (err, status) in cases {
            let fail = Fail::from(err);
            assert_eq!(fail.status, status, "{}", fail.message);
        }
    }

    #[test]
    fn last_error_is_per_thread_and_survives_success() {
        set_last_error("rd_test", "bad\0thing");
        // SAFETY: rd_last_error returns a valid NUL-terminated string.
        let msg = unsafe { CStr::from_ptr(rd_last_error()) }.to_owned();
        assert_eq!(msg.to_str().unwrap(), "rd_test: bad\\0thing");
        std::thread::spawn(|| {
            // SAFETY: as above.
            let m = unsafe { CStr::from_ptr(rd_last_error()) };
            assert!(m.to_bytes().is_empty());
        })
        .join()
        .unwrap();
    }
}
