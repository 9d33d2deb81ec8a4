"""Training: a preprocessed video -> a `TalkerModel`, in two stages (docs/method.md, "Training").

1. Static: head Gaussians (random in the canonical cube) rendered with each frame's head pose,
   torso Gaussians with the fixed torso camera, no deformation; L1 + mask loss; 3DGS density
   control from the view-space gradients of `meta["means2d"]`.
2. Deformation: Gaussians, tri-plane encoders, audio smoother and deformation MLPs together;
   L1 + l1 * mask + l2 * LPIPS (face box) + l3 * L1 on the lip box.

Everything that decides the next step (parameters, optimiser moments, densification
statistics, step, stage, random generators) is in the checkpoint, so a resumed run on the CPU
continues bit for bit. On a GPU the kernels' atomic adds make runs close, not identical.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .errors import GstalkerError
from .data import FPS, SAMPLES_PER_FRAME, check_frame_size
from .metrics import (EYE_CORNERS, LOWER_LIP, MOUTH_CORNERS, UPPER_LIP, Lpips, box_slices, mouth_opening_ratio,
                      mouth_width_ratio, psnr)
from .model import GaussianModel, Gaussians, neighbour_index
from .preprocess.eyelip import SPEECH_POINTS, deform_regions
from .progress import Progress
from .serialization import load_file, load_optimizer_state, optimizer_state, save_file
from .talker import DEFAULT_CONFIG, TalkerModel, project_points

PRESETS = {
    # a few minutes on a 2-core CPU for a 15 s clip: for tests, examples and trying the tool
    "smoke": dict(size=128, static_iters=300, deform_iters=300, n_head=2000, n_torso=1500, max_gaussians=6000,
                  densify_every=100, opacity_reset_every=0, preview_every=200, log2_table_size=12, mouth_weight=0.0),
    # two CPU cores, a 60-90 s clip (target: 45 minutes of `fit`; docs/benchmarks.md): 128 px frames,
    # the mouth learned from a 96 px patch of preprocessing's high-resolution crops (docs/training.md)
    # (mouth_steps=3 with 1000 full deformation steps was measured and fitted the mouth worse; landmark_weight=1
    # fitted the training mouth far better and synced worse with foreign speech; the mouth-shape term lifted the
    # training-frame mouth fit r 0.28 -> 0.85 and held-out lip_corr 0.24 -> 0.40/0.68 over two seeds;
    # the field-mouth term, against the preset on the same machine, four seeds: held-out lip_corr 0.49 -> 0.54 and
    # cross-driven av_sync 0.27 -> 0.30 on average (each up on three seeds), the mouth's motion either way: docs/benchmarks.md)
    "cpu": dict(size=128, static_iters=1000, deform_iters=2000, n_head=2000, n_torso=1500, max_gaussians=8000,
                densify_every=100, opacity_reset_every=0, preview_every=500, log2_table_size=14,
                mouth_weight=1.0, mouth_px=96, mouth_steps=0, landmark_weight=0.0, landmark_batch=16,
                audio_augment=0.0, mouth_shape_weight=0.1, mouth_shape_pretrain=1500, mouth_shape_batch=64,
                field_mouth_weight=0.1),
    # the default on a CUDA GPU: what about 15 minutes on an RTX 3090-class GPU allows (the mouth-shape term as in
    # `cpu`: on an H200, 4,745 iterations of the interview clip, held-out lip_corr 0.34 -> 0.46, mouth motion 40% ->
    # 71% of the real one; without it 12,974 iterations fell to 0.14: docs/benchmarks.md)
    "fast": dict(size=512, static_iters=3000, deform_iters=30000, n_head=10000, n_torso=10000, max_gaussians=150000,
                 densify_every=100, opacity_reset_every=3000, preview_every=2500, log2_table_size=14,
                 mouth_weight=1.0, mouth_px=128, mouth_shape_weight=0.1, mouth_shape_pretrain=1500, mouth_shape_batch=64),
    # the paper's schedule
    "paper": dict(size=512, static_iters=10000, deform_iters=100000, n_head=10000, n_torso=10000, max_gaussians=300000,
                  densify_every=100, opacity_reset_every=3000, preview_every=5000, log2_table_size=14,
                  mouth_weight=1.0, mouth_px=128),
}

# the mouth gain `fit` stores in the model for `speak` (TalkerModel.deform; 1 where unmeasured): not a
# training setting, so a checkpoint resumes across a change of it. cpu: a code read off speech the model has
# not heard carries about 0.7 of the mouth's amplitude (docs/benchmarks.md, "Where the mouth's amplitude is
# lost"); 1.5 gives most of it back (four seeds at 1, 1.3 and 1.5: docs/benchmarks.md, "The mouth gain")
SPEAK_MOUTH_GAIN = {"cpu": 1.5}


def default_preset(device: torch.device) -> str:
    """`fit` without --preset: `fast` on a CUDA GPU, `cpu` elsewhere (fast would run for days)."""
    return "fast" if device.type == "cuda" else "cpu"

# Gaussian learning rates (3DGS's, for logit colours); `means` is scaled by the scene extent and decays 100x
GAUSSIAN_LR = {"means": 1.6e-4, "log_scales": 5e-3, "quats": 1e-3, "opacity_logits": 5e-2, "color_logits": 1e-2}
# The paper gives 5e-3 for the hash grids and 1.6e-5 for the MLP; 1.6e-5 barely moves the MLP in a
# short schedule, so the MLPs and the audio smoother get 5e-4.
NETWORK_LR = {"tables": 5e-3, "other": 5e-4}
NETWORK_LR_FINAL = 0.1  # share of the network learning rates left at the end of the run
LOSS_WEIGHTS = {"mask": 0.1, "lpips": 0.05, "lip": 0.5}
CHECKPOINT = "checkpoint.safetensors"
HISTORY_FLUSH = 25  # steps between read-backs of the loss history (one host sync each)


@dataclass
class FitSettings:
    """What a run was started with; a resume must match these (but for `resume` itself)."""

    preset: str = "fast"
    size: int = 512
    static_iters: int = 3000
    deform_iters: int = 30000
    audio_features: str = "mel"
    seed: int = 0
    lpips: str = "on"
    schedule: dict = field(default_factory=dict)

    @classmethod
    def from_preset(cls, preset: str, iters: int | None = None, size: int | None = None, **kw) -> "FitSettings":
        if preset not in PRESETS:
            raise GstalkerError(f"--preset must be one of {', '.join(PRESETS)}, got {preset!r}")
        sched = dict(PRESETS[preset])
        static, deform = sched.pop("static_iters"), sched.pop("deform_iters")
        if iters is not None:
            if iters < 2:
                raise GstalkerError(f"--iters must be at least 2, got {iters}")
            static = max(1, round(iters * static / (static + deform)))
            deform = iters - static
        size = check_frame_size(size or sched.pop("size"))
        sched.pop("size", None)
        return cls(preset=preset, size=size, static_iters=static, deform_iters=deform, schedule=sched, **kw)


def augment_audio(windows: torch.Tensor, strength: float, generator: torch.Generator) -> torch.Tensor:
    """Standardised audio windows [B, A, W, D] as another recording of the same speech might give
    them: per sample, an offset per feature dimension (another voice, microphone or room: the
    media's other speakers sit 0.23-0.37 rms per dimension off the interview's statistics) and a
    scale; per value, noise. strength 1: offset std 0.3, scale 1 +- 0.15, noise std 0.2. The
    draw is on the CPU generator (a resumed run draws the same) and shared by a sample's
    neighbour windows (one recording). Without it the code learns each training frame's exact
    window and the mouth it goes with, which another speaker's speech never reproduces."""
    B, D = windows.shape[0], windows.shape[-1]
    offset = 0.3 * strength * torch.randn(B, 1, 1, D, generator=generator)
    scale = 1 + 0.15 * strength * (2 * torch.rand(B, 1, 1, 1, generator=generator) - 1)
    noise = 0.2 * strength * torch.randn(windows.shape, generator=generator)
    dev = windows.device
    return windows * scale.to(dev) + offset.to(dev) + noise.to(dev)


