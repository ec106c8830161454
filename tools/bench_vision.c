/* bench_vision.c: the detector stages of `zcinfer bench` on a CUDA session (compiled in CUDA
 * builds): what issue 4 sets targets for on the H100, measured through the public calls the way
 * a video pipeline makes them:
 *   - GPU preprocessing of a 1920x1080 NV12 frame in device memory into the session's own
 *     input buffer (letterbox, the input's FP16 or FP32);
 *   - decoding + NMS on the GPU of a YOLOv5s-like output (the model's output shape, a few
 *     percent of the candidates above the threshold, as real scenes give) and of the model's
 *     own output for the frame (its candidate count is printed: untrained weights can put
 *     every candidate above the threshold);
 *   - the whole frame in device memory -> detections in host memory, per frame: preprocessing,
 *     zero-copy inference, GPU NMS and the download of the compact detections.
 * Device stages are timed with CUDA events (medians of samples of back-to-back calls, which
 * leaves the launch gaps out as a pipeline of queued stages does), the end-to-end path with the
 * host clock. The frame is synthetic but not noise: a gradient, coloured rectangles, grain. */
#include "bench.h"

#ifdef ZCI_TOOLS_HAVE_CUDA
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cuda_runtime.h>

#include "zcinfer_vision.h"

#define FRAME_W 1920
#define FRAME_H 1080
#define REPS 10      /* back-to-back calls per timed sample of a device stage */
#define TOP_K 300

typedef struct vision_ctx {
    zci_session *s;
    zci_postprocessor *pp;
    zci_frame frame; /* device NV12 */
    zci_tensor_info in, out;
    void *in_buf, *out_buf;
    const void *nms_src; /* the output decode + NMS reads: out_buf or the synthetic one */
    zci_preprocess_params pre;
    zci_postprocess_params post;
    zci_letterbox lb;
    zci_detection dets[TOP_K];
    zci_detect_counts counts;
} vision_ctx;

static uint32_t next_rand(uint64_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return (uint32_t)(*s >> 32);
}

static float uniform(uint64_t *s) { return (float)(next_rand(s) >> 8) / 16777216.0f; }

static uint8_t clamp_u8(int v) { return (uint8_t)(v < 0 ? 0 : v > 255 ? 255 : v); }

/* A packed NV12 frame: a luma gradient and neutral chroma, 40 rectangles of random colour and
 * size painted over it, then grain on the luma. */
static void synthetic_frame(uint8_t *y, uint8_t *uv, uint64_t *rng)
{
    for (int r = 0; r < FRAME_H; r++)
        for (int x = 0; x < FRAME_W; x++)
            y[(size_t)r * FRAME_W + x] = (uint8_t)(40 + x * 120 / FRAME_W + r * 40 / FRAME_H);
    memset(uv, 128, (size_t)FRAME_W * FRAME_H / 2);
    for (int k = 0; k < 40; k++) {
        int w = 40 + (int)(next_rand(rng) % 400), h = 40 + (int)(next_rand(rng) % 300);
        int x0 = (int)(next_rand(rng) % (FRAME_W - w)) & ~1, y0 = (int)(next_rand(rng) % (FRAME_H - h)) & ~1;
        uint8_t luma = (uint8_t)(16 + next_rand(rng) % 220), u = (uint8_t)(16 + next_rand(rng) % 225);
        uint8_t v = (uint8_t)(16 + next_rand(rng) % 225);
        for (int r = y0; r < y0 + h; r++) memset(y + (size_t)r * FRAME_W + x0, luma, (size_t)w);
        for (int r = y0 / 2; r < (y0 + h) / 2; r++)
            for (int x = x0; x < x0 + w - 1; x += 2) {
                uv[(size_t)r * FRAME_W + x] = u;
                uv[(size_t)r * FRAME_W + x + 1] = v;
            }
    }
    for (size_t i = 0; i < (size_t)FRAME_W * FRAME_H; i++) y[i] = clamp_u8(y[i] + (int)(next_rand(rng) % 13) - 6);
}

/* An output of t's shape and type as a trained YOLO gives for a real scene: 3% of the
 * candidates score 0.3 or more (YOLOv5: objectness >= 0.6 times a class >= 0.5), the rest
 * stay far below the default threshold 0.25. Layout by the rule the header states: YOLOv5
 * when the last dimension is the smaller one. */
