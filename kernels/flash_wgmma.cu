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

// The descriptor of the same operand `bytes` further on (a multiple of 16): shared
// addresses stay below 2^18, so the start field never carries into the others. Loops add
// their stage's offset to a descriptor made once rather than rebuilding it each tile.
__device__ __forceinline__ unsigned long long wg_desc_at(unsigned long long d, unsigned bytes) {
    // One 32-bit add on the low word (a 64-bit add costs the carry and more moves).
    unsigned long long r;
    asm("mov.b64 %0, {%1, %2};"
        : "=l"(r)
        : "r"((unsigned)d + (bytes >> 4)), "r"((unsigned)(d >> 32)));
    return r;
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
// Waits for every chain but the one committed last.
__device__ __forceinline__ void wg_wait_older() {
    WG_ASM("wgmma.wait_group.sync.aligned 1;\n" ::: "memory");
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

// d (64 x N, f32) = A (64 x 16) B (16 x N) + (accumulate ? d : 0), both operands read
// K-major from shared memory through their descriptors.
#define WG_MMA_SS(N, PTX, REGS, ACC, A, B, KEEP)                                              \
    WG_ASM("{\n.reg .pred p;\nsetp.ne.b32 p, " KEEP ", 0;\n"                                  \
           "wgmma.mma_async.sync.aligned.m64n" #N "k16.f32." PTX "." PTX " " REGS ", " A ", " B \
           ", p, 1, 1, 0, 0;\n}\n"                                                             \
           : ACC                                                                               \
           : "l"(da), "l"(db), "r"(accumulate))

template <typename T, int N = 64>
__device__ __forceinline__ void wg_mma_ss(float (*d)[4], unsigned long long da,
                                          unsigned long long db, int accumulate) {
    static_assert(N == 64 || N == 128, "wgmma tiles of 64 or 128 columns");
    if constexpr (N == 64 && IsBf16<T>::value)
        WG_MMA_SS(64, "bf16", WG_REGS32, WG_D32(0), "%32", "%33", "%34");
    else if constexpr (N == 64)
        WG_MMA_SS(64, "f16", WG_REGS32, WG_D32(0), "%32", "%33", "%34");
    else if constexpr (IsBf16<T>::value)
        WG_MMA_SS(128, "bf16", WG_REGS64, WG_D64(0), "%64", "%65", "%66");
    else
        WG_MMA_SS(128, "f16", WG_REGS64, WG_D64(0), "%64", "%65", "%66");
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
__device__ __forceinline__ void wg_values(const unsigned (*pa)[4], unsigned long long vd,
                                          float (*o)[4]) {
    wg_fence();
#pragma unroll
    for (int kk = 0; kk < KEYS / 16; ++kk)
        wg_mma<T, D, true>(o, pa[kk], wg_desc_at(vd, kk * 2048), 1);
    wg_commit();
}
// The same with V's tile at vt.
template <typename T, int D, int KEYS>
__device__ __forceinline__ void wg_values(const unsigned (*pa)[4], const unsigned char* vt,
                                          float (*o)[4]) {
    wg_values<T, D, KEYS>(pa, wg_desc(vt, KEYS * 128, 1024), o);
}

// Keys [x, y) that some row of the warpgroup's 64 query rows from `first` sees (none when
// every row is past the end); a tile outside them is all masked for the warpgroup.
__device__ __forceinline__ int2 wg_key_span(int first, int tq, int tk, int causal,
                                            int window) {
    if (first >= tq) return make_int2(0, 0);
    int lo, hi, unused;
    flash_keys(first, tq, tk, causal, window, &lo, &unused);
    flash_keys(min(tq, first + 64) - 1, tq, tk, causal, window, &unused, &hi);
    return make_int2(lo, hi);
}

// Whether the `width` keys (or queries) from t0 all lie outside span: none of a
// warpgroup's rows sees them.
__device__ __forceinline__ bool tile_unseen(int t0, int width, int2 span) {
    return t0 >= span.y || t0 + width <= span.x;
}

// v as lane 0 of the warp has it, for values the same across the warp (a warpgroup's index
// or first row): ptxas then knows them to be uniform and keeps what follows from them (the
// loop over tiles, the ring's stage and the K, V and Q descriptors) in uniform registers,
// so no R2UR moves sit between a tile's barrier and its first wgmma (49 instructions there
// in the head dim 64 forward before, 16 after).
__device__ __forceinline__ int warp_uniform(int v) { return __shfl_sync(0xffffffff, v, 0); }

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
    // A warpgroup skips the tiles none of its rows sees (the barriers are the block's);
    // blocks start at multiples of 64 rows, so r0 - r0 % 64 is its first row.
    const int2 span = wg_key_span(warp_uniform(r.r0 - r.r0 % 64), tq, tk, causal, window);
    pipelined_tiles<2, true>(count, stage, [&](int it, int buf) {
        const int t0 = r.blo + it * KEYS;
        if (tile_unseen(t0, KEYS, span)) return;
        const unsigned char* kt = tiles + buf * 2 * TILE;
        wg_scores<T, D, KEYS>(f.qa, kt, s);
        wg_wait();
        wg_hold<NT>(s);
        rescale_rows<DT>(o, softmax_tile<NT>(s, t0, r, sl, st));
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

// ---------------------------------------------------------------------------------------
// Forward with TMA copies and a producer. The two consumer warpgroups are the forward's
// above (with Q in shared memory), but no barrier of the whole block paces them: one
// thread of the producer copies each K and V tile with the Tensor Memory Accelerator
// (cp.async.bulk.tensor, written in the same 128-byte swizzled layout) into a ring of
// TMA_STAGES buffers, and an mbarrier per buffer says when a tile has landed ("full", by
// the bytes the copies complete) and when both consumers are done with it ("empty", an
// arrival per consumer warp). At head dim 128 the producer warpgroup gives up most of its
// registers to the consumers (setmaxnreg); at 64 the producer is one warp.

#define TMA_STAGES 3

// A CUtensorMap (cuTensorMapEncodeTiled), passed by value as a __grid_constant__ parameter.
struct __align__(64) TmaMap {
    unsigned long long v[16];
};

__device__ __forceinline__ void mbar_init(unsigned bar, unsigned count) {
    WG_ASM("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(bar), "r"(count) : "memory");
}
// The producer's arrival on a "full" barrier, announcing the bytes its copies will bring.
__device__ __forceinline__ void mbar_expect(unsigned bar, unsigned bytes) {
    WG_ASM("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n" ::"r"(bar), "r"(bytes)
           : "memory");
}
__device__ __forceinline__ void mbar_arrive(unsigned bar) {
    WG_ASM("mbarrier.arrive.shared::cta.b64 _, [%0];\n" ::"r"(bar) : "memory");
}
// Waits until the barrier's phase of the given parity has completed.
__device__ __forceinline__ void mbar_wait(unsigned bar, unsigned parity) {
    WG_ASM("{\n.reg .pred done;\nLAB_WAIT:\n"
           "mbarrier.try_wait.parity.shared::cta.b64 done, [%0], %1;\n"
           "@!done bra LAB_WAIT;\n}\n" ::"r"(bar),
           "r"(parity)
           : "memory");
}
// Copies the box at (c0, c1, c2, c3) of a 4-d tensor map into shared memory at dst,
// completing its bytes on barrier bar.
__device__ __forceinline__ void tma_load(unsigned dst, const TmaMap* map, int c0, int c1,
                                         int c2, int c3, unsigned bar) {
    WG_ASM("cp.async.bulk.tensor.4d.shared::cluster.global.tile.mbarrier::complete_tx::bytes"
           " [%0], [%1, {%2, %3, %4, %5}], [%6];\n" ::"r"(dst),
           "l"((unsigned long long)map), "r"(c0), "r"(c1), "r"(c2), "r"(c3), "r"(bar)
           : "memory");
}

// Copies the box at c0 of a 1-d tensor map into shared memory at dst, completing its bytes
// on barrier bar.
__device__ __forceinline__ void tma_load_1d(unsigned dst, const TmaMap* map, int c0,
                                            unsigned bar) {
    WG_ASM("cp.async.bulk.tensor.1d.shared::cluster.global.tile.mbarrier::complete_tx::bytes"
           " [%0], [%1, {%2}], [%3];\n" ::"r"(dst),
           "l"((unsigned long long)map), "r"(c0), "r"(bar)
           : "memory");
}

// Sets up the ring's mbarriers (TMA_STAGES "full" at `full`, each awaiting `arrivals`, as
// many "empty" after them); the whole block passes here before any copy.
__device__ __forceinline__ void tma_ring_init(unsigned full, unsigned arrivals = 1) {
    if (threadIdx.x == 0) {
        for (int s = 0; s < TMA_STAGES; ++s) {
            mbar_init(full + 8 * s, arrivals);
            mbar_init(full + 8 * (TMA_STAGES + s), 4 * WG_GROUPS);
        }
        WG_ASM("fence.mbarrier_init.release.cluster;\n" ::: "memory");
    }
    __syncthreads();
}

// The producer's wait before refilling buffer `it % TMA_STAGES` for tile `it`: both
// consumer warpgroups have released the tile TMA_STAGES before.
__device__ __forceinline__ void tma_ring_await_empty(unsigned full, int it) {
    if (it >= TMA_STAGES)
        mbar_wait(full + 8 * (TMA_STAGES + it % TMA_STAGES), ((it / TMA_STAGES) + 1) & 1);
}

// The producer's loop: copies `count` pairs of tiles of ROWS rows (one from each map) into
// the ring at tiles_at, tile `it` from row where(it).x of head where(it).y of batch b,
// each buffer once both consumer warpgroups have released it; extra(it, stage, barrier)
// issues copies of `extra_bytes` more that land on the same barrier.
template <int D, int ROWS, int TILE, typename Where, typename Extra>
__device__ __forceinline__ void tma_ring_fill(unsigned tiles_at, unsigned full,
                                              const TmaMap* amap, const TmaMap* bmap,
                                              int count, int b, Where where, int extra_bytes,
                                              Extra extra) {
    for (int it = 0; it < count; ++it) {
        const int s = it % TMA_STAGES;
        const int2 at_row = where(it);
        tma_ring_await_empty(full, it);
        mbar_expect(full + 8 * s, 2 * TILE + extra_bytes);
        extra(it, s, full + 8 * s);
        const unsigned at = tiles_at + s * 2 * TILE;
#pragma unroll
        for (int blk = 0; blk < D / 64; ++blk) {
            tma_load(at + blk * ROWS * 128, amap, blk * 64, at_row.x, at_row.y, b, full + 8 * s);
            tma_load(at + TILE + blk * ROWS * 128, bmap, blk * 64, at_row.x, at_row.y, b,
                     full + 8 * s);
        }
    }
}

// A consumer's wait for tile `it` to land in its buffer.
__device__ __forceinline__ void tma_ring_await_full(unsigned full, int it) {
    mbar_wait(full + 8 * (it % TMA_STAGES), (it / TMA_STAGES) & 1);
}

// A consumer warp is done with tile `it`'s buffer.
__device__ __forceinline__ void tma_ring_release(unsigned full, int it) {
    __syncwarp();
    if (threadIdx.x % 32 == 0) mbar_arrive(full + 8 * (TMA_STAGES + it % TMA_STAGES));
}

template <typename T, int D, int KEYS, int PRODUCERS>
__device__ void flash_forward_tma(const T* q, Heads qs_, const T* k, Heads ks_, const T* v,
                                  Heads vs_, T* out, Heads os_, float* lse, int heads,
                                  int kv_heads, int tq, int tk, int causal, int window,
                                  float scale, const TmaMap* kmap, const TmaMap* vmap) {
    static_assert(D % 64 == 0, "head dims of whole 128-byte blocks");
    constexpr int NT = KEYS / 8, DT = D / 8, KT = KEYS / 16;
    constexpr int TILE = KEYS * D * (int)sizeof(T);  // bytes of one K or V tile
    // Q waits in shared memory for S = Q K^T rather than in registers: at head dim 64 two
    // blocks share an SM and their consumers have no registers to spare; at 128 the
    // registers hold a second tile's scores instead (OVERLAP).
    constexpr int Q_BYTES = WG_ROWS * D * (int)sizeof(T);
    // At head dim 128 a tile's S = Q K^T runs on the tensor cores while the previous tile's
    // O += P V is issued behind it, and the softmax of the new scores overlaps that product.
    constexpr bool OVERLAP = D == 128;
    extern __shared__ __align__(16) unsigned char wg_shared[];
    const unsigned raw = (unsigned)__cvta_generic_to_shared(wg_shared);
    unsigned char* tiles = wg_shared + ((1024 - (raw & 1023)) & 1023);
    unsigned char* q_tile = tiles + TMA_STAGES * 2 * TILE;  // [WG_GROUPS][D / 64][64][64]
    const unsigned tiles_at = (unsigned)__cvta_generic_to_shared(tiles);
    const unsigned full = tiles_at + TMA_STAGES * 2 * TILE + Q_BYTES;
    tma_ring_init(full);
    if (threadIdx.x >= 128 * WG_GROUPS) {
        if constexpr (PRODUCERS == 128) WG_ASM("setmaxnreg.dec.sync.aligned.u32 24;\n" ::: "memory");
        if (threadIdx.x != 128 * WG_GROUPS) return;
        const BlockPlace p = block_place(WG_ROWS, tq, causal);
        const int b = p.head / heads, grp = (p.head % heads) / (heads / kv_heads);
        const TileRows r =
            tile_rows(p.last_first * WG_ROWS, WG_ROWS, tq, tk, causal, window,
                      KEYS);
        const int count = r.bhi > r.blo ? (r.bhi - r.blo + KEYS - 1) / KEYS : 0;
        tma_ring_fill<D, KEYS, TILE>(tiles_at, full, kmap, vmap, count, b, [&](int it) {
            return make_int2(r.blo + it * KEYS, grp);
        }, 0, [](int, int, unsigned) {});
        return;
    }
    if constexpr (PRODUCERS == 128) WG_ASM("setmaxnreg.inc.sync.aligned.u32 240;\n" ::: "memory");
    const BlockPlace p = block_place(WG_ROWS, tq, causal);
    const int bh = p.head, b = bh / heads, h = bh % heads;
    const int wg = warp_uniform(threadIdx.x / 128);
    const int i0 = p.last_first * WG_ROWS;
    const TileRows r = tile_rows(i0, WG_ROWS, tq, tk, causal, window, KEYS);
    // Each consumer warpgroup stages its own 64 rows and waits for them alone.
    unsigned char* my_q = q_tile + wg * 64 * D * (int)sizeof(T);
    stage_swizzled<T, D, 64>(q + head_at(qs_, b, h), qs_.r, i0 + wg * 64, tq, my_q,
                             threadIdx.x % 128, 128);
    cp_async_commit();
    cp_async_wait(false);
    fence_proxy_async();
    if (wg == 0) asm volatile("bar.sync 1, 128;\n" ::: "memory");
    else asm volatile("bar.sync 2, 128;\n" ::: "memory");
    float o[DT][4];
#pragma unroll
    for (int n = 0; n < DT; ++n) o[n][0] = o[n][1] = o[n][2] = o[n][3] = 0.0f;
    RowSoftmax st = {-INFINITY, -INFINITY, 0.0f, 0.0f};
    const float sl = scale * LOG2E;
    const int count = r.bhi > r.blo ? (r.bhi - r.blo + KEYS - 1) / KEYS : 0;
    float s[NT][4];
    unsigned pa[KT][4];
    // Descriptors of Q and of the first buffer's K and V, offset per tile below.
    const unsigned long long qd = wg_desc(my_q, 16, 1024), kd = wg_desc(tiles, 16, 1024);
    const unsigned long long vd = wg_desc(tiles + TILE, KEYS * 128, 1024);
    auto tile = [&](int it) { return (unsigned)((it % TMA_STAGES) * 2 * TILE); };
    // Waits for tile `it` and issues its S = Q K^T (not awaited).
    auto scores = [&](int it) {
        tma_ring_await_full(full, it);
        const unsigned kt = tile(it);
        wg_fence();
#pragma unroll
        for (int ks = 0; ks < D / 16; ++ks) {
            const unsigned at = (ks / 4) * (KEYS * 128) + (ks % 4) * 32;
            wg_mma_ss<T, KEYS>(s, wg_desc_at(qd, (ks / 4) * (64 * 128) + (ks % 4) * 32),
                               wg_desc_at(kd, kt + at), ks > 0);
        }
        wg_commit();
    };
    // The probabilities of tile `it` in s become P's A fragments.
    auto to_fragments = [&]() {
#pragma unroll
        for (int kk = 0; kk < KT; ++kk) a_fragment_of<T>(s + 2 * kk, pa[kk]);
    };
    if constexpr (OVERLAP) {
        if (count > 0) {
            scores(0);
            wg_wait();
            wg_hold<NT>(s);
            rescale_rows<DT>(o, softmax_tile<NT>(s, r.blo, r, sl, st));
            to_fragments();
        }
        for (int it = 1; it < count; ++it) {
            scores(it);
            wg_values<T, D, KEYS>(pa, wg_desc_at(vd, tile(it - 1)), o);  // O += P V of tile it - 1
            wg_wait_older();                                     // S of tile it is done
            wg_hold<NT>(s);
            const float2 c = softmax_tile<NT>(s, r.blo + it * KEYS, r, sl, st);
            wg_wait();
            wg_hold<DT>(o);
            wg_hold<KT>(pa);
            tma_ring_release(full, it - 1);
            rescale_rows<DT>(o, c);
            to_fragments();
        }
        if (count > 0) {
            wg_values<T, D, KEYS>(pa, wg_desc_at(vd, tile(count - 1)), o);
            wg_wait();
            wg_hold<DT>(o);
            wg_hold<KT>(pa);
            tma_ring_release(full, count - 1);
        }
    } else {
        // Tiles [seen_lo, seen_hi) hold keys that some row of this warpgroup sees; the
        // others would be all masked for it and add nothing. They must still have landed
        // before their buffers are released (a release counts toward its ring's phase).
        const int2 span = wg_key_span(i0 + wg * 64, tq, tk, causal, window);
        const int seen_lo = min(max((span.x - r.blo) / KEYS, 0), count);
        const int seen_hi = min(max((span.y - r.blo + KEYS - 1) / KEYS, seen_lo), count);
        auto pass = [&](int it) {
            tma_ring_await_full(full, it);
            tma_ring_release(full, it);
        };
        for (int it = 0; it < seen_lo; ++it) pass(it);
        for (int it = seen_lo; it < seen_hi; ++it) {
            scores(it);
            wg_wait();
            wg_hold<NT>(s);
            rescale_rows<DT>(o, softmax_tile<NT>(s, r.blo + it * KEYS, r, sl, st));
            to_fragments();
            wg_values<T, D, KEYS>(pa, wg_desc_at(vd, tile(it)), o);
            wg_wait();
            wg_hold<DT>(o);
            wg_hold<KT>(pa);
            tma_ring_release(full, it);
        }
        for (int it = seen_hi; it < count; ++it) pass(it);
    }
    store_forward_rows<T, DT>(o, st, r, out + head_at(os_, b, h), os_.r,
                              lse + (long long)bh * tq, tq);
}

// ---------------------------------------------------------------------------------------
// dQ on warpgroups: the forward's shape. A block is two warpgroups over WG_ROWS query rows
// (Q and dO held as A fragments) and walks the keys they see in tiles of WG_BWD_KEYS, K and
// V staged swizzled and shared: S = Q K^T and dP = dO V^T read K and V K-major, dS = P (dP -
// D) with P recomputed from the log-sum-exp, and dQ += dS K reads K N-major, dS reused
// from the accumulators. It first stores D = rowsum(dO * O) for the dK/dV kernel. With TMA
// the K and V tiles come through the forward's ring from a producer warpgroup; without, the
// block stages them with cp.async, twice buffered.

#define WG_BWD_KEYS 64

template <typename T, int D, bool TMA>
__device__ void flash_backward_dq_wg(const T* q, Heads qs_, const T* k, Heads ks_,
                                     const T* v, Heads vs_, const T* out, Heads os_,
                                     const T* dout, Heads gs_, const float* lse, float* delta,
                                     T* dq, int heads, int kv_heads, int tq, int tk,
                                     int causal, int window, float scale, const TmaMap* kmap,
                                     const TmaMap* vmap) {
    static_assert(D % 64 == 0, "head dims of whole 128-byte blocks");
    constexpr int KEYS = WG_BWD_KEYS, NT = KEYS / 8, DT = D / 8, KT = KEYS / 16;
    constexpr int TILE = KEYS * D * (int)sizeof(T);  // bytes of one K or V tile
    extern __shared__ __align__(16) unsigned char wg_shared[];
    const unsigned raw = (unsigned)__cvta_generic_to_shared(wg_shared);
    unsigned char* tiles = wg_shared + ((1024 - (raw & 1023)) & 1023);
    const unsigned tiles_at = (unsigned)__cvta_generic_to_shared(tiles);
    const unsigned full = tiles_at + TMA_STAGES * 2 * TILE;
    if constexpr (TMA) {
        // K and V tiles come by TMA from a producer warpgroup, as in the forward.
        tma_ring_init(full);
        if (threadIdx.x >= 128 * WG_GROUPS) {
            WG_ASM("setmaxnreg.dec.sync.aligned.u32 24;\n" ::: "memory");
            if (threadIdx.x != 128 * WG_GROUPS) return;
            const BlockPlace p = block_place(WG_ROWS, tq, causal);
            const int b = p.head / heads, grp = (p.head % heads) / (heads / kv_heads);
            const TileRows r = tile_rows(p.last_first * WG_ROWS, WG_ROWS, tq, tk,
                                         causal, window, KEYS);
            const int count = r.bhi > r.blo ? (r.bhi - r.blo + KEYS - 1) / KEYS : 0;
            tma_ring_fill<D, KEYS, TILE>(tiles_at, full, kmap, vmap, count, b, [&](int it) {
                return make_int2(r.blo + it * KEYS, grp);
            }, 0, [](int, int, unsigned) {});
            return;
        }
        WG_ASM("setmaxnreg.inc.sync.aligned.u32 240;\n" ::: "memory");
    }
    ForwardBlock<T, D> f;
    forward_block(f, q, qs_, k, ks_, v, vs_, WG_ROWS, heads, kv_heads, tq, tk, causal, window,
                  KEYS);
    const TileRows& r = f.r;
    const T* gh = dout + head_at(gs_, f.b, f.h);
    unsigned ga[D / 16][4];
    a_fragments<T, D>(gh, gs_.r, r.r0, tq, ga);
    const float2 dd = store_row_deltas<T, D>(gh, gs_.r, out + head_at(os_, f.b, f.h), os_.r,
                                             r.r0, tq, delta + (long long)f.bh * tq);
    const float* lrow = lse + (long long)f.bh * tq;
    const float lb0 = r.r0 < tq ? lrow[r.r0] * LOG2E : 0.0f;
    const float lb1 = r.r1 < tq ? lrow[r.r1] * LOG2E : 0.0f;
    const float sl = scale * LOG2E;
    float acc[DT][4];
#pragma unroll
    for (int n = 0; n < DT; ++n) acc[n][0] = acc[n][1] = acc[n][2] = acc[n][3] = 0.0f;
    const int count = r.bhi > r.blo ? (r.bhi - r.blo + KEYS - 1) / KEYS : 0;
    auto stage = [&](int it, int buf) {
        const int t0 = r.blo + it * KEYS;
        stage_swizzled<T, D, KEYS>(f.kb, ks_.r, t0, r.bhi, tiles + buf * 2 * TILE, threadIdx.x,
                                   blockDim.x);
        stage_swizzled<T, D, KEYS>(f.vb, vs_.r, t0, r.bhi, tiles + buf * 2 * TILE + TILE,
                                   threadIdx.x, blockDim.x);
        cp_async_commit();
    };
    // As in the forward, a warpgroup skips the tiles none of its rows sees.
    const int2 span = wg_key_span(warp_uniform(r.r0 - r.r0 % 64), tq, tk, causal, window);
    auto body = [&](int it, const unsigned char* kt) {
        const int t0 = r.blo + it * KEYS;
        if (tile_unseen(t0, KEYS, span)) return;
        float s[NT][4], dp[NT][4];
        wg_scores<T, D, KEYS>(f.qa, kt, s);
        wg_scores<T, D, KEYS>(ga, kt + TILE, dp);
        wg_wait();
        wg_hold<NT>(s);
        wg_hold<NT>(dp);
        row_gradients<NT>(s, dp, t0, make_int2(r.lo0, r.hi0), make_int2(r.lo1, r.hi1),
                          make_float2(lb0, lb1), dd, sl);
        unsigned da[KT][4];
#pragma unroll
        for (int kk = 0; kk < KT; ++kk) a_fragment_of<T>(s + 2 * kk, da[kk]);
        wg_values<T, D, KEYS>(da, kt, acc);  // dQ += dS K
        wg_wait();
        wg_hold<DT>(acc);
        wg_hold<KT>(da);
    };
    if constexpr (TMA) {
        for (int it = 0; it < count; ++it) {
            tma_ring_await_full(full, it);
            body(it, tiles + (it % TMA_STAGES) * 2 * TILE);
            tma_ring_release(full, it);
        }
    } else {
        pipelined_tiles<2, true>(count, stage,
                                 [&](int it, int buf) { body(it, tiles + buf * 2 * TILE); });
    }
    store_dq_rows<T, DT>(acc, dq, f.b, f.h, heads, r.r0, tq, scale);
}

// ---------------------------------------------------------------------------------------
// dK and dV on warpgroups. A block owns WG_ROWS keys, 64 per warpgroup, whose K and V rows
// are staged once (swizzled, as the A operands of S^T = K Q^T and dP^T = V dO^T); it walks
// tiles of WG_BWD_QUERIES queries of every query head of its group, each tile's Q and dO
// staged twice-buffered and shared by both warpgroups. With the keys as the products' rows,
// P^T and dS^T come back in the accumulator layout, a key per row, and feed dV += P^T dO and
// dK += dS^T Q straight from registers, Q and dO read N-major as V is in the forward. The
// per-query log-sum-exp and D = rowsum(dO * O) of a tile are staged beside it. D is stored
// by the dQ kernel, which runs first. With TMA the Q and dO tiles and their statistics
// come through a ring of TMA_STAGES from a producer warpgroup.

#define WG_BWD_QUERIES 64

template <typename T, int D, bool TMA>
__device__ void flash_backward_dkdv_wg(const T* q, Heads qs_, const T* k, Heads ks_,
                                       const T* v, Heads vs_, const T* dout, Heads gs_,
                                       const float* lse, const float* delta, T* dk, T* dv,
                                       int heads, int kv_heads, int tq, int tk, int causal,
                                       int window, float scale, const TmaMap* qmap,
                                       const TmaMap* gmap, const TmaMap* lmap,
                                       const TmaMap* dmap) {
    static_assert(D % 64 == 0, "head dims of whole 128-byte blocks");
    constexpr int QT = WG_BWD_QUERIES, NT = QT / 8, DT = D / 8, KT = QT / 16;
    constexpr int KV = WG_ROWS * D * (int)sizeof(T);  // bytes of the block's K (or V) rows
    constexpr int TILE = QT * D * (int)sizeof(T);     // bytes of one Q or dO tile
    constexpr int STAGES = TMA ? TMA_STAGES : 2;
    extern __shared__ __align__(16) unsigned char wg_shared[];
    const unsigned raw = (unsigned)__cvta_generic_to_shared(wg_shared);
    unsigned char* kv = wg_shared + ((1024 - (raw & 1023)) & 1023);
    unsigned char* qg = kv + 2 * KV;                              // [stage][Q, dO]
    float* stats = reinterpret_cast<float*>(qg + STAGES * 2 * TILE);  // [stage][lse, D]
    const unsigned full = (unsigned)__cvta_generic_to_shared(stats + STAGES * 2 * QT);
    const int wg = warp_uniform(threadIdx.x / 128), lane = threadIdx.x % 32, t = lane % 4;
    const BlockPlace p = block_place(WG_ROWS, tk, causal);
    const int bg = p.head, b = bg / kv_heads, grp = bg % kv_heads, group = heads / kv_heads;
    const int j0 = p.tile * WG_ROWS;
    int qlo = 0, qhi = tq;
    if (causal) {
        qlo = max(0, j0 + tq - tk);
        if (window > 0) qhi = min(tq, min(tk, j0 + WG_ROWS) - 1 + tq - tk + window);
    }
    // Tile `it` is query rows qlo + (it % per_head) * QT of head grp * group + it / per_head.
    const int per_head = qhi > qlo ? (qhi - qlo + QT - 1) / QT : 0;
    const int tiles = per_head * group;
    if constexpr (TMA) {
        // A producer warpgroup, one thread of which copies each tile's Q and dO, and its
        // rows' log-sum-exp and D (1-d maps over [B * H * Tq]; rows past the tile's end
        // are masked), by TMA.
        tma_ring_init(full);
        if (threadIdx.x >= 128 * WG_GROUPS) {
            // 24 + 2 * 240 per thread of a warpgroup: the 3 * 168 the block starts with.
            WG_ASM("setmaxnreg.dec.sync.aligned.u32 24;\n" ::: "memory");
            if (threadIdx.x != 128 * WG_GROUPS) return;
            const unsigned tiles_at = (unsigned)__cvta_generic_to_shared(qg);
            const unsigned stats_at = (unsigned)__cvta_generic_to_shared(stats);
            auto tile_of = [&](int it) {
                return make_int2(qlo + (it % per_head) * QT, grp * group + it / per_head);
            };
            tma_ring_fill<D, QT, TILE>(
                tiles_at, full, qmap, gmap, tiles, b, tile_of, 2 * QT * 4,
                [&](int it, int stage, unsigned bar) {
                    const int2 at = tile_of(it);
                    const int row = (b * heads + at.y) * tq + at.x;
                    tma_load_1d(stats_at + stage * 2 * QT * 4, lmap, row, bar);
                    tma_load_1d(stats_at + stage * 2 * QT * 4 + QT * 4, dmap, row, bar);
                });
            return;
        }
        WG_ASM("setmaxnreg.inc.sync.aligned.u32 240;\n" ::: "memory");
    }
    const int kr0 = j0 + wg * 64 + ((threadIdx.x / 32) % 4) * 16 + lane / 4, kr1 = kr0 + 8;
    stage_swizzled<T, D, WG_ROWS>(k + head_at(ks_, b, grp), ks_.r, j0, tk, kv, threadIdx.x,
                                  128 * WG_GROUPS);
    stage_swizzled<T, D, WG_ROWS>(v + head_at(vs_, b, grp), vs_.r, j0, tk, kv + KV,
                                  threadIdx.x, 128 * WG_GROUPS);
    cp_async_commit();
    if constexpr (TMA) {
        // K and V must have landed before the first tile; only the consumers wait here.
        cp_async_wait(false);
        fence_proxy_async();
        asm volatile("bar.sync 1, %0;\n" ::"n"(128 * WG_GROUPS) : "memory");
    }
    float ak[DT][4], av[DT][4];
#pragma unroll
    for (int n = 0; n < DT; ++n) {
        ak[n][0] = ak[n][1] = ak[n][2] = ak[n][3] = 0.0f;
        av[n][0] = av[n][1] = av[n][2] = av[n][3] = 0.0f;
    }
    // The queries [x, y) that see key kr (the inverse of flash_keys).
    auto seen_by = [&](int kr) {
        if (kr >= tk) return make_int2(0, 0);
        if (!causal) return make_int2(0, qhi);
        const int kq = kr + tq - tk;
        return make_int2(max(kq, 0), window > 0 ? min(qhi, kq + window) : qhi);
    };
    const int2 see0 = seen_by(kr0), see1 = seen_by(kr1);
    // The queries that see some key of this warpgroup's 64: a query tile outside them is
    // all masked for it, and the warpgroup skips it.
    const int kf = j0 + wg * 64;
    const int2 span = kf < tk ? make_int2(seen_by(kf).x, seen_by(min(kf + 63, tk - 1)).y)
                              : make_int2(0, 0);
    const float sl = scale * LOG2E;
    auto stage = [&](int it, int buf) {
        const int hq = grp * group + it / per_head, t0 = qlo + (it % per_head) * QT;
        unsigned char* at = qg + buf * 2 * TILE;
        stage_swizzled<T, D, QT>(q + head_at(qs_, b, hq), qs_.r, t0, qhi, at, threadIdx.x,
                                 blockDim.x);
        stage_swizzled<T, D, QT>(dout + head_at(gs_, b, hq), gs_.r, t0, qhi, at + TILE,
                                 threadIdx.x, blockDim.x);
        if (threadIdx.x < 2 * QT) {
            const int c = threadIdx.x % QT, i = t0 + c;
            const long long row = (long long)(b * heads + hq) * tq + (i < qhi ? i : 0);
            cp_async4(stats + buf * 2 * QT + threadIdx.x,
                      (threadIdx.x < QT ? lse : delta) + row, i < qhi);
        }
        cp_async_commit();
    };
    // A descriptor of this warpgroup's 64 key rows of K (or V), features 16 ks onwards.
    auto rows_desc = [&](const unsigned char* m, int ks) {
        return wg_desc(m + (ks / 4) * (WG_ROWS * 128) + wg * 64 * 128 + (ks % 4) * 32, 16, 1024);
    };
    auto tile_desc = [&](const unsigned char* m, int ks) {
        return wg_desc(m + (ks / 4) * (QT * 128) + (ks % 4) * 32, 16, 1024);
    };
    auto body = [&](int it, int buf) {
        const int t0 = qlo + (it % per_head) * QT;
        if (tile_unseen(t0, QT, span)) return;
        const unsigned char* qt = qg + buf * 2 * TILE;
        const unsigned char* gt = qt + TILE;
        const float* lt = stats + buf * 2 * QT;
        const float* dt = lt + QT;
        float sc[NT][4], dp[NT][4];
        wg_fence();
#pragma unroll
        for (int ks = 0; ks < D / 16; ++ks)
            wg_mma_ss<T>(sc, rows_desc(kv, ks), tile_desc(qt, ks), ks > 0);
#pragma unroll
        for (int ks = 0; ks < D / 16; ++ks)
            wg_mma_ss<T>(dp, rows_desc(kv + KV, ks), tile_desc(gt, ks), ks > 0);
        wg_commit();
        wg_wait();
        wg_hold<NT>(sc);
        wg_hold<NT>(dp);
        key_gradients<NT>(sc, dp, lt, dt, t0, see0, see1, sl);
        unsigned pa[KT][4], da[KT][4];
#pragma unroll
        for (int kk = 0; kk < KT; ++kk) a_fragment_of<T>(sc + 2 * kk, pa[kk]);
        wg_values<T, D, QT>(pa, gt, av);  // dV += P^T dO
#pragma unroll
        for (int kk = 0; kk < KT; ++kk) a_fragment_of<T>(dp + 2 * kk, da[kk]);
        wg_values<T, D, QT>(da, qt, ak);  // dK += dS^T Q
        wg_wait();
        wg_hold<DT>(av);
        wg_hold<DT>(ak);
        wg_hold<KT>(pa);
        wg_hold<KT>(da);
    };
    if constexpr (TMA) {
        for (int it = 0; it < tiles; ++it) {
            tma_ring_await_full(full, it);
            body(it, it % TMA_STAGES);
            tma_ring_release(full, it);
        }
    } else {
        pipelined_tiles<2, true>(tiles, stage, body);
        if (tiles == 0) cp_async_wait(false);  // K and V were staged for nothing
    }
    // dK and dV are written [B, Tk, KVH, D], like the mma.sync kernel's.
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

#define FLASH_WG(SUFFIX, T, D)                                                                \
extern "C" __global__ void __launch_bounds__(128 * WG_GROUPS, D <= 64 ? 2 : 1)             \
        flash_forward_wg_d##D##_##SUFFIX(FLASH_ARGS(T)) {                                      \
    flash_forward_wg<T, D, WG_KEYS(D)>(q, qs, k, ks, v, vs, out, os, lse, heads, kv_heads, tq,  \
                                       tk, causal, window, scale);                              \
}                                                                                               \
extern "C" __global__ void __launch_bounds__(128 * WG_GROUPS, 1)                              \
        flash_backward_dq_wg_d##D##_##SUFFIX(FLASH_ARGS(T)) {                                  \
    flash_backward_dq_wg<T, D, false>(q, qs, k, ks, v, vs, out, os, dout, gs, lse, delta, dq,  \
                                      heads, kv_heads, tq, tk, causal, window, scale, nullptr,  \
                                      nullptr);                                                 \
}                                                                                               \
extern "C" __global__ void __launch_bounds__(128 * WG_GROUPS, 1)                              \
        flash_backward_dkdv_wg_d##D##_##SUFFIX(FLASH_ARGS(T)) {                                \
    flash_backward_dkdv_wg<T, D, false>(q, qs, k, ks, v, vs, dout, gs, lse, delta, dk, dv,    \
                                        heads, kv_heads, tq, tk, causal, window, scale,        \
                                        nullptr, nullptr, nullptr, nullptr);                   \
}
// The producer is a whole warpgroup at head dim 128 (so that it can hand its registers to
// the consumers, one block per SM) and a single warp at 64 (two blocks per SM).
#define TMA_PRODUCERS(D) ((D) <= 64 ? 32 : 128)
#define FLASH_TMA(SUFFIX, T, D)                                                               \
extern "C" __global__ void                                                                    \
__launch_bounds__(128 * WG_GROUPS + TMA_PRODUCERS(D), D <= 64 ? 2 : 1)                        \
        flash_forward_tma_d##D##_##SUFFIX(FLASH_ARGS(T), const __grid_constant__ TmaMap kmap,  \
                                          const __grid_constant__ TmaMap vmap) {               \
    flash_forward_tma<T, D, WG_KEYS(D), TMA_PRODUCERS(D)>(q, qs, k, ks, v, vs, out, os, lse,    \
                                                          heads, kv_heads, tq, tk, causal,      \
                                                          window, scale, &kmap, &vmap);         \
}                                                                                               \
extern "C" __global__ void __launch_bounds__(128 * (WG_GROUPS + 1), 1)                        \
        flash_backward_dq_tma_d##D##_##SUFFIX(FLASH_ARGS(T),                                    \
                                              const __grid_constant__ TmaMap kmap,              \
                                              const __grid_constant__ TmaMap vmap) {            \
    flash_backward_dq_wg<T, D, true>(q, qs, k, ks, v, vs, out, os, dout, gs, lse, delta, dq,   \
                                     heads, kv_heads, tq, tk, causal, window, scale, &kmap,     \
                                     &vmap);                                                    \
}                                                                                               \
extern "C" __global__ void __launch_bounds__(128 * (WG_GROUPS + 1), 1)                        \
        flash_backward_dkdv_tma_d##D##_##SUFFIX(FLASH_ARGS(T),                                  \
                                                const __grid_constant__ TmaMap qmap,            \
                                                const __grid_constant__ TmaMap gmap,            \
                                                const __grid_constant__ TmaMap lmap,            \
                                                const __grid_constant__ TmaMap dmap) {          \
    flash_backward_dkdv_wg<T, D, true>(q, qs, k, ks, v, vs, dout, gs, lse, delta, dk, dv,     \
                                       heads, kv_heads, tq, tk, causal, window, scale, &qmap,  \
                                       &gmap, &lmap, &dmap);                                    \
}
FLASH_TMA(f16, __half, 64)
FLASH_TMA(f16, __half, 128)
FLASH_TMA(bf16, __nv_bfloat16, 64)
FLASH_TMA(bf16, __nv_bfloat16, 128)
FLASH_WG(f16, __half, 64)
FLASH_WG(f16, __half, 128)
FLASH_WG(bf16, __nv_bfloat16, 64)
FLASH_WG(bf16, __nv_bfloat16, 128)
