"""Self-driven evaluation on the held-out tail: `gstalker eval` (the paper's protocol).

    from gstalker.evaluate import evaluate, format_table
    report = evaluate("subject.safetensors", "subject.gstalker", out="report.json")
    print(format_table(report))

The model renders the held-out tail of its training video (the last 10% of frames, contiguous,
never trained on: `meta.json["val_start"]`) driven by that tail's own audio, eye openness and
tracked head poses, and each rendered frame is compared with the real one:

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

Every metric also gets a baseline, so a number can be read against something: the mean
training frame for PSNR/SSIM/LPIPS, and for LMD the mean training pose's mouth: the tracked lip
landmarks averaged over the training frames, held still. A still mouth has no motion, so
`lip_corr` and `render_fps` have no baseline (null).

Frames that preprocessing flagged (no face or person: cuts, fades, cards) are rendered into the
`--video` but not scored.
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
)

# MediaPipe face mesh: the 40 points of FACEMESH_LIPS (outer and inner lip contours)
MOUTH = (0, 13, 14, 17, 37, 39, 40, 61, 78, 80, 81, 82, 84, 87, 88, 91, 95, 146, 178, 181, 185, 191, 267, 269,
         270, 291, 308, 310, 311, 312, 314, 317, 318, 321, 324, 375, 402, 405, 409, 415)
# upper / lower inner-lip points facing each other: centre, and either side of it
INNER_LIP_PAIRS = ((13, 14), (82, 87), (312, 317))

# a correlation over fewer frames (0.4 s, a syllable or two) says nothing about lip sync
LIP_CORR_MIN_FRAMES = 10

LPIPS_WEIGHTS = "alexnet-owt-7be5be79.pth"


# ------------------------------------------------------------------------------------- metrics


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """PSNR in dB of two images in [0, 1] (any shape); MSE floored at 1e-10 (100 dB)."""
    mse = float(F.mse_loss(a.double(), b.double()))
    return 10 * math.log10(1.0 / max(mse, 1e-10))


def _gaussian_window(size: int, sigma: float) -> torch.Tensor:
    x = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    g = g / g.sum()
    return g[:, None] * g[None, :]


def ssim(a: torch.Tensor, b: torch.Tensor, window: int = 11, sigma: float = 1.5, data_range: float = 1.0) -> float:
    """Mean SSIM of two [H, W, C] images (Wang et al. 2004): Gaussian window `window` x `window`
    with std `sigma`, C1 = (0.01 L)^2, C2 = (0.03 L)^2, valid positions only (no padding), each
    channel separately, then averaged. Both sides must be at least `window` pixels."""
    if a.shape != b.shape or a.dim() != 3:
        raise ValueError(f"ssim needs two [H, W, C] images of one shape, got {list(a.shape)} and {list(b.shape)}")
    H, W, C = a.shape
    if H < window or W < window:
        raise ValueError(f"ssim needs images of at least {window}x{window} pixels, got {H}x{W}")
    x = a.double().permute(2, 0, 1)[None]
    y = b.double().permute(2, 0, 1)[None]
    k = _gaussian_window(window, sigma).to(x.device).expand(C, 1, window, window)

    def blur(t):
        return F.conv2d(t, k, groups=C)

    mx, my = blur(x), blur(y)
    sxx = blur(x * x) - mx * mx
    syy = blur(y * y) - my * my
    sxy = blur(x * y) - mx * my
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    s = ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx * mx + my * my + c1) * (sxx + syy + c2))
    return float(s.mean())


def lmd(pred, ref) -> float:
    """Mean L2 distance (pixels) between the mouth landmarks of two sets of face-mesh landmarks:
    pred, ref [T, 478, 2] (or [478, 2]); ref may also be one [478, 2] set for all frames."""
    p = torch.tensor(np.array(pred, dtype=np.float64))[..., MOUTH, :2]
    r = torch.tensor(np.array(ref, dtype=np.float64))[..., MOUTH, :2]
    return float((p - r).norm(dim=-1).mean())


def mouth_opening(landmarks) -> np.ndarray:
    """Inner-lip gap in pixels of face-mesh landmarks [T, 478, 2] -> [T] (mean of three
    upper/lower point pairs)."""
    lm = np.asarray(landmarks, dtype=np.float64)
    gaps = [np.linalg.norm(lm[..., u, :2] - lm[..., d, :2], axis=-1) for u, d in INNER_LIP_PAIRS]
    return np.mean(gaps, axis=0)


def correlation(x, y, min_points: int = 3) -> float | None:
    """Pearson correlation of two series, or None when undefined (under `min_points` points, or
    either series constant)."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if len(x) != len(y):
        raise ValueError(f"series differ in length: {len(x)} and {len(y)}")
    if len(x) < max(3, min_points):
        return None
    x, y = x - x.mean(), y - y.mean()
    den = math.sqrt(float((x * x).sum()) * float((y * y).sum()))
    if den < 1e-12:
        return None
    return float((x * y).sum() / den)


