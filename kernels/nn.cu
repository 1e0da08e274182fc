// Fused row kernels over the last dimension of contiguous inputs: softmax / log-softmax
// (optionally causal) and their backward, layer norm and RMS norm forward and backward,
// cross-entropy forward and backward. One block of 256 threads per row; f32 math.

#define ROW_THREADS 256

// Block-wide sum or max of one value per thread (every thread gets the result).
__device__ float block_reduce(float v, bool is_max) {
    __shared__ float scratch[32];
    for (int s = 16; s > 0; s >>= 1) {
        float o = __shfl_down_sync(0xffffffffu, v, s);
        v = is_max ? fmaxf(v, o) : v + o;
    }
    const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
    __syncthreads();  // scratch may still be read by a previous call
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    const int warps = (blockDim.x + 31) / 32;
    v = threadIdx.x < warps ? scratch[threadIdx.x] : (is_max ? -INFINITY : 0.0f);
    if (warp == 0) {
        for (int s = 16; s > 0; s >>= 1) {
            float o = __shfl_down_sync(0xffffffffu, v, s);
            v = is_max ? fmaxf(v, o) : v + o;
        }
        if (lane == 0) scratch[0] = v;
    }
    __syncthreads();
    return scratch[0];
}

// Keys a causal query row sees: query q (row % queries) sees keys 0..=q + (c - queries),
// aligned to the last key; every key when the mask is off.
__device__ __forceinline__ long long causal_visible(long long row, long long c, long long queries, int causal) {
    if (!causal) return c;
    long long visible = row % queries + 1 + c - queries;
    return visible < 0 ? 0 : (visible > c ? c : visible);
}

// 16-byte loads and stores of 4 f32 or 8 halves, widened to f32.
template <typename T>
__device__ __forceinline__ void load_pack(const T* p, float* out) {
    const uint4 raw = *reinterpret_cast<const uint4*>(p);
    const T* e = reinterpret_cast<const T*>(&raw);
#pragma unroll
    for (int i = 0; i < (int)(16 / sizeof(T)); ++i) out[i] = to_compute(e[i]);
}

template <typename T>
__device__ __forceinline__ void store_pack(T* p, const float* in) {
    uint4 raw;
    T* e = reinterpret_cast<T*>(&raw);
#pragma unroll
    for (int i = 0; i < (int)(16 / sizeof(T)); ++i) e[i] = from_compute<T>(in[i]);
    *reinterpret_cast<uint4*>(p) = raw;
}

// Rows of up to ROW_THREADS * CACHED values are read once into registers and written once.
#define CACHED 8

template <typename T>
__device__ void softmax_row_cached(const T* x, T* y, long long row, long long c, long long queries, int log_out, int causal) {
    const T* xr = x + row * c;
    T* yr = y + row * c;
    const long long visible = causal_visible(row, c, queries, causal);
    float v[CACHED];
    float m = -INFINITY;
#pragma unroll
    for (int k = 0; k < CACHED; ++k) {
        long long j = threadIdx.x + (long long)k * blockDim.x;
        v[k] = j < visible ? to_compute(xr[j]) : -INFINITY;
        m = fmaxf(m, v[k]);
    }
    m = block_reduce(m, true);
    if (m == -INFINITY) m = 0.0f;
    float s = 0.0f;
#pragma unroll
    for (int k = 0; k < CACHED; ++k) {
        long long j = threadIdx.x + (long long)k * blockDim.x;
        if (j < visible) s += __expf(v[k] - m);
    }
    s = block_reduce(s, false);
    const float lse = logf(s), inv = 1.0f / s;
#pragma unroll
    for (int k = 0; k < CACHED; ++k) {
        long long j = threadIdx.x + (long long)k * blockDim.x;
        if (j < c) {
            float o;
            if (j >= visible) o = log_out ? -INFINITY : 0.0f;
            else o = log_out ? v[k] - m - lse : __expf(v[k] - m) * inv;
            yr[j] = from_compute<T>(o);
        }
    }
}

