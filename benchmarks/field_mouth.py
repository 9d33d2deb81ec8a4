"""What the face field does to the lips, frame by frame, with no rendering and no MediaPipe (so it
runs on the GPU machine too, and in seconds on a CPU): the rigid template's inner-lip points
(13, 14) moved by the model's face field with each frame's audio code and eye, projected with its
pose, their gap over the projected eye-corner distance (33-263). Per row: the gap's correlation
with the real tracked opening (own audio only), its amplitude (standard deviation) over the real
one's, and `mouth_jitter` (gstalker.metrics: how much of the motion is frame-to-frame flicker)
beside the real mouth's.

Rows: the held-out tail with its own audio, eyes and tracked poses; every speech given, driven as
`speak` drives it (Talker.codes, the training poses played back), its amplitude read against the
training frames' real opening. A spiky rendered mouth (`gstalker eval`'s mouth_jitter) whose
field gap is smooth comes from the Gaussians; one whose field gap is spiky too, from the code.

    python benchmarks/field_mouth.py MODEL WORKDIR [--audio SPEECH.wav ...]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def field_lip_gap(model, template, codes, viewmats, eyes):
    """The face field's inner-lip gap over the eye-corner distance, per frame: model a TalkerModel,
    template [478, 3] canonical face points, codes [T, code_dim], viewmats [T, 4, 4], eyes [T]
    -> numpy [T]."""
    import torch

    from gstalker.metrics import EYE_CORNERS, LOWER_LIP, UPPER_LIP
    from gstalker.talker import project_points

    points = torch.as_tensor(template, dtype=torch.float32)
    with torch.no_grad():
        lips = project_points(model.deform_points(points[[UPPER_LIP, LOWER_LIP]], codes, eyes), viewmats, model.K)
        corners = project_points(points[list(EYE_CORNERS)].expand(len(codes), 2, 3), viewmats, model.K)
    gap = (lips[:, 0] - lips[:, 1]).norm(dim=-1) / (corners[:, 0] - corners[:, 1]).norm(dim=-1)
    return gap.numpy().astype("float64")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", type=Path)
    ap.add_argument("workdir", type=Path)
    ap.add_argument("--audio", type=Path, nargs="*", default=[])
    args = ap.parse_args(argv)

    import gstalker
    import numpy as np
    import torch

    from common import print_table
    from gstalker.data import PreprocessedVideo
    from gstalker.metrics import correlation, mouth_jitter, mouth_opening_ratio

    talker = gstalker.load(args.model, device="cpu", backend="torch")
    model = talker.model
    pv = PreprocessedVideo(args.workdir, "all", skip_flagged=False)
    template = pv.tracks.get("template")
    if template is None:
        print(f"{args.workdir} has no face template (preprocessing from before it): nothing to measure", file=sys.stderr)
        return 1
    lm = pv.tracks["landmarks"].double().numpy().copy()
    lm[~pv.frame_ok.numpy()] = np.nan
    real = mouth_opening_ratio(lm)
    val = pv.val_start
    train_real = real[:val]

    rows = []
    with torch.no_grad():
        codes = model.codes(torch.as_tensor(pv.audio_features(), dtype=torch.float32))[val:]
    eyes = torch.as_tensor(pv.tracks["eye"], dtype=torch.float32)[val:]
    viewmats = torch.as_tensor(pv.viewmats, dtype=torch.float32)[val:]
    gap = field_lip_gap(model, template, codes, viewmats, eyes)
    r = correlation(gap, real[val:])
    rows.append(["held-out tail, own audio", len(gap), f"{r:.3f}" if r is not None else "-",
                 f"{np.nanstd(gap) / np.nanstd(real[val:]):.2f}", f"{mouth_jitter(gap):.3f}",
                 f"{mouth_jitter(real[val:]):.3f}"])
    for speech in args.audio:
        codes = talker.codes(talker.audio(speech))
        poses = [talker.pose(k) for k in range(len(codes))]
        viewmats = torch.stack([p for p, _ in poses])
        eyes = torch.stack([torch.as_tensor(e, dtype=torch.float32) for _, e in poses])
        gap = field_lip_gap(model, template, codes, viewmats, eyes)
        rows.append([speech.name, len(gap), "-", f"{np.std(gap) / np.nanstd(train_real):.2f}",
                     f"{mouth_jitter(gap):.3f}", f"{mouth_jitter(train_real):.3f} (training frames)"])
    print_table(["driven by", "frames", "r with the real mouth", "amplitude / real", "field jitter", "real jitter"],
                rows, title=f"the face field's lip gap: {args.model.name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
