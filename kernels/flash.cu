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

// Element strides of a [B, heads, rows, D] operand whose features are contiguous: views
// such as the heads of a fused QKV projection are read in place.
struct Heads {
    long long b, h, r;
};

// Offset of head (b, h)'s first row.
__device__ __forceinline__ long long head_at(const Heads& s, int b, int h) {
    return (long long)b * s.b + (long long)h * s.h;
}

// Where a block works: its head (of batch * heads, or batch * kv_heads for the key-side
// kernels) and its tile of `rows` rows, numbered from 0, with `last_first` counting from
// the other end. The grid is one-dimensional and blocks start in order. Without a causal
// mask every tile weighs the same, and each head's tiles run one after another, so its
// keys and values stay in L2. Under one, the first key tile is seen by every query and
// the last query tile sees every key: tile 0 (of every head) runs first, then tile 1, so
// the heaviest blocks start first and the lightest fill the end of the launch. (Measured
// on an H100: causal attention at head dim 64, S 1024, 1.17x faster forward than each
// head's tiles in turn; sections of heads sized to L2 were slower than all heads at once.)
struct BlockPlace {
    int head, tile, last_first;
};

__device__ __forceinline__ BlockPlace block_place(int rows, int len, int causal) {
    const int tiles = (len + rows - 1) / rows, heads = gridDim.x / tiles;
    BlockPlace p;
    p.head = causal ? blockIdx.x % heads : blockIdx.x / tiles;
    p.tile = causal ? blockIdx.x / heads : blockIdx.x % tiles;
    p.last_first = tiles - 1 - p.tile;
    return p;
}

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

// Stages rows t0 .. t0 + 31 (those below `end`) of a [*, D] matrix with rows `rs` apart
// into `dst` (row pitch P) as f32, zeros past the end.
template <typename T, int D, int P>
__device__ void stage_rows(const T* src, long long rs, int t0, int end, float (*dst)[P]) {
    for (int idx = threadIdx.x; idx < 32 * D; idx += blockDim.x) {
        const int r = idx / D, e = idx % D, j = t0 + r;
        dst[r][e] = j < end ? to_compute(src[(long long)j * rs + e]) : 0.0f;
    }
}

template <typename T, int D>
__device__ void flash_forward(const T* q, Heads qs_, const T* k, Heads ks_, const T* v,
                              Heads vs_, T* out, Heads os_, float* lse, int heads,
                              int kv_heads, int tq, int tk, int causal, int window,
                              float scale) {
    constexpr int SLOTS = (D + 31) / 32;
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    const BlockPlace p = block_place(FLASH_ROWS, tq, causal);
    const int bh = p.head, b = bh / heads, h = bh % heads, g = h / (heads / kv_heads);
    const int i0 = p.last_first * FLASH_ROWS, i = i0 + warp;
    const bool row_ok = i < tq;
    __shared__ float qs[FLASH_ROWS][D];
    __shared__ float ks[32][D + 1];
    __shared__ float vs[32][D];
    const T* qr = q + head_at(qs_, b, h) + (long long)(row_ok ? i : 0) * qs_.r;
    for (int e = lane; e < D; e += 32) qs[warp][e] = row_ok ? to_compute(qr[e]) * scale : 0.0f;
    int lo = 0, hi = 0, blo, bhi, unused;
    if (row_ok) flash_keys(i, tq, tk, causal, window, &lo, &hi);
    // The block's keys: from its first row's start to its last row's end.
    flash_keys(i0, tq, tk, causal, window, &blo, &unused);
    flash_keys(min(tq, i0 + FLASH_ROWS) - 1, tq, tk, causal, window, &unused, &bhi);
    const T* kb = k + head_at(ks_, b, g);
    const T* vb = v + head_at(vs_, b, g);
    float acc[SLOTS];
#pragma unroll
    for (int s = 0; s < SLOTS; ++s) acc[s] = 0.0f;
    float m = -INFINITY, sum = 0.0f;
    for (int t0 = blo; t0 < bhi; t0 += 32) {
        __syncthreads();
        stage_rows<T, D, D + 1>(kb, ks_.r, t0, bhi, ks);
        stage_rows<T, D, D>(vb, vs_.r, t0, bhi, vs);
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
    T* orow = out + head_at(os_, b, h) + (long long)i * os_.r;
#pragma unroll
    for (int s = 0; s < SLOTS; ++s) {
        const int e = lane + 32 * s;
        if (e < D) orow[e] = from_compute<T>(sum > 0.0f ? acc[s] / sum : 0.0f);
    }
    if (lane == 0) lse[(long long)bh * tq + i] = sum > 0.0f ? m + logf(sum) : -INFINITY;
}

template <typename T, int D>
__device__ void flash_backward_dq(const T* q, Heads qs_, const T* k, Heads ks_, const T* v,
                                  Heads vs_, const T* out, Heads os_, const T* dout,
                                  Heads gs_, const float* lse, float* delta, T* dq,
                                  int heads, int kv_heads, int tq, int tk, int causal,
                                  int window, float scale) {
    constexpr int SLOTS = (D + 31) / 32;
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    const BlockPlace p = block_place(FLASH_ROWS, tq, causal);
    const int bh = p.head, b = bh / heads, h = bh % heads, g = h / (heads / kv_heads);
    const int i0 = p.last_first * FLASH_ROWS, i = i0 + warp;
    const bool row_ok = i < tq;
    __shared__ float qs[FLASH_ROWS][D];
    __shared__ float gs[FLASH_ROWS][D];
    __shared__ float ks[32][D + 1];
    __shared__ float vs[32][D + 1];
    const long long row = (long long)bh * tq + (row_ok ? i : 0);
    const int ri = row_ok ? i : 0;
    const T* qrow = q + head_at(qs_, b, h) + (long long)ri * qs_.r;
    const T* grow = dout + head_at(gs_, b, h) + (long long)ri * gs_.r;
    const T* orow = out + head_at(os_, b, h) + (long long)ri * os_.r;
    float dsum = 0.0f;
    for (int e = lane; e < D; e += 32) {
        const float gv = row_ok ? to_compute(grow[e]) : 0.0f;
        qs[warp][e] = row_ok ? to_compute(qrow[e]) : 0.0f;
        gs[warp][e] = gv;
        dsum += gv * (row_ok ? to_compute(orow[e]) : 0.0f);
    }
    dsum = warp_sum(dsum);
    if (row_ok && lane == 0) delta[row] = dsum;
    const float row_lse = row_ok ? lse[row] : -INFINITY;
    int lo = 0, hi = 0, blo, bhi, unused;
    if (row_ok) flash_keys(i, tq, tk, causal, window, &lo, &hi);
    flash_keys(i0, tq, tk, causal, window, &blo, &unused);
    flash_keys(min(tq, i0 + FLASH_ROWS) - 1, tq, tk, causal, window, &unused, &bhi);
    const T* kb = k + head_at(ks_, b, g);
    const T* vb = v + head_at(vs_, b, g);
    float acc[SLOTS];
#pragma unroll
    for (int s = 0; s < SLOTS; ++s) acc[s] = 0.0f;
    for (int t0 = blo; t0 < bhi; t0 += 32) {
        __syncthreads();
        stage_rows<T, D, D + 1>(kb, ks_.r, t0, bhi, ks);
        stage_rows<T, D, D + 1>(vb, vs_.r, t0, bhi, vs);
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
        if (e < D) dq[(((long long)b * tq + i) * heads + h) * D + e] = from_compute<T>(acc[s] * scale);
    }
}

template <typename T, int D>
__device__ void flash_backward_dkdv(const T* q, Heads qs_, const T* k, Heads ks_, const T* v,
                                    Heads vs_, const T* dout, Heads gs_, const float* lse,
                                    const float* delta, T* dk, T* dv, int heads, int kv_heads,
                                    int tq, int tk, int causal, int window, float scale) {
    constexpr int SLOTS = (D + 31) / 32;
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    const BlockPlace p = block_place(FLASH_ROWS, tk, causal);
    const int bg = p.head, b = bg / kv_heads, g = bg % kv_heads, group = heads / kv_heads;
    const int j0 = p.tile * FLASH_ROWS, j = j0 + warp;
    const bool row_ok = j < tk;
    __shared__ float kr[FLASH_ROWS][D];
    __shared__ float vr[FLASH_ROWS][D];
    __shared__ float qt[32][D + 1];
    __shared__ float gt[32][D + 1];
    __shared__ float lt[32], dt[32];
    const T* kin = k + head_at(ks_, b, g) + (long long)(row_ok ? j : 0) * ks_.r;
    const T* vin = v + head_at(vs_, b, g) + (long long)(row_ok ? j : 0) * vs_.r;
    for (int e = lane; e < D; e += 32) {
        kr[warp][e] = row_ok ? to_compute(kin[e]) : 0.0f;
        vr[warp][e] = row_ok ? to_compute(vin[e]) : 0.0f;
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
            stage_rows<T, D, D + 1>(q + head_at(qs_, b, hq), qs_.r, t0, qhi, qt);
            stage_rows<T, D, D + 1>(dout + head_at(gs_, b, hq), gs_.r, t0, qhi, gt);
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
            const long long at = (((long long)b * tk + j) * kv_heads + g) * D + e;
            dk[at] = from_compute<T>(adk[s] * scale);
            dv[at] = from_compute<T>(adv[s]);
        }
    }
}

