/* conv_direct.cu: direct convolution on the tensor cores for NHWC FP16 inputs with few (8 or 16,
 * padded) channels: YOLOv5's first layer, 6x6/2 pad 2 from 3 channels (padded to 8) to 32 with
 * SiLU, on 640x640 frames, and its kind (ResNet's 7x7/2 stem, 3x3 first layers).
 *
 * Why not the implicit GEMM (conv_igemm.cu): with 8 channels each 16 bytes it gathers are one
 * (output pixel, tap) pair, so every input pixel goes through the load pipeline once per window
 * that covers it (9 times for 6x6 at stride 2): 45 us at batch 1, cuDNN 33 us, for a layer
 * whose memory floor is ~4 us.
 *
 * Here a block copies the input patch of an output tile into shared memory once (zeros where
 * the windows leave the image), and the tensor cores read the implicit im2col matrix out of it.
 * The GEMM: row = output pixel, column = output channel, k = (r, s, c) in KRSC order, so chunk
 * ch = k / 8 is tap ch / (C/8), channels 8 * (ch % (C/8)) and up. A row of an 8x8 ldmatrix
 * operand is then one patch pixel's 16 bytes (of one 8-channel plane): each lane points at the
 * pixel its (output pixel, chunk) needs, and one mma.sync m16n8k16 step covers 2 chunks (2 taps
 * at C = 8). A warp owns MT m-tiles of 16 output pixels (16 consecutive columns of one output
 * row) times all K channels (NT n-tiles of 8), MT * NT = 16 (8 for K = 8): accumulators in 64
 * registers, each A fragment used NT times and each B fragment MT times.
 *
 * Pair mode: when the caller says that only channels 0-3 can be nonzero in w (C_used <= 4: YOLO's
 * 3 channels padded to 8) and the stride along W is 2, a 16-byte operand row holds channels 0-3
 * of 2 neighbouring input pixels, i.e. taps (r, s) and (r, s + 1) of one output pixel: the patch
 * keeps 8 bytes per pixel, tap pairs start on even patch columns (2 q + s, s even), so 16-byte
 * aligned, and the k loop is half as long (YOLO: 9 steps instead of 18) with half the patch.
 *
 * Shared memory per block (all 16-byte units):
 *   - the weights, once, rows of output channels with their 16-byte chunks XOR-swizzled so that
 *     the ldmatrix of B fragments (8 rows, one chunk) is free of bank conflicts (plain KRSC rows
 *     of 576 bytes would be 4-way);
 *   - the chunk offsets of the k steps (tap and plane -> offset in the patch);
 *   - two patch buffers: the block is persistent (grid = what fits on the GPU at once, tiles
 *     taken in turn), and the patch of its next tile streams in by cp.async while it computes
 *     the current one; the weights are loaded once per block, not once per tile. Outside pair
 *     mode each patch column is stored by phase at stride 2 (even input columns, then odd), so
 *     that the 8 consecutive output pixels of an ldmatrix read 8 consecutive units: no bank
 *     conflicts;
 *   - one zero unit: the second chunk of the last k step, when the chunk count is odd, reads it.
 * After a tile's k loop the patch buffer becomes the epilogue's staging: bias + activation in
 * FP32, FP16 into shared memory (per warp, chunk-major: conflict-free both ways), then 16-byte
 * stores, consecutive lanes on consecutive 16 bytes of y.
 *
 * Cost of YOLOv5s's first conv (N = 1: 320x320 outputs x 32 channels), H100 SXM:
 *   - DRAM: 6.55 MB in + 6.55 MB out = 13.1 MB per image: 4.4 us at 3.0 TB/s (b32: 140 us).
 *     Patch halos (1.33x at 8 x 32 outputs per tile) and the weights come from L2.
 *   - tensor cores: 2 * 102400 * 32 * 288 = 1.89 GFLOP with k over 8 channels (5/8 of it on zero
 *     channels), 461k mma.sync; pair mode 0.94 GFLOP, 230k. Measured ~6.3 cycles per mma per SM
 *     sub-partition: 2.8 us per image with 8 channels (b32: 88 us), 1.4 us in pair mode.
 *   - instructions: ~2000 per warp and tile of 64 x 32 outputs (k loop ~500, SiLU epilogue ~600,
 *     patch copies ~300, the rest set-up), with 2-4 warps per scheduler mostly waiting on
 *     dependent latencies (6-7 cycles per instruction, ncu). This, not shared-memory bandwidth as
 *     first predicted (6-7 us at b1, ~150 us at b32), is what bounds the kernel; at b1 each
 *     warp has one tile, so its chain (~2000 instructions x ~7 cycles) is the time.
 *   Measured (test_gpu_conv --bench, H100, 100 back-to-back launches; b1 includes the ~1-2 us
 *   between launches): pair mode b1 10.2 us, b32 172 us (2.4 TB/s); 8 channels b1 16.3 us, b32
 *   243 us. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cuda/cuda_debug.h"
#include "cuda/kernels.cuh"

using namespace zci_cu;

namespace {

constexpr int kTileQ = 32; /* output columns per tile: 2 m-tiles of 16 */

