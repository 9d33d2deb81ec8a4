"""The Python API: `fit` a video into a model file; `load` it (gstalker/speak.py) and make it speak.

    import gstalker
    gstalker.fit("subject.mp4", "subject.safetensors", preset="smoke")
    talker = gstalker.load("subject.safetensors")
    talker.speak("speech.wav", out="out.mp4")

The CLI (`gstalker fit`, `gstalker speak`) is a thin layer over these functions.
"""

from __future__ import annotations

import os
import sys
import time
import warnings
from pathlib import Path

import torch

from .errors import GstalkerError
from .serialization import check_writable


def resolve_device(device: str) -> torch.device:
    """"auto" -> CUDA when present, else CPU; "cuda" without a GPU is an error."""
    if device not in ("auto", "cuda", "cpu"):
        raise GstalkerError(f"--device must be auto, cuda or cpu, got {device!r}")
    if device == "cuda" and not torch.cuda.is_available():
        raise GstalkerError("--device cuda was asked for but no CUDA GPU is visible; use --device cpu or auto")
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(device)


def fit(
    video: str | os.PathLike,
    out: str | os.PathLike | None = None,
    preset: str | None = None,
    workdir: str | os.PathLike | None = None,
    iters: int | None = None,
    size: int | None = None,
    audio_features: str = "mel",
    device: str = "auto",
    resume: bool = False,
    seed: int = 0,
    lpips: str = "on",
    start: float | None = None,
    end: float | None = None,
    progress: bool | None = None,
    av_offset: float | None = None,
) -> Path:
    """Preprocess `video`, train both stages and write one self-contained model file.

    out: the model path (default: the video's name with `.safetensors`, beside it).
    workdir: preprocessing cache, checkpoint, previews and loss curve (default: `<video stem>.gstalker/`
    beside the video). preset: "smoke" | "cpu" | "fast" | "paper", default `fast` on a CUDA GPU and
    `cpu` elsewhere; `iters` (both stages, split in the preset's ratio) and `size` override it. lpips: "off" | "on" (used when its weights are
    available) | "require". start/end: trim the video (seconds). av_offset: seconds the video's sound
    runs behind its picture (None: measured from the lip motion, 0: as recorded). Returns the model path.

    Ctrl-C writes a checkpoint and raises KeyboardInterrupt; `resume=True` continues from it.
    """
    from .preprocess import preprocess
    from .train import CHECKPOINT

    video = Path(video)
    dev = resolve_device(device)
    settings = _fit_settings(dev, preset, iters, size, audio_features, seed, lpips, progress)
    out = _model_path(video, out)
    workdir = Path(workdir) if workdir is not None else video.with_name(video.stem + ".gstalker")
    if resume:
        _check_resume(workdir / CHECKPOINT, settings)
    workdir = preprocess(video, workdir, size=settings.size, audio_features=audio_features, start=start, end=end,
                         progress=progress, av_offset=av_offset)
    model, summary = _train(workdir, settings, dev, resume, progress)
    model.save(out, summary)
    return out


def _fit_settings(dev: torch.device, preset, iters, size, audio_features, seed, lpips, progress):
    """`fit`'s options checked and turned into FitSettings, before any work (LPIPS required but
    unavailable fails here, not after hours of training)."""
    from .metrics import Lpips
    from .train import FitSettings, default_preset

    if lpips not in ("off", "on", "require"):
        raise GstalkerError(f"--lpips must be off, on or require, got {lpips!r}")
    if preset is None:
        preset = default_preset(dev)
        if progress is not False:
            print(f"gstalker: preset {preset} ({'a CUDA GPU' if dev.type == 'cuda' else 'no CUDA GPU'}; "
                  "--preset chooses another)", file=sys.stderr)
    if lpips == "require":
        Lpips("cpu", "require", download=True)
    settings = FitSettings.from_preset(preset, iters=iters, size=size, audio_features=audio_features,
                                       seed=seed, lpips=lpips)
    if dev.type == "cpu" and preset in ("fast", "paper"):
        warnings.warn(f"--preset {preset} on the CPU (torch backends) runs for days; use a CUDA GPU, or --preset cpu",
                      stacklevel=3)
    return settings


def _model_path(video: Path, out) -> Path:
    """The model file `fit` will write (default: beside the video), checked writable now."""
    out = Path(out) if out is not None else video.with_suffix(".safetensors")
    if out.is_dir():
        raise GstalkerError(f"output {out} is a directory; give a file name such as {out / (video.stem + '.safetensors')}")
    check_writable(out.parent if str(out.parent) else Path("."), "output")
    return out


def _check_resume(checkpoint: Path, settings) -> None:
    """--resume needs a checkpoint started with the same settings."""
    from dataclasses import asdict

    from .train import checkpoint_settings

    old = checkpoint_settings(checkpoint)
    if old is None:
        raise GstalkerError(f"--resume: no checkpoint in {checkpoint.parent}; run without --resume to start")
    new = asdict(settings)
    diff = [f"{k} {old.get(k)!r} -> {new[k]!r}" for k in new if old.get(k) != new[k]]
    if diff:
        raise GstalkerError(f"--resume: settings differ from the checkpoint's ({'; '.join(diff)}); "
                            "use the original options or start afresh without --resume")


def _train(workdir: Path, settings, dev: torch.device, resume: bool, progress):
    """Train on the preprocessed `workdir`: (the model, the summary its file carries: held-out
    PSNR beside the mean-frame baseline, times, Gaussian counts)."""
    from .data import PreprocessedVideo
    from .train import CHECKPOINT, Trainer, TrainData, run_training, training_summary

    t0 = time.monotonic()
    try:
        pv = PreprocessedVideo(workdir, "all")
        data = TrainData(pv, dev)
        trainer = Trainer(data, settings, pv.meta["audio_features"], workdir)
        if trainer.lpips.net is None and settings.lpips == "on":
            warnings.warn(f"training without the LPIPS loss: {trainer.lpips.reason}", stacklevel=3)
        if resume:
            trainer.load_checkpoint(workdir / CHECKPOINT)
        stats = run_training(trainer, progress=progress)
        heldout = trainer.evaluate(limit=100 if dev.type == "cpu" else None)
    except torch.OutOfMemoryError:
        raise GstalkerError(f"the GPU ran out of memory at {settings.size}x{settings.size}; try a smaller --size "
                            "(e.g. 384) or --preset smoke") from None
    summary = training_summary(trainer, stats, time.monotonic() - t0, heldout)
    return trainer.model, summary

from .speak import Talker, load  # noqa: E402,F401  (the API's other half; speak.py imports resolve_device lazily)
