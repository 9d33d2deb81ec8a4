"""gstalker preprocess: stream handling and bad inputs on tiny synthetic clips; tracking, poses,
masks and the cache on short spans of the real clips in ../shared/media (skipped when absent)."""

from __future__ import annotations

import json
import math
import shutil
import time
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from gstalker.cli import app
from gstalker.preprocess import PreprocessError, PreprocessWarning, preprocess
from gstalker.preprocess.video import iter_frames, probe
from cli_errors import one_line_error

runner = CliRunner()
pytestmark = pytest.mark.filterwarnings("ignore:The image decoding and encoding capabilities of TorchVision")


# ---------------------------------------------------------------------------------- synthetic clips
def make_clip(path: Path, seconds: float = 3.0, fps: float = 25, size=(96, 64), video=True, audio=True,
              rate: int = 44100, channels: int = 2, frames=None, faststart: bool = False,
              times=None) -> Path:
    """Write an mp4: frame i is a flat grey of level (8 * i) % 256 (or frames[i] if given); audio a
    440 Hz tone. Variable rates like 22.13 fps are written with a fine time base."""
    import av

    opts = {"movflags": "faststart"} if faststart else {}
    with av.open(str(path), "w", format="mp4", options=opts) as c:
        if video:
            vs = c.add_stream("libx264", rate=Fraction(fps).limit_denominator(1000))
            w, h = size if frames is None else (frames[0].shape[1], frames[0].shape[0])
            vs.width, vs.height, vs.pix_fmt = w, h, "yuv420p"
            vs.time_base = Fraction(1, 90000)
            vs.codec_context.time_base = Fraction(1, 90000)
            vs.options = {"preset": "ultrafast", "crf": "10"}
        if audio:
            aus = c.add_stream("aac", rate=rate)
            aus.layout = "stereo" if channels == 2 else "mono"
        n = len(frames) if frames is not None else (len(times) if times is not None else int(round(seconds * fps)))
        if video:
            for i in range(n):
                img = frames[i] if frames is not None else np.full((h, w, 3), (8 * i) % 256, np.uint8)
                fr = av.VideoFrame.from_ndarray(np.ascontiguousarray(img), format="rgb24")
                fr.pts = int(round((times[i] if times is not None else i / fps) * 90000))
                fr.time_base = Fraction(1, 90000)
                for p in vs.encode(fr):
                    c.mux(p)
            for p in vs.encode():
                c.mux(p)
        if audio:
            total = int(seconds * rate) if frames is None else int(n / fps * rate)
            t = np.arange(total) / rate
            tone = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
            data = np.stack([tone] * channels) if channels > 1 else tone[None]
            for s in range(0, total, 1024):
                chunk = np.ascontiguousarray(data[:, s : s + 1024])
                af = av.AudioFrame.from_ndarray(chunk, format="fltp", layout="stereo" if channels == 2 else "mono")
                af.sample_rate = rate
                af.pts = s
                af.time_base = Fraction(1, rate)
                for p in aus.encode(af):
                    c.mux(p)
            for p in aus.encode():
                c.mux(p)
    return path


def _cli_error(args, name):
    return one_line_error(runner.invoke(app, args), name)


# ---------------------------------------------------------------------------------- stream handling
@pytest.mark.parametrize("fps", [22.13, 30.0, 25.0])
def test_resample_to_25fps_by_timestamps(tmp_path, fps):
    clip = make_clip(tmp_path / "c.mp4", seconds=2.4, fps=fps, audio=True)
    info = probe(clip)
    assert abs(info.fps - fps) < 0.05
    got = [(k, int(round(rgb.mean()))) for k, _, rgb in iter_frames(info)]
    n_src = int(round(2.4 * fps))
    assert abs(len(got) - 2.4 * 25) <= 1
    for k, level in got:
        # frame k shows the source frame on screen at (k + 0.5) / 25 s
        src = min(int(math.floor((k + 0.5) / 25 * fps + 1e-6)), n_src - 1)
        assert abs(level - (8 * src) % 256) <= 3, (k, level, src)


