//! Text: the model's tokenizer (`rd_tokenize`, `rd_detokenize`) and chat
//! template (`rd_chat_apply_template`).
//!
//! Both come from the GGUF file and are built when the model is loaded. A
//! model without them is still a valid model (prompts are then token ids);
//! a tokenizer or template that is present but unusable does not fail the
//! load either: the calls that need it report why.

use super::boundary::{Out, arg_ref, arg_slice, check_ptr, guard};
use super::model::rd_model;
use super::params::{
    RD_DETOKENIZE_SKIP_SPECIAL, RD_TOKENIZE_ADD_SPECIAL, RD_TOKENIZE_PARSE_SPECIAL, check_flags,
    rd_detokenize_flags, rd_tokenize_flags,
};
use super::rd_token;
use super::status::{Fail, rd_status};
use crate::chat::{CHAT_TEMPLATE_KEY, ChatMessage, ChatTemplate, TemplateTokens};
use crate::gguf::GgufFile;
use crate::tokenizer::{HF_JSON_KEY, Tokenizer};
use std::ffi::{CStr, c_char};
use std::panic::catch_unwind;

/// A part of a model file that may be absent, present but unusable, or ready.
enum Part<T> {
    Absent,
    Unusable(String),
    Ready(T),
}

/// The tokenizer and chat template of a model, shared by the model handle and
/// its sessions.
pub(crate) struct ModelText {
    tokenizer: Part<Tokenizer>,
    template: Part<ChatTemplate>,
    template_tokens: TemplateTokens,
    /// Longest byte string of any token (sizes the streaming buffers).
    max_token_bytes: usize,
}

// Models and sessions are shared across threads.
const _: () = {
    const fn shareable<T: Send + Sync>() {}
    shareable::<ModelText>();
};

impl ModelText {
    /// The tokenizer and template stored in `file`. Never fails: problems
    /// (even a panic in a dependency on hostile data) are kept and reported by
    /// the calls that need the part.
    pub(crate) fn from_gguf(file: &GgufFile) -> ModelText {
        let tokenizer =
            if file.get(HF_JSON_KEY).is_none() && file.get("tokenizer.ggml.tokens").is_none() {
                Part::Absent
            } else {
                match catch_unwind(|| Tokenizer::from_gguf(file)) {
                    Ok(Ok(t)) => Part::Ready(t),
                    Ok(Err(e)) => Part::Unusable(e.to_string()),
                    Err(_) => Part::Unusable("internal error (panic) building it".into()),
                }
            };
        let template = if file.get(CHAT_TEMPLATE_KEY).is_none() {
            Part::Absent
        } else {
            match catch_unwind(|| ChatTemplate::from_gguf(file)) {
                Ok(Ok(Some(t))) => Part::Ready(t),
                Ok(Ok(None)) => Part::Absent,
                Ok(Err(e)) => Part::Unusable(e.to_string()),
                Err(_) => Part::Unusable("internal error (panic) parsing it".into()),
            }
        };
        let (template_tokens, max_token_bytes) = match &tokenizer {
            Part::Ready(t) => {
                let text = |id: Option<u32>| {
                    id.and_then(|id| t.token_bytes(id))
                        .map(|b| String::from_utf8_lossy(b).into_owned())
                        .unwrap_or_default()
                };
                let s = t.special_tokens();
                let max = (0..t.n_vocab() as u32)
                    .filter_map(|id| t.token_bytes(id))
                    .map(<[u8]>::len)
                    .max()
                    .unwrap_or(0);
                (
                    TemplateTokens {
                        bos: text(s.bos),
                        eos: text(s.eos),
                    },
                    max,
                )
            }
            _ => (TemplateTokens::default(), 0),
        };
        ModelText {
            tokenizer,
            template,
            template_tokens,
            max_token_bytes,
        }
    }

    /// The tokenizer, or `RD_ERR_NO_TOKENIZER` / `RD_ERR_TOKENIZER`.
    pub(crate) fn tokenizer(&self) -> Result<&Tokenizer, Fail> {
        match &self.tokenizer {
            Part::Ready(t) => Ok(t),
            Part::Absent => Err(Fail::new(
                rd_status::RD_ERR_NO_TOKENIZER,
                "the model file has no tokenizer (neither tokenizer.huggingface.json nor \
                 tokenizer.ggml.tokens); use token ids",
            )),
            Part::Unusable(why) => Err(Fail::new(
                rd_status::RD_ERR_TOKENIZER,
                format!("the model's tokenizer cannot be used: {why}"),
            )),
        }
    }

