"""Exceptions whose message is a complete, one-line instruction for the user.

The CLI prints ``str(error)`` of these and exits non-zero; anything else is a bug and keeps its traceback.
"""


class StyleNerfEditError(Exception):
    """Base class: the message names the file or value at fault and what to do about it."""


class CheckpointError(StyleNerfEditError):
    """A network file is missing, unreadable, unsafe, or not a StyleNeRF generator."""


class DownloadError(StyleNerfEditError):
    """A model could not be fetched (offline, unknown name, hub error)."""


class PhotoError(StyleNerfEditError):
    """A photo is missing, unreadable, too large, or holds no usable face."""


class NoFaceError(PhotoError):
    """No face (or not the requested one) was found in a photo."""


class FaceModelError(StyleNerfEditError):
    """The face detector or landmark model is not installed or cannot be loaded."""


def one_line(error: BaseException) -> str:
    """``error``'s text on one line (whitespace runs collapsed), or its class name when it has none."""
    return " ".join(str(error).split()) or type(error).__name__
