// Attention of one new query position per sequence against a key/value cache (decoding):
// blocks over (head, batch row, split of the keys); each warp takes tiles of 32 keys, a
// lane per key for the scores (16-byte loads along its key row), then lanes over features
// to add the 32 weighted value rows; an online softmax (running max and sum) per warp, and
// the warps combined at the end. With several splits, each block writes its unnormalized
// partial (max, sum, weighted values) to scratch, and the last block of a (head, row) to
// finish, counted by an atomic ticket, combines them (flash-decoding: long caches use the
// whole GPU, not one block per head). The new key and value are read from the projection
// output and written into the cache slot by the first query head of each key/value group,
// so the append costs no launch of its own.
//
// Cache layout [max_len, batch, kv_heads, head_dim]; `len` counts positions including the
// new one. The head dim D is a compile-time constant (16 to 256, as listed below), so every
// load of a key row is issued before the first is used.

#define DECODE_WARPS 8

template <typename T, int D>
__device__ void decode_attention(const T* q, long long q_stride, const T* k_new,
                                 long long k_stride, const T* v_new, long long v_stride,
                                 T* kc, T* vc, long long c_tstride, long long c_bstride, T* y,
                                 int heads, int kv_heads, int len, int window, float scale,
                                 int splits, float* partial, unsigned int* tickets) {
    constexpr int V = Pack16<T>::N, SLOTS = (D + 31) / 32, d = D;
    const int h = blockIdx.x, b = blockIdx.y, split = blockIdx.z;
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, warps = blockDim.x / 32;
    const int g = h / (heads / kv_heads);
    const T* kn = k_new + b * k_stride + (long long)g * d;
    const T* vn = v_new + b * v_stride + (long long)g * d;
    const long long base = b * c_bstride + (long long)g * d;
    __shared__ float qs[D];
    for (int e = threadIdx.x; e < d; e += blockDim.x)
        qs[e] = to_compute(q[b * q_stride + (long long)h * d + e]) * scale;
    __syncthreads();
    float acc[SLOTS];
#pragma unroll
    for (int i = 0; i < SLOTS; ++i) acc[i] = 0.0f;
    float m = -INFINITY, s = 0.0f;
    const int first = window > 0 && len > window ? len - window : 0;
    // This block's keys: a contiguous run of whole 32-key tiles.
    const int tiles = (len - first + 31) / 32, per = (tiles + splits - 1) / splits;
    const int lo = first + split * per * 32, hi = min(len, first + (split + 1) * per * 32);
    for (int t0 = lo + 32 * warp; t0 < hi; t0 += 32 * warps) {
        // Scores: lane l takes key t0 + l.
        const int j = t0 + lane;
        float dot = -INFINITY;
        if (j < hi) {
            const T* kj = j == len - 1 ? kn : kc + (long long)j * c_tstride + base;
            // Four partial sums, so the multiply-adds form four short chains, not one long.
            float part4[4] = {0.0f, 0.0f, 0.0f, 0.0f};
#pragma unroll
            for (int e = 0; e < d; e += V) {
                float kv[V];
                Pack16<T>::load(kj + e, kv);
#pragma unroll
                for (int i = 0; i < V; ++i) part4[i % 4] += qs[e + i] * kv[i];
            }
            dot = (part4[0] + part4[1]) + (part4[2] + part4[3]);
        }
        float tile_max = dot;
        for (int off = 16; off > 0; off >>= 1)
            tile_max = fmaxf(tile_max, __shfl_xor_sync(0xffffffff, tile_max, off));
        const float m_new = fmaxf(m, tile_max);
        const float corr = m == -INFINITY ? 0.0f : __expf(m - m_new);
        const float p = j < hi ? __expf(dot - m_new) : 0.0f;
        float psum = p;
        for (int off = 16; off > 0; off >>= 1) psum += __shfl_xor_sync(0xffffffff, psum, off);
        s = s * corr + psum;
#pragma unroll
        for (int i = 0; i < SLOTS; ++i) acc[i] *= corr;
        m = m_new;
        // Values: lanes over features, the 32 keys of the tile in turn. No branch between
        // the loads: keys past the end read the last valid row with weight 0, so all 32
        // value rows are in flight together rather than one round trip after another.
#pragma unroll
        for (int kk = 0; kk < 32; ++kk) {
            const float pk = __shfl_sync(0xffffffff, p, kk);
            const int jk = min(t0 + kk, hi - 1);
            const T* vj = jk == len - 1 ? vn : vc + (long long)jk * c_tstride + base;
#pragma unroll
            for (int i = 0; i < SLOTS; ++i) {
                const int e = lane + 32 * i;
                if (e < d) acc[i] += pk * to_compute(vj[e]);
            }
        }
    }
    // The first query head of the group stores the new key and value in the cache.
    if (h % (heads / kv_heads) == 0 && split == 0 && warp == 0) {
        const long long slot = (long long)(len - 1) * c_tstride + base;
        for (int e = lane; e < d; e += 32) {
            kc[slot + e] = kn[e];
            vc[slot + e] = vn[e];
        }
    }
    __shared__ float wm[DECODE_WARPS], ws[DECODE_WARPS];
    __shared__ float wacc[DECODE_WARPS][D];
    if (lane == 0) {
        wm[warp] = m;
        ws[warp] = s;
    }
#pragma unroll
    for (int i = 0; i < SLOTS; ++i) {
        const int e = lane + 32 * i;
        if (e < d) wacc[warp][e] = acc[i];
    }
    __syncthreads();
    float mx = -INFINITY;
    for (int w = 0; w < warps; ++w) mx = fmaxf(mx, wm[w]);
    float total = 0.0f, scales[DECODE_WARPS];
    for (int w = 0; w < warps; ++w) {
        // A warp that saw no key has m = -inf and contributes nothing.
        scales[w] = wm[w] == -INFINITY ? 0.0f : __expf(wm[w] - mx);
        total += ws[w] * scales[w];
    }
    T* yr = y + (long long)b * heads * d + (long long)h * d;
    if (splits == 1) {
        for (int e = threadIdx.x; e < d; e += blockDim.x) {
            float o = 0.0f;
            for (int w = 0; w < warps; ++w) o += wacc[w][e] * scales[w];
            yr[e] = from_compute<T>(o / total);
        }
        return;
    }
    // Partial of this split: [d weighted values, max, sum], relative to its own max.
    const long long row = (long long)b * heads + h;
    float* part = partial + (row * splits + split) * (D + 2);
    for (int e = threadIdx.x; e < d; e += blockDim.x) {
        float o = 0.0f;
        for (int w = 0; w < warps; ++w) o += wacc[w][e] * scales[w];
        part[e] = o;
    }
    if (threadIdx.x == 0) {
        part[D] = mx;
        part[D + 1] = total;
    }
    // Publish the partial, then take a ticket; the last block of the row combines.
    __threadfence();
    __syncthreads();
    __shared__ unsigned int ticket;
    if (threadIdx.x == 0) ticket = atomicAdd(&tickets[row], 1u);
    __syncthreads();
    if (ticket != (unsigned int)splits - 1) return;
    __threadfence();
    const float* parts = partial + row * splits * (D + 2);
    float gm = -INFINITY;
    for (int p = 0; p < splits; ++p) gm = fmaxf(gm, __ldcg(parts + p * (D + 2) + D));
    float gsum = 0.0f;
    for (int p = 0; p < splits; ++p) {
        const float pm = __ldcg(parts + p * (D + 2) + D);
        if (pm != -INFINITY) gsum += __ldcg(parts + p * (D + 2) + D + 1) * __expf(pm - gm);
    }
    for (int e = threadIdx.x; e < d; e += blockDim.x) {
        float o = 0.0f;
        for (int p = 0; p < splits; ++p) {
            const float pm = __ldcg(parts + p * (D + 2) + D);
            if (pm != -INFINITY) o += __ldcg(parts + p * (D + 2) + e) * __expf(pm - gm);
        }
        yr[e] = from_compute<T>(o / gsum);
    }
    // Ready for the next launch.
    if (threadIdx.x == 0) tickets[row] = 0u;
}