/* m-tiles per warp for NT n-tiles: 64 accumulator registers (32 for K = 8). Kernels for NT <= 4
 * also come with half as many (a "small" warp tile, for grids that would otherwise leave the
 * GPU with a few long warps: at batch 1 each warp's chain of dependent steps is the time). A
 * warp covers whole 32-column output rows, so at least 2. */
constexpr int warp_mtiles(int nt) { return nt <= 2 ? 8 : nt <= 4 ? 4 : 2; }
constexpr int small_mtiles(int nt) { return nt <= 4 ? warp_mtiles(nt) / 2 : 0; }
/* Padding of the epilogue's staging planes (16-byte units) that puts the 8 lanes of each
 * 16-byte read in 8 different bank groups (worked out per NT; 6 keeps one 2-way conflict). */
constexpr int stage_pad(int nt)
{
    return nt == 2 ? 4 : nt == 3 ? 3 : nt == 4 ? 2 : nt == 5 ? 5 : nt == 6 ? 3 : nt == 7 ? 7 : nt == 8 ? 1 : 0;
}
constexpr int stage_stride(int nt, int mt) { return mt * 16 + stage_pad(nt); }

struct dconv_params {
    const __half *x;     /* NHWC (N, H, W, C) */
    const __half *w;     /* KRSC */
    const float *bias;   /* K */
    __half *y;           /* (N, P, Q) rows of ldy */
    int H, W, C, K, R, S, sh, sw, ph, pw, P, Q, ldy;
    int act;
    float alpha, beta;
    /* derived on the host (make_plan) */
    int pair;            /* chunks of 2 taps x 4 channels (else 1 tap x 8 channels) */
    int nch;             /* 8-element chunks of k */
    int ks;              /* k steps of 16: ceil(nch / 2) */
    int tp;              /* output rows per tile */
    int tiles_q, tiles_p, tiles; /* along Q, along P, in all (N included) */
    int pr;              /* patch rows */
    int pc;              /* input columns a tile reads (one more is loaded, as zeros, in pair mode
                            with odd S: the last tap's partner) */
    int row_units;       /* copies per patch row: ld_cols * (C / 8), or ld_cols in pair mode */
    int ccs;             /* log2(C / 8) for those copies; 0 in pair mode */
    int ustride;         /* halves between consecutive copies in x: 8, or C in pair mode */
    int phase;           /* stride-2 columns stored by phase */
    int half_w;          /* patch columns of one phase */
    int pcp;             /* patch slots per row (and plane): 16 bytes each, 8 in pair mode */
    int rowp;            /* 16-byte units per patch row */
    int buf_units;       /* a patch buffer (also the epilogue's staging), 16-byte units */
    int wcpr;            /* 16-byte chunks per weight row in shared memory: 2 * ks rounded up to 8 */
    int smem_kofs, smem_buf; /* byte offsets in shared memory */
};

__device__ __forceinline__ void cp_async16(unsigned smem_addr, const void *gmem, bool pred)
{
    const int n = pred ? 16 : 0; /* 0: the 16 bytes are zero-filled, nothing is read */
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(smem_addr), "l"(gmem), "r"(n));
}
__device__ __forceinline__ void cp_async8(unsigned smem_addr, const void *gmem, bool pred)
{
    const int n = pred ? 8 : 0;
    asm volatile("cp.async.ca.shared.global [%0], [%1], 8, %2;\n" ::"r"(smem_addr), "l"(gmem), "r"(n));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
__device__ __forceinline__ void cp_async_wait_all() { asm volatile("cp.async.wait_group 0;\n" ::); }

__device__ __forceinline__ void ldmatrix_x4(uint32_t *r, unsigned smem_addr)
{
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(smem_addr));
}

__device__ __forceinline__ void mma16816(float *c, const uint32_t *a, const uint32_t *b)
{
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
                 "{%0, %1, %2, %3};\n"
                 : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}

/* Activation variants with their own kernels, as in conv_igemm.cu: the epilogue is unrolled
 * over 64 accumulators, and a run-time switch in each copy bloats the code. SiLU and sigmoid
 * take the fast forms (sigmoid below); the rest are kernels.cuh's activate. */
enum { A_NONE = 0, A_RELU = 1, A_SILU = 2, A_GENERIC = 3, A_COUNT = 4 };

