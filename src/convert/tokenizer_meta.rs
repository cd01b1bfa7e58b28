//! GGUF tokenizer metadata from a checkpoint's `tokenizer.json` and
//! `tokenizer_config.json`: the whole `tokenizer.json` as
//! `tokenizer.huggingface.json`, llama.cpp's `tokenizer.ggml.*` keys for a
//! byte-level BPE vocabulary, and `tokenizer.chat_template`.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::Value as Json;

use super::ConvertError;
use crate::gguf::Value;
use crate::tokenizer::{GPT2_REGEX, HF_JSON_KEY, LLAMA3_REGEX, token_type};

/// What was found about the tokenizer, for the conversion report.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TokenizerSummary {
    /// Entries in the vocabulary (before padding to the model's).
    pub n_tokens: usize,
    /// Whether `tokenizer.ggml.*` keys were written.
    pub ggml_keys: bool,
    /// Why not, if they were not.
    pub ggml_skipped: Option<String>,
    /// `tokenizer.ggml.pre`, if the pre-tokenizer is one llama.cpp knows.
    pub pre: Option<String>,
    /// Special ids found (name, id).
    pub specials: Vec<(String, u32)>,
    /// Whether a chat template was found.
    pub chat_template: bool,
}

/// Metadata entries for the tokenizer files in `dir`, padded to `n_vocab`
/// ids. `tokenizer.json` is required; `tokenizer_config.json` and
/// `chat_template.jinja` are optional.
pub fn tokenizer_metadata(
    dir: &Path,
    n_vocab: usize,
) -> Result<(Vec<(String, Value)>, TokenizerSummary), ConvertError> {
    let path = dir.join("tokenizer.json");
    let text = std::fs::read_to_string(&path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => ConvertError::MissingFile {
            path: path.clone(),
            what: "the tokenizer",
        },
        _ => ConvertError::io(&path, e),
    })?;
    // The runtime must be able to use it.
    crate::tokenizer::Tokenizer::from_hf_json(&text)
        .map_err(|e| ConvertError::BadTokenizer(format!("tokenizer.json: {e}")))?;
    let json: Json = serde_json::from_str(&text).map_err(|e| ConvertError::BadJson {
        path: path.clone(),
        reason: e.to_string(),
    })?;
    let config = read_json_opt(&dir.join("tokenizer_config.json"))?;
    let mut kv: Vec<(String, Value)> = Vec::new();
    let mut summary = TokenizerSummary::default();

    match ggml_vocab(&json, n_vocab) {
        Ok(v) => {
            summary.n_tokens = v.n_real;
            summary.ggml_keys = true;
            kv.push(("tokenizer.ggml.model".into(), Value::from("gpt2")));
            if let Some(pre) = detect_pre(&json) {
                kv.push(("tokenizer.ggml.pre".into(), Value::from(pre)));
                summary.pre = Some(pre.to_string());
            }
            let find = |name: &str| v.ids.get(name).copied();
            let specials = special_ids(config.as_ref(), &find);
            kv.push(("tokenizer.ggml.tokens".into(), Value::from(v.tokens)));
            kv.push(("tokenizer.ggml.token_type".into(), Value::from(v.types)));
            kv.push(("tokenizer.ggml.merges".into(), Value::from(v.merges)));
            for (key, id) in &specials {
                kv.push((format!("tokenizer.ggml.{key}"), Value::U32(*id)));
            }
            if let Some(add) = add_bos(&json, config.as_ref(), &specials) {
                kv.push(("tokenizer.ggml.add_bos_token".into(), Value::Bool(add)));
            }
            summary.specials = specials
                .into_iter()
                .map(|(k, id)| (k.to_string(), id))
                .collect();
        }
        Err(why) => summary.ggml_skipped = Some(why),
    }
    kv.push((HF_JSON_KEY.into(), Value::from(text)));
    if let Some(t) = chat_template(dir, config.as_ref())? {
        kv.push(("tokenizer.chat_template".into(), Value::from(t)));
        summary.chat_template = true;
    }
    Ok((kv, summary))
}

