"""The `gstalker` command: a thin layer over the Python API.

Every command turns user mistakes (any `GstalkerError`) into one line on stderr and exit code 2
(`_user_errors`), never a traceback from deep inside.
"""

from __future__ import annotations

import os
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Optional

import typer

from . import __version__

# speak, serve and eval render alike
MOUTH_GAIN_HELP = ("How far the speech moves the mouth, over the model's own (1: as trained; default: the gain fit "
                   "chose, 1.5 for the cpu preset).")

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Audio-driven talking heads with deformable 3D Gaussians (GSTalker).",
)


def fail(message: str) -> None:
    typer.echo(f"gstalker: error: {message}", err=True)
    raise typer.Exit(code=2)


def _av_offset(value: str) -> Optional[float]:
    """--av-offset: "auto" -> None (measure it), else seconds."""
    if value.strip().lower() == "auto":
        return None
    try:
        return float(value)
    except ValueError:
        fail(f"--av-offset must be auto or a number of seconds, got {value!r}")


@contextmanager
def _user_errors():
    """A GstalkerError (every error the user can fix derives from it) -> its one line and exit 2."""
    from .errors import GstalkerError

    try:
        yield
    except GstalkerError as e:
        fail(str(e))


@contextmanager
def _interrupts(kept):
    """Ctrl-C, or a kill (SIGTERM: `timeout`, a job scheduler, a container stopping) -> one line
    saying what was kept (`kept`: the words, or a function giving them at that moment), and exit
    130. A kill arrives as KeyboardInterrupt too, so it unwinds like Ctrl-C: half-written files
    are removed (`serialization.atomic_path`) and `fit` writes its checkpoint, where the default
    SIGTERM would stop the process with neither."""
    import signal

    def terminate(signum, frame):
        raise KeyboardInterrupt

    try:
        previous = signal.signal(signal.SIGTERM, terminate)
    except ValueError:  # not the main thread (the CLI called from a worker): SIGTERM stays as it was
        previous = None
    try:
        yield
    except KeyboardInterrupt:
        typer.echo(f"gstalker: interrupted; {kept() if callable(kept) else kept}", err=True)
        raise typer.Exit(code=130)
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _kept_in(workdir: Path, training: bool = False) -> str:
    """What an interrupted preprocess or fit leaves in `workdir`, and how to go on from it (a
    workdir that run created is removed again, so it may hold nothing)."""
    from .train import CHECKPOINT

    if training and (workdir / CHECKPOINT).exists():
        return f"the checkpoint is in {workdir}. Continue with the same command plus --resume"
    if workdir.is_dir():
        return f"finished preprocessing stages are kept in {workdir}; the same command continues"
    return "nothing written"


def _version(value: bool) -> None:
    if value:
        typer.echo(f"gstalker {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: Optional[bool] = typer.Option(
        None, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """Learn a talking person from one video, then make them say anything."""


@app.command()
def demo(
    out: str = typer.Option("demo_renders", "--out", "-o", help="Folder for the PNG files."),
    size: int = typer.Option(256, "--size", help="Image side, pixels."),
    views: int = typer.Option(4, "--views", help="Number of cameras."),
    device: str = typer.Option("auto", help="auto, cuda or cpu."),
) -> None:
    """Render a small random Gaussian scene from a few cameras (checks the rasterizer works)."""
    from .demo import render_demo

    with _user_errors():
        paths = render_demo(out, size=size, views=views, device=device)
    for p in paths:
        typer.echo(p)


@contextmanager
def _quiet_native_logs():
    """Send what native libraries (MediaPipe/TFLite/absl) write straight to file descriptor 2 to
    /dev/null, while Python's sys.stderr (progress bars, warnings, errors) keeps the terminal."""
    try:
        sys.stderr.flush()
        fd = sys.stderr.fileno()
    except (AttributeError, ValueError, OSError):  # not a real file (e.g. a test runner's buffer)
        yield
        return
    saved = os.dup(fd)
    old_stderr = sys.stderr
    sys.stderr = os.fdopen(os.dup(saved), "w", buffering=1, encoding=getattr(old_stderr, "encoding", None) or "utf-8")
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), fd)
        yield
    finally:
        try:
            sys.stderr.flush()
        finally:
            sys.stderr.close()
            sys.stderr = old_stderr
            os.dup2(saved, fd)
            os.close(saved)