def face_box(landmarks, height: int, width: int, margin: float = 0.1, min_size: int = 16) -> tuple[slice, slice]:
    """(rows, cols) of the face box: the landmarks' [N, 2] bounding box grown by `margin` of its
    size on each side, at least `min_size` pixels (SSIM's window fits), clipped to the image."""
    lm = np.asarray(landmarks, dtype=np.float64)[:, :2]
    (x0, y0), (x1, y1) = lm.min(0), lm.max(0)
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    hw = max((x1 - x0) * (1 + 2 * margin), min_size) / 2
    hh = max((y1 - y0) * (1 + 2 * margin), min_size) / 2
    min_size = min(min_size, width, height)

    def span(c, h, n):
        lo, hi = int(math.floor(c - h)), int(math.ceil(c + h))
        lo, hi = max(0, lo), min(n, hi)
        if hi - lo < min_size:  # at an image edge: slide inwards
            lo, hi = (0, min_size) if lo == 0 else (n - min_size, n)
        return slice(lo, hi)

    return span(cy, hh, height), span(cx, hw, width)


class Lpips:
    """LPIPS 0.1 (AlexNet) when the backbone weights are on disk; `available` / `reason` say
    whether it can be used. Nothing is downloaded."""

    def __init__(self, device: torch.device | str = "cpu", pretrained_backbone: bool = True):
        self.net = None
        self.reason = ""
        path = Path(torch.hub.get_dir()) / "checkpoints" / LPIPS_WEIGHTS
        if pretrained_backbone and not path.is_file():
            self.reason = f"AlexNet weights not found ({path}); put {LPIPS_WEIGHTS} there to enable LPIPS"
            return
        try:
            import warnings

            import lpips

            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                self.net = lpips.LPIPS(net="alex", verbose=False, pnet_rand=not pretrained_backbone).to(device).eval()
        except Exception as e:
            self.net = None
            self.reason = f"LPIPS could not be loaded ({type(e).__name__}: {str(e).splitlines()[0][:100] if str(e) else ''})"

    @property
    def available(self) -> bool:
        return self.net is not None

    @torch.no_grad()
    def __call__(self, a: torch.Tensor, b: torch.Tensor) -> float:
        """a, b: [H, W, 3] in [0, 1] -> LPIPS distance."""
        dev = next(self.net.parameters()).device

        def to(x):
            return x.float().to(dev).permute(2, 0, 1)[None] * 2 - 1

        return float(self.net(to(a), to(b)).mean())


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
    """MediaPipe face mesh in tracking mode over one sequence of frames."""

    def __init__(self):
        from .preprocess.landmarks import FaceMesh

        self.fm = FaceMesh(static=False)

    def __call__(self, img: torch.Tensor):
        u8 = np.ascontiguousarray((img.clamp(0, 1) * 255).round().byte().cpu().numpy())
        lm = self.fm(u8)
        return None if lm is None else lm[:, :2]

    def close(self):
        self.fm.close()


