/* test_vision_gpu.c: the GPU vision stage against the CPU one.
 *   - preprocessing: random frames of odd sizes, pitches and crops in every pixel format,
 *     colour matrix and range, letterbox and stretch, FP32 and FP16, single frames and
 *     batches (more than one launch's worth too): every element within one pixel level
 *     (1/255 with the default scale) of zci_preprocess_cpu's;
 *   - decoding + NMS: random YOLOv5 and YOLOv8 outputs (FP32 and FP16, class-aware and
 *     agnostic, with and without a letterbox transform, ties; up to 25,200 candidates above
 *     the threshold, so both the small and the large paths of every kernel) give exactly the
 *     CPU's detections and counts; so do exact candidate counts at the kernels' edges (0, 1,
 *     63, 64, 65, ... 4,097, 25,200; in one class and over 80), the output of untrained
 *     weights (about 10,800 candidates over 80 classes; all in one class; class-agnostic) and
 *     the worst case (25,200 candidates all above the threshold); postprocessors of different
 *     sizes on one device;
 *   - device pointers checked (host memory refused), results readable in device memory;
 *   - timings of the two stages at YOLOv5s sizes (informative; `zcinfer bench` reports them).
 * Without a GPU it prints "skipped: no GPU" and exits 0. */
#include <math.h>
#include <stdlib.h>

#include <cuda_runtime_api.h>

#include "core/common.h"
#include "../test_util.h"
#include "../test_frames.h"
#include "zcinfer_vision.h"

static uint64_t rng_state = 0x2545F4914F6CDD1Dull;

static uint32_t rnd(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (uint32_t)(rng_state >> 32);
}

static int rnd_int(int lo, int hi) { return lo + (int)(rnd() % (uint32_t)(hi - lo + 1)); }
static float rnd_float(float lo, float hi) { return lo + (hi - lo) * (float)(rnd() >> 8) / 16777216.0f; }

#define CHECK_CUDA(call) CHECK((call) == cudaSuccess, "%s: %s", #call, cudaGetErrorString(cudaGetLastError()))

/* ---------------------------------------------------------------- frames on both sides */


typedef struct twin_frame {
    zci_frame host, dev;
    void *hmem[3], *dmem[3];
} twin_frame;

/* A random frame in host memory and its byte-identical copy in device memory. */
static void make_twin(twin_frame *t, int fmt, int w, int h, int padded, int matrix, int range)
{
    memset(t, 0, sizeof *t);
    zci_frame f = {0};
    f.format = fmt;
    f.width = w;
    f.height = h;
    f.matrix = matrix;
    f.range = range;
    t->host = t->dev = f;
    for (int k = 0; k < n_planes(fmt); k++) {
        size_t rl = row_len(fmt, w, k), pitch = padded ? rl + (size_t)rnd_int(1, 77) : 0;
        size_t size = (pitch ? pitch : rl) * (size_t)(n_rows(fmt, h, k) - 1) + rl;
        uint8_t *m = malloc(size);
        for (size_t i = 0; i < size; i++) m[i] = (uint8_t)rnd();
        t->hmem[k] = m;
        CHECK_CUDA(cudaMalloc(&t->dmem[k], size));
        CHECK_CUDA(cudaMemcpy(t->dmem[k], m, size, cudaMemcpyHostToDevice));
        t->host.planes[k] = m;
        t->dev.planes[k] = t->dmem[k];
        t->host.pitch[k] = t->dev.pitch[k] = pitch;
    }
}

static void free_twin(twin_frame *t)
{
    for (int k = 0; k < 3; k++) {
        free(t->hmem[k]);
        if (t->dmem[k]) cudaFree(t->dmem[k]);
    }
}

/* Compares n elements; returns the number farther apart than one pixel level (plus the FP16
 * rounding of the value), and the largest difference in levels in *worst. */
