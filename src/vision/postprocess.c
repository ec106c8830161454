/* postprocess.c: YOLO decoding and NMS on the CPU, the postprocessor object, and the output
 * checks the CUDA version shares. The NMS here is the plain greedy one (each candidate, best
 * first, is kept unless a kept box of its class overlaps it by more than the threshold), run
 * per class; the GPU's bit-matrix NMS computes exactly the same set. */
#include <math.h>
#include <stdlib.h>

#include "vision/vision.h"

void zci_postprocess_params_init(zci_postprocess_params *p)
{
    if (!p) return;
    memset(p, 0, sizeof *p);
    p->layout = ZCI_YOLO_AUTO;
    p->score_threshold = 0.25f;
    p->iou_threshold = 0.45f;
}

zci_status zv_parse_yolo(const zci_tensor_info *info, zci_yolo_layout layout, zv_yolo *y, const char *where)
{
    if (!info) return zci_error(ZCI_INVALID_ARGUMENT, "%s: output info is NULL", where);
    char shape[128];
    zci_shape_str(info->shape, info->ndim, shape, sizeof shape);
    if (info->dtype != ZCI_FLOAT32 && info->dtype != ZCI_FLOAT16)
        return zci_error(ZCI_INVALID_ARGUMENT, "%s: output '%s' is %s; a YOLO output is float or float16", where,
                         info->name ? info->name : "", zci_dtype_name(info->dtype));
    if (info->ndim != 2 && info->ndim != 3)
        return zci_error(ZCI_INVALID_ARGUMENT, "%s: output shape %s is not a YOLO output ([B, N, 5+C] or [B, 4+C, N])",
                         where, shape);
    int64_t b = info->ndim == 3 ? info->shape[0] : 1;
    int64_t d1 = info->shape[info->ndim - 2], d2 = info->shape[info->ndim - 1];
    if (b < 1 || d1 < 1 || d2 < 1 || d1 > INT32_MAX || d2 > INT32_MAX || b > INT32_MAX)
        return zci_error(ZCI_INVALID_ARGUMENT, "%s: output shape %s has a bad dimension", where, shape);
    if (layout == ZCI_YOLO_AUTO) layout = d2 < d1 ? ZCI_YOLO_V5 : ZCI_YOLO_V8;
    memset(y, 0, sizeof *y);
    if (layout == ZCI_YOLO_V5) {
        y->n = (int)d1;
        y->nattr = (int)d2;
        y->nc = (int)d2 - 5;
    } else if (layout == ZCI_YOLO_V8) {
        y->n = (int)d2;
        y->nattr = (int)d1;
        y->nc = (int)d1 - 4;
    } else {
        return zci_error(ZCI_INVALID_ARGUMENT, "%s: unknown YOLO layout %d", where, (int)layout);
    }
    if (y->nc < 1)
        return zci_error(ZCI_INVALID_ARGUMENT, "%s: output shape %s as %s leaves no class scores", where, shape,
                         layout == ZCI_YOLO_V5 ? "YOLOv5 [B, N, 5+C]" : "YOLOv8 [B, 4+C, N]");
    y->layout = layout;
    y->half = info->dtype == ZCI_FLOAT16;
    y->batch = (int)b;
    y->image_elems = (size_t)d1 * (size_t)d2;
    return ZCI_OK;
}

zci_status zv_check_post(const zci_postprocessor *pp, const zci_postprocess_params *p, const zv_yolo *y,
                         int batch_index, int *top_k, const char *where)
{
    if (!p) return zci_error(ZCI_INVALID_ARGUMENT, "%s: params is NULL", where);
    if (!(p->score_threshold >= 0.0f && p->score_threshold < 1e30f))
        return zci_error(ZCI_INVALID_ARGUMENT, "%s: score_threshold %g must be finite and >= 0", where,
                         (double)p->score_threshold);
    if (!(p->iou_threshold >= 0.0f && p->iou_threshold <= 1.0f))
        return zci_error(ZCI_INVALID_ARGUMENT, "%s: iou_threshold %g is not in [0, 1]", where,
                         (double)p->iou_threshold);
    if (p->top_k < 0 || p->top_k > pp->max_detections)
        return zci_error(ZCI_INVALID_ARGUMENT, "%s: top_k %d is not in 0..%d (the postprocessor's max_detections)",
                         where, p->top_k, pp->max_detections);
    if (y->n > pp->max_candidates)
        return zci_error(ZCI_INVALID_ARGUMENT,
                         "%s: the output has %d candidates; this postprocessor was created for at most %d", where,
                         y->n, pp->max_candidates);
    if (batch_index < 0 || batch_index >= y->batch)
        return zci_error(ZCI_INVALID_ARGUMENT, "%s: batch_index %d is not in 0..%d", where, batch_index, y->batch - 1);
    *top_k = p->top_k ? p->top_k : pp->max_detections;
    return ZCI_OK;
}