int act_variant(int act)
{
    switch (act) {
    case ZCI_ACT_NONE: return A_NONE;
    case ZCI_ACT_RELU: return A_RELU;
    case ZCI_ACT_SILU: return A_SILU;
    default: return A_GENERIC;
    }
}

/* 1 / (1 + e^-x) with e^-x as __expf computes it (ex2.approx of -x * log2(e); conv_igemm.cu's
 * epilogue uses __expf too) and an approximate reciprocal: conv_igemm.cu's __frcp_rn has a
 * slow-path branch per value, which serialized this epilogue's 64 values per thread (its
 * 1-ulp FP32 gain vanishes in the FP16 output). Both flush denormals: e^-x overflows to
 * infinity for x < -88, and rcp(inf) = 0, so very negative x gives 0 (SiLU: -0), as on the CPU. */
__device__ __forceinline__ float sigmoid_fast(float x)
{
    float e, r;
    asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(e) : "f"(x * -1.4426950408889634f));
    asm("rcp.approx.ftz.f32 %0, %1;" : "=f"(r) : "f"(1.f + e));
    return r;
}

template <int ACT> __device__ __forceinline__ float act_fn(const dconv_params &p, float x)
{
    if (ACT == A_NONE) return x;
    if (ACT == A_RELU) return fmaxf(x, 0.f);
    if (ACT == A_SILU) return x * sigmoid_fast(x);
    return p.act == ZCI_ACT_SIGMOID ? sigmoid_fast(x) : activate(p.act, x, p.alpha, p.beta);
}

/* A thread's walk over a patch, the same for every tile: its first copy (row lr0, copy e0 of the
 * row) and the step of blockDim.x copies (step_r rows, step_e copies); goff_step: the step's
 * offset in x (a patch row is contiguous in x: copy e is at e * ustride halves from its first
 * pixel). */
struct patch_walk {
    int lr0, e0, step_r, step_e, goff_step;
};

/* Queues the cp.async copies of tile `tile`'s input patch into the buffer at shared address dst,
 * zeros outside the image. Copy e of a patch row: pixel e >> ccs, 16-byte plane e & ccs, to slot
 * (plane, row, column by phase); in pair mode the first 8 bytes (channels 0-3) of pixel e. */
__device__ __forceinline__ void load_patch(const dconv_params &p, unsigned dst, int tile, const patch_walk &wk)
{
    const int tq = tile % p.tiles_q, t = tile / p.tiles_q, tpi = t % p.tiles_p, n = t / p.tiles_p;
    const int ih0 = tpi * p.tp * p.sh - p.ph, iw0 = tq * kTileQ * p.sw - p.pw;
    const __half *img = p.x + (size_t)n * p.H * p.W * p.C;
    const int wc = p.W * p.C, slot = p.pair ? 8 : 16;
    int lr = wk.lr0, e = wk.e0;
    int goff = (ih0 + lr) * wc + iw0 * p.C + e * p.ustride; /* from img: may be outside while !ok */
    while (lr < p.pr) {
        const int lc = e >> p.ccs, c8 = e & p.ccs;
        const int ih = ih0 + lr, iw = iw0 + lc;
        const bool ok = (unsigned)ih < (unsigned)p.H && (unsigned)iw < (unsigned)p.W && lc < p.pc;
        const int col = p.phase ? (lc & 1) * p.half_w + (lc >> 1) : lc;
        const unsigned to = dst + (unsigned)(((c8 * p.pr + lr) * p.pcp + col) * slot);
        if (p.pair) cp_async8(to, img + (ok ? goff : 0), ok);
        else cp_async16(to, img + (ok ? goff : 0), ok);
        lr += wk.step_r;
        e += wk.step_e;
        goff += wk.goff_step;
        if (e >= p.row_units) {
            e -= p.row_units;
            lr++;
            goff += wc - p.row_units * p.ustride;
        }
    }
}

