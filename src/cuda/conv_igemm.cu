/* conv_igemm.cu: our own FP16 convolution for NHWC tensors, an implicit GEMM on the tensor cores
 * with the whole epilogue (bias, activation, residual add) applied before the one store.
 *
 * Why our own: at batch 1 YOLOv5s is about 60 convolutions of 0.1-1 GFLOP each, and cuDNN's
 * kernels for them (runtime-compiled fusion engines) took ~10 us apiece against an arithmetic
 * floor of well under a microsecond; they also cost seconds of NVRTC compilation at every session
 * creation and every engine-file load. A kernel we compile ahead of time starts instantly.
 * Where it stands (bench/NOTES.md, steps 9-13): on par with cuDNN on 1x1 layers at batch 1, about
 * 2x slower on 3x3 layers with long k (each k tile waits on a load round trip), 0.80 ms against
 * 0.55 ms for all of yolov5s. So conv.cu plans both and backend.c keeps, per model, whichever
 * runs the whole model fastest; ZCI_CUDA_CONV=igemm forces this kernel (fastest creation and
 * engine load).
 *
 * The GEMM view (row m = an output pixel (n, oh, ow), column = an output channel, k = (r, s, c)):
 *     Y[m][col] = sum_k X[n][oh*sh - ph + r*dh][ow*sw - pw + s*dw][c] * W[col][r][s][c]
 * With C a multiple of 8, every run of 8 consecutive k is 8 channels of one input pixel: one
 * 16-byte load, or zeros where the window leaves the image. A block computes a BM x BN tile of Y
 * over k tiles of 32: cp.async copies the next tiles into shared memory (3 to 8 stages, by tile
 * shape) while warps multiply the current one with ldmatrix + mma.sync m16n8k16 (FP16 in, FP32
 * accumulators).
 * Shared-memory rows are 64 bytes; chunk j of row r sits at j ^ ((r >> 1) & 3), so the 8 rows an
 * ldmatrix reads fall in 8 different bank groups.
 *
 * Small-M layers (deep 20x20 layers at batch 1: 400 rows, K up to 4608) would leave most SMs
 * idle, so the k range can be split over gridDim.z blocks: each writes its FP32 partial tile to
 * the workspace, and the last block of a tile to arrive (a counter per tile) adds the partials in
 * split order (deterministic: the same sum whichever block comes last), applies the epilogue,
 * stores, and resets the counter for the next launch.
 *
 * Which tile shape and split is fastest depends on the layer; each distinct geometry is timed
 * once at planning on the session's own buffers, and the choice is kept in engine files. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cuda/cuda_debug.h"
#include "cuda/kernels.cuh"

using namespace zci_cu;

namespace {

constexpr int kBK = 32;     /* k per tile: 4 chunks of 8 halves */
constexpr int kTuneLaunches = 8; /* launches per timing while tuning */

/* n / d and n % d for 0 <= n < 2^31 by a multiply and a shift (d > 0, set on the host): the
 * integer divisions of the row set-up were a long dependent chain in a kernel whose small
 * layers are bound by instruction latency. */
struct fastdiv {
    uint32_t d, mul, shift;
};

struct igemm_params {
    const __half *x;     /* NHWC (N, H, W, C) */
    const __half *w;     /* (Nc, R, S, C) */
    const float *bias;   /* Nc, or NULL */
    const __half *res;   /* residual (M, ldr), or NULL */
    __half *y;           /* (M, ldy) */
    float *ws;           /* split-K partials: splits x M x Nc */
    int *counters;       /* per output tile, zero between launches */
    int H, W, C, OH, OW;
    int R, S, sh, sw, ph, pw, dh, dw;
    int M, Nc, Kg;       /* rows, columns (output channels), R*S*C */
    int ldy, ldr;        /* channel strides of y and res */
    int kt_per_split;    /* k tiles per block along z */
    int act;
    float alpha, beta;
    int sum_first;
    int vec2;            /* y and res may be accessed as half2 */
    int vec8;            /* y, res and bias may be accessed 8 channels (16 bytes) at a time */
    fastdiv div_ow, div_oh;
};

__device__ __forceinline__ uint32_t fdiv(uint32_t n, const fastdiv &f) { return (__umulhi(n, f.mul) + n) >> f.shift; }

__device__ __forceinline__ void cp_async16(void *smem, const void *gmem, bool pred)
{
    const unsigned s = (unsigned)__cvta_generic_to_shared(smem);
    const int n = pred ? 16 : 0; /* 0: the 16 bytes are zero-filled, nothing is read */
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(s), "l"(gmem), "r"(n));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int N> __device__ __forceinline__ void cp_async_wait() { asm volatile("cp.async.wait_group %0;\n" ::"n"(N)); }

__device__ __forceinline__ void ldmatrix_x4(uint32_t *r, const void *smem)
{
    const unsigned s = (unsigned)__cvta_generic_to_shared(smem);
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(s));
}

__device__ __forceinline__ void mma16816(float *c, const uint32_t *a, const uint32_t *b)
{
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
                 "{%0, %1, %2, %3};\n"
                 : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}

/* Offset of chunk `chunk` (8 halves) of row `row` in a 64-byte-row tile. */
__device__ __forceinline__ int swz(int row, int chunk) { return row * kBK + ((chunk ^ ((row >> 1) & 3)) << 3); }

/* The activations with their own kernels (the rest share one with a run-time switch): the
 * epilogue is unrolled over every accumulator, and a switch with exp and division in each copy
 * made the kernels tens of KB of straight-line code, which cost more in instruction fetches than
 * the arithmetic. ACT_GENERIC: p.act at run time. */
enum { A_NONE = 0, A_RELU = 1, A_SILU = 2, A_SIGMOID = 3, A_GENERIC = 4, A_COUNT = 5 };