template <typename T>
__device__ void softmax_row(const T* x, T* y, long long row, long long c, long long queries, int log_out, int causal) {
    if (c <= (long long)blockDim.x * CACHED) {
        softmax_row_cached(x, y, row, c, queries, log_out, causal);
        return;
    }
    const T* xr = x + row * c;
    T* yr = y + row * c;
    const long long visible = causal_visible(row, c, queries, causal);
    float m = -INFINITY;
    for (long long j = threadIdx.x; j < visible; j += blockDim.x) m = fmaxf(m, to_compute(xr[j]));
    m = block_reduce(m, true);
    if (m == -INFINITY) m = 0.0f;
    float s = 0.0f;
    for (long long j = threadIdx.x; j < visible; j += blockDim.x) s += __expf(to_compute(xr[j]) - m);
    s = block_reduce(s, false);
    const float lse = logf(s), inv = 1.0f / s;
    for (long long j = threadIdx.x; j < c; j += blockDim.x) {
        float v;
        if (j >= visible) v = log_out ? -INFINITY : 0.0f;
        else v = log_out ? to_compute(xr[j]) - m - lse : __expf(to_compute(xr[j]) - m) * inv;
        yr[j] = from_compute<T>(v);
    }
}

template <typename T>
__device__ void softmax_bwd_row(const T* y, const T* g, T* dx, long long row, long long c, int log_out) {
    const T* yr = y + row * c;
    const T* gr = g + row * c;
    T* dr = dx + row * c;
    float s = 0.0f;
    for (long long j = threadIdx.x; j < c; j += blockDim.x)
        s += log_out ? to_compute(gr[j]) : to_compute(gr[j]) * to_compute(yr[j]);
    s = block_reduce(s, false);
    for (long long j = threadIdx.x; j < c; j += blockDim.x) {
        float yv = to_compute(yr[j]), gv = to_compute(gr[j]);
        dr[j] = from_compute<T>(log_out ? gv - __expf(yv) * s : yv * (gv - s));
    }
}

// Norm statistics of one row: mean (0 for RMS) and 1/sqrt(var + eps).
template <typename T>
__device__ void row_stats(const T* xr, long long c, int rms, float eps, float* mean_out, float* rstd_out) {
    float s = 0.0f;
    if (!rms) {
        for (long long j = threadIdx.x; j < c; j += blockDim.x) s += to_compute(xr[j]);
        s = block_reduce(s, false);
    }
    const float mean = rms ? 0.0f : s / (float)c;
    float q = 0.0f;
    for (long long j = threadIdx.x; j < c; j += blockDim.x) {
        float d = to_compute(xr[j]) - mean;
        q += d * d;
    }
    q = block_reduce(q, false);
    *mean_out = mean;
    *rstd_out = rsqrtf(q / (float)c + eps);
}

template <typename T>
__device__ void norm_row(const T* x, const T* w, const T* b, T* y, long long row, long long c, int rms, float eps) {
    const T* xr = x + row * c;
    if (c <= (long long)blockDim.x * CACHED) {
        float v[CACHED];
        float s = 0.0f;
#pragma unroll
        for (int k = 0; k < CACHED; ++k) {
            long long j = threadIdx.x + (long long)k * blockDim.x;
            v[k] = j < c ? to_compute(xr[j]) : 0.0f;
            s += v[k];
        }
        const float mean = rms ? 0.0f : block_reduce(s, false) / (float)c;
        float q = 0.0f;
#pragma unroll
        for (int k = 0; k < CACHED; ++k) {
            long long j = threadIdx.x + (long long)k * blockDim.x;
            if (j < c) q += (v[k] - mean) * (v[k] - mean);
        }
        const float rstd = rsqrtf(block_reduce(q, false) / (float)c + eps);
#pragma unroll
        for (int k = 0; k < CACHED; ++k) {
            long long j = threadIdx.x + (long long)k * blockDim.x;
            if (j < c) {
                float o = (v[k] - mean) * rstd;
                if (w) o *= to_compute(w[j]);
                if (b) o += to_compute(b[j]);
                y[row * c + j] = from_compute<T>(o);
            }
        }
        return;
    }
    float mean, rstd;
    row_stats(xr, c, rms, eps, &mean, &rstd);
    for (long long j = threadIdx.x; j < c; j += blockDim.x) {
        float v = (to_compute(xr[j]) - mean) * rstd;
        if (w) v *= to_compute(w[j]);
        if (b) v += to_compute(b[j]);
        y[row * c + j] = from_compute<T>(v);
    }
}

