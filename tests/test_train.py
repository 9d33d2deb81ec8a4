"""Training on a tiny synthetic clip: density control keeps optimiser state in shape, resume is
bit for bit, the model file round-trips, and settings are validated."""

import json

import numpy as np
import pytest
import torch

from gstalker.talker import TalkerModel
from gstalker.metrics import psnr
from gstalker.train import FitSettings, Trainer, TrainData, run_training
from synthetic import SyntheticClip


def make_trainer(tmp_path, iters=40, static_share=0.5, densify_every=10, seed=0, size=32):
    clip = SyntheticClip(n=30, size=size)
    data = TrainData(clip, torch.device("cpu"))
    s = FitSettings.from_preset("smoke", size=size, lpips="off", seed=seed)
    s.static_iters = int(iters * static_share)
    s.deform_iters = iters - s.static_iters
    s.schedule.update(n_head=300, n_torso=150, densify_every=densify_every, preview_every=0, opacity_reset_every=0,
                      log2_table_size=8)
    return Trainer(data, s, clip.feature_meta, tmp_path)


def test_densification_keeps_optimizer_state_consistent(tmp_path, monkeypatch):
    t = make_trainer(tmp_path, iters=30)
    n0 = len(t.model.gaussians.head)
    # force clones and splits: a low threshold makes every seen Gaussian "hot"
    import gstalker.model.gaussians as G

    orig = G.Gaussians.densify_and_prune
    monkeypatch.setattr(G.Gaussians, "densify_and_prune",
                        lambda self, opt, **kw: orig(self, opt, **dict(kw, grad_threshold=1e-9)))
    for _ in range(30):
        t.step()
    assert len(t.model.gaussians.head) != n0
    for group in t.gauss_opt.param_groups:
        p = group["params"][0]
        state = t.gauss_opt.state[p]
        assert state["exp_avg"].shape == p.shape and state["exp_avg_sq"].shape == p.shape, group["name"]


def _params(t):
    return {k: v.detach().clone() for k, v in t.model.state_dict().items()}


def test_resume_is_bit_for_bit(tmp_path):
    a = make_trainer(tmp_path / "a", iters=24)
    (tmp_path / "a").mkdir()
    for _ in range(24):
        a.step()
    b = make_trainer(tmp_path / "b", iters=24)
    (tmp_path / "b").mkdir()
    for _ in range(13):  # past the stage boundary and a densification
        b.step()
    path = b.save_checkpoint()
    c = make_trainer(tmp_path / "b", iters=24, seed=0)
    c.load_checkpoint(path)
    assert c.step_count == 13
    for _ in range(11):
        c.step()
    pa, pc = _params(a), _params(c)
    assert pa.keys() == pc.keys()
    for k in pa:
        assert torch.equal(pa[k], pc[k]), k
    assert a.history == c.history


def test_resume_refuses_a_folder_whose_sound_has_moved(tmp_path):
    """A checkpoint trained on the sound as recorded (or from before preprocessing's sync stage,
    which has no record) must not go on with the sound moved under it: the audio code would
    continue on windows 200 ms away from what it learned."""
    from gstalker.errors import GstalkerError
    from gstalker.serialization import load_file, save_file

    b = make_trainer(tmp_path, iters=8)
    for _ in range(5):
        b.step()
    path = b.save_checkpoint()
    moved = make_trainer(tmp_path, iters=8)
    moved.data.av_offset_frames = 5  # preprocessing measured and moved the sound since
    with pytest.raises(GstalkerError, match=r"sound moved 0 ms.*now moved 200 ms.*--av-offset 0 "):
        moved.load_checkpoint(path)
    tensors, meta = load_file(path, kind="checkpoint")  # a checkpoint from before the record
    del meta["av_offset_frames"]
    save_file(path, tensors, meta)
    with pytest.raises(GstalkerError, match="now moved 200 ms"):
        moved.load_checkpoint(path)
    same = make_trainer(tmp_path, iters=8)
    same.load_checkpoint(path)
    assert same.step_count == 5


