/* build_cmd.c: `zcinfer build MODEL.onnx -o MODEL.zce [options]`: plans a model once and
 * writes an engine file, which `zcinfer run/bench/info` and zci_session_create load without
 * parsing or planning. Uses only the public API. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench.h"
#include "cli.h"

static const char *build_help =
    "usage: zcinfer build MODEL.onnx [-o ENGINE] [options]\n"
    "Plans the model once (constant folding, fusion, memory; on CUDA algorithm tuning) and writes\n"
    "an engine file that loads without parsing or planning. The engine only runs where it was\n"
    "planned for: the device, precision and batch below, on CUDA the same GPU architecture and\n"
    "CUDA / cuDNN versions, and the same zcinfer major.minor version.\n"
    "  -o, --output ENGINE engine file to write (default: MODEL with .onnx replaced by .zce)\n"
    "  --device cpu|cuda   device to plan for (default cpu)\n"
    "  --fp16              plan in FP16 (CUDA)\n"
    "  --fp16-io           FP16 inputs and outputs too (CUDA, with --fp16)\n"
    "  --tf32              allow TF32 tensor-core math in FP32 (CUDA)\n"
    "  --batch N           value of a symbolic batch dimension (default 1)\n"
    "  -v, --verbose       planning details on stderr\n";

/* MODEL.onnx -> MODEL.zce (any other name: MODEL.zce appended). malloc'd. */
static char *default_output(const char *model)
{
    size_t n = strlen(model);
    char *out = malloc(n + 5);
    if (!out) return NULL;
    memcpy(out, model, n + 1);
    if (n > 5 && !strcmp(model + n - 5, ".onnx")) out[n - 5] = 0;
    strcat(out, ".zce");
    return out;
}

int cmd_build(int argc, char **argv)
{
    cli_opts o;
    zci_options_init(&o.zopts);
    const char *model = NULL, *output = NULL;
    for (int i = 0; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            fputs(build_help, stdout);
            return 0;
        }
        int used = cli_common_option(argc, argv, i, &o);
        if (used < 0) return 2;
        if (used) {
            i += used - 1;
        } else if ((!strcmp(argv[i], "-o") || !strcmp(argv[i], "--output")) && i + 1 < argc) {
            output = argv[++i];
        } else if (argv[i][0] == '-' || model) {
            fprintf(stderr, "zcinfer build: unexpected argument '%s' (see --help)\n", argv[i]);
            return 2;
        } else {
            model = argv[i];
        }
    }
    if (!model) {
        fprintf(stderr, "zcinfer build: a MODEL is needed (see --help)\n");
        return 2;
    }
    char *def = output ? NULL : default_output(model);
    if (!output && !(output = def)) {
        fprintf(stderr, "zcinfer build: out of memory\n");
        return 1;
    }
    if (!strcmp(output, model)) {
        fprintf(stderr, "zcinfer build: the engine would overwrite the model '%s'; choose another -o\n", model);
        free(def);
        return 2;
    }
    double t0 = bench_now_ms();
    zci_session *s;
    int rc = 0;
    if (zci_session_create(model, &o.zopts, &s)) {
        free(def);
        return cli_fail("cannot plan the model");
    }
    double t_plan = bench_now_ms() - t0;
    if (zci_session_save_engine(s, output)) {
        rc = cli_fail("cannot write the engine");
    } else {
        FILE *f = fopen(output, "rb");
        long size = -1;
        if (f && !fseek(f, 0, SEEK_END)) size = ftell(f);
        if (f) fclose(f);
        zci_summary sum;
        zci_session_summary(s, &sum);
        printf("wrote %s: %.1f MB, %s %s, %d nodes (planned in %.0f ms); inputs:", output, size / 1048576.0,
               zci_session_device(s) == ZCI_DEVICE_CUDA ? "cuda" : "cpu",
               o.zopts.precision == ZCI_PRECISION_FP16 ? "fp16" : "fp32", sum.nodes_planned, t_plan);
        for (int i = 0; i < zci_session_input_count(s); i++) {
            zci_tensor_info t;
            zci_session_input_info(s, i, &t);
            printf(" %s ", t.name);
            for (int d = 0; d < t.ndim; d++) printf(d ? "x%lld" : "%lld", (long long)t.shape[d]);
        }
        printf("\n");
    }
    zci_session_destroy(s);
    free(def);
    return rc;
}
