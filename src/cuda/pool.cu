/* pool.cu: MaxPool and AveragePool (1-D and 2-D windows) on the GPU, one thread per output
 * element, from the window geometry the ops' infer left in n->params (ops/conv.h). Padding never
 * contributes to a maximum; for the average it counts in the divisor only with
 * count_include_pad, up to the padded edge, as onnxruntime computes it. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cuda/kernels.cuh"

using namespace zci_cu;

namespace {

struct pool_geo {
    uint32_t planes;       /* N * C */
    uint32_t channels;     /* C */
    int nhwc;              /* x and y in NHWC */
    uint32_t ih, iw, oh, ow;
    int kh, kw, sh, sw, dh, dw, ph, pw, ph_end, pw_end;
    int is_max, include_pad;
};

template <typename T> __global__ void k_pool(const T *__restrict__ x, T *__restrict__ y, pool_geo g)
{
    uint32_t i = blockIdx.x * blockDim.x + threadIdx.x;
    uint32_t total = g.planes * g.oh * g.ow;
    if (i >= total) return;
    uint32_t ox, oy, r;
    size_t base;        /* offset of the (n, c) plane's first pixel */
    uint32_t step = 1;  /* elements between neighbouring pixels */
    if (g.nhwc) {
        uint32_t ch = i % g.channels;
        r = i / g.channels;
        ox = r % g.ow;
        r /= g.ow;
        oy = r % g.oh;
        uint32_t nb = r / g.oh;
        base = (size_t)nb * g.ih * g.iw * g.channels + ch;
        step = g.channels;
    } else {
        ox = i % g.ow;
        r = i / g.ow;
        oy = r % g.oh;
        base = (size_t)(r / g.oh) * g.ih * g.iw;
    }
    const T *src = x + base;
    int y0 = (int)oy * g.sh - g.ph, x0 = (int)ox * g.sw - g.pw;
    if (g.is_max) {
        float m = -INFINITY;
        for (int ky = 0; ky < g.kh; ky++) {
            int yy = y0 + ky * g.dh;
            if (yy < 0 || yy >= (int)g.ih) continue;
            for (int kx = 0; kx < g.kw; kx++) {
                int xx = x0 + kx * g.dw;
                if (xx < 0 || xx >= (int)g.iw) continue;
                float v = to_f<T>(src[(size_t)(yy * g.iw + xx) * step]);
                m = v > m || v != v ? v : m;
            }
        }
        y[i] = from_f<T>(m);
        return;
    }
    int y1 = min(y0 + g.kh, (int)g.ih + g.ph_end), x1 = min(x0 + g.kw, (int)g.iw + g.pw_end);
    int padded = (y1 - y0) * (x1 - x0);
    int ya = max(y0, 0), xa = max(x0, 0), yb = min(y1, (int)g.ih), xb = min(x1, (int)g.iw);
    float s = 0.f;
    for (int yy = ya; yy < yb; yy++)
        for (int xx = xa; xx < xb; xx++) s += to_f<T>(src[(size_t)(yy * g.iw + xx) * step]);
    int count = g.include_pad ? padded : (yb - ya) * (xb - xa);
    y[i] = from_f<T>(count > 0 ? s / (float)count : 0.f);
}

/* MaxPool in NHWC FP16 with 8 channels per thread: one 16-byte load per window pixel and
 * half2 maxima (NaN wins, as in k_pool), instead of a thread and its index arithmetic per
 * element. c8 = C / 8; x and y 16-byte aligned. */
__global__ void k_maxpool_nhwc8(const uint4 *__restrict__ x, uint4 *__restrict__ y, pool_geo g, uint32_t c8)
{
    uint32_t i = blockIdx.x * blockDim.x + threadIdx.x;
    uint32_t total = g.planes / 8 * g.oh * g.ow;
    if (i >= total) return;
    uint32_t ch = i % c8, r = i / c8, ox = r % g.ow;
    r /= g.ow;
    uint32_t oy = r % g.oh, nb = r / g.oh;
    const uint4 *src = x + (size_t)nb * g.ih * g.iw * c8 + ch;
    const int y0 = (int)oy * g.sh - g.ph, x0 = (int)ox * g.sw - g.pw;
    const __half2 ninf = __halves2half2(__ushort_as_half(0xFC00), __ushort_as_half(0xFC00));
    __half2 m[4] = {ninf, ninf, ninf, ninf};
    for (int ky = 0; ky < g.kh; ky++) {
        const int yy = y0 + ky * g.dh;
        if (yy < 0 || yy >= (int)g.ih) continue;
        for (int kx = 0; kx < g.kw; kx++) {
            const int xx = x0 + kx * g.dw;
            if (xx < 0 || xx >= (int)g.iw) continue;
            uint4 v = src[(size_t)(yy * (int)g.iw + xx) * c8];
            const __half2 *h = reinterpret_cast<const __half2 *>(&v);
#pragma unroll
            for (int j = 0; j < 4; j++) m[j] = __hmax2_nan(m[j], h[j]);
        }
    }
    uint4 out;
    __half2 *o = reinterpret_cast<__half2 *>(&out);
#pragma unroll
    for (int j = 0; j < 4; j++) o[j] = m[j];
    y[i] = out;
}

