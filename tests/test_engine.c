/* test_engine.c: engine files on the CPU: a round trip gives the same session (infos,
 * summary) and bit-identical outputs to the ONNX session; the file is deterministic; files
 * for another format, zcinfer version or device are refused with a message saying what
 * differs and how to rebuild; truncated and altered files are refused, and files altered
 * with their checksum recomputed (so that the decoder itself sees the damage) give a status
 * every time, never a crash (this runs under ASan in CI).
 * With a models folder, the classifier's engine is altered too. With a model name, only that
 * model is tested, on the CPU or (`cuda`) on the GPU in FP16: the engine's outputs agree with
 * the ONNX session's, and the time to a ready session from ONNX and from the engine.
 * usage: test_engine FIXTURE_DIR [MODELS_DIR [MODEL [cuda]]]   (MODELS_DIR/MODEL.onnx) */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "engine/engine.h"
#include "test_util.h"

static const char *dir;
static char tmpdir[256];

static char *path_in(const char *folder, const char *name)
{
    static char buf[8][1024];
    static int k;
    char *b = buf[k++ & 7];
    snprintf(b, sizeof buf[0], "%s/%s", folder, name);
    return b;
}

static char *fx(const char *name) { return path_in(dir, name); }
static char *tmp(const char *name) { return path_in(tmpdir, name); }

static unsigned char *slurp(const char *path, size_t *size)
{
    *size = 0;
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *p = malloc((size_t)n + 1);
    if (p && fread(p, 1, (size_t)n, f) != (size_t)n) {
        free(p);
        p = NULL;
    }
    fclose(f);
    *size = p ? (size_t)n : 0;
    return p;
}

/* Recomputes the checksum of an engine held in memory, so that an alteration reaches the
 * decoder instead of being caught by the checksum. */
static void fix_checksum(unsigned char *data, size_t size)
{
    uint64_t sum = zci_xxh64(data, size - 8, 0);
    memcpy(data + size - 8, &sum, 8);
}

/* Deterministic inputs (xorshift, uniform [0, 1)) for every input of s. */
static zci_binding *make_inputs(zci_session *s, uint64_t seed)
{
    int n = zci_session_input_count(s);
    zci_binding *b = calloc((size_t)n + 1, sizeof *b);
    for (int i = 0; i < n; i++) {
        zci_tensor_info t;
        zci_session_input_info(s, i, &t);
        b[i] = (zci_binding){NULL, calloc(1, t.bytes + 1), t.bytes};
        if (t.dtype != ZCI_FLOAT32) continue;
        float *f = b[i].data;
        for (size_t k = 0; k < t.bytes / 4; k++) {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            f[k] = (float)((seed >> 40) * (1.0 / 16777216.0));
        }
    }
    return b;
}

static zci_binding *make_outputs(zci_session *s)
{
    int n = zci_session_output_count(s);
    zci_binding *b = calloc((size_t)n + 1, sizeof *b);
    for (int i = 0; i < n; i++) {
        zci_tensor_info t;
        zci_session_output_info(s, i, &t);
        b[i] = (zci_binding){NULL, calloc(1, t.bytes + 1), t.bytes};
    }
    return b;
}

static void free_bindings(zci_binding *b, int n)
{
    for (int i = 0; b && i < n; i++) free(b[i].data);
    free(b);
}

/* ||x - y|| / ||y|| of two float buffers. */
static double rel_error(const float *x, const float *y, size_t n)
{
    double err = 0, norm = 0;
    for (size_t i = 0; i < n; i++) {
        err += ((double)x[i] - y[i]) * ((double)x[i] - y[i]);
        norm += (double)y[i] * y[i];
    }
    return norm > 0 ? sqrt(err / norm) : sqrt(err);
}

/* Runs both sessions on the same inputs; 1 if every output is bit-identical (tol = 0) or, for
 * float outputs, within relative error `tol`. */
