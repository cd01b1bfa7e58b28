//! Writing GGUF v3 files, either all at once or streaming tensor data.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufWriter, Read, Write};
use std::path::Path;

use super::reader::{align_up, check_alignment};
use super::types::tensor_nbytes;
use super::{ALIGNMENT_KEY, DEFAULT_ALIGNMENT, GgmlType, GgufError, MAGIC, TensorInfo, Value};

/// The format version this writer produces.
pub const WRITE_VERSION: u32 = 3;

/// Builds a GGUF v3 file: metadata, tensor infos, then tensor data, each tensor
/// padded with zeros to the alignment (32 unless set).
///
/// Small files: [`add_kv`](Self::add_kv), [`add_tensor`](Self::add_tensor), then
/// [`write_to`](Self::write_to) / [`to_bytes`](Self::to_bytes) /
/// [`write_to_file`](Self::write_to_file).
///
/// Large files: [`add_tensor_info`](Self::add_tensor_info) for every tensor, then
/// [`write_header`](Self::write_header), then
/// [`write_tensor_data`](Self::write_tensor_data) for each tensor in the order added,
/// then [`finish`](Self::finish).
#[derive(Debug, Clone)]
pub struct GgufWriter {
    alignment: u64,
    metadata: Vec<(String, Value)>,
    tensors: Vec<TensorInfo>,
    data: Vec<Option<Vec<u8>>>,
    tensor_index: HashMap<String, usize>,
    /// Once the header has been streamed: index of the next tensor to stream.
    next: Option<usize>,
}

impl Default for GgufWriter {
    fn default() -> Self {
        Self::new()
    }
}

impl GgufWriter {
    /// An empty writer with the default alignment.
    pub fn new() -> Self {
        GgufWriter {
            alignment: DEFAULT_ALIGNMENT,
            metadata: Vec::new(),
            tensors: Vec::new(),
            data: Vec::new(),
            tensor_index: HashMap::new(),
            next: None,
        }
    }

    /// The data alignment.
    pub fn alignment(&self) -> u64 {
        self.alignment
    }

    /// Metadata added so far, in order.
    pub fn metadata(&self) -> &[(String, Value)] {
        &self.metadata
    }

    /// Tensor infos added so far, with their offsets in the data section.
    pub fn tensors(&self) -> &[TensorInfo] {
        &self.tensors
    }

    /// Sets the alignment (a power of two >= 8) and records it as `general.alignment`.
    pub fn set_alignment(&mut self, alignment: u32) -> Result<(), GgufError> {
        self.check_not_started()?;
        let previous = self.alignment;
        self.alignment = check_alignment(alignment.into())?;
        if let Err(e) = self.layout() {
            self.alignment = previous;
            self.layout()?;
            return Err(e);
        }
        let value = Value::U32(alignment);
        match self.metadata.iter_mut().find(|(k, _)| k == ALIGNMENT_KEY) {
            Some((_, v)) => *v = value,
            None => self.metadata.push((ALIGNMENT_KEY.to_string(), value)),
        }
        Ok(())
    }

    /// Adds a metadata entry. Arrays must hold elements of their declared type and
    /// nest at most two deep; `general.alignment` must be a valid `u32` alignment.
    pub fn add_kv(
        &mut self,
        key: impl Into<String>,
        value: impl Into<Value>,
    ) -> Result<(), GgufError> {
        self.check_not_started()?;
        let (key, value) = (key.into(), value.into());
        if self.metadata.iter().any(|(k, _)| *k == key) {
            return Err(GgufError::DuplicateKey(key));
        }
        value.validate(&key, 0)?;
        if key == ALIGNMENT_KEY {
            let Value::U32(alignment) = value else {
                return Err(GgufError::WrongType {
                    key,
                    expected: "u32",
                    found: value.type_name(),
                });
            };
            return self.set_alignment(alignment);
        }
        self.metadata.push((key, value));
        Ok(())
    }

