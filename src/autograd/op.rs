//! What an op result remembers for the backward pass.

use crate::backend::interface::GatherAxis;
use crate::backend::NormKind;
use crate::backend::{BinaryOp, RotaryStyle, UnaryOp};
use crate::Tensor;

/// The record of how a tensor was computed: the op and the inputs (and saved values) its
/// backward needs. One variant per differentiable op; the backward is one exhaustive match.
pub enum Op {
    Unary(Tensor, UnaryOp),
    Binary(Tensor, Tensor, BinaryOp),
    /// `cond ? a : b` (the condition is not differentiable).
    Where(Tensor, Tensor, Tensor),
    /// Sum over the listed dims; the output keeps them as size 1 or drops them.
    Sum(Tensor, Vec<usize>),
    /// Max or min over dims; saves the keepdim output to find the winners.
    MaxMin(Tensor, Vec<usize>, Tensor),
    Matmul(Tensor, Tensor),
    /// `x [rows, in] @ w[out, in]^T + b[out]` in one fused GEMM.
    LinearBias(Tensor, Tensor, Tensor),
    /// Softmax or log-softmax over the last dim; saves the (detached) output.
    Softmax {
        x: Tensor,
        y: Tensor,
        log: bool,
        /// Keys after each query were masked (their gradient is 0).
        causal: bool,
    },
    Norm {
        x: Tensor,
        weight: Option<Tensor>,
        bias: Option<Tensor>,
        kind: NormKind,
        eps: f64,
    },
    CrossEntropy {
        logits: Tensor,
        targets: Tensor,
        ignore: i64,
    },
    IndexSelect {
        src: Tensor,
        ids: Tensor,
        dim: usize,
    },
    Gather {
        src: Tensor,
        index: Tensor,
        dim: usize,
    },
    ScatterAdd {
        dst: Tensor,
        index: Tensor,
        src: Tensor,
        dim: usize,
    },
    Cat(Vec<Tensor>, usize),
    Reshape(Tensor),
    Permute(Tensor, Vec<usize>),
    /// Narrow along `dim` starting at `start`.
    Narrow(Tensor, usize, usize),
    Broadcast(Tensor),
    Copy(Tensor),
    /// A copy to another device; the gradient goes back to the input's device.
    ToDevice(Tensor),
    Cast(Tensor),
    /// Dropout; saves the mask already scaled by 1/(1-p).
    Dropout(Tensor, Tensor),
    Rotary {
        x: Tensor,
        cos: Tensor,
        sin: Tensor,
        style: RotaryStyle,
    },
    /// Fused attention; saves the (detached) output and each query row's log-sum-exp.
    FlashAttention {
        q: Tensor,
        k: Tensor,
        v: Tensor,
        out: Tensor,
        lse: Tensor,
        mask: crate::AttnMask,
        scale: f64,
    },
    /// Batch normalisation of `[M, C]` rows by their batch statistics (fused passes);
    /// saves each channel's mean and 1/std (detached, in the statistics dtype).
    BatchNormRows {
        x: Tensor,
        weight: Option<Tensor>,
        bias: Option<Tensor>,
        mean: Tensor,
        invstd: Tensor,
    },
    /// Implicit-GEMM convolution of an NHWC image by KRSC weights (output `[N, P, Q, O]`).
    ConvImplicit {
        x: Tensor,
        w: Tensor,
        rows: GatherAxis,
        cols: GatherAxis,
    },
}

impl Op {
    /// The inputs gradients may flow to.
    pub fn inputs(&self) -> Vec<&Tensor> {
        match self {
            Op::Unary(x, _)
            | Op::Sum(x, _)
            | Op::MaxMin(x, _, _)
            | Op::Softmax { x, .. }
            | Op::Reshape(x)
            | Op::Permute(x, _)
            | Op::Narrow(x, _, _)
            | Op::Broadcast(x)
            | Op::Copy(x)
            | Op::ToDevice(x)
            | Op::Cast(x)
            | Op::Dropout(x, _)
            | Op::Rotary { x, .. } => vec![x],
            Op::Binary(a, b, _) | Op::Matmul(a, b) | Op::Where(_, a, b) => vec![a, b],
            Op::Norm {
                x, weight, bias, ..
            } => {
                let mut v = vec![x];
                v.extend(weight.iter());
                v.extend(bias.iter());
                v
            }
            Op::LinearBias(x, w, b) => vec![x, w, b],
            Op::FlashAttention { q, k, v, .. } => vec![q, k, v],
            Op::ConvImplicit { x, w, .. } => vec![x, w],
            Op::BatchNormRows {
                x, weight, bias, ..
            } => {
                let mut v = vec![x];
                v.extend(weight.iter());
                v.extend(bias.iter());
                v
            }
            Op::CrossEntropy { logits, .. } => vec![logits],
            Op::IndexSelect { src, .. } | Op::Gather { src, .. } => vec![src],
            Op::ScatterAdd { dst, src, .. } => vec![dst, src],
            Op::Cat(parts, _) => parts.iter().collect(),
        }
    }
}
