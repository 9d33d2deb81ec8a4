"""Backend choice and input checks shared by every kernel family.

Importable with torch alone: triton is optional (no GPU build on macOS, say), and
`HAS_TRITON` says whether the Triton paths can run at all.
"""

from __future__ import annotations

import os

import torch

try:  # triton ships with Linux torch wheels; elsewhere only the torch backends exist
    import triton  # noqa: F401
    import triton.language as tl  # noqa: F401

    HAS_TRITON = True
except ImportError:  # pragma: no cover - exercised only without triton
    HAS_TRITON = False

BACKENDS = ("auto", "triton", "torch")


def interpreting() -> bool:
    """True when Triton kernels run on the CPU under Triton's interpreter."""
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def resolve_backend(backend: str, device: torch.device) -> str:
    """Map "auto" | "triton" | "torch" to the backend that will run on `device`.

    "auto" takes Triton on CUDA tensors and torch elsewhere. "triton" on CPU tensors works
    only under the interpreter (TRITON_INTERPRET=1 set before triton is imported).
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "auto":
        return "triton" if (device.type == "cuda" and HAS_TRITON) else "torch"
    if backend == "triton":
        if not HAS_TRITON:
            raise ValueError("backend='triton' needs the triton package; install it or use backend='torch'")
        if device.type != "cuda" and not interpreting():
            raise ValueError(
                f"backend='triton' got {device.type} tensors: move them to CUDA, or set "
                "TRITON_INTERPRET=1 before importing triton to run the kernels on the CPU"
            )
    return backend


def check_tensor(
    name: str,
    x,
    shape: tuple,
    dtypes: tuple = (torch.float32, torch.float64),
    device: torch.device | None = None,
    finite: bool = True,
) -> None:
    """Raise a one-line ValueError unless `x` is a tensor of `shape` (None = any size) and a dtype in `dtypes`."""
    want = "[" + ", ".join("*" if s is None else str(s) for s in shape) + "]"
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor of shape {want}, got {type(x).__name__}")
    if x.dim() != len(shape) or any(s is not None and s != d for s, d in zip(shape, x.shape)):
        raise ValueError(f"{name} must have shape {want}, got {list(x.shape)}")
    if x.dtype not in dtypes:
        names = " or ".join(str(d).replace("torch.", "") for d in dtypes)
        raise ValueError(f"{name} must be {names}, got {str(x.dtype).replace('torch.', '')}")
    if device is not None and x.device != device:
        raise ValueError(f"{name} is on {x.device} but the other inputs are on {device}: put all inputs on one device")
    if finite and x.is_floating_point() and x.numel() and not bool(torch.isfinite(x).all()):
        raise ValueError(f"{name} holds NaN or infinite values")


class Launch:
    """One kernel launch exactly as the code makes it on a GPU: the kernel's name in its module,
    the constexprs and `num_warps`, and the element types of arguments that are not the
    default (pointers, names ending in `_ptr`, default to `*fp32`; other arguments to `i32`).

    Each kernels module lists its launches in `gpu_launches()` from the same constants its
    launch code reads, so `benchmarks/kernel_resources.py` compiles what a GPU would run.
    """

    def __init__(self, kernel: str, constexprs: dict, num_warps: int, types: dict | None = None, note: str = ""):
        self.kernel, self.constexprs, self.num_warps = kernel, dict(constexprs), int(num_warps)
        self.types, self.note = dict(types or {}), note

    def __repr__(self) -> str:
        return f"Launch({self.kernel}, {self.constexprs}, num_warps={self.num_warps})"
