/* detect.c: `zcinfer detect`: pictures (JPEG, PNG; or raw NV12/I420/UYVY/YUYV frames) through
 * a YOLO-style detector with zci_detect (preprocessing -> inference -> decoding and NMS, on
 * the CPU or the GPU), the detections printed as a table or JSON, and each picture written
 * with its boxes and class labels drawn on it. Uses only the public API.
 *
 * Pictures are read and written with stb_image / stb_image_write (Debian's libstb); labels
 * are drawn with stb_easy_font. A build without stb takes raw frames only and writes PPM. */
#define _POSIX_C_SOURCE 200809L
#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "cli.h"
#include "zcinfer_vision.h"

#ifdef ZCI_TOOLS_HAVE_STB
#if defined(__GNUC__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wunused-function"
#pragma GCC diagnostic ignored "-Wsign-compare"
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"
#pragma GCC diagnostic ignored "-Wunused-parameter"
#endif
#ifdef ZCI_TOOLS_STB_IMPLEMENTATION /* headers without the library: compile the code here */
#define STB_IMAGE_IMPLEMENTATION
#define STB_IMAGE_WRITE_IMPLEMENTATION
#endif
#include <stb/stb_easy_font.h>
#include <stb/stb_image.h>
#include <stb/stb_image_write.h>
#if defined(__GNUC__)
#pragma GCC diagnostic pop
#endif
#endif

#define MAX_DETS 1000

static const char *coco_names[80] = {
    "person",        "bicycle",      "car",          "motorcycle",    "airplane",     "bus",
    "train",         "truck",        "boat",         "traffic light", "fire hydrant", "stop sign",
    "parking meter", "bench",        "bird",         "cat",           "dog",          "horse",
    "sheep",         "cow",          "elephant",     "bear",          "zebra",        "giraffe",
    "backpack",      "umbrella",     "handbag",      "tie",           "suitcase",     "frisbee",
    "skis",          "snowboard",    "sports ball",  "kite",          "baseball bat", "baseball glove",
    "skateboard",    "surfboard",    "tennis racket", "bottle",       "wine glass",   "cup",
    "fork",          "knife",        "spoon",        "bowl",          "banana",       "apple",
    "sandwich",      "orange",       "broccoli",     "carrot",        "hot dog",      "pizza",
    "donut",         "cake",         "chair",        "couch",         "potted plant", "bed",
    "dining table",  "toilet",       "tv",           "laptop",        "mouse",        "remote",
    "keyboard",      "cell phone",   "microwave",    "oven",          "toaster",      "sink",
    "refrigerator",  "book",         "clock",        "vase",          "scissors",     "teddy bear",
    "hair drier",    "toothbrush"};

typedef struct names {
    int n;
    char **v;
} names;

static void names_free(names *nm)
{
    for (int i = 0; i < nm->n; i++) free(nm->v[i]);
    free(nm->v);
    nm->n = 0;
    nm->v = NULL;
}

static void names_add(names *nm, const char *s, size_t len)
{
    while (len && isspace((unsigned char)*s)) s++, len--;
    while (len && isspace((unsigned char)s[len - 1])) len--;
    if (!len) return;
    char **v = realloc(nm->v, (size_t)(nm->n + 1) * sizeof *v);
    if (!v) return;
    nm->v = v;
    nm->v[nm->n] = malloc(len + 1);
    if (!nm->v[nm->n]) return;
    memcpy(nm->v[nm->n], s, len);
    nm->v[nm->n++][len] = 0;
}

/* One name per line from a file; 0 if it cannot be read. */
static int names_from_file(names *nm, const char *path)
{
    FILE *f = fopen(path, "r");
    if (!f) return 0;
    char line[256];
    while (fgets(line, sizeof line, f)) names_add(nm, line, strlen(line));
    fclose(f);
    return 1;
}

/* --names a,b,c or --names FILE; else MODEL.names next to the model (one per line, as
 * Darknet's .names files); else COCO's 80 names for an 80-class model; else "class N". */
