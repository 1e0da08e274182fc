//! Gradient checks: every differentiable op against central differences in f64, on inputs
//! that include transposed, sliced and broadcast views.

mod common;
use common::{gradcheck, leaf, positive_leaf};
use smith::{rotary_tables, DType, Device, Rng, RotaryStyle, Tensor};

fn rng() -> Rng {
    Rng::new(2024)
}

/// Every differentiable unary op (`UnaryKind::ALL`), through a transposed view, inside
/// its domain.
#[test]
fn unary_ops_on_transposed_views() {
    let mut r = rng();
    for &kind in smith::UnaryKind::ALL {
        let op = kind.example();
        if !op.differentiable() {
            continue;
        }
        eprintln!("checking {}", kind.name());
        gradcheck(&[leaf(&[3, 4], &mut r)], |t| {
            common::unary_input(op, &t[0].t()?)?.unary(op)
        });
    }
    gradcheck(&[leaf(&[3, 4], &mut r)], |t| t[0].t()?.sqr());
}

#[test]
fn binary_ops_with_broadcasting_and_slices() {
    let mut r = rng();
    type BinFn = fn(&Tensor, &Tensor) -> smith::Result<Tensor>;
    let ops: Vec<(&str, BinFn)> = vec![
        ("add", |a, b| a.add(b)),
        ("sub", |a, b| a.sub(b)),
        ("mul", |a, b| a.mul(b)),
        ("div", |a, b| a.div(b)),
        ("pow", |a, b| a.pow(b)),
        ("maximum", |a, b| a.maximum(b)),
        ("minimum", |a, b| a.minimum(b)),
    ];
    for (name, op) in ops {
        eprintln!("checking {name}");
        // [3, 1] against a sliced [4] row: broadcast on both sides.
        gradcheck(
            &[positive_leaf(&[3, 1], &mut r), positive_leaf(&[6], &mut r)],
            |t| op(&t[0], &t[1].narrow(0, 1, 4)?),
        );
        // Same shapes, one transposed.
        gradcheck(
            &[
                positive_leaf(&[2, 3], &mut r),
                positive_leaf(&[3, 2], &mut r),
            ],
            |t| op(&t[0], &t[1].t()?),
        );
    }
}

#[test]
fn where_and_masked_fill() {
    let mut r = rng();
    gradcheck(&[leaf(&[3, 4], &mut r), leaf(&[4], &mut r)], |t| {
        let mask = t[0]
            .detach()
            .gt(&Tensor::scalar(0.0, DType::F64, Device::Cpu)?)?;
        Tensor::where_cond(&mask, &t[0], &t[1])
    });
    gradcheck(&[leaf(&[4, 4], &mut r)], |t| {
        t[0].t()?
            .masked_fill(&smith::causal_mask(4, Device::Cpu)?, -3.0)
    });
}

#[test]
fn reductions() {
    let mut r = rng();
    gradcheck(&[leaf(&[2, 3, 4], &mut r)], |t| t[0].sum(&[0, 2]));
    gradcheck(&[leaf(&[2, 3, 4], &mut r)], |t| {
        t[0].permute(&[2, 0, 1])?.sum_keepdim(&[1])
    });
    gradcheck(&[leaf(&[2, 3, 4], &mut r)], |t| t[0].mean(&[1]));
    gradcheck(&[leaf(&[2, 3, 4], &mut r)], |t| t[0].mean_all());
    gradcheck(&[leaf(&[3, 5], &mut r)], |t| t[0].t()?.max(1, false));
    gradcheck(&[leaf(&[3, 5], &mut r)], |t| t[0].min(0, true));
}

#[test]
fn matmul_plain_transposed_and_batched() {
    let mut r = rng();
    gradcheck(&[leaf(&[3, 4], &mut r), leaf(&[4, 5], &mut r)], |t| {
        t[0].matmul(&t[1])
    });
    gradcheck(&[leaf(&[4, 3], &mut r), leaf(&[5, 4], &mut r)], |t| {
        t[0].t()?.matmul(&t[1].t()?)
    });
    // Batched with a broadcast batch dim on the right-hand side.
    gradcheck(&[leaf(&[2, 3, 4], &mut r), leaf(&[4, 2], &mut r)], |t| {
        t[0].matmul(&t[1])
    });
    gradcheck(
        &[leaf(&[2, 1, 3, 4], &mut r), leaf(&[3, 4, 2], &mut r)],
        |t| t[0].matmul(&t[1]),
    );
}

#[test]
fn softmax_family() {
    let mut r = rng();
    gradcheck(&[leaf(&[3, 5], &mut r)], |t| t[0].softmax(1));
    gradcheck(&[leaf(&[3, 5], &mut r)], |t| t[0].softmax(0));
    gradcheck(&[leaf(&[4, 3], &mut r)], |t| t[0].t()?.log_softmax(1));
    // Causal: square and with more keys than queries (a cached prefix).
    gradcheck(&[leaf(&[2, 4, 4], &mut r)], |t| {
        t[0].transpose(1, 2)?.softmax_causal()
    });
    gradcheck(&[leaf(&[3, 5], &mut r)], |t| t[0].softmax_causal());
}

