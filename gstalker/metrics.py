"""Every measure gstalker reports, in one place: training, `fit`'s summary, `gstalker eval` and
the benchmarks read them from here.

Images ([H, W, C] float in [0, 1]):

    psnr(a, b)                                         # dB, MSE floored at 1e-10
    ssim(a, b)                                         # Wang et al. 2004, Gaussian window 11
    Lpips(device, mode)(a, b)                          # LPIPS 0.1 (AlexNet), when its weights are here
    mean_frame(frame, ids) / mean_frame_psnr(...)      # the mean-frame baseline a model must beat
    face_box(landmarks, H, W), box_slices(box, H, W)   # (rows, cols) slices of a face or lip box

The mouth, from MediaPipe face-mesh landmarks [T, 478, 2]:

    lmd(pred, ref)                                     # mean distance of the 40 lip points, pixels
    mouth_opening(landmarks)                           # [T] inner-lip gap, pixels
    correlation(x, y)                                  # the one Pearson r (None where undefined)

Lip sync without ground-truth frames: how the mouth moves with the speech's loudness.

    loud = loudness_db(wave16k, num_frames)            # [T] dB, one per 25 fps frame
    opening = mouth_opening_ratio(landmarks)           # [T] inner-lip gap / eye-corner distance
    corr, lag = av_sync(loud, opening)                 # best Pearson r over lags -3..3 frames
    mouth_motion(opening)                              # std of the opening
    silence_motion(loud, opening)                      # motion in silence / motion in speech
    mouth_jitter(opening)                              # how much of that motion is frame-to-frame flicker

Missing values (frames where no face was found) are NaN in `opening` and are left out pairwise.
Every measure returns None where it is undefined (too few frames, a constant series) rather than
a number that would read as a result.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .data import FPS, SAMPLE_RATE
from .errors import UnavailableError, first_line


# MediaPipe face mesh points: inner lip, upper and lower centre; outer eye corners (right, left)
UPPER_LIP, LOWER_LIP = 13, 14
EYE_CORNERS = (33, 263)
MOUTH_CORNERS = (61, 291)
# MediaPipe face mesh: the 40 points of FACEMESH_LIPS (outer and inner lip contours)
MOUTH = (0, 13, 14, 17, 37, 39, 40, 61, 78, 80, 81, 82, 84, 87, 88, 91, 95, 146, 178, 181, 185, 191, 267, 269,
         270, 291, 308, 310, 311, 312, 314, 317, 318, 321, 324, 375, 402, 405, 409, 415)
# upper / lower inner-lip points facing each other: centre, and either side of it
INNER_LIP_PAIRS = ((13, 14), (82, 87), (312, 317))
# the AlexNet backbone LPIPS needs, as torchvision names it in torch hub's cache
LPIPS_WEIGHTS = "alexnet-owt-7be5be79.pth"

# the floor of `loudness_db` (digital silence): mean square 1e-10
FLOOR_DB = -100.0
# fewer frames than this (0.4 s, a syllable or two) say nothing about lip sync
MIN_FRAMES = 10
# av_sync: loudness more than this under the median (silence, as in silent_frames) is clipped there
SYNC_FLOOR_DB = 30.0
# `silence_motion` needs this many frames of silence and of speech to compare them
MIN_SILENT_FRAMES = 5


def loudness_db(wave, num_frames: int, sample_rate: int = SAMPLE_RATE, fps: int = FPS) -> np.ndarray:
    """Loudness per video frame: the RMS of the frame's samples [k/fps, (k+1)/fps) in dB relative
    to full scale (a full-scale square wave is 0 dB, a full-scale sine -3 dB), floored at -100 dB.
    wave: [samples] mono float in [-1, 1]; samples missing at the end count as silence. -> [num_frames]."""
    x = np.asarray(wave, dtype=np.float64).reshape(-1)
    out = np.empty(num_frames, dtype=np.float64)
    for k in range(num_frames):
        lo, hi = k * sample_rate // fps, (k + 1) * sample_rate // fps
        seg = x[lo:hi]
        power = float((seg * seg).sum()) / (hi - lo) if hi > lo else 0.0
        out[k] = 10 * math.log10(power + 1e-10)
    return out


def _over_eye_distance(landmarks, a: int, b: int) -> np.ndarray:
    """|lm_a - lm_b| per frame over the outer eye-corner distance |lm33 - lm263|: a face
    measure that does not depend on the image size or the face's distance.
    landmarks: [T, 478, 2+] face-mesh points (NaN rows for frames without a face) -> [T]
    (NaN where missing or the eye corners coincide)."""
    lm = np.asarray(landmarks, dtype=np.float64)[..., :2]
    dist = np.linalg.norm(lm[..., a, :] - lm[..., b, :], axis=-1)
    eyes = np.linalg.norm(lm[..., EYE_CORNERS[0], :] - lm[..., EYE_CORNERS[1], :], axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(eyes > 1e-9, dist / np.where(eyes > 1e-9, eyes, 1.0), np.nan)


def mouth_opening_ratio(landmarks) -> np.ndarray:
    """Mouth opening per frame: the inner-lip gap |lm13 - lm14| over the eye-corner distance.
    landmarks: [T, 478, 2+] -> [T] (NaN where missing)."""
    return _over_eye_distance(landmarks, UPPER_LIP, LOWER_LIP)


def mouth_width_ratio(landmarks) -> np.ndarray:
    """Mouth width per frame: the lip-corner distance |lm61 - lm291| over the eye-corner distance
    (rounded lips narrow it). landmarks: [T, 478, 2+] -> [T] (NaN where missing)."""
    return _over_eye_distance(landmarks, *MOUTH_CORNERS)


def correlation(x, y, min_points: int = 3) -> float | None:
    """Pearson correlation of two series [T], or None when undefined (under `min_points` points,
    or either series constant). Pairs where either value is NaN or infinite are left out."""
    x, y = np.asarray(x, dtype=np.float64).reshape(-1), np.asarray(y, dtype=np.float64).reshape(-1)
    if len(x) != len(y):
        raise ValueError(f"series differ in length: {len(x)} and {len(y)}")
    keep = np.isfinite(x) & np.isfinite(y)
    x, y = x[keep], y[keep]
    if len(x) < max(3, min_points):
        return None
    x, y = x - x.mean(), y - y.mean()
    den = math.sqrt(float((x * x).sum()) * float((y * y).sum()))
    if den < 1e-12:
        return None
    return float((x * y).sum() / den)


def lagged_correlation(x, y, lag: int, min_points: int = 3) -> float | None:
    """`correlation` of x[t] with y[t + lag] over the frames where both exist (x, y: [T]); None
    when undefined or |lag| >= T. Positive lag: y is matched with x's earlier frames."""
    x, y = np.asarray(x).reshape(-1), np.asarray(y).reshape(-1)
    n = len(x)
    if abs(lag) >= n:  # no pairs at this lag (and a negative slice end would wrap around)
        return None
    if lag >= 0:
        return correlation(x[:n - lag], y[lag:], min_points)
    return correlation(x[-lag:], y[:n + lag], min_points)


