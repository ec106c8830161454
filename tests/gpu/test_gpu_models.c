/* test_gpu_models.c: every test model on the GPU against onnxruntime's outputs.
 *
 *   test_gpu_models MODELS_DIR REFS_DIR NAME[:BATCH] ...
 *
 * MODELS_DIR/NAME.onnx is the model (tests/models/make_models.py); REFS_DIR/NAME/s0, s1, s2 hold
 * onnxruntime's inputs and outputs for three seeds (tests/models/ort_run.py --outdir, raw
 * input_<i>.bin / output_<i>.bin). For FP32 (rel. error <= 1e-4) and FP16 (<= 1e-2), with a CUDA
 * graph and without: the regular path with pageable and pinned host buffers, the zero-copy path
 * with pointers that change every call (three input/output pairs in turn, each output poisoned
 * first), the own buffers; and FP16 I/O. When a check fails, the model is run again one node at a
 * time and each node's GPU result is compared with the CPU kernel given the same inputs, naming
 * the first nodes that disagree. Exits 0 with "skipped: no GPU" without a GPU. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <cuda_runtime.h>

#include "core/session.h"
#include "cuda/cuda_debug.h"
#include "gpu_test.h"
#include "ops/op.h"

#define SEEDS 3
#define MAX_IO 8

typedef struct refs {
    int n_in, n_out;
    void *in[SEEDS][MAX_IO];
    float *out[SEEDS][MAX_IO];
    size_t in_bytes[MAX_IO], out_bytes[MAX_IO];
} refs;

static int load_refs(const char *dir, const char *name, zci_session *s, refs *r)
{
    memset(r, 0, sizeof *r);
    r->n_in = zci_session_input_count(s);
    r->n_out = zci_session_output_count(s);
    if (r->n_in > MAX_IO || r->n_out > MAX_IO) return 0;
    for (int k = 0; k < SEEDS; k++)
        for (int io = 0; io < 2; io++)
            for (int i = 0; i < (io ? r->n_out : r->n_in); i++) {
                char path[1024];
                snprintf(path, sizeof path, "%s/%s/s%d/%s_%d.bin", dir, name, k, io ? "output" : "input", i);
                size_t size = 0;
                void *p = gt_read_file(path, &size);
                zci_tensor_info info;
                if (io) zci_session_output_info(s, i, &info);
                else zci_session_input_info(s, i, &info);
                if (!p || size != info.bytes) {
                    GT_CHECK(0, "%s: %s: %s (%zu bytes, the session expects %zu)", name, path, p ? "wrong size" : "missing",
                             size, info.bytes);
                    free(p);
                    return 0;
                }
                if (io) {
                    r->out[k][i] = p;
                    r->out_bytes[i] = size;
                } else {
                    r->in[k][i] = p;
                    r->in_bytes[i] = size;
                }
            }
    return 1;
}

static void free_refs(refs *r)
{
    for (int k = 0; k < SEEDS; k++) {
        for (int i = 0; i < r->n_in; i++) free(r->in[k][i]);
        for (int i = 0; i < r->n_out; i++) free(r->out[k][i]);
    }
}

/* Worst relative error over the outputs of seed k, from host buffers. */
static double compare(const refs *r, int k, float *const *got)
{
    double worst = 0;
    for (int i = 0; i < r->n_out; i++) {
        double e = gt_rel_error(got[i], r->out[k][i], r->out_bytes[i] / 4);
        if (!(e <= worst)) worst = e;
    }
    return worst;
}

static int report(const char *model, const char *cfg, const char *path, double e, double tol)
{
    int ok = e <= tol;
    printf("  %-22s %-8s %-26s rel. error %.3g %s\n", model, cfg, path, e, ok ? "ok" : "FAIL");
    if (!ok) gt_failures++;
    return ok;
}

/* ---------------------------------------------------------------- the ways in */

static int check_regular(const char *name, const char *cfg, zci_session *s, const refs *r, int pinned, int k, double tol)
{
    zci_binding in[MAX_IO], out[MAX_IO];
    float *host_out[MAX_IO];
    void *host_in[MAX_IO];
    int ok = 1;
    for (int i = 0; i < r->n_in; i++) {
        host_in[i] = r->in[k][i];
        if (pinned && GT_CUDA(cudaMallocHost(&host_in[i], r->in_bytes[i]))) memcpy(host_in[i], r->in[k][i], r->in_bytes[i]);
        in[i] = (zci_binding){NULL, host_in[i], r->in_bytes[i]};
    }
    for (int i = 0; i < r->n_out; i++) {
        if (pinned) GT_CUDA(cudaMallocHost((void **)&host_out[i], r->out_bytes[i]));
        else host_out[i] = malloc(r->out_bytes[i]);
        memset(host_out[i], 0xff, r->out_bytes[i]);
        out[i] = (zci_binding){NULL, host_out[i], r->out_bytes[i]};
    }
    if (GT_OK(zci_run(s, in, r->n_in, out, r->n_out)))
        ok = report(name, cfg, pinned ? "regular (pinned)" : "regular (pageable)", compare(r, k, host_out), tol);
    else
        ok = 0;
    for (int i = 0; i < r->n_in; i++)
        if (pinned) cudaFreeHost(host_in[i]);
    for (int i = 0; i < r->n_out; i++) {
        if (pinned) cudaFreeHost(host_out[i]);
        else free(host_out[i]);
    }
    return ok;
}

