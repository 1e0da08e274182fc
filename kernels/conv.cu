// Implicit-GEMM convolution on tensor cores (mma.sync m16n8k16, f16/bf16 in, f32
// accumulation), with no column buffer: each block's tiles are gathered from the image by
// cp.async as the reduction walks over (tap, channel).
//
// Two kernels serve the three products of a convolution (the gather in two tile shapes:
// 128 x 128, and 256 pixels x 64 channels for layers with few output channels):
//  * conv_gather: out[m, j] = sum_k A[m, k] B[j, k] with m = (n, p, q) an output pixel,
//    k = (r, s, c) a tap and channel, A[m, k] = src[n, row(p, r), col(q, s), c] and B the
//    weights as [J][R][S][C]. With the forward axes it is the convolution itself (weights
//    KRSC); with the transposed axes (a step of 1, taps walking backwards, a divisor of the
//    stride) it is the input gradient, reading the output gradient and the weights as CRSK.
//  * conv_wgrad: dW[o, (r, s, c)] = sum_m dY[m, o] X[n, row(p, r), col(q, s), c], the
//    reduction over pixels split over blockIdx.z, one f32 partial product per split.
// Images are NHWC (channels contiguous, 16-byte aligned, C a multiple of 8).

// One axis of a gather: output position o at tap t reads source index
// (o * step + offset + t * tap_step) / divisor when the division is exact and the result
// lies in 0 .. len - 1; elsewhere zero.
struct GatherAxis {
    int len, out, taps, step, offset, tap_step, divisor;
};

__device__ __forceinline__ int gather_index(const GatherAxis& a, int v) {
    if (v < 0) return -1;
    if (a.divisor != 1) {
        if (v % a.divisor != 0) return -1;
        v /= a.divisor;
    }
    return v < a.len ? v : -1;
}

#define CONV_BM 128
#define CONV_BN 128
#define CONV_BK 32
#define CONV_STAGES 4
#define CONV_THREADS 256
// Rows of the gather kernel's k-contiguous tiles: BK + 8 halves, 80 bytes, so the eight
// rows one ldmatrix reads fall in distinct banks.
#define CONV_PITCH (CONV_BK + 8)
// Rows of the weight-gradient kernel's m- and n-contiguous tiles: 136 halves, 272 bytes.
#define WGRAD_PITCH (CONV_BM + 8)

// Warps are laid out 2 (rows) x 4 (columns), each owning a 64 x 32 piece of the 128 x 128
// block tile: 4 x 4 mma tiles of 16 x 8.
struct WarpTile {
    float acc[4][4][4];
};

// acc += A B for one BK-deep stage. The A fragments come from `a_frag(mt, kk, regs)` and the
// B fragments (two n8 tiles per call) from `b_frag(np, kk, regs)`.
template <typename T, typename AFrag, typename BFrag>
__device__ __forceinline__ void mma_stage(WarpTile& w, AFrag a_frag, BFrag b_frag) {
#pragma unroll
    for (int kk = 0; kk < CONV_BK / 16; ++kk) {
        unsigned a[4][4], b[2][4];
#pragma unroll
        for (int mt = 0; mt < 4; ++mt) a_frag(mt, kk, a[mt]);
#pragma unroll
        for (int np = 0; np < 2; ++np) b_frag(np, kk, b[np]);
#pragma unroll
        for (int mt = 0; mt < 4; ++mt)
#pragma unroll
            for (int nt = 0; nt < 4; ++nt)
                MmaType<T>::mma(w.acc[mt][nt], a[mt], &b[nt / 2][(nt % 2) * 2]);
    }
}

// Runs `tiles` stages through a CONV_STAGES-deep cp.async ring: stage(t, buf) issues the
// copies of tile t into buffer buf; body(buf) consumes a landed buffer.
template <typename Stage, typename Body>
__device__ __forceinline__ void conv_pipeline(int tiles, Stage stage, Body body) {
#pragma unroll
    for (int s = 0; s < CONV_STAGES - 1; ++s) {
        if (s < tiles) stage(s, s);
        cp_async_commit();
    }
    for (int t = 0; t < tiles; ++t) {
        cp_async_wait_group<CONV_STAGES - 2>();
        __syncthreads();  // tile t landed for every thread; buffer (t - 1) % STAGES is free
        const int next = t + CONV_STAGES - 1;
        if (next < tiles) stage(next, next % CONV_STAGES);
        cp_async_commit();
        body(t % CONV_STAGES);
    }
    cp_async_wait_group<0>();
}

