"""gstalker: audio-driven talking heads with deformable 3D Gaussians (GSTalker), Triton kernels."""

__version__ = "0.1.0"