class TrainData:
    """A preprocessed clip held for training (`gstalker.data.PreprocessedVideo`, split "all"):
    frames and masks cached as uint8 on the training device when they fit, poses, eyes, lip
    boxes and audio windows. `train_ids`: frames before the held-out tail; `val_ids`: the tail."""

    def __init__(self, video, device: torch.device):
        self.video = video
        n = video.num_frames
        self.num_frames = n
        self.val_start = video.val_start
        self.height, self.width = video.size
        self.K = torch.as_tensor(video.K, dtype=torch.float32, device=device)
        self.viewmats = torch.as_tensor(video.viewmats, dtype=torch.float32, device=device)
        self.eyes = torch.as_tensor(video.tracks["eye"], dtype=torch.float32, device=device)
        self.lip_boxes = torch.as_tensor(video.tracks["lip_boxes"], dtype=torch.float32)
        template = video.tracks.get("template") if hasattr(video, "tracks") else None
        self.template = None if template is None or tuple(template.shape) != (478, 3) else np.asarray(template)
        # tracked face-mesh points [n, 478, 2] in frame pixels: the landmark term's targets
        landmarks = video.tracks.get("landmarks") if self.template is not None else None
        self.landmarks = None if landmarks is None else torch.as_tensor(landmarks, dtype=torch.float32, device=device)
        self.mouth_shape, self.mouth_shape_ids, self.mouth_shape_std = self._mouth_shape(video, device)
        self.audio = torch.as_tensor(video.audio_features(), dtype=torch.float32, device=device)
        self.background = torch.as_tensor(video.background, dtype=torch.float32, device=device)
        self.train_ids, self.val_ids = video.train_ids, video.heldout_ids
        self.device = device
        # frames preprocessing moved the sound by (its audio-video sync); folders from before it: as recorded
        sync = (getattr(video, "meta", None) or {}).get("av_offset") or {}
        self.av_offset_frames = int(sync.get("offset_frames", 0))
        # per-dimension statistics of the training frames' audio features: the model standardises
        # every input with them, at training and at speak time
        train_audio = self.audio[self.train_ids.to(self.audio.device)]
        self.audio_mean = train_audio.mean(dim=(0, 1))
        self.audio_std = train_audio.std(dim=(0, 1)).clamp_min(1e-3)
        self.speech_mean, self.speech_mean_frames = self._speech_mean(video)
        # high-resolution mouth crops (preprocess.mouth), when preprocessing kept them
        boxes = video.tracks.get("mouth_boxes") if hasattr(video, "tracks") else None
        self.mouth_boxes = None if boxes is None or len(boxes) != n else torch.as_tensor(boxes, dtype=torch.float32)
        self._mouth_cache: dict[int, torch.Tensor] = {}
        self._cache: dict[int, torch.Tensor] = {}
        budget = 6 * 2**30 if device.type == "cuda" else 3 * 2**30
        self._keep = n * self.height * self.width * 5 <= budget

    @staticmethod
    def _speech_mean(video) -> tuple[torch.Tensor | None, int]:
        """The training span's mean speech feature frame [80] and the frames it averages
        (`streaming.speech_feature_mean`, on the clip's 16 kHz audio up to the held-out tail), for
        the model's speech-mean normalisation; (None, 0) for non-mel features or a clip without
        its audio file."""
        meta = getattr(video, "meta", {})
        audio = meta.get("files", {}).get("audio")
        workdir = getattr(video, "workdir", None)
        if meta.get("audio_features", {}).get("kind") != "mel" or audio is None or workdir is None:
            return None, 0
        from .audio import load_audio
        from .streaming import speech_feature_mean

        wave = load_audio(Path(workdir) / audio)[:video.val_start * SAMPLES_PER_FRAME]
        mean, frames = speech_feature_mean(wave)
        return (torch.as_tensor(mean), frames) if frames else (None, 0)

    @staticmethod
    def _mouth_shape(video, device):
        """The tracked mouth's opening and width over the eye distance, standardised over the
        training frames: ([n, 2] float32 on `device`, the training frames with a tracked mouth
        [M] int64, the two ratios' standard deviations over those frames [2] float32), or
        (None, None, None) without landmarks."""
        landmarks = getattr(video, "tracks", {}).get("landmarks")
        if landmarks is None:
            return None, None, None
        landmarks = np.asarray(landmarks, dtype=np.float64)
        shape = np.stack([mouth_opening_ratio(landmarks), mouth_width_ratio(landmarks)], -1)
        ids = np.asarray(video.train_ids)
        ids = ids[np.isfinite(shape[ids]).all(-1)]
        if len(ids) < 2:
            return None, None, None
        std = np.maximum(shape[ids].std(0), 1e-6)
        shape = (shape - shape[ids].mean(0)) / std
        return (torch.as_tensor(np.nan_to_num(shape), dtype=torch.float32, device=device),
                torch.as_tensor(ids, dtype=torch.long), torch.as_tensor(std, dtype=torch.float32, device=device))

    def eye_distance(self, frames: torch.Tensor) -> torch.Tensor:
        """The tracked eye-corner distance (33-263) of `frames` [B] long, in frame pixels and at
        least 1: [B] float32, the unit the landmark and field-mouth terms measure lips in."""
        tracked = self.landmarks[frames]
        return (tracked[:, EYE_CORNERS[0]] - tracked[:, EYE_CORNERS[1]]).norm(dim=-1).clamp_min(1.0)

    def frame(self, i: int):
        """(image [H, W, 3] float, head mask [H, W, 1], torso mask [H, W, 1]) of frame i."""
        item = self._cache.get(i)
        if item is None:
            rgbm = torch.cat([self.video.frame(i), self.video.masks(i)[..., :2]], dim=-1)
            item = (rgbm * 255).round().to(torch.uint8).to(self.device)
            if self._keep:
                self._cache[i] = item
        x = item.float() / 255
        return x[..., :3], x[..., 3:4], x[..., 4:5]

    def mouth(self, i: int, px: int):
        """Frame i's mouth box at px x px: (crop [px, px, 3], head mask [px, px, 1]), floats in
        [0, 1]; the crop from preprocessing's high-resolution mouth crops, the mask resampled
        from the frame's head mask. Cached as uint8."""
        item = self._mouth_cache.get(i)
        if item is None:
            crop = self.video.mouth(i).permute(2, 0, 1)[None]
            if crop.shape[-1] != px:
                crop = F.interpolate(crop, size=(px, px), mode="bilinear", antialias=True, align_corners=False)
            box = self.mouth_boxes[i]
            t = (torch.arange(px) + 0.5) / px
            u = (box[0] + t * (box[2] - box[0])) / self.width * 2 - 1
            v = (box[1] + t * (box[3] - box[1])) / self.height * 2 - 1
            grid = torch.stack(torch.meshgrid(v, u, indexing="ij")[::-1], -1)[None]
            head = self.frame(i)[1].cpu().permute(2, 0, 1)[None]
            head = F.grid_sample(head, grid, align_corners=False)
            item = (torch.cat([crop, head], 1)[0].permute(1, 2, 0) * 255).round().to(torch.uint8).to(self.device)
            self._mouth_cache[i] = item
        x = item.float() / 255
        return x[..., :3], x[..., 3:4]

    def windows(self, frames: int | torch.Tensor, att_window: int) -> torch.Tensor:
        """Audio windows of the attention neighbours of frame `frames` ([1, A, W, D]) or of each
        of a batch of frames (a LongTensor [B] on the audio's device: [B, A, W, D])."""
        if getattr(self, "_neighbours", None) is None or self._neighbours.shape[1] != att_window:
            # every frame's neighbours, on the device once: a per-step host-to-device copy of the
            # indices would wait for the GPU
            self._neighbours = neighbour_index(torch.arange(self.num_frames), self.num_frames, att_window).to(
                self.audio.device)
        return self.audio[self._neighbours[frames:frames + 1] if isinstance(frames, int) else self._neighbours[frames]]


