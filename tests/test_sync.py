"""Audio-video offset of the training clip (`gstalker.preprocess.sync`): measured from the lip
motion, trusted only when the clip's stretches agree, applied by moving the audio."""

import numpy as np
import pytest

from gstalker.preprocess.sync import MIN_FRAMES, estimate_av_offset, shift_audio


def talking(n: int, late: int, seed: int = 0, noise: float = 3.0):
    """Per-frame loudness (dB) and mouth opening of a synthetic talker whose sound runs `late`
    frames behind the picture: syllables (a smoothed random drive) open the mouth and make
    sound, with independent noise on each; their rates correlate at ~0.23 at the right lag
    (interview_97s.mp4: 0.16)."""
    rng = np.random.default_rng(seed)
    drive = np.convolve(rng.standard_normal(n + 40), np.hanning(7), mode="same")
    mouth = drive[20:20 + n] + noise * np.convolve(rng.standard_normal(n), np.ones(2) / 2, mode="same")
    sound = drive[20 - late:20 - late + n] + noise * rng.standard_normal(n)
    return -30 + 6 * sound, 0.05 + 0.01 * mouth


@pytest.mark.parametrize("late", [5, -3, 0])
def test_a_known_offset_is_found_and_trusted(late):
    loud, opening = talking(90 * 25, late)
    sync = estimate_av_offset(loud, opening)
    assert sync.source == "auto" and sync.offset_frames == late, sync
    assert sync.agreement >= 0.6 and sync.correlation < 0.3
    assert sync.correlation > sync.correlation_at_zero + 0.1 or late == 0


def test_short_or_unrelated_clips_keep_their_audio():
    loud, opening = talking(MIN_FRAMES - 1, 5)
    assert estimate_av_offset(loud, opening).offset_frames == 0  # too short to tell
    rng = np.random.default_rng(1)
    loud, _ = talking(90 * 25, 5, seed=2)
    unrelated = 0.05 + 0.01 * rng.standard_normal(90 * 25)  # a mouth that ignores the sound
    sync = estimate_av_offset(loud, unrelated)
    assert sync.source == "auto-rejected" and sync.offset_frames == 0 and sync.agreement < 0.6, sync
    with_gaps = opening = talking(90 * 25, 4, seed=3)[1]
    with_gaps[100:400] = np.nan  # no face for 12 s: filled, not fatal
    assert estimate_av_offset(talking(90 * 25, 4, seed=3)[0], with_gaps).offset_frames == 4


def test_shift_audio_moves_the_sound_and_keeps_the_length():
    wave = np.arange(1, 11, dtype=np.float32)
    assert np.array_equal(shift_audio(wave, 2, 2), [5, 6, 7, 8, 9, 10, 0, 0, 0, 0])  # late sound moved earlier
    assert np.array_equal(shift_audio(wave, -1, 3), [0, 0, 0, 1, 2, 3, 4, 5, 6, 7])
    assert shift_audio(wave, 0, 640) is wave
