"""Benchmark `gstalker fit`: preprocessing and training time, iterations per second of both
stages, and the held-out PSNR against the mean-frame baseline.

    python benchmarks/fit.py                 # CPU: smoke preset on a 15 s span of interview_97s.mp4
    python benchmarks/fit.py --quick         # CPU: 60 iterations at 64x64 on a 6 s clip (about a minute)
    python benchmarks/fit.py --preset fast   # GPU: the default preset at 512x512 (about 15 minutes)

Targets (issue 6): CPU smoke preset on a 15 s clip under 10 minutes on 2 cores, held-out PSNR
clearly above the mean-frame baseline; on a GPU, the fast preset near the paper's PSNR in 15 min.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import device_name, print_table  # noqa: E402

import torch  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
MEDIA = ROOT.parent / "shared" / "media"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--video", type=Path, default=None)
    parser.add_argument("--start", type=float, default=None)
    parser.add_argument("--end", type=float, default=None)
    parser.add_argument("--preset", default=None)
    parser.add_argument("--iters", type=int, default=None)
    parser.add_argument("--size", type=int, default=None)
    parser.add_argument("--keep", type=Path, default=None, help="keep the workdir and model here")
    args = parser.parse_args()

    import gstalker
    from gstalker.serialization import load_file

    if args.quick:
        video, start, end, preset, iters, size = MEDIA / "retalking_face4.mp4", None, None, "smoke", 60, 64
    else:
        video = args.video or MEDIA / "interview_97s.mp4"
        start, end = (args.start, args.end) if args.video else (args.start or 20.0, args.end or 35.0)
        preset = args.preset or ("fast" if torch.cuda.is_available() else "smoke")
        iters, size = args.iters, args.size
    if not video.exists():
        sys.exit(f"{video} not found: pass --video (the media folder ships beside the repository)")
    tmp = Path(args.keep or tempfile.mkdtemp(prefix="gstalker-bench-"))
    tmp.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    from gstalker.preprocess import preprocess

    from gstalker.train import FitSettings

    settings = FitSettings.from_preset(preset, iters=iters, size=size)
    preprocess(video, tmp / "work", size=settings.size, start=start, end=end, progress=False)
    t_pre = time.perf_counter() - t0
    model = gstalker.fit(video, tmp / "model.safetensors", preset=preset, iters=iters, size=size, workdir=tmp / "work",
                         start=start, end=end, lpips="off", progress=False)
    summary = load_file(model)[1]["summary"]
    span = f"{video.name}" + (f" {start:g}-{end:g} s" if start is not None or end is not None else "")
    train_s = summary["train_seconds"]
    rate = {k: round(v["iterations"] / max(v["seconds"], 1e-9), 2) for k, v in summary["stages"].items()}
    rows = [[span, preset, settings.size, summary["iterations"], round(t_pre, 1), round(train_s, 1),
             rate.get("static"), rate.get("deformation"), summary["heldout_psnr"], summary["baseline_psnr"],
             round((t_pre + train_s) / 60, 2)]]
    print(f"device: {device_name(torch.device(summary['device']))}, torch {torch.__version__}")
    print_table(["clip", "preset", "size", "iterations", "preprocess s", "train s", "static it/s", "deform it/s",
                 "held-out PSNR", "mean-frame PSNR", "total min"], rows, "gstalker fit")
    if args.keep is None:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
