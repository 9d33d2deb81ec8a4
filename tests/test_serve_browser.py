"""`gstalker serve` as a person uses it: the command starts the server on a free local port,
headless Chromium opens the page, uploads real speech (then silence), and the <video> element
plays, its frames change, and the mouth region moves while the speech plays and stays still in
the silence. A second client streams at the same time; a bad upload gets a message on the page.
A screenshot is saved in the test's folder (and in $GSTALKER_TEST_OUTPUT when set).

Needs Chromium and its driver (Debian: chromium, chromium-driver; `.ci/run` installs them) and
selenium; skipped with the reason otherwise. Uses the session's smoke model on a real clip."""

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from serve_helpers import free_port, stream_file

CHROMIUM = next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)), None)
DRIVER = shutil.which("chromedriver")

# The page's <video> sampled every 40 ms: whole-frame and mouth-box change against the previous sample.
SAMPLER = """
const [x0, y0, x1, y1] = arguments[0];
const v = document.getElementById('video');
const c = document.createElement('canvas');
const g = c.getContext('2d', {willReadFrequently: true});
let prev = null;
window.__samples = [];
window.__crops = [];
window.__sampler = setInterval(() => {
  if (v.readyState < 2 || !v.videoWidth) return;
  c.width = v.videoWidth; c.height = v.videoHeight;
  g.drawImage(v, 0, 0);
  const d = g.getImageData(0, 0, c.width, c.height).data;
  let whole = 0, mouth = 0, nm = 0;
  if (prev) {
    for (let i = 0; i < d.length; i += 4) {
      const diff = Math.abs(d[i] - prev[i]) + Math.abs(d[i + 1] - prev[i + 1]) + Math.abs(d[i + 2] - prev[i + 2]);
      whole += diff;
      const p = i / 4, x = p % c.width, y = Math.floor(p / c.width);
      if (x >= x0 && x < x1 && y >= y0 && y < y1) { mouth += diff; nm += 3; }
    }
  }
  const sample = {t: window.gstalker.mediaTime(), ct: v.currentTime, paused: v.paused,
                  whole: prev ? whole / (d.length * 3 / 4) : null, mouth: prev && nm ? mouth / nm : null};
  const crop = [];
  for (let y = y0; y < y1; y++) for (let x = x0; x < x1; x++) {
    const i = (y * c.width + x) * 4;
    crop.push(d[i], d[i + 1], d[i + 2]);
  }
  prev = d.slice();
  window.__samples.push(sample);
  window.__crops.push(crop);
}, 40);
"""

# Stops the sampler; each sample's `rest`: its mouth box's mean difference from the last sample's
# (the stream ends in silence, so the last frame shows the mouth at rest).
STOP_SAMPLER = """
clearInterval(window.__sampler);
const crops = window.__crops, last = crops.length ? crops[crops.length - 1] : [];
window.__samples.forEach((s, k) => {
  let sum = 0;
  for (let i = 0; i < last.length; i++) sum += Math.abs(crops[k][i] - last[i]);
  s.rest = last.length ? sum / last.length : null;
});
return window.__samples;
"""


def _browser(tmp_path, *flags):
    if CHROMIUM is None or DRIVER is None:
        pytest.skip("headless Chromium and chromedriver not found (Debian: apt-get install chromium chromium-driver; "
                    ".ci/run installs them)")
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (pip install selenium)")
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--autoplay-policy=no-user-gesture-required",
                 "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream", "--window-size=760,900",
                 "--disable-gpu", "--mute-audio", f"--user-data-dir={tmp_path / 'chromium-profile'}", *flags):
        opts.add_argument(flag)
    return webdriver.Chrome(service=Service(DRIVER), options=opts)


pytestmark = pytest.mark.slow  # a browser against a served smoke model


