"""Compile Triton kernels to a CUDA cubin without a GPU (Triton's bundled ptxas), in a fresh
interpreter-free subprocess: the interpreter accepts things the GPU compiler rejects."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

_SCRIPT = r"""
import importlib, json, os, sys
os.environ.pop("TRITON_INTERPRET", None)
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

spec = json.loads(sys.argv[2])
module = importlib.import_module(spec["module"])
for name, kernel_spec in spec["kernels"].items():
    kernel = getattr(module, name)
    names = kernel.arg_names
    consts = {n: v for n, v in kernel_spec.get("constexprs", {}).items() if n in names}
    ptr_types = kernel_spec.get("pointers", {})
    sig = {n: "constexpr" if n in consts else ptr_types.get(n, "*fp32") if n.endswith("_ptr") else "i32" for n in names}
    src = ASTSource(fn=kernel, signature=sig, constexprs={(names.index(n),): v for n, v in consts.items()})
    compiled = triton.compile(src, target=GPUTarget("cuda", int(sys.argv[1]), 32))
    assert len(compiled.asm["cubin"]) > 0, name
    print("compiled", name)
"""


def compile_for_gpu(module: str, kernels: dict, tmp_path: Path, sm: int = 80) -> str:
    """kernels: {kernel name: {"constexprs": {...}, "pointers": {arg: "*i32", ...}}}; pointer
    arguments (names ending in _ptr) default to *fp32, other arguments to i32. Returns stdout."""
    try:
        import triton.backends.nvidia  # noqa: F401
    except ImportError:
        pytest.skip("triton has no NVIDIA backend here")
    env = dict(os.environ, TRITON_CACHE_DIR=str(tmp_path))
    env.pop("TRITON_INTERPRET", None)
    root = Path(__file__).resolve().parents[1]
    proc = subprocess.run([sys.executable, "-c", _SCRIPT, str(sm), json.dumps({"module": module, "kernels": kernels})],
                          cwd=root, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout
