// ---------------------------------------------------------------------------------------
// Forward on Hopper's warpgroup tensor cores (wgmma; the attention module is built for
// sm_90a on compute capability 9.0). A block is WG_GROUPS warpgroups of 4 warps, each over
// 64 query rows as a whole block of flash_forward_tc is, and all of them share every K and
// V tile staged, which halves the tile traffic per query row. S = Q K^T and O += P V are
// each one chain of asynchronous m64nNk16 products that read K and V from shared memory
// themselves: no ldmatrix and no per-warp fragment loads. Q and P stay in registers as A
// fragments (wgmma's register A layout is mma.sync's, warp w of a warpgroup holding its
// rows 16w..16w+15), and the accumulators come back in mma.sync's layout too, so the
// online softmax (softmax_tile) and the epilogue are the mma.sync kernel's.
//
// K and V tiles are staged by cp.async in the 128-byte swizzled layout the descriptors
// name: the D features split into blocks of 64 (128 bytes); a block holds KEYS rows of
// 128 bytes, and 16-byte chunk c of row r sits at chunk c ^ (r % 8). K is read K-major
// (S's reduction runs along a row); V, whose reduction runs over keys, is read N-major.

// Keys per K/V tile: 64 at head dim 64 (two blocks fit per SM), 128 above (one block per SM
// anyway; S = Q K^T as m64n128k16 products).
#define WG_KEYS(D) ((D) <= 64 ? 64 : 128)
// Warpgroups per block, each over 64 query rows: they share every K and V tile staged.
#define WG_GROUPS 2
#define WG_ROWS (64 * WG_GROUPS)

// wgmma instructions exist in sm_90a code only; the host launches these kernels on
// compute capability 9.0 only.
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
#define WG_ASM(...) asm volatile(__VA_ARGS__)
#else
#define WG_ASM(...) __trap()
#endif

// Descriptor of a 128-byte swizzled operand at `tile`: leading and stride byte offsets as
// the wgmma matrix descriptor defines them for its major-ness.
__device__ __forceinline__ unsigned long long wg_desc(const void* tile, unsigned lead,
                                                      unsigned stride) {
    const unsigned addr = (unsigned)__cvta_generic_to_shared(tile);
    return (unsigned long long)((addr & 0x3FFFF) >> 4) |
           ((unsigned long long)((lead >> 4) & 0x3FFF) << 16) |
           ((unsigned long long)((stride >> 4) & 0x3FFF) << 32) | (1ull << 62);
}

// Orders register use around the asynchronous products: wg_fence before a chain (its A
// and accumulator registers are ready), wg_commit after it, wg_wait until every chain has
// finished.
__device__ __forceinline__ void wg_fence() { WG_ASM("wgmma.fence.sync.aligned;\n" ::: "memory"); }
__device__ __forceinline__ void wg_commit() {
    WG_ASM("wgmma.commit_group.sync.aligned;\n" ::: "memory");
}
__device__ __forceinline__ void wg_wait() {
    WG_ASM("wgmma.wait_group.sync.aligned 0;\n" ::: "memory");
}
// Tells the compiler the accumulators changed (behind its back, until wg_wait) so it
// neither reads them early nor keeps stale copies.
template <int NT>
__device__ __forceinline__ void wg_hold(float (*d)[4]) {
#pragma unroll
    for (int n = 0; n < NT; ++n)
#pragma unroll
        for (int e = 0; e < 4; ++e) asm volatile("" : "+f"(d[n][e])::"memory");
}
// The same for A fragments, which must stay untouched until the products reading them end.
template <int KT>
__device__ __forceinline__ void wg_hold(unsigned (*a)[4]) {
#pragma unroll
    for (int n = 0; n < KT; ++n)
#pragma unroll
        for (int e = 0; e < 4; ++e) asm volatile("" : "+r"(a[n][e])::"memory");
}

#define WG_D4(i) "+f"(d[i][0]), "+f"(d[i][1]), "+f"(d[i][2]), "+f"(d[i][3])
#define WG_D16(i) WG_D4(i), WG_D4(i + 1), WG_D4(i + 2), WG_D4(i + 3)
#define WG_D32(i) WG_D16(i), WG_D16(i + 4)
#define WG_D64(i) WG_D32(i), WG_D32(i + 8)
#define WG_REGS32 "{" \
    "%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, " \
    "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31}"
#define WG_REGS64 "{" \
    "%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, " \
    "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, " \
    "%32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, " \
    "%48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63}"
