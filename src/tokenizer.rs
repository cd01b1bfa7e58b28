//! Text to token ids and back, for byte-level BPE vocabularies (Huginn's, GPT-2's,
//! Llama 3's, SmolLM's).
//!
//! A [`Tokenizer`] is built from a GGUF file's `tokenizer.huggingface.json` (a
//! whole Hugging Face `tokenizer.json`, interpreted by the `tokenizers` crate),
//! or, when that key is absent, from llama.cpp's `tokenizer.ggml.*` keys
//! (`model` = `gpt2`: tokens, merges, token types, the pre-tokenizer named by
//! `tokenizer.ggml.pre`, special token ids). Both paths are checked against
//! llama.cpp's own tokenizer in `tests/tokenizer.rs`.
//!
//! Decoding works on bytes: every id has its byte string, and a
//! [`StreamDecoder`] turns a stream of ids into text that only ever contains
//! whole UTF-8 characters, holding back the bytes of a character split across
//! tokens until it is complete.

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::OnceLock;

use serde_json::Value as Json;
use tokenizers::models::bpe::BPE;
use tokenizers::pre_tokenizers::PreTokenizerWrapper;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::{AddedToken, SplitDelimiterBehavior};

use crate::error::{Error, Result};
use crate::gguf::{GgufFile, Value};

/// GGUF key holding a whole Hugging Face `tokenizer.json`.
pub const HF_JSON_KEY: &str = "tokenizer.huggingface.json";

/// llama.cpp token types (`tokenizer.ggml.token_type`).
pub mod token_type {
    /// An ordinary vocabulary entry.
    pub const NORMAL: i32 = 1;
    /// The unknown token.
    pub const UNKNOWN: i32 = 2;
    /// A control (special) token such as `<|end_turn|>`.
    pub const CONTROL: i32 = 3;
    /// A token added by the user, matched verbatim in text.
    pub const USER_DEFINED: i32 = 4;
    /// A placeholder that never occurs.
    pub const UNUSED: i32 = 5;
    /// A raw byte written `<0xXX>`.
    pub const BYTE: i32 = 6;
}

/// Names of end-of-turn tokens recognised when no id is given.
const EOT_NAMES: &[&str] = &["<|end_turn|>", "<|eot_id|>", "<|im_end|>", "<end_of_turn>"];

/// GPT-2's pre-tokenizer expression (llama.cpp's `gpt-2`).
pub(crate) const GPT2_REGEX: &str =
    r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)";
/// Llama 3's pre-tokenizer expression as llama.cpp writes it.
pub(crate) const LLAMA3_REGEX: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// Qwen 2's pre-tokenizer expression as llama.cpp writes it.
const QWEN2_REGEX: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// The expressions llama.cpp applies in turn for a `tokenizer.ggml.pre` name,
/// and whether whole words found in the vocabulary skip the merges.
fn pre_tokenizer_regexes(pre: &str) -> Option<(&'static [&'static str], bool)> {
    Some(match pre {
        "default" => (
            &[
                r"[\p{P}\$\+<=>\^~\|]+",
                GPT2_REGEX,
                r"\p{N}+",
                "[0-9][0-9][0-9]",
            ],
            false,
        ),
        "gpt-2" | "gpt2" | "phi-2" | "mpt" | "olmo" => (&[GPT2_REGEX], false),
        "smollm" | "codeshell" | "exaone" | "minerva" => (&[r"\p{N}", GPT2_REGEX], false),
        "llama3" | "llama-v3" | "llama-bpe" | "falcon3" | "pixtral" => (&[LLAMA3_REGEX], true),
        "qwen2" | "deepseek-r1-qwen" => (&[QWEN2_REGEX], false),
        _ => return None,
    })
}

