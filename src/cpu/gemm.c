/* gemm.c: cache-blocked single-precision GEMM (see gemm.h for the scheme). */
#include "cpu/gemm.h"

#include <stdlib.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

/* The project builds in strict ISO C mode, where GCC does not contract a * b + c into a fused
 * multiply-add; the micro-kernel is nothing but those, so allow it for this file. */
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("fp-contract=fast")
#elif defined(__clang__)
#pragma clang fp contract(fast)
#endif

/* ---------------------------------------------------------------- micro-tile geometry
 * VL floats per vector, NV vectors per tile row (NR = NV * VL columns), MR rows: MR * NV
 * accumulators plus NV B vectors and one broadcast must fit the vector register file. */
#if defined(__GNUC__) || defined(__clang__)
#define GEMM_VECTOR 1
#if defined(__AVX512F__)
#define VL 16
#define MR 8
#define NV 3
#elif defined(__AVX__)
#define VL 8
#define MR 4
#define NV 3
#else
#define VL 4
#define MR 4
#define NV 2
#endif
typedef float vf __attribute__((vector_size(VL * sizeof(float))));
#else
#define GEMM_VECTOR 0
#define VL 1
#define MR 4
#define NV 4
typedef float vf;
#endif
#define NR (NV * VL)

/* Cache blocking: an MC x KC block of A stays in L2, a KC x NR strip of B in L1 and the KC x NC
 * panel of B in L3. */
#define KC 256
#define MC (MR * (128 / MR))
#define NC (NR * (4096 / NR))
_Static_assert(MR <= 8, "micro_kernel dispatches at most 8 rows");

/* Below this many multiply-adds per thread, another thread costs more to wake than it saves. */
#define MIN_MACS_PER_THREAD ((int64_t)1 << 18)

#if defined(__GNUC__)
#define UNROLL _Pragma("GCC unroll 32")
#else
#define UNROLL
#endif

int zci_sgemm_mr(void) { return MR; }
int zci_sgemm_nr(void) { return NR; }

static inline int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }
static inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

static inline vf vload(const float *p)
{
    vf v;
    memcpy(&v, p, sizeof v);
    return v;
}

static inline void vstore(float *p, vf v) { memcpy(p, &v, sizeof v); }

static inline vf vbroadcast(float x)
{
#if GEMM_VECTOR
    return x - (vf){0};
#else
    return x;
#endif
}

#if defined(__GNUC__) || defined(__clang__)
#define ALWAYS_INLINE inline __attribute__((always_inline))
#else
#define ALWAYS_INLINE inline
#endif

/* c[mr x NR] (row stride ldc) = alpha * a-strip . b-strip + beta * c; beta == 0 never reads c.
 * a holds kc groups of MR floats, b kc groups of NR floats (both packed). Inlined with a
 * constant mr, so each row count gets its own fully unrolled, register-resident copy. */
static ALWAYS_INLINE void kernel_rows(const int mr, int64_t kc, const float *restrict a, const float *restrict b,
                                      float *restrict c, int64_t ldc, float alpha, float beta)
{
    vf acc[MR][NV];
    UNROLL for (int i = 0; i < mr; i++) UNROLL for (int j = 0; j < NV; j++) acc[i][j] = vbroadcast(0.0f);
    for (int64_t p = 0; p < kc; p++) {
        vf bv[NV];
        UNROLL for (int j = 0; j < NV; j++) bv[j] = vload(b + j * VL);
        UNROLL for (int i = 0; i < mr; i++) {
            vf av = vbroadcast(a[i]);
            UNROLL for (int j = 0; j < NV; j++) acc[i][j] += av * bv[j];
        }
        a += MR;
        b += NR;
    }
    vf va = vbroadcast(alpha);
    if (beta == 0.0f) {
        UNROLL for (int i = 0; i < mr; i++) UNROLL for (int j = 0; j < NV; j++)
            vstore(c + i * ldc + j * VL, acc[i][j] * va);
    } else {
        vf vb = vbroadcast(beta);
        UNROLL for (int i = 0; i < mr; i++) UNROLL for (int j = 0; j < NV; j++)
            vstore(c + i * ldc + j * VL, acc[i][j] * va + vload(c + i * ldc + j * VL) * vb);
    }
}