def test_training_beats_the_mean_frame(tmp_path):
    t = make_trainer(tmp_path, iters=240, static_share=0.5, densify_every=60, size=48)
    t.sched["preview_every"] = 120
    start = t.evaluate(t.data.val_ids)["psnr"]
    stats = run_training(t, progress=False)
    assert stats["train_seconds"] > 0
    assert (tmp_path / "previews" / "step_000120.png").exists() and (tmp_path / "loss_curve.png").exists()
    frames = torch.stack([t.data.frame(i)[0] for i in t.data.train_ids.tolist()])
    mean = frames.mean(0)
    baseline = sum(psnr(mean, t.data.frame(i)[0]) for i in t.data.val_ids.tolist()) / len(t.data.val_ids)
    score = t.evaluate()["psnr"]
    assert score > start + 8 and score > baseline + 1, (start, score, baseline)


def test_model_file_round_trip(tmp_path):
    t = make_trainer(tmp_path, iters=6)
    for _ in range(6):
        t.step()
    path = t.model.save(tmp_path / "m.safetensors", {"iterations": 6})
    model, meta = TalkerModel.load(path)
    assert meta["summary"] == {"iterations": 6} and meta["size"] == [32, 32]
    code = t.model.codes(t.data.audio)[5].detach()
    with torch.no_grad():
        a = t.model.render(code, t.data.viewmats[5], t.data.eyes[5])["image"]
        b = model.render(code, t.data.viewmats[5], t.data.eyes[5])["image"]
    assert torch.equal(a, b)


def test_settings_from_preset():
    s = FitSettings.from_preset("smoke")
    assert (s.size, s.static_iters, s.deform_iters) == (128, 300, 300)
    s = FitSettings.from_preset("paper", iters=1100, size=256)
    assert (s.static_iters, s.deform_iters, s.size) == (100, 1000, 256)
    with pytest.raises(ValueError, match="--preset must be one of smoke, cpu, fast, paper"):
        FitSettings.from_preset("best")
    with pytest.raises(ValueError, match="--size must be between"):
        FitSettings.from_preset("fast", size=8)
    with pytest.raises(ValueError, match="--iters must be at least 2"):
        FitSettings.from_preset("fast", iters=1)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="counts CUDA host synchronisations (needs a GPU)")
def test_trainer_step_synchronises_once_per_rasterize(tmp_path):
    """The Trainer's own step on a GPU (deformation stage, no densification that step), after
    warm-up: one host synchronisation per rasterize call (head and torso: the intersection
    buffers' sizes), none for the loss, the history or the density statistics."""
    import warnings

    clip = SyntheticClip(n=30, size=32)
    data = TrainData(clip, torch.device("cuda"))
    s = FitSettings.from_preset("smoke", size=32, lpips="off")
    s.static_iters, s.deform_iters = 2, 40
    s.schedule.update(n_head=300, n_torso=150, densify_every=0, preview_every=0, opacity_reset_every=0,
                      log2_table_size=8)
    t = Trainer(data, s, clip.feature_meta, tmp_path)
    for _ in range(30):  # every frame cached on the device
        t.step()
    torch.cuda.synchronize()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            t.step()
        finally:
            torch.cuda.set_sync_debug_mode("default")
    syncs = [w for w in caught if "called a synchronizing" in str(w.message)]  # not the "prototype" notice
    where = "\n".join(f"{w.filename}:{w.lineno}: {w.message}" for w in syncs)
    assert len(syncs) <= 2, f"{len(syncs)} host synchronisations in one training step:\n{where}"


def test_format_1_model_files_load_with_identity_audio_statistics(tmp_path):
    """Model files from before the audio statistics were stored (format 1) still load and
    render: their features are taken as they are (mean 0, std 1)."""

    from safetensors.torch import load_file as st_load
    from safetensors.torch import save_file as st_save

    t = make_trainer(tmp_path, iters=4)
    for _ in range(4):
        t.step()
    path = t.model.save(tmp_path / "new.safetensors")
    tensors = st_load(str(path))
    assert "audio_mean" in tensors and not torch.equal(tensors["audio_std"], torch.ones_like(tensors["audio_std"]))
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        meta = json.loads(f.metadata()["gstalker"])
    meta["format_version"] = 1
    old = {k: v for k, v in tensors.items() if k not in ("audio_mean", "audio_std")}
    st_save(old, str(tmp_path / "old.safetensors"), metadata={"gstalker": json.dumps(meta)})
    model, meta = TalkerModel.load(tmp_path / "old.safetensors")
    assert meta["format_version"] == 1
    assert torch.equal(model.audio_mean, torch.zeros_like(model.audio_mean))
    assert torch.equal(model.audio_std, torch.ones_like(model.audio_std))
    with torch.no_grad():
        code = model.codes(t.data.audio)[3]
        assert torch.isfinite(model.render(code, t.data.viewmats[3], t.data.eyes[3])["image"]).all()