static void load_names(names *nm, const char *opt, const char *model, int nc)
{
    if (opt) {
        if (!names_from_file(nm, opt))
            for (const char *p = opt; *p;) {
                const char *e = strchr(p, ',');
                size_t len = e ? (size_t)(e - p) : strlen(p);
                names_add(nm, p, len);
                p += len + (e != NULL);
            }
        return;
    }
    char path[4096];
    snprintf(path, sizeof path, "%s", model);
    char *dot = strrchr(path, '.'), *slash = strrchr(path, '/');
    if (dot && (!slash || dot > slash)) *dot = 0;
    strncat(path, ".names", sizeof path - strlen(path) - 1);
    if (names_from_file(nm, path)) return;
    if (nc == 80)
        for (int i = 0; i < 80; i++) names_add(nm, coco_names[i], strlen(coco_names[i]));
}

static const char *class_name(const names *nm, int c, char *buf, size_t size)
{
    if (c >= 0 && c < nm->n) return nm->v[c];
    snprintf(buf, size, "class %d", c);
    return buf;
}

/* ---------------------------------------------------------------- drawing */

typedef struct picture {
    int w, h;
    uint8_t *rgb; /* w * h * 3 */
} picture;

static void fill_rect(picture *p, int x0, int y0, int x1, int y1, const uint8_t c[3])
{
    x0 = x0 < 0 ? 0 : x0;
    y0 = y0 < 0 ? 0 : y0;
    x1 = x1 > p->w ? p->w : x1;
    y1 = y1 > p->h ? p->h : y1;
    for (int y = y0; y < y1; y++)
        for (int x = x0; x < x1; x++) memcpy(&p->rgb[((size_t)y * p->w + x) * 3], c, 3);
}

static void class_colour(int c, uint8_t out[3])
{
    static const uint8_t palette[10][3] = {{255, 56, 56},  {255, 157, 151}, {255, 112, 31}, {255, 178, 29},
                                           {207, 210, 49}, {72, 249, 10},   {26, 147, 52},  {0, 212, 187},
                                           {52, 69, 147},  {255, 55, 199}};
    memcpy(out, palette[(c < 0 ? -c : c) % 10], 3);
}

#ifdef ZCI_TOOLS_HAVE_STB
/* Text with stb_easy_font's segments, each quad scaled by `s`, at (x, y). */
static void draw_text(picture *p, int x, int y, int s, const char *text, const uint8_t c[3])
{
    char buf[200];
    snprintf(buf, sizeof buf, "%s", text);
    int qbytes = 300 * (int)sizeof buf; /* stb_easy_font needs about 270 bytes per character */
    float *quads = malloc((size_t)qbytes);
    if (!quads) return;
    int nq = stb_easy_font_print(0, 0, buf, NULL, quads, qbytes);
    for (int q = 0; q < nq; q++) {
        const float *v = &quads[q * 16]; /* 4 vertices of x, y, z, colour */
        int qx0 = (int)v[0], qy0 = (int)v[1], qx1 = (int)v[8], qy1 = (int)v[9];
        fill_rect(p, x + qx0 * s, y + qy0 * s, x + qx1 * s, y + qy1 * s, c);
    }
    free(quads);
}

static int text_width(const char *text)
{
    char buf[200];
    snprintf(buf, sizeof buf, "%s", text);
    return stb_easy_font_width(buf);
}
#else
/* Without stb_easy_font the labels are plain bars of the class colour. */
static void draw_text(picture *p, int x, int y, int s, const char *text, const uint8_t c[3]) {}
static int text_width(const char *text) { return (int)strlen(text) * 6; }
#endif

