"""Errors and warnings of preprocessing (the CLI turns `PreprocessError` into exit code 2)."""


class PreprocessError(ValueError):
    """Bad input or an unusable video; the message is one line naming the file and the problem."""


class PreprocessWarning(UserWarning):
    """Preprocessing went on, but the user should know (short video, several faces, lost frames)."""
