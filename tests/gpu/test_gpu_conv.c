/* test_gpu_conv.c: our implicit-GEMM convolution kernel (src/cuda/conv_igemm.cu) against a
 * double-precision CPU convolution of the same FP16 data, for every tile configuration and
 * several k splits, on geometries that cover what the kernel must get right:
 *   - YOLOv5s's shapes scaled down (the 6x6/2 first conv on 8 padded channels, 3x3/2 and 1x1
 *     convs, the 255-channel head conv with an odd channel count);
 *   - deep layers with few rows and long k (the split-K path and its tile counters);
 *   - odd sizes, batch > 1, dilation, unequal strides and pads, R != S;
 *   - every activation, the bias absent, the residual before and after the activation;
 *   - an output written into a wider buffer (channel stride > channels) without touching the
 *     channels beyond.
 * Each output element must be within 3e-3 * max(1, |ref|) (FP16 output rounding is 4.9e-4);
 * every element the kernel owns must be written (the buffer is poisoned with NaN first); the
 * second launch of the same call must give the same bits (split-K sums in a fixed order, the
 * counters reset themselves).
 * Then the direct kernel for few input channels (src/cuda/conv_direct.cu) against the same kind
 * of reference, with every block shape: YOLOv5s's first conv at 640x640 (batch 1 and 2, 3 real
 * channels padded to 8 as the engine does, with and without the count given), odd sizes, strides
 * 1 and 2 (and mixed), kernels 1 to 7, 8 and 16 channels, 8 to 64 outputs, every activation,
 * padding only at the end, outputs that see only padding, wider output buffers, the pair mode
 * (4 or fewer channels at stride 2); and geometries it must refuse.
 * --quick: three igemm cases with splits 1 and 2 only, four small direct cases (scripts/gpu_tests.sh
 * runs that under compute-sanitizer's memcheck and racecheck). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/common.h"
#include "cuda/cuda_debug.h"
#include "gpu_test.h"
#include "ops/conv.h"

typedef struct conv_case {
    const char *name;
    int N, H, W, C, Nc, R, S, sh, sw, ph, pw, dh, dw;
    int act;
    float alpha, beta;
    int bias, res, sum_first;
    int extra_ld; /* output channel stride = Nc + extra_ld */
} conv_case;

static const conv_case kCases[] = {
    {"first conv 6x6/2, 8 padded channels", 1, 64, 64, 8, 32, 6, 6, 2, 2, 2, 2, 1, 1, ZCI_ACT_SILU, 0, 0, 1, 0, 0, 0},
    {"3x3/2 32->64", 1, 40, 40, 32, 64, 3, 3, 2, 2, 1, 1, 1, 1, ZCI_ACT_SILU, 0, 0, 1, 0, 0, 0},
    {"1x1 64->32 + residual", 1, 40, 40, 64, 32, 1, 1, 1, 1, 0, 0, 1, 1, ZCI_ACT_SILU, 0, 0, 1, 1, 0, 0},
    {"head 1x1 128->255 sigmoid", 1, 20, 20, 128, 255, 1, 1, 1, 1, 0, 0, 1, 1, ZCI_ACT_SIGMOID, 0, 0, 1, 0, 0, 0},
    {"deep 3x3 256->128, relu(x + res)", 1, 10, 10, 256, 128, 3, 3, 1, 1, 1, 1, 1, 1, ZCI_ACT_RELU, 0, 0, 1, 1, 1, 0},
    {"deep 1x1 512->256, few rows", 1, 6, 6, 512, 256, 1, 1, 1, 1, 0, 0, 1, 1, ZCI_ACT_SILU, 0, 0, 1, 0, 0, 0},
    {"batch 2, odd sizes, dilation 2", 2, 13, 17, 24, 40, 3, 3, 1, 1, 2, 2, 2, 2, ZCI_ACT_LEAKY_RELU, 0.1f, 0, 1, 0, 0, 0},
    {"3x5, strides 2x1, pads 1x2, clip", 3, 9, 11, 16, 24, 3, 5, 2, 1, 1, 2, 1, 1, ZCI_ACT_CLIP, 0.f, 0.5f, 0, 0, 0, 0},
    {"hardswish, no bias", 1, 7, 7, 8, 8, 1, 1, 1, 1, 0, 0, 1, 1, ZCI_ACT_HARDSWISH, 0, 0, 0, 1, 0, 0},
    {"no activation, wider output buffer", 2, 12, 12, 32, 48, 3, 3, 1, 1, 1, 1, 1, 1, ZCI_ACT_NONE, 0, 0, 1, 1, 0, 24},
    {"odd channels into a wider buffer", 1, 9, 9, 16, 13, 1, 1, 1, 1, 0, 0, 1, 1, ZCI_ACT_SILU, 0, 0, 1, 0, 0, 3},
};

