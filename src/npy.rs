//! Minimal NumPy `.npy` (format 1.0) reading and writing for little-endian
//! `float32` and `int32` arrays, used for golden logits and `rd logits` output.

use crate::error::{Error, Result};
use std::io::Write;

/// A dense array read from a `.npy` file.
#[derive(Clone, Debug, PartialEq)]
pub struct NpyArray<T> {
    /// Shape in C order.
    pub shape: Vec<usize>,
    /// Elements in C order.
    pub data: Vec<T>,
}

/// Element types supported here.
pub trait NpyElement: Copy {
    /// NumPy dtype descriptor.
    const DESCR: &'static str;
    /// Decodes one little-endian element.
    fn from_le(b: [u8; 4]) -> Self;
    /// Encodes one element little-endian.
    fn to_le(self) -> [u8; 4];
}

impl NpyElement for f32 {
    const DESCR: &'static str = "<f4";
    fn from_le(b: [u8; 4]) -> Self {
        f32::from_le_bytes(b)
    }
    fn to_le(self) -> [u8; 4] {
        self.to_le_bytes()
    }
}

impl NpyElement for i32 {
    const DESCR: &'static str = "<i4";
    fn from_le(b: [u8; 4]) -> Self {
        i32::from_le_bytes(b)
    }
    fn to_le(self) -> [u8; 4] {
        self.to_le_bytes()
    }
}

/// Writes `data` with `shape` as a `.npy` file.
pub fn write<T: NpyElement>(w: &mut impl Write, shape: &[usize], data: &[T]) -> Result<()> {
    let count: usize = shape.iter().product();
    if count != data.len() {
        return Err(Error::InvalidArgument(format!(
            "npy: shape {shape:?} does not match {} values",
            data.len()
        )));
    }
    let dims = match shape {
        [n] => format!("({n},)"),
        _ => format!(
            "({})",
            shape
                .iter()
                .map(|n| n.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    let mut header = format!(
        "{{'descr': '{}', 'fortran_order': False, 'shape': {dims}, }}",
        T::DESCR
    );
    // Magic (6) + version (2) + length (2) + header + '\n' must be a multiple of 64.
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    w.write_all(b"\x93NUMPY\x01\x00")?;
    w.write_all(&(header.len() as u16).to_le_bytes())?;
    w.write_all(header.as_bytes())?;
    let mut buf = Vec::with_capacity(data.len() * 4);
    for v in data {
        buf.extend_from_slice(&v.to_le());
    }
    w.write_all(&buf)?;
    Ok(())
}

/// Parses a `.npy` file holding `T` values in C order.
pub fn read<T: NpyElement>(bytes: &[u8]) -> Result<NpyArray<T>> {
    let bad = |m: &str| Error::InvalidArgument(format!("npy: {m}"));
    if bytes.len() < 10 || &bytes[..6] != b"\x93NUMPY" {
        return Err(bad("bad magic"));
    }
    let (hlen, hstart) = match bytes[6] {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
        2 | 3 if bytes.len() >= 12 => (
            u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize,
            12,
        ),
        _ => return Err(bad("unsupported version")),
    };
    let header = bytes
        .get(hstart..hstart + hlen)
        .ok_or_else(|| bad("truncated header"))?;
    let header = std::str::from_utf8(header).map_err(|_| bad("header is not text"))?;
    if !header.contains(&format!("'descr': '{}'", T::DESCR)) {
        return Err(bad(&format!("expected dtype {}", T::DESCR)));
    }
    if header.contains("'fortran_order': True") {
        return Err(bad("fortran order unsupported"));
    }
    let shape_txt = header
        .split("'shape': (")
        .nth(1)
        .and_then(|s| s.split(')').next())
        .ok_or_else(|| bad("no shape"))?;
    let shape = shape_txt
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.parse::<usize>().map_err(|_| bad("bad shape")))
        .collect::<Result<Vec<_>>>()?;
    let count = shape
        .iter()
        .try_fold(1usize, |a, &b| a.checked_mul(b))
        .ok_or_else(|| bad("shape overflow"))?;
    let body = &bytes[hstart + hlen..];
    if body.len() != count.checked_mul(4).ok_or_else(|| bad("shape overflow"))? {
        return Err(bad("data length does not match shape"));
    }
    let data = body
        .chunks_exact(4)
        .map(|c| T::from_le([c[0], c[1], c[2], c[3]]))
        .collect();
    Ok(NpyArray { shape, data })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let mut buf = Vec::new();
        write(&mut buf, &[2, 3], &[1.0f32, 2.0, 3.0, 4.0, 5.0, -6.5]).unwrap();
        assert_eq!((buf.len() - 24) % 64, 0);
        let a: NpyArray<f32> = read(&buf).unwrap();
        assert_eq!(a.shape, vec![2, 3]);
        assert_eq!(a.data[5], -6.5);
        assert!(read::<i32>(&buf).is_err());
        let mut buf = Vec::new();
        write(&mut buf, &[3], &[7i32, 8, 9]).unwrap();
        assert_eq!(read::<i32>(&buf).unwrap().data, vec![7, 8, 9]);
    }
}
