//! The one place that talks to ggml. Everything here wraps `ggml-sys`'s
//! ggml bindings in a small safe API; all `unsafe` for ggml lives in this module.
//!
//! Invariants the rest of the crate relies on:
//! - A [`Tensor`] is a handle into a [`Context`]. It is only used while the
//!   context that created it is alive (the model owns its weight context for its
//!   whole life; a session owns its KV and graph contexts and rebuilds graph
//!   tensors after every [`Context::reset`]). The module is crate-private so these
//!   rules are enforced by the code that owns both.
//! - Shapes reaching ggml are validated first (model loading checks every weight
//!   shape; sessions check lengths), because ggml aborts on a bad shape.

#![deny(clippy::undocumented_unsafe_blocks)]

mod backend;
mod compute;
mod context;
mod log;
mod ops;
mod quantize;
mod repack;

pub use backend::list_devices;
pub(crate) use backend::{Backend, Buffer};
pub use backend::{BackendKind, DeviceInfo, DeviceType};
pub(crate) use compute::{Compute, Shape};
pub(crate) use context::{Context, Graph, Tensor};
pub use log::{LogHandler, LogLevel, set_log_handler};
pub(crate) use ops::{RopeMode, RopeParams};
pub use quantize::{dequantize, quantize};
pub(crate) use repack::RepackBuffers;

use crate::gguf::GgmlType;
use ggml_sys as sys;

/// Converts our GGUF type id to ggml's enum value (they share numbering).
fn ggml_type(ty: GgmlType) -> sys::ggml_type {
    ty.as_u32() as sys::ggml_type
}
