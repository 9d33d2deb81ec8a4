"""Multi-resolution 2D hash-grid encoding (instant-ngp) and the tri-plane encoder built on it.

Grid convention, shared by both backends (they agree to float32 rounding):

- Level ``l`` has resolution ``res = resolutions[l]`` cells per side, so ``res + 1`` vertices
  per side. A coordinate ``c`` in [0, 1] maps to ``pos = c * res``; the cell is
  ``i0 = clamp(floor(pos), 0, res - 1)`` and the weight ``w = pos - i0`` (so ``c = 1`` lands in
  the last cell with ``w = 1``; corner indices never leave ``[0, res]``).
- Vertex ``(x, y)`` of a level is stored at table row ``x + y * (res + 1)`` when
  ``(res + 1)**2 <= T`` (dense level), otherwise at the spatial hash
  ``((x * 1) XOR (y * 2654435761 mod 2**32)) mod T`` (hashed level; instant-ngp's primes).
- The output ``[M, L*F]`` is level-major: column ``l * F + f``, the bilinear interpolation of
  the four corner features of level ``l``.
- Coordinates are clamped to [0, 1] first; the coordinate gradient is zero strictly outside
  and passed through on the closed interval, exact 0 and 1 included. The coordinate gradient inside a
  cell is the derivative of the bilinear patch (one-sided on cell borders, using the cell above).

The Triton path is one forward kernel and one backward kernel that scatters into the table
gradient with atomic adds and writes the coordinate gradient; ``_HashGridFunction`` glues
them. Both kernels take ``P`` planes at once (a table ``[P, L, T, F]`` and, per plane, which two
columns of ``coords [M, D]`` it reads), so ``TriPlaneEncoder`` costs one launch each way.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.autograd.function import once_differentiable

from ._backend import HAS_TRITON, check_tensor, interpreting, resolve_backend

if HAS_TRITON:
    import triton
    import triton.language as tl

HASH_PRIME = 2654435761  # instant-ngp / tiny-cuda-nn's second prime (the first is 1)

__all__ = ["hashgrid2d", "TriPlaneEncoder", "level_resolutions", "TRIPLANE_AXES"]

# (x, y), (y, z), (x, z): the column pairs of a position that each plane of the tri-plane reads.
TRIPLANE_AXES = ((0, 1), (1, 2), (0, 2))


def level_resolutions(n_levels: int = 14, base: int = 64, finest: int = 512) -> list[int]:
    """Resolutions growing geometrically from `base` to `finest` (both included), rounded."""
    if n_levels < 1 or base < 1 or finest < base:
        raise ValueError(f"need n_levels >= 1 and 1 <= base <= finest, got {n_levels}, {base}, {finest}")
    if n_levels == 1:
        return [int(base)]
    growth = math.exp((math.log(finest) - math.log(base)) / (n_levels - 1))
    return [int(round(base * growth**level)) for level in range(n_levels)]


# ----------------------------------------------------------------------------- torch reference


def _torch_planes(coords: torch.Tensor, table: torch.Tensor, resolutions, axes) -> torch.Tensor:
    """Plain-torch reference: coords [M, D], table [P, L, T, F] -> [M, P*L*F] (differentiable).

    All levels of a plane are gathered at once ([M, L] index tensors), so the Python overhead is
    per plane, not per level: this is also the CPU training path.
    """
    M = coords.shape[0]
    P, L, T, F = table.shape
    dev = coords.device
    # clamp to [0, 1], passing the gradient on the closed interval (torch.clamp zeroes it at the
    # bounds themselves, which would freeze points sitting exactly on the box's faces)
    inside = (coords >= 0.0) & (coords <= 1.0)
    c = torch.where(inside, coords, coords.detach().clamp(0.0, 1.0))
    res_f = torch.tensor(resolutions, dtype=coords.dtype, device=dev)  # [L]
    res_i = torch.tensor(resolutions, dtype=torch.long, device=dev)
    dense = (res_i + 1) ** 2 <= T
    level_base = torch.arange(L, device=dev) * T  # row offset of each level in the flat table

    def rows(x, y):
        hashed = (x ^ ((y * HASH_PRIME) & 0xFFFFFFFF)) % T
        return torch.where(dense, x + y * (res_i + 1), hashed) + level_base

    outs = []
    for p, (ax, ay) in enumerate(axes):
        px = c[:, ax, None] * res_f  # [M, L]
        py = c[:, ay, None] * res_f
        with torch.no_grad():
            x0 = torch.minimum(torch.floor(px).clamp_min(0), res_f - 1)
            y0 = torch.minimum(torch.floor(py).clamp_min(0), res_f - 1)
        wx, wy = (px - x0)[..., None], (py - y0)[..., None]  # [M, L, 1]
        xi, yi = x0.long(), y0.long()
        flat = table[p].reshape(L * T, F)
        f00, f10 = flat[rows(xi, yi)], flat[rows(xi + 1, yi)]  # [M, L, F]
        f01, f11 = flat[rows(xi, yi + 1)], flat[rows(xi + 1, yi + 1)]
        val = (f00 * (1 - wx) + f10 * wx) * (1 - wy) + (f01 * (1 - wx) + f11 * wx) * wy
        outs.append(val.reshape(M, L * F))
    if not outs:
        return coords.new_zeros(M, 0)
    return torch.cat(outs, dim=1)


# ----------------------------------------------------------------------------- Triton kernels

if HAS_TRITON:

    @triton.jit
    def _corner_rows(x0, y0, res, dense, T: tl.constexpr):
        """Table rows of the 4 corners (00, 10, 01, 11) of cells (x0, y0), int32 each."""
        x1 = x0 + 1
        y1 = y0 + 1
        side = res + 1
        xu0 = x0.to(tl.uint32)
        xu1 = x1.to(tl.uint32)
        hy0 = y0.to(tl.uint32) * 2654435761  # wraps mod 2**32 like tiny-cuda-nn's uint32 hash
        hy1 = y1.to(tl.uint32) * 2654435761
        r00 = tl.where(dense, x0 + y0 * side, ((xu0 ^ hy0) % T).to(tl.int32))
        r10 = tl.where(dense, x1 + y0 * side, ((xu1 ^ hy0) % T).to(tl.int32))
        r01 = tl.where(dense, x0 + y1 * side, ((xu0 ^ hy1) % T).to(tl.int32))
        r11 = tl.where(dense, x1 + y1 * side, ((xu1 ^ hy1) % T).to(tl.int32))
        return r00, r10, r01, r11

    @triton.jit
    def _block_coords(coords_ptr, axes_ptr, plane, offs_m, M, stride_m, stride_d):
        """The plane's two raw coordinates of a block of points and the clamped ones, [BLOCK_M] each."""
        mask_m = offs_m < M
        ax = tl.load(axes_ptr + 2 * plane)
        ay = tl.load(axes_ptr + 2 * plane + 1)
        row_ptr = coords_ptr + offs_m * stride_m
        cx_raw = tl.load(row_ptr + ax * stride_d, mask=mask_m, other=0.0)
        cy_raw = tl.load(row_ptr + ay * stride_d, mask=mask_m, other=0.0)
        cx = tl.minimum(tl.maximum(cx_raw, 0.0), 1.0)
        cy = tl.minimum(tl.maximum(cy_raw, 0.0), 1.0)
        return cx_raw, cy_raw, cx, cy, mask_m

    @triton.jit
    def _level_cell(cx, cy, res_ptr, level, T: tl.constexpr):
        """One level: cell weights and the 4 corner rows of each point (the level is the same
        for every lane, so its resolution and dense/hashed choice are scalars)."""
        res = tl.load(res_ptr + level)
        resf = res.to(tl.float32)
        px = cx * resf
        py = cy * resf
        x0 = tl.minimum(tl.maximum(tl.floor(px), 0.0), resf - 1.0)
        y0 = tl.minimum(tl.maximum(tl.floor(py), 0.0), resf - 1.0)
        dense = (res + 1) * (res + 1) <= T  # res < 2**15: no overflow
        r00, r10, r01, r11 = _corner_rows(x0.to(tl.int32), y0.to(tl.int32), res, dense, T)
        return px - x0, py - y0, resf, r00, r10, r01, r11

    @triton.jit
    def _program_block(L, BLOCK_M: tl.constexpr, ONE_LEVEL: tl.constexpr, WIDE: tl.constexpr):
        """(plane, first level, end level, point offsets [BLOCK_M]) of this program: grid axis 0
        is the block of points, axis 1 the plane (all levels in a loop) or, with ONE_LEVEL,
        plane * L + level (tiny-cuda-nn's level-on-the-grid). WIDE: some address passes
        2**31 - 1 (decided on the host), so the offsets are int64."""
        pid = tl.program_id(1)
        if ONE_LEVEL:
            plane = pid // L
            l0 = pid % L
            l1 = l0 + 1
        else:
            plane = pid
            l0 = 0
            l1 = L
        offs_m = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
        if WIDE:
            offs_m = offs_m.to(tl.int64)
        return plane, l0, l1, offs_m

    @triton.jit
    def _plane_level(plane, L, level, WIDE: tl.constexpr):
        """Index of (plane, level) in the table's first two axes (int64 when WIDE)."""
        pl = plane * L + level
        if WIDE:
            pl = pl.to(tl.int64)
        return pl

    @triton.jit
    def _corner_features(tab, r00, r10, r01, r11, f, mask, F: tl.constexpr):
        """Feature f of the 4 corners (00, 10, 01, 11) from one level's table `tab` [T, F]."""
        f00 = tl.load(tab + r00 * F + f, mask=mask, other=0.0)
        f10 = tl.load(tab + r10 * F + f, mask=mask, other=0.0)
        f01 = tl.load(tab + r01 * F + f, mask=mask, other=0.0)
        f11 = tl.load(tab + r11 * F + f, mask=mask, other=0.0)
        return f00, f10, f01, f11

    @triton.jit
    def _hashgrid_fwd_kernel(
        coords_ptr, axes_ptr, res_ptr, table_ptr, out_ptr,
        M, stride_m, stride_d, L,
        T: tl.constexpr, F: tl.constexpr, P: tl.constexpr,
        BLOCK_M: tl.constexpr, ONE_LEVEL: tl.constexpr, WIDE: tl.constexpr,
    ):
        """out [M, P*L*F] = bilinear corner features; table [P, L, T, F] contiguous."""
        plane, l0, l1, offs_m = _program_block(L, BLOCK_M, ONE_LEVEL, WIDE)
        cx_raw, cy_raw, cx, cy, mask = _block_coords(coords_ptr, axes_ptr, plane, offs_m, M, stride_m, stride_d)
        out_row = out_ptr + offs_m * (P * L * F)
        for level in range(l0, l1):
            wx, wy, resf, r00, r10, r01, r11 = _level_cell(cx, cy, res_ptr, level, T)
            pl = _plane_level(plane, L, level, WIDE)
            tab = table_ptr + pl * (T * F)
            for f in tl.static_range(F):
                f00, f10, f01, f11 = _corner_features(tab, r00, r10, r01, r11, f, mask, F)
                val = (f00 * (1.0 - wx) + f10 * wx) * (1.0 - wy) + (f01 * (1.0 - wx) + f11 * wx) * wy
                tl.store(out_row + pl * F + f, val, mask=mask)

    @triton.jit
    def _hashgrid_bwd_kernel(
        coords_ptr, axes_ptr, res_ptr, table_ptr, gout_ptr, gtable_ptr, gcoords_ptr,
        M, stride_m, stride_d, L,
        T: tl.constexpr, F: tl.constexpr, P: tl.constexpr,
        NEED_TABLE: tl.constexpr, NEED_COORDS: tl.constexpr,
        BLOCK_M: tl.constexpr, ONE_LEVEL: tl.constexpr, WIDE: tl.constexpr,
    ):
        """Table gradient by relaxed atomic adds; coordinate gradient per plane into gcoords
        [P, M, 2] (stored, or added atomically when each program holds one level)."""
        plane, l0, l1, offs_m = _program_block(L, BLOCK_M, ONE_LEVEL, WIDE)
        cx_raw, cy_raw, cx, cy, mask = _block_coords(coords_ptr, axes_ptr, plane, offs_m, M, stride_m, stride_d)
        gout_row = gout_ptr + offs_m * (P * L * F)
        gx = tl.zeros([BLOCK_M], dtype=tl.float32)
        gy = tl.zeros([BLOCK_M], dtype=tl.float32)
        for level in range(l0, l1):
            wx, wy, resf, r00, r10, r01, r11 = _level_cell(cx, cy, res_ptr, level, T)
            pl = _plane_level(plane, L, level, WIDE)
            tab = table_ptr + pl * (T * F)
            gtab = gtable_ptr + pl * (T * F)
            dx = tl.zeros([BLOCK_M], dtype=tl.float32)
            dy = tl.zeros([BLOCK_M], dtype=tl.float32)
            for f in tl.static_range(F):
                g = tl.load(gout_row + pl * F + f, mask=mask, other=0.0)
                if NEED_TABLE:
                    # relaxed: the adds need atomicity only, no ordering against other memory
                    tl.atomic_add(gtab + r00 * F + f, g * (1.0 - wx) * (1.0 - wy), mask=mask, sem="relaxed")
                    tl.atomic_add(gtab + r10 * F + f, g * wx * (1.0 - wy), mask=mask, sem="relaxed")
                    tl.atomic_add(gtab + r01 * F + f, g * (1.0 - wx) * wy, mask=mask, sem="relaxed")
                    tl.atomic_add(gtab + r11 * F + f, g * wx * wy, mask=mask, sem="relaxed")
                if NEED_COORDS:
                    f00, f10, f01, f11 = _corner_features(tab, r00, r10, r01, r11, f, mask, F)
                    dx += g * ((f10 - f00) * (1.0 - wy) + (f11 - f01) * wy)
                    dy += g * ((f01 - f00) * (1.0 - wx) + (f11 - f10) * wx)
            # d pos / d c = res on this level
            gx += dx * resf
            gy += dy * resf
        if NEED_COORDS:
            # clamping passes the gradient only on [0, 1]
            gx = tl.where((cx_raw >= 0.0) & (cx_raw <= 1.0), gx, 0.0)
            gy = tl.where((cy_raw >= 0.0) & (cy_raw <= 1.0), gy, 0.0)
            gptr = gcoords_ptr + (plane * M + offs_m) * 2
            if ONE_LEVEL:
                tl.atomic_add(gptr, gx, mask=mask, sem="relaxed")
                tl.atomic_add(gptr + 1, gy, mask=mask, sem="relaxed")
            else:
                tl.store(gptr, gx, mask=mask)
                tl.store(gptr + 1, gy, mask=mask)


