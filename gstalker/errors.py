"""The errors gstalker raises for its user, and the warning preprocessing gives.

Every error a user can cause or fix (a bad option, an unreadable file, a missing download)
derives from `GstalkerError`, whose message is one line naming the problem and the fix. The
CLI catches that one class and prints the line; anything else is a bug and keeps its traceback.
The subclasses say which stage failed, for callers that want to tell them apart; none of them
is rewrapped into another on its way up.

No imports: `gstalker.GstalkerError` must not pull in torch.
"""

from __future__ import annotations


class GstalkerError(ValueError):
    """A problem with the user's input or environment; its message is one line naming the fix.
    (A ValueError, as the first version's errors were.)"""


class PreprocessError(GstalkerError):
    """Bad input or an unusable video; the message is one line naming the file and the problem."""


class AudioError(GstalkerError):
    """The audio could not be read (missing file, no audio stream, corrupt data)."""


class ModelFileError(GstalkerError):
    """A model or checkpoint file that cannot be read; the message names the file and the fix."""


class UnavailableError(GstalkerError, RuntimeError):
    """Something gstalker needs is not on this machine and cannot be fetched now (pretrained
    weights). Also a RuntimeError, as these were before they shared the base class."""


class FeatureModelError(UnavailableError):
    """A pretrained speech model is not available (not cached and not downloadable)."""


class PreprocessWarning(UserWarning):
    """Preprocessing went on, but the user should know (short video, several faces, lost frames)."""


def first_line(error: BaseException, limit: int = 160) -> str:
    """The first line of an exception's message (at most `limit` characters), or its type's name
    when the message is empty: what a one-line error may quote of a library's error."""
    text = str(error).strip()
    return (text.splitlines()[0] if text else type(error).__name__)[:limit]
