//! The tensors of a safetensors checkpoint, single-file or sharded, read piece
//! by piece with positioned reads (never the whole file, never a memory map of
//! the data, so memory stays bounded by the caller's buffers).

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Component, Path, PathBuf};

use safetensors::{Dtype, SafeTensors};
use serde_json::Value as Json;

use super::ConvertError;

/// File name of a single-file checkpoint.
pub const SINGLE_FILE: &str = "model.safetensors";
/// File name of a sharded checkpoint's index.
pub const INDEX_FILE: &str = "model.safetensors.index.json";

/// One tensor of the checkpoint.
#[derive(Clone, Debug)]
pub struct SourceTensor {
    /// Element type.
    pub dtype: Dtype,
    /// Shape in PyTorch order (slowest dimension first).
    pub shape: Vec<usize>,
    /// Index of its shard in [`Checkpoint::shards`].
    pub shard: usize,
    /// Absolute byte offset of its data in the shard file.
    pub offset: u64,
    /// Bytes of data.
    pub len: u64,
}

impl SourceTensor {
    /// Number of elements.
    pub fn n_elements(&self) -> usize {
        self.shape.iter().product()
    }

    /// Bytes per element for the float types the converter reads, else `None`.
    pub fn float_size(&self) -> Option<usize> {
        match self.dtype {
            Dtype::BF16 | Dtype::F16 => Some(2),
            Dtype::F32 => Some(4),
            Dtype::F64 => Some(8),
            _ => None,
        }
    }
}

/// The tensors of a checkpoint directory and open handles on its shards.
pub struct Checkpoint {
    shards: Vec<(PathBuf, File)>,
    tensors: BTreeMap<String, SourceTensor>,
}

impl Checkpoint {
    /// Opens `dir/model.safetensors.index.json` and its shards if the index
    /// exists, else `dir/model.safetensors`.
    pub fn open(dir: &Path) -> Result<Checkpoint, ConvertError> {
        let index = dir.join(INDEX_FILE);
        if index.is_file() {
            return Self::open_sharded(dir, &index);
        }
        let single = dir.join(SINGLE_FILE);
        if !single.is_file() {
            return Err(ConvertError::MissingFile {
                path: single,
                what: "weights: model.safetensors or model.safetensors.index.json",
            });
        }
        let mut ck = Checkpoint {
            shards: Vec::new(),
            tensors: BTreeMap::new(),
        };
        ck.add_shard(single)?;
        Ok(ck)
    }

    fn open_sharded(dir: &Path, index: &Path) -> Result<Checkpoint, ConvertError> {
        let bad = |reason: String| ConvertError::BadIndex {
            path: index.to_path_buf(),
            reason,
        };
        let text = std::fs::read_to_string(index).map_err(|e| ConvertError::io(index, e))?;
        let json: Json =
            serde_json::from_str(&text).map_err(|e| bad(format!("invalid JSON: {e}")))?;
        let map = json
            .get("weight_map")
            .and_then(Json::as_object)
            .ok_or_else(|| bad("no `weight_map` object".into()))?;
        // Shard names in first-seen order, and where the index puts each tensor.
        let mut files: Vec<String> = Vec::new();
        let mut placed: BTreeMap<&str, usize> = BTreeMap::new();
        for (name, file) in map {
            let file = file
                .as_str()
                .ok_or_else(|| bad(format!("`{name}` maps to {file}, not a file name")))?;
            if !is_plain_file_name(file) {
                return Err(bad(format!(
                    "shard name {file:?} is not a file name inside the checkpoint directory"
                )));
            }
            let i = match files.iter().position(|f| f == file) {
                Some(i) => i,
                None => {
                    files.push(file.to_string());
                    files.len() - 1
                }
            };
            placed.insert(name, i);
        }
        let mut ck = Checkpoint {
            shards: Vec::new(),
            tensors: BTreeMap::new(),
        };
        for file in &files {
            let path = dir.join(file);
            if !path.is_file() {
                return Err(ConvertError::MissingFile {
                    path,
                    what: "a shard named in model.safetensors.index.json",
                });
            }
            ck.add_shard(path)?;
        }
        for (name, t) in &ck.tensors {
            match placed.get(name.as_str()) {
                Some(&i) if i == t.shard => {}
                Some(&i) => {
                    return Err(bad(format!(
                        "`{name}` is listed in {} but stored in {}",
                        files[i], files[t.shard]
                    )));
                }
                None => {
                    return Err(bad(format!(
                        "`{name}` is stored in {} but not listed",
                        files[t.shard]
                    )));
                }
            }
        }
        if let Some(name) = placed.keys().find(|n| !ck.tensors.contains_key(**n)) {
            let file = &files[placed[name]];
            return Err(bad(format!(
                "`{name}` is listed in {file} but that shard lacks it"
            )));
        }
        Ok(ck)
    }