static int compare(const void *gpu, const void *cpu, size_t n, int half, const zci_preprocess_params *p,
                   double *worst)
{
    int bad = 0;
    size_t plane = (size_t)p->out_width * p->out_height;
    for (size_t i = 0; i < n; i++) {
        int c = (int)((i / plane) % 3);
        double level = fabs(p->scale / p->std[c]);
        double a = half ? zci_f16_to_f32(((const uint16_t *)gpu)[i]) : ((const float *)gpu)[i];
        double b = half ? zci_f16_to_f32(((const uint16_t *)cpu)[i]) : ((const float *)cpu)[i];
        double allow = level + (half ? fabs(b) / 1024 : 0);
        double d = fabs(a - b);
        if (!(d <= allow)) bad++;
        if (d / level > *worst) *worst = d / level;
    }
    return bad;
}

static void test_preprocess(void)
{
    static const int sizes[][2] = {{37, 23}, {1, 1}, {2, 3}, {101, 57}, {333, 199}, {5, 130}, {1919, 1079}};
    int cases = 0, bad_total = 0;
    double worst = 0;
    for (int fmt = 0; fmt <= ZCI_PIXEL_BGRA; fmt++)
        for (int mr = 0; mr < 4; mr++)
            for (int s = 0; s < 7; s++)
                for (int variant = 0; variant < 32; variant += 1 + (int)(rnd() % 4)) {
                    if (fmt >= ZCI_PIXEL_RGB && mr) continue;
                    int batch = variant % 5 == 4 ? 3 : 1;
                    twin_frame t[3];
                    zci_frame hf[3], df[3];
                    for (int b = 0; b < batch; b++) {
                        int f = b ? rnd_int(0, ZCI_PIXEL_BGRA) : fmt;
                        make_twin(&t[b], f, sizes[s][0] + b, sizes[s][1] + 2 * b, variant & 4, mr & 1, mr >> 1);
                        hf[b] = t[b].host;
                        df[b] = t[b].dev;
                    }
                    zci_preprocess_params p;
                    zci_preprocess_params_init(&p, rnd_int(1, 5) * 32 + rnd_int(-3, 3), rnd_int(1, 5) * 32 + 1);
                    p.resize = variant & 1 ? ZCI_RESIZE_STRETCH : ZCI_RESIZE_LETTERBOX;
                    p.out_dtype = variant & 2 ? ZCI_FLOAT16 : ZCI_FLOAT32;
                    p.bgr = (variant >> 3) & 1;
                    if (variant & 8)
                        for (int c = 0; c < 3; c++) {
                            p.mean[c] = rnd_float(0.3f, 0.6f);
                            p.std[c] = rnd_float(0.2f, 0.3f);
                        }
                    if (variant & 16) {
                        int w = sizes[s][0], h = sizes[s][1], cw = rnd_int(1, w), ch = rnd_int(1, h);
                        p.crop = (zci_rect){rnd_int(0, w - cw), rnd_int(0, h - ch), cw, ch};
                    }
                    size_t n = (size_t)batch * 3 * p.out_width * p.out_height, es = p.out_dtype == ZCI_FLOAT16 ? 2 : 4;
                    void *cpu = malloc(n * es), *gpu = malloc(n * es), *dst = NULL;
                    CHECK_CUDA(cudaMalloc(&dst, n * es));
                    zci_letterbox lc[3], lg[3];
                    CHECK_OK(zci_preprocess_cpu(hf, batch, &p, cpu, n * es, lc));
                    CHECK_OK(zci_preprocess_cuda(df, batch, &p, dst, n * es, NULL, lg));
                    CHECK_CUDA(cudaMemcpy(gpu, dst, n * es, cudaMemcpyDeviceToHost));
                    int bad = compare(gpu, cpu, n, p.out_dtype == ZCI_FLOAT16, &p, &worst);
                    CHECK(bad == 0, "format %d (matrix %d range %d) %dx%d batch %d -> %dx%d %s %s: %d elements off",
                          fmt, mr & 1, mr >> 1, sizes[s][0], sizes[s][1], batch, p.out_width, p.out_height,
                          p.resize ? "stretch" : "letterbox", zci_dtype_name(p.out_dtype), bad);
                    CHECK(!memcmp(lc, lg, (size_t)batch * sizeof lc[0]), "transforms differ");
                    bad_total += bad;
                    cases++;
                    cudaFree(dst);
                    free(cpu);
                    free(gpu);
                    for (int b = 0; b < batch; b++) free_twin(&t[b]);
                }
    printf("preprocessing: %d cases, GPU vs CPU worst difference %.5f pixel levels, %d elements off\n", cases, worst,
           bad_total);
}