def test_loss_curve_is_a_plot_of_both_series(tmp_path):
    from PIL import Image

    from gstalker.train import plot_curve

    steps = np.arange(1, 601)
    history = np.stack([steps, 1 / steps ** 0.3, 20 + 2 * np.log(steps)], 1).tolist()
    path = plot_curve(history, tmp_path / "curve.png", stage_boundary=300)
    rgb = np.asarray(Image.open(path).convert("RGB")).astype(int)
    assert rgb.shape == (360, 720, 3)
    red = (rgb[..., 0] > 170) & (rgb[..., 1] < 90) & (rgb[..., 2] < 90)  # matplotlib's tab:red, the loss
    blue = (rgb[..., 2] > 150) & (rgb[..., 0] < 80)  # tab:blue, the PSNR
    assert red.sum() > 300 and blue.sum() > 300
    assert plot_curve([], tmp_path / "empty.png").stat().st_size > 0  # nothing trained yet: empty axes


class ClipWithMouthCrops(SyntheticClip):
    """The synthetic clip with preprocessing's high-resolution mouth crops: the lip box (doubled)
    resampled from the frame at 3x."""

    def __init__(self, **kw):
        super().__init__(**kw)
        s = self.size[0]
        self.tracks["mouth_boxes"] = torch.tensor([s * 0.35, s * 0.43, s * 0.65, s * 0.73]).repeat(self.num_frames, 1)

    def mouth(self, i):
        x0, y0, x1, y1 = (int(v) for v in self.tracks["mouth_boxes"][i])
        crop = self.frame(i)[y0:y1, x0:x1].permute(2, 0, 1)[None]
        return (torch.nn.functional.interpolate(crop, scale_factor=3, mode="nearest")[0].permute(1, 2, 0) * 255).byte()


def test_mouth_steps_train_the_face_field_from_the_mouth_patch_alone(tmp_path):
    """In the deformation stage each full step is followed by `mouth_steps` updates of the audio
    networks on the mouth patch: they change the face field and smoother, never the Gaussians."""
    s = FitSettings.from_preset("cpu", size=32, lpips="off", iters=4)
    s.schedule.update(n_head=200, n_torso=100, preview_every=0, log2_table_size=8, mouth_px=24, mouth_steps=2)
    t = Trainer(TrainData(ClipWithMouthCrops(n=12, size=32), torch.device("cpu")), s, {"kind": "synthetic", "dim": 8, "window": 16}, tmp_path)
    t.step_count = s.static_iters  # straight to the deformation stage
    t.step()  # a full step: the zero-initialised last layer learns first
    calls = []
    original = t.mouth_step
    t.mouth_step = lambda: (calls.append(1), original())
    gaussians = {k: v.detach().clone() for k, v in t.model.gaussians.state_dict().items()}
    face = t.model.face.mlp.out.weight.detach().clone()
    t.mouth_step()
    assert all(torch.equal(v, t.model.gaussians.state_dict()[k]) for k, v in gaussians.items())
    assert not torch.equal(face, t.model.face.mlp.out.weight)
    t.step()
    assert len(calls) == 3  # the explicit one, then two after the full step


def test_mouth_steps_after_densification_resized_the_gaussians(tmp_path):
    """Density control at the end of a full step changes the number of Gaussians; the mouth steps
    that follow must build their graph on the new ones (a live graph of the full step kept the old
    size's gradient accumulators: "SigmoidBackward0 returned an invalid gradient", 16 minutes into
    a real fit)."""
    s = FitSettings.from_preset("cpu", size=32, lpips="off", iters=4)
    s.schedule.update(n_head=200, n_torso=100, preview_every=0, log2_table_size=8, mouth_px=24, mouth_steps=2)
    t = Trainer(TrainData(ClipWithMouthCrops(n=12, size=32), torch.device("cpu")), s, {"kind": "synthetic", "dim": 8, "window": 16}, tmp_path)
    t.step_count = s.static_iters

    def prune_a_tenth():
        head = t.model.gaussians.head
        head.prune(torch.arange(len(head)) % 10 == 0, t.gauss_opt)

    t._density_control = prune_a_tenth
    for _ in range(2):
        n = len(t.model.gaussians.head)
        t.step()
        assert len(t.model.gaussians.head) < n



