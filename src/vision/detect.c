/* detect.c: zci_detect, the whole pipeline around a session's run (frame in, detections out),
 * on the session's device. Built on the public calls only, so it is also the worked example
 * of how they fit together. */
#include <stdlib.h>

#include "vision/vision.h"

/* Grows a host staging buffer to `bytes`. */
static zci_status grow(void **buf, size_t *cap, size_t bytes)
{
    if (*cap >= bytes) return ZCI_OK;
    void *p = zci_realloc(*buf, bytes, "zci_detect host staging");
    if (!p) return ZCI_OUT_OF_MEMORY;
    *buf = p;
    *cap = bytes;
    return ZCI_OK;
}

static zci_status detect_cpu(zci_session *s, zci_postprocessor *pp, const zci_frame *frame,
                             const zci_preprocess_params *pre, const zci_postprocess_params *post,
                             const zci_tensor_info *in, zci_detection *dets, int capacity, zci_detect_counts *counts,
                             zci_letterbox *lb)
{
    const char *where = "zci_detect";
    if (pp->device != ZCI_DEVICE_CPU)
        return zci_error(ZCI_INVALID_ARGUMENT, "%s: a CPU session needs a CPU postprocessor", where);
    int n_out = zci_session_output_count(s);
    size_t out_total = 0;
    zci_binding *outs = zci_calloc((size_t)n_out, sizeof *outs, "zci_detect output bindings");
    if (!outs) return ZCI_OUT_OF_MEMORY;
    for (int i = 0; i < n_out; i++) {
        zci_tensor_info t;
        zci_session_output_info(s, i, &t);
        out_total += zci_align(t.bytes, 64);
    }
    zci_status st = grow(&pp->host_in, &pp->host_in_bytes, in->bytes);
    if (!st) st = grow(&pp->host_out, &pp->host_out_bytes, out_total ? out_total : 1);
    if (!st) st = zci_preprocess_cpu(frame, 1, pre, pp->host_in, in->bytes, lb);
    if (!st) {
        size_t off = 0;
        for (int i = 0; i < n_out; i++) {
            zci_tensor_info t;
            zci_session_output_info(s, i, &t);
            outs[i] = (zci_binding){NULL, (char *)pp->host_out + off, t.bytes};
            off += zci_align(t.bytes, 64);
        }
        zci_binding input = {NULL, pp->host_in, in->bytes};
        st = zci_run(s, &input, 1, outs, n_out);
    }
    if (!st) {
        zci_tensor_info out0;
        zci_session_output_info(s, 0, &out0);
        st = zci_postprocess_cpu(pp, pp->host_out, &out0, 0, post, lb, dets, capacity, counts);
    }
    free(outs);
    return st;
}

static zci_status detect_cuda(zci_session *s, zci_postprocessor *pp, const zci_frame *frame, int on_device,
                              const zci_preprocess_params *pre, const zci_postprocess_params *post,
                              const zci_tensor_info *in, zci_detection *dets, int capacity, zci_detect_counts *counts,
                              zci_letterbox *lb, void *stream)
{
    if (pp->device != ZCI_DEVICE_CUDA)
        return zci_error(ZCI_INVALID_ARGUMENT, "zci_detect: a CUDA session needs a CUDA postprocessor");
    stream = zv_cuda_pp_stream(pp, stream);
    zci_frame dev = *frame;
    if (!on_device) ZCI_TRY(zv_cuda_upload_frame(pp, frame, &dev, stream));
    void *in_buf, *out_buf;
    ZCI_TRY(zci_session_input_device_buffer(s, 0, &in_buf));
    ZCI_TRY(zci_session_output_device_buffer(s, 0, &out_buf));
    ZCI_TRY(zci_preprocess_cuda(&dev, 1, pre, in_buf, in->bytes, stream, lb));
    ZCI_TRY(zci_run_own_buffers(s, stream));
    zci_tensor_info out0;
    ZCI_TRY(zci_session_output_info(s, 0, &out0));
    ZCI_TRY(zci_postprocess_cuda(pp, out_buf, &out0, 0, post, lb, stream));
    return zci_postprocessor_download(pp, dets, capacity, counts, stream);
}

zci_status zci_detect(zci_session *session, zci_postprocessor *pp, const zci_frame *frame, int frame_on_device,
                      const zci_preprocess_params *pre, const zci_postprocess_params *post, zci_detection *dets,
                      int capacity, zci_detect_counts *counts, zci_letterbox *transform, void *stream)
{
    const char *where = "zci_detect";
    if (!session || !pp || !frame)
        return zci_error(ZCI_INVALID_ARGUMENT, "%s: session, postprocessor or frame is NULL", where);
    if (capacity < 0 || (capacity > 0 && !dets))
        return zci_error(ZCI_INVALID_ARGUMENT, "%s: dets is NULL or capacity %d is negative", where, capacity);
    if (zci_session_input_count(session) < 1 || zci_session_output_count(session) < 1)
        return zci_error(ZCI_INVALID_ARGUMENT, "%s: the model needs an image input and a detection output", where);
    zci_tensor_info in;
    ZCI_TRY(zci_session_input_info(session, 0, &in));
    char shape[128];
    zci_shape_str(in.shape, in.ndim, shape, sizeof shape);
    if (in.ndim != 4 || in.shape[1] != 3 || in.shape[2] < 1 || in.shape[3] < 1 ||
        (in.dtype != ZCI_FLOAT32 && in.dtype != ZCI_FLOAT16))
        return zci_error(ZCI_INVALID_ARGUMENT, "%s: input '%s' is %s %s; an image input is float [1, 3, H, W]", where,
                         in.name, zci_dtype_name(in.dtype), shape);
    if (in.shape[0] != 1)
        return zci_error(ZCI_INVALID_ARGUMENT,
                         "%s: input '%s' has batch %lld; zci_detect takes one frame (use zci_preprocess_* and "
                         "zci_postprocess_* per batch index)",
                         where, in.name, (long long)in.shape[0]);
    zci_preprocess_params p;
    if (pre) p = *pre;
    else zci_preprocess_params_init(&p, 0, 0);
    p.out_width = (int)in.shape[3];
    p.out_height = (int)in.shape[2];
    p.out_dtype = in.dtype;
    zci_postprocess_params q;
    if (post) q = *post;
    else zci_postprocess_params_init(&q);
    zci_letterbox lb;
    zci_status st;
    if (zci_session_device(session) == ZCI_DEVICE_CPU) {
        if (frame_on_device)
            return zci_error(ZCI_INVALID_ARGUMENT, "%s: a CPU session takes frames in host memory", where);
        st = detect_cpu(session, pp, frame, &p, &q, &in, dets, capacity, counts, &lb);
    } else {
        st = detect_cuda(session, pp, frame, frame_on_device, &p, &q, &in, dets, capacity, counts, &lb, stream);
    }
    if (!st && transform) *transform = lb;
    return st;
}
