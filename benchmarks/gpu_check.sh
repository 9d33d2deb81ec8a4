#!/usr/bin/env bash
# One prepared run for a lent GPU machine (torch + triton there; no av, lpips or mediapipe):
# the kernel tests on CUDA against the torch backends, then the kernel benchmarks. Output goes to
# $OUT (the device tool brings it back) or ./gpu_check_out.
#
#   bash benchmarks/gpu_check.sh            # tests + benchmarks (a few minutes)
#   GSPLAT=1 bash benchmarks/gpu_check.sh   # also build gsplat from a source archive in .whl/ for side-by-side timings
set -uo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-gpu_check_out}"
mkdir -p "$out"
unset TRITON_INTERPRET
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
{
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__, torch.cuda.get_device_name())"
  date -u +%Y-%m-%d
} 2>&1 | tee "$out/device.txt"
if [ "${GSPLAT:-0}" = 1 ] && ls .whl/gsplat-*.tar.gz >/dev/null 2>&1; then
  python3 -m pip install -q --no-deps --no-build-isolation .whl/gsplat-*.tar.gz 2>&1 | tail -3 | tee "$out/gsplat_build.txt"
fi
python3 -m pytest -q -p no:cacheprovider tests/test_rasterize.py tests/test_hashgrid.py 2>&1 | tee "$out/kernel_tests.txt"
python3 benchmarks/rasterize.py 2>&1 | tee "$out/rasterize.md"
python3 benchmarks/hashgrid.py 2>&1 | tee "$out/hashgrid.md"
