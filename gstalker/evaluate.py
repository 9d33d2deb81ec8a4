"""Evaluation: `gstalker eval`, self-driven on the held-out tail (the paper's protocol) or
cross-driven by any speech.

    from gstalker.evaluate import evaluate, format_table
    report = evaluate("subject.safetensors", "subject.gstalker", out="report.json")
    report = evaluate("subject.safetensors", "subject.gstalker", audio="speech.wav", out="cross.json")
    print(format_table(report))

Self-driven (`mode: "self"`): the model renders the held-out tail of its training video (the
last 10% of frames, contiguous, never trained on: `meta.json["val_start"]`) driven by that tail's
own audio, eye openness and tracked head poses, and each rendered frame is compared with the
real one:

- `psnr`, `ssim`: full frame; `psnr_face`, `ssim_face`: the face box (the bounding box of the
  real frame's tracked face landmarks, 10% margin each side). SSIM as Wang et al. 2004: Gaussian
  window 11, sigma 1.5, K1 = 0.01, K2 = 0.03, data range 1, no padding, per channel, averaged.
- `lpips`: LPIPS 0.1 with AlexNet on the full frame, when the AlexNet backbone weights are on
  disk (torch hub cache); otherwise the value is null and `note` says why. Never a stand-in.
- `lmd`: landmark distance, the mean L2 distance in pixels (at the training size) between the 40
  lip landmarks MediaPipe's face mesh finds on the rendered frame and on the real frame. Frames
  where either detection fails are left out and counted in `note`.
- `lip_corr`: Pearson correlation over time of the mouth opening (mean inner-lip gap of three
  MediaPipe landmark pairs) between rendered and real frames; null under 10 frames with faces.
- `render_fps`: frames rendered per second (audio codes and metrics excluded, after a warm-up
  frame).
- the lip-sync measures of `gstalker.metrics`, which need no ground-truth frames: `av_sync`, the
  best Pearson correlation over lags -3..3 frames between the speech's loudness per frame (RMS dB
  over its 40 ms) and the mouth opening (inner-lip gap 13-14 over the eye corners 33-263);
  `av_lag`, that lag (positive: the mouth moves after the sound); `mouth_motion`, the opening's
  standard deviation; `silence_motion`, mouth motion in silence (30 dB under the median
  loudness) over motion in speech; `mouth_jitter`, how much of the opening's motion is flicker
  from one frame to the next (a mouth that opens and shuts within a frame or two moves a lot by
  `mouth_motion` and looks wrong; `gstalker.metrics.mouth_jitter`).

Landmarks (lmd, lip_corr and the lip-sync measures) come from MediaPipe's face mesh in tracking
mode on each frame upscaled to at least 384 pixels on its short side (bicubic), rendered and real
frames alike, mapped back to the frame's pixels.

Every metric also gets a baseline, so a number can be read against something: the mean
training frame for PSNR/SSIM/LPIPS, and for LMD the mean training pose's mouth: the tracked lip
landmarks averaged over the training frames, held still. A still mouth has no motion, so
`lip_corr` and `render_fps` have no baseline (null). The lip-sync measures' baseline is the same
measure on the real held-out frames with their audio.

Frames that preprocessing flagged (no face or person: cuts, fades, cards) are rendered into the
`--video` but not scored.

Cross-driven (`mode: "cross"`, `audio=`): the speech is rendered the way `gstalker speak` does
(`Talker.frames`: training poses played back) and only the lip-sync measures and `render_fps`
are reported (PSNR and the rest need ground truth). Their baseline is the training video's own:
its tracked mouth (preprocessing's landmarks, training split, flagged frames left out) against
its own audio, the figure a real recording reaches with this measure. The report names the
speech file and its sha256.

When the speech is a video of someone talking (any file with a video stream), its speaker is
preprocessed (`SPEAKER_SIZE` px, audio as recorded) and the model is driven by that audio, aligned
to its frames; then the rendered mouth opening is also compared with how the speaker's own mouth
opened to the same sound, a reference loudness cannot give (real recordings' mouths follow their
own loudness at -0.24..0.42 in ../shared/media): `speaker_corr`, the Pearson correlation at lag
0; `speaker_sync` and `speaker_lag`, the best one over lags -3..3 and its lag (positive: the
rendered mouth moves after the speaker's). No baseline (a copy of the speaker's mouth would
score 1). With a sound file these rows are null.

Both modes can write `mouth.png` (`plot_mouth`): the mouth opening over time, rendered against
real (self) or against the speech's loudness (cross; and the speaker's mouth, from a video).
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .data import FPS, SAMPLE_RATE, SAMPLES_PER_FRAME
from .errors import GstalkerError, first_line
from .metrics import (MIN_FRAMES, MIN_SILENT_FRAMES, Lpips, av_sync, correlation, face_box,
                      lmd, loudness_db, mean_frame, mouth_jitter, mouth_motion, mouth_opening, mouth_opening_ratio, psnr,
                      silence_motion, silent_frames, silent_spans, ssim)

SCHEMA = "gstalker.eval/1"

# (metric, unit, which way is better); the report always holds all of them, in this order
METRICS = (
    ("psnr", "dB", "higher"),
    ("ssim", "", "higher"),
    ("psnr_face", "dB", "higher"),
    ("ssim_face", "", "higher"),
    ("lpips", "", "lower"),
    ("lmd", "px", "lower"),
    ("lip_corr", "", "higher"),
    ("render_fps", "frames/s", "higher"),
    ("av_sync", "", "higher"),
    ("av_lag", "frames", "near baseline"),
    ("mouth_motion", "", "near baseline"),
    ("silence_motion", "", "lower"),
    ("mouth_jitter", "", "near baseline"),
)
# the lip-sync rows (gstalker.metrics), in both modes
SYNC_METRICS = METRICS[-5:]
# cross-driven by a video of someone talking: the rendered mouth against that speaker's own
SPEAKER_METRICS = (
    ("speaker_corr", "", "higher"),
    ("speaker_sync", "", "higher"),
    ("speaker_lag", "frames", "near 0"),
)
# cross-driven: no ground-truth frames, so only what needs none
CROSS_METRICS = SYNC_METRICS + SPEAKER_METRICS + (("render_fps", "frames/s", "higher"),)
# a speech video's speaker is tracked at this size (preprocessing's landmarks, as for training)
SPEAKER_SIZE = 128

# a correlation over fewer frames (0.4 s, a syllable or two) says nothing about lip sync
LIP_CORR_MIN_FRAMES = 10

# landmarks are found on frames upscaled to at least this short side (the mesh is coarse at 128 px)
LANDMARK_MIN_SIDE = 384
# speech whose peak stays under this (-60 dBFS) is silence, not speech
SILENT_PEAK = 1e-3


# ------------------------------------------------------------------------------------ the run


def file_sha256(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _device_name(dev: torch.device) -> str:
    if dev.type == "cuda":
        return torch.cuda.get_device_name(dev)
    n = torch.get_num_threads()
    return f"{platform.processor() or platform.machine()} CPU, {n} thread{'s' if n != 1 else ''}"


def _mean(values) -> float | None:
    values = [v for v in values if v is not None]
    return float(np.mean(values)) if values else None


class _Landmarks:
    """MediaPipe face mesh in tracking mode over one sequence of frames. Each frame is upscaled
    (bicubic) to at least `min_side` pixels on its short side first and the points are mapped back
    to the frame's pixels: at 128x128 the mesh is coarse. Real and rendered frames go through the
    same procedure, so their figures compare."""

    def __init__(self, min_side: int = LANDMARK_MIN_SIDE):
        from .preprocess.landmarks import FaceMesh

        self.min_side = min_side
        self.fm = FaceMesh(static=False)

    def __call__(self, img: torch.Tensor):
        H, W = img.shape[:2]
        x = img.float().clamp(0, 1)
        if min(H, W) < self.min_side:
            s = self.min_side / min(H, W)
            x = F.interpolate(x.permute(2, 0, 1)[None], size=(math.ceil(H * s), math.ceil(W * s)), mode="bicubic",
                              align_corners=False)[0].permute(1, 2, 0).clamp(0, 1)
        u8 = np.ascontiguousarray((x * 255).round().byte().cpu().numpy())
        lm = self.fm(u8)
        if lm is None:
            return None
        lm = lm[:, :2].astype(np.float64)
        lm[:, 0] *= W / u8.shape[1]
        lm[:, 1] *= H / u8.shape[0]
        return lm

    def close(self):
        self.fm.close()


def _open_landmarks(count: int):
    """`count` face-mesh trackers, or (None, reason) when MediaPipe cannot be loaded."""
    made = []
    try:
        for _ in range(count):
            made.append(_Landmarks())
        return made, None
    except Exception as e:  # mediapipe missing or broken: the measures are unavailable, not invented
        for fm in made:
            fm.close()
        return None, f"MediaPipe face mesh unavailable ({type(e).__name__})"


def _check_pair(talker, pv, model_path, workdir) -> None:

    m_size = [talker.model.height, talker.model.width]
    w_size = [int(v) for v in pv.meta["size"]]
    if m_size != w_size:
        raise GstalkerError(f"{model_path} renders {m_size[0]}x{m_size[1]} but {workdir} holds {w_size[0]}x{w_size[1]} "
                            "frames: evaluate a model on the workdir it was fitted from")
    mf, wf = talker.model.config["audio"], pv.meta["audio_features"]
    if (mf.get("kind"), mf.get("dim")) != (wf.get("kind"), wf.get("dim")):
        raise GstalkerError(f"{model_path} uses {mf.get('kind')} audio features but {workdir} holds {wf.get('kind')} "
                            "ones: evaluate a model on the workdir it was fitted from")
    train = pv.viewmats[pv.train_ids]
    poses = talker.model.poses.detach().cpu()
    if poses.shape != train.shape or not torch.allclose(poses, train.float(), atol=1e-4):
        raise GstalkerError(f"{model_path} was not fitted on {workdir} (its training head poses differ), so that "
                            "workdir's tail may not be held out: give the workdir `gstalker fit` used")


def _check_outputs(**paths) -> None:
    from .serialization import check_writable

    for what, path in paths.items():
        if path is not None:
            path = Path(path)
            if path.is_dir():
                raise GstalkerError(f"{what} output {path} is a directory; give a file name")
            check_writable(path.parent if str(path.parent) else Path("."), f"{what} output")


def _open_workdir(workdir: Path):
    from .data import PreprocessedVideo

    if not workdir.is_dir():
        raise GstalkerError(f"workdir {workdir} does not exist; give the preprocessing workdir the model was fitted from")
    if not (workdir / "meta.json").is_file():
        raise GstalkerError(f"{workdir} is not a preprocessing workdir (no meta.json); give the folder "
                            "`gstalker fit`/`preprocess` wrote for this model")
    try:
        pv = PreprocessedVideo(workdir, "all", skip_flagged=False)
        _ = pv.meta["val_start"], pv.meta["size"], pv.meta["audio_features"], pv.tracks["viewmats"]
    except (ValueError, KeyError, OSError) as e:
        raise GstalkerError(f"{workdir} is not a complete preprocessing workdir ({first_line(e, 120)}); "
                            "give the folder `gstalker preprocess`/`fit` wrote") from None
    return pv


def _workdir_wave(pv) -> tuple[np.ndarray | None, str | None]:
    """The workdir's whole 16 kHz mono audio track (what its features were computed from), or
    (None, why)."""
    from .audio import AudioError, load_audio

    audio_file = pv.workdir / pv.meta.get("files", {}).get("audio", "audio.wav")
    sr = int(pv.meta.get("sample_rate", SAMPLE_RATE))
    try:
        return load_audio(audio_file, sample_rate=sr), None
    except AudioError as e:
        return None, f"the workdir's audio could not be read ({e})"


def evaluate(
    model: str | os.PathLike,
    workdir: str | os.PathLike,
    out: str | os.PathLike | None = None,
    video: str | os.PathLike | None = None,
    device: str = "auto",
    max_frames: int | None = None,
    backend: str = "auto",
    progress: bool | None = None,
    lpips: Lpips | None = None,
    audio: str | os.PathLike | None = None,
    plot: str | os.PathLike | bool | None = None,
    mouth_gain: float | None = None,
) -> dict:
    """Evaluate `model` against `workdir` (the preprocessing workdir it was fitted from).

    Self-driven (`audio` None): the held-out tail, rendered with its own audio and poses and
    compared with the real frames. `video`: real | rendered | difference (x4) side by side, with
    the tail's audio. Cross-driven (`audio` a speech file): the speech rendered the way `speak`
    does (training poses played back), scored for lip sync against the speech's loudness, beside
    the training video's own figures. `video`: the rendered frames with the speech.

    Returns the report (see `format_table`); `out` also writes it as JSON. `plot`: the mouth
    figure (PNG) path; None (default) writes it beside `out` as `<out stem>.mouth.png` when `out`
    is given, False writes none. All files atomically. max_frames: only the first N frames.
    mouth_gain: render with this gain instead of the model's (`gstalker.load`); the report keeps it."""
    from .api import resolve_device
    from .speak import load

    dev = resolve_device(device)
    model, workdir = Path(model), Path(workdir)
    plot = mouth_plot_path(out) if plot is None and out is not None else (plot or None)
    _check_outputs(report=out, video=video, plot=plot)
    if max_frames is not None and max_frames < 1:
        raise GstalkerError(f"--max-frames must be at least 1, got {max_frames}")
    pv = _open_workdir(workdir)
    talker = load(model, device=str(dev.type), backend=backend, mouth_gain=mouth_gain)
    _check_pair(talker, pv, model, workdir)
    if audio is None:
        report, series = _evaluate_self(talker, pv, dev, video, max_frames, progress, lpips)
    else:
        report, series = _evaluate_cross(talker, pv, dev, Path(audio), video, max_frames, progress)
    report = {"schema": SCHEMA, "mode": "self" if audio is None else "cross", "gstalker_version": _version(),
              "model": {"path": str(model), "sha256": file_sha256(model), "mouth_gain": talker.mouth_gain},
              "workdir": str(workdir), **report}
    if plot is not None:
        plot_mouth(series, plot)
    if out is not None:
        write_report(report, out)
    return report


