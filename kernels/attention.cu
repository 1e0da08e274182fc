// Attention of one new query position per sequence against a key/value cache (decoding):
// blocks over (head, batch row, split of the keys). A key row is read by a group of G lanes,
// one 16-byte pack each (G = the packs of a row, rounded up to a power of two and at most
// 32, so a warp holds 32/G keys at once); each lane keeps its features of the query, and of
// the weighted value sum, in registers. The keys of a block are dealt round-robin to its
// groups, and a group takes four of its keys per step: their key and value rows are all
// requested before the first is used, so a step costs one memory round trip, not eight.
// Each group keeps an online softmax (running max and sum); groups meet by shuffles within
// the warp and through shared memory across warps. With several splits, each block writes
// its unnormalized partial (max, sum, weighted values) to scratch, and the last block of a
// (head, row) to finish, counted by an atomic ticket, combines them (flash-decoding: long
// caches use the whole GPU, not one block per head). The new key and value are read from
// the projection output and written into the cache slot by the first query head of each
// key/value group, so the append costs no launch of its own.
//
// Cache layout [max_len, batch, kv_heads, head_dim]; `len` counts positions including the
// new one. The head dim D is a compile-time constant (16 to 256, as listed below) and a
// whole number of 16-byte packs; q, the new key and value, and the cache rows are 16-byte
// aligned.

#define DECODE_WARPS 8
#define DECODE_UNROLL 4

// The least power of two at or above N (N >= 1).
template <int N> struct Pow2AtLeast {
    static constexpr int value = 2 * Pow2AtLeast<(N + 1) / 2>::value;
};
template <> struct Pow2AtLeast<1> { static constexpr int value = 1; };

// Merges another online-softmax state (m2, s2, a2) into (m, s, a); an empty state has
// m = -inf and contributes nothing.
template <int N>
__device__ __forceinline__ void merge_softmax(float& m, float& s, float* a, float m2, float s2,
                                              const float* a2) {
    const float mn = fmaxf(m, m2);
    if (mn == -INFINITY) return;
    const float c1 = m == -INFINITY ? 0.0f : __expf(m - mn);
    const float c2 = m2 == -INFINITY ? 0.0f : __expf(m2 - mn);
    s = s * c1 + s2 * c2;
#pragma unroll
    for (int i = 0; i < N; ++i) a[i] = a[i] * c1 + a2[i] * c2;
    m = mn;
}

