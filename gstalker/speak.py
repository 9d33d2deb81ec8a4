"""Make a trained subject speak: `load` a model file into a `Talker`, whose `speak`, `frames` and
`stream` share one render loop (`Talker._render_loop`).

    talker = gstalker.load("subject.safetensors")
    talker.speak("speech.wav", out="out.mp4")          # an mp4 with the speech muxed in
    for frame in talker.frames("speech.wav"): ...      # [H, W, 3] uint8, one at a time
    for frame in talker.stream(chunks): ...            # live: frames while the audio arrives

Audio in (any file or array -> 16 kHz mono), audio codes (`codes`, the running definition of
gstalker/streaming.py for mel models), head poses (training poses played back), frames out.
The model itself (`TalkerModel`: Gaussians, deformation fields, one-file format) is in talker.py.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import torch

from .data import FPS, check_frame_size
from .errors import GstalkerError
from .serialization import check_writable


def load(path: str | os.PathLike, device: str = "auto", backend: str = "auto", size: int | None = None,
         mouth_gain: float | None = None) -> "Talker":
    """Read a model file written by `fit` (no workdir needed) onto `device`: a `Talker`.
    `size`: render square frames of this side instead of the training size. `mouth_gain`: how
    far the audio moves the face, over the model's own (`Talker`; None: the model's)."""
    from .api import resolve_device
    from .talker import TalkerModel

    dev = resolve_device(device)
    model, meta = TalkerModel.load(path, dev)
    if size is not None:
        size = check_frame_size(size)
        model.resize_(size, size)
    return Talker(model.eval(), meta, backend=backend, mouth_gain=mouth_gain)


MAX_MOUTH_GAIN = 3.0


def _check_mouth_gain(model, gain: float | None) -> float:
    """The gain to render with: `gain`, or the model's when None; out-of-range values and a gain
    the model file cannot give (no mean code before format 4) fail with the fix."""
    own = model.mouth_gain
    if gain is None:
        return 1.0 if own is None else own
    gain = float(gain)
    if not 0 <= gain <= MAX_MOUTH_GAIN:  # also NaN
        raise GstalkerError(f"--mouth-gain must be between 0 (a still mouth) and {MAX_MOUTH_GAIN:g}, got {gain:g}; "
                            "1 moves the mouth as trained")
    if own is None and gain != 1.0:
        raise GstalkerError("this model file is from before mouth gain (format 3 or older, no mean audio code): "
                            "leave --mouth-gain out, or fit the model again with this version")
    return gain


class Talker:
    """A trained subject, ready to speak. Made by `gstalker.load(path)`.

    talker.speak("speech.wav", out="out.mp4")     # writes the video (audio muxed in)
    frames = talker.speak(wave, sample_rate=16000)  # or returns [T, H, W, 3] uint8
    for frame in talker.frames("speech.wav"): ...   # one [H, W, 3] uint8 frame at a time
    for frame in talker.stream(mic_chunks): ...     # live: 16 kHz chunks in, frames out as they complete
    """

    fps = FPS

    def __init__(self, model, meta: dict, backend: str = "auto", mouth_gain: float | None = None):
        """mouth_gain: the audio's motion of the face scaled about the mean training code's face
        (`TalkerModel.deform`); None: the gain `fit` stored in the model (1 for files before format 4,
        which cannot take another)."""
        self.model, self.meta, self.backend = model, meta, backend
        self.mouth_gain = _check_mouth_gain(model, mouth_gain)
        self.feature_kind = meta["audio_features"]["kind"]
        self.last_render_fps: float | None = None
        self._cache = model.inference_cache(backend)

    @property
    def size(self) -> tuple[int, int]:
        """(height, width) of the frames."""
        return self.model.height, self.model.width

    # -------------------------------------------------------------- audio in

    def audio(self, audio, sample_rate: int | None = None):
        """A path (any file PyAV decodes) or a [samples] float array at `sample_rate` (default
        16000) -> float32 [samples] at 16 kHz mono."""
        import numpy as np

        from .audio import SAMPLE_RATE, load_audio

        if isinstance(audio, (str, os.PathLike)):
            wave = load_audio(audio)
        else:
            wave = np.asarray(audio.cpu() if hasattr(audio, "cpu") else audio, dtype=np.float32)
            if wave.ndim == 2:  # [channels, samples] or [samples, channels]
                wave = wave.mean(axis=0 if wave.shape[0] < wave.shape[1] else 1)
            if wave.ndim != 1:
                raise GstalkerError(f"audio array must be [samples] (or [channels, samples]), got shape {list(wave.shape)}")
            wave = _resample(wave, sample_rate or SAMPLE_RATE, SAMPLE_RATE)
        if len(wave) < SAMPLE_RATE // self.fps:
            raise GstalkerError(f"audio is {len(wave) / SAMPLE_RATE * 1000:.0f} ms long, shorter than one video frame (40 ms)")
        if not np.isfinite(wave).all():
            raise GstalkerError("audio holds NaN or infinite samples")
        return wave

    def codes(self, wave) -> torch.Tensor:
        """16 kHz speech -> smoothed audio codes [T, code_dim], one per 25 fps frame."""
        from .audio import SAMPLE_RATE, extract_features

        if self.feature_kind == "mel":  # the running definition `stream` shares (gstalker/streaming.py)
            s = self._code_stream()
            return torch.stack([code for _, code in s.push(wave) + s.finish()])
        n = max(1, round(len(wave) * self.fps / SAMPLE_RATE))
        windows = extract_features(wave, self.feature_kind, num_frames=n)
        with torch.no_grad():
            return self.model.codes(torch.as_tensor(windows))

    def _code_stream(self):
        from .streaming import CodeStream

        if self.feature_kind != "mel":
            raise GstalkerError(f"streaming needs a model trained on mel features; this one uses {self.feature_kind!r} "
                                "(whole-recording features): use frames() or speak(), or fit with --audio-features mel")
        return CodeStream(self.model)

    @property
    def stream_latency_ms(self) -> float:
        """How long after the end of a frame's audio `stream` can yield that frame (260 ms for the
        default model: the feature window's 132.5 ms look-ahead, the smoother's 3 frames, and the
        7.5 ms rest of the 20 ms loudness block), computing time excluded."""
        from .streaming import lookahead_ms

        return lookahead_ms(self.model.smoother.att_window)

    # -------------------------------------------------------------- poses

    def pose(self, k: int, poses: str = "playback"):
        """Head pose [4, 4] and eye value of output frame k: the training poses played back and
        forth from the start ("playback"), or the first one held ("still")."""
        if poses not in ("playback", "still"):
            raise GstalkerError(f"--poses must be playback or still, got {poses!r}")
        P = self.model.poses.shape[0]
        if poses == "still" or P == 1:
            j = 0
        else:
            j = k % (2 * P - 2)
            j = j if j < P else 2 * P - 2 - j
        return self.model.poses[j], self.model.eyes[j]

    # -------------------------------------------------------------- frames out

    @torch.no_grad()
    def render(self, audio_code: torch.Tensor, viewmat: torch.Tensor, eye) -> torch.Tensor:
        """One frame: audio_code [code_dim], viewmat [4, 4], eye (scalar) -> [H, W, 3] float in [0, 1]."""
        dev = self.model.device
        out = self.model.render(audio_code.to(dev), viewmat.to(dev), eye, deform=True, backend=self.backend,
                                cache=self._cache, mouth_gain=self.mouth_gain)
        return out["image"].clamp(0, 1)

    def frames(self, audio, sample_rate: int | None = None, poses: str = "playback"):
        """Yield [H, W, 3] uint8 frames of the subject saying `audio`, one per 1/25 s.

        The whole audio is read first; `stream` yields the same frames while audio arrives.
        """
        codes = self.codes(self.audio(audio, sample_rate))
        yield from self._render_loop(enumerate(codes), poses)

    def _render_loop(self, coded, poses: str):
        """The one render loop of `frames`, `stream` and `speak`: (k, audio code [code_dim]) pairs
        in, frame k's [H, W, 3] uint8 image out, with the pose and eye of output frame k. Once
        `coded` ends, `last_render_fps` holds the render speed (the GPU waited for; the copy to
        uint8 and whatever the consumer does excluded)."""
        seconds, count = 0.0, 0
        for k, code in coded:
            viewmat, eye = self.pose(k, poses)
            t0 = time.perf_counter()
            img = self.render(code, viewmat, eye)
            if img.is_cuda:
                torch.cuda.synchronize()
            seconds += time.perf_counter() - t0
            count += 1
            yield (img * 255).round().byte().cpu().numpy()
        self.last_render_fps = count / max(seconds, 1e-9)

    def _original_audio(self, audio, sample_rate: int | None):
        """The speech as given, for the video's audio track: ([channels, samples] float32, rate, layout)."""
        import numpy as np

        from .audio import SAMPLE_RATE, load_audio_track

        if isinstance(audio, (str, os.PathLike)):
            return load_audio_track(audio)
        track = np.asarray(audio.cpu() if hasattr(audio, "cpu") else audio, dtype=np.float32)
        if track.ndim == 2 and track.shape[0] > track.shape[1]:  # [samples, channels]
            track = track.T
        track = track.reshape(1, -1) if track.ndim == 1 else track
        return np.clip(track, -1.0, 1.0), sample_rate or SAMPLE_RATE, None

    def stream(self, chunks, poses: str = "playback"):
        """Yield [H, W, 3] uint8 frames while speech arrives: `chunks` is an iterable of 16 kHz mono
        float arrays [n] of any length (e.g. 20-100 ms from a microphone). Frame k is yielded as
        soon as the chunk holding sample 640 k + 4800 has arrived (`stream_latency_ms` after the
        end of its own audio), the rest when `chunks` ends. The frames equal `frames(audio)` on the
        concatenated audio, bit for bit. Chunks are read only when the next frame is asked for,
        so a slow consumer delays the reading; nothing is skipped or reordered."""
        self.pose(0, poses)
        yield from self._render_loop(self._stream_codes(chunks), poses)

    def _stream_codes(self, chunks):
        """(k, audio code) of each frame as soon as `chunks` (16 kHz mono [n] arrays) allow it."""
        import numpy as np

        from .audio import SAMPLE_RATE

        s = self._code_stream()
        for chunk in chunks:
            wave = np.asarray(chunk.cpu() if hasattr(chunk, "cpu") else chunk, dtype=np.float32)
            if wave.ndim != 1:
                raise GstalkerError(f"stream chunks must be 16 kHz mono [samples] arrays, got shape {list(wave.shape)}")
            if not np.isfinite(wave).all():
                raise GstalkerError("audio chunk holds NaN or infinite samples")
            yield from s.push(wave)
        if s.mel.received < SAMPLE_RATE // self.fps:
            raise GstalkerError(f"audio is {s.mel.received / SAMPLE_RATE * 1000:.0f} ms long, shorter than one video "
                                "frame (40 ms)")
        yield from s.finish()

    def speak(self, audio, out: str | os.PathLike | None = None, sample_rate: int | None = None,
              poses: str = "playback", crf: int = 18, progress: bool | None = None):
        """Render the subject saying `audio`. Returns [T, H, W, 3] uint8 frames when `out` is None,
        else writes an H.264/AAC mp4 at `out` (atomically; memory stays flat) and returns its path.
        `self.last_render_fps` holds the render speed (encoding excluded)."""
        import numpy as np

        from .encode import Mp4Writer
        from .progress import Progress

        if out is not None:
            out = Path(out)
            if out.is_dir():
                raise GstalkerError(f"output {out} is a directory; give a file name such as {out / 'out.mp4'}")
            check_writable(out.parent if str(out.parent) else Path("."), "output")
        self.pose(0, poses)
        wave = self.audio(audio, sample_rate)
        codes = self.codes(wave)
        H, W = self.size
        frames = [] if out is None else None
        writer = None
        if out is not None:  # the speech itself in the mp4 (its rate and channels), not the 16 kHz mono copy
            track, rate, layout = self._original_audio(audio, sample_rate)
            writer = Mp4Writer(out, W, H, audio=track, sample_rate=rate, crf=crf, layout=layout)
        try:
            with Progress(progress) as bars:
                bar = bars.task("rendering", codes.shape[0], unit="frames")
                for u8 in self._render_loop(enumerate(codes), poses):
                    if writer is None:
                        frames.append(u8)
                    else:
                        writer.write(u8)
                    bar.advance(1)
        except BaseException:
            if writer is not None:
                writer.abort()
            raise
        if writer is None:
            return np.stack(frames)
        return writer.close()

def _resample(wave, rate: int, target: int):
    """Resample a mono float32 array with FFmpeg's resampler (PyAV)."""
    import av
    import numpy as np

    if rate == target:
        return wave.astype(np.float32)
    if rate <= 0:
        raise GstalkerError(f"sample_rate must be positive, got {rate}")
    resampler = av.AudioResampler(format="flt", layout="mono", rate=target)
    frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(wave, dtype=np.float32)[None], format="flt", layout="mono")
    frame.sample_rate = rate
    chunks = [f.to_ndarray().reshape(-1) for f in resampler.resample(frame)]
    chunks += [f.to_ndarray().reshape(-1) for f in resampler.resample(None)]
    return np.concatenate(chunks).astype(np.float32) if chunks else np.zeros(0, np.float32)