/* Zero-copy with the three seeds' buffers in turn, twice round; on the caller's stream. */
static int check_zero_copy(const char *name, const char *cfg, zci_session *s, const refs *r, double tol)
{
    void *din[SEEDS][MAX_IO];
    float *dout[SEEDS][MAX_IO], *host[MAX_IO];
    cudaStream_t st;
    int ok = 1;
    double worst = 0;
    GT_CUDA(cudaStreamCreateWithFlags(&st, cudaStreamNonBlocking));
    for (int k = 0; k < SEEDS; k++) {
        for (int i = 0; i < r->n_in; i++) {
            GT_CUDA(cudaMalloc(&din[k][i], r->in_bytes[i]));
            GT_CUDA(cudaMemcpy(din[k][i], r->in[k][i], r->in_bytes[i], cudaMemcpyHostToDevice));
        }
        for (int i = 0; i < r->n_out; i++) GT_CUDA(cudaMalloc((void **)&dout[k][i], r->out_bytes[i]));
    }
    for (int i = 0; i < r->n_out; i++) host[i] = malloc(r->out_bytes[i]);
    for (int it = 0; ok && it < 2 * SEEDS; it++) {
        int k = it % SEEDS;
        zci_binding in[MAX_IO], out[MAX_IO];
        for (int i = 0; i < r->n_in; i++) in[i] = (zci_binding){NULL, din[k][i], r->in_bytes[i]};
        for (int i = 0; i < r->n_out; i++) {
            GT_CUDA(gt_fill_nan(dout[k][i], r->out_bytes[i] / 4, st));
            out[i] = (zci_binding){NULL, dout[k][i], r->out_bytes[i]};
        }
        if (!GT_OK(zci_run_device_async(s, in, r->n_in, out, r->n_out, st))) {
            ok = 0;
            break;
        }
        GT_CUDA(cudaStreamSynchronize(st));
        for (int i = 0; i < r->n_out; i++) GT_CUDA(cudaMemcpy(host[i], dout[k][i], r->out_bytes[i], cudaMemcpyDeviceToHost));
        double e = compare(r, k, host);
        if (!(e <= worst)) worst = e;
    }
    if (ok) ok = report(name, cfg, "zero-copy (changing ptrs)", worst, tol);
    for (int k = 0; k < SEEDS; k++) {
        for (int i = 0; i < r->n_in; i++) cudaFree(din[k][i]);
        for (int i = 0; i < r->n_out; i++) cudaFree(dout[k][i]);
    }
    for (int i = 0; i < r->n_out; i++) free(host[i]);
    cudaStreamDestroy(st);
    return ok;
}

static int check_own(const char *name, const char *cfg, zci_session *s, const refs *r, int k, double tol)
{
    float *host[MAX_IO];
    int ok = 1;
    for (int i = 0; i < r->n_in; i++) ok &= GT_OK(zci_session_write_input_buffer(s, i, r->in[k][i], r->in_bytes[i], NULL));
    for (int i = 0; i < r->n_out; i++) {
        void *p;
        host[i] = malloc(r->out_bytes[i]);
        if (GT_OK(zci_session_output_device_buffer(s, i, &p))) GT_CUDA(gt_fill_nan(p, r->out_bytes[i] / 4, NULL));
    }
    GT_CUDA(cudaDeviceSynchronize());
    ok = ok && GT_OK(zci_run_own_buffers(s, NULL)) && GT_OK(zci_session_synchronize(s, NULL));
    for (int i = 0; ok && i < r->n_out; i++) ok &= GT_OK(zci_session_read_output_buffer(s, i, host[i], r->out_bytes[i], NULL));
    if (ok) ok = report(name, cfg, "own buffers", compare(r, k, host), tol);
    for (int i = 0; i < r->n_out; i++) free(host[i]);
    return ok;
}

