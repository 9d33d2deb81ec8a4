"""`gstalker eval`: the metrics against hand-computed values, the command and its JSON report on a
tiny model fitted to a synthetic workdir (fast), bad inputs, and the real smoke model (shared
fixture) beating the mean-frame baseline."""

import json
import math
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from gstalker import evaluate as ev
from gstalker import metrics as M
from gstalker.cli import app
from cli_errors import one_line_error

runner = CliRunner()


# ------------------------------------------------------------------------------ metrics by hand


def test_psnr_of_a_known_noise_level():
    a = torch.full((16, 16, 3), 0.5)
    sign = torch.ones(16, 16, 3)
    sign[::2] = -1
    assert M.psnr(a, a + 0.1 * sign) == pytest.approx(20.0, abs=1e-5)  # MSE 0.01
    assert M.psnr(a, a + 0.05 * sign) == pytest.approx(20 - 20 * math.log10(0.5), abs=1e-5)  # 26.02 dB
    assert M.psnr(a, a) == pytest.approx(100.0)  # MSE floored at 1e-10


def test_ssim_identical_constant_and_a_naive_reference():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(20, 24, 3, generator=g)
    assert M.ssim(x, x) == pytest.approx(1.0, abs=1e-12)
    # constant images: no variance, so SSIM is the luminance term alone
    c1, c2, C1 = 0.2, 0.6, 0.01**2
    expected = (2 * c1 * c2 + C1) / (c1**2 + c2**2 + C1)
    assert M.ssim(torch.full((12, 12, 3), c1, dtype=torch.float64), torch.full((12, 12, 3), c2, dtype=torch.float64)) == pytest.approx(expected, rel=1e-12)
    # a structured case against a per-window loop written from the paper's definition
    y = (x + 0.2 * torch.rand(20, 24, 3, generator=g)).clamp(0, 1)
    w = np.exp(-((np.arange(11) - 5.0) ** 2) / (2 * 1.5**2))
    w = np.outer(w, w) / np.outer(w, w).sum()
    xs, ys = x.double().numpy(), y.double().numpy()
    vals = []
    for c in range(3):
        for i in range(20 - 10):
            for j in range(24 - 10):
                p, q = xs[i:i + 11, j:j + 11, c], ys[i:i + 11, j:j + 11, c]
                mp, mq = (w * p).sum(), (w * q).sum()
                vp, vq = (w * (p - mp) ** 2).sum(), (w * (q - mq) ** 2).sum()
                cov = (w * (p - mp) * (q - mq)).sum()
                vals.append((2 * mp * mq + C1) * (2 * cov + 0.03**2) / ((mp**2 + mq**2 + C1) * (vp + vq + 0.03**2)))
    assert M.ssim(x, y) == pytest.approx(float(np.mean(vals)), abs=1e-10)
    assert M.ssim(x, y) == pytest.approx(M.ssim(y, x), abs=1e-12) and M.ssim(x, y) < 0.99
    with pytest.raises(ValueError, match="at least 11x11"):
        M.ssim(torch.zeros(8, 30, 3), torch.zeros(8, 30, 3))


def test_lmd_of_shifted_landmarks_and_the_mouth_points():
    from mediapipe.python.solutions.face_mesh_connections import FACEMESH_LIPS

    assert sorted(M.MOUTH) == sorted({i for edge in FACEMESH_LIPS for i in edge}) and len(M.MOUTH) == 40
    lm = np.random.default_rng(0).uniform(0, 128, (5, 478, 2))
    shifted = lm.copy()
    shifted[:, list(M.MOUTH)] += (3.0, 4.0)
    assert M.lmd(shifted, lm) == pytest.approx(5.0)
    elsewhere = lm.copy()
    elsewhere[:, 33] += 50  # an eye corner: not a mouth point
    assert M.lmd(elsewhere, lm) == 0.0
    assert M.lmd(shifted, lm.mean(0)) == pytest.approx(M.lmd(shifted, np.broadcast_to(lm.mean(0), lm.shape)))


