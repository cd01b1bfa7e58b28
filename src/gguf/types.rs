//! ggml tensor element types as stored in GGUF tensor infos.

use std::fmt;

use super::GgufError;

/// Most dimensions a tensor may have.
pub const MAX_DIMS: usize = 4;
/// Longest tensor name ggml accepts, in bytes (`GGML_MAX_NAME` - 1).
pub const MAX_TENSOR_NAME_LEN: usize = 63;

/// A ggml tensor type, with its numeric id as written in GGUF files.
///
/// Block sizes and bytes per block match `ggml/src/ggml-common.h` of the
/// ggml version linked through `ggml-sys` (checked by a unit test).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[allow(non_camel_case_types)]
#[repr(u32)]
pub enum GgmlType {
    /// 32-bit float.
    F32 = 0,
    /// IEEE half float.
    F16 = 1,
    /// 4-bit, blocks of 32 with an f16 scale.
    Q4_0 = 2,
    /// 4-bit, blocks of 32 with f16 scale and min.
    Q4_1 = 3,
    /// 5-bit, blocks of 32 with an f16 scale.
    Q5_0 = 6,
    /// 5-bit, blocks of 32 with f16 scale and min.
    Q5_1 = 7,
    /// 8-bit, blocks of 32 with an f16 scale.
    Q8_0 = 8,
    /// 8-bit, blocks of 32 with f16 scale and sum.
    Q8_1 = 9,
    /// 2-bit k-quant, super-blocks of 256.
    Q2_K = 10,
    /// 3-bit k-quant, super-blocks of 256.
    Q3_K = 11,
    /// 4-bit k-quant, super-blocks of 256.
    Q4_K = 12,
    /// 5-bit k-quant, super-blocks of 256.
    Q5_K = 13,
    /// 6-bit k-quant, super-blocks of 256.
    Q6_K = 14,
    /// 8-bit k-quant (intermediate type), super-blocks of 256.
    Q8_K = 15,
    /// i-quant, 2.06 bits per weight.
    IQ2_XXS = 16,
    /// i-quant, 2.31 bits per weight.
    IQ2_XS = 17,
    /// i-quant, 3.06 bits per weight.
    IQ3_XXS = 18,
    /// i-quant, 1.56 bits per weight.
    IQ1_S = 19,
    /// Non-linear 4-bit, blocks of 32.
    IQ4_NL = 20,
    /// i-quant, 3.44 bits per weight.
    IQ3_S = 21,
    /// i-quant, 2.5 bits per weight.
    IQ2_S = 22,
    /// Non-linear 4-bit, super-blocks of 256.
    IQ4_XS = 23,
    /// 8-bit signed integer.
    I8 = 24,
    /// 16-bit signed integer.
    I16 = 25,
    /// 32-bit signed integer.
    I32 = 26,
    /// 64-bit signed integer.
    I64 = 27,
    /// 64-bit float.
    F64 = 28,
    /// i-quant, 1.75 bits per weight.
    IQ1_M = 29,
    /// bfloat16.
    BF16 = 30,
    /// Ternary, 1.69 bits per weight.
    TQ1_0 = 34,
    /// Ternary, 2.06 bits per weight.
    TQ2_0 = 35,
    /// Microscaling FP4, blocks of 32.
    MXFP4 = 39,
    /// NVIDIA FP4, blocks of 64 with four E4M3 scales.
    NVFP4 = 40,
    /// 1-bit, blocks of 128.
    Q1_0 = 41,
    /// 2-bit, blocks of 64.
    Q2_0 = 42,
}

/// Every variant, in id order.
const ALL: [GgmlType; 35] = {
    use GgmlType::*;
    [
        F32, F16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q8_1, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, Q8_K, IQ2_XXS,
        IQ2_XS, IQ3_XXS, IQ1_S, IQ4_NL, IQ3_S, IQ2_S, IQ4_XS, I8, I16, I32, I64, F64, IQ1_M, BF16,
        TQ1_0, TQ2_0, MXFP4, NVFP4, Q1_0, Q2_0,
    ]
};

impl GgmlType {
    /// Every known type, in id order.
    pub fn all() -> impl Iterator<Item = GgmlType> {
        ALL.iter().copied()
    }

