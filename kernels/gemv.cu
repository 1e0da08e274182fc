// y[m, n] = act(sum_k x[m, k] W[n, k] + bias[n]) + residual[m, n] for a few rows m (at most
// GEMV_MAX_M): the dense linear layer of decoding, where a GEMM library's host cost per
// call exceeds the microseconds the product takes. Each block stages the x rows in shared
// memory (as f32) once. Optionally x is first normalized (layer norm with gamma and beta,
// or RMS norm with gamma), each block computing the statistics of the few x rows itself,
// so the norm before a projection costs no launch. One warp (or 2 or 4 for long rows) per
// output column n, with the first loads of W, and the bias and residual of the epilogue,
// issued before that prologue (W and the bias even before the wait for the kernel before,
// when launched as a dependent: see pdl_wait); 16-byte loads
// of W's row and of each x row, f32 sums; bias, tanh-GELU and the residual are applied in
// the same pass. Rows of x, y and the residual are ldx/ldy/ldr elements apart; k is a
// multiple of the elements per 16 bytes and every row starts 16-byte aligned.

#define GEMV_MAX_M 8
#define GEMV_UNROLL 8

__device__ __forceinline__ float gelu_tanh_f(float v) {
    const float c = 0.7978845608028654f;
    return 0.5f * v * (1.0f + tanhf(c * (v + 0.044715f * v * v * v)));
}

// Sum over the block of one value per thread (every thread gets the total).
__device__ float block_sum(float v, float* scratch) {
    for (int off = 16; off > 0; off >>= 1) v += __shfl_xor_sync(0xffffffff, v, off);
    __syncthreads();
    if (threadIdx.x % 32 == 0) scratch[threadIdx.x / 32] = v;
    __syncthreads();
    float t = 0.0f;
    for (int w = 0; w < (int)blockDim.x / 32; ++w) t += scratch[w];
    return t;
}

