// ggml-quantized matrices read in place: a matrix-vector product for a few rows of
// activations (decoding), and row dequantization (embedding lookups, and whole matrices
// before a GEMM for long prompts). A matrix is `rows` rows of `k` values, each row whole
// blocks, `row_bytes` apart. The dequantizers mirror src/io/quant.rs product for product,
// with rounded intrinsics so that no multiply-add is contracted: values equal the CPU's.

__device__ __forceinline__ float ld_f16(const unsigned char* p) {
    return __half2float(__ushort_as_half((unsigned short)(p[0] | (p[1] << 8))));
}
#define QMUL(a, b) __fmul_rn((a), (b))
#define QADD(a, b) __fadd_rn((a), (b))
#define QSUB(a, b) __fsub_rn((a), (b))

// Each type: elements per block QK, bytes per block, and deq8(row, e, v) writing the eight
// values e..e+8 (e a multiple of 8) of a row.
struct Q4_0 {
    static constexpr int QK = 32, BYTES = 18;
    __device__ static void deq8(const unsigned char* row, int e, float* v) {
        const unsigned char* b = row + (e / QK) * BYTES;
        const int o = e % QK, sh = o >= 16 ? 4 : 0;
        const float d = ld_f16(b);
        const unsigned char* qs = b + 2 + (o & 15);
#pragma unroll
        for (int i = 0; i < 8; ++i) v[i] = QMUL(d, (float)((int)((qs[i] >> sh) & 0xF) - 8));
    }
};

struct Q4_1 {
    static constexpr int QK = 32, BYTES = 20;
    __device__ static void deq8(const unsigned char* row, int e, float* v) {
        const unsigned char* b = row + (e / QK) * BYTES;
        const int o = e % QK, sh = o >= 16 ? 4 : 0;
        const float d = ld_f16(b), m = ld_f16(b + 2);
        const unsigned char* qs = b + 4 + (o & 15);
#pragma unroll
        for (int i = 0; i < 8; ++i) v[i] = QADD(QMUL(d, (float)((qs[i] >> sh) & 0xF)), m);
    }
};

// Q5_0 (HAS_MIN false) and Q5_1: a fifth bit per value in a 32-bit mask.
template <bool HAS_MIN>
struct Q5 {
    static constexpr int QK = 32, BYTES = HAS_MIN ? 24 : 22;
    __device__ static void deq8(const unsigned char* row, int e, float* v) {
        const unsigned char* b = row + (e / QK) * BYTES;
        const int o = e % QK, sh = o >= 16 ? 4 : 0, at = HAS_MIN ? 4 : 2;
        const float d = ld_f16(b), m = HAS_MIN ? ld_f16(b + 2) : 0.0f;
        const unsigned int qh = b[at] | (b[at + 1] << 8) | (b[at + 2] << 16) | ((unsigned)b[at + 3] << 24);
        const unsigned char* qs = b + at + 4 + (o & 15);
#pragma unroll
        for (int i = 0; i < 8; ++i) {
            const int q = ((qs[i] >> sh) & 0xF) | (((qh >> (o + i)) & 1) << 4);
            v[i] = HAS_MIN ? QADD(QMUL(d, (float)q), m) : QMUL(d, (float)(q - 16));
        }
    }
};

struct Q8_0 {
    static constexpr int QK = 32, BYTES = 34;
    __device__ static void deq8(const unsigned char* row, int e, float* v) {
        const unsigned char* b = row + (e / QK) * BYTES;
        const float d = ld_f16(b);
        const signed char* qs = (const signed char*)(b + 2 + e % QK);
#pragma unroll
        for (int i = 0; i < 8; ++i) v[i] = QMUL((float)qs[i], d);
    }
};

struct Q2K {
    static constexpr int QK = 256, BYTES = 84;
    __device__ static void deq8(const unsigned char* row, int e, float* v) {
        const unsigned char* b = row + (e / QK) * BYTES;
        const int o = e % QK, half = o / 128, r = o % 128, shift = r / 32, group = (r % 32) / 16;
        const float d = ld_f16(b + 80), dmin = ld_f16(b + 82);
        const unsigned char sc = b[8 * half + 2 * shift + group];
        const float dl = QMUL(d, (float)(sc & 0xF)), ml = QMUL(dmin, (float)(sc >> 4));
        const unsigned char* q = b + 16 + 32 * half + 16 * group + r % 16;
#pragma unroll
        for (int i = 0; i < 8; ++i) v[i] = QSUB(QMUL(dl, (float)((q[i] >> (2 * shift)) & 3)), ml);
    }
};