static int close_outputs(zci_session *a, zci_session *b, const char *what, double tol)
{
    int n_in = zci_session_input_count(a), n_out = zci_session_output_count(a);
    zci_binding *in = make_inputs(a, 42), *oa = make_outputs(a), *ob = make_outputs(b);
    int same = zci_run(a, in, n_in, oa, n_out) == ZCI_OK;
    CHECK(same, "%s: run of the first session: %s", what, zci_last_error());
    if (same) {
        zci_status st = zci_run(b, in, n_in, ob, n_out);
        CHECK(st == ZCI_OK, "%s: run of the second session: %s", what, zci_last_error());
        same = st == ZCI_OK;
    }
    for (int i = 0; same && i < n_out; i++) {
        zci_tensor_info t;
        zci_session_output_info(a, i, &t);
        if (tol > 0 && t.dtype == ZCI_FLOAT32) {
            double e = rel_error(ob[i].data, oa[i].data, t.bytes / 4);
            same = e <= tol;
            if (!same) printf("%s: output '%s': rel. error %.3g > %.3g\n", what, t.name, e, tol);
        } else {
            same = !memcmp(oa[i].data, ob[i].data, oa[i].bytes);
        }
    }
    free_bindings(in, n_in);
    free_bindings(oa, n_out);
    free_bindings(ob, n_out);
    return same;
}

static int same_outputs(zci_session *a, zci_session *b, const char *what) { return close_outputs(a, b, what, 0); }

static int same_info(const zci_tensor_info *a, const zci_tensor_info *b)
{
    return !strcmp(a->name, b->name) && a->dtype == b->dtype && a->ndim == b->ndim && a->bytes == b->bytes &&
           !memcmp(a->shape, b->shape, (size_t)a->ndim * sizeof a->shape[0]);
}

/* Everything a caller can see of two sessions agrees, and they compute the same bits (tol =
 * 0) or the same numbers within `tol`. */
static void check_same_session(zci_session *a, zci_session *b, const char *what, double tol)
{
    CHECK(zci_session_input_count(a) == zci_session_input_count(b), "%s: input count", what);
    CHECK(zci_session_output_count(a) == zci_session_output_count(b), "%s: output count", what);
    for (int i = 0; i < zci_session_input_count(a) && i < zci_session_input_count(b); i++) {
        zci_tensor_info x, y;
        zci_session_input_info(a, i, &x);
        zci_session_input_info(b, i, &y);
        CHECK(same_info(&x, &y), "%s: input %d differs (%s vs %s)", what, i, x.name, y.name);
    }
    for (int i = 0; i < zci_session_output_count(a) && i < zci_session_output_count(b); i++) {
        zci_tensor_info x, y;
        zci_session_output_info(a, i, &x);
        zci_session_output_info(b, i, &y);
        CHECK(same_info(&x, &y), "%s: output %d differs (%s vs %s)", what, i, x.name, y.name);
    }
    zci_summary sa, sb;
    zci_session_summary(a, &sa);
    zci_session_summary(b, &sb);
    CHECK(sa.parameters == sb.parameters && sa.nodes_in_model == sb.nodes_in_model &&
              sa.nodes_planned == sb.nodes_planned && sa.opset == sb.opset && sa.flops == sb.flops &&
              sa.n_op_types == sb.n_op_types && sa.activation_bytes == sb.activation_bytes,
          "%s: summaries differ (parameters %lld/%lld, nodes %d/%d, planned %d/%d, arena %zu/%zu)", what,
          (long long)sa.parameters, (long long)sb.parameters, sa.nodes_in_model, sb.nodes_in_model, sa.nodes_planned,
          sb.nodes_planned, sa.activation_bytes, sb.activation_bytes);
    for (int i = 0; i < sa.n_op_types && i < sb.n_op_types; i++)
        CHECK(!strcmp(sa.op_types[i], sb.op_types[i]) && sa.op_counts[i] == sb.op_counts[i], "%s: op histogram", what);
    CHECK(close_outputs(a, b, what, tol), "%s: outputs differ", what);
}

