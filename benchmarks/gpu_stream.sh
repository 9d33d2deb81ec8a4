#!/usr/bin/env bash
# Streaming figures on a lent GPU machine (no internet, no av there): Talker.stream's latency and
# gstalker serve's sessions with 1 and 4 clients, a 512x512 stand-in (60k + 20k Gaussians) and
# 10 s of noise as speech (timing does not depend on the words). Pillow (serve's PNG/JPEG
# encoding) comes from .gpu_serve/*.whl, carried untracked:
#   pip download pillow --only-binary=:all: --python-version 3.12 --platform manylinux_2_28_x86_64 --no-deps -d .gpu_serve
set -uo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-gpu_stream_out}"
mkdir -p "$out" /tmp/site
unset TRITON_INTERPRET
python3 -c "import PIL" 2>/dev/null || python3 -c "import sys, zipfile; [zipfile.ZipFile(w).extractall('/tmp/site') for w in sys.argv[1:]]" .gpu_serve/*.whl
export PYTHONPATH="$PWD:/tmp/site${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader; python3 -c "import torch, sys; print('python', sys.version.split()[0], 'torch', torch.__version__)"; date -u; } | tee "$out/device.txt"
timeout 300 python3 benchmarks/stream_latency.py --seconds 10 --clients 1 4 2>&1 | tee "$out/stream_512.md"
timeout 120 python3 benchmarks/stream_latency.py --seconds 10 --size 128 --clients 1 4 2>&1 | tee "$out/stream_128.md"
