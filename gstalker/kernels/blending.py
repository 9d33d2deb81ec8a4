"""Alpha blending of depth-ordered Gaussians per 16x16 tile, forward and backward.

Per pixel, front to back (docs/conventions.md): `alpha_i = min(0.99, o_i exp(-0.5 d^T Q_i d))`,
skipped below 1/255; the pixel stops before a Gaussian that would take its transmittance below
1e-4. `image = sum_i c_i alpha_i T_i + T_final * background`, `alpha = 1 - T_final`.

Both backends walk each tile's list in batches of 32 and form the transmittance in front of a
Gaussian as (transmittance in front of the batch) x (product of 1 - alpha within the batch), the
torch backend with a cumulative product, the kernels one Gaussian at a time; the stop test
multiplies the same numbers in the same order, so the two backends agree to rounding.

The Triton kernels have gsplat's shape: one program per tile, one pixel per lane, the tile's
Gaussians read one at a time as broadcast loads, the per-pixel state a handful of registers.
The backward walks front to back as well, recomputing the forward's transmittances exactly
rather than dividing them back out of T_final (no drift for long lists); the colour behind
Gaussian i is the pixel's final colour minus what was accumulated up to i. Its per-Gaussian
gradients are summed per warp with shuffles and added with one relaxed atomic per warp.
"""

from __future__ import annotations

import torch

from ._backend import HAS_TRITON, interpreting
from .projection import TILE, tile_grid

ALPHA_MAX = 0.99
ALPHA_MIN = 1.0 / 255.0
T_MIN = 1e-4
# the torch backend walks lists in batches of this many slots (as the kernel's BATCH), in groups
# of tiles whose [tiles, 256, batch, channels] slab stays under TORCH_SLAB elements (16 MB floats)
TORCH_BATCH = 32
TORCH_SLAB = 1 << 22