/// GPT-2's byte-to-character table: printable bytes map to themselves, the
/// others to the characters from U+0100 on, in byte order.
fn byte_chars() -> &'static [char; 256] {
    static TABLE: OnceLock<[char; 256]> = OnceLock::new();
    TABLE.get_or_init(|| {
        let mut table = ['\0'; 256];
        let mut next = 256u32;
        for (b, slot) in table.iter_mut().enumerate() {
            let printable = (33..=126).contains(&b) || (161..=172).contains(&b) || b >= 174;
            let c = if printable {
                b as u32
            } else {
                next += 1;
                next - 1
            };
            *slot = char::from_u32(c).unwrap_or('\u{FFFD}');
        }
        table
    })
}

/// The byte a byte-level character stands for.
fn char_byte(c: char) -> Option<u8> {
    static REVERSE: OnceLock<HashMap<char, u8>> = OnceLock::new();
    REVERSE
        .get_or_init(|| {
            byte_chars()
                .iter()
                .enumerate()
                .map(|(b, &c)| (c, b as u8))
                .collect()
        })
        .get(&c)
        .copied()
}

/// Bytes of a byte-level token; characters outside the table stand for themselves.
pub(crate) fn byte_level_decode(token: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(token.len());
    for c in token.chars() {
        match char_byte(c) {
            Some(b) => out.push(b),
            None => out.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes()),
        }
    }
    out
}

/// Where a tokenizer came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenizerSource {
    /// `tokenizer.huggingface.json` (or a `tokenizer.json` file).
    HuggingFaceJson,
    /// llama.cpp's `tokenizer.ggml.*` keys.
    GgmlKeys,
}

/// Special token ids of a vocabulary.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SpecialTokens {
    /// Beginning of text.
    pub bos: Option<u32>,
    /// End of text.
    pub eos: Option<u32>,
    /// End of turn (chat).
    pub eot: Option<u32>,
    /// Padding.
    pub pad: Option<u32>,
    /// Unknown token.
    pub unk: Option<u32>,
    /// Whether a BOS token starts every encoded text.
    pub add_bos: bool,
}

/// A byte-level BPE tokenizer with byte-exact decoding.
///
/// Cheap to share (`Send + Sync`); encoding and decoding take `&self`.
pub struct Tokenizer {
    hf: tokenizers::Tokenizer,
    /// `hf` with special tokens treated as plain text (built on first use).
    hf_plain: OnceLock<tokenizers::Tokenizer>,
    /// Byte string of every id.
    pieces: Vec<Box<[u8]>>,
    /// Whether each id is a control token (left out by `skip_special` decoding).
    control: Vec<bool>,
    special: SpecialTokens,
    source: TokenizerSource,
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer")
            .field("n_vocab", &self.pieces.len())
            .field("source", &self.source)
            .field("special", &self.special)
            .finish()
    }
}

fn tok_err(msg: impl std::fmt::Display) -> Error {
    Error::Tokenizer(msg.to_string())
}

/// How a `tokenizer.json` decoder turns ordinary tokens into bytes.
#[derive(Clone, Copy, PartialEq, Eq)]
enum PieceStyle {
    /// GPT-2 byte-level characters.
    ByteLevel,
    /// SentencePiece style: `▁` is a space, `<0xXX>` a byte.
    Metaspace,
    /// Anything else: the decoder's output for the token alone.
    Decoder,
}

fn piece_style(decoder: Option<&Json>) -> PieceStyle {
    let Some(d) = decoder else {
        return PieceStyle::Decoder;
    };
    let types: Vec<&str> = match d.get("type").and_then(Json::as_str) {
        Some("Sequence") => d
            .get("decoders")
            .and_then(Json::as_array)
            .map(|a| a.iter().filter_map(|x| x.get("type")?.as_str()).collect())
            .unwrap_or_default(),
        Some(t) => vec![t],
        None => vec![],
    };
    if types.contains(&"ByteLevel") {
        PieceStyle::ByteLevel
    } else if types.contains(&"Metaspace") || types.contains(&"ByteFallback") {
        PieceStyle::Metaspace
    } else {
        PieceStyle::Decoder
    }
}