// dx for one row; also stores the row's mean and rstd for the weight-gradient kernel.
template <typename T>
__device__ void norm_bwd_row(const T* x, const T* w, const T* g, T* dx, float* stats, long long row, long long c, int rms, float eps) {
    const T* xr = x + row * c;
    const T* gr = g + row * c;
    float mean, rstd;
    row_stats(xr, c, rms, eps, &mean, &rstd);
    float sd = 0.0f, sdx = 0.0f;
    for (long long j = threadIdx.x; j < c; j += blockDim.x) {
        float d = to_compute(gr[j]) * (w ? to_compute(w[j]) : 1.0f);
        float xhat = (to_compute(xr[j]) - mean) * rstd;
        sd += d;
        sdx += d * xhat;
    }
    sd = block_reduce(sd, false);
    sdx = block_reduce(sdx, false);
    const float mean_d = rms ? 0.0f : sd / (float)c, mean_dx = sdx / (float)c;
    for (long long j = threadIdx.x; j < c; j += blockDim.x) {
        float d = to_compute(gr[j]) * (w ? to_compute(w[j]) : 1.0f);
        float xhat = (to_compute(xr[j]) - mean) * rstd;
        dx[row * c + j] = from_compute<T>(rstd * (d - mean_d - xhat * mean_dx));
    }
    if (threadIdx.x == 0) { stats[2 * row] = mean; stats[2 * row + 1] = rstd; }
}

// Weight and bias gradients, pass 1: block (column tile of 32, row chunk) sums its rows
// into partials[chunk][2][c], with 8 row lanes per column combined in a fixed order.
#define WGRAD_COLS 32
#define WGRAD_LANES 8
template <typename T>
__device__ void norm_wgrad_partial(const T* x, const T* g, const float* stats, float* partials, long long rows, long long c, long long rows_per_chunk) {
    __shared__ float sw_s[WGRAD_LANES][WGRAD_COLS], sb_s[WGRAD_LANES][WGRAD_COLS];
    const int tx = threadIdx.x % WGRAD_COLS, ty = threadIdx.x / WGRAD_COLS;
    const long long j = (long long)blockIdx.x * WGRAD_COLS + tx;
    const long long chunk = blockIdx.y, r0 = chunk * rows_per_chunk;
    long long r1 = r0 + rows_per_chunk;
    if (r1 > rows) r1 = rows;
    float sw = 0.0f, sb = 0.0f;
    if (j < c) {
        for (long long i = r0 + ty; i < r1; i += WGRAD_LANES) {
            float gv = to_compute(g[i * c + j]);
            sw += gv * (to_compute(x[i * c + j]) - stats[2 * i]) * stats[2 * i + 1];
            sb += gv;
        }
    }
    sw_s[ty][tx] = sw;
    sb_s[ty][tx] = sb;
    __syncthreads();
    if (ty == 0 && j < c) {
        for (int k = 1; k < WGRAD_LANES; ++k) { sw += sw_s[k][tx]; sb += sb_s[k][tx]; }
        partials[(chunk * 2) * c + j] = sw;
        partials[(chunk * 2 + 1) * c + j] = sb;
    }
}

// Pass 2: chunks summed in order per column (deterministic).
template <typename T>
__device__ void norm_wgrad_finish(const float* partials, T* dw, T* db, long long chunks, long long c) {
    GRID_STRIDE_LOOP(j, c) {
        float sw = 0.0f, sb = 0.0f;
        for (long long k = 0; k < chunks; ++k) { sw += partials[(k * 2) * c + j]; sb += partials[(k * 2 + 1) * c + j]; }
        dw[j] = from_compute<T>(sw);
        db[j] = from_compute<T>(sb);
    }
}

