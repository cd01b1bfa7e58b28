//! `rd_generate`: prompt evaluation, per-token compute limits, sampling, stop
//! conditions, the streaming token callback and statistics.

use super::boundary::{OutStruct, Versioned, arg_ref, arg_slice, guard, read_struct};
use super::params::{
    RD_DETOKENIZE_SKIP_SPECIAL, RD_TOKENIZE_ADD_SPECIAL, RD_TOKENIZE_PARSE_SPECIAL, check_flags,
    rd_generate_params,
};
use super::rd_token;
use super::session::rd_session;
use super::status::{Fail, rd_status};
use super::text::arg_text;
use crate::generate::{ComputeLimits, DraftParams, GenerateParams, StopReason};
use crate::sampling::SamplingParams;
use std::ffi::{c_char, c_void};
use std::sync::atomic::Ordering;

/// Why `rd_generate()` ended (`rd_generate_stats.stop_reason`).
pub type rd_stop_reason = u32;
/// `max_tokens` tokens were generated.
pub const RD_STOP_MAX_TOKENS: rd_stop_reason = 0;
/// A stop token was generated (and reported).
pub const RD_STOP_STOP_TOKEN: rd_stop_reason = 1;
/// The token callback returned false.
pub const RD_STOP_CALLBACK: rd_stop_reason = 2;
/// The context had no room for another token.
pub const RD_STOP_CONTEXT_FULL: rd_stop_reason = 3;

/// One generated token, as passed to an `rd_token_callback`. Owned by the
/// library and valid only during the callback.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct rd_token_event {
    /// `sizeof(rd_token_event)` of the library: fields beyond it are absent.
    pub struct_size: usize,
    /// The token id.
    pub token: rd_token,
    /// Core iterations the distribution this token was sampled from ran (for
    /// the first token: the prompt's last position).
    pub iterations: u32,
    /// Index of the token in this generation, from 0.
    pub index: usize,
    /// Value of the exit criterion at the last check of that position, NaN
    /// when none was evaluated (no criterion, or the prompt without
    /// `exit_in_prefill` or `prefill_exit_criterion`; with the latter, the
    /// first token reports the prompt exit's value, the largest over the
    /// prompt's positions).
    pub exit_value: f64,
    /// The text this token completes: UTF-8 bytes of whole characters only.
    /// The bytes of a character split across tokens are held back until the
    /// token that completes it, whose text then includes them; at the last
    /// token of a generation ended by `max_tokens`, a stop token or a full
    /// context, bytes still held back are flushed (each incomplete character
    /// as U+FFFD). So the texts of all events of a generation concatenate to
    /// `rd_detokenize()` of its tokens with `params->detokenize_flags`, unless
    /// the callback stopped it (held-back bytes are then dropped).
    /// `text_len` may be 0 (an incomplete character, a skipped control token,
    /// or an id the tokenizer does not know). A NUL byte follows the text (not
    /// counted in `text_len`), so it can be printed as a C string unless it
    /// contains NUL characters. NULL when the model has no usable tokenizer.
    /// Owned by the session; valid only until the callback returns.
    pub text: *const c_char,
    /// Length of `text` in bytes, without the NUL that follows it (0 when
    /// `text` is NULL).
    pub text_len: usize,
    /// Natural log of the probability the model gave this token: the log
    /// softmax of the raw logits it was sampled from (before temperature,
    /// repetition penalty and filters), computed without allocating. Added in
    /// 0.3: present when `struct_size` covers it.
    pub logprob: f32,
}

/// Streaming callback of `rd_generate()`: called on the generating thread once
/// per generated token, before the next token is computed. Return `true` to
/// continue, `false` to stop (`rd_generate()` then returns `RD_OK` with
/// `RD_STOP_CALLBACK`). From inside it the caller may call
/// `rd_set_compute_limits()` and `rd_cancel()` on the same session; other
/// calls on that session return `RD_ERR_BUSY`. It must not unwind (no C++
/// exceptions or longjmp across it).
pub type rd_token_callback =
    Option<unsafe extern "C" fn(event: *const rd_token_event, user_data: *mut c_void) -> bool>;