// Every kernel of both families takes the same arguments, forward and backward:
// q, k, v, out, dout with their strides, lse, delta, dq, dk, dv, then the shape and mask.
#define FLASH_ARGS(T)                                                                          \
    const T *q, Heads qs, const T *k, Heads ks, const T *v, Heads vs, T *out, Heads os,       \
        const T *dout, Heads gs, float *lse, float *delta, T *dq, T *dk, T *dv, int heads,     \
        int kv_heads, int tq, int tk, int causal, int window, float scale
#define FLASH_KERNELS(SUFFIX, T, D)                                                           \
extern "C" __global__ void flash_forward_d##D##_##SUFFIX(FLASH_ARGS(T)) {                   \
    flash_forward<T, D>(q, qs, k, ks, v, vs, out, os, lse, heads, kv_heads, tq, tk, causal,   \
                        window, scale);                                                         \
}                                                                                               \
extern "C" __global__ void flash_backward_dq_d##D##_##SUFFIX(FLASH_ARGS(T)) {               \
    flash_backward_dq<T, D>(q, qs, k, ks, v, vs, out, os, dout, gs, lse, delta, dq, heads,    \
                            kv_heads, tq, tk, causal, window, scale);                           \
}                                                                                               \
extern "C" __global__ void flash_backward_dkdv_d##D##_##SUFFIX(FLASH_ARGS(T)) {             \
    flash_backward_dkdv<T, D>(q, qs, k, ks, v, vs, dout, gs, lse, delta, dk, dv, heads,       \
                              kv_heads, tq, tk, causal, window, scale);                         \
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

// ---------------------------------------------------------------------------------------
// Forward on tensor cores (f16 and bf16 inputs, f32 accumulation): FlashAttention 2. A
// block of 4 warps takes 64 query rows, 16 per warp, held as mma A fragments in registers
// for the whole pass. Key tiles of 64 rows of K and V are staged row-major in shared memory
// (rows padded by 16 bytes, so ldmatrix reads them without bank conflicts; V's fragments
// come from its transposing form); S = Q K^T and O += P V use mma.sync m16n8k16, and the S
// accumulators are reused in registers as P's A fragments.
// Each thread owns two query rows (g and g + 8 of its warp's 16) for the online softmax,
// whose row max and sum combine over the 4 lanes sharing a row.

#define TC_ROWS 64
#define TC_KEYS 64

