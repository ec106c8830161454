/* preprocess.c: frames to model inputs on the CPU, and the checks and per-frame setup
 * (letterbox geometry, colour matrices) that the CUDA version shares. */
#include <math.h>
#include <stdlib.h>

#include "vision/vision.h"

/* Frames up to 65535 x 65535 keep every byte offset far inside size_t and int arithmetic. */
#define MAX_FRAME_SIDE 65535
#define MAX_OUT_SIDE 16384

static const char *format_name(int f)
{
    static const char *names[] = {"NV12", "I420", "UYVY", "YUYV", "RGB", "BGR", "RGBA", "BGRA"};
    return f >= 0 && f <= ZCI_PIXEL_BGRA ? names[f] : "unknown";
}

int zv_plane_count(zci_pixel_format f)
{
    return f == ZCI_PIXEL_NV12 ? 2 : f == ZCI_PIXEL_I420 ? 3 : 1;
}

/* Bytes of one row of plane k that hold pixels (the packed pitch). */
size_t zv_row_bytes(zci_pixel_format f, int w, int k)
{
    size_t half = (size_t)(w + 1) / 2;
    switch (f) {
    case ZCI_PIXEL_NV12: return k == 0 ? (size_t)w : 2 * half;
    case ZCI_PIXEL_I420: return k == 0 ? (size_t)w : half;
    case ZCI_PIXEL_UYVY:
    case ZCI_PIXEL_YUYV: return 4 * half;
    case ZCI_PIXEL_RGB:
    case ZCI_PIXEL_BGR: return 3 * (size_t)w;
    default: return 4 * (size_t)w;
    }
}

int zv_plane_rows(zci_pixel_format f, int h, int k)
{
    return k == 0 || f == ZCI_PIXEL_UYVY || f == ZCI_PIXEL_YUYV ? h : (h + 1) / 2;
}

static int valid_format(int f) { return f >= ZCI_PIXEL_NV12 && f <= ZCI_PIXEL_BGRA; }

size_t zci_frame_packed(zci_frame *frame, zci_pixel_format format, int width, int height, const void *data)
{
    if (!frame || !valid_format(format) || width < 1 || height < 1 || width > MAX_FRAME_SIDE ||
        height > MAX_FRAME_SIDE)
        return 0;
    memset(frame, 0, sizeof *frame);
    frame->format = format;
    frame->width = width;
    frame->height = height;
    frame->matrix = ZCI_COLOR_BT601;
    frame->range = ZCI_RANGE_LIMITED;
    size_t total = 0;
    for (int k = 0; k < zv_plane_count(format); k++) {
        frame->planes[k] = data ? (const uint8_t *)data + total : NULL;
        total += zv_row_bytes(format, width, k) * (size_t)zv_plane_rows(format, height, k);
    }
    return total;
}

void zci_preprocess_params_init(zci_preprocess_params *p, int out_width, int out_height)
{
    if (!p) return;
    memset(p, 0, sizeof *p);
    p->out_width = out_width;
    p->out_height = out_height;
    p->out_dtype = ZCI_FLOAT32;
    p->resize = ZCI_RESIZE_LETTERBOX;
    p->pad_value = 114.0f;
    p->scale = 1.0f / 255.0f;
    for (int c = 0; c < 3; c++) p->std[c] = 1.0f;
}

static zci_status check_params(const zci_preprocess_params *p, const char *where)
{
    if (!p) return zci_error(ZCI_INVALID_ARGUMENT, "%s: params is NULL", where);
    if (p->out_width < 1 || p->out_height < 1 || p->out_width > MAX_OUT_SIDE || p->out_height > MAX_OUT_SIDE)
        return zci_error(ZCI_INVALID_ARGUMENT, "%s: output size %dx%d is not in 1..%d", where, p->out_width,
                         p->out_height, MAX_OUT_SIDE);
    if (p->out_dtype != ZCI_FLOAT32 && p->out_dtype != ZCI_FLOAT16)
        return zci_error(ZCI_INVALID_ARGUMENT, "%s: out_dtype must be float or float16, got %s", where,
                         zci_dtype_name(p->out_dtype));
    if (p->resize != ZCI_RESIZE_LETTERBOX && p->resize != ZCI_RESIZE_STRETCH)
        return zci_error(ZCI_INVALID_ARGUMENT, "%s: unknown resize mode %d", where, (int)p->resize);
    if (!isfinite(p->scale) || !isfinite(p->pad_value))
        return zci_error(ZCI_INVALID_ARGUMENT, "%s: scale and pad_value must be finite", where);
    for (int c = 0; c < 3; c++)
        if (!isfinite(p->mean[c]) || !isfinite(p->std[c]) || p->std[c] == 0.0f)
            return zci_error(ZCI_INVALID_ARGUMENT, "%s: mean[%d] must be finite and std[%d] finite and non-zero",
                             where, c, c);
    return ZCI_OK;
}