# Launch shape on CUDA, in one place (the launch code and benchmarks/kernel_resources.py read it).
# A program takes HASHGRID_BLOCK_M points of one plane and walks the levels in a loop, one level
# at a time: every lane of a step reads (and atomically adds into) the same level's table, the
# block's coordinates are read once, and a row's L*F outputs are written within a few
# microseconds of each other, so L2 merges them into whole sectors. HASHGRID_ONE_LEVEL puts the
# level on the grid's second axis instead (tiny-cuda-nn's shape); with this output layout
# ([M, P*L*F], row-major) it re-reads each block's coordinates L times and scatters a row's
# writes over the whole run, and adds the coordinate gradient atomically. Both are kept so the
# GPU check can time them side by side (benchmarks/hashgrid.py --layout).
HASHGRID_BLOCK_M = 256
HASHGRID_WARPS = 4
HASHGRID_ONE_LEVEL = False
_INTERPRETER_BLOCK_M = 1024  # the interpreter runs programs one after another: fewer, bigger ones


def _wide(M: int, D: int, P: int, L: int, T: int, F: int) -> bool:
    """Whether some element offset may pass 2**31 - 1 (then the kernels index in int64)."""
    return max(P * L * T * F, M * P * L * F, P * M * 2, M * D) >= 2**31 - 1