int act_variant(int act)
{
    switch (act) {
    case ZCI_ACT_NONE: return A_NONE;
    case ZCI_ACT_RELU: return A_RELU;
    case ZCI_ACT_SILU: return A_SILU;
    case ZCI_ACT_SIGMOID: return A_SIGMOID;
    default: return A_GENERIC;
    }
}

template <int ACT> __device__ __forceinline__ float act_fn(const igemm_params &p, float x)
{
    if (ACT == A_NONE) return x;
    if (ACT == A_RELU) return fmaxf(x, 0.f);
    /* 1 / (1 + e^-x): __frcp_rn of an infinite denominator is 0, so very negative x gives 0 */
    if (ACT == A_SILU) return x * __frcp_rn(1.f + __expf(-x));
    if (ACT == A_SIGMOID) return __frcp_rn(1.f + __expf(-x));
    return activate(p.act, x, p.alpha, p.beta);
}

/* The epilogue of two adjacent columns (col, col + 1; the second only when col + 1 < Nc). */
template <int ACT>
__device__ __forceinline__ void store2(const igemm_params &p, int row, int col, float v0, float v1)
{
    const bool two = col + 1 < p.Nc;
    if (p.bias) {
        v0 += p.bias[col];
        if (two) v1 += p.bias[col + 1];
    }
    float r0 = 0.f, r1 = 0.f;
    if (p.res) {
        const __half *rp = p.res + (size_t)row * p.ldr + col;
        if (two && p.vec2) {
            const float2 f = __half22float2(*(const __half2 *)rp);
            r0 = f.x;
            r1 = f.y;
        } else {
            r0 = __half2float(rp[0]);
            if (two) r1 = __half2float(rp[1]);
        }
    }
    if (p.sum_first) {
        v0 += r0;
        v1 += r1;
    }
    v0 = act_fn<ACT>(p, v0);
    v1 = act_fn<ACT>(p, v1);
    if (!p.sum_first) {
        v0 += r0;
        v1 += r1;
    }
    __half *yp = p.y + (size_t)row * p.ldy + col;
    if (two && p.vec2) {
        *(__half2 *)yp = __floats2half2_rn(v0, v1);
    } else {
        yp[0] = __float2half_rn(v0);
        if (two) yp[1] = __float2half_rn(v1);
    }
}