def test_mouth_opening_and_correlation():
    lm = np.zeros((4, 478, 2))
    gaps = np.array([1.0, 3.0, 2.0, 5.0])
    for u, d in M.INNER_LIP_PAIRS:
        lm[:, d, 1] = gaps
    assert np.allclose(M.mouth_opening(lm), gaps)
    assert M.correlation(gaps, 2 * gaps + 7) == pytest.approx(1.0)
    assert M.correlation(gaps, -gaps) == pytest.approx(-1.0)
    assert M.correlation(gaps, np.ones(4)) is None  # a still mouth: undefined, not 0
    assert M.correlation(gaps[:2], gaps[:2]) is None


def test_face_box():
    lm = np.array([[40.0, 50.0], [80.0, 100.0]])
    rows, cols = M.face_box(lm, 128, 128)
    assert (cols.start, cols.stop, rows.start, rows.stop) == (36, 84, 45, 105)  # 10% of the size each side
    rows, cols = M.face_box(np.array([[0.0, 125.0], [2.0, 127.0]]), 128, 128)  # tiny, in a corner
    assert cols.stop - cols.start == 16 and rows.stop - rows.start == 16 and cols.start == 0 and rows.stop == 128


def test_lpips_only_with_its_weights(monkeypatch, tmp_path):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    lp = M.Lpips()
    assert not lp.available and M.LPIPS_WEIGHTS in lp.reason
    # the plumbing with a random backbone (tests only: never a reported number)
    lp = M.Lpips(pretrained_backbone=False)
    x = torch.rand(32, 32, 3, generator=torch.Generator().manual_seed(0))
    assert lp.available and lp(x, x) == pytest.approx(0.0, abs=1e-6) and lp(x, 1 - x) > 0


# ------------------------------------------------------------------ lip-sync measures (gstalker.metrics)


def test_loudness_db_per_frame():
    from gstalker import metrics as M

    t = np.arange(3 * 640) / 16000
    wave = np.zeros(3 * 640 + 100)
    wave[:640] = 1.0  # full-scale DC: 0 dB
    wave[640:1280] = 0.1 * np.sin(2 * np.pi * 400 * t[:640])  # 400 Hz sine at 0.1: -23.01 dB
    # frame 2 silent, frame 3 only partly present (100 samples of silence): floored
    db = M.loudness_db(wave, 4)
    assert db.shape == (4,)
    assert db[0] == pytest.approx(0.0, abs=1e-6)
    assert db[1] == pytest.approx(20 * math.log10(0.1 / math.sqrt(2)), abs=1e-3)
    assert db[2] == pytest.approx(M.FLOOR_DB) and db[3] == pytest.approx(M.FLOOR_DB)
    # frame k covers [k/25, (k+1)/25) s: a click in sample 640 belongs to frame 1 only
    click = np.zeros(1280)
    click[640] = 1.0
    assert list(M.loudness_db(click, 2) > -50) == [False, True]


def test_mouth_opening_ratio():
    from gstalker import metrics as M

    lm = np.zeros((3, 478, 2))
    lm[:, 33] = (10.0, 50.0)
    lm[:, 263] = (90.0, 50.0)  # eye corners 80 px apart
    lm[:, 13] = (50.0, 70.0)
    lm[:, 14] = [(50.0, 70.0), (50.0, 78.0), (53.0, 74.0)]  # gaps 0, 8, 5
    assert np.allclose(M.mouth_opening_ratio(lm), [0.0, 0.1, 0.0625])
    assert np.allclose(M.mouth_opening_ratio(lm * 4), [0.0, 0.1, 0.0625]), "independent of the image size"
    lm[1] = np.nan  # no face found in frame 1
    r = M.mouth_opening_ratio(lm)
    assert np.isnan(r[1]) and np.isfinite(r[[0, 2]]).all()


