//! Training batches for the GPT: random (or ordered) windows of a token sequence from
//! the train and held-out splits.

use crate::{Device, Error, Result, Rng, Tensor};

/// Which part of the corpus a batch comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Split {
    Train,
    Val,
}

/// A tokenized corpus cut into a training part and a held-out part (the last 10%).
pub struct TextDataset {
    train: Vec<u32>,
    val: Vec<u32>,
}

impl TextDataset {
    /// Splits `ids` 90/10; both parts must be longer than `seq_len`.
    pub fn new(ids: Vec<u32>, seq_len: usize) -> Result<Self> {
        let cut = ids.len() * 9 / 10;
        let (train, val) = (ids[..cut].to_vec(), ids[cut..].to_vec());
        if val.len() <= seq_len || train.len() <= seq_len {
            return Err(Error::invalid(
                "dataset",
                format!(
                    "{} tokens are too few for sequences of {seq_len}",
                    ids.len()
                ),
            ));
        }
        Ok(TextDataset { train, val })
    }

    /// Number of tokens in a split.
    pub fn len(&self, split: Split) -> usize {
        self.tokens(split).len()
    }

    fn tokens(&self, split: Split) -> &[u32] {
        match split {
            Split::Train => &self.train,
            Split::Val => &self.val,
        }
    }

    /// Batch number `index` of a pass through the split in order: `batch` consecutive
    /// windows of `seq` tokens (targets shifted by one), wrapping to the start when the
    /// split runs out. It depends only on `index`, so a resumed run and another framework
    /// reading the same token file see exactly the same batches.
    pub fn ordered_batch(
        &self,
        split: Split,
        batch: usize,
        seq: usize,
        index: u64,
        device: Device,
    ) -> Result<(Tensor, Tensor)> {
        let data = self.tokens(split);
        let span = batch * seq;
        // Whole batches that fit with the one extra target token; at least one, because
        // each window fits (the split is longer than `seq`).
        let per_pass = ((data.len() - 1) / span).max(1) as u64;
        let start = (index % per_pass) as usize * span;
        let mut x = Vec::with_capacity(span);
        let mut y = Vec::with_capacity(span);
        for row in 0..batch {
            // A split shorter than a whole batch repeats its windows from the start.
            let s = (start + row * seq) % (data.len() - seq);
            x.extend(data[s..s + seq].iter().map(|&t| t as i64));
            y.extend(data[s + 1..s + seq + 1].iter().map(|&t| t as i64));
        }
        Ok((
            Tensor::from_vec(x, &[batch, seq], device)?,
            Tensor::from_vec(y, &[batch, seq], device)?,
        ))
    }

    /// `batch` windows at random offsets: inputs and next-token targets, both `[batch, seq]`.
    pub fn batch(
        &self,
        split: Split,
        batch: usize,
        seq: usize,
        rng: &mut Rng,
        device: Device,
    ) -> Result<(Tensor, Tensor)> {
        let data = self.tokens(split);
        let mut x = Vec::with_capacity(batch * seq);
        let mut y = Vec::with_capacity(batch * seq);
        for _ in 0..batch {
            let start = rng.below((data.len() - seq) as u64) as usize;
            x.extend(data[start..start + seq].iter().map(|&t| t as i64));
            y.extend(data[start + 1..start + seq + 1].iter().map(|&t| t as i64));
        }
        Ok((
            Tensor::from_vec(x, &[batch, seq], device)?,
            Tensor::from_vec(y, &[batch, seq], device)?,
        ))
    }
}
