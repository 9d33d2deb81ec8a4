"""Speech to audio codes incrementally: the one definition `Talker.codes`, `frames`, `speak` and
`stream` share, so frames from a live stream equal frames from the whole file, bit for bit.

The training features (`gstalker.audio.extract_features`, used by preprocessing) look at the
whole wave twice: the loudness gain (`RunningLoudness` fed every 20 ms block) and the log-mel
floor (the maximum over *all* frames minus 8). Neither exists before the speech has ended. Here
both are running estimates, the same statistic over the audio received so far:

- feature frame j (centred at j/50 s) is scaled by the gain of blocks 0..j, applied in the log
  domain (log10(g^2 * mel) = log10(mel) + 2 log10 g);
- its floor is the running maximum of log10(mel) over frames 0..j, minus 8 (never below the
  floor a speech-level wave has, `PRIOR_LOG_MAX`).

On the last frame of a file both equal the offline values, and with them the formula is the
offline one. Earlier frames see the prefix's values. The gain counts only blocks above
`GATE_DB` and starts from gain 1 (its prior), so leading silence stays silence and speech after
it is measured on speech alone: on musetalk_eng.wav (3 s of room noise first) the cpu interview
model's codes are 11% from the whole-file codes in the first second of speech, 3% by the fourth
and under 1% by the eighth (`benchmarks/running_features.py` prints the table).

Speech-mean normalisation (models that store `speech_mean`, format 3): before the model
standardises a window, the window is moved by the difference between this speech's mean
log-mel spectrum and the training speech's (`RunningSpeechMean`: feature frames whose loudness
block is above `GATE_DB`, so pauses and room noise never count; it starts at the training mean,
worth `SPEECH_MEAN_PRIOR` frames). Another voice or microphone shifts every bin's average level
(timbre, channel); the smoother learned one speaker's averages, so without this it reads a
foreign voice as a mouth held more shut (docs/training.md). It is the log-mel form of cepstral
mean normalisation. Frame k's window uses the mean over feature frames 0 .. 2k+8 (its last),
a fixed point whatever the chunking.

Every quantity is computed in fixed units (one feature frame, one video frame) in one order,
whatever the chunking of the input, so the results do not depend on it.

Latency. Video frame k (audio [k/25, (k+1)/25) s) needs:
- its window of 16 feature frames 2k-7 .. 2k+8 (`gstalker.audio.features.windows`),
- the smoother's neighbours k-4 .. k+3, so windows up to frame k+3: feature frames up to 2k+14,
- feature frame j needs samples up to j*320 + 200 (its 25 ms Hann window) and its gain block
  j: samples up to (j+1)*320.
So frame k is ready once sample (2k+15)*320 = 640k + 4800 has arrived: 4160 samples = 260 ms
after the end of frame k's own audio (252.5 ms of it the model's windows, 7.5 ms the gain block).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from .audio.features import FLOOR_DB, HOP, N_MELS, PRIOR_LOG_MAX, WINDOW, RunningLoudness, _mel_filterbank
from .data import FPS, SAMPLE_RATE, SAMPLES_PER_FRAME

N_FFT, WIN = 512, 400
HALF = WIN // 2  # a feature frame reads samples [j*HOP - 200, j*HOP + 200)
# feature frames (0.5 s of speech) the training mean weighs in a speech's running mean. At 150 (3 s) a foreign
# voice was read as the training microphone's through its first seconds, and the interview models held its
# mouth shut there. 25 lifted loudness sync with the two longer foreign speeches on every seed, and the
# rendered mouth followed the real one as well or better with the own voice (docs/benchmarks.md, "The speech
# mean's prior")
SPEECH_MEAN_PRIOR = 25


class RunningSpeechMean:
    """The mean feature frame [D] of the speech so far: frames flagged as speech (their loudness
    block above `GATE_DB`, `MelStream.speech`) only, with `prior` [D] counted as `prior_frames`
    frames (None: no prior, the plain mean; a zero vector before any speech)."""

    def __init__(self, dim: int, prior: np.ndarray | None = None, prior_frames: int = SPEECH_MEAN_PRIOR):
        self.count = prior_frames if prior is not None else 0
        self.total = np.zeros(dim) if prior is None else np.asarray(prior, dtype=np.float64).reshape(dim) * self.count

    def add(self, frame: np.ndarray, speech: bool) -> None:
        if speech:
            self.total = self.total + frame
            self.count += 1

    def mean(self) -> np.ndarray:
        return self.total / self.count if self.count else self.total


def speech_feature_mean(wave16k: np.ndarray) -> tuple[np.ndarray, int]:
    """(The mean log-mel frame [80] of a wave's speech, as `CodeStream` measures it; the number of
    speech frames it averages). What `fit` stores as the model's `speech_mean`."""
    mel = MelStream()
    frames = np.concatenate([mel.push(np.asarray(wave16k, dtype=np.float32).reshape(-1)), mel.finish()])
    acc = RunningSpeechMean(N_MELS)
    for frame, speech in zip(frames, mel.speech):
        acc.add(frame, speech)
    return acc.mean().astype(np.float32), acc.count