def _launch(M: int, P: int, L: int, one_level: bool | None):
    one = HASHGRID_ONE_LEVEL if one_level is None else one_level
    block_m = _INTERPRETER_BLOCK_M if interpreting() else HASHGRID_BLOCK_M
    return block_m, one, (triton.cdiv(M, block_m), P * L if one else P)


def gpu_launches():
    """The hash-grid launches as made on CUDA for TriPlaneEncoder's defaults (see `_backend.Launch`)."""
    from ._backend import Launch

    types = {"axes_ptr": "*i32", "res_ptr": "*i32"}
    consts = {"T": 2**14, "F": 1, "P": 3, "BLOCK_M": HASHGRID_BLOCK_M, "ONE_LEVEL": HASHGRID_ONE_LEVEL, "WIDE": False}
    bwd = {**consts, "NEED_TABLE": True, "NEED_COORDS": True}
    launches = [Launch("_hashgrid_fwd_kernel", consts, HASHGRID_WARPS, types),
                Launch("_hashgrid_bwd_kernel", bwd, HASHGRID_WARPS, types)]
    other = {"ONE_LEVEL": not HASHGRID_ONE_LEVEL}
    launches += [Launch("_hashgrid_fwd_kernel", {**consts, **other}, HASHGRID_WARPS, types, "alternative layout"),
                 Launch("_hashgrid_bwd_kernel", {**bwd, **other}, HASHGRID_WARPS, types, "alternative layout")]
    return launches


