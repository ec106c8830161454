#!/usr/bin/env python3
"""Trains the real YOLOv5s on the synthetic shapes scenes and writes it as the "yolov5s" test model.

    python tools/train_detector/train_yolov5s.py [--out /tmp/yolov5s_shapes.onnx] [--minutes 4]
        [--images 6000] [--val-images 200] [--batch 32] [--opt adamw|sgd] [--lr LR]
        [--device cuda|cpu] [--size 640] [--seed 0]

What for: tests/models/make_models.py builds "yolov5s" (Ultralytics v7.0 layout, 80 classes)
with random weights, which put some 10,000 of the 25,200 output rows above the score
threshold. The benchmark's "frame -> detections" needs a YOLOv5s that behaves like a trained
detector (tens of candidates per image). This script trains the same architecture on the
scenes of scenes.py (5 shape classes: only classes 0..4 of the 80 ever get positives) and
writes an ONNX whose graph is exactly make_models.build_yolov5("s")'s, with the trained,
BN-folded FP32 weights in place of the random initializers (same names, same shapes; the
grid / anchor_grid constants are make_models' own). Also saves the (unfused) state_dict next
to it as OUT.pt.

Needs torch, numpy, onnx and onnxruntime (for the final check). Meant for one CUDA GPU: on an
H100 with 16 CPU cores the default run takes --minutes (4) plus about half a minute, all of
it included: scene generation (parallel, about 40 ms per 640 x 640 scene and core, so some
15-25 s for 6,200 scenes), training until the time budget is used up (AMP, channels_last,
the whole uint8 dataset on the GPU, about 7.6 GB), evaluation, export and the onnxruntime
check. A CPU smoke test (results near zero, it only checks the plumbing):

    python tools/train_detector/train_yolov5s.py --device cpu --size 256 --images 64 \\
        --val-images 8 --batch 8 --minutes 1.5

Training follows YOLOv5 (utils/loss.py ComputeLoss, hyp.scratch-low): every ground-truth box
is a positive for each anchor whose width and height are within a factor 4 of the box's, at
the cell holding its centre and at the two neighbouring cells nearest the centre, on every
level; box loss 1 - CIoU with the YOLOv5 decoding, objectness BCE with the (detached) IoU as
target on the positives and 0 elsewhere (level weights 4, 1, 0.4), class BCE (80-way one-hot)
on the positives; gains box 0.05, obj 1.0 * (size / 640)^2, cls 0.5. Linear warm-up over the
first 5 % of the training time, then cosine to 1 % of the learning rate at the end of the time
budget (the loop stops on time, not on an epoch count). Augmentation: horizontal flips only
(every class is symmetric about its vertical axis, but the triangle is not upside down).

The input is what zcinfer's preprocessing gives: RGB, letterboxed with pad 114 (scenes.letterbox
does it exactly the same way), scaled by 1/255, NCHW float32. The output is YOLOv5's: output0
[1, 25200, 85], each row cx, cy, w, h in input pixels, objectness, 80 class scores (sigmoids).
"""
import time

T_START = time.time()  # the --minutes budget counts from here, before torch is imported

import argparse
import copy
import math
import mmap
import multiprocessing as mp
import os
import sys

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(REPO, "tests", "models"))
import make_models as mm  # noqa: E402  (numpy + onnx only)
import scenes  # noqa: E402
import train as small  # noqa: E402  (the small detector's trainer: box_iou, match)

NC, NA, NO = 80, 3, 85  # the yolov5s head: 80 classes, 3 anchors per level, 5 + 80 outputs
STRIDES = (8, 16, 32)
ANCHORS = torch.from_numpy(mm.YOLOV5_ANCHORS.copy())  # [level, anchor, (w, h)] input pixels
ANCHOR_T = 4.0  # an anchor is a positive for a box whose w and h are within this factor
BALANCE = (4.0, 1.0, 0.4)  # objectness loss weight per level (P3, P4, P5)
GAIN_BOX, GAIN_OBJ, GAIN_CLS = 0.05, 1.0, 0.5  # hyp.scratch-low (cls: 0.5 * nc / 80 * 3 / nl)
EXPORT_SIZE = 640  # make_models' graph is fixed at 1 x 3 x 640 x 640
RESERVE_S = 12.0  # seconds kept from the budget for evaluation, export and the check
WARMUP_FRAC = 0.05  # of the training time
MAX_NMS = 1000  # candidates per image that go into the (evaluation) NMS, best first


# ---- the model: Ultralytics module names, so that the state_dict keys are the initializer names

