/* test_detect_accuracy.c: the shipped shapes detector through the whole pipeline
 * (zci_detect: preprocessing -> inference -> decoding and NMS -> boxes in frame coordinates)
 * on fresh synthetic scenes with known ground truth (shapes_scene.h). A detection is right
 * when it has the class of an unmatched ground-truth box and an IoU >= 0.5 with it (greedy,
 * best score first). Requires precision >= 0.9 and recall >= 0.9.
 * The frames go in as RGB, BGR, NV12 and UYVY in turn, so the colour conversions are part of
 * what is measured.
 *
 * usage: test_detect_accuracy MODEL [--device cpu|cuda] [--scenes N] [--seed S]
 *                             [--conf T] [--iou T] [--min P]
 * Exits 0 on success, 1 on failure, and 0 with a "skipped: ..." line when --device cuda is
 * asked for and there is no GPU. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "shapes_scene.h"
#include "zcinfer_vision.h"

/* BT.601 limited range, the encoders' default: RGB -> YUV of one pixel. */
static void rgb_to_yuv(const uint8_t *p, double *y, double *u, double *v)
{
    double r = p[0], g = p[1], b = p[2];
    double yy = 0.299 * r + 0.587 * g + 0.114 * b;
    *y = 16.0 + yy * 219.0 / 255.0;
    *u = 128.0 + (b - yy) / 1.772 * 224.0 / 255.0;
    *v = 128.0 + (r - yy) / 1.402 * 224.0 / 255.0;
}

static uint8_t clamp8(double x) { return (uint8_t)(x < 0 ? 0 : x > 255 ? 255 : x + 0.5); }

/* Converts the scene to `format` in a newly allocated packed buffer. */
static uint8_t *convert(const scene *s, zci_pixel_format format, zci_frame *f)
{
    size_t bytes = zci_frame_packed(f, format, s->w, s->h, NULL);
    uint8_t *buf = malloc(bytes);
    zci_frame_packed(f, format, s->w, s->h, buf);
    int W = s->w, H = s->h;
    if (format == ZCI_PIXEL_RGB || format == ZCI_PIXEL_BGR) {
        for (size_t i = 0; i < (size_t)W * H; i++)
            for (int k = 0; k < 3; k++) buf[i * 3 + k] = s->rgb[i * 3 + (format == ZCI_PIXEL_BGR ? 2 - k : k)];
    } else if (format == ZCI_PIXEL_NV12) {
        uint8_t *uv = buf + (size_t)W * H;
        int cw = (W + 1) / 2;
        for (int y = 0; y < H; y++)
            for (int x = 0; x < W; x++) {
                double yy, u, v;
                rgb_to_yuv(&s->rgb[((size_t)y * W + x) * 3], &yy, &u, &v);
                buf[(size_t)y * W + x] = clamp8(yy);
            }
        /* chroma: the average of each 2x2 block */
        for (int cy = 0; cy < (H + 1) / 2; cy++)
            for (int cx = 0; cx < cw; cx++) {
                double su = 0, sv = 0;
                int n = 0;
                for (int dy = 0; dy < 2; dy++)
                    for (int dx = 0; dx < 2; dx++) {
                        int x = 2 * cx + dx, y = 2 * cy + dy;
                        if (x >= W || y >= H) continue;
                        double yy, u, v;
                        rgb_to_yuv(&s->rgb[((size_t)y * W + x) * 3], &yy, &u, &v);
                        su += u;
                        sv += v;
                        n++;
                    }
                uv[(size_t)cy * 2 * cw + 2 * cx] = clamp8(su / n);
                uv[(size_t)cy * 2 * cw + 2 * cx + 1] = clamp8(sv / n);
            }
    } else { /* UYVY: chroma of each horizontal pair averaged */
        size_t pitch = (size_t)(W + 1) / 2 * 4;
        for (int y = 0; y < H; y++)
            for (int x = 0; x < W; x += 2) {
                double y0, u0, v0, y1 = 0, u1, v1;
                rgb_to_yuv(&s->rgb[((size_t)y * W + x) * 3], &y0, &u0, &v0);
                u1 = u0;
                v1 = v0;
                if (x + 1 < W) rgb_to_yuv(&s->rgb[((size_t)y * W + x + 1) * 3], &y1, &u1, &v1);
                uint8_t *q = buf + (size_t)y * pitch + (size_t)x * 2;
                q[0] = clamp8((u0 + u1) / 2);
                q[1] = clamp8(y0);
                q[2] = clamp8((v0 + v1) / 2);
                q[3] = clamp8(y1);
            }
    }
    return buf;
}

static double iou(const zci_detection *d, const scene_box *b)
{
    double iw = fmin(d->x2, b->x2) - fmax(d->x1, b->x1), ih = fmin(d->y2, b->y2) - fmax(d->y1, b->y1);
    if (iw <= 0 || ih <= 0) return 0;
    double inter = iw * ih;
    double ua = (double)(d->x2 - d->x1) * (d->y2 - d->y1) + (double)(b->x2 - b->x1) * (b->y2 - b->y1) - inter;
    return inter / ua;
}