class _HashGridFunction(torch.autograd.Function):
    """Triton forward/backward of the P-plane hash grid. Inputs already checked and contiguous."""

    @staticmethod
    def forward(ctx, coords, table, res_t, axes_t, axes, one_level=None):
        M, D = coords.shape
        P, L, T, F = table.shape
        out = torch.empty(M, P * L * F, device=coords.device, dtype=torch.float32)
        block_m, one, grid = _launch(M, P, L, one_level)
        wide = _wide(M, D, P, L, T, F)
        if M > 0:
            _hashgrid_fwd_kernel[grid](
                coords, axes_t, res_t, table, out,
                M, coords.stride(0), coords.stride(1), L,
                T=T, F=F, P=P, BLOCK_M=block_m, ONE_LEVEL=one, WIDE=wide, num_warps=HASHGRID_WARPS,
            )
        ctx.save_for_backward(coords, table, res_t, axes_t)
        ctx.axes, ctx.one_level = axes, one_level
        return out

    @staticmethod
    @once_differentiable  # the backward kernels are not themselves differentiable
    def backward(ctx, grad_out):
        coords, table, res_t, axes_t = ctx.saved_tensors
        need_coords, need_table = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        M, D = coords.shape
        P, L, T, F = table.shape
        grad_out = grad_out.contiguous().float()
        block_m, one, grid = _launch(M, P, L, ctx.one_level)
        gtable = torch.zeros_like(table) if need_table else table.new_empty(1)
        if need_coords:  # one level per program adds its share atomically
            gparts = coords.new_zeros(P, M, 2) if one else coords.new_empty(P, M, 2)
        else:
            gparts = coords.new_empty(1)
        if M > 0 and (need_table or need_coords):
            _hashgrid_bwd_kernel[grid](
                coords, axes_t, res_t, table, grad_out, gtable, gparts,
                M, coords.stride(0), coords.stride(1), L,
                T=T, F=F, P=P, NEED_TABLE=need_table, NEED_COORDS=need_coords,
                BLOCK_M=block_m, ONE_LEVEL=one, WIDE=_wide(M, D, P, L, T, F), num_warps=HASHGRID_WARPS,
            )
        gcoords = None
        if need_coords:
            if P == 1 and D == 2 and tuple(ctx.axes[0]) == (0, 1):
                gcoords = gparts[0]
            else:
                gcoords = coords.new_zeros(M, D)
                for p, (ax, ay) in enumerate(ctx.axes):
                    gcoords[:, ax] += gparts[p, :, 0]
                    gcoords[:, ay] += gparts[p, :, 1]
        return gcoords, (gtable if need_table else None), None, None, None, None


