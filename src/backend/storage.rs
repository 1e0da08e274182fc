//! Device storage behind a tensor: one variant per backend.

use super::cpu::CpuStorage;
use super::cuda::CudaStorage;
use super::interface::{
    AdamWSlot, AdamWStep, AttnShape, BackendStorage, ConvPass, DecodeShape, Epilogue, Gemv,
    GemvNorm, QPart, View,
};
use super::{BinaryOp, CmpOp, NormKind, ReduceOp, RotaryStyle, UnaryOp};
use crate::{DType, Device, Error, Layout, Result};

/// A buffer on some device. Views of one tensor share a single `Storage`.
#[derive(Debug)]
pub enum Storage {
    /// Host memory.
    Cpu(CpuStorage),
    /// GPU memory.
    Cuda(CudaStorage),
}

/// The host storage under a view, if it is one.
fn as_cpu<'a>((t, l): View<'a, Storage>) -> Option<View<'a, CpuStorage>> {
    match t {
        Storage::Cpu(t) => Some((t, l)),
        _ => None,
    }
}

/// The GPU storage under a view, if it is one.
fn as_cuda<'a>((t, l): View<'a, Storage>) -> Option<View<'a, CudaStorage>> {
    match t {
        Storage::Cuda(t) => Some((t, l)),
        _ => None,
    }
}

impl Storage {
    /// Element type of the buffer.
    pub fn dtype(&self) -> DType {
        match self {
            Storage::Cpu(s) => s.dtype(),
            Storage::Cuda(s) => s.dtype(),
        }
    }

    /// Device that holds the buffer.
    pub fn device(&self) -> Device {
        match self {
            Storage::Cpu(_) => Device::Cpu,
            Storage::Cuda(s) => Device::Cuda(s.device().ordinal),
        }
    }

    /// The host buffer, or an error for ops that do not run on the GPU yet.
    pub fn cpu(&self) -> Result<&CpuStorage> {
        match self {
            Storage::Cpu(s) => Ok(s),
            Storage::Cuda(s) => Err(Error::DeviceUnavailable {
                device: Device::Cuda(s.device().ordinal),
                reason: "this op is not implemented on CUDA yet; move its inputs to the CPU with `to_device(Device::Cpu)`".into(),
            }),
        }
    }

    /// The host buffer, mutably (same rule as [`Storage::cpu`]).
    pub fn cpu_mut(&mut self) -> Result<&mut CpuStorage> {
        match self {
            Storage::Cpu(s) => Ok(s),
            Storage::Cuda(s) => Err(Error::DeviceUnavailable {
                device: Device::Cuda(s.device().ordinal),
                reason: "in-place updates are not implemented on CUDA yet".into(),
            }),
        }
    }
}

/// Buffers made, moved and overwritten: where a tensor's memory comes from.
impl Storage {
    /// `n` elements of `dtype`, all `value`, on `device`.
    pub fn full(device: Device, dtype: DType, n: usize, value: f64) -> Result<Storage> {
        match device {
            Device::Cpu => Ok(Storage::Cpu(CpuStorage::try_full(dtype, n, value)?)),
            Device::Cuda(i) => {
                let dev = super::cuda::device(i)?;
                Ok(Storage::Cuda(super::cuda::full(&dev, dtype, n, value)?))
            }
        }
    }

    /// A contiguous host copy of the elements under `layout` (waits for the GPU).
    pub fn to_host(&self, layout: &Layout) -> Result<CpuStorage> {
        match self {
            Storage::Cpu(s) => Ok(super::cpu::copy_contiguous(s, layout)),
            Storage::Cuda(s) => s.to_cpu(layout),
        }
    }

    /// The contiguous host buffer `host` on `device`.
    pub fn from_host(host: CpuStorage, device: Device) -> Result<Storage> {
        match device {
            Device::Cpu => Ok(Storage::Cpu(host)),
            Device::Cuda(i) => {
                let dev = super::cuda::device(i)?;
                let layout = Layout::contiguous(&[host.len()]);
                Ok(Storage::Cuda(CudaStorage::from_cpu(&dev, &host, &layout)?))
            }
        }
    }

