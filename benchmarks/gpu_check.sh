#!/usr/bin/env bash
# The one prepared run for a lent GPU machine (torch, triton, pytest, OpenCV and nvcc there; no
# internet, no av, lpips or mediapipe). Fits in 9.5 minutes; every stage is bounded by `timeout`,
# writes its file under $OUT as it goes (8 files, no folders), and a failed stage prints FAIL, the
# run goes on, and the script exits 1 at the end.
#
#   bash benchmarks/gpu_check.sh        # device: run(command=..., carry=[".whl", ".gpu"])
#
# Carried beside the working tree (both git-ignored, e.g. in .git/info/exclude):
#   .whl/  gsplat's source archive (`bash benchmarks/fetch_gpu_deps.sh`; with --all also pytest
#          and the rest, for a machine without them): installed into /tmp/site, no index, no deps.
#   .gpu/interview_512/  the interview clip preprocessed at 512 px here and packed
#          (`python benchmarks/pack_workdir.py pack interview_97s.gstalker .gpu/interview_512`);
#          unpacked there in the background while the kernels are checked, then trained on.
#   .gpu/*.wav  speeches (16-bit mono 16 kHz, e.g. musetalk_eng.wav) that benchmarks/field_mouth.py
#          drives the fitted model with (its lip gap's amplitude and flicker; into fit.txt).
# GPU_FIT_ARGS: more options for the fit (e.g. "--iters 4745 --set mouth_shape_weight=0.3").
# gsplat is JIT-compiled with nvcc in the background (one arch, MAX_JOBS=10) while our kernels
# are checked; its build time goes into device.txt.
#
# Order (most needed first, as the budget may run out): the kernel tests on CUDA (our kernels
# against the torch backends), the fast preset trained on the interview clip for what the budget
# leaves (benchmarks/gpu_fit.py), the per-stage timings beside gsplat, then registers and spills.
#
# $OUT files: device.txt (card, versions, date, stage times, gsplat build, PASS/FAIL at the end),
# tests.txt, fit.txt (the fit's log and table), fit.safetensors (its model; .xz when over 15 MiB),
# fit_preview.png, fit_loss.png, stages.md (per-stage ms beside gsplat, A/B tables, hash grid, FPS),
# resources.md (registers/spills of every kernel, compiled for this card and loaded).
set -uo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-gpu_check_out}"
mkdir -p "$out"
unset TRITON_INTERPRET
t0=$(date +%s)
budget=${GPU_CHECK_SECONDS:-565}
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
  if ! python3 -m pip install -q --no-index --no-deps --no-compile --target "$site" "${wheels[@]}" 2>/tmp/wheels.txt; then
    # no pip here: a wheel is a zip archive
    python3 -c "import sys, zipfile; [zipfile.ZipFile(w).extractall(sys.argv[1]) for w in sys.argv[2:]]" "$site" "${wheels[@]}"
  fi
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
  || fails+=("setup: pytest not importable (carry .whl from fetch_gpu_deps.sh --all)")

# ---- the packed 512 px clip, unpacked in the background
clip=/tmp/interview_512.gstalker
up_pid=""
if [ -d .gpu/interview_512 ]; then
  ( s=$(date +%s); timeout 200 python3 benchmarks/pack_workdir.py unpack .gpu/interview_512 "$clip"; rc=$?
    echo "unpack: rc=$rc in $(( $(date +%s) - s ))s"; exit $rc ) > /tmp/unpack.txt 2>&1 &
  up_pid=$!
fi
arch=$(python3 -c "import torch; print('%d.%d' % torch.cuda.get_device_capability())" 2>/dev/null)
sm=${arch/./}

# ---- gsplat JIT build, in the background while our kernels are checked
gs_pid=""
if [ -n "$gdir" ]; then
  (
    export TORCH_CUDA_ARCH_LIST="$arch" MAX_JOBS=10 TORCH_EXTENSIONS_DIR=/tmp/torch_ext
    s=$(date +%s)
    timeout 330 python3 -c "
import gsplat.cuda._backend as b
assert b._C is not None, 'gsplat CUDA extension did not build (nvcc? ninja?)'
print('gsplat', __import__('gsplat').__version__, 'built for sm_$sm')"
    rc=$?
    echo "gsplat build: rc=$rc in $(( $(date +%s) - s ))s (TORCH_CUDA_ARCH_LIST=$arch, MAX_JOBS=10, -O3)"
    exit $rc
  ) > /tmp/gsplat_build.txt 2>&1 &
  gs_pid=$!
