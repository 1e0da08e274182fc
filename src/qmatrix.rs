//! Weight matrices kept in their ggml quantized encoding (Q4_0 .. Q6_K) on the CPU or a GPU.
//! Products and row lookups dequantize inside the kernel, so a Q4 model occupies about a
//! seventh of its f32 size and decoding reads only the quantized bytes.
//!
//! A matrix may be a vertical stack of parts of different types (a fused Q/K/V projection
//! whose V rows were quantized more finely, as llama.cpp's mixed formats do).

use crate::backend::{cpu, cuda};
use crate::io::quant::{first_non_finite_scale, GgmlType};
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
    cuda::quant_kernel_name(ty).is_some()
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

    fn qshape(&self, p: &QPart) -> cuda::QShape {
        cuda::QShape {
            ty: p.ty,
            rows: p.rows,
            k: self.cols,
        }
    }

    /// The whole matrix as a dense `[rows, cols]` tensor of `dtype`.
    pub fn dequantize(&self, dtype: DType) -> Result<Tensor> {
        let [rows, cols] = self.shape();
        if self.device() == Device::Cpu {
            let mut values = Vec::with_capacity(rows * cols);
            for p in &self.parts {
                with_bytes(&p.data, |b| {
                    values.extend(cpu::qrows(
                        b,
                        p.ty,
                        p.rows,
                        cols,
                        &(0..p.rows).collect::<Vec<_>>(),
                    ))
                })?;
            }
            return Tensor::from_vec(values, &[rows, cols], Device::Cpu)?.to_dtype(dtype);
        }
        check_float(dtype)?;
        let out = {
            let first = self.parts[0].data.read_storage();
            let Storage::Cuda(s) = &*first else {
                return Err(err("parts on different devices"));
            };
            cuda::CudaStorage::alloc(s.device(), dtype, rows * cols)?
        };
        let mut row0 = 0;
        for p in &self.parts {
            let data = p.data.read_storage();
            let Storage::Cuda(w) = &*data else {
                return Err(err("parts on different devices"));
            };
            cuda::qrows_into(w, self.qshape(p), None, p.rows, &out, row0 * cols)?;
            row0 += p.rows;
        }
        Ok(Tensor::from_storage(
            Storage::Cuda(out),
            &[rows, cols],
            None,
        ))
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
        let [rows, cols] = self.shape();
        if self.parts.len() != 1 {
            return Err(err("an embedding table must be a single part"));
        }
        let p = &self.parts[0];
        let mut shape = ids.shape().to_vec();
        shape.push(cols);
        if self.device() == Device::Cpu {
            let ids: Vec<usize> = ids
                .to_vec_f64()?
                .into_iter()
                .map(|id| {
                    if id >= 0.0 && (id as usize) < rows {
                        Ok(id as usize)
                    } else {
                        Err(err(format!(
                            "token id {id} is outside the table of {rows} rows"
                        )))
                    }
                })
                .collect::<Result<_>>()?;
            let values = with_bytes(&p.data, |b| cpu::qrows(b, p.ty, rows, cols, &ids))?;
            return Tensor::from_vec(values, &shape, Device::Cpu)?.to_dtype(dtype);
        }
        check_float(dtype)?;
        let n = ids.numel();
        let (data, idx) = (p.data.read_storage(), ids.read_storage());
        let (Storage::Cuda(w), Storage::Cuda(is)) = (&*data, &*idx) else {
            return Err(err("ids and table on different devices"));
        };
        let out = cuda::CudaStorage::alloc(w.device(), dtype, n * cols)?;
        cuda::qrows_into(w, self.qshape(p), Some((is, ids.layout())), n, &out, 0)?;
        Ok(Tensor::from_storage(Storage::Cuda(out), &shape, None))
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
        check_float(x.dtype())?;
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
        if self.device() == Device::Cpu {
            let xs = x2.to_dtype(DType::F32)?.to_vec::<f32>()?;
            let mut pieces = Vec::with_capacity(self.parts.len());
            for p in &self.parts {
                let y = with_bytes(&p.data, |b| cpu::qmatmul(b, p.ty, p.rows, cols, &xs, m))?;
                pieces.push(Tensor::from_vec(y, &[m, p.rows], Device::Cpu)?);
            }
            let y = if pieces.len() == 1 {
                pieces.pop().ok_or_else(|| err("no parts"))?
            } else {
                Tensor::cat(&pieces, 1)?
            };
            return y.to_dtype(x.dtype())?.reshape(&shape);
        }
        if m > cuda::QGEMV_MAX_ROWS {
            let w = self.dequantize(x.dtype())?;
            return x2.linear(&w, None)?.reshape(&shape);
        }
        let xs = x2.read_storage();
        let Storage::Cuda(xc) = &*xs else {
            return Err(err("input not on the GPU"));
        };
        let out = cuda::CudaStorage::alloc(xc.device(), x.dtype(), m * rows)?;
        let mut col0 = 0;
        for p in &self.parts {
            let data = p.data.read_storage();
            let Storage::Cuda(w) = &*data else {
                return Err(err("parts on different devices"));
            };
            cuda::qgemv(w, self.qshape(p), xc, x2.layout(), &out, col0, rows)?;
            col0 += p.rows;
        }
        Ok(Tensor::from_storage(Storage::Cuda(out), &shape, None))
    }
}

fn check_float(dtype: DType) -> Result<()> {
    if matches!(dtype, DType::F32 | DType::F16 | DType::BF16) {
        Ok(())
    } else {
        Err(Error::UnsupportedDType {
            op: "quantized matrix",
            dtype,
        })
    }
}

/// Runs `f` on the bytes of a u8 tensor on the CPU.
fn with_bytes<R>(t: &Tensor, f: impl FnOnce(&[u8]) -> R) -> Result<R> {
    let s = t.read_storage();
    match s.cpu()? {
        cpu::CpuStorage::U8(v) => Ok(f(&v[t.layout().offset()..t.layout().offset() + t.numel()])),
        _ => Err(err("quantized data must be bytes")),
    }
}
