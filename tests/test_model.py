"""The learnable model: audio smoother, deformation fields, Gaussians with density control, and
gradients from a rendered image back to every trainable part."""

from __future__ import annotations

import math

import pytest
import torch

from gstalker.kernels import TriPlaneEncoder
from gstalker.model import (
    AudioSmoother,
    Deltas,
    FaceDeformation,
    GaussianModel,
    Gaussians,
    TorsoDeformation,
    neighbour_index,
    pose_to_6d,
    positional_encoding,
    quat_to_rotmat,
)


def small_encoder(**kw):
    return TriPlaneEncoder(n_levels=4, base_resolution=8, finest_resolution=64, log2_table_size=10, **kw)


# ----------------------------------------------------------------------------- audio smoother


@pytest.mark.parametrize("feature_dim,window", [(80, 16), (1024, 16), (29, 16), (80, 8)])
def test_audio_smoother_shapes_any_feature_width(feature_dim, window):
    torch.manual_seed(0)
    sm = AudioSmoother(feature_dim)
    assert sm.code_dim == 32 and sm.att_window == 8
    assert sm.encode(torch.randn(5, window, feature_dim)).shape == (5, 32)
    out = sm(torch.randn(3, 8, window, feature_dim))
    assert out.shape == (3, 32) and torch.isfinite(out).all()
    assert sm(torch.randn(3, 8, window, feature_dim), smooth=False).shape == (3, 32)
    assert sm.forward_sequence(torch.randn(11, window, feature_dim)).shape == (11, 32)
    with pytest.raises(ValueError, match="windows must have shape"):
        sm(torch.randn(3, 7, window, feature_dim))


def test_neighbour_index_clamps_at_clip_edges():
    idx = neighbour_index(torch.tensor([0, 5, 9]), num_frames=10)
    assert idx.tolist() == [[0, 0, 0, 0, 0, 1, 2, 3], [1, 2, 3, 4, 5, 6, 7, 8], [5, 6, 7, 8, 9, 9, 9, 9]]


def test_batch_and_sequence_paths_agree():
    torch.manual_seed(1)
    sm = AudioSmoother(20)
    feats = torch.randn(12, 16, 20)
    seq = sm.forward_sequence(feats)
    frames = torch.tensor([0, 4, 11])
    batch = sm(feats[neighbour_index(frames, 12)])
    torch.testing.assert_close(batch, seq[frames])


def test_attention_window_smooths_a_step():
    torch.manual_seed(2)
    sm = AudioSmoother(16)
    a, b = torch.randn(32), torch.randn(32)
    T, step = 24, 12
    codes = torch.stack([a if t < step else b for t in range(T)])
    with torch.no_grad():
        out = sm.smooth_codes(codes)
        w = sm.attention_weights(codes[neighbour_index(torch.arange(T), T)])
    assert (w > 0).all() and torch.allclose(w.sum(1), torch.ones(T))
    # frame t sees t-4 .. t+3: far from the step nothing changes
    torch.testing.assert_close(out[: step - 3], a.expand(step - 3, -1))
    torch.testing.assert_close(out[step + 4 :], b.expand(T - step - 4, -1))
    # near it every frame is a proper mix of the two levels: lam * a + (1 - lam) * b, 0 < lam < 1
    d = a - b
    lam = ((out - b) @ d) / (d @ d)
    torch.testing.assert_close(out, b + lam[:, None] * d, atol=1e-5, rtol=1e-5)
    ramp = lam[step - 3 : step + 4]
    assert ((ramp > 0.01) & (ramp < 0.99)).all(), ramp
    assert ramp[0] > 0.5 > ramp[-1]
    # the single jump of the raw codes is spread over 7 frames: no consecutive jump is as large
    jumps = (out[1:] - out[:-1]).norm(dim=1)
    assert jumps.max() < 0.6 * d.norm()
    # and i.i.d. jitter is damped
    noise = torch.randn(40, 32)
    with torch.no_grad():
        smooth = sm.smooth_codes(noise)
    tv = lambda x: (x[1:] - x[:-1]).norm(dim=1).sum()  # noqa: E731
    assert tv(smooth) < 0.6 * tv(noise)