    /// See [`BackendStorage::assign`].
    pub fn assign(&mut self, l: &Layout, (src, ls): View<'_, Storage>) -> Result<()> {
        match (self, src) {
            (Storage::Cpu(d), Storage::Cpu(s)) => d.assign(l, (s, ls)),
            (Storage::Cuda(d), Storage::Cuda(s)) => d.assign(l, (s, ls)),
            _ => Err(mixed_devices("assign")),
        }
    }
}

/// The error of an op whose inputs live on different devices.
fn mixed_devices(op: &'static str) -> Error {
    Error::invalid(op, "the inputs live on different devices")
}

/// Runs `$body` on the backend storages inside the `Storage`s named (all on one device),
/// wrapping the result back; inputs on different devices are an error.
macro_rules! on_backend {
    ($op:expr; $($v:ident),+ => $body:expr) => {
        match ($($v,)+) {
            ($(Storage::Cpu($v),)+) => Ok(Storage::Cpu($body)),
            ($(Storage::Cuda($v),)+) => Ok(Storage::Cuda($body)),
            #[allow(unreachable_patterns)]
            _ => Err(mixed_devices($op)),
        }
    };
}

/// An optional input narrowed to backend `S`, or the mixed-devices error of `op`.
fn on_same<'a, S>(
    op: &'static str,
    v: Option<View<'a, Storage>>,
    pick: fn(&'a Storage) -> Option<&'a S>,
) -> Result<Option<View<'a, S>>> {
    narrow_opt(v, pick).ok_or_else(|| mixed_devices(op))
}

/// The ops of [`BackendStorage`] on whichever backend holds the buffers: the one place
/// where the layers above meet a device.
impl Storage {
    /// See [`BackendStorage::unary`].
    pub fn unary(&self, l: &Layout, op: UnaryOp) -> Result<Storage> {
        let s = self;
        on_backend!("unary"; s => s.unary(l, op)?)
    }

    /// See [`BackendStorage::binary`].
    pub fn binary(&self, l: &Layout, (b, lb): View<'_, Storage>, op: BinaryOp) -> Result<Storage> {
        let a = self;
        on_backend!(op.name(); a, b => a.binary(l, (b, lb), op)?)
    }

    /// See [`BackendStorage::cmp`].
    pub fn cmp(&self, l: &Layout, (b, lb): View<'_, Storage>, op: CmpOp) -> Result<Storage> {
        let a = self;
        on_backend!("cmp"; a, b => a.cmp(l, (b, lb), op)?)
    }

    /// See [`BackendStorage::where_cond`].
    pub fn where_cond(
        &self,
        l: &Layout,
        (a, la): View<'_, Storage>,
        (b, lb): View<'_, Storage>,
    ) -> Result<Storage> {
        let c = self;
        on_backend!("where_cond"; c, a, b => c.where_cond(l, (a, la), (b, lb))?)
    }

    /// See [`BackendStorage::reduce`].
    pub fn reduce(&self, l: &Layout, dims: &[usize], op: ReduceOp) -> Result<Storage> {
        let s = self;
        on_backend!("reduce"; s => s.reduce(l, dims, op)?)
    }

    /// See [`BackendStorage::arg_reduce`].
    pub fn arg_reduce(&self, l: &Layout, dim: usize, max: bool) -> Result<Storage> {
        let s = self;
        on_backend!("argmax"; s => s.arg_reduce(l, dim, max)?)
    }

    /// See [`BackendStorage::copy_contiguous`].
    pub fn copy_contiguous(&self, l: &Layout) -> Result<Storage> {
        let s = self;
        on_backend!("contiguous"; s => s.copy_contiguous(l)?)
    }

    /// See [`BackendStorage::cast`].
    pub fn cast(&self, l: &Layout, dtype: DType) -> Result<Storage> {
        let s = self;
        on_backend!("to_dtype"; s => s.cast(l, dtype)?)
    }

    /// See [`BackendStorage::index_select`].
    pub fn index_select(
        &self,
        l: &Layout,
        dim: usize,
        (i, li): View<'_, Storage>,
    ) -> Result<Storage> {
        let s = self;
        on_backend!("index_select"; s, i => s.index_select(l, dim, (i, li))?)
    }

    /// See [`BackendStorage::gather`].
    pub fn gather(&self, l: &Layout, dim: usize, (i, li): View<'_, Storage>) -> Result<Storage> {
        let s = self;
        on_backend!("gather"; s, i => s.gather(l, dim, (i, li))?)
    }

