//! Reading and writing model files: safetensors weights, GGUF files, checkpoint sets.

pub mod checkpoint;
pub mod pickle;
pub mod pth;
pub mod safetensors;
pub mod zip;

pub mod gguf;
pub use self::pth::{load_pth, PthFile};
pub use self::safetensors::{load_safetensors, save_safetensors};

pub use crate::atomic_file::write_atomic;

/// Parses a JSON document into `T`; a failure names the field it is in (`n_head: invalid
/// type: string "twelve", expected usize ...`), so a config with one wrong value says which.
pub fn parse_json<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> std::result::Result<T, String> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value: T = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        if path == "." {
            e.into_inner().to_string()
        } else {
            format!("`{path}`: {}", e.into_inner())
        }
    })?;
    de.end().map_err(|e| e.to_string())?;
    Ok(value)
}

/// Little-endian signed integers of `width` bytes (4, 2 or 1) widened to an I64 storage:
/// smith keeps integer tensors as i64, which holds every such value exactly.
pub(crate) fn widen_ints(bytes: &[u8], width: usize) -> crate::backend::cpu::CpuStorage {
    let wide: Vec<u8> = bytes
        .chunks_exact(width)
        .flat_map(|c| {
            let v: i64 = match width {
                4 => i64::from(i32::from_le_bytes([c[0], c[1], c[2], c[3]])),
                2 => i64::from(i16::from_le_bytes([c[0], c[1]])),
                _ => i64::from(c[0] as i8),
            };
            v.to_le_bytes()
        })
        .collect();
    crate::backend::cpu::CpuStorage::from_le_bytes(crate::DType::I64, &wide)
}