static void micro_kernel(int mr, int64_t kc, const float *a, const float *b, float *c, int64_t ldc, float alpha,
                         float beta)
{
#define ZCI_KERNEL_CASE_(r)                                                                                        \
    case r: kernel_rows(r, kc, a, b, c, ldc, alpha, beta); break;
    switch (mr) {
        ZCI_KERNEL_CASE_(1)
        ZCI_KERNEL_CASE_(2)
        ZCI_KERNEL_CASE_(3)
        ZCI_KERNEL_CASE_(4)
#if MR > 4
        ZCI_KERNEL_CASE_(5)
        ZCI_KERNEL_CASE_(6)
        ZCI_KERNEL_CASE_(7)
        ZCI_KERNEL_CASE_(8)
#endif
    default: break;
    }
#undef ZCI_KERNEL_CASE_
}

/* A tile narrower than NR: computed whole into `tile`, then its nr valid columns merged. */
static void narrow_tile(int mr, int64_t kc, const float *a, const float *b, float *c, int64_t ldc, int64_t nr,
                        float alpha, float beta, float *tile)
{
    micro_kernel(mr, kc, a, b, tile, NR, alpha, 0.0f);
    for (int64_t i = 0; i < mr; i++)
        for (int64_t j = 0; j < nr; j++)
            c[i * ldc + j] = beta == 0.0f ? tile[i * NR + j] : tile[i * NR + j] + beta * c[i * ldc + j];
}

/* Block sizes balanced over the extent: K = 300 runs as 150 + 150, not 256 + 44 (a thin last
 * block pays a full pass over C for little work). Rounded up to `unit`, never above `cap`. */
static int64_t balanced_step(int64_t extent, int64_t cap, int64_t unit)
{
    if (extent <= 0) return unit;
    int64_t blocks = ceil_div(extent, cap);
    int64_t step = ceil_div(ceil_div(extent, blocks), unit) * unit;
    return step < cap ? step : cap;
}

/* ---------------------------------------------------------------- packing */

/* Rows [i0, i0 + mc) and columns [p0, p0 + kc) of op(A) into MR-row strips (rows past mc zero). */
static void pack_a_block(int trans_a, const float *a, int64_t lda, int64_t i0, int64_t mc, int64_t p0, int64_t kc,
                         float *dst)
{
    for (int64_t s = 0; s < mc; s += MR, dst += MR * kc) {
        int64_t mr = min64(MR, mc - s);
        if (mr < MR) memset(dst, 0, sizeof(float) * MR * kc);
        if (!trans_a) {
            for (int64_t i = 0; i < mr; i++) {
                const float *row = a + (i0 + s + i) * lda + p0;
                for (int64_t p = 0; p < kc; p++) dst[p * MR + i] = row[p];
            }
        } else {
            for (int64_t p = 0; p < kc; p++) {
                const float *row = a + (p0 + p) * lda + i0 + s;
                for (int64_t i = 0; i < mr; i++) dst[p * MR + i] = row[i];
            }
        }
    }
}

typedef struct plain_b {
    const float *b;
    int64_t ldb;
    int trans;
} plain_b;

