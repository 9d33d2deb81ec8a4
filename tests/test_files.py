"""Model/checkpoint files (safetensors + JSON, atomic, no pickle) and the mp4 writer."""

import json

import av
import numpy as np
import pytest
import torch

from gstalker.encode import Mp4Writer
from gstalker.serialization import (FORMAT_VERSION, ModelFileError, load_file, load_optimizer_state,
                                    optimizer_state, save_file)


def test_save_load_round_trip(tmp_path):
    tensors = {"a": torch.randn(3, 4), "b": torch.arange(5, dtype=torch.int32)}
    path = save_file(tmp_path / "m.safetensors", tensors, {"kind": "model", "config": {"x": [1, 2]}})
    got, meta = load_file(path)
    assert torch.equal(got["a"], tensors["a"]) and torch.equal(got["b"], tensors["b"])
    assert meta == {"format_version": FORMAT_VERSION, "kind": "model", "config": {"x": [1, 2]}}
    assert [p.name for p in tmp_path.iterdir()] == ["m.safetensors"], "no temp file left behind"


def test_failed_write_leaves_nothing(tmp_path):
    with pytest.raises(TypeError):
        save_file(tmp_path / "m.safetensors", {"a": torch.zeros(2)}, {"bad": object()})
    assert list(tmp_path.iterdir()) == []


def test_bad_model_files(tmp_path):
    with pytest.raises(ModelFileError, match="no such model file"):
        load_file(tmp_path / "missing.safetensors")
    with pytest.raises(ModelFileError, match="is a directory"):
        load_file(tmp_path)
    path = save_file(tmp_path / "m.safetensors", {"a": torch.randn(100)}, {"kind": "model"})
    data = path.read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelFileError, match="not a readable safetensors file"):
        load_file(tmp_path / "cut.safetensors")
    from safetensors.torch import save_file as raw_save

    raw_save({"a": torch.zeros(1)}, str(tmp_path / "foreign.safetensors"))
    with pytest.raises(ModelFileError, match="not a gstalker model"):
        load_file(tmp_path / "foreign.safetensors")
    raw_save({"a": torch.zeros(1)}, str(tmp_path / "new.safetensors"),
             metadata={"gstalker": json.dumps({"format_version": FORMAT_VERSION + 1})})
    with pytest.raises(ModelFileError, match="newer gstalker"):
        load_file(tmp_path / "new.safetensors")


def test_optimizer_state_round_trip():
    params = [torch.nn.Parameter(torch.randn(4, 2)), torch.nn.Parameter(torch.randn(3))]
    opt = torch.optim.Adam([{"params": [params[0]], "lr": 0.1, "name": "a"}, {"params": [params[1]], "lr": 0.01}])
    for _ in range(3):
        opt.zero_grad()
        (params[0].sum() ** 2 + params[1].pow(3).sum()).backward()
        opt.step()
    tensors, meta = optimizer_state(opt, "opt")
    json.dumps(meta)
    opt2 = torch.optim.Adam([{"params": [params[0]], "lr": 1.0}, {"params": [params[1]], "lr": 1.0}])
    load_optimizer_state(opt2, "opt", tensors, meta)
    for p in params:
        for k in ("exp_avg", "exp_avg_sq", "step"):
            assert torch.equal(opt.state[p][k], opt2.state[p][k])
    assert opt2.param_groups[0]["lr"] == 0.1 and opt2.param_groups[0]["name"] == "a"


def test_mp4_writer_streams_video_and_audio(tmp_path):
    frames, height, width = 30, 36, 50
    wave = (0.3 * np.sin(np.arange(frames * 640) * 2 * np.pi * 300 / 16000)).astype(np.float32)
    out = tmp_path / "out.mp4"
    with Mp4Writer(out, width, height, audio=wave) as w:
        for i in range(0, frames, 7):  # batches of frames
            k = min(7, frames - i)
            w.write(np.full((k, height, width, 3), 8 * i, np.uint8))
    with av.open(str(out)) as c:
        v, a = c.streams.video[0], c.streams.audio[0]
        assert (v.codec_context.width, v.codec_context.height) == (width, height)
        assert v.average_rate == 25 and a.codec_context.name == "aac"
        decoded = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    assert len(decoded) == frames
    assert abs(int(decoded[-1].mean()) - 8 * 28) <= 3
    assert [p.name for p in tmp_path.iterdir()] == ["out.mp4"]


def test_mp4_writer_failure_leaves_no_file(tmp_path):
    out = tmp_path / "out.mp4"
    with pytest.raises(ValueError, match="frames must be"):
        with Mp4Writer(out, 32, 32) as w:
            w.write(np.zeros((32, 33, 3), np.uint8))
    assert list(tmp_path.iterdir()) == []
