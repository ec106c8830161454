/*
 * zcinfer_vision.h: the stages around a detector's inference, on the CPU and on the GPU.
 *
 *   preprocessing   8-bit frames (NV12, I420, UYVY, YUYV, RGB, BGR, RGBA, BGRA; YUV in
 *                   BT.601 or BT.709, limited or full range) -> a model's input tensor:
 *                   optional crop, letterbox or plain resize (bilinear), scale/mean/std
 *                   normalisation, NCHW, FP32 or FP16, a batch of frames at once;
 *   postprocessing  YOLOv5 (N x (5+C)) and YOLOv8/YOLO11 ((4+C) x N) outputs -> score
 *                   threshold, class-aware NMS, top-K, boxes in the frame's coordinates;
 *   zci_detect      both around a session's run: frame in, detections out.
 *
 * The CPU and CUDA versions compute the same thing: preprocessing agrees within 1/255 of
 * the 0..255 pixel scale (in practice within float rounding), and postprocessing returns
 * identical detections (decoding, IoU and the box mapping are done in the same IEEE
 * single-precision operations in the same order on both).
 *
 * Conventions (as in zcinfer.h): functions return a zci_status and leave a message for
 * zci_last_error(); constructors hand objects back through an out-parameter (NULL on
 * failure); destructors accept NULL; CUDA streams and device memory are `void *`. The CUDA
 * entry points exist in every build: without CUDA they return ZCI_NO_DEVICE.
 *
 * Coordinates: pixel (x, y) covers [x, x+1) x [y, y+1); its centre is (x + 0.5, y + 0.5).
 * Resizing samples the source at the destination pixel centres mapped back ("half-pixel
 * centres", as OpenCV's INTER_LINEAR and PyTorch's align_corners=False), with clamping at
 * the borders. Boxes are {x1, y1, x2, y2} in these continuous coordinates.
 */
#ifndef ZCINFER_VISION_H
#define ZCINFER_VISION_H

#include "zcinfer.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---------------------------------------------------------------- frames */

/* Pixel formats of 8-bit frames. Planes and their widths in bytes per row:
 *   NV12  plane 0: Y, W bytes; plane 1: interleaved U,V at half width and half height
 *         (W rounded up to even bytes, (H + 1) / 2 rows)
 *   I420  plane 0: Y; plane 1: U; plane 2: V; U and V at half width and height, rounded up
 *   UYVY  plane 0: U0 Y0 V0 Y1 per pair of pixels (4:2:2), 2 W bytes (W rounded up to even)
 *   YUYV  plane 0: Y0 U0 Y1 V0 per pair of pixels (4:2:2; also called YUY2)
 *   RGB, BGR    plane 0: 3 W bytes;  RGBA, BGRA  plane 0: 4 W bytes (alpha is ignored)
 * Chroma is sampled at the pixel's own chroma site (nearest, no chroma interpolation):
 * pixel (x, y) of NV12 or I420 uses chroma sample (x / 2, y / 2), of UYVY or YUYV (x / 2, y). */
typedef enum zci_pixel_format {
    ZCI_PIXEL_NV12 = 0,
    ZCI_PIXEL_I420 = 1,
    ZCI_PIXEL_UYVY = 2,
    ZCI_PIXEL_YUYV = 3,
    ZCI_PIXEL_RGB = 4,
    ZCI_PIXEL_BGR = 5,
    ZCI_PIXEL_RGBA = 6,
    ZCI_PIXEL_BGRA = 7,
} zci_pixel_format;

/* YUV to RGB matrix; ignored for RGB formats. */
typedef enum zci_color_matrix {
    ZCI_COLOR_BT601 = 0, /* SD video, JPEG (with full range) */
    ZCI_COLOR_BT709 = 1, /* HD video */
} zci_color_matrix;

/* YUV value range; ignored for RGB formats. */
typedef enum zci_color_range {
    ZCI_RANGE_LIMITED = 0, /* Y in 16..235, U and V in 16..240 ("video" or "TV" range) */
    ZCI_RANGE_FULL = 1,    /* Y, U and V in 0..255 ("PC" or JPEG range) */
} zci_color_range;

/* An 8-bit frame. The planes are host pointers for the CPU functions and device pointers
 * for the CUDA ones. A pitch of 0 means tightly packed rows (the widths listed above); a
 * given pitch must be at least that. Planes a format does not use are ignored. */
typedef struct zci_frame {
    zci_pixel_format format;
    int width, height;     /* in pixels, >= 1 */
    const void *planes[3]; /* see zci_pixel_format */
    size_t pitch[3];       /* bytes from one row to the next, per plane; 0 = packed */
    zci_color_matrix matrix;
    zci_color_range range;
} zci_frame;

