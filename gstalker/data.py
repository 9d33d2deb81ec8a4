"""Reading a preprocessing workdir (`gstalker preprocess`) lazily, for training and evaluation.

    from gstalker.data import PreprocessedVideo
    train = PreprocessedVideo("work/subject", split="train")   # frames [0, val_start)
    val = PreprocessedVideo("work/subject", split="val")       # the held-out tail
    item = train[0]   # dict of torch tensors, see __getitem__

Frames are JPEG files and masks PNG files, decoded on access (torchvision.io), so memory stays
small; tracks (poses, landmarks, eye, lip boxes) are loaded once; the audio features, which can
be large for hubert (N x 16 x 1024), are read per item from the memory-mapped safetensors file.
Works with torch DataLoader workers (file handles are opened per process).
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from typing import Dict, Optional

import numpy as np
import torch

# torchvision 0.29 deprecates its image codecs in favour of torchcodec (not a dependency here);
# they work, so keep their notice from flooding every frame.
warnings.filterwarnings("ignore", message="The image decoding and encoding capabilities of TorchVision")

SPLITS = ("train", "val", "all")

# The clip's facts (docs/conventions.md), decided here and read everywhere else: preprocessing
# resamples every video to FPS and its audio to SAMPLE_RATE mono, so frame k covers audio samples
# [k, k + 1) * SAMPLES_PER_FRAME; frames are squares of a side in FRAME_SIZE_RANGE (training,
# preprocessing and rendering at another size check the same range, `check_frame_size`).
FPS = 25
SAMPLE_RATE = 16000
SAMPLES_PER_FRAME = SAMPLE_RATE // FPS  # 640
FRAME_SIZE_RANGE = (32, 4096)


def check_frame_size(size) -> int:
    """`size` (pixels a side) if it is a whole number in FRAME_SIZE_RANGE, else a one-line error."""
    from .errors import GstalkerError

    lo, hi = FRAME_SIZE_RANGE
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or not lo <= size <= hi:
        raise GstalkerError(f"--size must be between {lo} and {hi} pixels, got {size!r}")
    return int(size)


def _decode(path: Path, png: bool) -> torch.Tensor:
    from torchvision.io import decode_jpeg, decode_png

    data = torch.frombuffer(bytearray(path.read_bytes()), dtype=torch.uint8)
    return (decode_png(data) if png else decode_jpeg(data)).permute(1, 2, 0)  # [H,W,C] uint8


class ClipFacts:
    """The split and usable frames of one preprocessed clip, read from its `meta` (num_frames,
    val_start) and `tracks` (frame_ok): decided here once for training, `fit`'s summary and eval.
    PreprocessedVideo has them; so can any stand-in with `meta` and `tracks` (the tests' clips)."""

    meta: Dict
    tracks: Dict[str, torch.Tensor]

    @property
    def num_frames(self) -> int:
        return int(self.meta["num_frames"])

    @property
    def val_start(self) -> int:
        """The first frame of the held-out tail (the last 10%, contiguous)."""
        return int(self.meta["val_start"])

    @property
    def frame_ok(self) -> torch.Tensor:
        """[N] bool: the usable frames (a face and a person tracked); the others (cuts, fades,
        title cards) are neither trained on nor scored. All True for workdirs without the flags."""
        if "frame_ok" in self.tracks:
            return self.tracks["frame_ok"].bool()
        return torch.ones(self.num_frames, dtype=torch.bool)

    @property
    def train_ids(self) -> torch.Tensor:
        """[V] int64: the usable frames before the held-out tail, the ones training sees."""
        ids = torch.arange(self.val_start)
        return ids[self.frame_ok[:self.val_start]]

    @property
    def heldout_ids(self) -> torch.Tensor:
        """[T] int64: the usable frames of the held-out tail, the ones fit and eval score."""
        ids = torch.arange(self.val_start, self.num_frames)
        return ids[self.frame_ok[self.val_start:]]


class PreprocessedVideo(ClipFacts, torch.utils.data.Dataset):
    """One preprocessed video. `split`: "train" (frames before meta["val_start"]), "val" (the
    held-out tail: the last 10%, contiguous) or "all". `skip_flagged` leaves out frames that
    tracks["frame_ok"] marks bad (no face tracked, or no person in view: cards, fades); `indices`
    holds the global frame numbers of the items."""

    def __init__(self, workdir: str | os.PathLike, split: str = "train", skip_flagged: bool = True):
        self.workdir = Path(workdir)
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        meta_path = self.workdir / "meta.json"
        if not meta_path.exists():
            raise ValueError(f"{self.workdir}: not a preprocessed workdir (no meta.json); run `gstalker preprocess`")
        self.meta: Dict = json.loads(meta_path.read_text())
        self.split = split
        n, vs = self.meta["num_frames"], self.meta["val_start"]
        lo, hi = {"train": (0, vs), "val": (vs, n), "all": (0, n)}[split]
        self.indices = np.arange(lo, hi)
        files = self.meta["files"]
        self._frame_fmt = files["frames"]
        self._mask_fmt = files["masks"]
        from safetensors import safe_open

        self.tracks: Dict[str, torch.Tensor] = {}
        with safe_open(str(self.workdir / files["tracks"]), "pt") as f:
            for k in f.keys():
                if k != "audio_features":
                    self.tracks[k] = f.get_tensor(k)
        if skip_flagged and "frame_ok" in self.tracks:
            ok = self.tracks["frame_ok"].numpy().astype(bool)
            self.indices = self.indices[ok[self.indices]]
        self._feat = None
        self._feat_pid = None
        self._background: Optional[torch.Tensor] = None

    # ---------------------------------------------------------------- whole-video properties
    @property
    def size(self) -> tuple:
        return tuple(self.meta["size"])

    @property
    def K(self) -> torch.Tensor:
        """[3,3] float32 pinhole intrinsics (shared by all frames)."""
        i = self.meta["intrinsics"]
        return torch.tensor([[i["fx"], 0, i["cx"]], [0, i["fy"], i["cy"]], [0, 0, 1]], dtype=torch.float32)

    @property
    def viewmats(self) -> torch.Tensor:
        """[N,4,4] float32 world(canonical head)-to-camera per frame (all frames, not just the split)."""
        return self.tracks["viewmats"]

    @property
    def background(self) -> torch.Tensor:
        """[H,W,3] float32 in [0,1]: the static background image."""
        if self._background is None:
            self._background = _decode(self.workdir / self.meta["files"]["background"], png=True).float() / 255
        return self._background

    def audio_features(self, k: Optional[int] = None) -> torch.Tensor:
        """[W,D] float32 window of frame k, or [N,W,D] for all frames when k is None."""
        if self._feat is None or self._feat_pid != os.getpid():
            from safetensors import safe_open

            self._feat = safe_open(str(self.workdir / self.meta["files"]["tracks"]), "pt")
            self._feat_pid = os.getpid()
        if k is None:
            return self._feat.get_tensor("audio_features")
        return self._feat.get_slice("audio_features")[k : k + 1][0]

    def frame(self, k: int) -> torch.Tensor:
        """Frame k (global index) as [H,W,3] float32 in [0,1]."""
        return _decode(self.workdir / self._frame_fmt.format(k), png=False).float() / 255

    def masks(self, k: int) -> torch.Tensor:
        """Masks of frame k as [H,W,3] float32 in [0,1]: channels head, torso, background (sum 1)."""
        return _decode(self.workdir / self._mask_fmt.format(k), png=True).float() / 255

    def mouth(self, k: int) -> torch.Tensor:
        """Frame k's high-resolution mouth crop [P,P,3] float32 in [0,1] (of the training-pixel box
        tracks["mouth_boxes"][k]; only where preprocessing kept crops: meta["files"]["mouth"])."""
        return _decode(self.workdir / self.meta["files"]["mouth"].format(k), png=False).float() / 255

    # ---------------------------------------------------------------- Dataset
    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> Dict[str, torch.Tensor]:
        """Item i of the split: index (global frame number), image [H,W,3], head_mask / torso_mask /
        bg_mask [H,W], viewmat [4,4], landmarks [478,2] (pixels), eye [] in [0,1], lip_box [4]
        (x0, y0, x1, y1 pixels), audio_features [W,D]; all float32 except index (int64)."""
        if i < 0:
            i += len(self)
        if not 0 <= i < len(self):
            raise IndexError(i)
        k = int(self.indices[i])
        m = self.masks(k)
        return {
            "index": torch.tensor(k, dtype=torch.int64),
            "image": self.frame(k),
            "head_mask": m[..., 0],
            "torso_mask": m[..., 1],
            "bg_mask": m[..., 2],
            "viewmat": self.tracks["viewmats"][k],
            "landmarks": self.tracks["landmarks"][k],
            "eye": self.tracks["eye"][k],
            "lip_box": self.tracks["lip_boxes"][k],
            "audio_features": self.audio_features(k),
        }

    def __getstate__(self):
        d = dict(self.__dict__)
        d["_feat"] = None  # safetensors handles do not pickle; reopened per worker
        return d


def load_splits(workdir: str | os.PathLike):
    """(train, val) datasets of one workdir."""
    return PreprocessedVideo(workdir, "train"), PreprocessedVideo(workdir, "val")
