"""`gstalker serve`: a trained talker live in the browser.

One page (gstalker/web/index.html): pick an audio file or speak into the microphone; the person
answers in a <video> element while the speech still arrives. Starlette (ASGI) and uvicorn serve
it; one WebSocket per client carries the speech in and the frames out:

    client -> server   {"type": "file", "name", "size", "poses"}  then, after {"type": "send"}, the file's bytes
                       {"type": "mic", "rate", "poses"}  then float32 PCM chunks, then {"type": "stop"}
    server -> client   {"type": "hello", ...}  {"type": "start", ...}  {"type": "error", "message"}
                       {"type": "stats", ...}  {"type": "end", ...}
                       binary b"A" + uint32 first sample + float32 16 kHz PCM   (file mode: the speech to play)
                       binary b"F" + uint32 frame + float32 latency ms + image  (PNG up to 256 px, JPEG above)

Why WebSocket and not WebRTC or MSE: a frame is one message with its index, so the page shows it
at its audio's time (exact sync, no codec clock to trust), a late frame is simply not rendered
(the server skips it; the audio is never dropped), and it needs no video codec in the browser
(headless Chromium builds lack H.264, which MSE would need). The page draws frames on a canvas
whose captureStream() is the <video>'s source, with the speech's audio track beside it.

A file is "spoken" at its own pace (20 ms chunks on the wall clock), as a microphone would
deliver it, so both sources go through the same `CodeStream` as `Talker.stream`.

Bounded work per client: uploads up to --max-mb, speech up to --max-seconds (checked from the
header before decoding, and again while decoding), at most --max-clients sessions. Uploads are
written into one temporary folder, deleted after decoding, and the folder is removed on exit.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import shutil
import struct
import sys
import tempfile
import time
from collections import deque
from contextlib import asynccontextmanager
from pathlib import Path

import numpy as np
import torch

from .speak import Talker
from .data import SAMPLE_RATE
from .errors import GstalkerError, first_line
from .streaming import SAMPLES_PER_FRAME, CodeStream

CHUNK = 320  # 20 ms: how a file's speech is fed, as a microphone would
PAGE = Path(__file__).with_name("web") / "index.html"


class SpeechTooLong(GstalkerError):
    pass


def decode_upload(path: Path, max_seconds: float) -> np.ndarray:
    """A file -> float32 [samples] 16 kHz mono, refusing more than `max_seconds` of audio: from the
    header's duration before decoding, and while decoding (headers can lie or be absent)."""
    import av

    from .errors import AudioError

    if path.stat().st_size == 0:
        raise GstalkerError("the file is empty; choose a recording of speech")
    try:
        container = av.open(str(path))
    except av.error.FFmpegError as e:
        raise GstalkerError(f"not an audio or video file ({first_line(e)}); choose a wav, mp3, m4a, flac or a video")
    with container:
        if not container.streams.audio:
            raise GstalkerError("the file has no audio track; choose a recording of speech")
        stream = container.streams.audio[0]
        duration = None
        if stream.duration is not None and stream.time_base is not None:
            duration = float(stream.duration * stream.time_base)
        elif container.duration is not None:
            duration = container.duration / 1e6
        if duration is not None and duration > max_seconds:
            raise SpeechTooLong(f"the speech is {_clock(duration)} long; this server takes up to {_clock(max_seconds)} "
                                "(gstalker serve --max-seconds)")
        resampler = av.AudioResampler(format="fltp", rate=SAMPLE_RATE)
        chunks, n = [], 0
        try:
            for frame in container.decode(stream):
                for out in resampler.resample(frame):
                    chunks.append(out.to_ndarray().mean(0))
                    n += chunks[-1].shape[0]
                if n > max_seconds * SAMPLE_RATE:
                    raise SpeechTooLong(f"the speech is longer than {_clock(max_seconds)}; this server takes up to "
                                        f"{_clock(max_seconds)} (gstalker serve --max-seconds)")
            chunks += [out.to_ndarray().mean(0) for out in resampler.resample(None)]
        except (av.error.FFmpegError, AudioError) as e:
            raise GstalkerError(f"corrupt or truncated audio ({first_line(e)})") from None
    wave = np.clip(np.concatenate(chunks).astype(np.float32), -1, 1) if chunks else np.zeros(0, np.float32)
    if len(wave) < SAMPLES_PER_FRAME:
        raise GstalkerError(f"the file holds {len(wave) / SAMPLE_RATE * 1000:.0f} ms of audio, less than one "
                            "video frame (40 ms); choose a recording of speech")
    return wave


