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
 * once at planning on the session's own buffers (every candidate screened with two launches, the
 * close ones timed properly), and the choice is kept in engine files. On compute capability 9.0
 * the candidates include conv_wgmma.cu's Hopper kernels (configuration numbers after kCfgs'). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cuda/conv_igemm.cuh"
#include "cuda/cuda_debug.h"

using namespace zci_cu;
using namespace zci_igemm;

namespace {

constexpr int kBK = 32;     /* k per tile: 4 chunks of 8 halves */
constexpr int kTuneLaunches = 8; /* launches per timing while tuning */
constexpr int kScreenLaunches = 2; /* launches per screening run: every candidate */
constexpr float kScreenSlack = 1.3f; /* screened within this factor of the fastest: timed properly */
constexpr int kMaxCands = 96;      /* configurations x splits */

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

/* The kernel variant of an activation (conv_igemm.cuh's A_* list). */
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

    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const int wm = warp % WARPS_M, wn = warp / WARPS_M;
    const int m0 = blockIdx.x * BM, n0 = blockIdx.y * BN;
    const int kc = tid & 3; /* the chunk this thread loads in every row */
    const int KT = (p.Kg + kBK - 1) / kBK;
    const int kt0 = blockIdx.z * p.kt_per_split;
    const int kt1 = min(KT, kt0 + p.kt_per_split);
    const int nkt = kt1 > kt0 ? kt1 - kt0 : 0;

    gather<A_ITERS, B_ITERS> gt;
    gt.init(p, m0, n0, tid >> 2, ROWS, BN, kt0 * kBK + kc * 8);
    auto load_tile = [&](int stage) {
        __half *tA = sA + stage * BM * kBK;
#pragma unroll
        for (int i = 0; i < A_ITERS; i++) {
            bool ok;
            const __half *src = gt.a_src(p, i, ok);
            cp_async16(tA + swz((tid >> 2) + i * ROWS, kc), src, ok);
        }
        __half *tB = sB + stage * BN * kBK;
#pragma unroll
        for (int j = 0; j < B_ITERS; j++) {
            bool ok;
            const __half *src = gt.b_src(p, j, ok);
            cp_async16(tB + swz((tid >> 2) + j * ROWS, kc), src, ok);
        }
        gt.advance(p, kBK);
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
#pragma unroll
    for (int mt = 0; mt < MT; mt++)
#pragma unroll
        for (int nt = 0; nt < NT; nt++)
#pragma unroll
            for (int h = 0; h < 2; h++) {
                const int r = wm * WM + mt * 16 + g + h * 8, cc = wn * WN + nt * 8 + t4 * 2;
                *(float2 *)&sC[r * LDS + cc] = make_float2(acc[mt][nt][2 * h], acc[mt][nt][2 * h + 1]);
            }
    __syncthreads();
    tile_epilogue<BM, BN, THREADS, ACT>(p, sC, m0, n0);
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

#define CFG(BM, BN, WM_, WN_, ST)                                                                                      \
    {                                                                                                                  \
        BM, BN, WM_ * WN_ * 32, ST, kBK,                                                                               \
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

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

} // namespace

/* ---------------------------------------------------------------- host side */

/* Configuration numbers: kCfgs' first, then conv_wgmma.cu's (Hopper only). The numbers are kept
 * in engine files, so new configurations go at the end. */
static const tile_cfg *cfg_at(int i)
{
    if (i < kNumCfgs) return &kCfgs[i];
    int nw = 0;
    const tile_cfg *w = cu_wgmma_configs(&nw);
    return i - kNumCfgs < nw ? &w[i - kNumCfgs] : nullptr;
}

/* Whether the current device runs the wgmma kernels: their only code is sm_90a, which runs on
 * compute capability 9.0 alone. ZCI_CUDA_NO_WGMMA=1 leaves them out (an A/B switch). */
static bool wgmma_usable(void)
{
    const char *env = getenv("ZCI_CUDA_NO_WGMMA");
    if (env && env[0] == '1') return false;
    int dev = 0, major = 0, minor = 0;
    if (cudaGetDevice(&dev) != cudaSuccess || cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev) != cudaSuccess ||
        cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, dev) != cudaSuccess)
        return false;
    return major == 9 && minor == 0;
}