template <int NT, int MT, int ACT> __global__ void __launch_bounds__(256, 2) k_dconv(const dconv_params p)
{
    constexpr int NP = (NT + 1) / 2, SPX = stage_stride(NT, MT);
    extern __shared__ __align__(16) unsigned char smem[];
    /* weights: row n (NP * 16 rows), chunk c (wcpr per row) at 16 * (n * wcpr + (c ^ (n % 8))) */
    const unsigned s_w_addr = (unsigned)__cvta_generic_to_shared(smem);
    int *s_kofs = (int *)(smem + p.smem_kofs);  /* [2 * ks] */
    uint4 *s_buf = (uint4 *)(smem + p.smem_buf); /* 2 x buf_units, then the zero unit */

    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5, nthreads = blockDim.x;
    const int g = lane >> 2, t4 = lane & 3;

    const unsigned s_buf_addr = (unsigned)__cvta_generic_to_shared(s_buf);
    patch_walk wk;
    wk.lr0 = tid / p.row_units;
    wk.e0 = tid - wk.lr0 * p.row_units;
    wk.step_r = nthreads / p.row_units;
    wk.step_e = nthreads - wk.step_r * p.row_units;
    wk.goff_step = wk.step_r * p.W * p.C + wk.step_e * p.ustride;

    int tile = blockIdx.x, buf = 0;
    load_patch(p, s_buf_addr, tile, wk);

    /* the weights, by cp.async too (one wait for both): chunk c of output channel n is 8
     * consecutive halves of its KRSC row, or in pair mode channels 0-3 of taps (r, 2 sp) and
     * (r, 2 sp + 1) (zeros past S), sp = c % ceil(S / 2); zeros where K or k ends. The XOR
     * swizzle puts the 8 rows an ldmatrix reads in 8 bank groups (wcpr is a multiple of 8). */
    {
        const int rsc = p.R * p.S * p.C, sps = (p.S + 1) / 2;
        const int step_n = nthreads / p.wcpr, step_c = nthreads - step_n * p.wcpr;
        int n = tid / p.wcpr, c = tid - n * p.wcpr;
        for (int v = tid; v < NP * 16 * p.wcpr; v += nthreads) {
            const unsigned to = s_w_addr + (unsigned)((n * p.wcpr + (c ^ (n & 7))) * 16);
            const bool ok = n < p.K && c < p.nch;
            const __half *row = p.w + (size_t)(ok ? n : 0) * rsc;
            if (p.pair) {
                const int r = c / sps, s0 = 2 * (c - r * sps), tap = r * p.S + s0;
                cp_async8(to, ok ? row + tap * p.C : p.w, ok);
                cp_async8(to + 8, ok && s0 + 1 < p.S ? row + (tap + 1) * p.C : p.w, ok && s0 + 1 < p.S);
            } else {
                cp_async16(to, ok ? row + c * 8 : p.w, ok);
            }
            n += step_n;
            c += step_c;
            if (c >= p.wcpr) {
                c -= p.wcpr;
                n++;
            }
        }
    }
    cp_async_commit();
    /* chunk -> its offset in the patch (16-byte units) from the output pixel's (row * sh,
     * column): tap ch / (C / 8), plane ch % (C / 8); in pair mode taps (r, 2 sp) and (r, 2 sp + 1)
     * are patch columns 2 q + 2 sp and the next, one 16-byte unit at q + sp */
    for (int ch = tid; ch < 2 * p.ks; ch += nthreads) {
        int v = 1 << 28; /* past the chunks: clamped to the zero unit below */
        if (ch < p.nch) {
            if (p.pair) {
                const int sps = (p.S + 1) / 2, r = ch / sps;
                v = r * p.rowp + (ch - r * sps);
            } else {
                const int tap = ch >> p.ccs, c8 = ch & p.ccs, r = tap / p.S, s = tap - r * p.S;
                v = (c8 * p.pr + r) * p.rowp + (s % p.sw) * p.half_w + s / p.sw;
            }
        }
        s_kofs[ch] = v;
    }
    if (tid == 0) s_buf[2 * p.buf_units] = make_uint4(0u, 0u, 0u, 0u);

    /* this lane's ldmatrix row: output pixel lane % 16 of each m-tile, chunk half lane / 16 */
    int base[MT];
#pragma unroll
    for (int i = 0; i < MT; i++) {
        const int pr = warp * (MT / 2) + (i >> 1), pq = (i & 1) * 16 + (lane & 15);
        base[i] = pr * p.sh * p.rowp + pq;
    }
    const int hsel = lane >> 4;
    /* this lane's ldmatrix row of the weights (n-tile pairs: x4 = b0, b1 of 2 n-tiles) */
    const unsigned w_lane = s_w_addr + (unsigned)(((lane & 7) + ((lane >> 4) << 3)) * p.wcpr * 16);
    const int w_half = (lane >> 3) & 1, w_xor = lane & 7;
    float bias_r[NT][2];
#pragma unroll
    for (int nt = 0; nt < NT; nt++) {
        bias_r[nt][0] = p.bias[nt * 8 + 2 * t4];
        bias_r[nt][1] = p.bias[nt * 8 + 2 * t4 + 1];
    }

    for (; tile < p.tiles; tile += gridDim.x, buf ^= 1) {
        cp_async_wait_all();
        /* this tile's patch (and, the first time, the weights) visible to every thread; every
         * warp is past the previous tile's epilogue, whose staging was the other buffer */
        __syncthreads();
        const int next = tile + gridDim.x;
        if (next < p.tiles) load_patch(p, s_buf_addr + (unsigned)((buf ^ 1) * p.buf_units * 16), next, wk);
        cp_async_commit();

        float acc[MT][NT][4];
#pragma unroll
        for (int i = 0; i < MT; i++)
#pragma unroll
            for (int nt = 0; nt < NT; nt++)
#pragma unroll
                for (int e = 0; e < 4; e++) acc[i][nt][e] = 0.f;

        const unsigned a_addr = s_buf_addr + (unsigned)(buf * p.buf_units) * 16u;
        const int zero_unit = (2 - buf) * p.buf_units; /* relative to this buffer */
#pragma unroll 2
        for (int j = 0; j < p.ks; j++) {
            const int kofs = s_kofs[2 * j + hsel];
            uint32_t b[NP][4];
            const unsigned w_at = w_lane + (unsigned)(((2 * j + w_half) ^ w_xor) * 16);
#pragma unroll
            for (int np = 0; np < NP; np++) ldmatrix_x4(b[np], w_at + (unsigned)(np * 16 * p.wcpr * 16));
#pragma unroll
            for (int i = 0; i < MT; i++) {
                uint32_t a[4];
                ldmatrix_x4(a, a_addr + (unsigned)min(base[i] + kofs, zero_unit) * 16u);
#pragma unroll
                for (int nt = 0; nt < NT; nt++) mma16816(acc[i][nt], a, &b[nt >> 1][(nt & 1) * 2]);
            }
        }
        __syncthreads(); /* every warp is done with the patch: it becomes the staging */

        /* bias + activation in FP32, FP16 into this warp's staging planes (one per 8 channels) */
        uint32_t *stage = (uint32_t *)(s_buf + buf * p.buf_units + warp * NT * SPX);
#pragma unroll
        for (int i = 0; i < MT; i++)
#pragma unroll
            for (int nt = 0; nt < NT; nt++)
#pragma unroll
                for (int h = 0; h < 2; h++) {
                    const float v0 = act_fn<ACT>(p, acc[i][nt][2 * h] + bias_r[nt][0]);
                    const float v1 = act_fn<ACT>(p, acc[i][nt][2 * h + 1] + bias_r[nt][1]);
                    const __half2 hv = __floats2half2_rn(v0, v1);
                    stage[(nt * SPX + i * 16 + g + 8 * h) * 4 + t4] = *(const uint32_t *)&hv;
                }
        __syncwarp();
        const int tq = tile % p.tiles_q, t = tile / p.tiles_q, tpi = t % p.tiles_p, n = t / p.tiles_p;
        const int op0 = tpi * p.tp + warp * (MT / 2), oq0 = tq * kTileQ;
        __half *yimg = p.y + (size_t)n * p.P * p.Q * p.ldy;
        const uint4 *st4 = (const uint4 *)stage;
#pragma unroll
        for (int u = lane; u < MT * 16 * NT; u += 32) {
            const int px = u / NT, c = u - px * NT;
            const int op = op0 + (px >> 5), oq = oq0 + (px & 31); /* m-tile px / 16: row (px / 16) / 2 */
            if (op < p.P && oq < p.Q) *(uint4 *)(yimg + (op * p.Q + oq) * p.ldy + c * 8) = st4[c * SPX + px];
        }
    }
}

