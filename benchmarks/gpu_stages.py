"""Per-stage GPU timings of the rasterizer beside gsplat, the hash grid, and render FPS.

    python benchmarks/gpu_stages.py --out DIR          # on a GPU (about 2 minutes with gsplat)
    python benchmarks/gpu_stages.py --smoke --out DIR  # CPU: tiny sizes, Triton interpreted, to catch errors

Stages, each timed alone with CUDA events (median): project, bin (tile binning and depth
order), blend forward, blend backward, project backward; then rasterize forward and
forward+backward end to end. Scenes: 512x512 with 100k Gaussians, 1920x1080 with 500k, and a
hot-tile scene (> 2,000 Gaussians in one tile). gsplat (if importable) runs the same scenes
through fully_fused_projection, isect_tiles + isect_offset_encode and rasterize_to_pixels.
Then A/B tables on the same scenes: binning with the per-tile rank sort (default) against the
block sort + merge passes, and blending forward/backward for each program shape in
blending.BLEND_SHAPES (the first is the original one program per tile); then the tri-plane
hash grid at 1M x 3 x 14 (both layouts), and render FPS at 512x512 batch 1
of a model the size of a trained one (random Gaussians: preprocessing needs mediapipe and av,
which the GPU machine lacks). Each part writes its Markdown to --out as it finishes; a part that
fails prints FAIL and the script exits 1 at the end.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import time_ms, use_interpreter_without_gpu  # noqa: E402

use_interpreter_without_gpu()
import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from gstalker.kernels import rasterize  # noqa: E402
from gstalker.kernels.binning import bin_tiles  # noqa: E402
from gstalker.kernels.blending import blend  # noqa: E402
from gstalker.kernels.projection import project_gaussians, tile_grid  # noqa: E402
from rasterize import make_scene  # noqa: E402

FAILED: list[str] = []


def hot_tile_scene(n_hot: int, n_rest: int, width: int, height: int, device, seed: int = 1):
    """`make_scene` plus n_hot small Gaussians whose means project into the tile at the image centre."""
    (means3d, quats, scales, opac, colors), viewmat, K = make_scene(n_rest, width, height, "cpu", seed)
    g = torch.Generator().manual_seed(seed + 1)
    f, z = float(K[0, 0]), 3.0
    cx, cy = (width // 32) * 16 + 8.0, (height // 32) * 16 + 8.0  # centre of a tile
    u = cx + (torch.rand(n_hot, generator=g) - 0.5) * 14
    v = cy + (torch.rand(n_hot, generator=g) - 0.5) * 14
    zz = z + torch.rand(n_hot, generator=g)
    hot = torch.stack([(u - width / 2) * zz / f, (v - height / 2) * zz / f, zz], -1)
    parts = [torch.cat([means3d, hot]), torch.cat([quats, torch.randn(n_hot, 4, generator=g)]),
             torch.cat([scales, torch.full((n_hot, 3), 2e-3)]), torch.cat([opac, torch.rand(n_hot, generator=g) * 0.3 + 0.05]),
             torch.cat([colors, torch.rand(n_hot, 3, generator=g)])]
    return [t.to(device) for t in parts], viewmat.to(device), K.to(device)


def ours(tensors, viewmat, K, W, H, device, reps):
    leaves = [t.clone().requires_grad_() for t in tensors]
    means3d, quats, scales, opac, colors = leaves
    with torch.no_grad():
        t_proj = time_ms(lambda: project_gaussians(means3d, quats, scales, viewmat, K, W, H, "triton"), device, reps)
    means2d, conics, depths, radii = project_gaussians(means3d, quats, scales, viewmat, K, W, H, "triton")
    t_bin = time_ms(lambda: bin_tiles(means2d, radii, depths, W, H, "triton", conics, opac), device, reps)
    ids, ranges = bin_tiles(means2d, radii, depths, W, H, "triton", conics, opac)
    with torch.no_grad():
        t_bf = time_ms(lambda: blend(means2d, conics, opac, colors, None, ids, ranges, W, H, "triton"), device, reps)
    img, alpha = blend(means2d, conics, opac, colors, None, ids, ranges, W, H, "triton")
    gi, ga = torch.randn_like(img), torch.randn_like(alpha)
    t_bb = time_ms(lambda: torch.autograd.grad([img, alpha], [means2d, conics, opac, colors], [gi, ga], retain_graph=True),
                   device, reps)
    gm, gc, _, _ = torch.autograd.grad([img, alpha], [means2d, conics, opac, colors], [gi, ga], retain_graph=True)
    t_pb = time_ms(lambda: torch.autograd.grad([means2d, conics], [means3d, quats, scales], [gm, gc], retain_graph=True),
                   device, reps)

    def fwd():
        with torch.no_grad():
            rasterize(*tensors, viewmat, K, W, H, backend="triton", check=False)

    def fwd_bwd():
        im, al, _ = rasterize(*leaves, viewmat, K, W, H, backend="triton", check=False)
        torch.autograd.backward([im, al], [gi, ga])

    counts = ranges[:, 1] - ranges[:, 0]
    extra = f"{len(ids):,} isects, busiest tile {int(counts.max()):,}"
    return [t_proj, t_bin, t_bf, t_bb, t_pb, time_ms(fwd, device, reps), time_ms(fwd_bwd, device, reps)], extra


def theirs(tensors, viewmat, K, W, H, device, reps):
    import gsplat
    from gsplat import fully_fused_projection, isect_offset_encode, isect_tiles, rasterize_to_pixels

    leaves = [t.clone().requires_grad_() for t in tensors]
    means3d, quats, scales, opac, colors = leaves
    vm, Ks = viewmat[None], K[None]
    tw, th = tile_grid(W, H)

    def proj():
        return fully_fused_projection(means3d, None, quats, scales, vm, Ks, W, H, eps2d=0.3, near_plane=0.01)

    with torch.no_grad():
        t_proj = time_ms(proj, device, reps)
    radii, means2d, depths, conics, _ = proj()

    def binning():
        _, isect_ids, flatten_ids = isect_tiles(means2d, radii, depths, 16, tw, th)
        return isect_offset_encode(isect_ids, 1, tw, th), flatten_ids

    t_bin = time_ms(binning, device, reps)
    offsets, flatten_ids = binning()

    def blend_g():
        return rasterize_to_pixels(means2d, conics, colors[None], opac[None], W, H, 16, offsets, flatten_ids)

    with torch.no_grad():
        t_bf = time_ms(blend_g, device, reps)
    img, alpha = blend_g()
    gi, ga = torch.randn_like(img), torch.randn_like(alpha)
    ins = [means2d, conics, opac, colors]
    t_bb = time_ms(lambda: torch.autograd.grad([img, alpha], ins, [gi, ga], retain_graph=True), device, reps)
    gm, gc, _, _ = torch.autograd.grad([img, alpha], ins, [gi, ga], retain_graph=True)
    t_pb = time_ms(lambda: torch.autograd.grad([means2d, conics], [means3d, quats, scales], [gm, gc], retain_graph=True),
                   device, reps)

    def fwd():
        with torch.no_grad():
            gsplat.rasterization(*tensors, vm, Ks, W, H, near_plane=0.01, packed=False)

    def fwd_bwd():
        im, al, _ = gsplat.rasterization(*leaves, vm, Ks, W, H, near_plane=0.01, packed=False)
        torch.autograd.backward([im, al], [gi, ga])

    return [t_proj, t_bin, t_bf, t_bb, t_pb, time_ms(fwd, device, reps), time_ms(fwd_bwd, device, reps)], \
        f"{len(flatten_ids):,} isects"


def part(name, fn):
    try:
        return fn()
    except Exception:  # noqa: BLE001 - report and go on to the next part
        FAILED.append(name)
        print(f"FAIL {name}:\n{traceback.format_exc()}", flush=True)
        return None


def table(head, rows):
    out = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    out += ["| " + " | ".join(f"{c:.3f}" if isinstance(c, float) else str(c) for c in r) + " |" for r in rows]
    return "\n".join(out) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("gpu_stages_out"))
    ap.add_argument("--smoke", action="store_true", help="tiny sizes on a CPU (Triton interpreted): checks the script runs")
    ap.add_argument("--no-gsplat", action="store_true")
    ap.add_argument("--parts", default="raster,ab,hashgrid,fps")
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type == "cpu" and not args.smoke:
        print("no CUDA device: use --smoke on a CPU", file=sys.stderr)
        return 2
    smoke = args.smoke
    reps = 1 if smoke else 20
    name = torch.cuda.get_device_name() if device.type == "cuda" else "CPU (Triton interpreted)"
    header = f"{name}; torch {torch.__version__}; triton {__import__('triton').__version__}\n\n"
    parts = args.parts.split(",")

    if "raster" in parts:
        scenes = [("512x512, 100k", lambda: make_scene(100_000, 512, 512, device), 512, 512),
                  ("1920x1080, 500k", lambda: make_scene(500_000, 1920, 1080, device), 1920, 1080),
                  ("hot tile 2,500 + 50k, 512x512", lambda: hot_tile_scene(2_500, 50_000, 512, 512, device), 512, 512)]
        if smoke:
            scenes = [("48x32, 300", lambda: make_scene(300, 48, 32, device), 48, 32),
                      ("hot tile 40 + 100, 32x32", lambda: hot_tile_scene(40, 100, 32, 32, device), 32, 32)]
        use_gsplat = device.type == "cuda" and not args.no_gsplat
        if use_gsplat:
            part("gsplat import", lambda: __import__("gsplat"))
            use_gsplat = "gsplat import" not in FAILED
        head = ["scene", "renderer", "project", "bin", "blend fwd", "blend bwd", "project bwd", "rasterize fwd",
                "rasterize fwd+bwd", "notes"]
        rows = []
        for label, make, W, H in scenes:
            tensors, viewmat, K = make()
            got = part(f"ours {label}", lambda: ours(tensors, viewmat, K, W, H, device, reps))
            if got:
                rows.append([label, "gstalker (Triton)", *got[0], got[1]])
            if use_gsplat:
                got = part(f"gsplat {label}", lambda: theirs(tensors, viewmat, K, W, H, device, reps))
                if got:
                    rows.append([label, "gsplat", *got[0], got[1]])
            (args.out / "stages.md").write_text(header + "Milliseconds, median of CUDA-event timings\n\n" + table(head, rows))
            if device.type == "cuda":
                torch.cuda.empty_cache()
        print(table(head, rows), flush=True)

    if "ab" in parts:
        import gstalker.kernels.binning as binning
        import gstalker.kernels.blending as blending

        scenes = [("512x512, 100k", lambda: make_scene(100_000, 512, 512, device), 512, 512),
                  ("1920x1080, 500k", lambda: make_scene(500_000, 1920, 1080, device), 1920, 1080),
                  ("hot tile 2,500 + 50k, 512x512", lambda: hot_tile_scene(2_500, 50_000, 512, 512, device), 512, 512)]
        if smoke:
            scenes = [("hot tile 8 + 10, 32x32", lambda: hot_tile_scene(8, 10, 32, 32, device), 32, 32)]
        warm = 0 if smoke else 2
        rows_bin, rows_blend = [], []
        default = (blending.BLEND_ROWS, blending.BLEND_WARPS, blending.BLEND_SKIP, blending.BLEND_PREFETCH)
        blending.BLEND_INTERPRETER_WHOLE_TILE = False  # (smoke) run each shape as it is named
        for label, make, W, H in scenes:
            def one_scene():
                tensors, viewmat, K = make()
                means3d, quats, scales, opac, colors = [t.clone().requires_grad_() for t in tensors]
                with torch.no_grad():
                    means2d, conics, depths, radii = project_gaussians(means3d, quats, scales, viewmat, K, W, H, "triton")
                for sort in ("rank", "merge"):
                    binning.SORT = sort
                    ms = time_ms(lambda: bin_tiles(means2d, radii, depths, W, H, "triton", conics, opac), device, reps, warm)
                    rows_bin.append([label, sort + (" (default)" if sort == "rank" else ""), ms])
                binning.SORT = "rank"
                ids, ranges = bin_tiles(means2d, radii, depths, W, H, "triton", conics, opac)
                m2, co, op, col = [t.detach().clone().requires_grad_() for t in (means2d, conics, opac, colors)]
                ref = None
                shapes = blending.BLEND_SHAPES if not smoke else [blending.BLEND_SHAPES[0], default]
                for shape in shapes:
                    blending.BLEND_ROWS, blending.BLEND_WARPS, blending.BLEND_SKIP, blending.BLEND_PREFETCH = shape
                    with torch.no_grad():
                        t_f = time_ms(lambda: blend(m2, co, op, col, None, ids, ranges, W, H, "triton"), device, reps, warm)
                    img, alpha = blend(m2, co, op, col, None, ids, ranges, W, H, "triton")
                    g = torch.Generator(device=device).manual_seed(0)
                    gi = torch.randn(img.shape, device=device, generator=g)
                    ga = torch.randn(alpha.shape, device=device, generator=g)
                    t_b = time_ms(lambda: torch.autograd.grad([img, alpha], [m2, co, op, col], [gi, ga], retain_graph=True),
                                  device, reps, warm)
                    grads = torch.autograd.grad([img, alpha], [m2, co, op, col], [gi, ga])
                    if ref is None:
                        ref = [img.detach()] + list(grads)
                    diff = max(float((a - b).abs().max() / (b.abs().max() + 1e-12)) for a, b in zip([img.detach()] + list(grads), ref))
                    name = "rows %d, warps %d, skip %s, prefetch %s" % shape
                    tag = " (default)" if shape == default else (" (original)" if shape == blending.BLEND_SHAPES[0] else "")
                    rows_blend.append([label, name + tag, t_f, t_b, f"{diff:.1e}"])
                blending.BLEND_ROWS, blending.BLEND_WARPS, blending.BLEND_SKIP, blending.BLEND_PREFETCH = default

            part(f"A/B {label}", one_scene)
            binning.SORT = "rank"
            blending.BLEND_ROWS, blending.BLEND_WARPS, blending.BLEND_SKIP, blending.BLEND_PREFETCH = default
            text = (header + "Milliseconds, median of CUDA-event timings\n\nBinning, per-tile sort\n\n"
                    + table(["scene", "sort", "bin ms"], rows_bin)
                    + "\nBlending by program shape (max relative difference of image and gradients to the original)\n\n"
                    + table(["scene", "shape", "blend fwd", "blend bwd", "max rel diff"], rows_blend))
            (args.out / "ab.md").write_text(text)
            if device.type == "cuda":
                torch.cuda.empty_cache()
        print(text, flush=True)

    if "hashgrid" in parts:
        import gstalker.kernels.hashgrid as hg
        from hashgrid import bench

        rows = []
        points = 5_000 if smoke else 1_000_000
        for one in (False, True):
            hg.HASHGRID_ONE_LEVEL = one
            layout = "one level per program" if one else "levels looped in a program"
            got = part(f"hashgrid {layout}", lambda: bench("triton", points, device, 1 if smoke else 50, 1 if smoke else 10, 14, 14))
            for b, pas, n, ms, gbs in got or []:
                rows.append([layout, pas, f"{n:,}", ms, gbs])
        hg.HASHGRID_ONE_LEVEL = False
        text = table(["layout", "pass", "points x 3 planes x 14 levels", "ms", "GB/s (compulsory)"], rows)
        (args.out / "hashgrid.md").write_text(header + text)
        print(text, flush=True)

    if "fps" in parts:
        def fps():
            from speak import stand_in_model

            size, nh, nt = (64, 300, 100) if smoke else (512, 60_000, 20_000)
            model = stand_in_model(size, nh, nt, device)
            cache = model.inference_cache()
            code = torch.randn(model.face.audio_dim, device=device)
            poses = model.poses.to(device)
            k = iter(range(10**9))

            def one():
                with torch.no_grad():
                    model.render(code, poses[next(k) % len(poses)], 0.5, cache=cache)

            ms = time_ms(one, device, 2 if smoke else 200, 3)
            return [[f"random stand-in, {nh:,} head + {nt:,} torso Gaussians (untrained)", f"{size}x{size}", ms, 1000 / ms]]

        rows = part("render fps", fps) or []
        text = table(["model", "size", "ms/frame", "frames/s"], rows)
        (args.out / "fps.md").write_text(header + "TalkerModel.render, batch 1, inference cache, check=False\n\n" + text)
        print(text, flush=True)

    for name in FAILED:
        print(f"FAIL {name}", file=sys.stderr)
    return 1 if FAILED else 0


if __name__ == "__main__":
    sys.exit(main())
