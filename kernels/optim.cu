// Multi-tensor AdamW: one launch updates up to ADAMW_GROUP_TENSORS parameters, block b
// taking chunk block_chunk[b] (ADAMW_CHUNK elements) of tensor block_tensor[b]. The table
// travels as a kernel parameter, so nothing is copied to the device per step.
#define ADAMW_GROUP_TENSORS 24
#define ADAMW_GROUP_BLOCKS 320
#define ADAMW_CHUNK 65536
struct AdamWGroup {
    float* p[ADAMW_GROUP_TENSORS];
    const float* g[ADAMW_GROUP_TENSORS];
    float* m[ADAMW_GROUP_TENSORS];
    float* v[ADAMW_GROUP_TENSORS];
    long long n[ADAMW_GROUP_TENSORS];
    float decay[ADAMW_GROUP_TENSORS];
    unsigned char block_tensor[ADAMW_GROUP_BLOCKS];
    int block_chunk[ADAMW_GROUP_BLOCKS];
};

__device__ __forceinline__ void adamw_one(float& p, float g, float& m, float& v, float b1, float b2,
                                          float eps, float decay, float step_size, float bc2_sqrt) {
    m = b1 * m + (1.0f - b1) * g;
    v = b2 * v + (1.0f - b2) * g * g;
    p = p * decay - step_size * m / (sqrtf(v) / bc2_sqrt + eps);
}

extern "C" __global__ void adamw_multi_f32(AdamWGroup grp, float b1, float b2, float eps,
                                           float step_size, float bc2_sqrt) {
    const int t = grp.block_tensor[blockIdx.x];
    const long long start = (long long)grp.block_chunk[blockIdx.x] * ADAMW_CHUNK;
    const long long n = grp.n[t];
    const long long end = start + ADAMW_CHUNK < n ? start + ADAMW_CHUNK : n;
    float* p = grp.p[t];
    const float* g = grp.g[t];
    float* m = grp.m[t];
    float* v = grp.v[t];
    const float decay = grp.decay[t];
    const bool aligned = (((unsigned long long)p | (unsigned long long)g | (unsigned long long)m |
                           (unsigned long long)v) & 15) == 0;
    long long i = start + 4LL * threadIdx.x;
    if (aligned) {
        for (; i + 3 < end; i += 4LL * blockDim.x) {
            float4 pv = *reinterpret_cast<float4*>(p + i);
            const float4 gv = *reinterpret_cast<const float4*>(g + i);
            float4 mv = *reinterpret_cast<float4*>(m + i);
            float4 vv = *reinterpret_cast<float4*>(v + i);
            adamw_one(pv.x, gv.x, mv.x, vv.x, b1, b2, eps, decay, step_size, bc2_sqrt);
            adamw_one(pv.y, gv.y, mv.y, vv.y, b1, b2, eps, decay, step_size, bc2_sqrt);
            adamw_one(pv.z, gv.z, mv.z, vv.z, b1, b2, eps, decay, step_size, bc2_sqrt);
            adamw_one(pv.w, gv.w, mv.w, vv.w, b1, b2, eps, decay, step_size, bc2_sqrt);
            *reinterpret_cast<float4*>(p + i) = pv;
            *reinterpret_cast<float4*>(m + i) = mv;
            *reinterpret_cast<float4*>(v + i) = vv;
        }
        // The last partial group of four, element by element.
        for (long long j = i; j < end && j < i + 4; ++j)
            adamw_one(p[j], g[j], m[j], v[j], b1, b2, eps, decay, step_size, bc2_sqrt);
    } else {
        for (long long j = start + threadIdx.x; j < end; j += blockDim.x)
            adamw_one(p[j], g[j], m[j], v[j], b1, b2, eps, decay, step_size, bc2_sqrt);
    }
}

// Sum of squares of a float buffer into one f64 slot per launch (used for clipping).
#define SUMSQ(SUFFIX, T)                                                                       \
extern "C" __global__ void sumsq_##SUFFIX(const T* x, long long n, double* out) {              \
    double s = 0.0;                                                                            \
    GRID_STRIDE_LOOP(i, n) { double v = (double)to_compute(x[i]); s += v * v; }                \
    for (int o = 16; o > 0; o >>= 1) s += __shfl_down_sync(0xffffffffu, s, o);                 \
    if (threadIdx.x % 32 == 0) atomicAdd(out, s);                                              \
}
SUMSQ(f32, float)
SUMSQ(f16, __half)
SUMSQ(bf16, __nv_bfloat16)