typedef void (*kernel_fn)(dconv_params);

/* [NT - 1][0: warp_mtiles, 1: small_mtiles][act variant]; NULL where there is no small tile */
#define ACTS(NT, MT) {k_dconv<NT, MT, A_NONE>, k_dconv<NT, MT, A_RELU>, k_dconv<NT, MT, A_SILU>, k_dconv<NT, MT, A_GENERIC>}
#define ROW(NT) {ACTS(NT, warp_mtiles(NT)), ACTS(NT, small_mtiles(NT))}
#define ROW1(NT) {ACTS(NT, warp_mtiles(NT)), {NULL, NULL, NULL, NULL}}
const kernel_fn kKernels[8][2][A_COUNT] = {ROW(1), ROW(2), ROW(3), ROW(4), ROW1(5), ROW1(6), ROW1(7), ROW1(8)};
#undef ROW1
#undef ROW
#undef ACTS

/* A launch: the parameters, the kernel, its block size, shared memory and grid. */
struct dconv_plan {
    dconv_params p;
    kernel_fn fn;
    int threads;
    size_t smem;
    int mt;        /* m-tiles per warp */
    unsigned grid; /* size_grid */
};

int device_attr(cudaDeviceAttr a)
{
    int dev = 0, v = 0;
    if (cudaGetDevice(&dev) != cudaSuccess || cudaDeviceGetAttribute(&v, a, dev) != cudaSuccess) return 0;
    return v;
}

