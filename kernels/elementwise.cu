// Elementwise kernels: unary maps, binary ops, comparisons, where, fill and casts.
// Inputs are read through their strides; outputs are contiguous. Op codes match
// the Rust enums in src/backend/cuda/elementwise.rs.

template <typename C>
__device__ __forceinline__ C sigmoid_of(C v) { return C(1) / (C(1) + exp(-v)); }

template <typename C>
__device__ __forceinline__ C apply_unary(int op, C v, C p0, C p1) {
    const C k2 = C(2.0 * 0.7978845608028654);  // 2 * sqrt(2 / pi)
    const C g = C(0.044715);
    switch (op) {
        case 0: return -v;
        case 1: return exp(v);
        case 2: return log(v);
        case 3: return sqrt(v);
        case 4: return tanh(v);
        case 5: return sigmoid_of(v);
        case 6: return v > C(0) ? v : C(0);
        case 7: return fabs(v);
        case 8: return v * sigmoid_of(k2 * (v + g * v * v * v));                       // GELU (tanh)
        case 9: return C(0.5) * v * (C(1) + erf(v * C(0.7071067811865476)));            // GELU (erf)
        case 10: return v * sigmoid_of(v);                                              // SiLU
        case 11: return v * p0 + p1;                                                    // affine
        case 12: return pow(v, p0);                                                     // powf
        case 13: return v > C(0) ? C(1) : C(0);                                         // step
        case 14: {                                                                      // GELU' (tanh)
            C s = sigmoid_of(k2 * (v + g * v * v * v));
            return s + v * s * (C(1) - s) * k2 * (C(1) + C(3) * g * v * v);
        }
        case 15:                                                                        // GELU' (erf)
            return C(0.5) * (C(1) + erf(v * C(0.7071067811865476)))
                 + v * C(0.3989422804014327) * exp(C(-0.5) * v * v);
        case 16: { C s = sigmoid_of(v); return s * (C(1) + v * (C(1) - s)); }           // SiLU'
        default: return v;
    }
}

template <typename C>
__device__ __forceinline__ C apply_binary(int op, C a, C b) {
    switch (op) {
        case 0: return a + b;
        case 1: return a - b;
        case 2: return a * b;
        case 3: return a / b;
        case 4: return pow(a, b);
        case 5: return (a >= b || isnan(a)) ? a : b;
        case 6: return (a <= b || isnan(a)) ? a : b;
        default: return a;
    }
}

__device__ __forceinline__ unsigned char apply_cmp(int op, double a, double b) {
    switch (op) {
        case 0: return a == b;
        case 1: return a != b;
        case 2: return a < b;
        case 3: return a <= b;
        case 4: return a > b;
        default: return a >= b;
    }
}

#define FLOAT_KERNELS(SUFFIX, T, C)                                                          \
extern "C" __global__ void unary_##SUFFIX(int op, const T* x, Strided lx, T* y, long long n, \
                                          double p0, double p1) {                            \
    GRID_STRIDE_LOOP(i, n) {                                                                 \
        C v = to_compute(x[strided_index(lx, i)]);                                           \
        y[i] = from_compute<T>(apply_unary<C>(op, v, (C)p0, (C)p1));                         \
    }                                                                                        \
}                                                                                            \
extern "C" __global__ void binary_##SUFFIX(int op, const T* a, Strided la, const T* b,       \
                                           Strided lb, T* y, long long n) {                  \
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

// Contiguous, 16-byte aligned f32: four elements per load and store (n4 = n / 4 groups).
extern "C" __global__ void unary_vec4_f32(int op, const float4* x, float4* y, long long n4, double p0, double p1) {
    GRID_STRIDE_LOOP(i, n4) {
        float4 v = x[i];
        v.x = apply_unary<float>(op, v.x, (float)p0, (float)p1);
        v.y = apply_unary<float>(op, v.y, (float)p0, (float)p1);
        v.z = apply_unary<float>(op, v.z, (float)p0, (float)p1);
        v.w = apply_unary<float>(op, v.w, (float)p0, (float)p1);
        y[i] = v;
    }
}
extern "C" __global__ void copy_vec4_f32(const float4* x, float4* y, long long n4) {
    GRID_STRIDE_LOOP(i, n4) { y[i] = x[i]; }
}
FLOAT_KERNELS(f16, __half, float)
FLOAT_KERNELS(bf16, __nv_bfloat16, float)
FLOAT_KERNELS(f64, double, double)

#define ANY_KERNELS(SUFFIX, T)                                                               \
extern "C" __global__ void cmp_##SUFFIX(int op, const T* a, Strided la, const T* b,          \
                                        Strided lb, unsigned char* y, long long n) {         \
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
