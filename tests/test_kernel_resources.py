"""Every Triton kernel, compiled for sm_86 (RTX 3090, the target card) at the configuration its
launch code uses on CUDA, neither spills nor sits at the 255-register cap. Runs
benchmarks/kernel_resources.py in a fresh interpreter-free subprocess with Triton's bundled
ptxas: no GPU needed (the interpreter accepts things the GPU compiler rejects, too)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
KERNELS = {
    "_project_fwd_kernel", "_project_bwd_kernel", "_tile_count_kernel", "_tile_scan_kernel", "_tile_scatter_kernel",
    "_tile_rank_sort_kernel", "_block_sort_kernel", "_merge_kernel", "_blend_fwd_kernel", "_blend_bwd_kernel",
    "_hashgrid_fwd_kernel", "_hashgrid_bwd_kernel",
}


@pytest.mark.slow  # compiles every kernel launch for sm_86 in a subprocess
def test_no_kernel_spills_or_hits_the_register_cap_on_sm86(tmp_path):
    pytest.importorskip("triton.backends.nvidia", reason="triton has no NVIDIA backend here")
    env = dict(os.environ, TRITON_CACHE_DIR=str(tmp_path / "cache"))
    env.pop("TRITON_INTERPRET", None)
    out = tmp_path / "resources.json"
    proc = subprocess.run([sys.executable, "benchmarks/kernel_resources.py", "--sm", "86", "--check", "--json", str(out)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    rows = json.loads(out.read_text())
    assert {r["kernel"] for r in rows} == KERNELS
    for r in rows:
        assert r["spill_stores"] == 0 and r["spill_loads"] == 0 and r["registers"] < 255, r
