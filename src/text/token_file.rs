//! Token files for training: a text run through a tokenizer once, its ids stored as
//! little-endian u16 (the layout GPT-2 training scripts use, for vocabularies of at most
//! 65536 tokens).

use crate::io::gguf::GgufFile;
use crate::text::tokenizer::TextTokenizer;
use crate::{Error, Result};
use std::path::Path;

/// The tokenizer of `path`: a `tokenizer.json`, a GGUF file (its embedded tokenizer), or a
/// folder holding a `tokenizer.json` (a Hugging Face model folder).
pub fn load_tokenizer(path: &Path) -> Result<TextTokenizer> {
    if path.is_dir() {
        return TextTokenizer::from_file(&path.join("tokenizer.json"));
    }
    let mut magic = [0u8; 4];
    let is_gguf = std::fs::File::open(path)
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut magic))
        .map(|_| &magic == b"GGUF")
        .unwrap_or(false);
    if is_gguf {
        TextTokenizer::from_gguf(&GgufFile::open(path)?)
    } else {
        TextTokenizer::from_file(path)
    }
}

/// Writes `ids` to `path` as little-endian u16, atomically; an id above 65535 is an error.
pub fn write_token_file(ids: &[u32], path: &Path) -> Result<()> {
    let mut bytes = Vec::with_capacity(ids.len() * 2);
    for (i, &id) in ids.iter().enumerate() {
        let id = u16::try_from(id).map_err(|_| {
            Error::invalid(
                "token file",
                format!("token {i} has id {id}, which does not fit in u16"),
            )
        })?;
        bytes.extend_from_slice(&id.to_le_bytes());
    }
    crate::io::write_atomic(path, &bytes)
}

/// Reads a file written by [`write_token_file`].
pub fn read_token_file(path: &Path) -> Result<Vec<u32>> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    if bytes.len() % 2 != 0 {
        return Err(Error::invalid(
            "token file",
            format!(
                "{} has {} bytes, not a whole number of u16 ids",
                path.display(),
                bytes.len()
            ),
        ));
    }
    Ok(bytes
        .chunks_exact(2)
        .map(|b| u16::from_le_bytes([b[0], b[1]]) as u32)
        .collect())
}

/// Tokenizes the text file `input` with the tokenizer at `tokenizer` into the token file
/// `output`, with the BOS/EOS the tokenizer's rules add when `bos` is true; returns the
/// number of tokens.
pub fn tokenize_file(tokenizer: &Path, input: &Path, output: &Path, bos: bool) -> Result<usize> {
    let tok = load_tokenizer(tokenizer)?;
    let text = std::fs::read_to_string(input).map_err(|e| Error::io(input, e))?;
    let ids = tok.encode_with(&text, false, bos)?;
    write_token_file(&ids, output)?;
    Ok(ids.len())
}
