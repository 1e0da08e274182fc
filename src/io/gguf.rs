//! GGUF files (versions 2 and 3): metadata, tensor directory and tensor data, read from a
//! memory map. Everything read is validated (magic, version, counts, string lengths, array
//! types, tensor dims, types, offsets and alignment, data inside the file); a violation is
//! an error that names the byte offset.

use crate::ggml_types::{dequantize, GgmlType};
use crate::{Error, Result, Tensor};
use std::path::{Path, PathBuf};

/// A metadata value.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    U64(u64),
    I64(i64),
    F32(f32),
    F64(f64),
    Bool(bool),
    String(String),
    Array(Vec<Value>),
}

impl Value {
    /// The value as an unsigned integer, if it is a non-negative integer.
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            Value::U8(v) => Some(v as u64),
            Value::U16(v) => Some(v as u64),
            Value::U32(v) => Some(v as u64),
            Value::U64(v) => Some(v),
            Value::I8(v) => u64::try_from(v).ok(),
            Value::I16(v) => u64::try_from(v).ok(),
            Value::I32(v) => u64::try_from(v).ok(),
            Value::I64(v) => u64::try_from(v).ok(),
            _ => None,
        }
    }

    /// The value as a float, if it is a number.
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            Value::F32(v) => Some(v as f64),
            Value::F64(v) => Some(v),
            _ => self.as_u64().map(|v| v as f64),
        }
    }

    /// The value as a string, if it is one.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(s) => Some(s),
            _ => None,
        }
    }

    /// A short rendering for listings (long arrays are summarised).
    pub fn summary(&self) -> String {
        match self {
            Value::String(s) if s.len() > 80 => {
                format!("{:?}… ({} bytes)", &s[..s.floor_char_boundary(77)], s.len())
            }
            Value::String(s) => format!("{s:?}"),
            Value::Array(v) if v.len() > 8 => {
                let head: Vec<String> = v.iter().take(4).map(|x| x.summary()).collect();
                format!("[{}, … ({} items)]", head.join(", "), v.len())
            }
            Value::Array(v) => {
                let all: Vec<String> = v.iter().map(|x| x.summary()).collect();
                format!("[{}]", all.join(", "))
            }
            other => format!("{other:?}")
                .split_once('(')
                .map(|(_, r)| r.trim_end_matches(')').to_string())
                .unwrap_or_default(),
        }
    }
}

/// One tensor's entry in the directory.
#[derive(Clone, Debug)]
pub struct TensorInfo {
    pub name: String,
    /// Shape in smith's (row-major) order: GGUF's `ne` reversed.
    pub shape: Vec<usize>,
    pub ty: GgmlType,
    /// Byte offset of the data in the file.
    pub offset: usize,
    /// Byte length of the data.
    pub len: usize,
}

impl TensorInfo {
    /// Number of elements.
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
}

/// An open GGUF file.
pub struct GgufFile {
    pub path: PathBuf,
    pub version: u32,
    /// Metadata in file order.
    pub metadata: Vec<(String, Value)>,
    pub tensors: Vec<TensorInfo>,
    map: memmap2::Mmap,
}

/// A bounds-checked little-endian cursor over the file.
struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
    path: &'a Path,
}