template <int BM, int BN, int WARPS_M, int WARPS_N, int STAGES, int ACT>
__global__ void __launch_bounds__(WARPS_M *WARPS_N * 32) k_igemm(const igemm_params p)
{
    constexpr int kStages = STAGES;
    constexpr int THREADS = WARPS_M * WARPS_N * 32;
    constexpr int WM = BM / WARPS_M, WN = BN / WARPS_N;
    constexpr int MT = WM / 16, NT = WN / 8;
    constexpr int ROWS = THREADS / 4; /* tile rows one pass of the block loads */
    constexpr int A_ITERS = BM / ROWS, B_ITERS = BN / ROWS;
    static_assert(WM % 16 == 0 && WN % 16 == 0, "warp tile");
    static_assert(BM % ROWS == 0 && BN % ROWS == 0, "load passes");

    extern __shared__ __align__(16) unsigned char smem_raw[];
    __half *sA = (__half *)smem_raw;
    __half *sB = sA + kStages * BM * kBK;
    __shared__ int s_last;

    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const int wm = warp % WARPS_M, wn = warp / WARPS_M;
    const int m0 = blockIdx.x * BM, n0 = blockIdx.y * BN;
    const int kc = tid & 3; /* the chunk this thread loads in every row */
    const int KT = (p.Kg + kBK - 1) / kBK;
    const int kt0 = blockIdx.z * p.kt_per_split;
    const int kt1 = min(KT, kt0 + p.kt_per_split);
    const int nkt = kt1 > kt0 ? kt1 - kt0 : 0;

    /* the rows this thread loads: image offset and the window's top-left corner */
    int a_base[A_ITERS], a_ih[A_ITERS], a_iw[A_ITERS];
#pragma unroll
    for (int i = 0; i < A_ITERS; i++) {
        const int m = m0 + (tid >> 2) + i * ROWS;
        if (m < p.M) {
            const int t = (int)fdiv((uint32_t)m, p.div_ow), ow = m - t * p.OW;
            const int nb = (int)fdiv((uint32_t)t, p.div_oh), oh = t - nb * p.OH;
            a_base[i] = nb * p.H * p.W * p.C;
            a_ih[i] = oh * p.sh - p.ph;
            a_iw[i] = ow * p.sw - p.pw;
        } else {
            a_base[i] = 0;
            a_ih[i] = -(1 << 29); /* never inside the image */
            a_iw[i] = 0;
        }
    }
    int b_off[B_ITERS];
    bool b_ok[B_ITERS];
#pragma unroll
    for (int j = 0; j < B_ITERS; j++) {
        const int n = n0 + (tid >> 2) + j * ROWS;
        b_ok[j] = n < p.Nc;
        b_off[j] = b_ok[j] ? n * p.Kg : 0;
    }

    /* (c, r, s) of the 8 channels this thread loads from the next k tile: divided out once,
     * then advanced by kBK per tile */
    int kn = kt0 * kBK + kc * 8, kc_c = 0, kc_r = 0, kc_s = 0;
    {
        const int rs = kn / p.C;
        kc_c = kn - rs * p.C;
        kc_r = rs / p.S;
        kc_s = rs - kc_r * p.S;
    }
    auto load_tile = [&](int stage) {
        const bool kok = kn < p.Kg;
        const int dih = kc_r * p.dh, diw = kc_s * p.dw;
        __half *tA = sA + stage * BM * kBK;
#pragma unroll
        for (int i = 0; i < A_ITERS; i++) {
            const int row = (tid >> 2) + i * ROWS;
            const int ih = a_ih[i] + dih, iw = a_iw[i] + diw;
            const bool ok = kok && (unsigned)ih < (unsigned)p.H && (unsigned)iw < (unsigned)p.W;
            const __half *src = ok ? p.x + a_base[i] + (ih * p.W + iw) * p.C + kc_c : p.x;
            cp_async16(tA + swz(row, kc), src, ok);
        }
        __half *tB = sB + stage * BN * kBK;
#pragma unroll
        for (int j = 0; j < B_ITERS; j++) {
            const int row = (tid >> 2) + j * ROWS;
            const bool ok = kok && b_ok[j];
            cp_async16(tB + swz(row, kc), ok ? p.w + b_off[j] + kn : p.w, ok);
        }
        kn += kBK;
        kc_c += kBK;
        while (kc_c >= p.C) {
            kc_c -= p.C;
            if (++kc_s == p.S) {
                kc_s = 0;
                kc_r++;
            }
        }
    };

    float acc[MT][NT][4];
#pragma unroll
    for (int i = 0; i < MT; i++)
#pragma unroll
        for (int j = 0; j < NT; j++)
#pragma unroll
            for (int e = 0; e < 4; e++) acc[i][j][e] = 0.f;

#pragma unroll
    for (int st = 0; st < kStages - 1; st++) {
        if (st < nkt) load_tile(st);
        cp_async_commit();
    }
    for (int it = 0; it < nkt; it++) {
        cp_async_wait<kStages - 2>();
        __syncthreads(); /* tile `it` landed for every thread; stage (it - 1) % kStages is free */
        const int pf = it + kStages - 1;
        if (pf < nkt) load_tile(pf % kStages);
        cp_async_commit();
        const __half *tA = sA + (it % kStages) * BM * kBK, *tB = sB + (it % kStages) * BN * kBK;
#pragma unroll
        for (int kk = 0; kk < 2; kk++) {
            uint32_t af[MT][4], bf[NT][2];
#pragma unroll
            for (int mt = 0; mt < MT; mt++) {
                const int row = wm * WM + mt * 16 + (lane & 15);
                ldmatrix_x4(af[mt], tA + swz(row, 2 * kk + (lane >> 4)));
            }
#pragma unroll
            for (int nt = 0; nt < NT; nt += 2) {
                const int row = wn * WN + nt * 8 + (lane & 7) + ((lane >> 4) << 3);
                uint32_t t[4];
                ldmatrix_x4(t, tB + swz(row, 2 * kk + ((lane >> 3) & 1)));
                bf[nt][0] = t[0];
                bf[nt][1] = t[1];
                bf[nt + 1][0] = t[2];
                bf[nt + 1][1] = t[3];
            }
#pragma unroll
            for (int mt = 0; mt < MT; mt++)
#pragma unroll
                for (int nt = 0; nt < NT; nt++) mma16816(acc[mt][nt], af[mt], bf[nt]);
        }
    }
    cp_async_wait<0>();
    __syncthreads(); /* the pipeline's shared memory becomes the output tile */

    /* The output tile goes through shared memory (FP32, rows padded by 4 words against bank
     * conflicts), so that the epilogue handles 8 channels per step with 16-byte loads and stores
     * in one compact loop. */
    constexpr int LDS = BN + 4;
    float *sC = (float *)smem_raw;
    const int g = lane >> 2, t4 = lane & 3;
    const int splits = (int)gridDim.z;
    if (splits > 1) {
        float *mine = p.ws + (size_t)blockIdx.z * p.M * p.Nc;
#pragma unroll
        for (int mt = 0; mt < MT; mt++)
#pragma unroll
            for (int nt = 0; nt < NT; nt++)
#pragma unroll
                for (int h = 0; h < 2; h++) {
                    const int row = m0 + wm * WM + mt * 16 + g + h * 8;
                    const int col = n0 + wn * WN + nt * 8 + t4 * 2;
                    if (row >= p.M) continue;
                    if (col < p.Nc) mine[(size_t)row * p.Nc + col] = acc[mt][nt][2 * h];
                    if (col + 1 < p.Nc) mine[(size_t)row * p.Nc + col + 1] = acc[mt][nt][2 * h + 1];
                }
        __threadfence();
        __syncthreads();
        if (tid == 0) {
            const int tile = blockIdx.y * gridDim.x + blockIdx.x;
            const int prev = atomicAdd(&p.counters[tile], 1);
            s_last = prev == splits - 1;
            if (s_last) p.counters[tile] = 0; /* every block of the tile has arrived */
        }
        __syncthreads();
        if (!s_last) return;
        __threadfence();
        /* the tile's partials in split order, this block's own too: the same sum whichever
         * block arrives last */
#pragma unroll 1
        for (int e0 = tid; e0 < BM * BN; e0 += 4 * THREADS) {
            /* four elements per thread per pass, every split's load issued before the sums:
             * the partials come from L2, and one load at a time left the block waiting */
            float v[4] = {0.f, 0.f, 0.f, 0.f};
#pragma unroll 1
            for (int z0 = 0; z0 < splits; z0 += 4) {
                float part[4][4];
#pragma unroll
                for (int u = 0; u < 4; u++) {
                    const int e = e0 + u * THREADS, r = e / BN, row = m0 + r, col = n0 + e % BN;
                    const bool ok = e < BM * BN && row < p.M && col < p.Nc;
#pragma unroll
                    for (int z = 0; z < 4; z++)
                        part[u][z] = ok && z0 + z < splits ? __ldcg(p.ws + ((size_t)(z0 + z) * p.M + row) * p.Nc + col) : 0.f;
                }
#pragma unroll
                for (int u = 0; u < 4; u++)
#pragma unroll
                    for (int z = 0; z < 4; z++) v[u] += part[u][z];
            }
#pragma unroll
            for (int u = 0; u < 4; u++) {
                const int e = e0 + u * THREADS;
                if (e < BM * BN) sC[(e / BN) * LDS + e % BN] = v[u];
            }
        }
    } else {
#pragma unroll
        for (int mt = 0; mt < MT; mt++)
#pragma unroll
            for (int nt = 0; nt < NT; nt++)
#pragma unroll
                for (int h = 0; h < 2; h++) {
                    const int r = wm * WM + mt * 16 + g + h * 8, cc = wn * WN + nt * 8 + t4 * 2;
                    *(float2 *)&sC[r * LDS + cc] = make_float2(acc[mt][nt][2 * h], acc[mt][nt][2 * h + 1]);
                }
    }
    __syncthreads();
#pragma unroll 1
    for (int e = tid; e < BM * BN / 8; e += THREADS) {
        const int r = e / (BN / 8), c8 = (e % (BN / 8)) * 8;
        const int row = m0 + r, col = n0 + c8;
        if (row >= p.M || col >= p.Nc) continue;
        if (p.vec8 && col + 8 <= p.Nc) {
            const float4 lo = *(const float4 *)&sC[r * LDS + c8], hi = *(const float4 *)&sC[r * LDS + c8 + 4];
            float v[8] = {lo.x, lo.y, lo.z, lo.w, hi.x, hi.y, hi.z, hi.w};
            if (p.bias) {
                const float4 b0 = *(const float4 *)(p.bias + col), b1 = *(const float4 *)(p.bias + col + 4);
                v[0] += b0.x; v[1] += b0.y; v[2] += b0.z; v[3] += b0.w;
                v[4] += b1.x; v[5] += b1.y; v[6] += b1.z; v[7] += b1.w;
            }
            float rv[8] = {0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f};
            if (p.res) {
                const uint4 raw = *(const uint4 *)(p.res + (size_t)row * p.ldr + col);
                const __half2 *h2 = (const __half2 *)&raw;
#pragma unroll
                for (int j = 0; j < 4; j++) {
                    const float2 f = __half22float2(h2[j]);
                    rv[2 * j] = f.x;
                    rv[2 * j + 1] = f.y;
                }
            }
            uint4 out;
            __half2 *o2 = (__half2 *)&out;
#pragma unroll
            for (int j = 0; j < 8; j += 2) {
                float a = v[j], b = v[j + 1];
                if (p.sum_first) {
                    a += rv[j];
                    b += rv[j + 1];
                }
                a = act_fn<ACT>(p, a);
                b = act_fn<ACT>(p, b);
                if (!p.sum_first) {
                    a += rv[j];
                    b += rv[j + 1];
                }
                o2[j / 2] = __floats2half2_rn(a, b);
            }
            *(uint4 *)(p.y + (size_t)row * p.ldy + col) = out;
        } else {
#pragma unroll 1
            for (int j = 0; j < 8 && col + j < p.Nc; j++) {
                float a = sC[r * LDS + c8 + j] + (p.bias ? p.bias[col + j] : 0.f);
                const float rj = p.res ? __half2float(p.res[(size_t)row * p.ldr + col + j]) : 0.f;
                if (p.sum_first) a += rj;
                a = act_fn<ACT>(p, a);
                if (!p.sum_first) a += rj;
                p.y[(size_t)row * p.ldy + col + j] = __float2half_rn(a);
            }
        }
    }
}

