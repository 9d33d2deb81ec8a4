"""Tile binning and depth ordering: which Gaussians touch each 16x16 tile, front to back.

The result is the list of (tile, Gaussian) intersections ordered by tile, then camera depth,
then Gaussian index (the last only breaks exact depth ties, so both backends agree bit for bit):
`isect_ids [M] int32` (Gaussian index per intersection) and `tile_ranges [tiles, 2] int32`
(each tile's [start, end) in that list).

Triton path: a counting sort by tile (per-tile counts with atomics, a prefix sum, a scatter into
each tile's bucket), then a per-tile sort of unique 64-bit keys (depth bits << 32 | index): blocks
sorted by rank, then merged pairwise by rank until each tile is one run. Its one host
synchronisation reads the number of intersections; its `isect_ids` may hold entries past a
tile's range (id -1) if the scatter pass ever found fewer hits than the count pass. `bin_tiles_torch`
does the same with one `torch.sort` and is the reference. No gradients flow here.

Given conics and opacities, a (tile, Gaussian) pair of the 3-sigma rectangle is dropped when no
pixel centre of the tile can reach alpha >= 1/255: the Gaussian's smallest Mahalanobis distance
to the tile's pixel-centre box decides it. Such a Gaussian would be skipped at every pixel of
that tile anyway, so the image is unchanged, but blending does less work (the round footprint
leaves the rectangle's corner tiles, and faint Gaussians reach less than 3 sigma).
"""

from __future__ import annotations

import torch

from ._backend import HAS_TRITON
from .projection import tile_grid, tile_rects

SORT_BLOCK = 128


def _rects_and_keys(means2d, radii, depths, width, height):
    rect = tile_rects(means2d, radii, width, height)
    rect = torch.where((radii > 0)[:, None], rect, torch.zeros_like(rect))
    counts = (rect[:, 2] - rect[:, 0]) * (rect[:, 3] - rect[:, 1])
    depth_bits = depths.detach().float().contiguous().view(torch.int32).long()
    return rect, counts, depth_bits


# slack on the squared Mahalanobis distance so rounding never drops a pixel that reaches 1/255
HIT_SLACK = 1e-3


def _tile_hit_torch(means2d, conics, opacities, tx, ty):
    """Whether a Gaussian can reach alpha >= 1/255 at some pixel centre of tile (tx, ty).

    means2d [K, 2], conics [K, 3], opacities [K], tx, ty [K] int64 -> [K] bool. The smallest
    q = d^T Q d over the tile's pixel-centre box is 0 when the mean lies inside, else it is on
    an edge, where q is a 1-D quadratic minimised in closed form.
    """
    A, B, C = conics[:, 0], conics[:, 1], conics[:, 2]
    x0 = tx.to(A.dtype) * 16 + 0.5 - means2d[:, 0]
    x1 = x0 + 15.0
    y0 = ty.to(A.dtype) * 16 + 0.5 - means2d[:, 1]
    y1 = y0 + 15.0
    q = torch.full_like(A, float("inf"))
    for xe in (x0, x1):  # vertical edges: x fixed, best y
        y = torch.minimum(torch.maximum(-B * xe / C, y0), y1)
        q = torch.minimum(q, A * xe * xe + 2 * B * xe * y + C * y * y)
    for ye in (y0, y1):  # horizontal edges
        x = torch.minimum(torch.maximum(-B * ye / A, x0), x1)
        q = torch.minimum(q, A * x * x + 2 * B * x * ye + C * ye * ye)
    inside = (x0 <= 0) & (x1 >= 0) & (y0 <= 0) & (y1 >= 0)
    q = torch.where(inside, torch.zeros_like(q), q)
    return q <= 2 * torch.log(255 * opacities) + HIT_SLACK


