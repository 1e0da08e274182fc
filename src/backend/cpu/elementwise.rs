//! Elementwise kernels: unary maps, binary ops on same-shape strided inputs, comparisons
//! and `where`.

use super::real::Real;
use super::{contiguous_cow, map_float, map_float2, par_fill, CpuStorage};
use crate::backend::{BinaryOp, CmpOp, UnaryOp};
use crate::{Error, Layout, Result, WithDType};

/// Applies `f` to every element under `layout`; the result is contiguous.
fn map1<T: Real>(src: &[T], layout: &Layout, f: impl Fn(T) -> T + Sync) -> Vec<T> {
    let n = layout.numel();
    let mut out = vec![T::ZERO; n];
    if layout.is_contiguous() {
        let s = &src[layout.offset()..layout.offset() + n];
        par_fill(&mut out, |start, chunk| {
            for (o, &x) in chunk.iter_mut().zip(&s[start..]) {
                *o = f(x);
            }
        });
    } else {
        par_fill(&mut out, |start, chunk| {
            let mut i = 0;
            layout.for_each_run_in(start, chunk.len(), |off, n, stride| {
                for (j, o) in chunk[i..i + n].iter_mut().enumerate() {
                    *o = f(src[off + j * stride]);
                }
                i += n;
            });
        });
    }
    out
}

/// Applies `f` pairwise to two same-shape strided inputs; the result is contiguous.
fn map2<T: Copy + Send + Sync + Default, U: Copy + Send + Sync + Default>(
    a: &[T],
    la: &Layout,
    b: &[T],
    lb: &Layout,
    f: impl Fn(T, T) -> U + Sync,
) -> Vec<U> {
    let n = la.numel();
    let mut out = vec![U::default(); n];
    if la.is_contiguous() && lb.is_contiguous() {
        let sa = &a[la.offset()..la.offset() + n];
        let sb = &b[lb.offset()..lb.offset() + n];
        par_fill(&mut out, |start, chunk| {
            for ((o, &x), &y) in chunk.iter_mut().zip(&sa[start..]).zip(&sb[start..]) {
                *o = f(x, y);
            }
        });
    } else {
        par_fill(&mut out, |start, chunk| {
            // Same shape, so the innermost-dimension runs of a and b line up exactly.
            let mut runs_b = Vec::new();
            lb.for_each_inner_run_in(start, chunk.len(), |o, _, s| runs_b.push((o, s)));
            let (mut i, mut r) = (0, 0);
            la.for_each_inner_run_in(start, chunk.len(), |oa, n, sa| {
                let (ob, sb) = runs_b[r];
                r += 1;
                let dst = &mut chunk[i..i + n];
                if sa == 1 && sb == 1 {
                    for ((o, &x), &y) in dst.iter_mut().zip(&a[oa..oa + n]).zip(&b[ob..ob + n]) {
                        *o = f(x, y);
                    }
                } else if sa == 1 && sb == 0 {
                    let y = b[ob];
                    for (o, &x) in dst.iter_mut().zip(&a[oa..oa + n]) {
                        *o = f(x, y);
                    }
                } else {
                    for (j, o) in dst.iter_mut().enumerate() {
                        *o = f(a[oa + j * sa], b[ob + j * sb]);
                    }
                }
                i += n;
            });
        });
    }
    out
}

const SQRT_2_OVER_PI: f64 = 0.797_884_560_802_865_4;
const GELU_C: f64 = 0.044_715;
const INV_SQRT_2: f64 = std::f64::consts::FRAC_1_SQRT_2;
const INV_SQRT_2PI: f64 = 0.398_942_280_401_432_7;

/// `min(max(x, 0), six)`.
fn relu6<T: Real>(x: T, six: T) -> T {
    if x < T::ZERO {
        T::ZERO
    } else if x > six {
        six
    } else {
        x
    }
}

