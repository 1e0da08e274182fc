// Attention of one new query position per sequence against a key/value cache (decoding):
// one block per (head, batch row), its warps splitting the keys, each warp keeping an online
// softmax (running max, running sum, weighted values), combined at the end. The new key and
// value are read from the projection output and written into the cache slot by the first
// query head of each key/value group, so the append costs no launch of its own.
//
// Cache layout [max_len, batch, kv_heads, head_dim]; `len` counts positions including the
// new one. Head dims up to DECODE_MAX_D (a multiple of 32 per lane slot).

#define DECODE_WARPS 4
#define DECODE_MAX_D 256

template <typename T>
__device__ void decode_attention(const T* q, long long q_stride, const T* k_new,
                                 long long k_stride, const T* v_new, long long v_stride,
                                 T* kc, T* vc, long long c_tstride,
                                 long long c_bstride, T* y, int heads, int kv_heads, int d,
                                 int len, int window, float scale) {
    const int h = blockIdx.x, b = blockIdx.y, warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    const int g = h / (heads / kv_heads);
    const T* qh = q + b * q_stride + (long long)h * d;
    const T* kn = k_new + b * k_stride + (long long)g * d;
    const T* vn = v_new + b * v_stride + (long long)g * d;
    const long long slot = (long long)(len - 1) * c_tstride + b * c_bstride + (long long)g * d;
    constexpr int SLOTS = DECODE_MAX_D / 32;
    float qv[SLOTS], acc[SLOTS];
#pragma unroll
    for (int i = 0; i < SLOTS; ++i) {
        const int e = lane + 32 * i;
        qv[i] = e < d ? to_compute(qh[e]) * scale : 0.0f;
        acc[i] = 0.0f;
    }
    float m = -INFINITY, s = 0.0f;
    const int first = window > 0 && len > window ? len - window : 0;
    for (int j = first + warp; j < len; j += DECODE_WARPS) {
        const bool fresh = j == len - 1;
        const T* kj = fresh ? kn : kc + (long long)j * c_tstride + b * c_bstride + (long long)g * d;
        const T* vj = fresh ? vn : vc + (long long)j * c_tstride + b * c_bstride + (long long)g * d;
        float dot = 0.0f;
#pragma unroll
        for (int i = 0; i < SLOTS; ++i) {
            const int e = lane + 32 * i;
            if (e < d) dot += qv[i] * to_compute(kj[e]);
        }
        for (int off = 16; off > 0; off >>= 1) dot += __shfl_xor_sync(0xffffffff, dot, off);
        const float m_new = fmaxf(m, dot);
        const float corr = __expf(m - m_new), p = __expf(dot - m_new);
        s = s * corr + p;
#pragma unroll
        for (int i = 0; i < SLOTS; ++i) {
            const int e = lane + 32 * i;
            if (e < d) acc[i] = acc[i] * corr + p * to_compute(vj[e]);
        }
        m = m_new;
    }
    // The first query head of the group stores the new key and value in the cache.
    if (h % (heads / kv_heads) == 0 && warp == 0) {
        for (int e = lane; e < d; e += 32) {
            kc[slot + e] = kn[e];
            vc[slot + e] = vn[e];
        }
    }
    __shared__ float wm[DECODE_WARPS], ws[DECODE_WARPS];
    __shared__ float wacc[DECODE_WARPS][DECODE_MAX_D];
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
    for (int w = 0; w < DECODE_WARPS; ++w) mx = fmaxf(mx, wm[w]);
    float total = 0.0f, scales[DECODE_WARPS];
    for (int w = 0; w < DECODE_WARPS; ++w) {
        // A warp that saw no key has m = -inf and contributes nothing.
        scales[w] = wm[w] == -INFINITY ? 0.0f : __expf(wm[w] - mx);
        total += ws[w] * scales[w];
    }
    for (int e = threadIdx.x; e < d; e += blockDim.x) {
        float o = 0.0f;
        for (int w = 0; w < DECODE_WARPS; ++w) o += wacc[w][e] * scales[w];
        y[(long long)b * heads * d + (long long)h * d + e] = from_compute<T>(o / total);
    }
}

#define DECODE_ATTENTION(SUFFIX, T)                                                           \
extern "C" __global__ void decode_attention_##SUFFIX(const T* q, long long q_stride,          \
        const T* k_new, long long k_stride, const T* v_new, long long v_stride, T* kc, T* vc,   \
        long long c_tstride, long long c_bstride, T* y, int heads, int kv_heads, int d,         \
        int len, int window, float scale) {                                                     \
    decode_attention<T>(q, q_stride, k_new, k_stride, v_new, v_stride, kc, vc, c_tstride,     \
                        c_bstride, y, heads, kv_heads, d, len, window, scale);                 \
}

DECODE_ATTENTION(f32, float)
DECODE_ATTENTION(f16, __half)
DECODE_ATTENTION(bf16, __nv_bfloat16)
