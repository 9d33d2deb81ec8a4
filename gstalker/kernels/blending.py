"""Alpha blending of depth-ordered Gaussians per 16x16 tile, forward and backward.

Per pixel, front to back (docs/conventions.md): `alpha_i = min(0.99, o_i exp(-0.5 d^T Q_i d))`,
skipped below 1/255; the pixel stops before a Gaussian that would take its transmittance below
1e-4. `image = sum_i c_i alpha_i T_i + T_final * background`, `alpha = 1 - T_final`.

Both backends walk each tile's list in batches of Gaussians and compute a batch's
transmittances with a cumulative product, so they agree to rounding.

The Triton backward walks front to back as well, recomputing the forward's transmittances
exactly rather than dividing them back out of T_final (no drift for long lists); the colour
behind Gaussian i is then the pixel's final colour minus what was accumulated up to i.
"""

from __future__ import annotations

import torch

from ._backend import HAS_TRITON
from .projection import TILE, tile_grid

ALPHA_MAX = 0.99
ALPHA_MIN = 1.0 / 255.0
T_MIN = 1e-4
# elements of one [tiles, 256, gaussians] slab in the torch backend (~4M floats = 16 MB each)
TORCH_SLAB = 1 << 22


def _tile_pixels(tile_ids: torch.Tensor, tiles_x: int, dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """Pixel-centre coordinates of the 256 pixels of each tile: two [T, 256] tensors."""
    p = torch.arange(TILE * TILE, device=tile_ids.device)
    px = (tile_ids % tiles_x)[:, None] * TILE + p % TILE
    py = (tile_ids // tiles_x)[:, None] * TILE + p // TILE
    return px.to(dtype) + 0.5, py.to(dtype) + 0.5


def blend_torch(means2d, conics, opacities, colors, background, isect_ids, tile_ranges, width, height):
    """Plain-torch blending, differentiable through autograd; bins by tile like the kernel.

    means2d: [N, 2], conics: [N, 3], opacities: [N], colors: [N, C], background: [C] or None,
    isect_ids: [M] int32, tile_ranges: [tiles, 2] int32 (from `bin_tiles`).
    Returns image [H, W, C] and alpha [H, W, 1].
    """
    tiles_x, tiles_y = tile_grid(width, height)
    num_tiles = tiles_x * tiles_y
    dev, dtype, C = colors.device, colors.dtype, colors.shape[1]
    counts = (tile_ranges[:, 1] - tile_ranges[:, 0]).long()
    busy = torch.nonzero(counts > 0).flatten()
    busy = busy[torch.argsort(counts[busy])]  # similar lengths together: less padding
    busy_counts = counts[busy].tolist()

    chunks_color, chunks_T, chunks_ids = [], [], []
    i = 0
    while True:
        # always one pass, possibly empty, so outputs stay in the autograd graph
        longest = busy_counts[i] if i < len(busy) else 0
        n = max(1, TORCH_SLAB // (TILE * TILE * max(longest, 1)))
        j = min(len(busy), i + n)
        while j > i + 1 and busy_counts[j - 1] * (j - i) * TILE * TILE > TORCH_SLAB:
            j -= 1
        tiles = busy[i:j]
        longest = busy_counts[j - 1] if j > i else 0
        color, T = _blend_tiles_torch(
            means2d, conics, opacities, colors, isect_ids, tile_ranges, tiles, longest, tiles_x
        )
        chunks_color.append(color)
        chunks_T.append(T)
        chunks_ids.append(tiles)
        i = j
        if i >= len(busy):
            break
    ids = torch.cat(chunks_ids)
    color = torch.zeros(num_tiles, TILE * TILE, C, device=dev, dtype=dtype).index_copy(0, ids, torch.cat(chunks_color))
    T = torch.ones(num_tiles, TILE * TILE, device=dev, dtype=dtype).index_copy(0, ids, torch.cat(chunks_T))
    color = color.reshape(tiles_y, tiles_x, TILE, TILE, C).permute(0, 2, 1, 3, 4)
    color = color.reshape(tiles_y * TILE, tiles_x * TILE, C)[:height, :width]
    T = T.reshape(tiles_y, tiles_x, TILE, TILE).permute(0, 2, 1, 3).reshape(tiles_y * TILE, tiles_x * TILE)
    T = T[:height, :width, None]
    image = color if background is None else color + T * background
    return image, 1 - T


def _blend_tiles_torch(means2d, conics, opacities, colors, isect_ids, tile_ranges, tiles, longest, tiles_x):
    """Blend the tiles `tiles` [T], each holding at most `longest` Gaussians: color [T, 256, C], T_final [T, 256]."""
    dtype = colors.dtype
    k = torch.arange(longest, device=tiles.device)
    start = tile_ranges[tiles, 0].long()
    count = (tile_ranges[tiles, 1] - tile_ranges[tiles, 0]).long()
    present = k[None, :] < count[:, None]  # [T, L]
    pos = (start[:, None] + k[None, :]).clamp(max=max(len(isect_ids) - 1, 0))
    gid = isect_ids[pos].long() if len(isect_ids) else pos
    px, py = _tile_pixels(tiles, tiles_x, dtype)
    mean, conic = means2d[gid], conics[gid]  # [T, L, 2], [T, L, 3]
    dx = px[:, :, None] - mean[:, None, :, 0]  # [T, 256, L]
    dy = py[:, :, None] - mean[:, None, :, 1]
    power = -0.5 * (conic[:, None, :, 0] * dx * dx + conic[:, None, :, 2] * dy * dy) - conic[:, None, :, 1] * dx * dy
    alpha = torch.clamp_max(opacities[gid][:, None, :] * torch.exp(power), ALPHA_MAX)
    alpha = torch.where(present[:, None, :] & (alpha >= ALPHA_MIN), alpha, torch.zeros_like(alpha))
    with torch.no_grad():
        # the running transmittance only falls, so "still above 1e-4" holds for a prefix
        keep = torch.cumprod(1 - alpha, dim=-1) >= T_MIN
    alpha = torch.where(keep, alpha, torch.zeros_like(alpha))
    trans = torch.cumprod(1 - alpha, dim=-1)
    T_before = torch.cat([torch.ones_like(trans[..., :1]), trans[..., :-1]], dim=-1)
    weights = alpha * T_before
    color = torch.einsum("tpl,tlc->tpc", weights, colors[gid])
    T_final = trans[..., -1] if longest else torch.ones_like(px)
    return color, T_final


if HAS_TRITON:
    import triton
    import triton.language as tl

    @triton.jit
    def _batch_alphas(isect_ptr, means2d_ptr, conics_ptr, opac_ptr, i0, end, px, py, done, T,
                      BATCH: tl.constexpr):
        """Alphas of one batch of a tile's Gaussians at the tile's 256 pixels, after the skip
        and stop rules; also the pixels' transmittance after the batch."""
        offs = i0 + tl.arange(0, BATCH)
        gm = offs < end
        gid = tl.load(isect_ptr + offs, mask=gm, other=0)
        mx = tl.load(means2d_ptr + gid * 2 + 0, mask=gm, other=0.0)
        my = tl.load(means2d_ptr + gid * 2 + 1, mask=gm, other=0.0)
        ca = tl.load(conics_ptr + gid * 3 + 0, mask=gm, other=0.0)
        cb = tl.load(conics_ptr + gid * 3 + 1, mask=gm, other=0.0)
        cc = tl.load(conics_ptr + gid * 3 + 2, mask=gm, other=0.0)
        op = tl.load(opac_ptr + gid, mask=gm, other=0.0)
        dx = px[:, None] - mx[None, :]
        dy = py[:, None] - my[None, :]
        power = -0.5 * (ca[None, :] * dx * dx + cc[None, :] * dy * dy) - cb[None, :] * dx * dy
        g = tl.exp(power)
        raw = op[None, :] * g
        alpha = tl.minimum(raw, 0.99)
        use = gm[None, :] & (alpha >= 1.0 / 255.0) & (done == 0)[:, None]
        alpha = tl.where(use, alpha, 0.0)
        keep = T[:, None] * tl.cumprod(1.0 - alpha, axis=1) >= 1e-4
        stopped = tl.max(tl.where(keep, 0, 1), axis=1)
        alpha = tl.where(keep, alpha, 0.0)
        trans = tl.cumprod(1.0 - alpha, axis=1)
        T_before = T[:, None] * trans / (1.0 - alpha)
        T_after = T * tl.min(trans, axis=1)
        return gid, gm, dx, dy, ca, cb, cc, g, raw, alpha, T_before, T_after, stopped

    @triton.jit
    def _tile_setup(ranges_ptr, width, height, tiles_x):
        tile = tl.program_id(0)
        p = tl.arange(0, 256)
        row = (tile // tiles_x) * 16 + p // 16
        col = (tile % tiles_x) * 16 + p % 16
        inside = (row < height) & (col < width)
        start = tl.load(ranges_ptr + tile * 2)
        end = tl.load(ranges_ptr + tile * 2 + 1)
        pix = row * width + col
        return col.to(tl.float32) + 0.5, row.to(tl.float32) + 0.5, inside, pix, start, end

    @triton.jit
    def _blend_fwd_kernel(
        ranges_ptr, isect_ptr, means2d_ptr, conics_ptr, opac_ptr, colors_ptr,
        color_out_ptr, T_out_ptr,
        width, height, tiles_x,
        C: tl.constexpr, CP: tl.constexpr, BATCH: tl.constexpr,
    ):
        px, py, inside, pix, start, end = _tile_setup(ranges_ptr, width, height, tiles_x)
        chan = tl.arange(0, CP)
        T = tl.full([256], 1.0, tl.float32)
        done = tl.where(inside, 0, 1)
        acc = tl.zeros([256, CP], tl.float32)
        i0 = start
        while (i0 < end) & (tl.min(done) == 0):
            gid, gm, dx, dy, ca, cb, cc, g, raw, alpha, T_before, T_after, stopped = _batch_alphas(
                isect_ptr, means2d_ptr, conics_ptr, opac_ptr, i0, end, px, py, done, T, BATCH)
            w = alpha * T_before
            for c in tl.static_range(C):
                col_c = tl.load(colors_ptr + gid * C + c, mask=gm, other=0.0)
                acc += tl.sum(w * col_c[None, :], axis=1)[:, None] * (chan == c)[None, :]
            T = T_after
            done = done | stopped
            i0 += BATCH
        tl.store(color_out_ptr + pix[:, None] * C + chan[None, :], acc, mask=inside[:, None] & (chan < C)[None, :])
        tl.store(T_out_ptr + pix, T, mask=inside)

    @triton.jit
    def _blend_bwd_kernel(
        ranges_ptr, isect_ptr, means2d_ptr, conics_ptr, opac_ptr, colors_ptr,
        color_ptr, T_final_ptr, bg_ptr, g_image_ptr, g_alpha_ptr,
        g_means2d_ptr, g_conics_ptr, g_opac_ptr, g_colors_ptr,
        width, height, tiles_x,
        C: tl.constexpr, CP: tl.constexpr, BATCH: tl.constexpr,
    ):
        px, py, inside, pix, start, end = _tile_setup(ranges_ptr, width, height, tiles_x)
        chan = tl.arange(0, CP)
        cm = inside[:, None] & (chan < C)[None, :]
        g_img = tl.load(g_image_ptr + pix[:, None] * C + chan[None, :], mask=cm, other=0.0)
        total = tl.load(color_ptr + pix[:, None] * C + chan[None, :], mask=cm, other=0.0)
        bg = tl.load(bg_ptr + chan, mask=chan < C, other=0.0)
        T_final = tl.load(T_final_ptr + pix, mask=inside, other=1.0)
        g_alpha_out = tl.load(g_alpha_ptr + pix, mask=inside, other=0.0)
        # colour that lies behind every Gaussian seen so far, background included
        behind = total + T_final[:, None] * bg[None, :]
        T = tl.full([256], 1.0, tl.float32)
        done = tl.where(inside, 0, 1)
        i0 = start
        while (i0 < end) & (tl.min(done) == 0):
            gid, gm, dx, dy, ca, cb, cc, g, raw, alpha, T_before, T_after, stopped = _batch_alphas(
                isect_ptr, means2d_ptr, conics_ptr, opac_ptr, i0, end, px, py, done, T, BATCH)
            w = alpha * T_before
            inv_1ma = 1.0 / (1.0 - alpha)
            g_a = g_alpha_out[:, None] * T_final[:, None] * inv_1ma
            for c in tl.static_range(C):
                sel = (chan == c)[None, :]
                col_c = tl.load(colors_ptr + gid * C + c, mask=gm, other=0.0)
                g_c = tl.sum(tl.where(sel, g_img, 0.0), axis=1)
                behind_c = tl.sum(tl.where(sel, behind, 0.0), axis=1)
                contrib = w * col_c[None, :]
                after = behind_c[:, None] - tl.cumsum(contrib, axis=1)  # colour behind each Gaussian
                g_a += g_c[:, None] * (T_before * col_c[None, :] - after * inv_1ma)
                behind -= tl.where(sel, tl.sum(contrib, axis=1)[:, None], 0.0)
                tl.atomic_add(g_colors_ptr + gid * C + c, tl.sum(g_c[:, None] * w, axis=0), mask=gm)
            g_a = tl.where((alpha > 0) & (raw < 0.99), g_a, 0.0)
            g_power = g_a * raw
            g_mx = tl.sum(g_power * (ca[None, :] * dx + cb[None, :] * dy), axis=0)
            g_my = tl.sum(g_power * (cb[None, :] * dx + cc[None, :] * dy), axis=0)
            tl.atomic_add(g_means2d_ptr + gid * 2 + 0, g_mx, mask=gm)
            tl.atomic_add(g_means2d_ptr + gid * 2 + 1, g_my, mask=gm)
            tl.atomic_add(g_conics_ptr + gid * 3 + 0, tl.sum(-0.5 * g_power * dx * dx, axis=0), mask=gm)
            tl.atomic_add(g_conics_ptr + gid * 3 + 1, tl.sum(-g_power * dx * dy, axis=0), mask=gm)
            tl.atomic_add(g_conics_ptr + gid * 3 + 2, tl.sum(-0.5 * g_power * dy * dy, axis=0), mask=gm)
            tl.atomic_add(g_opac_ptr + gid, tl.sum(g_a * g, axis=0), mask=gm)
            T = T_after
            done = done | stopped
            i0 += BATCH


_BATCH = 32


class _BlendTiles(torch.autograd.Function):
    """Triton blending; gradients to means2d, conics, opacities, colors and background."""

    @staticmethod
    def forward(ctx, means2d, conics, opacities, colors, background, isect_ids, tile_ranges, width, height):
        tiles_x, tiles_y = tile_grid(width, height)
        C = colors.shape[1]
        dev = colors.device
        color = torch.zeros(height, width, C, device=dev, dtype=torch.float32)
        T_final = torch.ones(height, width, device=dev, dtype=torch.float32)
        if len(isect_ids):
            _blend_fwd_kernel[(tiles_x * tiles_y,)](
                tile_ranges, isect_ids, means2d, conics, opacities, colors, color, T_final,
                width, height, tiles_x, C=C, CP=triton.next_power_of_2(C), BATCH=_BATCH,
            )
        bg = torch.zeros(C, device=dev, dtype=torch.float32) if background is None else background
        ctx.save_for_backward(means2d, conics, opacities, colors, bg, isect_ids, tile_ranges, color, T_final)
        ctx.size = (width, height)
        ctx.has_bg = background is not None
        image = color + T_final[..., None] * bg
        return image, (1 - T_final)[..., None]

    @staticmethod
    def backward(ctx, g_image, g_alpha):
        means2d, conics, opacities, colors, bg, isect_ids, tile_ranges, color, T_final = ctx.saved_tensors
        width, height = ctx.size
        tiles_x, tiles_y = tile_grid(width, height)
        C = colors.shape[1]
        g_means2d = torch.zeros_like(means2d)
        g_conics = torch.zeros_like(conics)
        g_opac = torch.zeros_like(opacities)
        g_colors = torch.zeros_like(colors)
        g_image = g_image.contiguous()
        g_alpha = g_alpha.contiguous()
        if len(isect_ids):
            _blend_bwd_kernel[(tiles_x * tiles_y,)](
                tile_ranges, isect_ids, means2d, conics, opacities, colors,
                color, T_final, bg, g_image, g_alpha,
                g_means2d, g_conics, g_opac, g_colors,
                width, height, tiles_x, C=C, CP=triton.next_power_of_2(C), BATCH=_BATCH,
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
