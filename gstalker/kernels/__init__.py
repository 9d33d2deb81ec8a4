"""Triton kernels with their autograd wrappers and plain-torch reference backends.

Importable with torch and triton alone (no av, lpips or mediapipe), so the kernels can be
checked and benchmarked on a bare GPU machine.
"""

from ._backend import HAS_TRITON, resolve_backend
from .hashgrid import TriPlaneEncoder, hashgrid2d
from .rasterize import rasterize

__all__ = ["HAS_TRITON", "TriPlaneEncoder", "hashgrid2d", "rasterize", "resolve_backend"]