/* FP16 inputs and outputs (fp16_io): the caller converts. */
static int check_fp16_io(const char *name, zci_session *s, const refs *r, double tol)
{
    void *din[MAX_IO], *dout[MAX_IO];
    float *host[MAX_IO];
    int ok = 1;
    zci_binding in[MAX_IO], out[MAX_IO];
    for (int i = 0; i < r->n_in; i++) {
        zci_tensor_info info;
        zci_session_input_info(s, i, &info);
        size_t n = r->in_bytes[i] / 4;
        void *h = malloc(info.bytes);
        if (info.dtype == ZCI_FLOAT16)
            for (size_t j = 0; j < n; j++) ((uint16_t *)h)[j] = zci_f32_to_f16(((const float *)r->in[0][i])[j]);
        else
            memcpy(h, r->in[0][i], info.bytes);
        GT_CUDA(cudaMalloc(&din[i], info.bytes));
        GT_CUDA(cudaMemcpy(din[i], h, info.bytes, cudaMemcpyHostToDevice));
        free(h);
        in[i] = (zci_binding){NULL, din[i], info.bytes};
    }
    for (int i = 0; i < r->n_out; i++) {
        zci_tensor_info info;
        zci_session_output_info(s, i, &info);
        GT_CUDA(cudaMalloc(&dout[i], info.bytes));
        out[i] = (zci_binding){NULL, dout[i], info.bytes};
        host[i] = malloc(r->out_bytes[i]);
    }
    if (GT_OK(zci_run_device(s, in, r->n_in, out, r->n_out, NULL))) {
        for (int i = 0; i < r->n_out; i++) {
            zci_tensor_info info;
            zci_session_output_info(s, i, &info);
            if (info.dtype == ZCI_FLOAT16) {
                uint16_t *h = malloc(info.bytes);
                GT_CUDA(cudaMemcpy(h, dout[i], info.bytes, cudaMemcpyDeviceToHost));
                for (size_t j = 0; j < info.bytes / 2; j++) host[i][j] = zci_f16_to_f32(h[j]);
                free(h);
            } else {
                GT_CUDA(cudaMemcpy(host[i], dout[i], info.bytes, cudaMemcpyDeviceToHost));
            }
        }
        ok = report(name, "fp16", "zero-copy (fp16 I/O)", compare(r, 0, host), tol);
    } else {
        ok = 0;
    }
    for (int i = 0; i < r->n_in; i++) cudaFree(din[i]);
    for (int i = 0; i < r->n_out; i++) {
        cudaFree(dout[i]);
        free(host[i]);
    }
    return ok;
}

/* ---------------------------------------------------------------- node-by-node diagnosis */

typedef struct diag {
    zci_session *s;
    double tol;
    int shown, checked;
    void **data;
} diag;

static int visit(void *user, int ni)
{
    diag *d = user;
    const zci_graph *g = d->s->g;
    const zci_node *n = &g->nodes[ni];
    if (!n->op || !n->op->cpu) return 0;
    void *own[64] = {0};
    int n_own = 0, ok = 1;
    for (int k = 0; k < n->n_in && ok; k++) {
        int t = n->in[k];
        if (t < 0) continue;
        const zci_tensor *x = &g->tensors[t];
        if (x->kind == ZCI_TENSOR_CONSTANT) {
            d->data[t] = x->data;
            continue;
        }
        size_t bytes = zci_tensor_bytes(x);
        void *p = malloc(bytes ? bytes : 1);
        own[n_own++] = p;
        ok = zci_cuda_read_tensor(d->s, t, p, bytes) == ZCI_OK;
        d->data[t] = p;
    }
    for (int k = 0; k < n->n_out && ok; k++)
        if (n->out[k] >= 0) {
            size_t bytes = zci_tensor_bytes(&g->tensors[n->out[k]]);
            own[n_own++] = d->data[n->out[k]] = calloc(1, bytes ? bytes : 1);
        }
    void *state = NULL;
    if (ok && n->op->cpu_prepare) ok = n->op->cpu_prepare(g, n, 4, &state) == ZCI_OK;
    if (ok) ok = zci_kernel_run_once(g, n, d->data, 4, state) == ZCI_OK;
    if (state && n->op->cpu_release) n->op->cpu_release(state);
    for (int k = 0; k < n->n_out && ok; k++) {
        int t = n->out[k];
        if (t < 0) continue;
        const zci_tensor *y = &g->tensors[t];
        size_t bytes = zci_tensor_bytes(y);
        void *gpu = malloc(bytes ? bytes : 1);
        if (zci_cuda_read_tensor(d->s, t, gpu, bytes) == ZCI_OK) {
            double e = 0;
            if (y->dtype == ZCI_FLOAT32) e = gt_rel_error(gpu, d->data[t], bytes / 4);
            else e = memcmp(gpu, d->data[t], bytes) ? INFINITY : 0;
            d->checked++;
            if (!(e <= d->tol) && d->shown < 12) {
                char sh[64];
                printf("    node %s: output '%s' (%s %s) rel. error %.3g vs the CPU kernel on the same inputs\n",
                       zci_node_desc(g, n), y->name, zci_dtype_name(y->dtype), zci_shape_str(y->dims, y->ndim, sh, sizeof sh),
                       e);
                d->shown++;
            }
        }
        free(gpu);
    }
    if (!ok) printf("    node %s: could not be checked: %s\n", zci_node_desc(g, n), zci_last_error());
    for (int i = 0; i < n_own; i++) free(own[i]);
    for (int k = 0; k < n->n_in; k++)
        if (n->in[k] >= 0) d->data[n->in[k]] = NULL;
    for (int k = 0; k < n->n_out; k++)
        if (n->out[k] >= 0) d->data[n->out[k]] = NULL;
    return 0;
}