// The operands after N / 2 accumulators: A's four registers and B's descriptor, then the
// flag that keeps (1) or drops (0) the accumulators' old values.
#define WG_AB32 "{%32, %33, %34, %35}, %36"
#define WG_KEEP32 "%37"
#define WG_AB64 "{%64, %65, %66, %67}, %68"
#define WG_KEEP64 "%69"
// d (64 x N, f32) = A (64 x 16, registers a) B (16 x N, descriptor) + (accumulate ? d : 0);
// TRANS "1" reads B N-major.
#define WG_MMA(N, PTX, TRANS, REGS, ACC, AB, KEEP)                                             \
    WG_ASM("{\n.reg .pred p;\nsetp.ne.b32 p, " KEEP ", 0;\n"                                  \
           "wgmma.mma_async.sync.aligned.m64n" #N "k16.f32." PTX "." PTX " " REGS ", " AB      \
           ", p, 1, 1, " TRANS ";\n}\n"                                                        \
           : ACC                                                                               \
           : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(desc), "r"(accumulate))

template <typename T> struct IsBf16 { static constexpr bool value = false; };
template <> struct IsBf16<__nv_bfloat16> { static constexpr bool value = true; };

// One m64nNk16 product on the warpgroup's tensor cores (N = 64 or 128).
template <typename T, int N, bool TRANS_B>
__device__ __forceinline__ void wg_mma(float (*d)[4], const unsigned* a, unsigned long long desc,
                                       int accumulate) {
    static_assert(N == 64 || N == 128, "wgmma tiles of 64 or 128 columns");
    if constexpr (N == 64 && IsBf16<T>::value) {
        if constexpr (TRANS_B) WG_MMA(64, "bf16", "1", WG_REGS32, WG_D32(0), WG_AB32, WG_KEEP32);
        else WG_MMA(64, "bf16", "0", WG_REGS32, WG_D32(0), WG_AB32, WG_KEEP32);
    } else if constexpr (N == 64) {
        if constexpr (TRANS_B) WG_MMA(64, "f16", "1", WG_REGS32, WG_D32(0), WG_AB32, WG_KEEP32);
        else WG_MMA(64, "f16", "0", WG_REGS32, WG_D32(0), WG_AB32, WG_KEEP32);
    } else if constexpr (IsBf16<T>::value) {
        if constexpr (TRANS_B) WG_MMA(128, "bf16", "1", WG_REGS64, WG_D64(0), WG_AB64, WG_KEEP64);
        else WG_MMA(128, "bf16", "0", WG_REGS64, WG_D64(0), WG_AB64, WG_KEEP64);
    } else {
        if constexpr (TRANS_B) WG_MMA(128, "f16", "1", WG_REGS64, WG_D64(0), WG_AB64, WG_KEEP64);
        else WG_MMA(128, "f16", "0", WG_REGS64, WG_D64(0), WG_AB64, WG_KEEP64);
    }
}

// Starts copying rows t0 .. t0 + KEYS - 1 of a [*, D] matrix (rows `rs` apart) into a
// swizzled tile (layout above), zeros from `end` on; thread `first` of `step` copiers.
template <typename T, int D, int KEYS>
__device__ __forceinline__ void stage_swizzled(const T* src, long long rs, int t0, int end,
                                               unsigned char* tile, int first, int step) {
    constexpr int CHUNKS = D / 8;  // 16-byte chunks per row
    for (int idx = first; idx < KEYS * CHUNKS; idx += step) {
        const int r = idx / CHUNKS, c = idx % CHUNKS, j = t0 + r;
        unsigned char* dst = tile + (c / 8) * (KEYS * 128) + r * 128 + ((c % 8) ^ (r % 8)) * 16;
        cp_async16(dst, j < end ? src + (long long)j * rs + c * 8 : src, j < end);
    }
}

// Issues S = Q K^T for a warpgroup's 64 rows and a tile's KEYS keys (not awaited): K
// read K-major, 16 features (32 bytes) per step within a 128-byte block, 8-row groups 1024
// bytes apart.
template <typename T, int D, int KEYS>
__device__ __forceinline__ void wg_scores(const unsigned (*qa)[4], const unsigned char* kt,
                                          float (*s)[4]) {
    wg_fence();
#pragma unroll
    for (int ks = 0; ks < D / 16; ++ks)
        wg_mma<T, KEYS, false>(
            s, qa[ks], wg_desc(kt + (ks / 4) * (KEYS * 128) + (ks % 4) * 32, 16, 1024), ks > 0);
    wg_commit();
}