#[test]
fn norms() {
    let mut r = rng();
    gradcheck(
        &[
            leaf(&[3, 6], &mut r),
            leaf(&[5], &mut r),
            leaf(&[5], &mut r),
        ],
        |t| {
            t[0].narrow(1, 1, 5)?
                .layer_norm(Some(&t[1]), Some(&t[2]), 1e-5)
        },
    );
    gradcheck(&[leaf(&[5, 3], &mut r)], |t| {
        t[0].t()?.layer_norm(None, None, 1e-5)
    });
    gradcheck(&[leaf(&[2, 3, 4], &mut r), leaf(&[4], &mut r)], |t| {
        t[0].rms_norm(Some(&t[1]), 1e-6)
    });
    gradcheck(&[leaf(&[4, 3], &mut r)], |t| t[0].t()?.rms_norm(None, 1e-6));
}

#[test]
fn cross_entropy_with_ignore_index() {
    let mut r = rng();
    let targets = Tensor::from_vec(vec![2i64, -100, 0, 4], &[4], Device::Cpu).unwrap();
    gradcheck(&[leaf(&[5, 4], &mut r)], |t| {
        t[0].t()?.cross_entropy(&targets, -100)
    });
    let targets = Tensor::from_vec(vec![1i64, 0, 2, 2, 1, 0], &[2, 3], Device::Cpu).unwrap();
    gradcheck(&[leaf(&[2, 3, 3], &mut r)], |t| {
        t[0].cross_entropy(&targets, -100)
    });
}

#[test]
fn indexing_ops() {
    let mut r = rng();
    let ids = Tensor::from_vec(vec![3i64, 0, 3, 1], &[2, 2], Device::Cpu).unwrap();
    // Embedding with a repeated id and the same weight used twice (weight tying).
    gradcheck(&[leaf(&[4, 3], &mut r)], |t| {
        let e = Tensor::embedding(&ids, &t[0])?;
        e.matmul(&t[0].t()?)
    });
    let rows = Tensor::from_vec(vec![2u32, 0], &[2], Device::Cpu).unwrap();
    gradcheck(&[leaf(&[3, 4], &mut r)], |t| {
        t[0].t()?.index_select(1, &rows)
    });
    let index = Tensor::from_vec(vec![0i64, 2, 1, 1, 0, 2], &[2, 3], Device::Cpu).unwrap();
    gradcheck(&[leaf(&[2, 4], &mut r)], |t| t[0].gather(1, &index));
    gradcheck(&[leaf(&[2, 3], &mut r), leaf(&[2, 3], &mut r)], |t| {
        t[0].scatter_add(1, &index, &t[1])
    });
}

#[test]
fn shape_ops() {
    let mut r = rng();
    gradcheck(&[leaf(&[2, 3], &mut r), leaf(&[4, 2], &mut r)], |t| {
        Tensor::cat(&[t[0].clone(), t[1].narrow(0, 1, 3)?.t()?], 0)
    });
    gradcheck(&[leaf(&[2, 3], &mut r), leaf(&[3, 2], &mut r)], |t| {
        Tensor::stack(&[t[0].clone(), t[1].t()?], 1)
    });
    gradcheck(&[leaf(&[4, 3], &mut r)], |t| {
        let parts = t[0].split(&[1, 3], 0)?;
        parts[1].mul(&parts[0])
    });
    // Reshape of a transposed view must copy, not reinterpret.
    gradcheck(&[leaf(&[2, 3, 4], &mut r)], |t| {
        t[0].transpose(0, 1)?.reshape(&[3, 8])?.mul_scalar(2.0)
    });
    gradcheck(&[leaf(&[3, 1, 4], &mut r)], |t| {
        t[0].squeeze(1)?.unsqueeze(0)?.broadcast_as(&[2, 3, 4])
    });
    gradcheck(&[leaf(&[3, 4], &mut r)], |t| {
        t[0].t()?.contiguous()?.narrow(0, 1, 2)
    });
    gradcheck(&[leaf(&[2, 3, 4], &mut r)], |t| {
        t[0].chunk(2, 2)?[1].permute(&[2, 0, 1])
    });
}

#[test]
fn dropout_uses_its_mask() {
    let mut r = rng();
    gradcheck(&[leaf(&[4, 5], &mut r)], |t| {
        t[0].t()?.dropout(0.3, &mut Rng::new(9))
    });
}

#[test]
fn rotary_both_layouts() {
    let mut r = rng();
    let (cos, sin) = rotary_tables(0, 3, 4, 10000.0, DType::F64, Device::Cpu).unwrap();
    for style in [RotaryStyle::Interleaved, RotaryStyle::RotateHalf] {
        gradcheck(&[leaf(&[2, 4, 3], &mut r)], |t| {
            t[0].transpose(1, 2)?.rotary(&cos, &sin, style)
        });
    }
}

