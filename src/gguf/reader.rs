//! Parsing GGUF files. Files are untrusted: every count, length, offset and size is
//! checked against the bytes actually present before anything is allocated or sliced.

use std::collections::HashMap;
use std::fmt;
use std::fs::File;
use std::path::Path;

use memmap2::Mmap;

use super::types::{MAX_DIMS, tensor_nbytes};
use super::value::MAX_ARRAY_DEPTH;
use super::{
    ALIGNMENT_KEY, DEFAULT_ALIGNMENT, GgmlType, GgufError, MAGIC, TensorInfo, Value, ValueType,
};

/// Most metadata entries a file may hold.
pub const MAX_KV_COUNT: u64 = 1 << 20;
/// Most tensors a file may hold.
pub const MAX_TENSOR_COUNT: u64 = 1 << 20;
/// Most elements one metadata array may hold.
pub const MAX_ARRAY_LEN: u64 = 1 << 23;
/// Most metadata array elements (at any nesting level) one file may hold in total.
pub const MAX_TOTAL_ARRAY_ELEMENTS: u64 = 1 << 24;

/// Fewest bytes a metadata entry takes: key length, empty key, type id, one-byte value.
const MIN_KV_SIZE: u64 = 8 + 4 + 1;
/// Fewest bytes a tensor info takes: name length, dimension count, one dimension, type, offset.
const MIN_TENSOR_INFO_SIZE: u64 = 8 + 4 + 8 + 4 + 8;
/// Cap on up-front vector capacity; vectors grow beyond it only as entries are parsed.
const MAX_PREALLOC: u64 = 4096;

type What<'w> = &'w dyn Fn() -> String;
/// Metadata entries in file order.
type Entries = Vec<(String, Value)>;
/// Position of each key or tensor name in its vector.
type Index = HashMap<String, usize>;

/// Bounds-checked little-endian reads over the file's bytes.
struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn remaining(&self) -> u64 {
        self.buf.len().saturating_sub(self.pos) as u64
    }

    fn take(&mut self, n: u64, what: What) -> Result<&'a [u8], GgufError> {
        let start = self.pos;
        let slice = usize::try_from(n)
            .ok()
            .and_then(|n| self.buf.get(start..start.checked_add(n)?));
        let slice = slice.ok_or_else(|| GgufError::Truncated {
            what: what(),
            offset: start as u64,
        })?;
        self.pos += slice.len();
        Ok(slice)
    }

    fn bytes<const N: usize>(&mut self, what: What) -> Result<[u8; N], GgufError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N as u64, what)?);
        Ok(out)
    }

    fn u32(&mut self, what: What) -> Result<u32, GgufError> {
        self.bytes(what).map(u32::from_le_bytes)
    }

    fn u64(&mut self, what: What) -> Result<u64, GgufError> {
        self.bytes(what).map(u64::from_le_bytes)
    }

    fn string(&mut self, what: What) -> Result<String, GgufError> {
        let offset = self.pos as u64;
        let len = self.u64(what)?;
        if len > self.remaining() {
            return Err(GgufError::StringTooLong { offset, len });
        }
        let bytes = self.take(len, what)?;
        match std::str::from_utf8(bytes) {
            Ok(s) => Ok(s.to_owned()),
            Err(_) => Err(GgufError::InvalidUtf8 { what: what() }),
        }
    }
}

/// The parsed header: everything but the tensor data.
struct Header {
    version: u32,
    alignment: u64,
    data_offset: usize,
    metadata: Vec<(String, Value)>,
    key_index: HashMap<String, usize>,
    tensors: Vec<TensorInfo>,
    tensor_index: HashMap<String, usize>,
}

struct Parser<'a> {
    cur: Cursor<'a>,
    /// Array elements still allowed before [`MAX_TOTAL_ARRAY_ELEMENTS`] is reached.
    array_budget: u64,
}