@pytest.fixture
def served(smoke_model, tmp_path):
    """`gstalker serve` on the smoke model, on a free port, its temp files under tmp_path/tmp."""
    port = free_port()
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    env = dict(os.environ, TMPDIR=str(tmp))
    proc = subprocess.Popen([sys.executable, "-m", "gstalker.cli", "serve", str(smoke_model["model"]), "--port", str(port),
                             "--device", "cpu", "--delay-ms", "700"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    for _ in range(240):  # bounded: 2 minutes (loading torch and the model on a busy machine)
        if proc.poll() is not None:
            pytest.fail(f"gstalker serve exited: {proc.stdout.read()}")
        try:
            urllib.request.urlopen(url + "/health", timeout=2)
            break
        except OSError:
            time.sleep(0.5)
    else:
        proc.kill()
        pytest.fail("gstalker serve did not answer in 2 minutes")
    yield {"url": url, "proc": proc, "tmp": tmp}
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
    assert list(tmp.iterdir()) == [], "the server removed its temp folder"


def mouth_box(smoke_model):
    """[x0, y0, x1, y1] pixels: the mean lip box of the training frames."""
    from gstalker.data import PreprocessedVideo

    return PreprocessedVideo(smoke_model["workdir"], "all").tracks["lip_boxes"].mean(0).round().int().tolist()


def _wait(driver, script, timeout, what):
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:  # bounded polling
        value = driver.execute_script(script)
        if value:
            return value
        time.sleep(0.1)
    state = driver.execute_script("return JSON.stringify({s: gstalker.state, e: gstalker.errors, d: gstalker.drawn, f: gstalker.frames, late: gstalker.late, sd: gstalker.serverDropped, sf: gstalker.serverFps, t: gstalker.mediaTime()})")
    pytest.fail(f"{what}: not within {timeout} s (page state {state})")


def test_the_page_plays_the_person_saying_a_file(served, smoke_model, media_dir, tmp_path):
    from gstalker.audio import load_audio, save_wav

    speech = load_audio(media_dir / "retalking_audio1.wav")[: int(16000 * 4.0)]
    wave = np.concatenate([speech, np.zeros(16000 * 3, np.float32)])  # 4 s of speech, then 3 s of silence
    save_wav(tmp_path / "speech_then_silence.wav", wave, 16000)
    (tmp_path / "notes.txt").write_text("not audio at all")
    box = mouth_box(smoke_model)

    driver = _browser(tmp_path)
    other = {}
    try:
        driver.get(served["url"] + "/")
        _wait(driver, "return window.gstalker.state === 'ready'", 30, "the page connects")
        driver.execute_script("document.getElementById('poses').value = 'still'")  # only the audio moves the face
        driver.execute_script(SAMPLER, box)
        # a second client, at the same time
        data = (tmp_path / "speech_then_silence.wav").read_bytes()
        second = threading.Thread(target=lambda: other.update(stream_file(served["url"], data)), daemon=True)
        driver.find_element("id", "file").send_keys(str(tmp_path / "speech_then_silence.wav"))
        second.start()
        _wait(driver, "return window.gstalker.drawn > 0", 60, "frames are shown")
        _wait(driver, "return window.gstalker.mediaTime() > 1.5", 30, "the speech plays")
        shot = tmp_path / "serve.png"
        driver.save_screenshot(str(shot))
        _wait(driver, "return window.gstalker.ended", 90, "the stream ends")
        time.sleep(0.3)
        samples = driver.execute_script(STOP_SAMPLER)
        g = driver.execute_script("return {drawn: gstalker.drawn, dropped: gstalker.dropped, late: gstalker.late, "
                                  "fps: gstalker.fps, latency: gstalker.latencyMs, errors: gstalker.errors, "
                                  "fpsText: document.getElementById('fps').textContent, "
                                  "latencyText: document.getElementById('latency').textContent}")
        # a bad upload: a message on the page, and the page goes on
        driver.find_element("id", "file").send_keys(str(tmp_path / "notes.txt"))
        message = _wait(driver, "return gstalker.errors.length && gstalker.errors[gstalker.errors.length - 1]", 30,
                        "the bad upload is refused")
        second.join(timeout=90)
    finally:
        driver.quit()
    out = os.environ.get("GSTALKER_TEST_OUTPUT")
    if out:
        Path(out).mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, Path(out) / "serve.png")
    print(f"\nscreenshot: {shot}\npage: {json.dumps(g)}")

    assert "notes.txt" in message and "not an audio or video file" in message, message
    assert not g["errors"], g["errors"]
    playing = [s for s in samples if s["whole"] is not None and s["t"] > 0]
    assert playing and not any(s["paused"] for s in playing), "the video element plays"
    assert playing[-1]["ct"] > playing[0]["ct"] + 2, "its clock runs"
    assert sum(s["whole"] > 0 for s in playing) >= 2, "its frames change"
    end = other["messages"][-1]
    assert end["type"] == "end" and end["rendered"] + end["dropped"] == round(len(wave) / 640), end
    assert float(g["latencyText"]) > 0, g
    assert float(g["fpsText"]) > 0, g
    # The mouth is judged by its distance from the mouth at rest (the last frame, in silence), so a busy
    # machine's sparse frames (two or three a second) show the same thing as a quiet machine's. The
    # silence window starts a second after the speech: the audio window reaches 0.3 s ahead, and the
    # frame on screen may be half a second old.
    in_speech = [s["rest"] for s in playing if 0.4 < s["t"] < 3.8]
    in_silence = [s["rest"] for s in playing if 5.0 < s["t"] < 6.8]
    assert len(in_speech) > 10 and len(in_silence) > 10, (len(in_speech), len(in_silence))
    assert np.mean(in_speech) > 3 * np.mean(in_silence) + 1e-3, (np.mean(in_speech), np.mean(in_silence))


def test_the_microphone_drives_the_person(served, smoke_model, media_dir, tmp_path):
    """The microphone button as a person uses it: Chromium's fake capture device plays real speech
    into getUserMedia; the page streams it, the person is drawn as it arrives, the mouth region
    changes, and Stop ends the stream."""
    from gstalker.audio import load_audio, save_wav

    speech = load_audio(media_dir / "retalking_audio1.wav")
    t = np.arange(int(len(speech) * 3)) / 48000  # Chromium's capture runs at 48 kHz
    save_wav(tmp_path / "mic.wav", np.interp(t, np.arange(len(speech)) / 16000, speech).astype(np.float32), 48000)
    driver = _browser(tmp_path, f"--use-file-for-fake-audio-capture={tmp_path / 'mic.wav'}")
    try:
        driver.get(served["url"] + "/")
        _wait(driver, "return window.gstalker.state === 'ready'", 30, "the page connects")
        driver.execute_script("document.getElementById('poses').value = 'still'")
        driver.execute_script(SAMPLER, mouth_box(smoke_model))
        driver.find_element("id", "mic").click()
        _wait(driver, "return window.gstalker.source === 'mic' && window.gstalker.drawn >= 5", 90, "frames from the microphone")
        time.sleep(3)
        samples = driver.execute_script(STOP_SAMPLER)
        button = driver.find_element("id", "mic")
        assert button.text == "Stop"
        button.click()
        _wait(driver, "return document.getElementById('mic').textContent !== 'Stop'", 10, "Stop ends the microphone")
        g = driver.execute_script("return {drawn: gstalker.drawn, frames: gstalker.frames, errors: gstalker.errors, "
                                  "latency: gstalker.latencyMs}")
    finally:
        driver.quit()
    print(f"\nmicrophone page: {json.dumps(g)}")
    assert not g["errors"], g["errors"]
    assert g["frames"] >= g["drawn"] >= 5, g
    changed = [s for s in samples if s["whole"] is not None and s["whole"] > 0]
    assert len(changed) >= 2, "the frames change"
    assert max(s["mouth"] for s in changed) > 0, "the mouth region changes"