fn read_json_opt(path: &Path) -> Result<Option<Json>, ConvertError> {
    match std::fs::read_to_string(path) {
        Ok(text) => serde_json::from_str(&text)
            .map(Some)
            .map_err(|e| ConvertError::BadJson {
                path: path.to_path_buf(),
                reason: e.to_string(),
            }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(ConvertError::io(path, e)),
    }
}

#[derive(Debug)]
struct GgmlVocab {
    tokens: Vec<String>,
    types: Vec<i32>,
    merges: Vec<String>,
    ids: BTreeMap<String, u32>,
    n_real: usize,
}

/// The vocabulary as llama.cpp lists it, or why it cannot be.
fn ggml_vocab(json: &Json, n_vocab: usize) -> Result<GgmlVocab, String> {
    let model = json.get("model").ok_or("no `model`")?;
    match model.get("type").and_then(Json::as_str) {
        Some("BPE") | None => {}
        Some(t) => return Err(format!("model type {t} is not byte-level BPE")),
    }
    if model.get("byte_fallback").and_then(Json::as_bool) == Some(true) {
        return Err("BPE with byte fallback is not GPT-2 style".into());
    }
    let vocab = model
        .get("vocab")
        .and_then(Json::as_object)
        .ok_or("no `model.vocab` object")?;
    let mut by_id: BTreeMap<u32, (String, i32)> = BTreeMap::new();
    for (tok, id) in vocab {
        let id = id
            .as_u64()
            .and_then(|i| u32::try_from(i).ok())
            .ok_or_else(|| format!("vocab entry {tok:?} has a bad id"))?;
        by_id.insert(id, (tok.clone(), token_type::NORMAL));
    }
    for t in json
        .get("added_tokens")
        .and_then(Json::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[])
    {
        let id = t
            .get("id")
            .and_then(Json::as_u64)
            .and_then(|i| u32::try_from(i).ok())
            .ok_or("an added token has no valid id")?;
        let content = t
            .get("content")
            .and_then(Json::as_str)
            .ok_or("an added token has no content")?;
        let special = t.get("special").and_then(Json::as_bool).unwrap_or(false);
        let ty = if special {
            token_type::CONTROL
        } else {
            token_type::USER_DEFINED
        };
        by_id.insert(id, (content.to_string(), ty));
    }
    let n_real = by_id.keys().next_back().map_or(0, |&m| m as usize + 1);
    if n_real > n_vocab {
        return Err(format!(
            "the tokenizer has ids up to {} but the model's vocabulary is {n_vocab}",
            n_real - 1
        ));
    }
    let mut tokens = Vec::with_capacity(n_vocab);
    let mut types = Vec::with_capacity(n_vocab);
    let mut ids = BTreeMap::new();
    for i in 0..n_vocab as u32 {
        match by_id.remove(&i) {
            Some((tok, ty)) => {
                ids.insert(tok.clone(), i);
                tokens.push(tok);
                types.push(ty);
            }
            None => {
                // Unused rows of a padded embedding, named as llama.cpp's converter does.
                tokens.push(format!("[PAD{i}]"));
                types.push(token_type::UNUSED);
            }
        }
    }
    let mut merges = Vec::new();
    for m in model
        .get("merges")
        .and_then(Json::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[])
    {
        let joined = match m {
            Json::String(s) => s.clone(),
            Json::Array(pair) => match pair.as_slice() {
                [Json::String(a), Json::String(b)] if !a.contains(' ') && !b.contains(' ') => {
                    format!("{a} {b}")
                }
                _ => return Err(format!("merge {m} cannot be written as \"a b\"")),
            },
            _ => return Err(format!("merge {m} is neither a string nor a pair")),
        };
        merges.push(joined);
    }
    Ok(GgmlVocab {
        tokens,
        types,
        merges,
        ids,
        n_real,
    })
}

/// llama.cpp's name for the pre-tokenizer, when it is one llama.cpp implements.
fn detect_pre(json: &Json) -> Option<&'static str> {
    let pre = json.get("pre_tokenizer")?;
    let ty = |v: &Json| v.get("type").and_then(Json::as_str).map(str::to_string);
    let byte_level = |v: &Json, regex: bool| {
        ty(v).as_deref() == Some("ByteLevel")
            && v.get("use_regex").and_then(Json::as_bool).unwrap_or(true) == regex
            && !v
                .get("add_prefix_space")
                .and_then(Json::as_bool)
                .unwrap_or(false)
    };
    if byte_level(pre, true) {
        return Some("gpt-2");
    }
    if ty(pre).as_deref() != Some("Sequence") {
        return None;
    }
    let parts = pre.get("pretokenizers")?.as_array()?;
    match parts.as_slice() {
        [digits, bl]
            if ty(digits).as_deref() == Some("Digits")
                && digits.get("individual_digits").and_then(Json::as_bool) == Some(true)
                && byte_level(bl, true) =>
        {
            Some("smollm")
        }
        [split, bl] if ty(split).as_deref() == Some("Split") && byte_level(bl, false) => {
            let regex = split.get("pattern")?.get("Regex")?.as_str()?;
            let llama3_hf = LLAMA3_REGEX.replace(
                r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])",
                r"(?i:'s|'t|'re|'ve|'m|'ll|'d)",
            );
            if regex == llama3_hf || regex == LLAMA3_REGEX {
                Some("llama-bpe")
            } else if regex == GPT2_REGEX {
                Some("gpt-2")
            } else {
                None
            }
        }
        _ => None,
    }
}

