"""The whole talking-head model: head and torso Gaussians, the audio smoother, both deformation
fields, and what playback needs (background, intrinsics, torso camera, training poses and eyes).

One `TalkerModel.render(code, viewmat, eye)` call makes one frame: deform the head Gaussians by
audio and eye, render them with the frame's head pose; deform the torso Gaussians by the head
pose, render them with the fixed torso camera; composite head over torso over the background.
Training and inference (the user-facing `Talker` in speak.py) both go through it, and `save` /
`TalkerModel.load` write and read the one-file model (docs/conventions.md, "Files").
"""

from __future__ import annotations

import copy
from pathlib import Path

import torch
from torch import nn

from . import __version__
from .kernels import rasterize
from .model import AudioSmoother, Deltas, FaceDeformation, GaussianModel, Gaussians, TorsoDeformation, region_weight
from .errors import ModelFileError, first_line
from .serialization import load_file, save_file

DEFAULT_CONFIG = {
    "channels": 3,
    "code_dim": 32,
    "att_window": 8,
    "face": {"hidden": 64, "n_hidden_layers": 2},
    # 2 pose frequencies, not the method's 6: a held-out pose then lands between training poses' features
    # (torso 1.14-1.23 -> 1.04-1.06 px off the body held out, over 3 and 2 cpu seeds; docs/benchmarks.md)
    "torso": {"hidden": 64, "n_hidden_layers": 2, "pose_freqs": 2},
    "encoder": {"n_levels": 14, "n_features": 1, "base_resolution": 64, "finest_resolution": 512, "log2_table_size": 14},
    # canonical head space: the head fits in [-1, 1]^3 (preprocessing's unit is the face width)
    "head_bounds": [[-1.5, -1.5, -1.5], [1.5, 1.5, 1.5]],
}


def project_points(points: torch.Tensor, viewmats: torch.Tensor, K: torch.Tensor) -> torch.Tensor:
    """Pinhole projection (docs/conventions.md: world-to-camera viewmats, OpenCV axes) of points
    [B, P, 3] in world space, each batch row with its own viewmat [B, 4, 4]; K [3, 3] -> pixels
    [B, P, 2]."""
    cam = points @ viewmats[:, :3, :3].transpose(1, 2) + viewmats[:, None, :3, 3]
    return cam[..., :2] / cam[..., 2:].clamp_min(1e-3) * K[[0, 1], [0, 1]] + K[:2, 2]