    /// See [`BackendStorage::index_add_zeros`].
    pub fn index_add_zeros(
        &self,
        l: &Layout,
        out_shape: &[usize],
        dim: usize,
        (i, li): View<'_, Storage>,
    ) -> Result<Storage> {
        let s = self;
        on_backend!("index_select (backward)"; s, i => s.index_add_zeros(l, out_shape, dim, (i, li))?)
    }

    /// See [`BackendStorage::scatter_add`].
    pub fn scatter_add(
        &self,
        l: &Layout,
        dim: usize,
        (i, li): View<'_, Storage>,
        (src, ls): View<'_, Storage>,
    ) -> Result<Storage> {
        let d = self;
        on_backend!("scatter_add"; d, i, src => d.scatter_add(l, dim, (i, li), (src, ls))?)
    }

    /// See [`BackendStorage::cat`]; every part must live on the device of the first.
    pub fn cat(parts: &[View<'_, Storage>], dim: usize, out_shape: &[usize]) -> Result<Storage> {
        fn all<'a, S>(
            parts: &[View<'a, Storage>],
            pick: fn(&'a Storage) -> Option<&'a S>,
        ) -> Result<Vec<View<'a, S>>> {
            parts
                .iter()
                .map(|&p| narrow(p, pick).ok_or_else(|| mixed_devices("cat")))
                .collect()
        }
        match parts.first() {
            Some((Storage::Cuda(_), _)) => Ok(Storage::Cuda(CudaStorage::cat(
                &all(parts, pick_cuda)?,
                dim,
                out_shape,
            )?)),
            _ => Ok(Storage::Cpu(CpuStorage::cat(
                &all(parts, pick_cpu)?,
                dim,
                out_shape,
            )?)),
        }
    }

    /// See [`BackendStorage::matmul`].
    pub fn matmul(&self, l: &Layout, (b, lb): View<'_, Storage>) -> Result<Storage> {
        let a = self;
        on_backend!("matmul"; a, b => a.matmul(l, (b, lb))?)
    }

    /// See [`BackendStorage::softmax_last`].
    pub fn softmax_last(&self, l: &Layout, log: bool, causal: bool) -> Result<Storage> {
        let s = self;
        on_backend!("softmax"; s => s.softmax_last(l, log, causal)?)
    }

    /// See [`BackendStorage::softmax_last_backward`].
    pub fn softmax_last_backward(
        &self,
        l: &Layout,
        (g, lg): View<'_, Storage>,
        log: bool,
        causal: bool,
    ) -> Result<Storage> {
        let y = self;
        on_backend!("softmax (backward)"; y, g => y.softmax_last_backward(l, (g, lg), log, causal)?)
    }

    /// See [`BackendStorage::norm`].
    pub fn norm(
        &self,
        l: &Layout,
        weight: Option<View<'_, Storage>>,
        bias: Option<View<'_, Storage>>,
        kind: NormKind,
        eps: f64,
    ) -> Result<Storage> {
        Ok(match self {
            Storage::Cpu(x) => Storage::Cpu(x.norm(
                l,
                on_same("norm", weight, pick_cpu)?,
                on_same("norm", bias, pick_cpu)?,
                kind,
                eps,
            )?),
            Storage::Cuda(x) => Storage::Cuda(x.norm(
                l,
                on_same("norm", weight, pick_cuda)?,
                on_same("norm", bias, pick_cuda)?,
                kind,
                eps,
            )?),
        })
    }

    /// See [`BackendStorage::norm_backward`].
    pub fn norm_backward(
        &self,
        l: &Layout,
        (g, lg): View<'_, Storage>,
        weight: Option<View<'_, Storage>>,
        kind: NormKind,
        eps: f64,
    ) -> Result<(Storage, Storage, Storage)> {
        match (self, g) {
            (Storage::Cpu(x), Storage::Cpu(g)) => {
                let (dx, dw, db) =
                    x.norm_backward(l, (g, lg), on_same("norm", weight, pick_cpu)?, kind, eps)?;
                Ok((Storage::Cpu(dx), Storage::Cpu(dw), Storage::Cpu(db)))
            }
            (Storage::Cuda(x), Storage::Cuda(g)) => {
                let (dx, dw, db) =
                    x.norm_backward(l, (g, lg), on_same("norm", weight, pick_cuda)?, kind, eps)?;
                Ok((Storage::Cuda(dx), Storage::Cuda(dw), Storage::Cuda(db)))
            }
            _ => Err(mixed_devices("norm (backward)")),
        }
    }

    /// See [`BackendStorage::flash_attention`].
    pub fn flash_attention(
        &self,
        l: &Layout,
        (k, lk): View<'_, Storage>,
        (v, lv): View<'_, Storage>,
        shape: &AttnShape,
    ) -> Result<((Storage, Layout), Storage)> {
        match (self, k, v) {
            (Storage::Cpu(q), Storage::Cpu(k), Storage::Cpu(v)) => {
                let ((o, lo), lse) = q.flash_attention(l, (k, lk), (v, lv), shape)?;
                Ok(((Storage::Cpu(o), lo), Storage::Cpu(lse)))
            }
            (Storage::Cuda(q), Storage::Cuda(k), Storage::Cuda(v)) => {
                let ((o, lo), lse) = q.flash_attention(l, (k, lk), (v, lv), shape)?;
                Ok(((Storage::Cuda(o), lo), Storage::Cuda(lse)))
            }
            _ => Err(mixed_devices("flash_attention")),
        }
    }

    /// See [`BackendStorage::flash_attention_backward`].
    #[allow(clippy::too_many_arguments)]
    pub fn flash_attention_backward(
        &self,
        l: &Layout,
        (k, lk): View<'_, Storage>,
        (v, lv): View<'_, Storage>,
        (o, lo): View<'_, Storage>,
        (lse, ll): View<'_, Storage>,
        (g, lg): View<'_, Storage>,
        shape: &AttnShape,
    ) -> Result<[(Storage, Layout); 3]> {
        /// The backward on backend `S`, or `None` when an input is elsewhere.
        fn on<'a, S: BackendStorage>(
            pick: fn(&'a Storage) -> Option<&'a S>,
            wrap: fn(S) -> Storage,
            q: View<'a, Storage>,
            [k, v, o, lse, g]: [View<'a, Storage>; 5],
            shape: &AttnShape,
        ) -> Option<Result<[(Storage, Layout); 3]>> {
            let n = |view| narrow(view, pick);
            let (q, ql) = n(q)?;
            let grads = q.flash_attention_backward(ql, n(k)?, n(v)?, n(o)?, n(lse)?, n(g)?, shape);
            Some(grads.map(|gs| gs.map(|(s, layout)| (wrap(s), layout))))
        }
        let inputs = [(k, lk), (v, lv), (o, lo), (lse, ll), (g, lg)];
        on(pick_cpu, Storage::Cpu, (self, l), inputs, shape)
            .or_else(|| on(pick_cuda, Storage::Cuda, (self, l), inputs, shape))
            .unwrap_or_else(|| Err(mixed_devices("flash_attention (backward)")))
    }

    /// See [`BackendStorage::cross_entropy`].
    pub fn cross_entropy(
        &self,
        l: &Layout,
        (t, lt): View<'_, Storage>,
        ignore: i64,
        out_dtype: DType,
    ) -> Result<Storage> {
        let x = self;
        on_backend!("cross_entropy"; x, t => x.cross_entropy(l, (t, lt), ignore, out_dtype)?)
    }

    /// See [`BackendStorage::cross_entropy_backward`].
    pub fn cross_entropy_backward(
        &self,
        l: &Layout,
        (t, lt): View<'_, Storage>,
        ignore: i64,
        (g, lg): View<'_, Storage>,
    ) -> Result<Storage> {
        let x = self;
        on_backend!("cross_entropy (backward)"; x, t, g => x.cross_entropy_backward(l, (t, lt), ignore, (g, lg))?)
    }

    /// See [`BackendStorage::rotary`].
    pub fn rotary(
        &self,
        l: &Layout,
        (c, lc): View<'_, Storage>,
        (s, ls): View<'_, Storage>,
        style: RotaryStyle,
        inverse: bool,
    ) -> Result<Storage> {
        let x = self;
        on_backend!("rotary"; x, c, s => x.rotary(l, (c, lc), (s, ls), style, inverse)?)
    }
}

/// The same view, when its buffer is of backend `S` (picked out by `pick`).
fn narrow<'a, S>(
    (s, l): View<'a, Storage>,
    pick: fn(&'a Storage) -> Option<&'a S>,
) -> Option<View<'a, S>> {
    pick(s).map(|s| (s, l))
}

/// An optional view narrowed like [`narrow`]: `Some(None)` when absent, `None` when it is
/// on another backend.
fn narrow_opt<'a, S>(
    v: Option<View<'a, Storage>>,
    pick: fn(&'a Storage) -> Option<&'a S>,
) -> Option<Option<View<'a, S>>> {
    match v {
        None => Some(None),
        Some(v) => narrow(v, pick).map(Some),
    }
}