def torso_space(viewmats: torch.Tensor, K: torch.Tensor, width: int, height: int):
    """The torso camera (the mean head pose) and a box in its space that the torso fills.

    viewmats: [N, 4, 4]. Returns (torso_viewmat [4, 4], bounds [[x0, y0, z0], [x1, y1, z1]]).
    Canonical head units are face widths and y points down, so the torso lies at y > 0.5.
    """
    U, _, Vh = torch.linalg.svd(viewmats[:, :3, :3].mean(0))
    R = U @ Vh
    if torch.det(R) < 0:
        U = U.clone()
        U[:, -1] = -U[:, -1]
        R = U @ Vh
    view = torch.eye(4, device=viewmats.device)
    view[:3, :3] = R
    view[:3, 3] = viewmats[:, :3, 3].mean(0)
    depth = float(view[2, 3])
    half_w = (width / 2) / float(K[0, 0]) * depth * 1.2
    bottom = (height - float(K[1, 2])) / float(K[1, 1]) * depth * 1.2
    return view, [[-half_w, 0.3, -1.0], [half_w, max(bottom, 1.0), 1.5]]


@torch.no_grad()
def mean_color(data: TrainData, mask_channel: int, frames: int = 8) -> torch.Tensor:
    """Mean colour [3] under the head (1) or torso (2) mask over a few training frames."""
    ids = data.train_ids[torch.linspace(0, len(data.train_ids) - 1, frames).round().long()].tolist()
    total, weight = torch.zeros(3), torch.zeros(())
    for i in ids:
        f = data.frame(i)
        total += (f[0] * f[mask_channel]).sum((0, 1)).cpu()
        weight += f[mask_channel].sum().cpu()
    return total / weight.clamp_min(1)


def build_model(data: TrainData, settings: FitSettings, feature_meta: dict, generator: torch.Generator) -> TalkerModel:
    sched = settings.schedule
    view, bounds = torso_space(data.viewmats[data.train_ids.to(data.viewmats.device)], data.K, data.width, data.height)
    lo, hi = torch.tensor(bounds[0]), torch.tensor(bounds[1])
    head = Gaussians.random(sched["n_head"], 2.0, generator=generator)
    torso = Gaussians.random(sched["n_torso"], 1.0, center=(0.5, 0.5, 0.5), generator=generator)
    with torch.no_grad():
        torso.means.data = lo + torso.means.data * (hi - lo)
        torso.log_scales.data.fill_(math.log(0.5 * float((hi - lo).prod() / sched["n_torso"]) ** (1 / 3)))
    with torch.no_grad():  # start from the clip's mean head and torso colours rather than noise
        head.color_logits.data = torch.logit(mean_color(data, 1).clamp(0.05, 0.95)) + 0.1 * torch.randn(
            head.color_logits.shape, generator=generator)
        torso.color_logits.data = torch.logit(mean_color(data, 2).clamp(0.05, 0.95)) + 0.1 * torch.randn(
            torso.color_logits.shape, generator=generator)
    config = json.loads(json.dumps(DEFAULT_CONFIG))
    config["encoder"]["log2_table_size"] = sched["log2_table_size"]
    # the deformation field reads canonical positions without pushing them (Deformable 3D Gaussians)
    config.update(size=[data.height, data.width], audio=feature_meta, torso_bounds=bounds, detach_deform_input=True)
    if data.template is not None:  # audio and eye move the lower face and the eyes, nothing else
        config["deform_regions"] = deform_regions(data.template)
    model = TalkerModel(config, GaussianModel(head, torso), data.K, view, data.background,
                        data.viewmats[data.train_ids.to(data.viewmats.device)], data.eyes[data.train_ids.to(data.eyes.device)])
    model.audio_mean.copy_(data.audio_mean.cpu())
    model.audio_std.copy_(data.audio_std.cpu())
    model.set_speech_mean(data.speech_mean, data.speech_mean_frames)
    model.smoother.standardize_output_(model.normalize_audio(data.audio[data.train_ids.to(data.audio.device)].cpu()))
    return model.to(data.device)