// Max and sum of exp(x - max) over one row in a single read (online rescaling per
// thread, combined across the block); 16-byte loads when the row allows.
template <typename T>
__device__ void row_max_sumexp(const T* xr, long long v, float* m_out, float* s_out) {
    constexpr int N = 16 / sizeof(T);
    float m = -INFINITY, s = 0.0f;
    auto push = [&](float x) {
        if (x > m) { s = s * __expf(m - x) + 1.0f; m = x; }
        else if (x != -INFINITY) s += __expf(x - m);
    };
    if ((((unsigned long long)xr) & 15) == 0 && v % N == 0) {
        for (long long p = threadIdx.x; p < v / N; p += blockDim.x) {
            float e[N];
            load_pack(xr + p * N, e);
#pragma unroll
            for (int i = 0; i < N; ++i) push(e[i]);
        }
    } else {
        for (long long j = threadIdx.x; j < v; j += blockDim.x) push(to_compute(xr[j]));
    }
    const float mx = block_reduce(m, true);
    *s_out = block_reduce(m == -INFINITY ? 0.0f : s * __expf(m - mx), false);
    *m_out = mx;
}

// Cross-entropy per row: loss (0 when ignored) and whether it counts; NaN for a target
// outside the classes (the host cannot be told without waiting for the GPU).
template <typename T>
__device__ void xent_row(const T* x, const long long* t, float* loss, float* valid, long long row, long long v, long long ignore) {
    const T* xr = x + row * v;
    const long long target = t[row];
    float m, s;
    row_max_sumexp(xr, v, &m, &s);
    if (threadIdx.x == 0) {
        if (target == ignore) { loss[row] = 0.0f; valid[row] = 0.0f; }
        else if (target < 0 || target >= v) { loss[row] = NAN; valid[row] = 1.0f; }
        else { loss[row] = m + logf(s) - to_compute(xr[target]); valid[row] = 1.0f; }
    }
}

// dx = (softmax(x) - onehot(target)) * grad / count: one read for the statistics, one
// read and one write for the result.
template <typename T>
__device__ void xent_bwd_row(const T* x, const long long* t, const float* grad, const float* count, T* dx, long long row, long long v, long long ignore) {
    constexpr int N = 16 / sizeof(T);
    const T* xr = x + row * v;
    T* dr = dx + row * v;
    const long long target = t[row];
    if (target == ignore) {
        for (long long j = threadIdx.x; j < v; j += blockDim.x) dr[j] = from_compute<T>(0.0f);
        return;
    }
    float m, s;
    row_max_sumexp(xr, v, &m, &s);
    const float scale = grad[0] / count[0], inv = 1.0f / s;
    if ((((unsigned long long)xr | (unsigned long long)dr) & 15) == 0 && v % N == 0) {
        for (long long p = threadIdx.x; p < v / N; p += blockDim.x) {
            float e[N];
            load_pack(xr + p * N, e);
#pragma unroll
            for (int i = 0; i < N; ++i)
                e[i] = (__expf(e[i] - m) * inv - (p * N + i == target ? 1.0f : 0.0f)) * scale;
            store_pack(dr + p * N, e);
        }
    } else {
        for (long long j = threadIdx.x; j < v; j += blockDim.x) {
            float p = __expf(to_compute(xr[j]) - m) * inv;
            dr[j] = from_compute<T>((p - (j == target ? 1.0f : 0.0f)) * scale);
        }
    }
}