/* ONNX -> session -> engine -> session, for one fixture model. */
static void round_trip(const char *model, const zci_options *opts)
{
    char what[256];
    snprintf(what, sizeof what, "round trip of %s", model);
    zci_session *a = NULL, *b = NULL, *c = NULL;
    CHECK_OK(zci_session_create(fx(model), opts, &a));
    if (!a) return;
    const char *engine = tmp("round_trip.zce");
    CHECK_OK(zci_session_save_engine(a, engine));
    CHECK(access(tmp("round_trip.zce.partial"), F_OK) != 0, "no .partial file is left behind");
    CHECK_OK(zci_session_create(engine, NULL, &b));
    if (b) check_same_session(a, b, what, 0);

    /* from memory too, and the same engine written again from the loaded session: the same
     * bytes (deterministic files) */
    size_t size;
    unsigned char *bytes = slurp(engine, &size);
    CHECK_OK(zci_session_create_from_memory(bytes, size, NULL, &c));
    if (c) CHECK(same_outputs(a, c, what), "%s: from memory: outputs differ", what);
    void *e1 = NULL, *e2 = NULL;
    size_t n1 = 0, n2 = 0;
    CHECK_OK(zci_engine_encode(a, "model", &e1, &n1));
    if (b) CHECK_OK(zci_engine_encode(b, "model", &e2, &n2));
    CHECK(e1 && e2 && n1 == n2 && !memcmp(e1, e2, n1), "%s: re-encoding a loaded engine gives other bytes", what);
    free(e1);
    free(e2);
    free(bytes);
    zci_session_destroy(a);
    zci_session_destroy(b);
    zci_session_destroy(c);
    remove(engine);
}

static void test_round_trips(void)
{
    round_trip("conv_block.onnx", NULL);
    round_trip("two_in_two_out.onnx", NULL);
    zci_options o;
    zci_options_init(&o);
    o.num_threads = 1;
    round_trip("conv_block.onnx", &o);

    /* the batch is fixed by the file: loading with another batch in the options keeps it */
    o.batch = 3;
    CHECK_OK(zci_build_engine(fx("dynbatch.onnx"), tmp("dyn3.zce"), &o));
    zci_session *s = NULL;
    zci_options_init(&o);
    CHECK_OK(zci_session_create(tmp("dyn3.zce"), &o, &s));
    zci_tensor_info t;
    if (s) {
        CHECK_OK(zci_session_input_info(s, 0, &t));
        CHECK(t.shape[0] == 3 && t.bytes == 3 * 4 * 4, "the engine's batch 3 is kept (shape[0] = %lld)",
              (long long)t.shape[0]);
        float x[12], y[12];
        for (int i = 0; i < 12; i++) x[i] = (float)(i - 6);
        CHECK_OK(zci_run_simple(s, x, 12, y, 12));
        CHECK(y[0] == 0 && y[11] == 5, "relu through the engine");
    }
    zci_session_destroy(s);
    remove(tmp("dyn3.zce"));

    /* an engine named like an ONNX file is still an engine: recognised by content */
    CHECK_OK(zci_build_engine(fx("conv_block.onnx"), tmp("engine_named.onnx"), NULL));
    CHECK_OK(zci_session_create(tmp("engine_named.onnx"), NULL, &s));
    zci_session_destroy(s);
    remove(tmp("engine_named.onnx"));
}

static void test_bad_calls(void)
{
    zci_session *s = NULL;
    CHECK_FAILS(zci_session_save_engine(NULL, tmp("x.zce")), ZCI_INVALID_ARGUMENT, "session is NULL");
    CHECK_FAILS(zci_build_engine(NULL, tmp("x.zce"), NULL), ZCI_INVALID_ARGUMENT, "onnx_path is NULL");
    CHECK_FAILS(zci_build_engine(fx("conv_block.onnx"), NULL, NULL), ZCI_INVALID_ARGUMENT, "engine_path is NULL");
    CHECK_FAILS(zci_build_engine(fx("unsupported_op.onnx"), tmp("x.zce"), NULL), ZCI_UNSUPPORTED, "'Det'");
    CHECK(access(tmp("x.zce"), F_OK) != 0, "no engine is written for a model that fails");
    CHECK_FAILS(zci_build_engine(fx("conv_block.onnx"), tmp("no/such/folder/x.zce"), NULL), ZCI_IO, "cannot create");
    CHECK_OK(zci_session_create(fx("conv_block.onnx"), NULL, &s));
    CHECK_FAILS(zci_session_save_engine(s, NULL), ZCI_INVALID_ARGUMENT, "path is NULL");
    zci_session_destroy(s);
}

/* Header fields at fixed offsets (engine.h): format, library version, device. */
enum { OFF_FORMAT = 8, OFF_VERSION = 12, OFF_DEVICE = 24, OFF_CC = 42 };