fn unary_typed<T: Real>(src: &[T], layout: &Layout, op: UnaryOp) -> Vec<T> {
    let c = |v: f64| T::from_f64(v);
    let one = T::ONE;
    let half = c(0.5);
    let sigmoid = move |x: T| one / (one + (-x).exp());
    match op {
        UnaryOp::Neg => map1(src, layout, |x| -x),
        UnaryOp::Exp => map1(src, layout, |x| x.exp()),
        UnaryOp::Log => map1(src, layout, |x| x.ln()),
        UnaryOp::Sqrt => map1(src, layout, |x| x.sqrt()),
        UnaryOp::Tanh => map1(src, layout, |x| x.tanh()),
        UnaryOp::Sigmoid => map1(src, layout, sigmoid),
        UnaryOp::Relu => map1(src, layout, |x| if x > T::ZERO { x } else { T::ZERO }),
        UnaryOp::Abs => map1(src, layout, |x| x.abs()),
        UnaryOp::Step => map1(src, layout, |x| if x > T::ZERO { one } else { T::ZERO }),
        // 0.5 x (1 + tanh(u)) == x * sigmoid(2u): the same function with one exp.
        UnaryOp::GeluTanh => {
            let (k2, g) = (c(2.0 * SQRT_2_OVER_PI), c(GELU_C));
            map1(src, layout, move |x| x * sigmoid(k2 * (x + g * x * x * x)))
        }
        UnaryOp::GeluTanhDeriv => {
            let (k2, g, g3) = (c(2.0 * SQRT_2_OVER_PI), c(GELU_C), c(3.0 * GELU_C));
            map1(src, layout, move |x| {
                let s = sigmoid(k2 * (x + g * x * x * x));
                s + x * s * (one - s) * k2 * (one + g3 * x * x)
            })
        }
        UnaryOp::GeluErf => {
            let s = c(INV_SQRT_2);
            map1(src, layout, move |x| half * x * (one + (x * s).erf()))
        }
        UnaryOp::GeluErfDeriv => {
            let (s, p) = (c(INV_SQRT_2), c(INV_SQRT_2PI));
            map1(src, layout, move |x| {
                half * (one + (x * s).erf()) + x * p * (-(half * x * x)).exp()
            })
        }
        UnaryOp::Silu => map1(src, layout, move |x| x * sigmoid(x)),
        UnaryOp::Relu6 => {
            let six = c(6.0);
            map1(src, layout, move |x| relu6(x, six))
        }
        UnaryOp::Relu6Deriv => {
            let six = c(6.0);
            map1(src, layout, move |x| {
                if x > T::ZERO && x < six {
                    one
                } else {
                    T::ZERO
                }
            })
        }
        UnaryOp::Hardswish => {
            let (three, six) = (c(3.0), c(6.0));
            map1(src, layout, move |x| x * relu6(x + three, six) / six)
        }
        UnaryOp::HardswishDeriv => {
            let (three, half) = (c(3.0), c(0.5));
            map1(src, layout, move |x| {
                if x < -three {
                    T::ZERO
                } else if x <= three {
                    x / three + half
                } else {
                    one
                }
            })
        }
        UnaryOp::SiluDeriv => map1(src, layout, move |x| {
            let s = sigmoid(x);
            s * (one + x * (one - s))
        }),
        UnaryOp::Affine { mul, add } => {
            let (m, a) = (c(mul), c(add));
            map1(src, layout, move |x| x * m + a)
        }
        UnaryOp::Powf(e) => {
            let e = c(e);
            map1(src, layout, move |x| x.powf(e))
        }
    }
}

/// Applies a unary float op to the elements under `layout`.
pub fn unary(s: &CpuStorage, layout: &Layout, op: UnaryOp) -> Result<CpuStorage> {
    Ok(map_float!("unary", s, |v| unary_typed(v, layout, op)))
}

