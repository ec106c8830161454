/* shapes_scene.h: the synthetic detection scenes of tools/train_detector/scenes.py, in C, for
 * the accuracy tests: coloured geometric shapes on cluttered, textured backgrounds with their
 * ground-truth boxes. The rules (classes, geometry, boxes, backgrounds, clutter, ranges, noise)
 * are those the Python generator documents and the shipped detector was trained on; only
 * the random number stream differs, so every scene here is one the model has never seen. */
#ifndef ZCI_TESTS_SHAPES_SCENE_H
#define ZCI_TESTS_SHAPES_SCENE_H

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define SCENE_CLASSES 5
#define SCENE_FRAME_MIN 256
#define SCENE_FRAME_MAX 416
#define SCENE_SIZE_MIN 24.0
#define SCENE_SIZE_MAX 100.0
#define SCENE_MAX_SHAPES 8
#define SCENE_OVERLAP_MAX 0.25
#define SCENE_PI 3.14159265358979323846

static const char *const scene_class_names[SCENE_CLASSES] = {"circle", "rectangle", "triangle", "diamond", "cross"};

typedef struct scene_box {
    float x1, y1, x2, y2;
    int cls;
} scene_box;

typedef struct scene {
    int w, h;
    uint8_t *rgb; /* w * h * 3, packed RGB */
    int n;
    scene_box boxes[SCENE_MAX_SHAPES];
} scene;

typedef struct scene_rng {
    uint64_t s;
} scene_rng;

