"""High-resolution mouth crops: the lip loss's ground truth at several times the frame's resolution.

At a 128-pixel training size the inner-lip gap of a medium shot varies by one or two pixels, too
little for a photometric loss to learn lip motion from. So preprocessing keeps, per frame, a
square around the lips (side `MOUTH_BOX` x the clip's median lip-box side, in training pixels)
sampled from the source video at `MOUTH_PX` x `MOUTH_PX` pixels; training renders the same square
through its own intrinsics at that resolution (`mouth_intrinsics`) and compares the two.

Boxes are in training-image pixels (x0, y0, x1, y1), one fixed side per clip, centred on each
frame's lips and kept inside the image.
"""

from __future__ import annotations

import numpy as np
import torch

MOUTH_BOX = 2.0  # box side / the clip's median lip-box side: lips, chin and the jaw's travel
MOUTH_PX = 128  # pixels per side of a stored crop
MIN_GAIN = 1.5  # below this many crop pixels per training pixel the frames themselves suffice


def mouth_boxes(lip_boxes: np.ndarray, size: int) -> np.ndarray:
    """[N, 4] lip boxes (training pixels) -> [N, 4] float32 square mouth boxes of one side."""
    side = min(float(np.median(lip_boxes[:, 2] - lip_boxes[:, 0])) * MOUTH_BOX, float(size))
    c = (lip_boxes[:, :2] + lip_boxes[:, 2:]) / 2
    x0 = np.clip(c[:, 0] - side / 2, 0, size - side)
    y0 = np.clip(c[:, 1] - side / 2, 0, size - side)
    return np.stack([x0, y0, x0 + side, y0 + side], -1).astype(np.float32)


def crop_gain(boxes: np.ndarray) -> float:
    """Crop pixels per training pixel."""
    return MOUTH_PX / float(boxes[0, 2] - boxes[0, 0])


def sample_crop(rgb: np.ndarray, box: np.ndarray, to_source) -> np.ndarray:
    """Resample `box` (training pixels) of a decoded frame `rgb` [h, w, 3] uint8 to MOUTH_PX^2.

    to_source(u, v) maps training-pixel coordinates to `rgb` pixel coordinates (continuous, pixel
    centres at +0.5). Bilinear at exact sub-pixel positions, so the crop lines up with a render of
    the same box; `rgb` should have about `crop_gain` pixels per training pixel (no aliasing)."""
    t = (np.arange(MOUTH_PX) + 0.5) / MOUTH_PX
    u = box[0] + t * (box[2] - box[0])
    v = box[1] + t * (box[3] - box[1])
    uu, vv = np.meshgrid(u, v)
    x, y = to_source(uu, vv)
    h, w = rgb.shape[:2]
    grid = torch.from_numpy(np.stack([x / w * 2 - 1, y / h * 2 - 1], -1)).float()[None]
    img = torch.from_numpy(rgb).permute(2, 0, 1)[None].float()
    out = torch.nn.functional.grid_sample(img, grid, mode="bilinear", padding_mode="border", align_corners=False)
    return out[0].permute(1, 2, 0).round().clamp(0, 255).byte().numpy()


def mouth_intrinsics(K: torch.Tensor, box, px: int = MOUTH_PX) -> torch.Tensor:
    """Intrinsics [3, 3] that render training-image `box` (x0, y0, x1, y1) onto px x px pixels."""
    x0, y0, x1, y1 = (float(v) for v in box)
    sx, sy = px / (x1 - x0), px / (y1 - y0)
    Kp = K.clone()
    Kp[0, 0], Kp[0, 2] = K[0, 0] * sx, (K[0, 2] - x0) * sx
    Kp[1, 1], Kp[1, 2] = K[1, 1] * sy, (K[1, 2] - y0) * sy
    return Kp
