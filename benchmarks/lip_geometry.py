"""How far does the face field open the lips? The rigid template's inner-lip points (13, 14),
moved by the trained face field with each frame's audio code and eye and projected with its
pose (`field_mouth.field_lip_gap`), against the tracked landmarks: the correlation of the lip gap (over the eye-corner
distance) and its amplitude (ratio of standard deviations), on the held-out tail and on every
8th training frame. No rendering and no MediaPipe: what the deformation itself does at the lips.

With --steps N, first trains the landmark term alone (`Trainer.landmark_loss`, no rendering)
for N steps from the workdir's checkpoint at the deformation stage's starting learning rates,
printing the figures every 100 steps: the pilot that motivated the term (docs/benchmarks.md).

    python benchmarks/lip_geometry.py WORKDIR [--steps 600] [--batch 16]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("workdir", type=Path, help="a fit's workdir, with checkpoint.safetensors")
    ap.add_argument("--steps", type=int, default=0)
    ap.add_argument("--batch", type=int, default=16)
    args = ap.parse_args(argv)

    import gstalker  # noqa: F401  (OMP_WAIT_POLICY before torch)
    import torch

    from gstalker.data import PreprocessedVideo
    from field_mouth import INNER_LIPS, field_lip_gap
    from gstalker.metrics import correlation, mouth_opening_ratio
    from gstalker.train import CHECKPOINT, FitSettings, Trainer, TrainData, checkpoint_settings

    pv = PreprocessedVideo(args.workdir, "all", skip_flagged=False)
    data = TrainData(pv, torch.device("cpu"))
    if data.landmarks is None:
        print("this workdir has no face template: nothing to measure", file=sys.stderr)
        return 1
    settings = FitSettings(**{**checkpoint_settings(args.workdir / CHECKPOINT), "lpips": "off"})
    t = Trainer(data, settings, pv.meta["audio_features"], args.workdir / "lip_geometry")
    t.load_checkpoint(args.workdir / CHECKPOINT)
    t.sched["landmark_batch"] = args.batch
    m = t.model
    lm = data.landmarks

    @torch.no_grad()
    def figures(ids):
        codes = m.codes(data.audio)[ids]  # smoothed over each frame's true neighbours
        model_gap = field_lip_gap(m, data.template, codes, data.viewmats[ids], data.eyes[ids], INNER_LIPS)
        real_gap = mouth_opening_ratio(lm[ids].numpy())
        return correlation(model_gap, real_gap), model_gap.std() / real_gap.std()

    def row(step):
        (hr, ha), (tr, ta) = figures(data.val_ids), figures(data.train_ids[::8])
        print(f"| {step} | {hr:.3f} | {ha:.2f} | {tr:.3f} | {ta:.2f} |", flush=True)

    print("| landmark-only steps | held-out r | held-out amplitude | training r | training amplitude |")
    print("|---|---|---|---|---|")
    row(0)
    if args.steps:
        t.step_count = settings.static_iters  # the deformation stage's starting learning rates
        t._update_lr()
        for s in range(1, args.steps + 1):
            loss = t.landmark_loss()
            t.net_opt.zero_grad(set_to_none=True)
            loss.backward()
            t.net_opt.step()
            if s % 100 == 0:
                row(s)
    return 0


if __name__ == "__main__":
    sys.exit(main())