/* Fills *frame for a tightly packed frame of `format` at `data`: the planes follow each other
 * (I420: Y, U, V; NV12: Y, UV), pitches 0, BT.601 limited range. Returns the frame's size in
 * bytes, 0 for a bad format or size. Thread-safe. */
ZCI_API size_t zci_frame_packed(zci_frame *frame, zci_pixel_format format, int width, int height,
                                const void *data);

/* ---------------------------------------------------------------- preprocessing */

typedef enum zci_resize_mode {
    ZCI_RESIZE_LETTERBOX = 0, /* keep the aspect ratio, centre, pad the rest (YOLO's default) */
    ZCI_RESIZE_STRETCH = 1,   /* scale width and height independently to fill the input */
} zci_resize_mode;

typedef struct zci_rect {
    int x, y, width, height;
} zci_rect;

/* How a frame becomes a model input. Start from zci_preprocess_params_init(). The output is
 * NCHW: for each frame 3 planes of out_height x out_width, channel c holding
 * (pixel_c * scale - mean[c]) / std[c], with pixel_c in 0..255, the channels in RGB order
 * (BGR with bgr = 1); letterbox padding is pad_value normalised the same way. */
typedef struct zci_preprocess_params {
    int out_width, out_height; /* the model input's W and H */
    zci_dtype out_dtype;       /* ZCI_FLOAT32 (default) or ZCI_FLOAT16 */
    zci_resize_mode resize;    /* default ZCI_RESIZE_LETTERBOX */
    float pad_value;           /* letterbox padding, on the 0..255 scale; default 114 */
    zci_rect crop;             /* part of the frame to use; width or height 0 = whole frame */
    int bgr;                   /* 1 = channels in BGR order; default 0 (RGB) */
    float scale;               /* default 1/255 */
    float mean[3], std[3];     /* per output channel; default 0 and 1 */
} zci_preprocess_params;

/* Sets the defaults listed above for an out_width x out_height input. Thread-safe. */
ZCI_API void zci_preprocess_params_init(zci_preprocess_params *params, int out_width, int out_height);

/* Where a frame landed in the model input, to map boxes back:
 *   frame_x = (model_x - pad_x) / scale_x + crop_x,  frame_y likewise.
 * Letterbox: the content is the crop resized to round(crop_w * r) x round(crop_h * r),
 * r = min(out_w / crop_w, out_h / crop_h), placed at integer offsets
 * pad_x = (out_w - content_w) / 2, pad_y likewise (rounded down), so scale_x and scale_y
 * (content size over crop size) can differ by a rounding. Stretch: pads are 0. */
typedef struct zci_letterbox {
    float scale_x, scale_y; /* model pixels per frame pixel */
    float pad_x, pad_y;     /* where the content starts in the model input */
    int content_width, content_height;
    zci_rect crop; /* the frame rectangle used (the whole frame when no crop was given) */
} zci_letterbox;

/* Computes the transform preprocessing uses for a frame_width x frame_height frame, without
 * touching pixels. Returns ZCI_INVALID_ARGUMENT for a NULL pointer, a non-positive size or
 * a crop outside the frame. Thread-safe. */
ZCI_API zci_status zci_letterbox_compute(const zci_preprocess_params *params, int frame_width, int frame_height,
                                         zci_letterbox *transform);

/* Preprocesses n_frames host frames into the host buffer `dst` (n_frames consecutive
 * 3 x out_height x out_width tensors of out_dtype; dst_bytes must be at least that), with
 * OpenMP threads. transforms (NULL = not wanted) receives one zci_letterbox per frame.
 * Frames may differ in format, size and pitch.
 * Returns ZCI_INVALID_ARGUMENT (NULL pointer, bad format, size, pitch, crop or parameters,
 * dst too small). Thread-safe for distinct destinations. */
ZCI_API zci_status zci_preprocess_cpu(const zci_frame *frames, int n_frames, const zci_preprocess_params *params,
                                      void *dst, size_t dst_bytes, zci_letterbox *transforms);

/* As zci_preprocess_cpu for frames whose planes are in device memory, into device memory
 * `dst` (for instance zci_session_input_device_buffer's), queued on `stream` (a cudaStream_t;
 * NULL = the CUDA default stream); returns once queued. One fused kernel launch per 24
 * frames (colour conversion, crop, resize, padding, normalisation, layout and type in one
 * pass, nothing in between); nothing is allocated. The frames must stay valid until the
 * stream has run the work. The result matches zci_preprocess_cpu's within 1/255.
 * Returns ZCI_INVALID_ARGUMENT (as the CPU version, and for host pointers where device
 * pointers are required), ZCI_DEVICE_ERROR (launch failed), ZCI_NO_DEVICE (no CUDA in this
 * build). Thread-safe for distinct destinations. */