impl Parser<'_> {
    fn value(&mut self, ty: ValueType, key: &str, depth: usize) -> Result<Value, GgufError> {
        let what = || format!("value of `{key}`");
        let c = &mut self.cur;
        Ok(match ty {
            ValueType::U8 => Value::U8(u8::from_le_bytes(c.bytes(&what)?)),
            ValueType::I8 => Value::I8(i8::from_le_bytes(c.bytes(&what)?)),
            ValueType::U16 => Value::U16(u16::from_le_bytes(c.bytes(&what)?)),
            ValueType::I16 => Value::I16(i16::from_le_bytes(c.bytes(&what)?)),
            ValueType::U32 => Value::U32(u32::from_le_bytes(c.bytes(&what)?)),
            ValueType::I32 => Value::I32(i32::from_le_bytes(c.bytes(&what)?)),
            ValueType::F32 => Value::F32(f32::from_le_bytes(c.bytes(&what)?)),
            ValueType::U64 => Value::U64(u64::from_le_bytes(c.bytes(&what)?)),
            ValueType::I64 => Value::I64(i64::from_le_bytes(c.bytes(&what)?)),
            ValueType::F64 => Value::F64(f64::from_le_bytes(c.bytes(&what)?)),
            ValueType::Bool => Value::Bool(c.bytes::<1>(&what)? != [0]),
            ValueType::String => Value::String(c.string(&what)?),
            ValueType::Array => self.array(key, depth)?,
        })
    }

    fn array(&mut self, key: &str, depth: usize) -> Result<Value, GgufError> {
        if depth >= MAX_ARRAY_DEPTH {
            return Err(GgufError::NestingTooDeep {
                key: key.to_string(),
                max: MAX_ARRAY_DEPTH,
            });
        }
        let what = || format!("array header of `{key}`");
        let raw = self.cur.u32(&what)?;
        let elem = ValueType::from_u32(raw).ok_or_else(|| GgufError::UnknownValueType {
            key: key.to_string(),
            ty: raw,
        })?;
        let count = self.cur.u64(&what)?;
        let fits = count <= self.cur.remaining() / elem.min_encoded_size();
        if !fits || count > MAX_ARRAY_LEN || count > self.array_budget {
            return Err(GgufError::CountTooLarge {
                what: format!("elements of array `{key}`"),
                count,
            });
        }
        self.array_budget -= count;
        let mut values = Vec::with_capacity(count.min(MAX_PREALLOC) as usize);
        for _ in 0..count {
            values.push(self.value(elem, key, depth + 1)?);
        }
        Ok(Value::Array(elem, values))
    }

    fn metadata(&mut self, n_kv: u64) -> Result<(Entries, Index), GgufError> {
        let mut metadata = Vec::with_capacity(n_kv.min(MAX_PREALLOC) as usize);
        let mut index = HashMap::new();
        for i in 0..n_kv {
            let key = self.cur.string(&|| format!("key of metadata entry {i}"))?;
            if index.contains_key(&key) {
                return Err(GgufError::DuplicateKey(key));
            }
            let raw = self.cur.u32(&|| format!("value type of `{key}`"))?;
            let ty = ValueType::from_u32(raw).ok_or_else(|| GgufError::UnknownValueType {
                key: key.clone(),
                ty: raw,
            })?;
            let value = self.value(ty, &key, 0)?;
            index.insert(key.clone(), metadata.len());
            metadata.push((key, value));
        }
        Ok((metadata, index))
    }

    fn tensor_info(&mut self, i: u64, alignment: u64) -> Result<TensorInfo, GgufError> {
        let name = self.cur.string(&|| format!("name of tensor {i}"))?;
        let n_dims = self.cur.u32(&|| format!("dimension count of `{name}`"))?;
        if n_dims == 0 || n_dims as usize > MAX_DIMS {
            return Err(GgufError::BadShape {
                tensor: name,
                reason: format!("{n_dims} dimensions (must be 1 to {MAX_DIMS})"),
            });
        }
        let mut shape = Vec::with_capacity(n_dims as usize);
        for d in 0..n_dims {
            shape.push(self.cur.u64(&|| format!("dimension {d} of `{name}`"))?);
        }
        let raw = self.cur.u32(&|| format!("type of `{name}`"))?;
        let ty = GgmlType::from_u32(raw).ok_or_else(|| GgufError::UnknownTensorType {
            tensor: name.clone(),
            ty: raw,
        })?;
        let offset = self.cur.u64(&|| format!("data offset of `{name}`"))?;
        let size = tensor_nbytes(&name, ty, &shape)?;
        if !offset.is_multiple_of(alignment) {
            return Err(GgufError::BadTensorOffset {
                tensor: name,
                offset,
                alignment,
            });
        }
        Ok(TensorInfo {
            name,
            shape,
            ty,
            offset,
            size,
        })
    }
}

