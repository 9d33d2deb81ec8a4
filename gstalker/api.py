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
) -> Path:
    """Preprocess `video`, train both stages and write one self-contained model file.

    out: the model path (default: the video's name with `.safetensors`, beside it).
    workdir: preprocessing cache, checkpoint, previews and loss curve (default: `<video stem>.gstalker/`
    beside the video). preset: "smoke" | "cpu" | "fast" | "paper", default `fast` on a CUDA GPU and
    `cpu` elsewhere; `iters` (both stages, split in the preset's ratio) and `size` override it. lpips: "off" | "on" (used when its weights are
    available) | "require". start/end: trim the video (seconds). Returns the model path.

    Ctrl-C writes a checkpoint and raises KeyboardInterrupt; `resume=True` continues from it.
    """
    from .data import PreprocessedVideo
    from .preprocess import preprocess
    from .metrics import Lpips, mean_frame_psnr
    from .train import CHECKPOINT, FitSettings, Trainer, TrainData, checkpoint_settings, default_preset, run_training

    video = Path(video)
    if lpips not in ("off", "on", "require"):
        raise GstalkerError(f"--lpips must be off, on or require, got {lpips!r}")
    dev = resolve_device(device)
    if preset is None:
        preset = default_preset(dev)
        if progress is not False:
            print(f"gstalker: preset {preset} ({'a CUDA GPU' if dev.type == 'cuda' else 'no CUDA GPU'}; "
                  "--preset chooses another)", file=sys.stderr)
    if lpips == "require":  # before hours of preprocessing and training, not after
        Lpips("cpu", "require", download=True)
    settings = FitSettings.from_preset(preset, iters=iters, size=size, audio_features=audio_features,
                                       seed=seed, lpips=lpips)
    out = Path(out) if out is not None else video.with_suffix(".safetensors")
    if out.is_dir():
        raise GstalkerError(f"output {out} is a directory; give a file name such as {out / (video.stem + '.safetensors')}")
    check_writable(out.parent if str(out.parent) else Path("."), "output")
    workdir = Path(workdir) if workdir is not None else video.with_name(video.stem + ".gstalker")
    ckpt = workdir / CHECKPOINT
    if resume:
        old = checkpoint_settings(ckpt)
        if old is None:
            raise GstalkerError(f"--resume: no checkpoint in {workdir}; run without --resume to start")
        from dataclasses import asdict

        new = asdict(settings)
        diff = [f"{k} {old.get(k)!r} -> {new[k]!r}" for k in new if old.get(k) != new[k]]
        if diff:
            raise GstalkerError(f"--resume: settings differ from the checkpoint's ({'; '.join(diff)}); "
                                "use the original options or start afresh without --resume")
    if dev.type == "cpu" and preset in ("fast", "paper"):
        warnings.warn(f"--preset {preset} on the CPU (torch backends) runs for days; use a CUDA GPU, or --preset cpu",
                      stacklevel=2)

    workdir = preprocess(video, workdir, size=settings.size, audio_features=audio_features, start=start, end=end,
                         progress=progress)
    t0 = time.monotonic()
    try:
        pv = PreprocessedVideo(workdir, "all")
        data = TrainData(pv, dev)
        trainer = Trainer(data, settings, pv.meta["audio_features"], workdir)
        if trainer.lpips.net is None and lpips == "on":
            warnings.warn(f"training without the LPIPS loss: {trainer.lpips.reason}", stacklevel=2)
        if resume:
            trainer.load_checkpoint(ckpt)
        stats = run_training(trainer, progress=progress)
        summary = trainer.evaluate(limit=100 if dev.type == "cpu" else None)
    except torch.OutOfMemoryError:
        raise GstalkerError(f"the GPU ran out of memory at {settings.size}x{settings.size}; try a smaller --size "
                            "(e.g. 384) or --preset smoke") from None
    summary = {
        "preset": settings.preset,
        "iterations": trainer.step_count,
        "train_seconds": round(stats["train_seconds"], 1),
        "stages": stats["stages"],
        "total_seconds": round(time.monotonic() - t0, 1),
        "heldout_psnr": round(summary["psnr"], 3),
        "heldout_frames": summary["frames"],
        "baseline_psnr": round(mean_frame_psnr(lambda i: data.frame(i)[0], data.train_ids, data.val_ids), 3),
        "device": str(dev),
        "gaussians": {"head": len(trainer.model.gaussians.head), "torso": len(trainer.model.gaussians.torso)},
    }
    trainer.model.save(out, summary)
    return out


from .speak import Talker, load  # noqa: E402,F401  (the API's other half; speak.py imports resolve_device lazily)
