"""Exceptions whose message is a complete, one-line instruction for the user.

The CLI prints ``str(error)`` of these and exits non-zero; anything else is a bug and keeps its traceback.
"""


class StyleNerfEditError(Exception):
    """Base class: the message names the file or value at fault and what to do about it."""


class CheckpointError(StyleNerfEditError):
    """A network file is missing, unreadable, unsafe, or not a StyleNeRF generator."""


class DownloadError(StyleNerfEditError):
    """A model could not be fetched (offline, unknown name, hub error)."""
