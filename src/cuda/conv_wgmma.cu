/* conv_wgmma.cu: our implicit-GEMM convolution (conv_igemm.cu's GEMM view, the same parameters
 * and epilogue) on Hopper's warpgroup MMA: wgmma.mma_async reads both operands straight from
 * shared memory, 64 x BN x 16 per instruction and warpgroup (4 warps), where the mma.sync kernel
 * issues an ldmatrix per 16 x 16 fragment and an mma per 16 x 8 x 16. That kernel's k loop is
 * bound by issuing those instructions and by the latency behind them (bench/NOTES.md, step 9c);
 * here one thread issues 4 wgmma per 64-wide k tile.
 *
 * Tiles: BM = 64 rows per warpgroup (1, 2 or 4 warpgroups), BN = 32 to 256 output channels, k tiles
 * of 64 halves: one 128-byte row per output pixel (A) or output channel (B), stored with the
 * 128-byte swizzle wgmma's descriptors name (16-byte chunk j of row r at chunk j ^ (r & 7), tiles
 * aligned to 1,024 bytes), filled by cp.async as in conv_igemm.cu: every 16-byte chunk is 8
 * channels of one input pixel or zeros. The pipeline keeps STAGES - 2 tiles of loads and one
 * tile of MMAs in flight: the stage a load overwrites was read by the MMAs of two tiles back,
 * which every warpgroup has waited for (wgmma.wait_group 1) before the barrier of this tile.
 * Shared memory written by cp.async is made visible to the MMAs' async proxy with
 * fence.proxy.async before that barrier.
 *
 * The code is sm_90a only (wgmma is an architecture-specific feature): this file is compiled for
 * that target alone, and conv_igemm.cu offers these configurations only on compute capability
 * 9.0 devices. */
#include <stdio.h>

#include "cuda/conv_igemm.cuh"

using namespace zci_igemm;

namespace {

constexpr int kBK = 64; /* halves per k tile: one 128-byte swizzle row */

#if defined(__CUDA_ARCH__) && defined(__CUDA_ARCH_FEAT_SM90_ALL)
#define ZCI_WGMMA 1
#endif

#ifdef ZCI_WGMMA
/* wgmma.mma_async m64nNk16, FP16 inputs from shared memory (both K-major: no transposes), FP32
 * accumulators added to (scale-d = 1). */
template <int N> struct wgmma_n;
template <> struct wgmma_n<32> {
    static __device__ __forceinline__ void mma(float *d, uint64_t a, uint64_t b)
    {
        asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %18, 0;\n"
                     "wgmma.mma_async.sync.aligned.m64n32k16.f32.f16.f16 {%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15}, %16, %17, p, 1, 1, 0, 0;\n}\n"
                     : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15])
                     : "l"(a), "l"(b), "r"(1));
    }
};
template <> struct wgmma_n<64> {
    static __device__ __forceinline__ void mma(float *d, uint64_t a, uint64_t b)
    {
        asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %34, 0;\n"
                     "wgmma.mma_async.sync.aligned.m64n64k16.f32.f16.f16 {%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31}, %32, %33, p, 1, 1, 0, 0;\n}\n"
                     : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31])
                     : "l"(a), "l"(b), "r"(1));
    }
};
template <> struct wgmma_n<128> {
    static __device__ __forceinline__ void mma(float *d, uint64_t a, uint64_t b)
    {
        asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %66, 0;\n"
                     "wgmma.mma_async.sync.aligned.m64n128k16.f32.f16.f16 {%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, %48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63}, %64, %65, p, 1, 1, 0, 0;\n}\n"
                     : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]), "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]), "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]), "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]), "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63])
                     : "l"(a), "l"(b), "r"(1));
    }
};
template <> struct wgmma_n<256> {
    static __device__ __forceinline__ void mma(float *d, uint64_t a, uint64_t b)
    {
        asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %130, 0;\n"
                     "wgmma.mma_async.sync.aligned.m64n256k16.f32.f16.f16 {%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, %48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63, %64, %65, %66, %67, %68, %69, %70, %71, %72, %73, %74, %75, %76, %77, %78, %79, %80, %81, %82, %83, %84, %85, %86, %87, %88, %89, %90, %91, %92, %93, %94, %95, %96, %97, %98, %99, %100, %101, %102, %103, %104, %105, %106, %107, %108, %109, %110, %111, %112, %113, %114, %115, %116, %117, %118, %119, %120, %121, %122, %123, %124, %125, %126, %127}, %128, %129, p, 1, 1, 0, 0;\n}\n"
                     : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]), "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]), "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]), "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]), "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63]), "+f"(d[64]), "+f"(d[65]), "+f"(d[66]), "+f"(d[67]), "+f"(d[68]), "+f"(d[69]), "+f"(d[70]), "+f"(d[71]), "+f"(d[72]), "+f"(d[73]), "+f"(d[74]), "+f"(d[75]), "+f"(d[76]), "+f"(d[77]), "+f"(d[78]), "+f"(d[79]), "+f"(d[80]), "+f"(d[81]), "+f"(d[82]), "+f"(d[83]), "+f"(d[84]), "+f"(d[85]), "+f"(d[86]), "+f"(d[87]), "+f"(d[88]), "+f"(d[89]), "+f"(d[90]), "+f"(d[91]), "+f"(d[92]), "+f"(d[93]), "+f"(d[94]), "+f"(d[95]), "+f"(d[96]), "+f"(d[97]), "+f"(d[98]), "+f"(d[99]), "+f"(d[100]), "+f"(d[101]), "+f"(d[102]), "+f"(d[103]), "+f"(d[104]), "+f"(d[105]), "+f"(d[106]), "+f"(d[107]), "+f"(d[108]), "+f"(d[109]), "+f"(d[110]), "+f"(d[111]), "+f"(d[112]), "+f"(d[113]), "+f"(d[114]), "+f"(d[115]), "+f"(d[116]), "+f"(d[117]), "+f"(d[118]), "+f"(d[119]), "+f"(d[120]), "+f"(d[121]), "+f"(d[122]), "+f"(d[123]), "+f"(d[124]), "+f"(d[125]), "+f"(d[126]), "+f"(d[127])
                     : "l"(a), "l"(b), "r"(1));
    }
};

