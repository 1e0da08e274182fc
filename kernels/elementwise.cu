// Elementwise kernels: unary maps, binary ops, comparisons, where, fill and casts.
// Inputs are read through their strides; outputs are contiguous. The op codes
// (UNARY_*, BINARY_*, CMP_*) are #defines generated from the Rust enums in
// src/backend/op_kinds.rs; an unknown code traps.

template <typename C>
__device__ __forceinline__ C sigmoid_of(C v) { return C(1) / (C(1) + exp(-v)); }

template <typename C>
__device__ __forceinline__ C apply_unary(int op, C v, C p0, C p1) {
    const C k2 = C(2.0 * 0.7978845608028654);  // 2 * sqrt(2 / pi)
    const C g = C(0.044715);
    switch (op) {
        case UNARY_NEG: return -v;
        case UNARY_EXP: return exp(v);
        case UNARY_LOG: return log(v);
        case UNARY_SQRT: return sqrt(v);
        case UNARY_TANH: return tanh(v);
        case UNARY_SIGMOID: return sigmoid_of(v);
        case UNARY_RELU: return v > C(0) ? v : C(0);
        case UNARY_ABS: return fabs(v);
        case UNARY_GELU_TANH: return v * sigmoid_of(k2 * (v + g * v * v * v));                       // GELU (tanh)
        case UNARY_GELU_ERF: return C(0.5) * v * (C(1) + erf(v * C(0.7071067811865476)));            // GELU (erf)
        case UNARY_SILU: return v * sigmoid_of(v);                                              // SiLU
        case UNARY_AFFINE: return v * p0 + p1;                                                    // affine
        case UNARY_POWF: return pow(v, p0);                                                     // powf
        case UNARY_STEP: return v > C(0) ? C(1) : C(0);                                         // step
        case UNARY_GELU_TANH_DERIV: {                                                                      // GELU' (tanh)
            C s = sigmoid_of(k2 * (v + g * v * v * v));
            return s + v * s * (C(1) - s) * k2 * (C(1) + C(3) * g * v * v);
        }
        case UNARY_GELU_ERF_DERIV:                                                                        // GELU' (erf)
            return C(0.5) * (C(1) + erf(v * C(0.7071067811865476)))
                 + v * C(0.3989422804014327) * exp(C(-0.5) * v * v);
        case UNARY_SILU_DERIV: { C s = sigmoid_of(v); return s * (C(1) + v * (C(1) - s)); }           // SiLU'
        case UNARY_RELU6: return v < C(0) ? C(0) : (v > C(6) ? C(6) : v);
        case UNARY_RELU6_DERIV: return (v > C(0) && v < C(6)) ? C(1) : C(0);
        case UNARY_HARDSWISH: {
            C r = v + C(3);
            r = r < C(0) ? C(0) : (r > C(6) ? C(6) : r);
            return v * r / C(6);
        }
        case UNARY_HARDSWISH_DERIV: return v < C(-3) ? C(0) : (v <= C(3) ? v / C(3) + C(0.5) : C(1));
        default: return v;  // not reached: REQUIRE_OP trapped at entry
    }
}

template <typename C>
__device__ __forceinline__ C apply_binary(int op, C a, C b) {
    switch (op) {
        case BINARY_ADD: return a + b;
        case BINARY_SUB: return a - b;
        case BINARY_MUL: return a * b;
        case BINARY_DIV: return a / b;
        case BINARY_POW: return pow(a, b);
        case BINARY_MAXIMUM: return (a >= b || isnan(a)) ? a : b;
        case BINARY_MINIMUM: return (a <= b || isnan(a)) ? a : b;
        default: return a;  // not reached: REQUIRE_OP trapped at entry
    }
}

__device__ __forceinline__ unsigned char apply_cmp(int op, double a, double b) {
    switch (op) {
        case CMP_EQ: return a == b;
        case CMP_NE: return a != b;
        case CMP_LT: return a < b;
        case CMP_LE: return a <= b;
        case CMP_GT: return a > b;
        case CMP_GE: return a >= b;
        default: return 0;  // not reached: REQUIRE_OP trapped at entry
    }
}

// Traps on an op code of KIND (UNARY, BINARY, CMP) the kernel does not know, once at the
// kernel's entry rather than in the switch of every element: a trap inside the loop keeps
// the compiler from specialising the loop per op (GELU ran at two thirds of its speed).
#define REQUIRE_OP(KIND, op) if ((unsigned)(op) >= (unsigned)KIND##_COUNT) __trap();

