"""Person/background from MediaPipe selfie segmentation, split into head and torso with landmarks;
the static background image."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

# MediaPipe face-oval landmarks along the jaw, from cheek 454 (image right) via chin 152 to 234.
JAW = [454, 323, 361, 288, 397, 365, 379, 378, 400, 377, 152, 148, 176, 149, 150, 136, 172, 58, 132, 93, 234]
HEAD_SIDE_MARGIN = 0.6  # head extends this many face widths beyond the face (hair, ears)
# points whose convex hull is the face's outline, frontal or turned: the face oval, outer lips,
# nose, eye corners and brows
FACE_OUTLINE = sorted(set([
    10, 338, 297, 332, 284, 251, 389, 356, 454, 323, 361, 288, 397, 365, 379, 378, 400, 377, 152,
    148, 176, 149, 150, 136, 172, 58, 132, 93, 234, 127, 162, 21, 54, 103, 67, 109,
    61, 185, 40, 39, 37, 0, 267, 269, 270, 409, 291, 375, 321, 405, 314, 17, 84, 181, 91, 146,
    1, 4, 5, 6, 168, 195, 197, 48, 278, 98, 327, 33, 133, 263, 362, 70, 300, 105, 334,
]))
JAW_ANGLES = (172, 397)  # beside the face, the head reaches down to these (ears, hair)


class Segmenter:
    def __init__(self):
        import mediapipe as mp

        from .landmarks import quiet_native_stderr

        self._quiet = quiet_native_stderr
        # model 0: the general (256x256) model, suited to square head-and-shoulders frames
        with quiet_native_stderr():
            self._seg = mp.solutions.selfie_segmentation.SelfieSegmentation(model_selection=0)
        self._first = True

    def __call__(self, rgb: np.ndarray) -> np.ndarray:
        """Person probability [H, W] float32 in [0, 1]."""
        if self._first:
            self._first = False
            with self._quiet():
                res = self._seg.process(rgb)
        else:
            res = self._seg.process(rgb)
        return np.clip(res.segmentation_mask, 0.0, 1.0).astype(np.float32)

    def close(self):
        self._seg.close()


def fill_polygon(poly: np.ndarray, h: int, w: int) -> np.ndarray:
    """[H, W] bool: pixel centres inside the polygon [P, 2] (x, y), even-odd rule."""
    out = np.zeros((h, w), bool)
    x_lo, y_lo = (max(0, int(np.floor(v))) for v in poly.min(0))
    x_hi, y_hi = min(w, int(np.ceil(poly[:, 0].max())) + 1), min(h, int(np.ceil(poly[:, 1].max())) + 1)
    if x_hi <= x_lo or y_hi <= y_lo:
        return out
    out[y_lo:y_hi, x_lo:x_hi] = _fill(poly - np.array([x_lo, y_lo]), y_hi - y_lo, x_hi - x_lo)
    return out


def _fill(poly: np.ndarray, h: int, w: int) -> np.ndarray:
    x0, y0 = poly[:, 0], poly[:, 1]
    x1, y1 = np.roll(x0, -1), np.roll(y0, -1)
    yc = np.arange(h)[:, None] + 0.5  # [H,1]
    cross = (y0[None] <= yc) != (y1[None] <= yc)  # [H,E]
    with np.errstate(divide="ignore", invalid="ignore"):
        xi = x0[None] + (yc - y0[None]) * (x1 - x0)[None] / (y1 - y0)[None]
    big = float(w) + 1e6
    xi = np.sort(np.where(cross, np.clip(xi, -1.0, w + 1.0), big), axis=1)  # [H,E]
    # count crossings left of each pixel centre with one searchsorted over all rows at once
    e = xi.shape[1]
    offs = np.arange(h, dtype=np.float64)[:, None] * (2 * big)
    cols = np.arange(w) + 0.5
    idx = np.searchsorted((xi + offs).ravel(), (cols[None, :] + offs).ravel()).reshape(h, w)
    count = idx - (np.arange(h) * e)[:, None]
    return (count % 2) == 1


def head_region(lm2d: np.ndarray, h: int, w: int) -> np.ndarray:
    """[H, W] bool: where the head (face, hair, ears) may be. A polygon: the jaw line from one
    jaw angle via the chin to the other, then out sideways (ears, hair beside the face) to a
    margin of HEAD_SIDE_MARGIN face widths beyond the cheeks, and up to the top of the frame.
    Below the jaw (neck) and below the jaw angles beside it (shoulders, clothes) is torso. Works
    for turned heads (the nose may stick out past the face oval)."""
    jaw = lm2d[JAW, :2].astype(np.float64)
    a, b = JAW.index(JAW_ANGLES[1]), JAW.index(JAW_ANGLES[0])
    path = jaw[a : b + 1]  # angle (397) ... chin ... angle (172)
    xs = lm2d[:468, 0]
    fw = max(float(np.linalg.norm(lm2d[234, :2] - lm2d[454, :2])), 1.0)
    left_x = min(xs.min(), path[:, 0].min()) - HEAD_SIDE_MARGIN * fw
    right_x = max(xs.max(), path[:, 0].max()) + HEAD_SIDE_MARGIN * fw
    # the path runs from the image-right angle to the image-left one when the face looks at us
    if path[0, 0] < path[-1, 0]:
        path = path[::-1]
    top = -1.0
    poly = np.concatenate([
        path,
        [[left_x, path[-1, 1]], [left_x, top], [right_x, top], [right_x, path[0, 1]]],
    ])
    # the face itself is always head (a turned face's mouth or nose can cross the oval's outline)
    return fill_polygon(poly, h, w) | fill_polygon(convex_hull(lm2d[FACE_OUTLINE, :2]), h, w)


def convex_hull(p: np.ndarray) -> np.ndarray:
    """Convex hull [K, 2] of points [P, 2] (monotone chain), counterclockwise."""
    p = np.unique(np.asarray(p, np.float64), axis=0)
    if len(p) < 3:
        return p

    def half(pts):
        out = []
        for x, y in pts:
            while len(out) >= 2:
                (ax, ay), (bx, by) = out[-2], out[-1]
                if (bx - ax) * (y - ay) - (by - ay) * (x - ax) > 0:
                    break
                out.pop()
            out.append((x, y))
        return out

    pts = p.tolist()
    lower, upper = half(pts), half(pts[::-1])
    return np.array(lower[:-1] + upper[:-1])


def split_masks(person: np.ndarray, lm2d: np.ndarray) -> np.ndarray:
    """[H, W, 3] uint8 (head, torso, background), soft, summing to 255 per pixel."""
    h, w = person.shape
    head = head_region(lm2d, h, w)
    p = np.round(person * 255).astype(np.int32)
    out = np.empty((h, w, 3), np.uint8)
    out[..., 0] = np.where(head, p, 0)
    out[..., 1] = np.where(head, 0, p)
    out[..., 2] = 255 - p
    return out


def normalise_masks(masks: np.ndarray) -> np.ndarray:
    """Masks [..., 3] (head, torso, background) that a resampling or a lossy codec moved off the
    unit sum, as uint8 summing to 255 per pixel again: scaled to it, the background taking the
    rounding."""
    m = np.asarray(masks, dtype=np.float32)
    m = m * (255 / np.maximum(m.sum(-1, keepdims=True), 1))
    out = np.floor(m).astype(np.int16)
    out[..., 2] = 255 - out[..., 0] - out[..., 1]
    return out.clip(0, 255).astype(np.uint8)


def _dilate(mask: torch.Tensor, r: int) -> torch.Tensor:
    """Binary dilation of [K,H,W] bool by a (2r+1)^2 square, with box sums from cumulative sums."""
    x = mask.to(torch.int32)
    for dim in (1, 2):
        c = torch.cumsum(x, dim)
        c = torch.cat([torch.zeros_like(c.narrow(dim, 0, 1)), c], dim)
        n = x.shape[dim]
        lo = torch.clamp(torch.arange(n) - r, min=0)
        hi = torch.clamp(torch.arange(n) + r + 1, max=n)
        x = c.index_select(dim, hi) - c.index_select(dim, lo)
    return x > 0


def background_image(frames: list, bgprob: list, erode: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Per-pixel median over the sampled frames where that pixel is surely background, then
    inpainting (push-pull) where it never was. frames: [H,W,3] uint8; bgprob: [H,W] float in [0,1].

    Returns (image [H,W,3] uint8, seen [H,W] bool)."""
    m = torch.from_numpy(np.stack(bgprob)).float()  # [K,H,W]
    K, H, W = m.shape
    erode = erode if erode is not None else max(2, round(H / 40))
    # sure background: confident, and away from the person's (soft, imprecise) edge
    ok = (m > 0.95) & ~_dilate(m < 0.5, erode)  # [K,H,W]
    x = torch.from_numpy(np.stack(frames))  # [K,H,W,3] uint8
    out = torch.zeros(H, W, 3)
    nan = torch.tensor(float("nan"))
    for r0 in range(0, H, 64):
        xs = x[:, r0 : r0 + 64].permute(1, 2, 3, 0).float()  # [h,W,3,K]
        oks = ok[:, r0 : r0 + 64].permute(1, 2, 0)[:, :, None, :]
        v = torch.where(oks, xs, nan)
        out[r0 : r0 + 64] = torch.nanmedian(v, dim=-1).values
    seen = ok.any(0)
    out[~seen] = 0
    img = push_pull(out, seen)
    return img.round().clamp(0, 255).byte().numpy(), seen.numpy()


