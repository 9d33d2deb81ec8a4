"""Audio smoother: per-frame audio windows -> 1D convolutions -> per-frame code -> attention over
neighbouring frames (paper section "Temporal smooth", after AD-NeRF / RAD-NeRF / ER-NeRF).

Shapes: a video frame's audio is a window ``[W, D]`` (W = 16 feature frames of width D, from
`gstalker.audio.extract_features`); the smoother works for any D and W.

The temporal smoothing is AD-NeRF's self-attention filter: the ``A`` (= 8) codes of frames
``t-4 .. t+3`` are read by a small 1D conv net that produces one score per frame, a linear
layer mixes the scores, and a softmax turns them into weights; the smoothed code of frame t is
the weighted sum of the ``A`` codes. The weights are positive and sum to one, so the output is
always a convex combination of neighbouring codes: it can only smooth, never overshoot.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["AudioSmoother", "neighbour_index"]


def neighbour_index(frames: torch.Tensor, num_frames: int, att_window: int = 8) -> torch.Tensor:
    """Indices of the `att_window` frames around each frame, clamped to the clip.

    frames: [B] int64 frame indices in [0, num_frames). Returns [B, A] int64: frames
    ``t - A//2 .. t + A - A//2 - 1`` (8 -> t-4 .. t+3), the centre frame at column ``A // 2``.
    """
    offs = torch.arange(att_window, device=frames.device) - att_window // 2
    return (frames[:, None] + offs[None, :]).clamp(0, num_frames - 1)


class AudioSmoother(nn.Module):
    """Audio windows -> per-frame codes, smoothed over a window of neighbouring frames.

    Args:
        in_dim: D, the feature width of the extractor (80 for mel, 1024 for hubert-large...).
        code_dim: width of the per-frame code (paper's f_a), 32 by default.
        att_window: A, neighbouring frames the attention smooths over (8).

    encode(windows [B, W, D]) -> codes [B, code_dim]
    smooth(codes [B, A, code_dim]) -> [B, code_dim]
    forward(windows [B, A, W, D]) -> [B, code_dim]  (a training batch: each frame's neighbours)
    forward_sequence(windows [T, W, D]) -> [T, code_dim]  (a whole clip, each frame encoded once)
    """

    def __init__(self, in_dim: int, code_dim: int = 32, att_window: int = 8):
        super().__init__()
        if in_dim < 1 or code_dim < 1 or att_window < 1:
            raise ValueError(
                f"in_dim, code_dim and att_window must be positive, got {in_dim}, {code_dim}, {att_window}"
            )
        self.in_dim, self.code_dim, self.att_window = in_dim, code_dim, att_window
        act = lambda: nn.LeakyReLU(0.02, inplace=True)  # noqa: E731
        # four stride-2 convolutions: a 16-frame window shrinks 16 -> 8 -> 4 -> 2 -> 1
        self.conv = nn.Sequential(
            nn.Conv1d(in_dim, 32, 3, stride=2, padding=1), act(),
            nn.Conv1d(32, 32, 3, stride=2, padding=1), act(),
            nn.Conv1d(32, 64, 3, stride=2, padding=1), act(),
            nn.Conv1d(64, 64, 3, stride=2, padding=1), act(),
        )
        self.fc = nn.Sequential(nn.Linear(64, 64), act(), nn.Linear(64, code_dim))
        self.att_conv = nn.Sequential(
            nn.Conv1d(code_dim, 16, 3, padding=1), act(),
            nn.Conv1d(16, 8, 3, padding=1), act(),
            nn.Conv1d(8, 4, 3, padding=1), act(),
            nn.Conv1d(4, 2, 3, padding=1), act(),
            nn.Conv1d(2, 1, 3, padding=1), act(),
        )
        self.att_mix = nn.Linear(att_window, att_window)

    def encode(self, windows: torch.Tensor) -> torch.Tensor:
        """windows [B, W, D] float32 -> codes [B, code_dim] (no temporal smoothing)."""
        if windows.dim() != 3 or windows.shape[-1] != self.in_dim:
            raise ValueError(f"windows must have shape [B, W, {self.in_dim}], got {list(windows.shape)}")
        x = self.conv(windows.transpose(1, 2))  # [B, 64, ceil(W / 16)]
        return self.fc(x.mean(dim=2))  # any W: average what is left of the time axis

    @torch.no_grad()
    def standardize_output_(self, windows: torch.Tensor) -> None:
        """Data-dependent init: rescale the last layer so the codes of `windows` [T, W, D] (a
        training clip) have zero mean and unit variance per dimension. At PyTorch's default init
        the codes of a whole clip varied by ~1% of their size, so the deformation fields saw
        almost the same condition for every frame and learned lip motion only very slowly."""
        codes = self.encode(windows)
        mean, std = codes.mean(0), codes.std(0).clamp_min(1e-6)
        last = self.fc[-1]
        last.weight.div_(std[:, None])
        last.bias.sub_(mean).div_(std)

    def attention_weights(self, codes: torch.Tensor) -> torch.Tensor:
        """codes [B, A, code_dim] -> weights [B, A], positive, summing to 1 over A."""
        if codes.dim() != 3 or codes.shape[1:] != (self.att_window, self.code_dim):
            raise ValueError(
                f"codes must have shape [B, {self.att_window}, {self.code_dim}], got {list(codes.shape)}"
            )
        scores = self.att_conv(codes.transpose(1, 2))[:, 0]  # [B, A]
        return torch.softmax(self.att_mix(scores), dim=1)

    def smooth(self, codes: torch.Tensor) -> torch.Tensor:
        """codes [B, A, code_dim] of frames t-4..t+3 -> smoothed code of frame t, [B, code_dim]."""
        return (self.attention_weights(codes)[:, :, None] * codes).sum(dim=1)

    def forward(self, windows: torch.Tensor, smooth: bool = True) -> torch.Tensor:
        """windows [B, A, W, D] (frames t-4..t+3 of each batch frame) -> [B, code_dim].

        With ``smooth=False`` only the centre frame (column A // 2) is encoded: the un-smoothed
        code, for a warm-up phase of training.
        """
        if windows.dim() != 4 or windows.shape[1] != self.att_window:
            raise ValueError(
                f"windows must have shape [B, {self.att_window}, W, {self.in_dim}], got {list(windows.shape)}"
            )
        B, A, W, D = windows.shape
        if not smooth:
            return self.encode(windows[:, A // 2])
        codes = self.encode(windows.reshape(B * A, W, D)).view(B, A, self.code_dim)
        return self.smooth(codes)

    def forward_sequence(self, windows: torch.Tensor, smooth: bool = True) -> torch.Tensor:
        """windows [T, W, D] of a whole clip -> smoothed codes [T, code_dim] (edges clamped)."""
        codes = self.encode(windows)
        if not smooth:
            return codes
        return self.smooth_codes(codes)

    def smooth_codes(self, codes: torch.Tensor) -> torch.Tensor:
        """codes [T, code_dim] of consecutive frames -> [T, code_dim], each smoothed over its window."""
        T = codes.shape[0]
        idx = neighbour_index(torch.arange(T, device=codes.device), T, self.att_window)
        return self.smooth(codes[idx])
