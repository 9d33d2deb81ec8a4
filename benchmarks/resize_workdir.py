"""A preprocessed folder at fewer pixels, the same views: frames, masks and background resampled,
the intrinsics and the pixel tracks (landmarks, lip boxes) scaled, head poses, eyes, audio and
features unchanged. With a model file resized the same way (`gstalker.load(..., size=)` or
`TalkerModel.resize_`), `gstalker eval` then measures a model trained at 512 px on two CPU cores
at 128 px, with the same measures as a model trained at 128 (a 512 px eval there takes about
10 s a frame).

    python benchmarks/resize_workdir.py clip.gstalker clip128.gstalker --size 128 \\
        [--model model.safetensors --model-out model.128.safetensors]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("src", type=Path)
    ap.add_argument("dest", type=Path)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--model", type=Path)
    ap.add_argument("--model-out", type=Path)
    a = ap.parse_args(argv)

    import torch
    import torch.nn.functional as F
    from safetensors.torch import load_file, save_file
    from torchvision.io import decode_jpeg, decode_png, encode_jpeg, encode_png

    from gstalker.preprocess.cache import JPEG_QUALITY
    from gstalker.preprocess.masks import normalise_masks

    meta = json.loads((a.src / "meta.json").read_text())
    h, w = meta["size"]
    s = a.size / w
    files = meta["files"]
    if "mouth" in files:
        raise SystemExit("resize_workdir: mouth crops are not resized; use a folder without them")

    def resample(img_u8: torch.Tensor) -> torch.Tensor:  # [C, H, W] uint8
        x = F.interpolate(img_u8[None].float(), size=(round(h * s), a.size), mode="bilinear", antialias=True,
                          align_corners=False)
        return x[0].round().clamp(0, 255).to(torch.uint8)

    a.dest.mkdir(parents=True, exist_ok=True)
    for key, png in (("frames", False), ("masks", True)):
        (a.dest / files[key]).parent.mkdir(parents=True, exist_ok=True)
        for k in range(meta["num_frames"]):
            data = torch.frombuffer(bytearray((a.src / files[key].format(k)).read_bytes()), dtype=torch.uint8)
            img = resample(decode_png(data) if png else decode_jpeg(data))
            if png:
                img = torch.from_numpy(normalise_masks(img.permute(1, 2, 0).numpy())).permute(2, 0, 1).contiguous()
            out = encode_png(img) if png else encode_jpeg(img, quality=JPEG_QUALITY)
            (a.dest / files[key].format(k)).write_bytes(out.numpy().tobytes())
    bg = decode_png(torch.frombuffer(bytearray((a.src / files["background"]).read_bytes()), dtype=torch.uint8))
    (a.dest / files["background"]).write_bytes(encode_png(resample(bg)).numpy().tobytes())
    shutil.copy2(a.src / files["audio"], a.dest / files["audio"])
    tracks = load_file(str(a.src / files["tracks"]))
    for name in ("landmarks", "lip_boxes"):
        tracks[name] = tracks[name] * s
    save_file(tracks, str(a.dest / files["tracks"]))
    intr = meta["intrinsics"]
    meta["intrinsics"] = {k: v * s for k, v in intr.items()}
    meta["size"] = [round(h * s), a.size]
    meta["resized_from"] = {"folder": str(a.src), "size": [h, w]}
    (a.dest / "meta.json").write_text(json.dumps(meta, indent=2))
    print(f"{a.dest}: {meta['num_frames']} frames at {meta['size'][1]}x{meta['size'][0]}")
    if a.model:
        from gstalker.talker import TalkerModel

        model, info = TalkerModel.load(a.model, "cpu")
        model.resize_(a.size, round(h * s))
        model.save(a.model_out, info.get("summary"))
        print(f"{a.model_out}: {a.model.name} rendering at {a.size} px")
    return 0


if __name__ == "__main__":
    sys.exit(main())