class ClipWithFace(SyntheticClip):
    """The synthetic clip with a face template and tracked landmarks: the template projected with
    each frame's pose, its lower lip and chin moved down by `drop` pixels times the mouth opening
    (what speech does to a real face), plus 0.05 px of tracking noise."""

    def __init__(self, drop: float = 1.5, **kw):
        super().__init__(**kw)
        from gstalker.preprocess.eyelip import INNER_LIPS, JAW_LINE, LEFT_EYE, OUTER_LIPS, RIGHT_EYE
        rng = np.random.default_rng(1)
        t = rng.uniform([-0.5, -0.4, -0.3], [0.5, 0.8, 0.4], (478, 3))
        for ring, radius, cy in ((OUTER_LIPS, 0.2, 0.35), (INNER_LIPS, 0.15, 0.35)):
            a = np.linspace(0, 2 * np.pi, len(ring), endpoint=False)
            t[ring] = np.stack([radius * np.cos(a), cy + 0.3 * radius * np.sin(a), np.full_like(a, 0.35)], -1)
        t[JAW_LINE] = np.stack([np.linspace(-0.3, 0.3, len(JAW_LINE)), np.full(len(JAW_LINE), 0.6),
                                np.full(len(JAW_LINE), 0.25)], -1)
        t[2], t[152], t[172], t[397] = (0, 0.15, 0.4), (0, 0.62, 0.3), (-0.45, 0.45, 0), (0.45, 0.45, 0)
        for ring, x in ((RIGHT_EYE, -0.2), (LEFT_EYE, 0.2)):
            a = np.linspace(0, 2 * np.pi, len(ring), endpoint=False)
            t[ring] = np.stack([x + 0.07 * np.cos(a), -0.1 + 0.03 * np.sin(a), np.full_like(a, 0.3)], -1)
        self.tracks["template"] = torch.tensor(t, dtype=torch.float32)
        cam = torch.tensor(t, dtype=torch.float32) @ self.viewmats[:, :3, :3].transpose(1, 2) + self.viewmats[:, None, :3, 3]
        uv = cam[..., :2] / cam[..., 2:] * self.K[0, 0] + self.K[:2, 2]
        moves = torch.zeros(478, dtype=torch.bool)
        moves[[i for i in OUTER_LIPS + INNER_LIPS if t[i, 1] > 0.35] + JAW_LINE] = True
        uv[:, moves, 1] += drop * torch.tensor(self.opening, dtype=torch.float32)[:, None]
        self.tracks["landmarks"] = uv + 0.05 * torch.tensor(rng.standard_normal(uv.shape), dtype=torch.float32)


def face_trainer(tmp_path, **schedule):
    s = FitSettings.from_preset("cpu", size=32, lpips="off", iters=4)
    schedule.setdefault("audio_augment", 0.0)  # the landmark term's tests measure the term alone
    s.schedule.update(n_head=200, n_torso=100, preview_every=0, log2_table_size=8, mouth_weight=0.0, **schedule)
    clip = ClipWithFace(n=30, size=32)
    t = Trainer(TrainData(clip, torch.device("cpu")), s, clip.feature_meta, tmp_path)
    t.step_count = s.static_iters  # the deformation stage
    t._update_lr()
    return t, clip


def test_landmark_term_is_the_centred_shape_error_of_the_speech_points(tmp_path):
    """A fresh face field moves nothing, so the term is the tracked lips' and chin's shape against
    the rigid template's, both centred (a whole-face shift is pose error, not speech), in
    eye-corner distances: computed here independently from the clip's own tracks."""
    from gstalker.preprocess.eyelip import SPEECH_POINTS

    t, clip = face_trainer(tmp_path, landmark_batch=6)
    state = t.gen.get_state()
    loss = t.landmark_loss().item()
    t.gen.set_state(state)
    frames = t.data.train_ids[torch.randint(len(t.data.train_ids), (6,), generator=t.gen)]
    lm = clip.tracks["landmarks"][frames].double()
    tpl = clip.tracks["template"].double()
    v = clip.viewmats[frames].double()
    cam = tpl[SPEECH_POINTS] @ v[:, :3, :3].transpose(1, 2) + v[:, None, :3, 3]
    uv = cam[..., :2] / cam[..., 2:] * float(clip.K[0, 0])
    real = lm[:, SPEECH_POINTS]
    err = ((uv - uv.mean(1, keepdim=True)) - (real - real.mean(1, keepdim=True))).norm(dim=-1)
    expected = (err / (lm[:, 33] - lm[:, 263]).norm(dim=-1)[:, None]).mean()
    assert loss == pytest.approx(float(expected), rel=1e-4)
    assert loss > 0.01  # the opening mouth is there to learn