@app.command()
def preprocess(
    video: str = typer.Argument(..., help="The talking-head video (3-5 minutes of one person speaking)."),
    workdir: str = typer.Option(..., "--workdir", "-w", help="Folder for the cached training set."),
    size: int = typer.Option(512, "--size", help="Side of the square processed frames, pixels."),
    audio_features: str = typer.Option(
        "mel", "--audio-features", help="mel (offline), hubert or wav2vec2 (pretrained, via transformers)."
    ),
    start: Optional[float] = typer.Option(None, "--start", help="Use the video from this time on (seconds)."),
    end: Optional[float] = typer.Option(None, "--end", help="Use the video up to this time (seconds)."),
    force: bool = typer.Option(False, "--force", help="Redo every stage, even finished ones."),
    av_offset: str = typer.Option("auto", "--av-offset", help="Seconds the video's sound runs behind its picture (negative: ahead); auto measures it from the lip motion, 0 keeps the audio as recorded."),
) -> None:
    """Turn a video into frames, masks, head poses, landmarks and audio features (cached in --workdir)."""
    import json

    from .preprocess import preprocess as run_preprocess

    with _user_warnings(), _quiet_native_logs(), _user_errors(), _interrupts(lambda: _kept_in(Path(workdir))):
        wd = run_preprocess(
            video, workdir, size=size, audio_features=audio_features, start=start, end=end,
            force=force, progress=True, av_offset=_av_offset(av_offset),
        )
    meta = json.loads((wd / "meta.json").read_text())
    typer.echo(
        f"{wd}: {meta['num_frames']} frames at {meta['fps']} fps, {meta['size'][0]}x{meta['size'][1]}, "
        f"reprojection error {meta['reprojection_error_px']:.2f} px, features {meta['audio_features']['kind']}, "
        f"audio moved {meta['av_offset']['offset_s'] * 1000:.0f} ms earlier ({meta['av_offset']['source']}) "
        f"(see {wd / 'preview.png'})"
    )


