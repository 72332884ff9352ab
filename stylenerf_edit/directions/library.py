"""Named edit directions of a generator: the ones shipped beside it and any folders the user adds.

A model directory keeps its directions in ``directions/<attribute>.npz`` (a pickle ``ffhq_256.pkl`` in
``ffhq_256_directions/`` beside it); ``stylenerf-edit directions train --install`` puts new ones there.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Sequence

from stylenerf_edit.generator.checkpoint import GeneratorInfo, resolve_network

from .direction import Direction, DirectionError, load_direction


def directions_dir(network: str | Path) -> Path:
    path = resolve_network(network)
    return path / "directions" if path.is_dir() else path.with_name(f"{path.stem}_directions")


def available_directions(network: str | Path, extra_dirs: Sequence[str | Path] = ()) -> dict[str, Path]:
    """Attribute name -> direction file; later folders (``extra_dirs`` in order) override the model's own."""
    found: dict[str, Path] = {}
    for folder in [directions_dir(network), *map(Path, extra_dirs)]:
        if folder.is_dir():
            found.update({p.stem: p for p in sorted(folder.glob("*.npz"))})
    return found


def resolve_direction(name: str, network: str | Path, info: GeneratorInfo,
                      extra_dirs: Sequence[str | Path] = ()) -> Direction:
    """A direction by attribute name (see :func:`available_directions`) or by file path, checked against the
    generator it will be applied to."""
    path = Path(name)
    if path.suffix == ".npz" or path.exists():
        return load_direction(path, generator=info)
    known = available_directions(network, extra_dirs)
    if name not in known:
        folded = {k.casefold().replace("-", "_"): k for k in known}
        match = folded.get(name.casefold().replace("-", "_").replace(" ", "_"))
        if match is not None:            # Smile, SMILE, hair-color
            return load_direction(known[match], generator=info)
        names = ", ".join(sorted(known)) or "none"
        close = difflib.get_close_matches(name.casefold(), list(folded), n=1, cutoff=0.6)
        hint = f"did you mean '{folded[close[0]]}'? " if close else ""
        raise DirectionError(f"no direction named '{name}' for {info.name}; {hint}available: {names}. Train one "
                             "with `stylenerf-edit directions train` or pass a direction .npz file")
    return load_direction(known[name], generator=info)
