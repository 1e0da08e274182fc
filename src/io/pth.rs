//! PyTorch `.pth` / `.pt` files as `torch.save` writes them (PyTorch 1.6 and later): a zip
//! archive whose `data.pkl` pickles the saved object, with each tensor's storage in
//! `data/<key>`. The pickle runs under a restricted policy that knows the tensor and
//! storage rebuilders and `OrderedDict`, and nothing else: no code is imported or run.
//!
//! Storage dtypes: float32/16, bfloat16 and float64 keep their type; int64, int32, int16
//! and int8 become I64 (exact); uint8 and bool become U8.

use super::pickle::{unpickle, Policy, Value};
use super::zip::ZipArchive;
use crate::backend::cpu::CpuStorage;
use crate::{DType, Error, Result, Tensor};
use std::collections::HashMap;
use std::path::Path;

/// The element types of PyTorch storages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum TorchDtype {
    F32,
    F16,
    BF16,
    F64,
    I64,
    I32,
    I16,
    I8,
    U8,
    Bool,
}

impl TorchDtype {
    fn from_storage_class(name: &str) -> Option<Self> {
        Some(match name {
            "FloatStorage" => TorchDtype::F32,
            "HalfStorage" => TorchDtype::F16,
            "BFloat16Storage" => TorchDtype::BF16,
            "DoubleStorage" => TorchDtype::F64,
            "LongStorage" => TorchDtype::I64,
            "IntStorage" => TorchDtype::I32,
            "ShortStorage" => TorchDtype::I16,
            "CharStorage" => TorchDtype::I8,
            "ByteStorage" => TorchDtype::U8,
            "BoolStorage" => TorchDtype::Bool,
            _ => return None,
        })
    }
    fn size(self) -> usize {
        match self {
            TorchDtype::F64 | TorchDtype::I64 => 8,
            TorchDtype::F32 | TorchDtype::I32 => 4,
            TorchDtype::F16 | TorchDtype::BF16 | TorchDtype::I16 => 2,
            TorchDtype::I8 | TorchDtype::U8 | TorchDtype::Bool => 1,
        }
    }
}

/// A storage the pickle refers to: an entry of the archive.
#[derive(Clone, Debug)]
pub struct StorageRef {
    key: String,
    dtype: TorchDtype,
    numel: usize,
}

/// What the torch policy builds: storages, and tensors as views of them.
#[derive(Clone, Debug)]
pub enum TorchObject {
    Storage(StorageRef),
    Tensor {
        storage: StorageRef,
        offset: usize,
        size: Vec<usize>,
        stride: Vec<usize>,
    },
}

struct TorchPolicy<'a> {
    path: &'a Path,
}

const REBUILDERS: [&str; 3] = [
    "_rebuild_tensor_v2",
    "_rebuild_parameter",
    "_rebuild_parameter_with_state",
];

impl TorchPolicy<'_> {
    fn bad(&self, msg: impl std::fmt::Display) -> Error {
        Error::Checkpoint {
            path: self.path.to_path_buf(),
            msg: msg.to_string(),
        }
    }
    fn usize_of(&self, v: &Value<TorchObject>, what: &str) -> Result<usize> {
        match v {
            Value::Int(i) if *i >= 0 => Ok(*i as usize),
            other => Err(self.bad(format!("{what} is a {} (expected a size)", other.kind()))),
        }
    }
    fn sizes(&self, v: &Value<TorchObject>, what: &str) -> Result<Vec<usize>> {
        match v {
            Value::Tuple(items) => items.iter().map(|i| self.usize_of(i, what)).collect(),
            other => Err(self.bad(format!("{what} is a {} (expected a tuple)", other.kind()))),
        }
    }
}