static void pack_plain_b(const void *ctx, int64_t k0, int64_t kc, int64_t n0, int64_t nc, int nr_, float *dst)
{
    const plain_b *pb = ctx;
    (void)nr_;
    for (int64_t s = 0; s < nc; s += NR, dst += (int64_t)NR * kc) {
        int64_t nr = min64(NR, nc - s);
        if (!pb->trans) {
            for (int64_t p = 0; p < kc; p++) {
                const float *row = pb->b + (k0 + p) * pb->ldb + n0 + s;
                float *d = dst + p * NR;
                if (nr == NR) {
                    memcpy(d, row, sizeof(float) * NR);
                } else {
                    memcpy(d, row, sizeof(float) * (size_t)nr);
                    memset(d + nr, 0, sizeof(float) * (size_t)(NR - nr));
                }
            }
        } else {
            if (nr < NR) memset(dst, 0, sizeof(float) * NR * kc);
            for (int64_t j = 0; j < nr; j++) {
                const float *col = pb->b + (n0 + s + j) * pb->ldb + k0;
                for (int64_t p = 0; p < kc; p++) dst[p * NR + j] = col[p];
            }
        }
    }
}

zci_status zci_sgemm_pack_a(int trans_a, int64_t m, int64_t k, const float *a, int64_t lda, zci_packed_a *out)
{
    memset(out, 0, sizeof *out);
    if (m < 0 || k < 0) return zci_error(ZCI_INVALID_ARGUMENT, "gemm: negative size %lld x %lld", (long long)m, (long long)k);
    int64_t mpad = ceil_div(m, MR) * MR;
    size_t bytes = zci_align(sizeof(float) * (size_t)(mpad * k > 0 ? mpad * k : 1), 64);
    float *d = aligned_alloc(64, bytes);
    if (!d) return zci_error(ZCI_OUT_OF_MEMORY, "gemm: cannot allocate %zu bytes for a packed matrix", bytes);
    /* block pc of kstep columns starts at pc * mpad; inside it strip s at s * kc */
    int64_t kstep = balanced_step(k, KC, 1);
    for (int64_t pc = 0; pc < k; pc += kstep) {
        int64_t kc = min64(kstep, k - pc);
        pack_a_block(trans_a, a, lda, 0, m, pc, kc, d + pc * mpad);
    }
    out->m = m;
    out->k = k;
    out->data = d;
    return ZCI_OK;
}

void zci_packed_a_free(zci_packed_a *p)
{
    if (!p) return;
    free(p->data);
    memset(p, 0, sizeof *p);
}

/* ---------------------------------------------------------------- threads and workspace */

typedef struct grid {
    int tm, tn; /* threads along rows and columns */
} grid;

/* The split of C over threads that minimises the slowest thread's work: its multiply-adds plus
 * its packing (each packed float costs about what one vector FMA does, NR multiply-adds). */
static grid choose_grid(int64_t m, int64_t n, int64_t k, int prepacked_a, int nthreads)
{
    grid best = {1, 1};
    int64_t macs = m * n * (k ? k : 1);
    int64_t useful = macs / MIN_MACS_PER_THREAD;
    int t = nthreads < 1 ? 1 : nthreads;
    if (useful < t) t = useful < 1 ? 1 : (int)useful;
    int64_t mstrips = ceil_div(m, MR), nstrips = ceil_div(n, NR);
    double best_cost = -1.0;
    for (int tm = 1; tm <= t; tm++) {
        if (t % tm) continue;
        int tn = t / tm;
        if (tm > mstrips || tn > nstrips) continue;
        double rows = (double)ceil_div(mstrips, tm) * MR, cols = (double)ceil_div(nstrips, tn) * NR;
        double cost = rows * cols * (double)k + (double)k * (cols + (prepacked_a ? 0.0 : rows)) * NR;
        if (best_cost < 0 || cost < best_cost) {
            best_cost = cost;
            best.tm = tm;
            best.tn = tn;
        }
    }
    return best;
}

typedef struct thread_ws {
    float *abuf, *bbuf, *tile;
} thread_ws;

static size_t per_thread_floats(int64_t m, int64_t n, int64_t k, size_t *a_fl, size_t *b_fl)
{
    int64_t kc = min64(KC, k > 0 ? k : 1);
    int64_t mc = min64(MC, ceil_div(m > 0 ? m : 1, MR) * MR);
    int64_t nc = min64(NC, ceil_div(n > 0 ? n : 1, NR) * NR);
    *a_fl = zci_align((size_t)(mc * kc), 16);
    *b_fl = zci_align((size_t)(nc * kc), 16);
    return *a_fl + *b_fl + zci_align((size_t)MR * NR, 16);
}