def _check_pair(talker, pv, model_path, workdir) -> None:
    from .api import GstalkerError

    m_size = [talker.model.height, talker.model.width]
    w_size = [int(v) for v in pv.meta["size"]]
    if m_size != w_size:
        raise GstalkerError(f"{model_path} renders {m_size[0]}x{m_size[1]} but {workdir} holds {w_size[0]}x{w_size[1]} "
                            "frames: evaluate a model on the workdir it was fitted from")
    mf, wf = talker.model.config["audio"], pv.meta["audio_features"]
    if (mf.get("kind"), mf.get("dim")) != (wf.get("kind"), wf.get("dim")):
        raise GstalkerError(f"{model_path} uses {mf.get('kind')} audio features but {workdir} holds {wf.get('kind')} "
                            "ones: evaluate a model on the workdir it was fitted from")
    val_start = int(pv.meta["val_start"])
    ok = pv.tracks["frame_ok"].bool() if "frame_ok" in pv.tracks else torch.ones(pv.num_frames, dtype=torch.bool)
    train = pv.viewmats[:val_start][ok[:val_start]]
    poses = talker.model.poses.detach().cpu()
    if poses.shape != train.shape or not torch.allclose(poses, train.float(), atol=1e-4):
        raise GstalkerError(f"{model_path} was not fitted on {workdir} (its training head poses differ), so that "
                            "workdir's tail may not be held out: give the workdir `gstalker fit` used")


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
) -> dict:
    """Evaluate `model` on the held-out tail of `workdir` (the preprocessing workdir it was
    fitted from). Returns the report (see `format_table`); `out` also writes it as JSON and
    `video` writes real | rendered | difference (x4) side by side with the tail's audio, both
    atomically. max_frames: score only the first N held-out frames (None: all)."""
    from .api import GstalkerError, _check_writable, load, resolve_device
    from .data import PreprocessedVideo
    from .progress import Progress

    dev = resolve_device(device)
    model, workdir = Path(model), Path(workdir)
    for path, what in ((out, "report"), (video, "video")):
        if path is not None:
            path = Path(path)
            if path.is_dir():
                raise GstalkerError(f"{what} output {path} is a directory; give a file name")
            _check_writable(path.parent if str(path.parent) else Path("."), f"{what} output")
    if max_frames is not None and max_frames < 1:
        raise GstalkerError(f"--max-frames must be at least 1, got {max_frames}")
    if not workdir.is_dir():
        raise GstalkerError(f"workdir {workdir} does not exist; give the preprocessing workdir the model was fitted from")
    if not (workdir / "meta.json").is_file():
        raise GstalkerError(f"{workdir} is not a preprocessing workdir (no meta.json); give the folder "
                            "`gstalker fit`/`preprocess` wrote for this model")
    try:
        pv = PreprocessedVideo(workdir, "all", skip_flagged=False)
        _ = pv.meta["val_start"], pv.meta["size"], pv.meta["audio_features"], pv.tracks["viewmats"]
    except (ValueError, KeyError, OSError) as e:
        raise GstalkerError(f"{workdir} is not a complete preprocessing workdir ({str(e).splitlines()[0][:120]}); "
                            "give the folder `gstalker preprocess`/`fit` wrote") from None
    talker = load(model, device=str(dev.type), backend=backend)
    _check_pair(talker, pv, model, workdir)

    n, val_start = pv.num_frames, int(pv.meta["val_start"])
    ok = pv.tracks["frame_ok"].bool() if "frame_ok" in pv.tracks else torch.ones(n, dtype=torch.bool)
    scored = [k for k in range(val_start, n) if ok[k]]
    if not scored:
        raise GstalkerError(f"{workdir} has no usable held-out frames (tail {val_start}..{n - 1}); "
                            "preprocess a longer video")
    if max_frames is not None:
        scored = scored[:max_frames]
    first, last = scored[0], scored[-1]
    H, W = pv.size
    lp = lpips if lpips is not None else Lpips(dev)

    # baseline: the mean training frame and the training frames' mean mouth
    train = [k for k in range(val_start) if ok[k]] or list(range(val_start))
    pick = np.unique(np.linspace(0, len(train) - 1, min(200, len(train))).round().astype(int))
    mean_frame = torch.zeros(H, W, 3, dtype=torch.float64)
    for i in pick:
        mean_frame += pv.frame(train[i])
    mean_frame = (mean_frame / len(pick)).float()
    mean_lm = pv.tracks["landmarks"][train].double().mean(0)

    # audio codes of the scored span (neighbours beyond it included, so codes match the whole clip's)
    att = int(talker.model.config.get("att_window", 8))
    lo, hi = max(0, first - att), min(n, last + att + 1)
    with torch.no_grad():
        codes = talker.model.codes(pv.audio_features()[lo:hi].float())

    writer = None
    if video is not None:
        from .audio import AudioError, load_audio
        from .encode import Mp4Writer

        audio_file = workdir / pv.meta.get("files", {}).get("audio", "audio.wav")
        sr = int(pv.meta.get("sample_rate", 16000))
        try:
            wave = load_audio(audio_file, sample_rate=sr, start=first / 25, end=(last + 1) / 25)
        except AudioError as e:
            raise GstalkerError(f"--video needs the workdir's audio: {e}") from None
        writer = Mp4Writer(video, 3 * W, H, audio=wave, sample_rate=sr)

    rows = {name: [] for name, _, _ in METRICS}
    base = {name: [] for name, _, _ in METRICS}
    fake_lm, real_lm = [], []
    lost_fake = lost_real = 0
    render_time, timed = 0.0, 0

    def render(k):
        return talker.render(codes[k - lo], pv.viewmats[k].to(dev), float(pv.tracks["eye"][k]))

    fm_real = fm_fake = None
    landmark_error = None
    try:
        fm_real = _Landmarks()
        fm_fake = _Landmarks()
    except Exception as e:  # mediapipe missing or broken: LMD is unavailable, not invented
        if fm_real is not None:
            fm_real.close()
        fm_real = fm_fake = None
        landmark_error = f"MediaPipe face mesh unavailable ({type(e).__name__})"
    try:
        with torch.no_grad(), Progress(progress) as bars:
            render(first)  # warm-up (kernel compilation, caches): not timed
            if dev.type == "cuda":
                torch.cuda.synchronize()
            bar = bars.task("evaluating", last - first + 1, unit="frames")
            for k in range(first, last + 1):
                t0 = time.perf_counter()
                fake = render(k)
                if dev.type == "cuda":
                    torch.cuda.synchronize()
                render_time += time.perf_counter() - t0
                timed += 1
                fake = fake.float().cpu()
                real = pv.frame(k)
                if writer is not None:
                    diff = ((fake - real).abs() * 4).clamp(0, 1)
                    writer.write((torch.cat([real, fake, diff], 1) * 255).round().byte().numpy())
                if ok[k]:
                    rows_, cols_ = face_box(pv.tracks["landmarks"][k], H, W)
                    for dst, img in ((rows, fake), (base, mean_frame)):
                        dst["psnr"].append(psnr(img, real))
                        dst["ssim"].append(ssim(img, real))
                        dst["psnr_face"].append(psnr(img[rows_, cols_], real[rows_, cols_]))
                        dst["ssim_face"].append(ssim(img[rows_, cols_], real[rows_, cols_]))
                        if lp.available:
                            dst["lpips"].append(lp(img, real))
                    if fm_real is not None:
                        a, b = fm_fake(fake), fm_real(real)
                        lost_fake += a is None
                        lost_real += b is None
                        if a is not None and b is not None:
                            fake_lm.append(a)
                            real_lm.append(b)
                bar.advance(1)
    except BaseException:
        if writer is not None:
            writer.abort()
        raise
    finally:
        for fm in (fm_real, fm_fake):
            if fm is not None:
                fm.close()
    if writer is not None:
        writer.close()

    count = len(scored)
    values, baselines, notes, frames = {}, {}, {}, {}
    for name in ("psnr", "ssim", "psnr_face", "ssim_face", "lpips"):
        values[name], baselines[name], frames[name] = _mean(rows[name]), _mean(base[name]), len(rows[name])
    if not lp.available:
        notes["lpips"] = lp.reason
    if fm_real is None:
        for name in ("lmd", "lip_corr"):
            values[name] = baselines[name] = None
            frames[name] = 0
            notes[name] = landmark_error
    else:
        m = len(fake_lm)
        frames["lmd"] = frames["lip_corr"] = m
        if m:
            F_, R_ = np.stack(fake_lm), np.stack(real_lm)
            values["lmd"] = lmd(F_, R_)
            baselines["lmd"] = lmd(R_, mean_lm.numpy())
            values["lip_corr"] = correlation(mouth_opening(F_), mouth_opening(R_), min_points=LIP_CORR_MIN_FRAMES)
        else:
            values["lmd"] = baselines["lmd"] = values["lip_corr"] = None
        baselines["lip_corr"] = None
        if lost_fake or lost_real:
            miss = (f"MediaPipe found no face in {lost_fake} rendered and {lost_real} real of {count} frames; "
                    f"{count - m} frames left out")
            notes["lmd"] = notes["lip_corr"] = miss
        if m and values["lip_corr"] is None:
            notes["lip_corr"] = (f"undefined: under {LIP_CORR_MIN_FRAMES} frames with faces found, or a mouth "
                                 "that does not move")
    values["render_fps"] = timed / max(render_time, 1e-9)
    baselines["render_fps"] = None
    frames["render_fps"] = timed

    report = {
        "schema": SCHEMA,
        "gstalker_version": _version(),
        "model": {"path": str(model), "sha256": file_sha256(model)},
        "workdir": str(workdir),
        "device": str(dev),
        "device_name": _device_name(dev),
        "size": [H, W],
        "frames": count,
        "heldout": {"first": first, "last": last, "val_start": val_start, "num_frames": n,
                    "flagged": int((~ok[first:last + 1]).sum())},
        "baseline": "mean training frame (psnr, ssim, lpips); mean training mouth landmarks, still (lmd)",
        "metrics": [
            {"metric": name, "value": _round(values[name]), "unit": unit, "frames": frames[name],
             "baseline": _round(baselines[name]), "better": better, "note": notes.get(name)}
            for name, unit, better in METRICS
        ],
    }
    if out is not None:
        write_report(report, out)
    return report


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
        return f"{v:.4f}" if name in ("ssim", "ssim_face", "lpips") else f"{v:.3f}"

    h = report["heldout"]
    lines = [
        f"model {Path(report['model']['path']).name} (sha256 {report['model']['sha256'][:12]}), "
        f"held-out frames {h['first']}-{h['last']} ({report['frames']} scored), "
        f"{report['size'][0]}x{report['size'][1]}, {report['device']} ({report['device_name']})",
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