/* The configurations the current device can run: kCfgs, and the wgmma ones on a Hopper GPU. */
static int usable_cfgs(void)
{
    int nw = 0;
    cu_wgmma_configs(&nw);
    return kNumCfgs + (wgmma_usable() ? nw : 0);
}

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
    const int n = usable_cfgs();
    for (int i = 0; i < n; i++)
        for (int a = 0; a < A_COUNT; a++) {
            cudaError_t e = cudaFuncSetAttribute(cfg_at(i)->fn[a], cudaFuncAttributeMaxDynamicSharedMemorySize,
                                                 (int)smem_bytes(*cfg_at(i)));
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
    const tile_cfg &t = *cfg_at(cfg);
    igemm_params q = p;
    const int KT = (int)ceil_div(p.Kg, t.bk);
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
    const int ncfg = usable_cfgs();
    /* a choice from an engine file, or from an equal convolution planned earlier (an engine
     * file's wgmma choice on a device without them is tuned anew) */
    if (forced_cfg >= -1 && forced_cfg < ncfg && forced_splits >= 1) {
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
            /* time the candidates on the session's buffers: each with one warm-up launch and a
             * short screening run, then those within kScreenSlack of the fastest screened with
             * the better of two runs of kTuneLaunches launches (the screen saves most of the
             * planning time of the many candidates that are far off) */
            struct cand {
                int cfg, splits;
                float screen_ms;
            };
            cand cands[kMaxCands];
            int n_cands = 0;
            size_t ws_need = 0;
            for (int i = 0; i < ncfg; i++) {
                const tile_cfg &t = *cfg_at(i);
                const int64_t blocks = ceil_div(p.M, t.bm) * ceil_div(p.Nc, t.bn);
                if (blocks > 65535LL * 65535LL) continue;
                /* shapes that waste most of a tile on padding are never fastest */
                if (t.bn > 32 && p.Nc <= t.bn / 2) continue;
                if (t.bm >= 128 && p.M <= t.bm / 2) continue;
                int so[8];
                int ns = split_options(blocks, (int)ceil_div(p.Kg, t.bk), sms, so);
                for (int k = 0; k < ns && n_cands < kMaxCands; k++) {
                    if (so[k] > 1 && blocks > CU_IGEMM_MAX_TILES) continue;
                    cands[n_cands++] = {i, so[k], 0.f};
                    if (so[k] > 1) {
                        size_t b = (size_t)so[k] * p.M * p.Nc * sizeof(float);
                        if (b > ws_need) ws_need = b;
                    }
                }
            }
            ZCI_TRY(tuning_scratch(c, ws_need));
            p.ws = (float *)tu->ws;
            p.counters = c->igemm_counters;
            cudaStream_t st = c->own_stream;
            cudaEvent_t e0, e1;
            CU_TRY(cudaEventCreate(&e0));
            CU_TRY(cudaEventCreate(&e1));
            /* the mean time of n back-to-back launches (the GPU at its working clock, launch
             * latency hidden), the better of `reps` runs */
            auto time_cand = [&](const cand &cd, int n, int reps, float *ms_out) -> zci_status {
                float ms_best = 1e30f;
                for (int rep = 0; rep < reps; rep++) {
                    cudaEventRecord(e0, st);
                    for (int l = 0; l < n; l++) launch_cfg(p, cd.cfg, cd.splits, st);
                    cudaEventRecord(e1, st);
                    cudaError_t e = cudaEventSynchronize(e1);
                    if (e == cudaSuccess) e = cudaGetLastError();
                    if (e != cudaSuccess) return cu_cuda_error(e, "convolution kernel (tuning)");
                    float ms = 0.f;
                    cudaEventElapsedTime(&ms, e0, e1);
                    ms /= n;
                    if (ms < ms_best) ms_best = ms;
                }
                *ms_out = ms_best;
                return ZCI_OK;
            };
            float best = 1e30f, screen_best = 1e30f;
            int best_cfg = -1, best_splits = 1;
            zci_status r = ZCI_OK;
            for (int k = 0; k < n_cands && r == ZCI_OK; k++) {
                launch_cfg(p, cands[k].cfg, cands[k].splits, st); /* warm-up */
                r = time_cand(cands[k], kScreenLaunches, 1, &cands[k].screen_ms);
                if (r == ZCI_OK && cands[k].screen_ms < screen_best) screen_best = cands[k].screen_ms;
            }
            for (int k = 0; k < n_cands && r == ZCI_OK; k++) {
                if (cands[k].screen_ms > screen_best * kScreenSlack) continue;
                float ms = 0.f;
                r = time_cand(cands[k], kTuneLaunches, 2, &ms);
                if (r == ZCI_OK && ms < best) {
                    best = ms;
                    best_cfg = cands[k].cfg;
                    best_splits = cands[k].splits;
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
        const int64_t blocks = ceil_div(p.M, cfg_at(g->cfg)->bm) * ceil_div(p.Nc, cfg_at(g->cfg)->bn);
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
    else
        snprintf(buf, size, "%dx%d tiles%s, split %d", cfg_at(g->cfg)->bm, cfg_at(g->cfg)->bn,
                 cfg_at(g->cfg)->bk == 64 ? " (wgmma)" : "", g->splits);
    return buf;
}

/* ---------------------------------------------------------------- test hook (cuda_debug.h) */

extern "C" int zci_cuda_igemm_configs(void) { return usable_cfgs(); }

extern "C" zci_status zci_cuda_igemm_test_run(const zci_igemm_test *t, int cfg, int splits, uint16_t *y_host, float *us)
{
    if (!t || !y_host || cfg < -1 || cfg >= usable_cfgs() || splits < 1 || t->C % 8 || t->ldy < t->Nc)
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
        const int64_t tiles = cfg < 0 ? 0 : ceil_div(p.M, cfg_at(cfg)->bm) * ceil_div(p.Nc, cfg_at(cfg)->bn);
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
