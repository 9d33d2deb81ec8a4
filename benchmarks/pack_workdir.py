"""Carry a preprocessed work folder to the GPU machine, which has no MediaPipe or PyAV and takes
64 MiB a call: its 512 px frames (83 MB of JPEG for the interview clip) and masks (49 MB of PNG)
travel as two H.264 RGB streams, decoded there with OpenCV (in that machine's image).

    python benchmarks/pack_workdir.py pack clip.gstalker .gpu/clip      # here (PyAV)
    python benchmarks/pack_workdir.py unpack .gpu/clip /tmp/clip.gstalker   # there (OpenCV, torchvision)

Both streams are lossy but close (pack prints the round trip: the interview's frames come back at
about 48 dB PSNR, a model trained at 512 px reaches about 30); the unpacked JPEGs are written at
preprocessing's quality. Tracks travel xz-compressed, meta, audio and background as they are; the
cache is left out (training never reads it).
"""

from __future__ import annotations

import argparse
import lzma
import os
import shutil
import sys
from pathlib import Path

import numpy as np

FRAMES_CRF = 12  # 4:4:4 H.264: about 48 dB from the JPEGs, 8 MiB for the interview clip
MASKS_CRF = 10  # soft masks: about 59 dB; unpack makes each pixel's three channels sum to 255 again
COPIED = ("meta.json", "background.png", "audio.wav")
TRACKS = "tracks.safetensors"  # travels xz-compressed (24 -> 11 MiB)


def _write_stream(path: Path, images, size: tuple[int, int], crf: int, rgb: bool) -> None:
    import av

    with av.open(str(path), "w") as out:
        s = out.add_stream("libx264rgb" if rgb else "libx264", rate=25)
        s.width, s.height = size[1], size[0]
        s.pix_fmt = "rgb24" if rgb else "yuv444p"
        s.options = {"crf": str(crf), "preset": "medium"}
        for img in images:
            for pkt in s.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(img), format="rgb24")):
                out.mux(pkt)
        for pkt in s.encode():
            out.mux(pkt)


def _read_stream(path: Path):
    try:
        import cv2

        cap = cv2.VideoCapture(str(path))
        while True:
            ok, bgr = cap.read()
            if not ok:
                break
            yield bgr[..., ::-1]
        cap.release()
    except ImportError:
        import av

        with av.open(str(path)) as f:
            for fr in f.decode(video=0):
                yield fr.to_ndarray(format="rgb24")


def pack(workdir: Path, dest: Path) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    import json

    from gstalker.data import _decode
    from gstalker.preprocess.masks import normalise_masks

    meta = json.loads((workdir / "meta.json").read_text())
    n, size = meta["num_frames"], tuple(meta["size"])
    files = meta["files"]
    if "mouth" in files:
        raise SystemExit("pack: this folder keeps mouth crops; packing them is not implemented")
    dest.mkdir(parents=True, exist_ok=True)
    for name in COPIED:
        shutil.copy2(workdir / name, dest / name)
    frames = lambda: (_decode(workdir / files["frames"].format(k), png=False).numpy() for k in range(n))
    (dest / (TRACKS + ".xz")).write_bytes(lzma.compress((workdir / TRACKS).read_bytes()))
    _write_stream(dest / "frames.mkv", frames(), size, FRAMES_CRF, rgb=False)
    _write_stream(dest / "masks.mkv", (_decode(workdir / files["masks"].format(k), png=True).numpy() for k in range(n)),
                  size, MASKS_CRF, rgb=True)
    # the round trip, measured
    err, count = 0.0, 0
    for k, (a, b) in enumerate(zip(frames(), _read_stream(dest / "frames.mkv"))):
        if k % 50 == 0:
            err += float(np.mean((a.astype(np.float64) - b) ** 2)); count += 1
    mask_err = max(float(np.abs(_decode(workdir / files["masks"].format(k), png=True).numpy().astype(int) - normalise_masks(m)).mean())
                   for k, m in enumerate(_read_stream(dest / "masks.mkv")) if k % 100 == 0)
    psnr = 10 * np.log10(255 ** 2 / max(err / count, 1e-12))
    total = sum(p.stat().st_size for p in dest.iterdir())
    print(f"packed {n} frames of {size[0]}x{size[1]} into {dest}: {total / 2**20:.1f} MiB; "
          f"frames round trip {psnr:.1f} dB PSNR; masks off by {mask_err:.3f} grey levels on average at most")


def unpack(src: Path, workdir: Path) -> None:
    import json

    import torch
    from torchvision.io import encode_jpeg, encode_png

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from gstalker.preprocess.cache import JPEG_QUALITY
    from gstalker.preprocess.masks import normalise_masks

    meta = json.loads((src / "meta.json").read_text())
    files = meta["files"]
    workdir.mkdir(parents=True, exist_ok=True)
    for name in COPIED:
        shutil.copy2(src / name, workdir / name)
    (workdir / TRACKS).write_bytes(lzma.decompress((src / (TRACKS + ".xz")).read_bytes()))
    from concurrent.futures import ThreadPoolExecutor

    def write(key, k, img):
        img = normalise_masks(img) if key == "masks" else img
        t = torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1)
        data = encode_png(t) if key == "masks" else encode_jpeg(t, quality=JPEG_QUALITY)
        (workdir / files[key].format(k)).write_bytes(data.numpy().tobytes())

    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:  # encoders release the GIL
        for key, stream in (("frames", "frames.mkv"), ("masks", "masks.mkv")):
            (workdir / files[key]).parent.mkdir(parents=True, exist_ok=True)
            jobs = [pool.submit(write, key, k, img) for k, img in enumerate(_read_stream(src / stream))]
            for j in jobs:
                j.result()
            if len(jobs) != meta["num_frames"]:
                raise SystemExit(f"unpack: {stream} held {len(jobs)} frames, meta.json says {meta['num_frames']}")
    print(f"unpacked {meta['num_frames']} frames into {workdir}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("verb", choices=["pack", "unpack"])
    ap.add_argument("src", type=Path)
    ap.add_argument("dest", type=Path)
    a = ap.parse_args(argv)
    (pack if a.verb == "pack" else unpack)(a.src, a.dest)
    return 0


if __name__ == "__main__":
    sys.exit(main())