def test_landmark_term_teaches_the_audio_path_to_open_the_mouth(tmp_path):
    """The landmark term alone (no rendering) trains the smoother and the face field until the
    deformed lower lip follows the mouth opening that drives the audio features."""
    from gstalker.preprocess.eyelip import OUTER_LIPS

    t, clip = face_trainer(tmp_path, landmark_batch=8)
    first = t.landmark_loss().item()
    for _ in range(150):
        loss = t.landmark_loss()
        t.net_opt.zero_grad(set_to_none=True)
        loss.backward()
        t.net_opt.step()
    assert t.landmark_loss().item() < 0.5 * first
    lower = [i for i in OUTER_LIPS if clip.tracks["template"][i, 1] > 0.35]
    points = torch.as_tensor(t.data.template[lower], dtype=torch.float32)
    with torch.no_grad():
        codes = t.model.codes(t.data.audio)
        drop = [float(t.model.face(points, codes[i], t.data.eyes[i].reshape(1)).means[:, 1].mean()) for i in range(30)]
    assert np.corrcoef(drop, clip.opening)[0, 1] > 0.9


@pytest.mark.parametrize("term, settings", [("landmark", dict(landmark_batch=4, landmark_weight=1.0)),
                                             ("field_mouth", dict(mouth_shape_batch=4, field_mouth_weight=0.1))])
def test_full_steps_add_a_geometry_term_in_the_deformation_stage_only(tmp_path, term, settings):
    """The landmark and field-mouth terms join deformation steps, never static ones, and a zero
    weight turns them off."""
    t, _ = face_trainer(tmp_path, **settings)
    calls = []
    original = getattr(t, f"{term}_loss")
    setattr(t, f"{term}_loss", lambda: (calls.append(t.stage), original())[1])
    t.step()
    t.step_count = 0
    t.step()
    assert calls == ["deform"]
    t.sched[f"{term}_weight"] = 0.0
    t.step_count = t.settings.static_iters
    t.step()
    assert calls == ["deform"]


def test_augment_audio_shifts_each_sample_as_one_recording_and_adds_noise():
    """Per sample one offset per feature dimension (std 0.3 at strength 1) shared by all its
    windows, a scale near 1, and per-value noise (std 0.2); reproducible from the generator."""
    from gstalker.train import augment_audio

    x = torch.randn(400, 8, 16, 20)
    out = augment_audio(x, 1.0, torch.Generator().manual_seed(3))
    assert torch.equal(out, augment_audio(x, 1.0, torch.Generator().manual_seed(3)))
    diff = out - x
    per_sample = diff.mean(dim=(1, 2))  # [B, D]: the offset, the noise and the scale averaged out
    assert abs(float(per_sample.std()) - 0.3) < 0.03
    within = diff - per_sample[:, None, None, :]
    assert abs(float(within.std()) - 0.2) < 0.03  # noise 0.2, scale error |s - 1| < 0.15 adds little
    assert abs(float(augment_audio(x, 0.5, torch.Generator().manual_seed(3)).sub(x).mean(dim=(1, 2)).std()) - 0.15) < 0.02


def test_training_codes_are_augmented_and_the_models_codes_never(tmp_path):
    t, clip = face_trainer(tmp_path, audio_augment=1.0)
    frames = torch.arange(5, 10)
    with torch.no_grad():
        clean = t.model.smoother(t.model.normalize_audio(t.data.windows(frames, t.model.smoother.att_window)))
        assert (t.codes(frames) - clean).abs().mean() > 0.05 * clean.abs().mean()
        t.sched["audio_augment"] = 0.0
        assert torch.equal(t.codes(frames), clean)
        inference = t.model.codes(t.data.audio)  # what speak and eval use: the plain windows
        assert torch.allclose(inference[frames], clean, atol=1e-5)


