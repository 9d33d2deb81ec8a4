"""Deformation fields: tri-plane features + a condition -> tiny MLP -> (delta position, delta
rotation quaternion, delta log-scale) per Gaussian.

- `FaceDeformation` (paper eq. 4): condition = [smoothed audio code f_a, eye feature f_e].
- `TorsoDeformation` (paper eq. 5): condition = positional encoding (L = 6) of the head pose's
  6-D rotation (axis-angle) + translation.

Both zero-initialise their last layer, so a fresh field returns exactly zero deltas and training
starts from the static Gaussians. Colour and opacity are never deformed.

The condition is the same for every Gaussian of a frame, so the first layer is split in two:
``W [f_H, c] = W_H f_H + W_c c``; ``W_c c`` is computed once per frame and broadcast (the same
function as a linear layer on the concatenation, without an [N, cond] copy).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import nn

from ..kernels.hashgrid import TriPlaneEncoder

__all__ = [
    "Deltas", "FaceDeformation", "region_weight", "TorsoDeformation", "positional_encoding", "pose_to_6d", "rotmat_to_axis_angle",
]


class Deltas(NamedTuple):
    """Per-Gaussian offsets: means [N, 3], quats [N, 4] (w, x, y, z, added to the raw quaternion),
    log_scales [N, 3] (added to the log-scales)."""

    means: torch.Tensor
    quats: torch.Tensor
    log_scales: torch.Tensor


def region_weight(means: torch.Tensor, regions: list[dict], falloff: float = 1.4) -> torch.Tensor:
    """How much each Gaussian may deform: [N, 1] in [0, 1], 1 inside any of the ellipsoids
    `regions` ([{"center": [3], "radii": [3]}], canonical space), falling smoothly (smoothstep)
    to 0 at `falloff` times their radii. means: [N, 3] float32."""
    weight = torch.zeros(means.shape[0], 1, dtype=means.dtype, device=means.device)
    for r in regions:
        c = torch.tensor(r["center"], dtype=means.dtype, device=means.device)
        radii = torch.tensor(r["radii"], dtype=means.dtype, device=means.device)
        dist = ((means - c) / radii).norm(dim=-1, keepdim=True)
        x = ((falloff - dist) / (falloff - 1)).clamp(0, 1)
        weight = torch.maximum(weight, x * x * (3 - 2 * x))
    return weight


def positional_encoding(x: torch.Tensor, n_freqs: int = 6) -> torch.Tensor:
    """NeRF's gamma(p) = (sin(2^i pi p), cos(2^i pi p)), i = 0..L-1.

    x: [..., D] -> [..., D * 2L], ordered (sin over all D, cos over all D) per frequency.
    """
    freqs = (2.0 ** torch.arange(n_freqs, dtype=x.dtype, device=x.device)) * math.pi  # [L]
    xb = x[..., None, :] * freqs[:, None]  # [..., L, D]
    return torch.cat([torch.sin(xb), torch.cos(xb)], dim=-1).flatten(-2)


def rotmat_to_axis_angle(R: torch.Tensor) -> torch.Tensor:
    """R [..., 3, 3] rotation matrices -> axis-angle vectors [..., 3] (angle in [0, pi]).

    Well conditioned away from angle = pi; `TorsoDeformation` applies it to rotations relative
    to a reference pose, so the angles it sees are small.
    """
    cos = ((R[..., 0, 0] + R[..., 1, 1] + R[..., 2, 2] - 1) / 2).clamp(-1.0, 1.0)
    angle = torch.acos(cos)
    skew = torch.stack([R[..., 2, 1] - R[..., 1, 2], R[..., 0, 2] - R[..., 2, 0], R[..., 1, 0] - R[..., 0, 1]], -1)
    sin = torch.sin(angle)
    # angle / (2 sin angle) -> 1/2 as angle -> 0 (series), avoiding 0/0
    small = sin.abs() < 1e-4
    factor = torch.where(small, 0.5 + angle**2 / 12, angle / (2 * torch.where(small, torch.ones_like(sin), sin)))
    return skew * factor[..., None]


def pose_to_6d(viewmat: torch.Tensor, reference: torch.Tensor | None = None) -> torch.Tensor:
    """Head pose [..., 4, 4] (world-to-camera viewmat) -> [..., 6] = (axis-angle of R, t).

    With `reference` [3, 3], the rotation is taken relative to it (``R @ reference^T``), which
    keeps the axis-angle far from its discontinuity at pi (a camera facing the canonical head
    is a rotation of about pi away from the identity in OpenCV axes).
    """
    R = viewmat[..., :3, :3]
    if reference is not None:
        R = R @ reference.transpose(-1, -2)
    return torch.cat([rotmat_to_axis_angle(R), viewmat[..., :3, 3]], dim=-1)


class _DeformMLP(nn.Module):
    """[spatial features, condition] -> hidden layers (ReLU) -> 10 outputs, last layer zero."""

    def __init__(self, spatial_dim: int, cond_dim: int, hidden: int, n_hidden_layers: int):
        super().__init__()
        if n_hidden_layers < 1:
            raise ValueError(f"n_hidden_layers must be >= 1, got {n_hidden_layers}")
        self.spatial_in = nn.Linear(spatial_dim, hidden)
        self.cond_in = nn.Linear(cond_dim, hidden, bias=False)
        self.hidden = nn.ModuleList(nn.Linear(hidden, hidden) for _ in range(n_hidden_layers - 1))
        self.out = nn.Linear(hidden, 10)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, spatial: torch.Tensor | None, cond: torch.Tensor, spatial_hidden: torch.Tensor | None = None) -> Deltas:
        """spatial [N, S] features, or their first-layer image `spatial_hidden` [N, hidden] when cached."""
        if spatial_hidden is None:
            spatial_hidden = self.spatial_in(spatial)
        h = torch.relu(spatial_hidden + self.cond_in(cond))  # cond [C] or [N, C] broadcasts
        for layer in self.hidden:
            h = torch.relu(layer(h))
        d = self.out(h)
        return Deltas(d[:, 0:3], d[:, 3:7], d[:, 7:10])


def _make_encoder(encoder: TriPlaneEncoder | None, encoder_kwargs: dict) -> TriPlaneEncoder:
    if encoder is not None and encoder_kwargs:
        raise ValueError("pass either an encoder or encoder keyword arguments, not both")
    return encoder if encoder is not None else TriPlaneEncoder(**{"check": False, **encoder_kwargs})  # no per-step host sync


class FaceDeformation(nn.Module):
    """Audio-driven deformation of the head Gaussians (paper eq. 4).

    forward(means [N, 3] float32 canonical positions, audio [code_dim] or [N, code_dim],
    eye [eye_dim] or [N, eye_dim]) -> Deltas(means [N, 3], quats [N, 4], log_scales [N, 3]).

    The eye feature is the eye-openness ratio; keep it roughly in [0, 1] (normalise by the
    clip's maximum, say) so it is not drowned by the other inputs.
    Gradients reach the hash tables, the MLP, the audio code and the Gaussian positions.
    """

    def __init__(
        self,
        audio_dim: int = 32,
        eye_dim: int = 1,
        hidden: int = 64,
        n_hidden_layers: int = 2,
        encoder: TriPlaneEncoder | None = None,
        **encoder_kwargs,
    ):
        super().__init__()
        self.audio_dim, self.eye_dim = audio_dim, eye_dim
        self.encoder = _make_encoder(encoder, encoder_kwargs)
        self.mlp = _DeformMLP(self.encoder.out_dim, audio_dim + eye_dim, hidden, n_hidden_layers)

    def spatial_hidden(self, means: torch.Tensor, backend: str = "auto") -> torch.Tensor:
        """The audio-independent part of the first layer, [N, hidden]: constant for fixed Gaussians,
        so inference computes it once instead of running the hash grids every frame."""
        return self.mlp.spatial_in(self.encoder(means, backend))

    def forward(self, means: torch.Tensor, audio: torch.Tensor, eye: torch.Tensor,
                spatial_hidden: torch.Tensor | None = None, backend: str = "auto") -> Deltas:
        eye = torch.as_tensor(eye, dtype=means.dtype, device=means.device)
        if eye.dim() == 0:
            eye = eye.reshape(1)
        if audio.shape[-1] != self.audio_dim or eye.shape[-1] != self.eye_dim:
            raise ValueError(
                f"audio must end in {self.audio_dim} and eye in {self.eye_dim} features, got "
                f"{list(audio.shape)} and {list(eye.shape)}"
            )
        if audio.dim() == 2 and eye.dim() == 1:
            eye = eye.expand(audio.shape[0], -1)
        elif eye.dim() == 2 and audio.dim() == 1:
            audio = audio.expand(eye.shape[0], -1)
        cond = torch.cat([audio, eye], dim=-1)
        if spatial_hidden is not None:
            return self.mlp(None, cond, spatial_hidden)
        return self.mlp(self.encoder(means, backend), cond)


class TorsoDeformation(nn.Module):
    """Pose-driven deformation of the torso Gaussians (paper eq. 5).

    forward(means [N, 3] float32, viewmat [4, 4] the frame's head pose) ->
    Deltas(means [N, 3], quats [N, 4], log_scales [N, 3]).

    The pose becomes 6 numbers (axis-angle of the rotation relative to a reference rotation,
    and the translation), normalised to about [-1, 1] by buffers that
    `fit_pose_normalization(training viewmats)` sets (identity / zero / one until then), then
    positional-encoded with `pose_freqs` frequencies (6 * 2 * pose_freqs inputs; the model's
    default config uses 2, see `talker.DEFAULT_CONFIG`).
    """

    def __init__(
        self,
        pose_freqs: int = 6,
        hidden: int = 64,
        n_hidden_layers: int = 2,
        encoder: TriPlaneEncoder | None = None,
        **encoder_kwargs,
    ):
        super().__init__()
        self.pose_freqs = pose_freqs
        self.encoder = _make_encoder(encoder, encoder_kwargs)
        self.mlp = _DeformMLP(self.encoder.out_dim, 6 * 2 * pose_freqs, hidden, n_hidden_layers)
        self.register_buffer("pose_reference", torch.eye(3))
        self.register_buffer("pose_center", torch.zeros(6))
        self.register_buffer("pose_scale", torch.ones(6))

    @torch.no_grad()
    def fit_pose_normalization(self, viewmats: torch.Tensor, margin: float = 1.1) -> None:
        """Set the reference rotation (chordal mean) and the centre/scale mapping the training
        poses' 6-D vectors into [-1/margin, 1/margin]. viewmats: [K, 4, 4]."""
        viewmats = viewmats.to(self.pose_center)
        U, _, Vh = torch.linalg.svd(viewmats[:, :3, :3].mean(0))
        ref = U @ Vh
        if torch.det(ref) < 0:  # keep a proper rotation
            U = U.clone()
            U[:, -1] = -U[:, -1]
            ref = U @ Vh
        self.pose_reference.copy_(ref)
        p = pose_to_6d(viewmats, ref)
        lo, hi = p.min(0).values, p.max(0).values
        self.pose_center.copy_((lo + hi) / 2)
        self.pose_scale.copy_(((hi - lo) / 2 * margin).clamp_min(1e-3))

    def pose_features(self, viewmat: torch.Tensor) -> torch.Tensor:
        """viewmat [4, 4] (or [..., 4, 4]) -> positional encoding [12 * pose_freqs] (or [..., 12 * pose_freqs])."""
        p = (pose_to_6d(viewmat.to(self.pose_center), self.pose_reference) - self.pose_center) / self.pose_scale
        return positional_encoding(p, self.pose_freqs)

    def spatial_hidden(self, means: torch.Tensor, backend: str = "auto") -> torch.Tensor:
        """The pose-independent part of the first layer, [N, hidden] (see FaceDeformation)."""
        return self.mlp.spatial_in(self.encoder(means, backend))

    def forward(self, means: torch.Tensor, viewmat: torch.Tensor, spatial_hidden: torch.Tensor | None = None,
                backend: str = "auto") -> Deltas:
        if viewmat.shape != (4, 4):
            raise ValueError(f"viewmat must have shape [4, 4], got {list(viewmat.shape)}")
        cond = self.pose_features(viewmat).detach()
        if spatial_hidden is not None:
            return self.mlp(None, cond, spatial_hidden)
        return self.mlp(self.encoder(means, backend), cond)