#define NN_KERNELS(SUFFIX, T)                                                                      \
extern "C" __global__ void softmax_##SUFFIX(const T* x, T* y, long long rows, long long c,          \
                                            long long queries, int log_out, int causal) {          \
    for (long long row = blockIdx.x; row < rows; row += gridDim.x)                                 \
        softmax_row<T>(x, y, row, c, queries, log_out, causal);                                    \
}                                                                                                  \
extern "C" __global__ void softmax_bwd_##SUFFIX(const T* y, const T* g, T* dx, long long rows,     \
                                                long long c, int log_out) {                        \
    for (long long row = blockIdx.x; row < rows; row += gridDim.x)                                 \
        softmax_bwd_row<T>(y, g, dx, row, c, log_out);                                             \
}                                                                                                  \
extern "C" __global__ void norm_##SUFFIX(const T* x, const T* w, const T* b, T* y, long long rows, \
                                         long long c, int rms, float eps) {                        \
    for (long long row = blockIdx.x; row < rows; row += gridDim.x)                                 \
        norm_row<T>(x, w, b, y, row, c, rms, eps);                                                 \
}                                                                                                  \
extern "C" __global__ void norm_bwd_##SUFFIX(const T* x, const T* w, const T* g, T* dx,            \
                                             float* stats, long long rows, long long c, int rms,   \
                                             float eps) {                                          \
    for (long long row = blockIdx.x; row < rows; row += gridDim.x)                                 \
        norm_bwd_row<T>(x, w, g, dx, stats, row, c, rms, eps);                                     \
}                                                                                                  \
extern "C" __global__ void norm_wgrad_partial_##SUFFIX(const T* x, const T* g, const float* stats, \
                                                       float* partials, long long rows, long long c, \
                                                       long long rows_per_chunk) {                 \
    norm_wgrad_partial<T>(x, g, stats, partials, rows, c, rows_per_chunk);                         \
}                                                                                                  \
extern "C" __global__ void norm_wgrad_finish_##SUFFIX(const float* partials, T* dw, T* db,         \
                                                      long long chunks, long long c) {             \
    norm_wgrad_finish<T>(partials, dw, db, chunks, c);                                             \
}                                                                                                  \
extern "C" __global__ void xent_##SUFFIX(const T* x, const long long* t, float* loss, float* valid, \
                                         long long rows, long long v, long long ignore) {          \
    for (long long row = blockIdx.x; row < rows; row += gridDim.x)                                 \
        xent_row<T>(x, t, loss, valid, row, v, ignore);                                            \
}                                                                                                  \
extern "C" __global__ void xent_bwd_##SUFFIX(const T* x, const long long* t, const float* grad,    \
                                             const float* count, T* dx, long long rows,            \
                                             long long v, long long ignore) {                      \
    for (long long row = blockIdx.x; row < rows; row += gridDim.x)                                 \
        xent_bwd_row<T>(x, t, grad, count, dx, row, v, ignore);                                    \
}

NN_KERNELS(f32, float)
NN_KERNELS(f16, __half)
NN_KERNELS(bf16, __nv_bfloat16)

// Mean of the per-row losses over the rows that count (one block); NaN when none count,
// as on the CPU. Also leaves the count in out[1] for the backward pass.
extern "C" __global__ void xent_finish(const float* loss, const float* valid, long long rows, float* out) {
    float s = 0.0f, n = 0.0f;
    for (long long i = threadIdx.x; i < rows; i += blockDim.x) { s += loss[i]; n += valid[i]; }
    s = block_reduce(s, false);
    n = block_reduce(n, false);
    if (threadIdx.x == 0) { out[0] = s / n; out[1] = n; }
}

// Number of targets that count (not `ignore`), for the cross-entropy backward (one block).
extern "C" __global__ void xent_count(const long long* t, long long rows, long long ignore, float* out) {
    float n = 0.0f;
    for (long long i = threadIdx.x; i < rows; i += blockDim.x) n += t[i] != ignore ? 1.0f : 0.0f;
    n = block_reduce(n, false);
    if (threadIdx.x == 0) out[0] = n;
}

// Rotary embedding of contiguous x [rows, D] where row r is position r % T, with tables
// cos/sin [T, D/2]; `interleaved` pairs (2i, 2i+1), else (i, i + D/2); `inverse` rotates back.
#define ROTARY(SUFFIX, T)                                                                      \
extern "C" __global__ void rotary_##SUFFIX(const T* x, const T* cos_t, const T* sin_t, T* y,   \
                                           long long rows, long long t, long long d,           \
                                           int interleaved, int inverse) {                     \
    const long long half = d / 2, n = rows * half;                                             \
    GRID_STRIDE_LOOP(p, n) {                                                                   \
        long long row = p / half, i = p % half, pos = row % t;                                 \
        float c = to_compute(cos_t[pos * half + i]), s = to_compute(sin_t[pos * half + i]);    \
        if (inverse) s = -s;                                                                   \
        long long a = interleaved ? 2 * i : i, b = interleaved ? 2 * i + 1 : i + half;         \
        float xa = to_compute(x[row * d + a]), xb = to_compute(x[row * d + b]);                \
        y[row * d + a] = from_compute<T>(xa * c - xb * s);                                     \
        y[row * d + b] = from_compute<T>(xa * s + xb * c);                                     \
    }                                                                                          \
}
ROTARY(f32, float)
ROTARY(f16, __half)
ROTARY(bf16, __nv_bfloat16)

