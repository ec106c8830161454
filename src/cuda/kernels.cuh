/* kernels.cuh: device helpers shared by the CUDA kernel files: element loads and stores through
 * float, the activations of a fused epilogue, and launch sizes. */
#ifndef ZCI_CUDA_KERNELS_CUH
#define ZCI_CUDA_KERNELS_CUH

#include <cuda_fp16.h>
#include <stdint.h>

#include "cuda/cuda_internal.h"
#include "ops/conv.h"

namespace zci_cu {

constexpr int kThreads = 256;

/* Blocks of kThreads covering n elements (n < 2^31: checked at load). */
inline unsigned blocks_for(int64_t n, int threads = kThreads) { return (unsigned)((n + threads - 1) / threads); }

template <typename T> __device__ __forceinline__ float to_f(T v) { return (float)v; }
template <> __device__ __forceinline__ float to_f<__half>(__half v) { return __half2float(v); }
template <typename T> __device__ __forceinline__ T from_f(float v) { return (T)v; }
template <> __device__ __forceinline__ __half from_f<__half>(float v) { return __float2half_rn(v); }

/* The epilogue activations (ops/conv.h's zci_activation), as zci_activation_apply computes them. */
__device__ __forceinline__ float activate(int act, float x, float alpha, float beta)
{
    switch (act) {
    case ZCI_ACT_RELU: return x > 0.f ? x : 0.f;
    case ZCI_ACT_SILU: return x / (1.f + expf(-x));
    case ZCI_ACT_LEAKY_RELU: return x >= 0.f ? x : alpha * x;
    case ZCI_ACT_CLIP: return fminf(fmaxf(x, alpha), beta);
    case ZCI_ACT_HARDSWISH: return x * fminf(fmaxf(x / 6.f + 0.5f, 0.f), 1.f);
    case ZCI_ACT_SIGMOID: return 1.f / (1.f + expf(-x));
    default: return x;
    }
}

} // namespace zci_cu

#endif