class MelStream:
    """16 kHz mono samples in, log-mel feature frames [80] out (50 per second), each as soon as
    the samples it needs have arrived. `push(samples)` -> new frames [n, 80]; `finish()` -> the
    rest (the end is reflected, as `torch.stft(center=True)` does). `speech[j]`: whether feature
    frame j's loudness block is above `GATE_DB` (False for the last frame(s), which have none)."""

    def __init__(self):
        self.fb = _mel_filterbank(N_FFT, N_MELS, SAMPLE_RATE).double().numpy()  # [80, 257]
        window = np.zeros(N_FFT)
        window[(N_FFT - WIN) // 2:(N_FFT + WIN) // 2] = torch.hann_window(WIN, dtype=torch.float64).numpy()
        self.window = window[(N_FFT - WIN) // 2:(N_FFT + WIN) // 2]  # the non-zero 400 taps
        self.buf = np.zeros(0, np.float64)  # samples from `self.buf_start` on
        self.buf_start = 0
        self.received = 0
        self.next_frame = 0  # feature frames computed so far
        self.blocks = 0  # gain blocks added so far
        self.loudness = RunningLoudness()
        self.running_max = -math.inf
        self.finished = False
        self.speech: list[bool] = []  # per feature frame
        self.block_speech: list[bool] = []  # per gain block

    def _sample(self, a: int, b: int, total: int | None) -> np.ndarray:
        """Samples [a, b), reflected about the first sample and (when total is known) the last."""
        idx = np.arange(a, b)
        idx = np.abs(idx)  # x[-m] = x[m]
        if total is not None:
            last = total - 1
            idx = np.where(idx > last, 2 * last - idx, idx)
            idx = np.clip(idx, 0, last)
        return self.buf[idx - self.buf_start]

    def _frame(self, j: int, total: int | None) -> np.ndarray:
        x = self._sample(j * HOP - HALF, j * HOP + HALF, total) * self.window
        spec = np.fft.rfft(x, n=N_FFT)
        mel = self.fb @ (spec.real ** 2 + spec.imag ** 2)
        n_blocks = j + 1 if total is None else min(j + 1, total // HOP)
        while self.blocks < n_blocks:
            block = self.buf[self.blocks * HOP - self.buf_start:(self.blocks + 1) * HOP - self.buf_start]
            mean_square = float(np.mean(block * block))
            self.loudness.add(mean_square)
            self.block_speech.append(mean_square > self.loudness.gate)
            self.blocks += 1
        self.speech.append(j < len(self.block_speech) and self.block_speech[j])
        log = np.log10(np.maximum(mel, 1e-10))
        self.running_max = max(self.running_max, float(log.max()))
        gain = self.loudness.gain_db() / 10  # log10 units of power
        log = np.maximum(log, max(self.running_max, PRIOR_LOG_MAX - gain) - FLOOR_DB) + gain
        return ((log + 4.0) / 4.0).astype(np.float32)

    def push(self, samples: np.ndarray) -> np.ndarray:
        """samples [n] float (16 kHz mono) -> the feature frames [m, 80] they complete."""
        if self.finished:
            raise RuntimeError("MelStream.push after finish")
        samples = np.asarray(samples, dtype=np.float32).reshape(-1).astype(np.float64)
        self.buf = np.concatenate([self.buf, samples])
        self.received += len(samples)
        out = []
        while (self.next_frame + 1) * HOP <= self.received:  # its window and its gain block are in
            out.append(self._frame(self.next_frame, None))
            self.next_frame += 1
        self._trim()
        return np.stack(out) if out else np.zeros((0, N_MELS), np.float32)

    def finish(self) -> np.ndarray:
        """The frames left once the speech has ended: len // 320 + 1 frames in all, as `_mel`."""
        self.finished = True
        total = self.received
        if total < N_FFT // 2 + 1:  # as `_mel`: reflection needs a few samples; zeros after the end
            self.buf = np.concatenate([self.buf, np.zeros(N_FFT // 2 + 1 - total)])
            total = N_FFT // 2 + 1
        n = self.received // HOP + 1
        out = []
        while self.next_frame < n:
            out.append(self._frame(self.next_frame, total))
            self.next_frame += 1
        return np.stack(out) if out else np.zeros((0, N_MELS), np.float32)

    def _trim(self) -> None:
        """Drop the samples no later frame reads (memory stays flat on an endless stream); the
        start is kept whole because the first frame reflects it."""
        keep_from = min(self.next_frame * HOP - HALF, self.blocks * HOP) - N_FFT
        if keep_from > self.buf_start + 16 * SAMPLE_RATE and self.next_frame > 2:
            # the first feature frames reflect samples 1..200; those frames are done by now
            drop = keep_from - self.buf_start
            self.buf = self.buf[drop:]
            self.buf_start += drop


class CodeStream:
    """16 kHz speech in, smoothed audio codes out, one per 25 fps video frame, in order:
    `push(samples)` -> [(k, code [code_dim])] for the frames that audio completes; `finish()` ->
    the rest (max(1, round(len * 25 / 16000)) frames in all, as `Talker.codes`).

    model: a `TalkerModel` with mel features (its `normalize_audio`, `smoother` and, when it has
    one, `speech_mean`: the speech-mean normalisation above).
    Frame k comes out once sample 640 k + 4800 has arrived (`ready_sample(k)`)."""

    def __init__(self, model):
        self.model = model
        self.smoother = model.smoother
        self.att = self.smoother.att_window
        self.mel = MelStream()
        self.features: list[np.ndarray] = []  # [80] per feature frame (all kept: 16 KB per second of speech)
        self.codes: list[torch.Tensor] = []  # [code_dim] per video frame, unsmoothed
        self.next_out = 0
        train_mean = model.trained_speech_mean()
        self.train_mean = None if train_mean is None else train_mean.cpu().double().numpy()
        self.speech_mean = None if train_mean is None else RunningSpeechMean(N_MELS, self.train_mean)
        self.mean_upto = 0  # feature frames added to `speech_mean`

    @staticmethod
    def ready_sample(k: int, att_window: int = 8) -> int:
        """The number of samples after which frame k can be emitted (before the end is known)."""
        last_code = k + att_window - att_window // 2 - 1
        last_feature = 2 * last_code + 1 + WINDOW - WINDOW // 2 - 1
        return (last_feature + 1) * HOP

    def _window(self, k: int, n_features: int) -> np.ndarray:
        c = 2 * k + 1  # floor((k + 0.5) / 25 * 50): `windows`' centre
        idx = np.clip(np.arange(c - WINDOW // 2, c + WINDOW - WINDOW // 2), 0, n_features - 1)
        return np.stack([self.features[i] for i in idx])

    def _shift(self, k: int, n_features: int) -> np.ndarray:
        """This speech's mean frame over feature frames 0 .. frame k's last minus the training
        speech's: [80], subtracted from frame k's window."""
        last = min(2 * k + 1 + WINDOW - WINDOW // 2 - 1, n_features - 1)
        while self.mean_upto <= last:
            self.speech_mean.add(self.features[self.mean_upto], self.mel.speech[self.mean_upto])
            self.mean_upto += 1
        return self.speech_mean.mean() - self.train_mean

    @torch.no_grad()
    def _encode(self, k: int, n_features: int) -> None:
        window = self._window(k, n_features)
        if self.speech_mean is not None:
            window = (window - self._shift(k, n_features)).astype(np.float32)
        w = torch.from_numpy(window)[None]  # [1, 16, 80]
        self.codes.append(self.smoother.encode(self.model.normalize_audio(w))[0])

    @torch.no_grad()
    def _smooth(self, k: int, n_codes: int) -> torch.Tensor:
        idx = np.clip(np.arange(k - self.att // 2, k + self.att - self.att // 2), 0, n_codes - 1)
        return self.smoother.smooth(torch.stack([self.codes[i] for i in idx])[None])[0]

    def push(self, samples: np.ndarray) -> list[tuple[int, torch.Tensor]]:
        self.features.extend(self.mel.push(samples))
        # encode every frame whose window is complete (its last feature frame 2k+8 exists)
        while 2 * len(self.codes) + 1 + WINDOW - WINDOW // 2 - 1 < len(self.features):
            self._encode(len(self.codes), n_features=len(self.features) + 1)  # no clamp at the end yet
        out = []
        while self.next_out + self.att - self.att // 2 - 1 < len(self.codes):
            out.append((self.next_out, self._smooth(self.next_out, n_codes=len(self.codes) + 1)))
            self.next_out += 1
        return out

    def finish(self) -> list[tuple[int, torch.Tensor]]:
        total = self.mel.received
        self.features.extend(self.mel.finish())
        n = max(1, round(total * FPS / SAMPLE_RATE))
        while len(self.codes) < n:
            self._encode(len(self.codes), n_features=len(self.features))
        out = []
        while self.next_out < n:
            out.append((self.next_out, self._smooth(self.next_out, n_codes=n)))
            self.next_out += 1
        return out


def lookahead_ms(att_window: int = 8) -> float:
    """How long after the end of frame k's audio frame k can be emitted (milliseconds)."""
    return (CodeStream.ready_sample(0, att_window) - SAMPLES_PER_FRAME) * 1000 / SAMPLE_RATE
