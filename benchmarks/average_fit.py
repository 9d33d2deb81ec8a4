"""Does averaging the model over the end of training make a fit's mouth less of a draw? One fit
of a preprocessed workdir, written out several times from the same run: the last iterate (what
`gstalker fit` writes) and exponential moving averages of every model tensor (Gaussians, hash
tables, MLPs, audio smoother) with the given decays, kept from the step where densification
stops (the Gaussian count is fixed from then on) to the end. The question: training takes one
random frame a step, so does the last iterate lean towards the last few hundred frames drawn?
Evaluate each file with `gstalker eval` (the same fit, so the comparison is free of the seed;
measured in docs/benchmarks.md, "Averaging the model over the end of training": it does not).

    python benchmarks/average_fit.py WORKDIR OUT_PREFIX [--preset cpu] [--seed 0] [--decays 0.99 0.995 0.999]

writes OUT_PREFIX.last.safetensors and OUT_PREFIX.ema<decay>.safetensors.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("workdir", type=Path)
    ap.add_argument("out_prefix")
    ap.add_argument("--preset", default="cpu")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--iters", type=int, default=None, help="both stages (a quick try; default: the preset's)")
    ap.add_argument("--decays", type=float, nargs="+", default=[0.99, 0.995, 0.999])
    args = ap.parse_args(argv)

    import gstalker  # noqa: F401  (OMP_WAIT_POLICY before torch)
    import torch

    from gstalker.data import PreprocessedVideo
    from gstalker.train import FitSettings, Trainer, TrainData, run_training, training_summary

    settings = FitSettings.from_preset(args.preset, iters=args.iters, seed=args.seed)
    pv = PreprocessedVideo(args.workdir, "all")
    data = TrainData(pv, torch.device("cpu"))

    class AveragingTrainer(Trainer):
        def step(self) -> None:
            super().step()
            if self.step_count < self.densify_until:
                return
            state = {k: v for k, v in self.model.state_dict().items() if v.is_floating_point()}
            with torch.no_grad():
                for d in args.decays:
                    if d not in self.averages:
                        self.averages[d] = {k: v.clone() for k, v in state.items()}
                    else:
                        for k, v in state.items():
                            self.averages[d][k].lerp_(v, 1 - d)

    t0 = time.monotonic()
    trainer = AveragingTrainer(data, settings, pv.meta["audio_features"], args.workdir)
    trainer.averages = {}  # decay -> {state_dict key: average}
    stats = run_training(trainer)
    last = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    for name, state in [("last", last)] + [(f"ema{d:g}", trainer.averages[d]) for d in args.decays]:
        trainer.model.load_state_dict(state, strict=False)
        heldout = trainer.evaluate(limit=100)
        summary = training_summary(trainer, stats, time.monotonic() - t0, heldout)
        out = Path(f"{args.out_prefix}.{name}.safetensors")
        trainer.model.save(out, summary)
        print(f"{out}: held-out psnr {heldout['psnr']:.3f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