    /// Declares a tensor whose data will be streamed with
    /// [`write_tensor_data`](Self::write_tensor_data). `shape` is in ggml order.
    pub fn add_tensor_info(
        &mut self,
        name: impl Into<String>,
        ty: GgmlType,
        shape: &[u64],
    ) -> Result<(), GgufError> {
        self.check_not_started()?;
        let name = name.into();
        if self.tensor_index.contains_key(&name) {
            return Err(GgufError::DuplicateTensor(name));
        }
        let size = tensor_nbytes(&name, ty, shape)?;
        self.tensor_index.insert(name.clone(), self.tensors.len());
        self.tensors.push(TensorInfo {
            name,
            shape: shape.to_vec(),
            ty,
            offset: 0,
            size,
        });
        self.data.push(None);
        let laid_out = self.layout();
        if laid_out.is_err() {
            self.pop_tensor();
        }
        laid_out
    }

    /// Adds a tensor with its data; `data.len()` must match the type and shape.
    pub fn add_tensor(
        &mut self,
        name: impl Into<String>,
        ty: GgmlType,
        shape: &[u64],
        data: Vec<u8>,
    ) -> Result<(), GgufError> {
        let name = name.into();
        let expected = tensor_nbytes(&name, ty, shape)?;
        if data.len() as u64 != expected {
            return Err(GgufError::TensorDataSize {
                tensor: name,
                expected,
                got: data.len() as u64,
            });
        }
        self.add_tensor_info(name, ty, shape)?;
        if let Some(slot) = self.data.last_mut() {
            *slot = Some(data);
        }
        Ok(())
    }

    fn pop_tensor(&mut self) {
        if let Some(t) = self.tensors.pop() {
            self.tensor_index.remove(&t.name);
        }
        self.data.pop();
    }

    fn check_not_started(&self) -> Result<(), GgufError> {
        match self.next {
            None => Ok(()),
            Some(_) => Err(GgufError::WriterState(
                "the header has already been written".to_string(),
            )),
        }
    }

    /// Assigns every tensor its aligned offset in the data section.
    fn layout(&mut self) -> Result<(), GgufError> {
        let mut end = 0u64;
        for t in &mut self.tensors {
            t.offset = end;
            end = t
                .offset
                .checked_add(t.size)
                .and_then(|e| align_up(e, self.alignment))
                .ok_or_else(|| GgufError::BadShape {
                    tensor: t.name.clone(),
                    reason: "data section size overflows u64".to_string(),
                })?;
        }
        Ok(())
    }

    /// Encodes the header, padded to the alignment when there are tensors.
    fn header_bytes(&self) -> Vec<u8> {
        let mut buf = Vec::new();
        buf.extend_from_slice(&MAGIC);
        buf.extend_from_slice(&WRITE_VERSION.to_le_bytes());
        buf.extend_from_slice(&(self.tensors.len() as u64).to_le_bytes());
        buf.extend_from_slice(&(self.metadata.len() as u64).to_le_bytes());
        for (key, value) in &self.metadata {
            put_str(&mut buf, key);
            buf.extend_from_slice(&value.value_type().as_u32().to_le_bytes());
            put_value(&mut buf, value);
        }
        for t in &self.tensors {
            put_str(&mut buf, &t.name);
            buf.extend_from_slice(&(t.shape.len() as u32).to_le_bytes());
            for d in &t.shape {
                buf.extend_from_slice(&d.to_le_bytes());
            }
            buf.extend_from_slice(&t.ty.as_u32().to_le_bytes());
            buf.extend_from_slice(&t.offset.to_le_bytes());
        }
        if !self.tensors.is_empty()
            && let Some(padded) = align_up(buf.len() as u64, self.alignment)
        {
            buf.resize(padded as usize, 0);
        }
        buf
    }

    /// Streaming: writes the header. Afterwards no metadata or tensors can be added.
    pub fn write_header<W: Write>(&mut self, w: &mut W) -> Result<(), GgufError> {
        self.check_not_started()?;
        w.write_all(&self.header_bytes())?;
        self.next = Some(0);
        Ok(())
    }

    /// Streaming: writes the data of tensor `name`, which must be the next tensor in
    /// the order they were added, followed by its padding.
    pub fn write_tensor_data<W: Write>(
        &mut self,
        w: &mut W,
        name: &str,
        data: &[u8],
    ) -> Result<(), GgufError> {
        let Some(i) = self.next else {
            return Err(GgufError::WriterState(format!(
                "tensor `{name}` written before the header"
            )));
        };
        let Some(&pos) = self.tensor_index.get(name) else {
            return Err(GgufError::UnknownTensor(name.to_string()));
        };
        if pos != i {
            let expected = match self.tensors.get(i) {
                Some(t) => format!("tensor `{}`", t.name),
                None => "no more tensors".to_string(),
            };
            return Err(GgufError::WriterState(format!(
                "expected {expected} next, got `{name}`"
            )));
        }
        if let Some(info) = self.tensors.get(i) {
            write_data(w, info, data, self.alignment)?;
        }
        self.next = Some(i + 1);
        Ok(())
    }