impl<'a> Reader<'a> {
    fn fail(&self, at: usize, msg: impl std::fmt::Display) -> Error {
        Error::Checkpoint {
            path: self.path.to_path_buf(),
            msg: format!("at byte {at}: {msg}"),
        }
    }

    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8]> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.bytes.len());
        let Some(end) = end else {
            return Err(self.fail(
                self.pos,
                format!(
                    "{what} needs {n} bytes but the file ends after {}",
                    self.bytes.len() - self.pos
                ),
            ));
        };
        let s = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    fn u32(&mut self, what: &str) -> Result<u32> {
        let b = self.take(4, what)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn u64(&mut self, what: &str) -> Result<u64> {
        let b = self.take(8, what)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_le_bytes(a))
    }

    /// A count that must fit in what is left of the file at `min_bytes` per item.
    fn count(&mut self, what: &str, min_bytes: usize) -> Result<usize> {
        let at = self.pos;
        let n = self.u64(what)?;
        let left = (self.bytes.len() - self.pos) as u64;
        if n > left / min_bytes.max(1) as u64 {
            return Err(self.fail(
                at,
                format!("{what} {n} cannot fit in the {left} bytes left"),
            ));
        }
        Ok(n as usize)
    }

    fn string(&mut self, what: &str) -> Result<String> {
        let at = self.pos;
        let n = self.count(&format!("length of {what}"), 1)?;
        let b = self.take(n, what)?;
        String::from_utf8(b.to_vec()).map_err(|_| self.fail(at, format!("{what} is not UTF-8")))
    }

    fn value(&mut self, ty: u32, depth: usize) -> Result<Value> {
        let at = self.pos;
        Ok(match ty {
            0 => Value::U8(self.take(1, "u8")?[0]),
            1 => Value::I8(self.take(1, "i8")?[0] as i8),
            2 => {
                let b = self.take(2, "u16")?;
                Value::U16(u16::from_le_bytes([b[0], b[1]]))
            }
            3 => {
                let b = self.take(2, "i16")?;
                Value::I16(i16::from_le_bytes([b[0], b[1]]))
            }
            4 => Value::U32(self.u32("u32")?),
            5 => Value::I32(self.u32("i32")? as i32),
            6 => Value::F32(f32::from_bits(self.u32("f32")?)),
            7 => match self.take(1, "bool")?[0] {
                0 => Value::Bool(false),
                1 => Value::Bool(true),
                b => return Err(self.fail(at, format!("bool byte {b} is neither 0 nor 1"))),
            },
            8 => Value::String(self.string("string value")?),
            9 => {
                if depth > 0 {
                    return Err(self.fail(at, "arrays of arrays are not supported"));
                }
                let elem = self.u32("array element type")?;
                let min = match elem {
                    0 | 1 | 7 => 1,
                    2 | 3 => 2,
                    4..=6 => 4,
                    8 | 10..=12 => 8,
                    9 => return Err(self.fail(at, "arrays of arrays are not supported")),
                    t => return Err(self.fail(at + 4, format!("unknown array element type {t}"))),
                };
                let n = self.count("array length", min)?;
                let mut v = Vec::with_capacity(n);
                for _ in 0..n {
                    v.push(self.value(elem, depth + 1)?);
                }
                Value::Array(v)
            }
            10 => Value::U64(self.u64("u64")?),
            11 => Value::I64(self.u64("i64")? as i64),
            12 => Value::F64(f64::from_bits(self.u64("f64")?)),
            t => return Err(self.fail(at, format!("unknown value type {t}"))),
        })
    }
}

impl GgufFile {
    /// Opens and validates `path`.
    pub fn open(path: &Path) -> Result<Self> {
        let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
        // SAFETY: read-only map; the file is not expected to change while it is open.
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| Error::io(path, e))?;
        let (version, metadata, tensors) = parse(&map, path)?;
        Ok(GgufFile {
            path: path.to_path_buf(),
            version,
            metadata,
            tensors,
            map,
        })
    }

    /// The metadata value under `key`.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.metadata.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    /// `general.architecture`.
    pub fn architecture(&self) -> Option<&str> {
        self.get("general.architecture").and_then(|v| v.as_str())
    }

    /// The directory entry of tensor `name`.
    pub fn tensor_info(&self, name: &str) -> Option<&TensorInfo> {
        self.tensors.iter().find(|t| t.name == name)
    }

    /// The raw bytes of a tensor.
    pub fn tensor_bytes(&self, info: &TensorInfo) -> &[u8] {
        &self.map[info.offset..info.offset + info.len]
    }

    /// A tensor dequantized to f32 on the CPU, in smith's shape.
    pub fn dequantize(&self, name: &str) -> Result<Tensor> {
        let info = self.tensor_info(name).ok_or_else(|| Error::Checkpoint {
            path: self.path.clone(),
            msg: format!("no tensor `{name}`"),
        })?;
        let values = dequantize(info.ty, self.tensor_bytes(info))?;
        Tensor::from_vec(values, &info.shape, crate::Device::Cpu)
    }
}

type Parsed = (u32, Vec<(String, Value)>, Vec<TensorInfo>);