// log2(e) and ln(2): the kernels keep scores in log2 units, so p = 2^(s log2e - m).
#define LOG2E 1.4426950408889634f
#define LN2 0.6931471805599453f

// 2^x in one MUFU instruction (flush-to-zero; 2^-inf = 0).
__device__ __forceinline__ float fast_exp2(float x) {
    float y;
    asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
    return y;
}

// Walks `count` tiles: stage(it, buf) starts the copies of tile it into buffer buf and
// commits them; body(it, buf) uses the tile once it has landed and every thread has met
// the barrier. With two stages tile it + 1 is copied while tile it is used. ASYNC_READS:
// the body reads tiles through the async proxy (wgmma), so each thread's landed copies
// are made visible to it before the barrier.
template <int STAGES, bool ASYNC_READS = false, typename Stage, typename Body>
__device__ __forceinline__ void pipelined_tiles(int count, Stage stage, Body body) {
    if (STAGES == 2 && count > 0) stage(0, 0);
    for (int it = 0; it < count; ++it) {
        const bool next = it + 1 < count;
        if (STAGES == 1) stage(it, 0);
        else if (next) stage(it + 1, (it + 1) % 2);
        cp_async_wait(STAGES == 2 && next);
        if (ASYNC_READS) fence_proxy_async();
        __syncthreads();
        body(it, it % STAGES);
        __syncthreads();  // the buffer is refilled after this
    }
}

// Shared-memory stages for tiles of ROWS x D (pitch D + 8) when NTILES of them are staged
// per step: two (the next step's copies overlap this step's math) if they fit in the 48 KB
// of static shared memory, else one.
template <typename T, int D, int ROWS, int NTILES>
__host__ __device__ constexpr int stages_for() {
    return 2 * NTILES * ROWS * (D + 8) * (int)sizeof(T) <= 46 * 1024 ? 2 : 1;
}

// Starts copying rows t0 .. t0 + ROWS - 1 of a [*, D] matrix (rows `rs` apart) into a
// row-major shared tile (pitch RP), 16 bytes per copy, zeros from `end` on. Every copy is
// in flight at once; the caller commits them as a group, awaits it, then meets a barrier.
template <typename T, int D, int ROWS, int RP>
__device__ __forceinline__ void stage_rows(const T* src, long long rs, int t0, int end, T* rows) {
    for (int idx = threadIdx.x; idx < ROWS * D / 8; idx += blockDim.x) {
        const int r = idx / (D / 8), c = (idx % (D / 8)) * 8, j = t0 + r;
        const T* from = j < end ? src + (long long)j * rs + c : src;
        cp_async16(rows + r * RP + c, from, j < end);
    }
}

// A fragments (16 rows x D) of rows r0 and r0 + 8 of a [*, D] matrix (rows `rs` apart),
// zeros past `end`.
template <typename T, int D>
__device__ void a_fragments(const T* m, long long rs, int r0, int end, unsigned (*a)[4]) {
    const int t = threadIdx.x % 4;
    const unsigned* u0 = reinterpret_cast<const unsigned*>(m + (long long)min(r0, end - 1) * rs);
    const unsigned* u1 =
        reinterpret_cast<const unsigned*>(m + (long long)min(r0 + 8, end - 1) * rs);
#pragma unroll
    for (int s = 0; s < D / 16; ++s) {
        const int c = 8 * s + t;
        a[s][0] = r0 < end ? u0[c] : 0u;
        a[s][1] = r0 + 8 < end ? u1[c] : 0u;
        a[s][2] = r0 < end ? u0[c + 4] : 0u;
        a[s][3] = r0 + 8 < end ? u1[c + 4] : 0u;
    }
}

// The query rows of one thread (g and g + 8 of its warp's 16 in a block's `rows` from i0)
// and the keys they see: [lo0, hi0) and [lo1, hi1), and [blo, bhi) for the whole block, blo
// rounded down to a multiple of `tile`.
struct TileRows {
    int r0, r1, lo0, hi0, lo1, hi1, blo, bhi;
};

__device__ __forceinline__ TileRows tile_rows(int i0, int rows, int tq, int tk, int causal,
                                              int window, int tile) {
    TileRows r;
    r.r0 = i0 + (threadIdx.x / 32) * 16 + (threadIdx.x % 32) / 4;
    r.r1 = r.r0 + 8;
    r.lo0 = r.hi0 = r.lo1 = r.hi1 = 0;
    int unused;
    if (r.r0 < tq) flash_keys(r.r0, tq, tk, causal, window, &r.lo0, &r.hi0);
    if (r.r1 < tq) flash_keys(r.r1, tq, tk, causal, window, &r.lo1, &r.hi1);
    flash_keys(i0, tq, tk, causal, window, &r.blo, &unused);
    flash_keys(min(tq, i0 + rows) - 1, tq, tk, causal, window, &unused, &r.bhi);
    r.blo = r.blo / tile * tile;  // whole tiles from a tile boundary
    return r;
}

#define LAZY_MAX 8.0f

// Running max m (log2 units) of a thread's two query rows and its share l of their sums:
// the four lanes of a quad hold a row's sum between them until store_forward_rows adds
// them (one reduction per block rather than one per tile).
struct RowSoftmax {
    float m0, m1, l0, l1;
};

