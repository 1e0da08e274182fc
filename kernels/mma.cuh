// Tensor-core building blocks shared by the attention and convolution kernels: the
// m16n8k16 mma.sync of f16/bf16 with f32 accumulation, ldmatrix, and cp.async copies.

template <typename T> struct MmaType;
// pack: two floats rounded into one 32-bit register; mma: D += A B for one m16n8k16 tile.
#if __CUDA_ARCH__ >= 800
#define MMA_SYNC(PTX)                                                                          \
        asm volatile("mma.sync.aligned.m16n8k16.row.col.f32." PTX "." PTX ".f32 "              \
                     "{%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"               \
                     : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])                        \
                     : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
#else
// The host launches tensor-core kernels on sm_80 and later only.
#define MMA_SYNC(PTX) __trap();
#endif
#define MMA_TYPE(T, T2, TO_PAIR, PTX)                                                          \
template <> struct MmaType<T> {                                                                \
    __device__ static unsigned pack(float lo, float hi) {                                      \
        T2 h = TO_PAIR(lo, hi);                                                                \
        return *reinterpret_cast<unsigned*>(&h);                                               \
    }                                                                                          \
    __device__ static void mma(float* d, const unsigned* a, const unsigned* b) {               \
        MMA_SYNC(PTX)                                                                          \
    }                                                                                          \
};
MMA_TYPE(__half, __half2, __floats2half2_rn, "f16")
MMA_TYPE(__nv_bfloat16, __nv_bfloat162, __floats2bfloat162_rn, "bf16")

// ldmatrix: 8x8 tiles of 16-bit elements from shared memory, lane l giving the address of
// row l % 8 of tile l / 8. Plain, lane (g, t) receives elements (g, 2t) and (g, 2t + 1) of
// each tile; transposed, elements (2t, g) and (2t + 1, g).
#if __CUDA_ARCH__ >= 800
#define LDSM(SUFFIX, OUTS, ...)                                                                \
    asm volatile("ldmatrix.sync.aligned.m8n8." SUFFIX ".shared.b16 " OUTS ";\n"               \
                 : __VA_ARGS__ : "r"((unsigned)__cvta_generic_to_shared(p)));