def mouth_plot_path(report_path: str | os.PathLike) -> Path:
    """Where `gstalker eval` writes the mouth figure: beside the report, `<report stem>.mouth.png`."""
    p = Path(report_path)
    return p.with_name(p.stem + ".mouth.png")


# ---------------------------------------------------------------------------- self-driven


def _evaluate_self(talker, pv, dev, video, max_frames, progress, lpips) -> tuple[dict, dict]:

    n, val_start = pv.num_frames, pv.val_start
    ok = pv.frame_ok
    scored = pv.heldout_ids.tolist()
    if not scored:
        raise GstalkerError(f"{pv.workdir} has no usable held-out frames (tail {val_start}..{n - 1}); "
                            "preprocess a longer video")
    if max_frames is not None:
        scored = scored[:max_frames]
    first, last = scored[0], scored[-1]
    H, W = pv.size
    lp = lpips if lpips is not None else Lpips(dev)
    wave, wave_error = _workdir_wave(pv)
    if video is not None and wave is None:
        raise GstalkerError(f"--video needs {wave_error}")
    tail = _render_tail(talker, pv, dev, first, last, ok, lp, video, wave, progress)

    values, baselines, notes, frames = _tail_values(tail, lp, len(scored))
    values["render_fps"] = tail["timed"] / max(tail["render_time"], 1e-9)
    baselines["render_fps"] = None
    frames["render_fps"] = tail["timed"]
    loud = None if wave is None else loudness_db(wave, n)[first:last + 1]
    fake_open, real_open = mouth_opening_ratio(tail["fake_lm"]), mouth_opening_ratio(tail["real_lm"])
    _sync_rows(values, baselines, notes, frames, loud, fake_open, real_open,
               wave_error or tail["landmark_error"], what="real held-out frames")
    report = {
        "device": str(dev),
        "device_name": _device_name(dev),
        "size": [H, W],
        "frames": len(scored),
        "heldout": {"first": first, "last": last, "val_start": val_start, "num_frames": n,
                    "flagged": int((~ok[first:last + 1]).sum())},
        "baseline": "mean training frame (psnr, ssim, lpips); mean training mouth landmarks, still (lmd); "
                    "the real held-out frames with their audio (av_sync, av_lag, mouth_motion, silence_motion, mouth_jitter)",
        "metrics": _metric_rows(METRICS, values, baselines, notes, frames),
    }
    series = {"mode": "self", "first": first, "loudness": loud, "rendered": fake_open, "real": real_open,
              "av_sync": (values["av_sync"], values["av_lag"]), "real_sync": (baselines["av_sync"], baselines["av_lag"])}
    return report, series