/// `<0xXX>` -> the byte.
fn hex_byte(token: &str) -> Option<u8> {
    let hex = token.strip_prefix("<0x")?.strip_suffix('>')?;
    if hex.len() != 2 {
        return None;
    }
    u8::from_str_radix(hex, 16).ok()
}

impl Tokenizer {
    /// The tokenizer stored in a GGUF file: `tokenizer.huggingface.json` if
    /// present, else the `tokenizer.ggml.*` keys. Special token ids and
    /// `add_bos_token` given as `tokenizer.ggml.*` keys take precedence.
    pub fn from_gguf(file: &GgufFile) -> Result<Tokenizer> {
        let mut tok = match file.get_str(HF_JSON_KEY)? {
            Some(json) => Self::from_hf_json(json)?,
            None if file.get("tokenizer.ggml.tokens").is_some() => Self::from_ggml_keys(file)?,
            None => {
                return Err(tok_err(
                    "the file has no tokenizer (neither tokenizer.huggingface.json nor tokenizer.ggml.tokens)",
                ));
            }
        };
        tok.special = special_from_keys(file, tok.special.clone(), tok.pieces.len())?;
        Ok(tok)
    }

    /// Builds a tokenizer from the text of a Hugging Face `tokenizer.json`.
    pub fn from_hf_json(json: &str) -> Result<Tokenizer> {
        let hf = tokenizers::Tokenizer::from_str(json)
            .map_err(|e| tok_err(format!("tokenizer.json: {e}")))?;
        let raw: Json =
            serde_json::from_str(json).map_err(|e| tok_err(format!("tokenizer.json: {e}")))?;
        let style = piece_style(raw.get("decoder"));
        let added = hf.get_added_tokens_decoder();
        let n = hf.get_vocab_size(true);
        let n = added.keys().map(|&id| id as usize + 1).fold(n, usize::max);
        let mut pieces = Vec::with_capacity(n);
        let mut control = vec![false; n];
        for id in 0..n as u32 {
            let piece: Vec<u8> = if let Some(t) = added.get(&id) {
                control[id as usize] = t.special;
                t.content.as_bytes().to_vec()
            } else {
                match hf.id_to_token(id) {
                    None => Vec::new(),
                    Some(token) => match style {
                        PieceStyle::ByteLevel => byte_level_decode(&token),
                        PieceStyle::Metaspace => match hex_byte(&token) {
                            Some(b) => vec![b],
                            None => token.replace('\u{2581}', " ").into_bytes(),
                        },
                        PieceStyle::Decoder => hf
                            .decode(&[id], false)
                            .map(String::into_bytes)
                            .unwrap_or_default(),
                    },
                }
            };
            pieces.push(piece.into_boxed_slice());
        }
        let find = |names: &[&str]| names.iter().find_map(|n| hf.token_to_id(n));
        // A post-processor that puts a special token first adds a BOS.
        let add_bos = hf
            .encode_fast("", true)
            .ok()
            .and_then(|e| e.get_ids().first().copied())
            .filter(|&id| added.get(&id).is_some_and(|t| t.special));
        let special = SpecialTokens {
            bos: add_bos.or_else(|| {
                find(&[
                    "<|begin_text|>",
                    "<|begin_of_text|>",
                    "<s>",
                    "<|endoftext|>",
                ])
            }),
            eos: find(&["<|end_text|>", "<|end_of_text|>", "</s>", "<|endoftext|>"]),
            eot: find(EOT_NAMES),
            pad: find(&["<|pad|>", "<pad>", "[PAD]"]),
            unk: find(&["<unk>", "<|unk|>", "[UNK]"]),
            add_bos: add_bos.is_some(),
        };
        Ok(Tokenizer {
            hf,
            hf_plain: OnceLock::new(),
            pieces,
            control,
            special,
            source: TokenizerSource::HuggingFaceJson,
        })
    }

