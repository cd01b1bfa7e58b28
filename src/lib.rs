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
// Support for `rd logits` and `rd make-test-model`, the tests and the
// benchmarks: public so they can use it, hidden from the documentation and
// not a stable API.
#[doc(hidden)]
pub mod npy;
// The seeded generator is part of the file format (a seeded initial state must
// be reproducible outside the runtime): public and documented.
pub mod rng;
pub mod sampling;
pub mod session;
#[doc(hidden)]
pub mod testmodel;
pub mod tokenizer;

pub use error::{Error, Result};
pub use ggml::{
    BackendKind, DeviceInfo, DeviceType, LogHandler, LogLevel, list_devices, set_log_handler,
};