static uint32_t rng = 12345;
static float frand(void) /* uniform [-1, 1) */
{
    rng = rng * 1664525u + 1013904223u;
    return (float)(rng >> 8) / 8388608.0f - 1.0f;
}

static float act_ref(int act, float x, float a, float b) { return zci_activation_apply((zci_activation)act, x, a, b); }

static int quick; /* --quick: splits 1 and 2 only (for compute-sanitizer) */

static int run_case(const conv_case *cc)
{
    const int OH = (cc->H + 2 * cc->ph - cc->dh * (cc->R - 1) - 1) / cc->sh + 1;
    const int OW = (cc->W + 2 * cc->pw - cc->dw * (cc->S - 1) - 1) / cc->sw + 1;
    const int M = cc->N * OH * OW, K = cc->R * cc->S * cc->C, ldy = cc->Nc + cc->extra_ld;
    const size_t nx = (size_t)cc->N * cc->H * cc->W * cc->C, nw = (size_t)cc->Nc * K, nr = (size_t)M * cc->Nc,
                 ny = (size_t)M * ldy;
    uint16_t *x = malloc(nx * 2), *w = malloc(nw * 2), *res = malloc(nr * 2), *y = malloc(ny * 2), *y2 = malloc(ny * 2);
    float *bias = malloc((size_t)cc->Nc * 4);
    double *ref = malloc(nr * sizeof(double));
    int bad = 0;
    if (!x || !w || !res || !y || !y2 || !bias || !ref) {
        GT_CHECK(0, "out of memory");
        bad = 1;
        goto done;
    }
    const float wscale = 1.0f / sqrtf((float)K);
    for (size_t i = 0; i < nx; i++) x[i] = zci_f32_to_f16(frand());
    for (size_t i = 0; i < nw; i++) w[i] = zci_f32_to_f16(frand() * wscale * 1.7f);
    for (size_t i = 0; i < nr; i++) res[i] = zci_f32_to_f16(frand());
    for (int i = 0; i < cc->Nc; i++) bias[i] = 0.5f * frand();
    /* the reference, in double from the same halves */
    for (int m = 0; m < M; m++) {
        const int ow = m % OW, t = m / OW, oh = t % OH, nb = t / OH;
        for (int co = 0; co < cc->Nc; co++) {
            double s = 0;
            for (int r = 0; r < cc->R; r++) {
                const int ih = oh * cc->sh - cc->ph + r * cc->dh;
                if (ih < 0 || ih >= cc->H) continue;
                for (int q = 0; q < cc->S; q++) {
                    const int iw = ow * cc->sw - cc->pw + q * cc->dw;
                    if (iw < 0 || iw >= cc->W) continue;
                    const uint16_t *xp = x + ((size_t)(nb * cc->H + ih) * cc->W + iw) * cc->C;
                    const uint16_t *wp = w + (size_t)co * K + (size_t)(r * cc->S + q) * cc->C;
                    for (int c = 0; c < cc->C; c++) s += (double)zci_f16_to_f32(xp[c]) * zci_f16_to_f32(wp[c]);
                }
            }
            if (cc->bias) s += bias[co];
            const double rv = cc->res ? zci_f16_to_f32(res[(size_t)m * cc->Nc + co]) : 0.0;
            if (cc->sum_first) s += rv;
            s = act_ref(cc->act, (float)s, cc->alpha, cc->beta);
            if (!cc->sum_first) s += rv;
            ref[(size_t)m * cc->Nc + co] = s;
        }
    }
    zci_igemm_test t = {cc->N, cc->H, cc->W, cc->C, cc->Nc, cc->R, cc->S, cc->sh, cc->sw, cc->ph, cc->pw, cc->dh, cc->dw,
                        OH, OW, cc->act, cc->alpha, cc->beta, cc->sum_first, ldy, x, w, cc->res ? res : NULL,
                        cc->bias ? bias : NULL};
    const int splits_list[] = {1, 2, 3, 5};
    int runs = 0;
    for (int cfg = -1; cfg < zci_cuda_igemm_configs(); cfg++)
        for (int si = 0; si < 4; si++) {
            const int splits = splits_list[si];
            if ((cfg < 0 || quick) && splits > 2) continue;
            if (cfg < 0 && splits > 1) continue;
            for (size_t i = 0; i < ny; i++) y[i] = 0x7e00; /* NaN */
            if (!GT_OK(zci_cuda_igemm_test_run(&t, cfg, splits, y, NULL))) {
                bad++;
                continue;
            }
            runs++;
            /* a second call (its two launches) must give the same bits */
            for (size_t i = 0; i < ny; i++) y2[i] = 0x7e00;
            if (GT_OK(zci_cuda_igemm_test_run(&t, cfg, splits, y2, NULL)))
                GT_CHECK(!memcmp(y, y2, ny * 2), "%s: cfg %d split %d: two runs differ", cc->name, cfg, splits);
            size_t wrong = 0, first = (size_t)-1;
            double worst = 0;
            for (int m = 0; m < M; m++) {
                for (int co = 0; co < ldy; co++) {
                    const uint16_t h = y[(size_t)m * ldy + co];
                    if (co >= cc->Nc) { /* beyond the channels: untouched */
                        if (h != 0x7e00 && wrong++ == 0) first = (size_t)m * ldy + co;
                        continue;
                    }
                    const double v = zci_f16_to_f32(h), rv = ref[(size_t)m * cc->Nc + co];
                    const double e = fabs(v - rv) / (fabs(rv) > 1 ? fabs(rv) : 1);
                    if (!(e <= 3e-3)) {
                        if (wrong++ == 0) first = (size_t)m * ldy + co;
                    }
                    if (e > worst || e != e) worst = e;
                }
            }
            GT_CHECK(wrong == 0, "%s: cfg %d split %d: %zu wrong elements (first at %zu), worst error %.3g", cc->name, cfg,
                     splits, wrong, first, worst);
            bad += wrong != 0;
        }
    printf("%-40s %4d x %3d, K %5d: %2d runs, %s\n", cc->name, M, cc->Nc, K, runs, bad ? "FAIL" : "ok");
done:
    free(x);
    free(w);
    free(res);
    free(y);
    free(y2);
    free(bias);
    free(ref);
    return bad;
}

