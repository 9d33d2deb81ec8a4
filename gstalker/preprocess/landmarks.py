"""MediaPipe face mesh (478 points with iris) on the processed frames, lost frames interpolated."""

from __future__ import annotations

import numpy as np

NUM_LANDMARKS = 478
MAX_LOST = 0.20


class FaceMesh:
    """Wraps mediapipe's legacy face mesh; tracking mode (the detector reruns when tracking is lost)."""

    def __init__(self, static: bool = False):
        import mediapipe as mp

        self._fm = mp.solutions.face_mesh.FaceMesh(
            static_image_mode=static, max_num_faces=1, refine_landmarks=True,
            min_detection_confidence=0.5, min_tracking_confidence=0.5,
        )

    def __call__(self, rgb: np.ndarray):
        """[478, 3] float32 (x, y in pixels, z depth in pixels, same scale as x) or None."""
        h, w = rgb.shape[:2]
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