static void diagnose(zci_session *s, const refs *r, double tol)
{
    printf("    node-by-node comparison with the CPU kernels (tolerance %.0g):\n", tol);
    for (int i = 0; i < r->n_in; i++) zci_session_write_input_buffer(s, i, r->in[0][i], r->in_bytes[i], NULL);
    diag d = {s, tol, 0, 0, calloc((size_t)s->g->n_tensors + 1, sizeof(void *))};
    if (zci_cuda_debug_run(s, visit, &d) != ZCI_OK) printf("    debug run failed: %s\n", zci_last_error());
    printf("    %d node outputs checked, %d shown\n", d.checked, d.shown);
    free(d.data);
}

/* ---------------------------------------------------------------- driver */

static void check_model(const char *models, const char *refdir, const char *arg)
{
    char name[256], path[1024];
    snprintf(name, sizeof name, "%s", arg);
    int64_t batch = 1;
    char *colon = strchr(name, ':');
    if (colon) {
        *colon = 0;
        batch = atoll(colon + 1);
    }
    snprintf(path, sizeof path, "%s/%s.onnx", models, name);
    static const struct {
        const char *label;
        zci_precision prec;
        int graph;
        double tol;
    } cfg[] = {
        {"fp32", ZCI_PRECISION_FP32, 1, 1e-4},
        {"fp32-eag", ZCI_PRECISION_FP32, 0, 1e-4},
        {"fp16", ZCI_PRECISION_FP16, 1, 1e-2},
        {"fp16-eag", ZCI_PRECISION_FP16, 0, 1e-2},
    };
    refs r;
    int have_refs = 0;
    for (size_t c = 0; c < sizeof cfg / sizeof cfg[0]; c++) {
        zci_options o;
        zci_options_init(&o);
        o.device = ZCI_DEVICE_CUDA;
        o.precision = cfg[c].prec;
        o.use_cuda_graph = cfg[c].graph;
        o.batch = batch;
        zci_session *s = NULL;
        double t0 = gt_now_ms();
        if (!GT_OK(zci_session_create(path, &o, &s))) continue;
        double create_ms = gt_now_ms() - t0;
        if (!have_refs && !(have_refs = load_refs(refdir, name, s, &r))) {
            zci_session_destroy(s);
            return;
        }
        printf("  %-22s %-8s created in %.0f ms\n", name, cfg[c].label, create_ms);
        int ok = check_zero_copy(name, cfg[c].label, s, &r, cfg[c].tol);
        ok &= check_regular(name, cfg[c].label, s, &r, 0, 0, cfg[c].tol);
        if (cfg[c].graph) {
            ok &= check_regular(name, cfg[c].label, s, &r, 1, 1, cfg[c].tol);
            ok &= check_own(name, cfg[c].label, s, &r, 2, cfg[c].tol);
        }
        if (!ok) diagnose(s, &r, cfg[c].tol);
        zci_session_destroy(s);
    }
    if (!have_refs) return;
    zci_options o;
    zci_options_init(&o);
    o.device = ZCI_DEVICE_CUDA;
    o.precision = ZCI_PRECISION_FP16;
    o.fp16_io = 1;
    o.batch = batch;
    zci_session *s = NULL;
    if (GT_OK(zci_session_create(path, &o, &s))) check_fp16_io(name, s, &r, 1e-2);
    zci_session_destroy(s);
    free_refs(&r);
}

int main(int argc, char **argv)
{
    if (gt_device_count() == 0) {
        printf("skipped: no GPU\n");
        return 0;
    }
    if (argc < 4) {
        fprintf(stderr, "usage: test_gpu_models MODELS_DIR REFS_DIR NAME[:BATCH] ...\n");
        return 2;
    }
    for (int i = 3; i < argc; i++) check_model(argv[1], argv[2], argv[i]);
    if (gt_failures) {
        printf("test_gpu_models: %d failure(s)\n", gt_failures);
        return 1;
    }
    printf("test_gpu_models: all passed\n");
    return 0;
}
