"""Does the model fit the mouth on the frames it was trained on? Renders a span of *training*
frames with their own audio codes, poses and eyes, tracks both the rendered and the real frames
with MediaPipe (upscaled as `gstalker eval` does) and compares the inner-lip gap: its correlation
(rendered vs real) and the ratio of standard deviations (amplitude). Held-out figures
(`gstalker eval`) mix fitting and generalising; this one is fitting alone.

    python benchmarks/mouth_fit.py MODEL WORKDIR [--first 1000] [--frames 200]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", type=Path)
    ap.add_argument("workdir", type=Path)
    ap.add_argument("--first", type=int, default=1000)
    ap.add_argument("--frames", type=int, default=200)
    args = ap.parse_args(argv)

    import gstalker  # noqa: F401  (OMP_WAIT_POLICY before torch)
    import numpy as np
    import torch

    from gstalker.data import PreprocessedVideo
    from gstalker.evaluate import _open_landmarks
    from gstalker.metrics import correlation, mouth_opening

    talker = gstalker.load(args.model, device="cpu")
    pv = PreprocessedVideo(args.workdir, "all")
    last = min(args.first + args.frames, int(pv.meta["val_start"]))
    with torch.no_grad():
        codes = talker.model.codes(pv.audio_features().float())
    trackers, reason = _open_landmarks(2)
    if trackers is None:
        print(f"mouth_fit: {reason}")
        return 1
    fake_track, real_track = trackers
    rendered, real = [], []
    with torch.no_grad():
        for k in range(args.first, last):
            fake = talker.render(codes[k], pv.viewmats[k], float(pv.tracks["eye"][k])).float().cpu()
            lf, lr = fake_track(fake), real_track(pv.frame(k))
            if lf is not None and lr is not None:
                rendered.append(mouth_opening(lf[None])[0])
                real.append(mouth_opening(lr[None])[0])
    rendered, real = np.array(rendered), np.array(real)
    print(f"{args.model.name}: training frames {args.first}-{last - 1} ({len(real)} tracked)")
    print("| mouth opening on training frames | rendered | real | rendered / real |")
    print("|---|---|---|---|")
    print(f"| std (px) | {rendered.std():.2f} | {real.std():.2f} | {rendered.std() / real.std():.2f} |")
    print(f"| correlation with the real | {correlation(rendered, real):.2f} | | |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