    /// Streaming: checks that the header and every tensor's data have been written.
    pub fn finish(&self) -> Result<(), GgufError> {
        let Some(i) = self.next else {
            return Err(GgufError::WriterState(
                "the header was never written".to_string(),
            ));
        };
        match self.tensors.get(i) {
            Some(t) => Err(GgufError::WriterState(format!(
                "tensor `{}` was never written",
                t.name
            ))),
            None => Ok(()),
        }
    }

    /// Writes the whole file; every tensor must have been added with its data.
    pub fn write_to<W: Write>(&self, w: &mut W) -> Result<(), GgufError> {
        let mut pairs = Vec::with_capacity(self.tensors.len());
        for (info, data) in self.tensors.iter().zip(&self.data) {
            let Some(data) = data else {
                return Err(GgufError::WriterState(format!(
                    "tensor `{}` has no data (stream it with write_tensor_data)",
                    info.name
                )));
            };
            pairs.push((info, data));
        }
        w.write_all(&self.header_bytes())?;
        for (info, data) in pairs {
            write_data(w, info, data, self.alignment)?;
        }
        Ok(())
    }

    /// The whole file in memory.
    pub fn to_bytes(&self) -> Result<Vec<u8>, GgufError> {
        let mut out = Vec::new();
        self.write_to(&mut out)?;
        Ok(out)
    }

    /// Writes the whole file to `path`, replacing any existing file.
    pub fn write_to_file(&self, path: impl AsRef<Path>) -> Result<(), GgufError> {
        let mut w = BufWriter::new(File::create(path)?);
        self.write_to(&mut w)?;
        w.flush()?;
        Ok(())
    }
}

fn put_str(buf: &mut Vec<u8>, s: &str) {
    buf.extend_from_slice(&(s.len() as u64).to_le_bytes());
    buf.extend_from_slice(s.as_bytes());
}

/// Appends a value's encoding without its type id (arrays carry their element type).
fn put_value(buf: &mut Vec<u8>, value: &Value) {
    match value {
        Value::U8(v) => buf.extend_from_slice(&v.to_le_bytes()),
        Value::I8(v) => buf.extend_from_slice(&v.to_le_bytes()),
        Value::U16(v) => buf.extend_from_slice(&v.to_le_bytes()),
        Value::I16(v) => buf.extend_from_slice(&v.to_le_bytes()),
        Value::U32(v) => buf.extend_from_slice(&v.to_le_bytes()),
        Value::I32(v) => buf.extend_from_slice(&v.to_le_bytes()),
        Value::F32(v) => buf.extend_from_slice(&v.to_le_bytes()),
        Value::U64(v) => buf.extend_from_slice(&v.to_le_bytes()),
        Value::I64(v) => buf.extend_from_slice(&v.to_le_bytes()),
        Value::F64(v) => buf.extend_from_slice(&v.to_le_bytes()),
        Value::Bool(v) => buf.push(u8::from(*v)),
        Value::String(s) => put_str(buf, s),
        Value::Array(elem, values) => {
            buf.extend_from_slice(&elem.as_u32().to_le_bytes());
            buf.extend_from_slice(&(values.len() as u64).to_le_bytes());
            for v in values {
                put_value(buf, v);
            }
        }
    }
}

