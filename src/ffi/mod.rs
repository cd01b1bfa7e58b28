//! The C ABI: `include/recurrent_depth.h` is generated from this module by
//! cbindgen (see `build.rs` and `cbindgen.toml`), so the doc comments here are
//! the header's documentation.
//!
//! Rules every export follows (docs/c-api.md):
//! - it runs behind a panic boundary: a Rust panic becomes `RD_ERR_PANIC`,
//!   never an unwind into C;
//! - NULL, misaligned and out-of-range arguments give
//!   `RD_ERR_INVALID_ARGUMENT`;
//! - outputs are written only when the call returns `RD_OK` (the documented
//!   exception is the required length of `RD_ERR_BUFFER_TOO_SMALL`);
//! - a failing call stores a message for `rd_last_error()` on the calling
//!   thread.
//!
//! Parameter structs start with a `struct_size` field so that the ABI can grow:
//! the library reads only the bytes the caller declares.
//!
//! All `unsafe` code of the C ABI lives in this module; each block states why
//! it is sound, relying on the documented contract of the function it is in.

#![allow(non_camel_case_types)]
#![deny(clippy::undocumented_unsafe_blocks)]
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

mod boundary;

// cbindgen emits items in module order, so the modules are declared in the
// order a reader of the header wants them (blank lines keep rustfmt from
// sorting them).
pub mod status;

pub mod params;

pub mod device;

pub mod log;

pub mod model;

pub mod text;

pub mod session;

pub mod state;

pub mod generate;

use std::ffi::c_char;

// `RD_VERSION_STRING` is written into the header by build.rs.

/// Major version of the library (semantic versioning).
pub const RD_VERSION_MAJOR: u32 = 0;
/// Minor version of the library.
pub const RD_VERSION_MINOR: u32 = 8;
/// Patch version of the library.
pub const RD_VERSION_PATCH: u32 = 0;

/// A token id: an index into the model's vocabulary, `0 <= id < n_vocab`.
pub type rd_token = u32;

/// An `rd_token` value meaning "no such token" (e.g.
/// `rd_model_info.eot_token` of a vocabulary without one).
pub const RD_TOKEN_NONE: rd_token = 0xFFFF_FFFF;

/// The library's version as a static NUL-terminated string, e.g. `"0.1.0"`.
///
/// The string is owned by the library and valid for the life of the process.
/// Compare it with `RD_VERSION_MAJOR`/`RD_VERSION_MINOR`/`RD_VERSION_PATCH` to
/// detect a header that does not match the linked library. Thread-safe.
#[unsafe(no_mangle)]
pub extern "C" fn rd_version() -> *const c_char {
    const VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), "\0");
    boundary::guard_value(c"".as_ptr(), || VERSION.as_ptr().cast())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::CStr;

    #[test]
    fn version_constants_match_the_package() {
        assert_eq!(
            RD_VERSION_MAJOR.to_string(),
            env!("CARGO_PKG_VERSION_MAJOR")
        );
        assert_eq!(
            RD_VERSION_MINOR.to_string(),
            env!("CARGO_PKG_VERSION_MINOR")
        );
        assert_eq!(
            RD_VERSION_PATCH.to_string(),
            env!("CARGO_PKG_VERSION_PATCH")
        );
        // SAFETY: rd_version returns a static NUL-terminated string.
        let v = unsafe { CStr::from_ptr(rd_version()) };
        assert_eq!(v.to_str().ok(), Some(env!("CARGO_PKG_VERSION")));
    }
}