fn parse_header(buf: &[u8]) -> Result<Header, GgufError> {
    let mut p = Parser {
        cur: Cursor { buf, pos: 0 },
        array_budget: MAX_TOTAL_ARRAY_ELEMENTS,
    };
    let magic: [u8; 4] = p.cur.bytes(&|| "magic".to_string())?;
    if magic != MAGIC {
        return Err(GgufError::BadMagic(magic));
    }
    let version = p.cur.u32(&|| "version".to_string())?;
    if !(2..=3).contains(&version) {
        return Err(GgufError::UnsupportedVersion(version));
    }
    let n_tensors = p.cur.u64(&|| "tensor count".to_string())?;
    let n_kv = p.cur.u64(&|| "metadata entry count".to_string())?;
    check_count(&p.cur, n_kv, MIN_KV_SIZE, MAX_KV_COUNT, "metadata entries")?;
    check_count(
        &p.cur,
        n_tensors,
        MIN_TENSOR_INFO_SIZE,
        MAX_TENSOR_COUNT,
        "tensors",
    )?;

    let (metadata, key_index) = p.metadata(n_kv)?;
    let alignment = alignment(&metadata, &key_index)?;

    check_count(
        &p.cur,
        n_tensors,
        MIN_TENSOR_INFO_SIZE,
        MAX_TENSOR_COUNT,
        "tensors",
    )?;
    let mut tensors = Vec::with_capacity(n_tensors.min(MAX_PREALLOC) as usize);
    let mut tensor_index = HashMap::new();
    for i in 0..n_tensors {
        let info = p.tensor_info(i, alignment)?;
        if tensor_index.contains_key(&info.name) {
            return Err(GgufError::DuplicateTensor(info.name));
        }
        tensor_index.insert(info.name.clone(), tensors.len());
        tensors.push(info);
    }

    // Like ggml, the data section is padded to the alignment only when there are tensors.
    let header_end = p.cur.pos as u64;
    let file_len = buf.len() as u64;
    let data_offset = if tensors.is_empty() {
        header_end
    } else {
        match align_up(header_end, alignment) {
            Some(off) if off <= file_len => off,
            other => {
                return Err(GgufError::DataPastEnd {
                    data_offset: other.unwrap_or(u64::MAX),
                    file_len,
                });
            }
        }
    };
    check_tensor_ranges(&tensors, file_len - data_offset)?;
    Ok(Header {
        version,
        alignment,
        // `data_offset <= buf.len()`, so it fits in usize.
        data_offset: data_offset as usize,
        metadata,
        key_index,
        tensors,
        tensor_index,
    })
}

/// Rejects `count` entries of at least `min_size` bytes each if the rest of the file
/// cannot hold them or there are more than `max`.
fn check_count(
    cur: &Cursor,
    count: u64,
    min_size: u64,
    max: u64,
    what: &str,
) -> Result<(), GgufError> {
    if count > cur.remaining() / min_size || count > max {
        return Err(GgufError::CountTooLarge {
            what: what.to_string(),
            count,
        });
    }
    Ok(())
}

fn alignment(
    metadata: &[(String, Value)],
    index: &HashMap<String, usize>,
) -> Result<u64, GgufError> {
    let value = index.get(ALIGNMENT_KEY).and_then(|&i| metadata.get(i));
    match value {
        None => Ok(DEFAULT_ALIGNMENT),
        Some((_, Value::U32(a))) => check_alignment(u64::from(*a)),
        Some((key, other)) => Err(GgufError::WrongType {
            key: key.clone(),
            expected: "u32",
            found: other.type_name(),
        }),
    }
}