    /// Builds a tokenizer from llama.cpp's `tokenizer.ggml.*` keys of a byte-level
    /// BPE (`tokenizer.ggml.model` = `gpt2`) vocabulary.
    pub fn from_ggml_keys(file: &GgufFile) -> Result<Tokenizer> {
        let model = file.get_str("tokenizer.ggml.model")?.unwrap_or("gpt2");
        if model != "gpt2" {
            return Err(tok_err(format!(
                "tokenizer.ggml.model {model:?} is not supported (only gpt2, byte-level BPE)"
            )));
        }
        let tokens = string_array(file, "tokenizer.ggml.tokens")?
            .ok_or_else(|| tok_err("missing tokenizer.ggml.tokens"))?;
        if tokens.is_empty() {
            return Err(tok_err("tokenizer.ggml.tokens is empty"));
        }
        let merges = string_array(file, "tokenizer.ggml.merges")?.unwrap_or_default();
        let types: Vec<i32> = match file.get_array("tokenizer.ggml.token_type")? {
            None => vec![token_type::NORMAL; tokens.len()],
            Some(a) => {
                if a.len() != tokens.len() {
                    return Err(tok_err(format!(
                        "tokenizer.ggml.token_type has {} entries for {} tokens",
                        a.len(),
                        tokens.len()
                    )));
                }
                a.iter()
                    .map(|v| {
                        v.as_i128()
                            .and_then(|x| i32::try_from(x).ok())
                            .ok_or_else(|| tok_err("tokenizer.ggml.token_type holds a non-integer"))
                    })
                    .collect::<Result<_>>()?
            }
        };
        let pre = file.get_str("tokenizer.ggml.pre")?.unwrap_or("default");
        let (regexes, ignore_merges) = pre_tokenizer_regexes(pre)
            .ok_or_else(|| tok_err(format!("tokenizer.ggml.pre {pre:?} is not supported")))?;

        // Later duplicates win, as in llama.cpp's token-to-id map.
        let mut vocab = tokenizers::models::bpe::Vocab::default();
        for (id, t) in tokens.iter().enumerate() {
            vocab.insert(t.to_string(), id as u32);
        }
        let mut pairs = Vec::with_capacity(merges.len());
        for m in &merges {
            // llama.cpp splits at the first space after the first character.
            let split = m
                .char_indices()
                .skip(1)
                .find(|&(_, c)| c == ' ')
                .map(|(i, _)| i)
                .ok_or_else(|| tok_err(format!("merge {m:?} has no separating space")))?;
            let (a, b) = (&m[..split], &m[split + 1..]);
            if !vocab.contains_key(a) || !vocab.contains_key(b) {
                return Err(tok_err(format!(
                    "merge {m:?} names a token not in the vocabulary"
                )));
            }
            pairs.push((a.to_string(), b.to_string()));
        }
        let bpe = BPE::builder()
            .vocab_and_merges(vocab, pairs)
            .ignore_merges(ignore_merges)
            .build()
            .map_err(|e| tok_err(format!("building the BPE model: {e}")))?;
        let mut hf = tokenizers::Tokenizer::new(bpe);
        let mut pre_tokenizers: Vec<PreTokenizerWrapper> = Vec::with_capacity(regexes.len() + 1);
        for r in regexes {
            let split = Split::new(
                SplitPattern::Regex((*r).to_string()),
                SplitDelimiterBehavior::Isolated,
                false,
            )
            .map_err(|e| tok_err(format!("pre-tokenizer expression: {e}")))?;
            pre_tokenizers.push(split.into());
        }
        pre_tokenizers.push(ByteLevel::new(false, false, false).into());
        hf.with_pre_tokenizer(Some(Sequence::new(pre_tokenizers)));
        hf.with_decoder(Some(tokenizers::decoders::byte_level::ByteLevel::default()));

        let (mut specials, mut user) = (Vec::new(), Vec::new());
        let mut pieces = Vec::with_capacity(tokens.len());
        let mut control = vec![false; tokens.len()];
        for (id, (t, &ty)) in tokens.iter().zip(&types).enumerate() {
            let piece = match ty {
                token_type::CONTROL | token_type::USER_DEFINED | token_type::UNKNOWN => {
                    let is_special = ty != token_type::USER_DEFINED;
                    control[id] = is_special;
                    let token = AddedToken::from(t.to_string(), is_special).normalized(false);
                    if is_special {
                        specials.push(token)
                    } else {
                        user.push(token)
                    }
                    t.as_bytes().to_vec()
                }
                token_type::BYTE => hex_byte(t).map_or_else(|| t.as_bytes().to_vec(), |b| vec![b]),
                _ => byte_level_decode(t),
            };
            pieces.push(piece.into_boxed_slice());
        }
        hf.add_special_tokens(&specials);
        hf.add_tokens(&user);
        // llama.cpp recognises end-of-turn tokens by name when no key gives one.
        let eot = EOT_NAMES.iter().find_map(|n| {
            tokens
                .iter()
                .position(|t| t == n)
                .filter(|&i| control[i])
                .map(|i| i as u32)
        });
        let base = SpecialTokens {
            eot,
            ..SpecialTokens::default()
        };
        let special = special_from_keys(file, base, tokens.len())?;
        Ok(Tokenizer {
            hf,
            hf_plain: OnceLock::new(),
            pieces,
            control,
            special,
            source: TokenizerSource::GgmlKeys,
        })
    }

