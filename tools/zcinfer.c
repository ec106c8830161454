/* zcinfer: the command line tool. Uses only the public API (zcinfer.h).
 *   zcinfer info  MODEL                 inputs, outputs, op histogram, parameters, FLOPs
 *   zcinfer run   MODEL [--input N=F.npy]... [--output DIR]
 *   zcinfer bench MODEL [--iters N]     latency of the regular (and on CUDA the zero-copy) path
 *   zcinfer detect MODEL IMAGE... [--device cuda] [-o OUT] [--json]   YOLO detections, drawn
 *   zcinfer build MODEL.onnx [-o MODEL.zce] [--device cuda] [--fp16] [--batch N]   engine file */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "cli.h"
#include "npy.h"

static void print_tensor_line(const zci_tensor_info *t)
{
    char shape[160] = "";
    size_t pos = 0;
    for (int d = 0; d < t->ndim; d++)
        pos += (size_t)snprintf(shape + pos, sizeof shape - pos, d ? "x%lld" : "%lld", (long long)t->shape[d]);
    printf("  %-24s %-8s %-20s %10zu bytes\n", t->name, zci_dtype_name(t->dtype), t->ndim ? shape : "scalar", t->bytes);
}

int cli_fail(const char *what)
{
    fprintf(stderr, "zcinfer: %s: %s\n", what, zci_last_error());
    return 1;
}

/* Common options; returns the number of argv entries consumed (0 = not a common option,
 * -1 = bad value). */
int cli_common_option(int argc, char **argv, int i, cli_opts *o)
{
    const char *a = argv[i];
    const char *v = i + 1 < argc ? argv[i + 1] : NULL;
    if (!strcmp(a, "--device")) {
        if (!v) return -1;
        if (!strcmp(v, "cpu")) o->zopts.device = ZCI_DEVICE_CPU;
        else if (!strcmp(v, "cuda")) o->zopts.device = ZCI_DEVICE_CUDA;
        else {
            fprintf(stderr, "zcinfer: --device must be cpu or cuda, not '%s'\n", v);
            return -1;
        }
        return 2;
    }
    if (!strcmp(a, "--fp16")) {
        o->zopts.precision = ZCI_PRECISION_FP16;
        return 1;
    }
    if (!strcmp(a, "--fp16-io")) {
        o->zopts.fp16_io = 1;
        return 1;
    }
    if (!strcmp(a, "--tf32")) {
        o->zopts.allow_tf32 = 1;
        return 1;
    }
    if (!strcmp(a, "--no-cuda-graph")) {
        o->zopts.use_cuda_graph = 0;
        return 1;
    }
    if (!strcmp(a, "-v") || !strcmp(a, "--verbose")) {
        o->zopts.verbose = 1;
        return 1;
    }
    if (!strcmp(a, "--batch") || !strcmp(a, "--threads")) {
        char *end;
        long long x = v ? strtoll(v, &end, 10) : -1;
        if (!v || *end || x < 0) {
            fprintf(stderr, "zcinfer: %s needs a non-negative integer\n", a);
            return -1;
        }
        if (!strcmp(a, "--batch")) o->zopts.batch = x;
        else o->zopts.num_threads = (int)x;
        return 2;
    }
    return 0;
}

static const char *common_help =
    "  --device cpu|cuda   where to run (default cpu)\n"
    "  --fp16              plan the model in FP16 (CUDA)\n"
    "  --fp16-io           FP16 inputs and outputs too (CUDA, with --fp16)\n"
    "  --tf32              allow TF32 tensor-core math in FP32 (CUDA)\n"
    "  --no-cuda-graph     launch kernels one by one instead of replaying a CUDA graph\n"
    "  --batch N           value of a symbolic batch dimension (default 1)\n"
    "  --threads N         CPU threads (default: all cores)\n"
    "  -v, --verbose       planning details on stderr\n";

/* ---------------------------------------------------------------- info */

static int cmd_info(int argc, char **argv)
{
    cli_opts o;
    zci_options_init(&o.zopts);
    const char *model = NULL;
    for (int i = 0; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            printf("usage: zcinfer info MODEL [options]\n"
                   "Prints the model's inputs and outputs, an op histogram, parameter count and FLOPs.\n%s",
                   common_help);
            return 0;
        }
        int used = cli_common_option(argc, argv, i, &o);
        if (used < 0) return 2;
        if (used) {
            i += used - 1;
        } else if (argv[i][0] == '-' || model) {
            fprintf(stderr, "zcinfer info: unexpected argument '%s' (see --help)\n", argv[i]);
            return 2;
        } else {
            model = argv[i];
        }
    }
    if (!model) {
        fprintf(stderr, "zcinfer info: a MODEL is needed (see --help)\n");
        return 2;
    }
    zci_session *s;
    if (zci_session_create(model, &o.zopts, &s)) return cli_fail("cannot load the model");
    zci_summary sum;
    zci_session_summary(s, &sum);
    printf("model: %s (opset %d)\ninputs:\n", model, sum.opset);
    for (int i = 0; i < zci_session_input_count(s); i++) {
        zci_tensor_info t;
        zci_session_input_info(s, i, &t);
        print_tensor_line(&t);
    }
    printf("outputs:\n");
    for (int i = 0; i < zci_session_output_count(s); i++) {
        zci_tensor_info t;
        zci_session_output_info(s, i, &t);
        print_tensor_line(&t);
    }
    printf("parameters: %lld (%.2f M)\n", (long long)sum.parameters, sum.parameters / 1e6);
    printf("FLOPs per run: %.3f G (Conv, MatMul, Gemm; batch %lld)\n", sum.flops / 1e9, (long long)o.zopts.batch);
    printf("nodes: %d in the model, %d after planning (constant folding, fusion)\n", sum.nodes_in_model,
           sum.nodes_planned);
    printf("activation memory: %.2f MB\nops:\n", sum.activation_bytes / 1048576.0);
    for (int i = 0; i < sum.n_op_types; i++) printf("  %-24s %d\n", sum.op_types[i], sum.op_counts[i]);
    zci_session_destroy(s);
    return 0;
}