zci_status build(const cu_ctx *c, const zci_node *n, pool_geo *g)
{
    const zci_pool_params *p = (const zci_pool_params *)n->params;
    if (!p) return zci_error(ZCI_INTERNAL, "%s has no parameters", n->op_type);
    if (!ZCI_HAS_IN(n, 0)) return zci_error(ZCI_UNSUPPORTED, "input 0 is omitted");
    for (int k = 1; k < n->n_out; k++)
        if (n->out[k] >= 0) return zci_error(ZCI_UNSUPPORTED, "the Indices output");
    zci_dtype t = c->dt[n->in[0]];
    if (t != ZCI_FLOAT32 && t != ZCI_FLOAT16) return zci_error(ZCI_UNSUPPORTED, "%s of %s tensors", n->op_type, zci_dtype_name(t));
    if (p->w.nsp < 1 || p->w.nsp > 2) return zci_error(ZCI_UNSUPPORTED, "%d spatial dimensions", p->w.nsp);
    memset(g, 0, sizeof *g);
    g->is_max = !strcmp(n->op_type, "MaxPool");
    g->include_pad = p->count_include_pad;
    g->planes = (uint32_t)(p->batch * p->channels);
    g->channels = (uint32_t)p->channels;
    g->nhwc = c->lay && cu_in_nhwc(c, n, 0);
    const int two = p->w.nsp == 2;
    /* a 1-D window is a 2-D one of height 1 */
    g->ih = two ? (uint32_t)p->w.in[0] : 1;
    g->oh = two ? (uint32_t)p->w.out[0] : 1;
    g->kh = two ? (int)p->w.kernel[0] : 1;
    g->sh = two ? (int)p->w.stride[0] : 1;
    g->dh = two ? (int)p->w.dilation[0] : 1;
    g->ph = two ? (int)p->w.pad_begin[0] : 0;
    g->ph_end = two ? (int)p->w.pad_end[0] : 0;
    const int w = two ? 1 : 0;
    g->iw = (uint32_t)p->w.in[w];
    g->ow = (uint32_t)p->w.out[w];
    g->kw = (int)p->w.kernel[w];
    g->sw = (int)p->w.stride[w];
    g->dw = (int)p->w.dilation[w];
    g->pw = (int)p->w.pad_begin[w];
    g->pw_end = (int)p->w.pad_end[w];
    if (!g->is_max && (g->dh != 1 || g->dw != 1)) return zci_error(ZCI_UNSUPPORTED, "AveragePool with dilations");
    return ZCI_OK;
}

} // namespace

extern "C" zci_status cu_pool_supports(const cu_ctx *c, const zci_node *n)
{
    pool_geo g;
    return build(c, n, &g);
}

extern "C" zci_status cu_pool_prepare(cu_ctx *c, const zci_node *n, void **state)
{
    pool_geo *g = (pool_geo *)zci_malloc(sizeof *g, "pool state");
    if (!g) return ZCI_OUT_OF_MEMORY;
    zci_status st = build(c, n, g);
    if (st != ZCI_OK) {
        free(g);
        return st;
    }
    *state = g;
    return ZCI_OK;
}

extern "C" zci_status cu_pool_launch(cu_ctx *c, const zci_node *n, void *state, cudaStream_t st)
{
    const pool_geo *g = (const pool_geo *)state;
    int64_t total = (int64_t)g->planes * g->oh * g->ow;
    if (!total) return ZCI_OK;
    const void *x = cu_in(c, n, 0);
    void *y = c->ptr[n->out[0]];
    if (c->dt[n->in[0]] == ZCI_FLOAT16 && g->is_max && g->nhwc && g->channels % 8 == 0 && ((uintptr_t)x & 15) == 0 &&
        ((uintptr_t)y & 15) == 0)
        k_maxpool_nhwc8<<<blocks_for(total / 8), kThreads, 0, st>>>((const uint4 *)x, (uint4 *)y, *g, g->channels / 8);
    else if (c->dt[n->in[0]] == ZCI_FLOAT16)
        k_pool<__half><<<blocks_for(total), kThreads, 0, st>>>((const __half *)x, (__half *)y, *g);
    else
        k_pool<float><<<blocks_for(total), kThreads, 0, st>>>((const float *)x, (float *)y, *g);
    CU_LAUNCHED("pool");
    return ZCI_OK;
}