    /// The tokenizer if it is usable.
    pub(crate) fn ready_tokenizer(&self) -> Option<&Tokenizer> {
        match &self.tokenizer {
            Part::Ready(t) => Some(t),
            _ => None,
        }
    }

    /// The chat template, or `RD_ERR_NO_TEMPLATE` / `RD_ERR_CHAT_TEMPLATE`.
    fn template(&self) -> Result<&ChatTemplate, Fail> {
        match &self.template {
            Part::Ready(t) => Ok(t),
            Part::Absent => Err(Fail::new(
                rd_status::RD_ERR_NO_TEMPLATE,
                "the model file has no chat template (tokenizer.chat_template)",
            )),
            Part::Unusable(why) => Err(Fail::new(
                rd_status::RD_ERR_CHAT_TEMPLATE,
                format!("the model's chat template cannot be used: {why}"),
            )),
        }
    }

    /// Whether a usable chat template is present.
    pub(crate) fn has_template(&self) -> bool {
        matches!(self.template, Part::Ready(_))
    }

    /// Capacities (held-back bytes, text bytes) that let a streaming decoder
    /// render any token without growing its buffers: at most 3 bytes of an
    /// incomplete character wait between tokens, every byte may become a
    /// 3-byte U+FFFD, the final flush adds one more, and a NUL ends the text.
    pub(crate) fn stream_capacities(&self) -> (usize, usize) {
        let pending = self.max_token_bytes + 4;
        (pending, 3 * pending + 8)
    }
}

/// The UTF-8 text `ptr[0..len]` (`ptr` may be NULL when `len` is 0).
///
/// # Safety
///
/// When `len > 0` and `ptr` is non-NULL, `ptr` must point to `len` readable
/// bytes that are not mutated during the call.
pub(crate) unsafe fn arg_text<'a>(
    ptr: *const c_char,
    len: usize,
    what: &str,
) -> Result<&'a str, Fail> {
    // SAFETY: forwarded contract.
    let bytes = unsafe { arg_slice(ptr.cast::<u8>(), len, what)? };
    std::str::from_utf8(bytes).map_err(|e| {
        Fail::invalid(format!(
            "{what} is not valid UTF-8 (invalid byte at offset {})",
            e.valid_up_to()
        ))
    })
}

/// Copies `bytes` to `out[0..capacity]` after the size negotiation of
/// `rd_detokenize` and `rd_chat_apply_template`: `RD_ERR_BUFFER_TOO_SMALL`
/// (with the length written) when `capacity < len`; else the bytes, a NUL
/// after them when there is room, and the length.
///
/// # Safety
///
/// A non-NULL `out` must be writable for `capacity` bytes and not overlap
/// `bytes`.
unsafe fn write_text(
    bytes: &[u8],
    out: *mut c_char,
    capacity: usize,
    len_out: Out<usize>,
) -> Result<(), Fail> {
    let len = bytes.len();
    if capacity < len {
        len_out.write(len);
        return Err(Fail::new(
            rd_status::RD_ERR_BUFFER_TOO_SMALL,
            format!("capacity {capacity} < {len} bytes of text"),
        ));
    }
    if capacity > 0 {
        // SAFETY: `out` is non-NULL (checked by the callers when capacity >
        // 0) and writable for `capacity >= len` bytes (contract).
        unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), out.cast::<u8>(), len) };
        if capacity > len {
            // SAFETY: as above; `len < capacity`.
            unsafe { out.add(len).write(0) };
        }
    }
    len_out.write(len);
    Ok(())
}