/// Writes one tensor's data and the zero padding up to the next aligned offset.
fn write_data<W: Write>(
    w: &mut W,
    info: &TensorInfo,
    data: &[u8],
    alignment: u64,
) -> Result<(), GgufError> {
    if data.len() as u64 != info.size {
        return Err(GgufError::TensorDataSize {
            tensor: info.name.clone(),
            expected: info.size,
            got: data.len() as u64,
        });
    }
    w.write_all(data)?;
    // The layout already checked that the padded end fits in u64.
    let padding = align_up(info.size, alignment).map_or(0, |end| end - info.size);
    std::io::copy(&mut std::io::repeat(0).take(padding), w)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gguf::{GgufFile, ValueType};

    fn all_values() -> Vec<(&'static str, Value)> {
        vec![
            ("u8", Value::U8(200)),
            ("i8", Value::I8(-100)),
            ("u16", Value::U16(60000)),
            ("i16", Value::I16(-30000)),
            ("u32", Value::U32(4_000_000_000)),
            ("i32", Value::I32(-2_000_000_000)),
            ("f32", Value::F32(-1.25)),
            ("u64", Value::U64(u64::MAX)),
            ("i64", Value::I64(i64::MIN)),
            ("f64", Value::F64(std::f64::consts::PI)),
            ("bool", Value::Bool(true)),
            ("string", Value::from("héllo\nworld")),
            ("empty_string", Value::from("")),
            ("strings", Value::from(vec!["a", "", "ccc"])),
            ("floats", Value::from(vec![1.0f32, -2.5])),
            ("empty_u64s", Value::Array(ValueType::U64, vec![])),
            ("empty_arrays", Value::Array(ValueType::Array, vec![])),
            (
                "nested",
                Value::Array(
                    ValueType::Array,
                    vec![
                        Value::from(vec![1i32, -2]),
                        Value::Array(ValueType::String, vec![]),
                        Value::from(vec![true]),
                    ],
                ),
            ),
        ]
    }

    fn pattern(n: usize, seed: u8) -> Vec<u8> {
        (0..n)
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
            .collect()
    }

    fn build(alignment: Option<u32>) -> GgufWriter {
        let mut w = GgufWriter::new();
        if let Some(a) = alignment {
            w.set_alignment(a).unwrap();
        }
        for (k, v) in all_values() {
            w.add_kv(k, v).unwrap();
        }
        let tensors: [(&str, GgmlType, &[u64]); 5] = [
            ("f32", GgmlType::F32, &[3, 5]),
            ("f16", GgmlType::F16, &[7]),
            ("q4_1", GgmlType::Q4_1, &[64, 2, 3]),
            ("q4_k", GgmlType::Q4_K, &[256, 1, 1, 2]),
            ("bf16", GgmlType::BF16, &[1, 1]),
        ];
        for (i, (name, ty, shape)) in tensors.into_iter().enumerate() {
            let size = tensor_nbytes(name, ty, shape).unwrap() as usize;
            w.add_tensor(name, ty, shape, pattern(size, i as u8))
                .unwrap();
        }
        w
    }

    fn check_round_trip(alignment: Option<u32>) {
        let w = build(alignment);
        let bytes = w.to_bytes().unwrap();
        let file = GgufFile::from_bytes(bytes.clone()).unwrap();
        let align = u64::from(alignment.unwrap_or(32));
        assert_eq!(file.version(), 3);
        assert_eq!(file.alignment(), align);
        assert_eq!(file.data_offset() as u64 % align, 0);
        let mut expected: Vec<(String, Value)> = Vec::new();
        if let Some(a) = alignment {
            expected.push((ALIGNMENT_KEY.to_string(), Value::U32(a)));
        }
        expected.extend(all_values().into_iter().map(|(k, v)| (k.to_string(), v)));
        assert_eq!(file.metadata(), &expected[..]);
        assert_eq!(file.tensors(), w.tensors());
        for (i, t) in file.tensors().iter().enumerate() {
            assert_eq!(t.offset % align, 0);
            assert_eq!(file.tensor_data(t), &pattern(t.size as usize, i as u8)[..]);
        }
        let last = file.tensors().last().unwrap();
        let end = file.data_offset() as u64 + align_up(last.offset + last.size, align).unwrap();
        assert_eq!(bytes.len() as u64, end);

        // Writing what was read reproduces the file byte for byte.
        let mut again = GgufWriter::new();
        for (k, v) in file.metadata() {
            again.add_kv(k.clone(), v.clone()).unwrap();
        }
        for t in file.tensors() {
            let data = file.tensor_data(t).to_vec();
            again
                .add_tensor(t.name.clone(), t.ty, &t.shape, data)
                .unwrap();
        }
        assert_eq!(again.to_bytes().unwrap(), bytes);
    }

    #[test]
    fn round_trip_alignment_32() {
        check_round_trip(None);
        check_round_trip(Some(32));
    }

    #[test]
    fn round_trip_alignment_64() {
        check_round_trip(Some(64));
    }

    #[test]
    fn streaming_matches_in_memory() {
        let w = build(Some(64));
        let in_memory = w.to_bytes().unwrap();
        let mut s = GgufWriter::new();
        s.set_alignment(64).unwrap();
        for (k, v) in all_values() {
            s.add_kv(k, v).unwrap();
        }
        for t in w.tensors() {
            s.add_tensor_info(t.name.clone(), t.ty, &t.shape).unwrap();
        }
        let mut out = Vec::new();
        assert!(matches!(
            s.write_tensor_data(&mut out, "f32", &[]),
            Err(GgufError::WriterState(_))
        ));
        assert!(matches!(
            s.write_to(&mut out),
            Err(GgufError::WriterState(_))
        ));
        s.write_header(&mut out).unwrap();
        assert!(s.add_kv("late", 1u8).is_err());
        assert!(matches!(s.finish(), Err(GgufError::WriterState(_))));
        assert!(matches!(
            s.write_tensor_data(&mut out, "nope", &[]),
            Err(GgufError::UnknownTensor(_))
        ));
        assert!(matches!(
            s.write_tensor_data(&mut out, "f16", &[0; 14]),
            Err(GgufError::WriterState(_))
        ));
        assert!(matches!(
            s.write_tensor_data(&mut out, "f32", &[0; 59]),
            Err(GgufError::TensorDataSize {
                expected: 60,
                got: 59,
                ..
            })
        ));
        for (i, t) in w.tensors().iter().enumerate() {
            let data = pattern(t.size as usize, i as u8);
            s.write_tensor_data(&mut out, &t.name, &data).unwrap();
        }
        s.finish().unwrap();
        assert_eq!(out, in_memory);
    }

    #[test]
    fn no_tensors() {
        let mut w = GgufWriter::new();
        w.add_kv("general.architecture", "huginn").unwrap();
        let bytes = w.to_bytes().unwrap();
        let file = GgufFile::from_bytes(bytes.clone()).unwrap();
        assert_eq!(file.data_offset(), bytes.len());
        assert!(file.tensors().is_empty());
        assert_eq!(file.require_str("general.architecture").unwrap(), "huginn");
    }

    #[test]
    fn writer_rejects_bad_input() {
        let mut w = GgufWriter::new();
        w.add_kv("k", 1u32).unwrap();
        assert!(matches!(
            w.add_kv("k", 2u32),
            Err(GgufError::DuplicateKey(_))
        ));
        let mixed = Value::Array(ValueType::U8, vec![Value::U16(1)]);
        assert!(matches!(
            w.add_kv("m", mixed),
            Err(GgufError::BadArray { .. })
        ));
        for bad in [0u32, 4, 24, 3] {
            assert!(matches!(
                w.set_alignment(bad),
                Err(GgufError::BadAlignment(_))
            ));
        }
        assert!(matches!(
            w.add_kv(ALIGNMENT_KEY, 64u64),
            Err(GgufError::WrongType { .. })
        ));
        w.add_tensor("t", GgmlType::F32, &[2], vec![0; 8]).unwrap();
        assert!(matches!(
            w.add_tensor("t", GgmlType::F32, &[2], vec![0; 8]),
            Err(GgufError::DuplicateTensor(_))
        ));
        assert!(matches!(
            w.add_tensor("u", GgmlType::F32, &[2], vec![0; 7]),
            Err(GgufError::TensorDataSize { .. })
        ));
        assert!(matches!(
            w.add_tensor_info("q", GgmlType::Q8_0, &[16]),
            Err(GgufError::BadShape { .. })
        ));
        assert!(matches!(
            w.add_tensor_info("big", GgmlType::F64, &[1 << 62]),
            Err(GgufError::BadShape { .. })
        ));
        assert_eq!(w.tensors().len(), 1);
        // Offsets follow the alignment, also when it changes after tensors were added.
        w.add_tensor("v", GgmlType::F32, &[3], vec![0; 12]).unwrap();
        assert_eq!(w.tensors()[1].offset, 32);
        w.set_alignment(128).unwrap();
        assert_eq!(w.tensors()[1].offset, 128);
        let file = GgufFile::from_bytes(w.to_bytes().unwrap()).unwrap();
        assert_eq!(file.alignment(), 128);
        assert_eq!(file.get_u32("k").unwrap(), Some(1));
    }
}
