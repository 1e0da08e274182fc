//! Elementwise ops with NumPy broadcasting, comparisons and `where`.

use super::{check_float, check_same};
use crate::autograd::{record, Op};
use crate::backend::{BinaryOp, CmpOp, UnaryOp};
use crate::layout::broadcast_shapes;
use crate::{Error, Result, Tensor};

impl Tensor {
    /// `op` applied elementwise (every unary op, by its kind; the named methods below are
    /// shorthands). Recorded for autograd when the op is differentiable.
    pub fn unary(&self, op: UnaryOp) -> Result<Tensor> {
        check_float("unary", self)?;
        let l = self.layout();
        let keep = !l.is_contiguous() && l.is_dense();
        let out = if keep {
            self.read_storage().unary(&l.dense_span(), op)?
        } else {
            self.read_storage().unary(l, op)?
        };
        let rec = if op.differentiable() {
            record(&[self], || Op::Unary(self.clone(), op))
        } else {
            None
        };
        Ok(if keep {
            Tensor::from_storage_in(out, l.dense_result(), rec)
        } else {
            Tensor::from_storage(out, self.shape(), rec)
        })
    }

    /// `-x`.
    pub fn neg(&self) -> Result<Tensor> {
        self.unary(UnaryOp::Neg)
    }
    /// `e^x`.
    pub fn exp(&self) -> Result<Tensor> {
        self.unary(UnaryOp::Exp)
    }
    /// Natural logarithm.
    pub fn log(&self) -> Result<Tensor> {
        self.unary(UnaryOp::Log)
    }
    /// Square root.
    pub fn sqrt(&self) -> Result<Tensor> {
        self.unary(UnaryOp::Sqrt)
    }
    /// Hyperbolic tangent.
    pub fn tanh(&self) -> Result<Tensor> {
        self.unary(UnaryOp::Tanh)
    }
    /// Logistic sigmoid.
    pub fn sigmoid(&self) -> Result<Tensor> {
        self.unary(UnaryOp::Sigmoid)
    }
    /// `max(x, 0)`.
    pub fn relu(&self) -> Result<Tensor> {
        self.unary(UnaryOp::Relu)
    }
    /// `|x|`.
    pub fn abs(&self) -> Result<Tensor> {
        self.unary(UnaryOp::Abs)
    }
    /// GELU with the tanh approximation (as in GPT-2).
    pub fn gelu(&self) -> Result<Tensor> {
        self.unary(UnaryOp::GeluTanh)
    }
    /// GELU with the exact error function.
    pub fn gelu_erf(&self) -> Result<Tensor> {
        self.unary(UnaryOp::GeluErf)
    }
    /// `min(max(x, 0), 6)`.
    pub fn relu6(&self) -> Result<Tensor> {
        self.unary(UnaryOp::Relu6)
    }
    /// `x * relu6(x + 3) / 6` (MobileNetV3's activation).
    pub fn hardswish(&self) -> Result<Tensor> {
        self.unary(UnaryOp::Hardswish)
    }
    /// `x * sigmoid(x)` (SiLU, or swish).
    pub fn silu(&self) -> Result<Tensor> {
        self.unary(UnaryOp::Silu)
    }
    /// `x * mul + add` with scalar `mul` and `add`.
    pub fn affine(&self, mul: f64, add: f64) -> Result<Tensor> {
        self.unary(UnaryOp::Affine { mul, add })
    }
    /// `x + v` for a scalar `v`.
    pub fn add_scalar(&self, v: f64) -> Result<Tensor> {
        self.affine(1.0, v)
    }
    /// `x * v` for a scalar `v`.
    pub fn mul_scalar(&self, v: f64) -> Result<Tensor> {
        self.affine(v, 0.0)
    }
    /// `x ^ e` for a scalar exponent.
    pub fn powf(&self, e: f64) -> Result<Tensor> {
        self.unary(UnaryOp::Powf(e))
    }
    /// `x * x`.
    pub fn sqr(&self) -> Result<Tensor> {
        self.mul(self)
    }

    /// Broadcasts both tensors to their common shape (views; no-op when already equal).
    pub(crate) fn broadcast_pair(
        op: &'static str,
        a: &Tensor,
        b: &Tensor,
    ) -> Result<(Tensor, Tensor)> {
        if a.shape() == b.shape() {
            return Ok((a.clone(), b.clone()));
        }
        let shape = broadcast_shapes(op, a.shape(), b.shape())?;
        Ok((a.broadcast_as(&shape)?, b.broadcast_as(&shape)?))
    }

    fn binary(&self, rhs: &Tensor, op: BinaryOp) -> Result<Tensor> {
        check_same(op.name(), self, rhs)?;
        check_float(op.name(), self)?;
        let (a, b) = Tensor::broadcast_pair(op.name(), self, rhs)?;
        // Two dense operands in the same order of dimensions (channels-last, say): the
        // op runs over the flat spans and the result keeps that order.
        let (la, lb) = (a.layout(), b.layout());
        let keep = !la.is_contiguous() && la.strides() == lb.strides() && la.is_dense();
        let out = if keep {
            a.read_storage()
                .binary(&la.dense_span(), (&b.read_storage(), &lb.dense_span()), op)?
        } else {
            a.read_storage().binary(la, (&b.read_storage(), lb), op)?
        };
        let rec = record(&[&a, &b], || Op::Binary(a.clone(), b.clone(), op));
        Ok(if keep {
            Tensor::from_storage_in(out, la.dense_result(), rec)
        } else {
            Tensor::from_storage(out, a.shape(), rec)
        })
    }