/* 30 frames in one call: two launches (24 + 6), each frame where it belongs. */
static void test_preprocess_many(void)
{
    enum { N = 30 };
    twin_frame t[N];
    zci_frame hf[N], df[N];
    for (int i = 0; i < N; i++) {
        make_twin(&t[i], i % 8, rnd_int(3, 200), rnd_int(3, 200), i & 1, 0, 0);
        hf[i] = t[i].host;
        df[i] = t[i].dev;
    }
    zci_preprocess_params p;
    zci_preprocess_params_init(&p, 64, 64);
    p.out_dtype = ZCI_FLOAT16;
    size_t n = (size_t)N * 3 * 64 * 64;
    uint16_t *cpu = malloc(n * 2), *gpu = malloc(n * 2);
    void *dst;
    CHECK_CUDA(cudaMalloc(&dst, n * 2));
    CHECK_OK(zci_preprocess_cpu(hf, N, &p, cpu, n * 2, NULL));
    CHECK_OK(zci_preprocess_cuda(df, N, &p, dst, n * 2, NULL, NULL));
    CHECK_CUDA(cudaMemcpy(gpu, dst, n * 2, cudaMemcpyDeviceToHost));
    double worst = 0;
    CHECK(compare(gpu, cpu, n, 1, &p, &worst) == 0, "30-frame batch differs (worst %.4f levels)", worst);
    /* refusals: host memory where device memory is needed, and a too small destination */
    CHECK_FAILS(zci_preprocess_cuda(df, 1, &p, cpu, n * 2, NULL, NULL), ZCI_INVALID_ARGUMENT, "host memory");
    CHECK_FAILS(zci_preprocess_cuda(hf, 1, &p, dst, n * 2, NULL, NULL), ZCI_INVALID_ARGUMENT, "host memory");
    CHECK_FAILS(zci_preprocess_cuda(df, N, &p, dst, n * 2 - 1, NULL, NULL), ZCI_INVALID_ARGUMENT, "destination");
    cudaFree(dst);
    free(cpu);
    free(gpu);
    for (int i = 0; i < N; i++) free_twin(&t[i]);
}

/* ---------------------------------------------------------------- decoding + NMS */

/* Random YOLO output: clustered boxes, coarse scores (ties), a few classes. v8 = transposed. */
static float *random_output(int n, int nc, int v8, zci_tensor_info *info)
{
    int a = v8 ? 4 + nc : 5 + nc;
    float *v = calloc((size_t)n * a, sizeof(float));
    for (int i = 0; i < n; i++) {
        float row[128];
        row[0] = (float)rnd_int(0, 40) * 16 + rnd_float(-4, 4);
        row[1] = (float)rnd_int(0, 40) * 16;
        row[2] = (float)rnd_int(4, 60);
        row[3] = (float)rnd_int(4, 60);
        int k = 4;
        if (!v8) row[k++] = (float)rnd_int(0, 16) / 16;
        for (int c = 0; c < nc; c++) row[k + c] = (float)rnd_int(0, 8) / 8;
        for (int j = 0; j < a; j++) v[v8 ? (size_t)j * n + i : (size_t)i * a + j] = row[j];
    }
    *info = (zci_tensor_info){"output0", ZCI_FLOAT32, 3, {1, v8 ? a : n, v8 ? n : a}, (size_t)n * a * 4};
    return v;
}