impl<'a> Gemv<'a, Storage> {
    /// The operands on backend `S`, or `None` when any of them lives elsewhere.
    fn narrow<S>(self, pick: fn(&'a Storage) -> Option<&'a S>) -> Option<Gemv<'a, S>> {
        let norm = match self.norm {
            None => None,
            Some(n) => Some(GemvNorm {
                gamma: narrow(n.gamma, pick)?,
                beta: narrow_opt(n.beta, pick)?,
                rms: n.rms,
                eps: n.eps,
            }),
        };
        Some(Gemv {
            weight: narrow(self.weight, pick)?,
            bias: narrow_opt(self.bias, pick)?,
            residual: narrow_opt(self.residual, pick)?,
            gelu: self.gelu,
            norm,
        })
    }
}

fn pick_cpu(s: &Storage) -> Option<&CpuStorage> {
    match s {
        Storage::Cpu(c) => Some(c),
        Storage::Cuda(_) => None,
    }
}

fn pick_cuda(s: &Storage) -> Option<&CudaStorage> {
    match s {
        Storage::Cuda(c) => Some(c),
        Storage::Cpu(_) => None,
    }
}

/// The parts on backend `S`, or an error naming the op when any lives elsewhere.
fn narrow_parts<'a, S>(
    parts: &[QPart<'a, Storage>],
    pick: fn(&'a Storage) -> Option<&'a S>,
) -> Result<Vec<QPart<'a, S>>> {
    parts
        .iter()
        .map(|p| {
            Ok(QPart {
                ty: p.ty,
                rows: p.rows,
                data: narrow(p.data, pick).ok_or_else(|| mixed_devices("quantized matrix"))?,
            })
        })
        .collect()
}