def _render_tail(talker, pv, dev, first, last, ok, lp, video, wave, progress) -> dict:
    """Render frames first..last with their own audio codes, poses and eyes; per scored frame the
    image metrics against the real frame and the mean training frame, and both frames' landmarks
    ([T, 478, 2], NaN where not scored or no face)."""
    from .encode import Mp4Writer
    from .progress import Progress

    n, val_start = pv.num_frames, pv.val_start
    H, W = pv.size
    train = pv.train_ids.tolist() or list(range(val_start))
    mean_train = mean_frame(pv.frame, train)
    # audio codes of the span (neighbours beyond it included, so codes match the whole clip's)
    att = int(talker.model.config.get("att_window", 8))
    lo, hi = max(0, first - att), min(n, last + att + 1)
    with torch.no_grad():
        codes = talker.model.codes(pv.audio_features()[lo:hi].float())
    writer = None
    if video is not None:
        span = _span(wave, first * SAMPLES_PER_FRAME, (last + 1) * SAMPLES_PER_FRAME)
        writer = Mp4Writer(video, 3 * W, H, audio=span, sample_rate=SAMPLE_RATE)
    T = last - first + 1
    t = {"rows": {name: [] for name, _, _ in METRICS}, "base": {name: [] for name, _, _ in METRICS},
         "fake_lm": np.full((T, 478, 2), np.nan), "real_lm": np.full((T, 478, 2), np.nan),
         "lost_fake": 0, "lost_real": 0, "render_time": 0.0, "timed": 0, "mean_lm": None}
    t["mean_lm"] = pv.tracks["landmarks"][train].double().mean(0)

    def render(k):
        return talker.render(codes[k - lo], pv.viewmats[k].to(dev), float(pv.tracks["eye"][k]))

    fms, t["landmark_error"] = _open_landmarks(2)
    try:
        with torch.no_grad(), Progress(progress) as bars:
            render(first)  # warm-up (kernel compilation, caches): not timed
            if dev.type == "cuda":
                torch.cuda.synchronize()
            bar = bars.task("evaluating", T, unit="frames")
            for k in range(first, last + 1):
                t0 = time.perf_counter()
                fake = render(k)
                if dev.type == "cuda":
                    torch.cuda.synchronize()
                t["render_time"] += time.perf_counter() - t0
                t["timed"] += 1
                fake, real = fake.float().cpu(), pv.frame(k)
                if writer is not None:
                    diff = ((fake - real).abs() * 4).clamp(0, 1)
                    writer.write((torch.cat([real, fake, diff], 1) * 255).round().byte().numpy())
                if ok[k]:
                    _score_frame(t, k - first, fake, real, mean_train, pv.tracks["landmarks"][k], lp, fms)
                bar.advance(1)
    except BaseException:
        if writer is not None:
            writer.abort()
        raise
    finally:
        for fm in fms or ():
            fm.close()
    if writer is not None:
        writer.close()
    return t


