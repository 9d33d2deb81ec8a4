"""`preprocess(video, workdir)`: from a talking-head video to the cached training set.

Stages (each cached under DIR/cache, skipped when its inputs and settings are unchanged):
decode (crop + 25 fps frames + 16 kHz audio as recorded), landmarks, pose, masks (+ background),
sync (the audio moved to match the picture: `preprocess.sync`), audio features; then eye/lip,
tracks.safetensors, meta.json and preview.png are assembled.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
import warnings
from pathlib import Path
from typing import Optional

import numpy as np
import torch

# torchvision 0.29 deprecates its image codecs in favour of torchcodec (not a dependency here);
# they work, so keep their notice from flooding every frame.
warnings.filterwarnings("ignore", message="The image decoding and encoding capabilities of TorchVision")

from ..progress import Progress
from . import cache as C
from .crop import find_crop
from ..data import FPS, SAMPLE_RATE, SAMPLES_PER_FRAME, check_frame_size
from ..errors import PreprocessError, PreprocessWarning
from .video import MIN_SECONDS, iter_frames, probe

VAL_FRACTION = 0.1
SHORT_VIDEO_S = 60.0
MAX_LOST = 0.20
STAGE_VERSIONS = {"decode": 2, "landmarks": 1, "pose": 2, "masks": 5, "features": 3, "mouth": 1,
                  "sync": 1}  # features 3: loudness gain from speech blocks only


# ------------------------------------------------------------------------------- progress
# ------------------------------------------------------------------------------- helpers
def _resize_u8(rgb: np.ndarray, size: int) -> torch.Tensor:
    """[H,W,3] uint8 -> [3,size,size] uint8, bilinear with antialiasing."""
    from torchvision.transforms.v2 import functional as TF

    t = torch.from_numpy(rgb).permute(2, 0, 1)
    if t.shape[1] == size and t.shape[2] == size:
        return t.contiguous()
    return TF.resize(t.contiguous(), [size, size], antialias=True)


def read_jpeg(path: Path) -> np.ndarray:
    from torchvision.io import decode_jpeg

    data = torch.frombuffer(bytearray(path.read_bytes()), dtype=torch.uint8)
    return decode_jpeg(data).permute(1, 2, 0).contiguous().numpy()


def read_png(path: Path) -> np.ndarray:
    from torchvision.io import decode_png

    data = torch.frombuffer(bytearray(path.read_bytes()), dtype=torch.uint8)
    return decode_png(data).permute(1, 2, 0).contiguous().numpy()


def _encode_png(hwc: np.ndarray) -> bytes:
    from torchvision.io import encode_png

    return encode_png(torch.from_numpy(np.ascontiguousarray(hwc)).permute(2, 0, 1).contiguous(), compression_level=3).numpy().tobytes()


def _warn(msg: str) -> None:
    warnings.warn(msg, PreprocessWarning, stacklevel=3)


def _offset_words(frames: int) -> str:
    """An offset of the sound behind the picture in frames as words: "120 ms behind", "40 ms ahead of"."""
    return f"{abs(frames) * 1000 // FPS} ms {'behind' if frames >= 0 else 'ahead of'}"


# ------------------------------------------------------------------------------- stages
def _stage_decode(video, info, wd, size, start, end, prog):
    from torchvision.io import encode_jpeg

    from ..audio import load_audio, save_wav

    hint = int((end - start) * FPS) if math.isfinite(end) else 2500
    scan = prog.task("find face", hint)
    crop, cstats = find_crop(info, start, end if math.isfinite(end) else None, hint, on_frame=scan.advance)
    scan.done()
    tmp = wd / f".{C.FRAMES}.tmp-{os.getpid()}"
    tmp.mkdir()
    task = prog.task("decode, crop", hint)
    n = 0
    # big sources are downscaled by FFmpeg before the RGB conversion, then cropped
    f = _decode_scale(crop.to_dict(), size)
    x0, y0, side = (int(round(v * f)) for v in (crop.x0, crop.y0, crop.side))
    for k, _, rgb in iter_frames(info, fps=FPS, start=start, end=end if math.isfinite(end) else None, scale=f):
        c = rgb[y0 : y0 + side, x0 : x0 + side]
        jpg = encode_jpeg(_resize_u8(c, size), quality=C.JPEG_QUALITY)
        (tmp / C.FRAME_NAME.format(k)).write_bytes(jpg.numpy().tobytes())
        n = k + 1
        task.advance()
    task.done(n)
    if math.isfinite(end):
        expected = int((end - start) * FPS)
        if n < 0.9 * expected and expected - n > FPS:
            raise PreprocessError(
                f"{video}: corrupt or truncated video: it declares {end:.1f} s but only "
                f"{start + n / FPS:.1f} s decode"
            )
    if n / FPS < MIN_SECONDS:
        raise PreprocessError(f"{video}: only {n / FPS:.2f} s of video decode; at least {MIN_SECONDS:g} s are needed")
    wave = load_audio(video, SAMPLE_RATE, origin=info.t0, start=start)
    need = n * SAMPLE_RATE // FPS
    if len(wave) < need - SAMPLE_RATE:
        _warn(f"{video}: the audio ends {(need - len(wave)) / SAMPLE_RATE:.1f} s before the video; padded with silence")
    wave = np.concatenate([wave, np.zeros(max(0, need - len(wave)), np.float32)])[:need]
    save_wav(wd / C.CACHE / C.RECORDED_AUDIO, wave, SAMPLE_RATE)
    C.replace_dir(tmp, wd / C.FRAMES)
    rec = {"num_frames": n, "crop": crop.to_dict(), "crop_stats": cstats, "video": info.to_dict()}
    C.write_json(wd / C.CACHE / "decode.json", rec)
    return rec


def _stage_landmarks(video, wd, n, prog):
    from .landmarks import NUM_LANDMARKS, FaceMesh, interpolate_lost

    fm = FaceMesh()
    lms = np.zeros((n, NUM_LANDMARKS, 3), np.float32)
    found = np.zeros(n, bool)
    task = prog.task("landmarks", n)
    try:
        for k in range(n):
            res = fm(read_jpeg(wd / C.FRAMES / C.FRAME_NAME.format(k)))
            if res is not None:
                lms[k], found[k] = res, True
            task.advance()
    finally:
        fm.close()
    task.done()
    lost = int((~found).sum())
    if found.sum() == 0:
        raise PreprocessError(f"{video}: no face found in the cropped frames")
    if lost > MAX_LOST * n:
        raise PreprocessError(
            f"{video}: the face is lost in {lost} of {n} frames ({100 * lost / n:.0f}%, more than "
            f"{100 * MAX_LOST:.0f}%); trim the video to the span where the face is visible (--start/--end)"
        )
    if lost:
        _warn(f"{video}: face lost in {lost} of {n} frames; interpolated from neighbours")
    lms = interpolate_lost(lms, found)
    C.save_tensors(wd / C.CACHE / "landmarks.safetensors", {"landmarks3d": lms, "found": found.astype(np.uint8)})


def _stage_pose(wd, size, prog):
    from .pose import estimate_poses

    d = C.load_tensors(wd / C.CACHE / "landmarks.safetensors")
    task = prog.task("pose", 1)
    r = estimate_poses(d["landmarks3d"], d["found"].astype(bool), size)
    task.done()
    info = {"focal": r.focal, "reprojection_error_px": r.error_px, "reprojection_error_px_unsmoothed": r.error_px_raw,
            "focal_scan": r.focal_scan, "shot_changes": r.cuts}
    C.save_tensors(wd / C.CACHE / "pose.safetensors", {"viewmats": r.viewmats, "template": r.template},
                   metadata={"pose": json.dumps(info)})


def _stage_masks(wd, n, prog, max_bg_samples: int = 64):
    from .masks import Segmenter, background_image, split_masks

    lmd = C.load_tensors(wd / C.CACHE / "landmarks.safetensors")
    lm, found = lmd["landmarks3d"], lmd["found"] > 0
    tmp = wd / f".{C.MASKS}.tmp-{os.getpid()}"
    tmp.mkdir()
    seg = Segmenter()
    step = max(1, n // max_bg_samples)
    samples = []
    area = np.zeros(n, np.float32)
    task = prog.task("masks", n)
    try:
        for k in range(n):
            img = read_jpeg(wd / C.FRAMES / C.FRAME_NAME.format(k))
            person = seg(img)
            m = split_masks(person, lm[k])
            area[k] = float(person.mean())
            (tmp / C.MASK_NAME.format(k)).write_bytes(_encode_png(m))
            if k % step == 0 and found[k]:
                samples.append((k, img, m[..., 2].astype(np.float32) / 255))
            task.advance()
    finally:
        seg.close()
    task.done()
    # cards and fades (no person in view) would paint themselves into the background
    good = [x for x in samples if area[x[0]] >= 0.5 * np.median(area)] or samples
    if not good:
        raise PreprocessError(f"no frame with a tracked face to build the background from in {wd}")
    bg, seen = background_image([x[1] for x in good], [x[2] for x in good])
    C.write_bytes(wd / C.BACKGROUND, _encode_png(bg))
    C.replace_dir(tmp, wd / C.MASKS)
    C.write_json(wd / C.CACHE / "masks.json", {"background_seen_fraction": float(seen.mean()),
                                                "person_area": [round(float(a), 5) for a in area]})


def _decode_scale(crop: dict, size: int) -> float:
    """The factor FFmpeg scales the source by before the crop is cut (big sources)."""
    return size / crop["side"] if size < 0.8 * crop["side"] else 1.0


def _stage_mouth(video, info, wd, dec, size, start, end, prog):
    """High-resolution mouth crops (see `gstalker.preprocess.mouth`): a second decode of the
    video at the scale the crops need. Writes mouth/NNNNNN.jpg and cache/mouth.safetensors
    (the boxes); nothing when the frames already have the resolution or the source has no more."""
    from torchvision.io import encode_jpeg

    from .eyelip import lip_boxes
    from .mouth import MIN_GAIN, crop_gain, mouth_boxes, sample_crop

    lm = C.load_tensors(wd / C.CACHE / "landmarks.safetensors")["landmarks3d"]
    boxes = mouth_boxes(lip_boxes(lm, (size, size)), size)
    crop, n = dec["crop"], dec["num_frames"]
    gain = min(crop_gain(boxes), crop["side"] / size)
    tmp = wd / f".{C.MOUTH}.tmp-{os.getpid()}"
    tmp.mkdir()
    if gain >= MIN_GAIN:
        fd = _decode_scale(crop, size)
        x0d, y0d, sd = (int(round(v * fd)) for v in (crop["x0"], crop["y0"], crop["side"]))
        fh = min(1.0, crop_gain(boxes) * size / crop["side"])
        to_source = lambda u, v: ((x0d + u * sd / size) / fd * fh, (y0d + v * sd / size) / fd * fh)  # noqa: E731
        task = prog.task("mouth crops", n)
        for k, _, rgb in iter_frames(info, fps=FPS, start=start, end=end if math.isfinite(end) else None, scale=fh):
            if k >= n:
                break
            patch = torch.from_numpy(sample_crop(rgb, boxes[k], to_source)).permute(2, 0, 1).contiguous()
            (tmp / C.FRAME_NAME.format(k)).write_bytes(encode_jpeg(patch, quality=C.JPEG_QUALITY).numpy().tobytes())
            task.advance()
        task.done()
    else:
        boxes = boxes[:0]
    C.replace_dir(tmp, wd / C.MOUTH)
    C.save_tensors(wd / C.CACHE / "mouth.safetensors", {"mouth_boxes": boxes})


def _stage_sync(wd, n, offset_frames, prog):
    """The sound's offset behind the picture (`preprocess.sync`; `offset_frames` when the user
    gave it, None: measured), and the audio moved by it: audio.wav and cache/sync.json."""
    from ..audio import load_audio, save_wav
    from ..metrics import loudness_db, mouth_opening_ratio
    from .sync import AvOffset, estimate_av_offset, shift_audio

    task = prog.task("audio-video sync", 1)
    wave = load_audio(wd / C.CACHE / C.RECORDED_AUDIO, SAMPLE_RATE)
    if offset_frames is None:
        lmd = C.load_tensors(wd / C.CACHE / "landmarks.safetensors")
        opening = mouth_opening_ratio(lmd["landmarks3d"][..., :2])
        opening[lmd["found"] == 0] = np.nan
        sync = estimate_av_offset(loudness_db(wave, n), opening)
    else:
        sync = AvOffset(offset_frames, None, None, None, None, "given")
    save_wav(wd / C.AUDIO, shift_audio(wave, sync.offset_frames, SAMPLES_PER_FRAME), SAMPLE_RATE)
    C.write_json(wd / C.CACHE / "sync.json", sync.to_dict())
    task.done()


def _features_file(wd, kind):
    return wd / C.CACHE / f"features-{kind}.safetensors"


def _stage_features(wd, n, kind, prog):
    from ..audio import extract_features, load_audio

    task = prog.task(f"audio ({kind})", 1)
    wave = load_audio(wd / C.AUDIO, SAMPLE_RATE)
    feats = extract_features(wave, kind, n, fps=FPS)
    task.done()
    C.save_tensors(_features_file(wd, kind), {"audio_features": feats})


def _preview(wd, n, size, tracks, K, tiles: int = 5):
    from .preview import make_grid, render_tile

    tile = min(size, 384)
    idx = np.unique(np.linspace(0.08, 0.92, tiles) * (n - 1)).round().astype(int)
    out = []
    for k in idx:
        out.append(render_tile(
            read_jpeg(wd / C.FRAMES / C.FRAME_NAME.format(k)), read_png(wd / C.MASKS / C.MASK_NAME.format(k)),
            tracks["landmarks"][k], tracks["viewmats"][k], K, tracks["lip_boxes"][k], tile))
    from .preview import _resize

    out.append(_resize(read_png(wd / C.BACKGROUND), tile))
    C.write_bytes(wd / C.PREVIEW, _encode_png(make_grid(out, cols=3)))


# ------------------------------------------------------------------------------- entry point
def preprocess(
    video: str | os.PathLike,
    workdir: str | os.PathLike,
    size: int = 512,
    audio_features: str = "mel",
    start: Optional[float] = None,
    end: Optional[float] = None,
    force: bool = False,
    progress: Optional[bool] = None,
    av_offset: Optional[float] = None,
) -> Path:
    """Preprocess `video` into `workdir` (see the module docs and docs/preprocess.md); returns the
    workdir. Finished stages are reused when the video and settings are unchanged; `force`
    redoes everything. `start`/`end` (seconds) trim the video. `av_offset`: how many seconds the
    sound runs behind the picture (negative: ahead), rounded to whole frames; None measures it
    (`preprocess.sync`), 0 keeps the audio as recorded. Raises a GstalkerError
    (PreprocessError, AudioError, FeatureModelError) with a one-line message on bad input; a
    workdir this call created is removed
    again on failure. `progress`: show rich progress bars on stderr (default: when stderr is a
    terminal)."""
    from ..audio import feature_kinds

    video = Path(video).expanduser()
    wd = Path(workdir).expanduser()
    check_frame_size(size)
    if audio_features not in feature_kinds():
        raise PreprocessError(f"unknown --audio-features {audio_features!r} (choose from {', '.join(feature_kinds())})")
    if start is not None and start < 0:
        raise PreprocessError(f"--start must be >= 0, got {start}")
    if av_offset is not None and not (math.isfinite(av_offset) and abs(av_offset) <= 1.0):
        raise PreprocessError(f"--av-offset must be between -1 and 1 seconds (or auto), got {av_offset}")
    if start is not None and end is not None and end <= start:
        raise PreprocessError(f"--end ({end}) must be after --start ({start})")
    info = probe(video)
    s0 = float(start or 0.0)
    dur = info.duration
    if math.isfinite(dur) and s0 >= dur:
        raise PreprocessError(f"{video}: --start {s0:g} s is beyond the end of the video ({dur:.1f} s)")
    e0 = min(end, dur) if end is not None and math.isfinite(dur) else (end if end is not None else dur)
    e0 = float(e0) if e0 is not None else float("nan")
    if math.isfinite(e0) and e0 - s0 < MIN_SECONDS:
        raise PreprocessError(f"{video}: the span {s0:g}-{e0:g} s is only {e0 - s0:.2f} s; at least {MIN_SECONDS:g} s are needed")
    if wd.exists() and not wd.is_dir():
        raise PreprocessError(f"{wd}: exists and is not a folder")
    if wd.is_dir() and any(wd.iterdir()) and not ((wd / C.META).exists() or (wd / C.CACHE).is_dir()):
        raise PreprocessError(f"{wd}: exists and is not a gstalker workdir; choose a new or empty folder")
    if math.isfinite(e0) and e0 - s0 < SHORT_VIDEO_S:
        _warn(f"{video}: only {e0 - s0:.0f} s of video; 3-5 minutes are recommended, quality will suffer")

    created = not wd.exists()
    threads = torch.get_num_threads()
    # per-frame work is small tensors; one torch thread avoids fighting MediaPipe's own threads
    torch.set_num_threads(1)
    try:
        with Progress(progress if progress is not None else _stderr_tty(), unit="frames") as prog:
            _run_stages(video, info, wd, size, s0, e0, audio_features, force, prog, av_offset)
    except BaseException:
        if created:
            shutil.rmtree(wd, ignore_errors=True)
        else:
            C.clean_temp(wd)
        raise
    finally:
        torch.set_num_threads(threads)
    return wd


def _run_stages(video, info, wd: Path, size: int, s0: float, e0: float, audio_features: str, force: bool, prog,
                av_offset: Optional[float] = None):
    """Run the stages whose cached results are missing or stale (each stage's fingerprint chains
    its inputs' fingerprints, so a changed input reruns everything after it), then assemble
    tracks.safetensors, preview.png and meta.json."""
    from ..audio.features import DEFAULT_MODELS, ENV_VARS, load_speech_model

    wd.mkdir(parents=True, exist_ok=True)
    (wd / C.CACHE).mkdir(exist_ok=True)
    C.clean_temp(wd)
    stages = C.Stages(wd)
    if force:
        stages.clear()
    timings, ran = {}, []
    t = time.perf_counter()
    sha = C.file_sha256(video)
    timings["hash"] = time.perf_counter() - t

    def run(name: str, fingerprint: str, outputs, work, timing: str | None = None) -> None:
        """Run one stage unless its outputs are there with this fingerprint."""
        if stages.is_done(name, fingerprint, *outputs):
            return
        (wd / C.META).unlink(missing_ok=True)  # incomplete until assembled again
        t = time.perf_counter()
        work()
        timings[timing or name] = time.perf_counter() - t
        stages.mark(name, fingerprint)
        ran.append(name)

    model_name = os.environ.get(ENV_VARS.get(audio_features, ""), DEFAULT_MODELS.get(audio_features, ""))
    fp_dec = C.fingerprint(C.FORMAT_VERSION, STAGE_VERSIONS["decode"], sha, size, s0, e0)
    fp_lm = C.fingerprint(fp_dec, STAGE_VERSIONS["landmarks"])
    offset_setting = "auto" if av_offset is None else int(round(av_offset * FPS))
    fp_sync = C.fingerprint(fp_lm, STAGE_VERSIONS["sync"], offset_setting)
    fp_feat = C.fingerprint(fp_sync, STAGE_VERSIONS["features"], audio_features, model_name)
    feat_stage, feat_file = f"features-{audio_features}", _features_file(wd, audio_features)
    if audio_features in DEFAULT_MODELS and not stages.is_done(feat_stage, fp_feat, feat_file):
        load_speech_model(audio_features)  # fail now, not after minutes of work

    run("decode", fp_dec, (wd / C.FRAMES, wd / C.CACHE / C.RECORDED_AUDIO, wd / C.CACHE / "decode.json"),
        lambda: _stage_decode(video, info, wd, size, s0, e0, prog))
    dec = json.loads((wd / C.CACHE / "decode.json").read_text())
    n = dec["num_frames"]
    run("landmarks", fp_lm, (wd / C.CACHE / "landmarks.safetensors",), lambda: _stage_landmarks(video, wd, n, prog))
    run("pose", C.fingerprint(fp_lm, STAGE_VERSIONS["pose"]), (wd / C.CACHE / "pose.safetensors",),
        lambda: _stage_pose(wd, size, prog))
    run("masks", C.fingerprint(fp_lm, STAGE_VERSIONS["masks"]), (wd / C.MASKS, wd / C.BACKGROUND),
        lambda: _stage_masks(wd, n, prog))
    run("mouth", C.fingerprint(fp_lm, STAGE_VERSIONS["mouth"]), (wd / C.MOUTH, wd / C.CACHE / "mouth.safetensors"),
        lambda: _stage_mouth(video, info, wd, dec, size, s0, e0, prog))
    run("sync", fp_sync, (wd / C.AUDIO, wd / C.CACHE / "sync.json"),
        lambda: _stage_sync(wd, n, None if av_offset is None else offset_setting, prog))
    sync = json.loads((wd / C.CACHE / "sync.json").read_text())
    if sync["source"] == "auto" and sync["offset_frames"] and "sync" in ran:
        _warn(f"{video}: the sound runs {_offset_words(sync['offset_frames'])} the picture (measured from the lip "
              f"motion); training uses it moved to match. Keep it as recorded with --av-offset 0")
    elif sync["source"] == "auto-rejected" and "sync" in ran:
        from .sync import MIN_FRAMES

        why = (f"under {MIN_FRAMES // FPS} s of the clip show the mouth" if sync["estimate_frames"] is None else
               f"the lip motion does not settle it (best guess: the sound {_offset_words(sync['estimate_frames'])} the "
               f"picture, correlation {sync['correlation']:.2f}, {sync['agreement']:.0%} of 10 s stretches agree)")
        _warn(f"{video}: the sound's offset behind the picture was not measured: {why}; the sound is kept as "
              f"recorded (--av-offset SECONDS moves it if the lips look late or early)")
    run(feat_stage, fp_feat, (feat_file,), lambda: _stage_features(wd, n, audio_features, prog), timing="features")

    t = time.perf_counter()
    tracks, meta = _assemble(video, wd, info, dec, size, s0, e0, audio_features, model_name, sha)
    meta["av_offset"] = sync
    meta["settings"]["av_offset"] = offset_setting
    if ran or not (wd / C.PREVIEW).exists() or not (wd / C.TRACKS).exists():
        C.save_tensors(wd / C.TRACKS, tracks, metadata={"gstalker": json.dumps({"format_version": C.FORMAT_VERSION})})
        K = np.array([[meta["intrinsics"]["fx"], 0, meta["intrinsics"]["cx"]],
                      [0, meta["intrinsics"]["fy"], meta["intrinsics"]["cy"]], [0, 0, 1]])
        _preview(wd, n, size, tracks, K)
    timings["assemble"] = time.perf_counter() - t
    old = {}
    if (wd / C.META).exists():
        try:
            old = json.loads((wd / C.META).read_text()).get("timings_s", {})
        except ValueError:
            old = {}
    meta["timings_s"] = {**old, **{k: round(v, 3) for k, v in timings.items()}}
    meta["stages_run"] = ran
    C.write_json(wd / C.META, meta)


def _stderr_tty() -> bool:
    import sys

    try:
        return sys.stderr.isatty()
    except Exception:
        return False


def _assemble(video, wd, info, dec, size, s0, e0, kind, model_name, sha):
    from .eyelip import eye_openness, lip_boxes

    n = dec["num_frames"]
    lmd = C.load_tensors(wd / C.CACHE / "landmarks.safetensors")
    from safetensors import safe_open

    with safe_open(str(wd / C.CACHE / "pose.safetensors"), "np") as f:
        pose_info = json.loads(f.metadata()["pose"])
        viewmats, template = f.get_tensor("viewmats"), f.get_tensor("template")
    feats = C.load_tensors(_features_file(wd, kind))["audio_features"]
    lm = lmd["landmarks3d"]
    eye, eye_area = eye_openness(lm, (size, size))
    tracks = {
        "landmarks": np.ascontiguousarray(lm[..., :2], dtype=np.float32),
        "viewmats": viewmats.astype(np.float32),
        "eye": eye,
        "lip_boxes": lip_boxes(lm, (size, size)),
        "audio_features": feats.astype(np.float32),
        "landmarks_depth": np.ascontiguousarray(lm[..., 2], dtype=np.float32),
        "face_found": lmd["found"].astype(np.uint8),
        "eye_area": eye_area,
        "template": template.astype(np.float32),
    }
    mouth = C.load_tensors(wd / C.CACHE / "mouth.safetensors")["mouth_boxes"]
    if len(mouth):  # high-resolution mouth crops were kept (mouth/NNNNNN.jpg)
        tracks["mouth_boxes"] = mouth
    masks_info = json.loads((wd / C.CACHE / "masks.json").read_text())
    # frames to train on: face tracked and a person in view (fades, dips to white and cards lose
    # the person even where the face mesh still finds a face)
    area = np.asarray(masks_info["person_area"], np.float32)
    ok = (lmd["found"] > 0) & (area >= 0.5 * np.median(area))
    tracks["frame_ok"] = ok.astype(np.uint8)
    if not ok.all():
        head = int(np.argmax(ok)) if ok.any() else n
        tail = int(np.argmax(ok[::-1])) if ok.any() else n
        if head >= FPS // 2 or tail >= FPS // 2:  # cards or lost face at the ends: suggest a trim
            a, b = s0 + head / FPS, s0 + (n - tail) / FPS
            _warn(f"{video}: no usable face in the first {head / FPS:.1f} s and the last {tail / FPS:.1f} s "
                  f"(title/end cards?); trim them with --start {a:.1f} --end {b:.1f}")
        elif (~ok).sum() > (lmd["found"] == 0).sum():
            _warn(f"{video}: {int((~ok).sum())} of {n} frames show no face or no person (cuts, fades?); "
                  "flagged in tracks['frame_ok'] and left out by the dataset reader")
    f = pose_info["focal"]
    val_start = n - max(1, int(round(VAL_FRACTION * n)))
    meta = {
        "format_version": C.FORMAT_VERSION,
        "fps": FPS,
        "num_frames": n,
        "size": [size, size],
        "sample_rate": SAMPLE_RATE,
        "intrinsics": {"fx": f, "fy": f, "cx": size / 2.0, "cy": size / 2.0},
        "val_start": val_start,
        "audio_features": {"kind": kind, "dim": int(feats.shape[2]), "window": int(feats.shape[1]),
                           "rate": 50, "model": model_name or None},
        "source": {"name": video.name, "size": video.stat().st_size, "sha256": sha},
        "settings": {"size": size, "audio_features": kind, "start": s0, "end": e0 if math.isfinite(e0) else None},
        "video": dec["video"],
        "crop": dec["crop"],
        "reprojection_error_px": pose_info["reprojection_error_px"],
        "reprojection_error_px_unsmoothed": pose_info["reprojection_error_px_unsmoothed"],
        "shot_changes": pose_info.get("shot_changes", []),
        "lost_frames": int(n - lmd["found"].sum()),
        "flagged_frames": int((~ok).sum()),
        "background_seen_fraction": masks_info["background_seen_fraction"],
        "files": {"frames": f"{C.FRAMES}/{C.FRAME_NAME}", "masks": f"{C.MASKS}/{C.MASK_NAME}",
                  "mask_channels": ["head", "torso", "background"], "background": C.BACKGROUND,
                  "audio": C.AUDIO, "tracks": C.TRACKS, "preview": C.PREVIEW,
                  **({"mouth": f"{C.MOUTH}/{C.FRAME_NAME}"} if len(mouth) else {})},
    }
    return tracks, meta
