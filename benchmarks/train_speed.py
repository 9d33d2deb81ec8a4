"""Training iterations per second of the real Trainer (both stages, the mouth patch off, no
densification while timed) on the synthetic clip, so a preset's schedule can be timed without
preprocessing a video (the GPU machine has no MediaPipe or PyAV).

    python benchmarks/train_speed.py                       # 512 px, 10k + 10k Gaussians (the fast preset's start)
    python benchmarks/train_speed.py --size 64 --steps 5   # a CPU smoke check of the script
    python benchmarks/train_speed.py --workdir clip.gstalker --steps 20   # a fitted clip's real frames,
        # Gaussians and mouth patch, from its checkpoint (the cpu preset's figure on a CPU)

Prints a Markdown table: stage, Gaussians, ms per iteration, and what the `fast` preset's
3,000 + 30,000 iterations would take at that rate.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--gaussians", type=int, default=10000, help="head and torso Gaussians each")
    ap.add_argument("--steps", type=int, default=100, help="timed iterations per stage")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--workdir", help="a fitted work folder: time its real steps from its checkpoint")
    args = ap.parse_args(argv)

    import gstalker  # noqa: F401
    import torch

    from common import stage_step_ms, timing_settings

    from gstalker.api import resolve_device
    from gstalker.train import FitSettings, Trainer, TrainData
    from synthetic import SyntheticClip

    dev = resolve_device(args.device)
    if args.workdir:
        from gstalker.data import PreprocessedVideo
        from gstalker.train import CHECKPOINT, checkpoint_settings

        clip = PreprocessedVideo(args.workdir, "all", skip_flagged=False)
        s = FitSettings(**{**checkpoint_settings(Path(args.workdir) / CHECKPOINT), "lpips": "off"})
        preset = (s.preset, s.static_iters, s.deform_iters)
        feature_meta = clip.meta["audio_features"]
    else:
        clip = SyntheticClip(n=40, size=args.size)
        s = FitSettings.from_preset("fast", size=args.size, lpips="off")
        preset = ("fast", 3000, 30000)
        feature_meta = clip.feature_meta
        s.schedule.update(n_head=args.gaussians, n_torso=args.gaussians)
    data = TrainData(clip, dev)
    s = timing_settings(s)
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        t = Trainer(data, s, feature_meta, tmp)
        if args.workdir:
            t.load_checkpoint(Path(args.workdir) / CHECKPOINT)
        ms = stage_step_ms(t, args.steps, warmup=min(10, args.steps))
    rows = list(zip(("static", "deformation"), ms))
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else f"CPU ({torch.get_num_threads()} threads)"
    g = t.model.gaussians
    print(f"Trainer.step on {name}, {data.width}x{data.height}, {len(g.head)} + {len(g.torso)} Gaussians, "
          f"{args.steps} timed steps per stage{', ' + args.workdir if args.workdir else ''}\n")
    print("| stage | ms / iteration |")
    print("|---|---|")
    for stage, ms in rows:
        print(f"| {stage} | {ms:.1f} |")
    preset_name, static, deform = preset
    total = static * rows[0][1] + deform * rows[1][1]
    print(f"\n{preset_name} preset ({static:,} + {deform:,} iterations) at these rates: {total / 60000:.1f} min "
          "(densification changes the Gaussian count during a real run)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