/// Converts text to token ids with the model's tokenizer.
///
/// - `text[0..text_len]`: UTF-8, not necessarily NUL-terminated (a NUL byte is
///   text like any other); may be NULL when `text_len` is 0. Read during the
///   call only.
/// - `flags`: `rd_tokenize_flags` (`RD_TOKENIZE_ADD_SPECIAL`,
///   `RD_TOKENIZE_PARSE_SPECIAL`).
/// - `out_tokens`: room for `capacity` ids; may be NULL when `capacity` is 0.
/// - `out_n` (required): the number of ids.
///
/// Size negotiation: when the ids do not fit in `capacity`, nothing is
/// written to `out_tokens`, `*out_n` receives the number of ids needed and the
/// call returns `RD_ERR_BUFFER_TOO_SMALL`. Call with `out_tokens = NULL,
/// capacity = 0` to ask for the count (`RD_OK` with `*out_n = 0` when there are
/// none), then again with a buffer of `*out_n` ids. On `RD_OK`,
/// `out_tokens[0..*out_n]` holds the ids.
///
/// Errors: `RD_ERR_INVALID_ARGUMENT` (NULL model, text or out_n; NULL
/// out_tokens with a non-zero capacity; unknown flags; text that is not valid
/// UTF-8), `RD_ERR_NO_TOKENIZER`, `RD_ERR_TOKENIZER`,
/// `RD_ERR_BUFFER_TOO_SMALL`. Thread-safe (the model is immutable).
///
/// # Safety
///
/// `model` must be NULL or a live model; `text` readable for `text_len`
/// bytes; `out_tokens` NULL or writable for `capacity` ids; `out_n` NULL or
/// writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn rd_tokenize(
    model: *const rd_model,
    text: *const c_char,
    text_len: usize,
    flags: rd_tokenize_flags,
    out_tokens: *mut rd_token,
    capacity: usize,
    out_n: *mut usize,
) -> rd_status {
    guard("rd_tokenize", || {
        // SAFETY: a non-NULL `model` is a live model (contract).
        let handle = unsafe { arg_ref(model, "model")? };
        // SAFETY: `text` is readable for `text_len` bytes (contract).
        let text = unsafe { arg_text(text, text_len, "text")? };
        // SAFETY: `out_n` is writable (contract).
        let n_out = unsafe { Out::new(out_n, "out_n")? };
        if capacity > 0 {
            check_ptr(out_tokens, "out_tokens")?;
        }
        check_flags(
            flags,
            RD_TOKENIZE_ADD_SPECIAL | RD_TOKENIZE_PARSE_SPECIAL,
            "flags",
        )?;
        let tok = handle.text.tokenizer()?;
        let ids = tok.encode(
            text,
            flags & RD_TOKENIZE_ADD_SPECIAL != 0,
            flags & RD_TOKENIZE_PARSE_SPECIAL != 0,
        )?;
        if capacity < ids.len() {
            n_out.write(ids.len());
            return Err(Fail::new(
                rd_status::RD_ERR_BUFFER_TOO_SMALL,
                format!("capacity {capacity} < {} tokens", ids.len()),
            ));
        }
        if !ids.is_empty() {
            // SAFETY: `out_tokens` is non-NULL (capacity > 0 was checked) and
            // writable for `capacity >= ids.len()` ids (contract).
            unsafe { std::ptr::copy_nonoverlapping(ids.as_ptr(), out_tokens, ids.len()) };
        }
        n_out.write(ids.len());
        Ok(())
    })
}