def _score_frame(t: dict, i: int, fake, real, mean_frame, real_tracked_lm, lp, fms) -> None:
    H, W = real.shape[:2]
    rows_, cols_ = face_box(real_tracked_lm, H, W)
    for dst, img in ((t["rows"], fake), (t["base"], mean_frame)):
        dst["psnr"].append(psnr(img, real))
        dst["ssim"].append(ssim(img, real))
        dst["psnr_face"].append(psnr(img[rows_, cols_], real[rows_, cols_]))
        dst["ssim_face"].append(ssim(img[rows_, cols_], real[rows_, cols_]))
        if lp.available:
            dst["lpips"].append(float(lp(img, real)))
    if fms is not None:
        a, b = fms[0](fake), fms[1](real)
        t["lost_fake"] += a is None
        t["lost_real"] += b is None
        if a is not None:
            t["fake_lm"][i] = a
        if b is not None:
            t["real_lm"][i] = b


def _tail_values(t: dict, lp, count: int):
    """The image and landmark metrics of the tail (psnr .. lip_corr): values, baselines, notes, frames."""
    values, baselines, notes, frames = {}, {}, {}, {}
    for name in ("psnr", "ssim", "psnr_face", "ssim_face", "lpips"):
        values[name], baselines[name], frames[name] = _mean(t["rows"][name]), _mean(t["base"][name]), len(t["rows"][name])
    if not lp.available:
        notes["lpips"] = lp.reason
    if t["landmark_error"] is not None:
        for name in ("lmd", "lip_corr"):
            values[name] = baselines[name] = None
            frames[name] = 0
            notes[name] = t["landmark_error"]
        return values, baselines, notes, frames
    both = np.isfinite(t["fake_lm"][:, 0, 0]) & np.isfinite(t["real_lm"][:, 0, 0])
    m = int(both.sum())
    frames["lmd"] = frames["lip_corr"] = m
    if m:
        F_, R_ = t["fake_lm"][both], t["real_lm"][both]
        values["lmd"] = lmd(F_, R_)
        baselines["lmd"] = lmd(R_, t["mean_lm"].numpy())
        values["lip_corr"] = correlation(mouth_opening(F_), mouth_opening(R_), min_points=LIP_CORR_MIN_FRAMES)
    else:
        values["lmd"] = baselines["lmd"] = values["lip_corr"] = None
    baselines["lip_corr"] = None
    if t["lost_fake"] or t["lost_real"]:
        miss = (f"MediaPipe found no face in {t['lost_fake']} rendered and {t['lost_real']} real of {count} frames; "
                f"{count - m} frames left out")
        notes["lmd"] = notes["lip_corr"] = miss
    if m and values["lip_corr"] is None:
        notes["lip_corr"] = (f"undefined: under {LIP_CORR_MIN_FRAMES} frames with faces found, or a mouth "
                             "that does not move")
    return values, baselines, notes, frames