// Folds the scores s of one tile (NT n-tiles of 8 keys from key t0, in the mma accumulator
// layout: c0, c1 of row r0 and c2, c3 of row r1) into the running max and sum, and leaves
// the probabilities 2^(s sl - m) in s. Keys outside a row's range are masked, in tiles that
// cross a range only. With a positive scale the max is taken over the raw scores and the
// scale folds into the exponent's one FFMA. Returns the factors by which the two rows'
// earlier output sums must be rescaled (rescale_rows).
template <int NT>
__device__ __forceinline__ float2 softmax_tile(float (*s)[4], int t0, const TileRows& r,
                                               float sl, RowSoftmax& st) {
    const int t = threadIdx.x % 4;
    const bool whole = t0 >= max(r.lo0, r.lo1) && t0 + NT * 8 <= min(r.hi0, r.hi1);
    const bool raw = sl > 0.0f;      // scale after the max: it keeps the order
    const float pre = raw ? 1.0f : sl;  // applied to the scores before the max
    float mx0 = -INFINITY, mx1 = -INFINITY;
    if (whole && raw) {
#pragma unroll
        for (int n = 0; n < NT; ++n) {
#pragma unroll
            for (int e = 0; e < 2; ++e) {
                mx0 = fmaxf(mx0, s[n][e]);
                mx1 = fmaxf(mx1, s[n][2 + e]);
            }
        }
    } else if (raw && t0 >= max(r.lo0, r.lo1)) {
        // Only the rows' ends cross the tile (a causal diagonal): key n * 8 + e of this
        // thread's columns is in while it stays below the row's end, a test against a
        // constant per element.
        const int k0 = r.hi0 - t0 - 2 * t, k1 = r.hi1 - t0 - 2 * t;
#pragma unroll
        for (int n = 0; n < NT; ++n) {
#pragma unroll
            for (int e = 0; e < 2; ++e) {
                if (n * 8 + e >= k0) s[n][e] = -INFINITY;
                if (n * 8 + e >= k1) s[n][2 + e] = -INFINITY;
                mx0 = fmaxf(mx0, s[n][e]);
                mx1 = fmaxf(mx1, s[n][2 + e]);
            }
        }
    } else {
#pragma unroll
        for (int n = 0; n < NT; ++n) {
#pragma unroll
            for (int e = 0; e < 2; ++e) {
                const int j = t0 + n * 8 + 2 * t + e;
                const bool in0 = whole || (j >= r.lo0 && j < r.hi0);
                const bool in1 = whole || (j >= r.lo1 && j < r.hi1);
                s[n][e] = in0 ? s[n][e] * pre : -INFINITY;
                s[n][2 + e] = in1 ? s[n][2 + e] * pre : -INFINITY;
                mx0 = fmaxf(mx0, s[n][e]);
                mx1 = fmaxf(mx1, s[n][2 + e]);
            }
        }
    }
    for (int off = 1; off < 4; off <<= 1) {
        mx0 = fmaxf(mx0, __shfl_xor_sync(0xffffffff, mx0, off));
        mx1 = fmaxf(mx1, __shfl_xor_sync(0xffffffff, mx1, off));
    }
    const float post = raw ? sl : 1.0f;  // applied in the exponent
    float n0 = fmaxf(st.m0, mx0 * post), n1 = fmaxf(st.m1, mx1 * post);
    // A row keeps its running max until a score passes it by more than LAZY_MAX (log2
    // units): probabilities up to 2^LAZY_MAX are as exact in f32 sums and 16-bit P as
    // those below 1, the result is the same (l and O share the stale max), and most tiles
    // then need no rescaling at all (rescale_rows skips them). A row that has seen no key
    // (m = -inf) always takes the new max.
    if (n0 - st.m0 <= LAZY_MAX) n0 = st.m0;
    if (n1 - st.m1 <= LAZY_MAX) n1 = st.m1;
    // A row that has seen no key yet keeps m = -inf; subtracting 0 instead gives it
    // p = 2^-inf = 0 and a correction of 0 without a test per element.
    const float z0 = n0 == -INFINITY ? 0.0f : n0, z1 = n1 == -INFINITY ? 0.0f : n1;
    const float c0 = fast_exp2(st.m0 - z0), c1 = fast_exp2(st.m1 - z1);
    float ps0 = 0.0f, ps1 = 0.0f;
#pragma unroll
    for (int n = 0; n < NT; ++n) {
#pragma unroll
        for (int e = 0; e < 2; ++e) {
            s[n][e] = fast_exp2(fmaf(s[n][e], post, -z0));
            s[n][2 + e] = fast_exp2(fmaf(s[n][2 + e], post, -z1));
            ps0 += s[n][e];
            ps1 += s[n][2 + e];
        }
    }
    st.l0 = st.l0 * c0 + ps0;
    st.l1 = st.l1 * c1 + ps1;
    st.m0 = n0;
    st.m1 = n1;
    return make_float2(c0, c1);
}

// Multiplies a thread's two output rows (DT n-tiles of accumulators) by c.x and c.y, unless
// no row of the warp needs it (both factors 1, the common case under the lazy max).
template <int DT>
__device__ __forceinline__ void rescale_rows(float (*o)[4], float2 c) {
    if (__all_sync(0xffffffff, c.x == 1.0f && c.y == 1.0f)) return;  // no row's max moved
#pragma unroll
    for (int n = 0; n < DT; ++n) {
        o[n][0] *= c.x;
        o[n][1] *= c.x;
        o[n][2] *= c.y;
        o[n][3] *= c.y;
    }
}

// Normalizes and stores a thread's two output rows (DT n-tiles of accumulators) and their
// log-sum-exps in natural units; rows that saw no key give 0 and -inf.
template <typename T, int DT>
__device__ __forceinline__ void store_forward_rows(const float (*o)[4], const RowSoftmax& st,
                                                   const TileRows& r, T* out, long long orow,
                                                   float* lse, int tq) {
    const int t = threadIdx.x % 4;
    float l0 = st.l0, l1 = st.l1;  // the quad's shares of the rows' sums
    for (int off = 1; off < 4; off <<= 1) {
        l0 += __shfl_xor_sync(0xffffffff, l0, off);
        l1 += __shfl_xor_sync(0xffffffff, l1, off);
    }
    const float inv0 = l0 > 0.0f ? 1.0f / l0 : 0.0f;
    const float inv1 = l1 > 0.0f ? 1.0f / l1 : 0.0f;
#pragma unroll
    for (int n = 0; n < DT; ++n) {
        const int c = n * 8 + 2 * t;
        if (r.r0 < tq)
            *reinterpret_cast<unsigned*>(out + (long long)r.r0 * orow + c) =
                MmaType<T>::pack(o[n][0] * inv0, o[n][1] * inv0);
        if (r.r1 < tq)
            *reinterpret_cast<unsigned*>(out + (long long)r.r1 * orow + c) =
                MmaType<T>::pack(o[n][2] * inv1, o[n][3] * inv1);
    }
    if (t == 0) {
        if (r.r0 < tq) lse[r.r0] = l0 > 0.0f ? st.m0 * LN2 + logf(l0) : -INFINITY;
        if (r.r1 < tq) lse[r.r1] = l1 > 0.0f ? st.m1 * LN2 + logf(l1) : -INFINITY;
    }
}