/* A shared-memory matrix descriptor for a K-major tile with 128-byte swizzle: start address,
 * leading offset (unused for this layout: 1), 1,024 bytes between groups of 8 rows. */
__device__ __forceinline__ uint64_t desc_sw128(unsigned saddr)
{
    return (uint64_t)((saddr & 0x3FFFF) >> 4) | ((uint64_t)1 << 16) | ((uint64_t)(1024 >> 4) << 32) | ((uint64_t)1 << 62);
}

/* Keeps the compiler from moving accesses of the accumulators across the asynchronous MMAs. */
template <int NA> __device__ __forceinline__ void fence_acc(float *acc)
{
#pragma unroll
    for (int i = 0; i < NA; i++) asm volatile("" : "+f"(acc[i])::"memory");
}
#endif

/* The byte offset of 16-byte chunk `chunk` of row `row` in a 128-byte-swizzled tile. */
__device__ __forceinline__ unsigned swz128(int row, int chunk) { return (unsigned)(row * 128 + ((chunk ^ (row & 7)) << 4)); }

template <int BM, int BN, int STAGES, int ACT>
__global__ void __launch_bounds__(BM * 2) k_wgmma(const igemm_params p)
{
#ifdef ZCI_WGMMA
    constexpr int THREADS = BM * 2; /* a warpgroup of 128 threads per 64 rows */
    constexpr int ROWS = THREADS / 8; /* tile rows one pass of the block loads: 8 threads a row */
    constexpr int A_ITERS = BM / ROWS, B_ITERS = (BN + ROWS - 1) / ROWS;
    constexpr int A_BYTES = BM * kBK * 2, B_BYTES = BN * kBK * 2, STAGE_BYTES = A_BYTES + B_BYTES;
    constexpr int NACC = BN / 2; /* accumulators per thread: 64 x BN over 128 threads */
    static_assert(STAGES >= 3, "a tile of loads and a tile of MMAs in flight");
    static_assert(A_BYTES % 1024 == 0 && B_BYTES % 1024 == 0, "1,024-byte aligned tiles");

    extern __shared__ unsigned char smem_raw[];
    const unsigned raw_s = (unsigned)__cvta_generic_to_shared(smem_raw);
    const unsigned base_s = (raw_s + 1023u) & ~1023u; /* the swizzle pattern is of address bits */
    unsigned char *base = smem_raw + (base_s - raw_s);

    const int tid = threadIdx.x, wg = tid >> 7;
    const int m0 = blockIdx.x * BM, n0 = blockIdx.y * BN;
    const int kc = tid & 7; /* the chunk this thread loads in every row */
    const int KT = (p.Kg + kBK - 1) / kBK;
    const int kt0 = blockIdx.z * p.kt_per_split;
    const int kt1 = min(KT, kt0 + p.kt_per_split);
    const int nkt = kt1 > kt0 ? kt1 - kt0 : 0;

    gather<A_ITERS, B_ITERS> gt;
    gt.init(p, m0, n0, tid >> 3, ROWS, BN, kt0 * kBK + kc * 8);
    auto load_tile = [&](int stage) {
        const unsigned tA = base_s + stage * STAGE_BYTES, tB = tA + A_BYTES;
#pragma unroll
        for (int i = 0; i < A_ITERS; i++) {
            bool ok;
            const __half *src = gt.a_src(p, i, ok);
            cp_async16_s(tA + swz128((tid >> 3) + i * ROWS, kc), src, ok);
        }
#pragma unroll
        for (int j = 0; j < B_ITERS; j++) {
            const int row = (tid >> 3) + j * ROWS;
            if (B_ITERS * ROWS > BN && row >= BN) break; /* rows past the tile: not stored */
            bool ok;
            const __half *src = gt.b_src(p, j, ok);
            cp_async16_s(tB + swz128(row, kc), src, ok);
        }
        gt.advance(p, kBK);
    };

    float acc[NACC];
#pragma unroll
    for (int i = 0; i < NACC; i++) acc[i] = 0.f;

#pragma unroll
    for (int st = 0; st < STAGES - 2; st++) {
        if (st < nkt) load_tile(st);
        cp_async_commit();
    }
    for (int it = 0; it < nkt; it++) {
        cp_async_wait<STAGES - 3>();
        asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
        __syncthreads(); /* tile `it` landed for every thread; tile it - 2's MMAs are done */
        const int pf = it + STAGES - 2;
        if (pf < nkt) load_tile(pf % STAGES);
        cp_async_commit();
        const unsigned tA = base_s + (it % STAGES) * STAGE_BYTES + wg * (64 * kBK * 2), tB = base_s + (it % STAGES) * STAGE_BYTES + A_BYTES;
        const uint64_t da = desc_sw128(tA), db = desc_sw128(tB);
        fence_acc<NACC>(acc);
        asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory");
#pragma unroll
        for (int kk = 0; kk < kBK / 16; kk++) /* 32 bytes along k per step: +2 in the address field */
            wgmma_n<BN>::mma(acc, da + 2 * kk, db + 2 * kk);
        asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory");
        asm volatile("wgmma.wait_group.sync.aligned 1;\n" ::: "memory");
        fence_acc<NACC>(acc);
    }
    asm volatile("wgmma.wait_group.sync.aligned 0;\n" ::: "memory");
    fence_acc<NACC>(acc);
    cp_async_wait<0>();
    __syncthreads(); /* the pipeline's shared memory becomes the output tile */

    /* Accumulator j of a thread: warp w of its warpgroup holds rows 16 w .. 16 w + 15, lane l
     * rows l / 4 and l / 4 + 8, columns 8 (j / 4) + 2 (l % 4) + {0, 1} (mma.sync's C layout per
     * 8 columns). */
    constexpr int LDS = BN + 4;
    float *sC = (float *)base;
    const int lane = tid & 31, wr = wg * 64 + ((tid >> 5) & 3) * 16 + (lane >> 2), wc = (lane & 3) * 2;
#pragma unroll
    for (int j = 0; j < BN / 8; j++) {
        *(float2 *)&sC[wr * LDS + j * 8 + wc] = make_float2(acc[4 * j], acc[4 * j + 1]);
        *(float2 *)&sC[(wr + 8) * LDS + j * 8 + wc] = make_float2(acc[4 * j + 2], acc[4 * j + 3]);
    }
    __syncthreads();
    tile_epilogue<BM, BN, THREADS, ACT>(p, sC, m0, n0);
#else
    __trap(); /* never launched: conv_igemm.cu offers these kernels on sm_90 devices only */
#endif
}

