//! The tensor type: shared storage plus a layout, with an optional autograd record.

mod creation;
mod display;

use crate::autograd::Op;
use crate::backend::cpu::{CpuStorage, IntoCpuStorage};
use crate::storage::Storage;
use crate::{DType, Device, Error, Layout, Result};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

/// A process-unique tensor identity, used as the key of gradient stores.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TensorId(usize);

impl TensorId {
    fn fresh() -> Self {
        static NEXT: AtomicUsize = AtomicUsize::new(1);
        TensorId(NEXT.fetch_add(1, Ordering::Relaxed))
    }
}

/// An n-dimensional array on a device. Cloning is cheap (a reference count); views share
/// storage with the tensor they come from.
#[derive(Clone)]
pub struct Tensor(Arc<TensorInner>);

pub(crate) struct TensorInner {
    id: TensorId,
    storage: Arc<RwLock<Storage>>,
    layout: Layout,
    dtype: DType,
    device: Device,
    op: Option<Op>,
    is_variable: bool,
}

impl Tensor {
    /// Wraps fresh host storage (contiguous layout of `shape`) as a tensor with an
    /// optional autograd record.
    pub(crate) fn from_cpu(storage: CpuStorage, shape: &[usize], op: Option<Op>) -> Tensor {
        Tensor::from_storage(Storage::Cpu(storage), shape, op)
    }

    /// Wraps fresh storage on any device (contiguous layout of `shape`).
    pub(crate) fn from_storage(storage: Storage, shape: &[usize], op: Option<Op>) -> Tensor {
        Tensor::from_storage_in(storage, Layout::contiguous(shape), op)
    }

    /// Wraps fresh storage on any device, read through `layout` (a backend's result that
    /// is a view of its buffer).
    pub(crate) fn from_storage_in(storage: Storage, layout: Layout, op: Option<Op>) -> Tensor {
        let (dtype, device) = (storage.dtype(), storage.device());
        Tensor(Arc::new(TensorInner {
            id: TensorId::fresh(),
            storage: Arc::new(RwLock::new(storage)),
            layout,
            dtype,
            device,
            op,
            is_variable: false,
        }))
    }

    /// A contiguous host copy of the elements, whatever the device (waits for the GPU).
    pub(crate) fn to_host(&self) -> Result<CpuStorage> {
        self.read_storage().to_host(self.layout())
    }

    /// This tensor on `device`: the same tensor when already there, else an explicit copy
    /// (contiguous) that gradients flow through.
    pub fn to_device(&self, device: Device) -> Result<Tensor> {
        if device == self.device() {
            return Ok(self.clone());
        }
        let storage = Storage::from_host(self.to_host()?, device)?;
        let rec = crate::autograd::record(&[self], || Op::ToDevice(self.clone()));
        Ok(Tensor::from_storage(storage, self.shape(), rec))
    }

    /// A view of this tensor's storage under another layout.
    pub(crate) fn view_with(&self, layout: Layout, op: Option<Op>) -> Tensor {
        Tensor(Arc::new(TensorInner {
            id: TensorId::fresh(),
            storage: self.0.storage.clone(),
            layout,
            dtype: self.0.dtype,
            device: self.0.device,
            op,
            is_variable: false,
        }))
    }

    /// Unique identity of this tensor (views have their own).
    pub fn id(&self) -> TensorId {
        self.0.id
    }

    /// Logical shape.
    pub fn shape(&self) -> &[usize] {
        self.0.layout.shape()
    }

    /// Alias of [`Tensor::shape`].
    pub fn dims(&self) -> &[usize] {
        self.shape()
    }

    /// Size of one dimension, or an error naming the op when out of range.
    pub fn dim(&self, d: usize) -> Result<usize> {
        self.0.layout.check_dim("dim", d)?;
        Ok(self.shape()[d])
    }

    /// Number of dimensions.
    pub fn rank(&self) -> usize {
        self.shape().len()
    }

    /// Number of elements.
    pub fn numel(&self) -> usize {
        self.0.layout.numel()
    }

    /// Element type.
    pub fn dtype(&self) -> DType {
        self.0.dtype
    }

    /// Device holding the storage.
    pub fn device(&self) -> Device {
        self.0.device
    }

    /// Shape, strides and offset.
    pub fn layout(&self) -> &Layout {
        &self.0.layout
    }

    /// True when the layout is row-major without gaps.
    pub fn is_contiguous(&self) -> bool {
        self.0.layout.is_contiguous()
    }

    /// True for a leaf created with [`Tensor::requires_grad`].
    pub fn is_variable(&self) -> bool {
        self.0.is_variable
    }

    /// True when gradients flow through this tensor (a variable, or the result of an op
    /// on one recorded while grad mode was on).
    pub fn tracks_grad(&self) -> bool {
        self.0.is_variable || self.0.op.is_some()
    }

