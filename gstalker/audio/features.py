"""Speech features per video frame, behind one small registry.

Every extractor turns a 16 kHz mono wave into a feature sequence at 50 frames/s whose frame j is
centred at t = j / 50 s; `extract_features` then cuts one window of `WINDOW` (16) feature frames
around each video frame. Video frame k covers audio [k/25, (k+1)/25) s, so its centre is feature
frame c = 2k + 1 and its window is feature frames c-8 ... c+7 (indices clamped at the ends).

Kinds:
- ``mel``: log-mel spectrogram, 80 bins, 25 ms windows every 20 ms, Whisper-style scaling
  (log10, floor at max(max, 1) - 8, then (x + 4) / 4). Offline, no weights. The default.
- ``hubert``: last hidden state of HuBERT (default ``facebook/hubert-large-ls960-ft``, 1024-d),
  as in the research code.
- ``wav2vec2``: last hidden state of wav2vec 2.0 (default ``facebook/wav2vec2-base-960h``, 768-d).

The pretrained models load through ``transformers``: from the local Hugging Face cache first,
then online; when neither works the error names the model and how to get it. Environment
variables ``GSTALKER_HUBERT_MODEL`` / ``GSTALKER_WAV2VEC2_MODEL`` (a hub name or a local folder)
override the defaults.
"""

from __future__ import annotations

import heapq
import math
import os
from typing import Any, Callable, Dict, Optional

import numpy as np
import torch

from ..errors import FeatureModelError, first_line
from .io import SAMPLE_RATE

FEATURE_RATE = 50  # feature frames per second, all kinds
HOP = SAMPLE_RATE // FEATURE_RATE  # 320 samples
WINDOW = 16  # feature frames per video frame
N_MELS = 80

DEFAULT_MODELS = {
    "hubert": "facebook/hubert-large-ls960-ft",
    "wav2vec2": "facebook/wav2vec2-base-960h",
}
ENV_VARS = {"hubert": "GSTALKER_HUBERT_MODEL", "wav2vec2": "GSTALKER_WAV2VEC2_MODEL"}


# ---------------------------------------------------------------------------------- registry
_EXTRACTORS: Dict[str, Callable[..., np.ndarray]] = {}


def register(kind: str):
    """Decorator: register `fn(wave16k: np.ndarray, **kw) -> [T, D] float32 at 50 frames/s`."""

    def deco(fn):
        _EXTRACTORS[kind] = fn
        return fn

    return deco


def feature_kinds() -> list[str]:
    return list(_EXTRACTORS)


def sequence_features(wave: np.ndarray, kind: str = "mel", **kw: Any) -> np.ndarray:
    """The raw feature sequence [T, D] float32, 50 frames/s, frame j centred at j/50 s."""
    if kind not in _EXTRACTORS:
        raise ValueError(f"unknown audio feature kind {kind!r} (choose from {', '.join(_EXTRACTORS)})")
    wave = np.asarray(wave, dtype=np.float32).reshape(-1)
    return np.ascontiguousarray(_EXTRACTORS[kind](wave, **kw), dtype=np.float32)


def windows(seq: np.ndarray, num_frames: int, window: int = WINDOW, fps: float = 25.0) -> np.ndarray:
    """Cut [num_frames, window, D] from a 50 frames/s sequence, centred on each video frame."""
    t = seq.shape[0]
    if t == 0:
        raise ValueError("empty feature sequence (no audio)")
    centres = np.floor((np.arange(num_frames) + 0.5) / fps * FEATURE_RATE + 1e-6).astype(np.int64)
    offs = np.arange(window) - window // 2
    idx = np.clip(centres[:, None] + offs[None, :], 0, t - 1)
    return np.ascontiguousarray(seq[idx], dtype=np.float32)


