"""Gaussian projection: 3D means, rotations and scales to 2D means, conics, depths and radii.

Conventions (fixed in docs/conventions.md): OpenCV camera, `viewmat` world-to-camera, wxyz
quaternions normalised here, `Sigma2d = J W Sigma W^T J^T + 0.3 I`, culled when camera z < 0.01,
radius = ceil(3 sqrt(largest eigenvalue)), culled when its tile rectangle is empty.

Three pieces, side by side: the Triton forward and backward kernels, `_ProjectGaussians`
(the autograd glue), and `project_torch` (plain torch, the spec the kernels are tested against).
"""

from __future__ import annotations

import math

import torch

from ._backend import HAS_TRITON

# The rasterizer's fixed numbers (docs/conventions.md), defined here only: the torch twins read
# them, and every Triton kernel that needs one receives it as a tl.constexpr (`CONSTEXPRS`), so a
# change here reaches both backends.
TILE = 16  # tile side, pixels
NEAR = 0.01  # camera-space z under which a Gaussian is culled
LOWPASS = 0.3  # added to the 2D covariance's diagonal (pixels^2): every Gaussian covers a pixel
FOV_CLAMP = 1.3  # as 3DGS: x/z, y/z clamped to 1.3x the half field of view inside J
CONSTEXPRS = {"TILE": TILE, "NEAR": NEAR, "LOWPASS": LOWPASS, "FOV_CLAMP": FOV_CLAMP}


def tile_grid(width: int, height: int) -> tuple[int, int]:
    """Tiles across and down for an image of `width` x `height` pixels."""
    return math.ceil(width / TILE), math.ceil(height / TILE)


def quat_to_rotmat(quats: torch.Tensor) -> torch.Tensor:
    """quats: [..., 4] (w, x, y, z), any non-zero length -> [..., 3, 3] rotation matrices."""
    w, x, y, z = (quats / quats.norm(dim=-1, keepdim=True)).unbind(-1)
    return torch.stack(
        [
            1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
            2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
            2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
        ],
        dim=-1,
    ).reshape(quats.shape[:-1] + (3, 3))


