/* vision_nocuda.c: the CUDA entry points of the vision stage in a build without CUDA. They
 * exist so that programs link the same way against either build, and say ZCI_NO_DEVICE. */
#ifndef ZCI_HAVE_CUDA

#include "vision/vision.h"

static zci_status no_cuda(const char *what)
{
    return zci_error(ZCI_NO_DEVICE, "%s: this build of zcinfer has no CUDA support", what);
}

zci_status zci_preprocess_cuda(const zci_frame *frames, int n_frames, const zci_preprocess_params *params, void *dst,
                               size_t dst_bytes, void *stream, zci_letterbox *transforms)
{
    return no_cuda("zci_preprocess_cuda");
}

zci_status zci_postprocess_cuda(zci_postprocessor *pp, const void *output, const zci_tensor_info *info,
                                int batch_index, const zci_postprocess_params *params,
                                const zci_letterbox *transform, void *stream)
{
    return no_cuda("zci_postprocess_cuda");
}

zci_status zci_postprocessor_results(zci_postprocessor *pp, void **counts, void **dets)
{
    return no_cuda("zci_postprocessor_results");
}

zci_status zci_postprocessor_download(zci_postprocessor *pp, zci_detection *dets, int capacity,
                                      zci_detect_counts *counts, void *stream)
{
    return no_cuda("zci_postprocessor_download");
}

zci_status zv_cuda_pp_create(zci_postprocessor *pp) { return no_cuda("zci_postprocessor_create (CUDA)"); }

void zv_cuda_pp_destroy(zci_postprocessor *pp) {}

zci_status zv_cuda_upload_frame(zci_postprocessor *pp, const zci_frame *host, zci_frame *dev, void *stream)
{
    return no_cuda("zci_detect (CUDA)");
}

void *zv_cuda_pp_stream(zci_postprocessor *pp, void *stream) { return stream; }

#endif
