"""Eye openness and the lip box from landmarks."""

from __future__ import annotations

import numpy as np

RIGHT_EYE = [33, 246, 161, 160, 159, 158, 157, 173, 133, 155, 154, 153, 145, 144, 163, 7]  # image left
LEFT_EYE = [263, 466, 388, 387, 386, 385, 384, 398, 362, 382, 381, 380, 374, 373, 390, 249]
OUTER_LIPS = [61, 185, 40, 39, 37, 0, 267, 269, 270, 409, 291, 375, 321, 405, 314, 17, 84, 181, 91, 146]
INNER_LIPS = [78, 191, 80, 81, 82, 13, 312, 311, 310, 415, 308, 324, 318, 402, 317, 14, 87, 178, 88, 95]
JAW_LINE = [152, 148, 176, 149, 150, 377, 400, 378, 379]
# the face-mesh points that speech moves (lips and chin): the trainer's landmark term
SPEECH_POINTS = OUTER_LIPS + INNER_LIPS + JAW_LINE
LIP_PAD = 1.4  # lip box: a square of side 1.4 x the lips' larger extent


def _area(poly: np.ndarray) -> np.ndarray:
    x, y = poly[..., 0], poly[..., 1]
    return 0.5 * np.abs((x * np.roll(y, -1, -1) - np.roll(x, -1, -1) * y).sum(-1))


def eye_openness(lm2d: np.ndarray, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """(eye [N] in [0, 1] normalised over the video, eye_area [N] = open-eye area / image area).

    `eye` uses the eye area relative to the squared eye-corner distance (so moving closer to the
    camera does not open the eyes), mapped so the video's 1st percentile is 0 and 99th is 1."""
    h, w = size
    a = (_area(lm2d[:, RIGHT_EYE, :2]) + _area(lm2d[:, LEFT_EYE, :2])) / 2
    area = (a / (h * w)).astype(np.float32)
    span = (np.linalg.norm(lm2d[:, 33, :2] - lm2d[:, 133, :2], axis=-1) +
            np.linalg.norm(lm2d[:, 263, :2] - lm2d[:, 362, :2], axis=-1)) / 2
    r = a / np.maximum(span, 1e-6) ** 2
    lo, hi = np.percentile(r, [1, 99])
    eye = np.clip((r - lo) / max(hi - lo, 1e-8), 0, 1).astype(np.float32)
    return eye, area


def lip_boxes(lm2d: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """[N, 4] float32 (x0, y0, x1, y1) pixels: a square around the lips, padded, inside the image."""
    h, w = size
    p = lm2d[:, OUTER_LIPS, :2]
    lo, hi = p.min(1), p.max(1)
    c = (lo + hi) / 2
    side = np.minimum(np.maximum(hi - lo, 1.0).max(1) * LIP_PAD, min(h, w))
    x0 = np.clip(c[:, 0] - side / 2, 0, w - side)
    y0 = np.clip(c[:, 1] - side / 2, 0, h - side)
    return np.stack([x0, y0, x0 + side, y0 + side], -1).astype(np.float32)


# where the face may deform (canonical space, the template's units: face width 1)
NOSE_BASE, CHIN, JAW_LEFT, JAW_RIGHT = 2, 152, 172, 397


def deform_regions(template: np.ndarray) -> list[dict]:
    """Ellipsoids [{"center": [3], "radii": [3]}] in canonical head space, from the rigid template
    [478, 3]: the lower face (nose base to below the chin, jaw to jaw: lips, jaw, cheeks and the
    chin's travel) and each eye (lids). The face deformation is confined to them
    (`gstalker.model.region_weight`), so the audio code moves the mouth and jaw and cannot become
    a frame identifier that moves the hair line or face outline to explain pose-tracking error."""
    t = np.asarray(template, dtype=np.float64)
    jaw_w = abs(t[JAW_RIGHT, 0] - t[JAW_LEFT, 0])
    h = t[CHIN, 1] - t[NOSE_BASE, 1]
    lower_c = [(t[JAW_LEFT, 0] + t[JAW_RIGHT, 0]) / 2, (t[NOSE_BASE, 1] + t[CHIN, 1]) / 2 + 0.1 * h,
               (t[OUTER_LIPS, 2].mean() + (t[JAW_LEFT, 2] + t[JAW_RIGHT, 2]) / 2) / 2]
    regions = [{"center": lower_c, "radii": [0.6 * jaw_w, 0.65 * h, 0.6 * jaw_w]}]
    for ring in (RIGHT_EYE, LEFT_EYE):
        p = t[ring]
        w = np.linalg.norm(p[0] - p[8])  # corner to corner
        regions.append({"center": p.mean(0).tolist(), "radii": [0.8 * w, 0.6 * w, 0.8 * w]})
    return [{"center": [float(v) for v in r["center"]], "radii": [float(v) for v in r["radii"]]} for r in regions]
