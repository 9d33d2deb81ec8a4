"""Benchmark the Gaussian rasterizer: Triton vs the torch backend (and gsplat when installed).

    python benchmarks/rasterize.py            # GPU: 10k/100k/500k Gaussians at 512x512 and 1920x1080
    python benchmarks/rasterize.py --quick    # CPU: small scenes, torch backend and interpreted Triton (~1 min)

Scenes are random Gaussians in front of the camera, sized like a trained head model (a few
pixels each). Prints forward and forward+backward milliseconds (median) and peak GPU memory, and
a second table comparing the two tile orderings (Triton counting sort + per-tile sort vs torch.sort).
Targets (issue 3): forward+backward no slower than gsplat's CUDA rasterizer; 512x512 with 100k
Gaussians forward under 2 ms.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import device_name, peak_memory_mb, print_table, time_ms, use_interpreter_without_gpu  # noqa: E402

use_interpreter_without_gpu()

import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from gstalker.kernels import rasterize  # noqa: E402
from gstalker.kernels.binning import bin_tiles  # noqa: E402
from gstalker.kernels.projection import project_gaussians  # noqa: E402


def make_scene(n: int, width: int, height: int, device, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    aspect = width / height
    means3d = (torch.rand(n, 3, generator=g) * 2 - 1) * torch.tensor([aspect, 1.0, 0.4]) + torch.tensor([0.0, 0.0, 3.0])
    quats = torch.randn(n, 4, generator=g)
    scales = torch.exp(torch.rand(n, 3, generator=g) * 2 - 6.5)  # 1.5e-3 .. 1.1e-2
    opacities = torch.rand(n, generator=g) * 0.9 + 0.05
    colors = torch.rand(n, 3, generator=g)
    f = 1.2 * height
    K = torch.tensor([[f, 0, width / 2], [0, f, height / 2], [0, 0, 1]])
    tensors = [t.to(device) for t in (means3d, quats, scales, opacities, colors)]
    return tensors, torch.eye(4, device=device), K.to(device)


def gsplat_fn():
    try:
        import gsplat
    except ImportError:
        return None

    def render(means3d, quats, scales, opacities, colors, viewmat, K, width, height):
        img, alpha, _ = gsplat.rasterization(means3d, quats, scales, opacities, colors, viewmat[None], K[None],
                                             width, height, near_plane=0.01, packed=False)
        return img[0], alpha[0]

    return render


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small scenes that finish in about a minute on a CPU")
    parser.add_argument("--repeats", type=int, default=None)
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if args.quick or device.type == "cpu":
        sizes = [(2_000, 128, 128), (10_000, 256, 256)]
        repeats = args.repeats or 2
    else:
        sizes = [(n, w, h) for n in (10_000, 100_000, 500_000) for (w, h) in ((512, 512), (1920, 1080))]
        repeats = args.repeats or 20
    backends = ["triton", "torch"]
    if device.type == "cpu":
        backends = ["torch", "triton"]  # Triton runs interpreted: a correctness path, not a speed one
    render_gsplat = gsplat_fn() if device.type == "cuda" else None

    rows, sort_rows = [], []
    for n, width, height in sizes:
        tensors, viewmat, K = make_scene(n, width, height, device)
        candidates = [(b, lambda *a, b=b: rasterize(*a, backend=b)[:2]) for b in backends]
        if render_gsplat is not None:
            candidates.append(("gsplat", render_gsplat))
        for name, fn in candidates:
            if device.type == "cpu" and name == "triton" and n > 2_000:
                continue  # the interpreter takes minutes here
            leaves = [t.clone().requires_grad_() for t in tensors]

            def fwd():
                with torch.no_grad():
                    fn(*tensors, viewmat, K, width, height)

            def fwd_bwd():
                img, alpha = fn(*leaves, viewmat, K, width, height)
                (img.sum() + alpha.sum()).backward()

            reps = 1 if (device.type == "cpu" and name == "triton") else repeats
            try:
                t_f = time_ms(fwd, device, reps, warmup=1)
                t_fb = time_ms(fwd_bwd, device, reps, warmup=1)
                m_f = peak_memory_mb(fwd, device)
                m_fb = peak_memory_mb(fwd_bwd, device)
            except torch.OutOfMemoryError:
                rows.append([name, n, f"{width}x{height}", "OOM", "OOM", None, None])
                torch.cuda.empty_cache()
                continue
            rows.append([name, n, f"{width}x{height}", t_f, t_fb, m_f, m_fb])

        if device.type == "cuda" or n <= 2_000:
            for order in ("triton", "torch"):
                if device.type == "cpu" and order == "triton" and n > 2_000:
                    continue
                with torch.no_grad():
                    means2d, _, depths, radii = project_gaussians(*tensors[:3], viewmat, K, width, height,
                                                                  "triton" if device.type == "cuda" else "torch")
                    ids, _ = bin_tiles(means2d, radii, depths, width, height, order)
                t = time_ms(lambda: bin_tiles(means2d, radii, depths, width, height, order), device,
                            repeats if device.type == "cuda" else 1, warmup=1)
                sort_rows.append([order, n, f"{width}x{height}", ids.numel(), t])

    print(f"device: {device_name(device)}, torch {torch.__version__}")
    print_table(["backend", "gaussians", "image", "forward ms", "fwd+bwd ms", "forward peak MB", "fwd+bwd peak MB"],
                rows, "Rasterize (median ms; peak memory above what was allocated before)")
    print_table(["ordering", "gaussians", "image", "intersections", "binning+sort ms"], sort_rows,
                "Tile binning and depth ordering")


if __name__ == "__main__":
    main()
