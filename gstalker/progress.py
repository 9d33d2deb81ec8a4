"""Progress bars for long work: a bar per stage with rate, elapsed time, ETA and live figures."""

from __future__ import annotations

import sys
import time


class _NullTask:
    def advance(self, n: int = 1, **fields) -> None:
        pass

    def done(self, count: int | None = None) -> None:
        pass


def _clock(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def _fields(fields: dict) -> str:
    return "  ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in fields.items())


class _LogTask:
    """One stage as plain lines, for stderr that is not a terminal (a log file, CI, `nohup`): a
    bar redrawn in place leaves a log nothing to read until the stage ends, and then one line
    squeezed to 80 columns. A line at most every `every` seconds and one at the end, each with
    the count, rate, elapsed time, ETA and the live figures."""

    def __init__(self, name: str, total: int, unit: str, completed: int, every: float):
        self.name, self.total, self.unit, self.every = name, total, unit, every
        self.n = self.start_n = completed
        self.start = self.last = time.monotonic()
        self.info = ""
        self.finished = False
        self.printed = None  # the count on the last line out

    def _line(self, now: float) -> None:
        elapsed = now - self.start
        done = self.n - self.start_n
        rate = done / elapsed if elapsed > 0 and done > 0 else None
        eta = _clock((self.total - self.n) / rate) if rate else "-"
        speed = f"{rate:.1f} {self.unit}/s" if rate else f"- {self.unit}/s"
        self.printed = self.n
        print(f"{self.name}: {self.n}/{self.total}  {speed}  elapsed {_clock(elapsed)}  eta {eta}  {self.info}".rstrip(),
              file=sys.stderr, flush=True)

    def advance(self, n: int = 1, **fields) -> None:
        self.n += n
        if fields:
            self.info = _fields(fields)
        now = time.monotonic()
        if self.n >= self.total and not self.finished:
            self.finished = True
            self._line(now)
        elif now - self.last >= self.every and not self.finished:
            self.last = now
            self._line(now)

    def done(self, count: int | None = None) -> None:
        n = self.total if count is None else count
        if self.finished and self.printed == n:  # its end line is out already
            return
        self.n = self.total = n
        self.finished = True
        self._line(time.monotonic())


class Progress:
    """`with Progress(enabled) as p: t = p.task("static", total, unit="it"); t.advance(1, loss=0.1)`.

    Bars go to stderr; `enabled=None` shows them only when stderr is a terminal, so logs and
    notebooks that capture output are not flooded. Fields given to `advance` are shown after
    the bar (floats with 4 significant digits). Enabled on a stderr that is neither a terminal
    nor a notebook (a log file), each stage prints a plain line every `log_every` seconds and
    one when it ends.
    """

    def __init__(self, enabled: bool | None = None, unit: str = "it", log_every: float = 30.0):
        self.enabled = sys.stderr.isatty() if enabled is None else enabled
        self.unit = unit
        self.log_every = log_every
        self._p = None
        self._log = False
        self._log_tasks: list[_LogTask] = []

    def __enter__(self):
        if self.enabled:
            from rich.console import Console

            console = Console(stderr=True)
            if not (console.is_terminal or console.is_jupyter):
                self._log = True
                return self
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
                console=console,
            )
            self._p.start()
        return self

    def __exit__(self, *exc):
        if self._p is not None:
            self._p.stop()
        for task in self._log_tasks:  # where the bar's last state would stay on screen
            if not task.finished:
                task._line(time.monotonic())
        return False

    def task(self, name: str, total: int, unit: str | None = None, completed: int = 0):
        """A bar for one stage; `unit` names what `advance` counts (default: the Progress's)."""
        if self._log:
            self._log_tasks.append(_LogTask(name, total, unit or self.unit, completed, self.log_every))
            return self._log_tasks[-1]
        if self._p is None:
            return _NullTask()
        p = self._p
        tid = p.add_task(name, total=total, completed=completed, unit=unit or self.unit, info="")

        class Task:
            def advance(self, n: int = 1, **fields) -> None:
                info = _fields(fields)
                p.update(tid, advance=n, **({"info": info} if fields else {}))

            def done(self, count: int | None = None) -> None:
                """Finish the bar; `count` replaces an estimated total by the real one."""
                n = total if count is None else count
                p.update(tid, total=n, completed=n)

        return Task()