def test_mouth_shape_targets_are_the_tracked_opening_and_width_standardised(tmp_path):
    """The term's targets: the tracked inner-lip gap and lip-corner distance over the eye distance,
    standardised over the training frames (held-out frames are never a target)."""
    from gstalker.metrics import mouth_opening_ratio, mouth_width_ratio

    t, clip = face_trainer(tmp_path)
    shape, ids = t.data.mouth_shape, t.data.mouth_shape_ids
    assert shape.shape == (30, 2)
    assert set(ids.tolist()) == set(t.data.train_ids.tolist())
    lm = clip.tracks["landmarks"].numpy()
    for k, ratio in enumerate((mouth_opening_ratio(lm), mouth_width_ratio(lm))):
        train = ratio[ids.numpy()]
        np.testing.assert_allclose(shape[:, k].numpy(), (ratio - train.mean()) / train.std(), rtol=1e-4, atol=1e-4)
    assert np.corrcoef(shape[:, 0].numpy(), clip.opening)[0, 1] > 0.95  # the clip's lower lip drops as it opens


def test_mouth_shape_pretraining_teaches_the_code_the_mouth_and_nothing_else(tmp_path):
    """The term alone trains the audio smoother and the read-out until the read-out follows the
    mouth opening that drives the audio features; the face field and
    the Gaussians are not touched by it."""
    t, clip = face_trainer(tmp_path, mouth_shape_batch=16, mouth_shape_weight=0.1)
    field = [p.detach().clone() for p in t.model.face.parameters()]
    means = t.model.gaussians.head.means.detach().clone()

    def loss_on_every_frame() -> float:  # the term's own batches are a few random frames: noisy
        with torch.no_grad():
            return t.mouth_shape_loss(t.data.mouth_shape_ids).item()

    first = loss_on_every_frame()
    calls = []
    last = t.pretrain_mouth_shape(150, on_step=lambda: calls.append(1))
    after = loss_on_every_frame()
    print(f"mouth-shape loss on every frame: {first:.3f} -> {after:.3f} (last batch {last:.3f})")
    assert len(calls) == 150 and 0 < last and after < 0.3 * first
    with torch.no_grad():
        read = t.mouth_head(t.model.codes(t.data.audio))[:, 0].numpy()
    assert np.corrcoef(read, clip.opening)[0, 1] > 0.9
    assert all(torch.equal(a, b) for a, b in zip(field, t.model.face.parameters()))
    assert torch.equal(means, t.model.gaussians.head.means)


def test_field_mouth_term_is_the_template_mouths_centred_error(tmp_path):
    """A fresh face field moves nothing, so the term is the rigid template's mouth (inner-lip gap
    13-14, lip corners 61-291, projected with each frame's pose, over the tracked eye distance)
    against the tracked mouth, both in the tracked ratios' standard deviations and centred over
    the batch: computed here independently from the clip's own tracks."""
    from gstalker.metrics import mouth_opening_ratio, mouth_width_ratio

    t, clip = face_trainer(tmp_path, mouth_shape_batch=8)
    state = t.gen.get_state()
    loss = t.field_mouth_loss().item()
    t.gen.set_state(state)
    ids = t.data.mouth_shape_ids
    frames = ids[torch.randint(len(ids), (8,), generator=t.gen)]
    lm = clip.tracks["landmarks"].double()
    train = ids.numpy()
    ratios = [mouth_opening_ratio(lm.numpy()), mouth_width_ratio(lm.numpy())]
    std = torch.tensor([r[train].std() for r in ratios])
    tracked = torch.stack([torch.as_tensor(r)[frames] for r in ratios], -1) / std
    v = clip.viewmats[frames].double()
    cam = clip.tracks["template"].double()[[13, 14, 61, 291]] @ v[:, :3, :3].transpose(1, 2) + v[:, None, :3, 3]
    uv = cam[..., :2] / cam[..., 2:] * float(clip.K[0, 0])
    eye = (lm[frames, 33] - lm[frames, 263]).norm(dim=-1)
    rigid = torch.stack([(uv[:, 0] - uv[:, 1]).norm(dim=-1), (uv[:, 2] - uv[:, 3]).norm(dim=-1)], -1) / eye[:, None] / std
    expected = ((rigid - rigid.mean(0)) - (tracked - tracked.mean(0))).pow(2).mean()
    assert loss == pytest.approx(float(expected), rel=1e-3)
    assert loss > 0.3  # the opening mouth is there to learn: the rigid template's barely varies