# ---------------------------------------------------------------------------- lip sync, both modes


def _sync_values(loud, opening) -> dict:
    corr, lag = av_sync(loud, opening)
    return {"av_sync": corr, "av_lag": lag, "mouth_motion": mouth_motion(opening),
            "silence_motion": silence_motion(loud, opening), "mouth_jitter": mouth_jitter(opening)}


def _sync_rows(values, baselines, notes, frames, loud, opening, base_opening, error, what: str,
               base_loud=None) -> None:
    """Fill the av_sync, av_lag, mouth_motion and silence_motion entries: `opening` [T] (NaN where
    no face) against `loud` [T] dB; the baseline from `base_opening` against `base_loud` (default
    `loud`): `what` names it in notes. `error`: why none can be measured (then all null)."""
    names = [name for name, _, _ in SYNC_METRICS]
    if error is not None or loud is None:
        for name in names:
            values[name] = baselines[name] = None
            frames[name] = 0
            notes[name] = error
        return
    base_loud = loud if base_loud is None else base_loud
    v, b = _sync_values(loud, opening), _sync_values(base_loud, base_opening)
    found = int(np.isfinite(opening).sum())
    for name in names:
        values[name], baselines[name], frames[name] = v[name], b[name], found
    lost = len(opening) - found
    note = f"no face found in {lost} of {len(opening)} rendered frames, left out" if lost else None
    if len(opening) < MIN_FRAMES:
        note = f"{len(opening)} frames ({len(opening) / FPS:.2f} s), under {MIN_FRAMES}: too short to measure lip sync"
    for name in ("av_sync", "av_lag"):
        if v[name] is None:
            notes[name] = note or "undefined: a mouth that does not move, or constant loudness"
        elif note:
            notes[name] = note
    if v["mouth_motion"] is None:
        notes["mouth_motion"] = note or "undefined: under 2 frames with a face"
    if v["mouth_jitter"] is None:
        notes["mouth_jitter"] = note or (f"undefined: under {MIN_FRAMES} frames with a face on either side, "
                                         "or a mouth that does not move")
    if v["silence_motion"] is None:
        quiet = int(silent_frames(loud).sum())
        notes["silence_motion"] = note or (f"undefined: {quiet} silent frames (30 dB under the median loudness), "
                                           f"at least {MIN_SILENT_FRAMES} needed, and as many with speech")
    if b["av_sync"] is None:
        notes.setdefault("av_sync", f"baseline undefined on the {what}")