/// Quantized matrices on whichever backend holds their parts.
impl Storage {
    /// See [`BackendStorage::quant_rows`].
    pub fn quant_rows(
        parts: &[QPart<'_, Storage>],
        cols: usize,
        ids: Option<View<'_, Storage>>,
        dtype: DType,
    ) -> Result<Storage> {
        let err = || mixed_devices("quantized matrix");
        match parts.first().map(|p| p.data.0) {
            Some(Storage::Cuda(_)) => Ok(Storage::Cuda(CudaStorage::quant_rows(
                &narrow_parts(parts, pick_cuda)?,
                cols,
                narrow_opt(ids, pick_cuda).ok_or_else(err)?,
                dtype,
            )?)),
            _ => Ok(Storage::Cpu(CpuStorage::quant_rows(
                &narrow_parts(parts, pick_cpu)?,
                cols,
                narrow_opt(ids, pick_cpu).ok_or_else(err)?,
                dtype,
            )?)),
        }
    }

    /// See [`BackendStorage::quant_linear`].
    pub fn quant_linear(
        &self,
        l: &Layout,
        parts: &[QPart<'_, Storage>],
        cols: usize,
    ) -> Result<Storage> {
        Ok(match self {
            Storage::Cpu(x) => {
                Storage::Cpu(x.quant_linear(l, &narrow_parts(parts, pick_cpu)?, cols)?)
            }
            Storage::Cuda(x) => {
                Storage::Cuda(x.quant_linear(l, &narrow_parts(parts, pick_cuda)?, cols)?)
            }
        })
    }

    /// See [`BackendStorage::quant_linear_max_rows`].
    pub fn quant_linear_max_rows(&self) -> usize {
        match self {
            Storage::Cpu(s) => s.quant_linear_max_rows(),
            Storage::Cuda(s) => s.quant_linear_max_rows(),
        }
    }
}

/// The fast paths of [`BackendStorage`]: `None` where the backend has none, or where the
/// operands are not all on the backend of `self`.
impl Storage {
    /// See [`BackendStorage::gemv_max_rows`].
    pub fn gemv_max_rows(&self) -> usize {
        match self {
            Storage::Cpu(s) => s.gemv_max_rows(),
            Storage::Cuda(s) => s.gemv_max_rows(),
        }
    }

    /// See [`BackendStorage::gemv`].
    pub fn gemv(&self, l: &Layout, args: Gemv<'_, Storage>) -> Result<Option<Storage>> {
        Ok(match self {
            Storage::Cpu(x) => match args.narrow(pick_cpu) {
                Some(a) => x.gemv(l, a)?.map(Storage::Cpu),
                None => None,
            },
            Storage::Cuda(x) => match args.narrow(pick_cuda) {
                Some(a) => x.gemv(l, a)?.map(Storage::Cuda),
                None => None,
            },
        })
    }

    /// See [`BackendStorage::decode_attention`].
    pub fn decode_attention(
        &self,
        l: &Layout,
        (k, lk): View<'_, Storage>,
        (v, lv): View<'_, Storage>,
        (kc, vc, lc): (&Storage, &Storage, &Layout),
        shape: DecodeShape,
    ) -> Result<Option<Storage>> {
        Ok(match (self, k, v, kc, vc) {
            (
                Storage::Cpu(q),
                Storage::Cpu(k),
                Storage::Cpu(v),
                Storage::Cpu(kc),
                Storage::Cpu(vc),
            ) => q
                .decode_attention(l, (k, lk), (v, lv), (kc, vc, lc), shape)?
                .map(Storage::Cpu),
            (
                Storage::Cuda(q),
                Storage::Cuda(k),
                Storage::Cuda(v),
                Storage::Cuda(kc),
                Storage::Cuda(vc),
            ) => q
                .decode_attention(l, (k, lk), (v, lv), (kc, vc, lc), shape)?
                .map(Storage::Cuda),
            _ => None,
        })
    }

    /// See [`BackendStorage::adamw_multi`]: every slot on the backend of the first, or an
    /// error.
    pub fn adamw_multi(slots: &[AdamWSlot<'_, Storage>], step: AdamWStep) -> Result<bool> {
        fn on<'a, S>(
            slots: &[AdamWSlot<'a, Storage>],
            pick: fn(&'a Storage) -> Option<&'a S>,
        ) -> Result<Vec<AdamWSlot<'a, S>>> {
            let err = || mixed_devices("AdamW (parameter, gradient and moments)");
            slots
                .iter()
                .map(|s| {
                    Ok(AdamWSlot {
                        param: (pick(s.param.0).ok_or_else(err)?, s.param.1),
                        grad: narrow(s.grad, pick).ok_or_else(err)?,
                        m: pick(s.m).ok_or_else(err)?,
                        v: pick(s.v).ok_or_else(err)?,
                        n: s.n,
                        decay: s.decay,
                    })
                })
                .collect()
        }
        match slots.first().map(|s| s.param.0) {
            None => Ok(true),
            Some(Storage::Cuda(_)) => CudaStorage::adamw_multi(&on(slots, pick_cuda)?, step),
            Some(Storage::Cpu(_)) => CpuStorage::adamw_multi(&on(slots, pick_cpu)?, step),
        }
    }

    /// See [`BackendStorage::sum_squares_into`]; `false` when `acc` is elsewhere.
    pub fn sum_squares_into(&self, l: &Layout, acc: &Storage) -> Result<bool> {
        match (self, acc) {
            (Storage::Cpu(s), Storage::Cpu(a)) => s.sum_squares_into(l, a),
            (Storage::Cuda(s), Storage::Cuda(a)) => s.sum_squares_into(l, a),
            _ => Ok(false),
        }
    }

    /// See [`BackendStorage::conv_pass`]; `None` when the operands live on different
    /// devices.
    pub fn conv_pass(
        &self,
        l: &Layout,
        (other, lo): View<'_, Storage>,
        pass: ConvPass,
    ) -> Result<Option<(Storage, Layout)>> {
        Ok(match (self, other) {
            (Storage::Cpu(s), Storage::Cpu(o)) => s
                .conv_pass(l, (o, lo), pass)?
                .map(|(r, l)| (Storage::Cpu(r), l)),
            (Storage::Cuda(s), Storage::Cuda(o)) => s
                .conv_pass(l, (o, lo), pass)?
                .map(|(r, l)| (Storage::Cuda(r), l)),
            _ => None,
        })
    }

    /// See [`BackendStorage::channel_sums`]; `None` when the operands live on different
    /// devices.
    pub fn channel_sums(
        &self,
        l: &Layout,
        grad: Option<View<'_, Storage>>,
        (center, lc): View<'_, Storage>,
    ) -> Result<Option<(Storage, Layout)>> {
        Ok(match (self, center) {
            (Storage::Cpu(s), Storage::Cpu(c)) => {
                let grad = match grad {
                    Some((Storage::Cpu(g), lg)) => Some((g, lg)),
                    Some(_) => return Ok(None),
                    None => None,
                };
                s.channel_sums(l, grad, (c, lc))?
                    .map(|(r, l)| (Storage::Cpu(r), l))
            }
            (Storage::Cuda(s), Storage::Cuda(c)) => {
                let grad = match grad {
                    Some((Storage::Cuda(g), lg)) => Some((g, lg)),
                    Some(_) => return Ok(None),
                    None => None,
                };
                s.channel_sums(l, grad, (c, lc))?
                    .map(|(r, l)| (Storage::Cuda(r), l))
            }
            _ => None,
        })
    }

    /// See [`BackendStorage::channel_affine`]; `None` when the operands live on different
    /// devices.
    pub fn channel_affine(
        &self,
        l: &Layout,
        grad: Option<(View<'_, Storage>, View<'_, Storage>)>,
        mean: View<'_, Storage>,
        beta: View<'_, Storage>,
        gamma: View<'_, Storage>,
    ) -> Result<Option<Storage>> {
        macro_rules! on {
            ($variant:ident, $view:ident) => {{
                let Storage::$variant(s) = self else {
                    return Ok(None);
                };
                let view = $view;
                let grad = match grad {
                    Some((g, a)) => match (view(g), view(a)) {
                        (Some(g), Some(a)) => Some((g, a)),
                        _ => return Ok(None),
                    },
                    None => None,
                };
                let (Some(m), Some(b), Some(c)) = (view(mean), view(beta), view(gamma)) else {
                    return Ok(None);
                };
                s.channel_affine(l, grad, m, b, c)?.map(Storage::$variant)
            }};
        }
        Ok(match self {
            Storage::Cpu(_) => on!(Cpu, as_cpu),
            Storage::Cuda(_) => on!(Cuda, as_cuda),
        })
    }

    /// See [`BackendStorage::cross_entropy_reads_half`].
    pub fn cross_entropy_reads_half(&self) -> bool {
        match self {
            Storage::Cpu(s) => s.cross_entropy_reads_half(),
            Storage::Cuda(s) => s.cross_entropy_reads_half(),
        }
    }

    /// See [`BackendStorage::prefers_fused_attention`].
    pub fn prefers_fused_attention(&self, dtype: DType, head_dim: usize) -> bool {
        match self {
            Storage::Cpu(s) => s.prefers_fused_attention(dtype, head_dim),
            Storage::Cuda(s) => s.prefers_fused_attention(dtype, head_dim),
        }
    }

    /// See [`BackendStorage::has_linear_epilogue`].
    pub fn has_linear_epilogue(&self) -> bool {
        match self {
            Storage::Cpu(s) => s.has_linear_epilogue(),
            Storage::Cuda(s) => s.has_linear_epilogue(),
        }
    }

    /// See [`BackendStorage::linear_epilogue`].
    pub fn linear_epilogue(
        &self,
        l: &Layout,
        w: View<'_, Storage>,
        b: View<'_, Storage>,
        epilogue: Epilogue,
        residual: Option<View<'_, Storage>>,
    ) -> Result<Option<Storage>> {
        macro_rules! go {
            ($x:expr, $pick:expr, $wrap:expr) => {
                match (
                    narrow(w, $pick),
                    narrow(b, $pick),
                    narrow_opt(residual, $pick),
                ) {
                    (Some(w), Some(b), Some(r)) => {
                        $x.linear_epilogue(l, w, b, epilogue, r)?.map($wrap)
                    }
                    _ => None,
                }
            };
        }
        Ok(match self {
            Storage::Cpu(x) => go!(x, pick_cpu, Storage::Cpu),
            Storage::Cuda(x) => go!(x, pick_cuda, Storage::Cuda),
        })
    }
}
