"""3D Gaussians (head and torso sets) with 3DGS's adaptive density control.

A `Gaussians` set stores raw parameters; the rasterizer's inputs are their activations:

    means          [N, 3] float32   positions (canonical head space, or torso space)
    log_scales     [N, 3] float32   scales = exp(log_scales)
    quats          [N, 4] float32   (w, x, y, z), unnormalised (the rasterizer normalises)
    opacity_logits [N]    float32   opacities = sigmoid(opacity_logits)
    color_logits   [N, C] float32   colors = sigmoid(color_logits), RGB by default

Colour is plain RGB rather than spherical harmonics: the camera moves only with the head pose
(a few degrees around frontal), so view-dependent colour has little to explain, and degree-3
SH would multiply colour parameters by 16 and the rasterizer's colour channels with them.

Densify / prune / clone / split change N. They keep every `nn.Parameter` object (its `.data`
is replaced) and resize the optimiser's per-parameter state in place (every state tensor whose
first dimension is N: Adam's `exp_avg` and `exp_avg_sq`, amsgrad's `max_exp_avg_sq`), so the
same optimiser keeps working. Kept Gaussians keep their moments; new ones start at zero.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ..kernels.projection import quat_to_rotmat
from .deform import Deltas

__all__ = ["Gaussians", "GaussianModel", "quat_to_rotmat"]

PARAM_NAMES = ("means", "log_scales", "quats", "opacity_logits", "color_logits")


def _logit(p: float) -> float:
    return math.log(p / (1 - p))


class Gaussians(nn.Module):
    """One set of 3D Gaussians (see the module docstring for the parameters and shapes)."""

    def __init__(self, means, log_scales, quats, opacity_logits, color_logits):
        super().__init__()
        n = means.shape[0]
        shapes = {"means": (n, 3), "log_scales": (n, 3), "quats": (n, 4), "opacity_logits": (n,)}
        for name, value in zip(PARAM_NAMES, (means, log_scales, quats, opacity_logits, color_logits)):
            want = shapes.get(name, (n, value.shape[-1] if value.dim() == 2 else -1))
            if tuple(value.shape) != want:
                raise ValueError(f"{name} must have shape {list(want)}, got {list(value.shape)}")
            self.register_parameter(name, nn.Parameter(value.detach().clone().float()))
        # densification statistics: buffers so .to(device) moves them, not saved in state_dict
        for stat in ("grad_accum", "grad_count", "max_radii"):
            self.register_buffer(stat, torch.zeros(n), persistent=False)

    # ---------------------------------------------------------------- construction and access

    @classmethod
    def random(
        cls,
        n: int,
        side: float = 2.0,
        center=(0.0, 0.0, 0.0),
        channels: int = 3,
        opacity: float = 0.1,
        generator: torch.Generator | None = None,
    ) -> "Gaussians":
        """n Gaussians uniform in a cube of `side` around `center` (paper: 10,000, side 2), random
        colours, isotropic scales about the mean spacing, identity rotations, opacity `opacity`."""
        g = generator
        means = (torch.rand(n, 3, generator=g) - 0.5) * side + torch.as_tensor(center, dtype=torch.float32)
        spacing = side / max(n, 1) ** (1 / 3)
        log_scales = torch.full((n, 3), math.log(0.5 * spacing))
        quats = torch.zeros(n, 4)
        quats[:, 0] = 1
        opacity_logits = torch.full((n,), _logit(opacity))
        color_logits = torch.logit(torch.rand(n, channels, generator=g).clamp(0.05, 0.95))
        return cls(means, log_scales, quats, opacity_logits, color_logits)

    @classmethod
    def from_state_dict(cls, state: dict, prefix: str = "") -> "Gaussians":
        """Rebuild a set of any size from `state_dict()` tensors (``load_state_dict`` would need
        a set of the same N already)."""
        missing = [prefix + n for n in PARAM_NAMES if prefix + n not in state]
        if missing:
            raise ValueError(f"state has no {', '.join(missing)}")
        return cls(*(state[prefix + n] for n in PARAM_NAMES))

    def __len__(self) -> int:
        return self.means.shape[0]

    @property
    def scales(self) -> torch.Tensor:
        return torch.exp(self.log_scales)

    @property
    def opacities(self) -> torch.Tensor:
        return torch.sigmoid(self.opacity_logits)

    @property
    def colors(self) -> torch.Tensor:
        return torch.sigmoid(self.color_logits)

    def render_args(self, deltas: Deltas | None = None) -> dict:
        """Keyword arguments for `gstalker.kernels.rasterize`: means3d, quats, scales, opacities,
        colors, with a deformation's deltas added to position, rotation and log-scale."""
        means, quats, log_scales = self.means, self.quats, self.log_scales
        if deltas is not None:
            means, quats, log_scales = means + deltas.means, quats + deltas.quats, log_scales + deltas.log_scales
        return {
            "means3d": means,
            "quats": quats,
            "scales": torch.exp(log_scales),
            "opacities": self.opacities,
            "colors": self.colors,
        }

    def param_groups(self, lr: dict, prefix: str = "") -> list[dict]:
        """One Adam param group per parameter: lr maps names of PARAM_NAMES to learning rates
        (a missing name is left out of the optimiser)."""
        return [
            {"params": [getattr(self, name)], "lr": lr[name], "name": prefix + name}
            for name in PARAM_NAMES
            if name in lr
        ]

    # ---------------------------------------------------------------- densification statistics

    def reset_densification_stats(self) -> None:
        n, dev = len(self), self.means.device
        self.grad_accum = torch.zeros(n, device=dev)
        self.grad_count = torch.zeros(n, device=dev)
        self.max_radii = torch.zeros(n, device=dev)

    @torch.no_grad()
    def add_densification_stats(self, means2d_grad: torch.Tensor, radii: torch.Tensor) -> None:
        """After a backward pass: means2d_grad [N, 2] (rasterize's ``meta["means2d"].grad``),
        radii [N] (``meta["radii"]``, 0 = not drawn). Accumulates 3DGS's view-space gradient
        norm and the largest screen radius of each drawn Gaussian."""
        # masks multiply rather than index: boolean indexing would sync with the GPU every step
        visible = (radii > 0).to(self.grad_accum)
        self.grad_accum += means2d_grad.norm(dim=-1).to(self.grad_accum) * visible
        self.grad_count += visible.to(self.grad_count)
        self.max_radii.copy_(torch.maximum(self.max_radii, radii.to(self.max_radii) * visible))

    # ---------------------------------------------------------------- resizing (with optimiser)

    @torch.no_grad()
    def _resize(self, keep: torch.Tensor | None, new: dict | None, optimizer) -> None:
        """Keep rows `keep` (bool [N]) of every parameter, then append `new` rows (a dict of
        PARAM_NAMES -> [K, ...]); the optimiser state and the statistics follow."""
        n_old = len(self)
        keep = torch.ones(n_old, dtype=torch.bool, device=self.means.device) if keep is None else keep
        n_new = 0 if not new else new["means"].shape[0]
        for name in PARAM_NAMES:
            p = getattr(self, name)
            data = p.data[keep]
            if n_new:
                data = torch.cat([data, new[name].to(data)])
            if optimizer is not None and p in optimizer.state:
                state = optimizer.state[p]
                for key, value in list(state.items()):
                    if torch.is_tensor(value) and value.dim() > 0 and value.shape[0] == n_old:
                        kept = value[keep]
                        state[key] = torch.cat([kept, kept.new_zeros((n_new, *kept.shape[1:]))]) if n_new else kept
            p.data = data
            p.grad = None
        for stat in ("grad_accum", "grad_count", "max_radii"):
            v = getattr(self, stat)[keep]
            setattr(self, stat, torch.cat([v, v.new_zeros(n_new)]) if n_new else v)

    def _rows(self, mask: torch.Tensor) -> dict:
        return {name: getattr(self, name).data[mask] for name in PARAM_NAMES}

    def prune(self, remove: torch.Tensor, optimizer=None) -> None:
        """Drop the Gaussians where `remove` (bool [N]) is True."""
        self._resize(~remove, None, optimizer)

    def clone(self, mask: torch.Tensor, optimizer=None) -> None:
        """Append a copy of each Gaussian where `mask` (bool [N]) is True (3DGS clone)."""
        self._resize(None, self._rows(mask), optimizer)

    @torch.no_grad()
    def split(self, mask: torch.Tensor, optimizer=None, n_split: int = 2, generator=None) -> None:
        """Replace each Gaussian where `mask` is True by `n_split` ones sampled from it, scales
        divided by 0.8 * n_split (3DGS split)."""
        rows = self._rows(mask)
        k = rows["means"].shape[0]
        if k == 0:
            return
        stds = torch.exp(rows["log_scales"]).repeat(n_split, 1)
        noise = torch.randn(stds.shape, generator=generator).to(stds) * stds
        rot = quat_to_rotmat(rows["quats"]).repeat(n_split, 1, 1)
        new = {name: v.repeat(n_split, *([1] * (v.dim() - 1))) for name, v in rows.items()}
        new["means"] = new["means"] + (rot @ noise[..., None])[..., 0]
        new["log_scales"] = new["log_scales"] - math.log(0.8 * n_split)
        self._resize(~mask, new, optimizer)

    @torch.no_grad()
    def densify_and_prune(
        self,
        optimizer,
        grad_threshold: float = 2e-4,
        scene_extent: float = 1.0,
        percent_dense: float = 0.01,
        min_opacity: float = 0.005,
        max_screen_radius: float | None = None,
        max_world_scale: float | None = 0.1,
        generator=None,
    ) -> dict:
        """3DGS's adaptive density control: clone small and split large Gaussians whose average
        view-space gradient reaches `grad_threshold`, then prune the nearly transparent, those
        larger than `max_world_scale` * `scene_extent` (None: keep them; 3DGS applies this only
        together with the screen limit, after its first opacity reset) and, if given, those drawn
        wider than `max_screen_radius` pixels. Resets the statistics. Returns the counts."""
        avg = self.grad_accum / self.grad_count.clamp_min(1)
        hot = avg >= grad_threshold
        big = self.scales.max(dim=1).values > percent_dense * scene_extent
        clone_mask, split_mask = hot & ~big, hot & big
        n_clone, n_split = int(clone_mask.sum()), int(split_mask.sum())
        self.clone(clone_mask, optimizer)
        # clone appended rows: extend the split mask with False for them
        split_mask = torch.cat([split_mask, split_mask.new_zeros(n_clone)])
        self.split(split_mask, optimizer, generator=generator)
        remove = self.opacities < min_opacity
        if max_world_scale is not None:
            remove |= self.scales.max(dim=1).values > max_world_scale * scene_extent
        if max_screen_radius is not None:
            remove |= self.max_radii > max_screen_radius
        n_pruned = int(remove.sum())
        self.prune(remove, optimizer)
        self.reset_densification_stats()
        return {"cloned": n_clone, "split": n_split, "pruned": n_pruned, "total": len(self)}

    @torch.no_grad()
    def reset_opacity(self, optimizer=None, max_opacity: float = 0.01) -> None:
        """Clamp opacities to at most `max_opacity` and zero their optimiser moments (3DGS)."""
        p = self.opacity_logits
        p.data = torch.minimum(p.data, torch.full_like(p.data, _logit(max_opacity)))
        if optimizer is not None and p in optimizer.state:
            for key, value in optimizer.state[p].items():
                if torch.is_tensor(value) and value.dim() > 0:
                    value.zero_()