def _span(wave, lo: int, hi: int) -> np.ndarray:
    """wave[lo:hi], zero-padded at the end."""
    seg = np.asarray(wave[lo:hi], dtype=np.float32)
    return np.concatenate([seg, np.zeros(hi - lo - len(seg), np.float32)]) if len(seg) < hi - lo else seg


def _metric_rows(table, values, baselines, notes, frames) -> list:
    return [{"metric": name, "value": _round(values[name]), "unit": unit, "frames": frames[name],
             "baseline": _round(baselines[name]), "better": better, "note": notes.get(name)}
            for name, unit, better in table]


# ---------------------------------------------------------------------------- cross-driven


def _evaluate_cross(talker, pv, dev, audio: Path, video, max_frames, progress) -> tuple[dict, dict]:
    """Render `audio` the way `speak` does (Talker.frames: its codes, training poses played back)
    and measure the rendered mouth against the speech's loudness, and against the speaker's own
    mouth when `audio` is a video of them."""
    from .encode import Mp4Writer

    speaker = speaker_mouth(audio, progress)
    # one-line GstalkerError: missing, not audio, under a frame
    wave = talker.audio(audio) if speaker is None else speaker[0]
    if float(np.abs(wave).max()) < SILENT_PEAK:
        raise GstalkerError(f"{audio}: the audio is silent (peak under {20 * math.log10(SILENT_PEAK):.0f} dBFS); "
                            "give a speech recording")
    n = max(1, round(len(wave) * FPS / SAMPLE_RATE))
    if max_frames is not None:
        n = min(n, max_frames)
    H, W = talker.size
    writer = None if video is None else Mp4Writer(video, W, H, audio=wave[:n * SAMPLES_PER_FRAME], sample_rate=SAMPLE_RATE)
    try:
        opening, render_time, timed, error = _render_speech(talker, wave, n, writer, progress)
    except BaseException:
        if writer is not None:
            writer.abort()
        raise
    if writer is not None:
        writer.close()
    loud = loudness_db(wave, n)
    train_loud, train_open, base_error = _training_mouth(pv)
    values, baselines, notes, frames = {}, {}, {}, {}
    _sync_rows(values, baselines, notes, frames, loud, opening, train_open, error or base_error,
               what="training video", base_loud=train_loud)
    real = None if speaker is None else _pad(speaker[1], n)
    _speaker_rows(values, baselines, notes, frames, real, opening, audio)
    values["render_fps"] = timed / max(render_time, 1e-9) if timed else None
    baselines["render_fps"], frames["render_fps"] = None, timed
    val_start = pv.val_start
    report = {
        "audio": {"path": str(audio), "sha256": file_sha256(audio), "seconds": round(len(wave) / SAMPLE_RATE, 3)},
        "device": str(dev),
        "device_name": _device_name(dev),
        "size": [H, W],
        "frames": n,
        "baseline": f"the training video's own mouth (tracked landmarks) and audio, frames 0-{val_start - 1}: "
                    "what a real recording reaches with these measures",
        "metrics": _metric_rows(CROSS_METRICS, values, baselines, notes, frames),
    }
    series = {"mode": "cross", "first": 0, "loudness": loud, "rendered": opening, "real": real,
              "av_sync": (values["av_sync"], values["av_lag"]), "real_sync": (baselines["av_sync"], baselines["av_lag"])}
    return report, series


