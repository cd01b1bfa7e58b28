//! The GGUF reader against malformed files: every corruption must come back as an
//! error (of the right kind where that is well defined), never a panic, an abort or
//! a huge allocation.

use std::time::{Duration, Instant};

use recurrent_depth::gguf::*;

/// A valid file with many value types and three tensors. The last tensor's size is
/// a multiple of the alignment, so the file ends exactly where its data ends and any
/// truncation cuts real data.
fn valid_file() -> Vec<u8> {
    let mut w = GgufWriter::new();
    w.add_kv("general.architecture", "huginn").unwrap();
    w.add_kv("general.alignment", 32u32).unwrap();
    w.add_kv("test.u8", 1u8).unwrap();
    w.add_kv("test.i8", -1i8).unwrap();
    w.add_kv("test.u16", 2u16).unwrap();
    w.add_kv("test.i16", -2i16).unwrap();
    w.add_kv("test.u32", 3u32).unwrap();
    w.add_kv("test.i32", -3i32).unwrap();
    w.add_kv("test.f32", 0.25f32).unwrap();
    w.add_kv("test.u64", 4u64).unwrap();
    w.add_kv("test.i64", -4i64).unwrap();
    w.add_kv("test.f64", 0.5f64).unwrap();
    w.add_kv("test.bool", true).unwrap();
    w.add_kv("test.tokens", vec!["<unk>", "<s>", "</s>", "hello"])
        .unwrap();
    w.add_kv("test.ids", vec![10u32, 20, 30]).unwrap();
    w.add_kv("test.empty", Value::Array(ValueType::F32, vec![]))
        .unwrap();
    let nested = Value::Array(
        ValueType::Array,
        vec![Value::from(vec![1i16, 2]), Value::from(vec!["x"])],
    );
    w.add_kv("test.nested", nested).unwrap();
    let data = |n: usize| (0..n).map(|i| i as u8).collect::<Vec<u8>>();
    w.add_tensor("tensor.alpha", GgmlType::F32, &[4, 3], data(48))
        .unwrap();
    w.add_tensor("tensor.beta", GgmlType::Q8_0, &[32, 2], data(68))
        .unwrap();
    w.add_tensor("tensor.gamma", GgmlType::F16, &[16], data(32))
        .unwrap();
    let bytes = w.to_bytes().unwrap();
    let file = GgufFile::from_bytes(bytes.clone()).expect("the base file is valid");
    assert_eq!(file.tensors().len(), 3);
    let last = &file.tensors()[2];
    assert_eq!(
        file.data_offset() as u64 + last.offset + last.size,
        bytes.len() as u64
    );
    bytes
}

fn parse(bytes: Vec<u8>) -> Result<GgufFile, GgufError> {
    GgufFile::from_bytes(bytes)
}

/// Position of the unique length-prefixed string `s` (pointing at its length).
fn find_str(bytes: &[u8], s: &str) -> usize {
    let mut needle = (s.len() as u64).to_le_bytes().to_vec();
    needle.extend_from_slice(s.as_bytes());
    let hits: Vec<usize> = (0..=bytes.len() - needle.len())
        .filter(|&i| bytes[i..].starts_with(&needle))
        .collect();
    assert_eq!(hits.len(), 1, "string {s:?} found {} times", hits.len());
    hits[0]
}

/// Offset of the value-type id of metadata key `key`.
fn kv_type_at(bytes: &[u8], key: &str) -> usize {
    find_str(bytes, key) + 8 + key.len()
}

/// Field offsets of one tensor info.
struct TensorAt {
    n_dims: usize,
    dims: usize,
    ty: usize,
    offset: usize,
}

fn tensor_at(bytes: &[u8], name: &str) -> TensorAt {
    let n_dims = find_str(bytes, name) + 8 + name.len();
    let count = u32::from_le_bytes(bytes[n_dims..n_dims + 4].try_into().unwrap()) as usize;
    let dims = n_dims + 4;
    let ty = dims + 8 * count;
    TensorAt {
        n_dims,
        dims,
        ty,
        offset: ty + 4,
    }
}

