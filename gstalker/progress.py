"""Progress bars for long work: a bar per stage with rate, elapsed time, ETA and live figures."""

from __future__ import annotations

import sys


class _NullTask:
    def advance(self, n: int = 1, **fields) -> None:
        pass

    def done(self, count: int | None = None) -> None:
        pass


class Progress:
    """`with Progress(enabled) as p: t = p.task("static", total, unit="it"); t.advance(1, loss=0.1)`.

    Bars go to stderr; `enabled=None` shows them only when stderr is a terminal, so logs and
    notebooks that capture output are not flooded. Fields given to `advance` are shown after
    the bar (floats with 4 significant digits).
    """

    def __init__(self, enabled: bool | None = None, unit: str = "it"):
        self.enabled = sys.stderr.isatty() if enabled is None else enabled
        self.unit = unit
        self._p = None

    def __enter__(self):
        if self.enabled:
            from rich.console import Console
            from rich.progress import (BarColumn, MofNCompleteColumn, ProgressColumn, TextColumn,
                                       TimeElapsedColumn, TimeRemainingColumn)
            from rich.progress import Progress as RichProgress
            from rich.text import Text

            class Rate(ProgressColumn):
                def render(self, task):
                    unit = task.fields.get("unit", "it")
                    return Text(f"{task.speed:6.1f} {unit}/s" if task.speed else "", style="cyan")

            self._p = RichProgress(
                TextColumn("{task.description:<16}"), BarColumn(), MofNCompleteColumn(), Rate(),
                TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(), TextColumn("{task.fields[info]}"),
                console=Console(stderr=True),
            )
            self._p.start()
        return self

    def __exit__(self, *exc):
        if self._p is not None:
            self._p.stop()
        return False

    def task(self, name: str, total: int, unit: str | None = None, completed: int = 0):
        """A bar for one stage; `unit` names what `advance` counts (default: the Progress's)."""
        if self._p is None:
            return _NullTask()
        p = self._p
        tid = p.add_task(name, total=total, completed=completed, unit=unit or self.unit, info="")

        class Task:
            def advance(self, n: int = 1, **fields) -> None:
                info = "  ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in fields.items())
                p.update(tid, advance=n, **({"info": info} if fields else {}))

            def done(self, count: int | None = None) -> None:
                """Finish the bar; `count` replaces an estimated total by the real one."""
                n = total if count is None else count
                p.update(tid, total=n, completed=n)

        return Task()
