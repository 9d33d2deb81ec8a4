"""gstalker.audio: decoding to 16 kHz mono, mel windows, pretrained extractors (offline)."""

import wave

import numpy as np
import pytest

from gstalker.audio import (
    SAMPLE_RATE, WINDOW, AudioError, FeatureModelError, extract_features, feature_kinds, load_audio,
    sequence_features,
)


def _write_wav(path, data, rate):
    """data: [T, C] float in [-1, 1]."""
    pcm = (np.clip(data, -1, 1) * 32767).astype("<i2")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(pcm.shape[1])
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm.tobytes())


@pytest.mark.parametrize("rate", [44100, 48000, 16000])
def test_load_audio_resamples_to_16k_mono(tmp_path, rate):
    t = np.arange(int(1.5 * rate)) / rate
    tone = 0.5 * np.sin(2 * np.pi * 440 * t)
    stereo = np.stack([tone, tone], 1)
    p = tmp_path / "a.wav"
    _write_wav(p, stereo, rate)
    w = load_audio(p)
    assert w.dtype == np.float32 and w.ndim == 1
    assert abs(len(w) - 1.5 * SAMPLE_RATE) <= 0.01 * SAMPLE_RATE
    spec = np.abs(np.fft.rfft(w[2000:18000]))
    peak = np.argmax(spec) * SAMPLE_RATE / 16000
    assert abs(peak - 440) < 5
    assert 0.3 < np.abs(w).max() <= 0.55  # mixed down, not summed


def test_load_audio_trim_and_errors(tmp_path):
    p = tmp_path / "a.wav"
    _write_wav(p, np.zeros((SAMPLE_RATE * 2, 1)), SAMPLE_RATE)
    assert len(load_audio(p, start=0.5, end=1.0)) == SAMPLE_RATE // 2
    with pytest.raises(AudioError, match="no such file"):
        load_audio(tmp_path / "missing.wav")
    with pytest.raises(AudioError, match="directory"):
        load_audio(tmp_path)
    bad = tmp_path / "bad.wav"
    bad.write_text("hello, not audio")
    with pytest.raises(AudioError, match="bad.wav"):
        load_audio(bad)


def test_own_wav_reads_as_ffmpeg_does_without_pyav(tmp_path, monkeypatch):
    """A work folder's audio.wav (16-bit mono at 16 kHz) is read with the standard library, so
    training runs where PyAV is missing (the GPU machine), and gives FFmpeg's samples exactly."""
    import builtins

    from gstalker.audio import io

    rng = np.random.default_rng(0)
    p = tmp_path / "audio.wav"
    io.save_wav(p, 0.3 * rng.standard_normal(SAMPLE_RATE), SAMPLE_RATE)
    monkeypatch.setattr(io, "_read_pcm_wav", lambda path, rate: None)
    through_ffmpeg = load_audio(p, start=0.25, end=0.75)
    monkeypatch.undo()
    real_import = builtins.__import__

    def no_av(name, *a, **kw):
        if name == "av" or name.startswith("av."):
            raise ImportError("no PyAV here")
        return real_import(name, *a, **kw)

    monkeypatch.setattr(builtins, "__import__", no_av)
    own = load_audio(p, start=0.25, end=0.75)
    assert np.abs(through_ffmpeg).max() > 0.3
    np.testing.assert_array_equal(own, through_ffmpeg)


def test_mel_windows_shape_and_centring():
    n_frames = 50  # 2 s at 25 fps
    w = np.zeros(2 * SAMPLE_RATE, np.float32)
    # a burst in video frame 20: [0.8, 0.84) s
    s = int(0.8 * SAMPLE_RATE)
    w[s : s + 640] = np.random.default_rng(0).standard_normal(640).astype(np.float32) * 0.5
    f = extract_features(w, "mel", n_frames)
    assert f.shape == (n_frames, WINDOW, 80) and f.dtype == np.float32
    energy = f.mean(2)  # [N, W]
    # frame 20's window has the burst at its centre, neighbours see it shifted by 2 feature frames
    c = WINDOW // 2
    assert energy[20, c - 2 : c + 2].max() > energy[20].mean() + 0.1
    assert np.argmax(energy[20]) in range(c - 2, c + 2)
    assert np.argmax(energy[22]) in range(c - 6, c - 2)
    # default frame count: whole video frames covered
    assert extract_features(w, "mel").shape[0] == 50


def test_unknown_kind():
    with pytest.raises(ValueError, match="unknown audio feature kind"):
        extract_features(np.zeros(16000, np.float32), "deepspeech", 10)
    assert {"mel", "hubert", "wav2vec2"} <= set(feature_kinds())


def _tiny(kind):
    import torch

    torch.manual_seed(0)
    common = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                  conv_dim=(32,) * 7, num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2)
    if kind == "hubert":
        from transformers import HubertConfig, HubertModel

        return HubertModel(HubertConfig(**common)).eval()
    from transformers import Wav2Vec2Config, Wav2Vec2Model

    return Wav2Vec2Model(Wav2Vec2Config(**common)).eval()


@pytest.mark.parametrize("kind", ["hubert", "wav2vec2"])
def test_pretrained_extractors_with_tiny_random_model(kind, tmp_path):
    rng = np.random.default_rng(1)
    w = (rng.standard_normal(int(3.3 * SAMPLE_RATE)) * 0.1).astype(np.float32)
    m = _tiny(kind)
    seq = sequence_features(w, kind, model=m, chunk_s=1.0, context_s=0.2)
    assert seq.shape == (len(w) // 320 + 1, 32)
    f = extract_features(w, kind, 80, model=m, chunk_s=1.0, context_s=0.2)
    assert f.shape == (80, WINDOW, 32) and np.isfinite(f).all()
    # a saved local copy loads by folder name, as users with downloaded weights do
    m.save_pretrained(tmp_path / "tiny")
    f2 = extract_features(w, kind, 80, model=str(tmp_path / "tiny"), chunk_s=1.0, context_s=0.2)
    np.testing.assert_allclose(f, f2, atol=1e-4)


@pytest.mark.parametrize("kind,name", [("hubert", "facebook/hubert-large-ls960-ft"), ("wav2vec2", "facebook/wav2vec2-base-960h")])
def test_missing_pretrained_model_has_clear_message(kind, name, monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))  # an empty cache
    with pytest.raises(FeatureModelError) as e:
        extract_features(np.zeros(16000, np.float32), kind, 10)
    msg = str(e.value)
    assert name in msg and "huggingface-cli download" in msg and "\n" not in msg
