#!/usr/bin/env bash
# The one prepared run for a lent GPU machine (torch, triton and nvcc there; no internet, no av,
# lpips or mediapipe). Fits in 8 minutes; every stage is bounded by `timeout`, writes its file
# under $OUT as it goes (8 files, no folders), and a failed stage prints FAIL, the run goes on,
# and the script exits 1 at the end.
#
#   bash benchmarks/gpu_check.sh
#
# Needs, carried beside the working tree (both git-ignored, e.g. in .git/info/exclude):
#   .whl/  from `bash benchmarks/fetch_gpu_deps.sh`: pytest and its deps, gsplat's source archive
#          and its pure-Python deps (about 23 MB). Installed into /tmp/site, no index, no deps.
# gsplat is JIT-compiled with nvcc in the background (one arch, MAX_JOBS=14) while our kernels
# are checked; its build time goes to gsplat_build.txt.
#
# $OUT files: device.txt (card, driver, versions, date, and the PASS/FAIL summary at the end),
# resources.md (registers/spills of every kernel, compiled for this card and loaded), tests.txt
# (kernel tests on CUDA), gsplat_build.txt, stages.md (per-stage ms beside gsplat, then the A/B
# tables: binning rank vs merge sort, blending per program shape), hashgrid.md,
# fps.md, stages_log.txt (the benchmark's own output).
set -uo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-gpu_check_out}"
mkdir -p "$out"
unset TRITON_INTERPRET
t0=$(date +%s)
budget=${GPU_CHECK_SECONDS:-510}
fails=()
left() { local l=$((budget - ($(date +%s) - t0))); [ "$l" -lt 10 ] && l=10; [ "$1" -lt "$l" ] && l=$1; echo "$l"; }
stage() {  # stage NAME MAX_SECONDS FILE CMD...: run bounded, tee to FILE, record a failure
  local name=$1 max=$2 file=$3; shift 3
  local s; s=$(left "$max")
  echo "== $name (at most ${s}s)" | tee -a "$out/device.txt"
  local t=$(date +%s)
  timeout "$s" "$@" > >(tee "$file") 2>&1
  local rc=$?
  echo "== $name: rc=$rc in $(( $(date +%s) - t ))s" | tee -a "$out/device.txt"
  [ "$rc" -eq 0 ] || { fails+=("$name (rc=$rc)"); echo "FAIL $name (rc=$rc)"; }
}