static void draw(picture *p, const zci_detection *d, int n, const names *nm)
{
    int t = (p->w < p->h ? p->w : p->h) / 320 + 1; /* line width and text scale grow with size */
    for (int i = n - 1; i >= 0; i--) { /* best last, so it ends on top */
        uint8_t c[3], ink[3] = {255, 255, 255}, black[3] = {0, 0, 0};
        class_colour(d[i].class_id, c);
        int x0 = (int)floorf(d[i].x1), y0 = (int)floorf(d[i].y1), x1 = (int)ceilf(d[i].x2), y1 = (int)ceilf(d[i].y2);
        fill_rect(p, x0, y0, x1, y0 + t, c);
        fill_rect(p, x0, y1 - t, x1, y1, c);
        fill_rect(p, x0, y0, x0 + t, y1, c);
        fill_rect(p, x1 - t, y0, x1, y1, c);
        char label[160], buf[32];
        snprintf(label, sizeof label, "%s %.2f", class_name(nm, d[i].class_id, buf, sizeof buf), d[i].score);
        int tw = (text_width(label) + 2) * t, th = 10 * t;
        int ly = y0 - th >= 0 ? y0 - th : y0; /* above the box, or inside it at the top edge */
        fill_rect(p, x0, ly, x0 + tw, ly + th, c);
        int bright = c[0] * 299 + c[1] * 587 + c[2] * 114 > 150000;
        draw_text(p, x0 + t, ly + t, t, label, bright ? black : ink);
    }
}

/* ---------------------------------------------------------------- input and output */

static int write_picture(const picture *p, const char *path)
{
    const char *ext = strrchr(path, '.');
#ifdef ZCI_TOOLS_HAVE_STB
    if (ext && (!strcmp(ext, ".jpg") || !strcmp(ext, ".jpeg") || !strcmp(ext, ".JPG")))
        return stbi_write_jpg(path, p->w, p->h, 3, p->rgb, 90) ? 0 : -1;
    if (!ext || strcmp(ext, ".ppm")) return stbi_write_png(path, p->w, p->h, 3, p->rgb, p->w * 3) ? 0 : -1;
#else
    (void)ext;
#endif
    FILE *f = fopen(path, "wb");
    if (!f) return -1;
    fprintf(f, "P6\n%d %d\n255\n", p->w, p->h);
    size_t n = fwrite(p->rgb, 1, (size_t)p->w * p->h * 3, f);
    return fclose(f) || n != (size_t)p->w * p->h * 3 ? -1 : 0;
}

static void *read_file(const char *path, size_t *size)
{
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    void *p = NULL;
    if (fseek(f, 0, SEEK_END) == 0) {
        long n = ftell(f);
        if (n >= 0 && fseek(f, 0, SEEK_SET) == 0 && (p = malloc(n ? (size_t)n : 1))) {
            if (fread(p, 1, (size_t)n, f) != (size_t)n) {
                free(p);
                p = NULL;
            } else {
                *size = (size_t)n;
            }
        }
    }
    fclose(f);
    return p;
}

/* The frame's pixels as RGB for drawing, converted by the library itself (a stretch to the
 * same size samples every pixel at its centre: the identity, plus colour conversion). */
static int frame_to_rgb(const zci_frame *f, picture *p)
{
    zci_preprocess_params q;
    zci_preprocess_params_init(&q, f->width, f->height);
    q.resize = ZCI_RESIZE_STRETCH;
    q.scale = 1.0f;
    size_t plane = (size_t)f->width * f->height;
    float *planar = malloc(plane * 3 * sizeof *planar);
    p->w = f->width;
    p->h = f->height;
    p->rgb = malloc(plane * 3);
    if (!planar || !p->rgb || zci_preprocess_cpu(f, 1, &q, planar, plane * 3 * sizeof *planar, NULL)) {
        free(planar);
        return -1;
    }
    for (size_t i = 0; i < plane; i++)
        for (int k = 0; k < 3; k++) p->rgb[i * 3 + k] = (uint8_t)lrintf(planar[k * plane + i]);
    free(planar);
    return 0;
}