#define FLOAT_KERNELS(SUFFIX, T, C)                                                          \
extern "C" __global__ void unary_##SUFFIX(int op, const T* x, Strided lx, T* y, long long n, \
                                          double p0, double p1) {                            \
    REQUIRE_OP(UNARY, op);                                                                   \
    GRID_STRIDE_LOOP(i, n) {                                                                 \
        C v = to_compute(x[strided_index(lx, i)]);                                           \
        y[i] = from_compute<T>(apply_unary<C>(op, v, (C)p0, (C)p1));                         \
    }                                                                                        \
}                                                                                            \
extern "C" __global__ void binary_##SUFFIX(int op, const T* a, Strided la, const T* b,       \
                                           Strided lb, T* y, long long n) {                  \
    REQUIRE_OP(BINARY, op);                                                                  \
    GRID_STRIDE_LOOP(i, n) {                                                                 \
        C u = to_compute(a[strided_index(la, i)]);                                           \
        C v = to_compute(b[strided_index(lb, i)]);                                           \
        y[i] = from_compute<T>(apply_binary<C>(op, u, v));                                   \
    }                                                                                        \
}                                                                                            \
extern "C" __global__ void where_##SUFFIX(const unsigned char* c, Strided lc, const T* a,    \
                                          Strided la, const T* b, Strided lb, T* y,          \
                                          long long n) {                                     \
    GRID_STRIDE_LOOP(i, n) {                                                                 \
        y[i] = c[strided_index(lc, i)] ? a[strided_index(la, i)] : b[strided_index(lb, i)];  \
    }                                                                                        \
}

FLOAT_KERNELS(f32, float, float)

// Contiguous, 16-byte aligned f32, f16 and bf16: groups of eight elements move as whole
// 16-byte words (two for f32), and the n % 8 tail element by element. Results are the
// same as the strided kernels': both compute in f32.
template <typename T> struct Oct {
    static constexpr int WORDS = sizeof(T) * 8 / 16;
    __device__ static void load(const T* p, float* v) {
#pragma unroll
        for (int k = 0; k < 8; k += Pack16<T>::N) Pack16<T>::load(p + k, v + k);
    }
    __device__ static void store(T* p, const float* v) {
        uint4 w[WORDS];
        T* e = reinterpret_cast<T*>(w);
        for (int i = 0; i < 8; ++i) e[i] = from_compute<T>(v[i]);
        for (int k = 0; k < WORDS; ++k) reinterpret_cast<uint4*>(p)[k] = w[k];
    }
};

// Runs BODY(i) for each of the n % 8 tail elements, in the first block.
#define OCT_TAIL(n, BODY)                                                                    \
    if (blockIdx.x == 0 && threadIdx.x < (n) % 8) { long long i = (n) / 8 * 8 + threadIdx.x; BODY; }

// The contiguous loops are instantiated once per op code (OP a template argument), and the
// kernel picks its loop once: a switch inside the loop of every element left the compiler
// to specialise the loop by itself, which it stopped doing for GELU when ops were added
// (2.3 instead of 3.4 TB/s on the H200).
template <int OP, typename T>
__device__ __forceinline__ void unary_vec_loop(const T* x, T* y, long long n, float p0, float p1) {
    GRID_STRIDE_LOOP(g, n / 8) {
        float v[8];
        Oct<T>::load(x + g * 8, v);
#pragma unroll
        for (int k = 0; k < 8; ++k) v[k] = apply_unary<float>(OP, v[k], p0, p1);
        Oct<T>::store(y + g * 8, v);
    }
}

template <int OP, typename T>
__device__ __forceinline__ void binary_vec_loop(const T* a, const T* b, T* y, long long n) {
    GRID_STRIDE_LOOP(g, n / 8) {
        float u[8], v[8];
        Oct<T>::load(a + g * 8, u);
        Oct<T>::load(b + g * 8, v);
#pragma unroll
        for (int k = 0; k < 8; ++k) u[k] = apply_binary<float>(OP, u[k], v[k]);
        Oct<T>::store(y + g * 8, u);
    }
}

#define UNARY_VEC_CASE(NAME) case UNARY_##NAME: unary_vec_loop<UNARY_##NAME>(x, y, n, (float)p0, (float)p1); break;
#define BINARY_VEC_CASE(NAME) case BINARY_##NAME: binary_vec_loop<BINARY_##NAME>(a, b, y, n); break;