def test_field_mouth_term_teaches_the_face_field_and_not_the_code(tmp_path):
    """After the mouth-shape pretraining has put the opening into the code, the field-mouth term
    alone trains the face field until its lips open with the mouth that drives the audio
    features; the audio smoother and the Gaussians are not touched by it (the code is detached)."""
    t, clip = face_trainer(tmp_path, mouth_shape_batch=16)
    t.pretrain_mouth_shape(150)
    smoother = [p.detach().clone() for p in t.model.smoother.parameters()]
    means = t.model.gaussians.head.means.detach().clone()

    def loss_on_every_frame() -> float:
        with torch.no_grad():
            return t.field_mouth_loss(t.data.mouth_shape_ids).item()

    first = loss_on_every_frame()
    for _ in range(150):
        loss = t.field_mouth_loss()
        t.net_opt.zero_grad(set_to_none=True)
        loss.backward()
        t.net_opt.step()
    after = loss_on_every_frame()
    print(f"field-mouth loss on every frame: {first:.3f} -> {after:.3f}")
    assert after < 0.5 * first
    points = torch.as_tensor(t.data.template[[13, 14]], dtype=torch.float32)
    with torch.no_grad():
        codes = t.model.codes(t.data.audio)
        moved = t.model.deform_points(points, codes, t.data.eyes)  # [30, 2, 3]
    gap = (moved[:, 0] - moved[:, 1]).norm(dim=-1).numpy()
    assert np.corrcoef(gap, clip.opening)[0, 1] > 0.9
    assert all(torch.equal(a, b) for a, b in zip(smoother, t.model.smoother.parameters()))
    assert torch.equal(means, t.model.gaussians.head.means)


def test_run_training_pretrains_the_code_once_at_the_deformation_stage(tmp_path):
    """run_training pretrains at the stage boundary, once; full deformation steps then add the term
    (and static steps never); a resumed run goes on bit for bit, the read-out included."""
    t, _ = face_trainer(tmp_path, mouth_shape_pretrain=5, mouth_shape_batch=8, mouth_shape_weight=0.1)
    t.step_count = 0
    pretrains, terms = [], []
    pretrain, term = t.pretrain_mouth_shape, t.mouth_shape_loss
    t.pretrain_mouth_shape = lambda n, on_step=None: (pretrains.append((t.step_count, n)), pretrain(n, on_step))[1]
    t.mouth_shape_loss = lambda: (terms.append(t.stage), term())[1]
    run_training(t, progress=False)
    assert pretrains == [(t.settings.static_iters, 5)]
    assert terms == ["deform"] * (5 + t.settings.deform_iters)  # 5 pretraining updates, then one per full step

    t2, _ = face_trainer(tmp_path / "b", mouth_shape_pretrain=5, mouth_shape_batch=8, mouth_shape_weight=0.1)
    t2.load_checkpoint(tmp_path / "checkpoint.safetensors")
    assert torch.equal(t2.mouth_head.weight, t.mouth_head.weight)
    t.settings.deform_iters += 1
    t2.settings.deform_iters += 1
    t.step()
    t2.step()
    assert t.history[-1] == t2.history[-1]
    assert torch.equal(t2.mouth_head.weight, t.mouth_head.weight)


def test_smoother_lr_sets_the_audio_smoothers_share_of_the_network_rate(tmp_path):
    """`smoother_lr` 0: deformation steps leave the audio smoother as pretraining left it while the
    face field learns; 0.5: the smoother's group runs at half the other networks' decayed rate."""
    t, _ = face_trainer(tmp_path, smoother_lr=0.0, mouth_shape_weight=0.1)
    smoother = [p.detach().clone() for p in t.model.smoother.parameters()]
    field = [p.detach().clone() for p in t.model.face.parameters()]
    head = t.mouth_head.weight.detach().clone()
    for _ in range(3):
        t.step()
    assert all(torch.equal(a, b) for a, b in zip(smoother, t.model.smoother.parameters()))
    assert not all(torch.equal(a, b) for a, b in zip(field, t.model.face.parameters()))
    assert not torch.equal(head, t.mouth_head.weight)  # the read-out still follows the (fixed) code

    t, _ = face_trainer(tmp_path / "half", smoother_lr=0.5)
    t.step_count = t.settings.static_iters + t.settings.deform_iters // 2
    t._update_lr()
    lr = {g["name"]: g["lr"] for g in t.net_opt.param_groups}
    assert lr["smoother"] == pytest.approx(0.5 * lr["other"])
    assert lr["other"] < 5e-4  # decayed
    names = {id(p) for g in t.net_opt.param_groups if g["name"] == "smoother" for p in g["params"]}
    assert names == {id(p) for p in t.model.smoother.parameters()}

    t, _ = face_trainer(tmp_path / "default")
    assert [g["name"] for g in t.net_opt.param_groups] == ["tables", "other"]


