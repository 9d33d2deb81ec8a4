"""Head pose without a 3DMM, from MediaPipe landmarks.

1. A rigid 3D template from the video itself: generalised Procrustes (similarity) over the rigid
   landmarks (forehead, temples, nose bridge, eye corners, cheekbones; no lips, jaw or brows)
   of MediaPipe's 3D landmarks (x, y in pixels, z relative depth on the same scale).
2. For a focal length f: each frame's rotation R and translation t by Gauss-Newton on the
   reprojection error of the template's rigid points, started from the weak-perspective pose
   Procrustes gives.
3. f chosen by the mean reprojection error over (a sample of) the video: a log-spaced scan,
   then a golden-section refinement.
4. Temporal smoothing of rotations (as rotation vectors about the mean) and translations.

Canonical head space (the world of each `viewmat`): origin at the head centre (MediaPipe's
depth origin), x towards image right, y down, z away from the camera for a frontal face
(OpenCV-like); unit = face width (landmarks 234 to 454, cheek to cheek), so the head fits in
[-1, 1]^3.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Landmarks that move little with expression.
RIGID = np.array(sorted(set([
    10, 151, 9, 8, 168, 6, 197, 195, 5, 4, 1,  # forehead midline, nose bridge, nose tip
    109, 338, 67, 297, 69, 299, 108, 337, 103, 332, 54, 284, 21, 251,  # forehead, temples
    33, 133, 362, 263,  # eye corners
    234, 454, 127, 356, 162, 389, 93, 323,  # face side at ear level
    116, 345, 123, 352, 50, 280, 137, 366, 227, 447,  # cheekbones
])))
FACE_WIDTH = (234, 454)
CUT_JUMP = 0.18  # mean rigid-landmark move between frames, in face widths, that marks a shot change


def so3_exp(w: np.ndarray) -> np.ndarray:
    """Rotation matrices [..., 3, 3] from rotation vectors [..., 3]."""
    th = np.linalg.norm(w, axis=-1, keepdims=True)[..., None]
    k = w / np.maximum(np.linalg.norm(w, axis=-1, keepdims=True), 1e-12)
    K = np.zeros(w.shape[:-1] + (3, 3))
    K[..., 0, 1], K[..., 0, 2] = -k[..., 2], k[..., 1]
    K[..., 1, 0], K[..., 1, 2] = k[..., 2], -k[..., 0]
    K[..., 2, 0], K[..., 2, 1] = -k[..., 1], k[..., 0]
    I = np.broadcast_to(np.eye(3), K.shape)
    return I + np.sin(th) * K + (1 - np.cos(th)) * (K @ K)


def so3_log(R: np.ndarray) -> np.ndarray:
    """Rotation vectors [..., 3] from rotation matrices (angles below pi)."""
    c = np.clip((np.trace(R, axis1=-2, axis2=-1) - 1) / 2, -1, 1)
    th = np.arccos(c)
    v = np.stack([R[..., 2, 1] - R[..., 1, 2], R[..., 0, 2] - R[..., 2, 0], R[..., 1, 0] - R[..., 0, 1]], -1)
    s = np.sin(th)
    scale = np.where(s > 1e-8, th / np.maximum(2 * s, 1e-12), 0.5)
    return v * scale[..., None]


def similarity(src: np.ndarray, dst: np.ndarray):
    """Umeyama: s, R, t with dst ≈ s R src + t, batched over leading dim ([F,M,3] each)."""
    ms, md = src.mean(-2, keepdims=True), dst.mean(-2, keepdims=True)
    a, b = src - ms, dst - md
    C = np.swapaxes(b, -1, -2) @ a / src.shape[-2]
    U, S, Vt = np.linalg.svd(C)
    d = np.sign(np.linalg.det(U @ Vt))
    D = np.zeros_like(C)
    D[..., 0, 0] = 1
    D[..., 1, 1] = 1
    D[..., 2, 2] = d
    R = U @ D @ Vt
    var = (a ** 2).sum((-1, -2)) / src.shape[-2]
    s = (S * np.stack([np.ones_like(d), np.ones_like(d), d], -1)).sum(-1) / var
    t = md[..., 0, :] - s[..., None] * (R @ ms[..., 0, :, None])[..., 0]
    return s, R, t


def build_template(lm3d: np.ndarray, iters: int = 6):
    """Generalised Procrustes over the rigid points. lm3d [F, 478, 3] (pixels).

    Returns (template [478, 3] in canonical units, s [F], R [F,3,3], c [F,3]) with
    lm3d[f] ≈ s_f R_f template + c_f (on the rigid points)."""
    P = lm3d[:, RIGID].astype(np.float64)
    ref = P[len(P) // 2]
    for _ in range(iters):
        s, R, t = similarity(np.broadcast_to(ref, P.shape), P)
        # map frames into the reference frame: inverse similarity
        aligned = ((P - t[:, None]) @ R) / s[:, None, None]
        ref = aligned.mean(0)
        ref = ref - ref.mean(0)
    # full template from all 478 points with the same per-frame similarity
    s, R, t = similarity(np.broadcast_to(ref, P.shape), P)
    full = ((lm3d.astype(np.float64) - t[:, None]) @ R) / s[:, None, None]
    full = np.median(full, 0)
    # axes from the face itself (not the video's average pose, which may look aside): x from
    # cheek 234 to cheek 454 (image right for a frontal face), y from forehead 10 towards chin
    # 152 made orthogonal to x, z = x cross y (away from the camera)
    ax = full[FACE_WIDTH[1]] - full[FACE_WIDTH[0]]
    ax /= np.linalg.norm(ax)
    ay = full[152] - full[10]
    ay -= ay.dot(ax) * ax
    ay /= np.linalg.norm(ay)
    B = np.stack([ax, ay, np.cross(ax, ay)])  # rows: canonical axes in the GPA frame
    full = full @ B.T
    s_, R_, t_ = similarity(np.broadcast_to(full[RIGID], P.shape), P)
    s = s_
    # canonical units and origin: face width 1, x/y origin at rigid centroid, z origin at the
    # head centre (MediaPipe's depth origin, mean rigid depth per frame tells where it is)
    width = np.linalg.norm(full[FACE_WIDTH[0]] - full[FACE_WIDTH[1]])
    zc = float(np.median(lm3d[:, RIGID, 2].mean(1) / s))  # head centre depth relative to rigid centroid
    origin = full[RIGID].mean(0) + np.array([0.0, 0.0, -zc])
    template = (full - origin) / width
    # the similarity that maps the canonical template to each frame's landmarks
    s2, R2, t2 = similarity(np.broadcast_to(template[RIGID], P.shape), P)
    return template, s2, R2, t2


def project(X: np.ndarray, f: float, cx: float, cy: float) -> np.ndarray:
    z = np.maximum(X[..., 2:3], 1e-6)
    return np.concatenate([f * X[..., 0:1] / z + cx, f * X[..., 1:2] / z + cy], -1)


def weak_to_perspective(template, f, cx, cy, s0, R0, c0):
    """Initial R, t from a similarity lm ≈ s R T + c (weak perspective) for focal f."""
    T = template[RIGID].astype(np.float64)
    tz = f / s0
    # the template's rigid centroid projects where Procrustes put it
    cen = (s0[:, None] * (R0 @ T.mean(0))) + c0  # [F,3] (pixels)
    t = np.stack([(cen[:, 0] - cx) * tz / f, (cen[:, 1] - cy) * tz / f, tz], -1) - (R0 @ T.mean(0))
    return R0.copy(), t


def fit_poses(template: np.ndarray, pts2d: np.ndarray, f: float, cx: float, cy: float,
              R0: np.ndarray, t0: np.ndarray, iters: int = 12):
    """Per-frame R [F,3,3], t [F,3] minimising reprojection error; batched Levenberg-Marquardt."""
    T = template[RIGID].astype(np.float64)  # [M,3]
    x = pts2d[:, RIGID, :2].astype(np.float64)  # [F,M,2]
    F, M = x.shape[:2]
    R, t = R0.copy(), t0.copy()
    lam = np.full(F, 1e-3)
    for _ in range(iters):
        X = np.einsum("fij,mj->fmi", R, T) + t[:, None]  # [F,M,3]
        r = (project(X, f, cx, cy) - x).reshape(F, 2 * M)
        c = (r ** 2).sum(1)
        Z = np.maximum(X[..., 2], 1e-6)
        Jp = np.zeros((F, M, 2, 3))
        Jp[..., 0, 0] = f / Z
        Jp[..., 0, 2] = -f * X[..., 0] / Z ** 2
        Jp[..., 1, 1] = f / Z
        Jp[..., 1, 2] = -f * X[..., 1] / Z ** 2
        RT = X - t[:, None]
        skew = np.zeros((F, M, 3, 3))
        skew[..., 0, 1], skew[..., 0, 2] = -RT[..., 2], RT[..., 1]
        skew[..., 1, 0], skew[..., 1, 2] = RT[..., 2], -RT[..., 0]
        skew[..., 2, 0], skew[..., 2, 1] = -RT[..., 1], RT[..., 0]
        dX = np.concatenate([-skew, np.broadcast_to(np.eye(3), (F, M, 3, 3))], -1)  # [F,M,3,6]
        J = (Jp @ dX).reshape(F, 2 * M, 6)
        H = np.swapaxes(J, 1, 2) @ J
        g = np.swapaxes(J, 1, 2) @ r[..., None]
        Hd = H + lam[:, None, None] * np.eye(6) * (np.diagonal(H, axis1=1, axis2=2)[:, None, :] + 1e-9)
        delta = -np.linalg.solve(Hd, g)[..., 0]
        Rn = so3_exp(delta[:, :3]) @ R
        tn = t + delta[:, 3:]
        Xn = np.einsum("fij,mj->fmi", Rn, T) + tn[:, None]
        cn = ((project(Xn, f, cx, cy) - x) ** 2).reshape(F, -1).sum(1)
        better = cn < c
        R = np.where(better[:, None, None], Rn, R)
        t = np.where(better[:, None], tn, t)
        lam = np.where(better, lam * 0.3, lam * 10)
    return R, t



def refine_template(template: np.ndarray, pts2d: np.ndarray, R: np.ndarray, t: np.ndarray,
                    f: float, cx: float, cy: float, points=RIGID, iters: int = 3) -> np.ndarray:
    """Gauss-Newton on template points given poses (each point independently, over all frames)."""
    T = template.astype(np.float64).copy()
    P = T[points]  # [M,3]
    x = pts2d[:, points, :2].astype(np.float64)  # [F,M,2]
    for _ in range(iters):
        X = np.einsum("fij,mj->fmi", R, P) + t[:, None]
        r = project(X, f, cx, cy) - x  # [F,M,2]
        Z = np.maximum(X[..., 2], 1e-6)
        Jp = np.zeros(X.shape[:2] + (2, 3))
        Jp[..., 0, 0] = f / Z
        Jp[..., 0, 2] = -f * X[..., 0] / Z ** 2
        Jp[..., 1, 1] = f / Z
        Jp[..., 1, 2] = -f * X[..., 1] / Z ** 2
        J = Jp @ R[:, None]  # [F,M,2,3]
        H = np.einsum("fmki,fmkj->mij", J, J) + 1e-9 * np.eye(3)
        g = np.einsum("fmki,fmk->mi", J, r)
        P = P - np.linalg.solve(H, g[..., None])[..., 0]
    T[points] = P
    return T


def align_to(src: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """Apply to all of `src` the similarity that best maps its rigid points onto `ref`'s."""
    s, R, t = similarity(src[RIGID][None], ref[RIGID][None])
    return (s[0] * (src @ R[0].T) + t[0])