static void json_string(const char *s)
{
    putchar('"');
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') printf("\\%c", c);
        else if (c < 0x20) printf("\\u%04x", c);
        else putchar(c);
    }
    putchar('"');
}

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static const char *help =
    "usage: zcinfer detect MODEL IMAGE... [options]\n"
    "Runs a YOLO-style detector (YOLOv5 [1, N, 5+C] or YOLOv8/11 [1, 4+C, N] output) on JPEG or PNG\n"
    "pictures: letterbox preprocessing, inference, score threshold, class-aware NMS; prints the\n"
    "detections and writes each picture with its boxes and labels.\n"
    "  --conf T            score threshold (default 0.25)\n"
    "  --iou T             NMS IoU threshold (default 0.45)\n"
    "  --top-k N           at most N detections per picture (default 300)\n"
    "  --agnostic          NMS across classes\n"
    "  -o OUT              annotated picture (.png, .jpg or .ppm); with several pictures a folder\n"
    "                      (default: NAME_det.png in the current folder)\n"
    "  --no-draw           write no picture\n"
    "  --json              JSON on stdout instead of the table\n"
    "  --names LIST|FILE   class names, comma-separated or one per line in FILE (default: MODEL.names\n"
    "                      next to the model, COCO's for 80 classes, else numbers)\n"
    "  --raw FMT --size WxH  the inputs are raw frames: nv12, i420, uyvy or yuyv (BT.601 limited\n"
    "                      range; --bt709, --full-range to change)\n"
    "%s";

static int parse_format(const char *s, zci_pixel_format *f)
{
    static const char *n[] = {"nv12", "i420", "uyvy", "yuyv", "rgb", "bgr", "rgba", "bgra"};
    for (int i = 0; i < 8; i++)
        if (!strcmp(s, n[i])) {
            *f = (zci_pixel_format)i;
            return 0;
        }
    return -1;
}

static int is_dir(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

int cmd_detect(int argc, char **argv)
{
    cli_opts o;
    zci_options_init(&o.zopts);
    const char *model = NULL, *out = NULL, *names_opt = NULL;
    const char **images = calloc((size_t)argc + 1, sizeof *images);
    int n_images = 0, json = 0, draw_pictures = 1, raw = 0, rw = 0, rh = 0, rc = 1;
    zci_pixel_format raw_format = ZCI_PIXEL_NV12;
    zci_color_matrix matrix = ZCI_COLOR_BT601;
    zci_color_range range = ZCI_RANGE_LIMITED;
    zci_postprocess_params post;
    zci_postprocess_params_init(&post);
    int top_k = 300;
    if (!images) return 1;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            printf(help, "  (and --device, --fp16, --fp16-io, --threads, -v as for `zcinfer run`)\n");
            free(images);
            return 0;
        }
        int used = cli_common_option(argc, argv, i, &o);
        if (used < 0) goto done;
        if (used) {
            i += used - 1;
        } else if ((!strcmp(a, "--conf") || !strcmp(a, "--iou")) && v) {
            char *end;
            float x = strtof(v, &end);
            if (*end || !(x >= 0 && x <= 1)) {
                fprintf(stderr, "zcinfer detect: %s needs a number in [0, 1], not '%s'\n", a, v);
                goto done;
            }
            if (a[2] == 'c') post.score_threshold = x;
            else post.iou_threshold = x;
            i++;
        } else if (!strcmp(a, "--top-k") && v) {
            top_k = atoi(v);
            if (top_k < 1 || top_k > MAX_DETS) {
                fprintf(stderr, "zcinfer detect: --top-k must be 1..%d\n", MAX_DETS);
                goto done;
            }
            i++;
        } else if (!strcmp(a, "--agnostic")) {
            post.class_agnostic = 1;
        } else if (!strcmp(a, "-o") && v) {
            out = argv[++i];
        } else if (!strcmp(a, "--no-draw")) {
            draw_pictures = 0;
        } else if (!strcmp(a, "--json")) {
            json = 1;
        } else if (!strcmp(a, "--names") && v) {
            names_opt = argv[++i];
        } else if (!strcmp(a, "--raw") && v) {
            if (parse_format(v, &raw_format)) {
                fprintf(stderr, "zcinfer detect: --raw takes nv12, i420, uyvy, yuyv, rgb, bgr, rgba or bgra\n");
                goto done;
            }
            raw = 1;
            i++;
        } else if (!strcmp(a, "--size") && v) {
            if (sscanf(v, "%dx%d", &rw, &rh) != 2 || rw < 1 || rh < 1) {
                fprintf(stderr, "zcinfer detect: --size takes WxH, e.g. 1920x1080\n");
                goto done;
            }
            i++;
        } else if (!strcmp(a, "--bt709")) {
            matrix = ZCI_COLOR_BT709;
        } else if (!strcmp(a, "--full-range")) {
            range = ZCI_RANGE_FULL;
        } else if (a[0] == '-') {
            fprintf(stderr, "zcinfer detect: unexpected argument '%s' (see --help)\n", a);
            goto done;
        } else if (!model) {
            model = a;
        } else {
            images[n_images++] = a;
        }
    }
    if (!model || !n_images) {
        fprintf(stderr, "zcinfer detect: a MODEL and at least one IMAGE are needed (see --help)\n");
        goto done;
    }
    if (raw && !rw) {
        fprintf(stderr, "zcinfer detect: --raw needs --size WxH\n");
        goto done;
    }
