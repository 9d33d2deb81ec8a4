"""How far the training video's sound runs behind (or ahead of) its picture, from the clip alone.

Web and broadcast videos are often a few frames out of sync. A model learns whatever offset its
training clip has and then reproduces it with every speech it is given: trained on
interview_97s.mp4, whose sound runs ~200 ms late, the mouth opened ~160-200 ms before the
sound of any other speaker (docs/training.md, "Audio-video offset"). So preprocessing measures
the offset and moves the audio to match the picture before the features are made.

The measure: syllables start with a rise in loudness and an opening of the jaw at the same
time, so the frame-to-frame change of the loudness (dB, 3-frame mean) and of the mouth opening
(inner-lip gap over the eye distance, 3-frame mean) correlate best at the lag where sound and
picture line up. Per frame that correlation is weak (0.1-0.2), so the lag is taken over the
whole clip and trusted only when most 10 s stretches of the clip agree with it within one
frame; otherwise the audio stays as recorded.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from ..data import FPS
from ..metrics import SYNC_FLOOR_DB, lagged_correlation

MAX_LAG = 8  # frames each way (320 ms): further is a different video, not an offset
SEGMENT = 10 * FPS  # frames per stretch in the agreement check
MIN_FRAMES = 30 * FPS  # shorter clips keep their audio as recorded: too few syllables to tell
MIN_AGREEMENT = 0.6  # share of stretches whose own best lag is within one frame of the clip's
MIN_CORRELATION = 0.05  # the clip's best lag must show at least this correlation


@dataclass
class AvOffset:
    """offset_frames: how many video frames the sound runs behind the picture (negative: ahead),
    as applied; estimate_frames: the measured lag; correlation at it and at 0; agreement: share
    of 10 s stretches that agree; source: "auto" (measured and trusted), "auto-rejected"
    (measured, not trusted: nothing applied), "given" (the user's --av-offset)."""

    offset_frames: int
    estimate_frames: int | None
    correlation: float | None
    correlation_at_zero: float | None
    agreement: float | None
    source: str

    @property
    def offset_s(self) -> float:
        return self.offset_frames / FPS

    def to_dict(self) -> dict:
        return {**asdict(self), "offset_s": self.offset_s}


def _rate(x: np.ndarray) -> np.ndarray:
    """Frame-to-frame change of the 3-frame mean of x [n] (NaN filled by interpolation)."""
    x = np.asarray(x, dtype=np.float64)
    ok = np.isfinite(x)
    if not ok.all():
        idx = np.arange(len(x))
        x = np.interp(idx, idx[ok], x[ok]) if ok.any() else np.zeros_like(x)
    smooth = np.convolve(x, np.ones(3) / 3, mode="same")
    return np.concatenate([[0.0], np.diff(smooth)])


def lag_profile(loudness_rate: np.ndarray, opening_rate: np.ndarray, max_lag: int = MAX_LAG) -> np.ndarray:
    """[2 max_lag + 1]: the correlation of the loudness change of frame t with the mouth change
    of frame t + lag, for lag = -max_lag .. max_lag (negative lag: the mouth moves first); 0
    where undefined."""
    return np.array([lagged_correlation(loudness_rate, opening_rate, lag) or 0.0
                     for lag in range(-max_lag, max_lag + 1)])


def estimate_av_offset(loudness_db: np.ndarray, opening: np.ndarray) -> AvOffset:
    """The sound's offset behind the picture from per-frame loudness [n] (dB) and mouth opening
    [n] (NaN where no face): an `AvOffset` whose offset_frames is the measured lag when the
    clip is long enough and its stretches agree, else 0."""
    loud = np.asarray(loudness_db, dtype=np.float64)
    loud = np.maximum(loud, np.median(loud) - SYNC_FLOOR_DB)  # how silent a pause is says nothing of the mouth
    n = len(loud)
    if n < MIN_FRAMES or np.isfinite(opening).sum() < MIN_FRAMES:
        return AvOffset(0, None, None, None, None, "auto-rejected")
    a, b = _rate(loud), _rate(opening)
    profile = lag_profile(a, b)
    best = int(np.argmax(profile))
    lag = best - MAX_LAG
    segments = [int(np.argmax(lag_profile(a[s:s + SEGMENT], b[s:s + SEGMENT]))) - MAX_LAG
                for s in range(0, n - SEGMENT + 1, SEGMENT)]
    agreement = float(np.mean([abs(s - lag) <= 1 for s in segments]))
    trusted = agreement >= MIN_AGREEMENT and profile[best] >= MIN_CORRELATION
    # lag < 0: the mouth moves `-lag` frames before its sound, i.e. the sound runs that much late
    return AvOffset(-lag if trusted else 0, -lag, float(profile[best]), float(profile[MAX_LAG]), agreement,
                    "auto" if trusted else "auto-rejected")


def shift_audio(wave: np.ndarray, offset_frames: int, samples_per_frame: int) -> np.ndarray:
    """The wave moved `offset_frames` earlier (sound that ran late now matches its picture; a
    negative offset moves it later), same length, silence where nothing was recorded."""
    k = offset_frames * samples_per_frame
    if k == 0:
        return wave
    out = np.zeros_like(wave)
    if k > 0:
        out[:len(wave) - k] = wave[k:]
    else:
        out[-k:] = wave[:len(wave) + k]
    return out