#else
#define LDSM(SUFFIX, OUTS, ...) __trap();
#endif
__device__ __forceinline__ void ldsm_x4(const void* p, unsigned* r) {
    LDSM("x4", "{%0,%1,%2,%3}, [%4]", "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]))
}
__device__ __forceinline__ void ldsm_x2(const void* p, unsigned* r) {
    LDSM("x2", "{%0,%1}, [%2]", "=r"(r[0]), "=r"(r[1]))
}
__device__ __forceinline__ void ldsm_x4_trans(const void* p, unsigned* r) {
    LDSM("x4.trans", "{%0,%1,%2,%3}, [%4]", "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]))
}

// acc (16 x 8 per n-tile) += A (16 x D, fragments a) times B, where B[k][n] = M[n0 + n][k]
// for the NT 8-row groups of a row-major shared tile M (pitch P, rows 16-byte aligned):
// S = Q K^T and its relatives. One ldmatrix gives the fragments of two k-steps.
template <typename T, int D, int NT, int P>
__device__ __forceinline__ void mma_rows_tile(const unsigned (*a)[4], const T* m, float (*acc)[4],
                                              bool zero) {
    const int lane = threadIdx.x % 32;
#pragma unroll
    for (int n = 0; n < NT; ++n) {
        if (zero) acc[n][0] = acc[n][1] = acc[n][2] = acc[n][3] = 0.0f;
        const T* row = m + (n * 8 + (lane & 7)) * P + (lane >> 3) * 8;
#pragma unroll
        for (int kk = 0; kk + 1 < D / 16; kk += 2) {
            unsigned bf[4];
            ldsm_x4(row + kk * 16, bf);
            MmaType<T>::mma(acc[n], a[kk], bf);
            MmaType<T>::mma(acc[n], a[kk + 1], bf + 2);
        }
        if ((D / 16) % 2 == 1) {
            unsigned bf[2];
            ldsm_x2(m + (n * 8 + (lane & 7)) * P + (D / 16 - 1) * 16 + ((lane >> 3) & 1) * 8, bf);
            MmaType<T>::mma(acc[n], a[D / 16 - 1], bf);
        }
    }
}

// The A fragment (16 x 16, rounded to T) of two adjacent n-tiles of S-style accumulators:
// how P, dS and their relatives feed the next product.
template <typename T>
__device__ __forceinline__ void a_fragment_of(const float (*x)[4], unsigned* a) {
    a[0] = MmaType<T>::pack(x[0][0], x[0][1]);
    a[1] = MmaType<T>::pack(x[0][2], x[0][3]);
    a[2] = MmaType<T>::pack(x[1][0], x[1][1]);
    a[3] = MmaType<T>::pack(x[1][2], x[1][3]);
}

// out (16 x D) += X (16 x K16 * 16, from S-style accumulators x[2 * K16][4], rounded to
// A fragments one k-step at a time) times B, where B[k][n] = M[k][n] of a row-major shared
// tile M (pitch P): O += P V and the gradients built like it.
template <typename T, int D, int K16, int P>
__device__ __forceinline__ void mma_cols_tile(const float (*x)[4], const T* m, float (*out)[4]) {
    const int lane = threadIdx.x % 32;
    const T* base = m + (((lane >> 3) & 1) * 8 + (lane & 7)) * P + (lane >> 4) * 8;
#pragma unroll
    for (int kk = 0; kk < K16; ++kk) {
        unsigned pa[4];
        a_fragment_of<T>(x + 2 * kk, pa);
#pragma unroll
        for (int n = 0; n < D / 8; n += 2) {
            unsigned bf[4];
            ldsm_x4_trans(base + kk * 16 * P + n * 8, bf);
            MmaType<T>::mma(out[n], pa, bf);
            MmaType<T>::mma(out[n + 1], pa, bf + 2);
        }
    }
}

// 16 bytes from global to shared memory without passing through registers (cp.async);
// zeros instead when `valid` is false (4-byte copies likewise). Groups of copies are closed
// by cp_async_commit and awaited by cp_async_wait.
__device__ __forceinline__ void cp_async16(void* smem, const void* gmem, bool valid) {
#if __CUDA_ARCH__ >= 800
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(
                     (unsigned)__cvta_generic_to_shared(smem)),
                 "l"(gmem), "r"(valid ? 16 : 0));
#else
    __trap();
#endif
}
__device__ __forceinline__ void cp_async4(void* smem, const void* gmem, bool valid) {
#if __CUDA_ARCH__ >= 800
    asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;\n" ::"r"(
                     (unsigned)__cvta_generic_to_shared(smem)),
                 "l"(gmem), "r"(valid ? 4 : 0));
#else
    __trap();
#endif
}
// Makes this thread's shared-memory writes visible to the async proxy (wgmma operands).
__device__ __forceinline__ void fence_proxy_async() {
#if __CUDA_ARCH__ >= 900
    asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
#endif
}
// Closes the group of copies issued since the last commit.
__device__ __forceinline__ void cp_async_commit() {
#if __CUDA_ARCH__ >= 800
    asm volatile("cp.async.commit_group;\n" ::: "memory");
#endif
}
// Waits for every committed group but the newest `keep_one` (0 or 1) to land.
__device__ __forceinline__ void cp_async_wait(bool keep_one) {
#if __CUDA_ARCH__ >= 800
    if (keep_one)
        asm volatile("cp.async.wait_group 1;\n" ::: "memory");
    else
        asm volatile("cp.async.wait_group 0;\n" ::: "memory");
#endif
}

// Waits until at most N of the committed groups are still in flight.
template <int N>
__device__ __forceinline__ void cp_async_wait_group() {
#if __CUDA_ARCH__ >= 800
    asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
#endif
}