/// Returns `alignment` if it is a power of two of at least 8.
pub(crate) fn check_alignment(alignment: u64) -> Result<u64, GgufError> {
    if alignment.is_power_of_two() && alignment >= 8 {
        Ok(alignment)
    } else {
        Err(GgufError::BadAlignment(alignment))
    }
}

/// `x` rounded up to a multiple of the power of two `alignment`.
pub(crate) fn align_up(x: u64, alignment: u64) -> Option<u64> {
    let mask = alignment - 1;
    x.checked_add(mask).map(|v| v & !mask)
}

/// Every tensor must lie inside the data section, and no two may overlap.
fn check_tensor_ranges(tensors: &[TensorInfo], data_len: u64) -> Result<(), GgufError> {
    for t in tensors {
        let end = t.offset.checked_add(t.size);
        if end.is_none_or(|end| end > data_len) {
            return Err(GgufError::TensorOutOfBounds {
                tensor: t.name.clone(),
                offset: t.offset,
                size: t.size,
                data_len,
            });
        }
    }
    let mut by_offset: Vec<&TensorInfo> = tensors.iter().collect();
    by_offset.sort_by_key(|t| t.offset);
    for pair in by_offset.windows(2) {
        // `offset + size` cannot overflow: checked above.
        if let [a, b] = pair
            && a.offset + a.size > b.offset
        {
            return Err(GgufError::TensorOverlap {
                a: a.name.clone(),
                b: b.name.clone(),
            });
        }
    }
    Ok(())
}

enum Storage {
    Mapped(Mmap),
    Owned(Vec<u8>),
}

impl Storage {
    fn bytes(&self) -> &[u8] {
        match self {
            Storage::Mapped(map) => map,
            Storage::Owned(bytes) => bytes,
        }
    }
}

/// Opens `path` for reading if it is a regular file, and returns it with its
/// size at open. Devices (`/dev/zero`), pipes, sockets and directories are
/// refused before anything is read: a pipe would block the open and the read
/// forever, a device would be read without end.
pub fn open_regular_file(path: &Path) -> std::io::Result<(File, u64)> {
    let not_regular = |what: &str| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!(
                "{}: {what}, not a regular file (a model must be a regular GGUF file)",
                path.display()
            ),
        )
    };
    // stat before open: opening a FIFO for reading blocks until a writer comes.
    let kind = std::fs::metadata(path)?.file_type();
    if kind.is_dir() {
        return Err(not_regular("a directory"));
    }
    if !kind.is_file() {
        return Err(not_regular("a device, pipe or socket"));
    }
    let file = File::open(path)?;
    // The path may have changed between the two calls: check what was opened.
    let meta = file.metadata()?;
    if !meta.file_type().is_file() {
        return Err(not_regular("a device, pipe or socket"));
    }
    Ok((file, meta.len()))
}

/// Checks that `file` is a regular file holding `len` bytes from `offset`.
pub fn check_range(file: &File, offset: u64, len: u64) -> std::io::Result<()> {
    let meta = file.metadata()?;
    if !meta.file_type().is_file() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "a device, pipe or socket, not a regular file (a model must be a regular GGUF file)",
        ));
    }
    let size = meta.len();
    match offset.checked_add(len) {
        Some(end) if end <= size => Ok(()),
        _ => Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("bytes {offset}..{offset}+{len} are not within the file's {size} bytes"),
        )),
    }
}

/// A parsed GGUF file. Tensor data stays in the file's bytes (a read-only memory
/// map for [`GgufFile::open`]) and is borrowed, never copied.
pub struct GgufFile {
    storage: Storage,
    header: Header,
}

impl GgufFile {
    /// Maps the file at `path` read-only and parses and validates its header.
    ///
    /// The file must not be modified or truncated while the returned value is alive
    /// (the usual contract of memory-mapped files).
    #[allow(unsafe_code)] // memory mapping (see the SAFETY comment)
    pub fn open(path: impl AsRef<Path>) -> Result<Self, GgufError> {
        let (file, len) = open_regular_file(path.as_ref())?;
        if len == 0 {
            return Self::from_bytes(Vec::new());
        }
        // SAFETY: the mapping is read-only and only ever read through `&[u8]`. Mapping is
        // unsafe because another process could change the file underneath us; the
        // contract above (as for any memory-mapped model file) rules that out, and no
        // parsing decision relies on bytes being read twice with the same result.
        let map = unsafe { Mmap::map(&file)? };
        Self::new(Storage::Mapped(map))
    }