/* ---- the direct kernel for few input channels (conv_direct.cu) ---- */

typedef struct dconv_case {
    const char *name;
    int N, H, W, C;
    int creal; /* channels with data; the rest of C is zero in x and w (the engine's padding) */
    int used;  /* 1: creal is passed as C_used (4 or fewer at stride_w 2: the kernel's pair mode) */
    int K, R, S, sh, sw, ph, pw;
    int P, Q; /* 0: from symmetric padding */
    int act;
    float alpha, beta;
    int extra_ld; /* output channel stride = K + extra_ld */
} dconv_case;

static const dconv_case kDconvCases[] = {
    {"yolov5s first conv 640, batch 1", 1, 640, 640, 8, 3, 1, 32, 6, 6, 2, 2, 2, 2, 0, 0, ZCI_ACT_SILU, 0, 0, 0},
    {"yolov5s first conv 640, batch 2", 2, 640, 640, 8, 3, 1, 32, 6, 6, 2, 2, 2, 2, 0, 0, ZCI_ACT_SILU, 0, 0, 0},
    {"yolov5s 640, channel count not given", 1, 640, 640, 8, 3, 0, 32, 6, 6, 2, 2, 2, 2, 0, 0, ZCI_ACT_SILU, 0, 0, 0},
    {"6x6/2 8->32, 37x53, batch 3", 3, 37, 53, 8, 8, 0, 32, 6, 6, 2, 2, 2, 2, 0, 0, ZCI_ACT_SILU, 0, 0, 0},
    {"3x3/1 16->64 relu, wider y", 2, 37, 53, 16, 16, 0, 64, 3, 3, 1, 1, 1, 1, 0, 0, ZCI_ACT_RELU, 0, 0, 8},
    {"1x1 8->8, odd chunk count", 1, 19, 45, 8, 8, 0, 8, 1, 1, 1, 1, 0, 0, 0, 0, ZCI_ACT_NONE, 0, 0, 0},
    {"7x7/2 16->48 leaky relu", 3, 29, 31, 16, 16, 0, 48, 7, 7, 2, 2, 3, 3, 0, 0, ZCI_ACT_LEAKY_RELU, 0.1f, 0, 0},
    {"7x7/2 16->64 (largest weights)", 1, 20, 20, 16, 16, 0, 64, 7, 7, 2, 2, 3, 3, 0, 0, ZCI_ACT_SILU, 0, 0, 0},
    {"3x3/2 8->24 clip, 5 real channels", 1, 41, 70, 8, 5, 1, 24, 3, 3, 2, 2, 1, 1, 0, 0, ZCI_ACT_CLIP, -0.2f, 0.4f, 0},
    {"6x6 strides 2x1 pads 2x1 ->40 hardswish", 2, 23, 35, 8, 8, 0, 40, 6, 6, 2, 1, 2, 1, 0, 0, ZCI_ACT_HARDSWISH, 0, 0, 8},
    {"5x7 strides 1x2 pads 0x3 ->56 sigmoid", 1, 30, 67, 16, 11, 0, 56, 5, 7, 1, 2, 0, 3, 0, 0, ZCI_ACT_SIGMOID, 0, 0, 8},
    {"7x1 16->16 silu, wider y", 2, 33, 20, 16, 16, 0, 16, 7, 1, 1, 1, 3, 0, 0, 0, ZCI_ACT_SILU, 0, 0, 16},
    {"3x3/2 padded at the end only", 1, 10, 15, 8, 8, 0, 32, 3, 3, 2, 2, 0, 0, 5, 8, ZCI_ACT_RELU, 0, 0, 0},
    {"1x1 images, 3x3 pad 1 ->64", 2, 1, 1, 8, 8, 0, 64, 3, 3, 1, 1, 1, 1, 0, 0, ZCI_ACT_SILU, 0, 0, 0},
    {"pads beyond the kernel ->16", 1, 8, 9, 8, 8, 0, 16, 3, 3, 1, 2, 5, 4, 0, 0, ZCI_ACT_NONE, 0, 0, 0},
    /* pair mode (4 or fewer channels, stride_w 2): odd kernel widths, stride_h 1, 16 padded
     * channels, odd sizes, the stem of ResNet */
    {"pairs: 3x3/2 3 ch ->24 clip, odd sizes", 2, 41, 70, 8, 3, 1, 24, 3, 3, 2, 2, 1, 1, 0, 0, ZCI_ACT_CLIP, -0.2f, 0.4f, 0},
    {"pairs: 6x6 strides 1x2, 4 ch ->40 leaky", 1, 23, 67, 8, 4, 1, 40, 6, 6, 1, 2, 2, 2, 0, 0, ZCI_ACT_LEAKY_RELU, 0.1f, 0, 8},
    {"pairs: 7x7/2 3 of 16 ch ->64 relu", 2, 45, 39, 16, 3, 1, 64, 7, 7, 2, 2, 3, 3, 0, 0, ZCI_ACT_RELU, 0, 0, 0},
    {"pairs: 1x5/2 2 ch ->8 sigmoid", 1, 17, 29, 8, 2, 1, 8, 1, 5, 2, 2, 0, 2, 0, 0, ZCI_ACT_SIGMOID, 0, 0, 0},
    {"pairs: 5x1/2 1 ch ->16 hardswish, wider y", 3, 9, 30, 8, 1, 1, 16, 5, 1, 2, 2, 2, 0, 0, 0, ZCI_ACT_HARDSWISH, 0, 0, 8},
};