ZCI_API zci_status zci_preprocess_cuda(const zci_frame *frames, int n_frames, const zci_preprocess_params *params,
                                       void *dst, size_t dst_bytes, void *stream, zci_letterbox *transforms);

/* ---------------------------------------------------------------- postprocessing */

/* One detection. 24 bytes, the same in host and device memory. */
typedef struct zci_detection {
    float x1, y1, x2, y2; /* in frame coordinates (model input coordinates without a transform) */
    float score;          /* objectness x class score (YOLOv5) or class score (YOLOv8) */
    int32_t class_id;
} zci_detection;

/* What a postprocessing run found, so that no limit cuts results silently. */
typedef struct zci_detect_counts {
    int32_t count;      /* detections returned: min(after_nms, top_k) */
    int32_t candidates; /* boxes above the score threshold; all of them go through NMS */
    int32_t after_nms;  /* boxes NMS kept; more than count means top_k cut the rest */
    int32_t reserved;
} zci_detect_counts;

typedef enum zci_yolo_layout {
    ZCI_YOLO_AUTO = 0, /* from the shape: [.., N, 5+C] when the last dimension is the smaller
                          one (YOLOv5), else [.., 4+C, N] (YOLOv8) */
    ZCI_YOLO_V5 = 1,   /* rows of (cx, cy, w, h, objectness, C class scores) */
    ZCI_YOLO_V8 = 2,   /* columns of (cx, cy, w, h, C class scores), no objectness */
} zci_yolo_layout;

/* Start from zci_postprocess_params_init(). */
typedef struct zci_postprocess_params {
    zci_yolo_layout layout; /* default ZCI_YOLO_AUTO */
    float score_threshold;  /* keep boxes with score > this (YOLOv5: and objectness > this);
                               default 0.25 */
    float iou_threshold;    /* suppress a box whose IoU with a kept one is > this; default 0.45 */
    int top_k;              /* at most this many detections, best first; 0 (default) = the
                               postprocessor's max_detections */
    int class_agnostic;     /* 1 = boxes of different classes suppress each other; default 0 */
} zci_postprocess_params;

/* Sets the defaults listed above. Thread-safe. */
ZCI_API void zci_postprocess_params_init(zci_postprocess_params *params);

/* A postprocessor owns the scratch memory of decoding and NMS, sized at creation so that a run
 * allocates nothing and the worst case (every candidate above the threshold) fits. On the GPU
 * that is about max_candidates^2 / 8 bytes for the NMS bit matrix (79 MB for YOLOv5's 25,200
 * candidates at 640 x 640) plus 68 bytes per candidate; on the CPU 36 bytes per candidate.
 * Threading: one thread at a time per postprocessor; its CUDA runs share its scratch memory, so
 * they must not overlap (queue them on one stream, or wait between streams). */
typedef struct zci_postprocessor zci_postprocessor;

/* Creates a postprocessor for `device` that takes outputs of up to max_candidates boxes
 * (N, e.g. 25200) and returns up to max_detections (the top-K capacity, e.g. 300). A CUDA
 * postprocessor allocates on the calling thread's current device and creates its own stream.
 * Returns ZCI_INVALID_ARGUMENT (sizes < 1, max_candidates > 131072 = 1 << 17, or max_detections
 * > max_candidates), ZCI_OUT_OF_MEMORY,
 * ZCI_NO_DEVICE (CUDA asked for in a build or on a machine without it), ZCI_DEVICE_ERROR.
 * Thread-safe. */
ZCI_API zci_status zci_postprocessor_create(zci_device device, int max_candidates, int max_detections,
                                            zci_postprocessor **out);

/* Frees the postprocessor and its memory (waiting for its queued work first). NULL is a no-op. */
ZCI_API void zci_postprocessor_destroy(zci_postprocessor *pp);

/* Decodes image `batch_index` of a YOLO output held in host memory and runs NMS on the CPU.
 * `output` has the shape and type `info` describes ([B, N, 5+C] or [B, 4+C, N], or without
 * the batch dimension; float32 or float16), e.g. zci_session_output_info's. transform
 * (NULL = leave boxes in model input coordinates) maps boxes back to the frame, clipped to
 * its crop rectangle. Writes min(count, capacity) detections, best first (score descending,
 * then output row ascending), to dets and the counts to *counts (NULL = not wanted).
 * capacity smaller than the detections found is not an error: counts->count says how many
 * there were. Needs a CPU postprocessor. Returns ZCI_INVALID_ARGUMENT (NULL pointer, shape
 * or type not a YOLO output, N > max_candidates, batch_index out of range, bad thresholds).
 * The output must be a finite float tensor: a NaN score is never above the threshold. */
