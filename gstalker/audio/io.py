"""Audio decoding: any file FFmpeg reads (wav, mp3, mp4, ...) to 16 kHz mono float32 with PyAV."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import numpy as np

from ..data import SAMPLE_RATE
from ..errors import AudioError, first_line


def load_audio(
    path: str | os.PathLike,
    sample_rate: int = SAMPLE_RATE,
    start: Optional[float] = None,
    end: Optional[float] = None,
    origin: Optional[float] = None,
) -> np.ndarray:
    """Decode the first audio stream of `path` to mono float32 in [-1, 1] at `sample_rate`.

    The rate is converted by FFmpeg's resampler (PyAV) and the channels averaged. `start`/`end`
    (seconds) trim the result. Times are measured from `origin` (seconds on the container's
    clock; default: the audio stream's own first timestamp, i.e. the first sample is t = 0).
    Preprocessing passes the video's first frame time as `origin` so that audio and frames line
    up; a gap between `origin` and the first audio sample is filled with silence.
    """
    path = Path(path)
    if path.is_dir():
        raise AudioError(f"{path}: is a directory, not an audio or video file")
    if not path.exists():
        raise AudioError(f"{path}: no such file")
    wave, first_time = _read_pcm_wav(path, sample_rate), 0.0
    if wave is None:
        # keep the channels through the resampler and average them here: FFmpeg's own downmix
        # weights each channel by -3 dB, which makes identical stereo channels 1.41x louder
        chunks, _, first_time = _decode_first_audio(
            path, lambda av, stream: av.AudioResampler(format="fltp", rate=sample_rate), keep=lambda planes: planes.mean(0))
        wave = np.concatenate(chunks).astype(np.float32) if chunks else np.zeros(0, np.float32)
    if origin is not None and first_time is not None:
        shift = int(round((first_time - origin) * sample_rate))
        if shift > 0:
            wave = np.concatenate([np.zeros(shift, np.float32), wave])
        elif shift < 0:
            wave = wave[-shift:]
    s = 0 if start is None else max(0, int(round(start * sample_rate)))
    e = len(wave) if end is None else max(s, int(round(end * sample_rate)))
    wave = wave[s:e]
    if end is not None and len(wave) < e - s:
        wave = np.concatenate([wave, np.zeros(e - s - len(wave), np.float32)])
    return np.clip(wave, -1.0, 1.0)


def load_audio_track(path: str | os.PathLike) -> tuple[np.ndarray, int, str]:
    """The first audio stream of `path` as it is: (float32 [channels, samples] in [-1, 1], its
    sample rate, its channel layout name), for muxing the speech itself into a video (features
    use `load_audio`'s 16 kHz mono copy). Errors as `load_audio`."""
    path = Path(path)
    if not path.is_file():
        raise AudioError(f"{path}: no such file")
    # planar float at the stream's own rate and layout: only the sample format changes
    chunks, (channels, rate, layout), _ = _decode_first_audio(
        path, lambda av, stream: av.AudioResampler(format="fltp", layout=stream.layout.name, rate=stream.rate))
    track = np.concatenate(chunks, axis=1).astype(np.float32) if chunks else np.zeros((channels, 0), np.float32)
    return np.clip(track, -1.0, 1.0), rate, layout


def save_wav(path: str | os.PathLike, wave: np.ndarray, sample_rate: int = SAMPLE_RATE) -> None:
    """Write mono float audio as 16-bit PCM wav (to a temp file, then renamed into place)."""
    import wave as wavemod

    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    pcm = (np.clip(wave, -1, 1) * 32767.0).round().astype("<i2")
    with wavemod.open(str(tmp), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(sample_rate)
        w.writeframes(pcm.tobytes())
    os.replace(tmp, path)


def _read_pcm_wav(path: Path, sample_rate: int) -> Optional[np.ndarray]:
    """A 16-bit mono WAV file already at `sample_rate` (what `save_wav` writes: a work folder's
    audio.wav) as float32, the samples FFmpeg would decode (s16 / 32768), read without PyAV so
    that training runs where PyAV is missing; None for any other file."""
    import wave as wavemod

    if path.suffix.lower() != ".wav":
        return None
    try:
        with wavemod.open(str(path), "rb") as w:
            if (w.getnchannels(), w.getsampwidth(), w.getframerate(), w.getcomptype()) != (1, 2, sample_rate, "NONE"):
                return None
            data = w.readframes(w.getnframes())
    except (wavemod.Error, EOFError):
        return None  # FFmpeg may still read it (WAVE_FORMAT_EXTENSIBLE, float, ...)
    return np.frombuffer(data, dtype="<i2").astype(np.float32) / 32768.0


def _decode_first_audio(path: Path, resampler_for, keep=lambda planes: planes):
    """Decode the first audio stream of `path` through the resampler `resampler_for(av, stream)`
    makes: (keep(planes) of each resampled frame, planes [channels, samples] float32;
    (channels, sample rate, layout name) of the stream; the first frame's time in seconds on the
    container's clock, or None). Unreadable, audio-less or corrupt files raise a one-line AudioError."""
    import av

    try:
        container = av.open(str(path))
    except av.error.FFmpegError as e:
        raise AudioError(f"{path}: not an audio or video file FFmpeg can read ({first_line(e)})") from None
    with container:
        if not container.streams.audio:
            raise AudioError(f"{path}: has no audio stream")
        stream = container.streams.audio[0]
        resampler = resampler_for(av, stream)
        chunks, first_time = [], None
        try:
            for frame in container.decode(stream):
                if first_time is None and frame.pts is not None and frame.time_base is not None:
                    first_time = float(frame.pts * frame.time_base)
                chunks += [keep(out.to_ndarray()) for out in resampler.resample(frame)]
            chunks += [keep(out.to_ndarray()) for out in resampler.resample(None)]
        except av.error.FFmpegError as e:
            raise AudioError(f"{path}: corrupt or truncated audio ({first_line(e)})") from None
        info = (len(stream.layout.channels), stream.rate, stream.layout.name)
    return chunks, info, first_time
