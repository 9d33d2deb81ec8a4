"""`gstalker serve` over its WebSocket protocol, as the page speaks it: a file streamed back as
frames while it plays, bad uploads answered with a message, two clients at once, one of them
leaving mid-stream. (tests/test_serve_browser.py drives the page itself in Chromium.)"""

import json
import struct
import threading
import time

import numpy as np
import pytest

import gstalker
from synthetic import tiny_mel_model

pytest.importorskip("uvicorn")
pytest.importorskip("websockets.sync.client")
from serve_helpers import Server, speech_wav, stream_file, two_hour_flac  # noqa: E402


@pytest.fixture(scope="module")
def talker(tmp_path_factory):
    return gstalker.load(tiny_mel_model(tmp_path_factory.mktemp("model")), device="cpu")


@pytest.fixture(scope="module")
def server(talker, tmp_path_factory):
    from gstalker.serve import create_app

    work = tmp_path_factory.mktemp("serve")
    srv = Server(create_app(talker, max_seconds=60, max_mb=5, workdir=work))
    srv.work, srv.talker = work, talker
    yield srv
    srv.stop()
    assert list(work.iterdir()) == [], "the server's temp folder is gone after shutdown"


def test_a_file_streams_back_as_frames_while_it_plays(server, tmp_path):
    data = speech_wav(tmp_path / "s.wav", 2.0).read_bytes()
    t0 = time.perf_counter()
    got = stream_file(server.url, data)
    took = time.perf_counter() - t0
    types = [m["type"] for m in got["messages"]]
    assert types[:2] == ["send", "start"] and types[-1] == "end", types
    end = got["messages"][-1]
    ks = [k for k, _, _ in got["frames"]]
    assert ks == sorted(set(ks)), "in order, none twice"
    assert end["rendered"] == len(ks) and end["rendered"] + end["dropped"] == 50, end
    assert got["audio_samples"] == 32000, "all the speech was sent back to play (none dropped)"
    assert got["frames"][0][2] < 16000, "the first frame came while the speech was still arriving"
    assert 1.9 < took < 10, "paced like speech, not as fast as possible"
    assert all(lat > 0 for _, lat, _ in got["frames"])
    import io

    from PIL import Image

    # what the page shows is what `frames` makes (PNG frames: lossless)
    offline = list(server.talker.frames(tmp_path / "s.wav", poses="still"))
    for k, png in list(got["images"].items())[::7]:
        assert np.array_equal(np.asarray(Image.open(io.BytesIO(png)).convert("RGB")), offline[k]), k


def test_bad_uploads_get_a_message_and_the_socket_goes_on(server, tmp_path):
    cases = {
        "notes.txt": (b"hello, this is not audio" * 10, "not an audio or video file"),
        "empty.wav": (b"", "empty"),
        "blip.wav": (speech_wav(tmp_path / "b.wav", 0.01).read_bytes(), "less than one video frame"),
    }
    cases["two_hours.flac"] = (two_hour_flac(tmp_path / "2h.flac").read_bytes(), "2:00:00 long")
    cases["big.wav"] = (b"\0" * (6 * 2**20), "more than this server takes")
    for name, (data, words) in cases.items():
        got = stream_file(server.url, data, name=name)
        errors = [m for m in got["messages"] if m["type"] == "error"]
        assert len(errors) == 1 and words in errors[0]["message"] and name in errors[0]["message"], (name, got["messages"])
        assert "\n" not in errors[0]["message"] and not got["frames"]
    assert list(server.work.iterdir())[0].is_dir() and not list(next(server.work.iterdir()).iterdir()), \
        "uploads are deleted once decoded"


def test_two_clients_at_once_and_one_leaving_mid_stream(server, tmp_path):
    data = speech_wav(tmp_path / "s.wav", 2.0).read_bytes()
    results = {}

    def client(name, **kw):
        results[name] = stream_file(server.url, data, **kw)

    threads = [threading.Thread(target=client, args=("stays",)),
               threading.Thread(target=client, args=("leaves",), kwargs={"stop_after_frames": 3})]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert len(results["leaves"]["frames"]) == 3
    stays = results["stays"]
    assert stays["messages"][-1]["type"] == "end", stays["messages"]
    assert stays["messages"][-1]["rendered"] + stays["messages"][-1]["dropped"] == 50
    assert stays["audio_samples"] == 32000
    import urllib.request

    health = json.loads(urllib.request.urlopen(server.url + "/health", timeout=10).read())
    assert health["clients"] == 0, "the client that left is gone from the server"
    page = urllib.request.urlopen(server.url + "/", timeout=10).read().decode()
    assert "<video" in page and "/ws" in page


def test_serve_command_bad_input(talker, tmp_path):
    import socket

    from typer.testing import CliRunner

    from cli_errors import one_line_error
    from gstalker.cli import app

    runner = CliRunner()
    one_line_error(runner.invoke(app, ["serve", str(tmp_path / "none.safetensors"), "--port", "0"]), "--port")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        one_line_error(runner.invoke(app, ["serve", str(tmp_path / "none.safetensors"), "--port", str(port)]),
                       f"127.0.0.1:{port}", "another --port")
    from serve_helpers import free_port

    one_line_error(runner.invoke(app, ["serve", str(tmp_path / "none.safetensors"), "--port", str(free_port())]),
                   "none.safetensors")


def test_the_microphone_path(server):
    """48 kHz float32 PCM in 20 ms messages, as the page's microphone sends it, then stop: frames
    come while it streams, all of them accounted for at the end."""
    from websockets.sync.client import connect

    rate, seconds = 48000, 1.6
    t = np.arange(int(rate * seconds)) / rate
    pcm = (0.3 * np.clip(np.sin(2 * np.pi * 2 * t), 0, None) * np.sign(np.sin(2 * np.pi * 140 * t))).astype("<f4")
    frames, messages = [], []
    with connect(server.url.replace("http", "ws") + "/ws", max_size=None, open_timeout=10) as ws:
        assert json.loads(ws.recv(timeout=10))["type"] == "hello"
        ws.send(json.dumps({"type": "mic", "rate": rate, "poses": "still"}))
        assert json.loads(ws.recv(timeout=10))["type"] == "start"
        for i in range(0, len(pcm), 960):
            ws.send(pcm[i:i + 960].tobytes())
            time.sleep(0.02)
        ws.send(json.dumps({"type": "stop"}))
        for _ in range(500):  # bounded
            m = ws.recv(timeout=30)
            if isinstance(m, bytes):
                frames.append(struct.unpack("<I", m[1:5])[0])
            else:
                messages.append(json.loads(m))
                if messages[-1]["type"] in ("end", "error"):
                    break
    end = messages[-1]
    assert end["type"] == "end", messages
    assert frames == sorted(set(frames)) and end["rendered"] == len(frames)
    assert end["rendered"] + end["dropped"] == round(seconds * 25), end
