"""How far the running audio codes (`Talker.codes`, `frames`, `speak`, `stream`: loudness gain
and log-mel floor estimated from the audio heard so far) are from the codes of the whole-file
features the model was trained on (`extract_features`), second by second. Leading silence and
the first seconds of speech are where a running estimate can go wrong.

    python benchmarks/running_features.py MODEL [--audio ../shared/media/musetalk_eng.wav] [--seconds 12]

Prints, per second: the relative difference |running - whole| / |whole| of the codes (median
over the second's frames), and the loudness gain both apply (dB). The speech-mean
normalisation (format 3 models) is turned off for the comparison: it has no whole-file twin in
the training features, and this measures the loudness gain and log-mel floor alone.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import print_table  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
MEDIA = ROOT.parent / "shared" / "media"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model")
    ap.add_argument("--audio", default=str(MEDIA / "musetalk_eng.wav"))
    ap.add_argument("--seconds", type=float, default=12.0)
    args = ap.parse_args()

    import gstalker
    from gstalker.audio import extract_features, load_audio
    from gstalker.audio.features import HOP, RunningLoudness, block_mean_squares

    talker = gstalker.load(args.model, device="cpu")
    talker.model.set_speech_mean(None)  # see the module docstring
    wave = load_audio(args.audio)[: int(args.seconds * 16000)]
    running = talker.codes(wave)
    with torch.no_grad():
        whole = talker.model.codes(torch.as_tensor(extract_features(wave, "mel", num_frames=len(running))))
    diff = ((running - whole).norm(dim=1) / whole.norm(dim=1).clamp_min(1e-8)).numpy()

    loudness, gains = RunningLoudness(), []
    for ms in block_mean_squares(wave):
        loudness.add(float(ms))
        gains.append(loudness.gain_db())
    final = gains[-1]
    ms = block_mean_squares(wave)
    rows = []
    for s in range(int(np.ceil(len(running) / 25))):
        blocks = slice(s * 50, (s + 1) * 50)
        level = 10 * np.log10(np.maximum(ms[blocks], 1e-30))
        rows.append([f"{s}-{s + 1}", f"{np.median(level):.0f}", f"{100 * np.median(diff[s * 25:(s + 1) * 25]):.1f}%",
                     f"{np.mean(gains[blocks]):+.1f}", f"{final:+.1f}"])
    print(f"{Path(args.model).name} on {Path(args.audio).name}, first {len(wave) / 16000:.1f} s")
    print_table(["second", "median block dBFS", "codes: running vs whole", "running gain dB", "whole-file gain dB"], rows)


if __name__ == "__main__":
    main()