struct Q3K {
    static constexpr int QK = 256, BYTES = 110;
    __device__ static void deq8(const unsigned char* row, int e, float* v) {
        const unsigned char* b = row + (e / QK) * BYTES;
        const int o = e % QK, half = o / 128, r = o % 128, shift = r / 32, group = (r % 32) / 16;
        const int s = 8 * half + 2 * shift + group, at = 16 * group + r % 16;
        const unsigned char* p = b + 96;
        const int low = s < 8 ? (p[s] & 0xF) : (p[s - 8] >> 4);
        const int high = (p[8 + s % 4] >> (2 * (s / 4))) & 3;
        const float dl = QMUL(ld_f16(b + 108), (float)((low | (high << 4)) - 32));
        const int bit = 4 * half + shift;
#pragma unroll
        for (int i = 0; i < 8; ++i) {
            const int q = (b[32 + 32 * half + at + i] >> (2 * shift)) & 3;
            const int h = (b[at + i] & (1 << bit)) ? 0 : 4;
            v[i] = QMUL(dl, (float)(q - h));
        }
    }
};

// Scale and min number j (0..8) of a Q4_K/Q5_K block's 12 packed bytes.
__device__ __forceinline__ void k4_scale_min(int j, const unsigned char* q, int* sc, int* m) {
    if (j < 4) {
        *sc = q[j] & 63;
        *m = q[j + 4] & 63;
    } else {
        *sc = (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4);
        *m = (q[j + 4] >> 4) | ((q[j] >> 6) << 4);
    }
}

// Q4_K (HIGH false) and Q5_K.
template <bool HIGH>
struct QK45 {
    static constexpr int QK = 256, BYTES = HIGH ? 176 : 144;
    __device__ static void deq8(const unsigned char* row, int e, float* v) {
        const unsigned char* b = row + (e / QK) * BYTES;
        const int o = e % QK, chunk = o / 64, nib = (o % 64) / 32, l = o % 32;
        int sc, m;
        k4_scale_min(2 * chunk + nib, b + 4, &sc, &m);
        const float dl = QMUL(ld_f16(b), (float)sc), ml = QMUL(ld_f16(b + 2), (float)m);
        const unsigned char* qs = b + (HIGH ? 48 : 16) + 32 * chunk + l;
#pragma unroll
        for (int i = 0; i < 8; ++i) {
            int q = nib ? (qs[i] >> 4) : (qs[i] & 0xF);
            if (HIGH) q |= ((b[16 + l + i] >> (2 * chunk + nib)) & 1) << 4;
            v[i] = QSUB(QMUL(dl, (float)q), ml);
        }
    }
};

struct Q6K {
    static constexpr int QK = 256, BYTES = 210;
    __device__ static void deq8(const unsigned char* row, int e, float* v) {
        const unsigned char* b = row + (e / QK) * BYTES;
        const int o = e % QK, half = o / 128, r = o % 128, quarter = r / 32, l = r % 32;
        const unsigned char* ql = b + 64 * half + l + 32 * (quarter % 2);
        const unsigned char* qh = b + 128 + 32 * half + l;
        const float scale = QMUL(ld_f16(b + 208), (float)(signed char)b[192 + 8 * half + 2 * quarter + l / 16]);
        const int sh = quarter < 2 ? 0 : 4;
#pragma unroll
        for (int i = 0; i < 8; ++i) {
            const int q = (((ql[i] >> sh) & 0xF) | (((qh[i] >> (2 * quarter)) & 3) << 4)) - 32;
            v[i] = QMUL(scale, (float)q);
        }
    }
};