/// Content of a special-token entry of `tokenizer_config.json` (a string or
/// an object with `content`).
fn token_content(v: &Json) -> Option<&str> {
    match v {
        Json::String(s) => Some(s),
        Json::Object(o) => o.get("content").and_then(Json::as_str),
        _ => None,
    }
}

/// (`tokenizer.ggml` key suffix, id) for bos, eos, eot, pad and unk: from
/// `tokenizer_config.json` where it names them, else by Huginn's (and common)
/// token names.
fn special_ids(
    config: Option<&Json>,
    find: &dyn Fn(&str) -> Option<u32>,
) -> Vec<(&'static str, u32)> {
    let from_config = |key: &str| {
        config
            .and_then(|c| c.get(key))
            .and_then(token_content)
            .and_then(find)
    };
    let by_name = |names: &[&str]| names.iter().find_map(|n| find(n));
    let mut out = Vec::new();
    let entries: [(&str, &str, &[&str]); 5] = [
        (
            "bos_token_id",
            "bos_token",
            &["<|begin_text|>", "<|begin_of_text|>", "<s>"],
        ),
        (
            "eos_token_id",
            "eos_token",
            &["<|end_text|>", "<|end_of_text|>", "</s>", "<|endoftext|>"],
        ),
        (
            "eot_token_id",
            "eot_token",
            &["<|end_turn|>", "<|eot_id|>", "<|im_end|>"],
        ),
        ("padding_token_id", "pad_token", &["<|pad|>", "<pad>"]),
        ("unknown_token_id", "unk_token", &["<unk>"]),
    ];
    for (key, config_key, names) in entries {
        if let Some(id) = from_config(config_key).or_else(|| by_name(names)) {
            out.push((key, id));
        }
    }
    out
}

/// Whether a BOS starts every text: `add_bos_token` of `tokenizer_config.json`,
/// else whether the post-processor's template starts with the BOS token.
fn add_bos(json: &Json, config: Option<&Json>, specials: &[(&str, u32)]) -> Option<bool> {
    if let Some(b) = config
        .and_then(|c| c.get("add_bos_token"))
        .and_then(Json::as_bool)
    {
        return Some(b);
    }
    specials.iter().find(|(k, _)| *k == "bos_token_id")?;
    let post = json.get("post_processor")?;
    fn first_special(p: &Json) -> Option<bool> {
        match p.get("type").and_then(Json::as_str)? {
            "TemplateProcessing" => {
                let first = p.get("single")?.as_array()?.first();
                Some(first.is_some_and(|f| f.get("SpecialToken").is_some()))
            }
            "Sequence" => p
                .get("processors")?
                .as_array()?
                .iter()
                .find_map(first_special),
            _ => None,
        }
    }
    first_special(post).or(Some(false))
}