/* The same function one output element per thread, with no alignment or channel-count needs:
 * the fallback for buffers the tiled kernel cannot read with 16-byte loads. */
__global__ void k_conv_direct(const igemm_params p)
{
    const int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (int64_t)p.M * p.Nc) return;
    const int row = (int)(i / p.Nc), col = (int)(i % p.Nc);
    const int ow = row % p.OW, t = row / p.OW, oh = t % p.OH, nb = t / p.OH;
    float sum = 0.f;
    for (int r = 0; r < p.R; r++) {
        const int ih = oh * p.sh - p.ph + r * p.dh;
        if (ih < 0 || ih >= p.H) continue;
        for (int s = 0; s < p.S; s++) {
            const int iw = ow * p.sw - p.pw + s * p.dw;
            if (iw < 0 || iw >= p.W) continue;
            const __half *xp = p.x + ((size_t)(nb * p.H + ih) * p.W + iw) * p.C;
            const __half *wp = p.w + (size_t)col * p.Kg + (size_t)(r * p.S + s) * p.C;
            for (int c = 0; c < p.C; c++) sum += __half2float(xp[c]) * __half2float(wp[c]);
        }
    }
    igemm_params q = p;
    q.vec2 = 0;
    q.Nc = col + 1; /* store2 writes only this column */
    store2<A_GENERIC>(q, row, col, sum, 0.f);
}

typedef void (*kernel_fn)(igemm_params);

struct tile_cfg {
    int bm, bn, threads, stages;
    kernel_fn fn[A_COUNT]; /* per act_variant */
};

#define CFG(BM, BN, WM_, WN_, ST)                                                                                      \
    {                                                                                                                  \
        BM, BN, WM_ * WN_ * 32, ST,                                                                                    \
        {                                                                                                              \
            k_igemm<BM, BN, WM_, WN_, ST, A_NONE>, k_igemm<BM, BN, WM_, WN_, ST, A_RELU>,                              \
                k_igemm<BM, BN, WM_, WN_, ST, A_SILU>, k_igemm<BM, BN, WM_, WN_, ST, A_SIGMOID>,                        \
                k_igemm<BM, BN, WM_, WN_, ST, A_GENERIC>                                                               \
        }                                                                                                              \
    }
/* Deep pipelines for the small tiles: at batch 1 a block's k loop waits on the latency of its
 * loads (about 0.3 us per k tile with 3 stages, measured), not on the tensor cores. */
