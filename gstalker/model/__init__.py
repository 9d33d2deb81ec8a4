"""The learnable parts of gstalker: Gaussians, the audio smoother and the deformation fields.

- `GaussianModel` / `Gaussians` (gaussians.py): head and torso 3D Gaussians, density control.
- `AudioSmoother` (audio.py): audio windows -> per-frame codes -> temporal attention.
- `FaceDeformation`, `TorsoDeformation` (deform.py): tri-plane hash features + condition ->
  `Deltas(means, quats, log_scales)`; `region_weight` confines the face's to its regions.
"""

from ..kernels.hashgrid import TriPlaneEncoder
from .audio import AudioSmoother, neighbour_index
from .deform import Deltas, FaceDeformation, TorsoDeformation, positional_encoding, pose_to_6d, region_weight
from .gaussians import GaussianModel, Gaussians, quat_to_rotmat

__all__ = [
    "AudioSmoother",
    "Deltas",
    "FaceDeformation",
    "GaussianModel",
    "Gaussians",
    "TorsoDeformation",
    "TriPlaneEncoder",
    "neighbour_index",
    "pose_to_6d",
    "positional_encoding",
    "quat_to_rotmat",
    "region_weight",
]