    /// Where the tokenizer came from.
    pub fn source(&self) -> TokenizerSource {
        self.source
    }

    /// The underlying `tokenizers` tokenizer.
    pub fn hf(&self) -> &tokenizers::Tokenizer {
        &self.hf
    }

    /// Number of ids.
    pub fn n_vocab(&self) -> usize {
        self.pieces.len()
    }

    /// Special token ids and whether a BOS starts encoded text.
    pub fn special_tokens(&self) -> &SpecialTokens {
        &self.special
    }

    /// Ids after which generation stops: end of text and end of turn.
    pub fn stop_tokens(&self) -> Vec<u32> {
        let mut v: Vec<u32> = [self.special.eos, self.special.eot]
            .into_iter()
            .flatten()
            .collect();
        v.dedup();
        v
    }

    /// Id of a token given as text (`<|end_turn|>`), if it is in the vocabulary.
    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.hf.token_to_id(token)
    }

    /// The bytes token `id` stands for (a control token's own text).
    pub fn token_bytes(&self, id: u32) -> Option<&[u8]> {
        self.pieces.get(id as usize).map(|p| &p[..])
    }

    /// Whether `id` is a control token (such as `<|end_turn|>`).
    pub fn is_control(&self, id: u32) -> bool {
        self.control.get(id as usize).copied().unwrap_or(false)
    }

    /// Token ids of `text`. With `add_special`, a BOS token comes first when the
    /// vocabulary asks for one ([`SpecialTokens::add_bos`]). With
    /// `parse_special`, control tokens written in the text (`<|end_turn|>`)
    /// become their ids; without, they are tokenized as plain text.
    pub fn encode(&self, text: &str, add_special: bool, parse_special: bool) -> Result<Vec<u32>> {
        let hf = if parse_special {
            &self.hf
        } else {
            self.hf_plain.get_or_init(|| {
                let mut t = self.hf.clone();
                t.set_encode_special_tokens(true);
                t
            })
        };
        let enc = hf
            .encode_fast(text, false)
            .map_err(|e| tok_err(format!("encoding failed: {e}")))?;
        if self.hf.get_normalizer().is_none() {
            self.check_represented(text, enc.get_ids())?;
        }
        let mut ids = Vec::with_capacity(enc.get_ids().len() + 1);
        if add_special
            && self.special.add_bos
            && let Some(bos) = self.special.bos
        {
            ids.push(bos);
        }
        ids.extend_from_slice(enc.get_ids());
        Ok(ids)
    }

    /// Fails when `ids` do not spell `text` back: the vocabulary has no token
    /// for some of its bytes (a small vocabulary without byte tokens), and
    /// the BPE model dropped them. Names the first such byte offset. A
    /// leading space the tokenizer adds is allowed.
    fn check_represented(&self, text: &str, ids: &[u32]) -> Result<()> {
        let want = text.as_bytes();
        let mut pos = 0usize;
        let mut first = true;
        for &id in ids {
            let mut piece = self.token_bytes(id).unwrap_or(&[]);
            if first && pos == 0 && piece.first() == Some(&b' ') && want.first() != Some(&b' ') {
                piece = &piece[1..];
            }
            first = false;
            let rest = &want[pos.min(want.len())..];
            let same = piece.iter().zip(rest).take_while(|(a, b)| a == b).count();
            if same < piece.len() {
                return Err(unrepresentable(text, pos + same));
            }
            pos += piece.len();
        }
        if pos < want.len() {
            return Err(unrepresentable(text, pos));
        }
        Ok(())
    }

    /// Text of `ids`, control tokens left out when `skip_special`; bytes that are
    /// not valid UTF-8 become U+FFFD.
    pub fn decode(&self, ids: &[u32], skip_special: bool) -> String {
        let mut d = StreamDecoder::new(skip_special);
        let mut out = String::new();
        for &id in ids {
            d.push_into(self, id, &mut out);
        }
        d.finish_into(&mut out);
        out
    }
}

