//! Weight matrices kept in their ggml quantized encoding (Q4_0 .. Q6_K) on the CPU or a GPU.
//! Products and row lookups dequantize inside the kernel, so a Q4 model occupies about a
//! seventh of its f32 size and decoding reads only the quantized bytes.
//!
//! A matrix may be a vertical stack of parts of different types (a fused Q/K/V projection
//! whose V rows were quantized more finely, as llama.cpp's mixed formats do).

use crate::backend::interface::QPart as BackendPart;
use crate::ggml_types::{first_non_finite_scale, GgmlType};
use crate::storage::Storage;
use crate::{DType, Device, Error, Result, Tensor};

/// Rows of one quantized type: `rows × row_bytes` bytes in a u8 tensor.
#[derive(Clone, Debug)]
struct QPart {
    ty: GgmlType,
    rows: usize,
    data: Tensor,
}

/// An `[rows, cols]` matrix of quantized rows, used as `x @ W^T` by [`QMatrix::linear`]
/// and as an embedding table by [`QMatrix::embedding`]. Inference only: no gradients.
#[derive(Clone, Debug)]
pub struct QMatrix {
    cols: usize,
    parts: Vec<QPart>,
}

fn err(msg: impl Into<String>) -> Error {
    Error::invalid("quantized matrix", msg)
}

/// True for the types a [`QMatrix`] holds (every quantized type smith reads).
pub fn is_quantized(ty: GgmlType) -> bool {
    ty.is_block_quantized()
}

impl QMatrix {
    /// A matrix from the raw bytes of `rows` rows of `cols` values of type `ty` (as stored
    /// in a GGUF file), placed on `device`.
    pub fn from_bytes(
        ty: GgmlType,
        rows: usize,
        cols: usize,
        bytes: &[u8],
        device: Device,
    ) -> Result<Self> {
        Self::from_parts(cols, &[(ty, rows, bytes)], device)
    }