def test_mouth_gain_scales_the_audios_deltas_about_the_mean_code(tmp_path):
    """deform(mouth_gain=g): deltas(mean code) + g * (deltas(code) - deltas(mean code)) for the
    head; the eye's motion (the mean code's face) is the same at every gain."""
    t = make_trainer(tmp_path, iters=4)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():  # a face field that moves things (its output layer starts at zero)
        for p in t.model.face.mlp.out.parameters():
            p.copy_(0.05 * torch.randn(p.shape, generator=gen))
    t.model.set_mouth_gain(t.mean_code(), 1.0)
    code, viewmat, eye = t.code(5).detach(), t.data.viewmats[5], t.data.eyes[5]
    with torch.no_grad():
        heads = {g: t.model.deform(code, viewmat, eye, mouth_gain=g)[0] for g in (0.0, 1.0, 2.0)}
        rest = t.model.deform(t.model.code_mean, viewmat, eye)[0]
        rest2 = t.model.deform(t.model.code_mean, viewmat, eye, mouth_gain=2.0)[0]
    moved = heads[1.0]["means3d"] - rest["means3d"]
    assert moved.abs().max() > 1e-3
    torch.testing.assert_close(heads[2.0]["means3d"] - rest["means3d"], 2 * moved, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(heads[0.0]["means3d"], rest["means3d"])
    torch.testing.assert_close(rest2["means3d"], rest["means3d"])
    assert not torch.allclose(heads[2.0]["scales"], heads[1.0]["scales"])  # quaternions and scales too


def test_fit_stores_the_mean_code_and_the_presets_mouth_gain(tmp_path):
    from safetensors.torch import load_file as st_load
    from safetensors.torch import save_file as st_save
    from safetensors import safe_open

    from gstalker.speak import Talker
    from gstalker.train import SPEAK_MOUTH_GAIN

    t = make_trainer(tmp_path, iters=4)
    t.settings.preset = "cpu"  # its gain; the schedule stays the small one
    run_training(t, progress=False)
    assert t.model.mouth_gain == SPEAK_MOUTH_GAIN["cpu"] != 1.0
    with torch.no_grad():
        codes = t.model.smoother(t.model.normalize_audio(t.data.windows(t.data.train_ids, t.model.smoother.att_window)))
    torch.testing.assert_close(t.model.code_mean, codes.mean(0))
    path = t.model.save(tmp_path / "m.safetensors")
    model, meta = TalkerModel.load(path)
    assert meta["format_version"] == 4 and model.mouth_gain == SPEAK_MOUTH_GAIN["cpu"]
    torch.testing.assert_close(model.code_mean, t.model.code_mean)
    assert Talker(model, meta).mouth_gain == SPEAK_MOUTH_GAIN["cpu"]

    # a format 3 file: no mean code, no gain in its config -> speaks at 1 and refuses another
    tensors = st_load(str(path))
    with safe_open(str(path), "pt") as f:
        meta = json.loads(f.metadata()["gstalker"])
    meta["format_version"] = 3
    del meta["config"]["mouth_gain"]
    st_save({k: v for k, v in tensors.items() if k != "code_mean"}, str(tmp_path / "old.safetensors"),
            metadata={"gstalker": json.dumps(meta)})
    old, meta = TalkerModel.load(tmp_path / "old.safetensors")
    assert old.mouth_gain is None and Talker(old, meta).mouth_gain == 1.0
    assert Talker(old, meta, mouth_gain=1.0).mouth_gain == 1.0
    with pytest.raises(ValueError, match="before mouth gain"):
        Talker(old, meta, mouth_gain=1.5)