// norm: 0 none, 1 layer norm (gamma, beta), 2 RMS norm (gamma). `split` warps (1, 2 or 4)
// share one output row, each taking every split-th run of 32 packs, so long rows keep as
// many loads in flight as short ones; their sums meet in shared memory.
template <typename T>
__device__ void gemv(const T* w, const T* x, long long ldx, const T* bias, const T* residual,
                     long long ldr, T* y, long long ldy, long long n, int k, int mrows,
                     int gelu, int norm, const T* gamma, const T* beta, float eps, int split) {
    constexpr int V = Pack16<T>::N, U = GEMV_UNROLL;
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, warps = blockDim.x / 32;
    const long long row = (long long)blockIdx.x * (warps / split) + warp / split;
    const int part = warp % split;
    const bool live = row < n;
    const T* wr = w + (live ? row : 0) * (long long)k;
    // Columns between one lane's successive packs.
    const int stride = 32 * V * split;
    int c0 = (part * 32 + lane) * V;
    // The first packs of W are requested before the x prologue, which they do not need.
    float wv[U][V];
#pragma unroll
    for (int u = 0; u < U; ++u) {
        const int c = c0 + u * stride;
        if (live && c < k) Pack16<T>::load(wr + c, wv[u]);
    }
    // The epilogue's operands, requested now so that they arrive while the products run:
    // the bias (a weight) before the wait for the kernel before this one, the residual
    // (its output, perhaps) after.
    const bool writer = live && part == 0 && lane == 0;
    float bias_v = 0.0f, res[GEMV_MAX_M];
    if (writer && bias) bias_v = to_compute(bias[row]);
    pdl_wait();
    pdl_launch_dependents();
#pragma unroll
    for (int m = 0; m < GEMV_MAX_M; ++m) {
        res[m] = 0.0f;
        if (writer && residual && m < mrows) res[m] = to_compute(residual[m * ldr + row]);
    }
    // The x rows, normalized if asked, staged once per block in shared memory as f32.
    extern __shared__ float xs[];
    __shared__ float shift[GEMV_MAX_M], scale[GEMV_MAX_M], scratch[32];
    __shared__ float partial[8][GEMV_MAX_M];
    if (norm != 0) {
        for (int m = 0; m < mrows; ++m) {
            const T* xm = x + m * ldx;
            float mean = 0.0f;
            if (norm == 1) {
                float s = 0.0f;
                for (int c = threadIdx.x; c < k; c += blockDim.x) s += to_compute(xm[c]);
                mean = block_sum(s, scratch) / k;
            }
            float q = 0.0f;
            for (int c = threadIdx.x; c < k; c += blockDim.x) {
                const float d = to_compute(xm[c]) - mean;
                q += d * d;
            }
            const float var = block_sum(q, scratch) / k;
            if (threadIdx.x == 0) {
                shift[m] = mean;
                scale[m] = rsqrtf(var + eps);
            }
        }
        __syncthreads();
    }
    for (int m = 0; m < mrows; ++m) {
        for (int c = threadIdx.x; c < k; c += blockDim.x) {
            float v = to_compute(x[m * ldx + c]);
            if (norm != 0) {
                v = (v - shift[m]) * scale[m] * to_compute(gamma[c]);
                if (norm == 1) v += to_compute(beta[c]);
            }
            xs[m * k + c] = v;
        }
    }
    __syncthreads();
    float acc[GEMV_MAX_M];
#pragma unroll
    for (int m = 0; m < GEMV_MAX_M; ++m) acc[m] = 0.0f;
    while (live && c0 < k) {
#pragma unroll
        for (int u = 0; u < U; ++u) {
            const int c = c0 + u * stride;
            if (c >= k) break;
#pragma unroll
            for (int m = 0; m < GEMV_MAX_M; ++m) {
                if (m < mrows) {
                    const float* xv = xs + m * k + c;
                    float s = 0.0f;
#pragma unroll
                    for (int i = 0; i < V; ++i) s += wv[u][i] * xv[i];
                    acc[m] += s;
                }
            }
        }
        c0 += U * stride;
#pragma unroll
        for (int u = 0; u < U; ++u) {
            const int c = c0 + u * stride;
            if (c < k) Pack16<T>::load(wr + c, wv[u]);
        }
    }
#pragma unroll
    for (int m = 0; m < GEMV_MAX_M; ++m) {
        if (m < mrows) {
            float s = acc[m];
            for (int off = 16; off > 0; off >>= 1) s += __shfl_xor_sync(0xffffffff, s, off);
            acc[m] = s;
            if (split > 1 && lane == 0) partial[warp][m] = s;
        }
    }
    if (split > 1) {
        __syncthreads();
        if (part == 0 && lane == 0) {
            for (int m = 0; m < mrows; ++m) {
                float s = 0.0f;
                for (int p = 0; p < split; ++p) s += partial[warp + p][m];
                acc[m] = s;
            }
        }
    }
    if (!writer) return;
#pragma unroll
    for (int m = 0; m < GEMV_MAX_M; ++m) {
        if (m < mrows) {
            float s = acc[m] + bias_v;
            if (gelu) s = gelu_tanh_f(s);
            y[m * ldy + row] = from_compute<T>(s + res[m]);
        }
    }
}

#define GEMV(SUFFIX, T)                                                                       \
extern "C" __global__ void gemv_##SUFFIX(const T* w, const T* x, long long ldx, const T* bias, \
        const T* residual, long long ldr, T* y, long long ldy, long long n, int k, int mrows,   \
        int gelu, int norm, const T* gamma, const T* beta, float eps, int split) {              \
    gemv<T>(w, x, ldx, bias, residual, ldr, y, ldy, n, k, mrows, gelu, norm, gamma, beta, eps,  \
            split);                                                                             \
}

GEMV(f32, float)
GEMV(f16, __half)
GEMV(bf16, __nv_bfloat16)