SPEECH_LEVEL_DB = -20.0  # loudness every wave is brought to before features (dBFS, speech frames)
GATE_DB = -45.0  # 20 ms blocks quieter than this (dBFS, as recorded) are pauses or room noise, not speech
PRIOR_BLOCKS = 5  # the level estimate starts as this many blocks of speech already at SPEECH_LEVEL_DB
MAX_GAIN_DB = 40.0  # noise is never blown up by more than this
FLOOR_DB = 8.0  # the log-mel floor: the loudest value minus 8 (log10 units, Whisper-style)
PRIOR_LOG_MAX = 1.0  # the floor's reference is never below this (log10 mel power at SPEECH_LEVEL_DB;
# real speech peaks at 1.2-1.8), so leading digital silence is floored as in a whole file


class RunningLoudness:
    """The loudness gain, one 20 ms block at a time: the one definition the training features
    (`normalize_loudness`) and live inference (`gstalker.streaming`) share.

    The speech level is the RMS over the louder half of the blocks above `GATE_DB` (pauses and
    room noise never count, so 3 s of silence before the speech neither boosts that silence to
    speech level nor drags the first seconds of speech up with it), averaged in dB with a prior
    of `PRIOR_BLOCKS` blocks at `SPEECH_LEVEL_DB` (gain 1 until speech has been heard; over a
    whole clip the prior weighs < 1%). Gain = target / level, at most +40 dB.
    Two heaps keep the louder half and its sum, so each block costs O(log n)."""

    def __init__(self, level_db: float = SPEECH_LEVEL_DB):
        self.level_db = level_db
        self.gate = 10 ** (GATE_DB / 10)  # on mean squares
        self.low: list[float] = []  # max-heap (negated): the quieter half of the speech blocks' mean squares
        self.high: list[float] = []  # min-heap: the louder n - n // 2
        self.high_sum = 0.0
        self.n = 0

    def add(self, mean_square: float) -> None:
        if not mean_square > self.gate:
            return
        self.n += 1
        heapq.heappush(self.high, mean_square)
        self.high_sum += mean_square
        if self.low and self.high[0] < -self.low[0]:  # keep every quiet block below every loud one
            a = heapq.heappop(self.high)
            b = -heapq.heappushpop(self.low, -a)
            heapq.heappush(self.high, b)
            self.high_sum += b - a
        while len(self.low) < self.n // 2:
            a = heapq.heappop(self.high)
            self.high_sum -= a
            heapq.heappush(self.low, -a)

    def gain_db(self) -> float:
        n = len(self.high)
        measured_db = 10 * math.log10(max(self.high_sum, 1e-30) / n) if n else self.level_db
        level_db = (PRIOR_BLOCKS * self.level_db + n * measured_db) / (PRIOR_BLOCKS + n)
        return min(self.level_db - level_db, MAX_GAIN_DB)


def block_mean_squares(wave16k: np.ndarray) -> np.ndarray:
    """Mean square of each whole 20 ms block: [len // 320] float64."""
    n = len(wave16k) // HOP
    return np.mean(wave16k[:n * HOP].reshape(n, HOP).astype(np.float64) ** 2, axis=1)


def normalize_loudness(wave16k: np.ndarray, level_db: float = SPEECH_LEVEL_DB) -> np.ndarray:
    """The wave scaled so its speech sits at `level_db` dBFS (`RunningLoudness` over the whole
    wave): a quiet recording, a loud one and another speaker reach the features at one level."""
    wave16k = np.asarray(wave16k, dtype=np.float32).reshape(-1)
    loudness = RunningLoudness(level_db)
    for ms in block_mean_squares(wave16k):
        loudness.add(float(ms))
    return (wave16k * 10 ** (loudness.gain_db() / 20)).astype(np.float32)