def _has_video(path: Path) -> bool:
    """Whether `path` holds a video stream (a recording of the speaker, not just their voice)."""
    import av
    from av.stream import Disposition

    try:
        with av.open(str(path)) as f:  # an mp3's cover art is a video stream of one picture
            return any(not (s.disposition & Disposition.attached_pic) for s in f.streams.video)
    except (av.error.FFmpegError, OSError):
        return False  # talker.audio says what is wrong with it


def speaker_mouth(speech: str | os.PathLike, progress=None, workdir: str | os.PathLike | None = None):
    """When `speech` is a video of someone talking: (its 16 kHz audio, aligned to its frames; the
    speaker's mouth opening per frame at 25 fps [M], NaN where preprocessing flagged the frame),
    from `preprocess` at SPEAKER_SIZE px with the audio as recorded, in `workdir` (kept: a second
    call reuses it) or a temporary folder. None for a sound file. A video with no face raises
    preprocessing's one-line error."""
    import contextlib
    import tempfile
    import warnings

    from .audio import load_audio
    from .data import PreprocessedVideo
    from .preprocess import preprocess

    speech = Path(speech)
    if not speech.is_file() or not _has_video(speech):
        return None
    folder = (contextlib.nullcontext(workdir) if workdir is not None
              else tempfile.TemporaryDirectory(prefix="gstalker-speaker-"))
    with folder as where:
        wd = Path(where) if workdir is not None else Path(where) / "speaker"
        with warnings.catch_warnings():  # a short clip: preprocessing's advice is for training videos
            warnings.simplefilter("ignore")
            preprocess(speech, wd, size=SPEAKER_SIZE, av_offset=0.0, progress=progress)
        pv = PreprocessedVideo(wd, "all", skip_flagged=False)
        lm = pv.tracks["landmarks"].double().numpy().copy()
        lm[~pv.frame_ok.numpy()] = np.nan
        return load_audio(wd / pv.meta["files"]["audio"]), mouth_opening_ratio(lm)


def _pad(series: np.ndarray, n: int) -> np.ndarray:
    """series[:n], NaN-padded to n."""
    out = np.full(n, np.nan)
    out[:min(n, len(series))] = series[:n]
    return out


def _speaker_rows(values, baselines, notes, frames, real, opening, speech: Path) -> None:
    """speaker_corr / speaker_sync / speaker_lag: the rendered opening [T] against the speaker's
    own `real` [T] (None: the speech has no video; all null)."""
    names = [name for name, _, _ in SPEAKER_METRICS]
    for name in names:
        baselines[name] = None
    if real is None:
        for name in names:
            values[name], frames[name] = None, 0
            notes[name] = "the speech is a sound file; give a video of someone talking to compare with their mouth"
        return
    both = int((np.isfinite(real) & np.isfinite(opening)).sum())
    values["speaker_corr"] = correlation(real, opening, min_points=MIN_FRAMES)
    values["speaker_sync"], values["speaker_lag"] = av_sync(real, opening, floor_below_median_db=None)
    note = f"against the mouth of the speaker in {speech.name} (tracked), {both} frames with both faces"
    for name in names:
        frames[name] = both
        notes[name] = note if values[name] is not None else f"undefined: {both} frames with both faces, or a still mouth"


def _render_speech(talker, wave, n: int, writer, progress):
    """The first n frames of `talker.frames(wave)`: their mouth opening [n] (NaN: no face), render
    seconds and timed frames (the first, which also computes the audio codes, is not timed), and
    why landmarks are unavailable (or None)."""
    from .progress import Progress

    fms, error = _open_landmarks(1)
    opening = np.full(n, np.nan)
    render_time, timed = 0.0, 0
    try:
        with Progress(progress) as bars:
            bar = bars.task("rendering", n, unit="frames")
            frames = talker.frames(wave, sample_rate=SAMPLE_RATE)
            for k in range(n):
                t0 = time.perf_counter()
                u8 = next(frames)
                if k:
                    render_time += time.perf_counter() - t0
                    timed += 1
                if writer is not None:
                    writer.write(u8)
                if fms is not None:
                    lm = fms[0](torch.from_numpy(u8).float() / 255)
                    if lm is not None:
                        opening[k] = mouth_opening_ratio(lm[None])[0]
                bar.advance(1)
            frames.close()
    finally:
        for fm in fms or ():
            fm.close()
    return opening, render_time, timed, error


def _training_mouth(pv):
    """The training split's loudness [V] and tracked mouth opening [V] (NaN on flagged frames),
    or (None, None, why)."""
    wave, error = _workdir_wave(pv)
    if wave is None:
        return None, None, error
    val_start = pv.val_start
    lm = pv.tracks["landmarks"][:val_start].double().numpy().copy()
    lm[~pv.frame_ok[:val_start].numpy()] = np.nan
    return loudness_db(wave, val_start), mouth_opening_ratio(lm), None


