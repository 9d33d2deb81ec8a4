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
