"""Render a small random Gaussian scene from a few cameras to PNG files.

    python examples/render_demo.py [--out demo_renders] [--size 256] [--views 4]

Runs in seconds on a CPU (torch backend); on a CUDA GPU the Triton kernels render it.
"""

import argparse

from gstalker.demo import render_demo

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="demo_renders")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--views", type=int, default=4)
    parser.add_argument("--device", default="auto", choices=["auto", "cuda", "cpu"])
    args = parser.parse_args()
    for path in render_demo(args.out, size=args.size, views=args.views, device=args.device):
        print(path)
