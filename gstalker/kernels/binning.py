"""Tile binning and depth ordering: which Gaussians touch each 16x16 tile, front to back.

The result is the list of (tile, Gaussian) intersections ordered by tile, then camera depth,
then Gaussian index (the last only breaks exact depth ties, so both backends agree bit for bit):
`isect_ids [M] int32` (Gaussian index per intersection) and `tile_ranges [tiles, 2] int32`
(each tile's [start, end) in that list).

Triton path: a counting sort by tile (per-tile counts with atomics, one program's prefix sum, a
scatter of unique 64-bit keys, depth bits << 32 | index, into each tile's bucket), then each
tile sorts its bucket by rank (a key's place is the number of the tile's keys below it), in four
launches with one host synchronisation (reading the number of intersections and the longest
tile). `isect_ids` may hold entries past a tile's range (id -1) if the scatter pass ever found
fewer hits than the count pass. Very long tiles (and `SORT = "merge"`) sort by blocks and
pairwise merge passes instead. `bin_tiles_torch` does the same with one `torch.sort` and is the
reference. No gradients flow here.

Given conics and opacities, a (tile, Gaussian) pair of the 3-sigma rectangle is dropped when no
pixel centre of the tile can reach alpha >= 1/255: the Gaussian's smallest Mahalanobis distance
to the tile's pixel-centre box decides it. Such a Gaussian would be skipped at every pixel of
that tile anyway, so the image is unchanged, but blending does less work (the round footprint
leaves the rectangle's corner tiles, and faint Gaussians reach less than 3 sigma).
"""

from __future__ import annotations

import torch