class Conv(nn.Module):
    """ultralytics Conv: Conv2d (no bias) + BatchNorm2d + SiLU."""

    def __init__(self, c1, c2, k=1, s=1, p=None):
        super().__init__()
        self.conv = nn.Conv2d(c1, c2, k, s, k // 2 if p is None else p, bias=False)
        self.bn = nn.BatchNorm2d(c2, eps=1e-3, momentum=0.03)  # Ultralytics' BN settings
        self.act = nn.SiLU(inplace=True)

    def forward(self, x):
        return self.act(self.bn(self.conv(x)))

    def folded(self):
        """(weight, bias) of the conv with the batch norm folded in, float32 numpy, as
        Ultralytics' fuse() does before export."""
        bn = self.bn
        scale = bn.weight.detach().double() / torch.sqrt(bn.running_var.double() + bn.eps)
        w = self.conv.weight.detach().double() * scale[:, None, None, None]
        b = bn.bias.detach().double() - bn.running_mean.double() * scale
        return w.float().cpu().numpy(), b.float().cpu().numpy()


class Bottleneck(nn.Module):
    def __init__(self, c1, c2, shortcut=True):
        super().__init__()
        self.cv1 = Conv(c1, c2, 1)
        self.cv2 = Conv(c2, c2, 3)
        self.add = shortcut and c1 == c2

    def forward(self, x):
        y = self.cv2(self.cv1(x))
        return x + y if self.add else y


class C3(nn.Module):
    """cv3(cat(m(cv1(x)), cv2(x))), m = n Bottlenecks with expansion 1."""

    def __init__(self, c1, c2, n=1, shortcut=True):
        super().__init__()
        c_ = int(c2 * 0.5)
        self.cv1 = Conv(c1, c_, 1)
        self.cv2 = Conv(c1, c_, 1)
        self.cv3 = Conv(2 * c_, c2, 1)
        self.m = nn.Sequential(*(Bottleneck(c_, c_, shortcut) for _ in range(n)))

    def forward(self, x):
        return self.cv3(torch.cat((self.m(self.cv1(x)), self.cv2(x)), 1))


class SPPF(nn.Module):
    def __init__(self, c1, c2, k=5):
        super().__init__()
        c_ = c1 // 2
        self.cv1 = Conv(c1, c_, 1)
        self.cv2 = Conv(c_ * 4, c2, 1)
        self.m = nn.MaxPool2d(k, 1, k // 2)

    def forward(self, x):
        x = self.cv1(x)
        y1 = self.m(x)
        y2 = self.m(y1)
        return self.cv2(torch.cat((x, y1, y2, self.m(y2)), 1))


class Concat(nn.Module):
    def forward(self, xs):
        return torch.cat(xs, 1)


class Detect(nn.Module):
    """The YOLOv5 head: one 1x1 conv per level. raw() gives [B, na, ny, nx, no] logits,
    decode() the exported output [B, N, no] (make_models.yolov5_detect, step by step)."""

    def __init__(self, chans):
        super().__init__()
        self.m = nn.ModuleList(nn.Conv2d(c, NA * NO, 1) for c in chans)
        self.register_buffer("anchors", ANCHORS.clone(), persistent=False)
        self._grids = {}
        for mi, s in zip(self.m, STRIDES):  # Ultralytics' _initialize_biases
            b = mi.bias.data.view(NA, NO)
            b[:, 4] += math.log(8 / (640 / s) ** 2)  # about 8 objects per 640 x 640 image
            b[:, 5:] += math.log(0.6 / (NC - 0.99))  # class prior

    def raw(self, xs):
        out = []
        for mi, x in zip(self.m, xs):
            y = mi(x)
            bs, _, ny, nx = y.shape
            out.append(y.view(bs, NA, NO, ny, nx).permute(0, 1, 3, 4, 2))
        return out

    def grid(self, i, ny, nx, device):
        key = (i, ny, nx, device)
        if key not in self._grids:
            yv, xv = torch.meshgrid(torch.arange(ny, device=device), torch.arange(nx, device=device),
                                    indexing="ij")
            g = torch.stack((xv, yv), 2).view(1, 1, ny, nx, 2).float() - 0.5
            self._grids[key] = (g, self.anchors[i].to(device).view(1, NA, 1, 1, 2))
        return self._grids[key]

    def decode(self, raws):
        z = []
        for i, r in enumerate(raws):
            bs, _, ny, nx, _ = r.shape
            grid, anchor_grid = self.grid(i, ny, nx, r.device)
            y = r.float().sigmoid()
            xy = (y[..., 0:2] * 2 + grid) * STRIDES[i]
            wh = (y[..., 2:4] * 2) ** 2 * anchor_grid
            z.append(torch.cat((xy, wh, y[..., 4:]), 4).reshape(bs, -1, NO))
        return torch.cat(z, 1)


# layer index -> the layers its input comes from (the others take the previous layer's output)
FROM = {12: (11, 6), 16: (15, 4), 19: (18, 14), 22: (21, 10)}


class YOLOv5s(nn.Module):
    """yolov5s.yaml (v7.0): width 0.5, depth 0.33; the same topology as make_models.build_yolov5."""

    def __init__(self):
        super().__init__()
        ch = lambda c: mm.make_divisible(c * 0.50)  # noqa: E731
        n = lambda k: mm.scale_depth(k, 0.33)  # noqa: E731
        up = lambda: nn.Upsample(scale_factor=2.0, mode="nearest")  # noqa: E731
        self.model = nn.ModuleList([
            Conv(3, ch(64), 6, 2, 2),                       # 0  P1/2
            Conv(ch(64), ch(128), 3, 2),                    # 1  P2/4
            C3(ch(128), ch(128), n(3)),                     # 2
            Conv(ch(128), ch(256), 3, 2),                   # 3  P3/8
            C3(ch(256), ch(256), n(6)),                     # 4
            Conv(ch(256), ch(512), 3, 2),                   # 5  P4/16
            C3(ch(512), ch(512), n(9)),                     # 6
            Conv(ch(512), ch(1024), 3, 2),                  # 7  P5/32
            C3(ch(1024), ch(1024), n(3)),                   # 8
            SPPF(ch(1024), ch(1024)),                       # 9
            Conv(ch(1024), ch(512), 1, 1),                  # 10
            up(),                                           # 11
            Concat(),                                       # 12 cat backbone P4
            C3(ch(1024), ch(512), n(3), False),             # 13
            Conv(ch(512), ch(256), 1, 1),                   # 14
            up(),                                           # 15
            Concat(),                                       # 16 cat backbone P3
            C3(ch(512), ch(256), n(3), False),              # 17 (P3/8 out)
            Conv(ch(256), ch(256), 3, 2),                   # 18
            Concat(),                                       # 19 cat head P4
            C3(ch(512), ch(512), n(3), False),              # 20 (P4/16 out)
            Conv(ch(512), ch(512), 3, 2),                   # 21
            Concat(),                                       # 22 cat head P5
            C3(ch(1024), ch(1024), n(3), False),            # 23 (P5/32 out)
            Detect((ch(256), ch(512), ch(1024))),           # 24
        ])

    @property
    def detect(self):
        return self.model[24]

    def raw(self, x):
        y = [None] * 24
        for i in range(24):
            inp = [y[j] for j in FROM[i]] if i in FROM else (x if i == 0 else y[i - 1])
            y[i] = self.model[i](inp)
        return self.detect.raw([y[17], y[20], y[23]])

    def forward(self, x):
        return self.detect.decode(self.raw(x))

    def folded_weights(self):
        """{make_models initializer name: float32 array} with the batch norms folded."""
        out = {}
        for name, m in self.named_modules():
            if isinstance(m, Conv):
                out[f"{name}.conv.weight"], out[f"{name}.conv.bias"] = m.folded()
        for i, mi in enumerate(self.detect.m):
            out[f"model.24.m.{i}.weight"] = mi.weight.detach().float().cpu().numpy()
            out[f"model.24.m.{i}.bias"] = mi.bias.detach().float().cpu().numpy()
        return out


# ---- loss (YOLOv5 utils/loss.py ComputeLoss, vectorised)

def build_targets(targets, shapes):
    """targets [nt, 6] (image, class, cx, cy, w, h) in input pixels; shapes: (ny, nx) per level.
    Per level: (image, anchor, gj, gi, target box [n, 4] (xy offset in the cell, wh) in grid
    units, anchor wh [n, 2] in grid units, class)."""
    dev, nt = targets.device, targets.shape[0]
    ai = torch.arange(NA, device=dev, dtype=torch.float32).view(NA, 1).repeat(1, nt)
    t_all = torch.cat((targets.repeat(NA, 1, 1), ai[..., None]), 2)  # [na, nt, 7]: + anchor index
    off = torch.tensor([[0, 0], [1, 0], [0, 1], [-1, 0], [0, -1]], device=dev, dtype=torch.float32) * 0.5
    out = []
    for i, (ny, nx) in enumerate(shapes):
        s = STRIDES[i]
        anchors = ANCHORS[i].to(dev) / s
        t = t_all.clone()
        t[..., 2:6] /= s
        r = t[..., 4:6] / anchors[:, None]
        t = t[torch.max(r, 1 / r).max(2)[0] < ANCHOR_T]  # anchors that fit the box
        # the centre cell plus the neighbours on the sides the centre is nearest to
        gxy = t[:, 2:4]
        gxi = torch.tensor([nx, ny], device=dev, dtype=torch.float32) - gxy
        j, k = ((gxy % 1 < 0.5) & (gxy > 1)).T
        l, m = ((gxi % 1 < 0.5) & (gxi > 1)).T
        sel = torch.stack((torch.ones_like(j), j, k, l, m))
        t = t.repeat((5, 1, 1))[sel]
        offsets = (torch.zeros_like(gxy)[None] + off[:, None])[sel]
        b, c, a = t[:, 0].long(), t[:, 1].long(), t[:, 6].long()
        gxy, gwh = t[:, 2:4], t[:, 4:6]
        gij = (gxy - offsets).long()
        gi, gj = gij[:, 0].clamp(0, nx - 1), gij[:, 1].clamp(0, ny - 1)
        out.append((b, a, gj, gi, torch.cat((gxy - gij, gwh), 1), anchors[a], c))
    return out


def ciou(p, t, eps=1e-7):
    """CIoU of boxes p, t [n, 4] (cx, cy, w, h)."""
    (x1, y1, w1, h1), (x2, y2, w2, h2) = p.unbind(1), t.unbind(1)
    b1x1, b1x2, b1y1, b1y2 = x1 - w1 / 2, x1 + w1 / 2, y1 - h1 / 2, y1 + h1 / 2
    b2x1, b2x2, b2y1, b2y2 = x2 - w2 / 2, x2 + w2 / 2, y2 - h2 / 2, y2 + h2 / 2
    inter = (torch.min(b1x2, b2x2) - torch.max(b1x1, b2x1)).clamp(0) * \
            (torch.min(b1y2, b2y2) - torch.max(b1y1, b2y1)).clamp(0)
    union = w1 * h1 + w2 * h2 - inter + eps
    iou = inter / union
    cw = torch.max(b1x2, b2x2) - torch.min(b1x1, b2x1)  # enclosing box
    ch = torch.max(b1y2, b2y2) - torch.min(b1y1, b2y1)
    c2 = cw ** 2 + ch ** 2 + eps
    rho2 = (x2 - x1) ** 2 + (y2 - y1) ** 2
    v = (4 / math.pi ** 2) * (torch.atan(w2 / (h2 + eps)) - torch.atan(w1 / (h1 + eps))) ** 2
    with torch.no_grad():
        alpha = v / (v - iou + (1 + eps))
    return iou - (rho2 / c2 + v * alpha)


def compute_loss(raws, tg, size):
    """raws: Detect.raw() per level, tg: build_targets(); returns (loss * batch, [box, obj, cls]
    detached)."""
    dev = raws[0].device
    lbox, lobj, lcls = (torch.zeros((), device=dev) for _ in range(3))
    for i, r in enumerate(raws):
        r = r.float()
        b, a, gj, gi, tbox, anch, tcls = tg[i]
        tobj = torch.zeros(r.shape[:4], device=dev)
        n = b.shape[0]
        if n:
            ps = r[b, a, gj, gi]
            pxy = ps[:, 0:2].sigmoid() * 2 - 0.5
            pwh = (ps[:, 2:4].sigmoid() * 2) ** 2 * anch
            iou = ciou(torch.cat((pxy, pwh), 1), tbox)
            lbox = lbox + (1.0 - iou).mean()
            tobj[b, a, gj, gi] = iou.detach().clamp(0)
            tc = torch.zeros_like(ps[:, 5:])
            tc[torch.arange(n, device=dev), tcls] = 1.0
            lcls = lcls + F.binary_cross_entropy_with_logits(ps[:, 5:], tc)
        lobj = lobj + BALANCE[i] * F.binary_cross_entropy_with_logits(r[..., 4], tobj)
    lbox, lobj, lcls = GAIN_BOX * lbox, GAIN_OBJ * (size / 640) ** 2 * lobj, GAIN_CLS * lcls
    bs = raws[0].shape[0]
    return (lbox + lobj + lcls) * bs, torch.stack((lbox, lobj, lcls)).detach()


# ---- data: scenes generated in parallel straight into one shared uint8 buffer

_SHARED = {}  # set before the pool forks: "buf" (anonymous shared mmap), "size"


def _gen_chunk(job):
    """Worker: scenes [start, stop) of one split, letterboxed into the shared buffer at row
    `base + k`. Each scene has its own seed, so the data do not depend on the worker count."""
    base, start, stop, seed, split = job
    size = _SHARED["size"]
    imgs = np.frombuffer(_SHARED["buf"], np.uint8).reshape(-1, size, size, 3)
    labels = []
    for k in range(start, stop):
        img, boxes, cls = scenes.make_scene(np.random.default_rng([seed, split, k]))
        lb, b = scenes.letterbox(img, boxes, size)
        imgs[base + k] = np.clip(np.rint(lb), 0, 255).astype(np.uint8)
        labels.append(np.concatenate([cls[:, None].astype(np.float32), b], 1))
    return base + start, labels


def _build_reference_onnx():
    """Worker: make_models' yolov5s (random weights) as serialized bytes; ~6 s of numpy."""
    return mm.build_yolov5("s").SerializeToString()


def make_datasets(n_train, n_val, size, seed, workers):
    """Returns (images [n_train + n_val, size, size, 3] uint8 (train first), labels list of
    [n, 5] (class, x1, y1, x2, y2) in input pixels, reference ONNX bytes). The ONNX reference
    is built by one of the workers meanwhile."""
    n = n_train + n_val
    buf = mmap.mmap(-1, max(1, n * size * size * 3))  # MAP_SHARED | MAP_ANONYMOUS: the workers write in
    _SHARED.update(buf=buf, size=size)
    chunk = 16
    jobs = [(0, s, min(s + chunk, n_train), seed, 0) for s in range(0, n_train, chunk)]
    jobs += [(n_train, s, min(s + chunk, n_val), seed, 1) for s in range(0, n_val, chunk)]
    labels = [None] * n
    t0, done, next_report = time.time(), 0, 0.1
    with mp.get_context("fork").Pool(workers) as pool:
        onnx_job = pool.apply_async(_build_reference_onnx)
        for first, labs in pool.imap_unordered(_gen_chunk, jobs):
            labels[first:first + len(labs)] = labs
            done += len(labs)
            if done >= next_report * n or done == n:
                dt = time.time() - t0
                print(f"  scenes: {done}/{n} in {dt:.1f} s ({done / max(dt, 1e-9):.0f}/s)", flush=True)
                next_report += 0.1
        onnx_bytes = onnx_job.get()
    return np.frombuffer(buf, np.uint8)[:n * size * size * 3].reshape(n, size, size, 3), labels, onnx_bytes


def batch_targets(labels, flips, size):
    """[(class, x1, y1, x2, y2)] per image (+ horizontal flip flags) -> [nt, 6] (image, class,
    cx, cy, w, h) float32 numpy."""
    rows = []
    for j, (lab, flip) in enumerate(zip(labels, flips)):
        cx, cy = (lab[:, 1] + lab[:, 3]) / 2, (lab[:, 2] + lab[:, 4]) / 2
        if flip:
            cx = size - cx
        rows.append(np.stack([np.full(len(lab), j, np.float32), lab[:, 0], cx, cy,
                              lab[:, 3] - lab[:, 1], lab[:, 4] - lab[:, 2]], 1))
    return np.concatenate(rows, 0).astype(np.float32) if rows else np.zeros((0, 6), np.float32)


def to_input(imgs_u8):
    """[B, H, W, 3] uint8 (numpy or tensor) -> [B, 3, H, W] float32 in [0, 1], channels_last."""
    x = torch.as_tensor(imgs_u8).permute(0, 3, 1, 2)  # an NHWC buffer is a channels_last NCHW
    return x.float().div_(255.0)


# ---- evaluation

def nms(boxes, scores, classes, iou_thr):
    """Class-aware greedy NMS (numpy), scores descending; returns the kept indices."""
    order = np.lexsort((np.arange(len(scores)), -scores))[:MAX_NMS]
    b, c = boxes[order], classes[order]
    iw = np.clip(np.minimum(b[:, None, 2], b[None, :, 2]) - np.maximum(b[:, None, 0], b[None, :, 0]), 0, None)
    ih = np.clip(np.minimum(b[:, None, 3], b[None, :, 3]) - np.maximum(b[:, None, 1], b[None, :, 1]), 0, None)
    inter = iw * ih
    area = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    over = (inter > iou_thr * (area[:, None] + area[None, :] - inter)) & (c[:, None] == c[None, :])
    keep, gone = [], np.zeros(len(order), bool)
    for i in range(len(order)):
        if not gone[i]:
            keep.append(i)
            gone |= over[i]
    return order[keep]


def evaluate(model, imgs, labels, device, conf=0.25, iou=0.45, batch=32):
    """(precision, recall, mean candidates per image, max candidates) at IoU 0.5. A candidate is
    an output row with objectness > conf and objectness * best class > conf (zcinfer's rule)."""
    was_training = model.training
    model.eval()
    tp = nd = ng = 0
    counts = []
    with torch.no_grad():
        for k in range(0, len(imgs), batch):
            x = to_input(imgs[k:k + batch]).to(device)
            pred = model(x)
            obj = pred[..., 4]
            best, cls = pred[..., 5:].max(-1)
            score = obj * best
            sel = (obj > conf) & (score > conf)
            cnt = sel.sum(1).cpu().numpy()
            rows = torch.cat((pred[..., :4], score[..., None], cls[..., None].float()), -1)[sel].cpu().numpy()
            counts += list(cnt)
            for j, r in enumerate(np.split(rows, np.cumsum(cnt)[:-1])):
                boxes = np.stack([r[:, 0] - r[:, 2] / 2, r[:, 1] - r[:, 3] / 2,
                                  r[:, 0] + r[:, 2] / 2, r[:, 1] + r[:, 3] / 2], 1)
                keep = nms(boxes, r[:, 4], r[:, 5].astype(np.int64), iou)
                lab = labels[k + j]
                t, d, g = small.match(boxes[keep], r[keep, 5].astype(np.int64), lab[:, 1:],
                                      lab[:, 0].astype(np.int64))
                tp, nd, ng = tp + t, nd + d, ng + g
    model.train(was_training)
    return tp / max(nd, 1), tp / max(ng, 1), float(np.mean(counts)), int(np.max(counts))


# ---- export and check

def export_onnx(model, reference_bytes, path):
    """make_models' yolov5s graph with every weight replaced by the trained, folded one."""
    import onnx
    from onnx import numpy_helper

    proto = onnx.ModelProto.FromString(reference_bytes)
    inits = {t.name: t for t in proto.graph.initializer}
    ours = model.folded_weights()
    missing = sorted(k for k in ours if k not in inits)
    shapes = sorted(f"{k}: ours {list(v.shape)} vs graph {list(inits[k].dims)}" for k, v in ours.items()
                    if k in inits and list(v.shape) != list(inits[k].dims))
    constants = {f"model.24.{w}.{i}" for w in ("grid", "anchor_grid") for i in range(3)}
    untouched = sorted(k for k in inits if k not in ours and k not in constants)
    if missing or shapes or untouched:
        sys.exit("export: the model does not match make_models' yolov5s:\n"
                 + "".join(f"  not in the graph: {k}\n" for k in missing)
                 + "".join(f"  shape: {s}\n" for s in shapes)
                 + "".join(f"  initializer left untouched: {k}\n" for k in untouched))
    # the decoding constants stay make_models'; check that they are the ones we trained with
    for i, s in enumerate(STRIDES):
        g = EXPORT_SIZE // s
        grid, anchor_grid = model.detect.grid(i, g, g, torch.device("cpu"))
        for name, ref in ((f"model.24.grid.{i}", grid), (f"model.24.anchor_grid.{i}", anchor_grid)):
            arr = numpy_helper.to_array(inits[name])
            if not np.array_equal(arr, np.broadcast_to(ref.numpy(), arr.shape)):
                sys.exit(f"export: {name} differs from the decoding used in training")
    for k, v in ours.items():
        inits[k].CopyFrom(numpy_helper.from_array(np.ascontiguousarray(v, np.float32), k))
    proto.graph.name = "yolov5s"  # as make_models.write_model names it
    proto.doc_string = ("YOLOv5s (v7.0 layout), opset 17, trained on zcinfer's synthetic shapes scenes "
                        "(classes 0-4: " + ",".join(scenes.CLASSES) + "; 5-79 unused) by "
                        "tools/train_detector/train_yolov5s.py; input RGB 640x640 letterboxed (pad 114), "
                        "scaled 1/255")
    onnx.checker.check_model(proto, full_check=True)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    onnx.save(proto, path)
    return len(ours)


def check_onnx(model, path, seed):
    """Runs the ONNX (onnxruntime, CPU) and the torch model (CPU, FP32, eval) on two validation
    scenes letterboxed to 640; returns (max abs error of the boxes, of the scores)."""
    import onnxruntime as ort

    xs = []
    for k in range(2):  # the first two validation scenes, at the export size
        img, boxes, _ = scenes.make_scene(np.random.default_rng([seed, 1, k]))
        lb, _ = scenes.letterbox(img, boxes, EXPORT_SIZE)
        xs.append(np.clip(np.rint(lb), 0, 255).astype(np.uint8))
    x = to_input(np.stack(xs)).contiguous()
    ref = copy.deepcopy(model).cpu().float().eval()
    with torch.no_grad():
        want = ref(x).numpy()
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    got = np.concatenate([sess.run(["output0"], {"images": x[k:k + 1].numpy()})[0] for k in range(2)])
    if got.shape != want.shape:
        sys.exit(f"check: onnxruntime output {got.shape} vs torch {want.shape}")
    return float(np.abs(got[..., :4] - want[..., :4]).max()), float(np.abs(got[..., 4:] - want[..., 4:]).max())


# ---- training

def make_optimizer(model, opt, lr):
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        (decay if p.ndim > 1 else no_decay).append(p)  # conv weights; not BN or biases
    groups = [{"params": decay}, {"params": no_decay, "weight_decay": 0.0}]
    if opt == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=0.937, nesterov=True, weight_decay=5e-4)
    return torch.optim.AdamW(groups, lr=lr, betas=(0.937, 0.999), weight_decay=0.01)


def lr_factor(frac):
    """Linear warm-up, then cosine from 1 to 0.01 over the rest of the training time."""
    if frac < WARMUP_FRAC:
        return max(frac / WARMUP_FRAC, 0.01)
    f = min((frac - WARMUP_FRAC) / (1 - WARMUP_FRAC), 1.0)
    return 0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * f))