def av_sync(loudness, opening, max_lag: int = 3, min_frames: int = MIN_FRAMES,
            floor_below_median_db: float = SYNC_FLOOR_DB) -> tuple[float | None, int | None]:
    """(corr, lag): the highest Pearson correlation between the loudness and the mouth opening over
    lags -max_lag..max_lag frames, and that lag. A lag of +L pairs the sound of frame t with the
    mouth of frame t + L: positive lag = the mouth moves after the sound (late), negative = before.
    The highest signed correlation is taken (a mouth that closes when the sound is loud is not in
    sync); ties go to the smallest |lag|. NaN frames are left out pairwise; a lag with fewer than
    `min_frames` pairs, or a constant series, is skipped. (None, None) when no lag is defined.

    Loudness under the median minus `floor_below_median_db` counts as that floor: how silent a
    silence is says nothing about the mouth, and one frame of digital silence (-100 dB, padding)
    would otherwise outweigh the speech in the correlation."""
    a = np.asarray(loudness, dtype=np.float64).reshape(-1)
    if len(a) and floor_below_median_db is not None:
        a = np.maximum(a, np.median(a) - floor_below_median_db)
    b = np.asarray(opening, dtype=np.float64).reshape(-1)
    if len(a) != len(b):
        raise ValueError(f"loudness and opening differ in length: {len(a)} and {len(b)}")
    best: tuple[float | None, int | None] = (None, None)
    for lag in sorted(range(-max_lag, max_lag + 1), key=lambda v: (abs(v), v)):
        r = lagged_correlation(a, b, lag, min_frames)
        if r is not None and (best[0] is None or r > best[0] + 1e-12):
            best = (r, lag)
    return best