from ._backend import HAS_TRITON
from .projection import TILE, tile_grid, tile_rects

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
    x0 = tx.to(A.dtype) * TILE + 0.5 - means2d[:, 0]  # the tile's first and last pixel centres
    x1 = x0 + (TILE - 1)
    y0 = ty.to(A.dtype) * TILE + 0.5 - means2d[:, 1]
    y1 = y0 + (TILE - 1)
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
    def _rect(means2d_ptr, radii_ptr, offs, m, tiles_x, tiles_y, TILE: tl.constexpr):
        """`tile_rects` in the kernel (the same float ops: x 1/TILE is exact like / TILE for a
        power of two): the first
        tile (x0, y0), the rectangle's width in tiles and its number of tiles; 0 where radius 0."""
        u = tl.load(means2d_ptr + offs * 2 + 0, mask=m, other=0.0)
        v = tl.load(means2d_ptr + offs * 2 + 1, mask=m, other=0.0)
        rad = tl.load(radii_ptr + offs, mask=m, other=0)
        r = rad.to(tl.float32)
        fx = tiles_x + 0.0  # (not .to: an int argument equal to 1 arrives as a constexpr)
        fy = tiles_y + 0.0
        inv = 1.0 / TILE
        x0 = tl.minimum(tl.maximum(tl.floor((u - r) * inv), 0.0), fx).to(tl.int32)
        x1 = tl.minimum(tl.maximum(tl.ceil((u + r) * inv), 0.0), fx).to(tl.int32)
        y0 = tl.minimum(tl.maximum(tl.floor((v - r) * inv), 0.0), fy).to(tl.int32)
        y1 = tl.minimum(tl.maximum(tl.ceil((v + r) * inv), 0.0), fy).to(tl.int32)
        on = rad > 0
        rw = tl.where(on, x1 - x0, 0)
        count = rw * tl.where(on, y1 - y0, 0)
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
    def _tile_hit(mx, my, A, B, C, q_max, tx, ty, CULL: tl.constexpr, TILE: tl.constexpr):
        """Same test as `_tile_hit_torch`: can the Gaussian reach 1/255 inside tile (tx, ty)?"""
        if CULL:
            x0 = tx.to(tl.float32) * (TILE * 1.0) + 0.5 - mx
            x1 = x0 + (TILE - 1.0)
            y0 = ty.to(tl.float32) * (TILE * 1.0) + 0.5 - my
            y1 = y0 + (TILE - 1.0)
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
    def _tile_count_kernel(means2d_ptr, radii_ptr, conics_ptr, opac_ptr, tile_counts_ptr, N, tiles_x, tiles_y,
                           BLOCK: tl.constexpr, CULL: tl.constexpr, TILE: tl.constexpr):
        offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
        m = offs < N
        x0, y0, rw, count = _rect(means2d_ptr, radii_ptr, offs, m, tiles_x, tiles_y, TILE)
        rw = tl.maximum(rw, 1)
        mx, my, A, B, C, q_max = _gaussian_2d(means2d_ptr, conics_ptr, opac_ptr, offs, m, CULL)
        for k in range(0, tl.max(count)):
            tx = x0 + k % rw
            ty = y0 + k // rw
            hit = (k < count) & _tile_hit(mx, my, A, B, C, q_max, tx, ty, CULL, TILE)
            tl.atomic_add(tile_counts_ptr + ty * tiles_x + tx, 1, mask=hit, sem="relaxed")

    @triton.jit
    def _tile_scan_kernel(counts_ptr, buckets_ptr, cursor_ptr, stats_ptr, num_tiles, BLOCK: tl.constexpr):
        """One program: exclusive scan of the tile counts into buckets [tiles, 2] (start, end) and
        the scatter cursors (= start), and stats = (total, longest tile) for the one host read."""
        carry = tl.program_id(0) * 0
        longest = carry
        for t0 in range(0, num_tiles, BLOCK):
            offs = t0 + tl.arange(0, BLOCK)
            m = offs < num_tiles
            c = tl.load(counts_ptr + offs, mask=m, other=0)
            incl = tl.cumsum(c, axis=0) + carry
            tl.store(buckets_ptr + offs * 2, incl - c, mask=m)
            tl.store(buckets_ptr + offs * 2 + 1, incl, mask=m)
            tl.store(cursor_ptr + offs, incl - c, mask=m)
            carry += tl.sum(c, axis=0)
            longest = tl.maximum(longest, tl.max(c, axis=0))
        tl.store(stats_ptr, carry)
        tl.store(stats_ptr + 1, longest)

    @triton.jit
    def _tile_scatter_kernel(means2d_ptr, radii_ptr, conics_ptr, opac_ptr, depths_ptr, cursor_ptr, ranges_ptr,
                             keys_ptr, N, tiles_x, tiles_y, BLOCK: tl.constexpr, CULL: tl.constexpr,
                             TILE: tl.constexpr):
        """Writes each hit's key at its tile's cursor. Writes stop at the tile's end from the count
        pass: if the two passes ever disagreed (the same float test, compiled twice), a surplus hit
        is dropped rather than written into the next tile's bucket; a missing one leaves its slot
        past the tile's cursor, which the sort cuts off the tile's range."""
        offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
        m = offs < N
        x0, y0, rw, count = _rect(means2d_ptr, radii_ptr, offs, m, tiles_x, tiles_y, TILE)
        rw = tl.maximum(rw, 1)
        mx, my, A, B, C, q_max = _gaussian_2d(means2d_ptr, conics_ptr, opac_ptr, offs, m, CULL)
        # depths of visible Gaussians are >= 0.01, so their float bits sort like the floats
        bits = tl.load(depths_ptr + offs, mask=m, other=0.0).to(tl.int32, bitcast=True)
        key = (bits.to(tl.int64) << 32) | offs.to(tl.int64)
        for k in range(0, tl.max(count)):
            tx = x0 + k % rw
            ty = y0 + k // rw
            hit = (k < count) & _tile_hit(mx, my, A, B, C, q_max, tx, ty, CULL, TILE)
            tile = ty * tiles_x + tx
            # relaxed: each hit needs a slot of its own, not an order against other memory
            pos = tl.atomic_add(cursor_ptr + tile, 1, mask=hit, sem="relaxed")
            tile_end = tl.load(ranges_ptr + tile * 2 + 1, mask=hit, other=0)
            tl.store(keys_ptr + pos, key, mask=hit & (pos < tile_end))

    @triton.jit
    def _tile_rank_sort_kernel(keys_ptr, buckets_ptr, cursor_ptr, ids_ptr, ranges_ptr,
                               BLOCK: tl.constexpr, CHUNK: tl.constexpr):
        """Program (tile, s) sorts the tile's row blocks s, s + S, ... of BLOCK keys: a key's place
        is its rank, the number of the tile's keys below it (keys are unique), counted against
        the whole bucket CHUNK keys at a time; it writes the Gaussian index (the key's low word)
        there. Slots the scatter pass left empty (past the tile's cursor) get id -1 and fall
        outside the tile's range, which program (tile, 0) writes."""
        t = tl.program_id(0)
        s = tl.program_id(1)
        n_s = tl.num_programs(1)
        start = tl.load(buckets_ptr + t * 2)
        end = tl.load(buckets_ptr + t * 2 + 1)
        real = tl.minimum(tl.load(cursor_ptr + t), end)
        if s == 0:
            tl.store(ranges_ptr + t * 2, start)
            tl.store(ranges_ptr + t * 2 + 1, real)
        big = 0x7FFFFFFFFFFFFFFF
        for r0 in range(start + s * BLOCK, end, n_s * BLOCK):
            offs = r0 + tl.arange(0, BLOCK)
            valid = offs < real
            keys = tl.load(keys_ptr + offs, mask=valid, other=big)
            rank = tl.zeros([BLOCK], tl.int32)
            for c0 in range(start, real, CHUNK):
                co = c0 + tl.arange(0, CHUNK)
                other = tl.load(keys_ptr + co, mask=co < real, other=big)
                rank += tl.sum((other[None, :] < keys[:, None]).to(tl.int32), axis=1)
            tl.store(ids_ptr + start + rank, keys.to(tl.int32), mask=valid)  # the low word
            tl.store(ids_ptr + offs, tl.full([BLOCK], -1, tl.int32), mask=(offs >= real) & (offs < end))

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
    def _merge_kernel(src_ptr, dst_ptr, seg_start_ptr, seg_end_ptr, M, run, steps, BLOCK: tl.constexpr):
        """One merge pass: each key moves to (its index in its run + its rank in the partner run).

        Runs of length `run` inside one tile's segment are merged pairwise. Keys are unique, so
        the rank (number of partner keys below it) places every key exactly once.
        """
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