#define WCFG(BM, BN, ST)                                                                                               \
    {                                                                                                                  \
        BM, BN, BM * 2, ST, kBK,                                                                                       \
        {                                                                                                              \
            k_wgmma<BM, BN, ST, A_NONE>, k_wgmma<BM, BN, ST, A_RELU>, k_wgmma<BM, BN, ST, A_SILU>,                     \
                k_wgmma<BM, BN, ST, A_SIGMOID>, k_wgmma<BM, BN, ST, A_GENERIC>                                         \
        }                                                                                                              \
    }
/* 12-48 KB per stage; the largest use 192 KB of the H100's 227 KB per block. A tile of BM x BN
 * reads (BM + BN) x 128 bytes per k tile for BM x BN x 128 FLOP: narrow layers (32 or 64 output
 * channels) need tall tiles to get past the rate at which L2 feeds the SMs. */
const tile_cfg kWgCfgs[] = {
    WCFG(128, 128, 5), /* batch > 1 */
    WCFG(128, 256, 4),
    WCFG(128, 64, 6),
    WCFG(64, 128, 4),  /* few rows: batch 1 */
    WCFG(64, 64, 6),
    WCFG(64, 32, 6),   /* 32 output channels */
    WCFG(256, 32, 5),  /* few output channels, many rows (batch > 1): the B tile is read once */
    WCFG(256, 64, 4),  /* for 4 warpgroups, not 1 */
    WCFG(128, 128, 3), /* short k (1x1 layers): two blocks per SM, one's epilogue beside the other's loads */
};
#undef WCFG

} // namespace

const tile_cfg *cu_wgmma_configs(int *count)
{
    *count = (int)(sizeof kWgCfgs / sizeof kWgCfgs[0]);
    return kWgCfgs;
}