const tile_cfg kCfgs[] = {
    CFG(128, 128, 2, 2, 4), /* 0: large layers, batch > 1 */
    CFG(128, 64, 2, 2, 4),  /* 1 */
    CFG(64, 64, 2, 2, 6),   /* 2 */
    CFG(128, 32, 4, 1, 6),  /* 3: 32 output channels */
    CFG(64, 32, 2, 1, 6),   /* 4 */
    CFG(32, 64, 1, 2, 6),   /* 5: few rows (deep layers at batch 1) */
    CFG(256, 128, 4, 2, 3), /* 6: 8 warps, batch 32 */
    CFG(64, 32, 4, 1, 6),   /* 7: 16-row warps: more warps for small layers */
    CFG(32, 32, 2, 1, 8),   /* 8 */
    CFG(64, 64, 4, 1, 6),   /* 9 */
};
#undef CFG
constexpr int kNumCfgs = (int)(sizeof kCfgs / sizeof kCfgs[0]);

/* The pipeline's stages, or the FP32 output tile of the epilogue if that is larger. */
size_t smem_bytes(const tile_cfg &t)
{
    const size_t pipe = (size_t)t.stages * (t.bm + t.bn) * kBK * sizeof(__half);
    const size_t out = (size_t)t.bm * (t.bn + 4) * sizeof(float);
    return pipe > out ? pipe : out;
}

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

fastdiv make_fastdiv(uint32_t d)
{
    fastdiv f;
    f.d = d;
    f.shift = 0;
    while ((1ull << f.shift) < d) f.shift++;
    f.mul = (uint32_t)((((1ull << 32) * ((1ull << f.shift) - d)) / d) + 1);
    return f;
}

} // namespace

/* ---------------------------------------------------------------- host side */

struct cu_igemm {
    igemm_params p;   /* geometry and epilogue; pointers filled per launch */
    int cfg;          /* kCfgs index, or -1: the direct kernel */
    int splits;
    size_t ws_bytes;  /* split-K partials */
};

/* Lets every configuration have its dynamic shared memory: beyond 48 KB per block (static
 * included) a kernel must opt in, and 128x128 tiles need exactly 48 KB plus the static flag. */
static zci_status allow_smem(void)
{
    for (int i = 0; i < kNumCfgs; i++)
        for (int a = 0; a < A_COUNT; a++) {
            cudaError_t e = cudaFuncSetAttribute(kCfgs[i].fn[a], cudaFuncAttributeMaxDynamicSharedMemorySize,
                                                 (int)smem_bytes(kCfgs[i]));
            if (e != cudaSuccess) return cu_cuda_error(e, "cudaFuncSetAttribute (convolution kernel)");
        }
    return ZCI_OK;
}

extern "C" int cu_igemm_eligible(const cu_ctx *c, const zci_node *n, int xc)
{
    const zci_conv_params *p = (const zci_conv_params *)n->params;
    const char *env = getenv("ZCI_CUDA_CONV");
    if (env && !strcmp(env, "cudnn")) return 0;
    if (!c->fp16 || !cu_nhwc(c, n) || c->dt[n->in[0]] != ZCI_FLOAT16) return 0;
    if (p->w.nsp != 2 || p->group != 1 || xc % 8 != 0) return 0;
    const int64_t kg = p->w.kernel[0] * p->w.kernel[1] * xc;
    const zci_tensor *y = &c->g->tensors[n->out[0]];
    /* 32-bit index arithmetic inside the kernel */
    if (kg * p->out_ch >= ((int64_t)1 << 31) || zci_tensor_numel(y) >= ((int64_t)1 << 31)) return 0;
    return 1;
}

static void launch_cfg(const igemm_params &p, int cfg, int splits, cudaStream_t st)
{
    if (cfg < 0) {
        const int64_t n = (int64_t)p.M * p.Nc;
        k_conv_direct<<<(unsigned)ceil_div(n, 128), 128, 0, st>>>(p);
        return;
    }
    const tile_cfg &t = kCfgs[cfg];
    igemm_params q = p;
    const int KT = (int)ceil_div(p.Kg, kBK);
    q.kt_per_split = (int)ceil_div(KT, splits);
    dim3 grid((unsigned)ceil_div(p.M, t.bm), (unsigned)ceil_div(p.Nc, t.bn), (unsigned)splits);
    t.fn[act_variant(p.act)]<<<grid, t.threads, smem_bytes(t), st>>>(q);
}

/* Splits worth trying for a tile shape: more blocks along k when the output tiles alone leave
 * SMs idle, each block keeping at least 4 k tiles. */
static int split_options(int64_t blocks, int KT, int sms, int *out)
{
    int n = 0;
    out[n++] = 1;
    if (blocks >= sms) return n;
    for (int s = 2; s <= 16; s *= 2)
        if (KT / s >= 4 && blocks * s <= 4 * sms) out[n++] = s;
    return n;
}

extern "C" zci_status cu_igemm_build(cu_ctx *c, const zci_node *n, int xc, cu_igemm **out)
{
    *out = NULL;
    const zci_conv_params *cp = (const zci_conv_params *)n->params;
    const zci_tensor *x = &c->g->tensors[n->in[0]], *y = &c->g->tensors[n->out[0]];
    cu_igemm *g = (cu_igemm *)zci_calloc(1, sizeof *g, "convolution plan");
    if (!g) return ZCI_OUT_OF_MEMORY;
    igemm_params &p = g->p;
    p.H = (int)x->dims[2];
    p.W = (int)x->dims[3];
    p.C = xc;
    p.OH = (int)y->dims[2];
    p.OW = (int)y->dims[3];
    p.R = (int)cp->w.kernel[0];
    p.S = (int)cp->w.kernel[1];
    p.sh = (int)cp->w.stride[0];
    p.sw = (int)cp->w.stride[1];
    p.ph = (int)cp->w.pad_begin[0];
    p.pw = (int)cp->w.pad_begin[1];
    p.dh = (int)cp->w.dilation[0];
    p.dw = (int)cp->w.dilation[1];
    p.M = (int)(y->dims[0] * y->dims[2] * y->dims[3]);
    p.Nc = (int)y->dims[1];
    p.Kg = p.R * p.S * p.C;
    /* an input of a Concat done in place: its channels of the Concat's wider buffer */
    p.ldy = c->slice_ld && c->slice_ld[n->out[0]] ? c->slice_ld[n->out[0]] : p.Nc;
    p.ldr = p.Nc;
    p.div_ow = make_fastdiv((uint32_t)p.OW);
    p.div_oh = make_fastdiv((uint32_t)p.OH);
    p.act = cp->activation;
    p.alpha = cp->act_alpha;
    p.beta = cp->act_beta;
    p.sum_first = cp->sum_first;
    g->cfg = -1;
    g->splits = 1;
    /* once per session (the attribute belongs to the device the session runs on) */
    zci_status st = c->igemm_smem_set ? ZCI_OK : allow_smem();
    if (st != ZCI_OK) {
        free(g);
        return st;
    }
    c->igemm_smem_set = 1;
    *out = g;
    return ZCI_OK;
}