// BM x BN block tiles (128 x 128, or 256 x 64 for few output channels) of 8 warps, each
// owning a 64 x 32 piece.
template <typename T, int BM, int BN>
__device__ __forceinline__ void conv_gather(const T* __restrict__ src, long long sn,
                                            long long sh, long long sw, int channels,
                                            GatherAxis rows, GatherAxis cols, int batch,
                                            const T* __restrict__ w, int out_ch,
                                            T* __restrict__ out) {
    extern __shared__ __align__(16) unsigned char conv_smem[];
    T* sa = reinterpret_cast<T*>(conv_smem);
    T* sb = sa + CONV_STAGES * BM * CONV_PITCH;
    constexpr int WARPS_N = BN / 32;
    const int tid = threadIdx.x, lane = tid % 32, warp = tid / 32;
    const int wm = warp / WARPS_N, wn = warp % WARPS_N;
    const long long m_total = (long long)batch * rows.out * cols.out;
    const long long m0 = (long long)blockIdx.x * BM;
    const int n0 = blockIdx.y * BN;
    const int kdim = rows.taps * cols.taps * channels;
    const int tiles = (kdim + CONV_BK - 1) / CONV_BK;
    // Each thread copies one 8-channel chunk of BM / 64 A rows and BN / 64 B rows per stage.
    constexpr int AR = BM / 64, BR = BN / 64;
    const int kc = (tid % 4) * 8;
    const T* a_base[AR];
    int a_row[AR], a_col[AR];
    bool a_ok[AR];
    const T* b_base[BR];
    bool b_ok[BR];
#pragma unroll
    for (int i = 0; i < AR; ++i) {
        const long long m = m0 + tid / 4 + i * 64;
        a_ok[i] = m < m_total;
        const long long mm = a_ok[i] ? m : 0;
        const int q = (int)(mm % cols.out);
        const long long pn = mm / cols.out;
        const int p = (int)(pn % rows.out);
        const int n = (int)(pn / rows.out);
        a_base[i] = src + n * sn;
        a_row[i] = p * rows.step + rows.offset;
        a_col[i] = q * cols.step + cols.offset;
    }
#pragma unroll
    for (int i = 0; i < BR; ++i) {
        const int j = n0 + tid / 4 + i * 64;
        b_ok[i] = j < out_ch;
        b_base[i] = w + (long long)(b_ok[i] ? j : 0) * kdim;
    }
    auto stage = [&](int t, int buf) {
        const int k = t * CONV_BK + kc;
        const int tap = k / channels, c = k - tap * channels;
        const int r = tap / cols.taps, s = tap - r * cols.taps;
        const bool k_ok = k < kdim;
#pragma unroll
        for (int i = 0; i < AR; ++i) {
            const int h = gather_index(rows, a_row[i] + r * rows.tap_step);
            const int x = gather_index(cols, a_col[i] + s * cols.tap_step);
            const bool ok = a_ok[i] && k_ok && h >= 0 && x >= 0;
            const T* from = ok ? a_base[i] + h * sh + x * sw + c : src;
            cp_async16(sa + (buf * BM + tid / 4 + i * 64) * CONV_PITCH + kc, from, ok);
        }
#pragma unroll
        for (int i = 0; i < BR; ++i) {
            const bool wok = b_ok[i] && k_ok;
            cp_async16(sb + (buf * BN + tid / 4 + i * 64) * CONV_PITCH + kc,
                       wok ? b_base[i] + k : w, wok);
        }
    };
    WarpTile acc;
#pragma unroll
    for (int a = 0; a < 4; ++a)
#pragma unroll
        for (int b = 0; b < 4; ++b) acc.acc[a][b][0] = acc.acc[a][b][1] = acc.acc[a][b][2] = acc.acc[a][b][3] = 0.0f;
    conv_pipeline(tiles, stage, [&](int buf) {
        const T* ta = sa + buf * BM * CONV_PITCH;
        const T* tb = sb + buf * BN * CONV_PITCH;
        mma_stage<T>(
            acc,
            [&](int mt, int kk, unsigned* r) {
                ldsm_x4(ta + (wm * 64 + mt * 16 + (lane & 15)) * CONV_PITCH + kk * 16 + (lane >> 4) * 8, r);
            },
            [&](int np, int kk, unsigned* r) {
                ldsm_x4(tb + (wn * 32 + np * 16 + (lane & 7) + ((lane >> 4) << 3)) * CONV_PITCH +
                            kk * 16 + ((lane >> 3) & 1) * 8,
                        r);
            });
    });
    const int g = lane / 4, t4 = lane % 4;
#pragma unroll
    for (int mt = 0; mt < 4; ++mt)
#pragma unroll
        for (int half = 0; half < 2; ++half) {
            const long long m = m0 + wm * 64 + mt * 16 + g + half * 8;
            if (m >= m_total) continue;
#pragma unroll
            for (int nt = 0; nt < 4; ++nt) {
                const int j = n0 + wn * 32 + nt * 8 + 2 * t4;
                if (j >= out_ch) continue;
                const float* v = acc.acc[mt][nt] + half * 2;
                *reinterpret_cast<unsigned*>(out + m * out_ch + j) = MmaType<T>::pack(v[0], v[1]);
            }
        }
}

