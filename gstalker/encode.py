"""Writing rendered frames and speech into an mp4 as they come (H.264 yuv420p + AAC), atomically."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .serialization import atomic_path

FPS = 25


class Mp4Writer:
    """Stream frames into an mp4 with an audio track; the file appears only when `close()` succeeds.

    with Mp4Writer("out.mp4", width, height, audio=wave16k, sample_rate=16000) as w:
        for frame in frames:          # [H, W, 3] uint8 (or a [T, H, W, 3] batch)
            w.write(frame)

    Memory stays flat: frames are encoded as they arrive and the audio is fed alongside them.
    Odd sizes are padded by one pixel (yuv420p needs even sizes).
    """

    def __init__(self, path: str | os.PathLike, width: int, height: int, audio: np.ndarray | None = None,
                 sample_rate: int = 16000, fps: int = FPS, crf: int = 18):
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
        self._audio = None if audio is None else np.asarray(audio, dtype=np.float32).reshape(-1)
        if self._audio is not None:
            self._audio_stream = self._container.add_stream("aac", rate=sample_rate)
            self._audio_stream.layout = "mono"
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
        until = min(until, len(self._audio))
        chunk = 1024
        while self._audio_pos + chunk <= until or (until == len(self._audio) and self._audio_pos < until):
            samples = self._audio[self._audio_pos:self._audio_pos + chunk]
            af = av.AudioFrame.from_ndarray(samples[None, :], format="flt", layout="mono")
            af.sample_rate = self.sample_rate
            af.pts = self._audio_pos
            self._container.mux(self._audio_stream.encode(af))
            self._audio_pos += len(samples)

    def close(self) -> Path:
        """Flush encoders, close the file and move it into place."""
        if self._closed:
            return self.path
        self._feed_audio(len(self._audio) if self._audio is not None else 0)
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