def test_av_sync_finds_the_lag_and_its_sign():
    from gstalker import metrics as M

    rng = np.random.default_rng(0)
    loud = rng.normal(size=60)
    late = np.roll(loud, 2)  # the mouth of frame t follows the sound of frame t - 2
    corr, lag = M.av_sync(loud, late)
    assert lag == 2 and corr == pytest.approx(1.0, abs=1e-9), "positive lag = mouth after the sound"
    corr, lag = M.av_sync(loud, np.roll(loud, -1))
    assert lag == -1 and corr == pytest.approx(1.0, abs=1e-9)
    # a mouth that closes when it is loud is anti-correlated at every lag: not sync
    corr, lag = M.av_sync(loud, -loud)
    assert corr < 0.5
    # outside the lag range: no strong correlation
    corr, _ = M.av_sync(loud, np.roll(loud, 5))
    assert corr < 0.5
    # missing frames are left out, undefined cases are None
    op = late.copy()
    op[10:20] = np.nan
    assert M.av_sync(loud, op) == (pytest.approx(1.0, abs=1e-9), 2)
    # one frame of digital silence does not swamp the speech: it counts as 30 dB under the median
    db = -30 + 15 * np.sin(np.arange(40) / 2)
    mouth = np.roll(db, 1)
    db[0] = M.FLOOR_DB
    assert M.av_sync(db, mouth)[1] == 1 and M.av_sync(db, mouth)[0] > 0.9
    assert M.av_sync(db, mouth, floor_below_median_db=None)[0] < 0.75
    assert M.av_sync(loud[:9], loud[:9]) == (None, None)  # under 10 frames
    assert M.av_sync(loud, np.ones(60)) == (None, None)  # a still mouth
    with pytest.raises(ValueError):
        M.av_sync(loud, loud[:-1])


def test_mouth_motion_and_silence_motion_threshold():
    from gstalker import metrics as M

    assert M.mouth_motion([1.0, 3.0, np.nan]) == pytest.approx(1.0)
    assert M.mouth_motion([2.0]) is None
    # median loudness -20 dB: frames at -51 dB are silent (31 dB under), frames at -49 dB (29 under) are not
    loud = np.array([-20.0] * 24 + [-51.0] * 10 + [-49.0] * 6)
    opening = np.array([0.0, 0.2] * 12 + [0.1, 0.12] * 5 + [0.0, 0.4] * 3)
    assert M.silent_frames(loud).tolist() == [False] * 24 + [True] * 10 + [False] * 6
    assert M.silent_frames(loud, below_db=28).sum() == 16 and M.silent_frames(loud, below_db=32).sum() == 0
    speech = M.mouth_motion(np.r_[opening[:24], opening[34:]])
    assert M.silence_motion(loud, opening) == pytest.approx(0.01 / speech)
    assert M.silence_motion(loud, opening, below_db=32) is None, "no frame 32 dB under the median"
    assert M.silent_spans(loud) == [(24, 34)]
    assert M.silence_motion(np.full(40, -20.0), opening) is None


def test_mouth_jitter_tells_flicker_from_syllables():
    from gstalker import metrics as M

    t = np.arange(200)
    for period in (6.0, 10.0):  # a sine: each frame is off its neighbours' mean by (1 - cos(2 pi / P))
        assert M.mouth_jitter(np.sin(2 * np.pi * t / period)) == pytest.approx(1 - np.cos(2 * np.pi / period), rel=0.02)
    smooth = 0.05 + 0.02 * np.sin(2 * np.pi * t / 8)
    spiky = smooth.copy()
    spiky[::7] += 0.06  # a mouth that opens and shuts within a frame every 7 frames
    assert M.mouth_jitter(spiky) > 2 * M.mouth_jitter(smooth)
    assert M.mouth_jitter(np.random.default_rng(0).normal(size=400)) == pytest.approx(np.sqrt(1.5), rel=0.1)
    # frames without a face take their neighbours' triples out, not the whole series
    gappy = smooth.copy()
    gappy[50] = np.nan
    assert M.mouth_jitter(gappy) == pytest.approx(M.mouth_jitter(smooth), rel=0.05)
    assert M.mouth_jitter(np.ones(50)) is None and M.mouth_jitter(smooth[:10]) is None


# ------------------------------------------------------------------ a synthetic preprocessing workdir