// dW partials: partial[split][o][k] for o < out_ch, k = (r, s, c) < taps * channels, over
// the pixels of tiles [split * per_split, (split + 1) * per_split) of BK pixels each.
template <typename T>
__device__ __forceinline__ void conv_wgrad(const T* __restrict__ dy, int out_ch,
                                           const T* __restrict__ src, long long sn, long long sh,
                                           long long sw, int channels, GatherAxis rows,
                                           GatherAxis cols, int batch, float* __restrict__ partial,
                                           int per_split) {
    extern __shared__ __align__(16) unsigned char conv_smem[];
    T* sa = reinterpret_cast<T*>(conv_smem);           // [STAGES][BK pixels][BM outputs]
    T* sb = sa + CONV_STAGES * CONV_BK * WGRAD_PITCH;  // [STAGES][BK pixels][BN (r, s, c)]
    const int tid = threadIdx.x, lane = tid % 32, warp = tid / 32;
    const int wm = warp / 4, wn = warp % 4;
    const long long m_total = (long long)batch * rows.out * cols.out;
    const int o0 = blockIdx.x * CONV_BM, n0 = blockIdx.y * CONV_BN;
    const int kdim = rows.taps * cols.taps * channels;
    const int all_tiles = (int)((m_total + CONV_BK - 1) / CONV_BK);
    const int first = blockIdx.z * per_split;
    const int tiles = max(0, min(all_tiles, first + per_split) - first);
    // Each thread copies one 8-wide chunk of two pixels' rows of each operand per stage:
    // outputs o0 + oc .. + 7 of dY, and (r, s, c .. c + 7) = n0 + oc of the gathered image.
    const int oc = (tid % 16) * 8;
    const bool o_ok = o0 + oc < out_ch;
    const int j = n0 + oc;
    const bool j_ok = j < kdim;
    const int tap = j_ok ? j / channels : 0, c = j - tap * channels;
    const int r = tap / cols.taps, s = tap - r * cols.taps;
    auto stage = [&](int t, int buf) {
#pragma unroll
        for (int i = 0; i < 2; ++i) {
            const int row = tid / 16 + i * 16;
            const long long m = (long long)(first + t) * CONV_BK + row;
            const bool m_ok = m < m_total;
            const long long mm = m_ok ? m : 0;
            const bool dok = m_ok && o_ok;
            cp_async16(sa + (buf * CONV_BK + row) * WGRAD_PITCH + oc,
                       dok ? dy + mm * out_ch + o0 + oc : dy, dok);
            const int q = (int)(mm % cols.out);
            const long long pn = mm / cols.out;
            const int p = (int)(pn % rows.out);
            const int n = (int)(pn / rows.out);
            const int h = gather_index(rows, p * rows.step + rows.offset + r * rows.tap_step);
            const int x = gather_index(cols, q * cols.step + cols.offset + s * cols.tap_step);
            const bool ok = m_ok && j_ok && h >= 0 && x >= 0;
            cp_async16(sb + (buf * CONV_BK + row) * WGRAD_PITCH + oc,
                       ok ? src + n * sn + h * sh + x * sw + c : src, ok);
        }
    };
    WarpTile acc;
#pragma unroll
    for (int a = 0; a < 4; ++a)
#pragma unroll
        for (int b = 0; b < 4; ++b) acc.acc[a][b][0] = acc.acc[a][b][1] = acc.acc[a][b][2] = acc.acc[a][b][3] = 0.0f;
    conv_pipeline(tiles, stage, [&](int buf) {
        const T* ta = sa + buf * CONV_BK * WGRAD_PITCH;
        const T* tb = sb + buf * CONV_BK * WGRAD_PITCH;
        mma_stage<T>(
            acc,
            [&](int mt, int kk, unsigned* reg) {
                ldsm_x4_trans(ta + (kk * 16 + ((lane >> 4) << 3) + (lane & 7)) * WGRAD_PITCH +
                                  wm * 64 + mt * 16 + ((lane >> 3) & 1) * 8,
                              reg);
            },
            [&](int np, int kk, unsigned* reg) {
                ldsm_x4_trans(tb + (kk * 16 + ((lane >> 3) & 1) * 8 + (lane & 7)) * WGRAD_PITCH +
                                  wn * 32 + np * 16 + (lane >> 4) * 8,
                              reg);
            });
    });
    const int g = lane / 4, t4 = lane % 4;
    float* part = partial + (long long)blockIdx.z * out_ch * kdim;
#pragma unroll
    for (int mt = 0; mt < 4; ++mt)
#pragma unroll
        for (int half = 0; half < 2; ++half) {
            const int o = o0 + wm * 64 + mt * 16 + g + half * 8;
            if (o >= out_ch) continue;
#pragma unroll
            for (int nt = 0; nt < 4; ++nt) {
                const int k = n0 + wn * 32 + nt * 8 + 2 * t4;
                if (k >= kdim) continue;
                const float* v = acc.acc[mt][nt] + half * 2;
                *reinterpret_cast<float2*>(part + (long long)o * kdim + k) = make_float2(v[0], v[1]);
            }
        }
}

