"""gstalker: audio-driven talking heads with deformable 3D Gaussians (GSTalker), Triton kernels.

    import gstalker
    gstalker.fit("subject.mp4", "subject.safetensors", preset="smoke")
    talker = gstalker.load("subject.safetensors")
    talker.speak("speech.wav", out="out.mp4")
"""

import os

__version__ = "0.1.0"

# PyTorch's OpenMP threads spin while they wait; when the cores are shared (another process, a
# browser), the torch backends then ran up to 60x slower on a 2-core machine. Passive waiting
# costs nothing measurable when the cores are free. Effective only before torch is imported;
# a value the user set wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from .errors import GstalkerError  # noqa: E402  (no imports of its own)

__all__ = ["Talker", "GstalkerError", "fit", "load", "__version__"]


def __getattr__(name):
    # the API pulls in torch; importing it lazily keeps `gstalker --version` instant
    if name == "fit":
        from .api import fit

        return fit
    if name in ("load", "Talker"):
        from . import speak

        return getattr(speak, name)
    raise AttributeError(f"module 'gstalker' has no attribute {name!r}")