// Rows of up to 1024 values: one warp per row, the row held in registers (32 per lane),
// shuffles only, no block barriers. Eight rows per 256-thread block.
#define WARP_CACHED 32

// Warp w of the grid takes rows w, w + (warps in the grid), ...: one warp per row.
#define WARP_ROW_LOOP(row, rows)                                                    \
    for (long long row = ((long long)blockIdx.x * blockDim.x + threadIdx.x) / 32; \
         row < (rows); row += (long long)gridDim.x * blockDim.x / 32)

__device__ __forceinline__ float warp_sum(float v) {
    for (int s = 16; s > 0; s >>= 1) v += __shfl_xor_sync(0xffffffffu, v, s);
    return v;
}
__device__ __forceinline__ float warp_max(float v) {
    for (int s = 16; s > 0; s >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, s));
    return v;
}

template <typename T>
__device__ void softmax_warp_row(const T* x, T* y, long long row, long long c, long long queries, int log_out, int causal) {
    const int lane = threadIdx.x % 32;
    const T* xr = x + row * c;
    T* yr = y + row * c;
    const long long visible = causal_visible(row, c, queries, causal);
    float v[WARP_CACHED];
    float m = -INFINITY;
#pragma unroll
    for (int k = 0; k < WARP_CACHED; ++k) {
        long long j = lane + 32LL * k;
        v[k] = j < visible ? to_compute(xr[j]) : -INFINITY;
        m = fmaxf(m, v[k]);
    }
    m = warp_max(m);
    if (m == -INFINITY) m = 0.0f;
    float s = 0.0f;
#pragma unroll
    for (int k = 0; k < WARP_CACHED; ++k) {
        long long j = lane + 32LL * k;
        if (j < visible) { v[k] = __expf(v[k] - m); s += v[k]; }
    }
    s = warp_sum(s);
    const float lse = logf(s), inv = 1.0f / s;
#pragma unroll
    for (int k = 0; k < WARP_CACHED; ++k) {
        long long j = lane + 32LL * k;
        if (j < c) {
            float o;
            if (j >= visible) o = log_out ? -INFINITY : 0.0f;
            else o = log_out ? logf(v[k]) - lse : v[k] * inv;
            yr[j] = from_compute<T>(o);
        }
    }
}

template <typename T>
__device__ void norm_warp_row(const T* x, const T* w, const T* b, T* y, long long row, long long c, int rms, float eps) {
    const int lane = threadIdx.x % 32;
    const T* xr = x + row * c;
    float v[WARP_CACHED];
    float s = 0.0f;
#pragma unroll
    for (int k = 0; k < WARP_CACHED; ++k) {
        long long j = lane + 32LL * k;
        v[k] = j < c ? to_compute(xr[j]) : 0.0f;
        s += v[k];
    }
    const float mean = rms ? 0.0f : warp_sum(s) / (float)c;
    float q = 0.0f;
#pragma unroll
    for (int k = 0; k < WARP_CACHED; ++k) {
        long long j = lane + 32LL * k;
        if (j < c) q += (v[k] - mean) * (v[k] - mean);
    }
    const float rstd = rsqrtf(warp_sum(q) / (float)c + eps);
#pragma unroll
    for (int k = 0; k < WARP_CACHED; ++k) {
        long long j = lane + 32LL * k;
        if (j < c) {
            float o = (v[k] - mean) * rstd;
            if (w) o *= to_compute(w[j]);
            if (b) o += to_compute(b[j]);
            y[row * c + j] = from_compute<T>(o);
        }
    }
}