def _tile_pixels(tile_ids: torch.Tensor, tiles_x: int, dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """Pixel-centre coordinates of the 256 pixels of each tile: two [T, 256] tensors."""
    p = torch.arange(TILE * TILE, device=tile_ids.device)
    px = (tile_ids % tiles_x)[:, None] * TILE + p % TILE
    py = (tile_ids // tiles_x)[:, None] * TILE + p // TILE
    return px.to(dtype) + 0.5, py.to(dtype) + 0.5


def _tile_groups(tile_ranges: torch.Tensor, max_tiles: int):
    """Busy tiles, longest lists first, in groups of at most `max_tiles`: yields tile ids [T]."""
    counts = (tile_ranges[:, 1] - tile_ranges[:, 0]).long()
    busy = torch.nonzero(counts > 0).flatten()
    busy = busy[torch.argsort(counts[busy], descending=True, stable=True)]
    for i in range(0, len(busy), max_tiles):
        yield busy[i:i + max_tiles]


def _walk_lists(means2d, conics, opacities, isect_ids, tile_ranges, tiles, tiles_x, T):
    """Walk the tiles' depth-ordered lists front to back in batches of TORCH_BATCH slots, like
    the kernel; tiles whose pixels have all stopped, or whose lists have ended, drop out.

    Yields, per batch: rows [t] (positions of the still-active tiles within `tiles`), gid [t, B],
    dx, dy [t, 256, B] (pixel minus mean), conic [t, B, 3], g = exp(power), raw = opacity * g,
    alpha (0 where skipped, stopped or past the list), T_before [t, 256, B] (transmittance in
    front of each slot). T [T, 256] (ones on entry) is updated in place: T_final after the walk.
    """
    dtype = means2d.dtype
    n = len(tiles)
    start = tile_ranges[tiles, 0].long()
    count = (tile_ranges[tiles, 1] - tile_ranges[tiles, 0]).long()
    px, py = _tile_pixels(tiles, tiles_x, dtype)
    done = torch.zeros(n, TILE * TILE, dtype=torch.bool, device=means2d.device)
    rows = torch.arange(n, device=means2d.device)
    k0 = 0
    while len(rows):
        k = k0 + torch.arange(TORCH_BATCH, device=tiles.device)
        present = k[None, :] < count[rows, None]  # [t, B]
        gid = isect_ids[(start[rows, None] + k[None, :]).clamp(max=len(isect_ids) - 1)].long()
        mean, conic = means2d[gid], conics[gid]
        dx = px[rows, :, None] - mean[:, None, :, 0]
        dy = py[rows, :, None] - mean[:, None, :, 1]
        power = -0.5 * (conic[:, None, :, 0] * dx * dx + conic[:, None, :, 2] * dy * dy) - conic[:, None, :, 1] * dx * dy
        g = torch.exp(power)
        raw = opacities[gid][:, None, :] * g
        alpha = torch.clamp_max(raw, ALPHA_MAX)
        alpha = torch.where(present[:, None, :] & (alpha >= ALPHA_MIN) & ~done[rows, :, None], alpha, torch.zeros_like(alpha))
        # the running transmittance only falls, so "still above 1e-4" holds for a prefix
        T_in = T[rows, :, None]
        keep = T_in * torch.cumprod(1 - alpha, dim=-1) >= T_MIN
        alpha = torch.where(keep, alpha, torch.zeros_like(alpha))
        trans = torch.cumprod(1 - alpha, dim=-1)
        T_before = T_in * torch.cat([torch.ones_like(trans[..., :1]), trans[..., :-1]], dim=-1)
        yield rows, gid, dx, dy, conic, g, raw, alpha, T_before
        T[rows] = T_in[..., 0] * trans[..., -1]
        done[rows] |= ~keep[..., -1]
        k0 += TORCH_BATCH
        rows = rows[(count[rows] > k0) & ~done[rows].all(dim=1)]


def _to_tiles(x: torch.Tensor, tiles_x: int, tiles_y: int) -> torch.Tensor:
    """[H, W, C] -> [tiles, 256, C], zero-padded to whole tiles."""
    H, W, C = x.shape
    x = torch.nn.functional.pad(x, (0, 0, 0, tiles_x * TILE - W, 0, tiles_y * TILE - H))
    return x.reshape(tiles_y, TILE, tiles_x, TILE, C).permute(0, 2, 1, 3, 4).reshape(tiles_y * tiles_x, TILE * TILE, C)


def _from_tiles(x: torch.Tensor, tiles_x: int, tiles_y: int, width: int, height: int) -> torch.Tensor:
    """[tiles, 256, C] -> [H, W, C]."""
    C = x.shape[-1]
    x = x.reshape(tiles_y, tiles_x, TILE, TILE, C).permute(0, 2, 1, 3, 4)
    return x.reshape(tiles_y * TILE, tiles_x * TILE, C)[:height, :width]


class _BlendTorch(torch.autograd.Function):
    """Plain-torch blending with the same hand-derived backward as the kernel (checked by
    gradcheck in float64): autograd's generic graph over [tiles, 256, L] slabs kept a dozen of
    them alive and ran 3-4x slower on a CPU."""

    @staticmethod
    def forward(ctx, means2d, conics, opacities, colors, background, isect_ids, tile_ranges, width, height):
        tiles_x, tiles_y = tile_grid(width, height)
        C = colors.shape[1]
        color = torch.zeros(tiles_x * tiles_y, TILE * TILE, C, device=colors.device, dtype=colors.dtype)
        T = torch.ones(tiles_x * tiles_y, TILE * TILE, device=colors.device, dtype=colors.dtype)
        for tiles in _tile_groups(tile_ranges, _max_tiles(C)):
            acc = torch.zeros(len(tiles), TILE * TILE, C, device=colors.device, dtype=colors.dtype)
            T_group = torch.ones(len(tiles), TILE * TILE, device=colors.device, dtype=colors.dtype)
            walk = _walk_lists(means2d, conics, opacities, isect_ids, tile_ranges, tiles, tiles_x, T_group)
            for rows, gid, _, _, _, _, _, alpha, T_before in walk:
                acc[rows] += torch.einsum("tpb,tbc->tpc", alpha * T_before, colors[gid])
            color[tiles] = acc
            T[tiles] = T_group
        ctx.save_for_backward(means2d, conics, opacities, colors, background, isect_ids, tile_ranges, color, T)
        ctx.grid = (width, height, tiles_x, tiles_y)
        image = _from_tiles(color, tiles_x, tiles_y, width, height)
        T_img = _from_tiles(T[..., None], tiles_x, tiles_y, width, height)
        if background is not None:
            image = image + T_img * background
        return image, 1 - T_img

    @staticmethod
    def backward(ctx, g_image, g_alpha_out):
        means2d, conics, opacities, colors, background, isect_ids, tile_ranges, color, T = ctx.saved_tensors
        width, height, tiles_x, tiles_y = ctx.grid
        C = colors.shape[1]
        g_img = _to_tiles(g_image, tiles_x, tiles_y)
        g_aout = _to_tiles(g_alpha_out, tiles_x, tiles_y)[..., 0]
        bg = torch.zeros(C, device=colors.device, dtype=colors.dtype) if background is None else background
        g_means2d, g_conics = torch.zeros_like(means2d), torch.zeros_like(conics)
        g_opac, g_colors = torch.zeros_like(opacities), torch.zeros_like(colors)
        for tiles in _tile_groups(tile_ranges, _max_tiles(C)):
            T_final = T[tiles]
            # colour behind the next slot: the pixel's final colour (background included) minus
            # what the slots walked so far laid down
            behind = color[tiles] + T_final[..., None] * bg
            gi_all = g_img[tiles]
            ga_all = g_aout[tiles] * T_final
            T_walk = torch.ones_like(T_final)
            for rows, gid, dx, dy, conic, g, raw, alpha, T_before in _walk_lists(
                    means2d, conics, opacities, isect_ids, tile_ranges, tiles, tiles_x, T_walk):
                w = alpha * T_before
                col = colors[gid]  # [t, B, C]
                gi = gi_all[rows]  # [t, 256, C]
                inv = 1 / (1 - alpha)
                # the image gradient dotted with each slot's colour and with the colour behind each
                # slot: the channel sum taken before the running sum over slots, so no
                # [t, 256, B, C] slab is formed
                gi_col = torch.einsum("tpc,tbc->tpb", gi, col)
                gi_after = (gi * behind[rows]).sum(-1, keepdim=True) - torch.cumsum(w * gi_col, dim=-1)
                behind[rows] -= torch.einsum("tpb,tbc->tpc", w, col)
                g_a = T_before * gi_col - gi_after * inv + ga_all[rows][..., None] * inv
                g_a = torch.where((alpha > 0) & (raw < ALPHA_MAX), g_a, torch.zeros_like(g_a))
                g_power = g_a * raw
                ca, cb, cc = (conic[:, None, :, k] for k in range(3))
                flat = gid.reshape(-1)
                g_mean = torch.stack([(g_power * (ca * dx + cb * dy)).sum(1), (g_power * (cb * dx + cc * dy)).sum(1)], -1)
                g_conic = torch.stack([(-0.5 * g_power * dx * dx).sum(1), (-g_power * dx * dy).sum(1),
                                       (-0.5 * g_power * dy * dy).sum(1)], -1)
                g_means2d.index_add_(0, flat, g_mean.reshape(-1, 2))
                g_conics.index_add_(0, flat, g_conic.reshape(-1, 3))
                g_opac.index_add_(0, flat, (g_a * g).sum(1).reshape(-1))
                g_colors.index_add_(0, flat, torch.einsum("tpc,tpb->tbc", gi, w).reshape(-1, C))
        g_bg = None
        if background is not None:
            g_bg = (g_image * _from_tiles(T[..., None], tiles_x, tiles_y, width, height)).sum((0, 1))
        return g_means2d, g_conics, g_opac, g_colors, g_bg, None, None, None, None


def _max_tiles(channels: int) -> int:
    """Tiles per group so that one batch's [tiles, 256, B, C] slab stays under TORCH_SLAB elements."""
    return max(1, TORCH_SLAB // (TILE * TILE * TORCH_BATCH * (channels + 1)))


def blend_torch(means2d, conics, opacities, colors, background, isect_ids, tile_ranges, width, height):
    """Plain-torch blending; bins by tile like the kernel, in groups of tiles of bounded size.

    means2d: [N, 2], conics: [N, 3], opacities: [N], colors: [N, C], background: [C] or None,
    isect_ids: [M] int32, tile_ranges: [tiles, 2] int32 (from `bin_tiles`).
    Returns image [H, W, C] and alpha [H, W, 1].
    """
    return _BlendTorch.apply(means2d, conics, opacities, colors, background, isect_ids, tile_ranges, width, height)


# Launch shape on CUDA, in one place (the launch code and benchmarks/kernel_resources.py read it).
# A 16x16 tile is 8 rows of 32 lanes (row r holds tile rows 2r and 2r + 1). Each program takes
# BLEND_ROWS of them with BLEND_WARPS warps: (8, 8) is one program per tile (a warp per row);
# (ROWS, 1) is 8 / ROWS programs per tile of one warp each, ROWS pixels per lane. Every program
# walks its tile's whole list one Gaussian at a time in batches of BLEND_BATCH (the torch
# backend's batch, so both group the transmittance products alike), and stops once all of its
# own pixels have. With BLEND_SKIP a Gaussian that reaches none of the program's pixels costs
# only its alpha test (no colour or gradient work, no reductions, no atomics): exact, since it
# would add zeros. With BLEND_PREFETCH the next Gaussian's parameters (and the one after's id)
# are loaded while the current one is blended, so the dependent loads id -> parameters are not
# waited for on every step. Channels go in groups of at most BLEND_CHANNELS per launch, so the
# per-pixel state stays a fixed handful of registers whatever C is. (1, 1) measured fastest or
# near it on every scene of benchmarks/gpu_stages.py's A/B (H200, docs/benchmarks.md), and agrees
# with the one-program-per-tile shape to 1e-7 where (2, 1) differed by 6e-4.
BLEND_ROWS = 1
BLEND_WARPS = 1
BLEND_SKIP = True
BLEND_PREFETCH = True
BLEND_BATCH = TORCH_BATCH
BLEND_CHANNELS = 4
# the (ROWS, WARPS, SKIP, PREFETCH) shapes the kernels accept; the first is the original one
BLEND_SHAPES = ((8, 8, False, False), (8, 8, True, True), (4, 4, True, True), (2, 1, True, True),
                (1, 1, True, True), (1, 1, True, False), (2, 1, True, False))


# The interpreter runs programs one after another, each op costing the same whatever its size:
# there the default shape runs as one program per tile (same pixels, same arithmetic, same
# results; tests of every shape set BLEND_INTERPRETER_WHOLE_TILE = False).
BLEND_INTERPRETER_WHOLE_TILE = True
_DEFAULT_SHAPE = (BLEND_ROWS, BLEND_WARPS, BLEND_SKIP, BLEND_PREFETCH)


def blend_shape():
    """(rows, warps, skip, prefetch) of the blending programs as launched now."""
    shape = (BLEND_ROWS, BLEND_WARPS, BLEND_SKIP, BLEND_PREFETCH)
    if BLEND_INTERPRETER_WHOLE_TILE and shape == _DEFAULT_SHAPE and interpreting():
        return (8, 8, BLEND_SKIP, BLEND_PREFETCH)
    return shape


def _check_shape(rows, warps):
    if rows not in (1, 2, 4, 8) or not (warps == 1 or warps == rows):
        raise ValueError(f"blend program shape: rows in 1, 2, 4, 8 and warps 1 or = rows, got ({rows}, {warps})")


def _channel_groups(C: int):
    """(first channel, channels) of each launch: [(0, 4), (4, 1)] for C = 5."""
    return [(c0, min(BLEND_CHANNELS, C - c0)) for c0 in range(0, C, BLEND_CHANNELS)]


def gpu_launches():
    """The blending launches as made on CUDA for RGB (see `_backend.Launch`): the default shape,
    then the other shapes gpu_stages.py compares."""
    from ._backend import Launch

    types = {"ranges_ptr": "*i32", "isect_ptr": "*i32"}
    out = []
    shapes = [blend_shape()] + [s for s in BLEND_SHAPES if s != blend_shape()]
    for i, (rows, warps, skip, pre) in enumerate(shapes):
        consts = {"CG": 3, "BATCH": BLEND_BATCH, "ROWS": rows, "ONE_WARP": warps == 1, "SKIP": skip, "PREFETCH": pre}
        note = "" if i == 0 else "alternative shape"
        out += [Launch("_blend_fwd_kernel", consts, warps, types, note),
                Launch("_blend_bwd_kernel", {**consts, "FIRST": True}, warps, types, note)]
    return out


if HAS_TRITON:
    import triton
    import triton.language as tl

    @triton.jit
    def _tile_setup(ranges_ptr, width, height, tiles_x, ROWS: tl.constexpr):
        """The program's pixels as [ROWS, 32] tensors (row r: tile rows 2r, 2r + 1 of its share)
        and its tile's list range."""
        pid = tl.program_id(0)
        tile = pid // (8 // ROWS)
        part = pid % (8 // ROWS)
        p = part * (ROWS * 32) + tl.arange(0, ROWS)[:, None] * 32 + tl.arange(0, 32)[None, :]
        row = (tile // tiles_x) * 16 + p // 16
        col = (tile % tiles_x) * 16 + p % 16
        inside = (row < height) & (col < width)
        start = tl.load(ranges_ptr + tile * 2)
        end = tl.load(ranges_ptr + tile * 2 + 1)
        return col.to(tl.float32) + 0.5, row.to(tl.float32) + 0.5, inside, row * width + col, start, end

    @triton.jit
    def _params(means2d_ptr, conics_ptr, opac_ptr, colors_ptr, gid, C, c0, CG: tl.constexpr):
        """Scalars of Gaussian `gid` (the same address in every lane: one broadcast load each)."""
        mx = tl.load(means2d_ptr + gid * 2)
        my = tl.load(means2d_ptr + gid * 2 + 1)
        ca = tl.load(conics_ptr + gid * 3)
        cb = tl.load(conics_ptr + gid * 3 + 1)
        cc = tl.load(conics_ptr + gid * 3 + 2)
        op = tl.load(opac_ptr + gid)
        cptr = colors_ptr + gid * C + c0
        col0 = tl.load(cptr)
        col1 = col0 * 0.0
        col2 = col1
        col3 = col1
        if CG > 1:
            col1 = tl.load(cptr + 1)
        if CG > 2:
            col2 = tl.load(cptr + 2)
        if CG > 3:
            col3 = tl.load(cptr + 3)
        return mx, my, ca, cb, cc, op, col0, col1, col2, col3

    @triton.jit
    def _list_id(isect_ptr, k, end):
        """The k-th id of the list, or the last one's past its end (prefetches read no further);
        an empty tile's read lands on a neighbour's slot, whose id (maybe -1) is never blended."""
        return tl.maximum(tl.load(isect_ptr + tl.maximum(tl.minimum(k, end - 1), 0)), 0)

    @triton.jit
    def _alpha(px, py, mx, my, ca, cb, cc, op, T_in, trans, done):
        """One Gaussian at every pixel: alpha after the skip (1/255) and stop (1e-4) rules, and
        whether the pixel stops here. T_in * trans is the transmittance in front of it; the stop
        test multiplies exactly as the torch backend's T_in * cumprod does."""
        dx = px - mx
        dy = py - my
        power = -0.5 * (ca * dx * dx + cc * dy * dy) - cb * dx * dy
        g = tl.exp(power)
        raw = op * g
        alpha = tl.minimum(raw, 0.99)
        use = (alpha >= 1.0 / 255.0) & (done == 0)
        stop = use & (T_in * (trans * (1.0 - alpha)) < 1e-4)
        alpha = tl.where(use & ~stop, alpha, 0.0)
        return dx, dy, g, raw, alpha, stop

    @triton.jit
    def _any_positive(x, SKIP: tl.constexpr):
        """Whether any of the program's pixels has x > 0 (always True without SKIP)."""
        if SKIP:
            return tl.max(tl.max(x, axis=1), axis=0) > 0.0
        else:
            return True

    @triton.jit
    def _walk(px, py, inside, start, end, isect_ptr, means2d_ptr, conics_ptr, opac_ptr, colors_ptr, C, c0,
              state, ctx, STEP: tl.constexpr, CG: tl.constexpr, BATCH: tl.constexpr, ROWS: tl.constexpr,
              ONE_WARP: tl.constexpr, SKIP: tl.constexpr, PREFETCH: tl.constexpr):
        """Walks the tile's list front to back in batches of BATCH, as both kernels do, and returns
        (state, T_final). For each Gaussian that some pixel blends (each one without SKIP),
        `state = STEP(state, ctx, gid, params, dx, dy, g, raw, alpha, T_before, CG, ONE_WARP)`,
        T_before the transmittance in front of it; the walk stops once every pixel has.
        With PREFETCH the next Gaussian's parameters, and the id after it, are loaded while one
        is blended."""
        T_in = tl.full([ROWS, 32], 1.0, tl.float32)  # transmittance in front of the batch
        trans = T_in  # product of (1 - alpha) over the batch so far
        done = tl.where(inside, 0, 1)
        # the Gaussian to blend next, and the id after it (PREFETCH)
        gid = _list_id(isect_ptr, start, end)
        gid_n = _list_id(isect_ptr, start + 1, end)
        params = _params(means2d_ptr, conics_ptr, opac_ptr, colors_ptr, gid, C, c0, CG)
        b0 = start
        while (b0 < end) & (tl.min(tl.min(done, axis=1), axis=0) == 0):
            for k in range(b0, tl.minimum(b0 + BATCH, end)):
                if PREFETCH:
                    params_n = _params(means2d_ptr, conics_ptr, opac_ptr, colors_ptr, gid_n, C, c0, CG)
                    gid_nn = _list_id(isect_ptr, k + 2, end)
                else:
                    gid = _list_id(isect_ptr, k, end)
                    params = _params(means2d_ptr, conics_ptr, opac_ptr, colors_ptr, gid, C, c0, CG)
                mx, my, ca, cb, cc, op, _, _, _, _ = params
                dx, dy, g, raw, alpha, stop = _alpha(px, py, mx, my, ca, cb, cc, op, T_in, trans, done)
                done = done | stop.to(tl.int32)
                if _any_positive(alpha, SKIP):
                    T_before = T_in * trans
                    trans = trans * (1.0 - alpha)
                    state = STEP(state, ctx, gid, params, dx, dy, g, raw, alpha, T_before, CG, ONE_WARP)
                if PREFETCH:
                    params = params_n
                    gid = gid_n
                    gid_n = gid_nn
            T_in = T_in * trans
            trans = tl.full([ROWS, 32], 1.0, tl.float32)
            b0 += BATCH
        return state, T_in

    @triton.jit
    def _blend_step(acc, ctx, gid, params, dx, dy, g, raw, alpha, T_before, CG: tl.constexpr, ONE_WARP: tl.constexpr):
        """The forward's step: the Gaussian's colour, weighted by alpha x T_before, onto the sums."""
        acc0, acc1, acc2, acc3 = acc
        _, _, _, _, _, _, col0, col1, col2, col3 = params
        w = alpha * T_before
        acc0 += w * col0
        if CG > 1:
            acc1 += w * col1
        if CG > 2:
            acc2 += w * col2
        if CG > 3:
            acc3 += w * col3
        return acc0, acc1, acc2, acc3

    @triton.jit
    def _blend_fwd_kernel(
        ranges_ptr, isect_ptr, means2d_ptr, conics_ptr, opac_ptr, colors_ptr,
        color_out_ptr, T_out_ptr,
        width, height, tiles_x, C, c0,
        CG: tl.constexpr, BATCH: tl.constexpr, ROWS: tl.constexpr, ONE_WARP: tl.constexpr, SKIP: tl.constexpr,
        PREFETCH: tl.constexpr,
    ):
        """Channels c0 .. c0 + CG - 1 (CG <= 4) of one program's pixels; colors [N, C], color_out [H, W, C]."""
        px, py, inside, pix, start, end = _tile_setup(ranges_ptr, width, height, tiles_x, ROWS)
        zero = tl.zeros([ROWS, 32], tl.float32)
        acc, T_final = _walk(px, py, inside, start, end, isect_ptr, means2d_ptr, conics_ptr, opac_ptr, colors_ptr, C, c0,
                             (zero, zero, zero, zero), 0, _blend_step, CG, BATCH, ROWS, ONE_WARP, SKIP, PREFETCH)
        acc0, acc1, acc2, acc3 = acc
        out = color_out_ptr + pix * C + c0
        tl.store(out, acc0, mask=inside)
        if CG > 1:
            tl.store(out + 1, acc1, mask=inside)
        if CG > 2:
            tl.store(out + 2, acc2, mask=inside)
        if CG > 3:
            tl.store(out + 3, acc3, mask=inside)
        tl.store(T_out_ptr + pix, T_final, mask=inside)

    @triton.jit
    def _prog_add(ptr, values, lead, ONE_WARP: tl.constexpr):
        """Adds the sum of `values` ([ROWS, 32]) at `ptr` with few atomics: one warp sums all
        its values with shuffles and one lane adds them (ONE_WARP); otherwise each row is a warp
        and adds its own sum. Skipped where the sum is zero (no pixel touched the Gaussian).
        Relaxed: only atomicity is needed."""
        if ONE_WARP:
            part = tl.sum(tl.sum(values, axis=1), axis=0) + tl.zeros_like(values)
        else:
            part = tl.sum(values, axis=1)[:, None] + tl.zeros_like(values)
        tl.atomic_add(ptr + tl.zeros_like(lead.to(tl.int32)), part, mask=lead & (part != 0.0), sem="relaxed")

    @triton.jit
    def _grad_step(behind, ctx, gid, params, dx, dy, g, raw, alpha, T_before, CG: tl.constexpr, ONE_WARP: tl.constexpr):
        """The backward's step: adds the Gaussian's gradients and takes its colour off `behind`
        (the colour behind it); ctx holds the pixels' output gradients and the gradient arrays."""
        behind0, behind1, behind2, behind3 = behind
        gaT, gi0, gi1, gi2, gi3, lead, C, c0, g_means2d_ptr, g_conics_ptr, g_opac_ptr, g_colors_ptr = ctx
        _, _, ca, cb, cc, _, col0, col1, col2, col3 = params
        w = alpha * T_before
        inv = 1.0 / (1.0 - alpha)
        gcptr = g_colors_ptr + gid * C + c0
        behind0 -= w * col0
        g_a = gaT * inv + gi0 * (T_before * col0 - behind0 * inv)
        _prog_add(gcptr, gi0 * w, lead, ONE_WARP)
        if CG > 1:
            behind1 -= w * col1
            g_a += gi1 * (T_before * col1 - behind1 * inv)
            _prog_add(gcptr + 1, gi1 * w, lead, ONE_WARP)
        if CG > 2:
            behind2 -= w * col2
            g_a += gi2 * (T_before * col2 - behind2 * inv)
            _prog_add(gcptr + 2, gi2 * w, lead, ONE_WARP)
        if CG > 3:
            behind3 -= w * col3
            g_a += gi3 * (T_before * col3 - behind3 * inv)
            _prog_add(gcptr + 3, gi3 * w, lead, ONE_WARP)
        g_a = tl.where((alpha > 0.0) & (raw < 0.99), g_a, 0.0)
        g_power = g_a * raw
        _prog_add(g_means2d_ptr + gid * 2, g_power * (ca * dx + cb * dy), lead, ONE_WARP)
        _prog_add(g_means2d_ptr + gid * 2 + 1, g_power * (cb * dx + cc * dy), lead, ONE_WARP)
        _prog_add(g_conics_ptr + gid * 3, -0.5 * g_power * dx * dx, lead, ONE_WARP)
        _prog_add(g_conics_ptr + gid * 3 + 1, -g_power * dx * dy, lead, ONE_WARP)
        _prog_add(g_conics_ptr + gid * 3 + 2, -0.5 * g_power * dy * dy, lead, ONE_WARP)
        _prog_add(g_opac_ptr + gid, g_a * g, lead, ONE_WARP)
        return behind0, behind1, behind2, behind3

    @triton.jit
    def _blend_bwd_kernel(
        ranges_ptr, isect_ptr, means2d_ptr, conics_ptr, opac_ptr, colors_ptr,
        color_ptr, T_final_ptr, bg_ptr, g_image_ptr, g_alpha_ptr,
        g_means2d_ptr, g_conics_ptr, g_opac_ptr, g_colors_ptr,
        width, height, tiles_x, C, c0,
        CG: tl.constexpr, BATCH: tl.constexpr, FIRST: tl.constexpr, ROWS: tl.constexpr, ONE_WARP: tl.constexpr,
        SKIP: tl.constexpr, PREFETCH: tl.constexpr,
    ):
        """Gradients through channels c0 .. c0 + CG - 1 of one program's pixels. The alpha gradient
        is linear in the channels' terms, so each channel group adds its share; FIRST adds the
        alpha output's.

        Walks front to back recomputing the forward's transmittances exactly (no division of
        T_final, so no drift on long lists); the colour behind Gaussian i is the pixel's final
        colour (background included) minus what the walk laid down up to i."""
        px, py, inside, pix, start, end = _tile_setup(ranges_ptr, width, height, tiles_x, ROWS)
        T_final = tl.load(T_final_ptr + pix, mask=inside, other=1.0)
        if FIRST:
            gaT = tl.load(g_alpha_ptr + pix, mask=inside, other=0.0) * T_final
        else:
            gaT = tl.zeros([ROWS, 32], tl.float32)
        img = g_image_ptr + pix * C + c0
        tot = color_ptr + pix * C + c0
        gi0 = tl.load(img, mask=inside, other=0.0)
        behind0 = tl.load(tot, mask=inside, other=0.0) + T_final * tl.load(bg_ptr + c0)
        gi1 = tl.zeros([ROWS, 32], tl.float32)
        gi2 = gi1
        gi3 = gi1
        behind1 = gi1
        behind2 = gi1
        behind3 = gi1
        if CG > 1:
            gi1 = tl.load(img + 1, mask=inside, other=0.0)
            behind1 = tl.load(tot + 1, mask=inside, other=0.0) + T_final * tl.load(bg_ptr + c0 + 1)
        if CG > 2:
            gi2 = tl.load(img + 2, mask=inside, other=0.0)
            behind2 = tl.load(tot + 2, mask=inside, other=0.0) + T_final * tl.load(bg_ptr + c0 + 2)
        if CG > 3:
            gi3 = tl.load(img + 3, mask=inside, other=0.0)
            behind3 = tl.load(tot + 3, mask=inside, other=0.0) + T_final * tl.load(bg_ptr + c0 + 3)
        if ONE_WARP:
            lead = (tl.arange(0, 32) == 0)[None, :] & (tl.arange(0, ROWS) == 0)[:, None]
        else:
            lead = (tl.arange(0, 32) == 0)[None, :] & (tl.arange(0, ROWS) >= 0)[:, None]
        ctx = (gaT, gi0, gi1, gi2, gi3, lead, C, c0, g_means2d_ptr, g_conics_ptr, g_opac_ptr, g_colors_ptr)
        _walk(px, py, inside, start, end, isect_ptr, means2d_ptr, conics_ptr, opac_ptr, colors_ptr, C, c0,
              (behind0, behind1, behind2, behind3), ctx, _grad_step, CG, BATCH, ROWS, ONE_WARP, SKIP, PREFETCH)


class _BlendTiles(torch.autograd.Function):
    """Triton blending; gradients to means2d, conics, opacities, colors and background."""

    @staticmethod
    def forward(ctx, means2d, conics, opacities, colors, background, isect_ids, tile_ranges, width, height):
        tiles_x, tiles_y = tile_grid(width, height)
        C = colors.shape[1]
        dev = colors.device
        color = torch.zeros(height, width, C, device=dev, dtype=torch.float32)
        T_final = torch.ones(height, width, device=dev, dtype=torch.float32)
        rows, warps, skip, pre = blend_shape()
        _check_shape(rows, warps)
        if len(isect_ids):
            for c0, cg in _channel_groups(C):
                _blend_fwd_kernel[(tiles_x * tiles_y * (8 // rows),)](
                    tile_ranges, isect_ids, means2d, conics, opacities, colors, color, T_final,
                    width, height, tiles_x, C, c0, CG=cg, BATCH=BLEND_BATCH, ROWS=rows, ONE_WARP=warps == 1, SKIP=skip,
                    PREFETCH=pre, num_warps=warps,
                )
        bg = torch.zeros(C, device=dev, dtype=torch.float32) if background is None else background
        ctx.save_for_backward(means2d, conics, opacities, colors, bg, isect_ids, tile_ranges, color, T_final)
        ctx.grid = (width, height, tiles_x, tiles_y)
        ctx.has_bg = background is not None
        image = color + T_final[..., None] * bg
        return image, (1 - T_final)[..., None]

    @staticmethod
    def backward(ctx, g_image, g_alpha):
        means2d, conics, opacities, colors, bg, isect_ids, tile_ranges, color, T_final = ctx.saved_tensors
        width, height, tiles_x, tiles_y = ctx.grid
        C = colors.shape[1]
        g_means2d = torch.zeros_like(means2d)
        g_conics = torch.zeros_like(conics)
        g_opac = torch.zeros_like(opacities)
        g_colors = torch.zeros_like(colors)
        g_image = g_image.contiguous()
        g_alpha = g_alpha.contiguous()
        rows, warps, skip, pre = blend_shape()
        _check_shape(rows, warps)
        if len(isect_ids):
            for c0, cg in _channel_groups(C):
                _blend_bwd_kernel[(tiles_x * tiles_y * (8 // rows),)](
                    tile_ranges, isect_ids, means2d, conics, opacities, colors,
                    color, T_final, bg, g_image, g_alpha,
                    g_means2d, g_conics, g_opac, g_colors,
                    width, height, tiles_x, C, c0, CG=cg, BATCH=BLEND_BATCH, FIRST=c0 == 0, ROWS=rows,
                    ONE_WARP=warps == 1, SKIP=skip, PREFETCH=pre, num_warps=warps,
                )
        g_bg = (g_image * T_final[..., None]).sum((0, 1)) if ctx.has_bg else None
        return g_means2d, g_conics, g_opac, g_colors, g_bg, None, None, None, None


def blend(means2d, conics, opacities, colors, background, isect_ids, tile_ranges, width, height, backend="torch"):
    """Blend binned Gaussians into an image with the chosen (already resolved) backend.

    Returns image [H, W, C] and alpha [H, W, 1]; see `blend_torch` for the shapes.
    """
    if backend == "torch":
        return blend_torch(means2d, conics, opacities, colors, background, isect_ids, tile_ranges, width, height)
    return _BlendTiles.apply(
        means2d.contiguous(), conics.contiguous(), opacities.contiguous(), colors.contiguous(),
        None if background is None else background.contiguous(),
        isect_ids.contiguous(), tile_ranges.contiguous(), width, height,
    )
