import os
from pathlib import Path

# Kernels run under Triton's interpreter on machines without a GPU; this must be set before
# triton is imported anywhere.
if "TRITON_INTERPRET" not in os.environ:
    try:
        import ctypes.util

        has_cuda = ctypes.util.find_library("cuda") is not None
    except Exception:  # pragma: no cover
        has_cuda = False
    if not has_cuda:
        os.environ["TRITON_INTERPRET"] = "1"

import gstalker  # noqa: E402,F401  (sets OMP_WAIT_POLICY before torch loads OpenMP)
import pytest  # noqa: E402

MEDIA = Path(__file__).resolve().parents[1].parent / "shared" / "media"


@pytest.fixture
def media_dir() -> Path:
    """../shared/media beside the checkout; tests that need real clips skip without it."""
    if not MEDIA.is_dir():
        pytest.skip(f"real media not found at {MEDIA} (a user's clone has none; CI has ../shared)")
    return MEDIA


SMOKE_CLIP = "retalking_face4.mp4"


@pytest.fixture(scope="session")
def smoke_model(tmp_path_factory):
    """A model fitted once per test run with the smoke preset on a short real clip:
    {"model": model file, "workdir": its preprocessing workdir, "video": the clip}.
    Shared by the fit, speak and eval end-to-end tests."""
    video = MEDIA / SMOKE_CLIP
    if not video.is_file():
        pytest.skip(f"real media not found at {video} (a user's clone has none; CI has ../shared)")
    tmp = tmp_path_factory.mktemp("smoke")
    workdir = tmp / "work"
    model = gstalker.fit(video, tmp / "subject.safetensors", preset="smoke", workdir=workdir, lpips="off",
                         progress=False)
    return {"model": model, "workdir": workdir, "video": video}


# Tests that fit, preprocess or serve a real clip take minutes each on two cores; they carry the
# `slow` marker (registered in pyproject.toml) so `pytest -m "not slow"` is the fast loop while
# editing. CI runs everything. A test is slow when it uses one of these fixtures (each one
# preprocesses or fits a real clip), or when it is marked so itself.
SLOW_FIXTURES = {"smoke_model", "face1_workdir", "interview_workdir"}


def pytest_collection_modifyitems(config, items):
    for item in items:
        if SLOW_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)
