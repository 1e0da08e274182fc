//! CLIP's text inputs: a `tokenizer.json` (byte-level BPE with `</w>` word ends, BOS and
//! EOS added by its post-processor) applied with truncation to the model's context that
//! keeps the end-of-text token, and batches padded to their longest text.

use crate::{Error, Result};
use std::path::Path;

/// A CLIP tokenizer bound to a context length.
pub struct ClipTokenizer {
    inner: tokenizers::Tokenizer,
    context: usize,
    pad: u32,
}

/// A batch of tokenized texts.
#[derive(Clone, Debug, PartialEq)]
pub struct TextBatch {
    /// One row per text, all of one length: the ids, then padding.
    pub ids: Vec<Vec<u32>>,
    /// The indices of the texts that were cut to fit the context.
    pub truncated: Vec<usize>,
}

impl ClipTokenizer {
    /// Reads `path` (a `tokenizer.json`) for a model of `context` positions; `pad` pads
    /// batches where the vocabulary has no `<|endoftext|>` (CLIP pads with it).
    pub fn from_file(path: &Path, context: usize, pad: u32) -> Result<Self> {
        if !path.exists() {
            return Err(Error::Checkpoint {
                path: path.to_path_buf(),
                msg: "missing: text needs the model's tokenizer.json".into(),
            });
        }
        let mut inner = tokenizers::Tokenizer::from_file(path).map_err(|e| Error::Checkpoint {
            path: path.to_path_buf(),
            msg: format!("cannot read the tokenizer: {e}"),
        })?;
        inner
            .with_truncation(Some(tokenizers::TruncationParams {
                max_length: context,
                ..Default::default()
            }))
            .map_err(|e| Error::invalid("tokenizer", e.to_string()))?;
        let pad = inner.token_to_id("<|endoftext|>").unwrap_or(pad);
        Ok(ClipTokenizer {
            inner,
            context,
            pad,
        })
    }

    /// The ids of `text` with BOS and EOS, cut to the context (EOS kept), and whether it
    /// was cut.
    pub fn encode(&self, text: &str) -> Result<(Vec<u32>, bool)> {
        let enc = self
            .inner
            .encode(text, true)
            .map_err(|e| Error::invalid("tokenizer", format!("cannot encode {text:?}: {e}")))?;
        let ids = enc.get_ids().to_vec();
        debug_assert!(ids.len() <= self.context);
        Ok((ids, !enc.get_overflowing().is_empty()))
    }

    /// `texts` tokenized and padded to the longest.
    pub fn batch(&self, texts: &[String]) -> Result<TextBatch> {
        let mut ids = Vec::with_capacity(texts.len());
        let mut truncated = Vec::new();
        for (i, t) in texts.iter().enumerate() {
            let (row, cut) = self.encode(t)?;
            if cut {
                truncated.push(i);
            }
            ids.push(row);
        }
        let len = ids.iter().map(Vec::len).max().unwrap_or(0);
        for row in &mut ids {
            row.resize(len, self.pad);
        }
        Ok(TextBatch { ids, truncated })
    }
}