def test_variable_frame_rate(tmp_path):
    # frames at irregular times (a phone's VFR: 20-40 ms apart)
    rng = np.random.default_rng(0)
    times = np.cumsum(np.r_[0, rng.uniform(0.02, 0.04, 79)])
    clip = make_clip(tmp_path / "vfr.mp4", seconds=float(times[-1]) + 0.03, fps=30, times=times)
    info = probe(clip)
    got = [(k, int(round(rgb.mean()))) for k, _, rgb in iter_frames(info)]
    assert abs(len(got) - (times[-1] + 0.03) * 25) <= 1.5
    for k, level in got:
        src = int(np.searchsorted(times, (k + 0.5) / 25, side="right") - 1)
        assert abs(level - (8 * src) % 256) <= 3, (k, level, src)


def test_iter_frames_start_end(tmp_path):
    clip = make_clip(tmp_path / "c.mp4", seconds=4.0, fps=25)
    info = probe(clip)
    got = [(k, int(round(rgb.mean()))) for k, _, rgb in iter_frames(info, start=2.0, end=3.0)]
    assert len(got) == 25
    assert abs(got[0][1] - (8 * 50) % 256) <= 3


def _set_rotation_matrix(path: Path, out: Path) -> Path:
    """Patch the video track header's display matrix to a 90-degree rotation (what phones write
    as rotate=90: shown turned clockwise)."""
    import struct

    data = bytearray(path.read_bytes())
    i = data.find(b"tkhd")
    assert data[i + 4] == 0  # version 0 header
    off = i + 4 + 4 + 20 + 8 + 8
    data[off : off + 36] = struct.pack(">9i", 0, 65536, 0, -65536, 0, 0, 0, 0, 1 << 30)
    out.write_bytes(bytes(data))
    return out


