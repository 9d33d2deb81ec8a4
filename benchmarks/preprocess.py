"""Preprocessing speed on the real clips: seconds of work per minute of video, by stage.

    python benchmarks/preprocess.py            # every clip in ../shared/media (a few minutes)
    python benchmarks/preprocess.py --quick    # one short clip and a 15 s span (about a minute)

Target (issue 5): under 120 s per minute of 512x512 video on 2 CPU cores. Stage timings and
`total` are wall clock (they vary with the machine's load; the table prints the load average);
`cpu` is the process's CPU seconds (all threads) per minute of video, which does not.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

STAGES = ["decode", "landmarks", "pose", "masks", "features", "assemble"]
# (file, start, end): None = whole clip. interview_97s.mp4's useful span is about 1.5-90 s.
FULL = [
    ("retalking_face1.mp4", None, None),
    ("retalking_face4.mp4", None, None),
    ("latentsync_demo1.mp4", None, None),
    ("latentsync_demo2.mp4", None, None),
    ("interview_97s.mp4", 1.5, 90.0),
]
QUICK = [("retalking_face1.mp4", None, None), ("interview_97s.mp4", 30.0, 45.0)]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--media", type=Path, default=ROOT.parent / "shared" / "media")
    ap.add_argument("--quick", action="store_true", help="one short clip and a 15 s span (about a minute)")
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--audio-features", default="mel")
    ap.add_argument("--keep", type=Path, default=None, help="keep the workdirs under this folder")
    args = ap.parse_args(argv)

    from gstalker.preprocess import PreprocessWarning, preprocess

    if not args.media.is_dir():
        print(f"media folder not found: {args.media}", file=sys.stderr)
        return 2
    clips = QUICK if args.quick else FULL
    rows = []
    base = args.keep or Path(tempfile.mkdtemp(prefix="gstalker-bench-"))
    for name, start, end in clips:
        path = args.media / name
        if not path.exists():
            print(f"skipping {name}: not found", file=sys.stderr)
            continue
        wd = base / (Path(name).stem + (f"_{start:g}-{end:g}" if start is not None else ""))
        t = time.perf_counter()
        ru = resource.getrusage(resource.RUSAGE_SELF)
        cpu0 = ru.ru_utime + ru.ru_stime
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", PreprocessWarning)
            preprocess(path, wd, size=args.size, audio_features=args.audio_features, start=start, end=end,
                       force=True, progress=False)
        total = time.perf_counter() - t
        ru = resource.getrusage(resource.RUSAGE_SELF)
        cpu = ru.ru_utime + ru.ru_stime - cpu0
        meta = json.loads((wd / "meta.json").read_text())
        minutes = meta["num_frames"] / meta["fps"] / 60
        tm = meta["timings_s"]
        rows.append((name + (f" [{start:g}-{end:g} s]" if start is not None else ""), meta["num_frames"],
                     meta["num_frames"] / meta["fps"], {s: tm.get(s, 0.0) / minutes for s in STAGES},
                     total / minutes, meta["reprojection_error_px"], meta["video"], cpu / minutes))
        print(f"done {name}: {total:.1f} s", file=sys.stderr)

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print(f"\nseconds of preprocessing per minute of video ({args.size}x{args.size}, "
          f"{args.audio_features} features, {cores} CPU cores, load {os.getloadavg()[0]:.1f})")
    head = (f"{'clip':<38}{'frames':>7}{'video s':>8}" + "".join(f"{s:>10}" for s in STAGES)
            + f"{'total':>9}{'cpu':>8}{'reproj px':>10}")
    print(head)
    print("-" * len(head))
    for name, n, secs, per, total, err, v, cpu in rows:
        print(f"{name:<38}{n:>7}{secs:>8.1f}" + "".join(f"{per[s]:>10.1f}" for s in STAGES)
              + f"{total:>9.1f}{cpu:>8.1f}{err:>10.2f}")
    if rows:
        n_all = sum(r[2] for r in rows) / 60
        tot = sum(r[4] * r[2] / 60 for r in rows) / n_all
        print(f"{'all clips (weighted by length)':<38}{'':>7}{sum(r[2] for r in rows):>8.1f}" + " " * 10 * len(STAGES) + f"{tot:>9.1f}")
        print(f"target: under 120 s per minute -> {'met' if tot < 120 else 'NOT met'}")
    if args.keep is None:
        import shutil

        shutil.rmtree(base, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
