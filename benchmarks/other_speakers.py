"""Lip sync with other people's speech, against their own real mouths: drive MODEL with the audio
of each VIDEO (another person talking) and correlate the rendered mouth opening with that
person's tracked mouth opening, frame by frame. `gstalker eval --audio` can only compare the
rendered mouth with the speech's loudness, which even real recordings barely follow (-0.24 to
0.42 in ../shared/media); here the reference is how a real mouth moved to the same sound.

    python benchmarks/other_speakers.py MODEL [VIDEO ...] [--cache DIR] [--max-frames 500]

VIDEO defaults to the five talking-head clips of ../shared/media other than interview_97s.mp4.
Each is preprocessed once into --cache by `gstalker.evaluate.speaker_mouth` (what `eval --audio
VIDEO` uses: 128 px, its audio as recorded); the model speaks its audio with the training poses
played back (`Talker.frames`, as `speak`); both mouths are measured as `gstalker eval` does
(inner-lip gap over the eye distance, MediaPipe on the frames). `eval --audio VIDEO` gives the same
figures for one clip (speaker_corr, speaker_sync, speaker_lag) beside the rest of its report. Prints a Markdown table: per clip the correlation at lag 0 and the best one over
lags -3..3 (positive lag: the rendered mouth moves after the real one), and the two mouths'
motion (standard deviation of the opening) and jitter (`gstalker.metrics.mouth_jitter`).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
MEDIA = ROOT.parent / "shared" / "media"
CLIPS = ["latentsync_demo2.mp4", "latentsync_demo1.mp4", "retalking_face2.mp4", "retalking_face3.mp4",
         "retalking_face5.mp4"]


def speaker_videos(videos: list[Path]) -> list[Path]:
    """The videos to drive with (CLIPS from ../shared/media when none are given); exits with one
    line naming the first that is missing (speaker_mouth would return None for it)."""
    default = not videos
    videos = videos or [MEDIA / c for c in CLIPS]
    for video in videos:
        if not video.is_file():
            hint = " (the default clips live in ../shared/media beside the repository)" if default else ""
            sys.exit(f"{Path(sys.argv[0]).name}: no such video: {video}; give videos of people talking{hint}")
    return videos


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", type=Path)
    ap.add_argument("videos", type=Path, nargs="*")
    ap.add_argument("--cache", type=Path, default=Path("other_speakers.cache"))
    ap.add_argument("--max-frames", type=int, default=500)
    args = ap.parse_args(argv)

    import gstalker  # noqa: F401  (OMP_WAIT_POLICY before torch)
    from gstalker.cli import _quiet_native_logs

    videos = speaker_videos(args.videos)
    with _quiet_native_logs():  # MediaPipe's start-up chatter
        return _measure(args, videos)


def _measure(args, videos) -> int:
    import gstalker
    import numpy as np

    from gstalker.data import SAMPLES_PER_FRAME
    from gstalker.evaluate import _render_speech, speaker_mouth
    from gstalker.metrics import av_sync, correlation, mouth_jitter

    talker = gstalker.load(args.model, device="cpu")
    rows = []
    for video in videos:
        wave, real = speaker_mouth(video, progress=False, workdir=args.cache / video.stem)
        n = min(len(real), args.max_frames)
        real, wave = real[:n], wave[:n * SAMPLES_PER_FRAME]
        rendered, _, _, error = _render_speech(talker, wave, n, None, progress=False)
        if error:
            print(f"other_speakers: {error}")
            return 1
        r0 = correlation(real, rendered)
        best, lag = av_sync(real, rendered, floor_below_median_db=None)
        rows.append((video.name, n, r0, best, lag, np.nanstd(rendered), np.nanstd(real), mouth_jitter(rendered),
                     mouth_jitter(real)))
    print(f"{args.model.name}: rendered mouth against other people's real mouths, driven by their audio")
    print("| clip | frames | r at lag 0 | best r (lag) | rendered motion | real motion | rendered jitter | real jitter |")
    print("|---|---|---|---|---|---|---|---|")
    for name, n, r0, best, lag, ms, mr, js, jr in rows:
        print(f"| {name} | {n} | {r0:+.3f} | {best:+.3f} ({lag:+d}) | {ms:.4f} | {mr:.4f} | {js:.3f} | {jr:.3f} |")
    mean0 = float(np.mean([r[2] for r in rows]))
    meanb = float(np.mean([r[3] for r in rows]))
    print(f"| mean | | {mean0:+.3f} | {meanb:+.3f} | | | {np.mean([r[7] for r in rows]):.3f} | "
          f"{np.mean([r[8] for r in rows]):.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
