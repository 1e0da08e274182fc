// Fused attention (the FlashAttention algorithm) on CUDA cores: the score matrix is never
// stored. Queries [B, H, Tq, D], keys and values [B, KVH, Tk, D], all contiguous; query
// head h reads key/value head h / (H / KVH). Query i sits at position Tk - Tq + i (causal
// masks aligned to the last keys); a window keeps the latest `window` keys.
//
// Forward: a block holds FLASH_ROWS query rows, a warp each, and walks the keys any of them
// sees in tiles of 32 staged in shared memory: a lane per key for the scores, an online
// softmax (running max and sum) per row, lanes over features for the weighted values. It
// writes each row's log-sum-exp. Backward: one kernel per query row recomputes the
// probabilities from the log-sum-exp and sums dQ (and stores D = rowsum(dO * O)); another
// per key row sums dK and dV over the query heads of its group. No atomics: every value is
// written by one warp.

#define FLASH_ROWS 4

// Keys [lo, hi) that query i sees.
__device__ __forceinline__ void flash_keys(int i, int tq, int tk, int causal, int window,
                                           int* lo, int* hi) {
    if (!causal) {
        *lo = 0;
        *hi = tk;
        return;
    }
    int end = min(max(i + tk + 1 - tq, 0), tk);
    *lo = window > 0 ? max(end - window, 0) : 0;
    *hi = end;
}

__device__ __forceinline__ float warp_max(float v) {
    for (int off = 16; off > 0; off >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffff, v, off));
    return v;
}

__device__ __forceinline__ float warp_sum(float v) {
    for (int off = 16; off > 0; off >>= 1) v += __shfl_xor_sync(0xffffffff, v, off);
    return v;
}

// Stages rows t0 .. t0 + 31 (those below `end`) of a [*, D] matrix into `dst` (row pitch P)
// as f32, zeros past the end.
template <typename T, int D, int P>
__device__ void stage_rows(const T* src, int t0, int end, float (*dst)[P]) {
    for (int idx = threadIdx.x; idx < 32 * D; idx += blockDim.x) {
        const int r = idx / D, e = idx % D, j = t0 + r;
        dst[r][e] = j < end ? to_compute(src[(long long)j * D + e]) : 0.0f;
    }
}

template <typename T, int D>
__device__ void flash_forward(const T* q, const T* k, const T* v, T* out, float* lse,
                              int heads, int kv_heads, int tq, int tk, int causal, int window,
                              float scale) {
    constexpr int SLOTS = (D + 31) / 32;
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    const int bh = blockIdx.y, b = bh / heads, h = bh % heads, g = h / (heads / kv_heads);
    const int i0 = blockIdx.x * FLASH_ROWS, i = i0 + warp;
    const bool row_ok = i < tq;
    __shared__ float qs[FLASH_ROWS][D];
    __shared__ float ks[32][D + 1];
    __shared__ float vs[32][D];
    const T* qr = q + ((long long)bh * tq + (row_ok ? i : 0)) * D;
    for (int e = lane; e < D; e += 32) qs[warp][e] = row_ok ? to_compute(qr[e]) * scale : 0.0f;
    int lo = 0, hi = 0, blo, bhi, unused;
    if (row_ok) flash_keys(i, tq, tk, causal, window, &lo, &hi);
    // The block's keys: from its first row's start to its last row's end.
    flash_keys(i0, tq, tk, causal, window, &blo, &unused);
    flash_keys(min(tq, i0 + FLASH_ROWS) - 1, tq, tk, causal, window, &unused, &bhi);
    const long long kv_base = (long long)(b * kv_heads + g) * tk * D;
    float acc[SLOTS];
#pragma unroll
    for (int s = 0; s < SLOTS; ++s) acc[s] = 0.0f;
    float m = -INFINITY, sum = 0.0f;
    for (int t0 = blo; t0 < bhi; t0 += 32) {
        __syncthreads();
        stage_rows<T, D, D + 1>(k + kv_base, t0, bhi, ks);
        stage_rows<T, D, D>(v + kv_base, t0, bhi, vs);
        __syncthreads();
        const int j = t0 + lane;
        const bool seen = j >= lo && j < hi;
        float dot = -INFINITY;
        if (seen) {
            dot = 0.0f;
#pragma unroll 8
            for (int e = 0; e < D; ++e) dot += qs[warp][e] * ks[lane][e];
        }
        const float tile_max = warp_max(dot);
        if (tile_max == -INFINITY) continue;
        const float m_new = fmaxf(m, tile_max);
        const float corr = m == -INFINITY ? 0.0f : expf(m - m_new);
        const float p = seen ? expf(dot - m_new) : 0.0f;
        sum = sum * corr + warp_sum(p);
#pragma unroll
        for (int s = 0; s < SLOTS; ++s) acc[s] *= corr;
        m = m_new;
        for (int kk = 0; kk < 32; ++kk) {
            const float pk = __shfl_sync(0xffffffff, p, kk);
#pragma unroll
            for (int s = 0; s < SLOTS; ++s) {
                const int e = lane + 32 * s;
                if (e < D) acc[s] += pk * vs[kk][e];
            }
        }
    }
    if (!row_ok) return;
    T* orow = out + ((long long)bh * tq + i) * D;
#pragma unroll
    for (int s = 0; s < SLOTS; ++s) {
        const int e = lane + 32 * s;
        if (e < D) orow[e] = from_compute<T>(sum > 0.0f ? acc[s] / sum : 0.0f);
    }
    if (lane == 0) lse[(long long)bh * tq + i] = sum > 0.0f ? m + logf(sum) : -INFINITY;
}