# ---- setup: wheels into /tmp/site, gsplat's sources into /tmp/gsplat-src
site=/tmp/site
mkdir -p "$site" /tmp/gsplat-src
if ls .whl/*.whl >/dev/null 2>&1; then
  wheels=()
  for w in .whl/*.whl; do  # the machine's own numpy (torch's) wins when it has one
    case "$(basename "$w")" in numpy-*) python3 -c "import numpy" 2>/dev/null && continue ;; esac
    wheels+=("$w")
  done
  if ! python3 -m pip install -q --no-index --no-deps --no-compile --target "$site" "${wheels[@]}" 2>"$out/stages_log.txt"; then
    # no pip here: a wheel is a zip archive
    python3 -c "import sys, zipfile; [zipfile.ZipFile(w).extractall(sys.argv[1]) for w in sys.argv[2:]]" "$site" "${wheels[@]}"
  fi
else
  fails+=("setup: no .whl/ folder (run benchmarks/fetch_gpu_deps.sh and carry .whl)")
fi
gsrc=$(ls .whl/gsplat-*.tar.gz 2>/dev/null | head -1)
[ -n "$gsrc" ] && tar xzf "$gsrc" -C /tmp/gsplat-src
gdir=$(ls -d /tmp/gsplat-src/gsplat-* 2>/dev/null | head -1)
export PYTHONPATH="$PWD:$site${gdir:+:$gdir}${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
export PATH="$site/bin:$PATH"
chmod +x "$site"/bin/* "$site"/ninja/data/bin/* 2>/dev/null
[ -x "$site/bin/ninja" ] || ln -sf "$site/ninja/data/bin/ninja" "$site/bin/ninja" 2>/dev/null

{
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv,noheader
  python3 -c "import sys, torch, triton; print('python', sys.version.split()[0], '| torch', torch.__version__, 'cuda', torch.version.cuda, '| triton', triton.__version__, '|', torch.cuda.get_device_name())"
  nvcc --version 2>&1 | tail -1
  date -u +"%Y-%m-%d %H:%M UTC"
  echo "command: bash benchmarks/gpu_check.sh"
} 2>&1 | tee "$out/device.txt"
python3 -c "import pytest; print('pytest', pytest.__version__)" 2>&1 | tee -a "$out/device.txt" \
  || fails+=("setup: pytest not importable (is .whl/ carried?)")
arch=$(python3 -c "import torch; print('%d.%d' % torch.cuda.get_device_capability())" 2>/dev/null)
sm=${arch/./}

# ---- gsplat JIT build, in the background while our kernels are checked
gs_pid=""
if [ -n "$gdir" ]; then
  (
    export TORCH_CUDA_ARCH_LIST="$arch" MAX_JOBS=14 TORCH_EXTENSIONS_DIR=/tmp/torch_ext
    s=$(date +%s)
    timeout 330 python3 -c "
import gsplat.cuda._backend as b
assert b._C is not None, 'gsplat CUDA extension did not build (nvcc? ninja?)'
print('gsplat', __import__('gsplat').__version__, 'built for sm_$sm')"
    rc=$?
    echo "gsplat build: rc=$rc in $(( $(date +%s) - s ))s (TORCH_CUDA_ARCH_LIST=$arch, MAX_JOBS=14, -O3)"
    exit $rc
  ) > "$out/gsplat_build.txt" 2>&1 &
  gs_pid=$!
else
  echo "gsplat: no source archive in .whl/" > "$out/gsplat_build.txt"
  fails+=("gsplat: no source archive in .whl/")
fi

# ---- our kernels: resources on this card, then the kernel tests on CUDA
stage "kernel resources (sm_$sm, loaded)" 150 "$out/resources.md" \
  python3 benchmarks/kernel_resources.py --sm "$sm" --loaded --check
stage "kernel tests on CUDA" 200 "$out/tests.txt" \
  python3 -m pytest -q -p no:cacheprovider -rs tests/test_rasterize.py tests/test_hashgrid.py \
    tests/test_train.py::test_trainer_step_synchronises_once_per_rasterize -k "not fits_image"

# ---- gsplat must be built before the timings
if [ -n "$gs_pid" ]; then
  if wait "$gs_pid"; then echo "gsplat built" | tee -a "$out/device.txt"
  else fails+=("gsplat build (see gsplat_build.txt)"); echo "FAIL gsplat build"; cat "$out/gsplat_build.txt" | tail -20; fi
fi
export TORCH_EXTENSIONS_DIR=/tmp/torch_ext TORCH_CUDA_ARCH_LIST="$arch"
stage "stage timings, A/B of sorts and blend shapes, hash grid, render fps" 270 "$out/stages_log.txt" \
  python3 benchmarks/gpu_stages.py --out "$out"
[ -f "$out/ab.md" ] && { printf '\n' >> "$out/stages.md"; cat "$out/ab.md" >> "$out/stages.md"; rm -f "$out/ab.md"; }  # 8 files

stage "Trainer steps at 512 px" 60 /tmp/train_speed.md \
  python3 benchmarks/train_speed.py --size 512 --steps 50
cat /tmp/train_speed.md >> "$out/fps.md"  # (8 files come back at most)

echo "total $(( $(date +%s) - t0 ))s" | tee -a "$out/device.txt"
if [ ${#fails[@]} -gt 0 ]; then
  printf 'FAIL %s\n' "${fails[@]}" | tee -a "$out/device.txt"
  exit 1
fi
echo "PASS all stages" | tee -a "$out/device.txt"