#[test]
fn a_tensor_used_twice_gets_the_sum() {
    let x = Tensor::from_vec(vec![1.0f64, 2.0, 3.0], &[3], Device::Cpu)
        .unwrap()
        .requires_grad()
        .unwrap();
    // y = x * x + x  => dy/dx = 2x + 1
    let y = x.mul(&x).unwrap().add(&x).unwrap().sum_all().unwrap();
    let g = y.backward().unwrap();
    assert_eq!(
        g.get(&x).unwrap().to_vec::<f64>().unwrap(),
        vec![3.0, 5.0, 7.0]
    );
}

#[test]
fn no_grad_and_detach_build_no_graph() {
    let x = Tensor::ones(&[2], DType::F64, Device::Cpu)
        .unwrap()
        .requires_grad()
        .unwrap();
    {
        let _g = smith::no_grad();
        assert!(!x.exp().unwrap().tracks_grad());
    }
    assert!(x.exp().unwrap().tracks_grad());
    assert!(!x.detach().exp().unwrap().tracks_grad());
    assert!(x.detach().sum_all().unwrap().backward().is_err());
}

#[test]
fn gradients_accumulate_across_backward_calls_until_zeroed() {
    let x = Tensor::from_vec(vec![1.0f64, -2.0], &[2], Device::Cpu)
        .unwrap()
        .requires_grad()
        .unwrap();
    let mut store = smith::GradStore::new();
    for _ in 0..3 {
        x.mul_scalar(2.0)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward_into(&mut store)
            .unwrap();
    }
    assert_eq!(
        store.get(&x).unwrap().to_vec::<f64>().unwrap(),
        vec![6.0, 6.0]
    );
    store.zero();
    assert!(store.get(&x).is_none());
}

#[test]
fn cast_backward_returns_the_input_dtype() {
    let x = Tensor::from_vec(vec![1.0f32, 2.0], &[2], Device::Cpu)
        .unwrap()
        .requires_grad()
        .unwrap();
    let y = x
        .to_dtype(DType::F64)
        .unwrap()
        .sqr()
        .unwrap()
        .sum_all()
        .unwrap();
    let g = y.backward().unwrap();
    let gx = g.get(&x).unwrap();
    assert_eq!(gx.dtype(), DType::F32);
    assert_eq!(gx.to_vec::<f32>().unwrap(), vec![2.0, 4.0]);
}

/// Several slices of one tensor: a split that tiles it (joined by one concatenation),
/// slices with gaps, overlapping slices, slices along two dims, and a dense use besides.
#[test]
fn many_slices_of_one_tensor() {
    let mut r = rng();
    gradcheck(&[leaf(&[4, 9], &mut r)], |t| {
        let parts = t[0].split(&[2, 3, 4], 1)?;
        parts[0]
            .exp()?
            .sum_all()?
            .add(&parts[1].sqr()?.sum_all()?)?
            .add(&parts[2].tanh()?.sum_all()?)
    });
    gradcheck(&[leaf(&[4, 9], &mut r)], |t| {
        let gaps = t[0].narrow(1, 1, 2)?.exp()?.sum_all()?;
        let gaps = gaps.add(&t[0].narrow(1, 6, 2)?.sqr()?.sum_all()?)?;
        let overlap = t[0]
            .narrow(1, 0, 5)?
            .sum_all()?
            .mul(&t[0].narrow(1, 3, 5)?.sum_all()?)?;
        let other_dim = t[0].narrow(0, 1, 2)?.tanh()?.sum_all()?;
        gaps.add(&overlap)?
            .add(&other_dim)?
            .add(&t[0].sqr()?.mean_all()?)
    });
}

/// `backward_with(g)` back-propagates `g` as the output's gradient: the same gradients as
/// `sum(y * g).backward()`, and a gradient of another shape is an error.
#[test]
fn backward_with_a_given_output_gradient() {
    let mut rng = Rng::new(4);
    let x = Tensor::randn(&[3, 5], 0.0, 1.0, DType::F64, Device::Cpu, &mut rng)
        .unwrap()
        .requires_grad()
        .unwrap();
    let y = x.tanh().unwrap().mul(&x).unwrap();
    let g = Tensor::randn(&[3, 5], 0.0, 1.0, DType::F64, Device::Cpu, &mut rng).unwrap();
    let seeded = y.backward_with(&g).unwrap();
    let summed = y.mul(&g).unwrap().sum_all().unwrap().backward().unwrap();
    let a = seeded.get(&x).unwrap().to_vec_f64().unwrap();
    let b = summed.get(&x).unwrap().to_vec_f64().unwrap();
    assert_eq!(a, b);
    assert!(y.backward_with(&g.reshape(&[5, 3]).unwrap()).is_err());
    assert!(y.backward_with(&g.to_dtype(DType::F32).unwrap()).is_err());
}
