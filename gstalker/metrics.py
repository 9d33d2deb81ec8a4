"""Measures of a talking face, shared by `gstalker eval` and the benchmarks (pure numpy).

Lip sync without ground-truth frames: how the mouth moves with the speech's loudness.

    loud = loudness_db(wave16k, num_frames)            # [T] dB, one per 25 fps frame
    opening = mouth_opening_ratio(landmarks)           # [T] inner-lip gap / eye-corner distance
    corr, lag = av_sync(loud, opening)                 # best Pearson r over lags -3..3 frames
    mouth_motion(opening)                              # std of the opening
    silence_motion(loud, opening)                      # motion in silence / motion in speech

Missing values (frames where no face was found) are NaN in `opening` and are left out pairwise.
Every measure returns None where it is undefined (too few frames, a constant series) rather than
a number that would read as a result.
"""

from __future__ import annotations

import math

import numpy as np

SAMPLE_RATE = 16000
FPS = 25

# MediaPipe face mesh points: inner lip, upper and lower centre; outer eye corners (right, left)
UPPER_LIP, LOWER_LIP = 13, 14
EYE_CORNERS = (33, 263)

# the floor of `loudness_db` (digital silence): mean square 1e-10
FLOOR_DB = -100.0
# fewer frames than this (0.4 s, a syllable or two) say nothing about lip sync
MIN_FRAMES = 10
# av_sync: loudness more than this under the median (silence, as in silent_frames) is clipped there
SYNC_FLOOR_DB = 30.0
# `silence_motion` needs this many frames of silence and of speech to compare them
MIN_SILENT_FRAMES = 5


def loudness_db(wave, num_frames: int, sample_rate: int = SAMPLE_RATE, fps: int = FPS) -> np.ndarray:
    """Loudness per video frame: the RMS of the frame's samples [k/fps, (k+1)/fps) in dB relative
    to full scale (a full-scale square wave is 0 dB, a full-scale sine -3 dB), floored at -100 dB.
    wave: [samples] mono float in [-1, 1]; samples missing at the end count as silence. -> [num_frames]."""
    x = np.asarray(wave, dtype=np.float64).reshape(-1)
    out = np.empty(num_frames, dtype=np.float64)
    for k in range(num_frames):
        lo, hi = k * sample_rate // fps, (k + 1) * sample_rate // fps
        seg = x[lo:hi]
        power = float((seg * seg).sum()) / (hi - lo) if hi > lo else 0.0
        out[k] = 10 * math.log10(power + 1e-10)
    return out


