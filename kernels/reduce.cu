// Reductions over a permuted view whose last `r` logical elements per output are the
// reduced ones: one warp per output, lanes stride over r, then a shuffle tree.
// op: 0 sum, 1 max, 2 min (NaN propagates, as on the CPU).

template <typename C>
__device__ __forceinline__ C combine(int op, C a, C b) {
    if (op == REDUCE_SUM) return a + b;
    if (op == REDUCE_MAX) return (a >= b || isnan(a)) ? a : b;
    return (a <= b || isnan(a)) ? a : b;
}

template <typename T, typename C>
__device__ void reduce_impl(int op, const T* x, Strided v, T* y, long long outs, long long r) {
    const long long warp = ((long long)blockIdx.x * blockDim.x + threadIdx.x) / 32;
    const long long warps = ((long long)gridDim.x * blockDim.x) / 32;
    const int lane = threadIdx.x % 32;
    const C init = op == REDUCE_SUM ? C(0) : (op == REDUCE_MAX ? C(-INFINITY) : C(INFINITY));
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

// The arg-reduction with a thread per output, for short rows (pooling windows), where a
// warp per output would leave most lanes idle.
template <typename T, typename C>
__device__ void arg_short_impl(int is_max, const T* x, Strided v, long long* y, long long outs,
                               long long r) {
    GRID_STRIDE_LOOP(o, outs) {
        C best = to_compute(x[strided_index(v, o * r)]);
        long long bi = 0;
        for (long long j = 1; j < r; ++j) {
            C val = to_compute(x[strided_index(v, o * r + j)]);
            if (better<C>(is_max, val, j, best, bi)) { best = val; bi = j; }
        }
        y[o] = bi;
    }
}

// The same two reductions with a whole block per output, for a few long rows (an argmax
// over a vocabulary): threads stride over r, then warps, then the block's warps combine.
// Each thread requests BLOCK_REDUCE_BATCH elements before combining them, in index order,
// so a row costs a few memory round trips rather than one per element a thread visits.
#define BLOCK_REDUCE_BATCH 8

// Elements j0, j0 + blockDim.x, ... (BLOCK_REDUCE_BATCH of them) of output o's row, all
// requested before any is used; `fill` past the row's end.
template <typename T, typename C>
__device__ __forceinline__ void load_batch(const T* x, const Strided& v, long long o,
                                           long long r, long long j0, C fill, C* vals) {
#pragma unroll
    for (int u = 0; u < BLOCK_REDUCE_BATCH; ++u) {
        const long long j = j0 + (long long)u * blockDim.x;
        vals[u] = j < r ? to_compute(x[strided_index(v, o * r + j)]) : fill;
    }
}
template <typename T, typename C>
__device__ void reduce_block_impl(int op, const T* x, Strided v, T* y, long long r) {
    __shared__ C part[32];
    const long long o = blockIdx.x;
    const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, warps = blockDim.x / 32;
    const C init = op == REDUCE_SUM ? C(0) : (op == REDUCE_MAX ? C(-INFINITY) : C(INFINITY));
    C acc = init;
    for (long long j0 = threadIdx.x; j0 < r; j0 += BLOCK_REDUCE_BATCH * blockDim.x) {
        C vals[BLOCK_REDUCE_BATCH];
        load_batch<T, C>(x, v, o, r, j0, init, vals);
#pragma unroll
        for (int u = 0; u < BLOCK_REDUCE_BATCH; ++u) acc = combine<C>(op, acc, vals[u]);
    }
    for (int s = 16; s > 0; s >>= 1) acc = combine<C>(op, acc, __shfl_down_sync(0xffffffffu, acc, s));
    if (lane == 0) part[warp] = acc;
    __syncthreads();
    if (warp == 0) {
        acc = lane < warps ? part[lane] : init;
        for (int s = 16; s > 0; s >>= 1) acc = combine<C>(op, acc, __shfl_down_sync(0xffffffffu, acc, s));
        if (lane == 0) y[o] = from_compute<T>(acc);
    }
}

template <typename T, typename C>
__device__ void arg_block_impl(int is_max, const T* x, Strided v, long long* y, long long r) {
    __shared__ C pbest[32];
    __shared__ long long pidx[32];
    const long long o = blockIdx.x;
    const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, warps = blockDim.x / 32;
    C best = is_max ? C(-INFINITY) : C(INFINITY);
    long long bi = r;  // sentinel: larger than any real index
    for (long long j0 = threadIdx.x; j0 < r; j0 += BLOCK_REDUCE_BATCH * blockDim.x) {
        C vals[BLOCK_REDUCE_BATCH];
        load_batch<T, C>(x, v, o, r, j0, best, vals);  // past the end: skipped below
#pragma unroll
        for (int u = 0; u < BLOCK_REDUCE_BATCH; ++u) {
            const long long j = j0 + (long long)u * blockDim.x;
            if (j < r && (bi == r || better<C>(is_max, vals[u], j, best, bi))) {
                best = vals[u];
                bi = j;
            }
        }
    }
    for (int round = 0; round < 2; ++round) {
        for (int s = 16; s > 0; s >>= 1) {
            C ob = __shfl_down_sync(0xffffffffu, best, s);
            long long oi = __shfl_down_sync(0xffffffffu, bi, s);
            if (oi != r && (bi == r || better<C>(is_max, ob, oi, best, bi))) { best = ob; bi = oi; }
        }
        if (round == 1) break;
        if (lane == 0) { pbest[warp] = best; pidx[warp] = bi; }
        __syncthreads();
        if (warp != 0) return;
        best = lane < warps ? pbest[lane] : best;
        bi = lane < warps ? pidx[lane] : r;
    }
    if (lane == 0) y[o] = bi;
}

#define REDUCE_KERNELS(SUFFIX, T, C)                                                          \
extern "C" __global__ void reduce_block_##SUFFIX(int op, const T* x, Strided v, T* y,         \
                                                 long long outs, long long r) {               \
    reduce_block_impl<T, C>(op, x, v, y, r);                                                  \
}                                                                                             \
extern "C" __global__ void argreduce_block_##SUFFIX(int is_max, const T* x, Strided v,        \
                                                    long long* y, long long outs, long long r) { \
    arg_block_impl<T, C>(is_max, x, v, y, r);                                                 \
}                                                                                             \
extern "C" __global__ void reduce_##SUFFIX(int op, const T* x, Strided v, T* y,               \
                                           long long outs, long long r) {                     \
    reduce_impl<T, C>(op, x, v, y, outs, r);                                                  \
}                                                                                             \
extern "C" __global__ void argreduce_##SUFFIX(int is_max, const T* x, Strided v, long long* y, \
                                              long long outs, long long r) {                  \
    arg_impl<T, C>(is_max, x, v, y, outs, r);                                                 \
}                                                                                             \
extern "C" __global__ void argreduce_short_##SUFFIX(int is_max, const T* x, Strided v,        \
                                                    long long* y, long long outs, long long r) { \
    arg_short_impl<T, C>(is_max, x, v, y, outs, r);                                           \
}

