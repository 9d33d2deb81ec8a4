"""Audio for gstalker: decode any file to 16 kHz mono and turn speech into per-frame features.

    from gstalker.audio import load_audio, extract_features
    wave = load_audio("speech.wav")                    # float32 [T] at 16 kHz
    feats = extract_features(wave, "mel", num_frames)  # float32 [num_frames, 16, D]
"""

from .features import (
    DEFAULT_MODELS,
    FEATURE_RATE,
    WINDOW,
    FeatureModelError,
    extract_features,
    normalize_loudness,
    feature_dim,
    feature_kinds,
    load_speech_model,
    register,
    sequence_features,
    windows,
)
from .io import SAMPLE_RATE, AudioError, load_audio, load_audio_track, save_wav

__all__ = [
    "AudioError", "DEFAULT_MODELS", "FEATURE_RATE", "FeatureModelError", "SAMPLE_RATE", "WINDOW",
    "extract_features", "feature_dim", "normalize_loudness", "feature_kinds", "load_audio", "load_audio_track", "load_speech_model",
    "register", "save_wav", "sequence_features", "windows",
]