# ---------------------------------------------------------------------------- the mouth figure


def plot_mouth(series: dict, path: str | os.PathLike) -> Path:
    """Write the mouth figure (PNG, atomically): self-driven, the rendered and real mouth opening
    over time with the loudness faint behind; cross-driven, the rendered opening against the
    speech's loudness, silent stretches shaded. Drawn with matplotlib's Agg canvas (no display,
    the global backend untouched)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from .serialization import atomic_path

    fig = Figure(figsize=(11, 3.6), dpi=110)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    op = series["rendered"]
    t = (series["first"] + np.arange(len(op))) / FPS
    ax.plot(t, op, color="tab:red", lw=1.4, label="rendered")
    if series["real"] is not None:
        ax.plot(t, series["real"], color="black", lw=1.4,
                label="real" if series["mode"] == "self" else "the speaker's own mouth (video)")
    ax.set_xlabel("time (s)" + (" in the training video" if series["mode"] == "self" else " in the speech"))
    ax.set_ylabel("mouth opening (lip gap / eye corners)")
    loud = series["loudness"]
    if loud is not None:
        ax2 = ax.twinx()
        ax2.plot(t, loud, color="tab:blue", lw=1.0, alpha=0.9 if series["mode"] == "cross" else 0.35,
                 label="speech loudness")
        ax2.set_ylabel("loudness (dB RMS per frame)", color="tab:blue")
        for lo, hi in silent_spans(loud):
            ax.axvspan((series["first"] + lo) / FPS, (series["first"] + hi) / FPS, color="0.85", zorder=0)
        ax2.legend(loc="upper right", fontsize=8)
    ax.legend(loc="upper left", fontsize=8)

    def sync(pair):
        return "n/a" if pair[0] is None else f"{pair[0]:.2f} at lag {pair[1]:+d}"

    what = "real held-out frames" if series["mode"] == "self" else "training video"
    fig.suptitle(f"{'self' if series['mode'] == 'self' else 'cross'}-driven: av_sync rendered {sync(series['av_sync'])}, "
                 f"{what} {sync(series['real_sync'])} (lag > 0: mouth after sound); grey: silence", fontsize=10)
    fig.tight_layout()
    path = Path(path)
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(str(tmp), format="png")
    return path


def _version() -> str:
    from . import __version__

    return __version__


def _round(v, digits: int = 6):
    return None if v is None else round(float(v), digits)


def write_report(report: dict, path: str | os.PathLike) -> Path:
    """Write the report as JSON, atomically."""
    from .serialization import atomic_path

    path = Path(path)
    with atomic_path(path, suffix=".json") as tmp:
        tmp.write_text(json.dumps(report, indent=2) + "\n")
    return path


def metric(report: dict, name: str) -> dict:
    """The entry of metric `name` in a report."""
    for m in report["metrics"]:
        if m["metric"] == name:
            return m
    raise KeyError(name)


def format_table(report: dict) -> str:
    """The report as a Markdown table: one row per metric, model and baseline side by side."""

    def fmt(v, name):
        if v is None:
            return "n/a"
        if name.startswith("psnr"):
            return f"{v:.2f}"
        if name == "render_fps":
            return f"{v:.1f}"
        if name in ("av_lag", "speaker_lag"):
            return f"{v:+.0f}"
        return f"{v:.4f}" if name in ("ssim", "ssim_face", "lpips", "mouth_motion") else f"{v:.3f}"

    model = f"model {Path(report['model']['path']).name} (sha256 {report['model']['sha256'][:12]}"
    model += f", mouth gain {report['model']['mouth_gain']:g}), " if "mouth_gain" in report["model"] else "), "
    where = f"{report['size'][0]}x{report['size'][1]}, {report['device']} ({report['device_name']})"
    if report.get("mode") == "cross":
        a = report["audio"]
        head = (model + f"cross-driven by {Path(a['path']).name} (sha256 {a['sha256'][:12]}, {a['seconds']:.1f} s, "
                f"{report['frames']} frames), " + where)
    else:
        h = report["heldout"]
        head = model + f"held-out frames {h['first']}-{h['last']} ({report['frames']} scored), " + where
    lines = [
        head,
        "",
        "| metric | model | baseline | unit | better | frames |",
        "|---|---:|---:|---|---|---:|",
    ]
    notes = []
    for m in report["metrics"]:
        lines.append(f"| {m['metric']} | {fmt(m['value'], m['metric'])} | {fmt(m['baseline'], m['metric'])} | "
                     f"{m['unit'] or '-'} | {m['better']} | {m['frames']} |")
        if m["note"]:
            notes.append(f"{m['metric']}: {m['note']}")
    lines += ["", "baseline: " + report["baseline"]]
    lines += notes
    return "\n".join(lines)