static void dconv_sizes(const dconv_case *cc, int *P, int *Q)
{
    *P = cc->P ? cc->P : (cc->H + 2 * cc->ph - cc->R) / cc->sh + 1;
    *Q = cc->Q ? cc->Q : (cc->W + 2 * cc->pw - cc->S) / cc->sw + 1;
}

/* Random x, w, bias for cc (zero beyond creal channels); 0 if out of memory. */
static int dconv_data(const dconv_case *cc, uint16_t **x, uint16_t **w, float **bias)
{
    const size_t nx = (size_t)cc->N * cc->H * cc->W * cc->C, nw = (size_t)cc->K * cc->R * cc->S * cc->C;
    *x = malloc(nx * 2);
    *w = malloc(nw * 2);
    *bias = malloc((size_t)cc->K * 4);
    if (!*x || !*w || !*bias) return 0;
    const float wscale = 1.7f / sqrtf((float)(cc->R * cc->S * cc->creal));
    for (size_t i = 0; i < nx; i++) (*x)[i] = (int)(i % cc->C) < cc->creal ? zci_f32_to_f16(frand()) : 0;
    for (size_t i = 0; i < nw; i++) (*w)[i] = (int)(i % cc->C) < cc->creal ? zci_f32_to_f16(frand() * wscale) : 0;
    for (int i = 0; i < cc->K; i++) (*bias)[i] = 0.5f * frand();
    return 1;
}