static void compare_nms(zci_postprocessor *cpu, zci_postprocessor *gpu, const void *host, const zci_tensor_info *info,
                        const zci_postprocess_params *q, const zci_letterbox *lb, int batch_index, const char *what,
                        int *total)
{
    void *dev;
    CHECK_CUDA(cudaMalloc(&dev, info->bytes));
    CHECK_CUDA(cudaMemcpy(dev, host, info->bytes, cudaMemcpyHostToDevice));
    enum { CAP = 3000 };
    zci_detection *a = calloc(CAP, sizeof *a), *b = calloc(CAP, sizeof *b);
    zci_detect_counts ca, cb;
    CHECK_OK(zci_postprocess_cpu(cpu, host, info, batch_index, q, lb, a, CAP, &ca));
    CHECK_OK(zci_postprocess_cuda(gpu, dev, info, batch_index, q, lb, NULL));
    CHECK_OK(zci_postprocessor_download(gpu, b, CAP, &cb, NULL));
    int n = ca.count < CAP ? ca.count : CAP;
    CHECK(!memcmp(&ca, &cb, sizeof ca), "%s: counts differ: CPU %d/%d/%d, GPU %d/%d/%d", what, ca.count, ca.after_nms,
          ca.candidates, cb.count, cb.after_nms, cb.candidates);
    CHECK(!memcmp(a, b, (size_t)n * sizeof *a), "%s: detections differ", what);
    *total += n;
    free(a);
    free(b);
    cudaFree(dev);
}

/* The worst case: every one of 25,200 candidates above the threshold, equal scores; then the
 * results read in device memory. */
static void test_worst_case(zci_postprocessor *cpu, zci_postprocessor *gpu, int *total)
{
    enum { N = 25200, NC = 80 };
    float *v = calloc((size_t)N * (5 + NC), sizeof(float));
    for (int i = 0; i < N; i++) {
        float *r = v + (size_t)i * (5 + NC);
        int cluster = i / 4;
        r[0] = (float)(cluster % 90) * 20 + 10 + (float)(i % 4);
        r[1] = (float)(cluster / 90) * 20 + 10;
        r[2] = r[3] = 12;
        r[4] = 0.9f;
        r[5 + cluster % NC] = 0.9f;
    }
    zci_tensor_info info = {"output0", ZCI_FLOAT32, 3, {1, N, 5 + NC}, (size_t)N * (5 + NC) * 4};
    zci_postprocess_params q;
    zci_postprocess_params_init(&q);
    q.top_k = 300;
    compare_nms(cpu, gpu, v, &info, &q, NULL, 0, "worst case", total);
    zci_detect_counts c;
    zci_detection d[300];
    CHECK_OK(zci_postprocessor_download(gpu, d, 300, &c, NULL));
    CHECK(c.candidates == N && c.after_nms == N / 4 && c.count == 300, "worst case: %d candidates, %d kept, %d",
          c.candidates, c.after_nms, c.count);
    /* the results in device memory */
    void *dc, *dd;
    CHECK_OK(zci_postprocessor_results(gpu, &dc, &dd));
    zci_detect_counts c2;
    CHECK_CUDA(cudaMemcpy(&c2, dc, sizeof c2, cudaMemcpyDeviceToHost));
    CHECK(!memcmp(&c, &c2, sizeof c), "device counts");
    free(v);
}

/* A YOLOv5s-sized output (25,200 rows: cells of 80x80, 40x40 and 20x20, three anchors each) as
 * untrained weights give it: each box at its cell with about its anchor's size, objectness and
 * class scores near 0.5, quantised to 1/64 (ties). With the default threshold about 42% of the
 * rows are candidates, spread evenly over the classes, and boxes of neighbouring cells and
 * anchors overlap. one_class: class 0 always wins. v8: the transposed layout, the class scores
 * multiplied by the objectness. nc <= 80. */