int main(int argc, char **argv)
{
    const char *model = NULL;
    int scenes = 200, cuda = 0;
    uint64_t seed = 20240601;
    float conf = 0.3f, iou_thr = 0.45f;
    double min_pr = 0.9;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--device") && v) cuda = !strcmp(argv[++i], "cuda");
        else if (!strcmp(a, "--scenes") && v) scenes = atoi(argv[++i]);
        else if (!strcmp(a, "--seed") && v) seed = strtoull(argv[++i], NULL, 10);
        else if (!strcmp(a, "--conf") && v) conf = (float)atof(argv[++i]);
        else if (!strcmp(a, "--iou") && v) iou_thr = (float)atof(argv[++i]);
        else if (!strcmp(a, "--min") && v) min_pr = atof(argv[++i]);
        else if (a[0] != '-' && !model) model = a;
        else {
            fprintf(stderr, "usage: test_detect_accuracy MODEL [--device cpu|cuda] [--scenes N] [--seed S] "
                            "[--conf T] [--iou T] [--min P]\n");
            return 2;
        }
    }
    if (!model) {
        fprintf(stderr, "test_detect_accuracy: a MODEL is needed\n");
        return 2;
    }
    if (cuda) {
        int n = 0;
        zci_cuda_device_count(&n);
        if (n == 0) {
            printf("skipped: no GPU\n");
            return 0;
        }
    }
    zci_options o;
    zci_options_init(&o);
    o.device = cuda ? ZCI_DEVICE_CUDA : ZCI_DEVICE_CPU;
    zci_session *s;
    if (zci_session_create(model, &o, &s)) {
        fprintf(stderr, "test_detect_accuracy: cannot load %s: %s\n", model, zci_last_error());
        return 1;
    }
    zci_tensor_info out;
    zci_session_output_info(s, 0, &out);
    zci_postprocessor *pp;
    if (zci_postprocessor_create(o.device, (int)out.shape[1], 100, &pp)) {
        fprintf(stderr, "test_detect_accuracy: %s\n", zci_last_error());
        zci_session_destroy(s);
        return 1;
    }
    zci_postprocess_params post;
    zci_postprocess_params_init(&post);
    post.score_threshold = conf;
    post.iou_threshold = iou_thr;
    static const zci_pixel_format formats[4] = {ZCI_PIXEL_RGB, ZCI_PIXEL_BGR, ZCI_PIXEL_NV12, ZCI_PIXEL_UYVY};
    static const char *format_names[4] = {"RGB", "BGR", "NV12", "UYVY"};
    int tp_f[4] = {0}, det_f[4] = {0}, gt_f[4] = {0};
    int tp_c[SCENE_CLASSES] = {0}, det_c[SCENE_CLASSES] = {0}, gt_c[SCENE_CLASSES] = {0};
    scene_rng rng = {seed};
    int rc = 0;
    for (int i = 0; i < scenes && !rc; i++) {
        scene sc;
        scene_make(&sc, &rng, 0, 0);
        int fi = i % 4;
        zci_frame f;
        uint8_t *buf = convert(&sc, formats[fi], &f);
        zci_detection d[100];
        zci_detect_counts c;
        if (zci_detect(s, pp, &f, 0, NULL, &post, d, 100, &c, NULL, NULL)) {
            fprintf(stderr, "test_detect_accuracy: scene %d: %s\n", i, zci_last_error());
            rc = 1;
        } else {
            int used[SCENE_MAX_SHAPES] = {0}, n = c.count < 100 ? c.count : 100;
            for (int k = 0; k < n; k++) {
                int best = -1;
                double bi = 0.5;
                for (int g = 0; g < sc.n; g++) {
                    double v = iou(&d[k], &sc.boxes[g]);
                    if (!used[g] && sc.boxes[g].cls == d[k].class_id && v >= bi) {
                        bi = v;
                        best = g;
                    }
                }
                int cls = d[k].class_id >= 0 && d[k].class_id < SCENE_CLASSES ? d[k].class_id : 0;
                det_c[cls]++;
                det_f[fi]++;
                if (best >= 0) {
                    used[best] = 1;
                    tp_c[cls]++;
                    tp_f[fi]++;
                }
            }
            for (int g = 0; g < sc.n; g++) gt_c[sc.boxes[g].cls]++;
            gt_f[fi] += sc.n;
        }
        free(buf);
        free(sc.rgb);
    }
    int tp = 0, nd = 0, ng = 0;
    for (int k = 0; k < 4; k++) {
        tp += tp_f[k];
        nd += det_f[k];
        ng += gt_f[k];
    }
    double precision = nd ? (double)tp / nd : 0, recall = ng ? (double)tp / ng : 0;
    printf("%s on %s, %d scenes (seed %llu), score > %.2f, NMS IoU %.2f, match IoU >= 0.5:\n", model,
           cuda ? "cuda" : "cpu", scenes, (unsigned long long)seed, conf, iou_thr);
    for (int k = 0; k < SCENE_CLASSES; k++)
        printf("  %-10s precision %.3f recall %.3f (%d detections, %d objects)\n", scene_class_names[k],
               det_c[k] ? (double)tp_c[k] / det_c[k] : 0.0, gt_c[k] ? (double)tp_c[k] / gt_c[k] : 0.0, det_c[k],
               gt_c[k]);
    for (int k = 0; k < 4; k++)
        printf("  %-10s precision %.3f recall %.3f\n", format_names[k], det_f[k] ? (double)tp_f[k] / det_f[k] : 0.0,
               gt_f[k] ? (double)tp_f[k] / gt_f[k] : 0.0);
    printf("precision %.3f recall %.3f (%d true positives, %d detections, %d objects)\n", precision, recall, tp, nd, ng);
    if (!rc && (precision < min_pr || recall < min_pr)) {
        printf("FAIL: precision and recall must both be >= %.2f\n", min_pr);
        rc = 1;
    }
    zci_postprocessor_destroy(pp);
    zci_session_destroy(s);
    return rc;
}
