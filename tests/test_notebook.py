"""examples/quickstart.ipynb runs from top to bottom (with fewer iterations), so it cannot rot."""

from pathlib import Path

import pytest

# preprocesses a real clip, trains and speaks in a fresh kernel: minutes
pytestmark = pytest.mark.slow

NOTEBOOK = Path(__file__).resolve().parents[1] / "examples" / "quickstart.ipynb"


def test_quickstart_notebook_runs(media_dir, tmp_path):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    params = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    params.source = "\n".join([
        "from pathlib import Path",
        f"MEDIA = Path({str(media_dir)!r})",
        'VIDEO = MEDIA / "retalking_face4.mp4"',
        'SPEECH = MEDIA / "retalking_audio2.wav"',
        f"WORK = Path({str(tmp_path / 'out')!r})",
        "ITERS = 12",
        "SIZE = 64",
    ])
    nbclient.NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.output_type == "error"]
    assert any("text/html" in o.get("data", {}) for o in outputs), "the video is shown inline"
    assert (tmp_path / "out" / "speech.mp4").stat().st_size > 0