def push_pull(img: torch.Tensor, known: torch.Tensor) -> torch.Tensor:
    """Fill unknown pixels of img [H,W,3] from known ones by a multi-scale average (push-pull),
    then a few smoothing passes over the filled area."""
    if bool(known.all()):
        return img
    if not bool(known.any()):
        return img
    c = img.permute(2, 0, 1)[None] * known[None, None].float()
    w = known[None, None].float()
    pyr = [(c, w)]
    while min(pyr[-1][0].shape[-2:]) > 1:
        c2 = F.avg_pool2d(pyr[-1][0], 2, ceil_mode=True)
        w2 = F.avg_pool2d(pyr[-1][1], 2, ceil_mode=True)
        pyr.append((c2, w2))
    col = pyr[-1][0] / pyr[-1][1].clamp(min=1e-8)
    for c_l, w_l in reversed(pyr[:-1]):
        up = F.interpolate(col, size=c_l.shape[-2:], mode="bilinear", align_corners=False)
        mine = c_l / w_l.clamp(min=1e-8)
        a = w_l.clamp(max=1.0)
        col = torch.where(w_l > 0, a * mine + (1 - a) * up, up)
    filled = col[0].permute(1, 2, 0)
    res = torch.where(known[..., None], img, filled)
    # smooth the filled region a little (keeps the known pixels exact)
    unk = ~known
    r = res.permute(2, 0, 1)[None]
    for _ in range(10):
        b = F.avg_pool2d(F.pad(r, (2, 2, 2, 2), mode="replicate"), 5, stride=1)
        r = torch.where(unk[None, None], b, r)
    return r[0].permute(1, 2, 0)
