"""Does the audio move only the mouth? A model driven by its own training audio with the head
pose and eyes held still should change the lower face (lips, jaw, chin) and nothing else: motion
elsewhere means the audio code became a frame identifier that explains pose-tracking error.

    python benchmarks/audio_leak.py MODEL.safetensors WORKDIR [--frames 200] [--png leak.png]

Renders `--frames` training frames (spread over the clip) with their own audio codes, the first
training pose and the median eye openness; the per-pixel standard deviation over time is the
motion map. Prints a Markdown table: mean motion (grey levels, 0-255) inside the lower-face box
(nose base to chin, jaw to jaw, 15% margin, from that frame's tracked landmarks), inside the
head mask outside that box, and their ratio (outside / inside, lower is better); writes the
motion map beside the still frame as a PNG.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# nose base, chin, jaw below the ears (MediaPipe face-mesh ids)
NOSE_BASE, CHIN, JAW_LEFT, JAW_RIGHT = 2, 152, 172, 397


def lower_face_box(landmarks, height: int, width: int, margin: float = 0.15):
    """(rows, cols) slices of the lower face from one frame's landmarks [478, 2] (pixels)."""
    x0, x1 = sorted((float(landmarks[JAW_LEFT, 0]), float(landmarks[JAW_RIGHT, 0])))
    y0, y1 = float(landmarks[NOSE_BASE, 1]), float(landmarks[CHIN, 1])
    mx, my = (x1 - x0) * margin, (y1 - y0) * margin
    return (slice(max(0, int(y0 - my)), min(height, int(y1 + my) + 1)),
            slice(max(0, int(x0 - mx)), min(width, int(x1 + mx) + 1)))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", type=Path)
    ap.add_argument("workdir", type=Path)
    ap.add_argument("--frames", type=int, default=200)
    ap.add_argument("--png", type=Path, default=None, help="motion map (default: MODEL with .leak.png)")
    args = ap.parse_args(argv)

    import gstalker  # noqa: F401  (OMP_WAIT_POLICY before torch)
    import numpy as np
    import torch

    from gstalker.data import PreprocessedVideo

    talker = gstalker.load(args.model, device="cpu")
    pv = PreprocessedVideo(args.workdir, "train")
    ids = pv.indices[np.unique(np.linspace(0, len(pv.indices) - 1, args.frames).round().astype(int))]
    model = talker.model
    with torch.no_grad():
        codes = model.codes(pv.audio_features().float())
        still = int(pv.indices[0])
        pose, eye = pv.viewmats[still], float(np.median(pv.tracks["eye"].numpy()))
        frames = torch.stack([talker.render(codes[k], pose, eye) for k in ids]) * 255
    motion = frames.std(0).mean(-1)  # [H, W]
    H, W = motion.shape
    rows, cols = lower_face_box(pv.tracks["landmarks"][still], H, W)
    inside = torch.zeros(H, W, dtype=torch.bool)
    inside[rows, cols] = True
    head = pv.masks(still)[..., 0] > 0.5
    m_in = float(motion[inside].mean())
    m_out = float(motion[head & ~inside].mean())
    print("| frames | lower face | head outside it | outside / inside |")
    print("|---|---|---|---|")
    print(f"| {len(ids)} | {m_in:.2f} | {m_out:.2f} | {m_out / max(m_in, 1e-9):.3f} |")

    from torchvision.io import write_png

    still_img = frames[0]
    heat = (motion / max(float(motion.max()), 1e-6) * 255)[..., None].expand(H, W, 3).clone()
    heat[rows.start, cols] = heat[rows.stop - 1, cols] = torch.tensor([255.0, 0, 0])
    heat[rows, cols.start] = heat[rows, cols.stop - 1] = torch.tensor([255.0, 0, 0])
    png = args.png or args.model.with_suffix(".leak.png")
    write_png(torch.cat([still_img, heat], 1).round().byte().permute(2, 0, 1), str(png))
    print(f"\nmotion map (right; red: the lower-face box): {png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