class TalkerModel(nn.Module):
    """All learnable parts and the fixed playback data of one subject.

    config: DEFAULT_CONFIG merged with "size" [H, W], "audio" {kind, dim, window, ...} and
    "torso_bounds" [[x0, y0, z0], [x1, y1, z1]] (torso space is the mean head pose's space).
    Buffers: K [3, 3], torso_viewmat [4, 4], background [H, W, 3], poses [P, 4, 4], eyes [P].
    """

    def __init__(self, config: dict, gaussians: GaussianModel, K, torso_viewmat, background, poses, eyes):
        super().__init__()
        self.config = copy.deepcopy(config)
        enc = config["encoder"]
        self.gaussians = gaussians
        self.smoother = AudioSmoother(config["audio"]["dim"], config["code_dim"], config["att_window"])
        hb = config["head_bounds"]
        self.face = FaceDeformation(audio_dim=config["code_dim"], eye_dim=1, bound_min=hb[0], bound_max=hb[1],
                                    **config["face"], **enc)
        tb = config["torso_bounds"]
        self.torso = TorsoDeformation(bound_min=tb[0], bound_max=tb[1], **config["torso"], **enc)
        self.register_buffer("K", torch.as_tensor(K, dtype=torch.float32).clone())
        self.register_buffer("torso_viewmat", torch.as_tensor(torso_viewmat, dtype=torch.float32).clone())
        self.register_buffer("background", torch.as_tensor(background, dtype=torch.float32).clone())
        self.register_buffer("poses", torch.as_tensor(poses, dtype=torch.float32).clone())
        self.register_buffer("eyes", torch.as_tensor(eyes, dtype=torch.float32).clone())
        dim = config["audio"]["dim"]
        self.register_buffer("audio_mean", torch.zeros(dim))
        self.register_buffer("audio_std", torch.ones(dim))
        # the training speech's mean feature frame (`streaming.speech_feature_mean`) and how many
        # frames it averages; 0 frames: none stored (files before format 3, non-mel features),
        # speech-mean normalisation off
        self.register_buffer("speech_mean", torch.zeros(dim))
        self.register_buffer("speech_mean_frames", torch.zeros((), dtype=torch.int64))
        # the training frames' mean audio code: `mouth_gain` scales the face's motion about the shape
        # it gives (set with config["mouth_gain"] by `set_mouth_gain`; files before format 4 have neither)
        self.register_buffer("code_mean", torch.zeros(config["code_dim"]))
        self.torso.fit_pose_normalization(self.poses)

    @property
    def height(self) -> int:
        return int(self.config["size"][0])

    @property
    def width(self) -> int:
        return int(self.config["size"][1])

    @property
    def device(self) -> torch.device:
        return self.K.device

    @torch.no_grad()
    def resize_(self, width: int, height: int) -> "TalkerModel":
        """Render at width x height from now on: the intrinsics scale with the image (the same
        view, more or fewer pixels) and the background image is resampled."""
        sx, sy = width / self.width, height / self.height
        self.K[0] *= sx
        self.K[1] *= sy
        bg = self.background.permute(2, 0, 1)[None]
        bg = torch.nn.functional.interpolate(bg, size=(height, width), mode="bilinear", antialias=True, align_corners=False)
        self.background = bg[0].permute(1, 2, 0).contiguous()
        self.config["size"] = [height, width]
        return self

    @torch.no_grad()
    def inference_cache(self, backend: str = "auto") -> dict:
        """What does not change from frame to frame once training is over: the deformation fields'
        spatial first layers ([N, hidden] each). Pass it to `render` to skip the hash grids."""
        g = self.gaussians
        return {"face": self.face.spatial_hidden(g.head.means, backend),
                "torso": self.torso.spatial_hidden(g.torso.means, backend), "face_weight": self.face_weight()}

    def face_weight(self) -> torch.Tensor | None:
        """[N_head, 1] how much each head Gaussian may deform (config "deform_regions": the lower face
        and the eyes, `gstalker.preprocess.eyelip.deform_regions`); None: everywhere (models
        trained before the regions, and clips without a face template)."""
        regions = self.config.get("deform_regions")
        if not regions:
            return None
        return region_weight(self.gaussians.head.means.detach(), regions)

    def deform(self, code: torch.Tensor | None, viewmat: torch.Tensor, eye, cache: dict | None = None,
               backend: str = "auto", mouth_gain: float = 1.0):
        """The frame's Gaussians: (head, torso) keyword arguments for `rasterize`, the head deformed
        by the audio code and eye, the torso by the head pose. code None: the static Gaussians.
        `backend` runs the hash grids (the rasterizer gets its own in `rasterize`).

        mouth_gain (inference only; 1: as trained): the head's deltas become
        deltas(code_mean) + mouth_gain * (deltas(code) - deltas(code_mean)), the same eye in both,
        so the audio's motion of the face grows about the mean training code's face and the eyes'
        motion is untouched (docs/training.md, "Mouth gain")."""
        g = self.gaussians
        if code is None:
            return g.head.render_args(), g.torso.render_args()
        cache = cache or {}
        means = g.head.means.detach() if self.config.get("detach_deform_input", False) else g.head.means
        eye = torch.as_tensor(eye, device=self.device).reshape(1)
        head_deltas = self.face(means, code, eye, spatial_hidden=cache.get("face"), backend=backend)
        if mouth_gain != 1.0:
            rest = self.face(means, self.code_mean, eye, spatial_hidden=cache.get("face"), backend=backend)
            head_deltas = Deltas(*(r + mouth_gain * (d - r) for d, r in zip(head_deltas, rest)))
        weight = cache["face_weight"] if "face_weight" in cache else self.face_weight()
        if weight is not None:
            head_deltas = Deltas(*(d * weight for d in head_deltas))
        torso_deltas = self.torso(g.torso.means, viewmat, spatial_hidden=cache.get("torso"), backend=backend)
        return g.head.render_args(head_deltas), g.torso.render_args(torso_deltas)

    def deform_points(self, points: torch.Tensor, codes: torch.Tensor, eyes: torch.Tensor,
                      backend: str = "auto") -> torch.Tensor:
        """Canonical points [P, 3] moved by the face field as `deform` moves the head Gaussians (the
        deformation regions included), once for each of B frames: codes [B, code_dim], eyes [B]
        -> [B, P, 3]."""
        B, P = codes.shape[0], points.shape[0]
        hidden = self.face.spatial_hidden(points, backend)  # the same for every frame
        deltas = self.face(points.repeat(B, 1), codes.repeat_interleave(P, 0), eyes.reshape(B, 1).repeat_interleave(P, 0),
                           spatial_hidden=hidden.repeat(B, 1))
        regions = self.config.get("deform_regions")
        weight = region_weight(points, regions).repeat(B, 1) if regions else 1.0
        return (points.repeat(B, 1) + deltas.means * weight).view(B, P, 3)

    def rasterize(self, head: dict, torso: dict, viewmat: torch.Tensor, K: torch.Tensor | None = None,
                  width: int | None = None, height: int | None = None, background: torch.Tensor | None = None,
                  backend: str = "auto") -> dict:
        """Render deformed Gaussians (`deform`) with the head pose `viewmat` and composite head over
        torso over the background. K, width, height, background: another view of the same frame
        (the trainer's high-resolution mouth patch); default the model's own camera and image.

        Returns a dict: image [H, W, 3]; head_rgb, torso_rgb [H, W, 3] (premultiplied) and
        head_alpha, torso_alpha [H, W, 1]; head_meta, torso_meta (the rasterizer's meta, for
        densification)."""
        K = self.K if K is None else K
        W, H = (self.width, self.height) if width is None else (width, height)
        background = self.background if background is None else background
        head_rgb, head_alpha, head_meta = rasterize(**head, viewmat=viewmat, K=K, width=W, height=H, backend=backend,
                                                    check=False)
        torso_rgb, torso_alpha, torso_meta = rasterize(**torso, viewmat=self.torso_viewmat, K=K, width=W, height=H,
                                                       backend=backend, check=False)
        behind = torso_rgb + (1 - torso_alpha) * background
        image = head_rgb + (1 - head_alpha) * behind
        return {"image": image, "head_rgb": head_rgb, "head_alpha": head_alpha, "torso_rgb": torso_rgb,
                "torso_alpha": torso_alpha, "head_meta": head_meta, "torso_meta": torso_meta}

    def render(self, code: torch.Tensor | None, viewmat: torch.Tensor, eye, deform: bool = True,
               backend: str = "auto", cache: dict | None = None, mouth_gain: float = 1.0) -> dict:
        """One frame. code: [code_dim] smoothed audio code (None with deform=False), viewmat: [4, 4]
        head pose, eye: scalar eye openness, cache: `inference_cache()` and mouth_gain (`deform`):
        inference only. Returns `rasterize`'s dict."""
        head, torso = self.deform(code if deform else None, viewmat, eye, cache, backend=backend, mouth_gain=mouth_gain)
        return self.rasterize(head, torso, viewmat, backend=backend)

    def normalize_audio(self, windows: torch.Tensor) -> torch.Tensor:
        """Audio windows [..., W, D] as the training clip's per-dimension statistics standardise
        them (`audio_mean`, `audio_std` [D]: identity for models from before they were stored)."""
        return (windows.to(self.audio_mean.device) - self.audio_mean) / self.audio_std

    def trained_speech_mean(self) -> torch.Tensor | None:
        """The training speech's mean feature frame [D] (`speech_mean`), or None when the model
        has none: what `streaming.CodeStream` moves a new speech's windows towards."""
        return self.speech_mean if int(self.speech_mean_frames) > 0 else None

    @torch.no_grad()
    def set_speech_mean(self, mean: torch.Tensor | None, frames: int = 0) -> None:
        """Store the training speech's mean feature frame [D] over `frames` speech frames (None or
        0 frames: none, the normalisation off)."""
        if mean is None or frames <= 0:
            self.speech_mean.zero_()
            self.speech_mean_frames.zero_()
        else:
            self.speech_mean.copy_(torch.as_tensor(mean, dtype=torch.float32))
            self.speech_mean_frames.fill_(int(frames))

    @property
    def mouth_gain(self) -> float | None:
        """The gain `fit` chose for this model's mouth at speak time (its preset's), or None for files
        from before format 4, which hold no mean code to scale about."""
        gain = self.config.get("mouth_gain")
        return None if gain is None else float(gain)

    @torch.no_grad()
    def set_mouth_gain(self, code_mean: torch.Tensor, gain: float) -> None:
        """Store the training frames' mean audio code [code_dim] and the default `mouth_gain`."""
        self.code_mean.copy_(torch.as_tensor(code_mean, dtype=torch.float32))
        self.config["mouth_gain"] = float(gain)

    def codes(self, windows: torch.Tensor, smooth: bool = True) -> torch.Tensor:
        """Audio windows [T, W, D] of consecutive frames -> smoothed codes [T, code_dim]."""
        return self.smoother.forward_sequence(self.normalize_audio(windows), smooth=smooth)

    # ------------------------------------------------------------------ the one-file model

    def save(self, path: str | Path, summary: dict | None = None) -> Path:
        """Write the model file (atomically): tensors plus the JSON header."""
        meta = {
            "kind": "model",
            "gstalker_version": __version__,
            "config": self.config,
            "audio_features": self.config["audio"],
            "intrinsics": {"fx": float(self.K[0, 0]), "fy": float(self.K[1, 1]), "cx": float(self.K[0, 2]), "cy": float(self.K[1, 2])},
            "size": list(self.config["size"]),
            "poses_shape": list(self.poses.shape),
            "num_gaussians": {"head": len(self.gaussians.head), "torso": len(self.gaussians.torso)},
            "summary": summary or {},
        }
        return save_file(path, self.state_dict(), meta)

    @classmethod
    def from_state(cls, tensors: dict, config: dict) -> "TalkerModel":
        """Rebuild from a state dict and its config (Gaussian counts come from the tensors)."""
        sets = {}
        for part in ("head", "torso"):
            rows = {name: tensors[f"gaussians.{part}.{name}"] for name in
                    ("means", "log_scales", "quats", "opacity_logits", "color_logits")}
            sets[part] = Gaussians(**rows)
        model = cls(config, GaussianModel(sets["head"], sets["torso"]), tensors["K"], tensors["torso_viewmat"],
                    tensors["background"], tensors["poses"], tensors["eyes"])
        # format 1 files hold no audio statistics, format 2 no speech_mean, format 3 no code_mean:
        # those keep their defaults
        missing = {"audio_mean", "audio_std", "speech_mean", "speech_mean_frames", "code_mean"} - tensors.keys()
        model.load_state_dict(tensors, strict=not missing)
        return model

    @classmethod
    def load(cls, path: str | Path, device: str | torch.device = "cpu") -> tuple["TalkerModel", dict]:
        """Read a model file: (model on `device`, its JSON header)."""
        tensors, meta = load_file(path, kind="model")
        if meta.get("kind") != "model" or "config" not in meta:
            raise ModelFileError(f"{path} is a gstalker file but not a model (a training checkpoint?): "
                                 "give the .safetensors that `gstalker fit` wrote")
        try:
            model = cls.from_state(tensors, meta["config"])
        except (KeyError, RuntimeError, ValueError) as e:
            raise ModelFileError(f"{path}: the model's tensors do not match its config ({first_line(e, 120)})") from None
        return model.to(device), meta