zci_status zci_letterbox_compute(const zci_preprocess_params *p, int fw, int fh, zci_letterbox *t)
{
    const char *where = "zci_letterbox_compute";
    ZCI_TRY(check_params(p, where));
    if (!t) return zci_error(ZCI_INVALID_ARGUMENT, "%s: transform is NULL", where);
    if (fw < 1 || fh < 1 || fw > MAX_FRAME_SIDE || fh > MAX_FRAME_SIDE)
        return zci_error(ZCI_INVALID_ARGUMENT, "%s: frame size %dx%d is not in 1..%d", where, fw, fh, MAX_FRAME_SIDE);
    zci_rect c = p->crop;
    if (c.width == 0 || c.height == 0) {
        c = (zci_rect){0, 0, fw, fh};
    } else if (c.x < 0 || c.y < 0 || c.width < 0 || c.height < 0 || (long long)c.x + c.width > fw ||
               (long long)c.y + c.height > fh) {
        return zci_error(ZCI_INVALID_ARGUMENT, "%s: crop %d,%d %dx%d is not inside the %dx%d frame", where, c.x, c.y,
                         c.width, c.height, fw, fh);
    }
    int ow = p->out_width, oh = p->out_height, cw, ch;
    if (p->resize == ZCI_RESIZE_LETTERBOX) {
        double r = fmin((double)ow / c.width, (double)oh / c.height);
        cw = (int)floor(c.width * r + 0.5);
        ch = (int)floor(c.height * r + 0.5);
        cw = cw < 1 ? 1 : cw > ow ? ow : cw;
        ch = ch < 1 ? 1 : ch > oh ? oh : ch;
    } else {
        cw = ow;
        ch = oh;
    }
    memset(t, 0, sizeof *t);
    t->content_width = cw;
    t->content_height = ch;
    t->pad_x = (float)((ow - cw) / 2);
    t->pad_y = (float)((oh - ch) / 2);
    t->scale_x = (float)((double)cw / c.width);
    t->scale_y = (float)((double)ch / c.height);
    t->crop = c;
    return ZCI_OK;
}

zci_status zv_check_frame(const zci_frame *f, int i, const char *where)
{
    if (!valid_format(f->format))
        return zci_error(ZCI_INVALID_ARGUMENT, "%s: frame %d: unknown pixel format %d", where, i, (int)f->format);
    if (f->width < 1 || f->height < 1 || f->width > MAX_FRAME_SIDE || f->height > MAX_FRAME_SIDE)
        return zci_error(ZCI_INVALID_ARGUMENT, "%s: frame %d: size %dx%d is not in 1..%d", where, i, f->width,
                         f->height, MAX_FRAME_SIDE);
    if (f->matrix != ZCI_COLOR_BT601 && f->matrix != ZCI_COLOR_BT709)
        return zci_error(ZCI_INVALID_ARGUMENT, "%s: frame %d: unknown colour matrix %d", where, i, (int)f->matrix);
    if (f->range != ZCI_RANGE_LIMITED && f->range != ZCI_RANGE_FULL)
        return zci_error(ZCI_INVALID_ARGUMENT, "%s: frame %d: unknown colour range %d", where, i, (int)f->range);
    for (int k = 0; k < zv_plane_count(f->format); k++) {
        if (!f->planes[k])
            return zci_error(ZCI_INVALID_ARGUMENT, "%s: frame %d: %s plane %d is NULL", where, i,
                             format_name(f->format), k);
        size_t rb = zv_row_bytes(f->format, f->width, k);
        if (f->pitch[k] && (f->pitch[k] < rb || f->pitch[k] > ((size_t)1 << 40)))
            return zci_error(ZCI_INVALID_ARGUMENT, "%s: frame %d: %s plane %d pitch %zu, needs at least %zu", where,
                             i, format_name(f->format), k, f->pitch[k], rb);
    }
    return ZCI_OK;
}

static void yuv_coefficients(const zci_frame *f, zv_frame_job *j)
{
    double kr = f->matrix == ZCI_COLOR_BT709 ? 0.2126 : 0.299;
    double kb = f->matrix == ZCI_COLOR_BT709 ? 0.0722 : 0.114;
    double kg = 1.0 - kr - kb;
    int full = f->range == ZCI_RANGE_FULL;
    j->y_off = full ? 0.0f : 16.0f;
    j->y_mul = (float)(full ? 1.0 : 255.0 / 219.0);
    j->c_mul = (float)(full ? 1.0 : 255.0 / 224.0);
    j->r_v = (float)(2.0 * (1.0 - kr));
    j->b_u = (float)(2.0 * (1.0 - kb));
    j->g_u = (float)(2.0 * kb * (1.0 - kb) / kg);
    j->g_v = (float)(2.0 * kr * (1.0 - kr) / kg);
}