# ----------------------------------------------------------------------------- public functions


def _check_resolutions(resolutions, n_levels: int) -> list[int]:
    try:
        res = [int(r) for r in resolutions]
    except TypeError:
        raise ValueError(f"resolutions must be a list of {n_levels} ints, got {type(resolutions).__name__}") from None
    if len(res) != n_levels:
        raise ValueError(f"resolutions has {len(res)} entries but table has {n_levels} levels")
    if any(r < 1 or r >= 2**15 for r in res):
        raise ValueError(f"resolutions must be ints in [1, 32767], got {res}")
    if any(r != float(x) for r, x in zip(res, resolutions)):
        raise ValueError(f"resolutions must be whole numbers, got {list(resolutions)}")
    return res


_INDEX_CACHE: dict = {}


def _index_tensors(res: tuple, axes: tuple, device: torch.device):
    """int32 resolutions [L] and plane axes [P, 2] on `device`, made once per configuration
    (a host-to-device copy per call would stall the GPU stream)."""
    key = (res, axes, str(device))
    if key not in _INDEX_CACHE:
        if len(_INDEX_CACHE) > 64:
            _INDEX_CACHE.clear()
        _INDEX_CACHE[key] = (
            torch.tensor(res, dtype=torch.int32, device=device),
            torch.tensor([list(a) for a in axes], dtype=torch.int32, device=device),
        )
    return _INDEX_CACHE[key]