template <typename T, int D>
__device__ void flash_backward_dq(const T* q, const T* k, const T* v, const T* out,
                                  const T* dout, const float* lse, float* delta, T* dq,
                                  int heads, int kv_heads, int tq, int tk, int causal,
                                  int window, float scale) {
    constexpr int SLOTS = (D + 31) / 32;
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    const int bh = blockIdx.y, b = bh / heads, h = bh % heads, g = h / (heads / kv_heads);
    const int i0 = blockIdx.x * FLASH_ROWS, i = i0 + warp;
    const bool row_ok = i < tq;
    __shared__ float qs[FLASH_ROWS][D];
    __shared__ float gs[FLASH_ROWS][D];
    __shared__ float ks[32][D + 1];
    __shared__ float vs[32][D + 1];
    const long long row = (long long)bh * tq + (row_ok ? i : 0);
    float dsum = 0.0f;
    for (int e = lane; e < D; e += 32) {
        const float gv = row_ok ? to_compute(dout[row * D + e]) : 0.0f;
        qs[warp][e] = row_ok ? to_compute(q[row * D + e]) : 0.0f;
        gs[warp][e] = gv;
        dsum += gv * (row_ok ? to_compute(out[row * D + e]) : 0.0f);
    }
    dsum = warp_sum(dsum);
    if (row_ok && lane == 0) delta[row] = dsum;
    const float row_lse = row_ok ? lse[row] : -INFINITY;
    int lo = 0, hi = 0, blo, bhi, unused;
    if (row_ok) flash_keys(i, tq, tk, causal, window, &lo, &hi);
    flash_keys(i0, tq, tk, causal, window, &blo, &unused);
    flash_keys(min(tq, i0 + FLASH_ROWS) - 1, tq, tk, causal, window, &unused, &bhi);
    const long long kv_base = (long long)(b * kv_heads + g) * tk * D;
    float acc[SLOTS];
#pragma unroll
    for (int s = 0; s < SLOTS; ++s) acc[s] = 0.0f;
    for (int t0 = blo; t0 < bhi; t0 += 32) {
        __syncthreads();
        stage_rows<T, D, D + 1>(k + kv_base, t0, bhi, ks);
        stage_rows<T, D, D + 1>(v + kv_base, t0, bhi, vs);
        __syncthreads();
        const int j = t0 + lane;
        float ds = 0.0f;
        if (j >= lo && j < hi) {
            float sc = 0.0f, dp = 0.0f;
#pragma unroll 8
            for (int e = 0; e < D; ++e) {
                sc += qs[warp][e] * ks[lane][e];
                dp += gs[warp][e] * vs[lane][e];
            }
            const float p = expf(sc * scale - row_lse);
            ds = p * (dp - dsum);
        }
        for (int kk = 0; kk < 32; ++kk) {
            const float dk = __shfl_sync(0xffffffff, ds, kk);
#pragma unroll
            for (int s = 0; s < SLOTS; ++s) {
                const int e = lane + 32 * s;
                if (e < D) acc[s] += dk * ks[kk][e];
            }
        }
    }
    if (!row_ok) return;
#pragma unroll
    for (int s = 0; s < SLOTS; ++s) {
        const int e = lane + 32 * s;
        if (e < D) dq[row * D + e] = from_compute<T>(acc[s] * scale);
    }
}

