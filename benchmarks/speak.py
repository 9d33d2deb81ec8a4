"""Benchmark rendering and `speak`: frames per second of the model alone (head deformation, head
and torso rasterization, composite) and of `speak` end to end (audio features, rendering, H.264
encoding and muxing).

    python benchmarks/speak.py --model subject.safetensors   # a trained model
    python benchmarks/speak.py                               # a stand-in model: 60k head + 20k torso Gaussians at 512x512
    python benchmarks/speak.py --quick                       # CPU: a small stand-in at 128x128 (under a minute)

Targets (issue 7): 250 FPS render at 512x512 on an RTX 3090-class GPU (the paper: 125), and
`speak` in real time (25 FPS) end to end. On a CPU the figures are printed, not targeted.
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import device_name, print_table, time_ms  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
MEDIA = ROOT.parent / "shared" / "media"


def stand_in_model(size: int, n_head: int, n_torso: int, device):
    """An untrained TalkerModel shaped like a trained one: small opaque Gaussians on a head-sized
    ellipsoid and a torso-sized slab, at the camera distance preprocessing finds for a face."""
    from gstalker.model import GaussianModel, Gaussians
    from gstalker.talker import DEFAULT_CONFIG, TalkerModel

    g = torch.Generator().manual_seed(0)
    f, depth = 2.4 * size, 7.0

    def gaussians(n, center, radii, scale):
        d = torch.randn(n, 3, generator=g)
        means = torch.tensor(center) + d / d.norm(dim=1, keepdim=True) * torch.tensor(radii) * torch.rand(n, 1, generator=g) ** 0.3
        gs = Gaussians(means, torch.full((n, 3), math.log(scale)) + 0.3 * torch.randn(n, 3, generator=g),
                       torch.randn(n, 4, generator=g), torch.full((n,), 2.0), torch.randn(n, 3, generator=g))
        return gs

    head = gaussians(n_head, (0.0, 0.0, 0.0), (0.75, 0.95, 0.8), 0.012)
    torso = gaussians(n_torso, (0.0, 1.9, 0.3), (1.8, 0.9, 0.5), 0.03)
    config = dict(DEFAULT_CONFIG, size=[size, size], audio={"kind": "mel", "dim": 80, "window": 16},
                  torso_bounds=[[-2.5, 0.3, -1.0], [2.5, 3.5, 1.5]])
    K = torch.tensor([[f, 0, size / 2], [0, f, size / 2], [0, 0, 1]])
    view = torch.eye(4)
    view[2, 3] = depth
    poses = view.repeat(50, 1, 1)
    poses[:, 0, 3] = 0.05 * torch.sin(torch.arange(50) / 8)
    model = TalkerModel(config, GaussianModel(head, torso), K, view, torch.rand(size, size, 3), poses, torch.rand(50))
    return model.to(device).eval()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=None)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--audio", type=Path, default=MEDIA / "musetalk_eng.wav")
    parser.add_argument("--seconds", type=float, default=None, help="speech length for the end-to-end row")
    parser.add_argument("--mouth-gain", type=float, default=None, help="with --model: render at this gain (default: the model's)")
    args = parser.parse_args()
    import gstalker
    from gstalker.speak import Talker
    from gstalker.audio import load_audio

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if args.model:
        talker = gstalker.load(args.model, mouth_gain=args.mouth_gain)
        what = f"{args.model.name}, mouth gain {talker.mouth_gain:g}"
    else:
        size, nh, nt = (128, 3000, 1500) if (args.quick or device.type == "cpu") else (512, 60_000, 20_000)
        model = stand_in_model(size, nh, nt, device)
        talker = Talker(model, {"audio_features": model.config["audio"]})
        what = f"stand-in {nh // 1000}k+{nt // 1000}k Gaussians"
    H, W = talker.size
    seconds = args.seconds or (2.0 if (args.quick or device.type == "cpu") else 20.0)
    wave = load_audio(args.audio)[: int(16000 * seconds)] if args.audio.exists() else \
        (0.1 * np.random.default_rng(0).standard_normal(int(16000 * seconds))).astype(np.float32)
    codes = talker.codes(wave)
    frames = codes.shape[0]
    k = iter(range(10**9))

    def one():
        i = next(k) % frames
        viewmat, eye = talker.pose(i)
        talker.render(codes[i], viewmat, eye)

    reps = 5 if device.type == "cpu" else 200
    ms = time_ms(one, device, repeats=reps, warmup=3)
    rows = [[what, f"{W}x{H}", "render (batch 1)", reps, round(1000 / ms, 1)]]
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        talker.speak(wave, out=Path(tmp) / "out.mp4", sample_rate=16000, progress=False)
        if device.type == "cuda":
            torch.cuda.synchronize()
        total = time.perf_counter() - t0
    rows.append([what, f"{W}x{H}", "speak end to end (features, render, encode)", frames, round(frames / total, 1)])
    rows.append([what, f"{W}x{H}", "speak render only", frames, round(talker.last_render_fps, 1)])
    print(f"device: {device_name(device)}, torch {torch.__version__}")
    print_table(["model", "size", "what", "frames", "frames/s"], rows, "Rendering and speak")


if __name__ == "__main__":
    main()
