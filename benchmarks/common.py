"""Timing and table helpers shared by the benchmark scripts."""

from __future__ import annotations

import os
import statistics
import time

# as `import gstalker` does, before torch loads OpenMP: spinning threads stall on shared cores
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402


def use_interpreter_without_gpu() -> None:
    """Run Triton kernels under the interpreter on a CPU-only machine; call before importing triton."""
    if not torch.cuda.is_available():
        os.environ.setdefault("TRITON_INTERPRET", "1")


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU ({os.cpu_count()} cores)"


def time_ms(fn, device: torch.device, repeats: int = 10, warmup: int = 2) -> float:
    """Median wall time of `fn()` in milliseconds (CUDA events on a GPU)."""
    for _ in range(warmup):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            torch.cuda.synchronize()
            times.append(start.elapsed_time(end))
        else:
            t0 = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def peak_memory_mb(fn, device: torch.device):
    """Peak GPU memory allocated while `fn()` runs, in MB; None on a CPU."""
    if device.type != "cuda":
        fn()
        return None
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats(device)
    base = torch.cuda.memory_allocated(device)
    fn()
    torch.cuda.synchronize()
    return (torch.cuda.max_memory_allocated(device) - base) / 2**20


def print_table(header: list[str], rows: list[list], title: str = "") -> None:
    """A Markdown table, ready to paste into docs/benchmarks.md."""
    cells = [[str(c) for c in header]] + [["-" if c is None else (f"{c:.3f}" if isinstance(c, float) else str(c)) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    if title:
        print(f"\n{title}\n")
    for k, r in enumerate(cells):
        print("| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |")
        if k == 0:
            print("|" + "|".join("-" * (w + 2) for w in widths) + "|")


def timing_settings(settings):
    """A copy of FitSettings for timing Trainer.step: both stages endless, no densification,
    previews or opacity resets (the Gaussian count stays what it started at)."""
    from dataclasses import replace

    s = replace(settings, static_iters=10 ** 6, deform_iters=10 ** 6, schedule=dict(settings.schedule))
    s.schedule.update(densify_every=0, preview_every=0, opacity_reset_every=0)
    return s


def stage_step_ms(trainer, steps: int, warmup: int = 10) -> tuple[float, float]:
    """ms per `trainer.step()` in the static and in the deformation stage (the step count set to
    each stage's start): `warmup` untimed steps (compilation, frames cached), then `steps` timed."""
    sync = torch.cuda.synchronize if trainer.data.device.type == "cuda" else (lambda: None)
    out = []
    for first in (0, trainer.settings.static_iters):
        trainer.step_count = first
        for _ in range(warmup):
            trainer.step()
        sync()
        t0 = time.perf_counter()
        for _ in range(steps):
            trainer.step()
        sync()
        out.append((time.perf_counter() - t0) / steps * 1000)
    return out[0], out[1]
