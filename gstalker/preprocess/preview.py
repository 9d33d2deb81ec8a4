"""preview.png: a few frames with mask overlays, landmarks, pose axes and the lip box, plus the
background image, so a user sees at a glance that tracking worked."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def _resize(img: np.ndarray, s: int) -> np.ndarray:
    t = torch.from_numpy(img).permute(2, 0, 1)[None].float()
    t = F.interpolate(t, size=(s, s), mode="bilinear", antialias=True, align_corners=False)
    return t[0].permute(1, 2, 0).clamp(0, 255).round().byte().numpy()


def _dot(img, x, y, color, r=1):
    h, w = img.shape[:2]
    xi, yi = int(round(x)), int(round(y))
    img[max(0, yi - r) : min(h, yi + r + 1), max(0, xi - r) : min(w, xi + r + 1)] = color


def _line(img, p0, p1, color, r=1):
    n = int(max(abs(p1[0] - p0[0]), abs(p1[1] - p0[1]))) + 1
    if n > 4000:  # far off-screen projection: skip
        return
    for a in np.linspace(0, 1, n):
        _dot(img, p0[0] + a * (p1[0] - p0[0]), p0[1] + a * (p1[1] - p0[1]), color, r)


def render_tile(frame, masks, lm2d, viewmat, K, lip_box, tile: int) -> np.ndarray:
    """One annotated frame: head tinted red, torso green; landmarks white (iris cyan); pose axes
    x red, y green, z blue from the head origin; lip box yellow."""
    h, w = frame.shape[:2]
    img = frame.astype(np.float32)
    head = masks[..., 0:1].astype(np.float32) / 255
    torso = masks[..., 1:2].astype(np.float32) / 255
    img = img * (1 - 0.45 * head) + np.array([255, 40, 40]) * 0.45 * head
    img = img * (1 - 0.45 * torso) + np.array([40, 255, 40]) * 0.45 * torso
    img = _resize(img.clip(0, 255).astype(np.uint8), tile).copy()
    s = tile / w
    for i, (x, y) in enumerate(lm2d[:, :2]):
        _dot(img, x * s, y * s, (0, 255, 255) if i >= 468 else (255, 255, 255), 0)
    # pose axes: canonical origin and unit-half axes projected with K and the viewmat
    P = np.array([[0, 0, 0], [0.5, 0, 0], [0, 0.5, 0], [0, 0, 0.5]], np.float64)
    X = P @ viewmat[:3, :3].T + viewmat[:3, 3]
    if (X[:, 2] > 1e-3).all():
        uv = np.stack([K[0, 0] * X[:, 0] / X[:, 2] + K[0, 2], K[1, 1] * X[:, 1] / X[:, 2] + K[1, 2]], -1) * s
        for j, col in zip((1, 2, 3), ((255, 0, 0), (0, 255, 0), (0, 80, 255))):
            _line(img, uv[0], uv[j], col, 1)
    x0, y0, x1, y1 = (np.asarray(lip_box) * s).tolist()
    for a, b in (((x0, y0), (x1, y0)), ((x1, y0), (x1, y1)), ((x1, y1), (x0, y1)), ((x0, y1), (x0, y0))):
        _line(img, a, b, (255, 230, 0), 0)
    return img


def make_grid(tiles: list, cols: int = 3) -> np.ndarray:
    t = tiles[0].shape[0]
    rows = (len(tiles) + cols - 1) // cols
    grid = np.full((rows * t + (rows - 1) * 4, cols * t + (cols - 1) * 4, 3), 255, np.uint8)
    for i, tl in enumerate(tiles):
        r, c = divmod(i, cols)
        grid[r * (t + 4) : r * (t + 4) + t, c * (t + 4) : c * (t + 4) + t] = tl
    return grid