@contextmanager
def _user_warnings():
    """Show warnings as one line each ("gstalker: warning: ..."), not with a source location."""
    import warnings

    def show(message, category, filename, lineno, file=None, line=None):
        if issubclass(category, UserWarning):
            typer.echo(f"gstalker: warning: {message}", err=True)

    with warnings.catch_warnings():
        warnings.simplefilter("always", UserWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.showwarning = show
        yield


@app.command()
def fit(
    video: str = typer.Argument(..., help="The talking-head video (3-5 minutes of one person speaking)."),
    out: Optional[str] = typer.Option(None, "--out", "-o", help="Model file (default: the video's name with .safetensors)."),
    workdir: Optional[str] = typer.Option(None, "--workdir", "-w", help="Cache, checkpoint and previews (default: VIDEO.gstalker/ beside the video)."),
    preset: Optional[str] = typer.Option(None, "--preset", help="smoke (minutes on a CPU, a try-out), cpu (about an hour on 2 cores for a 90 s clip), fast (about 15 min on a GPU) or paper. Default: fast on a CUDA GPU, cpu elsewhere."),
    iters: Optional[int] = typer.Option(None, "--iters", help="Total iterations of both stages (overrides the preset)."),
    size: Optional[int] = typer.Option(None, "--size", help="Side of the square frames, pixels (overrides the preset)."),
    audio_features: str = typer.Option("mel", "--audio-features", help="mel (offline), hubert or wav2vec2."),
    device: str = typer.Option("auto", "--device", help="auto, cuda or cpu."),
    resume: bool = typer.Option(False, "--resume", help="Continue from the workdir's checkpoint."),
    seed: int = typer.Option(0, "--seed", help="Random seed."),
    lpips: str = typer.Option("on", "--lpips", help="off, on (when its weights are available) or require."),
    start: Optional[float] = typer.Option(None, "--start", help="Use the video from this time on (seconds)."),
    end: Optional[float] = typer.Option(None, "--end", help="Use the video up to this time (seconds)."),
    av_offset: str = typer.Option("auto", "--av-offset", help="Seconds the video's sound runs behind its picture (negative: ahead); auto measures it from the lip motion, 0 keeps the audio as recorded."),
) -> None:
    """Preprocess a video and train a model of the person in it: one .safetensors file."""
    from .api import fit as run_fit

    wd = Path(workdir) if workdir else Path(video).with_name(Path(video).stem + ".gstalker")
    with _user_warnings(), _quiet_native_logs(), _user_errors(), _interrupts(lambda: _kept_in(wd, training=True)):
        path = run_fit(video, out, preset=preset, workdir=workdir, iters=iters, size=size,
                       audio_features=audio_features, device=device, resume=resume, seed=seed, lpips=lpips,
                       start=start, end=end, progress=True, av_offset=_av_offset(av_offset))
    from .serialization import load_file

    summary = load_file(path)[1]["summary"]
    typer.echo(f"{path}: {summary['iterations']} iterations in {summary['train_seconds'] / 60:.1f} min, "
               f"held-out PSNR {summary['heldout_psnr']:.2f} dB (mean-frame baseline {summary['baseline_psnr']:.2f} dB)")


@app.command()
def speak(
    model: str = typer.Argument(..., help="A model file written by `gstalker fit`."),
    audio: str = typer.Argument(..., help="Speech: any audio file (wav, mp3, m4a, flac) or a video's audio track."),
    out: str = typer.Option(..., "--out", "-o", help="The mp4 to write (replaced if it exists)."),
    device: str = typer.Option("auto", "--device", help="auto, cuda or cpu."),
    poses: str = typer.Option("playback", "--poses", help="playback (training poses back and forth) or still."),
    size: Optional[int] = typer.Option(None, "--size", help="Side of the output frames, pixels (default: the training size)."),
    crf: int = typer.Option(18, "--crf", help="H.264 quality: lower is better and larger (0-51)."),
    mouth_gain: Optional[float] = typer.Option(None, "--mouth-gain", help=MOUTH_GAIN_HELP),
) -> None:
    """Make the model's person say AUDIO: a lip-synced mp4 with the audio muxed in."""
    from .speak import load

    if not 0 <= crf <= 51:
        fail(f"--crf must be between 0 and 51, got {crf}")
    with _user_warnings(), _user_errors(), _interrupts("nothing written"):
        talker = load(model, device=device, size=size, mouth_gain=mouth_gain)
        path = talker.speak(audio, out=out, poses=poses, crf=crf, progress=True)
    typer.echo(f"{path}: rendered at {talker.last_render_fps:.1f} frames/s (encoding excluded)")


@app.command()
def serve(
    model: str = typer.Argument(..., help="A model file written by `gstalker fit` (mel features)."),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on (0.0.0.0: every interface; think twice)."),
    port: int = typer.Option(7860, "--port", help="TCP port."),
    device: str = typer.Option("auto", "--device", help="auto, cuda or cpu."),
    size: Optional[int] = typer.Option(None, "--size", help="Side of the frames, pixels (default: the training size)."),
    max_seconds: float = typer.Option(600.0, "--max-seconds", help="Longest speech a client may send (seconds)."),
    max_mb: float = typer.Option(50.0, "--max-mb", help="Largest upload (MB)."),
    max_clients: int = typer.Option(8, "--max-clients", help="Streams at once; more are told to wait."),
    delay_ms: Optional[float] = typer.Option(None, "--delay-ms", help="Playback delay on the page (default: the look-ahead + 240 ms to render); frames later than it are dropped."),
    mouth_gain: Optional[float] = typer.Option(None, "--mouth-gain", help=MOUTH_GAIN_HELP),
) -> None:
    """Serve a page where the model's person says a speech file or your microphone, live."""
    if not 0 < port < 65536:
        fail(f"--port must be between 1 and 65535, got {port}")
    with _user_warnings(), _user_errors():
        from .serve import serve as run_serve

        # a busy or forbidden port is a GstalkerError too (serve tries to bind it first)
        run_serve(model, host=host, port=port, device=device, size=size, max_seconds=max_seconds, max_mb=max_mb,
                  max_clients=max_clients, delay_ms=delay_ms, mouth_gain=mouth_gain)


@app.command(name="eval")
def eval_(
    model: str = typer.Argument(..., help="A model file written by `gstalker fit`."),
    workdir: str = typer.Option(..., "--workdir", "-w", help="The preprocessing workdir the model was fitted from."),
    out: Optional[str] = typer.Option(None, "--out", "-o", help="The JSON report (default: MODEL with .eval.json, or .cross.eval.json with --audio, beside it). The mouth figure goes beside it as REPORT_STEM.mouth.png."),
    audio: Optional[str] = typer.Option(None, "--audio", help="Cross-driven: make the model say this speech (any audio file) and score its lip sync against the speech's loudness, beside the training video's own figures; a video of someone talking also scores the rendered mouth against theirs (speaker_corr)."),
    video: Optional[str] = typer.Option(None, "--video", help="Also write this mp4: real | rendered | difference (x4) side by side with the tail's audio, or with --audio the rendered frames with the speech."),
    device: str = typer.Option("auto", "--device", help="auto, cuda or cpu."),
    max_frames: Optional[int] = typer.Option(None, "--max-frames", help="Score only the first N held-out frames, or N frames of the speech (default: all)."),
    mouth_gain: Optional[float] = typer.Option(None, "--mouth-gain", help=MOUTH_GAIN_HELP),
) -> None:
    """Score MODEL. Self-driven (default): on its video's held-out tail, PSNR, SSIM, LPIPS, LMD,
    lip-motion correlation, render speed and lip sync (av_sync, av_lag, mouth_motion,
    silence_motion, mouth_jitter) beside baselines. Cross-driven (--audio): lip sync with that speech beside the
    training video's own (and against the speaker's own mouth when the speech is a video). Prints a table, writes JSON and a mouth-opening plot (PNG)."""
    from .evaluate import evaluate, format_table, mouth_plot_path

    if out is None:
        out = str(Path(model).with_suffix(".cross.eval.json" if audio else ".eval.json"))
    plot = mouth_plot_path(out)
    with _user_warnings(), _quiet_native_logs(), _user_errors(), _interrupts("nothing written"):
        report = evaluate(model, workdir, out=out, video=video, device=device, max_frames=max_frames,
                          progress=True, audio=audio, plot=plot, mouth_gain=mouth_gain)
    typer.echo(format_table(report))
    typer.echo(f"\nreport: {out}\nmouth plot: {plot}" + (f"\nvideo: {video}" if video else ""))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