static float *yolo_like_output(int nc, int one_class, int v8, zci_tensor_info *info)
{
    static const float anchors[3][3][2] = {{{10, 13}, {16, 30}, {33, 23}},
                                           {{30, 61}, {62, 45}, {59, 119}},
                                           {{116, 90}, {156, 198}, {373, 326}}};
    enum { N = 25200 };
    int a = v8 ? 4 + nc : 5 + nc, i = 0;
    float *v = calloc((size_t)N * a, sizeof(float));
    for (int s = 0; s < 3; s++) {
        int stride = 8 << s, g = 640 / stride;
        for (int k = 0; k < 3; k++)
            for (int gy = 0; gy < g; gy++)
                for (int gx = 0; gx < g; gx++, i++) {
                    float row[85], sw = rnd_float(0.3f, 0.7f), sh = rnd_float(0.3f, 0.7f);
                    row[0] = ((float)gx + 2 * rnd_float(0.3f, 0.7f) - 0.5f) * (float)stride;
                    row[1] = ((float)gy + 2 * rnd_float(0.3f, 0.7f) - 0.5f) * (float)stride;
                    row[2] = 4 * sw * sw * anchors[s][k][0];
                    row[3] = 4 * sh * sh * anchors[s][k][1];
                    float obj = (float)rnd_int(13, 31) / 64;
                    int at = 4;
                    if (!v8) row[at++] = obj;
                    for (int c = 0; c < nc; c++) {
                        float cs = one_class && c == 0 ? 0.75f : (float)rnd_int(19, 45) / 64;
                        row[at + c] = v8 ? obj * cs : cs;
                    }
                    for (int j = 0; j < a; j++) v[v8 ? (size_t)j * N + i : (size_t)i * a + j] = row[j];
                }
    }
    *info = (zci_tensor_info){"output0", ZCI_FLOAT32, 3, {1, v8 ? a : N, v8 ? N : a}, (size_t)N * a * 4};
    return v;
}

/* Thousands of candidates as untrained weights give: about 10,800 over 80 classes (the per-class
 * path at scale), all 25,200 or about 13,000 in one class, and class-agnostic; both layouts,
 * FP16 too. */
static void test_many_candidates(zci_postprocessor *cpu, zci_postprocessor *gpu, int *total, const zci_letterbox *lb)
{
    static const struct {
        int one_class, v8, agnostic, half, top_k;
        float thr, iou;
    } cases[] = {
        {0, 0, 0, 0, 0, 0.25f, 0.45f},    {0, 1, 0, 0, 300, 0.25f, 0.45f}, {0, 0, 0, 1, 0, 0.25f, 0.3f},
        {0, 0, 1, 0, 0, 0.25f, 0.45f},    {0, 1, 1, 0, 100, 0.1f, 0.6f},  {1, 0, 0, 0, 0, 0.1f, 0.45f},
        {1, 1, 0, 0, 0, 0.25f, 0.45f},    {0, 0, 0, 0, 0, 0.25f, 0.0f},
    };
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        zci_tensor_info info;
        float *v = yolo_like_output(80, cases[k].one_class, cases[k].v8, &info);
        zci_postprocess_params q;
        zci_postprocess_params_init(&q);
        q.layout = cases[k].v8 ? ZCI_YOLO_V8 : ZCI_YOLO_V5;
        q.score_threshold = cases[k].thr;
        q.iou_threshold = cases[k].iou;
        q.class_agnostic = cases[k].agnostic;
        q.top_k = cases[k].top_k;
        char what[96];
        snprintf(what, sizeof what, "many candidates, case %d", (int)k);
        if (cases[k].half) { /* image 1 of a batch of 2 */
            size_t count = info.bytes / 4;
            uint16_t *h = malloc(count * 2 * 2);
            for (size_t i = 0; i < count; i++) {
                h[i] = zci_f32_to_f16(rnd_float(0, 1));
                h[count + i] = zci_f32_to_f16(v[i]);
            }
            zci_tensor_info hi = info;
            hi.dtype = ZCI_FLOAT16;
            hi.shape[0] = 2;
            hi.bytes = count * 2 * 2;
            compare_nms(cpu, gpu, h, &hi, &q, lb, 1, what, total);
            free(h);
        } else {
            compare_nms(cpu, gpu, v, &info, &q, k & 1 ? lb : NULL, 0, what, total);
        }
        free(v);
    }
}