static int run_dconv_case(const dconv_case *cc)
{
    int P, Q;
    dconv_sizes(cc, &P, &Q);
    const int ldy = cc->K + cc->extra_ld, rsc = cc->R * cc->S * cc->C;
    const size_t nx = (size_t)cc->N * cc->H * cc->W * cc->C, nw = (size_t)cc->K * rsc, M = (size_t)cc->N * P * Q,
                 ny = M * ldy;
    uint16_t *x = NULL, *w = NULL, *y = malloc(ny * 2);
    float *bias = NULL, *xf = malloc(nx * 4), *wf = malloc(nw * 4);
    double *ref = malloc(M * cc->K * sizeof(double));
    int bad = 0, runs = 0;
    if (!dconv_data(cc, &x, &w, &bias) || !y || !xf || !wf || !ref) {
        GT_CHECK(0, "out of memory");
        bad = 1;
        goto done;
    }
    /* the reference, in double from the same halves (the zero channels skipped) */
    for (size_t i = 0; i < nx; i++) xf[i] = zci_f16_to_f32(x[i]);
    for (size_t i = 0; i < nw; i++) wf[i] = zci_f16_to_f32(w[i]);
    for (size_t m = 0; m < M; m++) {
        const int q = (int)(m % Q), p = (int)(m / Q % P), nb = (int)(m / ((size_t)P * Q));
        for (int k = 0; k < cc->K; k++) {
            double s = bias[k];
            for (int r = 0; r < cc->R; r++) {
                const int ih = p * cc->sh - cc->ph + r;
                if (ih < 0 || ih >= cc->H) continue;
                for (int t = 0; t < cc->S; t++) {
                    const int iw = q * cc->sw - cc->pw + t;
                    if (iw < 0 || iw >= cc->W) continue;
                    const float *xp = xf + ((size_t)(nb * cc->H + ih) * cc->W + iw) * cc->C;
                    const float *wp = wf + (size_t)k * rsc + (size_t)(r * cc->S + t) * cc->C;
                    for (int c = 0; c < cc->creal; c++) s += (double)xp[c] * wp[c];
                }
            }
            ref[m * cc->K + k] = act_ref(cc->act, (float)s, cc->alpha, cc->beta);
        }
    }
    const zci_dconv_test t = {cc->N, cc->H, cc->W, cc->C, cc->K, cc->R, cc->S, cc->sh, cc->sw, cc->ph, cc->pw, P, Q,
                              ldy, cc->act, cc->alpha, cc->beta, x, w, bias, cc->used ? cc->creal : 0};
    GT_CHECK(zci_cuda_dconv_supported(&t), "%s: refused", cc->name);
    /* every block shape (the automatic choice, 2, 4 and 8 warps with the regular and the small
     * warp tile), with the grid that fits the GPU and with 3 blocks (each then goes through many
     * tiles, alternating its two patch buffers) */
    for (int run = 0; run < 14; run++) {
        const int shape = run / 2, warps = shape == 0 ? 0 : 1 << ((shape + 1) / 2), small = shape > 0 && shape % 2 == 0;
        const int max_blocks = run % 2 ? 3 : 0;
        if (small && cc->K > 32) continue; /* no small tile there */
        for (size_t i = 0; i < ny; i++) y[i] = 0x7e00; /* NaN */
        if (!GT_OK(zci_cuda_dconv_test_run(&t, warps, small, max_blocks, y, NULL))) {
            bad++;
            continue;
        }
        runs++;
        size_t wrong = 0, first = (size_t)-1;
        double worst = 0;
        for (size_t m = 0; m < M; m++)
            for (int k = 0; k < ldy; k++) {
                const uint16_t h = y[m * ldy + k];
                if (k >= cc->K) { /* beyond the channels: untouched */
                    if (h != 0x7e00 && wrong++ == 0) first = m * ldy + k;
                    continue;
                }
                const double v = zci_f16_to_f32(h), rv = ref[m * cc->K + k];
                const double e = fabs(v - rv) / (fabs(rv) > 1 ? fabs(rv) : 1);
                if (!(e <= 3e-3) && wrong++ == 0) first = m * ldy + k;
                if (e > worst || e != e) worst = e;
            }
        GT_CHECK(wrong == 0, "%s: %d warps%s, %d blocks: %zu wrong elements (first at %zu), worst error %.3g",
                 cc->name, warps, small ? " (small tile)" : "", max_blocks, wrong, first, worst);
        bad += wrong != 0;
    }
    printf("direct %-38s %7zu x %2d, k %4d: %d runs, %s\n", cc->name, M, cc->K, rsc, runs, bad ? "FAIL" : "ok");
done:
    free(x);
    free(w);
    free(y);
    free(bias);
    free(xf);
    free(wf);
    free(ref);
    return bad;
}

