#!/usr/bin/env bash
# Download, on a machine with internet, what benchmarks/gpu_check.sh installs on the GPU machine
# (Python 3.12, x86_64, no internet) into DEST (default .whl/ at the repository root; keep it out
# of git, e.g. with `/.whl/` in .git/info/exclude): gsplat's source archive (4.7 MB). The lent
# H200 image already has torch, triton, nvcc, pytest, ninja, numpy, jaxtyping and rich; --all also
# fetches those pure-Python wheels (about 23 MB), for a machine without them.
#
#   bash benchmarks/fetch_gpu_deps.sh [--all] [DEST]
set -euo pipefail
cd "$(dirname "$0")/.."
all=0
[ "${1:-}" = "--all" ] && { all=1; shift; }
dest="${1:-.whl}"
mkdir -p "$dest"
py="${PYTHON:-python3}"
wheels=(
  pytest==8.4.2 iniconfig==2.1.0 pluggy==1.6.0 packaging==25.0 pygments==2.19.2  # the kernel tests
  ninja==1.13.0 jaxtyping==0.3.2 wadler-lindig==0.1.7 rich==14.1.0 markdown-it-py==4.0.0 mdurl==0.1.2
  typing-extensions==4.15.0 numpy==2.3.3                                         # gsplat's run-time deps
)
[ "$all" = 1 ] && "$py" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  -d "$dest" "${wheels[@]}"
# gsplat ships no wheel for this torch on PyPI: its source archive, JIT-compiled on the device
"$py" -m pip download -q --no-deps --no-binary=:all: --no-build-isolation -d "$dest" gsplat==1.5.3 2>/dev/null \
  || "$py" -m pip download -q --no-deps --no-binary=:all: -d "$dest" gsplat==1.5.3
ls -l "$dest"
du -sh "$dest"