#define WARP_ROW_KERNELS(SUFFIX, T)                                                                \
extern "C" __global__ void softmax_warp_##SUFFIX(const T* x, T* y, long long rows, long long c,    \
                                                 long long queries, int log_out, int causal) {     \
    WARP_ROW_LOOP(row, rows)                                                                       \
        softmax_warp_row<T>(x, y, row, c, queries, log_out, causal);                               \
}                                                                                                  \
extern "C" __global__ void norm_warp_##SUFFIX(const T* x, const T* w, const T* b, T* y,            \
                                              long long rows, long long c, int rms, float eps) {   \
    WARP_ROW_LOOP(row, rows)                                                                       \
        norm_warp_row<T>(x, w, b, y, row, c, rms, eps);                                            \
}

WARP_ROW_KERNELS(f32, float)
WARP_ROW_KERNELS(f16, __half)
WARP_ROW_KERNELS(bf16, __nv_bfloat16)

// Rows of up to 1024 values whose length is a multiple of a 16-byte pack (4 f32 or 8
// halves), 16-byte aligned: one warp per row, 16-byte loads and stores, the row in
// registers. Used for norms and for the softmax backward.
#define VEC_ROW_MAX 1024

// Loads one row into registers (zeros past its end) and returns its mean and rstd.
template <typename T, int N, int K>
__device__ __forceinline__ void vec_row_stats(const T* xr, long long packs, int lane, int rms, float eps,
                                              long long c, float (&v)[K][N], float* mean_out, float* rstd_out) {
    float s = 0.0f;
#pragma unroll
    for (int k = 0; k < K; ++k) {
        const long long p = lane + 32LL * k;
        if (p < packs) {
            load_pack(xr + p * N, v[k]);
#pragma unroll
            for (int i = 0; i < N; ++i) s += v[k][i];
        } else {
#pragma unroll
            for (int i = 0; i < N; ++i) v[k][i] = 0.0f;
        }
    }
    const float mean = rms ? 0.0f : warp_sum(s) / (float)c;
    float q = 0.0f;
#pragma unroll
    for (int k = 0; k < K; ++k) {
        if (lane + 32LL * k < packs) {
#pragma unroll
            for (int i = 0; i < N; ++i) q += (v[k][i] - mean) * (v[k][i] - mean);
        }
    }
    *mean_out = mean;
    *rstd_out = rsqrtf(warp_sum(q) / (float)c + eps);
}

template <typename T>
__device__ void norm_vec_row(const T* x, const T* w, const T* b, T* y, long long row, long long c, int rms, float eps) {
    constexpr int N = 16 / sizeof(T);
    constexpr int K = VEC_ROW_MAX / 32 / N;
    const int lane = threadIdx.x % 32;
    const long long packs = c / N;
    float v[K][N];
    float mean, rstd;
    vec_row_stats<T, N, K>(x + row * c, packs, lane, rms, eps, c, v, &mean, &rstd);
#pragma unroll
    for (int k = 0; k < K; ++k) {
        const long long p = lane + 32LL * k;
        if (p < packs) {
            float wv[N], bv[N], o[N];
            if (w) load_pack(w + p * N, wv);
            if (b) load_pack(b + p * N, bv);
#pragma unroll
            for (int i = 0; i < N; ++i) {
                o[i] = (v[k][i] - mean) * rstd;
                if (w) o[i] *= wv[i];
                if (b) o[i] += bv[i];
            }
            store_pack(y + row * c + p * N, o);
        }
    }
}