def mouth_motion(opening, min_frames: int = 2) -> float | None:
    """How much the mouth moves: the standard deviation (population) of the opening over the
    frames where it is known; None under `min_frames` frames."""
    x = np.asarray(opening, dtype=np.float64).reshape(-1)
    x = x[np.isfinite(x)]
    return float(x.std()) if len(x) >= max(2, min_frames) else None


def mouth_jitter(opening, min_frames: int = MIN_FRAMES) -> float | None:
    """How much of the mouth's motion is flicker from one frame to the next, which `mouth_motion`
    counts as motion all the same: the RMS of each opening's difference from the mean of its two
    neighbours, over the opening's standard deviation. A mouth that opens and shuts within a frame
    or two scores high; a real one, whose syllables last several frames, low. For reading it: 0 for
    a straight line, 1 - cos(2 pi / P) for a sine of period P frames (0.5 at 6 frames, 0.19 at 10),
    about 1.2 for white noise. Only frames whose neighbours are known count; None under
    `min_frames` such frames or for a mouth that does not move."""
    x = np.asarray(opening, dtype=np.float64).reshape(-1)
    if len(x) < 3:
        return None
    mid = x[1:-1] - 0.5 * (x[:-2] + x[2:])
    mid = mid[np.isfinite(mid)]
    motion = mouth_motion(x, min_frames)
    if len(mid) < min_frames or motion is None or motion < 1e-12:
        return None
    return float(np.sqrt(np.mean(mid ** 2)) / motion)


def silent_frames(loudness, below_db: float = 30.0) -> np.ndarray:
    """[T] bool: frames whose loudness is more than `below_db` dB under the median loudness of all
    the frames (the speech's typical level)."""
    x = np.asarray(loudness, dtype=np.float64).reshape(-1)
    if not len(x):
        return np.zeros(0, dtype=bool)
    return x < np.median(x) - below_db


def silence_motion(loudness, opening, below_db: float = 30.0, min_frames: int = MIN_SILENT_FRAMES) -> float | None:
    """Mouth motion in silence over mouth motion in speech: `mouth_motion` of the frames that are
    silent (`silent_frames`: over `below_db` dB under the median loudness) divided by that of the
    other frames. Lower is better: a real speaker's mouth rests in pauses. None when either part
    has fewer than `min_frames` frames with a known opening, or the speech part does not move."""
    a = np.asarray(loudness, dtype=np.float64).reshape(-1)
    b = np.asarray(opening, dtype=np.float64).reshape(-1)
    if len(a) != len(b):
        raise ValueError(f"loudness and opening differ in length: {len(a)} and {len(b)}")
    quiet = silent_frames(a, below_db)
    known = np.isfinite(b)
    if (quiet & known).sum() < min_frames or (~quiet & known).sum() < min_frames:
        return None
    still, moving = mouth_motion(b[quiet]), mouth_motion(b[~quiet])
    if still is None or moving is None or moving < 1e-12:
        return None
    return still / moving


def silent_spans(loudness, below_db: float = 30.0) -> list[tuple[int, int]]:
    """The silent stretches as [(first, end)) frame ranges, for plots."""
    quiet = silent_frames(loudness, below_db)
    spans, start = [], None
    for k, q in enumerate(quiet):
        if q and start is None:
            start = k
        elif not q and start is not None:
            spans.append((start, k))
            start = None
    if start is not None:
        spans.append((start, len(quiet)))
    return spans