    /// Elementwise sum with broadcasting.
    pub fn add(&self, rhs: &Tensor) -> Result<Tensor> {
        self.binary(rhs, BinaryOp::Add)
    }
    /// Elementwise difference with broadcasting.
    pub fn sub(&self, rhs: &Tensor) -> Result<Tensor> {
        self.binary(rhs, BinaryOp::Sub)
    }
    /// Elementwise product with broadcasting.
    pub fn mul(&self, rhs: &Tensor) -> Result<Tensor> {
        self.binary(rhs, BinaryOp::Mul)
    }
    /// Elementwise quotient with broadcasting.
    pub fn div(&self, rhs: &Tensor) -> Result<Tensor> {
        self.binary(rhs, BinaryOp::Div)
    }
    /// Elementwise power with broadcasting.
    pub fn pow(&self, rhs: &Tensor) -> Result<Tensor> {
        self.binary(rhs, BinaryOp::Pow)
    }
    /// Elementwise maximum with broadcasting (ties send the gradient to `self`).
    pub fn maximum(&self, rhs: &Tensor) -> Result<Tensor> {
        self.binary(rhs, BinaryOp::Max)
    }
    /// Elementwise minimum with broadcasting (ties send the gradient to `self`).
    pub fn minimum(&self, rhs: &Tensor) -> Result<Tensor> {
        self.binary(rhs, BinaryOp::Min)
    }

    /// Elementwise comparison with broadcasting: a u8 mask of 0 and 1 (not differentiable).
    pub fn cmp(&self, rhs: &Tensor, op: CmpOp) -> Result<Tensor> {
        check_same("cmp", self, rhs)?;
        let (a, b) = Tensor::broadcast_pair("cmp", self, rhs)?;
        let out = a
            .read_storage()
            .cmp(a.layout(), (&b.read_storage(), b.layout()), op)?;
        Ok(Tensor::from_storage(out, a.shape(), None))
    }
    /// `self == rhs` as a mask.
    pub fn eq(&self, rhs: &Tensor) -> Result<Tensor> {
        self.cmp(rhs, CmpOp::Eq)
    }
    /// `self != rhs` as a mask.
    pub fn ne(&self, rhs: &Tensor) -> Result<Tensor> {
        self.cmp(rhs, CmpOp::Ne)
    }
    /// `self < rhs` as a mask.
    pub fn lt(&self, rhs: &Tensor) -> Result<Tensor> {
        self.cmp(rhs, CmpOp::Lt)
    }
    /// `self <= rhs` as a mask.
    pub fn le(&self, rhs: &Tensor) -> Result<Tensor> {
        self.cmp(rhs, CmpOp::Le)
    }
    /// `self > rhs` as a mask.
    pub fn gt(&self, rhs: &Tensor) -> Result<Tensor> {
        self.cmp(rhs, CmpOp::Gt)
    }
    /// `self >= rhs` as a mask.
    pub fn ge(&self, rhs: &Tensor) -> Result<Tensor> {
        self.cmp(rhs, CmpOp::Ge)
    }

    /// `cond ? a : b` elementwise, all three broadcast together; `cond` is a u8 mask.
    pub fn where_cond(cond: &Tensor, a: &Tensor, b: &Tensor) -> Result<Tensor> {
        check_same("where_cond", a, b)?;
        if cond.device() != a.device() {
            return Err(Error::DeviceMismatch {
                op: "where_cond",
                lhs: cond.device(),
                rhs: a.device(),
            });
        }
        if cond.dtype() != crate::DType::U8 {
            return Err(Error::UnsupportedDType {
                op: "where_cond (condition must be u8)",
                dtype: cond.dtype(),
            });
        }
        let shape = broadcast_shapes("where_cond", cond.shape(), a.shape())?;
        let shape = broadcast_shapes("where_cond", &shape, b.shape())?;
        let bc = |t: &Tensor| -> Result<Tensor> {
            if t.shape() == shape.as_slice() {
                Ok(t.clone())
            } else {
                t.broadcast_as(&shape)
            }
        };
        let (c, a, b) = (bc(cond)?, bc(a)?, bc(b)?);
        let out = c.read_storage().where_cond(
            c.layout(),
            (&a.read_storage(), a.layout()),
            (&b.read_storage(), b.layout()),
        )?;
        let rec = record(&[&a, &b], || Op::Where(c.clone(), a.clone(), b.clone()));
        Ok(Tensor::from_storage(out, &shape, rec))
    }

    /// Replaces elements where `mask` is 1 by `value` (mask broadcast to self).
    pub fn masked_fill(&self, mask: &Tensor, value: f64) -> Result<Tensor> {
        let fill = Tensor::full(value, &[], self.dtype(), self.device())?;
        let mask = mask.to_device(self.device())?;
        let mask = &mask;
        Tensor::where_cond(mask, &fill, self)
    }
}