/* The planned geometry's key for sharing tuning results between equal convolutions. */
static bool same_geometry(const igemm_params &a, const igemm_params &b)
{
    return a.H == b.H && a.W == b.W && a.C == b.C && a.OH == b.OH && a.OW == b.OW && a.R == b.R && a.S == b.S &&
           a.sh == b.sh && a.sw == b.sw && a.ph == b.ph && a.pw == b.pw && a.dh == b.dh && a.dw == b.dw &&
           a.M == b.M && a.Nc == b.Nc && a.ldy == b.ldy && (a.res != nullptr) == (b.res != nullptr);
}

struct tuned {
    igemm_params p;
    int cfg, splits;
    float us;
};
struct cu_igemm_tuning {
    tuned *t;
    int n, cap;
    void *ws;       /* scratch for the split candidates */
    size_t ws_size;
    int *counters;
};

/* The split-K tile counters, zeroed once: every launch leaves them zero again. */
static zci_status ensure_counters(cu_ctx *c)
{
    if (c->igemm_counters) return ZCI_OK;
    ZCI_TRY(cu_malloc(c, CU_IGEMM_MAX_TILES * sizeof(int), "convolution tile counters", (void **)&c->igemm_counters));
    CU_TRY(cudaMemset(c->igemm_counters, 0, CU_IGEMM_MAX_TILES * sizeof(int)));
    return ZCI_OK;
}

static zci_status tuning_scratch(cu_ctx *c, size_t bytes)
{
    if (!c->igemm_tuning) {
        c->igemm_tuning = (cu_igemm_tuning *)zci_calloc(1, sizeof(cu_igemm_tuning), "convolution tuning");
        if (!c->igemm_tuning) return ZCI_OUT_OF_MEMORY;
    }
    cu_igemm_tuning *tu = c->igemm_tuning;
    ZCI_TRY(ensure_counters(c));
    if (bytes > tu->ws_size) {
        if (tu->ws) cudaFree(tu->ws);
        tu->ws = NULL;
        tu->ws_size = 0;
        CU_TRY(cudaMalloc(&tu->ws, bytes));
        tu->ws_size = bytes;
    }
    return ZCI_OK;
}

extern "C" void cu_igemm_tuning_release(cu_ctx *c)
{
    cu_igemm_tuning *tu = c->igemm_tuning;
    if (!tu) return;
    if (tu->ws) cudaFree(tu->ws);
    free(tu->t);
    free(tu);
    c->igemm_tuning = NULL;
}

/* 16-byte epilogue accesses: channel strides and every pointer on 8-element boundaries. */
static int vec8_ok(const igemm_params &p)
{
    return p.ldy % 8 == 0 && p.ldr % 8 == 0 && ((uintptr_t)p.y & 15) == 0 && ((uintptr_t)p.res & 15) == 0 &&
           ((uintptr_t)p.bias & 15) == 0;
}

/* Fills p's pointers for node n's buffers of this run. */
static void bind(cu_ctx *c, const zci_node *n, const void *w, const float *bias, igemm_params &p)
{
    const zci_conv_params *cp = (const zci_conv_params *)n->params;
    p.x = (const __half *)cu_in(c, n, 0);
    p.w = (const __half *)w;
    p.bias = bias;
    p.res = cp->sum_input >= 0 ? (const __half *)cu_in(c, n, cp->sum_input) : nullptr;
    p.y = (__half *)c->ptr[n->out[0]];
    p.ws = (float *)c->workspace;
    p.counters = c->igemm_counters;
    p.vec2 = (p.ldy % 2 == 0) && (p.ldr % 2 == 0) && ((uintptr_t)p.y % 4 == 0) && ((uintptr_t)p.res % 4 == 0);
    p.vec8 = vec8_ok(p);
}

static bool aligned16(const void *ptr) { return ((uintptr_t)ptr & 15) == 0; }