def write_workdir(path, n=30, size=48, seed=0, feature_dim=80):
    """SyntheticClip written in the layout `gstalker preprocess` makes (frames, masks, tracks,
    background, audio, meta.json)."""
    from safetensors.torch import save_file
    from torchvision.io import write_jpeg, write_png

    from gstalker.audio import save_wav
    from synthetic import SyntheticClip

    clip = SyntheticClip(n=n, size=size, feature_dim=feature_dim, seed=seed)
    (path / "frames").mkdir(parents=True)
    (path / "masks").mkdir()
    u8 = lambda x: (x * 255).round().byte().permute(2, 0, 1).contiguous()  # noqa: E731
    for k in range(n):
        write_jpeg(u8(clip.frame(k)), str(path / "frames" / f"{k:06d}.jpg"), quality=95)
        write_png(u8(clip.masks(k)), str(path / "masks" / f"{k:06d}.png"))
    write_png(u8(clip.background), str(path / "background.png"))
    t = np.arange(n * 640) / 16000
    save_wav(path / "audio.wav", (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32), 16000)
    ring = np.random.default_rng(seed).uniform(size * 0.25, size * 0.65, (478, 2))  # a 'face' inside the disc
    save_file({
        "landmarks": torch.tensor(ring, dtype=torch.float32).repeat(n, 1, 1),
        "viewmats": clip.viewmats.float().contiguous(),
        "eye": clip.tracks["eye"].float(),
        "lip_boxes": clip.tracks["lip_boxes"].float().contiguous(),
        "frame_ok": torch.ones(n, dtype=torch.uint8),
        "audio_features": clip.audio_features().float().contiguous(),
    }, str(path / "tracks.safetensors"))
    K = clip.K
    meta = {
        "format_version": 1, "fps": 25, "num_frames": n, "size": [size, size], "sample_rate": 16000,
        "intrinsics": {"fx": float(K[0, 0]), "fy": float(K[1, 1]), "cx": float(K[0, 2]), "cy": float(K[1, 2])},
        "val_start": clip.meta["val_start"],
        "audio_features": {"kind": "mel", "dim": feature_dim, "window": 16, "rate": 50, "model": None},
        "files": {"frames": "frames/{:06d}.jpg", "masks": "masks/{:06d}.png", "background": "background.png",
                  "audio": "audio.wav", "tracks": "tracks.safetensors"},
    }
    (path / "meta.json").write_text(json.dumps(meta))
    return path


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A model trained 30 iterations on a synthetic workdir (3 held-out frames)."""
    from gstalker.data import PreprocessedVideo
    from gstalker.train import FitSettings, Trainer, TrainData

    tmp = tmp_path_factory.mktemp("eval")
    wd = write_workdir(tmp / "work")
    pv = PreprocessedVideo(wd, "all")
    s = FitSettings.from_preset("smoke", size=48, lpips="off", iters=30)
    s.schedule.update(n_head=300, n_torso=150, preview_every=0, log2_table_size=8)
    t = Trainer(TrainData(pv, torch.device("cpu")), s, pv.meta["audio_features"], tmp)
    for _ in range(30):
        t.step()
    t.model.set_mouth_gain(t.mean_code(), 1.0)  # as run_training does at its end
    return {"model": t.model.save(tmp / "subject.safetensors", {"iterations": 30}), "workdir": wd, "tmp": tmp}


TOP_KEYS = ["schema", "mode", "gstalker_version", "model", "workdir", "device", "device_name", "size", "frames", "heldout",
            "baseline", "metrics"]
METRIC_KEYS = ["metric", "value", "unit", "frames", "baseline", "better", "note"]


def test_eval_command_report_and_video(tiny, tmp_path):
    out, video = tmp_path / "report.json", tmp_path / "sbs.mp4"
    result = runner.invoke(app, ["eval", str(tiny["model"]), "--workdir", str(tiny["workdir"]), "--out", str(out),
                                 "--video", str(video), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert "| psnr |" in result.output and "baseline" in result.output and str(out) in result.output
    report = json.loads(out.read_text())
    # the schema is a contract: keys, order of metrics, units
    assert list(report) == TOP_KEYS and report["schema"] == "gstalker.eval/1" and report["mode"] == "self"
    # the original metrics keep their order; the lip-sync ones follow
    assert [m["metric"] for m in report["metrics"]] == ["psnr", "ssim", "psnr_face", "ssim_face", "lpips", "lmd",
                                                        "lip_corr", "render_fps", "av_sync", "av_lag",
                                                        "mouth_motion", "silence_motion", "mouth_jitter"]
    assert all(list(m) == METRIC_KEYS for m in report["metrics"])
    assert {m["metric"]: m["unit"] for m in report["metrics"]}["psnr"] == "dB"
    from gstalker.evaluate import file_sha256, metric

    assert report["model"]["sha256"] == file_sha256(tiny["model"]) and len(report["model"]["sha256"]) == 64
    assert report["model"]["mouth_gain"] == 1.0 and "mouth gain 1)" in result.output  # the model's own
    assert report["frames"] == 3 and report["heldout"]["first"] == 27 and report["heldout"]["last"] == 29
    assert report["device"] == "cpu" and report["size"] == [48, 48]
    for name in ("psnr", "ssim", "psnr_face", "ssim_face"):
        m = metric(report, name)
        assert m["frames"] == 3 and math.isfinite(m["value"]) and math.isfinite(m["baseline"]), m
    assert 0 < metric(report, "ssim")["value"] <= 1
    fps = metric(report, "render_fps")
    assert fps["value"] > 0 and fps["baseline"] is None and fps["frames"] == 3
    lp = metric(report, "lpips")
    assert (lp["value"] is None) == (lp["note"] is not None), "LPIPS is a number or unavailable with a reason"
    # MediaPipe finds no face in a synthetic disc: LMD is unavailable and says why, never invented
    for name in ("lmd", "lip_corr"):
        m = metric(report, name)
        assert m["value"] is None and m["frames"] == 0 and "no face" in m["note"], m
    for name in ("av_sync", "av_lag", "mouth_motion", "silence_motion", "mouth_jitter"):
        m = metric(report, name)
        assert m["value"] is None and m["frames"] == 0 and m["note"], m
    with av.open(str(video)) as c:
        v = c.streams.video[0]
        assert (v.codec_context.width, v.codec_context.height) == (3 * 48, 48) and len(c.streams.audio) == 1
        assert sum(1 for _ in c.decode(video=0)) == 3
    assert "mouth plot: " + str(tmp_path / "report.mouth.png") in result.output
    assert (tmp_path / "report.mouth.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.json", "report.mouth.png", "sbs.mp4"], \
        "no temp files left"


def test_eval_default_report_path_and_api_with_lpips(tiny):
    result = runner.invoke(app, ["eval", str(tiny["model"]), "-w", str(tiny["workdir"]), "--max-frames", "1",
                                 "--device", "cpu"])
    assert result.exit_code == 0, result.output
    default = tiny["model"].with_suffix(".eval.json")
    assert json.loads(default.read_text())["frames"] == 1
    report = ev.evaluate(tiny["model"], tiny["workdir"], device="cpu", max_frames=2, progress=False,
                         lpips=M.Lpips(pretrained_backbone=False))  # random backbone: plumbing only
    lp = ev.metric(report, "lpips")
    assert lp["frames"] == 2 and lp["value"] >= 0 and lp["baseline"] >= 0 and lp["note"] is None
    # the mean-frame baseline is the PSNR of the mean training frame, as `fit` reports it
    from gstalker.data import PreprocessedVideo
    from gstalker.metrics import mean_frame_psnr
    from gstalker.train import TrainData

    data = TrainData(PreprocessedVideo(tiny["workdir"], "all"), torch.device("cpu"))
    fit_baseline = mean_frame_psnr(lambda i: data.frame(i)[0], data.train_ids, data.val_ids[:2])
    assert ev.metric(report, "psnr")["baseline"] == pytest.approx(fit_baseline, abs=1e-3)


def test_flagged_tail_frames_are_rendered_but_not_scored(tiny, tmp_path):
    import shutil

    from safetensors.torch import load_file, save_file

    wd = tmp_path / "work"
    shutil.copytree(tiny["workdir"], wd)
    tracks = load_file(str(wd / "tracks.safetensors"))
    tracks["frame_ok"][28] = 0  # a cut in the held-out tail
    save_file(tracks, str(wd / "tracks.safetensors"))
    report = ev.evaluate(tiny["model"], wd, video=tmp_path / "v.mp4", device="cpu", progress=False)
    assert report["frames"] == 2 and report["heldout"]["flagged"] == 1
    assert ev.metric(report, "psnr")["frames"] == 2
    with av.open(str(tmp_path / "v.mp4")) as c:
        assert sum(1 for _ in c.decode(video=0)) == 3, "the video keeps every frame, in step with the audio"


def test_eval_bad_inputs(tiny, tmp_path):
    m, wd = str(tiny["model"]), str(tiny["workdir"])
    out = str(tmp_path / "r.json")
    one_line_error(runner.invoke(app, ["eval", str(tmp_path / "none.safetensors"), "-w", wd, "-o", out]),
                    "no such model file")
    one_line_error(runner.invoke(app, ["eval", m, "-w", str(tmp_path), "-o", out]), "not a preprocessing workdir")
    one_line_error(runner.invoke(app, ["eval", m, "-w", str(tmp_path / "nowhere"), "-o", out]), "does not exist")
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "meta.json").write_text("{}")
    one_line_error(runner.invoke(app, ["eval", m, "-w", str(tmp_path / "broken"), "-o", out]),
                    "not a complete preprocessing workdir")
    small = write_workdir(tmp_path / "small", n=12, size=32)
    one_line_error(runner.invoke(app, ["eval", m, "-w", str(small), "-o", out]), "48x48", "32x32")
    other = write_workdir(tmp_path / "other", n=12, size=48, seed=1)
    one_line_error(runner.invoke(app, ["eval", m, "-w", str(other), "-o", out]), "not fitted on")
    one_line_error(runner.invoke(app, ["eval", m, "-w", wd, "-o", out, "--max-frames", "0"]), "--max-frames")
    one_line_error(runner.invoke(app, ["eval", m, "-w", wd, "-o", str(tmp_path / "nodir" / "r.json")]),
                    "does not exist")
    one_line_error(runner.invoke(app, ["eval", m, "-w", wd, "-o", str(tmp_path)]), "is a directory")
    assert not (tmp_path / "r.json").exists()


# ------------------------------------------------------------------------ cross-driven (--audio)

CROSS_KEYS = ["schema", "mode", "gstalker_version", "model", "workdir", "audio", "device", "device_name", "size",
              "frames", "baseline", "metrics"]


def speech_like(seconds=1.2, seed=0):
    """Noise bursts (syllables) with a silent gap in the middle: 16 kHz float32."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * 16000)) / 16000
    wave = 0.3 * rng.normal(size=len(t)) * (0.5 + 0.5 * np.sin(2 * np.pi * 4 * t)) ** 2
    wave[(t > seconds * 0.4) & (t < seconds * 0.6)] = 0.0
    return wave.astype(np.float32)