def bin_tiles_torch(means2d, radii, depths, width, height, conics=None, opacities=None):
    """Reference binning with one torch.sort. Inputs: means2d [N, 2], radii [N] int32, depths [N],
    and optionally conics [N, 3] and opacities [N] to drop tiles the Gaussian cannot reach.

    Returns isect_ids [M] int32 and tile_ranges [tiles_y * tiles_x, 2] int32.
    """
    tiles_x, tiles_y = tile_grid(width, height)
    dev = means2d.device
    rect, counts, depth_bits = _rects_and_keys(means2d, radii, depths, width, height)
    gauss = torch.repeat_interleave(torch.arange(len(counts), device=dev), counts)
    first = torch.cumsum(counts, 0) - counts
    local = torch.arange(len(gauss), device=dev) - first[gauss]
    rw = (rect[:, 2] - rect[:, 0])[gauss]
    ty = rect[gauss, 1] + local // rw
    tx = rect[gauss, 0] + local % rw
    if conics is not None and opacities is not None:
        hit = _tile_hit_torch(means2d.detach()[gauss], conics.detach()[gauss], opacities.detach()[gauss], tx, ty)
        gauss, tx, ty = gauss[hit], tx[hit], ty[hit]
    tile = ty * tiles_x + tx
    # depths of visible Gaussians are >= 0.01, so their float bits sort like the floats
    key = (tile << 32) | depth_bits[gauss]
    order = torch.sort(key, stable=True).indices  # stable: equal depths stay in index order
    isect_ids = gauss[order].int()
    per_tile = torch.bincount(tile, minlength=tiles_x * tiles_y)
    end = torch.cumsum(per_tile, 0)
    tile_ranges = torch.stack([end - per_tile, end], dim=-1).int()
    return isect_ids, tile_ranges