/// Converts token ids to text with the model's tokenizer.
///
/// - `tokens[0..n_tokens]`: ids below `n_vocab`; may be NULL when `n_tokens`
///   is 0. Ids of the model's vocabulary that the tokenizer does not know
///   (padding) produce no text.
/// - `flags`: `rd_detokenize_flags` (`RD_DETOKENIZE_SKIP_SPECIAL`).
/// - `out_text`: room for `capacity` bytes; may be NULL when `capacity` is 0.
/// - `out_len` (required): the length of the text in bytes, without a NUL.
///
/// The text is UTF-8: bytes that do not form valid UTF-8 (a character whose
/// bytes are split over ids of which some are missing, e.g. at the end) each
/// become U+FFFD, exactly as the concatenated `rd_token_event.text` of a
/// generation that produced these ids.
///
/// Size negotiation: when the text does not fit in `capacity` bytes, nothing
/// is written to `out_text`, `*out_len` receives the length needed and the call
/// returns `RD_ERR_BUFFER_TOO_SMALL`. Call with `out_text = NULL, capacity = 0`
/// to ask for the length, then again with `*out_len + 1` bytes. On `RD_OK`,
/// `out_text[0..*out_len]` holds the text and, when `capacity > *out_len`, a
/// NUL byte follows it (so a buffer of `*out_len + 1` bytes yields a C string;
/// the text itself may contain NUL characters when the ids encode them).
///
/// Errors: `RD_ERR_INVALID_ARGUMENT` (NULL model or out_len, NULL tokens with
/// a non-zero count, NULL out_text with a non-zero capacity, unknown flags, an
/// id >= n_vocab), `RD_ERR_NO_TOKENIZER`, `RD_ERR_TOKENIZER`,
/// `RD_ERR_BUFFER_TOO_SMALL`. Thread-safe (the model is immutable).
///
/// # Safety
///
/// `model` must be NULL or a live model; `tokens` readable for `n_tokens`
/// ids; `out_text` NULL or writable for `capacity` bytes; `out_len` NULL or
/// writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn rd_detokenize(
    model: *const rd_model,
    tokens: *const rd_token,
    n_tokens: usize,
    flags: rd_detokenize_flags,
    out_text: *mut c_char,
    capacity: usize,
    out_len: *mut usize,
) -> rd_status {
    guard("rd_detokenize", || {
        // SAFETY: a non-NULL `model` is a live model (contract).
        let handle = unsafe { arg_ref(model, "model")? };
        // SAFETY: `tokens` holds `n_tokens` ids (contract).
        let ids = unsafe { arg_slice(tokens, n_tokens, "tokens")? };
        // SAFETY: `out_len` is writable (contract).
        let len_out = unsafe { Out::new(out_len, "out_len")? };
        if capacity > 0 {
            check_ptr(out_text, "out_text")?;
        }
        check_flags(flags, RD_DETOKENIZE_SKIP_SPECIAL, "flags")?;
        let n_vocab = handle.model.config().n_vocab;
        if let Some((i, t)) = ids
            .iter()
            .enumerate()
            .find(|(_, t)| **t as usize >= n_vocab)
        {
            return Err(Fail::invalid(format!(
                "tokens[{i}] = {t} is out of range (vocabulary {n_vocab})"
            )));
        }
        let tok = handle.text.tokenizer()?;
        let text = tok.decode(ids, flags & RD_DETOKENIZE_SKIP_SPECIAL != 0);
        // SAFETY: `out_text` is writable for `capacity` bytes (contract) and
        // cannot overlap the library's own string.
        unsafe { write_text(text.as_bytes(), out_text, capacity, len_out) }
    })
}

/// One message of a conversation for `rd_chat_apply_template()`. Both strings
/// are NUL-terminated UTF-8 owned by the caller and read during the call only.
/// (This struct has no `struct_size`: it is used in arrays and will not grow;
/// a later version would add a new function instead.)
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct rd_chat_message {
    /// The speaker: `"system"`, `"user"`, `"assistant"`, ... as the model's
    /// template expects.
    pub role: *const c_char,
    /// The message text.
    pub content: *const c_char,
}

/// The NUL-terminated UTF-8 string at `p`.
///
/// # Safety
///
/// A non-NULL `p` must be a NUL-terminated string that outlives `'a`.
unsafe fn arg_cstr<'a>(p: *const c_char, what: &str) -> Result<&'a str, Fail> {
    check_ptr(p, what)?;
    // SAFETY: non-NULL and NUL-terminated (contract).
    let s = unsafe { CStr::from_ptr(p) };
    s.to_str().map_err(|e| {
        Fail::invalid(format!(
            "{what} is not valid UTF-8 (invalid byte at offset {})",
            e.valid_up_to()
        ))
    })
}