static zci_status load_altered(const unsigned char *good, size_t size, size_t off, const void *value, size_t n,
                               zci_session **s)
{
    unsigned char *bad = malloc(size);
    memcpy(bad, good, size);
    memcpy(bad + off, value, n);
    fix_checksum(bad, size);
    zci_status st = zci_session_create_from_memory(bad, size, NULL, s);
    free(bad);
    return st;
}

static void test_refusals(void)
{
    const char *engine = tmp("refusals.zce");
    CHECK_OK(zci_build_engine(fx("conv_block.onnx"), engine, NULL));
    size_t size;
    unsigned char *good = slurp(engine, &size);
    CHECK(good && size > 64, "engine written");
    if (!good) return;
    CHECK(zci_engine_detect(good, size), "engine magic");
    zci_session *s = NULL;

    uint32_t v = 2;
    CHECK_FAILS(load_altered(good, size, OFF_FORMAT, &v, 4, &s), ZCI_UNSUPPORTED, "format version 2");
    CHECK(strstr(zci_last_error(), "zcinfer build"), "says how to rebuild: %s", zci_last_error());
    v = ZCI_VERSION_NUMBER + 100; /* the next minor version */
    CHECK_FAILS(load_altered(good, size, OFF_VERSION, &v, 4, &s), ZCI_UNSUPPORTED, "written by zcinfer");
    CHECK(strstr(zci_last_error(), "zcinfer build") && strstr(zci_last_error(), "conv_block.onnx"),
          "the rebuild command names the model: %s", zci_last_error());
    v = ZCI_VERSION_NUMBER - ZCI_VERSION_NUMBER % 100 + 99; /* another patch version: accepted */
    CHECK_OK(load_altered(good, size, OFF_VERSION, &v, 4, &s));
    zci_session_destroy(s);

    /* planned for CUDA: refused by a build without CUDA; with CUDA and a GPU, an architecture
     * that does not exist (compute capability 1.0) is refused */
    const zci_backend_iface *cuda = zci_cuda_backend();
    int gpus = 0;
    zci_cuda_device_count(&gpus);
    unsigned char dev[4 + 4 + 8 + 1 + 1 + 4] = {0};
    v = ZCI_DEVICE_CUDA;
    memcpy(dev, &v, 4);
    memcpy(dev + 4, good + OFF_DEVICE + 4, sizeof dev - 4);
    uint32_t cc = 10;
    memcpy(dev + 18, &cc, 4);
    if (!cuda) {
        CHECK_FAILS(load_altered(good, size, OFF_DEVICE, dev, sizeof dev, &s), ZCI_UNSUPPORTED, "no CUDA support");
        CHECK(strstr(zci_last_error(), "zcinfer build") && !strstr(zci_last_error(), "--device cuda"),
              "suggests a CPU engine: %s", zci_last_error());
    } else if (cuda->describe_device && gpus > 0) {
        CHECK_FAILS(load_altered(good, size, OFF_DEVICE, dev, sizeof dev, &s), ZCI_UNSUPPORTED, "GPU architecture");
        CHECK(strstr(zci_last_error(), "--device cuda"), "rebuild command for CUDA: %s", zci_last_error());
    } else {
        printf("skipped: the CUDA backend has no describe_device or no GPU is present\n");
    }

    /* damage: the checksum catches it, and a truncation is named as such */
    unsigned char *bad = malloc(size);
    memcpy(bad, good, size);
    bad[size / 2] ^= 0x10;
    CHECK_FAILS(zci_session_create_from_memory(bad, size, NULL, &s), ZCI_INVALID_MODEL, "checksum");
    CHECK_FAILS(zci_session_create_from_memory(good, size - 100, NULL, &s), ZCI_INVALID_MODEL, "truncated");
    CHECK_FAILS(zci_session_create_from_memory(good, 20, NULL, &s), ZCI_INVALID_MODEL, "truncated");
    FILE *f = fopen(tmp("short.zce"), "wb");
    fwrite(good, 1, size - 1, f);
    fclose(f);
    CHECK_FAILS(zci_session_create(tmp("short.zce"), NULL, &s), ZCI_INVALID_MODEL, "short.zce");
    remove(tmp("short.zce"));
    free(bad);
    free(good);
    remove(engine);
}

/* Which bytes the fuzzer alters: every byte of the first `head` (header, summary, first
 * tensors) and every `tail_step`-th of the last `tail` (graph inputs, outputs and the node
 * list with its attributes, which end the file), every `step`-th in between (weights). */
