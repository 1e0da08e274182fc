//! The op kinds every backend runs, each declared once: the enum, its list (`ALL`), its
//! name, the integer code the CUDA kernels switch on (and the `#define`s that name those
//! codes in the CUDA source), and for unary ops the f64 formula, the derivative and whether
//! the op is differentiable. Test suites iterate `ALL`, so a new op is checked everywhere
//! without anyone adding it to a list.

/// Declares a fieldless op-kind enum with its `ALL`, `name`, `code` and CUDA defines.
macro_rules! op_kinds {
    (
        $(#[$meta:meta])*
        pub enum $name:ident ($prefix:literal) {
            $($(#[$vmeta:meta])* $variant:ident => $text:literal,)*
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name {
            $($(#[$vmeta])* $variant,)*
        }

        impl $name {
            /// Every kind, in the order of their codes.
            pub const ALL: &'static [$name] = &[$($name::$variant,)*];

            /// The op's name (messages, test reports, the CUDA defines).
            pub fn name(self) -> &'static str {
                match self {
                    $($name::$variant => $text,)*
                }
            }

            /// The code the CUDA kernels switch on: the kind's position in `ALL`.
            pub fn code(self) -> i32 {
                self as i32
            }

            /// `#define PREFIX_NAME code` for every kind, `PREFIX_COUNT` (codes run from 0
            /// to it) and the X-macro `PREFIX_FOR_EACH(X)` (`X(NAME)` for every kind, so a
            /// kernel can instantiate one loop per op), for the CUDA source.
            pub fn cuda_defines() -> String {
                let mut defines: String = Self::ALL
                    .iter()
                    .map(|k| {
                        format!("#define {}_{} {}\n", $prefix, k.name().to_uppercase(), k.code())
                    })
                    .collect();
                defines += &format!("#define {}_COUNT {}\n", $prefix, Self::ALL.len());
                defines += &format!("#define {}_FOR_EACH(X)", $prefix);
                for k in Self::ALL {
                    defines += &format!(" X({})", k.name().to_uppercase());
                }
                defines += "\n";
                defines
            }
        }
    };
}

op_kinds! {
    /// The kind of a [`UnaryOp`] (its parameters aside).
    pub enum UnaryKind ("UNARY") {
        Neg => "neg",
        Exp => "exp",
        Log => "log",
        Sqrt => "sqrt",
        Tanh => "tanh",
        Sigmoid => "sigmoid",
        Relu => "relu",
        Abs => "abs",
        GeluTanh => "gelu_tanh",
        GeluErf => "gelu_erf",
        Silu => "silu",
        Affine => "affine",
        Powf => "powf",
        Step => "step",
        GeluTanhDeriv => "gelu_tanh_deriv",
        GeluErfDeriv => "gelu_erf_deriv",
        SiluDeriv => "silu_deriv",
        Relu6 => "relu6",
        Relu6Deriv => "relu6_deriv",
        Hardswish => "hardswish",
        HardswishDeriv => "hardswish_deriv",
    }
}

op_kinds! {
    /// Elementwise ops with two inputs of the same shape (broadcasting happens before).
    pub enum BinaryOp ("BINARY") {
        Add => "add",
        Sub => "sub",
        Mul => "mul",
        Div => "div",
        Pow => "pow",
        Max => "maximum",
        Min => "minimum",
    }
}

op_kinds! {
    /// Elementwise comparisons; the result is a u8 mask of 0 and 1.
    pub enum CmpOp ("CMP") {
        Eq => "eq",
        Ne => "ne",
        Lt => "lt",
        Le => "le",
        Gt => "gt",
        Ge => "ge",
    }
}

op_kinds! {
    /// Reductions over a set of dimensions.
    pub enum ReduceOp ("REDUCE") {
        Sum => "sum",
        Max => "max",
        Min => "min",
    }
}

/// The `#define`s of every op code, prepended to each CUDA module's source.
pub fn cuda_op_defines() -> String {
    [
        UnaryKind::cuda_defines(),
        BinaryOp::cuda_defines(),
        CmpOp::cuda_defines(),
        ReduceOp::cuda_defines(),
    ]
    .concat()
}

/// Elementwise ops with one input. The `*Deriv` variants are the derivatives used by
/// backward passes (they are not differentiable themselves).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum UnaryOp {
    Neg,
    Exp,
    Log,
    Sqrt,
    Tanh,
    Sigmoid,
    Relu,
    Abs,
    /// GELU, tanh approximation (GPT-2).
    GeluTanh,
    /// GELU with the exact error function.
    GeluErf,
    /// x * sigmoid(x).
    Silu,
    /// `x * mul + add`.
    Affine {
        mul: f64,
        add: f64,
    },
    /// `x ^ e`.
    Powf(f64),
    /// 1 where x > 0, else 0 (the derivative of ReLU).
    Step,
    GeluTanhDeriv,
    GeluErfDeriv,
    SiluDeriv,
    /// `min(max(x, 0), 6)` (MobileNet's ReLU).
    Relu6,
    /// 1 where 0 < x < 6, else 0 (the derivative of ReLU6).
    Relu6Deriv,
    /// `x · relu6(x + 3) / 6`.
    Hardswish,
    /// The derivative of Hardswish: 0 below −3, `x / 3 + 1/2` up to 3, then 1.
    HardswishDeriv,
}

const SQRT_2_OVER_PI: f64 = 0.797_884_560_802_865_4;
const GELU_C: f64 = 0.044_715;

fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

impl UnaryOp {
    /// The op's kind.
    pub fn kind(self) -> UnaryKind {
        match self {
            UnaryOp::Neg => UnaryKind::Neg,
            UnaryOp::Exp => UnaryKind::Exp,
            UnaryOp::Log => UnaryKind::Log,
            UnaryOp::Sqrt => UnaryKind::Sqrt,
            UnaryOp::Tanh => UnaryKind::Tanh,
            UnaryOp::Sigmoid => UnaryKind::Sigmoid,
            UnaryOp::Relu => UnaryKind::Relu,
            UnaryOp::Abs => UnaryKind::Abs,
            UnaryOp::GeluTanh => UnaryKind::GeluTanh,
            UnaryOp::GeluErf => UnaryKind::GeluErf,
            UnaryOp::Silu => UnaryKind::Silu,
            UnaryOp::Affine { .. } => UnaryKind::Affine,
            UnaryOp::Powf(_) => UnaryKind::Powf,
            UnaryOp::Step => UnaryKind::Step,
            UnaryOp::GeluTanhDeriv => UnaryKind::GeluTanhDeriv,
            UnaryOp::GeluErfDeriv => UnaryKind::GeluErfDeriv,
            UnaryOp::SiluDeriv => UnaryKind::SiluDeriv,
            UnaryOp::Relu6 => UnaryKind::Relu6,
            UnaryOp::Relu6Deriv => UnaryKind::Relu6Deriv,
            UnaryOp::Hardswish => UnaryKind::Hardswish,
            UnaryOp::HardswishDeriv => UnaryKind::HardswishDeriv,
        }
    }

    /// The two scalar parameters the kernels take (`mul, add` or the exponent; else 0).
    pub fn params(self) -> (f64, f64) {
        match self {
            UnaryOp::Affine { mul, add } => (mul, add),
            UnaryOp::Powf(e) => (e, 0.0),
            _ => (0.0, 0.0),
        }
    }

    /// The op in its f64 definition, the reference every backend is checked against.
    pub fn reference(self, x: f64) -> f64 {
        let gelu_inner = |x: f64| SQRT_2_OVER_PI * (x + GELU_C * x * x * x);
        let erf = |x: f64| libm::erf(x);
        match self {
            UnaryOp::Neg => -x,
            UnaryOp::Exp => x.exp(),
            UnaryOp::Log => x.ln(),
            UnaryOp::Sqrt => x.sqrt(),
            UnaryOp::Tanh => x.tanh(),
            UnaryOp::Sigmoid => sigmoid(x),
            UnaryOp::Relu => x.max(0.0),
            UnaryOp::Abs => x.abs(),
            UnaryOp::GeluTanh => 0.5 * x * (1.0 + gelu_inner(x).tanh()),
            UnaryOp::GeluErf => 0.5 * x * (1.0 + erf(x / std::f64::consts::SQRT_2)),
            UnaryOp::Silu => x * sigmoid(x),
            UnaryOp::Affine { mul, add } => x * mul + add,
            UnaryOp::Powf(e) => x.powf(e),
            UnaryOp::Step => f64::from(u8::from(x > 0.0)),
            UnaryOp::GeluTanhDeriv => {
                let t = gelu_inner(x).tanh();
                let dt = (1.0 - t * t) * SQRT_2_OVER_PI * (1.0 + 3.0 * GELU_C * x * x);
                0.5 * (1.0 + t) + 0.5 * x * dt
            }
            UnaryOp::GeluErfDeriv => {
                let pdf = (-0.5 * x * x).exp() / (2.0 * std::f64::consts::PI).sqrt();
                0.5 * (1.0 + erf(x / std::f64::consts::SQRT_2)) + x * pdf
            }
            UnaryOp::SiluDeriv => {
                let s = sigmoid(x);
                s * (1.0 + x * (1.0 - s))
            }
            UnaryOp::Relu6 => x.clamp(0.0, 6.0),
            UnaryOp::Relu6Deriv => f64::from(u8::from(x > 0.0 && x < 6.0)),
            UnaryOp::Hardswish => x * (x + 3.0).clamp(0.0, 6.0) / 6.0,
            UnaryOp::HardswishDeriv => {
                if x < -3.0 {
                    0.0
                } else if x <= 3.0 {
                    x / 3.0 + 0.5
                } else {
                    1.0
                }
            }
        }
    }

    /// How autograd differentiates the op: the one place that says which ops are
    /// differentiable. A new op whose derivative is another unary op of its input says so
    /// here, and needs nothing in the autograd layer.
    pub fn gradient(self) -> Gradient {
        match self {
            UnaryOp::Exp => Gradient::Op(UnaryOp::Exp),
            UnaryOp::Relu => Gradient::Op(UnaryOp::Step),
            UnaryOp::GeluTanh => Gradient::Op(UnaryOp::GeluTanhDeriv),
            UnaryOp::GeluErf => Gradient::Op(UnaryOp::GeluErfDeriv),
            UnaryOp::Silu => Gradient::Op(UnaryOp::SiluDeriv),
            UnaryOp::Relu6 => Gradient::Op(UnaryOp::Relu6Deriv),
            UnaryOp::Hardswish => Gradient::Op(UnaryOp::HardswishDeriv),
            UnaryOp::Neg
            | UnaryOp::Log
            | UnaryOp::Sqrt
            | UnaryOp::Tanh
            | UnaryOp::Sigmoid
            | UnaryOp::Abs
            | UnaryOp::Affine { .. }
            | UnaryOp::Powf(_) => Gradient::Formula,
            UnaryOp::Step
            | UnaryOp::GeluTanhDeriv
            | UnaryOp::GeluErfDeriv
            | UnaryOp::SiluDeriv
            | UnaryOp::Relu6Deriv
            | UnaryOp::HardswishDeriv => Gradient::None,
        }
    }

    /// Whether autograd records the op (see [`UnaryOp::gradient`]).
    pub fn differentiable(self) -> bool {
        !matches!(self.gradient(), Gradient::None)
    }

    /// Inputs on which the op is defined and smooth enough for a finite-difference check:
    /// positive for `log`, `sqrt` and `powf`, away from the kinks of `relu`, `abs`, `step`.
    pub fn domain(self) -> Domain {
        match self.kind() {
            UnaryKind::Log | UnaryKind::Sqrt | UnaryKind::Powf => Domain::Positive,
            UnaryKind::Relu
            | UnaryKind::Abs
            | UnaryKind::Step
            | UnaryKind::Relu6
            | UnaryKind::Relu6Deriv => Domain::AwayFromZero,
            _ => Domain::Any,
        }
    }
}

/// How autograd differentiates a unary op (see [`UnaryOp::gradient`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Gradient {
    /// `g · d(x)`: the derivative is the unary op `d` of the input.
    Op(UnaryOp),
    /// A formula of its own in `autograd/backward.rs` (from the output, a sign, a scale).
    Formula,
    /// Not differentiable: a helper used inside backward formulas.
    None,
}

/// Where a unary op's test inputs may be drawn from (see [`UnaryOp::domain`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Domain {
    Any,
    Positive,
    AwayFromZero,
}

impl UnaryKind {
    /// An op of this kind, with typical parameters where it has any (for tests).
    pub fn example(self) -> UnaryOp {
        match self {
            UnaryKind::Neg => UnaryOp::Neg,
            UnaryKind::Exp => UnaryOp::Exp,
            UnaryKind::Log => UnaryOp::Log,
            UnaryKind::Sqrt => UnaryOp::Sqrt,
            UnaryKind::Tanh => UnaryOp::Tanh,
            UnaryKind::Sigmoid => UnaryOp::Sigmoid,
            UnaryKind::Relu => UnaryOp::Relu,
            UnaryKind::Abs => UnaryOp::Abs,
            UnaryKind::GeluTanh => UnaryOp::GeluTanh,
            UnaryKind::GeluErf => UnaryOp::GeluErf,
            UnaryKind::Silu => UnaryOp::Silu,
            UnaryKind::Affine => UnaryOp::Affine {
                mul: 1.5,
                add: -0.25,
            },
            UnaryKind::Powf => UnaryOp::Powf(2.5),
            UnaryKind::Step => UnaryOp::Step,
            UnaryKind::GeluTanhDeriv => UnaryOp::GeluTanhDeriv,
            UnaryKind::GeluErfDeriv => UnaryOp::GeluErfDeriv,
            UnaryKind::SiluDeriv => UnaryOp::SiluDeriv,
            UnaryKind::Relu6 => UnaryOp::Relu6,
            UnaryKind::Relu6Deriv => UnaryOp::Relu6Deriv,
            UnaryKind::Hardswish => UnaryOp::Hardswish,
            UnaryKind::HardswishDeriv => UnaryOp::HardswishDeriv,
        }
    }
}

impl BinaryOp {
    /// The op in its f64 definition (`maximum`/`minimum` pass a NaN in `a` through).
    pub fn reference(self, a: f64, b: f64) -> f64 {
        match self {
            BinaryOp::Add => a + b,
            BinaryOp::Sub => a - b,
            BinaryOp::Mul => a * b,
            BinaryOp::Div => a / b,
            BinaryOp::Pow => a.powf(b),
            BinaryOp::Max => {
                if a >= b || a.is_nan() {
                    a
                } else {
                    b
                }
            }
            BinaryOp::Min => {
                if a <= b || a.is_nan() {
                    a
                } else {
                    b
                }
            }
        }
    }
}

impl CmpOp {
    /// The comparison in f64.
    pub fn reference(self, a: f64, b: f64) -> bool {
        match self {
            CmpOp::Eq => a == b,
            CmpOp::Ne => a != b,
            CmpOp::Lt => a < b,
            CmpOp::Le => a <= b,
            CmpOp::Gt => a > b,
            CmpOp::Ge => a >= b,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_unary_kind_round_trips_through_its_example() {
        for (i, &k) in UnaryKind::ALL.iter().enumerate() {
            assert_eq!(k.code(), i as i32);
            assert_eq!(k.example().kind(), k);
        }
    }

    #[test]
    fn cuda_defines_name_every_code_once() {
        let d = cuda_op_defines();
        assert!(d.contains("#define UNARY_GELU_TANH 8\n"), "{d}");
        assert!(d.contains("#define BINARY_MINIMUM 6\n"), "{d}");
        assert!(d.contains("#define CMP_GE 5\n"), "{d}");
        assert!(
            d.contains(&format!("#define UNARY_COUNT {}\n", UnaryKind::ALL.len())),
            "{d}"
        );
        let n = UnaryKind::ALL.len() + BinaryOp::ALL.len() + CmpOp::ALL.len() + ReduceOp::ALL.len();
        // Each kind's codes, and one count and one X-macro per family.
        assert_eq!(d.lines().count(), n + 8);
        assert!(
            d.contains("#define CMP_FOR_EACH(X) X(EQ) X(NE) X(LT) X(LE) X(GT) X(GE)\n"),
            "{d}"
        );
    }
}