/// Renders a conversation with the model's chat template
/// (`tokenizer.chat_template`, a Jinja template rendered as Hugging Face
/// `transformers` does, in a sandbox: no file or network access and a
/// bounded instruction budget).
///
/// - `messages[0..n_messages]`: the conversation; may be NULL when
///   `n_messages` is 0. Read during the call only.
/// - `add_generation_prompt`: end with the header of the assistant's turn, so
///   that the text can be passed to `rd_generate_text()` for the reply.
/// - `out_text`, `capacity`, `out_len`: as in `rd_detokenize()`, with the
///   same size negotiation (`RD_ERR_BUFFER_TOO_SMALL` with the length needed
///   written to `*out_len`; `NULL, 0` asks for it; a NUL follows the text when
///   there is room).
///
/// The template's `bos_token` and `eos_token` are the texts of the tokenizer's
/// BOS and EOS tokens (empty without a tokenizer). The rendered text contains
/// special tokens as text (e.g. `<|end_turn|>`): tokenize it with
/// `RD_TOKENIZE_PARSE_SPECIAL`, as `rd_generate_text()` does by default.
///
/// Errors: `RD_ERR_INVALID_ARGUMENT` (NULL model or out_len, NULL messages
/// with a non-zero count, a NULL role or content, a string that is not valid
/// UTF-8, NULL out_text with a non-zero capacity), `RD_ERR_NO_TEMPLATE`,
/// `RD_ERR_CHAT_TEMPLATE` (the template cannot be parsed, or it rejected the
/// messages or failed while rendering), `RD_ERR_BUFFER_TOO_SMALL`.
/// Thread-safe (the model is immutable).
///
/// # Safety
///
/// `model` must be NULL or a live model; `messages` readable for
/// `n_messages` entries whose strings are NULL or NUL-terminated; `out_text`
/// NULL or writable for `capacity` bytes; `out_len` NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn rd_chat_apply_template(
    model: *const rd_model,
    messages: *const rd_chat_message,
    n_messages: usize,
    add_generation_prompt: bool,
    out_text: *mut c_char,
    capacity: usize,
    out_len: *mut usize,
) -> rd_status {
    guard("rd_chat_apply_template", || {
        // SAFETY: a non-NULL `model` is a live model (contract).
        let handle = unsafe { arg_ref(model, "model")? };
        // SAFETY: `messages` holds `n_messages` entries (contract).
        let msgs = unsafe { arg_slice(messages, n_messages, "messages")? };
        // SAFETY: `out_len` is writable (contract).
        let len_out = unsafe { Out::new(out_len, "out_len")? };
        if capacity > 0 {
            check_ptr(out_text, "out_text")?;
        }
        let mut conversation = Vec::new();
        conversation
            .try_reserve_exact(msgs.len())
            .map_err(|_| Fail::new(rd_status::RD_ERR_OUT_OF_MEMORY, "messages"))?;
        for (i, m) in msgs.iter().enumerate() {
            // SAFETY: the strings of every entry are NULL or NUL-terminated
            // (contract).
            let (role, content) = unsafe {
                (
                    arg_cstr(m.role, &format!("messages[{i}].role"))?,
                    arg_cstr(m.content, &format!("messages[{i}].content"))?,
                )
            };
            conversation.push(ChatMessage::new(role, content));
        }
        let template = handle.text.template()?;
        let text = template.render(
            &conversation,
            add_generation_prompt,
            &handle.text.template_tokens,
        )?;
        // SAFETY: `out_text` is writable for `capacity` bytes (contract) and
        // cannot overlap the library's own string.
        unsafe { write_text(text.as_bytes(), out_text, capacity, len_out) }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_arguments_are_checked() {
        // SAFETY: NULL with length 0 is never read.
        assert_eq!(unsafe { arg_text(std::ptr::null(), 0, "t") }.unwrap(), "");
        let bad = [b'a', 0xC3];
        // SAFETY: `bad` holds 2 readable bytes.
        let e = unsafe { arg_text(bad.as_ptr().cast(), 2, "text") }.unwrap_err();
        assert_eq!(e.status, rd_status::RD_ERR_INVALID_ARGUMENT);
        assert!(e.message.contains("offset 1"), "{}", e.message);
        // SAFETY: NULL is rejected before any read.
        assert!(unsafe { arg_cstr(std::ptr::null(), "role") }.is_err());
    }

    #[test]
    fn text_output_negotiates_its_size() {
        let mut buf = [b'x' as c_char; 8];
        let mut len = 0usize;
        // SAFETY: `len` is writable.
        let out = unsafe { Out::new(&raw mut len, "len") }.unwrap();
        // SAFETY: a NULL buffer with capacity 0 is never written.
        let e = unsafe { write_text(b"hello", std::ptr::null_mut(), 0, out) }.unwrap_err();
        assert_eq!(e.status, rd_status::RD_ERR_BUFFER_TOO_SMALL);
        assert_eq!(len, 5);
        // SAFETY: `len` is writable.
        let out = unsafe { Out::new(&raw mut len, "len") }.unwrap();
        // SAFETY: `buf` is writable for 5 bytes.
        unsafe { write_text(b"hello", buf.as_mut_ptr(), 5, out) }.unwrap();
        assert_eq!(buf[5], b'x' as c_char, "no NUL without room");
        // SAFETY: as above.
        let out = unsafe { Out::new(&raw mut len, "len") }.unwrap();
        // SAFETY: `buf` is writable for 8 bytes.
        unsafe { write_text(b"hey", buf.as_mut_ptr(), 8, out) }.unwrap();
        assert_eq!(len, 3);
        assert_eq!(buf[3], 0);
    }
}