zci_status zv_prepare_jobs(const zci_frame *frames, int n, const zci_preprocess_params *p, size_t dst_bytes,
                           zv_frame_job *jobs, zv_pre_common *common, zci_letterbox *transforms, const char *where)
{
    ZCI_TRY(check_params(p, where));
    if (!frames || n < 1) return zci_error(ZCI_INVALID_ARGUMENT, "%s: no frames (frames NULL or n_frames < 1)", where);
    size_t need = (size_t)n * 3 * (size_t)p->out_width * (size_t)p->out_height *
                  (p->out_dtype == ZCI_FLOAT16 ? 2 : 4);
    if (dst_bytes < need)
        return zci_error(ZCI_INVALID_ARGUMENT, "%s: destination holds %zu bytes, %d frame(s) of 3x%dx%d %s need %zu",
                         where, dst_bytes, n, p->out_height, p->out_width, zci_dtype_name(p->out_dtype), need);
    memset(common, 0, sizeof *common);
    common->out_w = p->out_width;
    common->out_h = p->out_height;
    common->half = p->out_dtype == ZCI_FLOAT16;
    for (int c = 0; c < 3; c++) {
        common->src[c] = p->bgr ? 2 - c : c;
        common->mul[c] = p->scale / p->std[c];
        common->add[c] = -p->mean[c] / p->std[c];
        common->pad[c] = p->pad_value * common->mul[c] + common->add[c];
    }
    for (int i = 0; i < n; i++) {
        const zci_frame *f = &frames[i];
        ZCI_TRY(zv_check_frame(f, i, where));
        zci_letterbox t;
        zci_status st = zci_letterbox_compute(p, f->width, f->height, &t);
        if (st) return zci_error_prefix(st, "%s: frame %d", where, i);
        zv_frame_job *j = &jobs[i];
        memset(j, 0, sizeof *j);
        for (int k = 0; k < zv_plane_count(f->format); k++) {
            j->plane[k] = (const uint8_t *)f->planes[k];
            j->pitch[k] = (long long)(f->pitch[k] ? f->pitch[k] : zv_row_bytes(f->format, f->width, k));
        }
        j->format = f->format;
        j->crop_x = t.crop.x;
        j->crop_y = t.crop.y;
        j->crop_w = t.crop.width;
        j->crop_h = t.crop.height;
        j->content_x = (int)t.pad_x;
        j->content_y = (int)t.pad_y;
        j->content_w = t.content_width;
        j->content_h = t.content_height;
        j->step_x = (float)((double)t.crop.width / t.content_width);
        j->step_y = (float)((double)t.crop.height / t.content_height);
        yuv_coefficients(f, j);
        if (transforms) transforms[i] = t;
    }
    return ZCI_OK;
}

/* One output row of one frame. */
static void cpu_row(const zv_frame_job *j, const zv_pre_common *c, int oy, void *dst_frame)
{
    size_t plane = (size_t)c->out_w * (size_t)c->out_h, row = (size_t)oy * (size_t)c->out_w;
    int in_y = oy >= j->content_y && oy < j->content_y + j->content_h;
    for (int ox = 0; ox < c->out_w; ox++) {
        float v[3];
        if (in_y && ox >= j->content_x && ox < j->content_x + j->content_w) {
            float rgb[3];
            zv_sample_rgb(j, ox, oy, rgb);
            for (int k = 0; k < 3; k++) v[k] = rgb[c->src[k]] * c->mul[k] + c->add[k];
        } else {
            for (int k = 0; k < 3; k++) v[k] = c->pad[k];
        }
        if (c->half) {
            uint16_t *d = (uint16_t *)dst_frame + row + (size_t)ox;
            for (int k = 0; k < 3; k++) d[(size_t)k * plane] = zci_f32_to_f16(v[k]);
        } else {
            float *d = (float *)dst_frame + row + (size_t)ox;
            for (int k = 0; k < 3; k++) d[(size_t)k * plane] = v[k];
        }
    }
}

zci_status zci_preprocess_cpu(const zci_frame *frames, int n_frames, const zci_preprocess_params *params, void *dst,
                              size_t dst_bytes, zci_letterbox *transforms)
{
    const char *where = "zci_preprocess_cpu";
    if (!dst) return zci_error(ZCI_INVALID_ARGUMENT, "%s: dst is NULL", where);
    if (n_frames < 1 || n_frames > (1 << 20))
        return zci_error(ZCI_INVALID_ARGUMENT, "%s: n_frames %d is not in 1..%d", where, n_frames, 1 << 20);
    zv_frame_job *jobs = zci_malloc((size_t)n_frames * sizeof *jobs, "preprocessing jobs");
    if (!jobs) return ZCI_OUT_OF_MEMORY;
    zv_pre_common c;
    zci_status st = zv_prepare_jobs(frames, n_frames, params, dst_bytes, jobs, &c, transforms, where);
    if (st) {
        free(jobs);
        return st;
    }
    size_t frame_elems = 3 * (size_t)c.out_w * (size_t)c.out_h, esize = c.half ? 2 : 4;
    int rows = c.out_h;
#pragma omp parallel for collapse(2) schedule(static)
    for (int f = 0; f < n_frames; f++)
        for (int oy = 0; oy < rows; oy++) cpu_row(&jobs[f], &c, oy, (char *)dst + (size_t)f * frame_elems * esize);
    free(jobs);
    return ZCI_OK;
}
