"""The command line itself: version, help, the rasterizer demo (CLI and example script)."""

import subprocess
import sys
from pathlib import Path

import numpy as np
from typer.testing import CliRunner

import gstalker
from gstalker.cli import app

runner = CliRunner()
ROOT = Path(__file__).resolve().parents[1]


def test_version_and_help():
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and result.output.strip() == f"gstalker {gstalker.__version__}"
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for command in ("fit", "speak", "preprocess", "demo"):
        assert command in result.output


def _png(path):
    from torchvision.io import read_image

    return read_image(str(path)).permute(1, 2, 0).numpy()


def test_demo_command_renders_the_scene(tmp_path):
    result = runner.invoke(app, ["demo", "--out", str(tmp_path), "--size", "64", "--views", "2", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    a, b = _png(tmp_path / "view_00.png"), _png(tmp_path / "view_01.png")
    assert a.shape == (64, 64, 3)
    background = np.array([20, 20, 26])  # the demo's background colour, 0.08/0.08/0.1
    assert (np.abs(a.astype(int) - background).sum(-1) > 30).mean() > 0.2, "the torus covers part of the frame"
    assert np.abs(a.astype(int) - b.astype(int)).mean() > 5, "two cameras see different views"


def test_demo_bad_device(tmp_path):
    import torch

    if torch.cuda.is_available():
        return
    result = runner.invoke(app, ["demo", "--out", str(tmp_path), "--device", "cuda"])
    assert result.exit_code == 2 and "no CUDA GPU" in result.output


def test_example_script_runs(tmp_path):
    out = subprocess.run([sys.executable, str(ROOT / "examples" / "render_demo.py"), "--out", str(tmp_path),
                          "--size", "48", "--views", "3", "--device", "cpu"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["view_00.png", "view_01.png", "view_02.png"]


KILLED_SPEAK = """
import os, signal, sys, time
from pathlib import Path

import gstalker.speak
from gstalker.serialization import atomic_path


class Talker:  # speak killed half-way through writing its video
    last_render_fps = 1.0

    def speak(self, audio, out, **kw):
        with atomic_path(out) as tmp:
            tmp.write_bytes(b"half a video")
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(60)


gstalker.speak.load = lambda *a, **k: Talker()
from gstalker.cli import app

app(["speak", "model.safetensors", "speech.wav", "-o", sys.argv[1]])
"""


def test_a_killed_command_says_so_and_leaves_no_half_written_file(tmp_path):
    """SIGTERM (`timeout`, a job scheduler) unwinds like Ctrl-C: one line, exit 130, and the temp
    file beside the output removed, where the default SIGTERM would leave it behind."""
    out = tmp_path / "out" / "talk.mp4"
    out.parent.mkdir()
    result = subprocess.run([sys.executable, "-c", KILLED_SPEAK, str(out)], capture_output=True, text=True, timeout=50)
    assert result.returncode == 130, (result.returncode, result.stderr)
    assert result.stderr.strip().splitlines()[-1] == "gstalker: interrupted; nothing written"
    assert list(out.parent.iterdir()) == []