class Trainer:
    """Holds the model, optimisers and generators; `step()` runs one iteration of the current stage."""

    def __init__(self, data: TrainData, settings: FitSettings, feature_meta: dict, workdir: Path,
                 backend: str = "auto", lpips_pretrained: bool = True):
        self.data, self.settings, self.workdir, self.backend = data, settings, Path(workdir), backend
        self.sched = settings.schedule
        self.gen = torch.Generator().manual_seed(settings.seed)
        torch.manual_seed(settings.seed)
        self.model = build_model(data, settings, feature_meta, self.gen)
        # reads the tracked mouth shape from the audio code (the mouth-shape term); trainer-only,
        # not part of the model file
        self.mouth_head = torch.nn.Linear(self.model.config["code_dim"], 2).to(data.device) \
            if self._mouth_shape_on else None
        self.head_extent, self.torso_extent = 2.0, float(
            (torch.tensor(self.model.config["torso_bounds"][1]) - torch.tensor(self.model.config["torso_bounds"][0])).max())
        self.gauss_opt = self._gaussian_optimizer()
        self.net_opt = self._network_optimizer()
        self.step_count = 0
        self._history: list[list[float]] = []  # [step, loss, psnr]
        self._pending: list[tuple[int, torch.Tensor, torch.Tensor]] = []  # not yet read back from the device
        self._ndc_scales: dict[tuple[int, int], torch.Tensor] = {}
        self.lpips = Lpips(data.device, settings.lpips, download=True, pretrained_backbone=lpips_pretrained)

    @property
    def _field_mouth_on(self) -> bool:
        return bool(self.sched.get("field_mouth_weight", 0)) and self.data.mouth_shape is not None \
            and self.data.landmarks is not None

    @property
    def _mouth_shape_on(self) -> bool:
        return self.data.mouth_shape is not None and bool(
            self.sched.get("mouth_shape_weight", 0) or self.sched.get("mouth_shape_pretrain", 0))

    @property
    def total_iters(self) -> int:
        return self.settings.static_iters + self.settings.deform_iters

    @property
    def stage(self) -> str:
        return "static" if self.step_count < self.settings.static_iters else "deform"

    def _gaussian_optimizer(self):
        g = self.model.gaussians
        groups = []
        for part, extent in (("head", self.head_extent), ("torso", self.torso_extent)):
            lr = dict(GAUSSIAN_LR, means=GAUSSIAN_LR["means"] * extent)
            groups += getattr(g, part).param_groups(lr, part + ".")
        for grp in groups:
            grp["initial_lr"] = grp["lr"]
        return torch.optim.Adam(groups, lr=1e-3, eps=1e-15)

    def _network_optimizer(self):
        tables, other, smoother = [], [], []
        # `smoother_lr` < 1: the audio smoother learns at that share of the network rate in the
        # deformation stage (its own group; the mouth-shape pretraining has its own optimiser)
        split = self.sched.get("smoother_lr", 1.0) != 1.0
        for name, p in self.model.named_parameters():
            if name.startswith("gaussians."):
                continue
            if name.endswith("encoder.tables"):
                tables.append(p)
            else:
                (smoother if split and name.startswith("smoother.") else other).append(p)
        if self.mouth_head is not None:
            other += list(self.mouth_head.parameters())
        groups = [{"params": tables, "lr": NETWORK_LR["tables"], "name": "tables"},
                  {"params": other, "lr": NETWORK_LR["other"], "name": "other"}]
        if smoother:
            groups.append({"params": smoother, "lr": NETWORK_LR["other"] * self.sched["smoother_lr"],
                           "name": "smoother"})
        return torch.optim.Adam(groups, eps=1e-15)

    def _update_lr(self):
        # means: exponential decay to 1% over the whole run (3DGS)
        t = min(1.0, self.step_count / max(1, self.total_iters))
        for grp in self.gauss_opt.param_groups:
            if grp["name"].endswith("means"):
                grp["lr"] = grp["initial_lr"] * math.exp(t * math.log(0.01))
        # networks: exponential decay to NETWORK_LR_FINAL of their rate over the deformation stage
        td = min(1.0, max(0, self.step_count - self.settings.static_iters) / max(1, self.settings.deform_iters))
        for grp in self.net_opt.param_groups:
            base = NETWORK_LR["other"] * self.sched["smoother_lr"] if grp["name"] == "smoother" else NETWORK_LR[grp["name"]]
            grp["lr"] = base * math.exp(td * math.log(NETWORK_LR_FINAL))

    def loss(self, i: int, out: dict, deform: bool, mouth: dict | None = None):
        """L1 + mask on the frame; in the deformation stage the lip term: L1 (and LPIPS when
        available) on the high-resolution mouth patch when there is one, else on the lip box."""
        image, head_mask, torso_mask = self.data.frame(i)
        l1 = (out["image"] - image).abs().mean()
        outside_head = 1 - head_mask
        mask = (out["head_alpha"] - head_mask).abs().mean() + \
            ((out["torso_alpha"] - torso_mask).abs() * outside_head).mean()
        loss = l1 + LOSS_WEIGHTS["mask"] * mask
        if mouth is not None:
            loss = loss + self.mouth_loss(i, mouth)
        elif deform:
            rows, cols = box_slices(self.data.lip_boxes[i], self.data.height, self.data.width)
            loss = loss + LOSS_WEIGHTS["lip"] * (out["image"][rows, cols] - image[rows, cols]).abs().mean()
            if self.lpips.net is not None:
                rows, cols = box_slices(self.data.lip_boxes[i], self.data.height, self.data.width, pad=2.0, min_size=32)
                loss = loss + LOSS_WEIGHTS["lpips"] * self.lpips(out["image"][rows, cols], image[rows, cols])
        return loss, image

    def codes(self, frames: int | torch.Tensor, augment: bool = True) -> torch.Tensor:
        """Smoothed audio codes of training frames (one index or a LongTensor [B]): [B, code_dim],
        from windows put through `augment_audio` when the schedule's `audio_augment` is set (and
        `augment`)."""
        windows = self.model.normalize_audio(self.data.windows(frames, self.model.smoother.att_window))
        if augment and self.sched.get("audio_augment", 0):
            windows = augment_audio(windows, self.sched["audio_augment"], self.gen)
        return self.model.smoother(windows)

    def code(self, i: int):
        return self.codes(i)[0]

    @torch.no_grad()
    def mean_code(self) -> torch.Tensor:
        """The training frames' mean audio code [code_dim], without augmentation: what `mouth_gain`
        scales the face's motion about."""
        chunks = self.data.train_ids.to(self.data.audio.device).split(256)
        return sum(self.codes(chunk, augment=False).sum(0) for chunk in chunks) / len(self.data.train_ids)

    def _mouth_shape_frames(self, frames: torch.Tensor | None) -> torch.Tensor:
        """`frames` [B] long, or `mouth_shape_batch` (64) random training frames with a tracked
        mouth (drawn from the trainer's generator), on the data's device."""
        if frames is None:
            ids = self.data.mouth_shape_ids
            frames = ids[torch.randint(len(ids), (self.sched.get("mouth_shape_batch", 64),), generator=self.gen)]
        return frames.to(self.data.mouth_shape.device)

    def mouth_shape_loss(self, frames: torch.Tensor | None = None) -> torch.Tensor:
        """The mouth-shape term: in `mouth_shape_batch` (64) random training frames, a linear
        read-out of the audio code against the tracked mouth's opening and width (standardised;
        mean squared error). It reaches only the audio smoother and the read-out. Rendering
        shows the audio path one frame's mouth per step, so the code learns each training
        frame's window rather than what speech does to the mouth; this term shows it many
        frames' mouths per step, through two numbers that speech sets and tracking noise
        barely moves, so the code carries mouth opening in a form that holds for speech it has
        not heard (and silence reads as a shut mouth). `frames` [B] long: those frames instead of
        a random batch (the generator untouched)."""
        frames = self._mouth_shape_frames(frames)
        return F.mse_loss(self.mouth_head(self.codes(frames)), self.data.mouth_shape[frames])

    def pretrain_mouth_shape(self, steps: int, on_step=None) -> float:
        """The mouth-shape term alone for `steps` updates of the audio smoother and the read-out
        (Adam, 1e-3), before the deformation stage: the face field then starts from a code that
        already carries the mouth. Returns the last loss."""
        params = list(self.model.smoother.parameters()) + list(self.mouth_head.parameters())
        opt = torch.optim.Adam(params, lr=1e-3)
        loss = torch.zeros(())
        for _ in range(steps):
            loss = self.mouth_shape_loss()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if on_step:
                on_step()
        return float(loss.detach())

    def field_mouth_loss(self, frames: torch.Tensor | None = None) -> torch.Tensor:
        """The field-mouth term: in `mouth_shape_batch` (64) random training frames, the face
        field's own mouth (the template's inner-lip points 13-14 and lip corners 61-291, moved
        with each frame's audio code and eye, projected with its pose) as opening and width over
        the tracked eye distance, against the tracked mouth's, both standardised by the tracked
        ratios' spread and centred over the batch (mean squared error). The code is detached:
        the term teaches the face field how far to move the lips for the code the mouth-shape
        term made, not the code to name frames (the landmark term's failure). Why: the code
        carries 68-76% of a held-out mouth's amplitude, the field's lips move about a third of
        the real ones' (docs/benchmarks.md, "Where the mouth's amplitude is lost"). `frames` [B]
        long: those frames instead of a random batch (the generator untouched)."""
        data, model = self.data, self.model
        frames = self._mouth_shape_frames(frames)
        index = [UPPER_LIP, LOWER_LIP, *MOUTH_CORNERS]
        points = torch.as_tensor(data.template[index], dtype=torch.float32, device=data.device)
        moved = model.deform_points(points, self.codes(frames).detach(), data.eyes[frames], backend=self.backend)
        uv = project_points(moved, data.viewmats[frames], data.K)  # [B, 4, 2]
        field = torch.stack([(uv[:, 0] - uv[:, 1]).norm(dim=-1), (uv[:, 2] - uv[:, 3]).norm(dim=-1)], -1)
        field = field / data.eye_distance(frames)[:, None] / data.mouth_shape_std  # [B, 2], in the tracked ratios' std
        target = data.mouth_shape[frames]
        return F.mse_loss(field - field.mean(0), target - target.mean(0))

    def landmark_loss(self) -> torch.Tensor:
        """The speech points' shape (`SPEECH_POINTS`: lips and chin) in `landmark_batch` random
        training frames: the rigid template's points, moved by the face deformation with each
        frame's audio code and eye, projected with its pose, against the tracked landmarks. Both
        point sets are centred, so pose-tracking error (a shift of the whole face) is no target;
        the error is in eye-corner distances. A full step sees one frame's mouth in a few pixels;
        this term gives the audio path many frames' lip shapes per step at almost no cost."""
        data, model = self.data, self.model
        frames = data.train_ids[torch.randint(len(data.train_ids), (self.sched.get("landmark_batch", 16),),
                                              generator=self.gen)]
        frames = frames.to(data.landmarks.device)
        tracked = data.landmarks[frames]  # [B, 478, 2]
        target = tracked[:, SPEECH_POINTS]  # [B, P, 2]
        ok = torch.isfinite(target).all(-1).all(-1)
        points = torch.as_tensor(data.template[SPEECH_POINTS], dtype=torch.float32, device=data.device)
        codes = self.codes(frames)  # [B, code_dim]
        moved = model.deform_points(points, codes, data.eyes[frames], backend=self.backend)  # [B, P, 3]
        uv = project_points(moved, data.viewmats[frames], data.K)
        scale = data.eye_distance(frames)  # [B]
        err = ((uv - uv.mean(1, keepdim=True)) - (target - target.mean(1, keepdim=True))).norm(dim=-1)  # [B, P]
        err = torch.where(ok[:, None], err / scale[:, None], torch.zeros_like(err))
        return err.sum() / (ok.sum() * len(SPEECH_POINTS)).clamp_min(1)

    def render_mouth(self, i: int, head: dict) -> dict | None:
        """The frame's deformed head Gaussians rendered onto its mouth box at `mouth_px` pixels a
        side (None when preprocessing kept no crops). Only the head: the loss is weighted by the
        head mask, so the torso (chin shadow, collar) need not be drawn here."""
        if self.data.mouth_boxes is None or not self.sched.get("mouth_weight", 0):
            return None
        from .kernels import rasterize
        from .preprocess.mouth import mouth_intrinsics

        px = self.sched.get("mouth_px", 96)
        K = mouth_intrinsics(self.data.K, self.data.mouth_boxes[i], px)
        rgb, alpha, meta = rasterize(**head, viewmat=self.data.viewmats[i], K=K, width=px, height=px, backend=self.backend,
                                     check=False)
        return {"image": rgb, "head_alpha": alpha, "head_meta": meta}

    def mouth_loss(self, i: int, mouth: dict) -> torch.Tensor:
        """The lip term on the high-resolution mouth patch: L1 weighted by the head mask (and
        LPIPS when available), times `mouth_weight`."""
        crop, head = self.data.mouth(i, mouth["image"].shape[0])
        loss = self.sched["mouth_weight"] * ((mouth["image"] - crop).abs() * head).sum() / (head.sum() * 3).clamp_min(1)
        if self.stage == "deform" and self.lpips.net is not None:
            loss = loss + LOSS_WEIGHTS["lpips"] * self.lpips(mouth["image"] * head, crop * head)
        return loss

    def _random_frame(self) -> int:
        """A training frame drawn with the trainer's generator (so a resumed run draws the same)."""
        ids = self.data.train_ids
        return int(ids[torch.randint(len(ids), (1,), generator=self.gen)])

    def mouth_step(self) -> None:
        """A deformation-only update on one random frame's mouth patch: the audio smoother, the
        face field and its hash tables learn from the lips at a third of a full step's cost (the
        torso, the whole frame and the Gaussians are left out). The deformation stage runs
        `mouth_steps` of these after each full step: the audio-to-mouth mapping needs many more
        updates than the Gaussians do."""
        i = self._random_frame()
        head, _ = self.model.deform(self.code(i), self.data.viewmats[i], self.data.eyes[i], backend=self.backend)
        loss = self.mouth_loss(i, self.render_mouth(i, head))
        self.net_opt.zero_grad(set_to_none=True)
        self.gauss_opt.zero_grad(set_to_none=True)
        loss.backward()
        self.net_opt.step()

    def step(self) -> None:
        """One iteration (in the deformation stage followed by `mouth_steps` mouth-only updates).
        Its loss and PSNR land in `history` (read back from the device in batches, so a step on
        a GPU waits for nothing but the intersection buffers' sizes)."""
        deform = self.stage == "deform"
        with_mouth = self._full_step(deform)
        # only once the full step's graph is gone: densification may just have resized the
        # Gaussians, and a live graph keeps their old-sized gradient accumulators
        if deform and with_mouth:
            for _ in range(int(self.sched.get("mouth_steps", 0))):
                self.mouth_step()

    def _full_step(self, deform: bool) -> bool:
        """The whole frame (and the mouth patch when there is one): every part learns, density
        control runs. Returns whether a mouth patch was rendered."""
        i = self._random_frame()
        self._update_lr()
        code = self.code(i) if deform else None
        viewmat = self.data.viewmats[i]
        head, torso = self.model.deform(code, viewmat, self.data.eyes[i], backend=self.backend)
        out = self.model.rasterize(head, torso, viewmat, backend=self.backend)
        mouth = self.render_mouth(i, head)
        out["head_meta"]["means2d"].retain_grad()
        out["torso_meta"]["means2d"].retain_grad()
        if mouth is not None:
            mouth["head_meta"]["means2d"].retain_grad()
        loss, image = self.loss(i, out, deform, mouth)
        if deform and self.sched.get("landmark_weight", 0) and self.data.landmarks is not None:
            loss = loss + self.sched["landmark_weight"] * self.landmark_loss()
        if deform and self.mouth_head is not None and self.sched.get("mouth_shape_weight", 0):
            loss = loss + self.sched["mouth_shape_weight"] * self.mouth_shape_loss()
        if deform and self._field_mouth_on:
            loss = loss + self.sched["field_mouth_weight"] * self.field_mouth_loss()
        self.gauss_opt.zero_grad(set_to_none=True)
        self.net_opt.zero_grad(set_to_none=True)
        loss.backward()
        self._density_stats(out, (self.data.width, self.data.height))
        if mouth is not None:
            box = self.data.mouth_boxes[i]
            side = mouth["image"].shape[0]
            self._density_stats(mouth, (side, side), radius_scale=float(box[2] - box[0]) / side, parts=("head",))
        self.gauss_opt.step()
        if deform:
            self.net_opt.step()
        self.step_count += 1
        self._density_control()
        # read back every HISTORY_FLUSH steps, not every step: a float() here is a host sync per step on a GPU
        with torch.no_grad():
            self._pending.append((self.step_count, loss.detach(), F.mse_loss(out["image"].detach().clamp(0, 1), image)))
        if len(self._pending) >= HISTORY_FLUSH:
            self._flush_history()
        return mouth is not None

    @property
    def history(self) -> list[list[float]]:
        """[[step, loss, psnr of the trained frame], ...] of every step so far."""
        self._flush_history()
        return self._history

    @history.setter
    def history(self, rows: list[list[float]]) -> None:
        self._pending = []
        self._history = rows

    def _flush_history(self) -> None:
        if self._pending:
            values = torch.stack([torch.stack([lo, ms]) for _, lo, ms in self._pending]).double().cpu()
            for (step, _, _), (lo, ms) in zip(self._pending, values.tolist()):
                self._history.append([step, lo, 10 * math.log10(1.0 / max(ms, 1e-10))])
            self._pending = []

    def _density_stats(self, out, size, radius_scale: float = 1.0, parts=("head", "torso")):
        """3DGS's statistics from one rendered view of `size` (width, height) pixels; its radii
        count in training-frame pixels (`radius_scale` per view pixel) for the screen-size prune."""
        scale = self._ndc_scales.get(size)
        if scale is None:  # made once per view size: a per-step copy to the GPU would wait for it
            scale = self._ndc_scales[size] = torch.tensor([size[0] / 2, size[1] / 2], device=self.data.device)
        for part in parts:
            meta = out[f"{part}_meta"]
            grad = meta["means2d"].grad
            if grad is not None:
                getattr(self.model.gaussians, part).add_densification_stats(grad * scale, meta["radii"] * radius_scale)

    @property
    def densify_until(self) -> int:
        """The step density control stops at (half-way through the deformation stage): from here
        on the Gaussian count holds."""
        return self.settings.static_iters + self.settings.deform_iters // 2

    def _density_control(self):
        s, sched = self.step_count, self.sched
        until = self.densify_until
        every = sched["densify_every"]
        g = self.model.gaussians
        if every and s >= min(500, self.settings.static_iters // 3) and s < until and s % every == 0:
            for part, extent in (("head", self.head_extent), ("torso", self.torso_extent)):
                gs = getattr(g, part)
                grad_threshold = 2e-4 if len(g.head) + len(g.torso) < sched["max_gaussians"] else float("inf")
                gs.densify_and_prune(self.gauss_opt, grad_threshold=grad_threshold, scene_extent=extent,
                                     generator=self.gen)
        reset = sched["opacity_reset_every"]
        # only while the Gaussians are static: a reset in the deformation stage makes the head
        # transparent while the audio field is learning
        if reset and s < self.settings.static_iters and s % reset == 0:
            g.head.reset_opacity(self.gauss_opt)
            g.torso.reset_opacity(self.gauss_opt)

    @torch.no_grad()
    def evaluate(self, ids=None, limit: int | None = None) -> dict:
        """Mean PSNR of the rendered frames `ids` (default: the held-out tail) against the real ones."""
        ids = self.data.val_ids if ids is None else ids
        if limit is not None and len(ids) > limit:
            ids = ids[torch.linspace(0, len(ids) - 1, limit).round().long()]
        scores = [psnr(image, self.data.frame(i)[0]) for i, image in self._render_frames(ids.tolist())]
        return {"psnr": float(np.mean(scores)) if scores else float("nan"), "frames": len(scores)}

    def _render_frames(self, ids: list[int]):
        """Yield (i, image [H, W, 3] in [0, 1]) for frames `ids` with their own poses, eyes and audio;
        the deformation fields join once their stage has begun."""
        deform = self.step_count > self.settings.static_iters
        codes = self.model.codes(self.data.audio) if deform else None
        for i in ids:
            out = self.model.render(None if codes is None else codes[i], self.data.viewmats[i], self.data.eyes[i],
                                    deform=deform, backend=self.backend)
            yield i, out["image"].clamp(0, 1)

    # -------------------------------------------------------------- previews and plots

    @torch.no_grad()
    def preview(self, path: Path, n: int = 3) -> Path:
        """Rendered (top) vs ground truth (bottom) of `n` held-out frames, as one PNG."""
        from torchvision.io import write_png

        ids = self.data.val_ids if len(self.data.val_ids) else self.data.train_ids
        ids = ids[torch.linspace(0, len(ids) - 1, n).round().long()].tolist()
        top = [image for _, image in self._render_frames(ids)]
        bottom = [self.data.frame(i)[0] for i in ids]
        grid = torch.cat([torch.cat(top, 1), torch.cat(bottom, 1)], 0)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_png((grid * 255).round().byte().permute(2, 0, 1).cpu(), str(path))
        return path

    # -------------------------------------------------------------- checkpoints

    def checkpoint_tensors(self) -> tuple[dict, dict]:
        tensors = {f"model.{k}": v for k, v in self.model.state_dict().items()}
        if self.mouth_head is not None:
            tensors.update({f"mouth_head.{k}": v for k, v in self.mouth_head.state_dict().items()})
        for part in ("head", "torso"):
            gs = getattr(self.model.gaussians, part)
            for stat in ("grad_accum", "grad_count", "max_radii"):
                tensors[f"stats.{part}.{stat}"] = getattr(gs, stat)
        meta = {}
        for name, opt in (("gauss_opt", self.gauss_opt), ("net_opt", self.net_opt)):
            t, m = optimizer_state(opt, name)
            tensors.update(t)
            meta[name] = m
        tensors["rng.gen"] = self.gen.get_state()
        tensors["rng.torch"] = torch.get_rng_state()
        if torch.cuda.is_available():
            tensors["rng.cuda"] = torch.cuda.get_rng_state()
        tensors["history"] = torch.tensor(self.history, dtype=torch.float64).reshape(-1, 3)
        meta.update(kind="checkpoint", step=self.step_count, settings=asdict(self.settings), config=self.model.config,
                    av_offset_frames=self.data.av_offset_frames)
        return tensors, meta

    def save_checkpoint(self, path: Path | None = None) -> Path:
        path = path or self.workdir / CHECKPOINT
        tensors, meta = self.checkpoint_tensors()
        save_file(path, tensors, meta)
        info = {k: meta[k] for k in ("step", "settings")}
        info["total_iters"] = self.total_iters
        (path.with_suffix(".json")).write_text(json.dumps(info, indent=2) + "\n")
        return path

    def load_checkpoint(self, path: Path) -> None:
        tensors, meta = load_file(path, kind="checkpoint")
        # a checkpoint from before preprocessing's sync stage trained on the sound as recorded
        trained, now = int(meta.get("av_offset_frames", 0)), self.data.av_offset_frames
        if trained != now:
            raise GstalkerError(
                f"--resume: the checkpoint was trained with the sound moved {trained * 1000 // FPS} ms, but "
                f"{self.workdir.name}'s sound is now moved {now * 1000 // FPS} ms (preprocessing's audio-video sync); "
                f"resume with --av-offset {trained / FPS:g} to keep the checkpoint's, or start afresh without --resume")
        state = {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}
        fresh = TalkerModel.from_state(state, meta["config"]).to(self.data.device)
        if fresh.trained_speech_mean() is None:  # a checkpoint from before the speech mean
            fresh.set_speech_mean(self.data.speech_mean, self.data.speech_mean_frames)
        self.model = fresh
        for part in ("head", "torso"):
            gs = getattr(self.model.gaussians, part)
            for stat in ("grad_accum", "grad_count", "max_radii"):
                setattr(gs, stat, tensors[f"stats.{part}.{stat}"].to(self.data.device))
        if self.mouth_head is not None and "mouth_head.weight" in tensors:
            self.mouth_head.load_state_dict({k[len("mouth_head."):]: v for k, v in tensors.items()
                                             if k.startswith("mouth_head.")})
        self.gauss_opt = self._gaussian_optimizer()
        self.net_opt = self._network_optimizer()
        tensors = {k: v.to(self.data.device) if k.startswith(("gauss_opt.", "net_opt.")) else v for k, v in tensors.items()}
        load_optimizer_state(self.gauss_opt, "gauss_opt", tensors, meta["gauss_opt"])
        load_optimizer_state(self.net_opt, "net_opt", tensors, meta["net_opt"])
        self.gen.set_state(tensors["rng.gen"])
        torch.set_rng_state(tensors["rng.torch"])
        if "rng.cuda" in tensors and torch.cuda.is_available():
            torch.cuda.set_rng_state(tensors["rng.cuda"])
        self.step_count = int(meta["step"])
        self.history = tensors["history"].tolist()


def checkpoint_settings(path: Path) -> dict | None:
    """The settings a checkpoint was started with, or None when there is none."""
    if not path.exists():
        return None
    _, meta = load_file(path, kind="checkpoint")
    return meta.get("settings")


def plot_curve(history: list[list[float]], path: Path, stage_boundary: int | None = None,
               width: int = 720, height: int = 360) -> Path:
    """Training loss (red, left axis) and PSNR of the trained frame (blue, right axis) against
    iterations, smoothed by a running mean over about 1% of the run; a grey line marks the start
    of the deformation stage (its loss adds the lip and LPIPS terms, hence the step up).
    history: [[step, loss, psnr], ...]. A width x height pixel PNG, drawn with matplotlib's Agg
    canvas (no display, the global backend untouched), written atomically."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from .serialization import atomic_path

    dpi = 100
    fig = Figure(figsize=(width / dpi, height / dpi), dpi=dpi)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    ax.set_xlabel("iteration")
    ax.set_ylabel("loss", color="tab:red")
    right = ax.twinx()
    right.set_ylabel("PSNR of the trained frame (dB)", color="tab:blue")
    h = np.asarray(history, dtype=np.float64).reshape(-1, 3)
    if len(h) >= 2:
        k = max(1, len(h) // 100)
        steps = h[k - 1:, 0]
        smooth = [np.convolve(h[:, col], np.ones(k) / k, mode="valid") for col in (1, 2)]
        ax.plot(steps, smooth[0], color="tab:red", lw=1.5, label="loss")
        right.plot(steps, smooth[1], color="tab:blue", lw=1.5, label="PSNR")
        if stage_boundary and steps[0] < stage_boundary < steps[-1]:
            ax.axvline(stage_boundary, color="0.65", lw=1)
            ax.annotate("deformation stage", (stage_boundary, 1), xycoords=("data", "axes fraction"),
                        xytext=(4, -12), textcoords="offset points", color="0.45", fontsize=8)
    ax.tick_params(axis="y", colors="tab:red")
    right.tick_params(axis="y", colors="tab:blue")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(str(tmp), format="png")
    return path


def training_summary(trainer: Trainer, stats: dict, total_seconds: float, heldout: dict) -> dict:
    """What a model file carries about its fit: preset, iterations, `run_training`'s times,
    held-out PSNR (`heldout`, from `Trainer.evaluate`) beside the mean-frame baseline, device,
    Gaussian counts."""
    from .metrics import mean_frame_psnr

    data, g = trainer.data, trainer.model.gaussians
    return {
        "preset": trainer.settings.preset,
        "iterations": trainer.step_count,
        "train_seconds": round(stats["train_seconds"], 1),
        "stages": stats["stages"],
        "total_seconds": round(total_seconds, 1),
        "heldout_psnr": round(heldout["psnr"], 3),
        "heldout_frames": heldout["frames"],
        "baseline_psnr": round(mean_frame_psnr(lambda i: data.frame(i)[0], data.train_ids, data.val_ids), 3),
        "device": str(data.device),
        "gaussians": {"head": len(g.head), "torso": len(g.torso)},
    }


def run_training(trainer: Trainer, progress: bool | None = None, checkpoint_every_s: float = 300.0,
                 on_preview=None) -> dict:
    """Run the remaining iterations of both stages with bars, previews and periodic checkpoints.

    Ctrl-C writes a checkpoint and re-raises KeyboardInterrupt.
    """
    s = trainer.settings
    previews = trainer.workdir / "previews"
    every = trainer.sched["preview_every"]
    last_ckpt = time.monotonic()
    t0 = time.monotonic()
    stages = {}
    try:
        with Progress(progress) as bars:
            for stage, begin, end in (("static", 0, s.static_iters), ("deformation", s.static_iters, trainer.total_iters)):
                if trainer.step_count >= end or end == begin:
                    continue
                pretrain = trainer.sched.get("mouth_shape_pretrain", 0) if trainer.mouth_head is not None else 0
                if stage == "deformation" and pretrain and trainer.step_count == begin:
                    shape_bar = bars.task("mouth shape", pretrain)
                    trainer.pretrain_mouth_shape(pretrain, on_step=lambda: shape_bar.advance(1))
                bar = bars.task(stage, end - begin, completed=max(0, trainer.step_count - begin))
                stage_t0, stage_step0 = time.monotonic(), trainer.step_count
                while trainer.step_count < end:
                    trainer.step()
                    if trainer.step_count % HISTORY_FLUSH == 0:
                        _, loss, p = trainer.history[-1]
                        bar.advance(1, loss=loss, psnr=p,
                                    gaussians=len(trainer.model.gaussians.head) + len(trainer.model.gaussians.torso))
                    else:
                        bar.advance(1)
                    if every and trainer.step_count % every == 0:
                        path = trainer.preview(previews / f"step_{trainer.step_count:06d}.png")
                        if on_preview:
                            on_preview(path)
                    if time.monotonic() - last_ckpt > checkpoint_every_s:
                        trainer.save_checkpoint()
                        last_ckpt = time.monotonic()
                stages[stage] = {"iterations": trainer.step_count - stage_step0,
                                 "seconds": round(time.monotonic() - stage_t0, 2)}
    except KeyboardInterrupt:
        trainer.save_checkpoint()
        raise
    elapsed = time.monotonic() - t0
    trainer.model.set_mouth_gain(trainer.mean_code(), SPEAK_MOUTH_GAIN.get(s.preset, 1.0))
    trainer.save_checkpoint()
    trainer.preview(previews / f"step_{trainer.step_count:06d}.png")
    plot_curve(trainer.history, trainer.workdir / "loss_curve.png", stage_boundary=s.static_iters)
    return {"train_seconds": elapsed, "stages": stages}