template <typename T>
__device__ void norm_bwd_vec_row(const T* x, const T* w, const T* g, T* dx, float* stats, long long row, long long c, int rms, float eps) {
    constexpr int N = 16 / sizeof(T);
    constexpr int K = VEC_ROW_MAX / 32 / N;
    const int lane = threadIdx.x % 32;
    const long long packs = c / N;
    float v[K][N], d[K][N];
    float mean, rstd;
    vec_row_stats<T, N, K>(x + row * c, packs, lane, rms, eps, c, v, &mean, &rstd);
    float sd = 0.0f, sdx = 0.0f;
#pragma unroll
    for (int k = 0; k < K; ++k) {
        const long long p = lane + 32LL * k;
        if (p < packs) {
            float wv[N];
            load_pack(g + row * c + p * N, d[k]);
            if (w) load_pack(w + p * N, wv);
#pragma unroll
            for (int i = 0; i < N; ++i) {
                if (w) d[k][i] *= wv[i];
                v[k][i] = (v[k][i] - mean) * rstd;  // now x-hat
                sd += d[k][i];
                sdx += d[k][i] * v[k][i];
            }
        }
    }
    const float mean_d = rms ? 0.0f : warp_sum(sd) / (float)c, mean_dx = warp_sum(sdx) / (float)c;
#pragma unroll
    for (int k = 0; k < K; ++k) {
        const long long p = lane + 32LL * k;
        if (p < packs) {
            float o[N];
#pragma unroll
            for (int i = 0; i < N; ++i) o[i] = rstd * (d[k][i] - mean_d - v[k][i] * mean_dx);
            store_pack(dx + row * c + p * N, o);
        }
    }
    if (lane == 0) { stats[2 * row] = mean; stats[2 * row + 1] = rstd; }
}

// Softmax backward; a causal row reads only the keys it sees (the rest of dx is 0).
template <typename T>
__device__ void softmax_bwd_vec_row(const T* y, const T* g, T* dx, long long row, long long c, long long queries, int log_out, int causal) {
    constexpr int N = 16 / sizeof(T);
    constexpr int K = VEC_ROW_MAX / 32 / N;
    const int lane = threadIdx.x % 32;
    const long long packs = c / N;
    const long long visible = causal_visible(row, c, queries, causal);
    const long long seen = (visible + N - 1) / N;
    float yv[K][N], gv[K][N];
    float s = 0.0f;
#pragma unroll
    for (int k = 0; k < K; ++k) {
        const long long p = lane + 32LL * k;
        if (p < seen) {
            load_pack(y + row * c + p * N, yv[k]);
            load_pack(g + row * c + p * N, gv[k]);
#pragma unroll
            for (int i = 0; i < N; ++i)
                if (p * N + i < visible) s += log_out ? gv[k][i] : gv[k][i] * yv[k][i];
        }
    }
    s = warp_sum(s);
#pragma unroll
    for (int k = 0; k < K; ++k) {
        const long long p = lane + 32LL * k;
        if (p < packs) {
            float o[N];
#pragma unroll
            for (int i = 0; i < N; ++i) {
                if (p * N + i < visible)
                    o[i] = log_out ? gv[k][i] - __expf(yv[k][i]) * s : yv[k][i] * (gv[k][i] - s);
                else
                    o[i] = 0.0f;
            }
            store_pack(dx + row * c + p * N, o);
        }
    }
}

#define VEC_ROW_KERNELS(SUFFIX, T)                                                                 \
extern "C" __global__ void norm_vec_##SUFFIX(const T* x, const T* w, const T* b, T* y,             \
                                             long long rows, long long c, int rms, float eps) {    \
    WARP_ROW_LOOP(row, rows)                                                                       \
        norm_vec_row<T>(x, w, b, y, row, c, rms, eps);                                             \
}                                                                                                  \
extern "C" __global__ void norm_bwd_vec_##SUFFIX(const T* x, const T* w, const T* g, T* dx,        \
                                                 float* stats, long long rows, long long c,        \
                                                 int rms, float eps) {                             \
    WARP_ROW_LOOP(row, rows)                                                                       \
        norm_bwd_vec_row<T>(x, w, g, dx, stats, row, c, rms, eps);                                 \
}                                                                                                  \
extern "C" __global__ void softmax_bwd_vec_##SUFFIX(const T* y, const T* g, T* dx, long long rows, \
                                                    long long c, long long queries, int log_out,   \
                                                    int causal) {                                  \
    WARP_ROW_LOOP(row, rows)                                                                       \
        softmax_bwd_vec_row<T>(y, g, dx, row, c, queries, log_out, causal);                        \
}

VEC_ROW_KERNELS(f32, float)
VEC_ROW_KERNELS(f16, __half)
VEC_ROW_KERNELS(bf16, __nv_bfloat16)