    /// `(name, elements per block, bytes per block)`.
    fn info(self) -> (&'static str, usize, usize) {
        use GgmlType::*;
        match self {
            F32 => ("F32", 1, 4),
            F16 => ("F16", 1, 2),
            Q4_0 => ("Q4_0", 32, 18),
            Q4_1 => ("Q4_1", 32, 20),
            Q5_0 => ("Q5_0", 32, 22),
            Q5_1 => ("Q5_1", 32, 24),
            Q8_0 => ("Q8_0", 32, 34),
            Q8_1 => ("Q8_1", 32, 36),
            Q2_K => ("Q2_K", 256, 84),
            Q3_K => ("Q3_K", 256, 110),
            Q4_K => ("Q4_K", 256, 144),
            Q5_K => ("Q5_K", 256, 176),
            Q6_K => ("Q6_K", 256, 210),
            Q8_K => ("Q8_K", 256, 292),
            IQ2_XXS => ("IQ2_XXS", 256, 66),
            IQ2_XS => ("IQ2_XS", 256, 74),
            IQ3_XXS => ("IQ3_XXS", 256, 98),
            IQ1_S => ("IQ1_S", 256, 50),
            IQ4_NL => ("IQ4_NL", 32, 18),
            IQ3_S => ("IQ3_S", 256, 110),
            IQ2_S => ("IQ2_S", 256, 82),
            IQ4_XS => ("IQ4_XS", 256, 136),
            I8 => ("I8", 1, 1),
            I16 => ("I16", 1, 2),
            I32 => ("I32", 1, 4),
            I64 => ("I64", 1, 8),
            F64 => ("F64", 1, 8),
            IQ1_M => ("IQ1_M", 256, 56),
            BF16 => ("BF16", 1, 2),
            TQ1_0 => ("TQ1_0", 256, 54),
            TQ2_0 => ("TQ2_0", 256, 66),
            MXFP4 => ("MXFP4", 32, 17),
            NVFP4 => ("NVFP4", 64, 36),
            Q1_0 => ("Q1_0", 128, 18),
            Q2_0 => ("Q2_0", 64, 18),
        }
    }

    /// The type with ggml id `id`, or `None` for unknown and removed ids.
    pub fn from_u32(id: u32) -> Option<Self> {
        ALL.iter().copied().find(|ty| ty.as_u32() == id)
    }

    /// The ggml numeric id.
    pub fn as_u32(self) -> u32 {
        self as u32
    }

    /// Upper-case name, as used by llama.cpp tools and the `gguf` Python package (e.g. `Q4_K`).
    pub fn name(self) -> &'static str {
        self.info().0
    }

    /// Looks a type up by name, ignoring ASCII case (`q4_k`, `Q4_K`, `bf16`).
    pub fn from_name(name: &str) -> Option<Self> {
        ALL.iter()
            .copied()
            .find(|ty| ty.name().eq_ignore_ascii_case(name))
    }

    /// Elements per block (1 for plain types).
    pub fn block_size(self) -> usize {
        self.info().1
    }

    /// Bytes per block.
    pub fn type_size(self) -> usize {
        self.info().2
    }

    /// Bytes taken by `n` consecutive elements; `None` if `n` is not a multiple of
    /// [`block_size`](Self::block_size) or the size overflows `u64`.
    pub fn row_size(self, n: u64) -> Option<u64> {
        let block = self.block_size() as u64;
        if !n.is_multiple_of(block) {
            return None;
        }
        (n / block).checked_mul(self.type_size() as u64)
    }

    /// Whether the type packs elements into blocks with shared scales.
    pub fn is_quantized(self) -> bool {
        self.block_size() > 1
    }
}

impl fmt::Display for GgmlType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.name())
    }
}

/// Where and how one tensor is stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorInfo {
    /// Tensor name, e.g. `blk.0.attn_qkv.weight`.
    pub name: String,
    /// Dimensions in ggml order (`ne0`, the contiguous one, first); 1 to 4 entries.
    pub shape: Vec<u64>,
    /// Element type.
    pub ty: GgmlType,
    /// Start of the data, relative to the data section.
    pub offset: u64,
    /// Size of the data in bytes.
    pub size: u64,
}

impl TensorInfo {
    /// Number of elements (product of the dimensions; saturates instead of overflowing).
    pub fn n_elements(&self) -> u64 {
        self.shape
            .iter()
            .fold(1u64, |acc, &d| acc.saturating_mul(d))
    }
}