def bundle_adjust(template, pts2d, f, cx, cy, R, t, rounds: int = 4):
    """Alternate poses and rigid template points for a focal f; the template's gauge is held."""
    T0 = template
    for _ in range(rounds):
        R, t = fit_poses(template, pts2d, f, cx, cy, R, t, iters=6)
        template = align_to(refine_template(template, pts2d, R, t, f, cx, cy), T0)
    R, t = fit_poses(template, pts2d, f, cx, cy, R, t, iters=6)
    return template, R, t

def reprojection_error(template, pts2d, R, t, f, cx, cy) -> np.ndarray:
    """Mean pixel distance per frame over the rigid points."""
    X = np.einsum("fij,mj->fmi", R, template[RIGID]) + t[:, None]
    return np.linalg.norm(project(X, f, cx, cy) - pts2d[:, RIGID, :2], axis=-1).mean(1)


def smooth_poses(R: np.ndarray, t: np.ndarray, sigma: float = 1.0):
    """Gaussian smoothing in time of rotations (rotation vectors about the mean) and translations."""
    if sigma <= 0 or len(R) < 3:
        return R, t
    rad = int(np.ceil(3 * sigma))
    k = np.exp(-0.5 * (np.arange(-rad, rad + 1) / sigma) ** 2)
    k /= k.sum()

    def filt(a):
        pad = np.concatenate([a[:1].repeat(rad, 0), a, a[-1:].repeat(rad, 0)])
        out = np.zeros_like(a)
        for i, w in enumerate(k):
            out += w * pad[i : i + len(a)]
        return out

    Rm = R[len(R) // 2]
    U, _, Vt = np.linalg.svd(R.mean(0))
    Rm = U @ Vt
    w = so3_log(R @ Rm.T)
    Rs = so3_exp(filt(w)) @ Rm
    return Rs, filt(t)


@dataclass
class PoseResult:
    viewmats: np.ndarray  # [N,4,4] float32
    focal: float
    template: np.ndarray  # [478,3] canonical
    error_px: float  # mean reprojection error after smoothing (found frames, rigid points)
    error_px_raw: float  # before smoothing
    focal_scan: list
    cuts: list  # frames where a new shot starts (smoothing does not cross them)


def estimate_poses(lm3d: np.ndarray, found: np.ndarray, size: int, sigma: float = 1.5,
                   max_fit_frames: int = 150) -> PoseResult:
    """lm3d [N,478,3] (interpolated where lost), found [N] bool, square frames of `size`."""
    N = len(lm3d)
    cx = cy = size / 2.0
    idx = np.flatnonzero(found)
    template, s, R0, c0 = build_template(lm3d[idx])
    sub = idx if len(idx) <= max_fit_frames else idx[np.linspace(0, len(idx) - 1, max_fit_frames).astype(int)]
    pos = np.searchsorted(idx, sub)
    cache = {}

    def err(f):
        R, t = weak_to_perspective(template, f, cx, cy, s[pos], R0[pos], c0[pos])
        T, R, t = bundle_adjust(template, lm3d[sub], f, cx, cy, R, t)
        e = float(reprojection_error(T, lm3d[sub], R, t, f, cx, cy).mean())
        cache[f] = T
        return e

    scan = [(float(m * size), err(m * size)) for m in 2.0 ** np.arange(-1.0, 4.01, 0.5)]
    j = int(np.argmin([e for _, e in scan]))
    lo = np.log(scan[max(0, j - 1)][0])
    hi = np.log(scan[min(len(scan) - 1, j + 1)][0])
    g = (np.sqrt(5) - 1) / 2
    a, b = hi - g * (hi - lo), lo + g * (hi - lo)
    fa, fb = err(np.exp(a)), err(np.exp(b))
    for _ in range(6):
        if fa < fb:
            hi, b, fb = b, a, fa
            a = hi - g * (hi - lo)
            fa = err(np.exp(a))
        else:
            lo, a, fa = a, b, fb
            b = lo + g * (hi - lo)
            fb = err(np.exp(b))
    focal = float(np.exp(a) if fa < fb else np.exp(b))
    template = cache[focal]
    # all frames (lost ones from their interpolated landmarks), then smooth
    sa, Ra, ca = similarity(np.broadcast_to(template[RIGID], (N,) + template[RIGID].shape),
                            lm3d[:, RIGID].astype(np.float64))
    R, t = weak_to_perspective(template, focal, cx, cy, sa, Ra, ca)
    R, t = fit_poses(template, lm3d, focal, cx, cy, R, t, iters=15)
    # every landmark of the template (for previews and initialisation), from the found frames
    template = refine_template(template, lm3d[sub], R[sub], t[sub], focal, cx, cy,
                               points=np.arange(lm3d.shape[1]))
    e_raw = float(reprojection_error(template, lm3d[idx], R[idx], t[idx], focal, cx, cy).mean())
    # shot changes (jump cuts, zooms): landmarks jump; smooth each shot on its own
    fw = np.linalg.norm(lm3d[:, FACE_WIDTH[0], :2] - lm3d[:, FACE_WIDTH[1], :2], axis=-1)
    jump = np.linalg.norm(np.diff(lm3d[:, RIGID, :2], axis=0), axis=-1).mean(1) / np.maximum(fw[1:], 1e-6)
    cuts = np.flatnonzero(jump > CUT_JUMP) + 1
    Rs, ts = R.copy(), t.copy()
    for a, b in zip(np.r_[0, cuts], np.r_[cuts, N]):
        Rs[a:b], ts[a:b] = smooth_poses(R[a:b], t[a:b], sigma)
    e = float(reprojection_error(template, lm3d[idx], Rs[idx], ts[idx], focal, cx, cy).mean())
    V = np.zeros((N, 4, 4), np.float32)
    V[:, :3, :3] = Rs
    V[:, :3, 3] = ts
    V[:, 3, 3] = 1
    return PoseResult(V, focal, template.astype(np.float32), e, e_raw, scan, cuts.tolist())