// Issues O += P V (not awaited): P's A fragments pa, V read N-major, 16 keys (2048 bytes)
// per step, 64-feature blocks KEYS * 128 bytes apart, 8-key groups 1024 apart.
template <typename T, int D, int KEYS>
__device__ __forceinline__ void wg_values(const unsigned (*pa)[4], const unsigned char* vt,
                                          float (*o)[4]) {
    wg_fence();
#pragma unroll
    for (int kk = 0; kk < KEYS / 16; ++kk)
        wg_mma<T, D, true>(o, pa[kk], wg_desc(vt + kk * 2048, KEYS * 128, 1024), 1);
    wg_commit();
}

template <typename T, int D, int KEYS>
__device__ void flash_forward_wg(const T* q, Heads qs_, const T* k, Heads ks_, const T* v,
                                 Heads vs_, T* out, Heads os_, float* lse, int heads,
                                 int kv_heads, int tq, int tk, int causal, int window,
                                 float scale) {
    static_assert(D % 64 == 0, "head dims of whole 128-byte blocks");
    constexpr int NT = KEYS / 8, DT = D / 8, KT = KEYS / 16;
    constexpr int TILE = KEYS * D * (int)sizeof(T);  // bytes of one K or V tile
    extern __shared__ __align__(16) unsigned char wg_shared[];
    const unsigned raw = (unsigned)__cvta_generic_to_shared(wg_shared);
    unsigned char* tiles = wg_shared + ((1024 - (raw & 1023)) & 1023);
    ForwardBlock<T, D> f;
    forward_block(f, q, qs_, k, ks_, v, vs_, WG_ROWS, heads, kv_heads, tq, tk, causal, window,
                  KEYS);
    const TileRows& r = f.r;
    float o[DT][4];
#pragma unroll
    for (int n = 0; n < DT; ++n) o[n][0] = o[n][1] = o[n][2] = o[n][3] = 0.0f;
    RowSoftmax st = {-INFINITY, -INFINITY, 0.0f, 0.0f};
    const float sl = scale * LOG2E;
    const int count = r.bhi > r.blo ? (r.bhi - r.blo + KEYS - 1) / KEYS : 0;
    float s[NT][4];
    unsigned pa[KT][4];
    auto stage = [&](int it, int buf) {
        const int t0 = r.blo + it * KEYS;
        stage_swizzled<T, D, KEYS>(f.kb, ks_.r, t0, tk, tiles + buf * 2 * TILE, threadIdx.x,
                                   blockDim.x);
        stage_swizzled<T, D, KEYS>(f.vb, vs_.r, t0, tk, tiles + buf * 2 * TILE + TILE,
                                   threadIdx.x, blockDim.x);
        cp_async_commit();
    };
    pipelined_tiles<2, true>(count, stage, [&](int it, int buf) {
        const unsigned char* kt = tiles + buf * 2 * TILE;
        wg_scores<T, D, KEYS>(f.qa, kt, s);
        wg_wait();
        wg_hold<NT>(s);
        rescale_rows<DT>(o, softmax_tile<NT>(s, r.blo + it * KEYS, r, sl, st));
#pragma unroll
        for (int kk = 0; kk < KT; ++kk) a_fragment_of<T>(s + 2 * kk, pa[kk]);
        wg_values<T, D, KEYS>(pa, kt + TILE, o);
        wg_wait();
        wg_hold<DT>(o);
        wg_hold<KT>(pa);
    });
    store_forward_rows<T, DT>(o, st, r, out + head_at(os_, f.b, f.h), os_.r,
                              lse + (long long)f.bh * tq, tq);
}

#define FLASH_WG(SUFFIX, T, D)                                                                \
extern "C" __global__ void __launch_bounds__(128 * WG_GROUPS, D <= 64 ? 2 : 1)             \
        flash_forward_wg_d##D##_##SUFFIX(FLASH_ARGS(T)) {                                      \
    flash_forward_wg<T, D, WG_KEYS(D)>(q, qs, k, ks, v, vs, out, os, lse, heads, kv_heads, tq,  \
                                       tk, causal, window, scale);                              \
}
FLASH_WG(f16, __half, 64)
FLASH_WG(f16, __half, 128)
FLASH_WG(bf16, __nv_bfloat16, 64)
FLASH_WG(bf16, __nv_bfloat16, 128)