extern "C" zci_status cu_igemm_tune(cu_ctx *c, const zci_node *n, cu_igemm *g, const void *w, const float *bias,
                                    int forced_cfg, int forced_splits, float *best_us)
{
    if (best_us) *best_us = 0.f;
    igemm_params p = g->p;
    bind(c, n, w, bias, p);
    int sms = 132;
    {
        int dev = 0, v = 0;
        if (cudaGetDevice(&dev) == cudaSuccess && cudaDeviceGetAttribute(&v, cudaDevAttrMultiProcessorCount, dev) == cudaSuccess)
            sms = v;
    }
    const int KT = (int)ceil_div(p.Kg, kBK);
    /* a choice from an engine file, or from an equal convolution planned earlier */
    if (forced_cfg >= -1 && forced_cfg < kNumCfgs && forced_splits >= 1) {
        g->cfg = forced_cfg;
        g->splits = forced_cfg < 0 ? 1 : forced_splits;
    } else {
        ZCI_TRY(tuning_scratch(c, 0));
        cu_igemm_tuning *tu = c->igemm_tuning;
        int found = -1;
        for (int i = 0; i < tu->n; i++)
            if (same_geometry(tu->t[i].p, p)) found = i;
        if (found >= 0) {
            g->cfg = tu->t[found].cfg;
            g->splits = tu->t[found].splits;
            if (best_us) *best_us = tu->t[found].us;
        } else {
            /* time every candidate on the session's buffers: one warm-up launch, then the better
             * of two runs of kTuneLaunches launches */
            size_t ws_need = 0;
            for (int i = 0; i < kNumCfgs; i++) {
                int so[8];
                const int64_t blocks = ceil_div(p.M, kCfgs[i].bm) * ceil_div(p.Nc, kCfgs[i].bn);
                int ns = split_options(blocks, KT, sms, so);
                for (int k = 0; k < ns; k++)
                    if (so[k] > 1 && blocks <= CU_IGEMM_MAX_TILES) {
                        size_t b = (size_t)so[k] * p.M * p.Nc * sizeof(float);
                        if (b > ws_need) ws_need = b;
                    }
            }
            ZCI_TRY(tuning_scratch(c, ws_need));
            p.ws = (float *)tu->ws;
            p.counters = c->igemm_counters;
            cudaStream_t st = c->own_stream;
            cudaEvent_t e0, e1;
            CU_TRY(cudaEventCreate(&e0));
            CU_TRY(cudaEventCreate(&e1));
            float best = 1e30f;
            int best_cfg = -1, best_splits = 1;
            zci_status r = ZCI_OK;
            for (int i = 0; i < kNumCfgs && r == ZCI_OK; i++) {
                const int64_t blocks = ceil_div(p.M, kCfgs[i].bm) * ceil_div(p.Nc, kCfgs[i].bn);
                if (blocks > 65535LL * 65535LL) continue;
                /* shapes that waste most of a tile on padding are never fastest */
                if (kCfgs[i].bn > 32 && p.Nc <= kCfgs[i].bn / 2) continue;
                if (kCfgs[i].bm >= 128 && p.M <= kCfgs[i].bm / 2) continue;
                int so[8];
                int ns = split_options(blocks, KT, sms, so);
                for (int k = 0; k < ns && r == ZCI_OK; k++) {
                    if (so[k] > 1 && blocks > CU_IGEMM_MAX_TILES) continue;
                    launch_cfg(p, i, so[k], st);
                    cudaError_t e = cudaGetLastError();
                    if (e != cudaSuccess) {
                        r = cu_cuda_error(e, "convolution kernel (tuning)");
                        break;
                    }
                    /* back-to-back launches: the GPU at its working clock, launch latency hidden */
                    float ms_best = 1e30f;
                    for (int rep = 0; rep < 2; rep++) {
                        cudaEventRecord(e0, st);
                        for (int l = 0; l < kTuneLaunches; l++) launch_cfg(p, i, so[k], st);
                        cudaEventRecord(e1, st);
                        e = cudaEventSynchronize(e1);
                        if (e != cudaSuccess) {
                            r = cu_cuda_error(e, "convolution kernel (tuning)");
                            break;
                        }
                        float ms = 0.f;
                        cudaEventElapsedTime(&ms, e0, e1);
                        ms /= kTuneLaunches;
                        if (ms < ms_best) ms_best = ms;
                    }
                    if (r == ZCI_OK && ms_best < best) {
                        best = ms_best;
                        best_cfg = i;
                        best_splits = so[k];
                    }
                }
            }
            cudaEventDestroy(e0);
            cudaEventDestroy(e1);
            ZCI_TRY(r);
            if (best_cfg < 0) return zci_error(ZCI_INTERNAL, "no convolution kernel fits this convolution");
            g->cfg = best_cfg;
            g->splits = best_splits;
            if (tu->n == tu->cap) {
                int cap = tu->cap ? tu->cap * 2 : 32;
                tuned *t = (tuned *)realloc(tu->t, (size_t)cap * sizeof *t);
                if (!t) return zci_error(ZCI_OUT_OF_MEMORY, "out of memory (convolution tuning)");
                tu->t = t;
                tu->cap = cap;
            }
            tu->t[tu->n].p = p;
            tu->t[tu->n].cfg = g->cfg;
            tu->t[tu->n].splits = g->splits;
            tu->t[tu->n].us = best * 1000.f;
            tu->n++;
            if (best_us) *best_us = best * 1000.f;
        }
    }
    if (g->cfg >= 0) {
        const int64_t blocks = ceil_div(p.M, kCfgs[g->cfg].bm) * ceil_div(p.Nc, kCfgs[g->cfg].bn);
        if (g->splits > 1 && blocks > CU_IGEMM_MAX_TILES) g->splits = 1;
        g->ws_bytes = g->splits > 1 ? (size_t)g->splits * p.M * p.Nc * sizeof(float) : 0;
        if (g->ws_bytes) cu_need_workspace(c, g->ws_bytes);
        if (g->splits > 1) ZCI_TRY(ensure_counters(c));
    }
    return ZCI_OK;
}

extern "C" void cu_igemm_choice(const cu_igemm *g, int *cfg, int *splits)
{
    *cfg = g->cfg;
    *splits = g->splits;
}

extern "C" zci_status cu_igemm_launch(cu_ctx *c, const zci_node *n, cu_igemm *g, const void *w, const float *bias,
                                      cudaStream_t st)
{
    igemm_params p = g->p;
    bind(c, n, w, bias, p);
    int cfg = g->cfg;
    /* the tiled kernel reads x and w 16 bytes at a time */
    if (!aligned16(p.x) || !aligned16(p.w)) cfg = -1;
    if (g->splits > 1 && (!p.ws || c->workspace_size < g->ws_bytes || !p.counters)) cfg = -1;
    launch_cfg(p, cfg, cfg < 0 ? 1 : g->splits, st);
    CU_LAUNCHED("convolution kernel");
    return ZCI_OK;
}

