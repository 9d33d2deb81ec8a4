"""Placeholder: the rasterizer is being written (issue 3)."""


def rasterize(*args, **kwargs):
    raise NotImplementedError("rasterize is not written yet")
