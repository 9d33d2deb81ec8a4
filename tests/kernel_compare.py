"""Comparisons of kernel outputs with the torch backend: exact-ish under Triton's interpreter,
tolerant of fast math on a GPU without hiding a real mismatch.

Compiled Triton uses approximate exp, division and square root and fuses multiply-adds, so on
CUDA a value that sits on a threshold (the 1/255 skip, the 1e-4 stop, the ceil of a radius, a
tile-hit test) can fall the other way for a few pixels or Gaussians. A real bug moves far more
than that: images are compared by the share of values off by more than 1e-4 (at most 0.1 %)
and the largest error, gradients by relative norm, intersection lists as per-tile sets.
Under the interpreter (numpy, round-to-nearest everywhere) the comparisons stay exact.
"""

from __future__ import annotations

import torch

from gstalker.kernels._backend import interpreting

ON_GPU = torch.cuda.is_available() and not interpreting()
OFF_SHARE = 1e-3  # share of values allowed off by more than OFF_ATOL on a GPU
OFF_ATOL = 1e-4
IMAGE_MAX_ERR = 0.02  # one Gaussian's tail (alpha < ~0.011 at 3 sigma) at a flipped threshold
GRAD_REL_NORM = 1e-3


def assert_images_match(got: torch.Tensor, want: torch.Tensor, atol: float = 1e-5, rtol: float = 1e-5, what: str = "image"):
    got, want = got.detach(), want.detach()
    if not ON_GPU:
        torch.testing.assert_close(got, want, atol=atol, rtol=rtol, msg=lambda m: f"{what}: {m}")
        return
    diff = (got.float() - want.float()).abs()
    share = float((diff > OFF_ATOL).float().mean())
    assert share <= OFF_SHARE, f"{what}: {share:.3%} of values differ by more than {OFF_ATOL} (max {float(diff.max()):.2e})"
    assert float(diff.max()) <= IMAGE_MAX_ERR, f"{what}: largest difference {float(diff.max()):.3e}"


def assert_grads_match(got: torch.Tensor, want: torch.Tensor, what: str = "gradient"):
    """Interpreter: max error within 1e-4 of the largest entry (+1e-5); GPU: relative norm."""
    if not ON_GPU:
        scale = want.abs().max()
        assert (got - want).abs().max() <= 1e-4 * scale + 1e-5, f"{what} differs"
        return
    rel = float((got - want).norm() / want.norm().clamp_min(1e-30))
    assert rel <= GRAD_REL_NORM, f"{what}: relative error {rel:.2e} (norm)"


def assert_radii_match(got: torch.Tensor, want: torch.Tensor):
    if not ON_GPU:
        assert torch.equal(got, want)
        return
    off = got != want
    assert float(off.float().mean()) <= OFF_SHARE, f"{int(off.sum())} of {got.numel()} radii differ"
    assert int((got.long() - want.long()).abs().max()) <= 1, "a radius differs by more than one pixel"


def assert_tile_lists_match(ids_got, ranges_got, ids_want, ranges_want, depths=None):
    """Interpreter: identical lists and ranges. GPU: each tile's list as a set, the (tile, id)
    pairs in one and not the other at most 0.1 % of the intersections; each list front to back."""
    if not ON_GPU:
        assert torch.equal(ranges_got, ranges_want)
        assert torch.equal(ids_got, ids_want)
        return
    assert ranges_got.shape == ranges_want.shape
    differ = 0
    total = max(1, int((ranges_want[:, 1] - ranges_want[:, 0]).sum()))
    ids_got, ids_want = ids_got.cpu(), ids_want.cpu()
    for (s, e), (s2, e2) in zip(ranges_got.tolist(), ranges_want.tolist()):
        a, b = set(ids_got[s:e].tolist()), set(ids_want[s2:e2].tolist())
        differ += len(a ^ b)
        if depths is not None and e - s > 1:
            d = depths.detach().cpu()[ids_got[s:e].long()]
            assert bool((d[1:] >= d[:-1]).all()), "a tile's list is not front to back"
    assert differ <= OFF_SHARE * total + 1, f"{differ} (tile, Gaussian) pairs differ of {total}"