/* ---------------------------------------------------------------- run */

void cli_fill_random(void *data, zci_dtype dt, size_t bytes, uint64_t *state)
{
    size_t n = bytes / (zci_dtype_size(dt) ? zci_dtype_size(dt) : 1);
    for (size_t i = 0; i < n; i++) {
        *state ^= *state << 13;
        *state ^= *state >> 7;
        *state ^= *state << 17;
        float u = (float)((*state >> 40) * (1.0 / 16777216.0));
        switch (dt) {
        case ZCI_FLOAT32: ((float *)data)[i] = u; break;
        case ZCI_FLOAT16: {
            /* u in [0, 1) as a half, mantissa truncated; values below 2^-14 flush to zero */
            uint32_t x;
            memcpy(&x, &u, 4);
            int e = (int)((x >> 23) & 0xff) - 127 + 15;
            ((uint16_t *)data)[i] = e <= 0 ? 0 : (uint16_t)((unsigned)e << 10 | ((x >> 13) & 0x3ff));
            break;
        }
        default: memset((char *)data + i * zci_dtype_size(dt), 0, zci_dtype_size(dt)); break;
        }
    }
}

static void sanitize(char *dst, size_t n, const char *src)
{
    size_t i = 0;
    for (; src[i] && i + 1 < n; i++) {
        char c = src[i];
        dst[i] = (c == '/' || c == '\\' || c == ':' || c == ' ') ? '_' : c;
    }
    dst[i] = 0;
}