fn binary_typed<T: Real>(a: &[T], la: &Layout, b: &[T], lb: &Layout, op: BinaryOp) -> Vec<T> {
    match op {
        BinaryOp::Add => map2(a, la, b, lb, |x, y| x + y),
        BinaryOp::Sub => map2(a, la, b, lb, |x, y| x - y),
        BinaryOp::Mul => map2(a, la, b, lb, |x, y| x * y),
        BinaryOp::Div => map2(a, la, b, lb, |x, y| x / y),
        BinaryOp::Pow => map2(a, la, b, lb, |x, y| x.powf(y)),
        BinaryOp::Max => map2(a, la, b, lb, |x, y| x.max(y)),
        BinaryOp::Min => map2(a, la, b, lb, |x, y| x.min(y)),
    }
}

/// Applies a binary float op to two inputs of the same shape (any strides).
pub fn binary(
    a: &CpuStorage,
    la: &Layout,
    b: &CpuStorage,
    lb: &Layout,
    op: BinaryOp,
) -> Result<CpuStorage> {
    Ok(map_float2!("binary", a, b, |x, y| binary_typed(
        x, la, y, lb, op
    )))
}

fn cmp_typed<T: WithDType + Default>(
    a: &[T],
    la: &Layout,
    b: &[T],
    lb: &Layout,
    op: CmpOp,
) -> Vec<u8> {
    let f = |x: T, y: T| {
        let (x, y) = (x.to_f64(), y.to_f64());
        (match op {
            CmpOp::Eq => x == y,
            CmpOp::Ne => x != y,
            CmpOp::Lt => x < y,
            CmpOp::Le => x <= y,
            CmpOp::Gt => x > y,
            CmpOp::Ge => x >= y,
        }) as u8
    };
    map2(a, la, b, lb, f)
}

/// Compares two same-shape inputs elementwise into a u8 mask.
pub fn cmp(
    a: &CpuStorage,
    la: &Layout,
    b: &CpuStorage,
    lb: &Layout,
    op: CmpOp,
) -> Result<CpuStorage> {
    let out = match (a, b) {
        (CpuStorage::F64(x), CpuStorage::F64(y)) => cmp_typed(x, la, y, lb, op),
        (CpuStorage::F32(x), CpuStorage::F32(y)) => cmp_typed(x, la, y, lb, op),
        (CpuStorage::F16(x), CpuStorage::F16(y)) => cmp_typed(x, la, y, lb, op),
        (CpuStorage::BF16(x), CpuStorage::BF16(y)) => cmp_typed(x, la, y, lb, op),
        (CpuStorage::I64(x), CpuStorage::I64(y)) => cmp_typed(x, la, y, lb, op),
        (CpuStorage::U32(x), CpuStorage::U32(y)) => cmp_typed(x, la, y, lb, op),
        (CpuStorage::U8(x), CpuStorage::U8(y)) => cmp_typed(x, la, y, lb, op),
        (a, b) => {
            return Err(Error::DTypeMismatch {
                op: "cmp",
                lhs: a.dtype(),
                rhs: b.dtype(),
            })
        }
    };
    Ok(CpuStorage::U8(out))
}

/// `cond ? a : b` elementwise; all three inputs have the same shape.
pub fn where_cond(
    cond: &CpuStorage,
    lc: &Layout,
    a: &CpuStorage,
    la: &Layout,
    b: &CpuStorage,
    lb: &Layout,
) -> Result<CpuStorage> {
    let CpuStorage::U8(c) = cond else {
        return Err(Error::UnsupportedDType {
            op: "where_cond (condition)",
            dtype: cond.dtype(),
        });
    };
    let mask = super::gather_strided(c, lc);
    Ok(map_float2!("where_cond", a, b, |x, y| where_typed(
        &mask, x, la, y, lb
    )))
}

fn where_typed<T: Real>(mask: &[u8], x: &[T], lx: &Layout, y: &[T], ly: &Layout) -> Vec<T> {
    let (xs, ys) = (contiguous_cow(x, lx), contiguous_cow(y, ly));
    mask.iter()
        .zip(xs.iter().zip(ys.iter()))
        .map(|(&m, (&p, &q))| if m != 0 { p } else { q })
        .collect()
}