size_t zci_sgemm_workspace_size(int64_t m, int64_t n, int64_t k, int nthreads)
{
    size_t a_fl, b_fl;
    size_t fl = per_thread_floats(m, n, k, &a_fl, &b_fl);
    return fl * sizeof(float) * (size_t)(nthreads < 1 ? 1 : nthreads);
}

/* ---------------------------------------------------------------- the blocked loops */

/* C = beta * C then the epilogue, for k == 0. */
static void scale_only(const zci_gemm_args *g, int64_t m0, int64_t m1, int64_t n0, int64_t n1)
{
    for (int64_t i = m0; i < m1; i++) {
        float *row = g->c + i * g->ldc;
        for (int64_t j = n0; j < n1; j++) row[j] = g->beta == 0.0f ? 0.0f : g->beta * row[j];
    }
    if (g->epilogue && m1 > m0 && n1 > n0)
        g->epilogue(g->epilogue_ctx, g->c + m0 * g->ldc + n0, g->ldc, m0, m1 - m0, n0, n1 - n0);
}

/* One thread's share: rows [m0, m1) (m0 a multiple of MR) and columns [n0, n1) of C. */
static void gemm_region(const zci_gemm_args *g, int64_t m0, int64_t m1, int64_t n0, int64_t n1, thread_ws ws)
{
    if (m0 >= m1 || n0 >= n1) return;
    if (g->k == 0) {
        scale_only(g, m0, m1, n0, n1);
        return;
    }
    plain_b pb = {g->b, g->ldb, g->trans_b};
    zci_gemm_pack_b_fn pack_b = g->pack_b ? g->pack_b : pack_plain_b;
    const void *pack_ctx = g->pack_b ? g->pack_b_ctx : &pb;
    int64_t mpad = g->packed_a ? ceil_div(g->m, MR) * MR : 0;
    int64_t kstep = balanced_step(g->k, KC, 1);
    int64_t mstep = balanced_step(m1 - m0, MC, MR);
    int64_t nstep = balanced_step(n1 - n0, NC, NR);
    /* With one block of A rows, each packed strip of B is used once: packing it just before use
     * keeps it in L1 instead of writing a whole panel out to L2/L3 and reading it back. */
    const int strip_wise = m1 - m0 <= mstep;
    for (int64_t jc = n0; jc < n1; jc += nstep) {
        int64_t nc = min64(nstep, n1 - jc);
        for (int64_t pc = 0; pc < g->k; pc += kstep) {
            int64_t kc = min64(kstep, g->k - pc);
            float beta = pc == 0 ? g->beta : 1.0f;
            int last = pc + kc == g->k;
            if (!strip_wise) pack_b(pack_ctx, pc, kc, jc, nc, NR, ws.bbuf);
            for (int64_t ic = m0; ic < m1; ic += mstep) {
                int64_t mc = min64(mstep, m1 - ic);
                const float *ap;
                if (g->packed_a) {
                    ap = g->packed_a->data + pc * mpad + ic * kc;
                } else {
                    pack_a_block(g->trans_a, g->a, g->lda, ic, mc, pc, kc, ws.abuf);
                    ap = ws.abuf;
                }
                for (int64_t jr = 0; jr < nc; jr += NR) {
                    int64_t nr = min64(NR, nc - jr);
                    const float *bp = ws.bbuf + jr * kc;
                    if (strip_wise) {
                        pack_b(pack_ctx, pc, kc, jc + jr, nr, NR, ws.bbuf);
                        bp = ws.bbuf;
                    }
                    for (int64_t ir = 0; ir < mc; ir += MR) {
                        int mr = (int)min64(MR, mc - ir);
                        float *cp = g->c + (ic + ir) * g->ldc + jc + jr;
                        if (nr == NR)
                            micro_kernel(mr, kc, ap + ir * kc, bp, cp, g->ldc, g->alpha, beta);
                        else
                            narrow_tile(mr, kc, ap + ir * kc, bp, cp, g->ldc, nr, g->alpha, beta, ws.tile);
                    }
                    if (last && g->epilogue)
                        g->epilogue(g->epilogue_ctx, g->c + ic * g->ldc + jc + jr, g->ldc, ic, mc, jc + jr, nr);
                }
            }
        }
    }
}

