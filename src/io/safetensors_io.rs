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
    Ok(match t.to_host()? {
        CpuStorage::F64(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        CpuStorage::F32(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        CpuStorage::F16(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        CpuStorage::BF16(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        CpuStorage::I64(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        CpuStorage::U32(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        CpuStorage::U8(v) => v,
    })
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

fn decode<const N: usize, T>(bytes: &[u8], f: impl Fn([u8; N]) -> T) -> Vec<T> {
    bytes
        .chunks_exact(N)
        .map(|c| {
            let mut a = [0u8; N];
            a.copy_from_slice(c);
            f(a)
        })
        .collect()
}

/// Reads every tensor of a safetensors file onto the CPU; a malformed file or an
/// unsupported dtype is an error naming the file and tensor.
pub fn load_safetensors(path: &Path) -> Result<HashMap<String, Tensor>> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let st = SafeTensors::deserialize(&bytes).map_err(|e| Error::Checkpoint {
        path: path.to_path_buf(),
        msg: e.to_string(),
    })?;
    let mut out = HashMap::new();
    for (name, view) in st.tensors() {
        let data = view.data();
        let storage = match view.dtype() {
            StDtype::F64 => CpuStorage::F64(decode(data, f64::from_le_bytes)),
            StDtype::F32 => CpuStorage::F32(decode(data, f32::from_le_bytes)),
            StDtype::F16 => CpuStorage::F16(decode(data, half::f16::from_le_bytes)),
            StDtype::BF16 => CpuStorage::BF16(decode(data, half::bf16::from_le_bytes)),
            StDtype::I64 => CpuStorage::I64(decode(data, i64::from_le_bytes)),
            StDtype::U32 => CpuStorage::U32(decode(data, u32::from_le_bytes)),
            StDtype::U8 => CpuStorage::U8(data.to_vec()),
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