/// Statistics of one `rd_generate()` call.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct rd_generate_stats {
    /// Set by the caller to `sizeof(rd_generate_stats)` before the call.
    pub struct_size: usize,
    /// Tokens generated (reported to the callback).
    pub n_tokens: usize,
    /// Prompt tokens evaluated.
    pub n_prompt_tokens: usize,
    /// Core iterations the prompt ran (0 without a prompt).
    pub prefill_iterations: u32,
    /// Why generation ended, an `rd_stop_reason`.
    pub stop_reason: rd_stop_reason,
    /// Seconds spent evaluating the prompt.
    pub prefill_seconds: f64,
    /// Seconds spent generating (sampling, callbacks and per-token compute).
    pub decode_seconds: f64,
    /// Mean core iterations per generated token.
    pub mean_iterations: f64,
    /// Bytes of the session's KV cache and state stores.
    pub kv_bytes: u64,
    /// Tokens drafted by speculative decoding (0 without it). Added in 0.4.
    pub n_drafted: u64,
    /// Drafted tokens the verifier accepted (`n_draft_accepted /
    /// n_drafted` is the acceptance rate). Added in 0.4.
    pub n_draft_accepted: u64,
    /// Verification passes; each reports its accepted drafts and one token
    /// of its own. Added in 0.4.
    pub n_verify_passes: u64,
}

// SAFETY: repr(C), starts with `struct_size: usize`; numbers only.
unsafe impl Versioned for rd_generate_stats {
    const NAME: &'static str = "rd_generate_stats";
    const OUTPUT: bool = true;
    // 0.3 ended after `kv_bytes`.
    const RELEASED_SIZES: &'static [usize] = &[std::mem::offset_of!(rd_generate_stats, n_drafted)];
    fn defaults() -> Self {
        rd_generate_stats {
            struct_size: size_of::<Self>(),
            n_tokens: 0,
            n_prompt_tokens: 0,
            prefill_iterations: 0,
            stop_reason: RD_STOP_MAX_TOKENS,
            prefill_seconds: 0.0,
            decode_seconds: 0.0,
            mean_iterations: 0.0,
            kv_bytes: 0,
            n_drafted: 0,
            n_draft_accepted: 0,
            n_verify_passes: 0,
        }
    }
}

/// Clears the "generation running" state when dropped, also on a panic.
struct Generating<'a>(&'a rd_session);

impl<'a> Generating<'a> {
    fn start(h: &'a rd_session) -> Self {
        Self::clear_pending(h);
        h.generating.store(true, Ordering::Release);
        Generating(h)
    }

    fn clear_pending(h: &rd_session) {
        *h.pending.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }
}

impl Drop for Generating<'_> {
    fn drop(&mut self) {
        self.0.generating.store(false, Ordering::Release);
        Self::clear_pending(self.0);
    }
}

