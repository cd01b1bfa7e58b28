//! Writing GGUF v3 files, either all at once or streaming tensor data.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufWriter, Write};
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
        if !self.tensors.is_empty() {
            if let Some(padded) = align_up(buf.len() as u64, self.alignment) {
                buf.resize(padded as usize, 0);
            }
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
    const ZEROS: [u8; 256] = [0; 256];
    let mut left = padding;
    while left > 0 {
        let n = left.min(ZEROS.len() as u64) as usize;
        w.write_all(&ZEROS[..n])?;
        left -= n as u64;
    }
    Ok(())
}
