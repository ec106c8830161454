/* gpu_test.h: what the GPU test programs share: checks that count failures, the "no GPU" skip,
 * file and error helpers, a small ONNX model written in memory (so that the tests that need no
 * model files run anywhere), and the CUDA kernels a caller would queue around an inference. */
#ifndef ZCI_GPU_TEST_H
#define ZCI_GPU_TEST_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "zcinfer.h"

extern int gt_failures;

#define GT_CHECK(cond, ...)                                                                        \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__);                                   \
            fprintf(stderr, __VA_ARGS__);                                                          \
            fprintf(stderr, "\n");                                                                 \
            gt_failures++;                                                                         \
        }                                                                                          \
    } while (0)

/* A zcinfer call that must succeed; on failure prints the last error, counts it and evaluates
 * to 0. */
#define GT_OK(call) gt_ok_((call), #call, __FILE__, __LINE__)
int gt_ok_(zci_status st, const char *what, const char *file, int line);

/* A CUDA runtime call (its cudaError_t as int) that must succeed; evaluates to 0 on failure. */
#define GT_CUDA(call) gt_cuda_((int)(call), #call, __FILE__, __LINE__)
int gt_cuda_(int err, const char *what, const char *file, int line);

/* Number of CUDA devices (0 without driver or GPU). */
int gt_device_count(void);

/* Reads a whole file (malloc'd); NULL if it cannot. */
void *gt_read_file(const char *path, size_t *size);

/* ||a - ref|| / ||ref|| over n floats; +inf when a has a NaN or infinity where ref has none. */
double gt_rel_error(const float *a, const float *ref, size_t n);

/* Fills n floats with uniform [0, 1) values from a simple generator seeded with `seed`. */
void gt_fill_random(float *x, size_t n, uint32_t seed);

/* A small CNN as an ONNX model (opset 17) in memory (malloc'd, *size bytes): input "x"
 * (batch x 4 x 16 x 16) -> Conv 3x3 -> SiLU (Sigmoid, Mul) -> Conv 1x1 -> Add (residual) ->
 * MaxPool 2x2 -> Resize 2x nearest -> Concat with the residual sum -> Transpose -> Reshape ->
 * Softmax -> output "y" (batch x 256 x 16). Weights are deterministic. */
uint8_t *gt_tiny_model(int64_t batch, size_t *size);

/* Milliseconds on a monotonic clock. */
double gt_now_ms(void);

/* ---- caller-side CUDA work (gpu_kernels.cu) ---- */

/* Queues on `stream` a kernel that spins for about `us` microseconds (so that later work on the
 * stream visibly waits for it), then copies n floats from src to dst. */
int gt_delayed_copy(const float *src, float *dst, size_t n, int us, void *stream);
/* Queues on `stream` a fill of n floats at dst with NaN (poison: proves an output was written). */
int gt_fill_nan(float *dst, size_t n, void *stream);

#endif