ZCI_API zci_status zci_postprocess_cpu(zci_postprocessor *pp, const void *output, const zci_tensor_info *info,
                                       int batch_index, const zci_postprocess_params *params,
                                       const zci_letterbox *transform, zci_detection *dets, int capacity,
                                       zci_detect_counts *counts);

/* As zci_postprocess_cpu for an output in device memory, on the GPU, queued on `stream`
 * (NULL = the postprocessor's own stream); returns once queued. The results stay in device
 * memory (zci_postprocessor_results) until the next run; zci_postprocessor_download brings
 * them to the host. Four kernels: decoding, a sort of the candidates by (score, row), a 64 x 64
 * tiled IoU bit matrix and one single-block greedy pass; nothing is allocated, nothing waits
 * for the host. Identical results to the CPU version. Needs a CUDA postprocessor. Returns as
 * the CPU version, plus ZCI_DEVICE_ERROR. */
ZCI_API zci_status zci_postprocess_cuda(zci_postprocessor *pp, const void *output, const zci_tensor_info *info,
                                        int batch_index, const zci_postprocess_params *params,
                                        const zci_letterbox *transform, void *stream);

/* Device pointers to the last CUDA run's results: *counts to one zci_detect_counts, *dets to
 * max_detections zci_detection of which counts->count are set. Either out-pointer may be
 * NULL. They stay valid for the postprocessor's life; read them on the run's stream.
 * ZCI_INVALID_ARGUMENT for a CPU postprocessor. */
ZCI_API zci_status zci_postprocessor_results(zci_postprocessor *pp, void **counts, void **dets);

/* Waits for the last CUDA run on `stream` (NULL = the postprocessor's stream: pass the run's
 * stream) and copies its results to the host: min(count, capacity) detections to dets and the
 * counts to *counts (NULL = not wanted). One copy of the counts and the first top_k
 * detections (24 bytes each) through pinned memory the postprocessor owns.
 * Returns ZCI_INVALID_ARGUMENT (NULL pp or dets with capacity > 0, CPU postprocessor) or
 * ZCI_DEVICE_ERROR (the copy, or the work before it on the stream, failed). */
ZCI_API zci_status zci_postprocessor_download(zci_postprocessor *pp, zci_detection *dets, int capacity,
                                              zci_detect_counts *counts, void *stream);

/* ---------------------------------------------------------------- the whole pipeline */

/* Frame -> detections through `session`, whose input 0 is an image tensor [1, 3, H, W]
 * (float32, or float16 with fp16_io) and whose output 0 is a YOLO output. pre says how to
 * preprocess (its out_width, out_height and out_dtype are taken from the session's input, the
 * values in *pre are ignored); NULL = the defaults. post NULL = the defaults.
 * frame_on_device: 1 when the frame's planes are device pointers (CUDA sessions only).
 *   CUDA session: GPU preprocessing into the session's own input buffer, zci_run_own_buffers,
 *     GPU postprocessing of its own output buffer and one small download, all on `stream`
 *     (NULL = the postprocessor's stream). A host frame is first copied into a device staging
 *     buffer that the postprocessor keeps (allocated on first use, grown when a larger frame
 *     comes). pp must be a CUDA postprocessor on the session's device.
 *   CPU session: CPU preprocessing, zci_run, CPU postprocessing; the host staging of the
 *     input and output tensors is kept in pp (allocated on first use). stream is ignored.
 * Boxes come back in frame coordinates; *transform (NULL = not wanted) receives the
 * letterbox transform. Returns when the detections are in dets (min(count, capacity) of
 * them). Returns ZCI_INVALID_ARGUMENT (NULL pointers, a session whose input or output is not
 * an image detector's, batch > 1, pp of the wrong device or too small for the output,
 * frame_on_device on a CPU session), ZCI_OUT_OF_MEMORY, or what the session's run returns.
 * Threading: as the session and the postprocessor (one thread at a time each). */
ZCI_API zci_status zci_detect(zci_session *session, zci_postprocessor *pp, const zci_frame *frame,
                              int frame_on_device, const zci_preprocess_params *pre,
                              const zci_postprocess_params *post, zci_detection *dets, int capacity,
                              zci_detect_counts *counts, zci_letterbox *transform, void *stream);

#ifdef __cplusplus
}
#endif

#endif /* ZCINFER_VISION_H */
