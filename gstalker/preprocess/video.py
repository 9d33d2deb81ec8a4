"""Video decoding with PyAV: probing, bad-input checks, streaming frames resampled to 25 fps."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterator, Optional, Tuple

import numpy as np

from ..errors import PreprocessError, first_line

MIN_SECONDS = 2.0


@dataclass
class VideoInfo:
    path: str
    width: int  # displayed (after rotation)
    height: int
    rotation: int  # degrees counterclockwise applied to decoded frames (0, 90, 180, 270)
    fps: float  # average frame rate of the source
    t0: float  # time of the first video frame (container clock, seconds)
    duration: float  # seconds of video from t0 (declared; checked while decoding)
    codec: str
    audio_rate: int
    audio_channels: int

    def to_dict(self) -> dict:
        d = asdict(self)
        d.pop("path")
        return d


def probe(path: Path) -> VideoInfo:
    """Open `path` and check it is a decodable video with audio, at least 2 s long."""
    import av

    if path.is_dir():
        raise PreprocessError(f"{path}: is a directory, not a video file")
    if not path.exists():
        raise PreprocessError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise PreprocessError(f"{path}: is empty (0 bytes), not a video")
    try:
        container = av.open(str(path))
    except av.error.FFmpegError as e:
        raise PreprocessError(f"{path}: not a video FFmpeg can read, or corrupt/truncated ({first_line(e)})") from None
    with container:
        if not container.streams.video:
            raise PreprocessError(f"{path}: has no video stream")
        if not container.streams.audio:
            raise PreprocessError(f"{path}: has no audio stream (preprocessing needs the person's speech)")
        vs = container.streams.video[0]
        au = container.streams.audio[0]
        first = None
        try:
            for frame in container.decode(vs):
                first = frame
                break
        except av.error.FFmpegError as e:
            raise PreprocessError(f"{path}: corrupt or truncated video, the first frame does not decode ({first_line(e)})") from None
        if first is None:
            raise PreprocessError(f"{path}: corrupt or truncated video, no frame decodes")
        rot = int(round((first.rotation or 0) / 90.0)) % 4 * 90
        w, h = first.width, first.height
        if rot in (90, 270):
            w, h = h, w
        t0 = float(first.time) if first.time is not None else 0.0
        fps = float(vs.average_rate) if vs.average_rate else (float(vs.guessed_rate) if vs.guessed_rate else 25.0)
        if vs.duration is not None and vs.time_base is not None:
            start = float(vs.start_time * vs.time_base) if vs.start_time is not None else t0
            duration = float(vs.duration * vs.time_base) - (t0 - start)
        elif container.duration is not None:
            duration = container.duration / 1e6 - t0
        else:
            duration = float("nan")
        info = VideoInfo(
            path=str(path), width=w, height=h, rotation=rot, fps=fps, t0=t0, duration=duration,
            codec=vs.codec_context.name, audio_rate=int(au.rate or 0), audio_channels=int(au.channels or 0),
        )
    if math.isfinite(info.duration) and info.duration < MIN_SECONDS:
        raise PreprocessError(f"{path}: is only {info.duration:.2f} s long; at least {MIN_SECONDS:g} s of video are needed")
    return info


def _upright(frame, rotation: int, scale: float = 1.0) -> np.ndarray:
    """RGB [H, W, 3] uint8 as displayed (rotation applied), optionally downscaled by `scale`
    (FFmpeg's area filter, before the RGB conversion: much cheaper for 4K sources)."""
    if scale < 1.0:
        w = max(2, int(round(frame.width * scale)))
        h = max(2, int(round(frame.height * scale)))
        arr = frame.reformat(width=w, height=h, format="rgb24", interpolation="AREA").to_ndarray()
    else:
        arr = frame.to_ndarray(format="rgb24")
    if rotation:
        arr = np.ascontiguousarray(np.rot90(arr, k=rotation // 90))
    return arr


def iter_frames(
    info: VideoInfo, fps: float = 25.0, start: float = 0.0, end: Optional[float] = None,
    keep=None, scale: float = 1.0, skip_nonref: bool = False,
) -> Iterator[Tuple[int, float, Optional[np.ndarray]]]:
    """Stream (k, t, rgb) for output frames k = 0, 1, ... at `fps`, times relative to the video start.

    Output frame k shows the source frame on screen at t = start + (k + 0.5) / fps (the middle
    of the interval it covers), found by timestamps, so variable frame rates resample correctly.
    `keep(k) -> bool` (optional) selects which frames get converted to RGB (others yield None),
    so a scan can decode everything but convert only a sample. `scale` < 1 downscales.
    `skip_nonref` skips decoding frames no other frame refers to (for scans; output frames then
    repeat the nearest decoded one). Frames never sit in memory beyond
    the current one. Raises PreprocessError when decoding fails partway (corrupt/truncated file).
    """
    import av

    path = Path(info.path)
    end_t = info.duration if end is None else end
    try:
        container = av.open(str(path))
    except av.error.FFmpegError as e:
        raise PreprocessError(f"{path}: not a video FFmpeg can read ({first_line(e)})") from None
    with container:
        vs = container.streams.video[0]
        vs.thread_type = "AUTO"
        if skip_nonref:  # a scan: frames nothing else refers to need not be decoded (about 2x faster)
            vs.codec_context.skip_frame = "NONREF"
        if start > 1.0 and vs.time_base is not None:
            try:
                container.seek(int((info.t0 + start - 0.5) / vs.time_base), stream=vs, backward=True)
            except av.error.FFmpegError:
                container.seek(0)
        k = 0
        prev = None  # (time, frame)
        prev_dur = 1.0 / max(info.fps, 1.0)

        def target(k):
            return start + (k + 0.5) / fps

        def emit(frame, upto):
            nonlocal k
            while target(k) < upto and (end_t is None or not math.isfinite(end_t) or target(k) < end_t):
                rgb = _upright(frame, info.rotation, scale) if (keep is None or keep(k)) else None
                yield k, target(k) - 0.5 / fps, rgb
                k += 1

        try:
            for frame in container.decode(vs):
                if frame.time is None:
                    continue
                t = float(frame.time) - info.t0
                if prev is not None:
                    if t > prev[0]:
                        prev_dur = t - prev[0]
                    if t > target(k):
                        yield from emit(prev[1], t)
                    if math.isfinite(end_t) and target(k) >= end_t:
                        return
                prev = (t, frame)
        except av.error.FFmpegError as e:
            raise PreprocessError(
                f"{path}: corrupt or truncated video, decoding failed near {prev[0] if prev else 0:.1f} s ({first_line(e)})"
            ) from None
        if prev is not None:
            fdur = float(prev[1].duration * prev[1].time_base) if prev[1].duration and prev[1].time_base else prev_dur
            yield from emit(prev[1], prev[0] + fdur + 1e-6)
