"""Model quality (`gstalker eval`): on the held-out tail, PSNR, SSIM, LPIPS, LMD, lip-motion
correlation, render speed and lip sync against their baselines; then cross-driven by another
speech, lip sync (av_sync, av_lag, mouth_motion, silence_motion) against the training video's own.

    python benchmarks/quality.py --quick                 # 100 iterations on 4 s of a clip at 64 px (a minute or two on a CPU)
    python benchmarks/quality.py                         # smoke preset (128 px), minutes on a CPU
    python benchmarks/quality.py --preset fast           # the default preset: on a GPU
    python benchmarks/quality.py --model M.safetensors --workdir M.gstalker   # score a model you have
    python benchmarks/quality.py --model M --workdir W --audio S.wav    # ... cross-driven by S.wav
    python benchmarks/quality.py --audio none                            # self-driven table only

Prints the fit's settings and time and both eval tables (Markdown, for docs/benchmarks.md);
--plots DIR keeps the mouth-opening figures (self.mouth.png, cross.mouth.png). The
paper's figures (RTX 3090, 512 px, minutes-long videos: PSNR 34.65, LPIPS 0.0151, LMD 2.695)
are not comparable with a 7 s clip or a 128 px model: LMD is in pixels at the model's size.
"""

from __future__ import annotations

import argparse
import datetime
import os
import shutil
import sys
import tempfile
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CLIP = "retalking_face4.mp4"
SPEECH = ROOT.parent / "shared" / "media" / "musetalk_eng.wav"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true",
                    help="100 iterations on the first 4 s at 64 px: checks the pipeline, its figures mean little")
    ap.add_argument("--video", type=Path, default=ROOT.parent / "shared" / "media" / CLIP, help="clip to fit")
    ap.add_argument("--preset", default="smoke", help="smoke, fast or paper")
    ap.add_argument("--iters", type=int, default=None)
    ap.add_argument("--size", type=int, default=None)
    ap.add_argument("--model", type=Path, default=None, help="score this model instead of fitting one")
    ap.add_argument("--workdir", type=Path, default=None, help="its preprocessing workdir (with --model)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--threads", type=int, default=None, help="CPU threads for torch (default: torch's)")
    ap.add_argument("--keep", type=Path, default=None, help="keep the fitted model and workdir in this folder")
    ap.add_argument("--audio", default=str(SPEECH),
                    help="speech for the cross-driven table (default: ../shared/media/musetalk_eng.wav; 'none': skip it)")
    ap.add_argument("--max-frames", type=int, default=None, help="score only the first N frames (both tables)")
    ap.add_argument("--plots", type=Path, default=None, help="write the mouth-opening figures into this folder")
    args = ap.parse_args(argv)

    import gstalker  # first: it sets OMP_WAIT_POLICY before torch loads OpenMP

    import torch
    from gstalker.api import resolve_device
    from gstalker.errors import GstalkerError
    from gstalker.evaluate import evaluate, format_table

    dev = resolve_device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    command = "python benchmarks/quality.py " + " ".join(argv if argv is not None else sys.argv[1:])
    fit_line = ""
    tmp = None
    try:
        if args.model is not None:
            if args.workdir is None:
                print("--model needs --workdir", file=sys.stderr)
                return 2
            model, workdir = args.model, args.workdir
        else:
            if not args.video.is_file():
                print(f"clip not found: {args.video}", file=sys.stderr)
                return 2
            iters, size, end = args.iters, args.size, None
            if args.quick:
                iters, size, end = iters or 100, size or 64, 4.0
            base = args.keep or Path(tempfile.mkdtemp(prefix="gstalker-quality-"))
            tmp = None if args.keep else base
            base.mkdir(parents=True, exist_ok=True)
            video = base / args.video.name  # preprocessing writes nothing beside the source, but be safe
            shutil.copyfile(args.video, video)
            workdir, model = base / (video.stem + ".gstalker"), base / (video.stem + ".safetensors")
            t0 = time.perf_counter()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                gstalker.fit(video, model, preset=args.preset, iters=iters, size=size, workdir=workdir,
                             device=str(dev.type), lpips="on", end=end, progress=False)
            summary = gstalker.load(model, device="cpu").meta["summary"]
            fit_line = (f"fit: {args.video.name}, preset {args.preset}, {summary['iterations']} iterations, "
                        f"{summary['gaussians']['head']} + {summary['gaussians']['torso']} Gaussians, "
                        f"train {summary['train_seconds']:.0f} s, fit with preprocessing {time.perf_counter() - t0:.0f} s")
        audio = None if args.audio.lower() == "none" else Path(args.audio)
        if audio is not None and not audio.is_file():
            print(f"speech not found: {audio} (give --audio PATH, or --audio none)", file=sys.stderr)
            return 2
        if args.plots is not None:
            args.plots.mkdir(parents=True, exist_ok=True)

        def plot(name):
            return False if args.plots is None else args.plots / f"{name}.mouth.png"

        report = evaluate(model, workdir, device=str(dev.type), progress=False, max_frames=args.max_frames,
                          plot=plot("self"))
        cross = None
        if audio is not None:
            cross = evaluate(model, workdir, device=str(dev.type), progress=False, max_frames=args.max_frames,
                             audio=audio, plot=plot("cross"))
    except GstalkerError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)

    print(f"\n{datetime.date.today().isoformat()}, {report['device_name']}, torch {torch.__version__}, "
          f"load average {os.getloadavg()[0]:.1f}")
    print(f"command: {command}")
    if fit_line:
        print(fit_line)
    print()
    print(format_table(report))
    if cross is not None:
        print()
        print(format_table(cross))
    if args.plots is not None:
        print(f"\nmouth plots: {args.plots / 'self.mouth.png'}" + (f", {args.plots / 'cross.mouth.png'}" if cross else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