if HAS_TRITON:
    import triton
    import triton.language as tl

    @triton.jit
    def _rect_loop(rect_ptr, offs, m):
        x0 = tl.load(rect_ptr + offs * 4 + 0, mask=m, other=0)
        y0 = tl.load(rect_ptr + offs * 4 + 1, mask=m, other=0)
        x1 = tl.load(rect_ptr + offs * 4 + 2, mask=m, other=0)
        y1 = tl.load(rect_ptr + offs * 4 + 3, mask=m, other=0)
        rw = x1 - x0
        count = rw * (y1 - y0)
        return x0, y0, rw, count

    @triton.jit
    def _gaussian_2d(means2d_ptr, conics_ptr, opac_ptr, offs, m, CULL: tl.constexpr):
        if CULL:
            mx = tl.load(means2d_ptr + offs * 2 + 0, mask=m, other=0.0)
            my = tl.load(means2d_ptr + offs * 2 + 1, mask=m, other=0.0)
            # culled Gaussians have zero conics (and no tiles): keep their lanes finite
            A = tl.load(conics_ptr + offs * 3 + 0, mask=m, other=1.0)
            A = tl.where(A > 0, A, 1.0)
            B = tl.load(conics_ptr + offs * 3 + 1, mask=m, other=0.0)
            C = tl.load(conics_ptr + offs * 3 + 2, mask=m, other=1.0)
            C = tl.where(C > 0, C, 1.0)
            q_max = 2.0 * tl.log(255.0 * tl.load(opac_ptr + offs, mask=m, other=1.0)) + 1e-3
        else:
            mx = tl.zeros_like(offs.to(tl.float32))
            my = mx
            B = mx
            A = mx + 1.0
            C = A
            q_max = A
        return mx, my, A, B, C, q_max

    @triton.jit
    def _tile_hit(mx, my, A, B, C, q_max, tx, ty, CULL: tl.constexpr):
        """Same test as `_tile_hit_torch`: can the Gaussian reach 1/255 inside tile (tx, ty)?"""
        if CULL:
            x0 = tx.to(tl.float32) * 16.0 + 0.5 - mx
            x1 = x0 + 15.0
            y0 = ty.to(tl.float32) * 16.0 + 0.5 - my
            y1 = y0 + 15.0
            y = tl.minimum(tl.maximum(-B * x0 / C, y0), y1)
            q = A * x0 * x0 + 2.0 * B * x0 * y + C * y * y
            y = tl.minimum(tl.maximum(-B * x1 / C, y0), y1)
            q = tl.minimum(q, A * x1 * x1 + 2.0 * B * x1 * y + C * y * y)
            x = tl.minimum(tl.maximum(-B * y0 / A, x0), x1)
            q = tl.minimum(q, A * x * x + 2.0 * B * x * y0 + C * y0 * y0)
            x = tl.minimum(tl.maximum(-B * y1 / A, x0), x1)
            q = tl.minimum(q, A * x * x + 2.0 * B * x * y1 + C * y1 * y1)
            inside = (x0 <= 0) & (x1 >= 0) & (y0 <= 0) & (y1 >= 0)
            q = tl.where(inside, 0.0, q)
            return q <= q_max
        else:
            return tx >= 0

    @triton.jit
    def _tile_count_kernel(rect_ptr, means2d_ptr, conics_ptr, opac_ptr, tile_counts_ptr, N, tiles_x,
                           BLOCK: tl.constexpr, CULL: tl.constexpr):
        offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
        m = offs < N
        x0, y0, rw, count = _rect_loop(rect_ptr, offs, m)
        rw = tl.maximum(rw, 1)
        mx, my, A, B, C, q_max = _gaussian_2d(means2d_ptr, conics_ptr, opac_ptr, offs, m, CULL)
        for k in range(0, tl.max(count)):
            tx = x0 + k % rw
            ty = y0 + k // rw
            hit = (k < count) & _tile_hit(mx, my, A, B, C, q_max, tx, ty, CULL)
            tl.atomic_add(tile_counts_ptr + ty * tiles_x + tx, 1, mask=hit, sem="relaxed")

    @triton.jit
    def _tile_scatter_kernel(rect_ptr, means2d_ptr, conics_ptr, opac_ptr, depth_bits_ptr, cursor_ptr, ranges_ptr,
                             keys_ptr, N, tiles_x, BLOCK: tl.constexpr, CULL: tl.constexpr):
        """Writes each hit's key at its tile's cursor. Writes stop at the tile's end from the count
        pass: if the two passes ever disagreed (the same float test, compiled twice), a surplus hit
        is dropped rather than written into the next tile's bucket; a missing one leaves the
        slot's sentinel, which sorts last and is cut off the tile's range afterwards."""
        offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
        m = offs < N
        x0, y0, rw, count = _rect_loop(rect_ptr, offs, m)
        rw = tl.maximum(rw, 1)
        mx, my, A, B, C, q_max = _gaussian_2d(means2d_ptr, conics_ptr, opac_ptr, offs, m, CULL)
        key = (tl.load(depth_bits_ptr + offs, mask=m, other=0).to(tl.int64) << 32) | offs.to(tl.int64)
        for k in range(0, tl.max(count)):
            tx = x0 + k % rw
            ty = y0 + k // rw
            hit = (k < count) & _tile_hit(mx, my, A, B, C, q_max, tx, ty, CULL)
            tile = ty * tiles_x + tx
            # relaxed: each hit needs a slot of its own, not an order against other memory
            pos = tl.atomic_add(cursor_ptr + tile, 1, mask=hit, sem="relaxed")
            tile_end = tl.load(ranges_ptr + tile * 2 + 1, mask=hit, other=0)
            tl.store(keys_ptr + pos, key, mask=hit & (pos < tile_end))

    @triton.jit
    def _block_sort_kernel(keys_ptr, ranges_ptr, block_tile_ptr, block_start_ptr, BLOCK: tl.constexpr):
        """Sorts one block of up to BLOCK keys inside one tile's segment, in place."""
        b = tl.program_id(0)
        tile = tl.load(block_tile_ptr + b)
        start = tl.load(block_start_ptr + b)
        end = tl.minimum(tl.load(ranges_ptr + tile * 2 + 1), start + BLOCK)
        offs = start + tl.arange(0, BLOCK)
        m = offs < end
        big = 0x7FFFFFFFFFFFFFFF
        keys = tl.load(keys_ptr + offs, mask=m, other=big)
        # keys are unique, so a key's rank (how many keys are smaller) is its sorted place;
        # BLOCK^2 compares in registers beat a bitonic network at this size
        rank = tl.sum((keys[None, :] < keys[:, None]).to(tl.int32), axis=1)
        tl.store(keys_ptr + start + rank, keys, mask=m)

    @triton.jit
    def _merge_kernel(src_ptr, dst_ptr, seg_start_ptr, seg_end_ptr, longest_ptr, M, run, steps, BLOCK: tl.constexpr):
        """One merge pass: each key moves to (its index in its run + its rank in the partner run).

        Runs of length `run` inside one tile's segment are merged pairwise. Keys are unique, so
        the rank (number of partner keys below it) places every key exactly once. The longest
        segment's length stays on the device: once `run` reaches it every tile is one run, and
        the pass does nothing (writes nothing), so the host need not know how many passes count.
        """
        if run >= tl.load(longest_ptr):
            return
        offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
        m = offs < M
        seg0 = tl.load(seg_start_ptr + offs, mask=m, other=0)
        seg1 = tl.load(seg_end_ptr + offs, mask=m, other=0)
        key = tl.load(src_ptr + offs, mask=m, other=0)
        local = offs - seg0
        run_id = local // run
        pair0 = seg0 + (run_id // 2) * 2 * run
        own0 = seg0 + run_id * run
        is_left = (run_id % 2) == 0
        lo = tl.where(is_left, own0 + run, pair0)
        hi = tl.minimum(tl.where(is_left, own0 + 2 * run, own0), seg1)
        hi = tl.maximum(hi, lo)
        for _ in range(0, steps):  # lower bound of key in src[lo:hi]
            active = lo < hi
            mid = (lo + hi) // 2
            v = tl.load(src_ptr + mid, mask=m & active, other=0)
            right = active & (v < key)
            lo = tl.where(right, mid + 1, lo)
            hi = tl.where(active & ~right, mid, hi)
        p_lo = tl.where(is_left, own0 + run, pair0)
        rank = lo - p_lo
        tl.store(dst_ptr + pair0 + (offs - own0) + rank, key, mask=m)


# Key of an empty slot: its high word (0x7FFFFFFF, a NaN's bits) is above every visible depth's,
# so sentinels sort to the end of their tile; its low word is the slot, so keys stay unique.
SENTINEL_HI = 0x7FFFFFFF
BIN_BLOCK = 128
MERGE_BLOCK = 1024


def bin_tiles_triton(means2d, radii, depths, width, height, conics=None, opacities=None):
    """Triton binning: same outputs as `bin_tiles_torch`.

    One host synchronisation (reading the number of intersections, to size the key buffer);
    every other size stays on the device. Should the scatter pass find fewer hits than the
    count pass, the missing slots keep their sentinel keys: they sort last and each tile's
    range ends before them (their ids read -1); surplus hits are never written.
    """
    tiles_x, tiles_y = tile_grid(width, height)
    num_tiles = tiles_x * tiles_y
    dev = means2d.device
    rect, _, depth_bits = _rects_and_keys(means2d, radii, depths, width, height)
    rect = rect.int().contiguous()
    n = rect.shape[0]
    tile_counts = torch.zeros(num_tiles, device=dev, dtype=torch.int32)
    cull = conics is not None and opacities is not None
    gauss2d = [x.detach().float().contiguous() for x in (means2d, conics, opacities)] if cull else [rect, rect, rect]
    grid = (triton.cdiv(n, BIN_BLOCK),)
    if n:
        _tile_count_kernel[grid](rect, *gauss2d, tile_counts, n, tiles_x, BLOCK=BIN_BLOCK, CULL=cull, num_warps=4)
    end = torch.cumsum(tile_counts, 0, dtype=torch.int32)
    start = end - tile_counts
    buckets = torch.stack([start, end], dim=-1).contiguous()
    total = int(end[-1]) if num_tiles else 0  # the one host synchronisation: sizes the key buffer
    if total == 0:
        return torch.zeros(0, device=dev, dtype=torch.int32), buckets
    keys = (SENTINEL_HI << 32) | torch.arange(total, device=dev, dtype=torch.int64)
    cursor = start.clone()
    _tile_scatter_kernel[grid](
        rect, *gauss2d, depth_bits.int().contiguous(), cursor, buckets, keys, n, tiles_x,
        BLOCK=BIN_BLOCK, CULL=cull, num_warps=4,
    )
    # what each tile's bucket really holds (the whole bucket unless the passes disagreed)
    tile_ranges = torch.stack([start, torch.minimum(cursor, end)], dim=-1).contiguous()

    # sort each bucket: blocks of SORT_BLOCK first. Their number is bounded on the host (each
    # non-empty tile adds at most one partial block); blocks past the real ones sort nothing.
    blocks_per_tile = (tile_counts + SORT_BLOCK - 1) // SORT_BLOCK
    blocks_end = torch.cumsum(blocks_per_tile, 0)
    n_blocks = total // SORT_BLOCK + min(num_tiles, total)
    block = torch.arange(n_blocks, device=dev)
    block_tile = torch.searchsorted(blocks_end, block, right=True).clamp_(max=num_tiles - 1)
    block_start = start[block_tile] + (block - (blocks_end - blocks_per_tile)[block_tile]) * SORT_BLOCK
    block_start = torch.where(block < blocks_end[-1], block_start, total).int()
    _block_sort_kernel[(n_blocks,)](keys, buckets, block_tile.int(), block_start, BLOCK=SORT_BLOCK, num_warps=4)

    # then merge runs pairwise inside each bucket until every tile is one run. A tile holds each
    # Gaussian at most once, so min(total, n) bounds the longest bucket on the host; passes
    # beyond the true longest (kept on the device) do nothing, and the result is in `keys` or
    # `other` by the parity of the passes that did work.
    bound = min(total, n)
    if bound > SORT_BLOCK:
        longest = tile_counts.max().reshape(1)
        tile_of = torch.repeat_interleave(torch.arange(num_tiles, device=dev), tile_counts, output_size=total)
        seg_start = start[tile_of].contiguous()
        seg_end = end[tile_of].contiguous()
        buf_a, buf_b = keys, torch.empty_like(keys)
        src, dst = buf_a, buf_b
        run, worked = SORT_BLOCK, torch.zeros((), device=dev, dtype=torch.int32)
        while run < bound:
            _merge_kernel[(triton.cdiv(total, MERGE_BLOCK),)](
                src, dst, seg_start, seg_end, longest, total, run, max(1, run.bit_length()),
                BLOCK=MERGE_BLOCK, num_warps=4,
            )
            worked += (longest[0] > run).int()
            src, dst = dst, src
            run *= 2
        # after w working passes the sorted keys are in the first buffer if w is even
        keys = torch.where(worked % 2 == 0, buf_a, buf_b)
    isect_ids = torch.where((keys >> 32) == SENTINEL_HI, -1, keys & 0xFFFFFFFF).int()
    return isect_ids, tile_ranges


def bin_tiles(means2d, radii, depths, width, height, backend="torch", conics=None, opacities=None):
    """Bin visible Gaussians (radii > 0) into tiles, each tile's list ordered front to back.

    means2d: [N, 2], radii: [N] int32, depths: [N]; with conics [N, 3] and opacities [N], tiles
    a Gaussian cannot reach 1/255 in are left out. Returns isect_ids [M] int32 and
    tile_ranges [tiles, 2] int32 (row-major tiles, tiles_x = ceil(width / 16)).
    """
    with torch.no_grad():
        if backend == "torch":
            return bin_tiles_torch(means2d, radii, depths, width, height, conics, opacities)
        return bin_tiles_triton(means2d, radii, depths, width, height, conics, opacities)


def gpu_launches():
    """The binning launches as made on CUDA (see `_backend.Launch`)."""
    from ._backend import Launch

    i32 = "*i32"
    return [
        Launch("_tile_count_kernel", {"BLOCK": BIN_BLOCK, "CULL": True}, 4, {"rect_ptr": i32, "tile_counts_ptr": i32}),
        Launch("_tile_scatter_kernel", {"BLOCK": BIN_BLOCK, "CULL": True}, 4,
               {"rect_ptr": i32, "depth_bits_ptr": i32, "cursor_ptr": i32, "ranges_ptr": i32, "keys_ptr": "*i64"}),
        Launch("_block_sort_kernel", {"BLOCK": SORT_BLOCK}, 4,
               {"keys_ptr": "*i64", "ranges_ptr": i32, "block_tile_ptr": i32, "block_start_ptr": i32}),
        Launch("_merge_kernel", {"BLOCK": MERGE_BLOCK}, 4,
               {"src_ptr": "*i64", "dst_ptr": "*i64", "seg_start_ptr": i32, "seg_end_ptr": i32, "longest_ptr": i32}),
    ]