def _clock(seconds: float) -> str:
    s = int(round(seconds))
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"


def encode_image(frame: np.ndarray) -> bytes:
    """[H, W, 3] uint8 -> PNG (lossless: faint motion survives) up to 256 px, JPEG above (10x smaller)."""
    from PIL import Image

    buf = io.BytesIO()
    img = Image.fromarray(frame)
    if max(frame.shape[:2]) <= 256:
        img.save(buf, format="PNG", compress_level=1)
    else:
        img.save(buf, format="JPEG", quality=90)
    return buf.getvalue()


class LiveSession:
    """One client's stream: speech pushed in (`push`, any chunking, 16 kHz), codes from the shared
    `CodeStream` definition, frames rendered unless late. Frame k is due on the client at
    (arrival of the end of its own audio) + `delay_s`; when that time has passed and a later frame
    is waiting, frame k is dropped (counted) instead of rendered: the frame rate falls, the
    audio goes on. `send_frame(k,
    latency_ms, image_bytes)` and `send_dropped(k)` are coroutines the server supplies."""

    def __init__(self, talker: Talker, poses: str, delay_s: float, send_frame, send_dropped=None):
        self.talker, self.poses, self.delay_s = talker, poses, delay_s
        self.codes = CodeStream(talker.model)
        self.send_frame, self.send_dropped = send_frame, send_dropped
        self.arrivals: deque = deque()  # (samples received so far, time) per push
        self.queue: asyncio.Queue = asyncio.Queue()
        self.received = 0
        self.rendered = self.dropped = 0
        self.latencies: list[float] = []
        self.first_sent: float | None = None
        self.last_sent: float | None = None

    def _arrival(self, sample: int) -> float:
        """When the chunk holding `sample` (exclusive end) came in."""
        while len(self.arrivals) > 1 and self.arrivals[1][0] < sample:
            self.arrivals.popleft()
        for end, t in self.arrivals:
            if end >= sample:
                return t
        return self.arrivals[-1][1]

    def push(self, samples: np.ndarray, now: float | None = None) -> None:
        now = time.perf_counter() if now is None else now
        self.received += len(samples)
        self.arrivals.append((self.received, now))
        for k, code in self.codes.push(samples):
            self.queue.put_nowait((k, code))

    def finish(self) -> None:
        if self.received < SAMPLES_PER_FRAME:
            raise GstalkerError("less than 40 ms of speech arrived")
        for k, code in self.codes.finish():
            self.queue.put_nowait((k, code))
        self.queue.put_nowait(None)

    def _render(self, k: int, code: torch.Tensor) -> bytes:
        viewmat, eye = self.talker.pose(k, self.poses)
        img = self.talker.render(code, viewmat, eye)
        return encode_image((img * 255).round().byte().cpu().numpy())

    async def run(self) -> None:
        """Render and send frames until `finish` has been called and every frame went out."""
        while (item := await self.queue.get()) is not None:
            k, code = item
            own_end = min(SAMPLES_PER_FRAME * (k + 1), self.received)
            arrived = self._arrival(own_end)
            due = arrived + self.delay_s
            # late (its time on the page has passed) and a later frame is waiting: skip to it. (An
            # estimate of the render time here once starved a slow machine: an inflated estimate
            # dropped every frame, so it was never measured again.)
            if not self.queue.empty() and time.perf_counter() > due:
                self.dropped += 1
                if self.send_dropped is not None:
                    await self.send_dropped(k)
                continue
            image = await asyncio.to_thread(self._render, k, code)
            now = time.perf_counter()
            latency = (now - arrived) * 1e3
            self.latencies.append(latency)
            await self.send_frame(k, latency, image)
            self.rendered += 1
            self.first_sent = self.first_sent or now
            self.last_sent = now

    def fps(self) -> float:
        if not self.first_sent or self.rendered < 2 or self.last_sent == self.first_sent:
            return 0.0
        return (self.rendered - 1) / (self.last_sent - self.first_sent)