template <typename T, int D>
__device__ void decode_attention(const T* q, long long q_stride, const T* k_new,
                                 long long k_stride, const T* v_new, long long v_stride,
                                 T* kc, T* vc, long long c_tstride, long long c_bstride, T* y,
                                 int heads, int kv_heads, int len, int window, float scale,
                                 int splits, float* partial, unsigned int* tickets) {
    constexpr int V = Pack16<T>::N, PACKS = D / V, d = D;
    constexpr int G = Pow2AtLeast<PACKS>::value < 32 ? Pow2AtLeast<PACKS>::value : 32;
    constexpr int PL = (PACKS + G - 1) / G, KPW = 32 / G, U = DECODE_UNROLL;
    const int h = blockIdx.x, b = blockIdx.y, split = blockIdx.z;
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, warps = blockDim.x / 32;
    const int grp = lane / G, gl = lane % G;
    const int g = h / (heads / kv_heads);
    const T* kn = k_new + b * k_stride + (long long)g * d;
    const T* vn = v_new + b * v_stride + (long long)g * d;
    const long long base = b * c_bstride + (long long)g * d;
    const int first = window > 0 && len > window ? len - window : 0;
    // This block's keys: a contiguous run of whole 32-key tiles.
    const int tiles = (len - first + 31) / 32, per = (tiles + splits - 1) / splits;
    const int lo = first + split * per * 32, hi = min(len, first + (split + 1) * per * 32);
    const int slots = warps * KPW;
    // The cached rows this lane will read were written by kernels that have finished (a
    // dependent launch starts once the kernel before it is past its own wait): they are
    // requested into L2 before the wait for the new query, key and value.
    for (int j = lo + warp * KPW + grp; j < hi; j += slots) {
        if (j == len - 1) continue;
        const long long at = (long long)j * c_tstride + base;
#pragma unroll
        for (int p = 0; p < PL; ++p) {
            const int e = (gl + p * G) * V;
            if (e < d) {
                prefetch_l2(kc + at + e);
                prefetch_l2(vc + at + e);
            }
        }
    }
    pdl_wait();
    pdl_launch_dependents();
    // This lane's packs of a row: gl, gl + G, ... (those past the row are skipped).
    float qv[PL][V];
    const T* qr = q + b * q_stride + (long long)h * d;
#pragma unroll
    for (int p = 0; p < PL; ++p) {
        const int e = (gl + p * G) * V;
        if (e < d) {
            Pack16<T>::load(qr + e, qv[p]);
#pragma unroll
            for (int i = 0; i < V; ++i) qv[p][i] *= scale;
        } else {
#pragma unroll
            for (int i = 0; i < V; ++i) qv[p][i] = 0.0f;
        }
    }
    float acc[PL * V];
#pragma unroll
    for (int i = 0; i < PL * V; ++i) acc[i] = 0.0f;
    float m = -INFINITY, s = 0.0f;
    // The loop bound is the warp's first key, so every lane of the warp takes each step
    // (the shuffles need them all); keys past `hi` get weight 0.
    for (int j0 = lo + warp * KPW; j0 < hi; j0 += slots * U) {
        float kf[U][PL][V], vf[U][PL][V];
#pragma unroll
        for (int u = 0; u < U; ++u) {
            const int j = min(j0 + grp + u * slots, hi - 1);
            const long long at = (long long)j * c_tstride + base;
            const T* kj = j == len - 1 ? kn : kc + at;
            const T* vj = j == len - 1 ? vn : vc + at;
#pragma unroll
            for (int p = 0; p < PL; ++p) {
                const int e = (gl + p * G) * V;
                if (e < d) {
                    Pack16<T>::load(kj + e, kf[u][p]);
                    Pack16<T>::load(vj + e, vf[u][p]);
                } else {
#pragma unroll
                    for (int i = 0; i < V; ++i) kf[u][p][i] = vf[u][p][i] = 0.0f;
                }
            }
        }
        float sc[U];
#pragma unroll
        for (int u = 0; u < U; ++u) {
            // Two chains per lane, then the group's lanes summed by shuffles.
            float a0 = 0.0f, a1 = 0.0f;
#pragma unroll
            for (int p = 0; p < PL; ++p)
#pragma unroll
                for (int i = 0; i < V; i += 2) {
                    a0 += qv[p][i] * kf[u][p][i];
                    a1 += qv[p][i + 1] * kf[u][p][i + 1];
                }
            sc[u] = a0 + a1;
        }
#pragma unroll
        for (int off = G / 2; off > 0; off >>= 1)
#pragma unroll
            for (int u = 0; u < U; ++u) sc[u] += __shfl_xor_sync(0xffffffff, sc[u], off);
        float mx = -INFINITY;
#pragma unroll
        for (int u = 0; u < U; ++u) {
            if (j0 + grp + u * slots >= hi) sc[u] = -INFINITY;
            mx = fmaxf(mx, sc[u]);
        }
        const float m_new = fmaxf(m, mx);
        if (m_new == -INFINITY) continue;
        const float corr = m == -INFINITY ? 0.0f : __expf(m - m_new);
        s *= corr;
#pragma unroll
        for (int i = 0; i < PL * V; ++i) acc[i] *= corr;
#pragma unroll
        for (int u = 0; u < U; ++u) {
            const float pu = __expf(sc[u] - m_new);
            s += pu;
#pragma unroll
            for (int p = 0; p < PL; ++p)
#pragma unroll
                for (int i = 0; i < V; ++i) acc[p * V + i] += pu * vf[u][p][i];
        }
        m = m_new;
    }
    // The warp's groups meet: lane l of group 0 ends with the warp's state for its packs.
#pragma unroll
    for (int off = G; off < 32; off <<= 1) {
        const float m2 = __shfl_xor_sync(0xffffffff, m, off);
        const float s2 = __shfl_xor_sync(0xffffffff, s, off);
        float a2[PL * V];
#pragma unroll
        for (int i = 0; i < PL * V; ++i) a2[i] = __shfl_xor_sync(0xffffffff, acc[i], off);
        merge_softmax<PL * V>(m, s, acc, m2, s2, a2);
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
    if (grp == 0) {
#pragma unroll
        for (int p = 0; p < PL; ++p) {
            const int e = (gl + p * G) * V;
            if (e < d)
#pragma unroll
                for (int i = 0; i < V; ++i) wacc[warp][e + i] = acc[p * V + i];
        }
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