static int cmd_run(int argc, char **argv)
{
    cli_opts o;
    zci_options_init(&o.zopts);
    const char *model = NULL, *outdir = NULL;
    const char *in_spec[64];
    int n_spec = 0;
    uint64_t seed = 1;
    for (int i = 0; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            printf("usage: zcinfer run MODEL [--input NAME=FILE.npy]... [--output DIR] [--seed N] [options]\n"
                   "Runs the model once. Inputs not given are filled with uniform random numbers in [0, 1)\n"
                   "(seeded: --seed). Outputs are summarised, and written as DIR/NAME.npy with --output.\n%s",
                   common_help);
            return 0;
        }
        int used = cli_common_option(argc, argv, i, &o);
        if (used < 0) return 2;
        if (used) {
            i += used - 1;
        } else if (!strcmp(argv[i], "--input") && i + 1 < argc) {
            if (n_spec == 64) {
                fprintf(stderr, "zcinfer run: too many --input\n");
                return 2;
            }
            in_spec[n_spec++] = argv[++i];
        } else if (!strcmp(argv[i], "--output") && i + 1 < argc) {
            outdir = argv[++i];
        } else if (!strcmp(argv[i], "--seed") && i + 1 < argc) {
            seed = strtoull(argv[++i], NULL, 10) * 2654435761u + 1;
        } else if (argv[i][0] == '-' || model) {
            fprintf(stderr, "zcinfer run: unexpected argument '%s' (see --help)\n", argv[i]);
            return 2;
        } else {
            model = argv[i];
        }
    }
    if (!model) {
        fprintf(stderr, "zcinfer run: a MODEL is needed (see --help)\n");
        return 2;
    }
    zci_session *s;
    if (zci_session_create(model, &o.zopts, &s)) return cli_fail("cannot load the model");
    int n_in = zci_session_input_count(s), n_out = zci_session_output_count(s), rc = 1;
    zci_binding *in = calloc((size_t)n_in + 1, sizeof *in), *out = calloc((size_t)n_out + 1, sizeof *out);
    char err[512];
    for (int k = 0; k < n_spec; k++) {
        const char *eq = strchr(in_spec[k], '=');
        int idx = -1;
        char name[256];
        if (eq) {
            snprintf(name, sizeof name, "%.*s", (int)(eq - in_spec[k]), in_spec[k]);
            idx = zci_session_input_index(s, name);
        } else if (n_in == 1) {
            idx = 0;
            eq = in_spec[k] - 1;
        }
        if (idx < 0) {
            fprintf(stderr, "zcinfer run: --input %s: no such input (use NAME=FILE.npy)\n", in_spec[k]);
            goto done;
        }
        npy_array a;
        if (npy_read(eq + 1, &a, err, sizeof err)) {
            fprintf(stderr, "zcinfer run: %s\n", err);
            goto done;
        }
        zci_tensor_info t;
        zci_session_input_info(s, idx, &t);
        if (a.dtype != t.dtype || a.bytes != t.bytes) {
            fprintf(stderr, "zcinfer run: %s holds %s, %zu bytes; input '%s' needs %s, %zu bytes\n", eq + 1,
                    zci_dtype_name(a.dtype), a.bytes, t.name, zci_dtype_name(t.dtype), t.bytes);
            free(a.data);
            goto done;
        }
        free(in[idx].data);
        in[idx] = (zci_binding){NULL, a.data, a.bytes};
    }
    for (int i = 0; i < n_in; i++) {
        zci_tensor_info t;
        zci_session_input_info(s, i, &t);
        if (!in[i].data) {
            in[i] = (zci_binding){NULL, malloc(t.bytes ? t.bytes : 1), t.bytes};
            cli_fill_random(in[i].data, t.dtype, t.bytes, &seed);
        }
    }
    for (int i = 0; i < n_out; i++) {
        zci_tensor_info t;
        zci_session_output_info(s, i, &t);
        out[i] = (zci_binding){NULL, malloc(t.bytes ? t.bytes : 1), t.bytes};
    }
    if (zci_run(s, in, n_in, out, n_out)) {
        cli_fail("run failed");
        goto done;
    }
    if (outdir && mkdir(outdir, 0777) && errno != EEXIST) {
        fprintf(stderr, "zcinfer run: cannot create '%s': %s\n", outdir, strerror(errno));
        goto done;
    }
    for (int i = 0; i < n_out; i++) {
        zci_tensor_info t;
        zci_session_output_info(s, i, &t);
        if (t.dtype == ZCI_FLOAT32) {
            const float *f = out[i].data;
            size_t n = t.bytes / 4;
            double mn = INFINITY, mx = -INFINITY, sum = 0;
            for (size_t j = 0; j < n; j++) {
                mn = f[j] < mn ? f[j] : mn;
                mx = f[j] > mx ? f[j] : mx;
                sum += f[j];
            }
            printf("%s: min %.6g max %.6g mean %.6g\n", t.name, mn, mx, n ? sum / (double)n : 0.0);
        } else {
            printf("%s: %s, %zu bytes\n", t.name, zci_dtype_name(t.dtype), t.bytes);
        }
        if (outdir) {
            char fname[300], path[4096];
            sanitize(fname, sizeof fname, t.name);
            snprintf(path, sizeof path, "%s/%s.npy", outdir, fname);
            if (npy_write(path, t.dtype, t.shape, t.ndim, out[i].data, t.bytes)) {
                fprintf(stderr, "zcinfer run: cannot write '%s': %s\n", path, strerror(errno));
                goto done;
            }
        }
    }
    rc = 0;
done:
    for (int i = 0; i < n_in; i++) free(in[i].data);
    for (int i = 0; i < n_out; i++) free(out[i].data);
    free(in);
    free(out);
    zci_session_destroy(s);
    return rc;
}

/* ---------------------------------------------------------------- main */

static void usage(FILE *f)
{
    fprintf(f,
            "zcinfer %s: ONNX inference on CPU and NVIDIA GPUs\n"
            "usage: zcinfer COMMAND [args]   (zcinfer COMMAND --help for details)\n"
            "  info MODEL     inputs, outputs, op histogram, parameters, FLOPs\n"
            "  run MODEL      run once on .npy or random inputs, write .npy outputs\n"
            "  bench MODEL    measure latency and throughput\n"
            "  build MODEL    plan once and write an engine file (-o MODEL.zce)\n"
            "  detect MODEL IMAGE...  detect objects: print them and draw them on the image\n"
            "  version        print the library version\n",
            zci_version());
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    const char *cmd = argv[1];
    if (!strcmp(cmd, "info")) return cmd_info(argc - 2, argv + 2);
    if (!strcmp(cmd, "run")) return cmd_run(argc - 2, argv + 2);
    if (!strcmp(cmd, "bench")) return cmd_bench(argc - 2, argv + 2);
    if (!strcmp(cmd, "build")) return cmd_build(argc - 2, argv + 2);
    if (!strcmp(cmd, "detect")) return cmd_detect(argc - 2, argv + 2);
    if (!strcmp(cmd, "version") || !strcmp(cmd, "--version")) {
        printf("zcinfer %s\n", zci_version());
        return 0;
    }
    if (!strcmp(cmd, "--help") || !strcmp(cmd, "-h") || !strcmp(cmd, "help")) {
        usage(stdout);
        return 0;
    }
    fprintf(stderr, "zcinfer: unknown command '%s'\n", cmd);
    usage(stderr);
    return 2;
}