def create_app(talker: Talker, max_seconds: float = 600.0, max_mb: float = 50.0, max_clients: int = 8,
               delay_ms: float | None = None, workdir: Path | None = None):
    """The ASGI app: GET / (the page), GET /health, WebSocket /ws. Uploads go to a temporary folder
    inside `workdir` (default: the system's), removed when the app shuts down."""
    from starlette.applications import Starlette
    from starlette.routing import Route, WebSocketRoute

    app = _App(talker, max_seconds, max_mb, max_clients, delay_ms, workdir)
    return Starlette(routes=[Route("/", app.page), Route("/health", app.health), WebSocketRoute("/ws", app.ws)],
                     lifespan=app.lifespan)


def _websocket_disconnect():
    from starlette.websockets import WebSocketDisconnect

    return WebSocketDisconnect


class _App:
    """What `create_app` serves: the limits, the client count and the upload folder, and one
    method per route and request kind."""

    def __init__(self, talker: Talker, max_seconds: float, max_mb: float, max_clients: int,
                 delay_ms: float | None, workdir: Path | None):
        self.talker, self.max_seconds, self.max_mb, self.max_clients = talker, max_seconds, max_mb, max_clients
        self.workdir = workdir
        self.lookahead = talker.stream_latency_ms
        # look-ahead + time to render and send
        self.delay_s = (self.lookahead + 240.0 if delay_ms is None else delay_ms) / 1000
        self.max_bytes = int(max_mb * 1024 * 1024)
        self.state = {"clients": 0, "tmp": None}
        self.H, self.W = talker.size

    @asynccontextmanager
    async def lifespan(self, app):
        self.state["tmp"] = Path(tempfile.mkdtemp(prefix="gstalker-serve-", dir=self.workdir))
        try:
            yield
        finally:
            shutil.rmtree(self.state["tmp"], ignore_errors=True)

    async def page(self, request):
        from starlette.responses import HTMLResponse

        return HTMLResponse(PAGE.read_text(encoding="utf-8"))

    async def health(self, request):
        from starlette.responses import JSONResponse

        return JSONResponse({"ok": True, "clients": self.state["clients"], "size": [self.H, self.W],
                             "lookahead_ms": self.lookahead})

    async def ws(self, socket):
        await socket.accept()
        if self.state["clients"] >= self.max_clients:
            await socket.send_json({"type": "error", "message": f"the server is busy ({self.max_clients} streams); try again "
                                                                "in a minute (gstalker serve --max-clients)"})
            await socket.close()
            return
        self.state["clients"] += 1
        try:
            await socket.send_json({"type": "hello", "fps": Talker.fps, "width": self.W, "height": self.H,
                                    "lookahead_ms": self.lookahead, "delay_ms": self.delay_s * 1000,
                                    "max_seconds": self.max_seconds, "max_mb": self.max_mb})
            while True:
                msg = await socket.receive_json()
                kind = msg.get("type")
                poses = msg.get("poses", "playback")
                if poses not in ("playback", "still"):
                    await socket.send_json({"type": "error", "message": f"poses must be playback or still, got {poses!r}"})
                elif kind == "file":
                    await self._serve_file(socket, msg, poses)
                elif kind == "mic":
                    await self._serve_mic(socket, msg, poses)
                else:
                    await socket.send_json({"type": "error", "message": f"unknown request {kind!r}"})
        except GstalkerError as e:
            try:
                await socket.send_json({"type": "error", "message": str(e)})
            except Exception:
                pass
        except (_websocket_disconnect(), RuntimeError, OSError, json.JSONDecodeError, KeyError, TypeError, ValueError):
            pass  # the client went away (or spoke nonsense): its stream ends, the others go on
        except Exception as e:  # a bug must end this stream only, with a message, not the server
            try:
                await socket.send_json({"type": "error", "message": f"server error: {type(e).__name__}: {e}"})
            except Exception:
                pass
        finally:
            self.state["clients"] -= 1

    def senders(self, socket):
        async def send_frame(k, latency_ms, image):
            await socket.send_bytes(b"F" + struct.pack("<If", k, latency_ms) + image)

        async def send_dropped(k):
            pass  # the page counts the gap in frame numbers

        return send_frame, send_dropped

    async def _stats(self, socket, session, final=False):
        lat = session.latencies[-25:]
        await socket.send_json({"type": "end" if final else "stats", "rendered": session.rendered,
                                "dropped": session.dropped, "fps": round(session.fps(), 1),
                                "latency_ms": round(float(np.median(lat)), 1) if lat else None})

    async def _serve_file(self, socket, msg, poses):
        size = int(msg.get("size", -1))
        name = Path(str(msg.get("name", "upload"))).name[:100] or "upload"
        if size == 0:
            await socket.send_json({"type": "error", "message": f"{name}: the file is empty; choose a recording of speech"})
            return
        if size > self.max_bytes:
            await socket.send_json({"type": "error", "message": f"{name}: {size / 2**20:.0f} MB is more than this "
                                    f"server takes ({self.max_mb:g} MB, gstalker serve --max-mb); cut the speech shorter"})
            return
        await socket.send_json({"type": "send"})
        data = await socket.receive_bytes()
        if len(data) > self.max_bytes:
            await socket.send_json({"type": "error", "message": f"{name}: more than {self.max_mb:g} MB"})
            return
        fd, tmp = tempfile.mkstemp(dir=self.state["tmp"], suffix=Path(name).suffix[:10])
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            del data
            wave = await asyncio.to_thread(decode_upload, Path(tmp), self.max_seconds)
        except GstalkerError as e:
            await socket.send_json({"type": "error", "message": f"{name}: {e}"})
            return
        finally:
            os.unlink(tmp)
        send_frame, send_dropped = self.senders(socket)
        session = LiveSession(self.talker, poses, self.delay_s, send_frame, send_dropped)
        await socket.send_json({"type": "start", "source": "file", "name": name, "seconds": len(wave) / SAMPLE_RATE,
                                "frames": max(1, round(len(wave) / SAMPLES_PER_FRAME))})
        renderer = asyncio.create_task(session.run())

        async def feed():
            t0 = time.perf_counter()
            for i in range(0, len(wave), CHUNK):
                due = t0 + (i + CHUNK) / SAMPLE_RATE  # the chunk is complete at this time
                await asyncio.sleep(max(0.0, due - time.perf_counter()))
                chunk = wave[i:i + CHUNK]
                await socket.send_bytes(b"A" + struct.pack("<I", i) + chunk.astype("<f4").tobytes())
                session.push(chunk)
                if i % (CHUNK * 50) == 0 and i:
                    await self._stats(socket, session)
            session.finish()

        await self._run_both(feed(), renderer)
        await self._stats(socket, session, final=True)

    async def _serve_mic(self, socket, msg, poses):
        import av

        rate = int(msg.get("rate", 48000))
        if not 8000 <= rate <= 192000:
            await socket.send_json({"type": "error", "message": f"microphone rate {rate} Hz is not supported"})
            return
        resampler = av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE)
        send_frame, send_dropped = self.senders(socket)
        session = LiveSession(self.talker, poses, self.delay_s, send_frame, send_dropped)
        await socket.send_json({"type": "start", "source": "mic"})
        renderer = asyncio.create_task(session.run())
        pts = 0

        async def feed():
            nonlocal pts
            while True:
                m = await socket.receive()
                if m.get("type") == "websocket.disconnect":
                    raise _websocket_disconnect()()
                if m.get("text") is not None:
                    break  # {"type": "stop"}
                pcm = np.frombuffer(m["bytes"], dtype="<f4")
                if not np.isfinite(pcm).all():
                    raise GstalkerError("microphone audio holds NaN or infinite samples")
                frame = av.AudioFrame.from_ndarray(pcm.reshape(1, -1).astype(np.float32), format="flt", layout="mono")
                frame.sample_rate, frame.pts = rate, pts
                pts += len(pcm)
                for out in resampler.resample(frame):
                    session.push(out.to_ndarray().reshape(-1))
                if session.received > self.max_seconds * SAMPLE_RATE:
                    raise SpeechTooLong(f"the microphone stream passed {_clock(self.max_seconds)}; press the button to start again")
                if pts // rate != (pts - len(pcm)) // rate:
                    await self._stats(socket, session)
            for out in resampler.resample(None):
                session.push(out.to_ndarray().reshape(-1))
            if session.received >= SAMPLES_PER_FRAME:
                session.finish()
            else:
                session.queue.put_nowait(None)

        try:
            await self._run_both(feed(), renderer)
        except GstalkerError as e:
            await socket.send_json({"type": "error", "message": str(e)})
            return
        await self._stats(socket, session, final=True)

    async def _run_both(self, feed, renderer):
        """Feed and render together; if either fails (a disconnect), stop the other."""
        feeder = asyncio.ensure_future(feed)
        try:
            await asyncio.gather(feeder, renderer)
        finally:
            for task in (feeder, renderer):
                if not task.done():
                    task.cancel()
            await asyncio.gather(feeder, renderer, return_exceptions=True)


