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
        """Table rows of the 4 corners (00, 10, 01, 11) of cells (x0, y0), [BM, BL] int32 each."""
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
    def _cell(coords_ptr, axes_ptr, res_ptr, pid_p, offs_m, offs_l, M, stride_m, stride_d, L, T: tl.constexpr):
        """Shared front half of both kernels: clamped coords, cell indices, weights, corner rows."""
        mask_m = offs_m < M
        mask_l = offs_l < L
        ax = tl.load(axes_ptr + 2 * pid_p)
        ay = tl.load(axes_ptr + 2 * pid_p + 1)
        row_ptr = coords_ptr + offs_m.to(tl.int64) * stride_m
        cx_raw = tl.load(row_ptr + ax * stride_d, mask=mask_m, other=0.0)
        cy_raw = tl.load(row_ptr + ay * stride_d, mask=mask_m, other=0.0)
        cx = tl.minimum(tl.maximum(cx_raw, 0.0), 1.0)
        cy = tl.minimum(tl.maximum(cy_raw, 0.0), 1.0)
        res = tl.load(res_ptr + offs_l, mask=mask_l, other=1)  # [BL] int32
        resf = res.to(tl.float32)
        px = cx[:, None] * resf[None, :]
        py = cy[:, None] * resf[None, :]
        x0 = tl.minimum(tl.maximum(tl.floor(px), 0.0), (resf - 1.0)[None, :])
        y0 = tl.minimum(tl.maximum(tl.floor(py), 0.0), (resf - 1.0)[None, :])
        wx = px - x0
        wy = py - y0
        res2 = res[None, :]
        dense = (res2 + 1) * (res2 + 1) <= T
        r00, r10, r01, r11 = _corner_rows(x0.to(tl.int32), y0.to(tl.int32), res2, dense, T)
        mask = mask_m[:, None] & mask_l[None, :]
        return cx_raw, cy_raw, wx, wy, resf, r00, r10, r01, r11, mask

    @triton.jit
    def _hashgrid_fwd_kernel(
        coords_ptr, axes_ptr, res_ptr, table_ptr, out_ptr,
        M, stride_m, stride_d, L,
        T: tl.constexpr, F: tl.constexpr, P: tl.constexpr,
        BLOCK_M: tl.constexpr, BLOCK_L: tl.constexpr,
    ):
        pid_m = tl.program_id(0)
        pid_p = tl.program_id(1)
        offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
        offs_l = tl.arange(0, BLOCK_L)
        _, _, wx, wy, _, r00, r10, r01, r11, mask = _cell(
            coords_ptr, axes_ptr, res_ptr, pid_p, offs_m, offs_l, M, stride_m, stride_d, L, T
        )
        # table [P, L, T, F] contiguous; base row of (plane, level)
        base = (pid_p * L + offs_l).to(tl.int64)[None, :] * T
        out_row = offs_m.to(tl.int64)[:, None] * (P * L * F) + (pid_p * L + offs_l)[None, :] * F
        for f in tl.static_range(F):
            f00 = tl.load(table_ptr + (base + r00) * F + f, mask=mask, other=0.0)
            f10 = tl.load(table_ptr + (base + r10) * F + f, mask=mask, other=0.0)
            f01 = tl.load(table_ptr + (base + r01) * F + f, mask=mask, other=0.0)
            f11 = tl.load(table_ptr + (base + r11) * F + f, mask=mask, other=0.0)
            val = (f00 * (1.0 - wx) + f10 * wx) * (1.0 - wy) + (f01 * (1.0 - wx) + f11 * wx) * wy
            tl.store(out_ptr + out_row + f, val, mask=mask)

    @triton.jit
    def _hashgrid_bwd_kernel(
        coords_ptr, axes_ptr, res_ptr, table_ptr, gout_ptr, gtable_ptr, gcoords_ptr,
        M, stride_m, stride_d, L,
        T: tl.constexpr, F: tl.constexpr, P: tl.constexpr,
        NEED_TABLE: tl.constexpr, NEED_COORDS: tl.constexpr,
        BLOCK_M: tl.constexpr, BLOCK_L: tl.constexpr,
    ):
        pid_m = tl.program_id(0)
        pid_p = tl.program_id(1)
        offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
        offs_l = tl.arange(0, BLOCK_L)
        cx_raw, cy_raw, wx, wy, resf, r00, r10, r01, r11, mask = _cell(
            coords_ptr, axes_ptr, res_ptr, pid_p, offs_m, offs_l, M, stride_m, stride_d, L, T
        )
        base = (pid_p * L + offs_l).to(tl.int64)[None, :] * T
        out_row = offs_m.to(tl.int64)[:, None] * (P * L * F) + (pid_p * L + offs_l)[None, :] * F
        dx = tl.zeros([BLOCK_M, BLOCK_L], dtype=tl.float32)
        dy = tl.zeros([BLOCK_M, BLOCK_L], dtype=tl.float32)
        for f in tl.static_range(F):
            g = tl.load(gout_ptr + out_row + f, mask=mask, other=0.0)
            if NEED_TABLE:
                # relaxed: the adds need atomicity only, no ordering against other memory
                tl.atomic_add(gtable_ptr + (base + r00) * F + f, g * (1.0 - wx) * (1.0 - wy), mask=mask, sem="relaxed")
                tl.atomic_add(gtable_ptr + (base + r10) * F + f, g * wx * (1.0 - wy), mask=mask, sem="relaxed")
                tl.atomic_add(gtable_ptr + (base + r01) * F + f, g * (1.0 - wx) * wy, mask=mask, sem="relaxed")
                tl.atomic_add(gtable_ptr + (base + r11) * F + f, g * wx * wy, mask=mask, sem="relaxed")
            if NEED_COORDS:
                f00 = tl.load(table_ptr + (base + r00) * F + f, mask=mask, other=0.0)
                f10 = tl.load(table_ptr + (base + r10) * F + f, mask=mask, other=0.0)
                f01 = tl.load(table_ptr + (base + r01) * F + f, mask=mask, other=0.0)
                f11 = tl.load(table_ptr + (base + r11) * F + f, mask=mask, other=0.0)
                dx += g * ((f10 - f00) * (1.0 - wy) + (f11 - f01) * wy)
                dy += g * ((f01 - f00) * (1.0 - wx) + (f11 - f10) * wx)
        if NEED_COORDS:
            # d pos / d c = res per level; clamp passes the gradient only inside [0, 1]
            gx = tl.sum(dx * resf[None, :], axis=1)
            gy = tl.sum(dy * resf[None, :], axis=1)
            gx = tl.where((cx_raw >= 0.0) & (cx_raw <= 1.0), gx, 0.0)
            gy = tl.where((cy_raw >= 0.0) & (cy_raw <= 1.0), gy, 0.0)
            mask_m = offs_m < M
            # gcoords [P, M, 2]: each plane writes its own slot, summed per axis on the host
            gptr = gcoords_ptr + (pid_p * M + offs_m.to(tl.int64)) * 2
            tl.store(gptr, gx, mask=mask_m)
            tl.store(gptr + 1, gy, mask=mask_m)