/* Geometries the direct kernel must refuse (cu_dconv_supported 0, the run ZCI_UNSUPPORTED). */
static int run_dconv_refusals(void)
{
    static const struct {
        const char *why;
        zci_dconv_test t;
    } kBad[] = {
        {"4 channels", {1, 16, 16, 4, 32, 3, 3, 1, 1, 1, 1, 16, 16, 32, ZCI_ACT_NONE, 0, 0, NULL, NULL, NULL, 0}},
        {"24 channels", {1, 16, 16, 24, 32, 3, 3, 1, 1, 1, 1, 16, 16, 32, ZCI_ACT_NONE, 0, 0, NULL, NULL, NULL, 0}},
        {"72 outputs", {1, 16, 16, 8, 72, 3, 3, 1, 1, 1, 1, 16, 16, 72, ZCI_ACT_NONE, 0, 0, NULL, NULL, NULL, 0}},
        {"12 outputs", {1, 16, 16, 8, 12, 3, 3, 1, 1, 1, 1, 16, 16, 16, ZCI_ACT_NONE, 0, 0, NULL, NULL, NULL, 0}},
        {"8x8 kernel", {1, 16, 16, 8, 32, 8, 8, 1, 1, 1, 1, 11, 11, 32, ZCI_ACT_NONE, 0, 0, NULL, NULL, NULL, 0}},
        {"stride 3", {1, 16, 16, 8, 32, 3, 3, 3, 3, 1, 1, 6, 6, 32, ZCI_ACT_NONE, 0, 0, NULL, NULL, NULL, 0}},
        {"ldy 36", {1, 16, 16, 8, 32, 3, 3, 1, 1, 1, 1, 16, 16, 36, ZCI_ACT_NONE, 0, 0, NULL, NULL, NULL, 0}},
        {"ldy < K", {1, 16, 16, 8, 32, 3, 3, 1, 1, 1, 1, 16, 16, 24, ZCI_ACT_NONE, 0, 0, NULL, NULL, NULL, 0}},
        {"activation 99", {1, 16, 16, 8, 32, 3, 3, 1, 1, 1, 1, 16, 16, 32, 99, 0, 0, NULL, NULL, NULL, 0}},
        {"negative pad", {1, 16, 16, 8, 32, 3, 3, 1, 1, -1, 1, 12, 16, 32, ZCI_ACT_NONE, 0, 0, NULL, NULL, NULL, 0}},
        {"empty batch", {0, 16, 16, 8, 32, 3, 3, 1, 1, 1, 1, 16, 16, 32, ZCI_ACT_NONE, 0, 0, NULL, NULL, NULL, 0}},
        {"9 channels used of 8", {1, 16, 16, 8, 32, 3, 3, 2, 2, 1, 1, 8, 8, 32, ZCI_ACT_NONE, 0, 0, NULL, NULL, NULL, 9}},
    };
    static uint16_t dummy[64];
    static float fdummy[64];
    int bad = 0;
    for (size_t i = 0; i < sizeof kBad / sizeof kBad[0]; i++) {
        zci_dconv_test t = kBad[i].t;
        t.x = dummy;
        t.w = dummy;
        t.bias = fdummy;
        const int sup = zci_cuda_dconv_supported(&t);
        const zci_status st = zci_cuda_dconv_test_run(&t, 0, 0, 0, dummy, NULL);
        GT_CHECK(!sup && st == ZCI_UNSUPPORTED, "direct: %s accepted (supported %d, run %s)", kBad[i].why, sup,
                 zci_status_name(st));
        bad += sup || st != ZCI_UNSUPPORTED;
    }
    /* a block shape that does not exist: the small warp tile with 64 output channels */
    {
        const zci_dconv_test t = {1, 16, 16, 8, 64, 3, 3, 1, 1, 1, 1, 16, 16, 64, ZCI_ACT_NONE, 0, 0, dummy, dummy, fdummy, 0};
        const zci_status st = zci_cuda_dconv_test_run(&t, 4, 1, 0, dummy, NULL);
        GT_CHECK(st == ZCI_UNSUPPORTED, "direct: small tile with K 64 accepted (%s)", zci_status_name(st));
        bad += st != ZCI_UNSUPPORTED;
    }
    printf("direct: %zu unsupported geometries refused%s\n", sizeof kBad / sizeof kBad[0] + 1, bad ? ": FAIL" : "");
    return bad;
}

/* YOLOv5s's convolution shapes at 640x640, batch 1 (a selection), for --bench. */
static const conv_case kBench[] = {
    {"model.0 6x6/2 8->32 @320", 1, 640, 640, 8, 32, 6, 6, 2, 2, 2, 2, 1, 1, ZCI_ACT_SILU, 0, 0, 1, 0, 0, 0},
    {"model.1 3x3/2 32->64 @160", 1, 320, 320, 32, 64, 3, 3, 2, 2, 1, 1, 1, 1, ZCI_ACT_SILU, 0, 0, 1, 0, 0, 0},
    {"model.2 1x1 64->32 @160", 1, 160, 160, 64, 32, 1, 1, 1, 1, 0, 0, 1, 1, ZCI_ACT_SILU, 0, 0, 1, 0, 0, 0},
    {"model.2 3x3 32->32 +res @160", 1, 160, 160, 32, 32, 3, 3, 1, 1, 1, 1, 1, 1, ZCI_ACT_SILU, 0, 0, 1, 1, 0, 0},
    {"model.4 1x1 128->64 @80", 1, 80, 80, 128, 64, 1, 1, 1, 1, 0, 0, 1, 1, ZCI_ACT_SILU, 0, 0, 1, 0, 0, 0},
    {"model.6 3x3 128->128 @40", 1, 40, 40, 128, 128, 3, 3, 1, 1, 1, 1, 1, 1, ZCI_ACT_SILU, 0, 0, 1, 1, 0, 0},
    {"model.7 3x3/2 256->512 @20", 1, 40, 40, 256, 512, 3, 3, 2, 2, 1, 1, 1, 1, ZCI_ACT_SILU, 0, 0, 1, 0, 0, 0},
    {"model.9 1x1 1024->512 @20", 1, 20, 20, 1024, 512, 1, 1, 1, 1, 0, 0, 1, 1, ZCI_ACT_SILU, 0, 0, 1, 0, 0, 0},
    {"model.24 1x1 128->255 @80", 1, 80, 80, 128, 255, 1, 1, 1, 1, 0, 0, 1, 1, ZCI_ACT_SIGMOID, 0, 0, 1, 0, 0, 0},
};

