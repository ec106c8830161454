"""Synthetic detection scenes: coloured geometric shapes on cluttered, textured backgrounds.

The scene rules here are the contract shared with the C generator in
tests/shapes_scene.h (used by the accuracy test): the same classes, the same shape
geometry and ground-truth boxes, the same kinds of background and clutter and the same
parameter ranges. The random number streams differ; the distributions do not.

    frame size     W, H uniform integers in [FRAME_MIN, FRAME_MAX]
    background     one of: stripes, checkerboard, gradient, value noise; two colours with
                   saturation <= 0.35
    clutter        3-14 thin lines (width 1-2.5 px) and 5-29 dots (radius 1-3.5 px) of any
                   colour; a third of the lines are drawn over the shapes
    shapes         1-8 shapes, class uniform, largest side m uniform in [24, 100] px (at most
                   half the frame's smaller side), saturated colour (S, V in [0.55, 1]);
                   a shape is placed only where it covers at most 25 % of the smaller of
                   its box and any earlier shape's box
    noise          Gaussian, sigma uniform in [2, 10], then clipped to 0..255
A pixel belongs to a shape when its centre (x + 0.5, y + 0.5) is inside it. The
ground-truth box is the shape's geometric extent [cx - w/2, cy - h/2, cx + w/2, cy + h/2].
"""
import math

import numpy as np

CLASSES = ["circle", "rectangle", "triangle", "diamond", "cross"]
FRAME_MIN, FRAME_MAX = 256, 416
SIZE_MIN, SIZE_MAX = 24.0, 100.0
MAX_SHAPES = 8
OVERLAP_MAX = 0.25


def hsv(h, s, v):
    """HSV (each in [0, 1]) to RGB in [0, 255]."""
    i = int(h * 6.0) % 6
    f = h * 6.0 - math.floor(h * 6.0)
    p, q, t = v * (1 - s), v * (1 - f * s), v * (1 - (1 - f) * s)
    r, g, b = [(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)][i]
    return np.array([r, g, b], np.float32) * 255.0


def _dull_colour(rng):
    return hsv(rng.uniform(), rng.uniform(0.0, 0.35), rng.uniform(0.2, 0.9))


def _any_colour(rng):
    return hsv(rng.uniform(), rng.uniform(0.0, 1.0), rng.uniform(0.1, 1.0))


def _background(rng, W, H, xx, yy):
    c0, c1 = _dull_colour(rng), _dull_colour(rng)
    kind = rng.integers(4)
    if kind == 0:  # stripes
        th = rng.uniform(0, math.pi)
        period = rng.uniform(6, 40)
        t = np.floor((xx * math.cos(th) + yy * math.sin(th)) / period)
        a = (t.astype(np.int64) & 1).astype(np.float32)
    elif kind == 1:  # checkerboard
        cell = rng.uniform(8, 48)
        a = ((np.floor(xx / cell) + np.floor(yy / cell)).astype(np.int64) & 1).astype(np.float32)
    elif kind == 2:  # linear gradient across the frame
        th = rng.uniform(0, 2 * math.pi)
        d = (xx - W / 2) * math.cos(th) + (yy - H / 2) * math.sin(th)
        half = 0.5 * (abs(W * math.cos(th)) + abs(H * math.sin(th)))
        a = np.clip(d / (2 * half) + 0.5, 0, 1).astype(np.float32)
    else:  # value noise: random values on a coarse lattice, bilinearly interpolated
        cell = rng.uniform(16, 64)
        gw, gh = int(W / cell) + 2, int(H / cell) + 2
        lat = rng.uniform(0, 1, size=(gh, gw)).astype(np.float32)
        gx, gy = xx / cell, yy / cell
        x0, y0 = np.floor(gx).astype(np.int64), np.floor(gy).astype(np.int64)
        fx, fy = (gx - x0).astype(np.float32), (gy - y0).astype(np.float32)
        a = (lat[y0, x0] * (1 - fx) * (1 - fy) + lat[y0, x0 + 1] * fx * (1 - fy)
             + lat[y0 + 1, x0] * (1 - fx) * fy + lat[y0 + 1, x0 + 1] * fx * fy)
    return c0[None, None, :] * (1 - a[..., None]) + c1[None, None, :] * a[..., None]