# ----------------------------------------------------------------------------- deformation fields


def test_positional_encoding_and_pose_6d():
    pe = positional_encoding(torch.tensor([0.25]), n_freqs=2)
    s, c = math.sin, math.cos
    want = [s(math.pi / 4), c(math.pi / 4), s(math.pi / 2), c(math.pi / 2)]
    torch.testing.assert_close(pe, torch.tensor(want))
    assert positional_encoding(torch.zeros(6)).shape == (72,)
    # axis-angle round trip: rotation of 0.3 rad about a unit axis
    axis = torch.tensor([1.0, 2.0, -2.0]) / 3.0
    q = torch.cat([torch.tensor([math.cos(0.15)]), axis * math.sin(0.15)])
    V = torch.eye(4)
    V[:3, :3] = quat_to_rotmat(q[None])[0]
    V[:3, 3] = torch.tensor([0.1, -0.2, 3.0])
    torch.testing.assert_close(pose_to_6d(V), torch.cat([axis * 0.3, V[:3, 3]]), atol=1e-5, rtol=1e-5)
    assert pose_to_6d(torch.eye(4)).abs().max() == 0
    # relative to a reference the camera-facing flip (a rotation by pi) reads as zero rotation
    flip = torch.diag(torch.tensor([1.0, -1.0, -1.0]))
    V2 = torch.eye(4)
    V2[:3, :3] = flip
    assert pose_to_6d(V2, reference=flip)[:3].abs().max() < 1e-6


def test_deformation_fields_start_as_identity_and_have_the_right_shapes():
    torch.manual_seed(3)
    gm = GaussianModel.random(n_head=64, n_torso=32)
    face = FaceDeformation(encoder=small_encoder())
    torso = TorsoDeformation(encoder=small_encoder())
    d = face(gm.head.means, torch.randn(32), torch.tensor([0.4]))
    assert isinstance(d, Deltas)
    assert d.means.shape == (64, 3) and d.quats.shape == (64, 4) and d.log_scales.shape == (64, 3)
    assert all((x == 0).all() for x in d)
    static, deformed = gm.head.render_args(), gm.head.render_args(d)
    for k in static:
        assert torch.equal(static[k], deformed[k])
    V = torch.eye(4)
    V[2, 3] = 4.0
    dt = torso(gm.torso.means, V)
    assert dt.means.shape == (32, 3) and all((x == 0).all() for x in dt)
    # per-Gaussian conditions broadcast the same way as one per frame
    face.mlp.out.weight.data.normal_()
    audio, eye = torch.randn(32), torch.tensor([0.2])
    one = face(gm.head.means, audio, eye)
    per = face(gm.head.means, audio.expand(64, -1), eye.expand(64, -1))
    torch.testing.assert_close(one.means, per.means)
    assert one.means.abs().max() > 0
    # defaults follow the paper: L=14, F=1, 64 -> 512, 2^14 rows
    assert FaceDeformation().encoder.out_dim == 42 and TorsoDeformation().mlp.cond_in.in_features == 72
    with pytest.raises(ValueError, match="audio must end in 32"):
        face(gm.head.means, torch.randn(16), eye)


def test_torso_pose_normalization_maps_training_poses_into_unit_range():
    torch.manual_seed(4)
    flip = torch.diag(torch.tensor([1.0, -1.0, -1.0]))
    views = []
    for _ in range(20):
        q = torch.cat([torch.ones(1), 0.05 * torch.randn(3)])
        V = torch.eye(4)
        V[:3, :3] = quat_to_rotmat(q[None])[0] @ flip
        V[:3, 3] = torch.tensor([0.0, 0.0, 4.0]) + 0.1 * torch.randn(3)
        views.append(V)
    views = torch.stack(views)
    torso = TorsoDeformation(encoder=small_encoder())
    torso.fit_pose_normalization(views)
    p = (pose_to_6d(views, torso.pose_reference) - torso.pose_center) / torso.pose_scale
    assert p.abs().max() <= 1.0 and p.abs().max() > 0.5
    assert torso.pose_features(views[0]).shape == (72,)
    assert "pose_scale" in torso.state_dict()


