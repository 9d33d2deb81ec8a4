"""Benchmark `Talker.stream`: speech arrives in real time (20 ms chunks, as from a microphone);
for each frame, the time from the arrival of the chunk that completes the frame's own audio to
the frame being yielded (the end-to-end latency: the fixed look-ahead plus computing), and the
frames per second sustained.

    python benchmarks/stream_latency.py --model subject.safetensors   # a trained model
    python benchmarks/stream_latency.py --quick                       # a 128x128 stand-in, 4 s of speech
    python benchmarks/stream_latency.py --clients 1 4                 # + serve's sessions, 1 and 4 at once (default)

The stream never drops frames, so when rendering is slower than real time the latency grows
with the speech's length (the last row says so); `gstalker serve` drops late frames instead.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import device_name, print_table  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
MEDIA = ROOT.parent / "shared" / "media"


def paced(wave: np.ndarray, chunk: int, arrivals: list):
    """Yield `chunk`-sample pieces of `wave` at the speech's own pace; arrivals[i] = the
    perf_counter time piece i was handed over."""
    t0 = time.perf_counter()
    for i in range(0, len(wave), chunk):
        due = t0 + (i + chunk) / 16000  # a microphone hands a chunk over when it is complete
        delay = due - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        arrivals.append(time.perf_counter())
        yield wave[i:i + chunk]


def measure(talker, wave: np.ndarray, chunk: int = 320):
    """Returns (latencies ms [T], compute ms [T], fps)."""
    from gstalker.streaming import CodeStream

    arrivals: list = []
    lat, comp, times = [], [], []
    for k, _ in enumerate(talker.stream(paced(wave, chunk, arrivals))):
        now = time.perf_counter()
        if talker.model.device.type == "cuda":
            torch.cuda.synchronize()
            now = time.perf_counter()
        own_end = min(640 * (k + 1), len(wave))  # the last sample of frame k's own audio
        lat.append((now - arrivals[(own_end - 1) // chunk]) * 1e3)
        ready = min(CodeStream.ready_sample(k), len(wave))
        comp.append((now - arrivals[(ready - 1) // chunk]) * 1e3)
        times.append(now)
    fps = (len(times) - 1) / (times[-1] - times[0])
    return np.array(lat), np.array(comp), fps


def measure_sessions(talker, wave: np.ndarray, clients: int, delay_ms: float | None = None):
    """`gstalker serve`'s per-client path without the network: `clients` LiveSessions at once,
    each fed the speech in real time (20 ms chunks), rendering and encoding (PNG up to 256 px,
    JPEG above) unless a frame is late, dropping it then. Returns per-client rows:
    (rendered, dropped, frames/s over the speech's duration, median and p95 latency ms)."""
    import asyncio

    from gstalker.serve import CHUNK, LiveSession

    delay_s = ((delay_ms if delay_ms is not None else talker.stream_latency_ms + 240.0)) / 1000

    async def one():
        async def sink(k, latency, image):
            pass

        session = LiveSession(talker, "playback", delay_s, sink)
        renderer = asyncio.create_task(session.run())
        t0 = time.perf_counter()
        for i in range(0, len(wave), CHUNK):
            await asyncio.sleep(max(0.0, t0 + (i + CHUNK) / 16000 - time.perf_counter()))
            session.push(wave[i:i + CHUNK])
        session.finish()
        await renderer
        span = time.perf_counter() - t0
        lat = session.latencies or [float("nan")]
        return session.rendered, session.dropped, session.rendered / span, float(np.median(lat)), float(np.percentile(lat, 95))

    async def all_clients():
        return await asyncio.gather(*[one() for _ in range(clients)])

    return asyncio.run(all_clients())


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=None)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--size", type=int, default=None, help="render at this side (default: the model's)")
    parser.add_argument("--audio", type=Path, default=MEDIA / "retalking_audio1.wav")
    parser.add_argument("--seconds", type=float, default=None)
    parser.add_argument("--chunk-ms", type=float, default=20.0)
    parser.add_argument("--clients", type=int, nargs="*", default=[1, 4],
                        help="also measure serve's sessions (frame dropping) with these numbers of clients")
    args = parser.parse_args()
    import gstalker
    from gstalker.speak import Talker
    from gstalker.audio import load_audio

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if args.model:
        talker = gstalker.load(args.model, size=args.size)
        what = args.model.name
    else:
        from speak import stand_in_model

        size, nh, nt = (128, 3000, 1500) if (args.quick or device.type == "cpu") else (512, 60_000, 20_000)
        model = stand_in_model(args.size or size, nh, nt, device)
        talker = Talker(model, {"audio_features": model.config["audio"]})
        what = f"stand-in {nh // 1000}k+{nt // 1000}k Gaussians"
    seconds = args.seconds or (4.0 if (args.quick or device.type == "cpu") else 20.0)
    wave = load_audio(args.audio)[: int(16000 * seconds)] if args.audio.exists() else \
        (0.1 * np.random.default_rng(0).standard_normal(int(16000 * seconds))).astype(np.float32)
    for _ in talker.stream([wave[:16000]]):  # warm-up: first-call allocations
        pass
    chunk = int(16000 * args.chunk_ms / 1000)
    lat, comp, fps = measure(talker, wave, chunk)
    H, W = talker.size
    n = len(lat)
    rows = [[what, f"{W}x{H}", f"{args.chunk_ms:g} ms", n, f"{talker.stream_latency_ms:.1f}",
             f"{statistics.median(comp):.1f}", f"{statistics.median(lat):.1f}", f"{np.percentile(lat, 95):.1f}",
             f"{lat[: n // 4].mean():.0f} -> {lat[-n // 4:].mean():.0f}", f"{fps:.1f}"]]
    print(f"device: {device_name(device)}, torch {torch.__version__}; {len(wave) / 16000:.1f} s of speech")
    print_table(["model", "size", "chunks", "frames", "look-ahead ms", "compute ms (median)",
                 "latency ms (median)", "latency ms (p95)", "latency first -> last quarter", "frames/s"],
                rows, "Streaming latency (chunk arrival to frame)")
    rows = []
    for n in args.clients:
        res = measure_sessions(talker, wave, n)
        rows.append([what, f"{W}x{H}", n, f"{np.mean([r[2] for r in res]):.1f}", f"{sum(r[2] for r in res):.1f}",
                     f"{np.mean([r[1] / (r[0] + r[1]) for r in res]) * 100:.0f}%",
                     f"{np.median([r[3] for r in res]):.0f}", f"{np.max([r[4] for r in res]):.0f}"])
    if rows:
        print_table(["model", "size", "clients", "frames/s per client", "frames/s all", "dropped",
                     "latency ms (median)", "latency ms (p95, worst client)"], rows,
                    "gstalker serve's sessions (real-time speech, late frames dropped; PNG/JPEG encoding included)")


if __name__ == "__main__":
    main()
