//! The backward formula of every op, in one exhaustive match: an op without a backward
//! does not compile.

use super::Op;
use crate::backend::NormKind;
use crate::backend::{BinaryOp, CmpOp, Gradient, UnaryOp};
use crate::layout::keepdim_shape;
use crate::{Error, Result, Tensor};

/// Gradients of `node`'s inputs, given the gradient `g` of `node` (same shape as `node`).
pub(super) fn input_grads(op: &Op, g: &Tensor) -> Result<Vec<(Tensor, Tensor)>> {
    Ok(match op {
        Op::Unary(x, u) => vec![(x.clone(), unary_grad(x, *u, g)?)],
        Op::Binary(a, b, bop) => {
            let (ga, gb) = binary_grads(a, b, *bop, g)?;
            vec![(a.clone(), ga), (b.clone(), gb)]
        }
        Op::Where(cond, a, b) => {
            let zeros = g.zeros_like()?;
            vec![
                (a.clone(), Tensor::where_cond(cond, g, &zeros)?),
                (b.clone(), Tensor::where_cond(cond, &zeros, g)?),
            ]
        }
        Op::Sum(x, dims) => {
            let keep = keepdim_shape(x.shape(), dims);
            vec![(x.clone(), g.reshape(&keep)?.broadcast_as(x.shape())?)]
        }
        Op::MaxMin(x, dims, out) => {
            let keep = keepdim_shape(x.shape(), dims);
            let winners = x
                .cmp(&out.broadcast_as(x.shape())?, CmpOp::Eq)?
                .to_dtype(x.dtype())?;
            let count = winners.sum_keepdim(dims)?;
            let share = g.reshape(&keep)?.div(&count)?;
            vec![(x.clone(), share.broadcast_as(x.shape())?.mul(&winners)?)]
        }
        Op::Matmul(a, b) => {
            let r = a.rank();
            vec![
                (a.clone(), g.matmul(&b.transpose(r - 2, r - 1)?)?),
                (b.clone(), a.transpose(r - 2, r - 1)?.matmul(g)?),
            ]
        }
        Op::LinearBias(x, w, b) => vec![
            (x.clone(), g.matmul(w)?),
            (w.clone(), g.t()?.matmul(x)?),
            (b.clone(), reduce_to_shape(g, b.shape())?),
        ],
        Op::Softmax { x, y, log, causal } => {
            let dx = y.read_storage().softmax_last_backward(
                y.layout(),
                (&g.read_storage(), g.layout()),
                *log,
                *causal,
            )?;
            vec![(x.clone(), Tensor::from_storage(dx, x.shape(), None))]
        }
        Op::Norm {
            x,
            weight,
            bias,
            kind,
            eps,
        } => norm_grads(x, weight.as_ref(), bias.as_ref(), *kind, *eps, g)?,
        Op::CrossEntropy {
            logits,
            targets,
            ignore,
        } => {
            let d = logits.read_storage().cross_entropy_backward(
                logits.layout(),
                (&targets.read_storage(), targets.layout()),
                *ignore,
                (&g.read_storage(), g.layout()),
            )?;
            vec![(
                logits.clone(),
                Tensor::from_storage(d, logits.shape(), None),
            )]
        }
        Op::IndexSelect { src, ids, dim } => {
            let d = g.read_storage().index_add_zeros(
                g.layout(),
                src.shape(),
                *dim,
                (&ids.read_storage(), ids.layout()),
            )?;
            vec![(src.clone(), Tensor::from_storage(d, src.shape(), None))]
        }
        Op::Gather { src, index, dim } => {
            vec![(src.clone(), src.zeros_like()?.scatter_add(*dim, index, g)?)]
        }
        Op::ScatterAdd {
            dst,
            index,
            src,
            dim,
        } => {
            vec![
                (dst.clone(), g.clone()),
                (src.clone(), g.gather(*dim, index)?),
            ]
        }
        Op::Cat(parts, dim) => {
            let mut start = 0;
            let mut out = Vec::with_capacity(parts.len());
            for p in parts {
                let len = p.shape()[*dim];
                out.push((p.clone(), g.narrow(*dim, start, len)?));
                start += len;
            }
            out
        }
        Op::Reshape(x) => vec![(x.clone(), g.reshape(x.shape())?)],
        Op::Permute(x, perm) => {
            let mut inverse = vec![0; perm.len()];
            for (i, &p) in perm.iter().enumerate() {
                inverse[p] = i;
            }
            vec![(x.clone(), g.permute(&inverse)?)]
        }
        Op::Narrow(x, dim, start) => {
            vec![(
                x.clone(),
                assemble_slices(x.shape(), *dim, &[(*start, g.clone())])?,
            )]
        }
        Op::Broadcast(x) => vec![(x.clone(), reduce_to_shape(g, x.shape())?)],
        Op::Copy(x) => vec![(x.clone(), g.clone())],
        Op::ToDevice(x) => vec![(x.clone(), g.to_device(x.device())?)],
        Op::Cast(x) => vec![(x.clone(), g.to_dtype(x.dtype())?)],
        Op::Dropout(x, mask) => vec![(x.clone(), g.mul(mask)?)],
        Op::Rotary { x, cos, sin, style } => {
            vec![(x.clone(), g.rotary_inner(cos, sin, *style, true)?)]
        }
        Op::FlashAttention {
            q,
            k,
            v,
            out,
            lse,
            mask,
            scale,
        } => {
            let (dq, dk, dv) =
                crate::ops::flash_attention_grads(q, k, v, out, lse, g, *mask, *scale)?;
            vec![(q.clone(), dq), (k.clone(), dk), (v.clone(), dv)]
        }
        Op::BatchNormRows {
            x,
            weight,
            bias,
            mean,
            invstd,
        } => {
            let (dx, dw, db) =
                crate::ops::batch_norm_rows_grads(x, weight.as_ref(), mean, invstd, g)?;
            let mut grads = vec![(x.clone(), dx)];
            if let (Some(w), Some(dw)) = (weight, dw) {
                grads.push((w.clone(), dw));
            }
            if let (Some(b), Some(db)) = (bias, db) {
                grads.push((b.clone(), db.to_dtype(b.dtype())?));
            }
            grads
        }
        Op::ConvImplicit { x, w, rows, cols } => {
            let (dx, dw) = crate::ops::conv_implicit_grads(x, w, g, *rows, *cols)?;
            let mut grads = vec![(w.clone(), dw)];
            grads.extend(dx.map(|dx| (x.clone(), dx)));
            grads
        }
    })
}