typedef struct fuzz_plan {
    size_t head, tail, tail_step, step;
    const unsigned char *flips;
    int n_flips;
} fuzz_plan;

static size_t next_pos(const fuzz_plan *p, size_t pos, size_t size)
{
    if (pos < p->head) return pos + 1;
    if (pos + p->tail >= size) return pos + p->tail_step;
    return pos + p->step;
}

/* Truncations, and bytes altered, with and without the checksum recomputed. Without it, all
 * must be refused; with it, the decoder must refuse or accept each cleanly, and an accepted
 * session must run (or fail) cleanly. */
static void fuzz_engine(const unsigned char *good, size_t size, const fuzz_plan *plan, const char *what)
{
    unsigned char *bad = malloc(size);
    zci_session *s = NULL;
    /* one thread: thousands of tiny loads and runs, where thread teams would only add waiting */
    zci_options one;
    zci_options_init(&one);
    one.num_threads = 1;
    int refused = 0, accepted_trunc = 0;
    for (size_t cut = 0; cut < size; cut = next_pos(plan, cut, size)) {
        memcpy(bad, good, cut);
        zci_status st = zci_session_create_from_memory(bad, cut, &one, &s);
        if (st == ZCI_OK) {
            accepted_trunc++;
            zci_session_destroy(s);
        } else {
            refused++;
        }
    }
    CHECK(accepted_trunc == 0, "%s: %d truncated engines were accepted", what, accepted_trunc);
    int not_caught = 0, loaded = 0, decoder_refused = 0, runs = 0;
    for (size_t pos = 0; pos < size; pos = next_pos(plan, pos, size)) {
        for (int k = 0; k < plan->n_flips; k++) {
            memcpy(bad, good, size);
            bad[pos] ^= plan->flips[k];
            if (getenv("FUZZ_TRACE")) fprintf(stderr, "pos %zu flip %x\n", pos, plan->flips[k]);
            if (zci_session_create_from_memory(bad, size, &one, &s) == ZCI_OK) {
                not_caught++;
                zci_session_destroy(s);
            }
            if (pos >= size - 8) continue; /* the checksum itself */
            fix_checksum(bad, size);
            if (zci_session_create_from_memory(bad, size, &one, &s) != ZCI_OK) {
                decoder_refused++;
                continue;
            }
            loaded++;
            int n_in = zci_session_input_count(s), n_out = zci_session_output_count(s);
            zci_binding *in = make_inputs(s, 7), *out = make_outputs(s);
            if (zci_run(s, in, n_in, out, n_out) == ZCI_OK) runs++;
            free_bindings(in, n_in);
            free_bindings(out, n_out);
            zci_session_destroy(s);
        }
    }
    CHECK(not_caught == 0, "%s: %d altered engines passed the checksum", what, not_caught);
    CHECK(decoder_refused > 0, "%s: the decoder refused none of the altered engines", what);
    printf("%s: %zu bytes; truncations refused: %d; altered with checksum fixed: %d refused by the decoder, %d loaded "
           "(%d of them ran)\n",
           what, size, refused, decoder_refused, loaded, runs);
    free(bad);
}

static void test_fuzz(const char *models)
{
    static const unsigned char three[] = {0x01, 0x80, 0xff}, one[] = {0xff};
    const char *engine = tmp("fuzz.zce");
    size_t size;
    CHECK_OK(zci_build_engine(fx("conv_block.onnx"), engine, NULL));
    unsigned char *good = slurp(engine, &size);
    fuzz_plan every_byte = {.head = SIZE_MAX, .tail = 0, .tail_step = 1, .step = 1, .flips = three, .n_flips = 3};
    if (good) fuzz_engine(good, size, &every_byte, "conv_block engine, every byte, 3 ways");
    free(good);
    if (models) {
        CHECK_OK(zci_build_engine(path_in(models, "classifier.onnx"), engine, NULL));
        good = slurp(engine, &size);
        fuzz_plan structure = {.head = 256, .tail = 8192, .tail_step = 11, .step = 131071, .flips = one, .n_flips = 1};
        if (good) fuzz_engine(good, size, &structure, "classifier engine");
        free(good);
    }
    remove(engine);
}

