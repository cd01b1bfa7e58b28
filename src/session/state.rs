//! Saving and restoring a session's state: what an app needs to continue a
//! conversation after its process was killed.
//!
//! The state is a byte string, little-endian, in this layout (version 1):
//!
//! | field | type |
//! |---|---|
//! | magic `RDST` | 4 bytes |
//! | format version (1) | u32 |
//! | model fingerprint | u64 |
//! | n_embd, n_vocab, kv_dim, n_prelude, n_core, n_coda | 6 x u32 |
//! | KV budget B, KV type (0 = F32, 1 = F16) | 2 x u32 |
//! | n_past, iterations of the last committed batch, logits valid (0/1) | 3 x u32 |
//! | initial-state generator | u64 |
//! | KV rows `0..n_past` of every layer instance (prelude, core slots, coda): K then V | bytes |
//! | logits of the last position | n_vocab x f32 |
//! | FNV-1a 64 checksum of everything before it | u64 |
//!
//! The fingerprint is an FNV-1a 64 hash of the GGUF header (metadata and
//! tensor table) and of the first 64 bytes of every tensor's data: the same
//! file gives the same fingerprint wherever it is loaded from.
//!
//! Everything is checked (size, magic, version, checksum, fingerprint, shapes,
//! budget, KV type, room in the context) before the session changes, so a
//! refused state leaves the session as it was. Not saved: the compute limits
//! and sampler of a generation (they are arguments of each call), the thread
//! count and the context length (a session with at least `n_past` positions
//! of context accepts the state).

use super::{KvType, Session};
use crate::error::{Error, Result};
use crate::ggml::Tensor;
use crate::rng::SplitMix64;
use std::path::Path;

const MAGIC: &[u8; 4] = b"RDST";
const VERSION: u32 = 1;
/// Bytes before the KV rows.
const HEADER_LEN: usize = 4 + 4 + 8 + 6 * 4 + 2 * 4 + 3 * 4 + 8;
const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

fn fnv1a(mut h: u64, bytes: &[u8]) -> u64 {
    for &b in bytes {
        h ^= b as u64;
        h = h.wrapping_mul(FNV_PRIME);
    }
    h
}

fn bad(msg: impl std::fmt::Display) -> Error {
    Error::InvalidArgument(format!("session state: {msg}"))
}

/// The fixed-size fields of a state, as written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Header {
    fingerprint: u64,
    shape: [u32; 6],
    kv_budget: u32,
    kv_type: u32,
    n_past: u32,
    last_iterations: u32,
    logits_valid: u32,
    rng: u64,
}

impl Header {
    fn write(&self, out: &mut Writer) {
        out.put(MAGIC);
        out.put(&VERSION.to_le_bytes());
        out.put(&self.fingerprint.to_le_bytes());
        for v in self.shape {
            out.put(&v.to_le_bytes());
        }
        for v in [
            self.kv_budget,
            self.kv_type,
            self.n_past,
            self.last_iterations,
            self.logits_valid,
        ] {
            out.put(&v.to_le_bytes());
        }
        out.put(&self.rng.to_le_bytes());
    }

    fn read(data: &[u8]) -> Result<Header> {
        if data.len() < HEADER_LEN + 8 {
            return Err(bad(format!(
                "{} bytes is too short for a state",
                data.len()
            )));
        }
        if &data[..4] != MAGIC {
            return Err(bad("not a recurrent-depth session state (bad magic)"));
        }
        let u32_at =
            |o: usize| u32::from_le_bytes([data[o], data[o + 1], data[o + 2], data[o + 3]]);
        let u64_at = |o: usize| u64::from_le_bytes(std::array::from_fn(|i| data[o + i]));
        let version = u32_at(4);
        if version != VERSION {
            return Err(bad(format!(
                "format version {version}; this library reads version {VERSION}"
            )));
        }
        let mut shape = [0u32; 6];
        for (i, v) in shape.iter_mut().enumerate() {
            *v = u32_at(16 + 4 * i);
        }
        Ok(Header {
            fingerprint: u64_at(8),
            shape,
            kv_budget: u32_at(40),
            kv_type: u32_at(44),
            n_past: u32_at(48),
            last_iterations: u32_at(52),
            logits_valid: u32_at(56),
            rng: u64_at(60),
        })
    }
}

/// Writes into a caller's buffer (sized beforehand: never grows).
struct Writer<'a> {
    buf: &'a mut [u8],
    pos: usize,
}

impl Writer<'_> {
    fn put(&mut self, bytes: &[u8]) {
        self.buf[self.pos..self.pos + bytes.len()].copy_from_slice(bytes);
        self.pos += bytes.len();
    }

    /// The next `n` bytes, to be filled by the caller.
    fn take(&mut self, n: usize) -> &mut [u8] {
        let s = &mut self.buf[self.pos..self.pos + n];
        self.pos += n;
        s
    }
}