# ------------------------------------------------------------------------ images and landmarks


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """PSNR in dB of two images in [0, 1] (any shape); MSE floored at 1e-10 (100 dB)."""
    mse = float(F.mse_loss(a.double(), b.double()))
    return 10 * math.log10(1.0 / max(mse, 1e-10))


def _gaussian_window(size: int, sigma: float) -> torch.Tensor:
    x = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    g = g / g.sum()
    return g[:, None] * g[None, :]


def ssim(a: torch.Tensor, b: torch.Tensor, window: int = 11, sigma: float = 1.5, data_range: float = 1.0) -> float:
    """Mean SSIM of two [H, W, C] images (Wang et al. 2004): Gaussian window `window` x `window`
    with std `sigma`, C1 = (0.01 L)^2, C2 = (0.03 L)^2, valid positions only (no padding), each
    channel separately, then averaged. Both sides must be at least `window` pixels."""
    if a.shape != b.shape or a.dim() != 3:
        raise ValueError(f"ssim needs two [H, W, C] images of one shape, got {list(a.shape)} and {list(b.shape)}")
    H, W, C = a.shape
    if H < window or W < window:
        raise ValueError(f"ssim needs images of at least {window}x{window} pixels, got {H}x{W}")
    x = a.double().permute(2, 0, 1)[None]
    y = b.double().permute(2, 0, 1)[None]
    k = _gaussian_window(window, sigma).to(x.device).expand(C, 1, window, window)

    def blur(t):
        return F.conv2d(t, k, groups=C)

    mx, my = blur(x), blur(y)
    sxx = blur(x * x) - mx * mx
    syy = blur(y * y) - my * my
    sxy = blur(x * y) - mx * my
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    s = ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx * mx + my * my + c1) * (sxx + syy + c2))
    return float(s.mean())


def lmd(pred, ref) -> float:
    """Mean L2 distance (pixels) between the mouth landmarks of two sets of face-mesh landmarks:
    pred, ref [T, 478, 2] (or [478, 2]); ref may also be one [478, 2] set for all frames."""
    p = torch.tensor(np.array(pred, dtype=np.float64))[..., MOUTH, :2]
    r = torch.tensor(np.array(ref, dtype=np.float64))[..., MOUTH, :2]
    return float((p - r).norm(dim=-1).mean())


def mouth_opening(landmarks) -> np.ndarray:
    """Inner-lip gap in pixels of face-mesh landmarks [T, 478, 2] -> [T] (mean of three
    upper/lower point pairs)."""
    lm = np.asarray(landmarks, dtype=np.float64)
    gaps = [np.linalg.norm(lm[..., u, :2] - lm[..., d, :2], axis=-1) for u, d in INNER_LIP_PAIRS]
    return np.mean(gaps, axis=0)


def face_box(landmarks, height: int, width: int, margin: float = 0.1, min_size: int = 16) -> tuple[slice, slice]:
    """(rows, cols) of the face box: the landmarks' [N, 2] bounding box grown by `margin` of its
    size on each side, at least `min_size` pixels (SSIM's window fits), clipped to the image."""
    lm = np.asarray(landmarks, dtype=np.float64)[:, :2]
    (x0, y0), (x1, y1) = lm.min(0), lm.max(0)
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    hw = max((x1 - x0) * (1 + 2 * margin), min_size) / 2
    hh = max((y1 - y0) * (1 + 2 * margin), min_size) / 2
    min_size = min(min_size, width, height)

    def span(c, h, n):
        lo, hi = int(math.floor(c - h)), int(math.ceil(c + h))
        lo, hi = max(0, lo), min(n, hi)
        if hi - lo < min_size:  # at an image edge: slide inwards
            lo, hi = (0, min_size) if lo == 0 else (n - min_size, n)
        return slice(lo, hi)

    return span(cy, hh, height), span(cx, hw, width)


