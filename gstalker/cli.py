"""The `gstalker` command: a thin layer over the Python API.

Every command turns user mistakes into one line on stderr and exit code 2 (`fail`), never a
traceback from deep inside.
"""

from __future__ import annotations

import os
import sys
from contextlib import contextmanager
from typing import Optional

import typer

from . import __version__

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Audio-driven talking heads with deformable 3D Gaussians (GSTalker).",
)


class UserError(Exception):
    """A problem with the user's input or environment, reported as one line and exit code 2."""


def fail(message: str) -> None:
    typer.echo(f"gstalker: error: {message}", err=True)
    raise typer.Exit(code=2)


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
    device: str = typer.Option("auto", help="auto, cuda or cpu."),
) -> None:
    """Render a small random Gaussian scene from a few cameras (checks the rasterizer works)."""
    from .demo import render_demo

    try:
        paths = render_demo(out, device=device)
    except (ValueError, UserError) as e:
        fail(str(e))
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
) -> None:
    """Turn a video into frames, masks, head poses, landmarks and audio features (cached in --workdir)."""
    import json
    import warnings

    from .preprocess import PreprocessError
    from .preprocess import preprocess as run_preprocess

    from .preprocess import PreprocessWarning

    def show(message, category, filename, lineno, file=None, line=None):
        if issubclass(category, PreprocessWarning):
            typer.echo(f"gstalker: warning: {message}", err=True)

    with warnings.catch_warnings(), _quiet_native_logs():
        warnings.simplefilter("always", PreprocessWarning)
        warnings.showwarning = show
        try:
            wd = run_preprocess(
                video, workdir, size=size, audio_features=audio_features, start=start, end=end,
                force=force, progress=True,
            )
        except (PreprocessError, UserError) as e:
            fail(str(e))
    meta = json.loads((wd / "meta.json").read_text())
    typer.echo(
        f"{wd}: {meta['num_frames']} frames at {meta['fps']} fps, {meta['size'][0]}x{meta['size'][1]}, "
        f"reprojection error {meta['reprojection_error_px']:.2f} px, features {meta['audio_features']['kind']} "
        f"(see {wd / 'preview.png'})"
    )


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