/// The byte ranges of a layer's K and V holding positions `0..n_past`:
/// K is `[kv_dim, n_ctx]` (one row per position, the first rows are one
/// range); V is the same with fused attention (`v_by_position`), else
/// `[n_ctx, kv_dim]` (positions contiguous within each of the `kv_dim` rows).
fn kv_ranges(
    k: Tensor,
    v: Tensor,
    kv_dim: usize,
    n_past: usize,
    v_by_position: bool,
) -> impl Iterator<Item = (Tensor, usize, usize)> {
    let k_len = n_past * k.nb()[1];
    let (v_el, v_row) = (v.nb()[0], v.nb()[1]);
    let v_ranges = if v_by_position { 1 } else { kv_dim };
    let v_len = if v_by_position {
        n_past * v_row
    } else {
        n_past * v_el
    };
    std::iter::once((k, 0, k_len))
        .chain((0..v_ranges).map(move |j| (v, j * v_row, v_len)))
        .filter(|&(_, _, len)| len > 0)
}

/// Appends `src`, a `rows x cols` row-major matrix of `el`-byte elements, to
/// `out` transposed (`cols x rows`).
fn transpose_into(out: &mut Vec<u8>, src: &[u8], rows: usize, cols: usize, el: usize) {
    for c in 0..cols {
        for r in 0..rows {
            let at = (r * cols + c) * el;
            out.extend_from_slice(&src[at..at + el]);
        }
    }
}

/// `kv_type` of the header: the element type (0 F32, 1 F16), plus this bit
/// when V is stored by position (fused attention).
const KV_V_BY_POSITION: u32 = 0x100;

fn kv_type_name(t: u32) -> String {
    let el = if t & 0xff == 0 { "F32" } else { "F16" };
    if t & KV_V_BY_POSITION != 0 {
        format!("{el} (fused-attention layout)")
    } else {
        format!("{el} (separate-attention layout)")
    }
}

impl Session {
    /// A hash identifying the model file (see the module docs).
    fn model_fingerprint(&self) -> u64 {
        let file = self.model.gguf();
        let mut h = fnv1a(
            FNV_OFFSET,
            &file.bytes()[..file.data_offset().min(file.bytes().len())],
        );
        for t in file.tensors() {
            let d = file.tensor_data(t);
            h = fnv1a(h, &d[..d.len().min(64)]);
        }
        h
    }

    fn state_header(&self) -> Header {
        let cfg = self.model.config();
        let u = |v: usize| v as u32;
        Header {
            fingerprint: self.model_fingerprint(),
            shape: [
                u(cfg.n_embd),
                u(cfg.n_vocab),
                u(cfg.kv_dim()),
                u(cfg.n_prelude),
                u(cfg.n_core),
                u(cfg.n_coda),
            ],
            kv_budget: u(self.params.kv_budget),
            kv_type: match self.params.kv_type {
                KvType::F32 => 0,
                KvType::F16 => 1,
            } | if self.flash { KV_V_BY_POSITION } else { 0 },
            n_past: u(self.n_past),
            last_iterations: u(self.last_iterations),
            logits_valid: self.logits_valid as u32,
            rng: self.rng.state(),
        }
    }

    /// Every KV layer instance, in the order the state stores them.
    fn kv_layers(&self) -> impl Iterator<Item = &crate::model::graph::KvLayer> {
        self.prelude_kv
            .iter()
            .chain(&self.core_kv)
            .chain(&self.coda_kv)
    }

    /// Bytes of a state with `n_past` cached positions.
    fn state_len(&self, n_past: usize) -> usize {
        let cfg = self.model.config();
        let el = match self.params.kv_type {
            KvType::F32 => 4,
            KvType::F16 => 2,
        };
        let layers = self.kv_layers().count();
        HEADER_LEN + layers * 2 * n_past * cfg.kv_dim() * el + cfg.n_vocab * 4 + 8
    }

    /// Bytes [`Session::save_state`] writes now (it grows with the cached
    /// positions).
    pub fn state_size(&self) -> usize {
        self.state_len(self.n_past)
    }

    /// Writes the session's state (cached positions, last logits, the
    /// initial-state generator; see the module docs) to the start of `out`,
    /// which must hold at least [`Session::state_size`] bytes, and returns the
    /// number of bytes written. Allocates nothing.
    pub fn save_state(&self, out: &mut [u8]) -> Result<usize> {
        let len = self.state_size();
        if out.len() < len {
            return Err(Error::InvalidArgument(format!(
                "session state needs {len} bytes, the buffer has {}",
                out.len()
            )));
        }
        let mut w = Writer {
            buf: &mut out[..len],
            pos: 0,
        };
        self.state_header().write(&mut w);
        let kv_dim = self.model.config().kv_dim();
        for layer in self.kv_layers() {
            for (t, offset, n) in kv_ranges(layer.k, layer.v, kv_dim, self.n_past, self.flash) {
                t.read_bytes(offset, w.take(n))?;
            }
        }
        for &x in &self.logits {
            w.put(&x.to_le_bytes());
        }
        let sum = fnv1a(FNV_OFFSET, &w.buf[..w.pos]);
        w.put(&sum.to_le_bytes());
        debug_assert_eq!(w.pos, len);
        Ok(len)
    }

