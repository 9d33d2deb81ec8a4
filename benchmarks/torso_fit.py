"""Does the rendered body sit on the real one? Per frame of the held-out tail (and, for
comparison, every 10th training frame), MODEL renders its head and torso layers with the frame's
own pose, eye and audio code, and the layers' alphas are compared with preprocessing's masks:

- torso offset: distance in pixels between the centroids of the visible rendered torso
  (torso alpha where the head does not cover it) and of the real torso mask;
- torso IoU: visible rendered torso > 0.5 against the torso mask > 0.5;
- holes: pixels of the real person (head + torso mask > 0.5) that the render leaves mostly
  transparent (head and torso alpha together < 0.5): the light band under the chin where head
  and torso fail to meet, as a share of the person's pixels.

    python benchmarks/torso_fit.py MODEL WORKDIR

Prints a Markdown table (mean over frames; pixels at the model's size).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _centroid(w):
    import torch

    total = w.sum()
    if total < 1:
        return None
    ys, xs = torch.meshgrid(torch.arange(w.shape[0], dtype=w.dtype), torch.arange(w.shape[1], dtype=w.dtype),
                            indexing="ij")
    return torch.stack([(w * xs).sum() / total, (w * ys).sum() / total])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", type=Path)
    ap.add_argument("workdir", type=Path)
    a = ap.parse_args(argv)

    import numpy as np
    import torch

    import gstalker
    from gstalker.data import PreprocessedVideo

    talker = gstalker.load(a.model, device="cpu")
    m = talker.model
    pv = PreprocessedVideo(a.workdir, "all", skip_flagged=False)
    ok = pv.frame_ok.numpy().astype(bool)
    sets = {"held-out tail": [k for k in range(pv.val_start, pv.num_frames) if ok[k]],
            "training (every 10th)": [k for k in range(0, pv.val_start, 10) if ok[k]]}
    rows = []
    with torch.no_grad():
        codes = m.codes(pv.audio_features().float())
        cache = m.inference_cache()
        for name, ids in sets.items():
            offs, ious, holes = [], [], []
            for k in ids:
                out = m.render(codes[k], pv.viewmats[k], float(pv.tracks["eye"][k]), cache=cache)
                ha, ta = out["head_alpha"][..., 0], out["torso_alpha"][..., 0]
                visible = ta * (1 - ha)
                masks = pv.masks(k)
                real_torso, person = masks[..., 1], masks[..., 0] + masks[..., 1]
                c_fake, c_real = _centroid(visible), _centroid(real_torso)
                if c_fake is not None and c_real is not None:
                    offs.append(float((c_fake - c_real).norm()))
                inter = ((visible > 0.5) & (real_torso > 0.5)).sum()
                union = ((visible > 0.5) | (real_torso > 0.5)).sum()
                if union > 0:
                    ious.append(float(inter) / float(union))
                body = person > 0.5
                if body.any():
                    holes.append(float(((ha + visible) < 0.5)[body].float().mean()))
            rows.append((name, len(ids), np.mean(offs), np.mean(ious), np.mean(holes)))
    print(f"{a.model.name} on {a.workdir.name} ({m.width}x{m.height})\n")
    print("| frames | count | torso offset px | torso IoU | holes (share of the person) |")
    print("|---|---|---|---|---|")
    for name, n, off, iou, hole in rows:
        print(f"| {name} | {n} | {off:.2f} | {iou:.3f} | {hole:.4f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