impl Policy for TorchPolicy<'_> {
    type Ext = TorchObject;

    fn allows(&self, module: &str, name: &str) -> bool {
        match module {
            "collections" => name == "OrderedDict",
            "torch._utils" => REBUILDERS.contains(&name),
            "torch" => TorchDtype::from_storage_class(name).is_some(),
            "_codecs" => name == "encode",
            _ => false,
        }
    }

    fn call(
        &mut self,
        module: &str,
        name: &str,
        args: Vec<Value<TorchObject>>,
    ) -> Result<Value<TorchObject>> {
        match (module, name) {
            ("collections", "OrderedDict") if args.is_empty() => {
                Ok(Value::Dict(Default::default()))
            }
            ("_codecs", "encode") => match args.as_slice() {
                // How protocol 2 spells a bytes object: its latin-1 text.
                [Value::Str(s), Value::Str(enc)] if enc == "latin1" || enc == "latin-1" => {
                    let bytes: Option<Vec<u8>> =
                        s.chars().map(|c| u8::try_from(u32::from(c)).ok()).collect();
                    bytes
                        .map(Value::Bytes)
                        .ok_or_else(|| self.bad("bytes spelled with a non-latin-1 character"))
                }
                _ => Err(self.bad("`_codecs.encode` with unexpected arguments")),
            },
            ("torch._utils", "_rebuild_tensor_v2") => {
                let storage = match args.first() {
                    Some(Value::Ext(TorchObject::Storage(s))) => s.clone(),
                    _ => return Err(self.bad("a tensor rebuilt from something not a storage")),
                };
                let (Some(offset), Some(size), Some(stride)) =
                    (args.get(1), args.get(2), args.get(3))
                else {
                    return Err(self.bad("`_rebuild_tensor_v2` with too few arguments"));
                };
                let offset = self.usize_of(offset, "a tensor's storage offset")?;
                let size = self.sizes(size, "a tensor's size")?;
                let stride = self.sizes(stride, "a tensor's stride")?;
                if size.len() != stride.len() {
                    return Err(self.bad("a tensor whose size and stride differ in rank"));
                }
                Ok(Value::Ext(TorchObject::Tensor {
                    storage,
                    offset,
                    size,
                    stride,
                }))
            }
            ("torch._utils", "_rebuild_parameter" | "_rebuild_parameter_with_state") => {
                match args.into_iter().next() {
                    Some(t @ Value::Ext(TorchObject::Tensor { .. })) => Ok(t),
                    _ => Err(self.bad("a parameter rebuilt from something not a tensor")),
                }
            }
            _ => Err(self.bad(format!(
                "`{module}.{name}` cannot be called with these arguments"
            ))),
        }
    }

    fn persistent_load(&mut self, pid: Value<TorchObject>) -> Result<Value<TorchObject>> {
        // ('storage', torch.<Dtype>Storage, key, location, numel)
        let items = match pid {
            Value::Tuple(items) => items,
            other => return Err(self.bad(format!("a persistent id that is a {}", other.kind()))),
        };
        match items.as_slice() {
            [Value::Str(tag), Value::Global(_, class), Value::Str(key), _, numel]
                if tag == "storage" =>
            {
                let dtype = TorchDtype::from_storage_class(class)
                    .ok_or_else(|| self.bad(format!("unknown storage type `{class}`")))?;
                let numel = self.usize_of(numel, "a storage's length")?;
                Ok(Value::Ext(TorchObject::Storage(StorageRef {
                    key: key.clone(),
                    dtype,
                    numel,
                })))
            }
            _ => Err(self.bad("a persistent id that is not a storage")),
        }
    }
}

/// The contents of a `.pth` file: its tensors (on the CPU) and its other plain values,
/// each named by its path in the saved object (`model.conv1.weight`, `epoch`).
#[derive(Debug, Default)]
pub struct PthFile {
    /// Every tensor, in the pickle's order.
    pub tensors: Vec<(String, Tensor)>,
    /// Every other leaf value, described (`3`, `"zoo"`, `None`).
    pub values: Vec<(String, String)>,
}

impl PthFile {
    /// The tensors as a state dict: when the file wraps one (`{"model": ..., "epoch": 3}`,
    /// `{"state_dict": ...}`), the wrapping key is removed, and so is the `module.` prefix
    /// `DataParallel` adds.
    pub fn state_dict(&self) -> HashMap<String, Tensor> {
        let first = |n: &str| n.split('.').next().unwrap_or("").to_string();
        let mut names: Vec<String> = self.tensors.iter().map(|(n, _)| n.clone()).collect();
        let tops: std::collections::BTreeSet<String> = names.iter().map(|n| first(n)).collect();
        let wrapped = tops.len() == 1
            && names.iter().all(|n| n.contains('.'))
            && tops.iter().next().is_some_and(|t| {
                ["model", "state_dict", "model_state_dict", "net"].contains(&t.as_str())
            });
        if wrapped {
            names = names
                .iter()
                .map(|n| n.split_once('.').map_or(n.clone(), |x| x.1.into()))
                .collect();
        }
        if !names.is_empty() && names.iter().all(|n| n.starts_with("module.")) {
            names = names
                .iter()
                .map(|n| n["module.".len()..].to_string())
                .collect();
        }
        names
            .into_iter()
            .zip(self.tensors.iter().map(|(_, t)| t.clone()))
            .collect()
    }
}