extern "C" const char *cu_igemm_describe(const cu_igemm *g, char *buf, size_t size)
{
    if (g->cfg < 0) snprintf(buf, size, "direct");
    else snprintf(buf, size, "%dx%d tiles, split %d", kCfgs[g->cfg].bm, kCfgs[g->cfg].bn, g->splits);
    return buf;
}

/* ---------------------------------------------------------------- test hook (cuda_debug.h) */

extern "C" int zci_cuda_igemm_configs(void) { return kNumCfgs; }

extern "C" zci_status zci_cuda_igemm_test_run(const zci_igemm_test *t, int cfg, int splits, uint16_t *y_host, float *us)
{
    if (!t || !y_host || cfg < -1 || cfg >= kNumCfgs || splits < 1 || t->C % 8 || t->ldy < t->Nc)
        return zci_error(ZCI_INVALID_ARGUMENT, "zci_cuda_igemm_test_run: bad arguments");
    igemm_params p;
    memset(&p, 0, sizeof p);
    p.H = t->H; p.W = t->W; p.C = t->C; p.OH = t->OH; p.OW = t->OW;
    p.R = t->R; p.S = t->S; p.sh = t->sh; p.sw = t->sw; p.ph = t->ph; p.pw = t->pw; p.dh = t->dh; p.dw = t->dw;
    p.M = t->N * t->OH * t->OW;
    p.Nc = t->Nc;
    p.Kg = t->R * t->S * t->C;
    p.ldy = t->ldy;
    p.ldr = t->Nc;
    p.div_ow = make_fastdiv((uint32_t)t->OW);
    p.div_oh = make_fastdiv((uint32_t)t->OH);
    p.act = t->act; p.alpha = t->alpha; p.beta = t->beta; p.sum_first = t->sum_first;
    const size_t nx = (size_t)t->N * t->H * t->W * t->C, nw = (size_t)t->Nc * p.Kg, nr = (size_t)p.M * t->Nc,
                 ny = (size_t)p.M * t->ldy;
    void *d[6] = {0};
    const size_t sizes[6] = {nx * 2, nw * 2, (size_t)t->Nc * 4, nr * 2, ny * 2, (size_t)splits * nr * 4 + 16};
    zci_status st = ZCI_OK;
    for (int i = 0; i < 6 && st == ZCI_OK; i++) {
        cudaError_t e = cudaMalloc(&d[i], sizes[i]);
        if (e != cudaSuccess) st = cu_cuda_error(e, "cudaMalloc");
    }
    int *counters = NULL;
    if (st == ZCI_OK) {
        cudaError_t e = cudaMalloc(&counters, CU_IGEMM_MAX_TILES * sizeof(int));
        if (e == cudaSuccess) e = cudaMemset(counters, 0, CU_IGEMM_MAX_TILES * sizeof(int));
        if (e == cudaSuccess) e = cudaMemcpy(d[0], t->x, sizes[0], cudaMemcpyHostToDevice);
        if (e == cudaSuccess) e = cudaMemcpy(d[1], t->w, sizes[1], cudaMemcpyHostToDevice);
        if (e == cudaSuccess && t->bias) e = cudaMemcpy(d[2], t->bias, sizes[2], cudaMemcpyHostToDevice);
        if (e == cudaSuccess && t->res) e = cudaMemcpy(d[3], t->res, sizes[3], cudaMemcpyHostToDevice);
        if (e == cudaSuccess) e = cudaMemcpy(d[4], y_host, sizes[4], cudaMemcpyHostToDevice); /* keeps the caller's poison */
        if (e != cudaSuccess) st = cu_cuda_error(e, "zci_cuda_igemm_test_run: upload");
    }
    if (st == ZCI_OK) {
        p.x = (const __half *)d[0];
        p.w = (const __half *)d[1];
        p.bias = t->bias ? (const float *)d[2] : nullptr;
        p.res = t->res ? (const __half *)d[3] : nullptr;
        p.y = (__half *)d[4];
        p.ws = (float *)d[5];
        p.counters = counters;
        p.vec2 = p.ldy % 2 == 0 && p.ldr % 2 == 0;
        p.vec8 = vec8_ok(p);
        const int64_t tiles = cfg < 0 ? 0 : ceil_div(p.M, kCfgs[cfg].bm) * ceil_div(p.Nc, kCfgs[cfg].bn);
        if (splits > 1 && tiles > CU_IGEMM_MAX_TILES) splits = 1;
        st = allow_smem();
        /* twice: the second launch finds the counters the first one left (they must be zero) */
        for (int rep = 0; rep < 2 && st == ZCI_OK; rep++) {
            launch_cfg(p, cfg, splits, 0);
            cudaError_t e = cudaGetLastError();
            if (e == cudaSuccess) e = cudaDeviceSynchronize();
            if (e != cudaSuccess) st = cu_cuda_error(e, "zci_cuda_igemm_test_run: kernel");
        }
        if (st == ZCI_OK && us) { /* 100 launches back to back after the two above */
            cudaEvent_t e0, e1;
            cudaEventCreate(&e0);
            cudaEventCreate(&e1);
            cudaEventRecord(e0, 0);
            for (int rep = 0; rep < 100; rep++) launch_cfg(p, cfg, splits, 0);
            cudaEventRecord(e1, 0);
            cudaError_t e = cudaEventSynchronize(e1);
            float ms = 0;
            cudaEventElapsedTime(&ms, e0, e1);
            *us = ms * 10.f;
            cudaEventDestroy(e0);
            cudaEventDestroy(e1);
            if (e != cudaSuccess) st = cu_cuda_error(e, "zci_cuda_igemm_test_run: timing");
        }
        if (st == ZCI_OK) {
            cudaError_t e = cudaMemcpy(y_host, d[4], sizes[4], cudaMemcpyDeviceToHost);
            if (e != cudaSuccess) st = cu_cuda_error(e, "zci_cuda_igemm_test_run: download");
        }
    }
    for (int i = 0; i < 6; i++) cudaFree(d[i]);
    cudaFree(counters);
    return st;
}