def tile_rects(means2d: torch.Tensor, radii: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """The tiles a Gaussian's 3-sigma square overlaps: [N, 4] int64 (x0, y0, x1, y1), ends exclusive."""
    tiles_x, tiles_y = tile_grid(width, height)
    r = radii.to(means2d.dtype)
    u, v = means2d[:, 0].detach(), means2d[:, 1].detach()
    x0 = torch.floor((u - r) / TILE).clamp(0, tiles_x)
    x1 = torch.ceil((u + r) / TILE).clamp(0, tiles_x)
    y0 = torch.floor((v - r) / TILE).clamp(0, tiles_y)
    y1 = torch.ceil((v + r) / TILE).clamp(0, tiles_y)
    return torch.stack([x0, y0, x1, y1], dim=-1).long()


def project_torch(means3d, quats, scales, viewmat, K, width, height):
    """Plain-torch projection, differentiable through autograd.

    means3d: [N, 3], quats: [N, 4] wxyz (any norm), scales: [N, 3] > 0,
    viewmat: [4, 4] world-to-camera, K: [3, 3].
    Returns means2d [N, 2] (pixels), conics [N, 3] (A, B, C of the inverse 2D covariance),
    depths [N] (camera z), radii [N] int32 (0 where culled). Culled rows of means2d and
    conics are zero.
    """
    R, t = viewmat[:3, :3], viewmat[:3, 3]
    fx, fy, cx, cy = K[0, 0], K[1, 1], K[0, 2], K[1, 2]
    p = means3d @ R.T + t
    x, y, z = p.unbind(-1)
    valid = z >= NEAR
    zs = torch.where(valid, z, torch.ones_like(z))
    lim_x = FOV_CLAMP * 0.5 * width / fx
    lim_y = FOV_CLAMP * 0.5 * height / fy
    tx = zs * torch.clamp(x / zs, -lim_x, lim_x)
    ty = zs * torch.clamp(y / zs, -lim_y, lim_y)
    zero = torch.zeros_like(zs)
    J = torch.stack(
        [fx / zs, zero, -fx * tx / (zs * zs), zero, fy / zs, -fy * ty / (zs * zs)], dim=-1
    ).reshape(-1, 2, 3)

    rot = quat_to_rotmat(quats)
    M = rot * scales[:, None, :]
    cov3d = M @ M.transpose(1, 2)
    JW = J @ R
    cov2d = JW @ cov3d @ JW.transpose(1, 2)
    a = cov2d[:, 0, 0] + LOWPASS
    b = cov2d[:, 0, 1]
    c = cov2d[:, 1, 1] + LOWPASS
    det = a * c - b * b
    valid = valid & (det > 0)
    det = torch.where(valid, det, torch.ones_like(det))
    conics = torch.stack([c / det, -b / det, a / det], dim=-1)

    u = fx * x / zs + cx
    v = fy * y / zs + cy
    means2d = torch.stack([u, v], dim=-1)

    with torch.no_grad():
        mid = 0.5 * (a + c)
        lam = mid + torch.sqrt(torch.clamp(mid * mid - det, min=0))
        radii = torch.ceil(3 * torch.sqrt(lam))
        radii = torch.where(valid, radii, torch.zeros_like(radii))
        rect = tile_rects(means2d, radii, width, height)
        valid = valid & (rect[:, 2] > rect[:, 0]) & (rect[:, 3] > rect[:, 1])
        radii = torch.where(valid, radii, torch.zeros_like(radii)).int()
    keep = valid[:, None]
    means2d = torch.where(keep, means2d, torch.zeros_like(means2d))
    conics = torch.where(keep, conics, torch.zeros_like(conics))
    return means2d, conics, z.detach(), radii


if HAS_TRITON:
    import triton
    import triton.language as tl

    # Device helpers, inlined by Triton. Each computes one step of the projection and returns a
    # handful of values (a 3x3 matrix as 9 scalars, row by row, at the most); both kernels call
    # them, the backward keeping the intermediates its gradients need.

    @triton.jit
    def _view_row(view_ptr, i):
        """Row i of the world-to-camera matrix: rotation row (ri0, ri1, ri2) and translation ti."""
        return (tl.load(view_ptr + 4 * i + 0), tl.load(view_ptr + 4 * i + 1), tl.load(view_ptr + 4 * i + 2),
                tl.load(view_ptr + 4 * i + 3))

    @triton.jit
    def _intrinsics(K_ptr):
        """fx, fy, cx, cy of the 3x3 K."""
        return tl.load(K_ptr + 0), tl.load(K_ptr + 4), tl.load(K_ptr + 2), tl.load(K_ptr + 5)

    @triton.jit
    def _load3(ptr, offs, m, other):
        """The three values of each row offs of an [N, 3] array."""
        v0 = tl.load(ptr + offs * 3 + 0, mask=m, other=other)
        v1 = tl.load(ptr + offs * 3 + 1, mask=m, other=other)
        v2 = tl.load(ptr + offs * 3 + 2, mask=m, other=other)
        return v0, v1, v2

    @triton.jit
    def _camera_point(means_ptr, view_ptr, offs, m, NEAR: tl.constexpr):
        """Camera-space mean (x, y, z) with z = 1 where culled by NEAR, the raw z, and the
        in-front mask."""
        r00, r01, r02, t0 = _view_row(view_ptr, 0)
        r10, r11, r12, t1 = _view_row(view_ptr, 1)
        r20, r21, r22, t2 = _view_row(view_ptr, 2)
        mx, my, mz = _load3(means_ptr, offs, m, 0.0)
        x = r00 * mx + r01 * my + r02 * mz + t0
        y = r10 * mx + r11 * my + r12 * mz + t1
        z_raw = r20 * mx + r21 * my + r22 * mz + t2
        in_front = m & (z_raw >= NEAR)
        return x, y, tl.where(in_front, z_raw, 1.0), z_raw, in_front

    @triton.jit
    def _unit_quat(quats_ptr, offs, m):
        """The normalised quaternion (w, x, y, z) and 1 / its original length."""
        qw = tl.load(quats_ptr + offs * 4 + 0, mask=m, other=1.0)
        qx = tl.load(quats_ptr + offs * 4 + 1, mask=m, other=0.0)
        qy = tl.load(quats_ptr + offs * 4 + 2, mask=m, other=0.0)
        qz = tl.load(quats_ptr + offs * 4 + 3, mask=m, other=0.0)
        inv = 1.0 / tl.sqrt(qw * qw + qx * qx + qy * qy + qz * qz)
        return qw * inv, qx * inv, qy * inv, qz * inv, inv

    @triton.jit
    def _rotmat(w, x, y, z):
        """Rotation matrix of the unit quaternion (w, x, y, z)."""
        R00 = 1.0 - 2.0 * (y * y + z * z)
        R01 = 2.0 * (x * y - w * z)
        R02 = 2.0 * (x * z + w * y)
        R10 = 2.0 * (x * y + w * z)
        R11 = 1.0 - 2.0 * (x * x + z * z)
        R12 = 2.0 * (y * z - w * x)
        R20 = 2.0 * (x * z - w * y)
        R21 = 2.0 * (y * z + w * x)
        R22 = 1.0 - 2.0 * (x * x + y * y)
        return R00, R01, R02, R10, R11, R12, R20, R21, R22

    @triton.jit
    def _scale_cols(A00, A01, A02, A10, A11, A12, A20, A21, A22, s0, s1, s2):
        """A diag(s0, s1, s2)."""
        return A00 * s0, A01 * s1, A02 * s2, A10 * s0, A11 * s1, A12 * s2, A20 * s0, A21 * s1, A22 * s2

    @triton.jit
    def _matmul3(A00, A01, A02, A10, A11, A12, A20, A21, A22,
                 B00, B01, B02, B10, B11, B12, B20, B21, B22):
        """A B for 3x3 matrices, each entry summed left to right."""
        return (A00 * B00 + A01 * B10 + A02 * B20, A00 * B01 + A01 * B11 + A02 * B21, A00 * B02 + A01 * B12 + A02 * B22,
                A10 * B00 + A11 * B10 + A12 * B20, A10 * B01 + A11 * B11 + A12 * B21, A10 * B02 + A11 * B12 + A12 * B22,
                A20 * B00 + A21 * B10 + A22 * B20, A20 * B01 + A21 * B11 + A22 * B21, A20 * B02 + A21 * B12 + A22 * B22)

    @triton.jit
    def _cam_factor(view_ptr, R00, R01, R02, R10, R11, R12, R20, R21, R22, sx, sy, sz):
        """P = W R S, W the view rotation: the camera-space covariance is P P^T."""
        r00, r01, r02, _ = _view_row(view_ptr, 0)
        r10, r11, r12, _ = _view_row(view_ptr, 1)
        r20, r21, r22, _ = _view_row(view_ptr, 2)
        M00, M01, M02, M10, M11, M12, M20, M21, M22 = _scale_cols(
            R00, R01, R02, R10, R11, R12, R20, R21, R22, sx, sy, sz)
        return _matmul3(r00, r01, r02, r10, r11, r12, r20, r21, r22, M00, M01, M02, M10, M11, M12, M20, M21, M22)

    @triton.jit
    def _gram(P00, P01, P02, P10, P11, P12, P20, P21, P22):
        """The 6 unique entries V00, V01, V02, V11, V12, V22 of V = P P^T."""
        V00, V01, V02, _, V11, V12, _, _, V22 = _matmul3(P00, P01, P02, P10, P11, P12, P20, P21, P22,
                                                         P00, P10, P20, P01, P11, P21, P02, P12, P22)
        return V00, V01, V02, V11, V12, V22

    @triton.jit
    def _cam_cov3d(quats_ptr, scales_ptr, view_ptr, offs, m):
        """Camera-space covariance V = W (R S)(R S)^T W^T of a block of Gaussians (6 entries)."""
        w, qx, qy, qz, _ = _unit_quat(quats_ptr, offs, m)
        R00, R01, R02, R10, R11, R12, R20, R21, R22 = _rotmat(w, qx, qy, qz)
        sx, sy, sz = _load3(scales_ptr, offs, m, 1.0)
        P00, P01, P02, P10, P11, P12, P20, P21, P22 = _cam_factor(
            view_ptr, R00, R01, R02, R10, R11, R12, R20, R21, R22, sx, sy, sz)
        return _gram(P00, P01, P02, P10, P11, P12, P20, P21, P22)

    @triton.jit
    def _clamp_to_fov(x, y, z, fx, fy, width, height, FOV_CLAMP: tl.constexpr):
        """(tx, ty) = z * (x/z, y/z) clamped to FOV_CLAMP x the half field of view, and whether
        each was clamped."""
        lim_x = FOV_CLAMP * 0.5 * width / fx
        lim_y = FOV_CLAMP * 0.5 * height / fy
        ux = x / z
        uy = y / z
        tx = z * tl.minimum(tl.maximum(ux, -lim_x), lim_x)
        ty = z * tl.minimum(tl.maximum(uy, -lim_y), lim_y)
        return tx, ty, (ux < -lim_x) | (ux > lim_x), (uy < -lim_y) | (uy > lim_y)

    @triton.jit
    def _jacobian(tx, ty, z, fx, fy):
        """J's non-zero entries j00, j02, j11, j12 at the clamped camera point (tx, ty, z)."""
        return fx / z, -fx * tx / (z * z), fy / z, -fy * ty / (z * z)

    @triton.jit
    def _cov2d(j00, j02, j11, j12, V00, V01, V02, V11, V12, V22, LOWPASS: tl.constexpr):
        """The 2D covariance J V J^T + LOWPASS I as (a, b, c) = (00, 01, 11)."""
        a = j00 * j00 * V00 + 2.0 * j00 * j02 * V02 + j02 * j02 * V22 + LOWPASS
        b = j00 * j11 * V01 + j00 * j12 * V02 + j02 * j11 * V12 + j02 * j12 * V22
        c = j11 * j11 * V11 + 2.0 * j11 * j12 * V12 + j12 * j12 * V22 + LOWPASS
        return a, b, c

    @triton.jit
    def _project_fwd_kernel(
        means_ptr, quats_ptr, scales_ptr, view_ptr, K_ptr,
        means2d_ptr, conics_ptr, depths_ptr, radii_ptr,
        N, width, height, tiles_x, tiles_y,
        BLOCK: tl.constexpr, TILE: tl.constexpr, NEAR: tl.constexpr, LOWPASS: tl.constexpr, FOV_CLAMP: tl.constexpr,
    ):
        offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
        m = offs < N
        x, y, z, z_raw, valid = _camera_point(means_ptr, view_ptr, offs, m, NEAR)
        fx, fy, cx, cy = _intrinsics(K_ptr)
        V00, V01, V02, V11, V12, V22 = _cam_cov3d(quats_ptr, scales_ptr, view_ptr, offs, m)
        tx, ty, _, _ = _clamp_to_fov(x, y, z, fx, fy, width, height, FOV_CLAMP)
        j00, j02, j11, j12 = _jacobian(tx, ty, z, fx, fy)
        a, b, c = _cov2d(j00, j02, j11, j12, V00, V01, V02, V11, V12, V22, LOWPASS)
        det = a * c - b * b
        valid = valid & (det > 0)
        det = tl.where(valid, det, 1.0)

        u = fx * x / z + cx
        v = fy * y / z + cy
        mid = 0.5 * (a + c)
        lam = mid + tl.sqrt_rn(tl.maximum(mid * mid - det, 0.0))
        radius = tl.ceil(3.0 * tl.sqrt_rn(lam))
        side = TILE * 1.0
        x0 = tl.minimum(tl.maximum(tl.floor((u - radius) / side), 0.0), tiles_x * 1.0)
        x1 = tl.minimum(tl.maximum(tl.ceil((u + radius) / side), 0.0), tiles_x * 1.0)
        y0 = tl.minimum(tl.maximum(tl.floor((v - radius) / side), 0.0), tiles_y * 1.0)
        y1 = tl.minimum(tl.maximum(tl.ceil((v + radius) / side), 0.0), tiles_y * 1.0)
        valid = valid & (x1 > x0) & (y1 > y0)

        tl.store(means2d_ptr + offs * 2 + 0, tl.where(valid, u, 0.0), mask=m)
        tl.store(means2d_ptr + offs * 2 + 1, tl.where(valid, v, 0.0), mask=m)
        tl.store(conics_ptr + offs * 3 + 0, tl.where(valid, c / det, 0.0), mask=m)
        tl.store(conics_ptr + offs * 3 + 1, tl.where(valid, -b / det, 0.0), mask=m)
        tl.store(conics_ptr + offs * 3 + 2, tl.where(valid, a / det, 0.0), mask=m)
        tl.store(depths_ptr + offs, z_raw, mask=m)
        tl.store(radii_ptr + offs, tl.where(valid, radius, 0.0).to(tl.int32), mask=m)

    @triton.jit
    def _project_bwd_kernel(
        means_ptr, quats_ptr, scales_ptr, view_ptr, K_ptr, radii_ptr,
        g_means2d_ptr, g_conics_ptr,
        g_means_ptr, g_quats_ptr, g_scales_ptr,
        N, width, height,
        BLOCK: tl.constexpr, NEAR: tl.constexpr, LOWPASS: tl.constexpr, FOV_CLAMP: tl.constexpr,
    ):
        offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
        m = offs < N
        # the forward again, keeping what the gradients need
        x, y, z, _, _ = _camera_point(means_ptr, view_ptr, offs, m, NEAR)
        fx, fy, _, _ = _intrinsics(K_ptr)
        w, qxn, qyn, qzn, inv = _unit_quat(quats_ptr, offs, m)
        R00, R01, R02, R10, R11, R12, R20, R21, R22 = _rotmat(w, qxn, qyn, qzn)
        sx, sy, sz = _load3(scales_ptr, offs, m, 1.0)
        P00, P01, P02, P10, P11, P12, P20, P21, P22 = _cam_factor(
            view_ptr, R00, R01, R02, R10, R11, R12, R20, R21, R22, sx, sy, sz)
        V00, V01, V02, V11, V12, V22 = _gram(P00, P01, P02, P10, P11, P12, P20, P21, P22)
        tx, ty, clamped_x, clamped_y = _clamp_to_fov(x, y, z, fx, fy, width, height, FOV_CLAMP)
        j00, j02, j11, j12 = _jacobian(tx, ty, z, fx, fy)
        a, b, c = _cov2d(j00, j02, j11, j12, V00, V01, V02, V11, V12, V22, LOWPASS)
        # culled Gaussians get no gradient (and their det may be 0)
        valid = m & (tl.load(radii_ptr + offs, mask=m, other=0) > 0)
        det = tl.where(valid, a * c - b * b, 1.0)
        QA = c / det
        QB = -b / det
        QC = a / det

        # conic = inverse(cov2d): dL/dcov = -Q G Q, G the symmetric gradient of Q
        gA = tl.load(g_conics_ptr + offs * 3 + 0, mask=valid, other=0.0)
        gB = tl.load(g_conics_ptr + offs * 3 + 1, mask=valid, other=0.0) * 0.5
        gC = tl.load(g_conics_ptr + offs * 3 + 2, mask=valid, other=0.0)
        GQ00 = gA * QA + gB * QB
        GQ01 = gA * QB + gB * QC
        GQ10 = gB * QA + gC * QB
        GQ11 = gB * QB + gC * QC
        ga = -(QA * GQ00 + QB * GQ10)
        gb = -(QA * GQ01 + QB * GQ11) * 2.0  # b stands at (0,1) and (1,0)
        gc = -(QB * GQ01 + QC * GQ11)

        # cov2d = J V J^T: gradients of V's unique entries and of J's entries
        gV00 = ga * j00 * j00
        gV01 = gb * j00 * j11
        gV02 = 2.0 * ga * j00 * j02 + gb * j00 * j12
        gV11 = gc * j11 * j11
        gV12 = gb * j02 * j11 + 2.0 * gc * j11 * j12
        gV22 = ga * j02 * j02 + gb * j02 * j12 + gc * j12 * j12
        gj00 = ga * (2.0 * j00 * V00 + 2.0 * j02 * V02) + gb * (j11 * V01 + j12 * V02)
        gj02 = ga * (2.0 * j00 * V02 + 2.0 * j02 * V22) + gb * (j11 * V12 + j12 * V22)
        gj11 = gb * (j00 * V01 + j02 * V12) + gc * (2.0 * j11 * V11 + 2.0 * j12 * V12)
        gj12 = gb * (j00 * V02 + j02 * V22) + gc * (2.0 * j11 * V12 + 2.0 * j12 * V22)

        # camera-space point: through J and through means2d = (fx x/z + cx, fy y/z + cy)
        gu = tl.load(g_means2d_ptr + offs * 2 + 0, mask=valid, other=0.0)
        gv = tl.load(g_means2d_ptr + offs * 2 + 1, mask=valid, other=0.0)
        iz = 1.0 / z
        iz2 = iz * iz
        gtx = -gj02 * fx * iz2
        gty = -gj12 * fy * iz2
        gz = (-gj00 * fx * iz2 + 2.0 * gj02 * fx * tx * iz2 * iz
              - gj11 * fy * iz2 + 2.0 * gj12 * fy * ty * iz2 * iz
              - gu * fx * x * iz2 - gv * fy * y * iz2)
        gx = gu * fx * iz
        gy = gv * fy * iz
        gx += tl.where(clamped_x, 0.0, gtx)
        gz += tl.where(clamped_x, gtx * tx * iz, 0.0)
        gy += tl.where(clamped_y, 0.0, gty)
        gz += tl.where(clamped_y, gty * ty * iz, 0.0)
        r00, r01, r02, _ = _view_row(view_ptr, 0)
        r10, r11, r12, _ = _view_row(view_ptr, 1)
        r20, r21, r22, _ = _view_row(view_ptr, 2)
        tl.store(g_means_ptr + offs * 3 + 0, r00 * gx + r10 * gy + r20 * gz, mask=m)
        tl.store(g_means_ptr + offs * 3 + 1, r01 * gx + r11 * gy + r21 * gz, mask=m)
        tl.store(g_means_ptr + offs * 3 + 2, r02 * gx + r12 * gy + r22 * gz, mask=m)

        # V = P P^T: dL/dP = (Gv + Gv^T) P, Gv holding V's gradient with the off-diagonals
        # split between their two places (the diagonal doubled instead of the off-diagonals
        # halved: exactly 2x the same sums, so the same floats)
        gP00, gP01, gP02, gP10, gP11, gP12, gP20, gP21, gP22 = _matmul3(
            2.0 * gV00, gV01, gV02, gV01, 2.0 * gV11, gV12, gV02, gV12, 2.0 * gV22,
            P00, P01, P02, P10, P11, P12, P20, P21, P22)
        # P = W M: dL/dM = W^T dL/dP
        gM00, gM01, gM02, gM10, gM11, gM12, gM20, gM21, gM22 = _matmul3(
            r00, r10, r20, r01, r11, r21, r02, r12, r22, gP00, gP01, gP02, gP10, gP11, gP12, gP20, gP21, gP22)
        # M = R diag(s)
        tl.store(g_scales_ptr + offs * 3 + 0, gM00 * R00 + gM10 * R10 + gM20 * R20, mask=m)
        tl.store(g_scales_ptr + offs * 3 + 1, gM01 * R01 + gM11 * R11 + gM21 * R21, mask=m)
        tl.store(g_scales_ptr + offs * 3 + 2, gM02 * R02 + gM12 * R12 + gM22 * R22, mask=m)
        gR00, gR01, gR02, gR10, gR11, gR12, gR20, gR21, gR22 = _scale_cols(
            gM00, gM01, gM02, gM10, gM11, gM12, gM20, gM21, gM22, sx, sy, sz)
        # R(q) for the normalised q, then through the normalisation
        gw = 2.0 * (qxn * (gR21 - gR12) + qyn * (gR02 - gR20) + qzn * (gR10 - gR01))
        gqx = 2.0 * (-2.0 * qxn * (gR11 + gR22) + qyn * (gR10 + gR01) + qzn * (gR20 + gR02) + w * (gR21 - gR12))
        gqy = 2.0 * (qxn * (gR10 + gR01) - 2.0 * qyn * (gR00 + gR22) + qzn * (gR21 + gR12) + w * (gR02 - gR20))
        gqz = 2.0 * (qxn * (gR20 + gR02) + qyn * (gR21 + gR12) - 2.0 * qzn * (gR00 + gR11) + w * (gR10 - gR01))
        dot = w * gw + qxn * gqx + qyn * gqy + qzn * gqz
        tl.store(g_quats_ptr + offs * 4 + 0, (gw - w * dot) * inv, mask=m)
        tl.store(g_quats_ptr + offs * 4 + 1, (gqx - qxn * dot) * inv, mask=m)
        tl.store(g_quats_ptr + offs * 4 + 2, (gqy - qyn * dot) * inv, mask=m)
        tl.store(g_quats_ptr + offs * 4 + 3, (gqz - qzn * dot) * inv, mask=m)


_BLOCK = 128
_WARPS = 4
# the backward needs no tile size (radii come from the forward)
_BWD_CONSTEXPRS = {k: v for k, v in CONSTEXPRS.items() if k != "TILE"}


def gpu_launches():
    """The projection launches as made on CUDA (see `_backend.Launch`)."""
    from ._backend import Launch

    return [Launch("_project_fwd_kernel", {"BLOCK": _BLOCK, **CONSTEXPRS}, _WARPS, {"radii_ptr": "*i32"}),
            Launch("_project_bwd_kernel", {"BLOCK": _BLOCK, **_BWD_CONSTEXPRS}, _WARPS, {"radii_ptr": "*i32"})]


class _ProjectGaussians(torch.autograd.Function):
    """Triton projection; gradients flow from means2d and conics to means3d, quats and scales."""

    @staticmethod
    def forward(ctx, means3d, quats, scales, viewmat, K, width, height):
        n = means3d.shape[0]
        dev = means3d.device
        means2d = torch.zeros(n, 2, device=dev, dtype=torch.float32)
        conics = torch.zeros(n, 3, device=dev, dtype=torch.float32)
        depths = torch.zeros(n, device=dev, dtype=torch.float32)
        radii = torch.zeros(n, device=dev, dtype=torch.int32)
        if n:
            tiles_x, tiles_y = tile_grid(width, height)
            _project_fwd_kernel[(triton.cdiv(n, _BLOCK),)](
                means3d, quats, scales, viewmat, K, means2d, conics, depths, radii,
                n, width, height, tiles_x, tiles_y, BLOCK=_BLOCK, num_warps=_WARPS, **CONSTEXPRS,
            )
        ctx.save_for_backward(means3d, quats, scales, viewmat, K, radii)
        ctx.size = (width, height)
        ctx.mark_non_differentiable(depths, radii)
        return means2d, conics, depths, radii

    @staticmethod
    def backward(ctx, g_means2d, g_conics, _g_depths, _g_radii):
        means3d, quats, scales, viewmat, K, radii = ctx.saved_tensors
        width, height = ctx.size
        n = means3d.shape[0]
        g_means = torch.zeros_like(means3d)
        g_quats = torch.zeros_like(quats)
        g_scales = torch.zeros_like(scales)
        if n:
            _project_bwd_kernel[(triton.cdiv(n, _BLOCK),)](
                means3d, quats, scales, viewmat, K, radii,
                g_means2d.contiguous(), g_conics.contiguous(), g_means, g_quats, g_scales,
                n, width, height, BLOCK=_BLOCK, num_warps=_WARPS, **_BWD_CONSTEXPRS,
            )
        return g_means, g_quats, g_scales, None, None, None, None


def project_gaussians(means3d, quats, scales, viewmat, K, width, height, backend="torch"):
    """Project Gaussians to the image plane with the chosen (already resolved) backend.

    Returns means2d [N, 2], conics [N, 3], depths [N], radii [N] int32; see `project_torch`.
    """
    if backend == "torch":
        return project_torch(means3d, quats, scales, viewmat, K, width, height)
    return _ProjectGaussians.apply(
        means3d.contiguous(), quats.contiguous(), scales.contiguous(),
        viewmat.contiguous(), K.contiguous(), width, height,
    )
