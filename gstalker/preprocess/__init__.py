"""Preprocessing: a talking-head video to a cached training set (`gstalker preprocess`).

    from gstalker.preprocess import preprocess
    workdir = preprocess("subject.mp4", "work/subject", size=512, audio_features="mel")

See `gstalker.data.PreprocessedVideo` to read the result.
"""

from ..errors import PreprocessError, PreprocessWarning
from .pipeline import FPS, SAMPLE_RATE, preprocess

__all__ = ["FPS", "PreprocessError", "PreprocessWarning", "SAMPLE_RATE", "preprocess"]
