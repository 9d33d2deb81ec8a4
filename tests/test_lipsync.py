"""Lip sync on the synthetic clip: a model trained on one audio sequence must move its mouth with
a *different* sequence it never saw, and must not when the audio path is cut.

The synthetic clip's mouth (a dark bar in a disc) opens with its first audio feature. After
training, the model is driven by a new feature sequence with the pose and eye held still, and a
mouth measure is read off the rendered frames: the mean darkness of the mouth region. Its
Pearson correlation with the driving signal must reach 0.8. With the audio code zeroed the
same measure must not follow the signal: that control shows the first test can fail.
"""

import numpy as np
import pytest
import torch

from gstalker.train import FitSettings, Trainer, TrainData, run_training
from synthetic import SyntheticClip

# trains a small model on a synthetic clip first: minutes on two cores
pytestmark = pytest.mark.slow

SIZE = 40


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    torch.set_num_threads(2)
    clip = SyntheticClip(n=48, size=SIZE)
    data = TrainData(clip, torch.device("cpu"))
    s = FitSettings.from_preset("smoke", size=SIZE, lpips="off", seed=0)
    s.static_iters, s.deform_iters = 100, 300
    s.schedule.update(n_head=300, n_torso=100, densify_every=50, preview_every=0, opacity_reset_every=0,
                      log2_table_size=10)
    t = Trainer(data, s, clip.feature_meta, tmp_path_factory.mktemp("lipsync"))
    run_training(t, progress=False)
    return t, clip


def driving_signal(n: int = 40) -> np.ndarray:
    """A mouth-opening sequence unlike the training one (another rhythm, a changing loudness:
    syllables that swell and fade), in [0, 1]."""
    k = np.arange(n)
    return 0.5 + 0.4 * np.sin(k / 2.6 + 1.0) * (0.6 + 0.4 * np.cos(k / 9))


def mouth_darkness(frames: torch.Tensor) -> np.ndarray:
    """frames [T, H, W, 3] -> [T]: how dark the mouth box is (1 - mean red), the synthetic mouth
    being dark red on a light face."""
    s = frames.shape[1]
    box = frames[:, int(s * 0.44):int(s * 0.62), int(s * 0.38):int(s * 0.62), 0]
    return (1 - box.mean(dim=(1, 2))).numpy()


def render_driven(t: Trainer, clip: SyntheticClip, signal: np.ndarray, cut_audio: bool = False,
                  mouth_gain: float = 1.0) -> torch.Tensor:
    rng = np.random.default_rng(1)
    feats = signal[:, None, None] + 0.05 * rng.standard_normal((len(signal), 16, clip.feature_meta["dim"]))
    model = t.model
    with torch.no_grad():
        codes = model.codes(torch.tensor(feats, dtype=torch.float32))
        if cut_audio:
            codes = torch.zeros_like(codes)
        still_pose, still_eye = t.data.viewmats[0], t.data.eyes[0]
        return torch.stack([model.render(c, still_pose, still_eye, mouth_gain=mouth_gain)["image"].clamp(0, 1)
                            for c in codes])


def pearson(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.std() < 1e-9 or b.std() < 1e-9:
        return 0.0
    return float(np.corrcoef(a, b)[0, 1])


def test_rendered_mouth_follows_unseen_audio(trained):
    t, clip = trained
    signal = driving_signal()
    corr = pearson(mouth_darkness(render_driven(t, clip, signal)), signal)
    assert corr >= 0.8, f"rendered mouth vs driving signal: r = {corr:.3f}"


def test_cut_audio_path_fails_the_sync_measure(trained):
    t, clip = trained
    signal = driving_signal()
    frames = render_driven(t, clip, signal, cut_audio=True)
    corr = pearson(mouth_darkness(frames), signal)
    assert corr < 0.5, f"with the audio code zeroed the mouth still follows the signal: r = {corr:.3f}"


def test_mouth_gain_widens_the_mouths_motion_and_keeps_its_timing(trained):
    """`speak`'s mouth gain: the same unseen signal at gain 1.5 moves the rendered mouth further
    (the darkness measure's spread) and still in step with the signal; gain 0 holds it still."""
    t, clip = trained
    assert t.model.mouth_gain == 1.0  # run_training stored the smoke preset's gain and the mean code
    signal = driving_signal()
    plain = mouth_darkness(render_driven(t, clip, signal))
    wide = mouth_darkness(render_driven(t, clip, signal, mouth_gain=1.5))
    still = mouth_darkness(render_driven(t, clip, signal, mouth_gain=0.0))
    assert wide.std() > 1.2 * plain.std(), (wide.std(), plain.std())
    assert pearson(wide, signal) >= 0.8
    assert still.std() < 0.1 * plain.std(), (still.std(), plain.std())
