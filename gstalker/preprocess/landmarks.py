"""MediaPipe face mesh (478 points with iris) on the processed frames, lost frames interpolated."""

from __future__ import annotations

import os
import sys
from contextlib import contextmanager

import numpy as np

NUM_LANDMARKS = 478
MAX_LOST = 0.20


@contextmanager
def quiet_native_stderr():
    """Silence what MediaPipe's C++ code writes to file descriptor 2 (TFLite/absl start-up lines)
    while models load; Python-level output is flushed first and unaffected afterwards."""
    os.environ.setdefault("GLOG_minloglevel", "2")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    try:
        sys.stderr.flush()
        fd = sys.stderr.fileno()
    except (AttributeError, ValueError, OSError):
        yield
        return
    saved = os.dup(fd)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), fd)
        yield
    finally:
        os.dup2(saved, fd)
        os.close(saved)


class FaceMesh:
    """Wraps mediapipe's legacy face mesh; tracking mode (the detector reruns when tracking is lost)."""

    def __init__(self, static: bool = False):
        import mediapipe as mp

        with quiet_native_stderr():
            self._fm = mp.solutions.face_mesh.FaceMesh(
                static_image_mode=static, max_num_faces=1, refine_landmarks=True,
                min_detection_confidence=0.5, min_tracking_confidence=0.5,
            )
        self._first = True

    def __call__(self, rgb: np.ndarray):
        """[478, 3] float32 (x, y in pixels, z depth in pixels, same scale as x) or None."""
        h, w = rgb.shape[:2]
        if self._first:  # the native graph logs on its first run
            self._first = False
            with quiet_native_stderr():
                res = self._fm.process(rgb)
        else:
            res = self._fm.process(rgb)
        if not res.multi_face_landmarks:
            return None
        lm = res.multi_face_landmarks[0].landmark
        a = np.array([(p.x, p.y, p.z) for p in lm], dtype=np.float32)
        a[:, 0] *= w
        a[:, 1] *= h
        a[:, 2] *= w
        return a

    def close(self):
        self._fm.close()


def interpolate_lost(lms: np.ndarray, found: np.ndarray) -> np.ndarray:
    """Fill frames without a face linearly from the nearest found neighbours (ends: nearest)."""
    n = len(found)
    idx = np.flatnonzero(found)
    if len(idx) == n:
        return lms
    out = lms.copy()
    flat = lms[idx].reshape(len(idx), -1)
    t = np.arange(n)
    for j in range(flat.shape[1]):
        out.reshape(n, -1)[:, j] = np.interp(t, idx, flat[:, j])
    return out
