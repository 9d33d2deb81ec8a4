"""`Talker.stream`: frames while the speech arrives, equal to `frames` on the same audio, each as
soon as the audio it needs is in, never skipped or reordered by a slow consumer."""

import queue
import threading
import time

import numpy as np
import pytest

import gstalker
from gstalker.audio import extract_features
from gstalker.streaming import CodeStream, MelStream
from synthetic import tiny_mel_model


@pytest.fixture(scope="module")
def talker(tmp_path_factory):
    return gstalker.load(tiny_mel_model(tmp_path_factory.mktemp("model")), device="cpu")


def speech_like(seconds: float, seed: int = 0) -> np.ndarray:
    """Syllables (4 per second) of a buzzing tone with pauses: loudness that changes over time."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(16000 * seconds)) / 16000
    env = np.clip(np.sin(2 * np.pi * 2 * t), 0, None) ** 2 * (t > 0.3)
    wave = 0.2 * env * np.sign(np.sin(2 * np.pi * 140 * t)) + 0.002 * rng.standard_normal(len(t))
    return wave.astype(np.float32)


def chunked(wave: np.ndarray, sizes):
    i = 0
    for n in sizes:
        if i >= len(wave):
            return
        yield wave[i:i + n]
        i += n
    if i < len(wave):
        yield wave[i:]


def test_stream_equals_frames_for_any_chunking(talker):
    wave = speech_like(2.3)
    offline = np.stack(list(talker.frames(wave)))
    assert offline.shape[0] == round(len(wave) / 640)
    rng = np.random.default_rng(1)
    for sizes in ([len(wave)], [320] * 200, rng.integers(1, 1600, 400).tolist()):  # one piece, 20 ms, 0.06-100 ms
        streamed = np.stack(list(talker.stream(chunked(wave, sizes))))
        assert np.array_equal(streamed, offline), sizes[:3]


def test_running_features_settle_on_the_offline_ones():
    """The running loudness gain and log-mel floor equal the whole-file ones at the end, so the
    features converge to the training features (`extract_features`) as speech goes on."""
    from gstalker.audio import normalize_loudness, sequence_features

    wave = speech_like(4.0, seed=3)
    m = MelStream()
    running = np.concatenate([m.push(wave[:7000]), m.push(wave[7000:]), m.finish()])
    offline = sequence_features(normalize_loudness(wave), "mel")
    assert running.shape == offline.shape
    err = np.abs(running - offline).mean(1)
    assert err[-1] < 1e-3, err[-1]
    assert err[-50:].mean() < 0.02 and err[-50:].mean() < err[:50].mean()
    assert extract_features(wave, "mel").shape[0] == 100  # training features unchanged in shape


def test_leading_silence_stays_silence_and_speech_after_it_gets_the_whole_file_level():
    """3 s of room noise before the speech (musetalk_eng.wav has them): the running gain must not
    blow the noise up to speech level, nor carry it into the first second of speech."""
    from gstalker.audio import normalize_loudness, sequence_features

    rng = np.random.default_rng(4)
    noise = (0.0018 * rng.standard_normal(3 * 16000)).astype(np.float32)  # -55 dBFS
    wave = np.concatenate([noise, speech_like(3.0, seed=5)])
    m = MelStream()
    running = np.concatenate([m.push(wave), m.finish()])
    offline = sequence_features(normalize_loudness(wave), "mel")
    err = np.abs(running - offline).mean(1)  # per feature frame (50 per second)
    # the silence: not boosted (the whole file turns it down by its speech's 6 dB, gain 1 before
    # any speech leaves it; 6 dB are 0.15 in feature units), where the old gain boosted it by 33 dB
    assert err[:150].max() < 0.15, err[:150].max()
    assert err[175:225].mean() < 0.05, err[175:225].mean()  # the first second of speech (old gain: 0.15)


def test_each_frame_comes_as_soon_as_its_audio_is_in(talker):
    """Frame k is yielded right after the chunk holding sample 640 k + 4800 (260 ms after its own
    audio ends), not later and not sooner."""
    assert talker.stream_latency_ms == 260.0
    wave = speech_like(1.6)
    given = [0]

    def source():
        for i in range(0, len(wave), 160):  # 10 ms chunks
            given[0] = min(i + 160, len(wave))
            yield wave[i:i + 160]

    seen = []
    for k, _ in enumerate(talker.stream(source())):
        seen.append((k, given[0]))
    for k, samples in seen:
        need = CodeStream.ready_sample(k)
        if need <= len(wave):
            assert need <= samples < need + 160, (k, samples, need)
        else:  # the last frames: when the audio ends
            assert samples == len(wave)
    assert len(seen) == round(len(wave) / 640)


def test_slow_consumer_skips_and_reorders_nothing(talker):
    """A microphone thread pushes 20 ms chunks in real time into a queue; the consumer is slower
    than real time; every frame still comes, in order, equal to `frames`."""
    wave = speech_like(1.2, seed=2)
    q: queue.Queue = queue.Queue()

    def mic():
        for i in range(0, len(wave), 320):
            q.put(wave[i:i + 320])
            time.sleep(0.02)
        q.put(None)

    threading.Thread(target=mic, daemon=True).start()
    def chunks():
        while (chunk := q.get()) is not None:
            yield chunk

    frames = []
    for f in talker.stream(chunks()):
        time.sleep(0.06)  # 1.5x slower than 25 frames/s
        frames.append(f)
    assert np.array_equal(np.stack(frames), np.stack(list(talker.frames(wave))))


def test_stream_bad_input(talker):
    with pytest.raises(gstalker.GstalkerError, match="mono"):
        list(talker.stream([np.zeros((2, 800), np.float32)]))
    with pytest.raises(gstalker.GstalkerError, match="NaN"):
        list(talker.stream([np.full(800, np.nan, np.float32)]))
    with pytest.raises(gstalker.GstalkerError, match="shorter than one video frame"):
        list(talker.stream([np.zeros(300, np.float32)]))
    assert len(list(talker.stream([np.zeros(800, np.float32)]))) == 1


# ------------------------------------------------------------------ speech-mean normalisation

def test_speech_mean_counts_speech_frames_only():
    """The mean a speech is measured by (`speech_feature_mean`) averages the feature frames whose
    loudness block is speech: seconds of room noise before it change nothing."""
    from gstalker.streaming import speech_feature_mean

    speech = speech_like(3.0, seed=6)
    noise = (0.0018 * np.random.default_rng(7).standard_normal(2 * 16000)).astype(np.float32)  # -55 dBFS
    mean, count = speech_feature_mean(speech)
    m = MelStream()
    frames = np.concatenate([m.push(speech), m.finish()])
    flags = np.array(m.speech)
    assert 0 < flags.sum() < 0.8 * len(flags)  # the pauses between syllables are left out
    assert count == flags.sum() and np.allclose(mean, frames[flags].mean(0), atol=1e-6)
    with_noise, count_noise = speech_feature_mean(np.concatenate([noise, speech]))
    assert count_noise == count
    # equal up to the log-mel floor and the STFT's reflected edge, which the noise changes slightly
    assert np.abs(with_noise - mean).max() < 0.02 < np.abs(frames[~flags].mean(0) - mean).max()


def another_channel_errors(tmp_path, seconds: float, seed: int, frames: slice) -> tuple[float, float]:
    """A speech and the same speech through another channel (a pre-emphasis filter: up to +20 dB
    at high frequencies), coded by a model that stores the first one's speech mean: the mean code
    distance over `frames` between the two with the speech-mean normalisation, and without it
    (format 2 files, and models without `speech_mean`)."""
    import torch

    from gstalker.streaming import speech_feature_mean

    talker = gstalker.load(tiny_mel_model(tmp_path), device="cpu")
    wave = speech_like(seconds, seed=seed)
    other = np.concatenate([wave[:1], wave[1:] - 0.9 * wave[:-1]]).astype(np.float32)
    talker.model.set_speech_mean(*speech_feature_mean(wave))
    assert talker.model.trained_speech_mean() is not None
    original = talker.codes(wave)
    normalised = talker.codes(other)
    talker.model.set_speech_mean(None)
    assert talker.model.trained_speech_mean() is None
    assert torch.equal(talker.codes(wave), talker.codes(wave))
    plain = talker.codes(other)
    return (float((normalised[frames] - original[frames]).norm(dim=1).mean()),
            float((plain[frames] - original[frames]).norm(dim=1).mean()))


def test_speech_mean_normalisation_undoes_another_microphone(tmp_path):
    """Another channel gives codes near the original's once each speech is measured against its
    own mean, and far from them without it."""
    err_normalised, err_plain = another_channel_errors(tmp_path, 12.0, 8, slice(150, None))  # after 6 s
    assert err_normalised < 0.5 * err_plain, (err_normalised, err_plain)


def test_speech_mean_undoes_another_microphone_within_the_first_seconds(tmp_path):
    """A clip a few seconds long is all one speech mean covers: the running mean must have left
    the training mean (its prior) within the first second or two of speech, or a short speech
    through another channel is read as the training microphone's (with a prior of 3 s of speech
    the interview model held a foreign voice's mouth shut for the speech's first 3 s)."""
    err_normalised, err_plain = another_channel_errors(tmp_path, 4.0, 9, slice(25, 75))  # seconds 1-3
    assert err_normalised < 0.5 * err_plain, (err_normalised, err_plain)


def test_format_2_files_load_without_the_speech_mean(tmp_path):
    """A model file from before the speech mean (format 2, no `speech_mean` tensor) loads and
    speaks with the normalisation off. (That fit stores it: tests/test_end_to_end.py.)"""
    import json

    import torch
    from safetensors.torch import load_file as st_load, save_file as st_save
    from safetensors import safe_open

    path = tiny_mel_model(tmp_path)
    tensors = st_load(str(path))
    with safe_open(str(path), "pt") as f:
        meta = json.loads(f.metadata()["gstalker"])
    assert meta["format_version"] == 4 and "speech_mean" in tensors and "speech_mean_frames" in tensors
    del tensors["speech_mean"], tensors["speech_mean_frames"], tensors["code_mean"]  # nor format 4's mean code
    del meta["config"]["mouth_gain"]
    meta["format_version"] = 2
    old = tmp_path / "format2.safetensors"
    st_save(tensors, str(old), metadata={"gstalker": json.dumps(meta)})
    talker = gstalker.load(old, device="cpu")
    assert talker.model.trained_speech_mean() is None
    assert torch.isfinite(talker.codes(speech_like(1.0))).all()
