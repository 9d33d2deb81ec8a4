"""The preprocessing workdir: file names, atomic writes, and which stages are done."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any, Dict

import numpy as np

FORMAT_VERSION = 1

META = "meta.json"
TRACKS = "tracks.safetensors"
AUDIO = "audio.wav"  # the clip's audio, moved to match the picture (preprocess.sync)
RECORDED_AUDIO = "recorded.wav"  # under CACHE: the audio as recorded
FRAMES = "frames"  # frames/000000.jpg ...
MASKS = "masks"  # masks/000000.png ...
MOUTH = "mouth"  # mouth/000000.jpg ...: high-resolution mouth crops (preprocess.mouth)
BACKGROUND = "background.png"
PREVIEW = "preview.png"
CACHE = "cache"  # stage results and stages.json
FRAME_NAME = "{:06d}.jpg"
MASK_NAME = "{:06d}.png"
JPEG_QUALITY = 95


def tmp_path(path: Path) -> Path:
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")


def write_bytes(path: Path, data: bytes) -> None:
    tmp = tmp_path(path)
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def write_json(path: Path, obj: Any) -> None:
    write_bytes(path, (json.dumps(obj, indent=2, sort_keys=False) + "\n").encode())


def save_tensors(path: Path, tensors: Dict[str, np.ndarray], metadata: Dict[str, str] | None = None) -> None:
    from safetensors.numpy import save_file

    tmp = tmp_path(path)
    save_file({k: np.ascontiguousarray(v) for k, v in tensors.items()}, str(tmp), metadata=metadata)
    os.replace(tmp, path)


def load_tensors(path: Path) -> Dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    return load_file(str(path))


def file_sha256(path: Path, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            b = f.read(chunk)
            if not b:
                break
            h.update(b)
    return h.hexdigest()


def fingerprint(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def replace_dir(tmp: Path, final: Path) -> None:
    """Move a finished temp folder into place (the old one, if any, is removed after)."""
    old = None
    if final.exists():
        old = final.with_name(f".{final.name}.old-{os.getpid()}")
        os.replace(final, old)
    os.replace(tmp, final)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


class Stages:
    """cache/stages.json: stage name -> fingerprint of its inputs and settings."""

    def __init__(self, workdir: Path):
        self.path = workdir / CACHE / "stages.json"
        try:
            self.done = json.loads(self.path.read_text())
        except (OSError, ValueError):
            self.done = {}

    def is_done(self, name: str, fp: str, *outputs: Path) -> bool:
        return self.done.get(name) == fp and all(p.exists() for p in outputs)

    def mark(self, name: str, fp: str) -> None:
        self.done[name] = fp
        self.path.parent.mkdir(parents=True, exist_ok=True)
        write_json(self.path, self.done)

    def clear(self) -> None:
        self.done = {}
        if self.path.exists():
            self.path.unlink()


def clean_temp(workdir: Path) -> None:
    """Remove leftovers of an interrupted run (temp files and folders)."""
    for p in list(workdir.glob(".*.tmp-*")) + list(workdir.glob(".*.old-*")) + list((workdir / CACHE).glob(".*.tmp-*")):
        if p.is_dir():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)