template <typename T, int D>
__device__ void flash_backward_dkdv(const T* q, const T* k, const T* v, const T* dout,
                                    const float* lse, const float* delta, T* dk, T* dv,
                                    int heads, int kv_heads, int tq, int tk, int causal,
                                    int window, float scale) {
    constexpr int SLOTS = (D + 31) / 32;
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    const int bg = blockIdx.y, b = bg / kv_heads, g = bg % kv_heads, group = heads / kv_heads;
    const int j0 = blockIdx.x * FLASH_ROWS, j = j0 + warp;
    const bool row_ok = j < tk;
    __shared__ float kr[FLASH_ROWS][D];
    __shared__ float vr[FLASH_ROWS][D];
    __shared__ float qt[32][D + 1];
    __shared__ float gt[32][D + 1];
    __shared__ float lt[32], dt[32];
    const long long krow = (long long)bg * tk + (row_ok ? j : 0);
    for (int e = lane; e < D; e += 32) {
        kr[warp][e] = row_ok ? to_compute(k[krow * D + e]) : 0.0f;
        vr[warp][e] = row_ok ? to_compute(v[krow * D + e]) : 0.0f;
    }
    // Queries that can see one of this block's keys: causal ones from the first key's
    // position on (and, with a window, up to the last key's position + window - 1).
    int qlo = 0, qhi = tq;
    if (causal) {
        qlo = max(0, j0 + tq - tk);
        if (window > 0) qhi = min(tq, min(tk, j0 + FLASH_ROWS) - 1 + tq - tk + window);
    }
    float adk[SLOTS], adv[SLOTS];
#pragma unroll
    for (int s = 0; s < SLOTS; ++s) adk[s] = adv[s] = 0.0f;
    for (int hq = g * group; hq < (g + 1) * group; ++hq) {
        const long long qbase = (long long)(b * heads + hq) * tq;
        for (int t0 = qlo; t0 < qhi; t0 += 32) {
            __syncthreads();
            stage_rows<T, D, D + 1>(q + qbase * D, t0, qhi, qt);
            stage_rows<T, D, D + 1>(dout + qbase * D, t0, qhi, gt);
            if (threadIdx.x < 32) {
                const int ii = t0 + threadIdx.x;
                lt[threadIdx.x] = ii < qhi ? lse[qbase + ii] : -INFINITY;
                dt[threadIdx.x] = ii < qhi ? delta[qbase + ii] : 0.0f;
            }
            __syncthreads();
            const int ii = t0 + lane;
            float p = 0.0f, ds = 0.0f;
            int lo = 0, hi = 0;
            if (row_ok && ii < qhi) flash_keys(ii, tq, tk, causal, window, &lo, &hi);
            if (j >= lo && j < hi) {
                float sc = 0.0f, dp = 0.0f;
#pragma unroll 8
                for (int e = 0; e < D; ++e) {
                    sc += qt[lane][e] * kr[warp][e];
                    dp += gt[lane][e] * vr[warp][e];
                }
                p = expf(sc * scale - lt[lane]);
                ds = p * (dp - dt[lane]);
            }
            for (int kk = 0; kk < 32; ++kk) {
                const float pk = __shfl_sync(0xffffffff, p, kk);
                const float dk_ = __shfl_sync(0xffffffff, ds, kk);
#pragma unroll
                for (int s = 0; s < SLOTS; ++s) {
                    const int e = lane + 32 * s;
                    if (e < D) {
                        adv[s] += pk * gt[kk][e];
                        adk[s] += dk_ * qt[kk][e];
                    }
                }
            }
        }
    }
    if (!row_ok) return;
#pragma unroll
    for (int s = 0; s < SLOTS; ++s) {
        const int e = lane + 32 * s;
        if (e < D) {
            dk[krow * D + e] = from_compute<T>(adk[s] * scale);
            dv[krow * D + e] = from_compute<T>(adv[s]);
        }
    }
}

#define FLASH_KERNELS(SUFFIX, T, D)                                                           \
extern "C" __global__ void flash_forward_d##D##_##SUFFIX(const T* q, const T* k, const T* v, \
        T* out, float* lse, int heads, int kv_heads, int tq, int tk, int causal, int window,   \
        float scale) {                                                                          \
    flash_forward<T, D>(q, k, v, out, lse, heads, kv_heads, tq, tk, causal, window, scale);  \
}                                                                                               \
extern "C" __global__ void flash_backward_dq_d##D##_##SUFFIX(const T* q, const T* k,        \
        const T* v, const T* out, const T* dout, const float* lse, float* delta, T* dq,         \
        int heads, int kv_heads, int tq, int tk, int causal, int window, float scale) {         \
    flash_backward_dq<T, D>(q, k, v, out, dout, lse, delta, dq, heads, kv_heads, tq, tk,     \
                            causal, window, scale);                                             \
}                                                                                               \
extern "C" __global__ void flash_backward_dkdv_d##D##_##SUFFIX(const T* q, const T* k,      \
        const T* v, const T* dout, const float* lse, const float* delta, T* dk, T* dv,          \
        int heads, int kv_heads, int tq, int tk, int causal, int window, float scale) {         \
    flash_backward_dkdv<T, D>(q, k, v, dout, lse, delta, dk, dv, heads, kv_heads, tq, tk,    \
                              causal, window, scale);                                           \
}
#define FLASH_DIMS(SUFFIX, T) \
    FLASH_KERNELS(SUFFIX, T, 16)  \
    FLASH_KERNELS(SUFFIX, T, 32)  \
    FLASH_KERNELS(SUFFIX, T, 64)  \
    FLASH_KERNELS(SUFFIX, T, 80)  \
    FLASH_KERNELS(SUFFIX, T, 96)  \
    FLASH_KERNELS(SUFFIX, T, 128)

FLASH_DIMS(f32, float)
FLASH_DIMS(f16, __half)
FLASH_DIMS(bf16, __nv_bfloat16)
