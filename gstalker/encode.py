"""Writing rendered frames and speech into an mp4 as they come (H.264 yuv420p + AAC), atomically."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .data import FPS
from .serialization import atomic_path

# the sampling rates AAC's tables hold (FFmpeg's encoder refuses others)
DEFAULT_LAYOUTS = {1: "mono", 2: "stereo", 3: "2.1", 4: "quad", 5: "5.0", 6: "5.1", 7: "6.1", 8: "7.1"}
AAC_RATES = (96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000, 7350)


def _resample_track(audio: np.ndarray, rate: int, target: int, layout: str) -> np.ndarray:
    """[channels, samples] float32 at `rate` -> at `target`, channels kept (FFmpeg's resampler)."""
    import av

    resampler = av.AudioResampler(format="fltp", layout=layout, rate=target)
    frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(audio, dtype=np.float32), format="fltp", layout=layout)
    frame.sample_rate = rate
    out = [f.to_ndarray() for f in resampler.resample(frame)] + [f.to_ndarray() for f in resampler.resample(None)]
    return np.concatenate(out, axis=1).astype(np.float32) if out else np.zeros((audio.shape[0], 0), np.float32)


class Mp4Writer:
    """Stream frames into an mp4 with an audio track; the file appears only when `close()` succeeds.

    with Mp4Writer("out.mp4", width, height, audio=wave16k, sample_rate=16000) as w:
        for frame in frames:          # [H, W, 3] uint8 (or a [T, H, W, 3] batch)
            w.write(frame)

    Memory stays flat: frames are encoded as they arrive and the audio is fed alongside them.
    Odd sizes are padded by one pixel (yuv420p needs even sizes).

    audio: [samples] (mono) or [channels, samples] float in [-1, 1] at `sample_rate`, kept as it
    is (rate and channels) in the AAC track; a rate AAC has no table for is resampled to 48 kHz.
    layout: the channel layout name ("stereo", "5.1", ...), default FFmpeg's for the count.
    """

    def __init__(self, path: str | os.PathLike, width: int, height: int, audio: np.ndarray | None = None,
                 sample_rate: int = 16000, fps: int = FPS, crf: int = 18, layout: str | None = None):
        import av

        self.path = Path(path)
        self.width, self.height = width, height
        self._ctx = atomic_path(self.path, suffix=".mp4")
        self._tmp = self._ctx.__enter__()
        self._container = av.open(str(self._tmp), mode="w", format="mp4")
        self._video = self._container.add_stream("libx264", rate=fps)
        self._video.width, self._video.height = width + width % 2, height + height % 2
        self._video.pix_fmt = "yuv420p"
        self._video.options = {"crf": str(crf), "preset": "veryfast"}
        self._audio_stream = None
        self._audio = None
        if audio is not None:
            audio = np.asarray(audio, dtype=np.float32)
            audio = audio[None] if audio.ndim == 1 else audio
            if audio.ndim != 2 or audio.shape[0] > 8:
                raise ValueError(f"audio must be [samples] or [channels (1-8), samples], got {list(audio.shape)}")
            if not layout or layout.endswith("channels"):  # unnamed ("1 channels"): the encoder wants a named one
                layout = DEFAULT_LAYOUTS[audio.shape[0]]
            if sample_rate not in AAC_RATES:
                audio, sample_rate = _resample_track(audio, sample_rate, 48000, layout), 48000
            self._audio = np.ascontiguousarray(audio)
            self._audio_stream = self._container.add_stream("aac", rate=sample_rate)
            self._audio_stream.layout = layout
            self._layout = layout
        self.sample_rate, self.fps = sample_rate, fps
        self.frames_written = 0
        self._audio_pos = 0
        self._closed = False

    def write(self, frames: np.ndarray) -> None:
        """frames: [H, W, 3] or [T, H, W, 3] uint8 (numpy or torch)."""
        import av

        frames = np.asarray(frames.cpu() if hasattr(frames, "cpu") else frames)
        if frames.ndim == 3:
            frames = frames[None]
        if frames.shape[1:] != (self.height, self.width, 3) or frames.dtype != np.uint8:
            raise ValueError(f"frames must be [T, {self.height}, {self.width}, 3] uint8, got {list(frames.shape)} {frames.dtype}")
        if self.width % 2 or self.height % 2:
            frames = np.pad(frames, ((0, 0), (0, self.height % 2), (0, self.width % 2), (0, 0)), mode="edge")
        for f in frames:
            vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(f), format="rgb24")
            vf.pts = self.frames_written
            self._container.mux(self._video.encode(vf))
            self.frames_written += 1
        self._feed_audio(self.frames_written * self.sample_rate // self.fps)

    def _feed_audio(self, until: int) -> None:
        import av

        if self._audio_stream is None:
            return
        total = self._audio.shape[1]
        until = min(until, total)
        chunk = 1024
        while self._audio_pos + chunk <= until or (until == total and self._audio_pos < until):
            samples = np.ascontiguousarray(self._audio[:, self._audio_pos:self._audio_pos + chunk])
            af = av.AudioFrame.from_ndarray(samples, format="fltp", layout=self._layout)
            af.sample_rate = self.sample_rate
            af.pts = self._audio_pos
            self._container.mux(self._audio_stream.encode(af))
            self._audio_pos += samples.shape[1]

    def close(self) -> Path:
        """Flush encoders, close the file and move it into place."""
        if self._closed:
            return self.path
        self._feed_audio(self._audio.shape[1] if self._audio is not None else 0)
        self._container.mux(self._video.encode(None))
        if self._audio_stream is not None:
            self._container.mux(self._audio_stream.encode(None))
        self._container.close()
        self._closed = True
        self._ctx.__exit__(None, None, None)
        return self.path

    def abort(self) -> None:
        """Drop the partial file."""
        if self._closed:
            return
        self._closed = True
        try:
            self._container.close()
        except Exception:
            pass
        try:
            self._ctx.__exit__(RuntimeError, RuntimeError("aborted"), None)
        except RuntimeError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            self.close()
        else:
            self.abort()
        return False