// Where a forward block works: its query head h of batch b (bh = b * heads + h), its
// thread's rows (tile_rows) in blocks of `rows` query rows, the last block first (under a
// causal mask it sees the most keys), the key and value head it reads, and Q's A
// fragments, straight from global memory (rows past the end read as 0).
template <typename T, int D>
struct ForwardBlock {
    int bh, b, h;
    TileRows r;
    const T* kb;
    const T* vb;
    unsigned qa[D / 16][4];
};

template <typename T, int D>
__device__ __forceinline__ void forward_block(ForwardBlock<T, D>& f, const T* q, Heads qs_,
                                              const T* k, Heads ks_, const T* v, Heads vs_,
                                              int rows, int heads, int kv_heads, int tq, int tk,
                                              int causal, int window, int tile) {
    const BlockPlace p = block_place(rows, tq, causal);
    f.bh = p.head;
    f.b = f.bh / heads;
    f.h = f.bh % heads;
    const int grp = f.h / (heads / kv_heads);
    f.r = tile_rows(p.last_first * rows, rows, tq, tk, causal, window, tile);
    f.kb = k + head_at(ks_, f.b, grp);
    f.vb = v + head_at(vs_, f.b, grp);
    a_fragments<T, D>(q + head_at(qs_, f.b, f.h), qs_.r, f.r.r0, tq, f.qa);
}

template <typename T, int D>
__device__ void flash_forward_tc(const T* q, Heads qs_, const T* k, Heads ks_, const T* v,
                                 Heads vs_, T* out, Heads os_, float* lse, int heads,
                                 int kv_heads, int tq, int tk, int causal, int window,
                                 float scale) {
    constexpr int KP = D + 8;        // K and V row pitch (elements): conflict-free ldmatrix
    constexpr int NT = TC_KEYS / 8;  // S n-tiles per key tile
    constexpr int DT = D / 8;        // O n-tiles
    constexpr int STAGES = stages_for<T, D, TC_KEYS, 2>();
    __shared__ __align__(16) T ks[STAGES * TC_KEYS * KP];
    __shared__ __align__(16) T vs[STAGES * TC_KEYS * KP];
    ForwardBlock<T, D> f;
    forward_block(f, q, qs_, k, ks_, v, vs_, TC_ROWS, heads, kv_heads, tq, tk, causal, window,
                  TC_KEYS);
    const TileRows& r = f.r;
    float o[DT][4];
#pragma unroll
    for (int n = 0; n < DT; ++n) o[n][0] = o[n][1] = o[n][2] = o[n][3] = 0.0f;
    RowSoftmax st = {-INFINITY, -INFINITY, 0.0f, 0.0f};
    const float sl = scale * LOG2E;  // scores in log2 units: p = 2^(s sl - m)
    // K and V tiles staged row-major (16-byte copies, zeros past the end); the mma
    // fragments come from them through ldmatrix (V's transposed). With two stages the
    // next tile's copies run under this tile's math.
    auto stage = [&](int it, int buf) {
        const int t0 = r.blo + it * TC_KEYS;
        stage_rows<T, D, TC_KEYS, KP>(f.kb, ks_.r, t0, tk, ks + buf * TC_KEYS * KP);
        stage_rows<T, D, TC_KEYS, KP>(f.vb, vs_.r, t0, tk, vs + buf * TC_KEYS * KP);
        cp_async_commit();
    };
    const int tiles = r.bhi > r.blo ? (r.bhi - r.blo + TC_KEYS - 1) / TC_KEYS : 0;
    pipelined_tiles<STAGES>(tiles, stage, [&](int it, int buf) {
        // S = Q K^T for this warp's 16 rows and the tile's 64 keys, then the online softmax.
        float s[NT][4];
        mma_rows_tile<T, D, NT, KP>(f.qa, ks + buf * TC_KEYS * KP, s, true);
        rescale_rows<DT>(o, softmax_tile<NT>(s, r.blo + it * TC_KEYS, r, sl, st));
        // O += P V: P's A fragments are the S accumulators of two adjacent n-tiles.
        mma_cols_tile<T, D, TC_KEYS / 16, KP>(s, vs + buf * TC_KEYS * KP, o);
    });
    store_forward_rows<T, DT>(o, st, r, out + head_at(os_, f.b, f.h), os_.r,
                              lse + (long long)f.bh * tq, tq);
}

// ---------------------------------------------------------------------------------------
// Backward on tensor cores, in two kernels and without atomics. dQ: a block of 64 query rows
// (16 per warp, Q and dO held as A fragments) walks 32-key tiles: S = Q K^T, dP = dO V^T,
// dS = P (dP - D) with P recomputed from the log-sum-exp, and dQ += dS K (dS reused from
// the accumulators). It first stores D = rowsum(dO * O). dK, dV: a block of 64 key rows (K
// and V held as A fragments) walks 32-query tiles of every query head of its group:
// S^T = K Q^T, dP^T = V dO^T, then dV += P^T dO and dK += dS^T Q from the accumulators.
// Every tile is staged row-major once; ldmatrix gives both its plain and its transposed
// fragments.

#define TC_BWD_TILE 32