/// `key` as a list of strings.
fn string_array<'f>(file: &'f GgufFile, key: &str) -> Result<Option<Vec<&'f str>>> {
    let Some(a) = file.get_array(key)? else {
        return Ok(None);
    };
    a.iter()
        .map(|v| {
            v.as_str()
                .ok_or_else(|| tok_err(format!("{key} holds a non-string")))
        })
        .collect::<Result<Vec<_>>>()
        .map(Some)
}

/// `base` with the ids and flags given by `tokenizer.ggml.*` keys; ids must be
/// below `n_vocab`.
fn special_from_keys(
    file: &GgufFile,
    base: SpecialTokens,
    n_vocab: usize,
) -> Result<SpecialTokens> {
    let id = |key: &str, default: Option<u32>| -> Result<Option<u32>> {
        let full = format!("tokenizer.ggml.{key}");
        match file.get(&full).and_then(Value::as_u64) {
            None => Ok(default),
            Some(v) if (v as usize) < n_vocab => Ok(Some(v as u32)),
            Some(v) => Err(tok_err(format!(
                "{full} = {v} is outside the vocabulary of {n_vocab}"
            ))),
        }
    };
    Ok(SpecialTokens {
        bos: id("bos_token_id", base.bos)?,
        eos: id("eos_token_id", base.eos)?,
        eot: id("eot_token_id", base.eot)?,
        pad: id("padding_token_id", base.pad)?,
        unk: id("unknown_token_id", base.unk)?,
        add_bos: file
            .get_bool("tokenizer.ggml.add_bos_token")?
            .unwrap_or(base.add_bos),
    })
}

/// Turns a stream of token ids into text made of whole UTF-8 characters.
///
/// Bytes of a character split across tokens are held back until the character
/// is complete; a byte sequence that can never become valid UTF-8 is replaced by
/// U+FFFD. After warm-up (the internal buffer holds at most a few bytes) pushing
/// a token allocates nothing beyond the growth of the output string.
#[derive(Clone, Debug, Default)]
pub struct StreamDecoder {
    pending: Vec<u8>,
    skip_special: bool,
}

impl StreamDecoder {
    /// A decoder; with `skip_special`, control tokens produce no text.
    pub fn new(skip_special: bool) -> Self {
        StreamDecoder {
            pending: Vec::with_capacity(16),
            skip_special,
        }
    }