class GaussianModel(nn.Module):
    """The head and torso Gaussian sets: ``model.head`` and ``model.torso`` (`Gaussians`)."""

    def __init__(self, head: Gaussians, torso: Gaussians):
        super().__init__()
        self.head, self.torso = head, torso

    @classmethod
    def random(
        cls, n_head: int = 10_000, n_torso: int = 10_000, side: float = 2.0, channels: int = 3, seed: int = 0
    ) -> "GaussianModel":
        """Paper initialisation: random Gaussians in cubes of side 2 (each set in its own space)."""
        g = torch.Generator().manual_seed(seed)
        return cls(
            Gaussians.random(n_head, side, channels=channels, generator=g),
            Gaussians.random(n_torso, side, channels=channels, generator=g),
        )

    @classmethod
    def from_state_dict(cls, state: dict) -> "GaussianModel":
        """Rebuild from `state_dict()` tensors ("head.means", "torso.quats", ...), any sizes."""
        return cls(Gaussians.from_state_dict(state, "head."), Gaussians.from_state_dict(state, "torso."))

    def param_groups(self, lr: dict) -> list[dict]:
        """Adam param groups for both sets, named "head.means", "torso.quats", ..."""
        return self.head.param_groups(lr, "head.") + self.torso.param_groups(lr, "torso.")
