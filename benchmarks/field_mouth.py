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
`speak` drives it (Talker.codes, the training poses played back); every `--speakers` video (another
person talking, preprocessed once into `--cache` by `gstalker.evaluate.speaker_mouth`),
driven by that person's audio, its r against that person's tracked mouth (`--speakers` alone: the five
clips other_speakers.py uses). A spiky rendered mouth
(`gstalker eval`'s mouth_jitter) whose field is smooth comes from elsewhere (appearance, or the
tracker on rendered frames); one whose field flickers too, from the code and the field.

A second table reads the audio code alone: a least-squares line from the code to the tracked
mouth opening, fitted on the training frames, then applied to the held-out tail and to each
speaker's own audio; r with the real opening and the read-out's std over the real one's (the share
of the motion a code carries linearly). It says how much of a new recording's mouth the code
knows, before the face field and the renderer.

    python benchmarks/field_mouth.py MODEL WORKDIR [--audio SPEECH.wav ...] [--speakers [VIDEO ...]] [--cache DIR]
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
    ap.add_argument("--speakers", type=Path, nargs="*", default=None,
                    help="videos of other people talking (other_speakers.py's five: --speakers with no file)")
    ap.add_argument("--cache", type=Path, default=Path("other_speakers.cache"),
                    help="where the speakers' videos are preprocessed once (other_speakers.py's --cache)")
    args = ap.parse_args(argv)

    import gstalker
    import numpy as np
    import torch

    from common import print_table
    from gstalker.data import PreprocessedVideo
    from gstalker.evaluate import speaker_mouth
    from gstalker.metrics import correlation, mouth_jitter, mouth_opening_ratio
    from other_speakers import speaker_videos

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
        own_codes = model.codes(torch.as_tensor(pv.audio_features(), dtype=torch.float32))
    codes = own_codes[val:]
    row("held-out tail, own audio", codes, torch.as_tensor(pv.viewmats, dtype=torch.float32)[val:],
        torch.as_tensor(pv.tracks["eye"], dtype=torch.float32)[val:], real[val:],
        f"{mouth_jitter(real[val:]):.3f} (these frames)")

    def driven(wave):  # codes as `speak` makes them, the training poses played back
        codes = talker.codes(talker.audio(wave))
        poses = [talker.pose(k) for k in range(len(codes))]
        return codes, torch.stack([p for p, _ in poses]), torch.stack([torch.as_tensor(e, dtype=torch.float32)
                                                                        for _, e in poses])

    for speech in args.audio:
        row(speech.name, *driven(speech), None, f"{mouth_jitter(real[:val]):.3f} (training frames)")
    speakers = []
    videos = [] if args.speakers is None else speaker_videos(args.speakers)
    for video in videos:
        wave, their = speaker_mouth(video, progress=False, workdir=args.cache / video.stem)
        codes, viewmats, eyes = driven(wave)
        n = min(len(codes), len(their))
        speakers.append((video.name, codes[:n], their[:n]))
        row(video.name, codes[:n], viewmats[:n], eyes[:n], their[:n], f"{mouth_jitter(their[:n]):.3f} (theirs)")
    print_table(["driven by", "frames", "outer height: r", "std", "jitter", "inner gap: r", "std", "jitter",
                 "real jitter"], rows, title=f"the face field's mouth: {args.model.name}")

    readout = code_readout(own_codes[:val].numpy(), real[:val])
    rows = []
    for name, c, target in [("training frames", own_codes[:val], real[:val]),
                            ("held-out tail", own_codes[val:], real[val:])] + speakers:
        pred = readout(c.numpy())
        ok = np.isfinite(target)
        rows.append([name, int(ok.sum()), f"{correlation(pred, target):+.3f}",
                     f"{pred[ok].std() / target[ok].std():.2f}"])
    print_table(["audio of", "frames", "read-out r", "read-out std / real std"], rows,
                title="the audio code's linear read-out of the mouth opening (fitted on the training frames)")
    return 0


def code_readout(codes, opening):
    """Least squares from codes [T, C] to the opening [T] (NaN frames left out), with an
    intercept -> a function codes [M, C] -> [M]."""
    import numpy as np

    ok = np.isfinite(opening)
    X = np.concatenate([codes[ok], np.ones((int(ok.sum()), 1))], 1).astype(np.float64)
    w = np.linalg.lstsq(X, opening[ok], rcond=None)[0]
    return lambda c: np.concatenate([c, np.ones((len(c), 1))], 1).astype(np.float64) @ w


if __name__ == "__main__":
    sys.exit(main())
