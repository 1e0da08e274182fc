//! Text to token ids and back: the character tokenizer of `smith train`, or a Hugging Face
//! `tokenizer.json` (byte-level BPE, SentencePiece, WordPiece, ...) through the
//! `tokenizers` crate; plus a streaming decoder that never emits broken UTF-8.

use crate::text::CharTokenizer;
use crate::{Error, Result};
use std::path::Path;

/// A tokenizer of any kind smith reads.
pub enum TextTokenizer {
    /// One id per character (checkpoints of `smith train`).
    Chars(CharTokenizer),
    /// A `tokenizer.json`.
    Hf(Box<tokenizers::Tokenizer>),
    /// Llama-style SentencePiece with scores (from a GGUF file).
    Spm(Box<crate::text::sentencepiece::SpmTokenizer>),
}

fn tok_err(what: &str, e: impl std::fmt::Display) -> Error {
    Error::invalid("tokenizer", format!("{what}: {e}"))
}

impl TextTokenizer {
    /// Reads a `tokenizer.json`.
    pub fn from_file(path: &Path) -> Result<Self> {
        let t = tokenizers::Tokenizer::from_file(path)
            .map_err(|e| tok_err(&format!("cannot read {}", path.display()), e))?;
        Ok(TextTokenizer::Hf(Box::new(t)))
    }

    /// Token ids of `text`; `special` adds the tokenizer's own BOS/EOS template.
    pub fn encode(&self, text: &str, special: bool) -> Result<Vec<u32>> {
        self.encode_with(text, special, special)
    }

    /// Token ids of `text` with the BOS/EOS the tokenizer's own rules add when `bos` is
    /// true (a GGUF file's `add_bos_token` / `add_eos_token`, a `tokenizer.json`'s
    /// post-processor), none when false; `special` turns control tokens spelled in the text
    /// into their ids (SentencePiece; a `tokenizer.json` always does).
    pub fn encode_with(&self, text: &str, special: bool, bos: bool) -> Result<Vec<u32>> {
        match self {
            TextTokenizer::Chars(c) => c.encode(text),
            TextTokenizer::Hf(t) => Ok(t
                .encode(text, bos)
                .map_err(|e| tok_err("encode", e))?
                .get_ids()
                .to_vec()),
            TextTokenizer::Spm(t) => t.encode_with(text, special, bos),
        }
    }

    /// The text of `ids` (special tokens skipped).
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        match self {
            TextTokenizer::Chars(c) => Ok(c.decode(ids)),
            TextTokenizer::Hf(t) => t.decode(ids, true).map_err(|e| tok_err("decode", e)),
            TextTokenizer::Spm(t) => Ok(t.decode(ids)),
        }
    }

    /// The id of a token string, if the vocabulary has it (e.g. `<|endoftext|>`).
    pub fn token_id(&self, token: &str) -> Option<u32> {
        match self {
            TextTokenizer::Chars(_) => None,
            TextTokenizer::Hf(t) => t.token_to_id(token),
            TextTokenizer::Spm(t) => t.token_id(token),
        }
    }
}

/// Turns generated ids into text as they come: each call returns only text that is
/// complete (a token that ends inside a multi-byte character waits for the next).
#[derive(Default)]
pub struct StreamDecoder {
    ids: Vec<u32>,
    emitted: usize,
}

impl StreamDecoder {
    /// Adds one id and returns the newly completed text (possibly empty).
    pub fn push(&mut self, tok: &TextTokenizer, id: u32) -> Result<String> {
        self.ids.push(id);
        let text = tok.decode(&self.ids)?;
        if text.ends_with('\u{FFFD}') || text.len() < self.emitted {
            return Ok(String::new());
        }
        let new = text.get(self.emitted..).unwrap_or("").to_string();
        self.emitted = text.len();
        Ok(new)
    }

    /// Everything decoded so far.
    pub fn text(&self, tok: &TextTokenizer) -> Result<String> {
        tok.decode(&self.ids)
    }
}