/* ---------------------------------------------------------------- matrix-vector products
 * A product with one output row or column (a classifier's fully connected layer at batch 1) is
 * bound by reading the matrix once; packing would read it twice more. These stream it. */

static float dot(const float *a, const float *b, int64_t n)
{
    int64_t i = 0;
    float r = 0.0f;
#if GEMM_VECTOR
    vf s0 = vbroadcast(0.0f), s1 = s0, s2 = s0, s3 = s0;
    for (; i + 4 * VL <= n; i += 4 * VL) {
        s0 += vload(a + i) * vload(b + i);
        s1 += vload(a + i + VL) * vload(b + i + VL);
        s2 += vload(a + i + 2 * VL) * vload(b + i + 2 * VL);
        s3 += vload(a + i + 3 * VL) * vload(b + i + 3 * VL);
    }
    for (; i + VL <= n; i += VL) s0 += vload(a + i) * vload(b + i);
    vf s = (s0 + s1) + (s2 + s3);
    for (int j = 0; j < VL; j++) r += s[j];
#endif
    for (; i < n; i++) r += a[i] * b[i];
    return r;
}

static void store_scaled(float *c, float v, float alpha, float beta) { *c = beta == 0.0f ? alpha * v : alpha * v + beta * *c; }

/* The product as dot products or row sweeps when it has one output row or column and its
 * operands are contiguous where the sweep needs them; 0 when it does not apply. */
static int try_gemv(const zci_gemm_args *g)
{
    if (g->packed_a || g->pack_b || g->k == 0 || (g->m != 1 && g->n != 1)) return 0;
    const int64_t m = g->m, n = g->n, k = g->k;
    int64_t macs = m * n * k;
    int nt = g->nthreads < 1 ? 1 : g->nthreads;
    if (macs / MIN_MACS_PER_THREAD < nt) nt = (int)(macs / MIN_MACS_PER_THREAD) < 1 ? 1 : (int)(macs / MIN_MACS_PER_THREAD);
    if (n == 1 && !g->trans_a && (g->trans_b || g->ldb == 1)) {
        /* c[i] = A[i, :] . b: one dot product per row */
#pragma omp parallel for num_threads(nt) schedule(static)
        for (int64_t i = 0; i < m; i++) store_scaled(g->c + i * g->ldc, dot(g->a + i * g->lda, g->b, k), g->alpha, g->beta);
    } else if (m == 1 && (!g->trans_a || g->lda == 1) && g->trans_b) {
        /* c[j] = B[j, :] . a */
#pragma omp parallel for num_threads(nt) schedule(static)
        for (int64_t j = 0; j < n; j++) store_scaled(g->c + j, dot(g->b + j * g->ldb, g->a, k), g->alpha, g->beta);
    } else if (m == 1 && (!g->trans_a || g->lda == 1) && !g->trans_b) {
        /* c[:] = sum_p a[p] B[p, :], in column chunks so that threads write apart */
        int64_t chunk = ceil_div(ceil_div(n, nt), 16) * 16;
#pragma omp parallel for num_threads(nt) schedule(static)
        for (int64_t j0 = 0; j0 < n; j0 += chunk) {
            int64_t len = min64(chunk, n - j0);
            float acc[256];
            for (int64_t c0 = 0; c0 < len; c0 += 256) {
                int64_t cl = min64(256, len - c0);
                for (int64_t j = 0; j < cl; j++) acc[j] = 0.0f;
                for (int64_t p = 0; p < k; p++) {
                    const float ap = g->a[p];
                    const float *brow = g->b + p * g->ldb + j0 + c0;
                    for (int64_t j = 0; j < cl; j++) acc[j] += ap * brow[j];
                }
                for (int64_t j = 0; j < cl; j++) store_scaled(g->c + j0 + c0 + j, acc[j], g->alpha, g->beta);
            }
        }
    } else {
        return 0;
    }
    if (g->epilogue) g->epilogue(g->epilogue_ctx, g->c, g->ldc, 0, m, 0, n);
    return 1;
}