# ----------------------------------------------------------------------------- Gaussians


def _adam_with_state(g: Gaussians):
    names = ("means", "log_scales", "quats", "opacity_logits", "color_logits")
    opt = torch.optim.Adam(g.param_groups({n: 1e-2 for n in names}))
    loss = sum((p * torch.randn_like(p)).sum() for p in g.parameters())
    loss.backward()
    opt.step()
    return opt


def test_clone_split_prune_resize_params_and_adam_state():
    torch.manual_seed(5)
    g = Gaussians.random(50, side=2.0, generator=torch.Generator().manual_seed(0))
    opt = _adam_with_state(g)
    means_param = g.means
    old_means = g.means.detach().clone()
    old_avg = opt.state[g.means]["exp_avg"].clone()
    old_sq = opt.state[g.log_scales]["exp_avg_sq"].clone()

    clone_mask = torch.zeros(50, dtype=torch.bool)
    clone_mask[:5] = True
    g.clone(clone_mask, opt)
    assert len(g) == 55 and g.means is means_param  # same Parameter object, new data
    for p in g.parameters():
        st = opt.state[p]
        assert p.shape[0] == 55 and st["exp_avg"].shape == p.shape and st["exp_avg_sq"].shape == p.shape
    torch.testing.assert_close(g.means[50:].detach(), old_means[:5])
    torch.testing.assert_close(opt.state[g.means]["exp_avg"][:50], old_avg)
    assert (opt.state[g.means]["exp_avg"][50:] == 0).all()
    assert g.grad_accum.shape == (55,)

    split_mask = torch.zeros(55, dtype=torch.bool)
    split_mask[[1, 7, 52]] = True
    parents = {k: v.detach()[split_mask].clone() for k, v in g.named_parameters()}
    g.split(split_mask, opt, generator=torch.Generator().manual_seed(1))
    assert len(g) == 55 - 3 + 6
    kept = ~split_mask
    torch.testing.assert_close(opt.state[g.log_scales]["exp_avg_sq"][:52], torch.cat([old_sq, torch.zeros(5, 3)])[kept])
    children_scale = g.log_scales.detach()[52:]
    torch.testing.assert_close(children_scale, parents["log_scales"].repeat(2, 1) - math.log(1.6))
    offset = (g.means.detach()[52:] - parents["means"].repeat(2, 1)).norm(dim=1)
    assert (offset < 6 * parents["log_scales"].exp().max(dim=1).values.repeat(2)).all()

    remove = torch.zeros(58, dtype=torch.bool)
    remove[::4] = True
    keep_means = g.means.detach()[~remove].clone()
    keep_avg = opt.state[g.means]["exp_avg"][~remove].clone()
    g.prune(remove, opt)
    assert len(g) == 58 - 15
    torch.testing.assert_close(g.means.detach(), keep_means)
    torch.testing.assert_close(opt.state[g.means]["exp_avg"], keep_avg)

    # the same optimiser keeps working
    before = g.means.detach().clone()
    (g.means.sum() + g.color_logits.sum()).backward()
    opt.step()
    assert not torch.equal(before, g.means.detach())


def test_gaussian_model_state_round_trip_at_any_size():
    gm = GaussianModel.random(n_head=30, n_torso=20, seed=3)
    gm.head.prune(torch.arange(30) % 3 == 0)
    state = gm.state_dict()
    assert set(state) == {f"{s}.{n}" for s in ("head", "torso")
                          for n in ("means", "log_scales", "quats", "opacity_logits", "color_logits")}
    back = GaussianModel.from_state_dict(state)
    assert len(back.head) == 20 and len(back.torso) == 20
    for k, v in back.state_dict().items():
        assert torch.equal(v, state[k])
    with pytest.raises(ValueError, match="state has no head.quats"):
        GaussianModel.from_state_dict({k: v for k, v in state.items() if k != "head.quats"})