def extract_features(
    wave16k: np.ndarray, kind: str = "mel", num_frames: Optional[int] = None, fps: float = 25.0,
    normalize: bool = True, **kw: Any
) -> np.ndarray:
    """Audio features for each video frame: [num_frames, 16, D] float32.

    `num_frames` defaults to the number of whole 25 fps frames the audio covers. The wave is
    first brought to a common speech loudness (`normalize_loudness`; `normalize=False` skips it).
    Extra keyword arguments go to the extractor (`model=` a hub name, local folder or a loaded
    transformers model for ``hubert``/``wav2vec2``; `device=`).
    """
    wave16k = np.asarray(wave16k, dtype=np.float32).reshape(-1)
    if num_frames is None:
        num_frames = int(len(wave16k) * fps // SAMPLE_RATE)
    if normalize:
        wave16k = normalize_loudness(wave16k)
    seq = sequence_features(wave16k, kind, **kw)
    return windows(seq, num_frames, WINDOW, fps)


def feature_dim(kind: str, **kw: Any) -> int:
    """Feature width D of a kind (runs the extractor on 0.1 s of silence)."""
    return sequence_features(np.zeros(SAMPLE_RATE // 10, np.float32), kind, **kw).shape[1]


# ---------------------------------------------------------------------------------- mel
_MEL_CACHE: Dict[int, torch.Tensor] = {}


def _mel_filterbank(n_fft: int, n_mels: int, sr: int, fmin: float = 0.0, fmax: Optional[float] = None) -> torch.Tensor:
    """Slaney-style mel filterbank [n_mels, n_fft//2+1] (same shape of filters as librosa's default)."""
    fmax = fmax or sr / 2

    def hz_to_mel(f):
        f = np.asarray(f, dtype=np.float64)
        f_sp = 200.0 / 3
        mels = f / f_sp
        min_log_hz = 1000.0
        min_log_mel = min_log_hz / f_sp
        logstep = np.log(6.4) / 27.0
        return np.where(f >= min_log_hz, min_log_mel + np.log(np.maximum(f, 1e-10) / min_log_hz) / logstep, mels)

    def mel_to_hz(m):
        m = np.asarray(m, dtype=np.float64)
        f_sp = 200.0 / 3
        freqs = f_sp * m
        min_log_hz = 1000.0
        min_log_mel = min_log_hz / f_sp
        logstep = np.log(6.4) / 27.0
        return np.where(m >= min_log_mel, min_log_hz * np.exp(logstep * (m - min_log_mel)), freqs)

    fftfreqs = np.linspace(0, sr / 2, n_fft // 2 + 1)
    mel_f = mel_to_hz(np.linspace(hz_to_mel(fmin), hz_to_mel(fmax), n_mels + 2))
    fdiff = np.diff(mel_f)
    ramps = mel_f[:, None] - fftfreqs[None, :]
    lower = -ramps[:-2] / fdiff[:-1, None]
    upper = ramps[2:] / fdiff[1:, None]
    weights = np.maximum(0, np.minimum(lower, upper))
    weights *= (2.0 / (mel_f[2 : n_mels + 2] - mel_f[:n_mels]))[:, None]
    return torch.from_numpy(weights.astype(np.float32))


@register("mel")
def _mel(wave: np.ndarray, **_: Any) -> np.ndarray:
    n_fft, win = 512, 400
    if n_fft not in _MEL_CACHE:
        _MEL_CACHE[n_fft] = _mel_filterbank(n_fft, N_MELS, SAMPLE_RATE)
    fb = _MEL_CACHE[n_fft]
    x = torch.from_numpy(wave)
    if x.numel() < n_fft // 2 + 1:  # reflect padding needs a few samples
        x = torch.nn.functional.pad(x, (0, n_fft // 2 + 1 - x.numel()))
    spec = torch.stft(
        x, n_fft=n_fft, hop_length=HOP, win_length=win, window=torch.hann_window(win),
        center=True, pad_mode="reflect", return_complex=True,
    )  # [F, T], frame j centred at sample j*HOP
    power = spec.abs() ** 2
    mel = fb @ power
    logmel = torch.log10(torch.clamp(mel, min=1e-10))
    logmel = torch.clamp(logmel, min=max(float(logmel.max()), PRIOR_LOG_MAX) - FLOOR_DB)
    logmel = (logmel + 4.0) / 4.0
    n = len(wave) // HOP + 1
    return logmel.T[:n].numpy()


# ---------------------------------------------------------------------------------- transformers
_MODEL_CACHE: Dict[str, Any] = {}


def _how_to_get(kind: str, name: str) -> str:
    return (
        f"download it once with `huggingface-cli download {name}` where there is internet, "
        f"or set {ENV_VARS[kind]} to a local copy (or use --audio-features mel)"
    )


def _hub_reachable(timeout: float = 3.0) -> bool:
    import socket
    from urllib.parse import urlparse

    host = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co")).hostname or "huggingface.co"
    try:
        with socket.create_connection((host, 443), timeout=timeout):
            return True
    except OSError:
        return False


def load_speech_model(kind: str, model: Any = None):
    """Resolve `model` (None: env var or default name; str: hub name or folder; or a model)."""
    if model is not None and not isinstance(model, (str, os.PathLike)):
        return model
    name = str(model) if model is not None else os.environ.get(ENV_VARS[kind], DEFAULT_MODELS[kind])
    if name in _MODEL_CACHE:
        return _MODEL_CACHE[name]
    try:
        from transformers import AutoModel
        from transformers.utils import logging as hf_logging
    except Exception as e:  # pragma: no cover - transformers is a dependency
        raise FeatureModelError(f"audio features {kind!r} need the transformers package ({e})") from None
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        try:
            m = AutoModel.from_pretrained(name, local_files_only=True)
        except Exception:
            offline = os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False")
            if offline or os.path.isdir(name) or not _hub_reachable():
                why = "not in the local Hugging Face cache and the hub is unreachable or offline"
                if os.path.isdir(name):
                    why = "the folder holds no loadable model"
                raise FeatureModelError(
                    f"audio features {kind!r} need the model {name}: {why}; " + _how_to_get(kind, name)
                ) from None
            try:
                m = AutoModel.from_pretrained(name)
            except Exception as e:
                raise FeatureModelError(
                    f"audio features {kind!r} need the model {name}: the download failed ({first_line(e)}); "
                    + _how_to_get(kind, name)
                ) from None
    finally:
        hf_logging.set_verbosity(verbosity)
    m.eval()
    _MODEL_CACHE[name] = m
    return m


def _hf_features(
    kind: str, wave: np.ndarray, model: Any = None, device: Optional[str] = None,
    chunk_s: float = 20.0, context_s: float = 1.0, **_: Any,
) -> np.ndarray:
    m = load_speech_model(kind, model)
    dev = torch.device(device) if device else (torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu"))
    m = m.to(dev)
    n_out = len(wave) // HOP + 1
    # zero mean, unit variance (what the models' feature extractors do), then pad half a
    # receptive field (400 samples) each side so output frame j is centred at j/50 s.
    w = wave - wave.mean()
    w = w / np.sqrt(w.var() + 1e-7)
    w = np.concatenate([np.zeros(200, np.float32), w.astype(np.float32), np.zeros(HOP + 400, np.float32)])
    chunk = max(1, int(chunk_s * FEATURE_RATE))
    ctx = int(context_s * FEATURE_RATE)
    outs = []
    with torch.inference_mode():
        for s in range(0, n_out, chunk):
            e = min(n_out, s + chunk)
            a = max(0, s - ctx)
            b = min(n_out, e + ctx)
            seg = w[a * HOP : (b - 1) * HOP + 400]
            x = torch.from_numpy(np.ascontiguousarray(seg))[None].to(dev)
            h = m(x).last_hidden_state[0].float().cpu().numpy()  # [~b-a, D]
            if h.shape[0] < b - a:  # defensive: pad by repeating the last frame
                h = np.concatenate([h, np.repeat(h[-1:], b - a - h.shape[0], 0)])
            outs.append(h[s - a : e - a])
    return np.concatenate(outs, 0)


@register("hubert")
def _hubert(wave: np.ndarray, **kw: Any) -> np.ndarray:
    return _hf_features("hubert", wave, **kw)


@register("wav2vec2")
def _wav2vec2(wave: np.ndarray, **kw: Any) -> np.ndarray:
    return _hf_features("wav2vec2", wave, **kw)
