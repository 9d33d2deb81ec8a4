"""Find the face over the whole video and choose one fixed square crop holding head and shoulders."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Optional

import numpy as np

from ..data import FPS
from ..errors import PreprocessError, PreprocessWarning
from .video import VideoInfo, iter_frames

SCAN_SAMPLES = 100  # frames looked at to place the crop
SCAN_MAX_SIDE = 1280
CROP_FACE_RATIO = 3.0  # crop side / detected face box height
FACE_Y = 0.45  # face centre's height in the crop, from the top (fraction of the side)


@dataclass
class Crop:
    x0: int
    y0: int
    side: int

    def to_dict(self) -> dict:
        return {"x0": self.x0, "y0": self.y0, "side": self.side}


def _detector():
    import mediapipe as mp

    from .landmarks import quiet_native_stderr

    # model_selection=1: the full-range model (faces up to ~5 m), for wide shots with small faces.
    with quiet_native_stderr():
        det = mp.solutions.face_detection.FaceDetection(model_selection=1, min_detection_confidence=0.5)
    return det


def detect_faces(rgb: np.ndarray, det) -> list:
    """Face boxes (x, y, w, h, score) in pixels, largest first."""
    h, w = rgb.shape[:2]
    res = det.process(rgb)
    out = []
    for d in res.detections or []:
        b = d.location_data.relative_bounding_box
        out.append((b.xmin * w, b.ymin * h, b.width * w, b.height * h, float(d.score[0])))
    out.sort(key=lambda b: -b[2] * b[3])
    return out


def find_crop(info: VideoInfo, start: float, end: Optional[float], num_frames_hint: int,
              on_frame=None) -> tuple[Crop, dict]:
    """Scan a sample of frames, locate the (largest) face, and place the square crop."""
    step = max(1, num_frames_hint // SCAN_SAMPLES)
    det = _detector()
    # the detector looks at 192x192 anyway: scan at most 1280 px wide (boxes scaled back)
    scale = min(1.0, SCAN_MAX_SIDE / max(info.width, info.height))
    try:
        res = _scan(info, start, end, step, scale, det, on_frame, skip_nonref=True)
        if res[2] < min(20, num_frames_hint // (2 * step)):  # codec without reference frames?
            res = _scan(info, start, end, step, scale, det, None, skip_nonref=False)
    finally:
        det.close()
    boxes, several, looked, last = res

    path = info.path
    span_end = end if end is not None else info.duration
    got = (last + 1) / FPS
    if span_end is not None and np.isfinite(span_end) and got < 0.9 * (span_end - start) and (span_end - start) - got > 1.0:
        raise PreprocessError(
            f"{path}: corrupt or truncated video: it declares {span_end:.1f} s but only {start + got:.1f} s decode"
        )
    if not boxes:
        raise PreprocessError(f"{path}: no face found (looked at {looked} frames)")
    if several > 0.3 * len(boxes):
        warnings.warn(f"{path}: several faces in view; using the largest", PreprocessWarning, stacklevel=3)
    b = np.array(boxes, dtype=np.float64)
    # robust against a few odd detections (cards, cut-aways): keep faces of typical size
    size = np.median(b[:, 3])
    ok = np.abs(b[:, 3] / size - 1) < 0.5
    b = b[ok] if ok.sum() >= 3 else b
    size = float(np.median(b[:, 3]))
    cx = b[:, 0] + b[:, 2] / 2
    cy = b[:, 1] + b[:, 3] / 2
    x_lo, x_hi = np.percentile(cx, [2, 98])
    y_lo, y_hi = np.percentile(cy, [2, 98])
    side = max(CROP_FACE_RATIO * size, max(x_hi - x_lo, y_hi - y_lo) + 2.2 * size)
    W, H = info.width, info.height
    side = int(min(round(side), W, H))
    ccx = (x_lo + x_hi) / 2
    ccy = (y_lo + y_hi) / 2
    x0 = int(round(ccx - side / 2))
    y0 = int(round(ccy - FACE_Y * side))
    x0 = min(max(0, x0), W - side)
    y0 = min(max(0, y0), H - side)
    stats = {"face_size_px": size, "frames_scanned": looked, "frames_with_face": len(boxes), "several_faces": several}
    return Crop(x0, y0, side), stats


def _scan(info, start, end, step, scale, det, on_frame, skip_nonref):
    from .landmarks import quiet_native_stderr

    boxes, several, looked, last = [], 0, 0, -1
    last_sampled = -step
    for k, _, rgb in iter_frames(info, start=start, end=end, keep=lambda k: k - last_sampled >= step,
                                 scale=scale, skip_nonref=skip_nonref):
        last = k
        if on_frame is not None:
            on_frame()
        if rgb is None:
            continue
        last_sampled = k
        looked += 1
        if looked == 1:
            with quiet_native_stderr():
                faces = detect_faces(rgb, det)
        else:
            faces = detect_faces(rgb, det)
        if not faces:
            continue
        if len(faces) > 1 and faces[1][2] * faces[1][3] > 0.25 * faces[0][2] * faces[0][3]:
            several += 1
        boxes.append(tuple(v / scale for v in faces[0][:4]))
    return boxes, several, looked, last
