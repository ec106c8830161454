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

/* n / d for 0 <= n < 2^31 by a multiply and a shift, d > 0 set on the host (make_fastdiv):
 * integer division has no hardware unit, and index decompositions were long dependent chains
 * in kernels bound by instruction latency. */
struct fastdiv {
    uint32_t d, mul, shift;
};

inline fastdiv make_fastdiv(uint32_t d)
{
    fastdiv f;
    f.d = d;
    f.shift = 0;
    while ((1ull << f.shift) < d) f.shift++;
    f.mul = (uint32_t)((((1ull << 32) * ((1ull << f.shift) - d)) / d) + 1);
    return f;
}

__device__ __forceinline__ uint32_t fdiv(uint32_t n, const fastdiv &f) { return (__umulhi(n, f.mul) + n) >> f.shift; }

/* An element type's bits (raw_of<E>::type), and 16 bytes of them packed for one store. */
template <typename E> struct raw_of;
template <> struct raw_of<__half> {
    using type = uint16_t;
};
template <> struct raw_of<float> {
    using type = uint32_t;
};
__device__ __forceinline__ uint4 pack16(const uint32_t (&v)[4]) { return make_uint4(v[0], v[1], v[2], v[3]); }
__device__ __forceinline__ uint4 pack16(const uint16_t (&v)[8])
{
    return make_uint4(v[0] | (uint32_t)v[1] << 16, v[2] | (uint32_t)v[3] << 16, v[4] | (uint32_t)v[5] << 16,
                      v[6] | (uint32_t)v[7] << 16);
}

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