def mouth_opening_ratio(landmarks) -> np.ndarray:
    """Mouth opening per frame: the inner-lip gap |lm13 - lm14| over the outer eye-corner distance
    |lm33 - lm263|, so it does not depend on the image size or the face's distance.
    landmarks: [T, 478, 2+] face-mesh points (NaN rows for frames without a face) -> [T]
    (NaN where missing or the eye corners coincide)."""
    lm = np.asarray(landmarks, dtype=np.float64)[..., :2]
    gap = np.linalg.norm(lm[..., UPPER_LIP, :] - lm[..., LOWER_LIP, :], axis=-1)
    eyes = np.linalg.norm(lm[..., EYE_CORNERS[0], :] - lm[..., EYE_CORNERS[1], :], axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(eyes > 1e-9, gap / np.where(eyes > 1e-9, eyes, 1.0), np.nan)


def _pearson(x: np.ndarray, y: np.ndarray, min_points: int) -> float | None:
    keep = np.isfinite(x) & np.isfinite(y)
    x, y = x[keep], y[keep]
    if len(x) < max(3, min_points):
        return None
    x, y = x - x.mean(), y - y.mean()
    den = math.sqrt(float((x * x).sum()) * float((y * y).sum()))
    if den < 1e-12:
        return None
    return float((x * y).sum() / den)


def av_sync(loudness, opening, max_lag: int = 3, min_frames: int = MIN_FRAMES,
            floor_below_median_db: float = SYNC_FLOOR_DB) -> tuple[float | None, int | None]:
    """(corr, lag): the highest Pearson correlation between the loudness and the mouth opening over
    lags -max_lag..max_lag frames, and that lag. A lag of +L pairs the sound of frame t with the
    mouth of frame t + L: positive lag = the mouth moves after the sound (late), negative = before.
    The highest signed correlation is taken (a mouth that closes when the sound is loud is not in
    sync); ties go to the smallest |lag|. NaN frames are left out pairwise; a lag with fewer than
    `min_frames` pairs, or a constant series, is skipped. (None, None) when no lag is defined.

    Loudness under the median minus `floor_below_median_db` counts as that floor: how silent a
    silence is says nothing about the mouth, and one frame of digital silence (-100 dB, padding)
    would otherwise outweigh the speech in the correlation."""
    a = np.asarray(loudness, dtype=np.float64).reshape(-1)
    if len(a) and floor_below_median_db is not None:
        a = np.maximum(a, np.median(a) - floor_below_median_db)
    b = np.asarray(opening, dtype=np.float64).reshape(-1)
    if len(a) != len(b):
        raise ValueError(f"loudness and opening differ in length: {len(a)} and {len(b)}")
    n = len(a)
    best: tuple[float | None, int | None] = (None, None)
    for lag in sorted(range(-max_lag, max_lag + 1), key=lambda v: (abs(v), v)):
        if lag >= 0:
            x, y = a[:n - lag], b[lag:]
        else:
            x, y = a[-lag:], b[:n + lag]
        r = _pearson(x, y, min_frames)
        if r is not None and (best[0] is None or r > best[0] + 1e-12):
            best = (r, lag)
    return best


def mouth_motion(opening, min_frames: int = 2) -> float | None:
    """How much the mouth moves: the standard deviation (population) of the opening over the
    frames where it is known; None under `min_frames` frames."""
    x = np.asarray(opening, dtype=np.float64).reshape(-1)
    x = x[np.isfinite(x)]
    return float(x.std()) if len(x) >= max(2, min_frames) else None


def silent_frames(loudness, below_db: float = 30.0) -> np.ndarray:
    """[T] bool: frames whose loudness is more than `below_db` dB under the median loudness of all
    the frames (the speech's typical level)."""
    x = np.asarray(loudness, dtype=np.float64).reshape(-1)
    if not len(x):
        return np.zeros(0, dtype=bool)
    return x < np.median(x) - below_db


def silence_motion(loudness, opening, below_db: float = 30.0, min_frames: int = MIN_SILENT_FRAMES) -> float | None:
    """Mouth motion in silence over mouth motion in speech: `mouth_motion` of the frames that are
    silent (`silent_frames`: over `below_db` dB under the median loudness) divided by that of the
    other frames. Lower is better: a real speaker's mouth rests in pauses. None when either part
    has fewer than `min_frames` frames with a known opening, or the speech part does not move."""
    a = np.asarray(loudness, dtype=np.float64).reshape(-1)
    b = np.asarray(opening, dtype=np.float64).reshape(-1)
    if len(a) != len(b):
        raise ValueError(f"loudness and opening differ in length: {len(a)} and {len(b)}")
    quiet = silent_frames(a, below_db)
    known = np.isfinite(b)
    if (quiet & known).sum() < min_frames or (~quiet & known).sum() < min_frames:
        return None
    still, moving = mouth_motion(b[quiet]), mouth_motion(b[~quiet])
    if still is None or moving is None or moving < 1e-12:
        return None
    return still / moving


def silent_spans(loudness, below_db: float = 30.0) -> list[tuple[int, int]]:
    """The silent stretches as [(first, end)) frame ranges, for plots."""
    quiet = silent_frames(loudness, below_db)
    spans, start = [], None
    for k, q in enumerate(quiet):
        if q and start is None:
            start = k
        elif not q and start is not None:
            spans.append((start, k))
            start = None
    if start is not None:
        spans.append((start, len(quiet)))
    return spans