def test_densify_and_prune_uses_accumulated_gradients():
    g = Gaussians.random(40, side=2.0, opacity=0.5, generator=torch.Generator().manual_seed(2))
    opt = _adam_with_state(g)
    with torch.no_grad():
        g.log_scales[:20] = math.log(0.001)  # small: cloned
        g.log_scales[20:] = math.log(0.05)  # large: split
        g.opacity_logits[-3:] = -10.0  # transparent: pruned
    grads = torch.zeros(40, 2)
    grads[[0, 1, 25]] = 1.0  # hot
    radii = torch.ones(40, dtype=torch.int32)
    radii[1] = 0  # not drawn: its gradient does not count
    g.add_densification_stats(grads, radii)
    stats = g.densify_and_prune(opt, grad_threshold=0.5, scene_extent=2.0, percent_dense=0.01)
    assert stats == {"cloned": 1, "split": 1, "pruned": 3, "total": 40 + 1 + 2 - 1 - 3}
    assert len(g) == stats["total"] and opt.state[g.quats]["exp_avg"].shape == (stats["total"], 4)
    assert (g.grad_accum == 0).all()
    # too large in the world (> 0.1 * extent by default) or drawn too wide: pruned as well
    with torch.no_grad():
        g.log_scales[0] = math.log(0.5)
    radii = torch.ones(len(g), dtype=torch.int32)
    radii[1] = 50
    g.add_densification_stats(torch.zeros(len(g), 2), radii)
    n = len(g)
    stats = g.densify_and_prune(opt, grad_threshold=0.5, scene_extent=2.0, max_world_scale=None)
    assert stats["pruned"] == 0 and len(g) == n
    g.add_densification_stats(torch.zeros(len(g), 2), radii)
    stats = g.densify_and_prune(opt, grad_threshold=0.5, scene_extent=2.0, max_screen_radius=20)
    assert stats["pruned"] == 2 and len(g) == n - 2


# ----------------------------------------------------------------------------- gradients end to end


