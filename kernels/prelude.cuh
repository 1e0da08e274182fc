// Shared by every smith kernel: strided layouts passed by value, 64-bit indexing, and
// loads/stores that widen f16/bf16 to f32 (sums and math always run in f32 or f64).
#include <cuda_fp16.h>
#include <cuda_bf16.h>

#ifndef INFINITY
#define INFINITY __int_as_float(0x7f800000)
#endif
#ifndef NAN
#define NAN __int_as_float(0x7fffffff)
#endif

#define SMITH_MAX_RANK 8

// A layout by value: no device copy of shapes or strides per launch.
struct Strided {
    long long shape[SMITH_MAX_RANK];
    long long strides[SMITH_MAX_RANK];
    int rank;
    int contiguous;
};

// Storage index (in elements, relative to the base pointer) of logical element i.
__device__ __forceinline__ long long strided_index(const Strided& l, long long i) {
    if (l.contiguous) return i;
    long long off = 0;
    for (int d = l.rank - 1; d >= 0; --d) {
        long long n = l.shape[d];
        off += (i % n) * l.strides[d];
        i /= n;
    }
    return off;
}

#define GRID_STRIDE_LOOP(i, n) \
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < (n); \
         i += (long long)gridDim.x * blockDim.x)

__device__ __forceinline__ float to_compute(float x) { return x; }
__device__ __forceinline__ float to_compute(__half x) { return __half2float(x); }
__device__ __forceinline__ float to_compute(__nv_bfloat16 x) { return __bfloat162float(x); }
__device__ __forceinline__ double to_compute(double x) { return x; }

template <typename T> __device__ __forceinline__ T from_compute(float x);
template <> __device__ __forceinline__ float from_compute<float>(float x) { return x; }
template <> __device__ __forceinline__ __half from_compute<__half>(float x) { return __float2half(x); }
template <> __device__ __forceinline__ __nv_bfloat16 from_compute<__nv_bfloat16>(float x) { return __float2bfloat16(x); }
template <typename T> __device__ __forceinline__ T from_compute(double x);
template <> __device__ __forceinline__ double from_compute<double>(double x) { return x; }

// Exact conversions through double, for casts between any two dtypes.
__device__ __forceinline__ double to_double(float x) { return (double)x; }
__device__ __forceinline__ double to_double(double x) { return x; }
__device__ __forceinline__ double to_double(__half x) { return (double)__half2float(x); }
__device__ __forceinline__ double to_double(__nv_bfloat16 x) { return (double)__bfloat162float(x); }
__device__ __forceinline__ double to_double(long long x) { return (double)x; }
__device__ __forceinline__ double to_double(unsigned int x) { return (double)x; }
__device__ __forceinline__ double to_double(unsigned char x) { return (double)x; }

template <typename T> __device__ __forceinline__ T from_double(double x);
template <> __device__ __forceinline__ double from_double<double>(double x) { return x; }
template <> __device__ __forceinline__ float from_double<float>(double x) { return (float)x; }
template <> __device__ __forceinline__ __half from_double<__half>(double x) { return __double2half(x); }
template <> __device__ __forceinline__ __nv_bfloat16 from_double<__nv_bfloat16>(double x) { return __double2bfloat16(x); }
// Float to integer saturates and sends NaN to 0, exactly like Rust's `as` on the CPU.
template <> __device__ __forceinline__ long long from_double<long long>(double x) {
    if (x != x) return 0;
    if (x >= 9223372036854775807.0) return 9223372036854775807LL;
    if (x <= -9223372036854775808.0) return (-9223372036854775807LL - 1);
    return (long long)x;
}
template <> __device__ __forceinline__ unsigned int from_double<unsigned int>(double x) {
    if (x != x || x <= 0.0) return 0u;
    if (x >= 4294967295.0) return 4294967295u;
    return (unsigned int)x;
}
template <> __device__ __forceinline__ unsigned char from_double<unsigned char>(double x) {
    if (x != x || x <= 0.0) return 0;
    if (x >= 255.0) return 255;
    return (unsigned char)x;
}

// Programmatic dependent launch (sm_90 and later; no-ops before, and when the kernel was
// launched without it): pdl_wait blocks until the kernel before this one has finished and
// its writes are visible; pdl_launch_dependents lets the kernel after this one start its
// blocks now. A kernel launched this way reads nothing the kernel before it writes, and
// writes nothing, before pdl_wait.
__device__ __forceinline__ void pdl_wait() {
#if __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}
__device__ __forceinline__ void pdl_launch_dependents() {
#if __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}

// Asks for the line holding p to be brought into L2, without waiting for it.
__device__ __forceinline__ void prefetch_l2(const void* p) {
    asm volatile("prefetch.global.L2 [%0];" ::"l"(p));
}

// 16 bytes of f32, f16 or bf16 (N elements, 16-byte aligned) widened to f32 in one load:
// the row reads of the decoding kernels.
template <typename T> struct Pack16;
template <> struct Pack16<float> {
    static constexpr int N = 4;
    __device__ static void load(const float* p, float* v) {
        float4 q = *reinterpret_cast<const float4*>(p);
        v[0] = q.x; v[1] = q.y; v[2] = q.z; v[3] = q.w;
    }
};
template <> struct Pack16<__half> {
    static constexpr int N = 8;
    __device__ static void load(const __half* p, float* v) {
        uint4 q = *reinterpret_cast<const uint4*>(p);
        const __half2* h = reinterpret_cast<const __half2*>(&q);
#pragma unroll
        for (int i = 0; i < 4; ++i) {
            float2 f = __half22float2(h[i]);
            v[2 * i] = f.x; v[2 * i + 1] = f.y;
        }
    }
};
template <> struct Pack16<__nv_bfloat16> {
    static constexpr int N = 8;
    __device__ static void load(const __nv_bfloat16* p, float* v) {
        uint4 q = *reinterpret_cast<const uint4*>(p);
        const __nv_bfloat162* h = reinterpret_cast<const __nv_bfloat162*>(&q);
#pragma unroll
        for (int i = 0; i < 4; ++i) {
            float2 f = __bfloat1622float2(h[i]);
            v[2 * i] = f.x; v[2 * i + 1] = f.y;
        }
    }
};