zci_status zci_postprocessor_create(zci_device device, int max_candidates, int max_detections,
                                    zci_postprocessor **out)
{
    if (!out) return zci_error(ZCI_INVALID_ARGUMENT, "zci_postprocessor_create: out is NULL");
    *out = NULL;
    if (device != ZCI_DEVICE_CPU && device != ZCI_DEVICE_CUDA)
        return zci_error(ZCI_INVALID_ARGUMENT, "zci_postprocessor_create: unknown device %d", (int)device);
    if (max_candidates < 1 || max_candidates > ZV_MAX_CANDIDATES || max_detections < 1 ||
        max_detections > max_candidates)
        return zci_error(ZCI_INVALID_ARGUMENT,
                         "zci_postprocessor_create: max_candidates %d must be in 1..%d and max_detections %d in "
                         "1..max_candidates",
                         max_candidates, ZV_MAX_CANDIDATES, max_detections);
    zci_postprocessor *pp = zci_calloc(1, sizeof *pp, "postprocessor");
    if (!pp) return ZCI_OUT_OF_MEMORY;
    pp->device = device;
    pp->max_candidates = max_candidates;
    pp->max_detections = max_detections;
    zci_status st = ZCI_OK;
    if (device == ZCI_DEVICE_CPU) {
        pp->cands = zci_malloc((size_t)max_candidates * sizeof *pp->cands, "postprocessor candidates");
        pp->kept = zci_malloc((size_t)max_candidates * sizeof *pp->kept, "postprocessor candidates");
        if (!pp->cands || !pp->kept) st = ZCI_OUT_OF_MEMORY;
    } else {
        st = zv_cuda_pp_create(pp);
    }
    if (st) {
        zci_postprocessor_destroy(pp);
        return st;
    }
    *out = pp;
    return ZCI_OK;
}

void zci_postprocessor_destroy(zci_postprocessor *pp)
{
    if (!pp) return;
    if (pp->cuda) zv_cuda_pp_destroy(pp);
    free(pp->cands);
    free(pp->kept);
    free(pp->host_in);
    free(pp->host_out);
    free(pp);
}

static int cmp_key(const void *a, const void *b)
{
    uint64_t x = ((const zv_candidate *)a)->key, y = ((const zv_candidate *)b)->key;
    return x < y ? -1 : x > y;
}

static int cmp_class_key(const void *a, const void *b)
{
    int x = ((const zv_candidate *)a)->cls, y = ((const zv_candidate *)b)->cls;
    return x != y ? (x < y ? -1 : 1) : cmp_key(a, b);
}

zci_status zci_postprocess_cpu(zci_postprocessor *pp, const void *output, const zci_tensor_info *info,
                               int batch_index, const zci_postprocess_params *params, const zci_letterbox *transform,
                               zci_detection *dets, int capacity, zci_detect_counts *counts)
{
    const char *where = "zci_postprocess_cpu";
    if (!pp || !output) return zci_error(ZCI_INVALID_ARGUMENT, "%s: postprocessor or output is NULL", where);
    if (pp->device != ZCI_DEVICE_CPU)
        return zci_error(ZCI_INVALID_ARGUMENT, "%s: the postprocessor was created for CUDA", where);
    if (capacity < 0 || (capacity > 0 && !dets))
        return zci_error(ZCI_INVALID_ARGUMENT, "%s: dets is NULL or capacity %d is negative", where, capacity);
    zv_yolo y;
    int top_k;
    ZCI_TRY(zv_parse_yolo(info, params ? params->layout : ZCI_YOLO_AUTO, &y, where));
    ZCI_TRY(zv_check_post(pp, params, &y, batch_index, &top_k, where));
    const void *img = (const char *)output + (size_t)batch_index * y.image_elems * (y.half ? 2 : 4);
    float thr = params->score_threshold, iou = params->iou_threshold;
    int bits = zv_index_bits(y.n), n = 0;
    for (int i = 0; i < y.n; i++) {
        zv_candidate *c = &pp->cands[n];
        if (zv_decode(img, &y, i, thr, c->box, &c->score, &c->cls)) {
            c->key = zv_sort_key(c->score, i, bits);
            n++;
        }
    }
    /* Class-aware NMS is independent per class: sorted by class first, each candidate is only
     * compared with the kept boxes of its own class; the kept ones are then merged back into
     * score order. Same result as the GPU's, which compares every pair and checks classes. */
    int per_class = !params->class_agnostic;
    qsort(pp->cands, (size_t)n, sizeof *pp->cands, per_class ? cmp_class_key : cmp_key);
    int kept = 0, first_of_class = 0;
    for (int i = 0; i < n; i++) {
        const zv_candidate *c = &pp->cands[i];
        if (per_class && i > 0 && c->cls != pp->cands[i - 1].cls) first_of_class = kept;
        int suppressed = 0;
        for (int k = first_of_class; k < kept && !suppressed; k++) {
            const zv_candidate *a = &pp->cands[pp->kept[k]];
            suppressed = zv_suppresses(a->box[0], a->box[1], a->box[2], a->box[3], c->box[0], c->box[1], c->box[2],
                                       c->box[3], iou);
        }
        if (!suppressed) pp->kept[kept++] = i;
    }
    /* the kept ones to the front (kept[k] >= k, so moving forward overwrites nothing needed) */
    for (int k = 0; k < kept; k++) pp->cands[k] = pp->cands[pp->kept[k]];
    if (per_class) qsort(pp->cands, (size_t)kept, sizeof *pp->cands, cmp_key);
    zv_map m = zv_map_from(transform);
    for (int k = 0; k < kept && k < top_k && k < capacity; k++) {
        const zv_candidate *c = &pp->cands[k];
        zv_emit(&m, c->box, c->score, c->cls, &dets[k]);
    }
    if (counts) {
        counts->candidates = n;
        counts->after_nms = kept;
        counts->count = kept < top_k ? kept : top_k;
        counts->reserved = 0;
    }
    return ZCI_OK;
}