    /// A vertical stack of parts `(type, rows, bytes)`, all `cols` wide. Adjacent parts of
    /// one type are joined into one.
    pub fn from_parts(
        cols: usize,
        parts: &[(GgmlType, usize, &[u8])],
        device: Device,
    ) -> Result<Self> {
        let mut merged: Vec<(GgmlType, usize, Vec<u8>)> = Vec::new();
        for &(ty, rows, bytes) in parts {
            if !is_quantized(ty) {
                return Err(err(format!("{} is not a quantized type", ty.name())));
            }
            let (per, block_bytes) = ty.block();
            if cols == 0 || !cols.is_multiple_of(per) {
                return Err(err(format!(
                    "rows of {cols} values are not whole {} blocks of {per}",
                    ty.name()
                )));
            }
            if bytes.len() != rows * (cols / per) * block_bytes {
                return Err(err(format!(
                    "{} bytes do not hold {rows} rows of {cols} {} values",
                    bytes.len(),
                    ty.name()
                )));
            }
            if let Some(block) = first_non_finite_scale(ty, bytes) {
                return Err(err(format!(
                    "block {block} of the {} data has a NaN or infinite scale",
                    ty.name()
                )));
            }
            match merged.last_mut() {
                Some((t, r, b)) if *t == ty => {
                    *r += rows;
                    b.extend_from_slice(bytes);
                }
                _ => merged.push((ty, rows, bytes.to_vec())),
            }
        }
        if merged.is_empty() {
            return Err(err("a matrix needs at least one part"));
        }
        let parts = merged
            .into_iter()
            .map(|(ty, rows, bytes)| {
                let n = bytes.len();
                Ok(QPart {
                    ty,
                    rows,
                    data: Tensor::from_vec(bytes, &[n], Device::Cpu)?.to_device(device)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(QMatrix { cols, parts })
    }

    /// `[rows, cols]`.
    pub fn shape(&self) -> [usize; 2] {
        [self.parts.iter().map(|p| p.rows).sum(), self.cols]
    }

    /// Bytes of quantized data (what one product reads).
    pub fn nbytes(&self) -> usize {
        self.parts.iter().map(|p| p.data.numel()).sum()
    }

    /// The types of the parts, top to bottom, with their row counts.
    pub fn types(&self) -> Vec<(GgmlType, usize)> {
        self.parts.iter().map(|p| (p.ty, p.rows)).collect()
    }

    /// Where the data lives.
    pub fn device(&self) -> Device {
        self.parts[0].data.device()
    }

    /// The same matrix on `device`.
    pub fn to_device(&self, device: Device) -> Result<Self> {
        Ok(QMatrix {
            cols: self.cols,
            parts: self
                .parts
                .iter()
                .map(|p| {
                    Ok(QPart {
                        data: p.data.to_device(device)?,
                        ..p.clone()
                    })
                })
                .collect::<Result<_>>()?,
        })
    }

    /// Runs `f` on the parts as the backend sees them (read-locked meanwhile).
    fn with_parts<R>(&self, f: impl FnOnce(&[BackendPart<'_, Storage>]) -> Result<R>) -> Result<R> {
        let guards: Vec<_> = self.parts.iter().map(|p| p.data.read_storage()).collect();
        let views: Vec<_> = self
            .parts
            .iter()
            .zip(&guards)
            .map(|(p, g)| BackendPart {
                ty: p.ty,
                rows: p.rows,
                data: (&**g, p.data.layout()),
            })
            .collect();
        f(&views)
    }

    /// The whole matrix as a dense `[rows, cols]` tensor of `dtype`.
    pub fn dequantize(&self, dtype: DType) -> Result<Tensor> {
        let [rows, cols] = self.shape();
        let out = self.with_parts(|parts| Storage::quant_rows(parts, cols, None, dtype))?;
        Ok(Tensor::from_storage(out, &[rows, cols], None))
    }

    /// Rows for integer `ids` of any shape, dequantized to `dtype`: `ids.shape + [cols]`
    /// (an embedding lookup). On the CPU an id out of range is an error; on a GPU it reads
    /// as NaN, as [`Tensor::embedding`] does.
    pub fn embedding(&self, ids: &Tensor, dtype: DType) -> Result<Tensor> {
        if !ids.dtype().is_index() {
            return Err(Error::UnsupportedDType {
                op: "quantized embedding",
                dtype: ids.dtype(),
            });
        }
        if ids.device() != self.device() {
            return Err(err(format!(
                "ids on {} but the table on {}",
                ids.device(),
                self.device()
            )));
        }
        let cols = self.cols;
        let mut shape = ids.shape().to_vec();
        shape.push(cols);
        let idx = ids.read_storage();
        let out = self.with_parts(|parts| {
            Storage::quant_rows(parts, cols, Some((&*idx, ids.layout())), dtype)
        })?;
        Ok(Tensor::from_storage(out, &shape, None))
    }

    /// `x @ W^T` for `x [.., cols]` of a float dtype, giving `[.., rows]` in x's dtype.
    /// Up to eight activation rows on a GPU read the quantized weight directly (one warp
    /// per output column); more rows dequantize it into a scratch buffer for one GEMM.
    pub fn linear(&self, x: &Tensor) -> Result<Tensor> {
        let [rows, cols] = self.shape();
        if x.rank() == 0 || x.shape().last() != Some(&cols) {
            return Err(Error::ShapeMismatch {
                op: "quantized linear",
                lhs: x.shape().to_vec(),
                rhs: vec![rows, cols],
            });
        }
        if !matches!(x.dtype(), DType::F32 | DType::F16 | DType::BF16) {
            return Err(Error::UnsupportedDType {
                op: "quantized matrix",
                dtype: x.dtype(),
            });
        }
        if x.tracks_grad() && crate::autograd::is_grad_enabled() {
            return Err(err(
                "quantized weights are for inference: run under `no_grad` or load dense weights",
            ));
        }
        if x.device() != self.device() {
            return Err(err(format!(
                "input on {} but the weight on {}",
                x.device(),
                self.device()
            )));
        }
        let lead = &x.shape()[..x.rank() - 1];
        let m: usize = lead.iter().product();
        let mut shape = lead.to_vec();
        shape.push(rows);
        let x2 = x.reshape(&[m, cols])?.contiguous()?;
        if m > x2.read_storage().quant_linear_max_rows() {
            let w = self.dequantize(x.dtype())?;
            return x2.linear(&w, None)?.reshape(&shape);
        }
        let xs = x2.read_storage();
        let out = self.with_parts(|parts| xs.quant_linear(x2.layout(), parts, cols))?;
        Ok(Tensor::from_storage(out, &shape, None))
    }
}
