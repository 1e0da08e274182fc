// Indexing kernels: rows picked by ids (embedding), their scatter-add backward, and a
// strided copy into a strided destination (concat, assign).

// out[o, j, i] = src[o, ids[j], i] over a strided source; an id outside 0..size reads as NaN
// (never out of bounds).
#define INDEX_KERNELS(SUFFIX, T)                                                              \
extern "C" __global__ void index_select_##SUFFIX(const T* src, Strided ls, const long long* ids, \
                                                 T* out, long long outer, long long size,      \
                                                 long long k, long long inner) {               \
    const long long n = outer * k * inner;                                                    \
    GRID_STRIDE_LOOP(p, n) {                                                                  \
        long long i = p % inner, j = (p / inner) % k, o = p / (inner * k);                    \
        long long id = ids[j];                                                                \
        out[p] = (id < 0 || id >= size) ? from_double<T>(NAN)                                 \
                 : src[strided_index(ls, (o * size + id) * inner + i)];                       \
    }                                                                                         \
}                                                                                             \
extern "C" __global__ void assign_##SUFFIX(const T* src, Strided ls, T* dst, Strided ld,      \
                                           long long n) {                                     \
    GRID_STRIDE_LOOP(p, n) { dst[strided_index(ld, p)] = src[strided_index(ls, p)]; }         \
}

INDEX_KERNELS(f32, float)
INDEX_KERNELS(f16, __half)
INDEX_KERNELS(bf16, __nv_bfloat16)
INDEX_KERNELS(f64, double)
INDEX_KERNELS(i64, long long)
INDEX_KERNELS(u32, unsigned int)
INDEX_KERNELS(u8, unsigned char)

// Strided copy in groups of eight elements of E bytes: the innermost dim is contiguous on
// both sides and every group starts on a 16-byte boundary, so a group costs one index
// computation and E / 2 moves of 16 bytes (concatenations and copies of transposed views).
template <int E>
__device__ __forceinline__ void assign_oct(const char* src, const Strided& ls, char* dst,
                                           const Strided& ld, long long n) {
    GRID_STRIDE_LOOP(g, n / 8) {
        const uint4* s = reinterpret_cast<const uint4*>(src + strided_index(ls, g * 8) * E);
        uint4* d = reinterpret_cast<uint4*>(dst + strided_index(ld, g * 8) * E);
#pragma unroll
        for (int w = 0; w < E / 2; ++w) d[w] = s[w];
    }
}
#define ASSIGN_OCT(E)                                                                         \
extern "C" __global__ void assign_oct_b##E(const char* src, Strided ls, char* dst, Strided ld, \
                                           long long n) {                                     \
    assign_oct<E>(src, ls, dst, ld, n);                                                       \
}
ASSIGN_OCT(2)
ASSIGN_OCT(4)
ASSIGN_OCT(8)

// acc[(o*size + ids[j])*inner + i] += g[o, j, i] in f32 (ids outside 0..size are skipped).
#define INDEX_ADD(SUFFIX, T)                                                                  \
extern "C" __global__ void index_add_##SUFFIX(const T* g, Strided lg, const long long* ids,   \
                                              float* acc, long long outer, long long size,     \
                                              long long k, long long inner) {                  \
    const long long n = outer * k * inner;                                                    \
    GRID_STRIDE_LOOP(p, n) {                                                                  \
        long long i = p % inner, j = (p / inner) % k, o = p / (inner * k);                    \
        long long id = ids[j];                                                                \
        if (id >= 0 && id < size)                                                             \
            atomicAdd(acc + (o * size + id) * inner + i, to_compute(g[strided_index(lg, p)]));\
    }                                                                                         \
}

INDEX_ADD(f32, float)
INDEX_ADD(f16, __half)
INDEX_ADD(bf16, __nv_bfloat16)

// out[p] = src[p with coordinate `dim` replaced by index[p]]. `view` has the index's shape
// and the source's strides; `inner` = product of the index dims after `dim`.
#define GATHER(SUFFIX, T)                                                                     \
extern "C" __global__ void gather_##SUFFIX(const T* src, Strided view, const long long* index,\
                                           T* out, long long n, long long inner,              \
                                           long long dim_len, long long src_dim_len,           \
                                           long long src_dim_stride) {                         \
    GRID_STRIDE_LOOP(p, n) {                                                                  \
        long long coord = (p / inner) % dim_len, id = index[p];                               \
        out[p] = (id < 0 || id >= src_dim_len) ? from_double<T>(NAN)                          \
               : src[strided_index(view, p) + (id - coord) * src_dim_stride];                 \
    }                                                                                         \
}
GATHER(f32, float)
GATHER(f16, __half)
GATHER(bf16, __nv_bfloat16)
GATHER(f64, double)

// acc (contiguous, f32 or f64, the destination's shape) += src at the gathered positions.
#define SCATTER_ADD(SUFFIX, T, A)                                                             \
extern "C" __global__ void scatter_add_##SUFFIX(const T* src, Strided ls, const long long* index,\
                                                A* acc, Strided view, long long n,             \
                                                long long inner, long long dim_len,            \
                                                long long dst_dim_len, long long dst_dim_stride) { \
    GRID_STRIDE_LOOP(p, n) {                                                                  \
        long long coord = (p / inner) % dim_len, id = index[p];                               \
        if (id >= 0 && id < dst_dim_len)                                                      \
            atomicAdd(acc + strided_index(view, p) + (id - coord) * dst_dim_stride,           \
                      (A)to_compute(src[strided_index(ls, p)]));                              \
    }                                                                                         \
}
SCATTER_ADD(f32, float, float)
SCATTER_ADD(f16, __half, float)
SCATTER_ADD(bf16, __nv_bfloat16, float)
SCATTER_ADD(f64, double, double)