def serve(model: str | os.PathLike, host: str = "127.0.0.1", port: int = 7860, device: str = "auto",
          size: int | None = None, max_seconds: float = 600.0, max_mb: float = 50.0, max_clients: int = 8,
          delay_ms: float | None = None, log_level: str = "warning", mouth_gain: float | None = None) -> None:
    """Load `model` and serve the page at http://host:port/ until interrupted."""
    try:
        import uvicorn
    except ImportError:  # pragma: no cover - a dependency
        raise GstalkerError("gstalker serve needs uvicorn and starlette: pip install uvicorn starlette websockets")
    import socket

    from .speak import load

    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:  # uvicorn exits on a busy port
        try:
            probe.bind((host, port))
        except OSError as e:
            raise GstalkerError(f"cannot listen on {host}:{port} ({e.strerror}); choose another --port") from None
    talker = load(model, device=device, size=size, mouth_gain=mouth_gain)
    if talker.feature_kind != "mel":
        talker._code_stream()  # raises the one-line error
    for _ in talker.stream([np.zeros(SAMPLE_RATE // 5, np.float32)]):  # warm up before the first client waits
        pass
    app = create_app(talker, max_seconds=max_seconds, max_mb=max_mb, max_clients=max_clients, delay_ms=delay_ms)
    print(f"gstalker: serving {Path(model).name} ({talker.size[1]}x{talker.size[0]}, {talker.model.device}) at "
          f"http://{'[' + host + ']' if ':' in host else host}:{port}/ (Ctrl-C stops)", file=sys.stderr, flush=True)
    uvicorn.run(app, host=host, port=port, log_level=log_level, ws_max_size=int(max_mb * 1024 * 1024) + 4096)
