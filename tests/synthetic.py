"""A tiny synthetic talking-head clip with the interface of `gstalker.data.PreprocessedVideo`."""

import numpy as np
import torch

from gstalker.data import ClipFacts


class SyntheticClip(ClipFacts):
    """`n` frames of a disc 'head' over a box 'torso' on a plain background; a dark 'mouth' in
    the disc opens and closes with the audio features (all equal to the mouth opening, plus
    noise). `mouth` [n] in [0, 1]: the opening per frame (`opening`) (default a sine of period 4 pi frames)."""

    def __init__(self, n: int = 40, size: int = 64, feature_dim: int = 8, window: int = 16, seed: int = 0,
                 mouth=None):
        rng = np.random.default_rng(seed)
        self.size = (size, size)
        self.meta = {"num_frames": n, "val_start": int(n * 0.9), "size": [size, size]}
        f = size * 2.5
        self.K = torch.tensor([[f, 0, size / 2], [0, f, size / 2], [0, 0, 1]])
        viewmats = torch.eye(4).repeat(n, 1, 1)
        viewmats[:, 2, 3] = 6.0
        viewmats[:, 0, 3] = 0.05 * torch.sin(torch.arange(n) / 5)
        self.viewmats = viewmats
        self.opening = 0.5 + 0.5 * np.sin(np.arange(n) / 2) if mouth is None else np.asarray(mouth, np.float64)
        feats = self.opening[:, None, None] + 0.05 * rng.standard_normal((n, window, feature_dim))
        self._features = torch.tensor(feats, dtype=torch.float32)
        self.tracks = {
            "eye": (0.5 + 0.5 * torch.sin(torch.arange(n) / 3)).float(),
            "lip_boxes": torch.tensor([size * 0.4, size * 0.5, size * 0.6, size * 0.6]).repeat(n, 1),
            "viewmats": viewmats,
        }
        self.background = torch.tensor([0.2, 0.3, 0.4]).expand(size, size, 3).clone()
        self.feature_meta = {"kind": "synthetic", "dim": feature_dim, "window": window}

    def audio_features(self, k=None):
        return self._features if k is None else self._features[k]

    def _draw(self, i):
        s = self.size[0]
        yy, xx = np.mgrid[0:s, 0:s] + 0.5
        cx = s / 2 + float(self.K[0, 0] * self.viewmats[i, 0, 3] / 6.0)
        head = (xx - cx) ** 2 + (yy - s * 0.45) ** 2 < (s * 0.22) ** 2
        torso = (yy > s * 0.7) & (np.abs(xx - s / 2) < s * 0.35) & ~head
        img = self.background.numpy().copy()
        img[torso] = [0.8, 0.2, 0.2]
        img[head] = [0.9, 0.75, 0.6]
        mouth = head & (np.abs(xx - cx) < s * 0.08) & (np.abs(yy - s * 0.53) < s * 0.01 + s * 0.04 * self.opening[i])
        img[mouth] = [0.3, 0.05, 0.05]
        return img, head, torso

    def frame(self, i):
        return torch.tensor(self._draw(i)[0], dtype=torch.float32)

    def masks(self, i):
        _, head, torso = self._draw(i)
        return torch.tensor(np.stack([head, torso, ~(head | torso)], -1), dtype=torch.float32)


def tiny_mel_model(folder):
    """A model file fitted for 20 iterations on a 32 px synthetic clip with mel-sized features
    (80): for tests of speak, stream and serve, which need a model, not a good one."""
    from gstalker.train import FitSettings, Trainer, TrainData

    clip = SyntheticClip(n=30, size=32, feature_dim=80)
    s = FitSettings.from_preset("smoke", size=32, lpips="off", iters=20)
    s.schedule.update(n_head=200, n_torso=100, preview_every=0, log2_table_size=8)
    t = Trainer(TrainData(clip, torch.device("cpu")), s, {"kind": "mel", "dim": 80, "window": 16}, folder)
    for _ in range(20):
        t.step()
    t.model.set_mouth_gain(t.mean_code(), 1.0)  # as run_training does at its end
    return t.model.save(folder / "subject.safetensors", {"iterations": 20})