/// The prompt of a generation: token ids, or text to tokenize.
enum Prompt<'a> {
    Tokens(&'a [rd_token]),
    Text(&'a str),
}

/// Checked inputs of a generation that do not need the session.
struct Request {
    gp: rd_generate_params,
    limits: ComputeLimits,
    sampling: SamplingParams,
    prefill_iterations: Option<usize>,
    stats_out: Option<OutStruct<rd_generate_stats>>,
}

impl Request {
    /// Reads and validates `params` and `out_stats`.
    ///
    /// # Safety
    ///
    /// As for `rd_generate`'s `params` and `out_stats`.
    unsafe fn read(
        params: *const rd_generate_params,
        out_stats: *mut rd_generate_stats,
    ) -> Result<Request, Fail> {
        // SAFETY: `params` points to a readable struct (contract).
        let gp = unsafe { read_struct(params, "params")? };
        let stats_out = if out_stats.is_null() {
            None
        } else {
            // SAFETY: `out_stats` is writable for its struct_size (contract).
            Some(unsafe { OutStruct::new(out_stats, "out_stats")? })
        };
        let limits = if gp.limits.is_null() {
            ComputeLimits::default()
        } else {
            // SAFETY: a non-NULL `limits` points to a readable struct (contract).
            unsafe { read_struct(gp.limits, "params->limits")? }.to_limits()?
        };
        let sampling = if gp.sampling.is_null() {
            SamplingParams::greedy()
        } else {
            // SAFETY: a non-NULL `sampling` points to a readable struct (contract).
            unsafe { read_struct(gp.sampling, "params->sampling")? }.to_sampling()?
        };
        // 0: the library's default (checked with the rest by the generation).
        let prefill_iterations = match gp.prefill_iterations {
            0 => None,
            n => Some(n as usize),
        };
        check_flags(
            gp.tokenize_flags,
            RD_TOKENIZE_ADD_SPECIAL | RD_TOKENIZE_PARSE_SPECIAL,
            "params->tokenize_flags",
        )?;
        check_flags(
            gp.detokenize_flags,
            RD_DETOKENIZE_SKIP_SPECIAL,
            "params->detokenize_flags",
        )?;
        Ok(Request {
            gp,
            limits,
            sampling,
            prefill_iterations,
            stats_out,
        })
    }
}

/// The generation of `rd_generate` and `rd_generate_text`.
fn generate(
    handle: &rd_session,
    prompt: Prompt<'_>,
    req: Request,
    callback: rd_token_callback,
    user_data: *mut c_void,
) -> Result<(), Fail> {
    let gp = req.gp;
    // SAFETY: `stop_tokens` holds `n_stop_tokens` ids (contract of the callers).
    let stop = unsafe { arg_slice(gp.stop_tokens, gp.n_stop_tokens, "params->stop_tokens")? };

    let mut guard = handle.lock()?;
    let inner = &mut *guard;
    let tokenizer = handle.text.ready_tokenizer();
    let encoded;
    let prompt: &[rd_token] = match prompt {
        Prompt::Tokens(t) => t,
        Prompt::Text(text) => {
            let tok = handle.text.tokenizer()?;
            // A BOS starts a conversation, not each turn of it.
            let add_bos =
                gp.tokenize_flags & RD_TOKENIZE_ADD_SPECIAL != 0 && inner.session.n_past() == 0;
            let parse = gp.tokenize_flags & RD_TOKENIZE_PARSE_SPECIAL != 0;
            encoded = tok.encode(text, add_bos, parse)?;
            &encoded
        }
    };
    // No stop tokens given: the tokenizer's, when asked for (ids the model's
    // vocabulary cannot produce are left out). Given ones are checked by the
    // generation.
    let n_vocab = inner.session.model().config().n_vocab;
    let mut stop_tokens = Vec::new();
    match tokenizer {
        Some(tok) if stop.is_empty() && gp.default_stop_tokens => {
            stop_tokens = tok.stop_tokens();
            stop_tokens.retain(|&t| (t as usize) < n_vocab);
        }
        _ => {
            stop_tokens
                .try_reserve_exact(stop.len())
                .map_err(|_| Fail::new(rd_status::RD_ERR_OUT_OF_MEMORY, "stop tokens"))?;
            stop_tokens.extend_from_slice(stop);
        }
    }
    let params = GenerateParams {
        max_tokens: gp.max_tokens as usize,
        limits: req.limits,
        prefill_iterations: req.prefill_iterations,
        sampling: req.sampling,
        stop_tokens,
        draft: DraftParams {
            tokens: gp.draft_tokens as usize,
            iterations: gp.draft_iterations as usize,
            adaptive: gp.draft_adaptive,
        },
    };

    let running = Generating::start(handle);
    handle.clear_cancel();
    let decoder = &mut inner.decoder;
    let piece = &mut inner.piece;
    decoder.reset(gp.detokenize_flags & RD_DETOKENIZE_SKIP_SPECIAL != 0);
    let result = inner.session.generate(prompt, &params, |ev, limits| {
        let go_on = match callback {
            Some(cb) => {
                // The token's text, in buffers reserved for the longest token.
                let (text, text_len) = match tokenizer {
                    Some(tok) => {
                        piece.clear();
                        decoder.push_into(tok, ev.token, piece);
                        if ev.last {
                            // Nothing will complete what is held back.
                            decoder.finish_into(piece);
                        }
                        let len = piece.len();
                        piece.push('\0');
                        (piece.as_ptr().cast::<c_char>(), len)
                    }
                    None => (std::ptr::null(), 0),
                };
                let event = rd_token_event {
                    struct_size: size_of::<rd_token_event>(),
                    token: ev.token,
                    iterations: u32::try_from(ev.iterations).unwrap_or(u32::MAX),
                    index: ev.index,
                    exit_value: ev.exit_value,
                    text,
                    text_len,
                    logprob: ev.logprob,
                };
                // SAFETY: a valid C function pointer of this signature
                // (contract); `event` and the text outlive the call.
                unsafe { cb(&event, user_data) }
            }
            None => true,
        };
        let mut pending = handle.pending.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(new) = pending.take() {
            *limits = new;
        }
        go_on
    });
    drop(running);
    let stats = result?;
    let stop_reason = match stats.stop {
        StopReason::StopToken => RD_STOP_STOP_TOKEN,
        StopReason::Callback => RD_STOP_CALLBACK,
        StopReason::ContextFull => RD_STOP_CONTEXT_FULL,
        StopReason::MaxTokens => RD_STOP_MAX_TOKENS,
    };
    if let Some(out) = req.stats_out {
        out.write(rd_generate_stats {
            struct_size: size_of::<rd_generate_stats>(),
            n_tokens: stats.tokens,
            n_prompt_tokens: stats.prompt_tokens,
            prefill_iterations: u32::try_from(stats.prefill_iterations).unwrap_or(u32::MAX),
            stop_reason,
            prefill_seconds: stats.prefill_seconds,
            decode_seconds: stats.decode_seconds,
            mean_iterations: stats.mean_iterations,
            kv_bytes: stats.kv_bytes as u64,
            n_drafted: stats.draft_tokens as u64,
            n_draft_accepted: stats.draft_accepted as u64,
            n_verify_passes: stats.verify_passes as u64,
        });
    }
    Ok(())
}

/// Evaluates the prompt `tokens[0..n_tokens]` (appended to the cached
/// positions), then generates up to `params->max_tokens` tokens, calling
/// `callback` with each one.
///
/// - `tokens` may be NULL when `n_tokens` is 0: generation then continues
///   from the logits of the last evaluated position (that of the last
///   `rd_eval()` or prompt). The last token a previous `rd_generate()`
///   reported is *not* in the cache: pass it as the first prompt token to
///   continue after it.
/// - `params`: from `rd_generate_default_params()`; it and everything it
///   points to are read during the call only.
/// - `callback` may be NULL (no streaming); `user_data` is passed to it.
///   Each event carries the token's text when the model has a tokenizer (see
///   `rd_token_event.text`).
/// - `out_stats` may be NULL; otherwise its `struct_size` must be set, and it
///   is written on `RD_OK` only.
///
/// Generation stops after a stop token: `params->stop_tokens`, or when none
/// are given (and `params->default_stop_tokens` is set, the default) the
/// tokenizer's end-of-text and end-of-turn tokens.
///
/// Per token: the prelude runs once, the core between `min_iterations` and
/// `max_iterations` times (stopping early when the exit criterion is met at a
/// check), then the coda and head; nothing is allocated on the heap per token
/// (the token's text included).
///
/// Errors: `RD_ERR_INVALID_ARGUMENT` (NULL, n_tokens 0 on an empty cache,
/// token or stop-token ids >= n_vocab, invalid limits, sampling or flags),
/// `RD_ERR_CONTEXT_FULL` (the prompt does not fit; nothing is evaluated),
/// `RD_ERR_INVALID_STATE` (n_tokens 0 after a failed or cancelled call),
/// `RD_ERR_CANCELLED` (`rd_cancel()`; positions evaluated before stay cached),
/// `RD_ERR_BUSY`, `RD_ERR_BACKEND`. Not thread-safe for the same session;
/// different sessions may generate concurrently.
///
/// # Safety
///
/// `session` must be NULL or a live session; `tokens` must hold
/// `n_tokens` readable ids (or be anything when `n_tokens` is 0); `params` NULL
/// or a valid `rd_generate_params` whose pointers are NULL or valid as
/// documented; `callback` NULL or a valid function; `out_stats` NULL or a
/// writable `rd_generate_stats` of `out_stats->struct_size` bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn rd_generate(
    session: *mut rd_session,
    tokens: *const rd_token,
    n_tokens: usize,
    params: *const rd_generate_params,
    callback: rd_token_callback,
    user_data: *mut c_void,
    out_stats: *mut rd_generate_stats,
) -> rd_status {
    guard("rd_generate", || {
        // SAFETY: a non-NULL `session` is live (contract).
        let handle = unsafe { arg_ref(session, "session")? };
        // SAFETY: `tokens` holds `n_tokens` ids (contract).
        let prompt = unsafe { arg_slice(tokens, n_tokens, "tokens")? };
        // SAFETY: `params` and `out_stats` as documented (contract).
        let req = unsafe { Request::read(params, out_stats)? };
        generate(handle, Prompt::Tokens(prompt), req, callback, user_data)
    })
}

