"""The rasterizer: Triton kernels (under the interpreter on CPU) against the torch backend, and
the torch backend against independent maths."""

import math

import pytest
import torch

import gstalker.kernels.binning as binning
import gstalker.kernels.blending as blending
from gstalker.kernels import rasterize
from gstalker.kernels._backend import interpreting
from gstalker.kernels.binning import bin_tiles_torch, bin_tiles_triton
from gstalker.kernels.projection import project_torch
from kernel_compare import assert_grads_match, assert_images_match, assert_radii_match, assert_tile_lists_match

# On a GPU machine (no interpreter) the same comparisons run on CUDA tensors.
DEVICE = "cuda" if torch.cuda.is_available() and not interpreting() else "cpu"


def make_scene(n, channels, seed=0, spread=(0.8, 0.6, 0.5), opacity=(0.05, 0.95), scale=(0.02, 0.17), dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    means3d = torch.randn(n, 3, generator=g) * torch.tensor(spread) + torch.tensor([0.0, 0.0, 3.0])
    quats = torch.randn(n, 4, generator=g)
    scales = torch.rand(n, 3, generator=g) * (scale[1] - scale[0]) + scale[0]
    opacities = torch.rand(n, generator=g) * (opacity[1] - opacity[0]) + opacity[0]
    colors = torch.rand(n, channels, generator=g)
    background = torch.rand(channels, generator=g)
    return [t.to(DEVICE, dtype).requires_grad_() for t in (means3d, quats, scales, opacities, colors, background)]


def camera(width, height, dtype=torch.float32, angle=0.2):
    viewmat = torch.eye(4, dtype=dtype)
    c, s = math.cos(angle), math.sin(angle)
    viewmat[:3, :3] = torch.tensor([[c, 0, s], [0, 1, 0], [-s, 0, c]], dtype=dtype)
    viewmat[:3, 3] = torch.tensor([0.05, -0.1, 0.2], dtype=dtype)
    K = torch.tensor([[1.1 * width, 0, width / 2], [0, 1.1 * width, height / 2], [0, 0, 1]], dtype=dtype)
    return viewmat.to(DEVICE), K.to(DEVICE)


def render(scene, width, height, backend, background=True):
    means3d, quats, scales, opacities, colors, bg = scene
    viewmat, K = camera(width, height, dtype=means3d.dtype)
    return rasterize(means3d, quats, scales, opacities, colors, viewmat, K, width, height,
                     background=bg if background else None, backend=backend)


SCENES = [
    # n, channels, width, height
    (150, 3, 40, 30),
    (300, 5, 64, 64),
    (60, 1, 17, 33),
]


@pytest.mark.parametrize("n,channels,width,height", SCENES)
def test_triton_forward_matches_torch(n, channels, width, height):
    scene = make_scene(n, channels)
    img_t, alpha_t, meta_t = render(scene, width, height, "torch")
    img_k, alpha_k, meta_k = render(scene, width, height, "triton")
    assert img_k.shape == (height, width, channels) and alpha_k.shape == (height, width, 1)
    assert alpha_t.mean() > 0.1, "scene should cover the image"
    assert_images_match(img_k, img_t)
    assert_images_match(alpha_k, alpha_t, what="alpha")
    assert_radii_match(meta_k["radii"], meta_t["radii"])
    assert (meta_t["radii"] > 0).sum() > n // 2
    torch.testing.assert_close(meta_k["means2d"], meta_t["means2d"], atol=1e-4, rtol=1e-5)
    torch.testing.assert_close(meta_k["depths"], meta_t["depths"])
    assert_tile_lists_match(meta_k["isect_ids"], meta_k["tile_ranges"], meta_t["isect_ids"], meta_t["tile_ranges"],
                            meta_t["depths"])


def _grads(scene, width, height, backend, weights):
    img, alpha, meta = render(scene, width, height, backend)
    meta["means2d"].retain_grad()
    loss = (img * weights[0]).sum() + (alpha * weights[1]).sum()
    for t in scene:
        t.grad = None
    loss.backward()
    return [t.grad.clone() for t in scene] + [meta["means2d"].grad.clone()]


# the larger scene takes minutes under the interpreter: slow (pytest -m "not slow" skips it)
@pytest.mark.parametrize("n,channels,width,height", [SCENES[0], pytest.param(*SCENES[1], marks=pytest.mark.slow)])
def test_triton_gradients_match_torch(n, channels, width, height):
    scene = make_scene(n, channels, seed=1)
    g = torch.Generator().manual_seed(2)
    weights = (torch.randn(height, width, channels, generator=g).to(DEVICE), torch.randn(height, width, 1, generator=g).to(DEVICE))
    ref = _grads(scene, width, height, "torch", weights)
    got = _grads(scene, width, height, "triton", weights)
    for name, a, b in zip(["means3d", "quats", "scales", "opacities", "colors", "background", "means2d"], got, ref):
        assert b.abs().max() > 0, f"{name}: reference gradient is all zero"
        assert_grads_match(a, b, f"{name} gradient")


# each shape takes a minute or two under the interpreter (the fast loop's forward and gradient
# tests run the default shape)
@pytest.mark.slow
@pytest.mark.parametrize("shape", blending.BLEND_SHAPES, ids=lambda s: "rows%d-warps%d-skip%d-pre%d" % s)
def test_every_blend_program_shape_matches_torch(monkeypatch, shape):
    """Each program shape the GPU benchmark compares (one program per tile or per 1-4 rows of 32
    lanes, skipping Gaussians that reach none of its pixels, prefetching the next one) renders
    and differentiates like the torch backend, 5 channels (two channel groups), stops included."""
    monkeypatch.setattr(blending, "BLEND_ROWS", shape[0])
    monkeypatch.setattr(blending, "BLEND_WARPS", shape[1])
    monkeypatch.setattr(blending, "BLEND_SKIP", shape[2])
    monkeypatch.setattr(blending, "BLEND_PREFETCH", shape[3])
    monkeypatch.setattr(blending, "BLEND_INTERPRETER_WHOLE_TILE", False)
    scene = make_scene(90, 5, seed=3, spread=(0.5, 0.5, 0.3), opacity=(0.5, 0.98), scale=(0.03, 0.2))
    g = torch.Generator().manual_seed(2)
    weights = (torch.randn(20, 24, 5, generator=g).to(DEVICE), torch.randn(20, 24, 1, generator=g).to(DEVICE))
    img_t, alpha_t, _ = render(scene, 24, 20, "torch")
    img_k, alpha_k, _ = render(scene, 24, 20, "triton")
    assert (alpha_t > 1 - 1e-3).float().mean() > 0.02 and (alpha_t < 0.5).float().mean() > 0.1  # stops and gaps
    assert_images_match(img_k, img_t)
    assert_images_match(alpha_k, alpha_t, what="alpha")
    for a, b in zip(_grads(scene, 24, 20, "triton", weights), _grads(scene, 24, 20, "torch", weights)):
        assert_grads_match(a, b)


@pytest.mark.slow  # the longest per-tile lists: most of a minute under the interpreter
def test_dense_scene_stops_early_and_matches():
    """Many opaque Gaussians: pixels reach the 1e-4 transmittance stop; both backends agree."""
    scene = make_scene(120, 3, seed=3, spread=(0.3, 0.3, 0.3), opacity=(0.8, 0.98), scale=(0.1, 0.3))
    img_t, alpha_t, _ = render(scene, 24, 20, "torch")
    img_k, alpha_k, _ = render(scene, 24, 20, "triton")
    assert (alpha_t > 1 - 1e-3).float().mean() > 0.2
    assert_images_match(img_k, img_t)
    g = torch.Generator().manual_seed(4)
    weights = (torch.randn(20, 24, 3, generator=g).to(DEVICE), torch.randn(20, 24, 1, generator=g).to(DEVICE))
    for a, b in zip(_grads(scene, 24, 20, "triton", weights), _grads(scene, 24, 20, "torch", weights)):
        assert_grads_match(a, b)


@pytest.mark.parametrize("cull", [False, True])
@pytest.mark.parametrize("sort,sort_block", [pytest.param("rank", 4, marks=pytest.mark.slow), ("rank", 128),
                                             ("merge", 4), ("merge", 128)])
def test_triton_binning_matches_torch_sort(monkeypatch, sort, sort_block, cull):
    """Counting sort + per-tile sort (by rank in row blocks and chunks, or blocks and merge passes
    when tiles exceed a block) equals torch.sort, depth ties broken by index."""
    monkeypatch.setattr(binning, "SORT", sort)
    monkeypatch.setattr(binning, "SORT_BLOCK", sort_block)
    monkeypatch.setattr(binning, "RANK_BLOCK", sort_block)
    monkeypatch.setattr(binning, "RANK_CHUNK", max(2, sort_block // 4))
    monkeypatch.setattr(binning, "RANK_SPLIT", 3)  # several row blocks per program
    g = torch.Generator().manual_seed(5)
    n, width, height = 400, 70, 50
    means2d = torch.rand(n, 2, generator=g) * torch.tensor([width + 20.0, height + 20.0]) - 10
    radii = torch.randint(0, 25, (n,), generator=g, dtype=torch.int32)
    depths = torch.rand(n, generator=g) * 4 + 0.5
    depths[:50] = depths[50:100]  # exact ties
    extra = {}
    if cull:
        a, c = torch.rand(n, generator=g) * 0.05 + 0.01, torch.rand(n, generator=g) * 0.05 + 0.01
        extra = dict(conics=torch.stack([a, (torch.rand(n, generator=g) - 0.5) * 0.8 * (a * c).sqrt(), c], -1),
                     opacities=torch.rand(n, generator=g))
    means2d, radii, depths = means2d.to(DEVICE), radii.to(DEVICE), depths.to(DEVICE)
    extra = {k: v.to(DEVICE) for k, v in extra.items()}
    ids_t, ranges_t = bin_tiles_torch(means2d, radii, depths, width, height, **extra)
    ids_k, ranges_k = bin_tiles_triton(means2d, radii, depths, width, height, **extra)
    if cull:
        assert len(ids_t) < 0.9 * len(bin_tiles_torch(means2d, radii, depths, width, height)[0])
    assert (ranges_t[:, 1] - ranges_t[:, 0]).max() > 4 * sort_block or sort_block == 128
    assert_tile_lists_match(ids_k, ranges_k, ids_t, ranges_t, depths)
    # each tile's list is front to back
    for s, e in ranges_t.tolist():
        d = depths[ids_t[s:e].long()]
        assert bool((d[1:] >= d[:-1]).all())


class _ScatterWithOtherOpacities:
    """Stands in for `_tile_scatter_kernel`: launches it with the opacities scaled, so its
    tile-hit test disagrees with the count pass's (as two compilations of one float test could)."""

    def __init__(self, kernel, scale):
        self.kernel, self.scale = kernel, scale

    def __getitem__(self, grid):
        def launch(*args, **kwargs):
            args = list(args)
            args[3] = (args[3] * self.scale).clamp(max=1.0).contiguous()  # opac_ptr
            return self.kernel[grid](*args, **kwargs)
        return launch


@pytest.mark.parametrize("scale", [0.3, pytest.param(3.0, marks=pytest.mark.slow)],
                         ids=["scatter-finds-fewer", "scatter-finds-more"])
def test_binning_disagreement_never_reaches_blending(monkeypatch, scale):
    """If the scatter pass hits fewer tiles than the count pass, the unfilled slots keep sentinel
    keys that are cut off the tile's range; if it hits more, the surplus is never written into
    another tile's bucket. Either way blending reads only real ids (< N), each tile's list is a
    subset of the Gaussians whose rectangle covers it, distinct and front to back."""
    from gstalker.kernels.blending import blend
    from gstalker.kernels.projection import tile_rects

    g = torch.Generator().manual_seed(11)
    n, width, height = 300, 64, 48
    means2d = (torch.rand(n, 2, generator=g) * torch.tensor([width + 0.0, height + 0.0])).to(DEVICE)
    radii = torch.randint(1, 20, (n,), generator=g, dtype=torch.int32).to(DEVICE)
    depths = (torch.rand(n, generator=g) * 4 + 0.5).to(DEVICE)
    a, c = torch.rand(n, generator=g) * 0.05 + 0.01, torch.rand(n, generator=g) * 0.05 + 0.01
    conics = torch.stack([a, (torch.rand(n, generator=g) - 0.5) * 0.8 * (a * c).sqrt(), c], -1).to(DEVICE)
    opacities = (torch.rand(n, generator=g) * 0.3 + 0.02).to(DEVICE)
    ids_ok, _ = bin_tiles_triton(means2d, radii, depths, width, height, conics, opacities)
    monkeypatch.setattr(binning, "_tile_scatter_kernel", _ScatterWithOtherOpacities(binning._tile_scatter_kernel, scale))
    ids, ranges = bin_tiles_triton(means2d, radii, depths, width, height, conics, opacities)
    monkeypatch.undo()
    kept = int((ranges[:, 1] - ranges[:, 0]).sum())
    if scale < 1:
        assert kept < len(ids_ok) and len(ids) == len(ids_ok), "the scatter pass should have found fewer hits"
    else:
        assert kept == len(ids_ok), "every bucket should be full"
        more, _ = bin_tiles_triton(means2d, radii, depths, width, height, conics, (opacities * scale).clamp(max=1.0))
        assert len(more) > len(ids_ok), "the scatter pass should have found more hits"
    rect = tile_rects(means2d, radii, width, height).cpu()
    tiles_x = (width + 15) // 16
    for t, (s, e) in enumerate(ranges.tolist()):
        assert 0 <= s <= e <= len(ids)
        if s == e:
            continue
        lst = ids[s:e].long().cpu()
        assert bool(((lst >= 0) & (lst < n)).all()), f"tile {t}: an id outside [0, {n}) would reach blending"
        assert len(set(lst.tolist())) == len(lst), f"tile {t}: an id twice"
        tx, ty = t % tiles_x, t // tiles_x
        r = rect[lst]
        assert bool(((r[:, 0] <= tx) & (tx < r[:, 2]) & (r[:, 1] <= ty) & (ty < r[:, 3])).all()), f"tile {t}: a foreign id"
        d = depths.cpu()[lst]
        assert bool((d[1:] >= d[:-1]).all())
    # and the blend of that list runs and agrees between the backends
    colors = torch.rand(n, 3, generator=g).to(DEVICE)
    img_k, _ = blend(means2d, conics, opacities, colors, None, ids, ranges, width, height, "triton")
    img_t, _ = blend(means2d, conics, opacities, colors, None, ids, ranges, width, height, "torch")
    assert bool(torch.isfinite(img_k).all())
    assert_images_match(img_k, img_t, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_single_isotropic_gaussian_is_analytic(backend):
    """A round Gaussian on the optical axis: alpha(d) = o exp(-d^2 / 2 s2d^2), s2d^2 = (f s / z)^2 + 0.3."""
    width, height, f, z, s, o = 40, 36, 50.0, 4.0, 0.2, 0.7
    dev = {"device": DEVICE}
    means3d = torch.tensor([[0.0, 0.0, z]], **dev)
    quats = torch.tensor([[1.0, 0.0, 0.0, 0.0]], **dev)
    scales = torch.full((1, 3), s, **dev)
    color = torch.tensor([[0.9, 0.2, 0.4]], **dev)
    bg = torch.tensor([0.1, 0.5, 0.3], **dev)
    K = torch.tensor([[f, 0, 20.0], [0, f, 18.0], [0, 0, 1]], **dev)
    img, alpha, meta = rasterize(means3d, quats, scales, torch.tensor([o], **dev), color, torch.eye(4, **dev), K,
                                 width, height, background=bg, backend=backend)
    img, alpha, meta["means2d"] = img.cpu(), alpha.cpu(), meta["means2d"].cpu()
    color, bg = color.cpu(), bg.cpu()
    var = (f * s / z) ** 2 + 0.3
    v, u = torch.meshgrid(torch.arange(height) + 0.5, torch.arange(width) + 0.5, indexing="ij")
    d2 = (u - 20.0) ** 2 + (v - 18.0) ** 2
    want = o * torch.exp(-0.5 * d2 / var)
    want = torch.where(want >= 1 / 255, want, torch.zeros_like(want))
    assert_images_match(alpha[..., 0], want, atol=1e-6, what="alpha")
    assert_images_match(img, want[..., None] * color + (1 - want[..., None]) * bg, atol=1e-6)
    assert int(meta["radii"][0]) == math.ceil(3 * math.sqrt(var))
    torch.testing.assert_close(meta["means2d"], torch.tensor([[20.0, 18.0]]))


def test_torch_backend_gradcheck_float64():
    scene = make_scene(5, 2, seed=6, spread=(0.3, 0.3, 0.3), opacity=(0.2, 0.8), scale=(0.2, 0.5), dtype=torch.float64)
    viewmat, K = camera(12, 10, dtype=torch.float64)
    K[0, 0] = K[1, 1] = 16.0

    def fn(means3d, quats, scales, opacities, colors, bg):
        img, alpha, _ = rasterize(means3d, quats, scales, opacities, colors, viewmat, K, 12, 10,
                                  background=bg, backend="torch")
        return img, alpha

    assert fn(*scene)[1].mean() > 0.1
    assert torch.autograd.gradcheck(fn, tuple(scene), eps=1e-6, atol=1e-5, rtol=1e-4)


def test_projection_matches_dense_maths():
    """The 2D covariance against a direct J W Sigma W^T J^T built with torch.linalg."""
    means3d, quats, scales, *_ = make_scene(20, 3, seed=7, dtype=torch.float64)
    viewmat, K = camera(50, 40, dtype=torch.float64)
    means2d, conics, depths, radii = project_torch(means3d, quats, scales, viewmat, K, 50, 40)
    q = torch.nn.functional.normalize(quats, dim=-1)
    for i in range(20):
        w, x, y, z = q[i].tolist()
        R = torch.tensor([[1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
                          [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
                          [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)]], dtype=torch.float64,
                         device=means3d.device)
        assert torch.allclose(R @ R.T, torch.eye(3, dtype=torch.float64, device=means3d.device))
        S = torch.diag(scales[i].detach())
        p = viewmat[:3, :3] @ means3d[i].detach() + viewmat[:3, 3]
        fx, fy = K[0, 0], K[1, 1]
        lx, ly = 1.3 * 25 / fx, 1.3 * 20 / fy
        tx, ty = p[2] * (p[0] / p[2]).clamp(-lx, lx), p[2] * (p[1] / p[2]).clamp(-ly, ly)
        J = torch.stack([torch.stack([fx / p[2], 0 * fx, -fx * tx / p[2] ** 2]),
                         torch.stack([0 * fy, fy / p[2], -fy * ty / p[2] ** 2])])
        cov = J @ viewmat[:3, :3] @ R @ S @ S.T @ R.T @ viewmat[:3, :3].T @ J.T + \
            0.3 * torch.eye(2, dtype=torch.float64, device=means3d.device)
        if radii[i] > 0:
            inv = torch.linalg.inv(cov)
            torch.testing.assert_close(conics[i].detach(), torch.stack([inv[0, 0], inv[0, 1], inv[1, 1]]))
            torch.testing.assert_close(means2d[i].detach(), torch.stack([fx * p[0] / p[2] + K[0, 2], fy * p[1] / p[2] + K[1, 2]]))
            assert int(radii[i]) == math.ceil(3 * math.sqrt(float(torch.linalg.eigvalsh(cov).max())))


@pytest.mark.parametrize("backend", ["torch", "triton"])
@pytest.mark.parametrize("case", ["empty", "behind", "offscreen"])
def test_nothing_visible_renders_background_with_zero_gradients(backend, case):
    n = 0 if case == "empty" else 10
    scene = make_scene(n, 3, seed=8)
    with torch.no_grad():
        if case == "behind":
            scene[0][:, 2] = -3.0
        if case == "offscreen":
            scene[0][:, 0] = 40.0
    img, alpha, meta = render(scene, 20, 20, backend)
    torch.testing.assert_close(img, scene[5].detach().expand(20, 20, 3))
    assert alpha.abs().max() == 0
    assert (meta["radii"] == 0).all()
    (img.sum() + alpha.sum()).backward()
    for t in scene[:5]:
        assert t.grad is not None and t.grad.abs().max() == 0 if t.numel() else True
    assert torch.allclose(scene[5].grad, torch.full((3,), 400.0, device=DEVICE))


def test_check_false_renders_the_same_and_skips_value_scans():
    """check=False drops the value scans (host synchronisations on a GPU), nothing else."""
    scene = [t.detach() for t in make_scene(40, 3, seed=12)]
    viewmat, K = camera(20, 16)
    a = rasterize(*scene[:5], viewmat, K, 20, 16, background=scene[5], backend="torch")
    b = rasterize(*scene[:5], viewmat, K, 20, 16, background=scene[5], backend="torch", check=False)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    bad = scene[0].clone()
    bad[0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        rasterize(bad, *scene[1:5], viewmat, K, 20, 16, backend="torch")
    rasterize(bad, *scene[1:5], viewmat, K, 20, 16, backend="torch", check=False)  # no scan, no error
    with pytest.raises(ValueError, match="shape"):  # shapes are still checked
        rasterize(scene[0][:, :2], *scene[1:5], viewmat, K, 20, 16, backend="torch", check=False)


@pytest.mark.skipif(DEVICE != "cuda", reason="counts CUDA host synchronisations")
def test_training_step_synchronises_once_per_rasterize():
    """A training step as the trainer makes it (hash-grid deformation, rasterize with
    check=False, backward, Adam), after warm-up: one host synchronisation per rasterize call
    (reading the number of intersections), none elsewhere."""
    import warnings

    from gstalker.kernels import TriPlaneEncoder

    torch.manual_seed(0)
    means3d, quats, scales, opacities, colors, bg = make_scene(3000, 3, seed=13)
    encoder = TriPlaneEncoder(check=False).to(DEVICE)
    head = torch.nn.Linear(encoder.out_dim, 3).to(DEVICE)
    params = [means3d, quats, scales, opacities, colors, bg, *encoder.parameters(), *head.parameters()]
    opt = torch.optim.Adam(params, lr=1e-5)
    viewmat, K = camera(128, 96)
    target = torch.rand(96, 128, 3, device=DEVICE)

    def step():
        moved = means3d + 0.01 * head(encoder(means3d.detach()))
        img, alpha, _ = rasterize(moved, quats, scales, opacities, colors, viewmat, K, 128, 96, background=bg,
                                  check=False)
        loss = ((img - target) ** 2).mean() + 0.1 * alpha.mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(3):
        step()
    torch.cuda.synchronize()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            step()
        finally:
            torch.cuda.set_sync_debug_mode("default")
    # (the debug mode also warns once that it is a prototype: not a synchronisation)
    syncs = [w for w in caught if "called a synchronizing" in str(w.message)]
    where = "\n".join(f"{w.filename}:{w.lineno}: {w.message}" for w in syncs)
    assert len(syncs) <= 1, f"{len(syncs)} host synchronisations in one step:\n{where}"


def test_auto_backend_picks_triton_on_cuda_and_torch_on_cpu():
    img, _, meta = render(make_scene(10, 3), 16, 16, "auto")
    assert meta["backend"] == ("triton" if DEVICE == "cuda" else "torch")


def _valid_args():
    means3d, quats, scales, opacities, colors, bg = [t.detach() for t in make_scene(4, 3)]
    viewmat, K = camera(16, 16)
    return dict(means3d=means3d, quats=quats, scales=scales, opacities=opacities, colors=colors,
                viewmat=viewmat, K=K, width=16, height=16, background=bg)


@pytest.mark.parametrize(
    "change,message",
    [
        (dict(quats=torch.rand(4, 3)), "quats must have shape \\[4, 4\\]"),
        (dict(scales=torch.rand(5, 3)), "scales must have shape \\[4, 3\\]"),
        (dict(opacities=torch.rand(4, 1)), "opacities must have shape \\[4\\]"),
        (dict(colors=torch.rand(4)), "colors must have shape"),
        (dict(background=torch.rand(4)), "background must have shape \\[3\\]"),
        (dict(viewmat=torch.eye(3)), "viewmat must have shape \\[4, 4\\]"),
        (dict(means3d=torch.full((4, 3), float("nan"))), "means3d holds NaN"),
        (dict(colors=torch.rand(4, 3).double()), "colors must be float32"),
        (dict(width=0), "width must be a positive int"),
        (dict(height=-3), "height must be a positive int"),
        (dict(quats=torch.zeros(4, 4, device=DEVICE)), "quats holds rows of zero length"),
        (dict(scales=-torch.rand(4, 3, device=DEVICE)), "scales must be positive"),
        (dict(K=torch.rand(3, 3, device="meta")), "K is on meta"),
        (dict(means3d="nope"), "means3d must be a torch.Tensor"),
    ],
)
def test_bad_input_raises_clear_error(change, message):
    args = _valid_args()
    args.update(change)
    with pytest.raises(ValueError, match=message):
        rasterize(**args, backend="torch")


def test_bad_backend_choices():
    args = _valid_args()
    with pytest.raises(ValueError, match="backend must be one of"):
        rasterize(**args, backend="cuda")
    args64 = {k: (v.double() if isinstance(v, torch.Tensor) else v) for k, v in args.items()}
    with pytest.raises(ValueError, match="float32 for backend='triton'"):
        rasterize(**args64, backend="triton")
    img, _, _ = rasterize(**args64, backend="torch")
    assert img.dtype == torch.float64


def dense_reference(means2d, conics, opacities, colors, depths, radii, width, height, background):
    """Per-pixel blending straight from docs/conventions.md: every Gaussian in depth order,
    evaluated at the pixels of its 3-sigma tile rectangle, one at a time."""
    v, u = torch.meshgrid(torch.arange(height) + 0.5, torch.arange(width) + 0.5, indexing="ij")
    T = torch.ones(height, width, dtype=colors.dtype)
    done = torch.zeros(height, width, dtype=torch.bool)
    image = torch.zeros(height, width, colors.shape[1], dtype=colors.dtype)
    for i in torch.argsort(depths, stable=True).tolist():
        if radii[i] <= 0:
            continue
        r = float(radii[i])
        x0, x1 = max(0, math.floor((means2d[i, 0] - r) / 16)), math.ceil((means2d[i, 0] + r) / 16)
        y0, y1 = max(0, math.floor((means2d[i, 1] - r) / 16)), math.ceil((means2d[i, 1] + r) / 16)
        in_rect = (u >= 16 * x0) & (u < 16 * x1) & (v >= 16 * y0) & (v < 16 * y1)
        dx, dy = u - means2d[i, 0], v - means2d[i, 1]
        A, B, C = conics[i]
        alpha = torch.clamp_max(opacities[i] * torch.exp(-0.5 * (A * dx * dx + C * dy * dy) - B * dx * dy), 0.99)
        use = in_rect & (alpha >= 1 / 255) & ~done
        stop = use & (T * (1 - alpha) < 1e-4)
        done |= stop
        use &= ~stop
        a = torch.where(use, alpha, torch.zeros_like(alpha))
        image += (a * T)[..., None] * colors[i]
        T = T * (1 - a)
    return image + T[..., None] * background, 1 - T[..., None]


@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_matches_dense_per_pixel_reference(backend):
    """Tile binning, the per-tile culling and batched transmittance change nothing: the image is
    the per-pixel front-to-back sum, including the early stop."""
    scene = make_scene(80, 3, seed=9, spread=(0.4, 0.4, 0.3), opacity=(0.3, 0.99), scale=(0.05, 0.25))
    img, alpha, meta = render(scene, 36, 28, backend)
    cpu = lambda t: t.detach().cpu()  # noqa: E731
    ref_img, ref_alpha = dense_reference(cpu(meta["means2d"]), cpu(meta["conics"]), cpu(scene[3]), cpu(scene[4]),
                                         cpu(meta["depths"]), cpu(meta["radii"]), 36, 28, cpu(scene[5]))
    img, alpha = img.cpu(), alpha.cpu()
    assert (ref_alpha > 0.999).any(), "some pixels should reach the transmittance stop"
    assert_images_match(img, ref_img, atol=2e-5)
    assert_images_match(alpha, ref_alpha, atol=2e-5, what="alpha")