zci_status zci_sgemm_run(const zci_gemm_args *g)
{
    if (g->m < 0 || g->n < 0 || g->k < 0)
        return zci_error(ZCI_INVALID_ARGUMENT, "gemm: negative size %lld x %lld x %lld", (long long)g->m,
                         (long long)g->n, (long long)g->k);
    if (g->m == 0 || g->n == 0) return ZCI_OK;
    if (try_gemv(g)) return ZCI_OK;
    if (g->packed_a && (g->packed_a->m != g->m || g->packed_a->k != g->k))
        return zci_error(ZCI_INVALID_ARGUMENT, "gemm: packed A is %lld x %lld, the multiply needs %lld x %lld",
                         (long long)g->packed_a->m, (long long)g->packed_a->k, (long long)g->m, (long long)g->k);
    grid gr = choose_grid(g->m, g->n, g->k, g->packed_a != NULL, g->nthreads);
    int nt = gr.tm * gr.tn;
    size_t a_fl, b_fl;
    size_t per = per_thread_floats(g->m, g->n, g->k, &a_fl, &b_fl);
    float *ws = g->workspace;
    float *own = NULL;
    if (!ws) {
        size_t bytes = zci_sgemm_workspace_size(g->m, g->n, g->k, nt);
        own = aligned_alloc(64, zci_align(bytes, 64));
        if (!own) return zci_error(ZCI_OUT_OF_MEMORY, "gemm: cannot allocate a %zu-byte workspace", bytes);
        ws = own;
    }
    /* rows split in whole MR strips (packed A is addressed by strip), columns in NR strips */
    int64_t mstrips = ceil_div(g->m, MR), nstrips = ceil_div(g->n, NR);
    int64_t rows_per = ceil_div(mstrips, gr.tm) * MR, cols_per = ceil_div(nstrips, gr.tn) * NR;
    if (nt == 1) {
        thread_ws tw = {ws, ws + a_fl, ws + a_fl + b_fl};
        gemm_region(g, 0, g->m, 0, g->n, tw);
    } else {
#pragma omp parallel num_threads(nt)
        {
#ifdef _OPENMP
            int t = omp_get_thread_num();
#else
            int t = 0;
#endif
            float *base = ws + (size_t)t * per;
            thread_ws tw = {base, base + a_fl, base + a_fl + b_fl};
            int64_t m0 = (t / gr.tn) * rows_per, n0 = (t % gr.tn) * cols_per;
            gemm_region(g, m0, min64(g->m, m0 + rows_per), n0, min64(g->n, n0 + cols_per), tw);
        }
    }
    free(own);
    return ZCI_OK;
}

zci_status zci_sgemm(int trans_a, int trans_b, int64_t m, int64_t n, int64_t k, float alpha, const float *a,
                     int64_t lda, const float *b, int64_t ldb, float beta, float *c, int64_t ldc, int nthreads)
{
    zci_gemm_args g = {0};
    g.m = m;
    g.n = n;
    g.k = k;
    g.alpha = alpha;
    g.beta = beta;
    g.a = a;
    g.lda = lda;
    g.trans_a = trans_a;
    g.b = b;
    g.ldb = ldb;
    g.trans_b = trans_b;
    g.c = c;
    g.ldc = ldc;
    g.nthreads = nthreads;
    return zci_sgemm_run(&g);
}