    /// Appends the text that token `id` completes to `out`. Unknown ids add nothing.
    pub fn push_into(&mut self, tok: &Tokenizer, id: u32, out: &mut String) {
        if self.skip_special && tok.is_control(id) {
            return;
        }
        let Some(bytes) = tok.token_bytes(id) else {
            return;
        };
        self.pending.extend_from_slice(bytes);
        self.drain(out, false);
    }

    /// The text that token `id` completes.
    pub fn push(&mut self, tok: &Tokenizer, id: u32) -> String {
        let mut s = String::new();
        self.push_into(tok, id, &mut s);
        s
    }

    /// Appends whatever is held back (an incomplete character becomes U+FFFD).
    pub fn finish_into(&mut self, out: &mut String) {
        self.drain(out, true);
    }

    /// Bytes currently held back.
    pub fn pending(&self) -> &[u8] {
        &self.pending
    }

    /// Forgets the bytes held back and sets whether control tokens produce
    /// text, keeping the buffer (for reuse across generations).
    pub fn reset(&mut self, skip_special: bool) {
        self.pending.clear();
        self.skip_special = skip_special;
    }

    /// Makes room for `additional` more held-back bytes, so that pushing a
    /// token of up to `additional - 3` bytes never allocates (at most 3 bytes
    /// of an incomplete character are held back between tokens).
    pub fn reserve(&mut self, additional: usize) {
        self.pending.reserve(additional);
    }

    fn drain(&mut self, out: &mut String, flush: bool) {
        let mut start = 0;
        loop {
            match std::str::from_utf8(&self.pending[start..]) {
                Ok(s) => {
                    out.push_str(s);
                    start = self.pending.len();
                    break;
                }
                Err(e) => {
                    let valid = e.valid_up_to();
                    // The prefix is valid UTF-8 by construction.
                    out.push_str(
                        std::str::from_utf8(&self.pending[start..start + valid])
                            .unwrap_or_default(),
                    );
                    start += valid;
                    match e.error_len() {
                        Some(bad) => {
                            out.push('\u{FFFD}');
                            start += bad;
                        }
                        None if flush => {
                            out.push('\u{FFFD}');
                            start = self.pending.len();
                            break;
                        }
                        // An incomplete character at the end: wait for more.
                        None => break,
                    }
                }
            }
        }
        self.pending.drain(..start);
    }
}

/// The error for text whose byte at `offset` the vocabulary cannot represent.
fn unrepresentable(text: &str, offset: usize) -> Error {
    let mut start = offset.min(text.len());
    while !text.is_char_boundary(start) {
        start -= 1;
    }
    let ch = text[start..]
        .chars()
        .next()
        .map_or(String::new(), |c| format!(" ({c:?})"));
    Error::InvalidArgument(format!(
        "the text cannot be represented by this model's vocabulary: byte offset {offset}{ch} \
         has no token"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_table_is_gpt2s() {
        let t = byte_chars();
        assert_eq!(t[b'a' as usize], 'a');
        assert_eq!(t[b' ' as usize], '\u{120}'); // Ġ
        assert_eq!(t[b'\n' as usize], '\u{10A}'); // Ċ
        assert_eq!(t[0], '\u{100}');
        assert_eq!(t[173], '\u{143}');
        let mut seen: Vec<char> = t.to_vec();
        seen.sort_unstable();
        seen.dedup();
        assert_eq!(seen.len(), 256);
        for b in 0..=255u8 {
            assert_eq!(char_byte(t[b as usize]), Some(b));
        }
        assert_eq!(byte_level_decode("Ġhello"), b" hello");
    }

    #[test]
    fn hex_bytes() {
        assert_eq!(hex_byte("<0x0A>"), Some(10));
        assert_eq!(hex_byte("<0xfF>"), Some(255));
        assert_eq!(hex_byte("<0x1>"), None);
        assert_eq!(hex_byte("0x10"), None);
    }
}