fn parse(bytes: &[u8], path: &Path) -> Result<Parsed> {
    let mut r = Reader {
        bytes,
        pos: 0,
        path,
    };
    let magic = r.take(4, "magic")?;
    if magic != b"GGUF" {
        return Err(r.fail(0, format!("magic {magic:?} is not GGUF")));
    }
    let version = r.u32("version")?;
    if !(2..=3).contains(&version) {
        return Err(r.fail(4, format!("version {version} is not supported (2 or 3)")));
    }
    // The smallest tensor entry is 8 (name length) + 4 + 4 + 8 bytes; a metadata entry
    // 8 (key length) + 4 + 1.
    let n_tensors = r.count("tensor count", 24)?;
    let n_kv = r.count("metadata count", 13)?;
    let mut metadata = Vec::with_capacity(n_kv);
    let mut seen = std::collections::HashSet::with_capacity(n_kv);
    for _ in 0..n_kv {
        let at = r.pos;
        let key = r.string("metadata key")?;
        if !seen.insert(key.clone()) {
            // Readers disagree on which copy wins; a file that says two things is refused.
            return Err(r.fail(at, format!("metadata key `{key}` appears twice")));
        }
        let ty = r.u32("value type")?;
        let v = r.value(ty, 0)?;
        metadata.push((key, v));
    }
    let alignment = match metadata.iter().find(|(k, _)| k == "general.alignment") {
        None => 32,
        Some((_, v)) => match v.as_u64() {
            Some(a) if a.is_power_of_two() && a <= 1 << 20 => a as usize,
            _ => return Err(r.fail(0, format!("general.alignment {v:?} is not a power of two"))),
        },
    };
    let mut raw = Vec::with_capacity(n_tensors);
    for _ in 0..n_tensors {
        let at = r.pos;
        let name = r.string("tensor name")?;
        let n_dims = r.u32("tensor rank")? as usize;
        if n_dims == 0 || n_dims > 4 {
            return Err(r.fail(
                at,
                format!("tensor `{name}` has {n_dims} dims (1 to 4 allowed)"),
            ));
        }
        let mut ne = Vec::with_capacity(n_dims);
        for _ in 0..n_dims {
            ne.push(r.u64("tensor dim")?);
        }
        let ty_at = r.pos;
        let ty = GgmlType::from_id(r.u32("tensor type")?)
            .map_err(|e| r.fail(ty_at, format!("tensor `{name}`: {e}")))?;
        let offset = r.u64("tensor offset")?;
        let numel = ne
            .iter()
            .try_fold(1u64, |acc, &d| acc.checked_mul(d))
            .filter(|&n| n < 1 << 48)
            .ok_or_else(|| r.fail(at, format!("tensor `{name}` dims {ne:?} overflow")))?;
        if !ne[0].is_multiple_of(ty.block().0 as u64) {
            return Err(r.fail(
                at,
                format!(
                    "tensor `{name}`: row length {} is not a multiple of {}'s block of {}",
                    ne[0],
                    ty.name(),
                    ty.block().0
                ),
            ));
        }
        let len = ty
            .bytes_for(numel)
            .ok_or_else(|| r.fail(at, format!("tensor `{name}` size overflows")))?;
        if !offset.is_multiple_of(alignment as u64) {
            return Err(r.fail(
                at,
                format!("tensor `{name}` offset {offset} is not aligned to {alignment}"),
            ));
        }
        raw.push((at, name, ne, ty, offset, len));
    }
    let data_start = r.pos.div_ceil(alignment) * alignment;
    let data_len = bytes.len().saturating_sub(data_start) as u64;
    let mut tensors = Vec::with_capacity(raw.len());
    for (at, name, ne, ty, offset, len) in raw {
        let end = offset.checked_add(len).filter(|&e| e <= data_len);
        if end.is_none() {
            return Err(r.fail(
                at,
                format!(
                    "tensor `{name}` ({} bytes at data offset {offset}) runs past the end of the file ({data_len} data bytes)",
                    len
                ),
            ));
        }
        if tensors.iter().any(|t: &TensorInfo| t.name == name) {
            return Err(r.fail(at, format!("tensor `{name}` appears twice")));
        }
        tensors.push(TensorInfo {
            name,
            shape: ne.iter().rev().map(|&d| d as usize).collect(),
            ty,
            offset: data_start + offset as usize,
            len: len as usize,
        });
    }
    Ok((version, metadata, tensors))
}