// D = rowsum(dO * O) of a thread's two query rows (r0 and r0 + 8; 0 past tq), each of the 4
// lanes of a row taking a quarter of the features; the first lane stores it in delta.
template <typename T, int D>
__device__ __forceinline__ float2 store_row_deltas(const T* gh, long long grs, const T* oh,
                                                   long long ors, int r0, int tq,
                                                   float* delta) {
    const int t = threadIdx.x % 4, r1 = r0 + 8;
    float d0 = 0.0f, d1 = 0.0f;
#pragma unroll
    for (int s = 0; s < D / 16; ++s) {
#pragma unroll
        for (int half = 0; half < 2; ++half) {
            const int c = 16 * s + 2 * t + 8 * half;
#pragma unroll
            for (int e = 0; e < 2; ++e) {
                if (r0 < tq) d0 += to_compute(gh[(long long)r0 * grs + c + e]) *
                                   to_compute(oh[(long long)r0 * ors + c + e]);
                if (r1 < tq) d1 += to_compute(gh[(long long)r1 * grs + c + e]) *
                                   to_compute(oh[(long long)r1 * ors + c + e]);
            }
        }
    }
    for (int off = 1; off < 4; off <<= 1) {
        d0 += __shfl_xor_sync(0xffffffff, d0, off);
        d1 += __shfl_xor_sync(0xffffffff, d1, off);
    }
    if (t == 0) {
        if (r0 < tq) delta[r0] = d0;
        if (r1 < tq) delta[r1] = d1;
    }
    return make_float2(d0, d1);
}

// dQ's store: a thread's two rows (DT n-tiles of accumulators, times `scale`) of head h of
// batch b in [B, Tq, H, D], the layout of the projection it flows back into.
template <typename T, int DT>
__device__ __forceinline__ void store_dq_rows(const float (*acc)[4], T* dq, int b, int h,
                                              int heads, int r0, int tq, float scale) {
    const int t = threadIdx.x % 4, r1 = r0 + 8;
    const long long qoff = ((long long)b * tq * heads + h) * (DT * 8);
    const long long qr = (long long)heads * DT * 8;
#pragma unroll
    for (int n = 0; n < DT; ++n) {
        const int c = n * 8 + 2 * t;
        if (r0 < tq)
            *reinterpret_cast<unsigned*>(dq + qoff + r0 * qr + c) =
                MmaType<T>::pack(acc[n][0] * scale, acc[n][1] * scale);
        if (r1 < tq)
            *reinterpret_cast<unsigned*>(dq + qoff + r1 * qr + c) =
                MmaType<T>::pack(acc[n][2] * scale, acc[n][3] * scale);
    }
}

// The dQ kernels' dS = P (dP - D) with P = 2^(S sl - lse log2 e), left in s (accumulator
// layout: a query per row, the tile's NT * 8 keys from t0 across), for a thread's two
// rows, which see keys [see.x, see.y), with their lse log2 e in lb and D in d. Only tiles
// that cross a row's key range are masked.
template <int NT>
__device__ __forceinline__ void row_gradients(float (*s)[4], const float (*dp)[4], int t0,
                                              int2 see0, int2 see1, float2 lb, float2 d,
                                              float sl) {
    const int t = threadIdx.x % 4;
    const bool whole = t0 >= max(see0.x, see1.x) && t0 + NT * 8 <= min(see0.y, see1.y);
#pragma unroll
    for (int n = 0; n < NT; ++n) {
#pragma unroll
        for (int e = 0; e < 2; ++e) {
            const int j = t0 + n * 8 + 2 * t + e;
            float p0 = fast_exp2(s[n][e] * sl - lb.x);
            float p1 = fast_exp2(s[n][2 + e] * sl - lb.y);
            if (!whole) {
                p0 = (j >= see0.x && j < see0.y) ? p0 : 0.0f;
                p1 = (j >= see1.x && j < see1.y) ? p1 : 0.0f;
            }
            s[n][e] = p0 * (dp[n][e] - d.x);
            s[n][2 + e] = p1 * (dp[n][2 + e] - d.y);
        }
    }
}