    /// Restores a state written by [`Session::save_state`] for the same model
    /// file, KV budget and KV type, into a session whose context holds its
    /// positions. Everything is checked first: on error the session is
    /// unchanged. Afterwards the session continues exactly where the saved
    /// one was (the same tokens follow from the same calls).
    pub fn load_state(&mut self, data: &[u8]) -> Result<()> {
        let h = Header::read(data)?;
        let n_past = h.n_past as usize;
        if n_past > self.n_ctx {
            return Err(bad(format!(
                "it holds {n_past} positions, this session's context is {}",
                self.n_ctx
            )));
        }
        let want = self.state_header();
        if h.shape != want.shape {
            return Err(bad(format!(
                "made for a model of shape {:?} (n_embd, n_vocab, kv_dim, prelude, core, coda), \
                 this session's is {:?}",
                h.shape, want.shape
            )));
        }
        if h.kv_budget != want.kv_budget {
            return Err(bad(format!(
                "made with KV budget {}, this session's is {}",
                h.kv_budget, want.kv_budget
            )));
        }
        // A state of the other attention layout differs only in the order of
        // V's elements: it is transposed on the way in.
        let v_transposed = h.kv_type ^ want.kv_type == KV_V_BY_POSITION;
        if h.kv_type != want.kv_type && !v_transposed {
            return Err(bad(format!(
                "made with a {} KV cache, this session's is {}",
                kv_type_name(h.kv_type),
                kv_type_name(want.kv_type)
            )));
        }
        let len = self.state_len(n_past);
        if data.len() != len {
            return Err(bad(format!(
                "{} bytes, a state of {n_past} positions has {len}",
                data.len()
            )));
        }
        let (body, sum) = data.split_at(len - 8);
        let sum = u64::from_le_bytes(std::array::from_fn(|i| sum[i]));
        if fnv1a(FNV_OFFSET, body) != sum {
            return Err(bad("checksum mismatch (the data is corrupt)"));
        }
        if h.fingerprint != want.fingerprint {
            return Err(bad("made with another model file"));
        }
        if h.logits_valid > 1 || (h.logits_valid == 1 && n_past == 0) {
            return Err(bad("inconsistent logits flag"));
        }
        // Checked: now write.
        let kv_dim = self.model.config().kv_dim();
        let mut pos = HEADER_LEN;
        let mut conv = Vec::new();
        for layer in self.kv_layers() {
            let ranges = || kv_ranges(layer.k, layer.v, kv_dim, n_past, self.flash);
            // K's range comes first; V's element order is the layout's.
            let k_len = ranges().next().map_or(0, |(_, _, n)| n);
            let layer_len: usize = ranges().map(|(_, _, n)| n).sum();
            let mut src = &body[pos..pos + layer_len];
            if v_transposed {
                // V as saved: by dimension for separate attention, by position
                // for fused; rewritten in this session's order.
                let (rows, cols) = if self.flash {
                    (kv_dim, n_past)
                } else {
                    (n_past, kv_dim)
                };
                conv.clear();
                conv.try_reserve_exact(src.len())
                    .map_err(|_| Error::OutOfMemory("a state layer to transpose".into()))?;
                conv.extend_from_slice(&src[..k_len]);
                transpose_into(&mut conv, &src[k_len..], rows, cols, layer.v.nb()[0]);
                src = &conv;
            }
            let mut at = 0;
            for (t, offset, n) in ranges() {
                t.write_bytes(offset, &src[at..at + n])?;
                at += n;
            }
            pos += layer_len;
        }
        for (x, b) in self.logits.iter_mut().zip(body[pos..].chunks_exact(4)) {
            *x = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
        }
        self.n_past = n_past;
        self.n_cur = 0;
        self.last_iterations = h.last_iterations as usize;
        self.logits_valid = h.logits_valid == 1;
        self.rng = SplitMix64::new(h.rng);
        Ok(())
    }

    /// [`Session::save_state`] into a new file at `path` (replaced if it
    /// exists).
    pub fn save_state_file(&self, path: impl AsRef<Path>) -> Result<()> {
        let mut buf = Vec::new();
        buf.try_reserve_exact(self.state_size())
            .map_err(|_| Error::OutOfMemory("session state".into()))?;
        buf.resize(self.state_size(), 0);
        self.save_state(&mut buf)?;
        std::fs::write(path, &buf)?;
        Ok(())
    }

    /// [`Session::load_state`] from a file written by
    /// [`Session::save_state_file`] (a regular file; read up to the largest
    /// state this session could hold).
    pub fn load_state_file(&mut self, path: impl AsRef<Path>) -> Result<()> {
        use std::io::Read;
        let path = path.as_ref();
        let (file, size) = crate::gguf::open_regular_file(path)?;
        let max = self.state_len(self.n_ctx) as u64;
        if size > max {
            return Err(bad(format!(
                "{}: {size} bytes, more than a state of this session can have ({max})",
                path.display()
            )));
        }
        let mut buf = Vec::new();
        buf.try_reserve_exact(size as usize)
            .map_err(|_| Error::OutOfMemory("session state".into()))?;
        file.take(size).read_to_end(&mut buf)?;
        self.load_state(&buf)
    }
}
