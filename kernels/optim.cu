// Fused AdamW update of one f32 parameter with its f32 moments, in place.
extern "C" __global__ void adamw_f32(float* p, const float* g, float* m, float* v, long long n,
                                     float b1, float b2, float eps, float decay, float step_size,
                                     float bc2_sqrt) {
    GRID_STRIDE_LOOP(i, n) {
        float gi = g[i];
        float mi = b1 * m[i] + (1.0f - b1) * gi;
        float vi = b2 * v[i] + (1.0f - b2) * gi * gi;
        m[i] = mi;
        v[i] = vi;
        p[i] = p[i] * decay - step_size * mi / (sqrtf(vi) / bc2_sqrt + eps);
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
