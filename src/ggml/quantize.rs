//! Weight quantization with ggml's own quantizers.

use super::{ggml_type, sys};
use crate::error::{Error, Result};
use crate::gguf::GgmlType;

/// Converts f32 rows of length `n_per_row` to `ty` with ggml's quantizer (or
/// plain conversion for F16/BF16/F32). Returns the encoded bytes.
pub fn quantize(ty: GgmlType, src: &[f32], n_per_row: usize) -> Result<Vec<u8>> {
    if n_per_row == 0 || !src.len().is_multiple_of(n_per_row) {
        return Err(Error::InvalidArgument(format!(
            "quantize: {} values are not whole rows of {n_per_row}",
            src.len()
        )));
    }
    let row_bytes = ty.row_size(n_per_row as u64).ok_or_else(|| {
        Error::InvalidArgument(format!(
            "quantize: row length {n_per_row} is not a multiple of {}'s block size {}",
            ty.name(),
            ty.block_size()
        ))
    })? as usize;
    let n_rows = src.len() / n_per_row;
    match ty {
        GgmlType::F32 => return Ok(src.iter().flat_map(|v| v.to_le_bytes()).collect()),
        GgmlType::F16 => {
            return Ok(src
                .iter()
                .flat_map(|&v| half::f16::from_f32(v).to_le_bytes())
                .collect());
        }
        GgmlType::BF16 => {
            return Ok(src
                .iter()
                .flat_map(|&v| half::bf16::from_f32(v).to_le_bytes())
                .collect());
        }
        _ => {}
    }
    // SAFETY: pure query.
    let needs_imatrix = unsafe { sys::ggml_quantize_requires_imatrix(ggml_type(ty)) };
    if needs_imatrix || !ty.is_quantized() {
        return Err(Error::InvalidArgument(format!(
            "cannot quantize to {}",
            ty.name()
        )));
    }
    let mut out = vec![0u8; row_bytes * n_rows];
    // SAFETY: initialises ggml's quantization tables (idempotent, thread-safe).
    unsafe { sys::ggml_quantize_init(ggml_type(ty)) };
    // SAFETY: `src` holds n_rows * n_per_row floats and `out` n_rows * row_bytes bytes,
    // exactly what ggml writes for this type.
    let written = unsafe {
        sys::ggml_quantize_chunk(
            ggml_type(ty),
            src.as_ptr(),
            out.as_mut_ptr().cast(),
            0,
            n_rows as i64,
            n_per_row as i64,
            std::ptr::null(),
        )
    };
    if written != out.len() {
        return Err(Error::Backend(format!(
            "quantize wrote {written} bytes, expected {}",
            out.len()
        )));
    }
    Ok(out)
}

/// Decodes `data` (whole rows of `ty`) into `out` with ggml's own
/// dequantizer; `out.len()` must be the number of elements `data` encodes.
pub fn dequantize(ty: GgmlType, data: &[u8], out: &mut [f32]) -> Result<()> {
    let expected = ty.row_size(out.len() as u64);
    if expected != Some(data.len() as u64) {
        return Err(Error::InvalidArgument(format!(
            "dequantize: {} bytes of {} do not encode {} values",
            data.len(),
            ty.name(),
            out.len()
        )));
    }
    if ty == GgmlType::F32 {
        for (o, b) in out.iter_mut().zip(data.chunks_exact(4)) {
            *o = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
        }
        return Ok(());
    }
    // SAFETY: a pure lookup; ggml returns a pointer to a static table entry
    // for every type id it knows, and our ids are ggml's.
    let traits = unsafe { sys::ggml_get_type_traits(ggml_type(ty)) };
    // SAFETY: `traits` is null or points to a static entry that lives forever.
    let to_float = unsafe { traits.as_ref() }.and_then(|t| t.to_float);
    let Some(to_float) = to_float else {
        return Err(Error::InvalidArgument(format!(
            "ggml cannot dequantize {}",
            ty.name()
        )));
    };
    // SAFETY: `data` holds exactly the blocks for `out.len()` values (checked
    // above), and `out` has room for all of them.
    unsafe { to_float(data.as_ptr().cast(), out.as_mut_ptr(), out.len() as i64) };
    Ok(())
}