static double create_ms(const char *path, const zci_options *opts, zci_session **s)
{
    double t0 = zci_now();
    zci_status st = zci_session_create(path, opts, s);
    double ms = (zci_now() - t0) * 1e3;
    CHECK(st == ZCI_OK, "create %s: %s", path, zci_last_error());
    return ms;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* A real model on the CPU (FP32) or CUDA (FP16): the engine's session agrees with the ONNX
 * session (CPU: bit-identical; CUDA: within 1e-2, and two engine sessions bit-identical), and the time to a ready
 * session from each (median of 3, files read once before). */
static void test_model(const char *models, const char *name, zci_device device)
{
    zci_options o;
    zci_options_init(&o);
    const char *label = "CPU FP32";
    if (device == ZCI_DEVICE_CUDA) {
        int gpus = 0;
        zci_cuda_device_count(&gpus);
        if (!gpus) {
            printf("skipped: no GPU\n");
            return;
        }
        o.device = ZCI_DEVICE_CUDA;
        o.precision = ZCI_PRECISION_FP16;
        label = "CUDA FP16";
    }
    char onnx[1024], engine[1024];
    snprintf(onnx, sizeof onnx, "%s/%s.onnx", models, name);
    snprintf(engine, sizeof engine, "%s/%s.zce", tmpdir, name);
    if (access(onnx, R_OK)) {
        CHECK(0, "%s is missing (tests/models/make_models.py makes it)", onnx);
        return;
    }
    double t0 = zci_now();
    CHECK_OK(zci_build_engine(onnx, engine, &o));
    double build_ms = (zci_now() - t0) * 1e3;
    size_t esize, osize;
    free(slurp(engine, &esize));
    free(slurp(onnx, &osize));
    zci_session *a = NULL, *b = NULL;
    double t_onnx[3], t_engine[3];
    for (int i = 0; i < 3; i++) {
        zci_session_destroy(a);
        zci_session_destroy(b);
        t_onnx[i] = create_ms(onnx, &o, &a);
        t_engine[i] = create_ms(engine, NULL, &b);
    }
    qsort(t_onnx, 3, sizeof(double), cmp_double);
    qsort(t_engine, 3, sizeof(double), cmp_double);
    if (a && b) {
        char what[128];
        snprintf(what, sizeof what, "%s %s: ONNX vs engine", name, label);
        CHECK(zci_session_device(b) == device, "%s: the engine runs on the device it was built for", what);
        /* CUDA FP16: each session times its convolution kernels (cuDNN's fused graph or ours) and
         * may pick differently, so the ONNX session agrees within FP16's tolerance; two sessions
         * of one engine file run the file's choices and agree bit for bit */
        check_same_session(a, b, what, device == ZCI_DEVICE_CUDA ? 1e-2 : 0);
        if (device == ZCI_DEVICE_CUDA) {
            zci_session *b2 = NULL;
            create_ms(engine, NULL, &b2);
            snprintf(what, sizeof what, "%s %s: engine vs engine", name, label);
            if (b2) CHECK(same_outputs(b, b2, what), "%s: two sessions of one engine file differ", what);
            zci_session_destroy(b2);
        }
    }
    printf("%s %s: ready session from ONNX %.1f ms (%.1f MB), from the engine %.1f ms (%.1f MB); build %.0f ms\n",
           name, label, t_onnx[1], osize / 1048576.0, t_engine[1], esize / 1048576.0, build_ms);
    zci_session_destroy(a);
    zci_session_destroy(b);
    remove(engine);
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: %s FIXTURE_DIR [MODELS_DIR [MODEL [cuda]]]\n", argv[0]);
        return 2;
    }
    dir = argv[1];
    const char *models = argc > 2 ? argv[2] : NULL;
    snprintf(tmpdir, sizeof tmpdir, "%s/engine_test_%ld", dir, (long)getpid());
    if (mkdir(tmpdir, 0777)) {
        perror(tmpdir);
        return 2;
    }
    if (argc > 3) {
        test_model(models, argv[3], argc > 4 && !strcmp(argv[4], "cuda") ? ZCI_DEVICE_CUDA : ZCI_DEVICE_CPU);
    } else {
        test_round_trips();
        test_bad_calls();
        test_refusals();
        test_fuzz(models);
    }
    rmdir(tmpdir);
    return test_summary("test_engine");
}