/* splitmix64: uniform doubles in [0, 1) */
static double scene_uniform(scene_rng *r)
{
    uint64_t z = (r->s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    return (double)(z >> 11) * (1.0 / 9007199254740992.0);
}

static double scene_range(scene_rng *r, double lo, double hi) { return lo + (hi - lo) * scene_uniform(r); }

/* integer in [lo, hi) as numpy's integers(lo, hi) */
static int scene_int(scene_rng *r, int lo, int hi) { return lo + (int)(scene_uniform(r) * (hi - lo)); }

static double scene_normal(scene_rng *r)
{
    double u = 1.0 - scene_uniform(r), v = scene_uniform(r);
    return sqrt(-2.0 * log(u)) * cos(2.0 * SCENE_PI * v);
}

static void scene_hsv(double h, double s, double v, float rgb[3])
{
    int i = (int)(h * 6.0) % 6;
    double f = h * 6.0 - floor(h * 6.0);
    double p = v * (1 - s), q = v * (1 - f * s), t = v * (1 - (1 - f) * s);
    double c[6][3] = {{v, t, p}, {q, v, p}, {p, v, t}, {p, q, v}, {t, p, v}, {v, p, q}};
    for (int k = 0; k < 3; k++) rgb[k] = (float)(c[i][k] * 255.0);
}

static void scene_dull(scene_rng *r, float c[3])
{
    double h = scene_uniform(r), s = scene_range(r, 0.0, 0.35), v = scene_range(r, 0.2, 0.9);
    scene_hsv(h, s, v, c);
}

static void scene_any(scene_rng *r, float c[3])
{
    double h = scene_uniform(r), s = scene_range(r, 0.0, 1.0), v = scene_range(r, 0.1, 1.0);
    scene_hsv(h, s, v, c);
}

static void scene_background(scene_rng *r, float *img, int W, int H)
{
    float c0[3], c1[3];
    scene_dull(r, c0);
    scene_dull(r, c1);
    int kind = scene_int(r, 0, 4);
    double th = 0, period = 0, cell = 0, half = 1;
    int gw = 0, gh = 0;
    float *lat = NULL;
    if (kind == 0) {
        th = scene_range(r, 0, SCENE_PI);
        period = scene_range(r, 6, 40);
    } else if (kind == 1) {
        cell = scene_range(r, 8, 48);
    } else if (kind == 2) {
        th = scene_range(r, 0, 2 * SCENE_PI);
        half = 0.5 * (fabs(W * cos(th)) + fabs(H * sin(th)));
    } else {
        cell = scene_range(r, 16, 64);
        gw = (int)(W / cell) + 2;
        gh = (int)(H / cell) + 2;
        lat = malloc((size_t)gw * gh * sizeof *lat);
        for (int i = 0; i < gw * gh; i++) lat[i] = (float)scene_uniform(r);
    }
    for (int y = 0; y < H; y++)
        for (int x = 0; x < W; x++) {
            double px = x + 0.5, py = y + 0.5, a;
            if (kind == 0) {
                a = (double)((long long)floor((px * cos(th) + py * sin(th)) / period) & 1);
            } else if (kind == 1) {
                a = (double)(((long long)floor(px / cell) + (long long)floor(py / cell)) & 1);
            } else if (kind == 2) {
                double d = (px - W / 2.0) * cos(th) + (py - H / 2.0) * sin(th);
                a = d / (2 * half) + 0.5;
                a = a < 0 ? 0 : a > 1 ? 1 : a;
            } else {
                double gx = px / cell, gy = py / cell;
                int x0 = (int)floor(gx), y0 = (int)floor(gy);
                double fx = gx - x0, fy = gy - y0;
                a = lat[y0 * gw + x0] * (1 - fx) * (1 - fy) + lat[y0 * gw + x0 + 1] * fx * (1 - fy) +
                    lat[(y0 + 1) * gw + x0] * (1 - fx) * fy + lat[(y0 + 1) * gw + x0 + 1] * fx * fy;
            }
            for (int k = 0; k < 3; k++) img[((size_t)y * W + x) * 3 + k] = (float)(c0[k] * (1 - a) + c1[k] * a);
        }
    free(lat);
}

static void scene_paint(float *img, int W, int x, int y, const float c[3])
{
    memcpy(&img[((size_t)y * W + x) * 3], c, 3 * sizeof(float));
}

static void scene_lines(scene_rng *r, float *img, int W, int H, int n)
{
    for (int i = 0; i < n; i++) {
        double x0 = scene_range(r, 0, W), x1 = scene_range(r, 0, W);
        double y0 = scene_range(r, 0, H), y1 = scene_range(r, 0, H);
        double width = scene_range(r, 1.0, 2.5), rr = width / 2 * (width / 2);
        float c[3];
        scene_any(r, c);
        double dx = x1 - x0, dy = y1 - y0, ll = dx * dx + dy * dy;
        if (ll < 1e-6) ll = 1e-6;
        int bx0 = (int)fmax(0, floor(fmin(x0, x1) - width)), bx1 = (int)fmin(W - 1, ceil(fmax(x0, x1) + width));
        int by0 = (int)fmax(0, floor(fmin(y0, y1) - width)), by1 = (int)fmin(H - 1, ceil(fmax(y0, y1) + width));
        for (int y = by0; y <= by1; y++)
            for (int x = bx0; x <= bx1; x++) {
                double px = x + 0.5, py = y + 0.5;
                double t = ((px - x0) * dx + (py - y0) * dy) / ll;
                t = t < 0 ? 0 : t > 1 ? 1 : t;
                double ex = x0 + t * dx - px, ey = y0 + t * dy - py;
                if (ex * ex + ey * ey <= rr) scene_paint(img, W, x, y, c);
            }
    }
}

static int scene_inside(int cls, double px, double py, double cx, double cy, double w, double h, double thick)
{
    double dx = fabs(px - cx), dy = fabs(py - cy);
    switch (cls) {
    case 0: return dx * dx + dy * dy <= (w / 2) * (w / 2);
    case 1: return dx <= w / 2 && dy <= h / 2;
    case 2: {
        double top = cy - h / 2;
        return py <= cy + h / 2 && py >= top && dx * h <= (py - top) * (w / 2);
    }
    case 3: return dx / (w / 2) + dy / (h / 2) <= 1;
    default: return (dx <= thick / 2 && dy <= h / 2) || (dy <= thick / 2 && dx <= w / 2);
    }
}

static double scene_covers(const scene_box *a, const scene_box *b)
{
    double iw = fmin(a->x2, b->x2) - fmax(a->x1, b->x1), ih = fmin(a->y2, b->y2) - fmax(a->y1, b->y1);
    if (iw <= 0 || ih <= 0) return 0;
    double sa = (double)(a->x2 - a->x1) * (a->y2 - a->y1), sb = (double)(b->x2 - b->x1) * (b->y2 - b->y1);
    return iw * ih / fmin(sa, sb);
}

/* Makes a scene of a random size (w, h = 0) or the size given. Free s->rgb when done. */
static void scene_make(scene *s, scene_rng *r, int w, int h)
{
    int W = w ? w : scene_int(r, SCENE_FRAME_MIN, SCENE_FRAME_MAX + 1);
    int H = h ? h : scene_int(r, SCENE_FRAME_MIN, SCENE_FRAME_MAX + 1);
    float *img = malloc((size_t)W * H * 3 * sizeof *img);
    scene_background(r, img, W, H);
    int n_lines = scene_int(r, 3, 15), n_over = n_lines / 3;
    scene_lines(r, img, W, H, n_lines - n_over);
    int n_dots = scene_int(r, 5, 30);
    for (int i = 0; i < n_dots; i++) {
        double cx = scene_range(r, 0, W), cy = scene_range(r, 0, H), rad = scene_range(r, 1.0, 3.5);
        float c[3];
        scene_any(r, c);
        for (int y = (int)fmax(0, cy - rad - 1); y <= (int)fmin(H - 1, cy + rad + 1); y++)
            for (int x = (int)fmax(0, cx - rad - 1); x <= (int)fmin(W - 1, cx + rad + 1); x++)
                if ((x + 0.5 - cx) * (x + 0.5 - cx) + (y + 0.5 - cy) * (y + 0.5 - cy) <= rad * rad)
                    scene_paint(img, W, x, y, c);
    }
    s->w = W;
    s->h = H;
    s->n = 0;
    double smax = fmin(SCENE_SIZE_MAX, 0.5 * (W < H ? W : H));
    int n_shapes = scene_int(r, 1, SCENE_MAX_SHAPES + 1);
    for (int i = 0; i < n_shapes; i++) {
        int cls = scene_int(r, 0, SCENE_CLASSES);
        double m = scene_range(r, SCENE_SIZE_MIN, smax), bw = m, bh = m, thick = 0;
        if (cls == 1) bh = m * scene_range(r, 0.45, 1.0);
        else if (cls == 2 || cls == 3) bh = m * scene_range(r, 0.7, 1.0);
        else if (cls == 4) bh = m * scene_range(r, 0.8, 1.0);
        if (cls != 0 && scene_uniform(r) < 0.5) {
            double t = bw;
            bw = bh;
            bh = t;
        }
        if (cls == 4) thick = scene_range(r, 0.25, 0.4) * fmin(bw, bh);
        float colour[3];
        double hue = scene_uniform(r), sat = scene_range(r, 0.55, 1.0), val = scene_range(r, 0.55, 1.0);
        scene_hsv(hue, sat, val, colour);
        for (int attempt = 0; attempt < 30; attempt++) {
            double cx = scene_range(r, bw / 2 + 1, W - bw / 2 - 1), cy = scene_range(r, bh / 2 + 1, H - bh / 2 - 1);
            scene_box b = {(float)(cx - bw / 2), (float)(cy - bh / 2), (float)(cx + bw / 2), (float)(cy + bh / 2), cls};
            int ok = 1;
            for (int k = 0; k < s->n && ok; k++) ok = scene_covers(&b, &s->boxes[k]) <= SCENE_OVERLAP_MAX;
            if (!ok) continue;
            for (int y = (int)fmax(0, floor(b.y1)); y <= (int)fmin(H - 1, ceil(b.y2)); y++)
                for (int x = (int)fmax(0, floor(b.x1)); x <= (int)fmin(W - 1, ceil(b.x2)); x++)
                    if (scene_inside(cls, x + 0.5, y + 0.5, cx, cy, bw, bh, thick)) scene_paint(img, W, x, y, colour);
            s->boxes[s->n++] = b;
            break;
        }
    }
    scene_lines(r, img, W, H, n_over);
    double sigma = scene_range(r, 2, 10);
    s->rgb = malloc((size_t)W * H * 3);
    for (size_t i = 0; i < (size_t)W * H * 3; i++) {
        double v = nearbyint(img[i] + (float)(sigma * scene_normal(r)));
        s->rgb[i] = (uint8_t)(v < 0 ? 0 : v > 255 ? 255 : v);
    }
    free(img);
}

#endif
