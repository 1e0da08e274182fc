// Reductions over a permuted view whose last `r` logical elements per output are the
// reduced ones: one warp per output, lanes stride over r, then a shuffle tree.
// op: 0 sum, 1 max, 2 min (NaN propagates, as on the CPU).

template <typename C>
__device__ __forceinline__ C combine(int op, C a, C b) {
    if (op == 0) return a + b;
    if (op == 1) return (a >= b || isnan(a)) ? a : b;
    return (a <= b || isnan(a)) ? a : b;
}

template <typename T, typename C>
__device__ void reduce_impl(int op, const T* x, Strided v, T* y, long long outs, long long r) {
    const long long warp = ((long long)blockIdx.x * blockDim.x + threadIdx.x) / 32;
    const long long warps = ((long long)gridDim.x * blockDim.x) / 32;
    const int lane = threadIdx.x % 32;
    const C init = op == 0 ? C(0) : (op == 1 ? C(-INFINITY) : C(INFINITY));
    for (long long o = warp; o < outs; o += warps) {
        C acc = init;
        for (long long j = lane; j < r; j += 32) acc = combine<C>(op, acc, to_compute(x[strided_index(v, o * r + j)]));
        for (int s = 16; s > 0; s >>= 1) acc = combine<C>(op, acc, __shfl_down_sync(0xffffffffu, acc, s));
        if (lane == 0) y[o] = from_compute<T>(acc);
    }
}

// Index of the extreme along the reduced axis: NaN counts as the extreme; first wins ties.
template <typename C>
__device__ __forceinline__ bool better(bool is_max, C a, long long ia, C b, long long ib) {
    bool na = isnan(a), nb = isnan(b);
    if (na != nb) return na;
    if (!na && a != b) return is_max ? a > b : a < b;
    return ia < ib;
}

template <typename T, typename C>
__device__ void arg_impl(int is_max, const T* x, Strided v, long long* y, long long outs, long long r) {
    const long long warp = ((long long)blockIdx.x * blockDim.x + threadIdx.x) / 32;
    const long long warps = ((long long)gridDim.x * blockDim.x) / 32;
    const int lane = threadIdx.x % 32;
    for (long long o = warp; o < outs; o += warps) {
        C best = is_max ? C(-INFINITY) : C(INFINITY);
        long long bi = r;  // sentinel: larger than any real index
        for (long long j = lane; j < r; j += 32) {
            C val = to_compute(x[strided_index(v, o * r + j)]);
            if (bi == r || better<C>(is_max, val, j, best, bi)) { best = val; bi = j; }
        }
        for (int s = 16; s > 0; s >>= 1) {
            C ob = __shfl_down_sync(0xffffffffu, best, s);
            long long oi = __shfl_down_sync(0xffffffffu, bi, s);
            if (oi != r && (bi == r || better<C>(is_max, ob, oi, best, bi))) { best = ob; bi = oi; }
        }
        if (lane == 0) y[o] = bi;
    }
}

#define REDUCE_KERNELS(SUFFIX, T, C)                                                          \
extern "C" __global__ void reduce_##SUFFIX(int op, const T* x, Strided v, T* y,               \
                                           long long outs, long long r) {                     \
    reduce_impl<T, C>(op, x, v, y, outs, r);                                                  \
}                                                                                             \
extern "C" __global__ void argreduce_##SUFFIX(int is_max, const T* x, Strided v, long long* y, \
                                              long long outs, long long r) {                  \
    arg_impl<T, C>(is_max, x, v, y, outs, r);                                                 \
}

REDUCE_KERNELS(f32, float, float)
REDUCE_KERNELS(f16, __half, float)
REDUCE_KERNELS(bf16, __nv_bfloat16, float)
REDUCE_KERNELS(f64, double, double)
