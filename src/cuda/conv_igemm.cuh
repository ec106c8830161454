/* conv_igemm.cuh: what our two implicit-GEMM convolution kernels share: the launch parameters,
 * the activations of the epilogue, the asynchronous copies, the tile-configuration table entry,
 * and the end of a block's work (split-K reduction, bias, activation, residual, the one store).
 *   conv_igemm.cu:  ldmatrix + mma.sync (any sm_80+ GPU), BK = 32, and the host side of both;
 *   conv_wgmma.cu:  Hopper's warpgroup MMA (wgmma, sm_90a only), BK = 64. */
#ifndef ZCI_CUDA_CONV_IGEMM_CUH
#define ZCI_CUDA_CONV_IGEMM_CUH

#include "cuda/kernels.cuh"

namespace zci_igemm {

using zci_cu::fastdiv;
using zci_cu::fdiv;

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


/* 16 bytes global -> shared (shared-space address), or 16 zero bytes when !pred (nothing read). */
__device__ __forceinline__ void cp_async16_s(unsigned s, const void *gmem, bool pred)
{
    const int n = pred ? 16 : 0;
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(s), "l"(gmem), "r"(n));
}
__device__ __forceinline__ void cp_async16(void *smem, const void *gmem, bool pred)
{
    cp_async16_s((unsigned)__cvta_generic_to_shared(smem), gmem, pred);
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int N> __device__ __forceinline__ void cp_async_wait() { asm volatile("cp.async.wait_group %0;\n" ::"n"(N)); }

/* The activations with their own kernels (the rest share one with a run-time switch): the
 * epilogue is unrolled over every accumulator, and a switch with exp and division in each copy
 * made the kernels tens of KB of straight-line code, which cost more in instruction fetches than
 * the arithmetic. A_GENERIC: p.act at run time. */
enum { A_NONE = 0, A_RELU = 1, A_SILU = 2, A_SIGMOID = 3, A_GENERIC = 4, A_COUNT = 5 };

template <int ACT> __device__ __forceinline__ float act_fn(const igemm_params &p, float x)
{
    if (ACT == A_NONE) return x;
    if (ACT == A_RELU) return fmaxf(x, 0.f);
    /* 1 / (1 + e^-x): __frcp_rn of an infinite denominator is 0, so very negative x gives 0 */
    if (ACT == A_SILU) return x * __frcp_rn(1.f + __expf(-x));
    if (ACT == A_SIGMOID) return __frcp_rn(1.f + __expf(-x));
    return zci_cu::activate(p.act, x, p.alpha, p.beta);
}

/* The epilogue of one value: bias already added; the residual before or after the activation. */
template <int ACT> __device__ __forceinline__ float finish1(const igemm_params &p, float v, float r)
{
    if (p.sum_first) v += r;
    v = act_fn<ACT>(p, v);
    if (!p.sum_first) v += r;
    return v;
}

/* What one thread of a block gathers along k: the output pixels (rows of A) and output channels
 * (rows of B) of its 16-byte chunks, and (c, r, s) of its 8 channels in the next k tile, divided
 * out once and then advanced tile by tile. With C a multiple of 8, each chunk is 8 channels of
 * one input pixel, or zeros where the window leaves the image or k runs out. */
template <int A_ITERS, int B_ITERS> struct gather {
    int a_base[A_ITERS], a_ih[A_ITERS], a_iw[A_ITERS]; /* image offset, window's top-left corner */
    int b_off[B_ITERS];
    bool b_ok[B_ITERS];
    int kn, kc_c, kc_r, kc_s;

    /* row0: the thread's first tile row, then every `rows`; bn: the B tile's rows; k0: the
     * first k of its chunk */
    __device__ __forceinline__ void init(const igemm_params &p, int m0, int n0, int row0, int rows, int bn, int k0)
    {
#pragma unroll
        for (int i = 0; i < A_ITERS; i++) {
            const int m = m0 + row0 + i * rows;
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
#pragma unroll
        for (int j = 0; j < B_ITERS; j++) {
            const int r = row0 + j * rows, n = n0 + r;
            b_ok[j] = r < bn && n < p.Nc;
            b_off[j] = b_ok[j] ? n * p.Kg : 0;
        }
        kn = k0;
        const int rs = kn / p.C;
        kc_c = kn - rs * p.C;
        kc_r = rs / p.S;
        kc_s = rs - kc_r * p.S;
    }
    /* A chunk i's source, and whether it is read (else zeros) */
    __device__ __forceinline__ const __half *a_src(const igemm_params &p, int i, bool &ok) const
    {
        const int ih = a_ih[i] + kc_r * p.dh, iw = a_iw[i] + kc_s * p.dw;
        ok = kn < p.Kg && (unsigned)ih < (unsigned)p.H && (unsigned)iw < (unsigned)p.W;
        return ok ? p.x + a_base[i] + (ih * p.W + iw) * p.C + kc_c : p.x;
    }
    __device__ __forceinline__ const __half *b_src(const igemm_params &p, int j, bool &ok) const
    {
        ok = kn < p.Kg && b_ok[j];
        return ok ? p.w + b_off[j] + kn : p.w;
    }
    __device__ __forceinline__ void advance(const igemm_params &p, int bk)
    {
        kn += bk;
        kc_c += bk;
        while (kc_c >= p.C) {
            kc_c -= p.C;
            if (++kc_s == p.S) {
                kc_s = 0;
                kc_r++;
            }
        }
    }
};

typedef void (*kernel_fn)(igemm_params);

/* One tile configuration: block tile, threads, pipeline stages, k per tile, and a kernel per
 * activation variant. */
struct tile_cfg {
    int bm, bn, threads, stages, bk;
    kernel_fn fn[A_COUNT];
};

/* Dynamic shared memory of a configuration: the pipeline's stages or the FP32 output tile,
 * whichever is larger; the wgmma kernels (bk 64) align their tiles to 1,024 bytes themselves. */
inline size_t smem_bytes(const tile_cfg &t)
{
    const size_t pipe = (size_t)t.stages * (t.bm + t.bn) * t.bk * 2;
    const size_t out = (size_t)t.bm * (t.bn + 4) * sizeof(float);
    return (pipe > out ? pipe : out) + (t.bk == 64 ? 1024 : 0);
}

/* The end of a block's tile: sC holds its FP32 accumulators, rows of BN + 4 words (the caller
 * wrote them and passed a barrier). With a k split (gridDim.z > 1) the block writes them to the
 * workspace, and the last block of the tile to arrive (a counter per tile) adds every split's
 * partials in split order (deterministic: the same sum whichever block comes last) back into sC
 * and resets the counter for the next launch; the others leave. Then bias, activation and
 * residual, 8 channels per step with 16-byte loads and stores where the buffers allow. */
template <int BM, int BN, int THREADS, int ACT>
__device__ __forceinline__ void tile_epilogue(const igemm_params &p, float *sC, int m0, int n0)
{
    constexpr int LDS = BN + 4;
    __shared__ int s_last;
    const int tid = threadIdx.x, splits = (int)gridDim.z;
    if (splits > 1) {
        float *mine = p.ws + (size_t)blockIdx.z * p.M * p.Nc;
#pragma unroll 1
        for (int e = tid; e < BM * BN; e += THREADS) {
            const int r = e / BN, cc = e % BN, row = m0 + r, col = n0 + cc;
            if (row < p.M && col < p.Nc) mine[(size_t)row * p.Nc + col] = sC[r * LDS + cc];
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
        __syncthreads();
    }
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
            for (int j = 0; j < 8; j += 2)
                o2[j / 2] = __floats2half2_rn(finish1<ACT>(p, v[j], rv[j]), finish1<ACT>(p, v[j + 1], rv[j + 1]));
            *(uint4 *)(p.y + (size_t)row * p.ldy + col) = out;
        } else {
#pragma unroll 1
            for (int j = 0; j < 8 && col + j < p.Nc; j++) {
                const float a = sC[r * LDS + c8 + j] + (p.bias ? p.bias[col + j] : 0.f);
                const float rj = p.res ? __half2float(p.res[(size_t)row * p.ldr + col + j]) : 0.f;
                p.y[(size_t)row * p.ldy + col + j] = __float2half_rn(finish1<ACT>(p, a, rj));
            }
        }
    }
}

} // namespace zci_igemm

/* conv_wgmma.cu: its tile configurations (Hopper only: sm_90a code, run where the device is
 * compute capability 9.0), appended after conv_igemm.cu's own in the configuration numbers. */
const zci_igemm::tile_cfg *cu_wgmma_configs(int *count);

#endif
