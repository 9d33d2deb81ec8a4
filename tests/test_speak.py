"""`gstalker speak` and the Talker API on a small model trained on a synthetic clip (fast); the
real-clip round trip lives in test_end_to_end.py."""

import json

import av
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import gstalker
from gstalker.audio import save_wav
from gstalker.cli import app
from cli_errors import one_line_error
from synthetic import tiny_mel_model

runner = CliRunner()


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    return tiny_mel_model(tmp_path_factory.mktemp("model"))


@pytest.fixture
def speech(tmp_path):
    rng = np.random.default_rng(0)
    t = np.arange(int(44100 * 1.3)) / 44100
    wave = (0.3 * np.sin(2 * np.pi * 220 * t) * (1 + np.sin(2 * np.pi * 3 * t)) + 0.01 * rng.standard_normal(len(t)))
    path = tmp_path / "speech.wav"
    save_wav(path, wave.astype(np.float32), 44100)
    return path


def test_speak_writes_a_video_with_audio(model_path, speech, tmp_path):
    out = tmp_path / "out.mp4"
    result = runner.invoke(app, ["speak", str(model_path), str(speech), "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert "frames/s" in result.output
    with av.open(str(out)) as c:
        assert len(c.streams.video) == 1 and len(c.streams.audio) == 1
        v, a = c.streams.video[0], c.streams.audio[0]
        assert (v.codec_context.width, v.codec_context.height) == (32, 32) and v.average_rate == 25
        assert (a.codec_context.name, a.rate, len(a.layout.channels)) == ("aac", 44100, 1), "the speech's own rate"
        n = sum(1 for _ in c.decode(video=0))
    assert abs(n - 1.3 * 25) <= 1, n
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.mp4", "speech.wav"], "no temp files left"


def test_api_frames_longer_audio_and_still_poses(model_path):
    talker = gstalker.load(model_path, device="cpu")
    wave = np.random.default_rng(1).standard_normal(48000 * 3).astype(np.float32) * 0.1  # 3 s at 48 kHz
    frames = talker.speak(wave, sample_rate=48000)
    assert frames.shape == (75, 32, 32, 3) and frames.dtype == np.uint8
    assert talker.model.poses.shape[0] < 75, "longer than the training poses: playback goes back and forth"
    poses = [talker.pose(k)[0] for k in range(75)]
    P = talker.model.poses.shape[0]
    assert torch.equal(poses[P], talker.model.poses[P - 2]) and torch.equal(poses[2 * P - 2], talker.model.poses[0])
    still = talker.speak(wave[:48000], sample_rate=48000, poses="still")
    assert all(torch.equal(talker.pose(k, "still")[0], talker.model.poses[0]) for k in range(5))
    streamed = list(talker.frames(wave[:48000], sample_rate=48000, poses="still"))
    assert np.array_equal(np.stack(streamed), still)
    one = talker.render(talker.codes(talker.audio(wave, 48000))[0], talker.model.poses[0], 0.5)
    assert one.shape == (32, 32, 3) and float(one.min()) >= 0 and float(one.max()) <= 1


def test_speak_bad_models(model_path, speech, tmp_path):
    out = str(tmp_path / "o.mp4")
    one_line_error(runner.invoke(app, ["speak", str(tmp_path / "none.safetensors"), str(speech), "-o", out]), "no such model file")
    data = model_path.read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(data[: len(data) // 3])
    one_line_error(runner.invoke(app, ["speak", str(tmp_path / "cut.safetensors"), str(speech), "-o", out]), "cut.safetensors", "truncated")
    from safetensors.torch import save_file

    save_file({"x": torch.zeros(2)}, str(tmp_path / "other.safetensors"))
    one_line_error(runner.invoke(app, ["speak", str(tmp_path / "other.safetensors"), str(speech), "-o", out]), "not a gstalker")
    save_file({"x": torch.zeros(2)}, str(tmp_path / "new.safetensors"), metadata={"gstalker": json.dumps({"format_version": 99})})
    one_line_error(runner.invoke(app, ["speak", str(tmp_path / "new.safetensors"), str(speech), "-o", out]), "newer gstalker")
    assert not (tmp_path / "o.mp4").exists()


def test_speak_bad_audio_and_outputs(model_path, speech, tmp_path):
    m = str(model_path)
    out = str(tmp_path / "o.mp4")
    one_line_error(runner.invoke(app, ["speak", m, str(tmp_path / "missing.wav"), "-o", out]), "missing.wav")
    (tmp_path / "corrupt.wav").write_bytes(b"RIFF" + bytes(range(256)) * 4)
    one_line_error(runner.invoke(app, ["speak", m, str(tmp_path / "corrupt.wav"), "-o", out]), "corrupt.wav")
    (tmp_path / "empty.wav").write_bytes(b"")
    one_line_error(runner.invoke(app, ["speak", m, str(tmp_path / "empty.wav"), "-o", out]), "empty.wav")
    save_wav(tmp_path / "blip.wav", np.zeros(300, np.float32), 16000)
    one_line_error(runner.invoke(app, ["speak", m, str(tmp_path / "blip.wav"), "-o", out]), "shorter than one video frame")
    one_line_error(runner.invoke(app, ["speak", m, str(speech), "-o", str(tmp_path / "nodir" / "o.mp4")]), "does not exist")
    if not torch.cuda.is_available():
        one_line_error(runner.invoke(app, ["speak", m, str(speech), "-o", out, "--device", "cuda"]), "no CUDA GPU")
    assert not (tmp_path / "o.mp4").exists()


def test_silence_is_valid(model_path, tmp_path):
    save_wav(tmp_path / "silence.wav", np.zeros(16000, np.float32), 16000)
    result = runner.invoke(app, ["speak", str(model_path), str(tmp_path / "silence.wav"), "-o", str(tmp_path / "s.mp4")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "s.mp4").stat().st_size > 0


def test_inference_cache_changes_nothing(model_path):
    talker = gstalker.load(model_path, device="cpu")
    assert any(p.abs().sum() > 0 for p in talker.model.face.mlp.out.parameters()), "trained past zero init"
    code = talker.codes(talker.audio(np.random.default_rng(2).standard_normal(16000).astype(np.float32)))[7]
    viewmat, eye = talker.pose(7)
    with torch.no_grad():
        plain = talker.model.render(code, viewmat, eye, mouth_gain=talker.mouth_gain)["image"].clamp(0, 1)
    torch.testing.assert_close(talker.render(code, viewmat, eye), plain, atol=1e-6, rtol=1e-5)


def test_mouth_gain_reaches_the_frames(model_path, speech, tmp_path):
    """--mouth-gain / load(mouth_gain=): another gain renders other frames; the model's own is
    the default; a gain out of range is a one-line error naming the range."""
    wave = np.random.default_rng(3).standard_normal(16000).astype(np.float32) * 0.1
    own = gstalker.load(model_path, device="cpu")
    assert own.mouth_gain == 1.0  # tiny_mel_model stores gain 1
    wide = gstalker.load(model_path, device="cpu", mouth_gain=2.5)
    a, b = own.speak(wave, poses="still"), wide.speak(wave, poses="still")
    assert np.abs(a.astype(int) - b.astype(int)).max() > 0
    assert np.array_equal(gstalker.load(model_path, device="cpu", mouth_gain=1.0).speak(wave, poses="still"), a)
    out = str(tmp_path / "o.mp4")
    result = runner.invoke(app, ["speak", str(model_path), str(speech), "-o", out, "--mouth-gain", "1.5"])
    assert result.exit_code == 0, result.output
    for bad in ("-1", "4", "nan"):
        one_line_error(runner.invoke(app, ["speak", str(model_path), str(speech), "-o", str(tmp_path / "x.mp4"),
                                           "--mouth-gain", bad]), "--mouth-gain must be between 0")
    assert not (tmp_path / "x.mp4").exists()


def test_the_backend_reaches_the_hash_grids(model_path, monkeypatch):
    """`gstalker.load(path, backend=...)` runs every kernel on that backend, the hash grids
    included (the encoders used to keep the backend they were built with, "auto": Triton on
    CUDA whatever the caller asked for)."""
    from gstalker.kernels import hashgrid

    asked = []
    resolve = hashgrid.resolve_backend
    monkeypatch.setattr(hashgrid, "resolve_backend", lambda backend, device: asked.append(backend) or resolve(backend, device))
    talker = gstalker.load(model_path, device="cpu", backend="torch")  # the hash grids run once, for the cache
    code = talker.codes(talker.audio(np.zeros(16000, np.float32)))[0]
    viewmat, eye = talker.pose(0)
    with torch.no_grad():
        talker.model.render(code, viewmat, eye, backend="torch")  # no cache: the hash grids run per frame
    assert asked == ["torch"] * 4, asked


def test_speak_at_another_size(model_path, speech, tmp_path):
    out = tmp_path / "big.mp4"
    save_wav(tmp_path / "silence.wav", np.zeros(16000, np.float32), 16000)
    result = runner.invoke(app, ["speak", str(model_path), str(tmp_path / "silence.wav"), "-o", str(out), "--size", "48",
                                 "--poses", "still", "--crf", "0"])
    assert result.exit_code == 0, result.output
    with av.open(str(out)) as c:
        v = c.streams.video[0]
        assert (v.codec_context.width, v.codec_context.height) == (48, 48)
        big = next(iter(c.decode(video=0))).to_ndarray(format="rgb24").astype(np.float32)
    small = gstalker.load(model_path, device="cpu").speak(np.zeros(16000, np.float32), poses="still")[0]
    # the same view at 1.5x the pixels: downsampled back, it matches the training-size render
    down = torch.nn.functional.interpolate(torch.tensor(big).permute(2, 0, 1)[None], size=(32, 32), mode="area")[0]
    # (intrinsics left unscaled put this near 30 grey levels; scaled, it is about 1.5)
    assert np.abs(down.permute(1, 2, 0).numpy() - small.astype(np.float32)).mean() < 5
    one_line_error(runner.invoke(app, ["speak", str(model_path), str(speech), "-o", str(out), "--size", "4"]), "--size")


def test_speak_keeps_the_speech_own_audio(model_path, tmp_path):
    """The mp4 carries the speech as given (48 kHz stereo here, left and right different), not
    the 16 kHz mono copy the features use."""
    import wave as wavemod

    rate = 48000
    t = np.arange(int(rate * 1.2)) / rate
    left, right = 0.4 * np.sin(2 * np.pi * 440 * t), 0.4 * np.sin(2 * np.pi * 3000 * t)
    path = tmp_path / "stereo.wav"
    with wavemod.open(str(path), "wb") as w:
        w.setnchannels(2)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes((np.stack([left, right], 1) * 32767).astype("<i2").tobytes())
    out = tmp_path / "out.mp4"
    result = runner.invoke(app, ["speak", str(model_path), str(path), "-o", str(out)])
    assert result.exit_code == 0, result.output
    with av.open(str(out)) as c:
        a = c.streams.audio[0]
        assert (a.codec_context.name, a.rate, a.layout.name) == ("aac", 48000, "stereo")
        track = np.concatenate([f.to_ndarray() for f in c.decode(audio=0)], axis=1)  # [2, samples] fltp
    assert abs(track.shape[1] - len(t)) < 2048  # AAC pads to whole 1024-sample frames
    for channel, hz in ((0, 440), (1, 3000)):
        spec = np.abs(np.fft.rfft(track[channel, 4800:52800]))
        assert abs(np.argmax(spec) * rate / 48000 - hz) < 5, (channel, np.argmax(spec))
    # an array keeps its rate too (and a rate AAC has no table for becomes 48 kHz)
    talker = gstalker.load(model_path, device="cpu")
    talker.speak(np.stack([left, right]).astype(np.float32)[:, ::2], out=tmp_path / "a.mp4", sample_rate=24000)
    talker.speak(left[:30000].astype(np.float32), out=tmp_path / "b.mp4", sample_rate=30000)
    with av.open(str(tmp_path / "a.mp4")) as c, av.open(str(tmp_path / "b.mp4")) as d:
        assert (c.streams.audio[0].rate, c.streams.audio[0].layout.name) == (24000, "stereo")
        assert (d.streams.audio[0].rate, d.streams.audio[0].layout.name) == (48000, "mono")
