"""The `gstalker` command: a thin layer over the Python API.

Every command turns user mistakes into one line on stderr and exit code 2 (`fail`), never a
traceback from deep inside.
"""

from __future__ import annotations

import sys
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


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