/* The geometry's limits (those of cuda_internal.h's cu_dconv_geom comment). */
bool geometry_ok(const cu_dconv_geom *g)
{
    if (g->N < 1 || g->H < 1 || g->W < 1 || g->P < 1 || g->Q < 1) return false;
    if (g->C != 8 && g->C != 16) return false;
    if (g->C_used < 0 || g->C_used > g->C) return false;
    if (g->K < 8 || g->K > 64 || g->K % 8) return false;
    if (g->R < 1 || g->R > 7 || g->S < 1 || g->S > 7) return false;
    if (g->stride_h < 1 || g->stride_h > 2 || g->stride_w < 1 || g->stride_w > 2) return false;
    if (g->pad_h < 0 || g->pad_w < 0 || g->pad_h > 0xffff || g->pad_w > 0xffff) return false;
    if (g->ldy < g->K || g->ldy % 8) return false;
    if (g->act < ZCI_ACT_NONE || g->act >= ZCI_ACT_COUNT_) return false;
    /* offsets inside one image are 32-bit (the patch walk's too, which starts pad_h rows above
     * the image and may end past it, tiles being up to 32 rows); images are addressed in 64 bits */
    const int64_t lim = (int64_t)1 << 31;
    const int64_t reach = (int64_t)(g->P + 32) * g->stride_h + g->R;
    const int64_t rows = (reach > g->H ? reach : g->H) + g->pad_h;
    if (rows * g->W * g->C >= lim || (int64_t)g->P * g->Q * g->ldy >= lim) return false;
    if ((int64_t)g->N * ((g->P + 1) / 2) * ((g->Q + kTileQ - 1) / kTileQ) >= lim) return false;
    return true;
}

/* Fills pl for geometry g (geometry_ok) with `warps` warps per block and the regular (small = 0)
 * or small warp tile. false: no such kernel, or its shared memory exceeds the device's limit. */
bool plan_variant(const cu_dconv_geom *g, int warps, int small, dconv_plan *pl)
{
    const int nt = g->K / 8, np = (nt + 1) / 2;
    const int mt = small ? small_mtiles(nt) : warp_mtiles(nt);
    if (mt == 0) return false;
    const int spx = mt * 16 + stage_pad(nt);
    dconv_params &p = pl->p;
    memset(&p, 0, sizeof p);
    p.H = g->H; p.W = g->W; p.C = g->C; p.K = g->K; p.R = g->R; p.S = g->S;
    p.sh = g->stride_h; p.sw = g->stride_w; p.ph = g->pad_h; p.pw = g->pad_w;
    p.P = g->P; p.Q = g->Q; p.ldy = g->ldy;
    p.act = g->act; p.alpha = g->alpha; p.beta = g->beta;
    p.tp = warps * mt / 2;
    p.tiles_q = (g->Q + kTileQ - 1) / kTileQ;
    p.tiles_p = (g->P + p.tp - 1) / p.tp;
    p.tiles = g->N * p.tiles_p * p.tiles_q;
    p.pr = (p.tp - 1) * p.sh + g->R;
    p.pc = (kTileQ - 1) * p.sw + g->S;
    /* 4 channels or fewer at stride 2 along W: a 16-byte operand row holds 2 taps (the zero
     * channels 4-7 skipped), and the k loop is half as long */
    p.pair = g->C_used >= 1 && g->C_used <= 4 && g->stride_w == 2;
    int patch_units;
    if (p.pair) {
        const int ld_cols = p.pc + (g->S & 1); /* even: 62 + S, rounded up */
        p.nch = g->R * ((g->S + 1) / 2);
        p.row_units = ld_cols;
        p.ccs = 0;
        p.ustride = g->C;
        p.phase = 0;
        p.half_w = ld_cols;
        p.pcp = ld_cols;
        p.rowp = ld_cols / 2;
        patch_units = p.pr * p.rowp;
    } else {
        const int cc = g->C / 8;
        p.nch = g->R * g->S * cc;
        p.row_units = p.pc * cc;
        p.ccs = cc - 1; /* cc is 1 or 2 */
        p.ustride = 8;
        p.phase = g->stride_w == 2;
        p.half_w = (p.pc + p.sw - 1) / p.sw;
        p.pcp = p.sw * p.half_w;
        p.rowp = p.pcp;
        patch_units = cc * p.pr * p.pcp;
    }
    p.ks = (p.nch + 1) / 2;
    const int stage_units = warps * nt * spx;
    p.buf_units = patch_units > stage_units ? patch_units : stage_units;
    p.wcpr = (2 * p.ks + 7) / 8 * 8;
    const size_t w_bytes = (size_t)np * 16 * p.wcpr * 16, kofs_bytes = zci_align((size_t)2 * p.ks * sizeof(int), 16);
    p.smem_kofs = (int)w_bytes;
    p.smem_buf = (int)(w_bytes + kofs_bytes);
    pl->smem = w_bytes + kofs_bytes + ((size_t)2 * p.buf_units + 1) * 16;
    const int limit = device_attr(cudaDevAttrMaxSharedMemoryPerBlockOptin);
    if (limit <= 0 || pl->smem > (size_t)limit) return false;
    pl->fn = kKernels[nt - 1][small][act_variant(g->act)];
    pl->threads = warps * 32;
    pl->mt = mt;
    pl->grid = 0;
    return true;
}

