"""Model and checkpoint files: safetensors tensors plus one JSON document, written atomically.

The JSON lives in the safetensors header metadata under the key "gstalker" (docs/conventions.md).
Nothing is pickled, so loading a file never runs code.
"""

from __future__ import annotations

import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path

import torch

from .errors import GstalkerError, ModelFileError, first_line

# 2: the model holds audio_mean and audio_std (format 1 files load as identity); 3: speech_mean
# (format 2 files load without speech-mean normalisation); 4: code_mean and config["mouth_gain"]
# (format 3 files speak at gain 1 and refuse another)
FORMAT_VERSION = 4
META_KEY = "gstalker"


def check_writable(folder: str | os.PathLike, what: str) -> None:
    """Raise a one-line GstalkerError unless files can be created in `folder` (tried with a
    temporary file): before minutes of work whose output would have nowhere to go. `what` names
    the folder in the message ("output", "report output")."""
    folder = Path(folder)
    if not folder.is_dir():
        raise GstalkerError(f"{what} folder {folder} does not exist; create it or choose another path")
    try:
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".gstalker-write-test-")
        os.close(fd)
        os.unlink(tmp)
    except OSError as e:
        raise GstalkerError(f"{what} folder {folder} is not writable ({e.strerror}); choose another path") from None


@contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = ""):
    """Yield a temporary path beside `path`; rename it into place only if the block succeeds."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=suffix or path.suffix, dir=path.parent)
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes it private; the result is an ordinary file
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_file(path: str | os.PathLike, tensors: dict[str, torch.Tensor], meta: dict) -> Path:
    """Write `tensors` and the JSON-able `meta` to `path` atomically; returns the path."""
    from safetensors.torch import save_file as st_save

    meta = {"format_version": FORMAT_VERSION, **meta}
    tensors = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    with atomic_path(path) as tmp:
        st_save(tensors, str(tmp), metadata={META_KEY: json.dumps(meta)})
    return Path(path)


def load_file(path: str | os.PathLike, device: str | torch.device = "cpu", kind: str = "model") -> tuple[dict, dict]:
    """Read a file written by `save_file`: (tensors, meta). Raises ModelFileError with a one-line reason."""
    from safetensors import safe_open

    path = Path(path)
    if not path.exists():
        raise ModelFileError(f"{path}: no such {kind} file")
    if path.is_dir():
        raise ModelFileError(f"{path} is a directory; give the {kind} .safetensors file")
    try:
        with safe_open(str(path), framework="pt", device=str(device)) as f:
            header = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as e:  # safetensors raises several types for truncated or foreign files
        raise ModelFileError(f"{path} is not a readable safetensors file (truncated or another format): {first_line(e)}") from None
    if META_KEY not in header:
        raise ModelFileError(f"{path} is a safetensors file but not a gstalker {kind} (no '{META_KEY}' metadata)")
    try:
        meta = json.loads(header[META_KEY])
    except json.JSONDecodeError:
        raise ModelFileError(f"{path}: its gstalker metadata is damaged (not JSON)") from None
    version = meta.get("format_version")
    if not isinstance(version, int):
        raise ModelFileError(f"{path}: its gstalker metadata has no format version")
    if version > FORMAT_VERSION:
        raise ModelFileError(
            f"{path} was written by a newer gstalker (format {version}, this one reads up to {FORMAT_VERSION}): "
            "upgrade with `pip install -U gstalker`"
        )
    return tensors, meta


def optimizer_state(optimizer: torch.optim.Optimizer, prefix: str) -> tuple[dict[str, torch.Tensor], dict]:
    """Flatten an optimizer's state into tensors plus JSON (param groups), keyed by parameter position."""
    sd = optimizer.state_dict()
    tensors = {}
    for idx, state in sd["state"].items():
        for name, value in state.items():
            t = value if torch.is_tensor(value) else torch.tensor(value)
            tensors[f"{prefix}.{idx}.{name}"] = t
    groups = [{k: v for k, v in g.items()} for g in sd["param_groups"]]
    return tensors, {"param_groups": groups}


def load_optimizer_state(optimizer: torch.optim.Optimizer, prefix: str, tensors: dict[str, torch.Tensor], meta: dict) -> None:
    """Inverse of `optimizer_state`."""
    state: dict[int, dict] = {}
    head = prefix + "."
    for key, value in tensors.items():
        if key.startswith(head):
            idx, name = key[len(head):].split(".", 1)
            state.setdefault(int(idx), {})[name] = value
    optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})