def _segment_mask(xx, yy, x0, y0, x1, y1, width):
    dx, dy = x1 - x0, y1 - y0
    ll = dx * dx + dy * dy
    t = np.clip(((xx - x0) * dx + (yy - y0) * dy) / max(ll, 1e-6), 0, 1)
    px, py = x0 + t * dx - xx, y0 + t * dy - yy
    return px * px + py * py <= (width / 2) ** 2


def _lines(rng, img, xx, yy, W, H, n):
    for _ in range(n):
        x0, x1 = rng.uniform(0, W, 2)
        y0, y1 = rng.uniform(0, H, 2)
        m = _segment_mask(xx, yy, x0, y0, x1, y1, rng.uniform(1.0, 2.5))
        img[m] = _any_colour(rng)


def shape_mask(cls, xx, yy, cx, cy, w, h, thick):
    """Pixels (centres xx, yy) inside shape `cls` centred at cx, cy with extent w x h."""
    dx, dy = np.abs(xx - cx), np.abs(yy - cy)
    if cls == 0:  # circle (w == h)
        r = w / 2
        return dx * dx + dy * dy <= r * r
    if cls == 1:  # rectangle
        return (dx <= w / 2) & (dy <= h / 2)
    if cls == 2:  # triangle, apex up: inside the base and the two slanted sides
        top = cy - h / 2
        return (yy <= cy + h / 2) & (yy >= top) & (dx * h <= (yy - top) * (w / 2))
    if cls == 3:  # diamond
        return dx / (w / 2) + dy / (h / 2) <= 1
    return ((dx <= thick / 2) & (dy <= h / 2)) | ((dy <= thick / 2) & (dx <= w / 2))  # cross


def _shape_extent(rng, cls, m):
    """(w, h, thick) for class `cls` with largest side m."""
    if cls == 0:
        return m, m, 0.0
    if cls == 1:
        w, h = m, m * rng.uniform(0.45, 1.0)
    elif cls in (2, 3):
        w, h = m, m * rng.uniform(0.7, 1.0)
    else:
        w, h = m, m * rng.uniform(0.8, 1.0)
    if rng.uniform() < 0.5:
        w, h = h, w
    thick = rng.uniform(0.25, 0.4) * min(w, h) if cls == 4 else 0.0
    return w, h, thick


def _covers(a, b):
    iw = min(a[2], b[2]) - max(a[0], b[0])
    ih = min(a[3], b[3]) - max(a[1], b[1])
    if iw <= 0 or ih <= 0:
        return 0.0
    sa = (a[2] - a[0]) * (a[3] - a[1])
    sb = (b[2] - b[0]) * (b[3] - b[1])
    return iw * ih / min(sa, sb)


def make_scene(rng, W=None, H=None):
    """Returns (image HxWx3 uint8 RGB, boxes Nx4 float32 x1y1x2y2, classes N int64)."""
    W = int(rng.integers(FRAME_MIN, FRAME_MAX + 1)) if W is None else W
    H = int(rng.integers(FRAME_MIN, FRAME_MAX + 1)) if H is None else H
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float32)
    xx += 0.5
    yy += 0.5
    img = _background(rng, W, H, xx, yy)
    n_lines = int(rng.integers(3, 15))
    n_over = n_lines // 3
    _lines(rng, img, xx, yy, W, H, n_lines - n_over)
    for _ in range(int(rng.integers(5, 30))):
        cx, cy, r = rng.uniform(0, W), rng.uniform(0, H), rng.uniform(1.0, 3.5)
        img[(xx - cx) ** 2 + (yy - cy) ** 2 <= r * r] = _any_colour(rng)
    boxes, classes = [], []
    smax = min(SIZE_MAX, 0.5 * min(W, H))
    for _ in range(int(rng.integers(1, MAX_SHAPES + 1))):
        cls = int(rng.integers(len(CLASSES)))
        w, h, thick = _shape_extent(rng, cls, rng.uniform(SIZE_MIN, smax))
        colour = hsv(rng.uniform(), rng.uniform(0.55, 1.0), rng.uniform(0.55, 1.0))
        for _attempt in range(30):
            cx = rng.uniform(w / 2 + 1, W - w / 2 - 1)
            cy = rng.uniform(h / 2 + 1, H - h / 2 - 1)
            box = (cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2)
            if all(_covers(box, b) <= OVERLAP_MAX for b in boxes):
                img[shape_mask(cls, xx, yy, cx, cy, w, h, thick)] = colour
                boxes.append(box)
                classes.append(cls)
                break
    _lines(rng, img, xx, yy, W, H, n_over)
    img += rng.normal(0, rng.uniform(2, 10), size=img.shape).astype(np.float32)
    img = np.clip(np.rint(img), 0, 255).astype(np.uint8)
    return img, np.array(boxes, np.float32).reshape(-1, 4), np.array(classes, np.int64)