/// Sums a broadcast gradient back down to the shape of the tensor that was broadcast.
fn reduce_to_shape(g: &Tensor, shape: &[usize]) -> Result<Tensor> {
    let lead = g.rank() - shape.len();
    let dims: Vec<usize> = (0..g.rank())
        .filter(|&d| d < lead || (shape[d - lead] == 1 && g.shape()[d] != 1))
        .collect();
    if dims.is_empty() {
        return g.reshape(shape);
    }
    g.sum_keepdim(&dims)?.reshape(shape)
}

fn unary_grad(x: &Tensor, op: UnaryOp, g: &Tensor) -> Result<Tensor> {
    match op.gradient() {
        Gradient::Op(d) => g.mul(&x.unary(d)?),
        Gradient::Formula => unary_formula(x, op, g),
        Gradient::None => Err(Error::invalid(
            "backward",
            format!("{op:?} is not differentiable"),
        )),
    }
}

/// The gradients that are not another op of the input (`Gradient::Formula`).
fn unary_formula(x: &Tensor, op: UnaryOp, g: &Tensor) -> Result<Tensor> {
    match op {
        UnaryOp::Neg => g.neg(),
        UnaryOp::Log => g.div(x),
        UnaryOp::Sqrt => g.div(&x.sqrt()?.affine(2.0, 0.0)?),
        UnaryOp::Tanh => {
            let t = x.tanh()?;
            g.mul(&t.mul(&t)?.affine(-1.0, 1.0)?)
        }
        UnaryOp::Sigmoid => {
            let s = x.sigmoid()?;
            g.mul(&s.mul(&s.affine(-1.0, 1.0)?)?)
        }
        UnaryOp::Abs => {
            let sign = x
                .unary(UnaryOp::Step)?
                .sub(&x.neg()?.unary(UnaryOp::Step)?)?;
            g.mul(&sign)
        }
        UnaryOp::Affine { mul, .. } => g.affine(mul, 0.0),
        UnaryOp::Powf(e) => g.mul(&x.powf(e - 1.0)?.affine(e, 0.0)?),
        other => Err(Error::invalid(
            "backward",
            format!("{other:?} is declared with a gradient formula, but has none"),
        )),
    }
}