#define DECODE_ATTENTION(SUFFIX, T, D)                                                        \
extern "C" __global__ void decode_attention_d##D##_##SUFFIX(const T* q, long long q_stride,   \
        const T* k_new, long long k_stride, const T* v_new, long long v_stride, T* kc, T* vc,   \
        long long c_tstride, long long c_bstride, T* y, int heads, int kv_heads, int len,       \
        int window, float scale, int splits, float* partial, unsigned int* tickets) {           \
    decode_attention<T, D>(q, q_stride, k_new, k_stride, v_new, v_stride, kc, vc, c_tstride,  \
                           c_bstride, y, heads, kv_heads, len, window, scale, splits, partial, \
                           tickets);                                                            \
}
#define DECODE_ATTENTION_DIMS(SUFFIX, T) \
    DECODE_ATTENTION(SUFFIX, T, 16)      \
    DECODE_ATTENTION(SUFFIX, T, 32)      \
    DECODE_ATTENTION(SUFFIX, T, 64)      \
    DECODE_ATTENTION(SUFFIX, T, 80)      \
    DECODE_ATTENTION(SUFFIX, T, 96)      \
    DECODE_ATTENTION(SUFFIX, T, 128)     \
    DECODE_ATTENTION(SUFFIX, T, 256)

DECODE_ATTENTION_DIMS(f32, float)
DECODE_ATTENTION_DIMS(f16, __half)
DECODE_ATTENTION_DIMS(bf16, __nv_bfloat16)