/// Like `rd_generate()`, with the prompt given as text, tokenized with the
/// model's tokenizer as `params->tokenize_flags` says (default: special-token
/// text such as `<|end_turn|>` becomes its id, and a BOS comes first when the
/// tokenizer asks for one and the session's cache is empty). Suits the output
/// of `rd_chat_apply_template()`.
///
/// - `text[0..text_len]`: UTF-8, not necessarily NUL-terminated; read during
///   the call only. It may be NULL when `text_len` is 0; text that gives no
///   tokens continues from the last evaluated position, as `n_tokens = 0`
///   does for `rd_generate()`.
/// - The other arguments are those of `rd_generate()`.
///
/// Errors: those of `rd_generate()`, and `RD_ERR_INVALID_ARGUMENT` (NULL
/// text with a non-zero length, text that is not valid UTF-8),
/// `RD_ERR_NO_TOKENIZER`, `RD_ERR_TOKENIZER`; arguments are checked before
/// the tokenizer is looked for. A prompt whose ids the model's vocabulary does
/// not hold is `RD_ERR_INVALID_ARGUMENT`. Not thread-safe for the same
/// session.
///
/// # Safety
///
/// As `rd_generate()`; `text` must be readable for `text_len` bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn rd_generate_text(
    session: *mut rd_session,
    text: *const c_char,
    text_len: usize,
    params: *const rd_generate_params,
    callback: rd_token_callback,
    user_data: *mut c_void,
    out_stats: *mut rd_generate_stats,
) -> rd_status {
    guard("rd_generate_text", || {
        // SAFETY: a non-NULL `session` is live (contract).
        let handle = unsafe { arg_ref(session, "session")? };
        // SAFETY: `text` is readable for `text_len` bytes (contract).
        let text = unsafe { arg_text(text, text_len, "text")? };
        // SAFETY: `params` and `out_stats` as documented (contract).
        let req = unsafe { Request::read(params, out_stats)? };
        generate(handle, Prompt::Text(text), req, callback, user_data)
    })
}