def _hashgrid_planes(
    coords, table, resolutions, axes, backend: str = "auto", check_values: bool = True
) -> torch.Tensor:
    """coords [M, D], table [P, L, T, F], axes: P (col_x, col_y) pairs -> [M, P*L*F].

    check_values=False skips the NaN/inf scans (the caller has checked its inputs).
    """
    check_tensor("coords", coords, (None, None), finite=check_values)
    check_tensor("table", table, (len(axes), None, None, None), device=coords.device, finite=check_values)
    P, L, T, F = table.shape
    if T < 1 or F < 1:
        raise ValueError(f"table must have T >= 1 rows and F >= 1 features, got shape {list(table.shape)}")
    if T > 2**31 - 1:
        raise ValueError(f"table size T={T} is too large (at most 2**31 - 1)")
    res = _check_resolutions(resolutions, L)
    D = coords.shape[1]
    if any(not (0 <= a < D) for pair in axes for a in pair):
        raise ValueError(f"plane axes {list(axes)} index past coords' {D} columns")
    backend = resolve_backend(backend, coords.device)
    if backend == "torch":
        return _torch_planes(coords, table, res, axes)
    if coords.dtype != torch.float32 or table.dtype != torch.float32:
        raise ValueError("backend='triton' takes float32 coords and table; use backend='torch' for float64")
    axes = tuple((int(a), int(b)) for a, b in axes)
    res_t, axes_t = _index_tensors(tuple(res), axes, coords.device)
    return _HashGridFunction.apply(coords, table.contiguous(), res_t, axes_t, axes)


