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