/// The chat template: `chat_template` of `tokenizer_config.json` (a string, or
/// a list of named templates of which `default` is taken), else the file
/// `chat_template.jinja`.
fn chat_template(dir: &Path, config: Option<&Json>) -> Result<Option<String>, ConvertError> {
    match config.and_then(|c| c.get("chat_template")) {
        Some(Json::String(s)) => return Ok(Some(s.clone())),
        Some(Json::Array(list)) => {
            let named = |want: &str| {
                list.iter().find_map(|t| {
                    (t.get("name")?.as_str()? == want)
                        .then(|| t.get("template")?.as_str().map(str::to_string))
                        .flatten()
                })
            };
            if let Some(t) = named("default") {
                return Ok(Some(t));
            }
        }
        _ => {}
    }
    let path = dir.join("chat_template.jinja");
    match std::fs::read_to_string(&path) {
        Ok(t) => Ok(Some(t)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(ConvertError::io(path, e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vocab_padding_and_types() {
        let json: Json = serde_json::from_str(
            r#"{"model": {"type": "BPE", "vocab": {"a": 0, "b": 1, "ab": 2},
                "merges": ["a b"]},
                "added_tokens": [{"id": 4, "content": "<|end_turn|>", "special": true},
                                 {"id": 3, "content": "<x>", "special": false}]}"#,
        )
        .unwrap();
        let v = ggml_vocab(&json, 7).unwrap();
        assert_eq!(
            v.tokens,
            ["a", "b", "ab", "<x>", "<|end_turn|>", "[PAD5]", "[PAD6]"]
        );
        assert_eq!(v.types, [1, 1, 1, 4, 3, 5, 5]);
        assert_eq!(v.merges, ["a b"]);
        assert_eq!(v.n_real, 5);
        assert!(
            ggml_vocab(&json, 4)
                .unwrap_err()
                .contains("vocabulary is 4")
        );
        let find = |n: &str| v.ids.get(n).copied();
        assert_eq!(special_ids(None, &find), vec![("eot_token_id", 4)]);
        let cfg: Json = serde_json::from_str(r#"{"eos_token": {"content": "<x>"}}"#).unwrap();
        assert_eq!(
            special_ids(Some(&cfg), &find),
            vec![("eos_token_id", 3), ("eot_token_id", 4)]
        );
    }

    #[test]
    fn pre_tokenizer_names() {
        let pre = |p: &str| {
            let j: Json = serde_json::from_str(&format!(r#"{{"pre_tokenizer": {p}}}"#)).unwrap();
            detect_pre(&j)
        };
        assert_eq!(
            pre(r#"{"type": "ByteLevel", "add_prefix_space": false, "use_regex": true}"#),
            Some("gpt-2")
        );
        assert_eq!(
            pre(
                r#"{"type": "Sequence", "pretokenizers": [{"type": "Digits", "individual_digits": true},
                   {"type": "ByteLevel", "add_prefix_space": false, "use_regex": true}]}"#
            ),
            Some("smollm")
        );
        let llama3 = serde_json::to_string(
            r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+",
        )
        .unwrap();
        assert_eq!(
            pre(&format!(
                r#"{{"type": "Sequence", "pretokenizers": [{{"type": "Split", "pattern": {{"Regex": {llama3}}},
                   "behavior": "Isolated", "invert": false}},
                   {{"type": "ByteLevel", "add_prefix_space": false, "use_regex": false}}]}}"#
            )),
            Some("llama-bpe")
        );
        assert_eq!(
            pre(
                r#"{"type": "Sequence", "pretokenizers": [{"type": "Split", "pattern": {"Regex": "\\s+"},
                   "behavior": "Isolated", "invert": false},
                   {"type": "ByteLevel", "add_prefix_space": false, "use_regex": false}]}"#
            ),
            None
        );
    }

    #[test]
    fn bos_from_post_processor() {
        let j: Json = serde_json::from_str(
            r#"{"post_processor": {"type": "TemplateProcessing",
                "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}]}}"#,
        )
        .unwrap();
        assert_eq!(add_bos(&j, None, &[("bos_token_id", 1)]), Some(true));
        assert_eq!(add_bos(&j, None, &[]), None);
        let cfg: Json = serde_json::from_str(r#"{"add_bos_token": false}"#).unwrap();
        assert_eq!(add_bos(&j, Some(&cfg), &[("bos_token_id", 1)]), Some(false));
    }
}
