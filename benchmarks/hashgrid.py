"""Benchmark the tri-plane hash-grid encoder: Triton kernels vs the plain-torch backend.

    python benchmarks/hashgrid.py            # CUDA: 1M points x 3 planes x 14 levels (F=1, T=2^14)
    python benchmarks/hashgrid.py --quick    # CPU: small sizes, Triton under its interpreter (~1 min)

Prints one row per backend and pass: milliseconds (median of the repeats) and effective GB/s,
counting only the compulsory traffic (positions in, features out, the tables once; for the
backward also the incoming feature gradient, the position gradient out and the table gradient).
Table reads that hit the cache and the atomic adds are not counted, so GB/s is a lower bound on
what the memory system did. tiny-cuda-nn is not compared: it has no wheel and needs a CUDA build.
Target (issue 4): forward+backward of 1M points under 1 ms on an RTX 3090-class GPU.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import torch

if not torch.cuda.is_available():  # the Triton kernels can only run interpreted on a CPU
    os.environ.setdefault("TRITON_INTERPRET", "1")

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from common import time_ms  # noqa: E402
from gstalker.kernels import HAS_TRITON, TriPlaneEncoder  # noqa: E402


def bench(backend: str, points: int, device, repeats: int, warmup: int, levels: int, log2_t: int):
    torch.manual_seed(0)
    enc = TriPlaneEncoder(n_levels=levels, log2_table_size=log2_t).to(device)
    with torch.no_grad():
        enc.tables.normal_()
    pos = (torch.rand(points, 3, device=device) * 2 - 1).requires_grad_(True)
    grad_out = torch.randn(points, enc.out_dim, device=device)

    def fwd():
        with torch.no_grad():
            enc(pos, backend)

    def fwd_bwd():
        enc.tables.grad = None
        pos.grad = None
        enc(pos, backend).backward(grad_out)

    table_bytes = enc.tables.numel() * 4
    feat_bytes = points * enc.out_dim * 4
    pos_bytes = points * 3 * 4
    fwd_bytes = pos_bytes + feat_bytes + table_bytes
    bwd_bytes = fwd_bytes + feat_bytes + 2 * pos_bytes + 2 * table_bytes
    rows = []
    for name, fn, nbytes in (("forward", fwd, fwd_bytes), ("forward+backward", fwd_bwd, bwd_bytes)):
        ms = time_ms(fn, device, repeats, warmup)
        rows.append((backend, name, points, ms, nbytes / (ms * 1e-3) / 1e9))
    return rows


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="small sizes (the CPU / interpreter run)")
    ap.add_argument("--points", type=int, default=None, help="points (default 1M, or 20k with --quick)")
    ap.add_argument("--repeats", type=int, default=None)
    ap.add_argument("--levels", type=int, default=14)
    ap.add_argument("--log2-table-size", type=int, default=14)
    ap.add_argument("--backends", default="triton,torch")
    args = ap.parse_args(argv)

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type == "cpu" and not args.quick and args.points is None:
        print("no CUDA device: the Triton kernels would run interpreted; use --quick on a CPU", file=sys.stderr)
        return 2
    points = args.points or (20_000 if args.quick else 1_000_000)
    repeats = args.repeats or (3 if args.quick else 50)
    warmup = 1 if args.quick else 10
    backends = [b for b in args.backends.split(",") if b]
    if "triton" in backends and not HAS_TRITON:
        backends.remove("triton")

    name = torch.cuda.get_device_name() if device.type == "cuda" else "CPU"
    mode = " (Triton interpreted)" if os.environ.get("TRITON_INTERPRET") == "1" else ""
    print(f"tri-plane hash grid: {points:,} points x 3 planes x {args.levels} levels, F=1, "
          f"T=2^{args.log2_table_size}; {name}{mode}; torch {torch.__version__}")
    print(f"{'backend':<8} {'pass':<17} {'points':>10} {'ms':>10} {'GB/s':>8}")
    for backend in backends:
        for b, pas, n, ms, gbs in bench(backend, points, device, repeats, warmup, args.levels, args.log2_table_size):
            print(f"{b:<8} {pas:<17} {n:>10,} {ms:>10.3f} {gbs:>8.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