class Lpips:
    """LPIPS 0.1 with AlexNet: the loss training adds on the mouth and the `lpips` of `eval`.

    mode: "off" (never), "on" (when the AlexNet backbone weights can be had) or "require"
    (UnavailableError, a one-line GstalkerError, when they cannot). download: whether torchvision
    may fetch the weights into torch hub's cache (training: yes, as before; eval: no, it never
    downloads). `available` / `reason` say whether it can be used and, if not, why.
    pretrained_backbone=False: a random backbone (tests of the plumbing only).

    lpips(a, b): a, b [H, W, 3] in [0, 1] -> scalar tensor, differentiable in a and b.
    """

    def __init__(self, device: torch.device | str = "cpu", mode: str = "on", download: bool = False,
                 pretrained_backbone: bool = True):
        self.net = None
        self.reason = ""
        if mode == "off":
            self.reason = "turned off (--lpips off)"
            return
        path = Path(torch.hub.get_dir()) / "checkpoints" / LPIPS_WEIGHTS
        try:
            if pretrained_backbone and not download and not path.is_file():
                raise FileNotFoundError(path)
            import warnings

            import lpips

            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                self.net = lpips.LPIPS(net="alex", verbose=False, pnet_rand=not pretrained_backbone).to(device).eval()
            for p in self.net.parameters():
                p.requires_grad_(False)
        except Exception as e:  # offline: torchvision cannot fetch AlexNet's weights
            self.net = None
            why = "not found" if isinstance(e, FileNotFoundError) else f"not available ({type(e).__name__}: {first_line(e, 100)})"
            self.reason = f"AlexNet weights for LPIPS {why}; put {LPIPS_WEIGHTS} in {path.parent} to enable it"
            if mode == "require":
                raise UnavailableError(f"--lpips require: {self.reason}") from None

    @property
    def available(self) -> bool:
        return self.net is not None

    def __call__(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        dev = next(self.net.parameters()).device

        def to(x):
            return x.float().to(dev).permute(2, 0, 1)[None] * 2 - 1

        return self.net(to(a), to(b)).mean()


def box_slices(box, height: int, width: int, pad: float = 0.0, min_size: int = 16) -> tuple[slice, slice]:
    """(rows, cols) of a box [x0, y0, x1, y1] (pixels) grown by `pad` of its size in all (half on
    each side), at least `min_size` pixels a side, clipped to the image: the lip box training
    puts its L1 and LPIPS terms on."""
    x0, y0, x1, y1 = [float(v) for v in box]
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    hw = max((x1 - x0) * (1 + pad), min_size) / 2
    hh = max((y1 - y0) * (1 + pad), min_size) / 2
    xa, xb = int(max(0, cx - hw)), int(min(width, cx + hw))
    ya, yb = int(max(0, cy - hh)), int(min(height, cy + hh))
    return slice(ya, max(yb, ya + 1)), slice(xa, max(xb, xa + 1))


@torch.no_grad()
def mean_frame(frame, ids, limit: int = 200) -> torch.Tensor:
    """The mean of frames `ids` (at most `limit` of them, evenly spaced), summed in float64:
    the baseline image a model must beat. frame(i) -> [H, W, C] float. Returns [H, W, C] float32."""
    ids = [int(i) for i in ids]
    pick = np.unique(np.linspace(0, len(ids) - 1, min(limit, len(ids))).round().astype(int))
    total = None
    for k in pick:
        f = frame(ids[k]).double()
        total = f if total is None else total + f
    return (total / len(pick)).float()


@torch.no_grad()
def mean_frame_psnr(frame, train_ids, heldout_ids, limit: int = 200) -> float:
    """PSNR of the mean training frame (`mean_frame`) against the held-out frames (at most about
    `limit`, evenly strided; the training frames when none are held out): `fit`'s baseline."""
    mean = mean_frame(frame, train_ids, limit)
    val = [int(i) for i in heldout_ids] or [int(i) for i in train_ids]
    if len(val) > limit:
        val = val[:: max(1, len(val) // limit)]
    return float(sum(psnr(mean, frame(i).to(mean.device)) for i in val) / len(val))