# Key of an empty slot (merge path): its high word (0x7FFFFFFF, a NaN's bits) is above every
# visible depth's, so sentinels sort to the end of their tile; its low word is the slot.
SENTINEL_HI = 0x7FFFFFFF
BIN_BLOCK = 128
SCAN_BLOCK = 1024
MERGE_BLOCK = 1024
# per-tile rank sort: row blocks of RANK_BLOCK keys, counted against CHUNK keys at a time, at
# most RANK_SPLIT programs per tile. Its work grows as a tile's length squared, so tiles longer
# than RANK_MAX (none in the benchmarks' scenes) go the block sort + merge passes way instead.
RANK_BLOCK = 128
RANK_CHUNK = 32
RANK_SPLIT = 64
RANK_MAX = 16384
# "rank" (default) or "merge": which per-tile sort `bin_tiles_triton` uses (benchmarks flip it)
SORT = "rank"


def bin_tiles_triton(means2d, radii, depths, width, height, conics=None, opacities=None):
    """Triton binning: same outputs as `bin_tiles_torch`.

    Four launches and one host synchronisation on the common path: count hits per tile, one
    program scans the counts (bucket starts, and the total and longest tile for the one host
    read that sizes the key buffer), scatter 64-bit keys (depth bits << 32 | index) into the
    buckets, then each tile sorts its bucket by rank and writes the Gaussian ids. Should the
    scatter pass find fewer hits than the count pass, the tile's range ends at what it found
    (the slots after it read -1); surplus hits are never written.
    """
    tiles_x, tiles_y = tile_grid(width, height)
    num_tiles = tiles_x * tiles_y
    dev = means2d.device
    n = means2d.shape[0]
    means2d = means2d.detach().float().contiguous()
    radii = radii.int().contiguous()
    cull = conics is not None and opacities is not None
    gauss2d = [x.detach().float().contiguous() for x in (conics, opacities)] if cull else [means2d, means2d]
    tile_counts = torch.zeros(num_tiles, device=dev, dtype=torch.int32)
    grid = (triton.cdiv(n, BIN_BLOCK),)
    if n:
        _tile_count_kernel[grid](means2d, radii, *gauss2d, tile_counts, n, tiles_x, tiles_y,
                                 BLOCK=BIN_BLOCK, CULL=cull, TILE=TILE, num_warps=4)
    buckets = torch.empty(num_tiles, 2, device=dev, dtype=torch.int32)
    cursor = torch.empty(num_tiles, device=dev, dtype=torch.int32)
    stats = torch.empty(2, device=dev, dtype=torch.int32)
    _tile_scan_kernel[(1,)](tile_counts, buckets, cursor, stats, num_tiles, BLOCK=SCAN_BLOCK, num_warps=4)
    total, longest = stats.tolist()  # the one host synchronisation: sizes the key buffer
    if total == 0:
        return torch.zeros(0, device=dev, dtype=torch.int32), buckets
    merge = SORT == "merge" or longest > RANK_MAX
    if merge:
        keys = (SENTINEL_HI << 32) | torch.arange(total, device=dev, dtype=torch.int64)
    else:
        keys = torch.empty(total, device=dev, dtype=torch.int64)
    depths = depths.detach().float().contiguous()
    _tile_scatter_kernel[grid](
        means2d, radii, *gauss2d, depths, cursor, buckets, keys, n, tiles_x, tiles_y,
        BLOCK=BIN_BLOCK, CULL=cull, TILE=TILE, num_warps=4,
    )
    if merge:
        return _sort_by_merges(keys, buckets, cursor, tile_counts, total, longest, num_tiles)
    isect_ids = torch.empty(total, device=dev, dtype=torch.int32)
    tile_ranges = torch.empty(num_tiles, 2, device=dev, dtype=torch.int32)
    split = max(1, min(RANK_SPLIT, triton.cdiv(longest, RANK_BLOCK)))
    _tile_rank_sort_kernel[(num_tiles, split)](keys, buckets, cursor, isect_ids, tile_ranges,
                                               BLOCK=RANK_BLOCK, CHUNK=RANK_CHUNK, num_warps=4)
    return isect_ids, tile_ranges