fn binary_grads(a: &Tensor, b: &Tensor, op: BinaryOp, g: &Tensor) -> Result<(Tensor, Tensor)> {
    Ok(match op {
        BinaryOp::Add => (g.clone(), g.clone()),
        BinaryOp::Sub => (g.clone(), g.neg()?),
        BinaryOp::Mul => (g.mul(b)?, g.mul(a)?),
        BinaryOp::Div => {
            let ga = g.div(b)?;
            (ga.clone(), ga.mul(a)?.div(b)?.neg()?)
        }
        BinaryOp::Pow => {
            let out = a.pow(b)?;
            let ga = g.mul(b)?.mul(&a.pow(&b.affine(1.0, -1.0)?)?)?;
            let gb = g.mul(&out)?.mul(&a.log()?)?;
            (ga, gb)
        }
        BinaryOp::Max | BinaryOp::Min => {
            let pick_a = a
                .cmp(
                    b,
                    if op == BinaryOp::Max {
                        CmpOp::Ge
                    } else {
                        CmpOp::Le
                    },
                )?
                .to_dtype(g.dtype())?;
            (g.mul(&pick_a)?, g.mul(&pick_a.affine(-1.0, 1.0)?)?)
        }
    })
}

fn norm_grads(
    x: &Tensor,
    weight: Option<&Tensor>,
    bias: Option<&Tensor>,
    kind: NormKind,
    eps: f64,
    g: &Tensor,
) -> Result<Vec<(Tensor, Tensor)>> {
    let (dx, dw, db) = {
        let ws = weight.map(|w| w.read_storage());
        x.read_storage().norm_backward(
            x.layout(),
            (&g.read_storage(), g.layout()),
            crate::ops::view(&ws, weight),
            kind,
            eps,
        )?
    };
    let c = *x.shape().last().unwrap_or(&1);
    let mut out = vec![(x.clone(), Tensor::from_storage(dx, x.shape(), None))];
    if let Some(w) = weight {
        out.push((
            w.clone(),
            Tensor::from_storage(dw, &[c], None).to_dtype(w.dtype())?,
        ));
    }
    if let Some(b) = bias {
        out.push((
            b.clone(),
            Tensor::from_storage(db, &[c], None).to_dtype(b.dtype())?,
        ));
    }
    Ok(out)
}

/// The gradient of a tensor of `shape` from gradients of disjoint slices along `dim`,
/// given as (start, gradient) sorted by start: one concatenation, zeros in the gaps.
pub(crate) fn assemble_slices(
    shape: &[usize],
    dim: usize,
    slices: &[(usize, Tensor)],
) -> Result<Tensor> {
    let Some((_, first)) = slices.first() else {
        return Err(Error::invalid("backward", "no slices to assemble"));
    };
    let (dtype, device) = (first.dtype(), first.device());
    let mut parts = Vec::with_capacity(2 * slices.len() + 1);
    let mut gap_shape = shape.to_vec();
    let mut at = 0;
    for (start, g) in slices {
        if *start > at {
            gap_shape[dim] = start - at;
            parts.push(Tensor::zeros(&gap_shape, dtype, device)?);
        }
        parts.push(g.clone());
        at = start + g.shape()[dim];
    }
    if shape[dim] > at {
        gap_shape[dim] = shape[dim] - at;
        parts.push(Tensor::zeros(&gap_shape, dtype, device)?);
    }
    Tensor::cat(&parts, dim)
}