def _launch_config():
    # The interpreter runs programs one after another in Python: fewer, bigger blocks are faster.
    return (1024, 4) if interpreting() else (128, 4)


class _HashGridFunction(torch.autograd.Function):
    """Triton forward/backward of the P-plane hash grid. Inputs already checked and contiguous."""

    @staticmethod
    def forward(ctx, coords, table, res_t, axes_t, axes):
        M, D = coords.shape
        P, L, T, F = table.shape
        out = torch.empty(M, P * L * F, device=coords.device, dtype=torch.float32)
        block_m, warps = _launch_config()
        block_l = triton.next_power_of_2(L)
        if M > 0:
            grid = (triton.cdiv(M, block_m), P)
            _hashgrid_fwd_kernel[grid](
                coords, axes_t, res_t, table, out,
                M, coords.stride(0), coords.stride(1), L,
                T=T, F=F, P=P, BLOCK_M=block_m, BLOCK_L=block_l, num_warps=warps,
            )
        ctx.save_for_backward(coords, table, res_t, axes_t)
        ctx.axes = axes
        return out

    @staticmethod
    @once_differentiable  # the backward kernels are not themselves differentiable
    def backward(ctx, grad_out):
        coords, table, res_t, axes_t = ctx.saved_tensors
        need_coords, need_table = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        M, D = coords.shape
        P, L, T, F = table.shape
        grad_out = grad_out.contiguous().float()
        gtable = torch.zeros_like(table) if need_table else table.new_empty(1)
        gparts = coords.new_empty(P, M, 2) if need_coords else coords.new_empty(1)
        block_m, warps = _launch_config()
        if M > 0 and (need_table or need_coords):
            grid = (triton.cdiv(M, block_m), P)
            _hashgrid_bwd_kernel[grid](
                coords, axes_t, res_t, table, grad_out, gtable, gparts,
                M, coords.stride(0), coords.stride(1), L,
                T=T, F=F, P=P, NEED_TABLE=need_table, NEED_COORDS=need_coords,
                BLOCK_M=block_m, BLOCK_L=triton.next_power_of_2(L), num_warps=warps,
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
        return gcoords, (gtable if need_table else None), None, None, None


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
    forward(positions [N, 3]) -> features [N, 3*L*F] float32 (plane-major, then level-major).
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
        backend: str = "auto",
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
        self.backend = backend
        self.tables = nn.Parameter(torch.empty(3, n_levels, self.table_size, n_features).uniform_(-1e-4, 1e-4))

    @property
    def out_dim(self) -> int:
        return 3 * self.n_levels * self.n_features

    def normalize(self, positions: torch.Tensor) -> torch.Tensor:
        """positions [N, 3] -> [N, 3], the box mapped to [0, 1]^3 (the grids clamp what lies outside)."""
        return (positions - self.bound_min) / (self.bound_max - self.bound_min)

    def forward(self, positions: torch.Tensor) -> torch.Tensor:
        check_tensor("positions", positions, (None, 3))
        coords = self.normalize(positions.to(self.tables.dtype)).contiguous()
        # positions were checked for NaN/inf above; the tables are not re-scanned every call
        return _hashgrid_planes(coords, self.tables, self.resolutions, TRIPLANE_AXES, self.backend, check_values=False)

    def extra_repr(self) -> str:
        return (
            f"levels={self.n_levels}, features={self.n_features}, table_size={self.table_size}, "
            f"resolutions={self.resolutions[0]}->{self.resolutions[-1]}"
        )


def gpu_launches():
    from ._backend import Launch

    c = {"T": 16384, "F": 1, "P": 3, "BLOCK_M": 128, "BLOCK_L": 16}
    t = {"axes_ptr": "*i32", "res_ptr": "*i32"}
    return [Launch("_hashgrid_fwd_kernel", c, 4, t),
            Launch("_hashgrid_bwd_kernel", {**c, "NEED_TABLE": True, "NEED_COORDS": True}, 4, t)]
