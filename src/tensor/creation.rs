//! Ways to make a tensor: constants, ranges, host vectors and seeded random values.

use super::Tensor;
use crate::backend::cpu::{CpuStorage, IntoCpuStorage};
use crate::storage::Storage;
use crate::{DType, Device, Error, Result, Rng};

/// The element count of `shape`, or an error when the product overflows (a shape read
/// from a file must never wrap around to a small buffer).
pub(crate) fn checked_numel(op: &'static str, shape: &[usize]) -> Result<usize> {
    shape
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .filter(|&n| n <= isize::MAX as usize / 8)
        .ok_or_else(|| Error::invalid(op, format!("shape {shape:?} has too many elements")))
}

/// A tensor of `shape` filled in order by `sample` (drawn on the host, then placed).
fn sampled(
    shape: &[usize],
    dtype: DType,
    device: Device,
    mut sample: impl FnMut() -> f64,
) -> Result<Tensor> {
    device.check()?;
    let values: Vec<f64> = (0..checked_numel("random", shape)?)
        .map(|_| sample())
        .collect();
    place(CpuStorage::from_f64s(dtype, &values), shape, device)
}

/// Host storage placed on `device` (a copy when the device is a GPU).
fn place(storage: CpuStorage, shape: &[usize], device: Device) -> Result<Tensor> {
    Tensor::from_cpu(storage, shape, None).to_device(device)
}

impl Tensor {
    /// A tensor of `shape` filled with `value` (rounded to `dtype`).
    pub fn full(value: f64, shape: &[usize], dtype: DType, device: Device) -> Result<Tensor> {
        let n = checked_numel("full", shape)?;
        Ok(Tensor::from_storage(
            Storage::full(device, dtype, n, value)?,
            shape,
            None,
        ))
    }

    /// A tensor of zeros. The buffer is freshly zeroed, never recycled.
    pub fn zeros(shape: &[usize], dtype: DType, device: Device) -> Result<Tensor> {
        Tensor::full(0.0, shape, dtype, device)
    }

    /// A tensor of ones.
    pub fn ones(shape: &[usize], dtype: DType, device: Device) -> Result<Tensor> {
        Tensor::full(1.0, shape, dtype, device)
    }

    /// Zeros with this tensor's shape, dtype and device.
    pub fn zeros_like(&self) -> Result<Tensor> {
        Tensor::zeros(self.shape(), self.dtype(), self.device())
    }

    /// Ones with this tensor's shape, dtype and device.
    pub fn ones_like(&self) -> Result<Tensor> {
        Tensor::ones(self.shape(), self.dtype(), self.device())
    }

    /// A one-element tensor of shape `[]`.
    pub fn scalar(value: f64, dtype: DType, device: Device) -> Result<Tensor> {
        Tensor::full(value, &[], dtype, device)
    }

    /// A tensor that takes ownership of `data`, laid out row-major as `shape`.
    pub fn from_vec<T: IntoCpuStorage>(
        data: Vec<T>,
        shape: &[usize],
        device: Device,
    ) -> Result<Tensor> {
        device.check()?;
        let n = checked_numel("from_vec", shape)?;
        if data.len() != n {
            return Err(Error::invalid(
                "from_vec",
                format!(
                    "{} elements cannot fill shape {shape:?} ({n} elements)",
                    data.len()
                ),
            ));
        }
        place(T::into_storage(data), shape, device)
    }

    /// A tensor copied from a slice.
    pub fn from_slice<T: IntoCpuStorage>(
        data: &[T],
        shape: &[usize],
        device: Device,
    ) -> Result<Tensor> {
        Tensor::from_vec(data.to_vec(), shape, device)
    }

    /// `start, start + step, ...` below `end`, as a 1-D tensor of `dtype`.
    pub fn arange_step(
        start: f64,
        end: f64,
        step: f64,
        dtype: DType,
        device: Device,
    ) -> Result<Tensor> {
        device.check()?;
        if step == 0.0 || !step.is_finite() || !start.is_finite() || !end.is_finite() {
            return Err(Error::invalid(
                "arange",
                format!("bad range {start}..{end} step {step}"),
            ));
        }
        let n = ((end - start) / step).ceil().max(0.0) as usize;
        let values: Vec<f64> = (0..n).map(|i| start + i as f64 * step).collect();
        place(CpuStorage::from_f64s(dtype, &values), &[n], device)
    }

    /// `0, 1, ..., end - 1` as a 1-D tensor of `dtype`.
    pub fn arange(end: usize, dtype: DType, device: Device) -> Result<Tensor> {
        Tensor::arange_step(0.0, end as f64, 1.0, dtype, device)
    }

    /// Uniform samples in `[lo, hi)` from a seeded generator.
    pub fn rand(
        shape: &[usize],
        lo: f64,
        hi: f64,
        dtype: DType,
        device: Device,
        rng: &mut Rng,
    ) -> Result<Tensor> {
        sampled(shape, dtype, device, || lo + (hi - lo) * rng.uniform())
    }

    /// Normal samples with the given mean and standard deviation from a seeded generator
    /// (with `std` 0, every element is `mean` and the generator is left untouched).
    pub fn randn(
        shape: &[usize],
        mean: f64,
        std: f64,
        dtype: DType,
        device: Device,
        rng: &mut Rng,
    ) -> Result<Tensor> {
        if std == 0.0 {
            return Tensor::full(mean, shape, dtype, device);
        }
        sampled(shape, dtype, device, || mean + std * rng.normal())
    }
}
