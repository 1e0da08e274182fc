//! Public tensor ops: argument and shape checks, dispatch to the backend, and autograd
//! recording. Each submodule holds one family of ops.

mod attention;
mod batch_norm_rows;
mod conv;
mod conv_algorithms;
mod conv_implicit;
mod elementwise;
mod index;
mod matmul;
mod nn;
mod pool;
mod reduce;
mod shape;

pub(crate) use attention::flash_attention_grads;
pub use attention::AttnMask;
pub(crate) use batch_norm_rows::{
    batch_norm_rows_eval, batch_norm_rows_grads, batch_norm_rows_train,
};
pub use conv::{Conv2dSpec, ConvTranspose2dSpec, Padding2d, CONV_COLUMN_CAP_BYTES};
pub use conv_algorithms::{
    conv_algorithm, force_conv_algorithm, set_conv_algorithm, ConvAlgorithm, ConvAlgorithmGuard,
};
pub(crate) use conv_implicit::conv_implicit_grads;
pub use matmul::FoldedNorm;
pub(crate) use nn::view;
pub use nn::{causal_mask, rotary_tables, rotary_tables_for, rotary_tables_scaled, RotarySpec};
pub use pool::Pool2dSpec;

use crate::{Error, Result, Tensor};

/// Checks that two inputs of `op` share a dtype and a device.
pub(crate) fn check_same(op: &'static str, a: &Tensor, b: &Tensor) -> Result<()> {
    if a.dtype() != b.dtype() {
        return Err(Error::DTypeMismatch {
            op,
            lhs: a.dtype(),
            rhs: b.dtype(),
        });
    }
    if a.device() != b.device() {
        return Err(Error::DeviceMismatch {
            op,
            lhs: a.device(),
            rhs: b.device(),
        });
    }
    Ok(())
}

/// Checks that two inputs of `op` live on one device (dtypes may differ).
pub(crate) fn check_same_device(op: &'static str, a: &Tensor, b: &Tensor) -> Result<()> {
    if a.device() == b.device() {
        Ok(())
    } else {
        Err(Error::DeviceMismatch {
            op,
            lhs: a.device(),
            rhs: b.device(),
        })
    }
}

/// Checks that `op` gets a floating-point input.
pub(crate) fn check_float(op: &'static str, t: &Tensor) -> Result<()> {
    if t.dtype().is_float() {
        Ok(())
    } else {
        Err(Error::UnsupportedDType {
            op,
            dtype: t.dtype(),
        })
    }
}
