"""What the face field does to the mouth, frame by frame, with no rendering and no MediaPipe (so it
runs on the GPU machine too, and in seconds on a CPU): pairs of the rigid template's points moved
by the model's face field with each frame's audio code and eye, projected with its pose, their
distance over the projected eye-corner distance (33-263). Two pairs: the outer lips' height (0 to
17), which follows the real mouth opening (the field opens the mouth by moving the lower lip and
jaw), and the inner-lip gap (13 to 14), the pair eval's `mouth_opening` tracks on rendered frames,
where the field moves little. Per pair: the correlation with the real tracked opening (own audio
only), the standard deviation, and `mouth_jitter` (gstalker.metrics: how much of the motion is
frame-to-frame flicker), beside the real mouth's jitter.

Rows: the held-out tail with its own audio, eyes and tracked poses; every speech given, driven as
`speak` drives it (Talker.codes, the training poses played back). A spiky rendered mouth
(`gstalker eval`'s mouth_jitter) whose field is smooth comes from elsewhere (appearance, or the
tracker on rendered frames); one whose field flickers too, from the code and the field.

    python benchmarks/field_mouth.py MODEL WORKDIR [--audio SPEECH.wav ...]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


# (upper, lower) face-mesh points: the outer lips' centres, the inner lips' centres
OUTER_LIPS, INNER_LIPS = (0, 17), (13, 14)


def field_lip_gap(model, template, codes, viewmats, eyes, pair=OUTER_LIPS):
    """The distance the face field puts between two template points, over the eye-corner
    distance, per frame: model a TalkerModel, template [478, 3] canonical face points, codes
    [T, code_dim], viewmats [T, 4, 4], eyes [T], pair (upper, lower) point indices -> numpy [T]."""
    import torch

    from gstalker.metrics import EYE_CORNERS
    from gstalker.talker import project_points

    points = torch.as_tensor(template, dtype=torch.float32)
    with torch.no_grad():
        lips = project_points(model.deform_points(points[list(pair)], codes, eyes), viewmats, model.K)
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

    rows = []

    def row(name, codes, viewmats, eyes, real_part, real_note=""):
        outer = field_lip_gap(model, template, codes, viewmats, eyes, OUTER_LIPS)
        inner = field_lip_gap(model, template, codes, viewmats, eyes, INNER_LIPS)
        r = None if real_part is None else correlation(outer, real_part)
        ri = None if real_part is None else correlation(inner, real_part)
        fmt = lambda v: "-" if v is None else f"{v:+.3f}"  # noqa: E731
        rows.append([name, len(outer), fmt(r), f"{outer.std():.4f}", f"{mouth_jitter(outer):.3f}", fmt(ri),
                     f"{inner.std():.4f}", f"{mouth_jitter(inner):.3f}", real_note])

    with torch.no_grad():
        codes = model.codes(torch.as_tensor(pv.audio_features(), dtype=torch.float32))[val:]
    row("held-out tail, own audio", codes, torch.as_tensor(pv.viewmats, dtype=torch.float32)[val:],
        torch.as_tensor(pv.tracks["eye"], dtype=torch.float32)[val:], real[val:],
        f"{mouth_jitter(real[val:]):.3f} (these frames)")
    for speech in args.audio:
        codes = talker.codes(talker.audio(speech))
        poses = [talker.pose(k) for k in range(len(codes))]
        row(speech.name, codes, torch.stack([p for p, _ in poses]),
            torch.stack([torch.as_tensor(e, dtype=torch.float32) for _, e in poses]), None,
            f"{mouth_jitter(real[:val]):.3f} (training frames)")
    print_table(["driven by", "frames", "outer height: r", "std", "jitter", "inner gap: r", "std", "jitter",
                 "real jitter"], rows, title=f"the face field's mouth: {args.model.name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
