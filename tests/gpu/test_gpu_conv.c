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
 * counters reset themselves). --quick: three of the cases, splits 1 and 2 only
 * (scripts/gpu_tests.sh runs that under compute-sanitizer's memcheck and racecheck). */
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

/* --bench [cfg]: times every configuration (or one) and split on kBench, no reference check. */
static void bench(int only_cfg)
{
    for (size_t b = 0; b < sizeof kBench / sizeof kBench[0]; b++) {
        const conv_case *cc = &kBench[b];
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
        for (int cfg = 0; cfg < zci_cuda_igemm_configs(); cfg++) {
            if (only_cfg >= 0 && cfg != only_cfg) continue;
            for (int splits = 1; splits <= 4; splits *= 2) {
                float us = 0;
                if (zci_cuda_igemm_test_run(&t, cfg, splits, y, &us) != ZCI_OK) continue;
                printf(" c%d/s%d %.1f", cfg, splits, us);
            }
        }
        printf(" us\n");
        free(x);
        free(w);
        free(res);
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
    if (gt_failures || bad) {
        printf("test_gpu_conv: %d failures\n", gt_failures);
        return 1;
    }
    printf("test_gpu_conv: all %s cases passed on every tile configuration\n", quick ? "3 quick" : "11");
    return 0;
}
