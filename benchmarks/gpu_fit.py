"""`fit`'s training on a preprocessed folder within a time budget: the GPU row of the preset
tables (the GPU machine has no MediaPipe or PyAV, so preprocessing happens here and the folder
travels, benchmarks/pack_workdir.py).

    python benchmarks/gpu_fit.py clip.gstalker --preset fast --seconds 240 --out model.safetensors
    python benchmarks/gpu_fit.py clip.gstalker --preset smoke --iters 20 --out m.safetensors  # CPU check
    python benchmarks/gpu_fit.py clip.gstalker --preset fast --iters 4745 --set mouth_shape_weight=0.3 --out m.safetensors

Without --iters the preset's schedule is scaled (`fit --iters`, both stages in the preset's ratio)
to what the measured step rate allows in what is left of --seconds (counted from the start,
loading the frames included), capped at the whole schedule: 10 warm-up and
20 timed steps of each stage (densification off) give the rates, and PLAN_SHARE of the budget is
planned for (densification grows the Gaussians: on the interview clip at 512 px on an H200 the
run took 1.09x its plan, 20k -> 150k Gaussians). A run that
still reaches --seconds stops there, and the file says where (`summary["stopped_at"]`).
Then the same as `fit` after preprocessing: held-out PSNR, the model file, previews and the loss
curve in the folder. Prints one Markdown table row per figure.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
PLAN_SHARE = 0.8


def step_ms(data, settings, feature_meta, steps: int = 20) -> tuple[float, float]:
    """ms per Trainer.step of the static and the deformation stage (densification off)."""
    from common import stage_step_ms, timing_settings

    from gstalker.train import Trainer

    with tempfile.TemporaryDirectory() as tmp:
        return stage_step_ms(Trainer(data, timing_settings(settings), feature_meta, tmp), steps)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("workdir", type=Path)
    ap.add_argument("--preset", default="fast")
    ap.add_argument("--seconds", type=float, default=240.0, help="training budget (the planned schedule uses PLAN_SHARE of it)")
    ap.add_argument("--iters", type=int, help="both stages' iterations (default: what --seconds allows)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="a schedule entry over the preset's (e.g. mouth_shape_weight=0.3); repeatable")
    a = ap.parse_args(argv)
    overrides = {}
    for item in a.set:
        key, sep, value = item.partition("=")
        if not sep:
            ap.error(f"--set takes KEY=VALUE, got {item!r}")
        overrides[key] = json.loads(value)

    import torch

    from gstalker.api import resolve_device
    from gstalker.data import PreprocessedVideo
    from gstalker.train import PRESETS, FitSettings, Trainer, TrainData, run_training, training_summary

    unknown = sorted(set(overrides) - {k for preset in PRESETS.values() for k in preset})
    if unknown:
        ap.error(f"--set: not a schedule entry of any preset: {', '.join(unknown)}")
    t_start = time.monotonic()
    dev = resolve_device(a.device)
    pv = PreprocessedVideo(a.workdir, "all")
    data = TrainData(pv, dev)
    feature_meta = pv.meta["audio_features"]
    full = PRESETS[a.preset]["static_iters"] + PRESETS[a.preset]["deform_iters"]
    iters = a.iters
    rates = None
    if iters is None:
        probe = FitSettings.from_preset(a.preset, seed=a.seed, lpips="off")
        probe.schedule.update(overrides)
        rates = step_ms(data, probe, feature_meta)
        frac_static = PRESETS[a.preset]["static_iters"] / full
        per_iter = frac_static * rates[0] + (1 - frac_static) * rates[1]
        left = a.seconds - (time.monotonic() - t_start)
        iters = max(2, min(full, int(PLAN_SHARE * left * 1000 / per_iter)))
    settings = FitSettings.from_preset(a.preset, iters=None if iters == full else iters, seed=a.seed)
    settings.schedule.update(overrides)
    print(f"{a.preset} preset, {iters:,} of {full:,} iterations ({settings.static_iters:,} static + "
          f"{settings.deform_iters:,} deformation) on {dev}"
          + (f"; with {overrides}" if overrides else "")
          + (f"; measured {rates[0]:.1f} / {rates[1]:.1f} ms per static / deformation step" if rates else ""),
          flush=True)

    trainer = Trainer(data, settings, feature_meta, a.workdir)

    def deadline(signum, frame):
        raise KeyboardInterrupt

    budget_left = a.seconds - (time.monotonic() - t_start)
    signal.signal(signal.SIGALRM, deadline)
    signal.alarm(max(1, int(budget_left)))
    stopped_at = None
    t0 = time.monotonic()
    try:
        stats = run_training(trainer, progress=False)
    except KeyboardInterrupt:
        stopped_at = trainer.step_count
        stats = {"train_seconds": time.monotonic() - t0, "stages": {}}
    finally:
        signal.alarm(0)
    heldout = trainer.evaluate()
    g = trainer.model.gaussians
    summary = {**training_summary(trainer, stats, time.monotonic() - t_start, heldout),
               "planned_iterations": iters, "stopped_at": stopped_at,
               "device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu",
               "lpips": trainer.lpips.net is not None}
    trainer.model.save(a.out, summary)
    print(json.dumps(summary, indent=1))
    print("\n| preset | iterations | train s | it/s | Gaussians | held-out PSNR | mean-frame PSNR |")
    print("|---|---|---|---|---|---|---|")
    print(f"| {settings.preset} | {trainer.step_count:,} of {full:,} | {stats['train_seconds']:.0f} | "
          f"{trainer.step_count / max(stats['train_seconds'], 1e-9):.1f} | {len(g.head) + len(g.torso):,} | "
          f"{heldout['psnr']:.2f} | {summary['baseline_psnr']:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