/* Exactly k candidates (the first k rows), at the edges of the kernels' sizes: tiles of 64,
 * one block's sort, the per-class path's limit; in one class and over 80. quick: up to 4,097. */
static void test_candidate_counts(zci_postprocessor *cpu, zci_postprocessor *gpu, int *total, int quick)
{
    static const int counts[] = {0,   1,   2,    63,   64,   65,   127,  128,  129,  255,  256,  257,  511,  512,
                                 513, 1023, 1024, 1025, 2047, 2048, 2049, 4095, 4096, 4097, 8192, 8193, 25200};
    for (size_t j = 0; j < sizeof counts / sizeof counts[0]; j++)
        for (int spread = 0; spread < 2; spread++) {
            int k = counts[j], n = k < 25200 ? k + rnd_int(1, 40) : 25200, nc = spread ? 80 : 1;
            if (quick && k > 4097) continue;
            zci_tensor_info info;
            float *v = random_output(n, nc, 0, &info);
            for (int i = 0; i < n; i++) {
                float *r = v + (size_t)i * (5 + nc);
                r[4] = i < k ? 1.0f : 0.0f;
                r[5 + i % nc] = 0.5f; /* a score above the threshold */
            }
            zci_postprocess_params q;
            zci_postprocess_params_init(&q);
            q.layout = ZCI_YOLO_V5; /* fewer rows than attributes would read as YOLOv8 */
            q.score_threshold = 0.1f;
            q.class_agnostic = k % 3 == 2;
            char what[96];
            snprintf(what, sizeof what, "%d candidates in %d classes%s", k, nc, q.class_agnostic ? ", agnostic" : "");
            compare_nms(cpu, gpu, v, &info, &q, NULL, 0, what, total);
            free(v);
        }
}

/* quick: a few rounds of up to 6,000 candidates (the first with nearly all above the threshold,
 * for the sort's large path) and no 25,200-candidate cases, for compute-sanitizer. */
