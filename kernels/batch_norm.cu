// Batch normalisation's fused passes over images held channels-last: x is [M, C] with the
// channels contiguous (M = N * H * W). Per-channel vectors (center, mean, alpha, beta,
// gamma) are f32; sums run in f32.
//
//  * channel_sums: the per-channel sums of one slice of rows (blockIdx.y), as partials
//    s[0][split][c] and s[1][split][c]:
//      forward  (a = null): sum (x - center) and sum (x - center)^2, center = the first
//                           row, which keeps the variance free of cancellation;
//      backward (a = dy):   sum dy and sum dy * (x - center), center = the batch mean.
//  * channel_affine: out = (a ? a * alpha : 0) + (x - mean) * beta + gamma: the
//    normalisation (beta = weight / std, gamma = bias) and the input gradient
//    (a = dy, alpha = weight / std, beta and gamma from the two gradient sums).

#define CS_CH 32
#define CS_ROWS 8

template <typename T>
__device__ __forceinline__ void channel_sums(const T* __restrict__ x, const T* __restrict__ a,
                                             long long m_total, int channels,
                                             const float* __restrict__ center, long long rows,
                                             float* __restrict__ sums) {
    __shared__ float r1[CS_ROWS][CS_CH + 1];
    __shared__ float r2[CS_ROWS][CS_CH + 1];
    const int tx = threadIdx.x, ty = threadIdx.y;
    const int c = blockIdx.x * CS_CH + tx;
    const long long m0 = (long long)blockIdx.y * rows;
    const long long m1 = min(m_total, m0 + rows);
    float acc1 = 0.0f, acc2 = 0.0f;
    if (c < channels) {
        const float k = center[c];
        for (long long m = m0 + ty; m < m1; m += CS_ROWS) {
            const long long i = m * channels + c;
            const float d = to_compute(x[i]) - k;
            const float v = a ? to_compute(a[i]) : d;
            acc1 += v;
            acc2 += v * d;
        }
    }
    r1[ty][tx] = acc1;
    r2[ty][tx] = acc2;
    __syncthreads();
    if (ty == 0 && c < channels) {
        float s1 = 0.0f, s2 = 0.0f;
#pragma unroll
        for (int r = 0; r < CS_ROWS; ++r) {
            s1 += r1[r][tx];
            s2 += r2[r][tx];
        }
        const long long split = blockIdx.y, splits = gridDim.y;
        sums[split * channels + c] = s1;
        sums[(splits + split) * channels + c] = s2;
    }
}

template <typename T>
__device__ __forceinline__ void channel_affine(const T* __restrict__ x, const T* __restrict__ a,
                                               long long m_total, int channels,
                                               const float* __restrict__ mean,
                                               const float* __restrict__ alpha,
                                               const float* __restrict__ beta,
                                               const float* __restrict__ gamma,
                                               T* __restrict__ out) {
    GRID_STRIDE_LOOP(i, m_total * channels) {
        const int c = (int)(i % channels);
        float v = (to_compute(x[i]) - mean[c]) * beta[c] + gamma[c];
        if (a) v += to_compute(a[i]) * alpha[c];
        out[i] = from_compute<T>(v);
    }
}

// channel_affine 16 bytes at a time, for channel counts that are multiples of the vector
// width and 16-byte aligned operands: the elements of one vector share a row.
template <typename T>
__device__ __forceinline__ void channel_affine_vec(const T* __restrict__ x,
                                                   const T* __restrict__ a, long long m_total,
                                                   int channels, const float* __restrict__ mean,
                                                   const float* __restrict__ alpha,
                                                   const float* __restrict__ beta,
                                                   const float* __restrict__ gamma,
                                                   T* __restrict__ out) {
    constexpr int V = 16 / sizeof(T);
    GRID_STRIDE_LOOP(t, m_total * channels / V) {
        const long long i = t * V;
        const int c = (int)(i % channels);
        const uint4 xu = *reinterpret_cast<const uint4*>(x + i);
        uint4 au = make_uint4(0, 0, 0, 0), ou;
        if (a) au = *reinterpret_cast<const uint4*>(a + i);
        const T* xv = reinterpret_cast<const T*>(&xu);
        const T* av = reinterpret_cast<const T*>(&au);
        T* ov = reinterpret_cast<T*>(&ou);
#pragma unroll
        for (int e = 0; e < V; ++e) {
            float v = (to_compute(xv[e]) - mean[c + e]) * beta[c + e] + gamma[c + e];
            if (a) v += to_compute(av[e]) * alpha[c + e];
            ov[e] = from_compute<T>(v);
        }
        *reinterpret_cast<uint4*>(out + i) = ou;
    }
}

#define BN_KERNELS(T, SUFFIX)                                                                 \
extern "C" __global__ void __launch_bounds__(CS_CH * CS_ROWS) channel_sums_##SUFFIX(          \
    const T* x, const T* a, long long m_total, int channels, const float* center,             \
    long long rows, float* sums) {                                                            \
    channel_sums<T>(x, a, m_total, channels, center, rows, sums);                             \
}                                                                                             \
extern "C" __global__ void channel_affine_##SUFFIX(                                           \
    const T* x, const T* a, long long m_total, int channels, const float* mean,               \
    const float* alpha, const float* beta, const float* gamma, T* out) {                      \
    channel_affine<T>(x, a, m_total, channels, mean, alpha, beta, gamma, out);                \
}                                                                                             \
extern "C" __global__ void channel_affine_vec_##SUFFIX(                                       \
    const T* x, const T* a, long long m_total, int channels, const float* mean,               \
    const float* alpha, const float* beta, const float* gamma, T* out) {                      \
    channel_affine_vec<T>(x, a, m_total, channels, mean, alpha, beta, gamma, out);            \
}
BN_KERNELS(float, f32)
BN_KERNELS(__half, f16)
BN_KERNELS(__nv_bfloat16, bf16)