def hashgrid2d(coords, table, resolutions, backend: str = "auto") -> torch.Tensor:
    """Multi-resolution 2D hash-grid encoding.

    coords: [M, 2] float32 in [0, 1] (values outside are clamped; exact 0 and 1 are valid).
    table: [L, T, F] float32, the per-level feature tables.
    resolutions: L ints, cells per side of each level.
    backend: "auto" (Triton on CUDA, torch elsewhere), "triton" or "torch".
    Returns [M, L*F] float32 (level-major), differentiable w.r.t. coords and table.
    """
    check_tensor("coords", coords, (None, 2), finite=False)  # values are scanned once, below
    check_tensor("table", table, (None, None, None), device=coords.device, finite=False)
    return _hashgrid_planes(coords, table.unsqueeze(0), resolutions, ((0, 1),), backend)


class TriPlaneEncoder(nn.Module):
    """Tri-plane multi-resolution hash encoding of 3D positions (paper eq. 4's f_H).

    Positions are normalised by the box ``[bound_min, bound_max]`` to [0, 1]^3 (clamped, never
    wrapped) and projected on the (x,y), (y,z) and (x,z) planes; each plane is a 2D hash grid
    with its own table. All three run in one kernel launch each way.

    Parameters: ``tables [3, L, T, F]`` initialised uniform in [-1e-4, 1e-4] (instant-ngp).
    forward(positions [N, 3], backend="auto") -> features [N, 3*L*F] float32 (plane-major, then
    level-major). The backend comes with each call, as for every kernel, so one model can run
    on either (the encoder keeps none of its own).

    ``check`` (default True) scans the positions for NaN/inf on every call, a host
    synchronisation on a GPU; the deformation fields, which encode their own Gaussians every
    step, build theirs with check=False (an attribute: it is not saved with the model).
    """

    def __init__(
        self,
        bound_min=(-1.0, -1.0, -1.0),
        bound_max=(1.0, 1.0, 1.0),
        n_levels: int = 14,
        n_features: int = 1,
        base_resolution: int = 64,
        finest_resolution: int = 512,
        log2_table_size: int = 14,
        check: bool = True,
    ):
        super().__init__()
        lo = torch.as_tensor(bound_min, dtype=torch.float32).reshape(3)
        hi = torch.as_tensor(bound_max, dtype=torch.float32).reshape(3)
        if not bool((hi > lo).all()):
            raise ValueError(f"bound_max must exceed bound_min on every axis, got {lo.tolist()} and {hi.tolist()}")
        self.register_buffer("bound_min", lo)
        self.register_buffer("bound_max", hi)
        self.resolutions = level_resolutions(n_levels, base_resolution, finest_resolution)
        self.n_levels, self.n_features = n_levels, n_features
        self.table_size = 2**log2_table_size
        self.check = check
        self.tables = nn.Parameter(torch.empty(3, n_levels, self.table_size, n_features).uniform_(-1e-4, 1e-4))

    @property
    def out_dim(self) -> int:
        return 3 * self.n_levels * self.n_features

    def normalize(self, positions: torch.Tensor) -> torch.Tensor:
        """positions [N, 3] -> [N, 3], the box mapped to [0, 1]^3 (the grids clamp what lies outside)."""
        return (positions - self.bound_min) / (self.bound_max - self.bound_min)

    def forward(self, positions: torch.Tensor, backend: str = "auto") -> torch.Tensor:
        check_tensor("positions", positions, (None, 3), finite=self.check)
        coords = self.normalize(positions.to(self.tables.dtype)).contiguous()
        # positions were checked above (or not, by choice); the tables are not re-scanned every call
        return _hashgrid_planes(coords, self.tables, self.resolutions, TRIPLANE_AXES, backend, check_values=False)

    def extra_repr(self) -> str:
        return (
            f"levels={self.n_levels}, features={self.n_features}, table_size={self.table_size}, "
            f"resolutions={self.resolutions[0]}->{self.resolutions[-1]}"
        )

