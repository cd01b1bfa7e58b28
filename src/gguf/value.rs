//! Metadata values: the GGUF value types and their in-memory form.

use super::GgufError;

/// Deepest array nesting accepted: an array of arrays is allowed, an array of
/// arrays of arrays is not.
pub const MAX_ARRAY_DEPTH: usize = 2;

/// A GGUF metadata value type, with its id as written in files.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum ValueType {
    /// `u8`.
    U8 = 0,
    /// `i8`.
    I8 = 1,
    /// `u16`.
    U16 = 2,
    /// `i16`.
    I16 = 3,
    /// `u32`.
    U32 = 4,
    /// `i32`.
    I32 = 5,
    /// `f32`.
    F32 = 6,
    /// `bool`, one byte.
    Bool = 7,
    /// UTF-8 string with a `u64` length prefix.
    String = 8,
    /// Array: element type, `u64` count, then the elements.
    Array = 9,
    /// `u64`.
    U64 = 10,
    /// `i64`.
    I64 = 11,
    /// `f64`.
    F64 = 12,
}

impl ValueType {
    /// The type with id `id`, or `None` if the id is unknown.
    pub fn from_u32(id: u32) -> Option<Self> {
        use ValueType::*;
        Some(match id {
            0 => U8,
            1 => I8,
            2 => U16,
            3 => I16,
            4 => U32,
            5 => I32,
            6 => F32,
            7 => Bool,
            8 => String,
            9 => Array,
            10 => U64,
            11 => I64,
            12 => F64,
            _ => return None,
        })
    }

    /// The id written in files.
    pub fn as_u32(self) -> u32 {
        self as u32
    }

    /// Lower-case name: `u8`, `f32`, `string`, `array`, ...
    pub fn name(self) -> &'static str {
        use ValueType::*;
        match self {
            U8 => "u8",
            I8 => "i8",
            U16 => "u16",
            I16 => "i16",
            U32 => "u32",
            I32 => "i32",
            F32 => "f32",
            Bool => "bool",
            String => "string",
            Array => "array",
            U64 => "u64",
            I64 => "i64",
            F64 => "f64",
        }
    }

    /// Fewest bytes one value of this type can take in a file (without its type id).
    pub fn min_encoded_size(self) -> u64 {
        use ValueType::*;
        match self {
            U8 | I8 | Bool => 1,
            U16 | I16 => 2,
            U32 | I32 | F32 => 4,
            U64 | I64 | F64 | String => 8,
            Array => 12,
        }
    }
}

/// A metadata value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// `u8`.
    U8(u8),
    /// `i8`.
    I8(i8),
    /// `u16`.
    U16(u16),
    /// `i16`.
    I16(i16),
    /// `u32`.
    U32(u32),
    /// `i32`.
    I32(i32),
    /// `f32`.
    F32(f32),
    /// `u64`.
    U64(u64),
    /// `i64`.
    I64(i64),
    /// `f64`.
    F64(f64),
    /// `bool`.
    Bool(bool),
    /// UTF-8 string.
    String(String),
    /// Array of elements that all have the given type (kept so that empty arrays
    /// round-trip). Arrays read from files always satisfy this; the writer checks it.
    Array(ValueType, Vec<Value>),
}

impl Value {
    /// The value's GGUF type.
    pub fn value_type(&self) -> ValueType {
        match self {
            Value::U8(_) => ValueType::U8,
            Value::I8(_) => ValueType::I8,
            Value::U16(_) => ValueType::U16,
            Value::I16(_) => ValueType::I16,
            Value::U32(_) => ValueType::U32,
            Value::I32(_) => ValueType::I32,
            Value::F32(_) => ValueType::F32,
            Value::U64(_) => ValueType::U64,
            Value::I64(_) => ValueType::I64,
            Value::F64(_) => ValueType::F64,
            Value::Bool(_) => ValueType::Bool,
            Value::String(_) => ValueType::String,
            Value::Array(..) => ValueType::Array,
        }
    }