static void test_nms(int quick)
{
    zci_postprocessor *cpu, *gpu;
    CHECK_OK(zci_postprocessor_create(ZCI_DEVICE_CPU, 25200, 3000, &cpu));
    CHECK_OK(zci_postprocessor_create(ZCI_DEVICE_CUDA, 25200, 3000, &gpu));
    zci_preprocess_params pre;
    zci_preprocess_params_init(&pre, 640, 640);
    zci_letterbox lb;
    CHECK_OK(zci_letterbox_compute(&pre, 1920, 1080, &lb));
    int total = 0, rounds = 0;
    for (int round = 0; round < (quick ? 6 : 60); round++) {
        int n = quick ? (round ? rnd_int(1, 6000) : 6000) : round < 4 ? 25200 : rnd_int(1, 25200);
        int nc = rnd_int(1, round & 8 ? 80 : 4), v8 = round & 1;
        zci_tensor_info info;
        float *v = random_output(n, nc, v8, &info);
        zci_postprocess_params q;
        zci_postprocess_params_init(&q);
        q.layout = v8 ? ZCI_YOLO_V8 : ZCI_YOLO_V5;
        q.score_threshold = quick && !round ? 0.01f : rnd_float(0.05f, 0.6f);
        q.iou_threshold = rnd_float(0.1f, 0.8f);
        q.class_agnostic = (round >> 1) & 1;
        q.top_k = round % 3 == 0 ? rnd_int(1, 3000) : 0;
        char what[96];
        snprintf(what, sizeof what, "round %d (n %d, %d classes, %s)", round, n, nc, v8 ? "v8" : "v5");
        compare_nms(cpu, gpu, v, &info, &q, (round >> 2) & 1 ? &lb : NULL, 0, what, &total);
        if (round % 5 == 0) { /* the same in FP16, as image 1 of a batch of 2 */
            size_t count = info.bytes / 4;
            uint16_t *h = malloc(count * 2 * 2);
            for (size_t i = 0; i < count; i++) {
                h[i] = zci_f32_to_f16(rnd_float(0, 1));
                h[count + i] = zci_f32_to_f16(v[i]);
            }
            zci_tensor_info hi = info;
            hi.dtype = ZCI_FLOAT16;
            hi.shape[0] = 2;
            hi.bytes = count * 2 * 2;
            compare_nms(cpu, gpu, h, &hi, &q, &lb, 1, what, &total);
            free(h);
        }
        free(v);
        rounds++;
    }
    printf("NMS: %d random outputs, %d detections, GPU identical to CPU\n", rounds, total);

    /* a small postprocessor created later on the same device leaves the large one's kernel
     * limits (its shared memory) alone: both still run */
    zci_postprocessor *small;
    CHECK_OK(zci_postprocessor_create(ZCI_DEVICE_CUDA, 100, 10, &small));
    {
        zci_tensor_info info;
        float *v = random_output(100, 3, 0, &info);
        zci_postprocess_params q;
        zci_postprocess_params_init(&q);
        q.top_k = 10;
        compare_nms(cpu, small, v, &info, &q, NULL, 0, "small postprocessor", &total);
        free(v);
    }
    zci_postprocessor_destroy(small);

    test_candidate_counts(cpu, gpu, &total, quick);
    if (!quick) {
        test_many_candidates(cpu, gpu, &total, &lb);
        test_worst_case(cpu, gpu, &total);
    }
    printf("NMS: candidate counts at the kernels' edges%s, %d detections in all, GPU identical to CPU\n",
           quick ? "" : ", thousands of candidates, the worst case", total);
    zci_postprocessor_destroy(cpu);
    zci_postprocessor_destroy(gpu);
}

/* ---------------------------------------------------------------- timings */

static double time_us(cudaEvent_t a, cudaEvent_t b, int iters)
{
    float ms = 0;
    cudaEventElapsedTime(&ms, a, b);
    return ms * 1000.0 / iters;
}