REDUCE_KERNELS(f32, float, float)
REDUCE_KERNELS(f16, __half, float)
REDUCE_KERNELS(bf16, __nv_bfloat16, float)
REDUCE_KERNELS(f64, double, double)

// Column sums of a contiguous [rows, cols] matrix (a sum over leading dims), in two passes:
// blocks of 32 columns x 8 row lanes sum chunks of rows into partials[chunk][cols], then the
// chunks are added in order per column (deterministic).
#define COLSUM_COLS 32
#define COLSUM_LANES 8
#define COLSUM_KERNELS(SUFFIX, T, C)                                                           \
extern "C" __global__ void colsum_partial_##SUFFIX(const T* x, C* partials, long long rows,    \
                                                   long long cols, long long rows_per_chunk) { \
    __shared__ C acc[COLSUM_LANES][COLSUM_COLS];                                               \
    const int tx = threadIdx.x % COLSUM_COLS, ty = threadIdx.x / COLSUM_COLS;                  \
    const long long j = (long long)blockIdx.x * COLSUM_COLS + tx;                              \
    const long long r0 = (long long)blockIdx.y * rows_per_chunk;                               \
    long long r1 = r0 + rows_per_chunk;                                                        \
    if (r1 > rows) r1 = rows;                                                                  \
    C s = C(0);                                                                                \
    if (j < cols)                                                                              \
        for (long long i = r0 + ty; i < r1; i += COLSUM_LANES) s += to_compute(x[i * cols + j]); \
    acc[ty][tx] = s;                                                                           \
    __syncthreads();                                                                           \
    if (ty == 0 && j < cols) {                                                                 \
        for (int k = 1; k < COLSUM_LANES; ++k) s += acc[k][tx];                                \
        partials[(long long)blockIdx.y * cols + j] = s;                                        \
    }                                                                                          \
}                                                                                              \
extern "C" __global__ void colsum_finish_##SUFFIX(const C* partials, T* y, long long chunks,   \
                                                  long long cols) {                            \
    GRID_STRIDE_LOOP(j, cols) {                                                                \
        C s = C(0);                                                                            \
        for (long long k = 0; k < chunks; ++k) s += partials[k * cols + j];                    \
        y[j] = from_compute<T>(s);                                                             \
    }                                                                                          \
}

COLSUM_KERNELS(f32, float, float)
COLSUM_KERNELS(f16, __half, float)
COLSUM_KERNELS(bf16, __nv_bfloat16, float)
COLSUM_KERNELS(f64, double, double)