template <typename T, int D>
__device__ void flash_backward_dq_tc(const T* q, Heads qs_, const T* k, Heads ks_,
                                     const T* v, Heads vs_, const T* out, Heads os_,
                                     const T* dout, Heads gs_, const float* lse, float* delta,
                                     T* dq, int heads, int kv_heads, int tq, int tk,
                                     int causal, int window, float scale) {
    constexpr int KP = D + 8, NT = TC_BWD_TILE / 8, DT = D / 8, K16 = TC_BWD_TILE / 16;
    constexpr int STAGES = stages_for<T, D, TC_BWD_TILE, 2>(), TILE = TC_BWD_TILE * KP;
    __shared__ __align__(16) T ks[STAGES * TILE];
    __shared__ __align__(16) T vs[STAGES * TILE];
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4;
    const BlockPlace p = block_place(TC_ROWS, tq, causal);
    const int bh = p.head, b = bh / heads, h = bh % heads, grp = h / (heads / kv_heads);
    // The last query blocks see the most keys under a causal mask: they start first.
    const int i0 = p.last_first * TC_ROWS, r0 = i0 + warp * 16 + g, r1 = r0 + 8;
    unsigned qa[D / 16][4], ga[D / 16][4];
    const T* qh = q + head_at(qs_, b, h);
    const T* gh = dout + head_at(gs_, b, h);
    const T* oh = out + head_at(os_, b, h);
    a_fragments<T, D>(qh, qs_.r, i0 + warp * 16 + g, tq, qa);
    a_fragments<T, D>(gh, gs_.r, i0 + warp * 16 + g, tq, ga);
    const float2 dd = store_row_deltas<T, D>(gh, gs_.r, oh, os_.r, r0, tq,
                                             delta + (long long)bh * tq);
    const float d0 = dd.x, d1 = dd.y;
    const float lse0 = r0 < tq ? lse[(long long)bh * tq + r0] : 0.0f;
    const float lse1 = r1 < tq ? lse[(long long)bh * tq + r1] : 0.0f;
    // Scores and log-sum-exps in log2 units.
    const float sl = scale * LOG2E;
    const float lb0 = lse0 * LOG2E, lb1 = lse1 * LOG2E;
    int lo0 = 0, hi0 = 0, lo1 = 0, hi1 = 0, blo, bhi, unused;
    if (r0 < tq) flash_keys(r0, tq, tk, causal, window, &lo0, &hi0);
    if (r1 < tq) flash_keys(r1, tq, tk, causal, window, &lo1, &hi1);
    flash_keys(i0, tq, tk, causal, window, &blo, &unused);
    flash_keys(min(tq, i0 + TC_ROWS) - 1, tq, tk, causal, window, &unused, &bhi);
    float acc[DT][4];
#pragma unroll
    for (int n = 0; n < DT; ++n) acc[n][0] = acc[n][1] = acc[n][2] = acc[n][3] = 0.0f;
    const T* kb = k + head_at(ks_, b, grp);
    const T* vb = v + head_at(vs_, b, grp);
    auto stage = [&](int it, int buf) {
        const int t0 = blo + it * TC_BWD_TILE;
        stage_rows<T, D, TC_BWD_TILE, KP>(kb, ks_.r, t0, bhi, ks + buf * TILE);
        stage_rows<T, D, TC_BWD_TILE, KP>(vb, vs_.r, t0, bhi, vs + buf * TILE);
        cp_async_commit();
    };
    const int tiles = bhi > blo ? (bhi - blo + TC_BWD_TILE - 1) / TC_BWD_TILE : 0;
    pipelined_tiles<STAGES>(tiles, stage, [&](int it, int buf) {
        const int t0 = blo + it * TC_BWD_TILE;
        const T* kt = ks + buf * TILE;
        const T* vt = vs + buf * TILE;
        float sc[NT][4], dp[NT][4];
        mma_rows_tile<T, D, NT, KP>(qa, kt, sc, true);
        mma_rows_tile<T, D, NT, KP>(ga, vt, dp, true);
        row_gradients<NT>(sc, dp, t0, make_int2(lo0, hi0), make_int2(lo1, hi1),
                          make_float2(lb0, lb1), make_float2(d0, d1), sl);
        mma_cols_tile<T, D, K16, KP>(sc, kt, acc);
    });
    store_dq_rows<T, DT>(acc, dq, b, h, heads, r0, tq, scale);
}

// The dK/dV kernels' P^T = 2^(S^T sl - lse log2 e) and dS^T = P^T (dP^T - D), in place in
// sc and dp (accumulator layout: a key per row, the tile's NT * 8 queries from t0 across),
// for a thread's two keys, which queries [see.x, see.y) see; lt and dt are the tile's
// log-sum-exp and D. Only tiles that cross a key's query range are masked.
template <int NT>
__device__ __forceinline__ void key_gradients(float (*sc)[4], float (*dp)[4], const float* lt,
                                              const float* dt, int t0, int2 see0, int2 see1,
                                              float sl) {
    const int t = threadIdx.x % 4;
    const bool whole = t0 >= max(see0.x, see1.x) && t0 + NT * 8 <= min(see0.y, see1.y);
#pragma unroll
    for (int n = 0; n < NT; ++n) {
#pragma unroll
        for (int e = 0; e < 2; ++e) {
            const int c = n * 8 + 2 * t + e, i = t0 + c;
            const float lb = lt[c] * LOG2E;
            float p0 = fast_exp2(sc[n][e] * sl - lb);
            float p1 = fast_exp2(sc[n][2 + e] * sl - lb);
            if (!whole) {
                p0 = i >= see0.x && i < see0.y ? p0 : 0.0f;
                p1 = i >= see1.x && i < see1.y ? p1 : 0.0f;
            }
            sc[n][e] = p0;
            sc[n][2 + e] = p1;
            dp[n][e] = p0 * (dp[n][e] - dt[c]);
            dp[n][2 + e] = p1 * (dp[n][2 + e] - dt[c]);
        }
    }
}