#define CONV_KERNELS(T, SUFFIX)                                                                \
extern "C" __global__ void __launch_bounds__(CONV_THREADS, 2) conv_gather_##SUFFIX(            \
    const T* src, long long sn, long long sh, long long sw, int channels, GatherAxis rows,     \
    GatherAxis cols, int batch, const T* w, int out_ch, T* out) {                              \
    conv_gather<T, 128, 128>(src, sn, sh, sw, channels, rows, cols, batch, w, out_ch, out);   \
}                                                                                              \
extern "C" __global__ void __launch_bounds__(CONV_THREADS, 2) conv_gather_wide_##SUFFIX(       \
    const T* src, long long sn, long long sh, long long sw, int channels, GatherAxis rows,     \
    GatherAxis cols, int batch, const T* w, int out_ch, T* out) {                              \
    conv_gather<T, 256, 64>(src, sn, sh, sw, channels, rows, cols, batch, w, out_ch, out);    \
}                                                                                              \
extern "C" __global__ void __launch_bounds__(CONV_THREADS, 2) conv_wgrad_##SUFFIX(             \
    const T* dy, int out_ch, const T* src, long long sn, long long sh, long long sw,           \
    int channels, GatherAxis rows, GatherAxis cols, int batch, float* partial, int per_split) { \
    conv_wgrad<T>(dy, out_ch, src, sn, sh, sw, channels, rows, cols, batch, partial, per_split); \
}
CONV_KERNELS(__half, f16)
CONV_KERNELS(__nv_bfloat16, bf16)