def main():
    t_start = T_START
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="/tmp/yolov5s_shapes.onnx")
    ap.add_argument("--minutes", type=float, default=4.0,
                    help="wall time budget of the whole run (data, training, export, check)")
    ap.add_argument("--images", type=int, default=6000)
    ap.add_argument("--val-images", type=int, default=200)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--opt", choices=("adamw", "sgd"), default="adamw")
    ap.add_argument("--lr", type=float, default=None, help="default: 1e-3 (adamw), 1e-2 (sgd)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--size", type=int, default=640,
                    help="training / evaluation input size (multiple of 32); the export is always 640")
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    a = ap.parse_args()
    if a.size % 32:
        ap.error("--size must be a multiple of 32")
    lr0 = a.lr if a.lr is not None else (1e-3 if a.opt == "adamw" else 1e-2)
    deadline = t_start + a.minutes * 60.0
    torch.manual_seed(a.seed)

    # 1. data (forks the workers before anything touches CUDA)
    print(f"generating {a.images} + {a.val_images} scenes at {a.size} x {a.size} on {a.workers} processes",
          flush=True)
    t0 = time.time()
    all_imgs, all_labels, onnx_bytes = make_datasets(a.images, a.val_images, a.size, a.seed, a.workers)
    labels, vlabels = all_labels[:a.images], all_labels[a.images:]
    print(f"dataset: {a.images} train, {a.val_images} val in {time.time() - t0:.1f} s "
          f"({all_imgs.nbytes / 1e9:.2f} GB), {sum(map(len, labels)) / max(a.images, 1):.1f} boxes/image",
          flush=True)

    # 2. model and data on the device
    device = torch.device(a.device)
    cuda = device.type == "cuda"
    if cuda:
        torch.backends.cudnn.benchmark = True
    model = YOLOv5s().to(device).to(memory_format=torch.channels_last)
    print(f"yolov5s: {sum(p.numel() for p in model.parameters()) / 1e6:.3f} M parameters, "
          f"device {device}{' (' + torch.cuda.get_device_name(device) + ')' if cuda else ''}", flush=True)
    data = torch.from_numpy(all_imgs).to(device) if cuda else torch.from_numpy(all_imgs)
    imgs, vimgs = data[:a.images], data[a.images:]
    opt = make_optimizer(model, a.opt, lr0)
    scaler = torch.amp.GradScaler("cuda", enabled=cuda)
    rng = np.random.default_rng(a.seed + 100)

    def step(idx, update=True):
        flips = rng.uniform(size=len(idx)) < 0.5
        x = to_input(imgs[torch.from_numpy(idx).to(data.device)])
        f = torch.from_numpy(flips).to(device)[:, None, None, None]
        x = torch.where(f, x.flip(3), x)  # channels_last is kept
        tg = torch.from_numpy(batch_targets([labels[i] for i in idx], flips, a.size)).to(device)
        # before the forward: the boolean indexing in there waits for the GPU
        tg = build_targets(tg, [(a.size // s, a.size // s) for s in STRIDES])
        with torch.autocast(device_type="cuda", dtype=torch.float16, enabled=cuda):
            loss, parts = compute_loss(model.raw(x), tg, a.size)
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        if update:
            scaler.unscale_(opt)
            torch.nn.utils.clip_grad_norm_(model.parameters(), 10.0)
            scaler.step(opt)
            scaler.update()
        return loss.detach(), parts

    # 3. train until the budget (less what evaluation, export and the check need) is used
    steps_per_epoch = max(1, a.images // a.batch)
    model.train()
    t1 = time.time()
    step(rng.permutation(a.images)[:a.batch], update=False)  # untimed: lets cudnn pick its kernels
    if cuda:
        torch.cuda.synchronize()
    t_train = time.time()
    budget = deadline - RESERVE_S - t_train
    print(f"first step {t_train - t1:.1f} s; training for {budget:.0f} s "
          f"({a.opt}, lr {lr0:g}, batch {a.batch}, {steps_per_epoch} steps/epoch)", flush=True)
    if budget <= 0:
        sys.exit("no time left to train: raise --minutes or lower --images")
    nstep, epoch, done = 0, 0, False
    while not done:
        perm = rng.permutation(a.images)
        te, acc, n_ep = time.time(), torch.zeros(4, device=device), 0
        for k in range(steps_per_epoch):
            frac = (time.time() - t_train) / budget
            if frac >= 1.0:
                done = True
                break
            for g in opt.param_groups:
                g["lr"] = lr0 * lr_factor(frac)
            loss, parts = step(perm[k * a.batch:(k + 1) * a.batch])
            acc += torch.cat((loss[None] / a.batch, parts))
            nstep, n_ep = nstep + 1, n_ep + 1
        if n_ep:
            epoch += 1
            l, lb, lo, lc = (acc / n_ep).tolist()
            dt = time.time() - te
            print(f"epoch {epoch}{' (part)' if done else ''}: {n_ep} steps, loss {l:.4f} (box {lb:.4f} "
                  f"obj {lo:.4f} cls {lc:.4f}), lr {opt.param_groups[0]['lr']:.2e}, "
                  f"{n_ep * a.batch / dt:.0f} img/s, {time.time() - t_start:.0f} s elapsed", flush=True)
    ckpt = os.path.splitext(a.out)[0] + ".pt"  # the unfused weights, in case the export fails
    os.makedirs(os.path.dirname(os.path.abspath(ckpt)), exist_ok=True)
    torch.save(model.state_dict(), ckpt)
    print(f"trained {nstep} steps ({nstep * a.batch / max(a.images, 1):.1f} epochs) in "
          f"{time.time() - t_train:.0f} s; state_dict in {ckpt}", flush=True)

    # 4. evaluate on the validation scenes
    t2 = time.time()
    p, r, cand, cand_max = evaluate(model, vimgs, vlabels, device)
    print(f"val ({a.val_images} images at {a.size}, conf 0.25, NMS IoU 0.45, match IoU 0.5): precision {p:.3f} "
          f"recall {r:.3f}; candidates (obj * cls > 0.25) per image: mean {cand:.1f}, max {cand_max} "
          f"[{time.time() - t2:.1f} s]", flush=True)

    # 5. export into make_models' graph, 6. check it against torch with onnxruntime
    t3 = time.time()
    model = model.float().eval().to(memory_format=torch.contiguous_format)
    n_w = export_onnx(model, onnx_bytes, a.out)
    print(f"exported {n_w} trained tensors into make_models' yolov5s graph: {a.out} "
          f"({os.path.getsize(a.out) / 1e6:.1f} MB) [{time.time() - t3:.1f} s]", flush=True)
    t4 = time.time()
    box_err, score_err = check_onnx(model, a.out, a.seed)
    ok = score_err <= 1e-3 and box_err <= 0.05
    print(f"onnxruntime vs torch (FP32, 2 scenes at 640): max abs error boxes {box_err:.2e} px, "
          f"scores {score_err:.2e} -> {'ok' if ok else 'FAILED'} [{time.time() - t4:.1f} s]", flush=True)
    if not ok:
        sys.exit(1)
    print(f"total {time.time() - t_start:.0f} s (budget {a.minutes * 60:.0f} s)")
    print(f"TRAINED yolov5s: precision {p:.3f} recall {r:.3f}, candidates/img {cand:.1f}, wrote {a.out}",
          flush=True)


if __name__ == "__main__":
    main()