#ifndef ZCI_TOOLS_HAVE_STB
    if (!raw) {
        fprintf(stderr, "zcinfer detect: this build has no image library (stb); use --raw FMT --size WxH\n");
        goto done;
    }
#endif
    post.top_k = top_k;
    zci_session *s = NULL;
    zci_postprocessor *pp = NULL;
    names nm = {0, NULL};
    if (zci_session_create(model, &o.zopts, &s)) {
        rc = cli_fail("cannot load the model");
        goto done;
    }
    zci_tensor_info ot;
    zci_session_output_info(s, 0, &ot);
    int64_t d1 = ot.ndim >= 2 ? ot.shape[ot.ndim - 2] : 0, d2 = ot.ndim >= 2 ? ot.shape[ot.ndim - 1] : 0;
    int64_t n_cand = d1 > d2 ? d1 : d2;
    int nc = (int)(d2 < d1 ? d2 - 5 : d1 - 4);
    if (n_cand < 1 || n_cand > (1 << 17) || nc < 1) {
        fprintf(stderr, "zcinfer detect: output '%s' does not look like a YOLO output\n", ot.name);
        goto cleanup;
    }
    if (zci_postprocessor_create(o.zopts.device, (int)n_cand, top_k > n_cand ? (int)n_cand : top_k, &pp)) {
        rc = cli_fail("cannot create the postprocessor");
        goto cleanup;
    }
    if (post.top_k > n_cand) post.top_k = (int)n_cand;
    load_names(&nm, names_opt, model, nc);
    int out_is_dir = out && (n_images > 1 || is_dir(out));
    if (out_is_dir && mkdir(out, 0777) && errno != EEXIST) {
        fprintf(stderr, "zcinfer detect: cannot create the folder '%s': %s\n", out, strerror(errno));
        goto cleanup;
    }
    if (json) {
        printf("{\"model\": ");
        json_string(model);
        printf(", \"device\": \"%s\", \"images\": [", o.zopts.device == ZCI_DEVICE_CUDA ? "cuda" : "cpu");
    }
    rc = 0;
    for (int im = 0; im < n_images && !rc; im++) {
        const char *path = images[im];
        zci_frame f;
        picture pic = {0, 0, NULL};
        void *pixels = NULL;
        if (raw) {
            size_t size = 0, need = zci_frame_packed(&f, raw_format, rw, rh, NULL);
            pixels = read_file(path, &size);
            if (!pixels || size != need) {
                fprintf(stderr, "zcinfer detect: %s: %s (a %dx%d frame of this format is %zu bytes)\n", path,
                        pixels ? "wrong size" : strerror(errno), rw, rh, need);
                free(pixels);
                rc = 1;
                break;
            }
            zci_frame_packed(&f, raw_format, rw, rh, pixels);
            f.matrix = matrix;
            f.range = range;
        } else {
#ifdef ZCI_TOOLS_HAVE_STB
            int w, h, ch;
            pixels = stbi_load(path, &w, &h, &ch, 3);
            if (!pixels) {
                fprintf(stderr, "zcinfer detect: cannot read %s: %s\n", path, stbi_failure_reason());
                rc = 1;
                break;
            }
            zci_frame_packed(&f, ZCI_PIXEL_RGB, w, h, pixels);
#endif
        }
        zci_detection *d = malloc(MAX_DETS * sizeof *d);
        zci_detect_counts c;
        zci_letterbox lb;
        double t0 = now_ms();
        zci_status st = d ? zci_detect(s, pp, &f, 0, NULL, &post, d, MAX_DETS, &c, &lb, NULL) : ZCI_OUT_OF_MEMORY;
        double ms = now_ms() - t0;
        if (st) {
            rc = cli_fail(path);
        } else {
            char buf[32];
            if (json) {
                printf("%s\n  {\"image\": ", im ? "," : "");
                json_string(path);
                printf(", \"width\": %d, \"height\": %d, \"ms\": %.3f, \"candidates\": %d, \"after_nms\": %d, "
                       "\"detections\": [",
                       f.width, f.height, ms, c.candidates, c.after_nms);
                for (int k = 0; k < c.count; k++) {
                    printf("%s\n    {\"class\": %d, \"name\": ", k ? "," : "", d[k].class_id);
                    json_string(class_name(&nm, d[k].class_id, buf, sizeof buf));
                    printf(", \"score\": %.4f, \"box\": [%.1f, %.1f, %.1f, %.1f]}", d[k].score, d[k].x1, d[k].y1,
                           d[k].x2, d[k].y2);
                }
                printf("]}");
            } else {
                printf("%s: %dx%d, %d detection%s (%d candidates, %d after NMS), %.1f ms\n", path, f.width, f.height,
                       c.count, c.count == 1 ? "" : "s", c.candidates, c.after_nms, ms);
                if (c.count) printf("  %-16s %6s %8s %8s %8s %8s\n", "class", "score", "x1", "y1", "x2", "y2");
                for (int k = 0; k < c.count; k++)
                    printf("  %-16s %6.3f %8.1f %8.1f %8.1f %8.1f\n", class_name(&nm, d[k].class_id, buf, sizeof buf),
                           d[k].score, d[k].x1, d[k].y1, d[k].x2, d[k].y2);
            }
            if (draw_pictures) {
                char target[4096];
                const char *base = strrchr(path, '/');
                base = base ? base + 1 : path;
                char stem[1024];
                snprintf(stem, sizeof stem, "%s", base);
                char *dot = strrchr(stem, '.');
                if (dot && dot != stem) *dot = 0;
                if (out && !out_is_dir) snprintf(target, sizeof target, "%s", out);
                else snprintf(target, sizeof target, "%s%s%s_det.png", out ? out : "", out ? "/" : "", stem);
                if (frame_to_rgb(&f, &pic)) {
                    fprintf(stderr, "zcinfer detect: %s: cannot convert the frame for drawing\n", path);
                    rc = 1;
                } else {
                    draw(&pic, d, c.count, &nm);
                    if (write_picture(&pic, target)) {
                        fprintf(stderr, "zcinfer detect: cannot write %s\n", target);
                        rc = 1;
                    } else if (!json) {
                        printf("  wrote %s\n", target);
                    }
                }
            }
        }
        free(pic.rgb);
        free(d);
#ifdef ZCI_TOOLS_HAVE_STB
        if (!raw) stbi_image_free(pixels);
        else free(pixels);
#else
        free(pixels);
#endif
    }
    if (json) printf("\n]}\n");
cleanup:
    names_free(&nm);
    zci_postprocessor_destroy(pp);
    zci_session_destroy(s);
done:
    free(images);
    return rc;
}