    /// Maps `len` bytes of `file` from `offset` read-only (a GGUF stored inside
    /// a larger file, e.g. an Android APK asset) and parses them. The range
    /// must lie within the file, which must be a regular file. The bytes start
    /// `offset % page size` into their first page, so the data is 32-byte
    /// aligned (usable in place by ggml) when `offset` is a multiple of 32.
    ///
    /// The same contract as [`GgufFile::open`] holds for the range.
    #[allow(unsafe_code)] // memory mapping (see the SAFETY comment)
    pub fn open_range(file: &File, offset: u64, len: u64) -> Result<Self, GgufError> {
        check_range(file, offset, len)?;
        if len == 0 {
            return Self::from_bytes(Vec::new());
        }
        let len = usize::try_from(len).map_err(|_| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("a range of {len} bytes does not fit the address space"),
            )
        })?;
        // SAFETY: as in `open`: a read-only mapping, only ever read through
        // `&[u8]`, of a range checked to lie within the regular file.
        let map = unsafe {
            memmap2::MmapOptions::new()
                .offset(offset)
                .len(len)
                .map(file)?
        };
        Self::new(Storage::Mapped(map))
    }

    /// Parses and validates a GGUF file held in memory.
    pub fn from_bytes(bytes: Vec<u8>) -> Result<Self, GgufError> {
        Self::new(Storage::Owned(bytes))
    }

    fn new(storage: Storage) -> Result<Self, GgufError> {
        let header = parse_header(storage.bytes())?;
        Ok(GgufFile { storage, header })
    }

    /// The format version (2 or 3).
    pub fn version(&self) -> u32 {
        self.header.version
    }

    /// The data alignment (`general.alignment`, default 32).
    pub fn alignment(&self) -> u64 {
        self.header.alignment
    }

    /// All metadata entries, in file order.
    pub fn metadata(&self) -> &[(String, Value)] {
        &self.header.metadata
    }

    /// The value of metadata key `key`.
    pub fn get(&self, key: &str) -> Option<&Value> {
        let i = *self.header.key_index.get(key)?;
        self.header.metadata.get(i).map(|(_, v)| v)
    }

    fn typed<'s, T>(
        &'s self,
        key: &str,
        expected: &'static str,
        convert: impl FnOnce(&'s Value) -> Option<T>,
    ) -> Result<Option<T>, GgufError> {
        let Some(value) = self.get(key) else {
            return Ok(None);
        };
        match convert(value) {
            Some(v) => Ok(Some(v)),
            None => Err(GgufError::WrongType {
                key: key.to_string(),
                expected,
                found: value.type_name(),
            }),
        }
    }

    fn int<T: TryFrom<i128>>(
        &self,
        key: &str,
        expected: &'static str,
    ) -> Result<Option<T>, GgufError> {
        let Some(n) = self.typed(key, expected, Value::as_i128)? else {
            return Ok(None);
        };
        T::try_from(n).map(Some).map_err(|_| GgufError::OutOfRange {
            key: key.to_string(),
            expected,
            value: n.to_string(),
        })
    }

    /// An integer value (of any integer type) that fits in `u32`.
    pub fn get_u32(&self, key: &str) -> Result<Option<u32>, GgufError> {
        self.int(key, "u32")
    }

    /// An integer value (of any integer type) that fits in `u64`.
    pub fn get_u64(&self, key: &str) -> Result<Option<u64>, GgufError> {
        self.int(key, "u64")
    }

    /// An integer value (of any integer type) that fits in `i64`.
    pub fn get_i64(&self, key: &str) -> Result<Option<i64>, GgufError> {
        self.int(key, "i64")
    }

    /// An `f32` value (an `f64` is rounded to `f32`).
    pub fn get_f32(&self, key: &str) -> Result<Option<f32>, GgufError> {
        self.typed(key, "f32", Value::as_f32)
    }

    /// A string value.
    pub fn get_str(&self, key: &str) -> Result<Option<&str>, GgufError> {
        self.typed(key, "string", Value::as_str)
    }

    /// A bool value.
    pub fn get_bool(&self, key: &str) -> Result<Option<bool>, GgufError> {
        self.typed(key, "bool", Value::as_bool)
    }

    /// An array value's elements.
    pub fn get_array(&self, key: &str) -> Result<Option<&[Value]>, GgufError> {
        self.typed(key, "array", Value::as_array)
    }

    /// Like [`get_u32`](Self::get_u32), but a missing key is an error.
    pub fn require_u32(&self, key: &str) -> Result<u32, GgufError> {
        self.get_u32(key)?.ok_or_else(|| missing(key))
    }

    /// Like [`get_u64`](Self::get_u64), but a missing key is an error.
    pub fn require_u64(&self, key: &str) -> Result<u64, GgufError> {
        self.get_u64(key)?.ok_or_else(|| missing(key))
    }

    /// Like [`get_f32`](Self::get_f32), but a missing key is an error.
    pub fn require_f32(&self, key: &str) -> Result<f32, GgufError> {
        self.get_f32(key)?.ok_or_else(|| missing(key))
    }

    /// Like [`get_str`](Self::get_str), but a missing key is an error.
    pub fn require_str(&self, key: &str) -> Result<&str, GgufError> {
        self.get_str(key)?.ok_or_else(|| missing(key))
    }

    /// Like [`get_bool`](Self::get_bool), but a missing key is an error.
    pub fn require_bool(&self, key: &str) -> Result<bool, GgufError> {
        self.get_bool(key)?.ok_or_else(|| missing(key))
    }

    /// Like [`get_array`](Self::get_array), but a missing key is an error.
    pub fn require_array(&self, key: &str) -> Result<&[Value], GgufError> {
        self.get_array(key)?.ok_or_else(|| missing(key))
    }

    /// All tensor infos, in file order.
    pub fn tensors(&self) -> &[TensorInfo] {
        &self.header.tensors
    }

    /// The tensor named `name`.
    pub fn tensor(&self, name: &str) -> Option<&TensorInfo> {
        let i = *self.header.tensor_index.get(name)?;
        self.header.tensors.get(i)
    }

    /// The bytes of a tensor of this file, borrowed from the mapping.
    ///
    /// Returns an empty slice for a `TensorInfo` whose range is not inside this file
    /// (which cannot happen for infos obtained from this file).
    pub fn tensor_data(&self, info: &TensorInfo) -> &[u8] {
        let range = (|| {
            let start = usize::try_from(info.offset)
                .ok()?
                .checked_add(self.header.data_offset)?;
            let end = start.checked_add(usize::try_from(info.size).ok()?)?;
            self.bytes().get(start..end)
        })();
        range.unwrap_or_default()
    }

    /// The whole file.
    pub fn bytes(&self) -> &[u8] {
        self.storage.bytes()
    }

    /// Locks the file's pages in RAM (`mlock`) so they are never paged out;
    /// the lock ends when the file is dropped. Only a memory-mapped file can
    /// be locked: a file read into memory gives `ErrorKind::Unsupported`, as
    /// does a platform without `mlock`.
    pub fn lock_in_ram(&self) -> std::io::Result<()> {
        match &self.storage {
            #[cfg(unix)]
            Storage::Mapped(map) => map.lock(),
            #[cfg(not(unix))]
            Storage::Mapped(_) => Err(std::io::Error::new(
                std::io::ErrorKind::Unsupported,
                "locking memory is not supported on this platform",
            )),
            Storage::Owned(_) => Err(std::io::Error::new(
                std::io::ErrorKind::Unsupported,
                "only a memory-mapped file can be locked in RAM (load with use_mmap)",
            )),
        }
    }

    /// Absolute offset of the data section (the padded end of the header; the
    /// unpadded end when the file has no tensors, as in ggml).
    pub fn data_offset(&self) -> usize {
        self.header.data_offset
    }
}