/* Batch 32: the layers that hold most of YOLOv5s's arithmetic (the 3x3 convolutions of each
 * level's bottlenecks, a strided one, the wide 1x1s). */
static const conv_case kBench32[] = {
    {"b32 model.2 3x3 32->32 +res @160", 32, 160, 160, 32, 32, 3, 3, 1, 1, 1, 1, 1, 1, ZCI_ACT_SILU, 0, 0, 1, 1, 0, 0},
    {"b32 model.3 3x3/2 64->128 @80", 32, 160, 160, 64, 128, 3, 3, 2, 2, 1, 1, 1, 1, ZCI_ACT_SILU, 0, 0, 1, 0, 0, 0},
    {"b32 model.4 3x3 64->64 +res @80", 32, 80, 80, 64, 64, 3, 3, 1, 1, 1, 1, 1, 1, ZCI_ACT_SILU, 0, 0, 1, 1, 0, 0},
    {"b32 model.6 3x3 128->128 +res @40", 32, 40, 40, 128, 128, 3, 3, 1, 1, 1, 1, 1, 1, ZCI_ACT_SILU, 0, 0, 1, 1, 0, 0},
    {"b32 model.8 3x3 256->256 +res @20", 32, 20, 20, 256, 256, 3, 3, 1, 1, 1, 1, 1, 1, ZCI_ACT_SILU, 0, 0, 1, 1, 0, 0},
    {"b32 model.7 3x3/2 256->512 @20", 32, 40, 40, 256, 512, 3, 3, 2, 2, 1, 1, 1, 1, ZCI_ACT_SILU, 0, 0, 1, 0, 0, 0},
    {"b32 model.13 1x1 512->256 @40", 32, 40, 40, 512, 256, 1, 1, 1, 1, 0, 0, 1, 1, ZCI_ACT_SILU, 0, 0, 1, 0, 0, 0},
    {"b32 model.24 1x1 128->255 @80", 32, 80, 80, 128, 255, 1, 1, 1, 1, 0, 0, 1, 1, ZCI_ACT_SIGMOID, 0, 0, 1, 0, 0, 0},
};

/* --bench [cfg]: times every configuration (or one) and split on kBench, and with no split on
 * kBench32, no reference check;
 * then the direct kernel on YOLOv5s's first conv at batch 1 and 32, with each block shape (a cfg
 * that does not exist, e.g. 99, leaves only that part). */