/* Sizes pl's grid: one persistent wave, tiles dealt evenly; max_blocks > 0 caps it (the test's
 * way to give each block many tiles). Lets the kernel have up to the device's whole per-block
 * shared memory: always the same value, so plans of other geometries on the same kernel (other
 * threads included) never lower it under this one's need. */
cudaError_t size_grid(dconv_plan &pl, int max_blocks)
{
    cudaError_t e = cudaFuncSetAttribute(pl.fn, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                         device_attr(cudaDevAttrMaxSharedMemoryPerBlockOptin));
    if (e != cudaSuccess) return e;
    int per_sm = 0;
    e = cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, pl.fn, pl.threads, pl.smem);
    if (e != cudaSuccess) return e;
    if (per_sm < 1) return cudaErrorInvalidConfiguration;
    const int sms = device_attr(cudaDevAttrMultiProcessorCount);
    if (sms < 1) return cudaErrorInvalidDevice;
    int64_t slots = (int64_t)per_sm * sms;
    if (max_blocks > 0 && slots > max_blocks) slots = max_blocks;
    /* as many tiles per block as the slots require, and no more blocks than that needs: a block
     * with one tile fewer than the others would only idle at the end */
    const int64_t per_block = (pl.p.tiles + slots - 1) / slots;
    pl.grid = (unsigned)((pl.p.tiles + per_block - 1) / per_block);
    return cudaSuccess;
}

/* A plan with its grid sized for g: the given block shape (warps 2, 4 or 8 and small 0 or 1),
 * or with warps 0 the one this picks. With at least 2 tiles per block on the regular 4-warp
 * shape the GPU is busy whatever the shape, and that one was the fastest (YOLOv5s at batch 32 on
 * an H100, pair mode: 171 us; 8 warps 178, 2 warps 212, small tiles 192-219). With fewer tiles
 * each warp's chain of dependent steps is the time: the shape whose busiest block has the least
 * to do, tiles per block times m-tiles per warp, ties to the regular tile and more warps
 * (batch 1: 8 warps 10.2 us, 4 warps 10.6, 2 warps 12.5, small tiles 11.1-14.2). false:
 * unsupported. */
bool make_plan(const cu_dconv_geom *g, int warps, int small, dconv_plan *pl)
{
    if (!geometry_ok(g)) return false;
    if (warps != 0) {
        if (warps != 2 && warps != 4 && warps != 8) return false;
        return plan_variant(g, warps, small, pl) && size_grid(*pl, 0) == cudaSuccess;
    }
    if (plan_variant(g, 4, 0, pl) && size_grid(*pl, 0) == cudaSuccess && pl->p.tiles >= 2 * (int64_t)pl->grid)
        return true;
    bool found = false;
    int64_t best = 0;
    for (int sm = 0; sm < 2; sm++)
        for (int w = 8; w >= 2; w /= 2) {
            dconv_plan c;
            if (!plan_variant(g, w, sm, &c) || size_grid(c, 0) != cudaSuccess) continue;
            const int64_t per_block = (c.p.tiles + c.grid - 1) / c.grid, cost = per_block * c.mt;
            if (!found || cost < best) {
                *pl = c;
                best = cost;
                found = true;
            }
        }
    return found;
}

bool aligned16(const void *ptr) { return ((uintptr_t)ptr & 15) == 0; }

/* Queues pl (its grid sized) on s with the buffers given. */
cudaError_t launch(dconv_plan &pl, const void *x, const void *w, const float *bias, void *y, cudaStream_t s)
{
    if (!x || !w || !bias || !y || !aligned16(x) || !aligned16(w) || !aligned16(y)) return cudaErrorInvalidValue;
    pl.p.x = (const __half *)x;
    pl.p.w = (const __half *)w;
    pl.p.bias = bias;
    pl.p.y = (__half *)y;
    pl.fn<<<pl.grid, pl.threads, pl.smem, s>>>(pl.p);
    return cudaGetLastError();
}

} // namespace

extern "C" int cu_dconv_supported(const cu_dconv_geom *g)
{
    dconv_plan pl;
    return g && make_plan(g, 0, 0, &pl);
}