static void *synthetic_output(const zci_tensor_info *t, int in_w, int in_h, uint64_t *rng)
{
    int64_t d1 = t->shape[t->ndim - 2], d2 = t->shape[t->ndim - 1];
    int v5 = d2 < d1;
    size_t n = (size_t)(v5 ? d1 : d2), a = (size_t)(v5 ? d2 : d1), first = v5 ? 5 : 4;
    size_t es = t->dtype == ZCI_FLOAT16 ? 2 : 4;
    unsigned char *p = calloc(1, t->bytes ? t->bytes : 1);
    if (!p) return NULL;
    for (size_t i = 0; i < n; i++) {
        int hit = uniform(rng) < 0.03f;
        size_t best = first + (size_t)(next_rand(rng) % (uint32_t)(a - first));
        for (size_t j = 0; j < a; j++) {
            float v = j == 0   ? uniform(rng) * (float)in_w
                      : j == 1 ? uniform(rng) * (float)in_h
                      : j < 4  ? 8.0f + uniform(rng) * 120.0f
                      : j == best && hit ? 0.5f + 0.5f * uniform(rng)
                      : j == 4 && v5     ? (hit ? 0.6f + 0.4f * uniform(rng) : 0.02f * uniform(rng))
                                         : 0.1f * uniform(rng);
            size_t at = v5 ? i * a + j : j * n + i;
            if (es == 2) ((uint16_t *)p)[at] = bench_to_half(v);
            else ((float *)p)[at] = v;
        }
    }
    return p;
}

static int preprocess(vision_ctx *c, cudaStream_t st)
{
    return zci_preprocess_cuda(&c->frame, 1, &c->pre, c->in_buf, c->in.bytes, st, &c->lb) != ZCI_OK;
}

static int nms(vision_ctx *c, cudaStream_t st)
{
    return zci_postprocess_cuda(c->pp, c->nms_src, &c->out, 0, &c->post, &c->lb, st) != ZCI_OK;
}

/* Median GPU time in microseconds of `stage` called REPS times back to back, over `samples`
 * samples after `warmup` calls. */
static int time_stage(int (*stage)(vision_ctx *, cudaStream_t), vision_ctx *c, cudaStream_t st,
                      const cudaEvent_t ev[2], int samples, int warmup, double *buf, double *us)
{
    for (int i = 0; i < warmup; i++)
        if (stage(c, st)) return cli_fail("detector stage failed");
    for (int i = 0; i < samples; i++) {
        cudaEventRecord(ev[0], st);
        for (int r = 0; r < REPS; r++)
            if (stage(c, st)) return cli_fail("detector stage failed");
        cudaEventRecord(ev[1], st);
        if (cudaEventSynchronize(ev[1]) != cudaSuccess) return cli_fail("detector stage failed on the GPU");
        float ms = 0;
        cudaEventElapsedTime(&ms, ev[0], ev[1]);
        buf[i] = ms * 1e3 / REPS;
    }
    *us = bench_summarize(buf, samples).median;
    return 0;
}

/* The counts of the last NMS run (waits for it). */
static int last_counts(vision_ctx *c, cudaStream_t st)
{
    if (zci_postprocessor_download(c->pp, c->dets, TOP_K, &c->counts, st)) return cli_fail("downloading detections");
    return 0;
}

/* Frame -> detections in host memory, `iters` times after `warmup`: wall times in wall[], the
 * GPU time from the preprocessing's start to the NMS's end in gpu[] (ms). */
static int time_pipeline(vision_ctx *c, cudaStream_t st, const cudaEvent_t ev[2], int iters, int warmup, double *wall,
                         double *gpu)
{
    c->nms_src = c->out_buf;
    for (int i = 0; i < warmup + iters; i++) {
        double t0 = bench_now_ms();
        cudaEventRecord(ev[0], st);
        if (preprocess(c, st) || zci_run_own_buffers(c->s, st) || nms(c, st))
            return cli_fail("detector pipeline failed");
        cudaEventRecord(ev[1], st);
        if (zci_postprocessor_download(c->pp, c->dets, TOP_K, &c->counts, st))
            return cli_fail("downloading detections");
        double t1 = bench_now_ms();
        if (i < warmup) continue;
        float ms = 0;
        cudaEventElapsedTime(&ms, ev[0], ev[1]);
        wall[i - warmup] = t1 - t0;
        gpu[i - warmup] = ms;
    }
    return 0;
}