fn missing(key: &str) -> GgufError {
    GgufError::MissingKey(key.to_string())
}

impl fmt::Debug for GgufFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GgufFile")
            .field("version", &self.version())
            .field("alignment", &self.alignment())
            .field("len", &self.bytes().len())
            .field("data_offset", &self.data_offset())
            .field("n_kv", &self.metadata().len())
            .field("n_tensors", &self.tensors().len())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gguf::GgufWriter;

    fn sample() -> GgufFile {
        let mut w = GgufWriter::new();
        w.add_kv("u8", 7u8).unwrap();
        w.add_kv("neg", -3i32).unwrap();
        w.add_kv("big", u64::MAX).unwrap();
        w.add_kv("f", 0.5f64).unwrap();
        w.add_kv("s", "text").unwrap();
        w.add_kv("b", false).unwrap();
        w.add_kv("arr", vec![1u32, 2]).unwrap();
        GgufFile::from_bytes(w.to_bytes().unwrap()).unwrap()
    }

    #[test]
    fn typed_getters() {
        let f = sample();
        assert_eq!(f.get_u32("u8").unwrap(), Some(7));
        assert_eq!(f.get_u64("u8").unwrap(), Some(7));
        assert_eq!(f.get_i64("neg").unwrap(), Some(-3));
        assert_eq!(f.get_u64("big").unwrap(), Some(u64::MAX));
        assert_eq!(f.get_f32("f").unwrap(), Some(0.5));
        assert_eq!(f.get_str("s").unwrap(), Some("text"));
        assert_eq!(f.get_bool("b").unwrap(), Some(false));
        assert_eq!(f.require_array("arr").unwrap().len(), 2);
        assert_eq!(f.get_u32("absent").unwrap(), None);
        assert!(matches!(f.require_u32("absent"), Err(GgufError::MissingKey(k)) if k == "absent"));
        assert!(matches!(
            f.get_u32("neg"),
            Err(GgufError::OutOfRange { .. })
        ));
        assert!(matches!(
            f.get_u32("big"),
            Err(GgufError::OutOfRange { .. })
        ));
        assert!(matches!(
            f.get_u32("s"),
            Err(GgufError::WrongType {
                expected: "u32",
                found: "string",
                ..
            })
        ));
        assert!(matches!(f.get_str("u8"), Err(GgufError::WrongType { .. })));
        assert!(matches!(
            f.require_bool("f"),
            Err(GgufError::WrongType { .. })
        ));
        assert!(matches!(
            f.require_f32("s"),
            Err(GgufError::WrongType { .. })
        ));
        assert_eq!(f.require_u64("big").unwrap(), u64::MAX);
        assert_eq!(f.require_str("s").unwrap(), "text");
        assert!(format!("{f:?}").contains("n_kv: 7"));
    }

    #[test]
    fn foreign_tensor_info_gives_empty_slice() {
        let f = sample();
        let info = TensorInfo {
            name: "x".into(),
            shape: vec![4],
            ty: GgmlType::F32,
            offset: u64::MAX - 1,
            size: 16,
        };
        assert!(f.tensor_data(&info).is_empty());
        assert!(f.tensor("x").is_none());
    }

    #[test]
    fn align_up_works() {
        assert_eq!(align_up(0, 32), Some(0));
        assert_eq!(align_up(1, 32), Some(32));
        assert_eq!(align_up(64, 32), Some(64));
        assert_eq!(align_up(u64::MAX, 32), None);
    }

    #[test]
    fn open_maps_files() {
        let dir = std::env::temp_dir().join(format!("rd-gguf-open-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("t.gguf");
        let mut w = GgufWriter::new();
        w.add_kv("k", "v").unwrap();
        w.add_tensor("t", GgmlType::I8, &[5], vec![1, 2, 3, 4, 5])
            .unwrap();
        w.write_to_file(&path).unwrap();
        let f = GgufFile::open(&path).unwrap();
        let t = f.tensor("t").unwrap();
        assert_eq!(f.tensor_data(t), &[1, 2, 3, 4, 5]);
        std::fs::write(&path, b"").unwrap();
        assert!(matches!(
            GgufFile::open(&path),
            Err(GgufError::Truncated { .. })
        ));
        assert!(matches!(
            GgufFile::open(dir.join("missing")),
            Err(GgufError::Io(_))
        ));
        std::fs::remove_dir_all(&dir).ok();
    }
}