/// Whether `bytes` look like a `.pth` file (a zip archive).
pub fn is_pth(bytes: &[u8]) -> bool {
    ZipArchive::is_zip(bytes)
}

/// Reads a `.pth` file saved by `torch.save`: tensors of any storage dtype (strided views
/// and shared storages included) onto the CPU, and the plain values around them. An
/// unknown global in the pickle, a truncated archive or a tensor outside its storage is an
/// error naming the file.
pub fn load_pth(path: &Path) -> Result<PthFile> {
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    // SAFETY: read-only map, dropped before returning (see `load_safetensors`).
    let bytes = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| Error::io(path, e))?;
    read_pth(&bytes, path)
}

/// [`load_pth`] on bytes in memory (`path` names them in errors).
pub fn read_pth(bytes: &[u8], path: &Path) -> Result<PthFile> {
    let bad = |msg: String| Error::Checkpoint {
        path: path.to_path_buf(),
        msg,
    };
    if !ZipArchive::is_zip(bytes) {
        return Err(bad(if bytes.starts_with(&[0x80]) {
            "a pickle without a zip archive around it: the format of PyTorch before 1.6 \
                 (torch.save(..., _use_new_zipfile_serialization=False)), which is not read; \
                 save it again with a current PyTorch"
        } else {
            "not a PyTorch file (torch.save writes a zip archive)"
        }
        .into()));
    }
    let zip = ZipArchive::parse(bytes, path)?;
    let pkl = zip
        .entries
        .iter()
        .find(|e| e.name.ends_with("/data.pkl") || e.name == "data.pkl")
        .ok_or_else(|| bad("no `data.pkl` in the archive: not a torch.save file".into()))?;
    let prefix = pkl.name[..pkl.name.len() - "data.pkl".len()].to_string();
    if let Some(order) = zip.find(&format!("{prefix}byteorder")) {
        let order = &bytes[order.data_offset..order.data_offset + order.size];
        if order != b"little" {
            return Err(bad(format!(
                "byte order `{}` is not supported (only little-endian files are read)",
                String::from_utf8_lossy(order)
            )));
        }
    }
    let mut policy = TorchPolicy { path };
    let root = unpickle(zip.read(&pkl.name)?, &mut policy, path)?;
    let mut out = PthFile::default();
    let mut cache: HashMap<String, &[u8]> = HashMap::new();
    flatten(&root, String::new(), 0, &mut |name, leaf| {
        match leaf {
            Leaf::Tensor(obj) => {
                let t = build_tensor(obj, &zip, &prefix, &mut cache, path, &name)?;
                out.tensors.push((name, t));
            }
            Leaf::Value(v) => out.values.push((name, v)),
        }
        Ok(())
    })
    .map_err(|e| match e {
        Error::Checkpoint { .. } => e,
        other => bad(other.to_string()),
    })?;
    Ok(out)
}

enum Leaf<'v> {
    Tensor(&'v TorchObject),
    Value(String),
}

/// Calls `f` for every leaf of `v`, named by its path; containers nest at most 64 deep.
fn flatten<'v>(
    v: &'v Value<TorchObject>,
    name: String,
    depth: usize,
    f: &mut dyn FnMut(String, Leaf<'_>) -> Result<()>,
) -> Result<()> {
    if depth > 64 {
        return Err(Error::invalid(
            "pth",
            format!("`{name}` nests more than 64 levels deep"),
        ));
    }
    let join = |k: &str| {
        if name.is_empty() {
            k.to_string()
        } else {
            format!("{name}.{k}")
        }
    };
    match v {
        Value::Dict(d) => {
            for (k, item) in d.borrow().iter() {
                let key = match k {
                    Value::Str(s) => s.clone(),
                    Value::Int(i) => i.to_string(),
                    other => format!("<{}>", other.kind()),
                };
                flatten(item, join(&key), depth + 1, f)?;
            }
            Ok(())
        }
        Value::List(l) => {
            for (i, item) in l.borrow().iter().enumerate() {
                flatten(item, join(&i.to_string()), depth + 1, f)?;
            }
            Ok(())
        }
        Value::Tuple(items) => {
            for (i, item) in items.iter().enumerate() {
                flatten(item, join(&i.to_string()), depth + 1, f)?;
            }
            Ok(())
        }
        Value::Ext(obj @ TorchObject::Tensor { .. }) => f(name, Leaf::Tensor(obj)),
        Value::Ext(TorchObject::Storage(s)) => f(
            name,
            Leaf::Value(format!("<storage of {} elements>", s.numel)),
        ),
        Value::None => f(name, Leaf::Value("None".into())),
        Value::Bool(b) => f(name, Leaf::Value(if *b { "True" } else { "False" }.into())),
        Value::Int(i) => f(name, Leaf::Value(i.to_string())),
        Value::Float(x) => f(name, Leaf::Value(x.to_string())),
        Value::Str(s) => f(name, Leaf::Value(format!("{s:?}"))),
        Value::Bytes(b) => f(name, Leaf::Value(format!("<{} bytes>", b.len()))),
        Value::Global(m, n) => f(name, Leaf::Value(format!("<{m}.{n}>"))),
    }
}

