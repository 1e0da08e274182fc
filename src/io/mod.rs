//! Reading and writing model files: safetensors weights, GGUF files, checkpoint sets.

pub mod checkpoint;
pub mod safetensors;

pub mod gguf;
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