/* Why the model is not timed as a detector, or NULL: input 0 must be one [1, 3, H, W] float
 * image and output 0 a 2-D or 3-D float tensor (zci_postprocess_cuda decides the rest). */
static const char *not_a_detector(const zci_tensor_info *in, const zci_tensor_info *out, char *why, size_t n)
{
    if (in->ndim != 4 || in->shape[1] != 3 || (in->dtype != ZCI_FLOAT32 && in->dtype != ZCI_FLOAT16))
        snprintf(why, n, "input 0 '%s' is not a [N, 3, H, W] float image", in->name);
    else if (in->shape[0] != 1)
        snprintf(why, n, "batch %lld; they are timed per frame, at batch 1", (long long)in->shape[0]);
    else if ((out->ndim != 2 && out->ndim != 3) || (out->dtype != ZCI_FLOAT32 && out->dtype != ZCI_FLOAT16))
        snprintf(why, n, "output 0 '%s' is not a YOLO output ([B, N, 5+C] or [B, 4+C, N])", out->name);
    else return NULL;
    return why;
}

int bench_vision(zci_session *s, int iters, int warmup, double inference_ms)
{
    vision_ctx c;
    memset(&c, 0, sizeof c);
    c.s = s;
    char why[256];
    if (zci_session_input_info(s, 0, &c.in) || zci_session_output_info(s, 0, &c.out))
        return cli_fail("reading the model's input and output");
    if (not_a_detector(&c.in, &c.out, why, sizeof why)) {
        printf("detector stages: skipped (%s)\n", why);
        return 0;
    }
    int64_t d1 = c.out.shape[c.out.ndim - 2], d2 = c.out.shape[c.out.ndim - 1];
    int64_t max_n = d1 > d2 ? d1 : d2;
    if (max_n > (1 << 17)) {
        printf("detector stages: skipped (output 0 has %lld candidates, more than a postprocessor takes)\n",
               (long long)max_n);
        return 0;
    }
    int rc = 1, in_w = (int)c.in.shape[3], in_h = (int)c.in.shape[2];
    size_t frame_bytes = (size_t)FRAME_W * FRAME_H * 3 / 2;
    uint64_t rng = 0x9E3779B97F4A7C15ull;
    uint8_t *host_frame = malloc(frame_bytes);
    void *dev_frame = NULL, *dev_synth = NULL, *host_synth = NULL;
    double *a = calloc((size_t)iters, sizeof *a), *b = calloc((size_t)iters, sizeof *b);
    cudaStream_t st = NULL;
    cudaEvent_t ev[2] = {NULL, NULL};
    if (!host_frame || !a || !b) {
        fprintf(stderr, "zcinfer bench: out of host memory for the detector stages\n");
        goto done;
    }
    synthetic_frame(host_frame, host_frame + (size_t)FRAME_W * FRAME_H, &rng);
    if (cudaMalloc(&dev_frame, frame_bytes) != cudaSuccess ||
        cudaMemcpy(dev_frame, host_frame, frame_bytes, cudaMemcpyHostToDevice) != cudaSuccess ||
        cudaStreamCreateWithFlags(&st, cudaStreamNonBlocking) != cudaSuccess ||
        cudaEventCreate(&ev[0]) != cudaSuccess || cudaEventCreate(&ev[1]) != cudaSuccess) {
        fprintf(stderr, "zcinfer bench: detector stages: %s\n", cudaGetErrorString(cudaGetLastError()));
        goto done;
    }
    zci_frame_packed(&c.frame, ZCI_PIXEL_NV12, FRAME_W, FRAME_H, dev_frame);
    c.frame.matrix = ZCI_COLOR_BT709;
    zci_preprocess_params_init(&c.pre, in_w, in_h);
    c.pre.out_dtype = c.in.dtype;
    zci_postprocess_params_init(&c.post);
    if (zci_session_input_device_buffer(s, 0, &c.in_buf) || zci_session_output_device_buffer(s, 0, &c.out_buf)) {
        cli_fail("the session's device buffers");
        goto done;
    }
    zci_status st_pp = zci_postprocessor_create(ZCI_DEVICE_CUDA, (int)max_n, max_n < TOP_K ? (int)max_n : TOP_K, &c.pp);
    if (st_pp) {
        cli_fail("creating a CUDA postprocessor");
        goto done;
    }
    /* one frame through, which also tells whether output 0 is a YOLO output */
    c.nms_src = c.out_buf;
    if (preprocess(&c, st) || zci_run_own_buffers(s, st)) {
        cli_fail("detector pipeline failed");
        goto done;
    }
    zci_status st_post = zci_postprocess_cuda(c.pp, c.out_buf, &c.out, 0, &c.post, &c.lb, st);
    if (st_post == ZCI_INVALID_ARGUMENT) {
        printf("detector stages: skipped (%s)\n", zci_last_error());
        rc = 0;
        goto done;
    }
    if (st_post || last_counts(&c, st)) {
        cli_fail("decoding + NMS");
        goto done;
    }
    host_synth = synthetic_output(&c.out, in_w, in_h, &rng); /* a YOLO output now: 1 class or more */
    if (!host_synth) {
        fprintf(stderr, "zcinfer bench: out of host memory for the detector stages\n");
        goto done;
    }
    if (cudaMalloc(&dev_synth, c.out.bytes) != cudaSuccess ||
        cudaMemcpy(dev_synth, host_synth, c.out.bytes, cudaMemcpyHostToDevice) != cudaSuccess) {
        fprintf(stderr, "zcinfer bench: detector stages: %s\n", cudaGetErrorString(cudaGetLastError()));
        goto done;
    }

    double pre_us, synth_us, model_us;
    if (time_stage(preprocess, &c, st, ev, iters, warmup, a, &pre_us)) goto done;
    c.nms_src = dev_synth;
    if (time_stage(nms, &c, st, ev, iters, warmup, a, &synth_us) || last_counts(&c, st)) goto done;
    zci_detect_counts synth = c.counts;
    c.nms_src = c.out_buf;
    if (time_stage(nms, &c, st, ev, iters, warmup, a, &model_us) || last_counts(&c, st)) goto done;
    zci_detect_counts model = c.counts;
    if (time_pipeline(&c, st, ev, iters, warmup, a, b)) goto done;
    bench_stats wall = bench_summarize(a, iters), gpu = bench_summarize(b, iters);

    char shape[96];
    int len = 0;
    for (int i = 0; i < c.out.ndim && len < (int)sizeof shape - 24; i++)
        len += snprintf(shape + len, sizeof shape - (size_t)len, "%s%lld", i ? " x " : "", (long long)c.out.shape[i]);
    const char *dt = c.in.dtype == ZCI_FLOAT16 ? "FP16" : "FP32";
    printf("detector stages (1920x1080 NV12 frame in device memory -> %dx%d %s input, output %s, top-%d;\n"
           "  device stages: CUDA events, medians of %d samples of %d back-to-back calls):\n",
           in_w, in_h, dt, shape, TOP_K, iters, REPS);
    printf("  GPU preprocessing (letterbox into the session's input buffer)     %8.1f us   target <= 25 us\n", pre_us);
    printf("  decode + NMS, YOLOv5s-like output (%5d candidates, %5d kept)   %8.1f us   target <= 60 us\n",
           synth.candidates, synth.after_nms, synth_us);
    printf("  decode + NMS, the model's output  (%5d candidates, %5d kept)   %8.1f us\n", model.candidates,
           model.after_nms, model_us);
    printf("  frame in device memory -> detections in host memory, per frame:   %8.3f ms   target <= 0.5 ms\n"
           "    (host clock, median; p90 %.3f ms; GPU time preprocessing to NMS %.3f ms, of which inference "
           "about %.3f ms)\n",
           wall.median, wall.p90, gpu.median, inference_ms);
    rc = 0;
done:
    if (st) cudaStreamSynchronize(st); /* the postprocessor's and frame's memory may still be in use there */
    zci_postprocessor_destroy(c.pp);
    for (int k = 0; k < 2; k++)
        if (ev[k]) cudaEventDestroy(ev[k]);
    if (st) cudaStreamDestroy(st);
    cudaFree(dev_frame);
    cudaFree(dev_synth);
    free(host_frame);
    free(host_synth);
    free(a);
    free(b);
    return rc;
}
#else
/* Builds without CUDA have no CUDA session to time. */
typedef int bench_vision_unused;
#endif