#define VEC_KERNELS(SUFFIX, T)                                                               \
extern "C" __global__ void unary_vec_##SUFFIX(int op, const T* x, T* y, long long n,         \
                                              double p0, double p1) {                        \
    switch (op) {                                                                            \
        UNARY_FOR_EACH(UNARY_VEC_CASE)                                                       \
        default: __trap();                                                                   \
    }                                                                                        \
    OCT_TAIL(n, y[i] = from_compute<T>(apply_unary<float>(op, to_compute(x[i]), (float)p0, (float)p1))) \
}                                                                                            \
extern "C" __global__ void binary_vec_##SUFFIX(int op, const T* a, const T* b, T* y,         \
                                               long long n) {                                \
    switch (op) {                                                                            \
        BINARY_FOR_EACH(BINARY_VEC_CASE)                                                     \
        default: __trap();                                                                   \
    }                                                                                        \
    OCT_TAIL(n, y[i] = from_compute<T>(apply_binary<float>(op, to_compute(a[i]), to_compute(b[i])))) \
}

#define VEC_CAST(SN, ST, DN, DT)                                                             \
extern "C" __global__ void cast_vec_##SN##_##DN(const ST* x, DT* y, long long n) {           \
    GRID_STRIDE_LOOP(g, n / 8) {                                                             \
        float v[8];                                                                          \
        Oct<ST>::load(x + g * 8, v);                                                         \
        Oct<DT>::store(y + g * 8, v);                                                        \
    }                                                                                        \
    OCT_TAIL(n, y[i] = from_compute<DT>(to_compute(x[i])))                                   \
}
#define VEC_CAST_FROM(SN, ST)                                                                \
    VEC_CAST(SN, ST, f32, float) VEC_CAST(SN, ST, f16, __half) VEC_CAST(SN, ST, bf16, __nv_bfloat16)

VEC_KERNELS(f32, float)
VEC_KERNELS(f16, __half)
VEC_KERNELS(bf16, __nv_bfloat16)
VEC_CAST_FROM(f32, float)
VEC_CAST_FROM(f16, __half)
VEC_CAST_FROM(bf16, __nv_bfloat16)

FLOAT_KERNELS(f16, __half, float)
FLOAT_KERNELS(bf16, __nv_bfloat16, float)
FLOAT_KERNELS(f64, double, double)

#define ANY_KERNELS(SUFFIX, T)                                                               \
extern "C" __global__ void cmp_##SUFFIX(int op, const T* a, Strided la, const T* b,          \
                                        Strided lb, unsigned char* y, long long n) {         \
    REQUIRE_OP(CMP, op);                                                                     \
    GRID_STRIDE_LOOP(i, n) {                                                                 \
        y[i] = apply_cmp(op, to_double(a[strided_index(la, i)]),                             \
                         to_double(b[strided_index(lb, i)]));                                \
    }                                                                                        \
}                                                                                            \
extern "C" __global__ void copy_##SUFFIX(const T* x, Strided lx, T* y, long long n) {      \
    GRID_STRIDE_LOOP(i, n) { y[i] = x[strided_index(lx, i)]; }                               \
}                                                                                            \
extern "C" __global__ void fill_##SUFFIX(T* y, long long n, double value) {                  \
    T v = from_double<T>(value);                                                             \
    GRID_STRIDE_LOOP(i, n) { y[i] = v; }                                                     \
}

ANY_KERNELS(f32, float)
ANY_KERNELS(f16, __half)
ANY_KERNELS(bf16, __nv_bfloat16)
ANY_KERNELS(f64, double)
ANY_KERNELS(i64, long long)
ANY_KERNELS(u32, unsigned int)
ANY_KERNELS(u8, unsigned char)

// Strided copy with conversion: every (source, destination) dtype pair.
#define CAST(SN, ST, DN, DT)                                                                 \
extern "C" __global__ void cast_##SN##_##DN(const ST* x, Strided lx, DT* y, long long n) {   \
    GRID_STRIDE_LOOP(i, n) { y[i] = from_double<DT>(to_double(x[strided_index(lx, i)])); }   \
}
#define CAST_FROM(SN, ST)                                                                    \
    CAST(SN, ST, f32, float) CAST(SN, ST, f16, __half) CAST(SN, ST, bf16, __nv_bfloat16)     \
    CAST(SN, ST, f64, double) CAST(SN, ST, i64, long long) CAST(SN, ST, u32, unsigned int)   \
    CAST(SN, ST, u8, unsigned char)

CAST_FROM(f32, float)
CAST_FROM(f16, __half)
CAST_FROM(bf16, __nv_bfloat16)
CAST_FROM(f64, double)
CAST_FROM(i64, long long)
CAST_FROM(u32, unsigned int)
CAST_FROM(u8, unsigned char)