static void timings(void)
{
    cudaStream_t s;
    cudaEvent_t e0, e1;
    CHECK_CUDA(cudaStreamCreate(&s));
    cudaEventCreate(&e0);
    cudaEventCreate(&e1);
    /* 1920x1080 NV12 -> 640x640 letterboxed FP16 */
    twin_frame t;
    make_twin(&t, ZCI_PIXEL_NV12, 1920, 1080, 0, 1, 0);
    zci_preprocess_params p;
    zci_preprocess_params_init(&p, 640, 640);
    p.out_dtype = ZCI_FLOAT16;
    void *dst;
    CHECK_CUDA(cudaMalloc(&dst, 3 * 640 * 640 * 2));
    for (int i = 0; i < 10; i++) zci_preprocess_cuda(&t.dev, 1, &p, dst, 3 * 640 * 640 * 2, s, NULL);
    cudaEventRecord(e0, s);
    for (int i = 0; i < 200; i++) zci_preprocess_cuda(&t.dev, 1, &p, dst, 3 * 640 * 640 * 2, s, NULL);
    cudaEventRecord(e1, s);
    cudaEventSynchronize(e1);
    printf("timing: 1920x1080 NV12 -> 640x640 letterbox FP16: %.1f us per frame (target <= 25)\n", time_us(e0, e1, 200));
    /* YOLOv5s-like output: 25,200 x 85 with a realistic few hundred candidates */
    zci_tensor_info info;
    float *v = random_output(25200, 80, 0, &info);
    for (int i = 0; i < 25200; i++) v[(size_t)i * 85 + 4] = rnd_int(0, 99) < 3 ? 0.9f : 0.01f;
    void *dev;
    CHECK_CUDA(cudaMalloc(&dev, info.bytes));
    CHECK_CUDA(cudaMemcpy(dev, v, info.bytes, cudaMemcpyHostToDevice));
    zci_postprocessor *pp;
    CHECK_OK(zci_postprocessor_create(ZCI_DEVICE_CUDA, 25200, 300, &pp));
    zci_postprocess_params q;
    zci_postprocess_params_init(&q);
    for (int i = 0; i < 10; i++) zci_postprocess_cuda(pp, dev, &info, 0, &q, NULL, s);
    cudaEventRecord(e0, s);
    for (int i = 0; i < 200; i++) zci_postprocess_cuda(pp, dev, &info, 0, &q, NULL, s);
    cudaEventRecord(e1, s);
    cudaEventSynchronize(e1);
    zci_detect_counts c;
    zci_detection d[300];
    CHECK_OK(zci_postprocessor_download(pp, d, 300, &c, s));
    printf("timing: decode + NMS of 25,200 x 85 (%d candidates, %d kept): %.1f us (target <= 60)\n", c.candidates,
           c.after_nms, time_us(e0, e1, 200));
    double t0 = zci_now();
    for (int i = 0; i < 200; i++) {
        zci_postprocess_cuda(pp, dev, &info, 0, &q, NULL, s);
        zci_postprocessor_download(pp, d, 300, &c, s);
    }
    printf("timing: the same plus the download to the host, synchronous: %.1f us\n", (zci_now() - t0) / 200 * 1e6);
    cudaFree(dev);
    free(v);
    /* the output of untrained weights, in FP16 as `zcinfer bench --fp16` runs it: about 10,800
     * candidates over 80 classes */
    v = yolo_like_output(80, 0, 0, &info);
    size_t count = info.bytes / 4;
    uint16_t *h = malloc(count * 2);
    for (size_t i = 0; i < count; i++) h[i] = zci_f32_to_f16(v[i]);
    info.dtype = ZCI_FLOAT16;
    info.bytes = count * 2;
    CHECK_CUDA(cudaMalloc(&dev, info.bytes));
    CHECK_CUDA(cudaMemcpy(dev, h, info.bytes, cudaMemcpyHostToDevice));
    for (int i = 0; i < 10; i++) zci_postprocess_cuda(pp, dev, &info, 0, &q, NULL, s);
    cudaEventRecord(e0, s);
    for (int i = 0; i < 200; i++) zci_postprocess_cuda(pp, dev, &info, 0, &q, NULL, s);
    cudaEventRecord(e1, s);
    cudaEventSynchronize(e1);
    CHECK_OK(zci_postprocessor_download(pp, d, 300, &c, s));
    printf("timing: decode + NMS of untrained weights' 25,200 x 85 FP16 (%d candidates, %d kept): %.1f us (target "
           "<= 60)\n",
           c.candidates, c.after_nms, time_us(e0, e1, 200));
    zci_postprocessor_destroy(pp);
    cudaFree(dev);
    free(h);
    free(v);
    cudaFree(dst);
    free_twin(&t);
    cudaEventDestroy(e0);
    cudaEventDestroy(e1);
    cudaStreamDestroy(s);
}

int main(void)
{
    int n = 0;
    if (zci_cuda_device_count(&n) != ZCI_OK || n == 0) {
        printf("skipped: no GPU\n");
        return 0;
    }
    /* ZCI_GPU_TEST_QUICK (under compute-sanitizer): small NMS cases and the batch of frames only */
    int quick = getenv("ZCI_GPU_TEST_QUICK") != NULL;
    if (!quick) test_preprocess();
    test_preprocess_many();
    test_nms(quick);
    if (!quick) timings();
    return test_summary("test_vision_gpu");
}