/// Validates a tensor's name and shape for type `ty` and returns its size in bytes.
///
/// Requires a name of at most [`MAX_TENSOR_NAME_LEN`] bytes, 1..=[`MAX_DIMS`]
/// dimensions, each at least 1, an element count that fits in `i64`, and `ne0` a
/// multiple of the type's block size.
pub fn tensor_nbytes(name: &str, ty: GgmlType, shape: &[u64]) -> Result<u64, GgufError> {
    if name.len() > MAX_TENSOR_NAME_LEN {
        return Err(GgufError::TensorNameTooLong {
            tensor: name.to_string(),
            len: name.len(),
        });
    }
    let bad = |reason: String| GgufError::BadShape {
        tensor: name.to_string(),
        reason,
    };
    let ne0 = match shape.first() {
        Some(&ne0) if shape.len() <= MAX_DIMS => ne0,
        _ => {
            return Err(bad(format!(
                "{} dimensions (must be 1 to {MAX_DIMS})",
                shape.len()
            )));
        }
    };
    let mut elements: u64 = 1;
    for (i, &d) in shape.iter().enumerate() {
        if d == 0 {
            return Err(bad(format!("dimension {i} is 0")));
        }
        elements = elements
            .checked_mul(d)
            .filter(|&n| n <= i64::MAX as u64)
            .ok_or_else(|| bad(format!("element count of {shape:?} overflows")))?;
    }
    let block = ty.block_size() as u64;
    if !ne0.is_multiple_of(block) {
        return Err(bad(format!(
            "ne0 = {ne0} is not a multiple of the {ty} block size {block}"
        )));
    }
    let rows = elements / ne0;
    ty.row_size(ne0)
        .and_then(|row| row.checked_mul(rows))
        .ok_or_else(|| bad(format!("byte size of {shape:?} overflows")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_and_are_unique() {
        for ty in GgmlType::all() {
            assert_eq!(GgmlType::from_u32(ty.as_u32()), Some(ty));
            assert_eq!(GgmlType::from_name(ty.name()), Some(ty));
            assert_eq!(GgmlType::from_name(&ty.name().to_lowercase()), Some(ty));
        }
        assert_eq!(ALL.len(), 35);
        assert!(ALL.windows(2).all(|w| w[0].as_u32() < w[1].as_u32()));
        for id in [4, 5, 31, 32, 33, 36, 37, 38, 43, 9999, u32::MAX] {
            assert_eq!(GgmlType::from_u32(id), None, "id {id}");
        }
        assert_eq!(GgmlType::from_name("Q4_2"), None);
        assert_eq!(GgmlType::Q4_K.to_string(), "Q4_K");
    }

    #[test]
    fn row_sizes() {
        assert_eq!(GgmlType::F32.row_size(10), Some(40));
        assert_eq!(GgmlType::Q4_K.row_size(512), Some(288));
        assert_eq!(GgmlType::Q4_K.row_size(100), None);
        assert_eq!(GgmlType::Q8_0.row_size(64), Some(68));
        assert_eq!(GgmlType::F64.row_size(u64::MAX), None);
        assert!(GgmlType::Q4_1.is_quantized());
        assert!(!GgmlType::BF16.is_quantized());
    }

    #[test]
    fn shapes() {
        let size = |ty, shape: &[u64]| tensor_nbytes("t", ty, shape);
        assert_eq!(size(GgmlType::F32, &[3, 2]).ok(), Some(24));
        assert_eq!(size(GgmlType::Q4_1, &[64, 3, 2]).ok(), Some(240));
        for bad in [
            &[][..],
            &[1, 1, 1, 1, 1],
            &[4, 0],
            &[u64::MAX],
            &[1 << 32, 1 << 32],
        ] {
            let err = size(GgmlType::F32, bad);
            assert!(matches!(err, Err(GgufError::BadShape { .. })), "{bad:?}");
        }
        assert!(size(GgmlType::Q4_K, &[255]).is_err());
        let long = "x".repeat(64);
        let err = tensor_nbytes(&long, GgmlType::F32, &[1]);
        assert!(matches!(
            err,
            Err(GgufError::TensorNameTooLong { len: 64, .. })
        ));
        assert!(tensor_nbytes(&long[1..], GgmlType::F32, &[1]).is_ok());
        assert!(size(GgmlType::F64, &[1 << 61, 2]).is_err());
        let info = TensorInfo {
            name: "t".into(),
            shape: vec![2, 3, 4],
            ty: GgmlType::F32,
            offset: 0,
            size: 96,
        };
        assert_eq!(info.n_elements(), 24);
    }

    #[test]
    #[allow(unsafe_code)] // calls into ggml (see the SAFETY comment)
    fn matches_linked_ggml() {
        for ty in GgmlType::all() {
            // SAFETY: both functions only index ggml's static type-traits table, and
            // every id we pass is a valid, non-removed `ggml_type` below GGML_TYPE_COUNT.
            let (blck, size) = unsafe {
                (
                    ggml_sys::ggml_blck_size(ty.as_u32()),
                    ggml_sys::ggml_type_size(ty.as_u32()),
                )
            };
            assert_eq!(blck, ty.block_size() as i64, "block size of {ty}");
            assert_eq!(size, ty.type_size(), "type size of {ty}");
        }
    }
}