    pub(crate) fn op(&self) -> Option<&Op> {
        self.0.op.as_ref()
    }

    /// True when both tensors are views of one storage.
    pub fn shares_storage_with(&self, other: &Tensor) -> bool {
        Arc::ptr_eq(&self.0.storage, &other.0.storage)
    }

    pub(crate) fn read_storage(&self) -> RwLockReadGuard<'_, Storage> {
        // A poisoned lock only means another thread panicked mid-write; the data is still
        // the best we have, so recover it rather than propagate the panic.
        self.0.storage.read().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn write_storage(&self) -> RwLockWriteGuard<'_, Storage> {
        self.0.storage.write().unwrap_or_else(|e| e.into_inner())
    }

    /// A leaf that shares this tensor's storage and requires grad: a trainable parameter.
    pub fn requires_grad(&self) -> Result<Tensor> {
        if !self.dtype().is_float() {
            return Err(Error::UnsupportedDType {
                op: "requires_grad",
                dtype: self.dtype(),
            });
        }
        Ok(Tensor(Arc::new(TensorInner {
            id: TensorId::fresh(),
            storage: self.0.storage.clone(),
            layout: self.0.layout.clone(),
            dtype: self.0.dtype,
            device: self.0.device,
            op: None,
            is_variable: true,
        })))
    }

    /// The same data cut out of the autograd graph (shares storage).
    pub fn detach(&self) -> Tensor {
        self.view_with(self.0.layout.clone(), None)
    }

    /// The elements in logical order as a vector of `T`; the dtype must match `T`.
    pub fn to_vec<T: IntoCpuStorage>(&self) -> Result<Vec<T>> {
        if self.dtype() != T::DTYPE {
            return Err(Error::DTypeMismatch {
                op: "to_vec",
                lhs: self.dtype(),
                rhs: T::DTYPE,
            });
        }
        let host = self.to_host()?;
        let slice = T::slice(&host).ok_or(Error::UnsupportedDType {
            op: "to_vec",
            dtype: self.dtype(),
        })?;
        Ok(slice.to_vec())
    }

    /// The elements in logical order converted to f64, whatever the dtype.
    pub fn to_vec_f64(&self) -> Result<Vec<f64>> {
        let host = self.to_host()?;
        Ok(host.to_f64s(&Layout::contiguous(self.shape())))
    }

    /// The elements in logical order converted to f32, whatever the dtype.
    pub fn to_vec_f32(&self) -> Result<Vec<f32>> {
        Ok(self.to_vec_f64()?.into_iter().map(|v| v as f32).collect())
    }

    /// The single value of a one-element tensor, as f64.
    pub fn to_scalar(&self) -> Result<f64> {
        if self.numel() != 1 {
            return Err(Error::invalid(
                "to_scalar",
                format!("expected one element, got shape {:?}", self.shape()),
            ));
        }
        Ok(self.to_vec_f64()?[0])
    }

    /// Overwrites this tensor's elements with `src`'s (same shape and dtype). The tensor
    /// must be contiguous and own its whole storage span; used by optimizers and loaders.
    pub fn assign(&self, src: &Tensor) -> Result<()> {
        if src.shape() != self.shape() {
            return Err(Error::ShapeMismatch {
                op: "assign",
                lhs: self.shape().to_vec(),
                rhs: src.shape().to_vec(),
            });
        }
        if src.dtype() != self.dtype() {
            return Err(Error::DTypeMismatch {
                op: "assign",
                lhs: self.dtype(),
                rhs: src.dtype(),
            });
        }
        if !self.is_contiguous() {
            return Err(Error::invalid("assign", "destination must be contiguous"));
        }
        // A source on another device, or sharing this storage, is first copied, so the
        // backend never reads what it writes and no lock is taken twice.
        let src = if src.device() != self.device() {
            src.to_device(self.device())?
        } else if src.shares_storage_with(self) {
            src.copy()?
        } else {
            src.clone()
        };
        let from = src.read_storage();
        self.write_storage()
            .assign(self.layout(), (&from, src.layout()))
    }

    /// Runs `f` on the mutable contiguous f32 elements of this tensor (used by optimizers).
    pub(crate) fn with_f32_mut<R>(&self, f: impl FnOnce(&mut [f32]) -> R) -> Result<R> {
        if !self.is_contiguous() {
            return Err(Error::invalid("update", "parameter must be contiguous"));
        }
        let (off, n) = (self.layout().offset(), self.numel());
        let mut guard = self.write_storage();
        match guard.cpu_mut()? {
            CpuStorage::F32(v) => Ok(f(&mut v[off..off + n])),
            other => Err(Error::UnsupportedDType {
                op: "update",
                dtype: other.dtype(),
            }),
        }
    }
}

impl std::fmt::Debug for Tensor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Tensor[id={:?}, shape={:?}, dtype={}, device={}]",
            self.id(),
            self.shape(),
            self.dtype(),
            self.device()
        )
    }
}