static void bench(int only_cfg)
{
    const size_t n1 = sizeof kBench / sizeof kBench[0], n32 = sizeof kBench32 / sizeof kBench32[0];
    for (size_t b = 0; b < n1 + n32; b++) {
        const conv_case *cc = b < n1 ? &kBench[b] : &kBench32[b - n1];
        const int OH = (cc->H + 2 * cc->ph - cc->dh * (cc->R - 1) - 1) / cc->sh + 1;
        const int OW = (cc->W + 2 * cc->pw - cc->dw * (cc->S - 1) - 1) / cc->sw + 1;
        const int M = cc->N * OH * OW, K = cc->R * cc->S * cc->C;
        const size_t nx = (size_t)cc->N * cc->H * cc->W * cc->C, nw = (size_t)cc->Nc * K, ny = (size_t)M * cc->Nc;
        uint16_t *x = malloc(nx * 2), *w = malloc(nw * 2), *res = malloc(ny * 2), *y = malloc(ny * 2);
        float *bias = malloc((size_t)cc->Nc * 4);
        if (!x || !w || !res || !y || !bias) return;
        for (size_t i = 0; i < nx; i++) x[i] = zci_f32_to_f16(frand());
        for (size_t i = 0; i < nw; i++) w[i] = zci_f32_to_f16(frand() / sqrtf((float)K));
        for (size_t i = 0; i < ny; i++) res[i] = zci_f32_to_f16(frand());
        for (int i = 0; i < cc->Nc; i++) bias[i] = frand();
        zci_igemm_test t = {cc->N, cc->H, cc->W, cc->C, cc->Nc, cc->R, cc->S, cc->sh, cc->sw, cc->ph, cc->pw, cc->dh,
                            cc->dw, OH, OW, cc->act, cc->alpha, cc->beta, cc->sum_first, cc->Nc, x, w,
                            cc->res ? res : NULL, bias};
        const double gflop = 2.0 * M * cc->Nc * K * 1e-9;
        printf("%-30s M %6d N %4d K %5d %.3f GFLOP:", cc->name, M, cc->Nc, K, gflop);
        float best = 1e30f;
        int best_cfg = -1;
        for (int cfg = 0; cfg < zci_cuda_igemm_configs(); cfg++) {
            if (only_cfg >= 0 && cfg != only_cfg) continue;
            for (int splits = 1; splits <= (cc->N > 1 ? 1 : 4); splits *= 2) {
                float us = 0;
                if (zci_cuda_igemm_test_run(&t, cfg, splits, y, &us) != ZCI_OK) continue;
                printf(" c%d/s%d %.1f", cfg, splits, us);
                if (us < best) {
                    best = us;
                    best_cfg = cfg;
                }
            }
        }
        printf(" us; best c%d %.1f us = %.0f TFLOP/s\n", best_cfg, best, gflop / best * 1e3);
        free(x);
        free(w);
        free(res);
        free(y);
        free(bias);
    }
    /* the direct kernel on YOLOv5s's first conv (memory floor: 13.1 MB per image at ~3 TB/s),
     * with the real channel count given (pair mode) and not */
    for (int N = 1; N <= 32; N += 31)
        for (int used = 1; used >= 0; used--) {
            dconv_case cc = kDconvCases[0];
            cc.N = N;
            int P, Q;
            dconv_sizes(&cc, &P, &Q);
            uint16_t *x = NULL, *w = NULL, *y = malloc((size_t)N * P * Q * cc.K * 2);
            float *bias = NULL;
            if (dconv_data(&cc, &x, &w, &bias) && y) {
                const zci_dconv_test t = {N, cc.H, cc.W, cc.C, cc.K, cc.R, cc.S, cc.sh, cc.sw, cc.ph, cc.pw, P, Q,
                                          cc.K, cc.act, 0, 0, x, w, bias, used ? cc.creal : 0};
                const double mb = ((double)N * cc.H * cc.W * cc.C + (double)N * P * Q * cc.K) * 2e-6;
                printf("direct model.0 6x6/2 8->32 @320, batch %2d, %.0f MB, C_used %d:", N, mb, t.C_used);
                for (int shape = 0; shape < 7; shape++) {
                    const int warps = shape == 0 ? 0 : 1 << ((shape + 1) / 2), small = shape > 0 && shape % 2 == 0;
                    float us = 0;
                    if (zci_cuda_dconv_test_run(&t, warps, small, 0, y, &us) != ZCI_OK) continue;
                    if (warps) printf(" %dw%s %.1f", warps, small ? "s" : "", us);
                    else printf(" auto %.1f us (%.2f TB/s);", us, mb / us);
                }
                printf(" us\n");
            }
            free(x);
            free(w);
            free(y);
            free(bias);
        }
}

int main(int argc, char **argv)
{
    if (argc > 1 && !strcmp(argv[1], "--bench")) {
        if (gt_device_count() == 0) {
            printf("skipped: no GPU\n");
            return 0;
        }
        bench(argc > 2 ? atoi(argv[2]) : -1);
        return 0;
    }
    quick = argc > 1 && !strcmp(argv[1], "--quick");
    if (gt_device_count() == 0) {
        printf("skipped: no GPU\n");
        return 0;
    }
    int bad = 0;
    for (size_t i = 0; i < sizeof kCases / sizeof kCases[0]; i++) {
        /* --quick (under the sanitizers, which run ~100x slower): the first convolution, the
         * split-K path and the strided output only */
        if (quick && i != 0 && i != 4 && i != 10) continue;
        bad += run_case(&kCases[i]);
    }
    const size_t n_dconv = sizeof kDconvCases / sizeof kDconvCases[0];
    for (size_t i = 0; i < n_dconv; i++) {
        /* --quick: odd sizes with 8 channels (even and odd chunk counts), with 16, in pair mode */
        if (quick && i != 3 && i != 6 && i != 8 && i != 15) continue;
        bad += run_dconv_case(&kDconvCases[i]);
    }
    bad += run_dconv_refusals();
    if (gt_failures || bad) {
        printf("test_gpu_conv: %d failures\n", gt_failures);
        return 1;
    }
    printf("test_gpu_conv: all %s igemm cases passed on every tile configuration, %s direct cases on every block size\n",
           quick ? "3 quick" : "11", quick ? "4 quick" : "20");
    return 0;
}