    /// Name of the value's type (`u32`, `string`, `array`, ...).
    pub fn type_name(&self) -> &'static str {
        self.value_type().name()
    }

    /// Type with array details, e.g. `u32` or `[49152 x string]`.
    pub fn type_description(&self) -> String {
        match self {
            Value::Array(elem, values) => format!("[{} x {}]", values.len(), elem.name()),
            other => other.type_name().to_string(),
        }
    }

    /// Builds an array, checking that every element has type `elem`.
    /// Returns `None` if one does not.
    pub fn array(elem: ValueType, values: Vec<Value>) -> Option<Value> {
        values
            .iter()
            .all(|v| v.value_type() == elem)
            .then_some(Value::Array(elem, values))
    }

    /// Any integer value, widened.
    pub fn as_i128(&self) -> Option<i128> {
        Some(match *self {
            Value::U8(v) => v.into(),
            Value::I8(v) => v.into(),
            Value::U16(v) => v.into(),
            Value::I16(v) => v.into(),
            Value::U32(v) => v.into(),
            Value::I32(v) => v.into(),
            Value::U64(v) => v.into(),
            Value::I64(v) => v.into(),
            _ => return None,
        })
    }

    /// Any unsigned integer, or signed integer that is not negative.
    pub fn as_u64(&self) -> Option<u64> {
        self.as_i128().and_then(|v| u64::try_from(v).ok())
    }

    /// An `f32`, or an `f64` rounded to `f32`.
    pub fn as_f32(&self) -> Option<f32> {
        match *self {
            Value::F32(v) => Some(v),
            Value::F64(v) => Some(v as f32),
            _ => None,
        }
    }

    /// A string's contents.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(s) => Some(s),
            _ => None,
        }
    }

    /// A bool.
    pub fn as_bool(&self) -> Option<bool> {
        match *self {
            Value::Bool(b) => Some(b),
            _ => None,
        }
    }

    /// An array's elements.
    pub fn as_array(&self) -> Option<&[Value]> {
        match self {
            Value::Array(_, values) => Some(values),
            _ => None,
        }
    }

    /// An array's element type.
    pub fn array_type(&self) -> Option<ValueType> {
        match self {
            Value::Array(elem, _) => Some(*elem),
            _ => None,
        }
    }

    /// Checks array element types and nesting depth, naming `key` on failure.
    pub(crate) fn validate(&self, key: &str, depth: usize) -> Result<(), GgufError> {
        let Value::Array(elem, values) = self else {
            return Ok(());
        };
        if depth >= MAX_ARRAY_DEPTH {
            return Err(GgufError::NestingTooDeep {
                key: key.to_string(),
                max: MAX_ARRAY_DEPTH,
            });
        }
        for (i, v) in values.iter().enumerate() {
            if v.value_type() != *elem {
                return Err(GgufError::BadArray {
                    key: key.to_string(),
                    reason: format!(
                        "element {i} is {}, array declares {}",
                        v.type_name(),
                        elem.name()
                    ),
                });
            }
            v.validate(key, depth + 1)?;
        }
        Ok(())
    }

    /// Short human-readable rendering: strings quoted, escaped and cut after
    /// `max_chars` characters; arrays show their first `max_items` elements.
    pub fn summary(&self, max_items: usize, max_chars: usize) -> String {
        match self {
            Value::U8(v) => v.to_string(),
            Value::I8(v) => v.to_string(),
            Value::U16(v) => v.to_string(),
            Value::I16(v) => v.to_string(),
            Value::U32(v) => v.to_string(),
            Value::I32(v) => v.to_string(),
            Value::F32(v) => v.to_string(),
            Value::U64(v) => v.to_string(),
            Value::I64(v) => v.to_string(),
            Value::F64(v) => v.to_string(),
            Value::Bool(v) => v.to_string(),
            Value::String(s) => summarize_str(s, max_chars),
            Value::Array(_, values) => {
                let mut parts: Vec<String> = values
                    .iter()
                    .take(max_items)
                    .map(|v| match v {
                        Value::Array(..) => format!("[{}]", v.summary(max_items, max_chars)),
                        _ => v.summary(max_items, max_chars),
                    })
                    .collect();
                if values.len() > max_items {
                    parts.push("...".to_string());
                }
                parts.join(", ")
            }
        }
    }
}

