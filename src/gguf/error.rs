//! Errors of GGUF reading and writing.

/// Everything that can go wrong reading or writing a GGUF file.
///
/// Offsets are absolute byte positions in the file. Variants name the metadata
/// key or tensor involved wherever there is one.
#[derive(Debug, thiserror::Error)]
pub enum GgufError {
    /// The file could not be opened, mapped, read or written.
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
    /// The file does not start with `GGUF`.
    #[error("not a GGUF file: magic is {0:02x?}, expected \"GGUF\"")]
    BadMagic([u8; 4]),
    /// The version is not 2 or 3 (v1 and big-endian files read as unsupported).
    #[error("unsupported GGUF version {0} (supported: 2, 3)")]
    UnsupportedVersion(u32),
    /// The file ends before `what` is complete.
    #[error("file truncated: {what} at offset {offset} runs past the end of the file")]
    Truncated {
        /// What was being read.
        what: String,
        /// Offset where it starts.
        offset: u64,
    },
    /// A count (of entries, tensors, array elements, dimensions) cannot fit in the file
    /// or exceeds a sanity limit.
    #[error("{what}: count {count} is too large")]
    CountTooLarge {
        /// What is being counted.
        what: String,
        /// The count found in the file.
        count: u64,
    },
    /// A string's declared length runs past the end of the file.
    #[error("string at offset {offset} declares length {len}, past the end of the file")]
    StringTooLong {
        /// Offset of the string's length prefix.
        offset: u64,
        /// The declared length.
        len: u64,
    },
    /// A key, string value or tensor name is not valid UTF-8.
    #[error("{what} is not valid UTF-8")]
    InvalidUtf8 {
        /// Which string.
        what: String,
    },
    /// A metadata value has a type id outside the GGUF specification.
    #[error("metadata key `{key}` has unknown value type {ty}")]
    UnknownValueType {
        /// The key.
        key: String,
        /// The type id found.
        ty: u32,
    },
    /// Arrays nest deeper than the reader allows.
    #[error("metadata key `{key}`: arrays nested more than {max} deep")]
    NestingTooDeep {
        /// The key.
        key: String,
        /// The maximum nesting depth.
        max: usize,
    },
    /// A tensor has a ggml type id this library does not know.
    #[error("tensor `{tensor}` has unknown ggml type {ty}")]
    UnknownTensorType {
        /// The tensor name.
        tensor: String,
        /// The type id found.
        ty: u32,
    },
    /// `general.alignment` is not a power of two of at least 8.
    #[error("bad alignment {0}: must be a power of two >= 8")]
    BadAlignment(u64),
    /// The same metadata key appears twice.
    #[error("duplicate metadata key `{0}`")]
    DuplicateKey(String),
    /// The same tensor name appears twice.
    #[error("duplicate tensor `{0}`")]
    DuplicateTensor(String),
    /// A tensor name is longer than ggml allows (63 bytes).
    #[error("tensor name `{tensor}` is {len} bytes long; ggml allows at most 63")]
    TensorNameTooLong {
        /// The tensor name.
        tensor: String,
        /// Its length in bytes.
        len: usize,
    },
    /// A tensor's dimensions are invalid.
    #[error("tensor `{tensor}` has a bad shape: {reason}")]
    BadShape {
        /// The tensor name.
        tensor: String,
        /// What is wrong.
        reason: String,
    },
    /// A tensor's data does not lie inside the data section.
    #[error(
        "tensor `{tensor}`: data at offset {offset} with size {size} exceeds the data section ({data_len} bytes)"
    )]
    TensorOutOfBounds {
        /// The tensor name.
        tensor: String,
        /// Offset relative to the data section.
        offset: u64,
        /// Size in bytes.
        size: u64,
        /// Length of the data section.
        data_len: u64,
    },
    /// Two tensors' data ranges overlap.
    #[error("tensors `{a}` and `{b}` overlap")]
    TensorOverlap {
        /// The tensor that starts first.
        a: String,
        /// The tensor that starts inside `a`.
        b: String,
    },
    /// A tensor's offset is not a multiple of the alignment.
    #[error("tensor `{tensor}`: offset {offset} is not a multiple of the alignment {alignment}")]
    BadTensorOffset {
        /// The tensor name.
        tensor: String,
        /// Offset relative to the data section.
        offset: u64,
        /// The file's alignment.
        alignment: u64,
    },
    /// The padded end of the header lies past the end of the file.
    #[error("data section starts at {data_offset}, past the end of the file ({file_len} bytes)")]
    DataPastEnd {
        /// Where the data section would start.
        data_offset: u64,
        /// The file length.
        file_len: u64,
    },
    /// A metadata value has a different type than requested.
    #[error("metadata key `{key}`: expected {expected}, found {found}")]
    WrongType {
        /// The key.
        key: String,
        /// The requested type.
        expected: &'static str,
        /// The type in the file.
        found: &'static str,
    },
    /// An integer metadata value does not fit the requested type.
    #[error("metadata key `{key}`: value {value} does not fit in {expected}")]
    OutOfRange {
        /// The key.
        key: String,
        /// The requested type.
        expected: &'static str,
        /// The value, printed.
        value: String,
    },
    /// A required metadata key is absent.
    #[error("missing metadata key `{0}`")]
    MissingKey(String),
    /// An array value mixes element types or declares the wrong element type (writer).
    #[error("metadata key `{key}`: bad array: {reason}")]
    BadArray {
        /// The key.
        key: String,
        /// What is wrong.
        reason: String,
    },
    /// Tensor data handed to the writer has the wrong length.
    #[error("tensor `{tensor}`: data is {got} bytes, expected {expected}")]
    TensorDataSize {
        /// The tensor name.
        tensor: String,
        /// Bytes implied by type and shape.
        expected: u64,
        /// Bytes given.
        got: u64,
    },
    /// The writer was asked for a tensor it does not know.
    #[error("unknown tensor `{0}`")]
    UnknownTensor(String),
    /// The writer was used out of order (e.g. data before the header, tensors out of order).
    #[error("writer used out of order: {0}")]
    WriterState(String),
}
