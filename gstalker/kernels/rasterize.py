"""`rasterize`: the one entry point that renders 3D Gaussians into an image.

Three stages (docs/conventions.md fixes the maths): projection (`projection.py`), tile binning
and depth ordering (`binning.py`), alpha blending (`blending.py`). On the Triton backend each is
a Triton kernel; projection and blending each sit behind a `torch.autograd.Function`, so that
`meta["means2d"]` is a real node of the graph whose `.grad` densification can read.
"""

from __future__ import annotations

import torch

from ._backend import check_tensor, resolve_backend
from .binning import bin_tiles
from .blending import blend
from .projection import project_gaussians


def rasterize(
    means3d: torch.Tensor,
    quats: torch.Tensor,
    scales: torch.Tensor,
    opacities: torch.Tensor,
    colors: torch.Tensor,
    viewmat: torch.Tensor,
    K: torch.Tensor,
    width: int,
    height: int,
    background: torch.Tensor | None = None,
    backend: str = "auto",
    check: bool = True,
):
    """Render Gaussians seen by one pinhole camera.

    Args:
        means3d: [N, 3] world positions.
        quats: [N, 4] rotations as (w, x, y, z); normalised here.
        scales: [N, 3] positive standard deviations along the rotated axes.
        opacities: [N] in (0, 1).
        colors: [N, C] any number of channels.
        viewmat: [4, 4] world-to-camera (OpenCV: x right, y down, z forward).
        K: [3, 3] pinhole intrinsics in pixels.
        width, height: image size in pixels.
        background: [C] colour behind the Gaussians, or None for black.
        backend: "auto" (Triton on CUDA tensors, torch elsewhere), "triton" or "torch".
        check: also scan the values (NaN/inf, zero quaternions, non-positive scales and focal
            lengths). Each scan is a host synchronisation on a GPU; callers that render their
            own parameters every step (the trainer, the talker) pass False. Shapes, dtypes and
            devices are checked either way. With check=False the Triton path synchronises once
            (to size the intersection buffer).

    All tensors float32 on one device (float64 too with backend="torch"). Differentiable with
    respect to means3d, quats, scales, opacities, colors and background; viewmat and K are
    treated as constants.

    Returns:
        image: [H, W, C], alpha: [H, W, 1], and meta, a dict with
        `means2d` [N, 2] (pixels; call `.retain_grad()` on it before backward to read the
        view-space gradients densification uses), `conics` [N, 3], `depths` [N] (camera z),
        `radii` [N] int32 (0 where culled), `isect_ids` [M] int32, `tile_ranges` [tiles, 2]
        int32 and `backend` (the one that ran).
    """
    means3d, quats, scales, opacities, colors, viewmat, K, background, backend = _check_inputs(
        means3d, quats, scales, opacities, colors, viewmat, K, width, height, background, backend, check
    )
    viewmat, K = viewmat.detach(), K.detach()
    means2d, conics, depths, radii = project_gaussians(means3d, quats, scales, viewmat, K, width, height, backend)
    isect_ids, tile_ranges = bin_tiles(means2d, radii, depths, width, height, backend, conics, opacities)
    image, alpha = blend(means2d, conics, opacities, colors, background, isect_ids, tile_ranges, width, height, backend)
    meta = {
        "means2d": means2d,
        "conics": conics,
        "depths": depths,
        "radii": radii,
        "isect_ids": isect_ids,
        "tile_ranges": tile_ranges,
        "backend": backend,
    }
    return image, alpha, meta


def _check_inputs(means3d, quats, scales, opacities, colors, viewmat, K, width, height, background, backend, check=True):
    for name, v in (("width", width), ("height", height)):
        if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
            raise ValueError(f"{name} must be a positive int, got {v!r}")
    check_tensor("means3d", means3d, (None, 3), finite=False)  # its values are scanned once, below
    device, n = means3d.device, means3d.shape[0]
    backend = resolve_backend(backend, device)
    dtypes = (torch.float32,) if backend == "triton" else (torch.float32, torch.float64)
    if means3d.dtype not in dtypes:
        raise ValueError(f"means3d must be float32 for backend='triton' (float64 only with backend='torch'), got {means3d.dtype}")
    dtypes = (means3d.dtype,)
    check_tensor("means3d", means3d, (None, 3), dtypes, finite=check)
    check_tensor("quats", quats, (n, 4), dtypes, device, finite=check)
    check_tensor("scales", scales, (n, 3), dtypes, device, finite=check)
    check_tensor("opacities", opacities, (n,), dtypes, device, finite=check)
    if not isinstance(colors, torch.Tensor) or colors.dim() != 2:
        check_tensor("colors", colors, (n, None), dtypes, device, finite=check)
    check_tensor("colors", colors, (n, colors.shape[1]), dtypes, device, finite=check)
    check_tensor("viewmat", viewmat, (4, 4), dtypes, device, finite=check)
    check_tensor("K", K, (3, 3), dtypes, device, finite=check)
    if background is not None:
        check_tensor("background", background, (colors.shape[1],), dtypes, device, finite=check)
    if not check:  # the value scans below each wait for the GPU
        return means3d, quats, scales, opacities, colors, viewmat, K, background, backend
    if n and bool((quats.detach().norm(dim=-1) == 0).any()):
        raise ValueError("quats holds rows of zero length: a rotation needs a non-zero (w, x, y, z)")
    if n and bool((scales.detach() <= 0).any()):
        raise ValueError("scales must be positive (store log-scales and pass their exp)")
    if bool(K[0, 0] <= 0) or bool(K[1, 1] <= 0):
        raise ValueError("K must have positive focal lengths K[0,0] and K[1,1]")
    return means3d, quats, scales, opacities, colors, viewmat, K, background, backend
