"""A small random Gaussian scene rendered from a few cameras: the rasterizer working, in seconds."""

from __future__ import annotations

import math
from pathlib import Path

import torch


def demo_scene(n: int = 3000, seed: int = 0, device="cpu"):
    """A colourful torus of `n` Gaussians around the origin: (means3d, quats, scales, opacities, colors)."""
    g = torch.Generator().manual_seed(seed)
    u = torch.rand(n, generator=g) * 2 * math.pi
    v = torch.rand(n, generator=g) * 2 * math.pi
    major, minor = 1.0, 0.35
    means3d = torch.stack(
        [(major + minor * torch.cos(v)) * torch.cos(u), minor * torch.sin(v), (major + minor * torch.cos(v)) * torch.sin(u)],
        dim=-1,
    )
    quats = torch.randn(n, 4, generator=g)
    scales = torch.rand(n, 3, generator=g) * 0.05 + 0.02
    opacities = torch.rand(n, generator=g) * 0.5 + 0.5
    hue = u / (2 * math.pi)
    colors = torch.stack([hue, 0.5 + 0.5 * torch.sin(v), 1 - hue], dim=-1).clamp(0, 1)
    return [t.to(device) for t in (means3d, quats, scales, opacities, colors)]


def orbit_viewmat(angle: float, elevation: float = 0.5, distance: float = 4.0) -> torch.Tensor:
    """World-to-camera matrix (OpenCV) of a camera on a circle, looking at the origin."""
    eye = torch.tensor([distance * math.sin(angle) * math.cos(elevation), -distance * math.sin(elevation),
                        -distance * math.cos(angle) * math.cos(elevation)])
    forward = -eye / eye.norm()
    right = torch.linalg.cross(torch.tensor([0.0, 1.0, 0.0]), forward)
    right = right / right.norm()
    down = torch.linalg.cross(forward, right)
    R = torch.stack([right, down, forward])  # rows: camera axes in world
    viewmat = torch.eye(4)
    viewmat[:3, :3] = R
    viewmat[:3, 3] = -R @ eye
    return viewmat


def render_demo(out_dir: str | Path, size: int = 256, views: int = 4, device: str = "auto", backend: str = "auto") -> list[Path]:
    """Render the demo scene from `views` cameras into `out_dir/view_XX.png`; returns the paths."""
    from torchvision.io import write_png

    from .kernels import rasterize

    from .api import resolve_device

    device = resolve_device(device)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    scene = demo_scene(device=device)
    K = torch.tensor([[size * 1.2, 0, size / 2], [0, size * 1.2, size / 2], [0, 0, 1]], device=device)
    background = torch.tensor([0.08, 0.08, 0.1], device=device)
    paths = []
    for i in range(views):
        viewmat = orbit_viewmat(2 * math.pi * i / views).to(device)
        with torch.no_grad():
            image, _, _ = rasterize(*scene, viewmat, K, size, size, background=background, backend=backend)
        path = out_dir / f"view_{i:02d}.png"
        tmp = path.with_suffix(".tmp.png")
        write_png((image.clamp(0, 1) * 255).round().to(torch.uint8).permute(2, 0, 1).cpu(), str(tmp))
        tmp.replace(path)
        paths.append(path)
    return paths