// y[m, n] = sum_k x[m, k] W[n, k] for m < mrows (at most QGEMV_MAX_M): one warp per row n
// of W, lanes over 8-value chunks, f32 sums. y rows are ldy apart (a column slice of a
// wider output when a matrix is stored in parts).
#define QGEMV_MAX_M 8
template <typename Q, typename T>
__device__ void qgemv(const unsigned char* w, long long row_bytes, const T* x, long long ldx,
                      T* y, long long ldy, long long n, int k, int mrows) {
    const long long row = ((long long)blockIdx.x * blockDim.x + threadIdx.x) / 32;
    const int lane = threadIdx.x % 32;
    if (row >= n) return;
    const unsigned char* wr = w + row * row_bytes;
    float acc[QGEMV_MAX_M];
#pragma unroll
    for (int m = 0; m < QGEMV_MAX_M; ++m) acc[m] = 0.0f;
    for (int c = lane; c < k / 8; c += 32) {
        float v[8];
        Q::deq8(wr, c * 8, v);
#pragma unroll
        for (int m = 0; m < QGEMV_MAX_M; ++m) {
            if (m < mrows) {
                const T* xm = x + m * ldx + c * 8;
                float s = 0.0f;
#pragma unroll
                for (int i = 0; i < 8; ++i) s += v[i] * to_compute(xm[i]);
                acc[m] += s;
            }
        }
    }
#pragma unroll
    for (int m = 0; m < QGEMV_MAX_M; ++m) {
        if (m < mrows) {
            float s = acc[m];
            for (int off = 16; off > 0; off >>= 1) s += __shfl_xor_sync(0xffffffff, s, off);
            if (lane == 0) y[m * ldy + row] = from_compute<T>(s);
        }
    }
}

// out[r, :] = row ids[r] of W (row r when ids is null), dequantized; an id outside
// 0..n_src reads as NaN, never out of bounds.
template <typename Q, typename T>
__device__ void qrows(const unsigned char* w, long long row_bytes, long long n_src,
                      const long long* ids, T* out, long long rows, int k) {
    const long long chunks = k / 8;
    GRID_STRIDE_LOOP(p, rows * chunks) {
        const long long r = p / chunks;
        const int c = (int)(p % chunks);
        const long long src = ids ? ids[r] : r;
        T* o = out + r * k + c * 8;
        if (src < 0 || src >= n_src) {
#pragma unroll
            for (int i = 0; i < 8; ++i) o[i] = from_double<T>(NAN);
            continue;
        }
        float v[8];
        Q::deq8(w + src * row_bytes, c * 8, v);
#pragma unroll
        for (int i = 0; i < 8; ++i) o[i] = from_compute<T>(v[i]);
    }
}

#define QUANT_KERNELS(QNAME, Q, SUFFIX, T)                                                    \
extern "C" __global__ void qgemv_##QNAME##_##SUFFIX(const unsigned char* w, long long row_bytes, \
        const T* x, long long ldx, T* y, long long ldy, long long n, int k, int mrows) {       \
    qgemv<Q, T>(w, row_bytes, x, ldx, y, ldy, n, k, mrows);                                  \
}                                                                                             \
extern "C" __global__ void qrows_##QNAME##_##SUFFIX(const unsigned char* w, long long row_bytes, \
        long long n_src, const long long* ids, T* out, long long rows, int k) {               \
    qrows<Q, T>(w, row_bytes, n_src, ids, out, rows, k);                                      \
}

#define QUANT_ALL_DTYPES(QNAME, Q)            \
    QUANT_KERNELS(QNAME, Q, f32, float)      \
    QUANT_KERNELS(QNAME, Q, f16, __half)     \
    QUANT_KERNELS(QNAME, Q, bf16, __nv_bfloat16)

QUANT_ALL_DTYPES(q4_0, Q4_0)
QUANT_ALL_DTYPES(q4_1, Q4_1)
QUANT_ALL_DTYPES(q5_0, Q5<false>)
QUANT_ALL_DTYPES(q5_1, Q5<true>)
QUANT_ALL_DTYPES(q8_0, Q8_0)
QUANT_ALL_DTYPES(q2_k, Q2K)
QUANT_ALL_DTYPES(q3_k, Q3K)
QUANT_ALL_DTYPES(q4_k, QK45<false>)
QUANT_ALL_DTYPES(q5_k, QK45<true>)
QUANT_ALL_DTYPES(q6_k, Q6K)