def letterbox_geometry(W, H, size):
    """(new_w, new_h, pad_x, pad_y) exactly as zci_letterbox_compute computes them."""
    r = min(size / W, size / H)
    nw = min(size, max(1, int(math.floor(W * r + 0.5))))
    nh = min(size, max(1, int(math.floor(H * r + 0.5))))
    return nw, nh, (size - nw) // 2, (size - nh) // 2


def _resize_axis(n_src, n_dst):
    s = (np.arange(n_dst, dtype=np.float32) + 0.5) * np.float32(n_src / n_dst) - 0.5
    s = np.clip(s, 0, n_src - 1)
    i0 = np.floor(s).astype(np.int64)
    i1 = np.minimum(i0 + 1, n_src - 1)
    return i0, i1, (s - i0).astype(np.float32)


def letterbox(img, boxes, size, pad=114.0):
    """Bilinear (half-pixel centres) letterbox of an HxWx3 image to size x size, float32
    0..255, with the boxes mapped into the letterboxed image."""
    H, W = img.shape[:2]
    nw, nh, px, py = letterbox_geometry(W, H, size)
    x0, x1, fx = _resize_axis(W, nw)
    y0, y1, fy = _resize_axis(H, nh)
    f = img.astype(np.float32)
    top = f[y0][:, x0] * (1 - fx[None, :, None]) + f[y0][:, x1] * fx[None, :, None]
    bot = f[y1][:, x0] * (1 - fx[None, :, None]) + f[y1][:, x1] * fx[None, :, None]
    res = top * (1 - fy[:, None, None]) + bot * fy[:, None, None]
    out = np.full((size, size, 3), pad, np.float32)
    out[py:py + nh, px:px + nw] = res
    b = boxes.copy()
    b[:, [0, 2]] = b[:, [0, 2]] * (nw / W) + px
    b[:, [1, 3]] = b[:, [1, 3]] * (nh / H) + py
    return out, b


def write_png(path, img):
    """Writes an HxWx3 uint8 RGB image as PNG with the standard library only."""
    import struct
    import zlib

    h, w = img.shape[:2]
    raw = b"".join(b"\x00" + img[y].tobytes() for y in range(h))

    def chunk(tag, data):
        body = tag + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body) & 0xFFFFFFFF)

    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
                + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b""))


if __name__ == "__main__":
    import argparse

    ap = argparse.ArgumentParser(description="Writes one synthetic scene as a PNG and prints its ground truth.")
    ap.add_argument("out")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--size", default="", help="WxH (default: random, as in training)")
    a = ap.parse_args()
    W, H = (int(v) for v in a.size.split("x")) if a.size else (None, None)
    image, boxes, classes = make_scene(np.random.default_rng(a.seed), W, H)
    write_png(a.out, image)
    print(f"{a.out}: {image.shape[1]}x{image.shape[0]}")
    for b, c in zip(boxes, classes):
        print(f"  {CLASSES[c]:<10} {b[0]:7.1f} {b[1]:7.1f} {b[2]:7.1f} {b[3]:7.1f}")