def test_eval_cross_driven_report_plot_and_video(tiny, tmp_path):
    from gstalker.audio import save_wav
    from gstalker.evaluate import file_sha256, metric

    speech = tmp_path / "speech.wav"
    save_wav(speech, speech_like(1.2), 16000)
    out, video = tmp_path / "cross.json", tmp_path / "said.mp4"
    result = runner.invoke(app, ["eval", str(tiny["model"]), "-w", str(tiny["workdir"]), "--audio", str(speech),
                                 "-o", str(out), "--video", str(video), "--device", "cpu", "--mouth-gain", "1.4"])
    assert result.exit_code == 0, result.output
    assert "cross-driven by speech.wav" in result.output and "| av_sync |" in result.output
    report = json.loads(out.read_text())
    assert report["model"]["mouth_gain"] == 1.4 and "mouth gain 1.4)" in result.output
    assert list(report) == CROSS_KEYS and report["mode"] == "cross" and report["schema"] == "gstalker.eval/1"
    assert report["audio"] == {"path": str(speech), "sha256": file_sha256(speech), "seconds": 1.2}
    assert [m["metric"] for m in report["metrics"]] == ["av_sync", "av_lag", "mouth_motion", "silence_motion",
                                                        "mouth_jitter", "speaker_corr", "speaker_sync", "speaker_lag",
                                                        "render_fps"], "no ground truth: no psnr and the rest"
    for name in ("speaker_corr", "speaker_sync", "speaker_lag"):  # a sound file: no speaker to compare with
        m = metric(report, name)
        assert m["value"] is None and m["frames"] == 0 and "sound file" in m["note"], m
    assert all(list(m) == METRIC_KEYS for m in report["metrics"]) and report["frames"] == 30
    assert metric(report, "render_fps")["value"] > 0
    for name in ("av_sync", "mouth_motion"):  # no face in a synthetic disc: null, with the reason
        assert metric(report, name)["value"] is None and "no face" in metric(report, name)["note"]
    # the baseline is the training video's own (its tracked 'landmarks' are still: no mouth motion)
    assert metric(report, "mouth_motion")["baseline"] == 0.0 and "training video" in report["baseline"]
    plot = tmp_path / "cross.mouth.png"
    assert "mouth plot: " + str(plot) in result.output and plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with av.open(str(video)) as c:
        v, a = c.streams.video[0], c.streams.audio[0]
        assert (v.codec_context.width, v.codec_context.height) == (48, 48), "rendered frames alone"
        assert sum(1 for _ in c.decode(video=0)) == 30
        assert float(a.duration * a.time_base) == pytest.approx(1.2, abs=0.07), "the speech's duration"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cross.json", "cross.mouth.png", "said.mp4", "speech.wav"]
    # the default report path says it is cross-driven
    result = runner.invoke(app, ["eval", str(tiny["model"]), "-w", str(tiny["workdir"]), "--audio", str(speech),
                                 "--max-frames", "12", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    default = tiny["model"].with_suffix(".cross.eval.json")
    assert json.loads(default.read_text())["frames"] == 12
    assert tiny["model"].with_name(tiny["model"].stem + ".cross.eval.mouth.png").is_file()


def test_speaker_rows_find_the_lag_between_the_rendered_and_the_speakers_mouth():
    """speaker_corr at lag 0, speaker_sync / speaker_lag over -3..3: the rendered mouth moving two
    frames after the speaker's is found at lag +2 (positive: rendered after), with r near 1 there
    and far lower at lag 0."""
    rng = np.random.default_rng(3)
    speaker = np.convolve(rng.standard_normal(200), np.ones(4) / 4, mode="same")  # syllable-like wobble
    speaker[[10, 50]] = np.nan  # frames with no face
    rendered = np.concatenate([np.full(2, np.nan), speaker[:-2]]) + 0.01 * rng.standard_normal(200)
    values, baselines, notes, frames = {}, {}, {}, {}
    ev._speaker_rows(values, baselines, notes, frames, speaker, rendered, Path("them.mp4"))
    assert values["speaker_lag"] == 2 and values["speaker_sync"] > 0.99
    assert values["speaker_corr"] < 0.5
    assert frames["speaker_corr"] == 194 and "them.mp4" in notes["speaker_sync"]
    assert baselines == {"speaker_corr": None, "speaker_sync": None, "speaker_lag": None}


def test_eval_cross_driven_short_speech_gives_null_metrics_with_a_note(tiny, tmp_path):
    report = ev.evaluate(tiny["model"], tiny["workdir"], audio=_wav(tmp_path, speech_like(0.2)), device="cpu",
                         progress=False, plot=tmp_path / "m.png")
    assert report["frames"] == 5 and (tmp_path / "m.png").is_file()
    for name in ("av_sync", "av_lag", "mouth_motion", "silence_motion", "mouth_jitter"):
        m = ev.metric(report, name)
        assert m["value"] is None and "under 10" in m["note"], m
    assert "cross-driven by" in ev.format_table(report)


def _wav(tmp_path, wave, name="s.wav"):
    from gstalker.audio import save_wav

    save_wav(tmp_path / name, wave, 16000)
    return tmp_path / name


def test_eval_cross_driven_bad_audio(tiny, tmp_path):
    m, wd = str(tiny["model"]), str(tiny["workdir"])
    out = str(tmp_path / "r.json")

    def run(audio):
        return runner.invoke(app, ["eval", m, "-w", wd, "-o", out, "--audio", str(audio), "--device", "cpu"])

    one_line_error(run(tmp_path / "none.wav"), "none.wav", "no such file")
    (tmp_path / "notes.txt").write_text("not audio at all\n" * 50)
    one_line_error(run(tmp_path / "notes.txt"), "notes.txt")
    one_line_error(run(_wav(tmp_path, np.zeros(16000, np.float32), "quiet.wav")), "quiet.wav", "silent")
    one_line_error(run(_wav(tmp_path, speech_like(0.01), "click.wav")), "shorter than one video frame")
    assert not (tmp_path / "r.json").exists() and not (tmp_path / "r.mouth.png").exists()


# ------------------------------------------------------------------------ the real smoke model


def test_eval_smoke_model_beats_the_mean_frame(smoke_model, tmp_path):
    out = tmp_path / "report.json"
    result = runner.invoke(app, ["eval", str(smoke_model["model"]), "-w", str(smoke_model["workdir"]),
                                 "-o", str(out), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    print(result.output)
    report = json.loads(out.read_text())
    psnr = ev.metric(report, "psnr")
    assert report["frames"] >= 10 and psnr["frames"] == report["frames"]
    assert psnr["value"] > psnr["baseline"], psnr
    lm = ev.metric(report, "lmd")
    assert lm["value"] is None or 0 <= lm["value"] < 128
    # held out: the tail the model is scored on begins at the workdir's val_start
    assert report["heldout"]["first"] >= report["heldout"]["val_start"]


def test_eval_cross_driven_on_the_smoke_model(smoke_model, media_dir, tmp_path):
    speech = media_dir / "retalking_audio1.wav"  # 5 s, 44.1 kHz stereo: resampled like speak does
    out, video = tmp_path / "cross.json", tmp_path / "said.mp4"
    result = runner.invoke(app, ["eval", str(smoke_model["model"]), "-w", str(smoke_model["workdir"]), "--audio",
                                 str(speech), "-o", str(out), "--video", str(video), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    print(result.output)
    report = json.loads(out.read_text())
    assert list(report) == CROSS_KEYS and report["frames"] == 125
    assert (tmp_path / "cross.mouth.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    motion = ev.metric(report, "mouth_motion")
    assert motion["frames"] >= 100, "MediaPipe finds the rendered face (upscaled)"
    assert motion["value"] is not None and motion["baseline"] > 0
    sync = ev.metric(report, "av_sync")
    assert sync["value"] is None or -1 <= sync["value"] <= 1
    assert sync["baseline"] is not None and -3 <= ev.metric(report, "av_lag")["baseline"] <= 3
    with av.open(str(video)) as c:
        a = c.streams.audio[0]
        assert sum(1 for _ in c.decode(video=0)) == 125
        assert float(a.duration * a.time_base) == pytest.approx(5.0, abs=0.07)


def test_eval_cross_driven_by_a_video_scores_against_the_speakers_mouth(smoke_model, media_dir, tmp_path):
    """A video of someone talking as the speech: the model says its audio (aligned to its frames)
    and the rendered mouth is scored against that speaker's tracked mouth, which moves as a
    talking person's does; the plot shows it."""
    speech = media_dir / "retalking_face2.mp4"  # 5 s, 25 fps: a man talking
    mouth = ev.speaker_mouth(speech, progress=False)
    assert mouth is not None, "a video stream: a speaker to compare with"
    wave, opening = mouth
    assert len(opening) == 125 and abs(len(wave) - 125 * 640) <= 640, "one opening per frame, audio beside it"
    assert np.isfinite(opening).sum() >= 120 and np.nanstd(opening) > 0.01, "a talking mouth, tracked"
    assert ev.speaker_mouth(media_dir / "retalking_audio1.wav", progress=False) is None, "a sound file"
    out = tmp_path / "cross.json"
    report = ev.evaluate(smoke_model["model"], smoke_model["workdir"], out=out, audio=speech, device="cpu",
                         progress=False)
    print(ev.format_table(report))
    corr, sync, lag = (ev.metric(report, n) for n in ("speaker_corr", "speaker_sync", "speaker_lag"))
    assert report["frames"] == 125 and corr["frames"] >= 100, "both mouths found in most frames"
    assert -1 <= corr["value"] <= 1 and corr["value"] <= sync["value"] <= 1 and -3 <= lag["value"] <= 3
    assert "retalking_face2.mp4" in corr["note"] and corr["baseline"] is None
    assert (tmp_path / "cross.mouth.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
