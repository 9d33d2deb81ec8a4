"""Helpers the serve tests share: a server on a free loopback port, the page's protocol as a
Python client, test recordings."""

import json
import socket
import struct
import threading
import time

import numpy as np

from gstalker.audio import save_wav


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """uvicorn in a thread on a free loopback port; `stop()` shuts it down (the app's lifespan
    removes its temp folder)."""

    def __init__(self, app):
        import uvicorn

        self.port = free_port()
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning",
                                                    ws_max_size=60 * 2**20))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        for _ in range(200):  # bounded: 10 s
            if self.server.started:
                break
            time.sleep(0.05)
        assert self.server.started, "the server did not start"
        self.url = f"http://127.0.0.1:{self.port}"

    def stop(self):
        self.server.should_exit = True
        self.thread.join(timeout=10)


def speech_wav(path, seconds=2.0, rate=22050):
    t = np.arange(int(rate * seconds)) / rate
    env = np.clip(np.sin(2 * np.pi * 2 * t), 0, None) ** 2
    save_wav(path, (0.3 * env * np.sign(np.sin(2 * np.pi * 140 * t))).astype(np.float32), rate)
    return path


def two_hour_flac(path):
    """A real 2-hour recording (8 kHz silence, FLAC: 1.3 MB, 2 s to write)."""
    import av

    with av.open(str(path), "w") as c:
        a = c.add_stream("flac", rate=8000)
        a.layout, a.format = "mono", "s16"
        zeros = np.zeros((1, 80000), np.int16)
        for i in range(720):
            f = av.AudioFrame.from_ndarray(zeros, format="s16", layout="mono")
            f.sample_rate, f.pts = 8000, i * 80000
            c.mux(a.encode(f))
        c.mux(a.encode(None))
    return path


def stream_file(url, data: bytes, name="speech.wav", stop_after_frames=None, limit=2000):
    """Play one upload as the page does; returns what came back: {"messages", "frames" [(k,
    latency, arrival index)], "audio_samples", "first_frame_before_audio_end"}."""
    from websockets.sync.client import connect

    out = {"messages": [], "frames": [], "audio_samples": 0}
    with connect(url.replace("http", "ws") + "/ws", max_size=None, open_timeout=10) as ws:
        hello = json.loads(ws.recv(timeout=10))
        assert hello["type"] == "hello"
        ws.send(json.dumps({"type": "file", "name": name, "size": len(data), "poses": "still"}))
        for i in range(limit):  # bounded
            m = ws.recv(timeout=30)
            if isinstance(m, str):
                m = json.loads(m)
                out["messages"].append(m)
                if m["type"] == "send":
                    ws.send(data)
                if m["type"] in ("end", "error"):
                    break
            elif m[:1] == b"A":
                first = struct.unpack("<I", m[1:5])[0]
                out["audio_samples"] = first + (len(m) - 5) // 4
            else:
                k, latency = struct.unpack("<If", m[1:9])
                out["frames"].append((k, latency, out["audio_samples"]))
                out.setdefault("images", {})[k] = m[9:]
                if stop_after_frames and len(out["frames"]) >= stop_after_frames:
                    return out  # leave mid-stream: the socket closes
    return out