extern "C" cudaError_t cu_dconv_run(const cu_dconv_geom *g, const void *x, const void *w, const float *bias, void *y,
                                    cudaStream_t s)
{
    dconv_plan pl;
    if (!g || !make_plan(g, 0, 0, &pl)) return cudaErrorInvalidValue;
    return launch(pl, x, w, bias, y, s);
}

/* ---------------------------------------------------------------- test hook (cuda_debug.h) */

static cu_dconv_geom test_geom(const zci_dconv_test *t)
{
    cu_dconv_geom g;
    g.N = t->N; g.H = t->H; g.W = t->W; g.C = t->C; g.K = t->K; g.R = t->R; g.S = t->S;
    g.stride_h = t->sh; g.stride_w = t->sw; g.pad_h = t->ph; g.pad_w = t->pw;
    g.P = t->P; g.Q = t->Q; g.ldy = t->ldy;
    g.act = t->act; g.alpha = t->alpha; g.beta = t->beta;
    g.C_used = t->C_used;
    return g;
}

extern "C" int zci_cuda_dconv_supported(const zci_dconv_test *t)
{
    const cu_dconv_geom g = test_geom(t);
    return cu_dconv_supported(&g);
}

extern "C" zci_status zci_cuda_dconv_test_run(const zci_dconv_test *t, int warps, int small, int max_blocks,
                                              uint16_t *y_host, float *us)
{
    if (!t || !t->x || !t->w || !t->bias || !y_host) return zci_error(ZCI_INVALID_ARGUMENT, "zci_cuda_dconv_test_run: bad arguments");
    const cu_dconv_geom g = test_geom(t);
    dconv_plan pl;
    if (!make_plan(&g, warps, small, &pl)) return zci_error(ZCI_UNSUPPORTED, "zci_cuda_dconv_test_run: geometry not supported");
    if (max_blocks > 0 && size_grid(pl, max_blocks) != cudaSuccess) return zci_error(ZCI_DEVICE_ERROR, "zci_cuda_dconv_test_run: grid");
    const size_t sizes[4] = {(size_t)t->N * t->H * t->W * t->C * 2, (size_t)t->K * t->R * t->S * t->C * 2,
                             (size_t)t->K * 4, (size_t)t->N * t->P * t->Q * t->ldy * 2};
    void *d[4] = {0};
    zci_status st = ZCI_OK;
    for (int i = 0; i < 4 && st == ZCI_OK; i++) {
        cudaError_t e = cudaMalloc(&d[i], sizes[i]);
        if (e != cudaSuccess) st = cu_cuda_error(e, "cudaMalloc");
    }
    if (st == ZCI_OK) {
        cudaError_t e = cudaMemcpy(d[0], t->x, sizes[0], cudaMemcpyHostToDevice);
        if (e == cudaSuccess) e = cudaMemcpy(d[1], t->w, sizes[1], cudaMemcpyHostToDevice);
        if (e == cudaSuccess) e = cudaMemcpy(d[2], t->bias, sizes[2], cudaMemcpyHostToDevice);
        if (e == cudaSuccess) e = cudaMemcpy(d[3], y_host, sizes[3], cudaMemcpyHostToDevice); /* keeps the caller's poison */
        if (e != cudaSuccess) st = cu_cuda_error(e, "zci_cuda_dconv_test_run: upload");
    }
    if (st == ZCI_OK) {
        cudaError_t e = launch(pl, d[0], d[1], (const float *)d[2], d[3], 0);
        if (e == cudaSuccess) e = cudaDeviceSynchronize();
        if (e != cudaSuccess) st = cu_cuda_error(e, "zci_cuda_dconv_test_run: kernel");
    }
    if (st == ZCI_OK && us) { /* 100 launches back to back */
        cudaEvent_t e0, e1;
        cudaEventCreate(&e0);
        cudaEventCreate(&e1);
        cudaEventRecord(e0, 0);
        cudaError_t e = cudaSuccess;
        for (int rep = 0; rep < 100 && e == cudaSuccess; rep++) e = launch(pl, d[0], d[1], (const float *)d[2], d[3], 0);
        cudaEventRecord(e1, 0);
        if (e == cudaSuccess) e = cudaEventSynchronize(e1);
        float ms = 0;
        cudaEventElapsedTime(&ms, e0, e1);
        *us = ms * 10.f;
        cudaEventDestroy(e0);
        cudaEventDestroy(e1);
        if (e != cudaSuccess) st = cu_cuda_error(e, "zci_cuda_dconv_test_run: timing");
    }
    if (st == ZCI_OK) {
        cudaError_t e = cudaMemcpy(y_host, d[3], sizes[3], cudaMemcpyDeviceToHost);
        if (e != cudaSuccess) st = cu_cuda_error(e, "zci_cuda_dconv_test_run: download");
    }
    for (int i = 0; i < 4; i++) cudaFree(d[i]);
    return st;
}