fn summarize_str(s: &str, max_chars: usize) -> String {
    match s.char_indices().nth(max_chars) {
        None => format!("{s:?}"),
        Some((cut, _)) => format!("{:?}... ({} bytes)", &s[..cut], s.len()),
    }
}

/// Scalar types that can be collected into a [`Value::Array`] with `Value::from(vec)`.
pub trait ArrayElement: Into<Value> {
    /// The GGUF element type.
    const TYPE: ValueType;
}

macro_rules! scalar_conversions {
    ($($t:ty => $variant:ident),* $(,)?) => {$(
        impl From<$t> for Value {
            fn from(v: $t) -> Self {
                Value::$variant(v)
            }
        }
        impl ArrayElement for $t {
            const TYPE: ValueType = ValueType::$variant;
        }
    )*};
}

scalar_conversions! {
    u8 => U8, i8 => I8, u16 => U16, i16 => I16, u32 => U32, i32 => I32, f32 => F32,
    u64 => U64, i64 => I64, f64 => F64, bool => Bool, String => String,
}

impl From<&str> for Value {
    fn from(v: &str) -> Self {
        Value::String(v.to_string())
    }
}

impl ArrayElement for &str {
    const TYPE: ValueType = ValueType::String;
}

impl<T: ArrayElement> From<Vec<T>> for Value {
    fn from(values: Vec<T>) -> Self {
        Value::Array(T::TYPE, values.into_iter().map(Into::into).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accessors() {
        assert_eq!(Value::I32(5).as_u64(), Some(5));
        assert_eq!(Value::I32(-5).as_u64(), None);
        assert_eq!(Value::U64(u64::MAX).as_u64(), Some(u64::MAX));
        assert_eq!(Value::F32(1.5).as_u64(), None);
        assert_eq!(Value::F64(0.5).as_f32(), Some(0.5));
        assert_eq!(Value::from("x").as_str(), Some("x"));
        assert_eq!(Value::Bool(true).as_bool(), Some(true));
        let arr = Value::from(vec![1u32, 2, 3]);
        assert_eq!(arr.array_type(), Some(ValueType::U32));
        assert_eq!(arr.as_array().map(<[Value]>::len), Some(3));
        assert_eq!(arr.type_description(), "[3 x u32]");
        assert_eq!(Value::from(vec!["a"]).type_name(), "array");
    }

    #[test]
    fn type_ids_round_trip() {
        for id in 0..13 {
            let ty = ValueType::from_u32(id).map(ValueType::as_u32);
            assert_eq!(ty, Some(id));
        }
        assert_eq!(ValueType::from_u32(13), None);
    }

    #[test]
    fn validation() {
        assert!(Value::array(ValueType::U8, vec![Value::U8(1), Value::I8(1)]).is_none());
        let mixed = Value::Array(ValueType::U8, vec![Value::U8(1), Value::I8(1)]);
        assert!(matches!(
            mixed.validate("k", 0),
            Err(GgufError::BadArray { .. })
        ));
        let inner = Value::from(vec![1u8]);
        let nested = Value::Array(ValueType::Array, vec![inner.clone()]);
        assert!(nested.validate("k", 0).is_ok());
        let deep = Value::Array(ValueType::Array, vec![nested]);
        assert!(matches!(
            deep.validate("k", 0),
            Err(GgufError::NestingTooDeep { .. })
        ));
    }

    #[test]
    fn summaries() {
        let v = Value::from(vec!["<unk>", "<s>", "</s>", "a"]);
        assert_eq!(v.summary(2, 10), r#""<unk>", "<s>", ..."#);
        let long = Value::from("a\nbcdef");
        assert_eq!(long.summary(4, 3), r#""a\nb"... (7 bytes)"#);
        let nested = Value::Array(ValueType::Array, vec![Value::from(vec![1u8, 2])]);
        assert_eq!(nested.summary(4, 4), "[1, 2]");
    }
}
