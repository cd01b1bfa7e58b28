//! recurrent-depth: an on-device runtime for recurrent-depth language models
//! (Huginn, Geiping et al. 2025).
//!
//! Data flow, one module per stage:
//! GGUF file ([`gguf`]) -> model weights and hyper-parameters ([`model`]) ->
//! compute graph ([`model::graph`], through the safe ggml wrapper in `ggml`) ->
//! session with KV cache and recurrent state ([`session`]) -> generation loop
//! (budgets, exits, sampling: [`exit`], [`sampling`]).

// `unsafe` lives only where the crate talks to ggml (`ggml`), to C callers
// (`ffi`) and maps files (the allowances marked below); everywhere else it is
// an error.
#![deny(unsafe_code)]

pub mod chat;
pub mod convert;
pub mod error;
pub mod exit;
#[allow(unsafe_code)]
pub mod ffi;
pub mod generate;
#[allow(unsafe_code)]
mod ggml;
pub mod gguf;
pub mod model;
pub mod npy;
pub mod rng;
pub mod sampling;
pub mod session;
pub mod testmodel;
pub mod tokenizer;

pub use error::{Error, Result};
pub use ggml::{
    BackendKind, DeviceInfo, DeviceType, LogHandler, LogLevel, list_devices, set_log_handler,
};