/// Copies a tensor's elements out of its storage (following its strides) into a new
/// contiguous CPU tensor.
fn build_tensor<'a>(
    obj: &TorchObject,
    zip: &ZipArchive<'a>,
    prefix: &str,
    cache: &mut HashMap<String, &'a [u8]>,
    path: &Path,
    name: &str,
) -> Result<Tensor> {
    let bad = |msg: String| Error::Checkpoint {
        path: path.to_path_buf(),
        msg: format!("tensor `{name}`: {msg}"),
    };
    let TorchObject::Tensor {
        storage,
        offset,
        size,
        stride,
    } = obj
    else {
        return Err(bad("not a tensor".into()));
    };
    let entry = format!("{prefix}data/{}", storage.key);
    let data = match cache.get(&entry) {
        Some(d) => *d,
        None => {
            let d = zip.read(&entry)?;
            cache.insert(entry.clone(), d);
            d
        }
    };
    let es = storage.dtype.size();
    let needed = storage
        .numel
        .checked_mul(es)
        .ok_or_else(|| bad("storage size overflows".into()))?;
    if data.len() < needed {
        return Err(bad(format!(
            "storage `{}` holds {} bytes, {} expected (truncated?)",
            storage.key,
            data.len(),
            needed
        )));
    }
    let numel = size
        .iter()
        .try_fold(1usize, |a, &s| a.checked_mul(s))
        .ok_or_else(|| bad("element count overflows".into()))?;
    if numel > 0 {
        let last = size
            .iter()
            .zip(stride)
            .try_fold(*offset, |a, (&s, &st)| {
                a.checked_add((s - 1).checked_mul(st)?)
            })
            .ok_or_else(|| bad("extent overflows".into()))?;
        if last >= storage.numel {
            return Err(bad(format!(
                "its view (offset {offset}, size {size:?}, stride {stride:?}) reaches past its \
                 storage of {} elements",
                storage.numel
            )));
        }
    }
    // Gather the elements in row-major order.
    let mut bytes = Vec::with_capacity(numel * es);
    let mut index = vec![0usize; size.len()];
    for _ in 0..numel {
        let at = offset + index.iter().zip(stride).map(|(i, s)| i * s).sum::<usize>();
        bytes.extend_from_slice(&data[at * es..(at + 1) * es]);
        for d in (0..size.len()).rev() {
            index[d] += 1;
            if index[d] < size[d] {
                break;
            }
            index[d] = 0;
        }
    }
    let storage = match storage.dtype {
        TorchDtype::F32 => CpuStorage::from_le_bytes(DType::F32, &bytes),
        TorchDtype::F16 => CpuStorage::from_le_bytes(DType::F16, &bytes),
        TorchDtype::BF16 => CpuStorage::from_le_bytes(DType::BF16, &bytes),
        TorchDtype::F64 => CpuStorage::from_le_bytes(DType::F64, &bytes),
        TorchDtype::I64 => CpuStorage::from_le_bytes(DType::I64, &bytes),
        TorchDtype::U8 | TorchDtype::Bool => CpuStorage::from_le_bytes(DType::U8, &bytes),
        TorchDtype::I32 | TorchDtype::I16 | TorchDtype::I8 => super::widen_ints(&bytes, es),
    };
    Ok(Tensor::from_cpu(storage, size, None))
}
