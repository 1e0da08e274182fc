//! safetensors files: named tensors with a JSON header, written atomically.

use crate::backend::cpu::CpuStorage;
use crate::{DType, Device, Error, Result, Tensor};
use safetensors::tensor::{Dtype as StDtype, SafeTensors, TensorView};
use std::collections::HashMap;
use std::path::Path;

fn to_st(dtype: DType) -> StDtype {
    match dtype {
        DType::F64 => StDtype::F64,
        DType::F32 => StDtype::F32,
        DType::F16 => StDtype::F16,
        DType::BF16 => StDtype::BF16,
        DType::I64 => StDtype::I64,
        DType::U32 => StDtype::U32,
        DType::U8 => StDtype::U8,
    }
}

/// Little-endian bytes of a tensor's elements in logical order.
fn tensor_bytes(t: &Tensor) -> Result<Vec<u8>> {
    Ok(t.to_host()?.to_le_bytes())
}

/// Writes named tensors to a safetensors file, atomically.
pub fn save_safetensors(path: &Path, tensors: &[(String, Tensor)]) -> Result<()> {
    let bytes: Vec<(String, StDtype, Vec<usize>, Vec<u8>)> = tensors
        .iter()
        .map(|(n, t)| {
            Ok((
                n.clone(),
                to_st(t.dtype()),
                t.shape().to_vec(),
                tensor_bytes(t)?,
            ))
        })
        .collect::<Result<_>>()?;
    let views = bytes
        .iter()
        .map(|(n, d, s, b)| Ok((n.clone(), TensorView::new(*d, s.clone(), b)?)))
        .collect::<Result<Vec<_>>>()?;
    let out = safetensors::tensor::serialize(views, &None)?;
    super::write_atomic(path, &out)
}

/// Reads every tensor of a safetensors file onto the CPU; a malformed file or an
/// unsupported dtype is an error naming the file and tensor. Signed integers narrower than
/// 64 bits are widened to I64 and booleans read as U8.
///
/// The file is memory-mapped, so only the tensors' bytes are copied (once, into their
/// storages), never the whole file into a buffer first.
pub fn load_safetensors(path: &Path) -> Result<HashMap<String, Tensor>> {
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    // SAFETY: the map is read-only and dropped before returning; a file truncated by
    // another process while it is read is outside what any reader can guard against.
    let bytes = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| Error::io(path, e))?;
    let st = SafeTensors::deserialize(&bytes).map_err(|e| Error::Checkpoint {
        path: path.to_path_buf(),
        msg: e.to_string(),
    })?;
    let mut out = HashMap::new();
    for (name, view) in st.tensors() {
        let data = view.data();
        let storage = match view.dtype() {
            StDtype::F64 => CpuStorage::from_le_bytes(DType::F64, data),
            StDtype::F32 => CpuStorage::from_le_bytes(DType::F32, data),
            StDtype::F16 => CpuStorage::from_le_bytes(DType::F16, data),
            StDtype::BF16 => CpuStorage::from_le_bytes(DType::BF16, data),
            StDtype::I64 => CpuStorage::from_le_bytes(DType::I64, data),
            StDtype::U32 => CpuStorage::from_le_bytes(DType::U32, data),
            StDtype::U8 | StDtype::BOOL => CpuStorage::from_le_bytes(DType::U8, data),
            StDtype::I32 => super::widen_ints(data, 4),
            StDtype::I16 => super::widen_ints(data, 2),
            StDtype::I8 => super::widen_ints(data, 1),
            other => {
                return Err(Error::Checkpoint {
                    path: path.to_path_buf(),
                    msg: format!("tensor `{name}` has unsupported dtype {other:?}"),
                })
            }
        };
        let t = Tensor::from_cpu(storage, view.shape(), None);
        debug_assert_eq!(t.device(), Device::Cpu);
        out.insert(name, t);
    }
    Ok(out)
}