def _sort_by_merges(keys, buckets, cursor, tile_counts, total, longest, num_tiles):
    """The other per-tile sort: blocks of SORT_BLOCK keys sorted by rank, then merged pairwise
    (one pass per doubling of the run, as many as the longest tile needs) until each tile is one
    run. Work n log n, but a dozen torch ops and a launch per pass."""
    dev = keys.device
    start, end = buckets[:, 0], buckets[:, 1]
    # what each tile's bucket really holds (the whole bucket unless the passes disagreed)
    tile_ranges = torch.stack([start, torch.minimum(cursor, end)], dim=-1).contiguous()
    blocks_per_tile = (tile_counts + SORT_BLOCK - 1) // SORT_BLOCK
    blocks_end = torch.cumsum(blocks_per_tile, 0)
    n_blocks = total // SORT_BLOCK + min(num_tiles, total)
    block = torch.arange(n_blocks, device=dev)
    block_tile = torch.searchsorted(blocks_end, block, right=True).clamp_(max=num_tiles - 1)
    block_start = start[block_tile] + (block - (blocks_end - blocks_per_tile)[block_tile]) * SORT_BLOCK
    block_start = torch.where(block < blocks_end[-1], block_start, total).int()
    _block_sort_kernel[(n_blocks,)](keys, buckets, block_tile.int(), block_start, BLOCK=SORT_BLOCK, num_warps=4)
    if longest > SORT_BLOCK:
        tile_of = torch.repeat_interleave(torch.arange(num_tiles, device=dev), tile_counts, output_size=total)
        seg_start = start[tile_of].contiguous()
        seg_end = end[tile_of].contiguous()
        src, dst = keys, torch.empty_like(keys)
        run = SORT_BLOCK
        while run < longest:
            _merge_kernel[(triton.cdiv(total, MERGE_BLOCK),)](
                src, dst, seg_start, seg_end, total, run, max(1, run.bit_length()),
                BLOCK=MERGE_BLOCK, num_warps=4,
            )
            src, dst = dst, src
            run *= 2
        keys = src
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
    front = {"radii_ptr": i32}
    return [
        Launch("_tile_count_kernel", {"BLOCK": BIN_BLOCK, "CULL": True, "TILE": TILE}, 4,
               {**front, "tile_counts_ptr": i32}),
        Launch("_tile_scan_kernel", {"BLOCK": SCAN_BLOCK}, 4,
               {"counts_ptr": i32, "buckets_ptr": i32, "cursor_ptr": i32, "stats_ptr": i32}),
        Launch("_tile_scatter_kernel", {"BLOCK": BIN_BLOCK, "CULL": True, "TILE": TILE}, 4,
               {**front, "cursor_ptr": i32, "ranges_ptr": i32, "keys_ptr": "*i64"}),
        Launch("_tile_rank_sort_kernel", {"BLOCK": RANK_BLOCK, "CHUNK": RANK_CHUNK}, 4,
               {"keys_ptr": "*i64", "buckets_ptr": i32, "cursor_ptr": i32, "ids_ptr": i32, "ranges_ptr": i32}),
        Launch("_block_sort_kernel", {"BLOCK": SORT_BLOCK}, 4,
               {"keys_ptr": "*i64", "ranges_ptr": i32, "block_tile_ptr": i32, "block_start_ptr": i32}),
        Launch("_merge_kernel", {"BLOCK": MERGE_BLOCK}, 4,
               {"src_ptr": "*i64", "dst_ptr": "*i64", "seg_start_ptr": i32, "seg_end_ptr": i32}),
    ]