else
  echo "gsplat: no source archive in .whl/" > /tmp/gsplat_build.txt
  fails+=("gsplat: no source archive in .whl/")
fi

# ---- our kernels against the torch backends, on CUDA
stage "kernel tests on CUDA" 120 "$out/tests.txt" \
  python3 -m pytest -q -p no:cacheprovider -rs tests/test_rasterize.py tests/test_hashgrid.py \
    tests/test_train.py::test_trainer_step_synchronises_once_per_rasterize -k "not fits_image"

# ---- the fast preset on the interview clip, for what the budget leaves
if [ -n "$up_pid" ] && wait "$up_pid"; then
  cat /tmp/unpack.txt | tail -2 | tee -a "$out/device.txt"
  fit_s=$(( $(left 280) - 60 )); [ "$fit_s" -lt 60 ] && fit_s=60
  stage "fast preset on the interview clip, ${fit_s}s of training" $((fit_s + 60)) "$out/fit.txt" \
    python3 benchmarks/gpu_fit.py "$clip" --preset fast --seconds "$fit_s" --out /tmp/fit.safetensors ${GPU_FIT_ARGS:-}
  if [ -f /tmp/fit.safetensors ]; then
    if [ "$(stat -c %s /tmp/fit.safetensors)" -gt 15728640 ]; then xz -T0 -6 -c /tmp/fit.safetensors > "$out/fit.safetensors.xz"
    else cp /tmp/fit.safetensors "$out/fit.safetensors"; fi
  fi
  if [ -f /tmp/fit.safetensors ]; then  # the field's lip gap and its flicker, no rendering (into fit.txt)
    speech=(); for w in .gpu/*.wav; do [ -f "$w" ] && speech+=("$w"); done
    timeout 60 python3 benchmarks/field_mouth.py /tmp/fit.safetensors "$clip" ${speech[@]:+--audio "${speech[@]}"} \
      >> "$out/fit.txt" 2>&1 || echo "field_mouth failed" >> "$out/fit.txt"
  fi
  last=$(ls "$clip"/previews/*.png 2>/dev/null | tail -1)
  [ -n "$last" ] && cp "$last" "$out/fit_preview.png"
  [ -f "$clip/loss_curve.png" ] && cp "$clip/loss_curve.png" "$out/fit_loss.png"
else
  cat /tmp/unpack.txt 2>/dev/null | tail -5
  fails+=("fit: no unpacked clip (carry .gpu; see unpack above)")
fi

# ---- gsplat must be built before the timings
if [ -n "$gs_pid" ]; then
  if wait "$gs_pid"; then echo "gsplat built" | tee -a "$out/device.txt"
  else fails+=("gsplat build (see device.txt)"); echo "FAIL gsplat build"; fi
fi
tail -3 /tmp/gsplat_build.txt >> "$out/device.txt"
export TORCH_EXTENSIONS_DIR=/tmp/torch_ext TORCH_CUDA_ARCH_LIST="$arch"
mkdir -p /tmp/stages
stage "stage timings, A/B of sorts and blend shapes, hash grid, render fps" 110 /tmp/stages/log.txt \
  python3 benchmarks/gpu_stages.py --out /tmp/stages
for f in stages ab hashgrid fps; do
  [ -f /tmp/stages/$f.md ] && { cat /tmp/stages/$f.md; printf '\n'; } >> "$out/stages.md"
done
grep -E "FAIL|Error" /tmp/stages/log.txt | tail -20 >> "$out/stages.md"

stage "kernel resources (sm_$sm, loaded)" 60 "$out/resources.md" \
  python3 benchmarks/kernel_resources.py --sm "$sm" --loaded --check

echo "total $(( $(date +%s) - t0 ))s" | tee -a "$out/device.txt"
if [ ${#fails[@]} -gt 0 ]; then
  printf 'FAIL %s\n' "${fails[@]}" | tee -a "$out/device.txt"
  exit 1
fi
echo "PASS all stages" | tee -a "$out/device.txt"