    /// Reads the header of one shard and records its tensors.
    // Memory-maps the shard's header (see the SAFETY comment).
    #[allow(unsafe_code)]
    fn add_shard(&mut self, path: PathBuf) -> Result<(), ConvertError> {
        let file = File::open(&path).map_err(|e| ConvertError::io(&path, e))?;
        let (n, metadata) = {
            // SAFETY: the map is read-only and lives only for this block; like
            // every memory-mapped reader it assumes no other process truncates
            // the file meanwhile. Only the header pages are touched: tensor data
            // is read below with positioned reads.
            let map =
                unsafe { memmap2::Mmap::map(&file) }.map_err(|e| ConvertError::io(&path, e))?;
            SafeTensors::read_metadata(&map).map_err(|e| ConvertError::BadSafetensors {
                path: path.clone(),
                reason: e.to_string(),
            })?
        };
        let data_start = 8u64 + n as u64;
        let shard = self.shards.len();
        for (name, info) in metadata.tensors() {
            let (start, end) = info.data_offsets;
            let t = SourceTensor {
                dtype: info.dtype,
                shape: info.shape.clone(),
                shard,
                offset: data_start + start as u64,
                len: (end - start) as u64,
            };
            if self.tensors.insert(name.clone(), t).is_some() {
                return Err(ConvertError::DuplicateTensor(name));
            }
        }
        self.shards.push((path, file));
        Ok(())
    }

    /// Every tensor, by name.
    pub fn tensors(&self) -> &BTreeMap<String, SourceTensor> {
        &self.tensors
    }

    /// Reads `buf.len()` bytes of `t`'s data starting `at` bytes into it.
    pub fn read(&mut self, t: &SourceTensor, at: u64, buf: &mut [u8]) -> Result<(), ConvertError> {
        let (path, file) = &mut self.shards[t.shard];
        debug_assert!(at + buf.len() as u64 <= t.len);
        file.seek(SeekFrom::Start(t.offset + at))
            .and_then(|_| file.read_exact(buf))
            .map_err(|e| ConvertError::io(path.as_path(), e))
    }
}

/// Whether `name` is a single normal path component (no directories, no `..`).
fn is_plain_file_name(name: &str) -> bool {
    let mut parts = Path::new(name).components();
    matches!(
        (parts.next(), parts.next()),
        (Some(Component::Normal(_)), None)
    )
}

/// Converts `src` (little-endian elements of `dtype`) to f32 into `dst`,
/// which must hold exactly the number of elements in `src`.
pub fn to_f32(dtype: Dtype, src: &[u8], dst: &mut [f32]) {
    match dtype {
        Dtype::BF16 => {
            for (d, s) in dst.iter_mut().zip(src.chunks_exact(2)) {
                *d = half::bf16::from_le_bytes([s[0], s[1]]).to_f32();
            }
        }
        Dtype::F16 => {
            for (d, s) in dst.iter_mut().zip(src.chunks_exact(2)) {
                *d = half::f16::from_le_bytes([s[0], s[1]]).to_f32();
            }
        }
        Dtype::F32 => {
            for (d, s) in dst.iter_mut().zip(src.chunks_exact(4)) {
                *d = f32::from_le_bytes([s[0], s[1], s[2], s[3]]);
            }
        }
        Dtype::F64 => {
            for (d, s) in dst.iter_mut().zip(src.chunks_exact(8)) {
                let mut b = [0u8; 8];
                b.copy_from_slice(s);
                *d = f64::from_le_bytes(b) as f32;
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_file_names() {
        assert!(is_plain_file_name("model-00001-of-00002.safetensors"));
        for bad in ["../x", "/etc/passwd", "a/b", "", ".", ".."] {
            assert!(!is_plain_file_name(bad), "{bad}");
        }
    }

    #[test]
    fn float_conversion() {
        let mut out = [0f32; 2];
        let bf: Vec<u8> = [1.5f32, -2.0]
            .iter()
            .flat_map(|&v| half::bf16::from_f32(v).to_le_bytes())
            .collect();
        to_f32(Dtype::BF16, &bf, &mut out);
        assert_eq!(out, [1.5, -2.0]);
        let f: Vec<u8> = [0.25f64, 3.0]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        to_f32(Dtype::F64, &f, &mut out);
        assert_eq!(out, [0.25, 3.0]);
    }
}