@pytest.fixture
def one_thread():
    """Small tensors: one thread avoids OpenMP stalls when the CPU is shared."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def test_gradients_flow_from_rendered_image_to_every_trainable_part(one_thread):
    from gstalker.kernels import rasterize

    torch.manual_seed(6)
    H = W = 32
    K = torch.tensor([[40.0, 0, 16], [0, 40.0, 16], [0, 0, 1]])
    view = torch.eye(4)
    view[2, 3] = 4.0  # camera 4 units in front of the head, looking along +z
    gm = GaussianModel(
        Gaussians.random(150, side=1.0, opacity=0.5, generator=torch.Generator().manual_seed(1)),
        Gaussians.random(100, side=1.5, opacity=0.5, generator=torch.Generator().manual_seed(2)),
    )
    smoother = AudioSmoother(80)
    face = FaceDeformation(encoder=small_encoder())
    torso = TorsoDeformation(encoder=small_encoder())
    modules = {"gaussians": gm, "smoother": smoother, "face": face, "torso": torso}
    opt = torch.optim.Adam([p for m in modules.values() for p in m.parameters()], lr=1e-2)
    windows = torch.randn(1, 8, 16, 80)
    target = torch.rand(H, W, 3)
    bg = torch.tensor([0.2, 0.3, 0.4])

    def step():
        opt.zero_grad()
        audio = smoother(windows)[0]
        d_head = face(gm.head.means, audio, torch.tensor([0.3]))
        d_torso = torso(gm.torso.means, view)
        head_img, head_alpha, meta = rasterize(**gm.head.render_args(d_head), viewmat=view, K=K,
                                               width=W, height=H, backend="torch")
        torso_img, _, _ = rasterize(**gm.torso.render_args(d_torso), viewmat=view, K=K, width=W,
                                    height=H, background=bg, backend="torch")
        meta["means2d"].retain_grad()
        image = head_img + (1 - head_alpha) * torso_img
        loss = (image - target).abs().mean()
        loss.backward()
        return meta

    step()
    # zero-initialised last layers: at the first step only they (and the Gaussians) get gradient,
    # by design; after one Adam step everything upstream of them does too
    assert face.encoder.tables.grad is None or (face.encoder.tables.grad == 0).all()
    assert face.mlp.out.weight.grad.abs().sum() > 0
    opt.step()
    meta = step()
    for mod_name, mod in modules.items():
        for name, p in mod.named_parameters():
            assert p.grad is not None and p.grad.abs().sum() > 0, f"no gradient reached {mod_name}.{name}"
    assert face.encoder.tables.grad.abs().sum() > 0 and torso.encoder.tables.grad.abs().sum() > 0
    # view-space gradients for density control
    gm.head.add_densification_stats(meta["means2d"].grad, meta["radii"])
    assert (gm.head.grad_accum > 0).sum() > 10


# ----------------------------------------------------------------------------- deformation regions


def test_region_weight_is_one_inside_zero_beyond_the_falloff_and_smooth_between():
    from gstalker.model import region_weight

    region = [{"center": [0.0, 0.5, 0.0], "radii": [0.5, 0.25, 0.5]}]
    y = torch.linspace(0.5, 1.0, 51)  # along y from the centre out: radius 1 at 0.75, falloff 1.4 at 0.85
    pts = torch.stack([torch.zeros_like(y), y, torch.zeros_like(y)], -1)
    w = region_weight(pts, region)[:, 0]
    assert (w[y <= 0.75] == 1).all() and (w[y >= 0.85] == 0).all()
    between = w[(y > 0.76) & (y < 0.84)]
    assert ((between > 0) & (between < 1)).all() and (between.diff() < 0).all()
    two = region_weight(pts, region + [{"center": [0.0, 1.0, 0.0], "radii": [0.1, 0.1, 0.1]}])[:, 0]
    assert two[-1] == 1 and torch.equal(two[y < 0.85], w[y < 0.85])  # the union of the regions


def test_the_face_deforms_only_inside_its_regions(tmp_path):
    """Audio and eye move head Gaussians inside the model's deform_regions and leave the rest
    exactly where they are (the audio code cannot move the hair line); the inference cache
    gives the same frame."""
    import gstalker
    from synthetic import tiny_mel_model

    model = gstalker.load(tiny_mel_model(tmp_path), device="cpu").model
    torch.manual_seed(0)
    with torch.no_grad():
        model.face.mlp.out.weight.normal_(0, 0.1)  # a field that moves everything
    means = model.gaussians.head.means.detach()
    centre = means[0]
    model.config["deform_regions"] = [{"center": centre.tolist(), "radii": [0.3, 0.3, 0.3]}]
    code, view = torch.randn(model.config["code_dim"]), model.poses[0]
    with torch.no_grad():
        head, _ = model.deform(code, view, 0.5)
        cached, _ = model.deform(code, view, 0.5, cache=model.inference_cache())
    moved = (head["means3d"] - means).norm(dim=-1)
    dist = (means - centre).norm(dim=-1)
    outside, inside = dist > 0.3 * 1.4, dist < 0.3
    assert outside.sum() > 10 and inside.sum() > 0
    assert (moved[outside] == 0).all() and (moved[inside] > 0).all()
    assert torch.equal(head["quats"][outside], model.gaussians.head.render_args()["quats"][outside])
    assert torch.allclose(cached["means3d"], head["means3d"], atol=1e-6)
    del model.config["deform_regions"]  # the control: without regions everything moves
    with torch.no_grad():
        free, _ = model.deform(code, view, 0.5)
    assert ((free["means3d"] - means).norm(dim=-1)[outside] > 0).all()
