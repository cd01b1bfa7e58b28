//! GGUF v2/v3 files: a validating reader over a read-only memory map, a writer,
//! and the text of `rd info`.
//!
//! Files are treated as untrusted: malformed input yields a [`GgufError`] naming the
//! problem, never a panic or an allocation out of proportion to the file.

mod error;
mod reader;
mod types;
mod value;
mod writer;

use std::borrow::Cow;
use std::fmt;

pub use error::GgufError;
pub use reader::{
    GgufFile, MAX_ARRAY_LEN, MAX_KV_COUNT, MAX_TENSOR_COUNT, MAX_TOTAL_ARRAY_ELEMENTS, check_range,
    open_regular_file,
};
pub use types::{GgmlType, MAX_DIMS, MAX_TENSOR_NAME_LEN, TensorInfo, tensor_nbytes};
pub use value::{ArrayElement, MAX_ARRAY_DEPTH, Value, ValueType};
pub use writer::{GgufWriter, WRITE_VERSION};

/// The four bytes every GGUF file starts with.
pub const MAGIC: [u8; 4] = *b"GGUF";
/// Data alignment when `general.alignment` is absent.
pub const DEFAULT_ALIGNMENT: u64 = 32;
/// The metadata key that overrides the alignment.
pub const ALIGNMENT_KEY: &str = "general.alignment";

/// Array elements shown by [`describe`] before `...`.
const SHOWN_ITEMS: usize = 6;
/// Characters of a string shown by [`describe`].
const SHOWN_CHARS: usize = 60;
/// Key column width cap in [`describe`].
const MAX_KEY_WIDTH: usize = 44;

/// Human-readable summary of a file for `rd info`: header facts, every metadata
/// entry (long strings and arrays abbreviated), a tensor table and totals.
pub fn describe(file: &GgufFile) -> String {
    Describe(file).to_string()
}

struct Describe<'a>(&'a GgufFile);

impl fmt::Display for Describe<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let file = self.0;
        writeln!(
            f,
            "GGUF version {}, alignment {}, {} bytes, tensor data at offset {}",
            file.version(),
            file.alignment(),
            file.bytes().len(),
            file.data_offset()
        )?;
        write_metadata(f, file.metadata())?;
        write_tensors(f, file.tensors())
    }
}

fn write_metadata(f: &mut fmt::Formatter<'_>, metadata: &[(String, Value)]) -> fmt::Result {
    writeln!(f, "\nmetadata ({} keys):", metadata.len())?;
    let key_w = column_width(metadata.iter().map(|(k, _)| k.len()), MAX_KEY_WIDTH);
    let types: Vec<String> = metadata.iter().map(|(_, v)| v.type_description()).collect();
    let type_w = column_width(types.iter().map(String::len), usize::MAX);
    for ((key, value), ty) in metadata.iter().zip(&types) {
        let key = printable(key);
        let shown = value.summary(SHOWN_ITEMS, SHOWN_CHARS);
        writeln!(f, "  {key:<key_w$}  {ty:<type_w$}  {shown}")?;
    }
    Ok(())
}

fn write_tensors(f: &mut fmt::Formatter<'_>, tensors: &[TensorInfo]) -> fmt::Result {
    writeln!(f, "\ntensors ({}):", tensors.len())?;
    let shapes: Vec<String> = tensors.iter().map(|t| format!("{:?}", t.shape)).collect();
    let name_w = column_width(tensors.iter().map(|t| t.name.len()).chain([4]), usize::MAX);
    let shape_w = column_width(shapes.iter().map(String::len).chain([5]), usize::MAX);
    writeln!(
        f,
        "  {:<name_w$}  {:<7}  {:<shape_w$}  {:>12}",
        "name", "type", "shape", "bytes"
    )?;
    let (mut params, mut bytes) = (0u64, 0u64);
    for (t, shape) in tensors.iter().zip(&shapes) {
        let name = printable(&t.name);
        writeln!(
            f,
            "  {name:<name_w$}  {:<7}  {shape:<shape_w$}  {:>12}",
            t.ty, t.size
        )?;
        params = params.saturating_add(t.n_elements());
        bytes = bytes.saturating_add(t.size);
    }
    writeln!(
        f,
        "\ntotal: {} tensors, {params} parameters ({}), {bytes} bytes ({})",
        tensors.len(),
        human(params as f64, 1000.0, &["", " K", " M", " B", " T"]),
        human(
            bytes as f64,
            1024.0,
            &[" B", " KiB", " MiB", " GiB", " TiB"]
        ),
    )
}

/// `s` itself, or quoted and escaped if it holds control characters (names come
/// from untrusted files and must not drive the terminal).
fn printable(s: &str) -> Cow<'_, str> {
    if s.chars().any(char::is_control) {
        Cow::Owned(format!("{s:?}"))
    } else {
        Cow::Borrowed(s)
    }
}

fn column_width(lens: impl Iterator<Item = usize>, cap: usize) -> usize {
    lens.max().unwrap_or(0).min(cap)
}

/// `x` scaled by powers of `base` with two decimals, e.g. `134.52 M`.
fn human(mut x: f64, base: f64, units: &[&str]) -> String {
    let mut unit = 0;
    while x >= base && unit + 1 < units.len() {
        x /= base;
        unit += 1;
    }
    let suffix = units.get(unit).copied().unwrap_or("");
    if unit == 0 {
        format!("{x}{suffix}")
    } else {
        format!("{x:.2}{suffix}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn describe_lists_everything() {
        let mut w = GgufWriter::new();
        w.add_kv("general.architecture", "huginn").ok();
        let tokens: Vec<String> = (0..1000).map(|i| format!("tok{i}")).collect();
        w.add_kv("tokenizer.ggml.tokens", tokens).ok();
        w.add_kv("tokenizer.chat_template", "x".repeat(500)).ok();
        w.add_tensor("a.weight", GgmlType::Q8_0, &[32, 2], vec![0; 68])
            .ok();
        w.add_tensor("b", GgmlType::F32, &[3], vec![0; 12]).ok();
        let bytes = w.to_bytes().unwrap();
        let file = GgufFile::from_bytes(bytes).unwrap();
        let text = describe(&file);
        assert!(text.contains("GGUF version 3, alignment 32"), "{text}");
        assert!(text.contains(r#""huginn""#), "{text}");
        assert!(
            text.contains(r#"[1000 x string]  "tok0", "tok1""#),
            "{text}"
        );
        assert!(text.contains("... (500 bytes)"), "{text}");
        assert!(text.contains("a.weight  Q8_0     [32, 2]"), "{text}");
        assert!(
            text.contains("total: 2 tensors, 67 parameters (67), 80 bytes (80 B)"),
            "{text}"
        );
        assert_eq!(printable("a\u{1b}[31m"), r#""a\u{1b}[31m""#);
        assert_eq!(printable("blk.0.x"), "blk.0.x");
        assert_eq!(human(134_515_008.0, 1000.0, &["", " K", " M"]), "134.52 M");
    }
}