template <typename T, int D>
__device__ void flash_backward_dkdv_tc(const T* q, Heads qs_, const T* k, Heads ks_,
                                       const T* v, Heads vs_, const T* dout, Heads gs_,
                                       const float* lse, const float* delta, T* dk, T* dv,
                                       int heads, int kv_heads, int tq, int tk, int causal,
                                       int window, float scale) {
    constexpr int QP = D + 8, NT = TC_BWD_TILE / 8, DT = D / 8, K16 = TC_BWD_TILE / 16;
    constexpr int STAGES = stages_for<T, D, TC_BWD_TILE, 2>(), TILE = TC_BWD_TILE * QP;
    __shared__ __align__(16) T qs[STAGES * TILE];
    __shared__ __align__(16) T gs[STAGES * TILE];
    __shared__ __align__(16) float ls[STAGES * TC_BWD_TILE], dl[STAGES * TC_BWD_TILE];
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
    const BlockPlace p = block_place(TC_ROWS, tk, causal);
    const int bg = p.head, b = bg / kv_heads, grp = bg % kv_heads, group = heads / kv_heads;
    const int j0 = p.tile * TC_ROWS, kr0 = j0 + warp * 16 + g, kr1 = kr0 + 8;
    unsigned ka[D / 16][4], va[D / 16][4];
    a_fragments<T, D>(k + head_at(ks_, b, grp), ks_.r, j0 + warp * 16 + g, tk, ka);
    a_fragments<T, D>(v + head_at(vs_, b, grp), vs_.r, j0 + warp * 16 + g, tk, va);
    int qlo = 0, qhi = tq;
    if (causal) {
        qlo = max(0, j0 + tq - tk);
        if (window > 0) qhi = min(tq, min(tk, j0 + TC_ROWS) - 1 + tq - tk + window);
    }
    float ak[DT][4], av[DT][4];
#pragma unroll
    for (int n = 0; n < DT; ++n) {
        ak[n][0] = ak[n][1] = ak[n][2] = ak[n][3] = 0.0f;
        av[n][0] = av[n][1] = av[n][2] = av[n][3] = 0.0f;
    }
    // The queries [x, y) that see key kr (the inverse of flash_keys): from the query at
    // its position on, for `window` queries when there is one; none past the keys' end.
    auto seen_by = [&](int kr) {
        if (kr >= tk) return make_int2(0, 0);
        if (!causal) return make_int2(0, qhi);
        const int kq = kr + tq - tk;
        return make_int2(max(kq, 0), window > 0 ? min(qhi, kq + window) : qhi);
    };
    const int2 see0 = seen_by(kr0), see1 = seen_by(kr1);
    const float sl = scale * LOG2E;  // scores in log2 units
    // The tiles of every query head of the group, one after another: tile `it` is query
    // rows qlo + (it % per_head) * TILE of head grp * group + it / per_head.
    const int per_head = qhi > qlo ? (qhi - qlo + TC_BWD_TILE - 1) / TC_BWD_TILE : 0;
    const int tiles = per_head * group;
    auto stage = [&](int it, int buf) {
        const int hq = grp * group + it / per_head, t0 = qlo + (it % per_head) * TC_BWD_TILE;
        stage_rows<T, D, TC_BWD_TILE, QP>(q + head_at(qs_, b, hq), qs_.r, t0, qhi, qs + buf * TILE);
        stage_rows<T, D, TC_BWD_TILE, QP>(dout + head_at(gs_, b, hq), gs_.r, t0, qhi,
                                          gs + buf * TILE);
        if (threadIdx.x < TC_BWD_TILE) {
            const long long qrow = (long long)(b * heads + hq) * tq;
            const int i = t0 + threadIdx.x, at = buf * TC_BWD_TILE + threadIdx.x;
            cp_async4(ls + at, lse + (i < qhi ? qrow + i : 0), i < qhi);
            cp_async4(dl + at, delta + (i < qhi ? qrow + i : 0), i < qhi);
        }
        cp_async_commit();
    };
    pipelined_tiles<STAGES>(tiles, stage, [&](int it, int buf) {
        const int t0 = qlo + (it % per_head) * TC_BWD_TILE;
        const T* qt = qs + buf * TILE;
        const T* gt = gs + buf * TILE;
        const float* lt = ls + buf * TC_BWD_TILE;
        const float* dt = dl + buf * TC_BWD_TILE;
        {
            float sc[NT][4], dp[NT][4];
            mma_rows_tile<T, D, NT, QP>(ka, qt, sc, true);
            mma_rows_tile<T, D, NT, QP>(va, gt, dp, true);
            key_gradients<NT>(sc, dp, lt, dt, t0, see0, see1, sl);
            mma_cols_tile<T, D, K16, QP>(sc, gt, av);
            mma_cols_tile<T, D, K16, QP>(dp, qt, ak);
        }
    });
    // dK and dV are written [B, Tk, KVH, D], like dQ (offsets formed after the loop, so
    // that they hold no registers during it).
    const long long koff = ((long long)b * tk * kv_heads + grp) * D, kr = (long long)kv_heads * D;
#pragma unroll
    for (int n = 0; n < DT; ++n) {
        const int c = n * 8 + 2 * t;
        if (kr0 < tk) {
            *reinterpret_cast<unsigned*>(dk + koff + kr0 * kr + c) =
                MmaType<T>::pack(ak[n][0] * scale, ak[n][1] * scale);
            *reinterpret_cast<unsigned*>(dv + koff + kr0 * kr + c) =
                MmaType<T>::pack(av[n][0], av[n][1]);
        }
        if (kr1 < tk) {
            *reinterpret_cast<unsigned*>(dk + koff + kr1 * kr + c) =
                MmaType<T>::pack(ak[n][2] * scale, ak[n][3] * scale);
            *reinterpret_cast<unsigned*>(dv + koff + kr1 * kr + c) =
                MmaType<T>::pack(av[n][2], av[n][3]);
        }
    }
}

#define FLASH_TC(SUFFIX, T, D)                                                                \
extern "C" __global__ void __launch_bounds__(128) flash_forward_tc_d##D##_##SUFFIX(         \
        FLASH_ARGS(T)) {                                                                        \
    flash_forward_tc<T, D>(q, qs, k, ks, v, vs, out, os, lse, heads, kv_heads, tq, tk, causal, \
                           window, scale);                                                      \
}                                                                                               \
extern "C" __global__ void __launch_bounds__(128, D <= 64 ? 4 : 1)                           \
        flash_backward_dq_tc_d##D##_##SUFFIX(                                                  \
        FLASH_ARGS(T)) {                                                                        \
    flash_backward_dq_tc<T, D>(q, qs, k, ks, v, vs, out, os, dout, gs, lse, delta, dq, heads, \
                               kv_heads, tq, tk, causal, window, scale);                        \
}                                                                                               \
extern "C" __global__ void __launch_bounds__(128, D <= 64 ? 3 : 1)                           \
        flash_backward_dkdv_tc_d##D##_##SUFFIX(                                                \
        FLASH_ARGS(T)) {                                                                        \
    flash_backward_dkdv_tc<T, D>(q, qs, k, ks, v, vs, dout, gs, lse, delta, dk, dv, heads,    \
                                 kv_heads, tq, tk, causal, window, scale);                      \
}
#define FLASH_TC_DIMS(SUFFIX, T) \
    FLASH_TC(SUFFIX, T, 64)      \
    FLASH_TC(SUFFIX, T, 80)      \
    FLASH_TC(SUFFIX, T, 96)      \
    FLASH_TC(SUFFIX, T, 128)

FLASH_TC_DIMS(f16, __half)
FLASH_TC_DIMS(bf16, __nv_bfloat16)
