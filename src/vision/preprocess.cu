/* preprocess.cu: frames in device memory to model inputs, one fused kernel per launch of up to
 * ZV_MAX_FRAMES_PER_LAUNCH frames: colour conversion, crop, bilinear resize, padding,
 * normalisation, NCHW layout and FP16/FP32 conversion in one pass over the output, with no
 * buffer in between. The per-pixel math is vision.h's, shared with the CPU version. */
#include <stdio.h>

#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include "vision/vision.h"

/* The frames' jobs and the shared settings travel by value as one kernel parameter. */
struct zv_pre_launch {
    zv_frame_job jobs[ZV_MAX_FRAMES_PER_LAUNCH];
    zv_pre_common c;
};
/* Kernel parameters are limited to 4 KB on every architecture and CUDA version we support. */
static_assert(sizeof(zv_pre_launch) + 64 < 4096, "preprocessing launch parameters exceed 4 KB");

#define PRE_BLOCK_X 32
#define PRE_BLOCK_Y 8

/* One thread per output pixel: 3 channels written to 3 planes, coalesced along x. The job is
 * read from the parameter bank in place (__grid_constant__), never copied per thread. */
__global__ void __launch_bounds__(PRE_BLOCK_X *PRE_BLOCK_Y)
    preprocess_kernel(const __grid_constant__ zv_pre_launch L, void *dst, size_t frame_elems)
{
    int ox = blockIdx.x * PRE_BLOCK_X + threadIdx.x, oy = blockIdx.y * PRE_BLOCK_Y + threadIdx.y;
    const zv_pre_common *c = &L.c;
    if (ox >= c->out_w || oy >= c->out_h) return;
    const zv_frame_job *j = &L.jobs[blockIdx.z];
    float v[3];
    if (ox >= j->content_x && ox < j->content_x + j->content_w && oy >= j->content_y &&
        oy < j->content_y + j->content_h) {
        float rgb[3];
        zv_sample_rgb(j, ox, oy, rgb);
        for (int k = 0; k < 3; k++) v[k] = rgb[c->src[k]] * c->mul[k] + c->add[k];
    } else {
        for (int k = 0; k < 3; k++) v[k] = c->pad[k];
    }
    size_t plane = (size_t)c->out_w * (size_t)c->out_h;
    size_t at = (size_t)blockIdx.z * frame_elems + (size_t)oy * (size_t)c->out_w + (size_t)ox;
    if (c->half) {
        __half *d = (__half *)dst + at;
        for (int k = 0; k < 3; k++) d[(size_t)k * plane] = __float2half_rn(v[k]);
    } else {
        float *d = (float *)dst + at;
        for (int k = 0; k < 3; k++) d[(size_t)k * plane] = v[k];
    }
}

zci_status zv_cuda_check_device_ptr(const void *p, const char *what, const char *where)
{
    cudaPointerAttributes a;
    cudaError_t e = cudaPointerGetAttributes(&a, p);
    if (e != cudaSuccess) {
        cudaGetLastError(); /* clear it: a failed query must not poison the caller's next call */
        if (e == cudaErrorNoDevice || e == cudaErrorInsufficientDriver)
            return zci_error(ZCI_NO_DEVICE, "%s: no usable CUDA device: %s", where, cudaGetErrorString(e));
        return zci_error(ZCI_INVALID_ARGUMENT, "%s: cannot query %s (%p): %s", where, what, p, cudaGetErrorString(e));
    }
    if (a.type == cudaMemoryTypeUnregistered)
        return zci_error(ZCI_INVALID_ARGUMENT, "%s: %s (%p) is host memory; a device pointer is required", where, what,
                         p);
    return ZCI_OK;
}

zci_status zci_preprocess_cuda(const zci_frame *frames, int n_frames, const zci_preprocess_params *params, void *dst,
                               size_t dst_bytes, void *stream, zci_letterbox *transforms)
{
    const char *where = "zci_preprocess_cuda";
    if (!dst) return zci_error(ZCI_INVALID_ARGUMENT, "%s: dst is NULL", where);
    if (n_frames < 1 || n_frames > (1 << 20))
        return zci_error(ZCI_INVALID_ARGUMENT, "%s: n_frames %d is not in 1..%d", where, n_frames, 1 << 20);
    ZCI_TRY(zv_cuda_check_device_ptr(dst, "dst", where));
    zv_pre_launch L;
    size_t esize = params && params->out_dtype == ZCI_FLOAT16 ? 2 : 4;
    for (int first = 0; first < n_frames; first += ZV_MAX_FRAMES_PER_LAUNCH) {
        int n = n_frames - first < ZV_MAX_FRAMES_PER_LAUNCH ? n_frames - first : ZV_MAX_FRAMES_PER_LAUNCH;
        size_t frame_bytes = params ? 3 * (size_t)(params->out_width > 0 ? params->out_width : 0) *
                                          (size_t)(params->out_height > 0 ? params->out_height : 0) * esize
                                    : 0;
        size_t done = (size_t)first * frame_bytes;
        ZCI_TRY(zv_prepare_jobs(frames + first, n, params, dst_bytes - (done < dst_bytes ? done : dst_bytes), L.jobs,
                                &L.c, transforms ? transforms + first : NULL, where));
        for (int i = 0; i < n; i++)
            for (int k = 0; k < zv_plane_count((zci_pixel_format)L.jobs[i].format); k++) {
                char what[48];
                snprintf(what, sizeof what, "frame %d plane %d", first + i, k);
                ZCI_TRY(zv_cuda_check_device_ptr(L.jobs[i].plane[k], what, where));
            }
        dim3 block(PRE_BLOCK_X, PRE_BLOCK_Y);
        dim3 grid((unsigned)((L.c.out_w + PRE_BLOCK_X - 1) / PRE_BLOCK_X),
                  (unsigned)((L.c.out_h + PRE_BLOCK_Y - 1) / PRE_BLOCK_Y), (unsigned)n);
        size_t frame_elems = 3 * (size_t)L.c.out_w * (size_t)L.c.out_h;
        preprocess_kernel<<<grid, block, 0, (cudaStream_t)stream>>>(L, (char *)dst + done, frame_elems);
        cudaError_t e = cudaGetLastError();
        if (e != cudaSuccess)
            return zci_error(ZCI_DEVICE_ERROR, "%s: kernel launch failed: %s", where, cudaGetErrorString(e));
    }
    return ZCI_OK;
}