fn put_u32(bytes: &mut [u8], at: usize, v: u32) {
    bytes[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

fn put_u64(bytes: &mut [u8], at: usize, v: u64) {
    bytes[at..at + 8].copy_from_slice(&v.to_le_bytes());
}

fn get_u64(bytes: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(bytes[at..at + 8].try_into().unwrap())
}

/// Parses `bytes`, which must fail quickly.
fn fails_fast(bytes: Vec<u8>) -> GgufError {
    let start = Instant::now();
    let err = parse(bytes).expect_err("malformed file accepted");
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "took {:?}",
        start.elapsed()
    );
    err
}

#[test]
fn every_truncation_fails() {
    let base = valid_file();
    for len in 0..base.len() {
        match parse(base[..len].to_vec()) {
            Ok(_) => panic!("file truncated to {len} bytes was accepted"),
            Err(
                GgufError::Truncated { .. }
                | GgufError::StringTooLong { .. }
                | GgufError::CountTooLarge { .. }
                | GgufError::DataPastEnd { .. }
                | GgufError::TensorOutOfBounds { .. },
            ) => {}
            Err(other) => panic!("truncation to {len} bytes gave unexpected error {other}"),
        }
    }
    assert!(matches!(
        parse(Vec::new()),
        Err(GgufError::Truncated { offset: 0, .. })
    ));
}

#[test]
fn absurd_counts() {
    let base = valid_file();
    for count in [u64::MAX, 1 << 40, 1 << 20] {
        let mut b = base.clone();
        put_u64(&mut b, 8, count);
        let err = fails_fast(b);
        assert!(
            matches!(&err, GgufError::CountTooLarge { count: c, .. } if *c == count),
            "tensor count {count}: {err}"
        );
        let mut b = base.clone();
        put_u64(&mut b, 16, count);
        let err = fails_fast(b);
        assert!(
            matches!(&err, GgufError::CountTooLarge { count: c, .. } if *c == count),
            "kv count {count}: {err}"
        );
    }
    // One more tensor than there are: the parser runs into the tensor data.
    let mut b = base.clone();
    put_u64(&mut b, 8, 4);
    assert!(parse(b).is_err());
}

#[test]
fn absurd_string_lengths() {
    let base = valid_file();
    for s in [
        "general.architecture",
        "test.u8",
        "huginn",
        "hello",
        "tensor.beta",
    ] {
        for len in [1u64 << 62, u64::MAX, base.len() as u64] {
            let mut b = base.clone();
            let at = find_str(&b, s);
            put_u64(&mut b, at, len);
            let err = fails_fast(b);
            assert!(
                matches!(err, GgufError::StringTooLong { offset, len: l } if offset == at as u64 && l == len),
                "{s}: {err}"
            );
        }
    }
}

#[test]
fn absurd_array_counts() {
    let base = valid_file();
    for key in ["test.tokens", "test.ids", "test.empty", "test.nested"] {
        let count_at = kv_type_at(&base, key) + 4 + 4;
        for count in [u64::MAX, 1 << 62, 1 << 40, 1 << 24] {
            let mut b = base.clone();
            put_u64(&mut b, count_at, count);
            let err = fails_fast(b);
            assert!(
                matches!(&err, GgufError::CountTooLarge { what, count: c } if *c == count && what.contains(key)),
                "{key}: {err}"
            );
        }
    }
}

#[test]
fn offsets_past_the_end() {
    let base = valid_file();
    let data_len = {
        let f = parse(base.clone()).unwrap();
        (base.len() - f.data_offset()) as u64
    };
    for name in ["tensor.alpha", "tensor.beta", "tensor.gamma"] {
        let at = tensor_at(&base, name).offset;
        for offset in [data_len, data_len + 32, 1 << 40, u64::MAX - 31] {
            let mut b = base.clone();
            put_u64(&mut b, at, offset);
            let err = fails_fast(b);
            assert!(
                matches!(&err, GgufError::TensorOutOfBounds { tensor, .. } if tensor == name),
                "{name} at {offset}: {err}"
            );
        }
    }
}

#[test]
fn unknown_types() {
    let base = valid_file();
    for ty in [9999, 4, 31, u32::MAX] {
        let mut b = base.clone();
        put_u32(&mut b, tensor_at(&base, "tensor.beta").ty, ty);
        let err = fails_fast(b);
        assert!(
            matches!(&err, GgufError::UnknownTensorType { tensor, ty: t } if tensor == "tensor.beta" && *t == ty),
            "{err}"
        );
    }
    for ty in [13, 9999, u32::MAX] {
        let mut b = base.clone();
        put_u32(&mut b, kv_type_at(&base, "test.u16"), ty);
        let err = fails_fast(b);
        assert!(
            matches!(&err, GgufError::UnknownValueType { key, ty: t } if key == "test.u16" && *t == ty),
            "{err}"
        );
        // The element type of an array.
        let mut b = base.clone();
        put_u32(&mut b, kv_type_at(&base, "test.ids") + 4, ty);
        let err = fails_fast(b);
        assert!(
            matches!(&err, GgufError::UnknownValueType { key, .. } if key == "test.ids"),
            "{err}"
        );
    }
}

#[test]
fn overlapping_tensors() {
    let base = valid_file();
    let f = parse(base.clone()).unwrap();
    let alpha = f.tensor("tensor.alpha").unwrap().offset;
    let beta = f.tensor("tensor.beta").unwrap().offset;
    for (name, offset) in [
        ("tensor.beta", alpha),
        ("tensor.gamma", beta),
        ("tensor.gamma", beta + 64),
    ] {
        let mut b = base.clone();
        put_u64(&mut b, tensor_at(&base, name).offset, offset);
        let err = fails_fast(b);
        assert!(
            matches!(err, GgufError::TensorOverlap { .. }),
            "{name} at {offset}: {err}"
        );
    }
}

#[test]
fn misaligned_offsets() {
    let base = valid_file();
    for delta in [1u64, 4, 8, 16] {
        let mut b = base.clone();
        let at = tensor_at(&base, "tensor.gamma").offset;
        put_u64(&mut b, at, get_u64(&base, at) + delta);
        let err = fails_fast(b);
        assert!(
            matches!(&err, GgufError::BadTensorOffset { tensor, alignment: 32, .. } if tensor == "tensor.gamma"),
            "{err}"
        );
    }
    // With alignment 64 the writer's 32-aligned offsets become misaligned.
    let mut b = base.clone();
    put_u32(&mut b, kv_type_at(&base, "general.alignment") + 4, 64);
    assert!(matches!(fails_fast(b), GgufError::BadTensorOffset { .. }));
}

#[test]
fn bad_alignment() {
    let base = valid_file();
    let at = kv_type_at(&base, "general.alignment") + 4;
    for a in [0u32, 1, 4, 24, 48, 33] {
        let mut b = base.clone();
        put_u32(&mut b, at, a);
        let err = fails_fast(b);
        assert!(
            matches!(err, GgufError::BadAlignment(x) if x == u64::from(a)),
            "{a}: {err}"
        );
    }
    // Declared as i32 (same size) instead of u32.
    let mut b = base.clone();
    put_u32(&mut b, at - 4, ValueType::I32.as_u32());
    assert!(matches!(
        fails_fast(b),
        GgufError::WrongType {
            expected: "u32",
            found: "i32",
            ..
        }
    ));
}

#[test]
fn bad_magic_and_versions() {
    let base = valid_file();
    let mut b = base.clone();
    b[0..4].copy_from_slice(b"GGML");
    assert!(matches!(fails_fast(b), GgufError::BadMagic(m) if &m == b"GGML"));
    for v in [0u32, 1, 4, 99, 0x0300_0000] {
        let mut b = base.clone();
        put_u32(&mut b, 4, v);
        assert!(
            matches!(fails_fast(b), GgufError::UnsupportedVersion(x) if x == v),
            "{v}"
        );
    }
    // Version 2 has the same layout and is accepted.
    let mut b = base.clone();
    put_u32(&mut b, 4, 2);
    assert_eq!(parse(b).unwrap().version(), 2);
}

#[test]
fn bad_shapes() {
    let base = valid_file();
    let alpha = tensor_at(&base, "tensor.alpha");
    let cases: [(u64, u64); 5] = [
        (1 << 32, 1 << 32),
        (u64::MAX, 1),
        (1 << 62, 4),
        (0, 3),
        (4, 0),
    ];
    for (d0, d1) in cases {
        let mut b = base.clone();
        put_u64(&mut b, alpha.dims, d0);
        put_u64(&mut b, alpha.dims + 8, d1);
        let err = fails_fast(b);
        assert!(
            matches!(&err, GgufError::BadShape { tensor, .. } if tensor == "tensor.alpha"),
            "[{d0}, {d1}]: {err}"
        );
    }
    // Element count fits i64 but the byte size does not fit u64.
    let mut b = base.clone();
    put_u64(&mut b, alpha.dims, 1 << 31);
    put_u64(&mut b, alpha.dims + 8, 1 << 31);
    assert!(matches!(
        fails_fast(b),
        GgufError::BadShape { .. } | GgufError::TensorOutOfBounds { .. }
    ));
    for n_dims in [0u32, 5, u32::MAX] {
        let mut b = base.clone();
        put_u32(&mut b, alpha.n_dims, n_dims);
        assert!(
            matches!(fails_fast(b), GgufError::BadShape { .. }),
            "{n_dims} dims"
        );
    }
    // ne0 not a multiple of the Q8_0 block size.
    let mut b = base.clone();
    put_u64(&mut b, tensor_at(&base, "tensor.beta").dims, 16);
    assert!(matches!(fails_fast(b), GgufError::BadShape { .. }));
}

#[test]
fn duplicates_and_bad_utf8() {
    let base = valid_file();
    // `test.i8` -> `test.u8`: same length, so the layout is unchanged.
    let mut b = base.clone();
    let at = find_str(&base, "test.i8") + 8;
    b[at..at + 7].copy_from_slice(b"test.u8");
    assert!(matches!(fails_fast(b), GgufError::DuplicateKey(k) if k == "test.u8"));

    let mut b = base.clone();
    let at = find_str(&base, "tensor.gamma") + 8;
    b[at..at + 12].copy_from_slice(b"tensor.alpha");
    assert!(matches!(fails_fast(b), GgufError::DuplicateTensor(t) if t == "tensor.alpha"));

    for (s, expect) in [
        ("test.u16", "metadata entry"),
        ("huginn", "general.architecture"),
        ("tensor.beta", "tensor 1"),
    ] {
        let mut b = base.clone();
        let at = find_str(&base, s) + 8;
        b[at] = 0xff;
        let err = fails_fast(b);
        assert!(
            matches!(&err, GgufError::InvalidUtf8 { what } if what.contains(expect)),
            "{s}: {err}"
        );
    }
}

/// Builds raw header bytes for cases the writer refuses to produce.
fn raw_header(n_tensors: u64, kvs: &[(&str, &[u8])]) -> Vec<u8> {
    let mut b = b"GGUF".to_vec();
    b.extend_from_slice(&3u32.to_le_bytes());
    b.extend_from_slice(&n_tensors.to_le_bytes());
    b.extend_from_slice(&(kvs.len() as u64).to_le_bytes());
    for (key, typed_value) in kvs {
        b.extend_from_slice(&(key.len() as u64).to_le_bytes());
        b.extend_from_slice(key.as_bytes());
        b.extend_from_slice(typed_value);
    }
    b
}

#[test]
fn nesting_is_bounded() {
    // array of array of array of u8: one level deeper than allowed.
    let mut v = 9u32.to_le_bytes().to_vec(); // the value's type
    for _ in 0..2 {
        v.extend_from_slice(&9u32.to_le_bytes()); // element type
        v.extend_from_slice(&1u64.to_le_bytes()); // count
    }
    v.extend_from_slice(&0u32.to_le_bytes());
    v.extend_from_slice(&1u64.to_le_bytes());
    v.push(7);
    let err = fails_fast(raw_header(0, &[("deep", &v)]));
    assert!(
        matches!(&err, GgufError::NestingTooDeep { key, .. } if key == "deep"),
        "{err}"
    );

    // Two levels are fine.
    let mut v = Vec::new();
    v.extend_from_slice(&9u32.to_le_bytes());
    v.extend_from_slice(&9u32.to_le_bytes());
    v.extend_from_slice(&1u64.to_le_bytes());
    v.extend_from_slice(&0u32.to_le_bytes());
    v.extend_from_slice(&2u64.to_le_bytes());
    v.extend_from_slice(&[5, 6]);
    let f = parse(raw_header(0, &[("ok", &v)])).unwrap();
    let inner = Value::Array(ValueType::U8, vec![Value::U8(5), Value::U8(6)]);
    assert_eq!(
        f.get("ok"),
        Some(&Value::Array(ValueType::Array, vec![inner]))
    );

    // Deep nesting of empty arrays is bounded as well, without recursion blow-up.
    let mut v = 9u32.to_le_bytes().to_vec();
    for _ in 0..100_000 {
        v.extend_from_slice(&9u32.to_le_bytes());
        v.extend_from_slice(&1u64.to_le_bytes());
    }
    assert!(matches!(
        fails_fast(raw_header(0, &[("k", &v)])),
        GgufError::NestingTooDeep { .. }
    ));
}

#[test]
fn header_only_files() {
    // No tensors: the file may end right after the metadata.
    let f = parse(raw_header(0, &[])).unwrap();
    assert_eq!(f.data_offset(), 24);
    assert!(f.metadata().is_empty() && f.tensors().is_empty());
    // A huge array of the smallest element type is bounded by the file size.
    let mut v = 9u32.to_le_bytes().to_vec();
    v.extend_from_slice(&0u32.to_le_bytes());
    v.extend_from_slice(&100u64.to_le_bytes());
    v.extend_from_slice(&[0; 99]);
    assert!(matches!(
        fails_fast(raw_header(0, &[("k", &v)])),
        GgufError::CountTooLarge { .. }
    ));
}

/// SplitMix64, so that failures reproduce.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Uses everything a parsed file offers; must not panic.
fn exercise(f: &GgufFile) {
    for t in f.tensors() {
        assert_eq!(f.tensor_data(t).len() as u64, t.size);
        assert_eq!(f.tensor(&t.name), Some(t));
    }
    for (k, _) in f.metadata() {
        let _ = (
            f.get_u32(k),
            f.get_str(k),
            f.get_f32(k),
            f.get_bool(k),
            f.get_array(k),
        );
    }
    let _ = describe(f);
}

#[test]
fn random_header_corruption_never_panics() {
    let base = valid_file();
    let header_len = parse(base.clone()).unwrap().data_offset();
    let mut rng = Rng(0x5eed);
    let (mut accepted, mut rejected) = (0, 0);
    for _ in 0..5000 {
        let mut b = base.clone();
        for _ in 0..1 + rng.below(4) {
            let at = rng.below(header_len);
            b[at] ^= 1 + rng.below(255) as u8;
        }
        // Sometimes cut the file as well.
        if rng.below(8) == 0 {
            let len = rng.below(b.len());
            b.truncate(len);
        }
        match parse(b) {
            Ok(f) => {
                exercise(&f);
                accepted += 1;
            }
            Err(e) => {
                assert!(!e.to_string().is_empty());
                rejected += 1;
            }
        }
    }
    assert!(rejected > 1000, "accepted {accepted}, rejected {rejected}");
}

#[test]
fn random_field_values_never_panic() {
    // Overwrite whole u32/u64 fields with interesting values at random header positions.
    let base = valid_file();
    let header_len = parse(base.clone()).unwrap().data_offset();
    let interesting = [
        0u64,
        1,
        2,
        7,
        8,
        31,
        32,
        255,
        1 << 31,
        1 << 32,
        1 << 62,
        u64::MAX,
        u64::MAX - 31,
    ];
    let mut rng = Rng(42);
    for _ in 0..3000 {
        let mut b = base.clone();
        let v = interesting[rng.below(interesting.len())];
        let at = rng.below(header_len - 8);
        if rng.below(2) == 0 {
            put_u64(&mut b, at, v);
        } else {
            put_u32(&mut b, at, v as u32);
        }
        if let Ok(f) = parse(b) {
            exercise(&f);
        }
    }
}

/// Longer run of the two corruption tests with other seeds:
/// `cargo test --test gguf_malformed -- --ignored`.
#[test]
#[ignore = "slow; run explicitly"]
fn long_random_corruption() {
    let base = valid_file();
    let mut rng = Rng(0xdead_beef);
    for _ in 0..300_000 {
        let mut b = base.clone();
        for _ in 0..1 + rng.below(8) {
            let at = rng.below(b.len());
            b[at] ^= 1 + rng.below(255) as u8;
        }
        if rng.below(4) == 0 {
            let at = rng.below(b.len() - 8);
            put_u64(&mut b, at, rng.next() >> rng.below(64));
        }
        if let Ok(f) = parse(b) {
            exercise(&f);
        }
    }
}
