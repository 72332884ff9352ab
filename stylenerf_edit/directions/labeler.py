"""The labeler interface: images in, one score per attribute out (``directions.labelers`` has the
implementations and the label files, ``directions.face_labelers`` the real-face networks)."""

from __future__ import annotations

import json

import numpy as np

from stylenerf_edit.errors import StyleNerfEditError


class LabelerError(StyleNerfEditError):
    """A labeler cannot be built or run, or a score or label file is unusable."""


def check_images(images: np.ndarray) -> None:
    """Refuse anything but the uint8 [N, H, W, 3] batches every labeler takes."""
    if not (isinstance(images, np.ndarray) and images.dtype == np.uint8 and images.ndim == 4 and images.shape[3] == 3):
        raise ValueError(f"labelers take uint8 images [N, H, W, 3], got {getattr(images, 'dtype', type(images))} "
                         f"{list(getattr(images, 'shape', []))}")


class Labeler:
    """Images -> attribute scores. Subclasses set ``name`` and ``attributes`` and implement ``__call__``."""

    name: str
    attributes: tuple[str, ...]
    reads_images = True     # False for scores looked up by sample index, which cannot score a photo

    def __call__(self, images: np.ndarray, indices: np.ndarray | None = None) -> dict[str, np.ndarray]:
        """Scores of ``images`` (uint8 [N, H, W, 3]), samples ``indices`` [N] of their folder (default 0..N-1).

        Returns ``{attribute: float64 [N]}`` for every attribute, NaN where there is no score."""
        raise NotImplementedError

    @property
    def fingerprint(self) -> str:
        """What the scores depend on besides the images: stored scores with another fingerprint are recomputed."""
        return json.dumps({"name": self.name, "attributes": list(self.attributes)})

    def check_size(self, n: int) -> None:
        """Raise :class:`LabelerError` when this labeler cannot label a set of ``n`` samples (default: any ``n``)."""