def test_rotated_video_is_upright(tmp_path):
    w, h = 64, 32
    img = np.zeros((h, w, 3), np.uint8)
    img[:, : w // 2] = 255  # left half white in the coded frame
    clip = make_clip(tmp_path / "c.mp4", fps=25, frames=[img] * 60)
    rot = _set_rotation_matrix(clip, tmp_path / "rot.mp4")
    info = probe(rot)
    assert (info.width, info.height) == (h, w) and info.rotation in (90, 270)
    _, _, up = next(iter_frames(info))
    assert up.shape == (w, h, 3)
    # turned clockwise for display: the coded left half is now the top half
    assert up[: w // 2 - 4].mean() > 200 and up[w // 2 + 4 :].mean() < 60


def test_rotation_is_applied():
    from gstalker.preprocess.video import _upright

    class F:
        def to_ndarray(self, format):
            a = np.zeros((2, 3, 3), np.uint8)
            a[0, 2] = 255  # top right
            return a

    up = _upright(F(), 90)  # displayed rotated 90 degrees counterclockwise
    assert up.shape == (3, 2, 3) and up[0, 0, 0] == 255
    up = _upright(F(), 270)
    assert up.shape == (3, 2, 3) and up[2, 1, 0] == 255


# ---------------------------------------------------------------------------------- bad inputs
def test_bad_inputs_one_line_exit_2_nothing_written(tmp_path):
    wd = tmp_path / "wd"
    txt = tmp_path / "notes.txt"
    txt.write_text("this is not a video\n" * 50)
    _cli_error(["preprocess", str(txt), "--workdir", str(wd)], "notes.txt")
    _cli_error(["preprocess", str(tmp_path), "--workdir", str(wd)], "directory")
    _cli_error(["preprocess", str(tmp_path / "nope.mp4"), "--workdir", str(wd)], "nope.mp4")
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    _cli_error(["preprocess", str(empty), "--workdir", str(wd)], "empty.mp4")
    novideo = make_clip(tmp_path / "novideo.mp4", video=False)
    assert "no video stream" in _cli_error(["preprocess", str(novideo), "--workdir", str(wd)], "novideo.mp4")
    noaudio = make_clip(tmp_path / "noaudio.mp4", audio=False)
    assert "no audio stream" in _cli_error(["preprocess", str(noaudio), "--workdir", str(wd)], "noaudio.mp4")
    short = make_clip(tmp_path / "short.mp4", seconds=1.2)
    assert "2 s" in _cli_error(["preprocess", str(short), "--workdir", str(wd)], "short.mp4")
    noface = make_clip(tmp_path / "noface.mp4", seconds=2.5)
    assert "no face" in _cli_error(["preprocess", str(noface), "--workdir", str(wd)], "noface.mp4")
    # truncated: the index (moov) at the end is cut off
    good = make_clip(tmp_path / "good.mp4", seconds=3.0)
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    _cli_error(["preprocess", str(cut), "--workdir", str(wd)], "cut.mp4")
    # truncated: index first (faststart), media data cut
    fs = make_clip(tmp_path / "fs.mp4", seconds=4.0, faststart=True)
    cut2 = tmp_path / "cut2.mp4"
    cut2.write_bytes(fs.read_bytes()[: int(fs.stat().st_size * 0.4)])
    assert "truncated" in _cli_error(["preprocess", str(cut2), "--workdir", str(wd)], "cut2.mp4")
    # a trim that leaves too little
    _cli_error(["preprocess", str(good), "--workdir", str(wd), "--start", "2.0"], "good.mp4")
    _cli_error(["preprocess", str(good), "--workdir", str(wd), "--start", "9"], "beyond the end")
    _cli_error(["preprocess", str(good), "--workdir", str(wd), "--audio-features", "nope"], "nope")
    assert not wd.exists()  # nothing half-written


def test_refuses_foreign_folder(tmp_path):
    d = tmp_path / "mine"
    d.mkdir()
    (d / "thesis.tex").write_text("precious")
    good = make_clip(tmp_path / "good.mp4", seconds=3.0)
    _cli_error(["preprocess", str(good), "--workdir", str(d)], "not a gstalker workdir")
    assert (d / "thesis.tex").read_text() == "precious"


# ---------------------------------------------------------------------------------- real clips
def _frames_of(path: Path, start: float, seconds: float, size: int):
    """Some real frames (square crop, resized) to build synthetic clips with faces in them."""
    import torch
    from torchvision.transforms.v2 import functional as TF

    info = probe(path)
    out = []
    for _, _, rgb in iter_frames(info, start=start, end=start + seconds):
        s = min(rgb.shape[:2])
        t = torch.from_numpy(rgb[:s, :s]).permute(2, 0, 1).contiguous()
        out.append(TF.resize(t, [size, size], antialias=True).permute(1, 2, 0).numpy())
    return out


def test_face_lost_too_often_is_an_error(media_dir, tmp_path):
    faces = _frames_of(media_dir / "retalking_face3.mp4", 0.0, 1.0, 192)
    blank = [np.full_like(faces[0], 40)] * 50
    clip = make_clip(tmp_path / "lost.mp4", fps=25, frames=faces + blank)
    wd = tmp_path / "wd"
    with pytest.warns(PreprocessWarning):
        with pytest.raises(PreprocessError, match=r"lost.mp4: the face is lost in \d+ of \d+ frames"):
            preprocess(clip, wd)
    assert not wd.exists()


def test_several_faces_takes_largest_and_warns(media_dir, tmp_path):
    from gstalker.preprocess.crop import find_crop

    big = _frames_of(media_dir / "retalking_face3.mp4", 0.0, 2.2, 256)
    small = _frames_of(media_dir / "retalking_face2.mp4", 0.0, 2.2, 160)
    frames = []
    for a, b in zip(big, small):
        canvas = np.full((256, 448, 3), 90, np.uint8)
        canvas[:, :256] = a
        canvas[48:208, 280:440] = b
        frames.append(canvas)
    clip = make_clip(tmp_path / "two.mp4", fps=25, frames=frames)
    info = probe(clip)
    with pytest.warns(PreprocessWarning, match="several faces"):
        crop, _ = find_crop(info, 0.0, None, len(frames))
    assert crop.x0 + crop.side / 2 < 256  # centred on the big face, on the left


@pytest.fixture(scope="module")
def face1_workdir(tmp_path_factory):
    """retalking_face1.mp4 (22.13 fps, 700x700, 44.1 kHz stereo) through the CLI."""
    from tests.conftest import MEDIA

    if not MEDIA.is_dir():
        pytest.skip(f"real media not found at {MEDIA}")
    wd = tmp_path_factory.mktemp("pre") / "face1"
    t = time.perf_counter()
    res = runner.invoke(app, ["preprocess", str(MEDIA / "retalking_face1.mp4"), "--workdir", str(wd), "--size", "384"])
    assert res.exit_code == 0, res.output
    assert "quality will suffer" in res.output  # under a minute: warned
    # under 30 s the sound's offset is not measured, and the user is told how to set it
    assert "offset behind the picture was not measured: under 30 s of the clip show the mouth" in res.output and "--av-offset" in res.output
    return wd, time.perf_counter() - t


@pytest.fixture(scope="module")
def interview_workdir(tmp_path_factory):
    """A trimmed span of interview_97s.mp4 (1280x720, a man seated off-centre) via the API."""
    from tests.conftest import MEDIA

    if not MEDIA.is_dir():
        pytest.skip(f"real media not found at {MEDIA}")
    wd = tmp_path_factory.mktemp("pre") / "interview"
    with pytest.warns(PreprocessWarning):
        preprocess(MEDIA / "interview_97s.mp4", wd, size=256, start=30.0, end=36.0, progress=False)
    return wd


def _load(wd):
    from safetensors.numpy import load_file

    return json.loads((wd / "meta.json").read_text()), load_file(str(wd / "tracks.safetensors"))


@pytest.mark.media
@pytest.mark.parametrize("which", ["face1", "interview"])
def test_cache_layout_and_tracks(which, face1_workdir, interview_workdir):
    wd = face1_workdir[0] if which == "face1" else interview_workdir
    meta, tr = _load(wd)
    n, size = meta["num_frames"], meta["size"][0]
    if which == "face1":
        assert abs(n - 6.1 * 25) <= 2 and size == 384
    else:
        assert n == 150 and size == 256 and meta["settings"]["start"] == 30.0
    assert meta["fps"] == 25 and meta["sample_rate"] == 16000
    assert set(meta["intrinsics"]) >= {"fx", "fy", "cx", "cy"} and meta["intrinsics"]["cx"] == size / 2
    assert meta["val_start"] == n - round(0.1 * n)
    assert meta["audio_features"] == {**meta["audio_features"], "kind": "mel", "dim": 80, "window": 16}
    assert meta["source"]["name"].endswith(".mp4") and len(meta["source"]["sha256"]) == 64
    assert tr["landmarks"].shape == (n, 478, 2) and tr["landmarks"].dtype == np.float32
    assert tr["viewmats"].shape == (n, 4, 4) and tr["viewmats"].dtype == np.float32
    assert tr["eye"].shape == (n,) and tr["eye"].min() >= 0 and tr["eye"].max() <= 1 and tr["eye"].std() > 0.01
    assert tr["lip_boxes"].shape == (n, 4)
    assert tr["audio_features"].shape == (n, 16, 80) and tr["audio_features"].dtype == np.float32
    assert tr["frame_ok"].all()
    # face found in every frame, landmarks inside the crop
    assert tr["face_found"].all()
    assert (tr["landmarks"] >= 0).all() and (tr["landmarks"] < size).all()
    # lip boxes inside the frame and around the mouth (landmark 13: upper inner lip)
    b = tr["lip_boxes"]
    assert (b[:, 0] >= 0).all() and (b[:, 3] <= size).all() and (b[:, 2] > b[:, 0]).all()
    m = tr["landmarks"][:, 13]
    assert ((m[:, 0] > b[:, 0]) & (m[:, 0] < b[:, 2]) & (m[:, 1] > b[:, 1]) & (m[:, 1] < b[:, 3])).all()
    # poses: proper rotations, in front of the camera, smooth, low reprojection error
    R = tr["viewmats"][:, :3, :3].astype(np.float64)
    assert np.allclose(R @ R.transpose(0, 2, 1), np.eye(3), atol=1e-4)
    assert (tr["viewmats"][:, 2, 3] > 1.0).all()
    d = np.einsum("fij,fkj->fik", R[1:], R[:-1])
    step = np.degrees(np.arccos(np.clip((np.trace(d, axis1=1, axis2=2) - 1) / 2, -1, 1)))
    assert step.max() < 5.0 and step.mean() < 1.5, (step.max(), step.mean())
    assert meta["reprojection_error_px"] < 3.0 * size / 512 + 0.5
    # the head origin projects near the face (between the eyes and the chin)
    f, cx = meta["intrinsics"]["fx"], meta["intrinsics"]["cx"]
    t = tr["viewmats"][:, :3, 3]
    uv = f * t[:, :2] / t[:, 2:] + cx
    nose = tr["landmarks"][:, 1]
    face_w = np.linalg.norm(tr["landmarks"][:, 234] - tr["landmarks"][:, 454], axis=1)
    assert (np.linalg.norm(uv - nose, axis=1) < 0.8 * face_w).all()
    # audio: exactly the frames' span at 16 kHz
    import wave

    with wave.open(str(wd / "audio.wav")) as w:
        assert w.getframerate() == 16000 and w.getnchannels() == 1 and w.getnframes() == n * 640
    # clips under 30 s keep their audio as recorded (too few syllables to measure an offset)
    assert meta["av_offset"]["source"] == "auto-rejected" and meta["av_offset"]["offset_frames"] == 0
    assert (wd / "audio.wav").read_bytes() == (wd / "cache" / "recorded.wav").read_bytes()
    assert len(list((wd / "frames").glob("*.jpg"))) == n and len(list((wd / "masks").glob("*.png"))) == n
    assert (wd / "preview.png").stat().st_size > 1000


@pytest.mark.media
@pytest.mark.parametrize("which", ["face1", "interview"])
def test_masks_and_background(which, face1_workdir, interview_workdir):
    from gstalker.data import PreprocessedVideo

    wd = face1_workdir[0] if which == "face1" else interview_workdir
    ds = PreprocessedVideo(wd, "all")
    bg = ds.background
    size = ds.size[0]
    for k in np.linspace(0, len(ds) - 1, 5).round().astype(int):
        it = ds[int(k)]
        head, torso, back = it["head_mask"], it["torso_mask"], it["bg_mask"]
        assert float((head + torso + back - 1).abs().max()) < 1e-5
        # the head mask covers the face landmarks (face oval inside, not the outermost ring)
        lm = it["landmarks"].round().long().clamp(0, size - 1)
        inner = [1, 4, 5, 6, 9, 33, 133, 263, 362, 13, 14, 61, 291, 168, 197]
        covered = head[lm[inner, 1], lm[inner, 0]]
        assert float((covered > 0.5).float().mean()) >= 0.95
        # torso below the chin, background in the corners at the top
        assert float(torso.sum()) > 0.02 * size * size
        # the background image is free of the person: it differs from the frame on the head and
        # matches it where the frame shows background
        img = it["image"]
        diff = (img - bg).abs().mean(-1)
        on_head = diff[head > 0.95].mean()
        on_back = diff[back > 0.99].mean()
        assert on_back < 0.06, float(on_back)
        assert on_head > 2 * on_back and on_head > 0.05, (float(on_head), float(on_back))


@pytest.mark.media
def test_dataset_reads_lazily(face1_workdir):
    import torch

    from gstalker.data import PreprocessedVideo, load_splits

    wd = face1_workdir[0]
    train, val = load_splits(wd)
    meta = json.loads((wd / "meta.json").read_text())
    assert len(train) == meta["val_start"] and len(train) + len(val) == meta["num_frames"]
    assert meta["flagged_frames"] == 0
    it = val[0]
    assert int(it["index"]) == meta["val_start"] == val.indices[0]
    assert it["image"].shape == (384, 384, 3) and it["image"].dtype == torch.float32
    assert 0 <= float(it["image"].min()) and float(it["image"].max()) <= 1
    assert it["viewmat"].shape == (4, 4) and it["audio_features"].shape == (16, 80)
    assert train.K.shape == (3, 3) and train.background.shape == (384, 384, 3)
    assert train.audio_features().shape == (meta["num_frames"], 16, 80)
    loader = torch.utils.data.DataLoader(train, batch_size=4, num_workers=1)
    batch = next(iter(loader))
    assert batch["image"].shape == (4, 384, 384, 3)
    with pytest.raises(ValueError, match="not a preprocessed workdir"):
        PreprocessedVideo(wd / "frames")


@pytest.mark.media
def test_rerun_reuses_stages_and_force_redoes(face1_workdir, tmp_path):
    from tests.conftest import MEDIA

    wd, first = face1_workdir
    t = time.perf_counter()
    res = runner.invoke(app, ["preprocess", str(MEDIA / "retalking_face1.mp4"), "--workdir", str(wd), "--size", "384"])
    again = time.perf_counter() - t
    assert res.exit_code == 0, res.output
    meta = json.loads((wd / "meta.json").read_text())
    assert meta["stages_run"] == []
    assert again < 0.3 * first, (again, first)
    # another kind of feature redoes only that stage (a tiny random HuBERT stands in for the
    # real one, which needs a download)
    import gstalker.audio.features as F
    from tests.test_audio import _tiny

    F._MODEL_CACHE["facebook/hubert-large-ls960-ft"] = _tiny("hubert")
    try:
        with pytest.warns(PreprocessWarning):
            preprocess(MEDIA / "retalking_face1.mp4", wd, size=384, audio_features="hubert")
    finally:
        F._MODEL_CACHE.pop("facebook/hubert-large-ls960-ft", None)
    meta = json.loads((wd / "meta.json").read_text())
    assert meta["stages_run"] == ["features-hubert"] and meta["audio_features"]["dim"] == 32
    _, tr = _load(wd)
    assert tr["audio_features"].shape[1:] == (16, 32)


@pytest.mark.media
def test_mouth_crops_line_up_with_their_boxes(interview_workdir):
    """The high-resolution mouth crop of a frame shows the frame's mouth box: resampled to the
    same pixels, crop and frame agree far better than with a box shifted by a tenth of its side
    (a misplaced or mis-scaled crop would teach the mouth patch the wrong place)."""
    import torch
    import torch.nn.functional as F

    from gstalker.data import PreprocessedVideo

    pv = PreprocessedVideo(interview_workdir, "all")
    boxes = pv.tracks["mouth_boxes"]
    assert boxes.shape == (pv.num_frames, 4) and "mouth" in pv.meta["files"]
    side = boxes[:, 2] - boxes[:, 0]
    assert torch.allclose(side, side[0]) and torch.allclose(boxes[:, 3] - boxes[:, 1], side)
    px = 32  # compare at the frame's own resolution, where both are sharp enough

    def sample(img, box):
        t = (torch.arange(px) + 0.5) / px
        u = (box[0] + t * (box[2] - box[0])) / img.shape[1] * 2 - 1
        v = (box[1] + t * (box[3] - box[1])) / img.shape[0] * 2 - 1
        grid = torch.stack(torch.meshgrid(v, u, indexing="ij")[::-1], -1)[None]
        return F.grid_sample(img.permute(2, 0, 1)[None], grid, align_corners=False)[0]

    for k in (0, pv.num_frames // 2, pv.num_frames - 1):
        crop = pv.mouth(k)
        assert crop.shape == (128, 128, 3)
        small = F.interpolate(crop.permute(2, 0, 1)[None], size=(px, px), mode="area")[0]
        frame = pv.frame(k)
        aligned = (sample(frame, boxes[k]) - small).abs().mean()
        shifted = (sample(frame, boxes[k] + torch.tensor([1, 0, 1, 0]) * side[0] * 0.1) - small).abs().mean()
        assert aligned < 0.03 and aligned < 0.6 * shifted, (k, float(aligned), float(shifted))


@pytest.mark.media
def test_a_given_av_offset_moves_the_audio_and_redoes_only_what_follows(face1_workdir, tmp_path):
    """--av-offset 0.08 (two frames: the sound runs 80 ms late) moves audio.wav 1280 samples
    earlier than the recording and redoes the sync and the features, nothing before them."""
    from gstalker.audio import load_audio
    from tests.conftest import MEDIA

    wd = tmp_path / "face1"
    shutil.copytree(face1_workdir[0], wd)
    res = runner.invoke(app, ["preprocess", str(MEDIA / "retalking_face1.mp4"), "--workdir", str(wd), "--size", "384",
                              "--av-offset", "0.08"])
    assert res.exit_code == 0, res.output
    meta = json.loads((wd / "meta.json").read_text())
    assert meta["stages_run"] == ["sync", "features-mel"], meta["stages_run"]
    assert meta["av_offset"]["source"] == "given" and meta["av_offset"]["offset_frames"] == 2
    recorded, moved = load_audio(wd / "cache" / "recorded.wav"), load_audio(wd / "audio.wav")
    assert len(moved) == len(recorded) and np.abs(recorded).max() > 0.01
    assert np.allclose(moved[:-1280], recorded[1280:], atol=1e-4) and not moved[-1280:].any()
    assert "--av-offset must be auto or a number" in _cli_error(
        ["preprocess", str(MEDIA / "retalking_face1.mp4"), "--workdir", str(wd), "--av-offset", "soon"], "soon")


def test_force_redoes_everything(interview_workdir):
    from tests.conftest import MEDIA

    with pytest.warns(PreprocessWarning):
        preprocess(MEDIA / "interview_97s.mp4", interview_workdir, size=256, start=30.0, end=36.0, force=True)
    meta = json.loads((interview_workdir / "meta.json").read_text())
    assert meta["stages_run"] == ["decode", "landmarks", "pose", "masks", "mouth", "sync", "features-mel"]


def test_missing_speech_model_fails_before_the_work(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    good = make_clip(tmp_path / "good.mp4", seconds=3.0)  # no face: would fail later, not first
    wd = tmp_path / "wd"
    line = _cli_error(["preprocess", str(good), "--workdir", str(wd), "--audio-features", "hubert"],
                      "facebook/hubert-large-ls960-ft")
    assert "huggingface-cli download" in line
    assert not wd.exists()


@pytest.mark.media
@pytest.mark.slow  # preprocesses a real clip three times
def test_interrupted_runs_leave_nothing_half_written(media_dir, tmp_path, monkeypatch):
    import gstalker.preprocess.pipeline as P
    from gstalker.data import PreprocessedVideo

    clip = media_dir / "retalking_face5.mp4"
    real_landmarks = P._stage_landmarks

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    # a fresh workdir is removed again
    monkeypatch.setattr(P, "_stage_landmarks", interrupted)
    wd = tmp_path / "wd"
    with pytest.warns(PreprocessWarning), pytest.raises(KeyboardInterrupt):
        preprocess(clip, wd, size=128)
    assert not wd.exists()
    # a finished workdir, rerun with other settings and interrupted: no temp files, and it reads
    # as incomplete until a run finishes; that run reuses the finished decode stage
    monkeypatch.setattr(P, "_stage_landmarks", real_landmarks)
    with pytest.warns(PreprocessWarning):
        preprocess(clip, wd, size=128)
    monkeypatch.setattr(P, "_stage_landmarks", interrupted)
    with pytest.warns(PreprocessWarning), pytest.raises(KeyboardInterrupt):
        preprocess(clip, wd, size=160)
    assert not [p for p in wd.rglob("*") if ".tmp-" in p.name or ".old-" in p.name]
    assert not (wd / "meta.json").exists()
    with pytest.raises(ValueError, match="not a preprocessed workdir"):
        PreprocessedVideo(wd)
    monkeypatch.setattr(P, "_stage_landmarks", real_landmarks)
    with pytest.warns(PreprocessWarning):
        preprocess(clip, wd, size=160)
    meta = json.loads((wd / "meta.json").read_text())
    assert meta["size"] == [160, 160] and "decode" not in meta["stages_run"] and "landmarks" in meta["stages_run"]
    assert PreprocessedVideo(wd, "all")[0]["image"].shape == (160, 160, 3)


def test_normalise_masks_sums_to_255_and_keeps_the_split():
    from gstalker.preprocess.masks import normalise_masks

    rng = np.random.default_rng(0)
    person = rng.uniform(0, 1, (20, 30))
    head = rng.uniform(0, 1, (20, 30)) < 0.4
    exact = np.stack([np.where(head, person, 0), np.where(head, 0, person), 1 - person], -1) * 255
    # a lossy codec or a resampling moves every channel by a few grey levels
    noisy = np.clip(np.round(exact + rng.normal(0, 2, exact.shape)), 0, 255).astype(np.uint8)
    out = normalise_masks(noisy)
    assert out.dtype == np.uint8 and (out.astype(int).sum(-1) == 255).all()
    assert np.abs(out.astype(float) - exact).mean() < 2.5
    assert (out == normalise_masks(out)).all(), "masks already summing to 255 stay as they are"
