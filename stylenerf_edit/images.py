"""Images and videos out of generator tensors: uint8 conversion, PNG, GIF, MP4 and contact sheets.

A base module (beside ``files``): the inversion, the procedural world, the directions and the editing all write
images. Every file goes through :func:`stylenerf_edit.files.atomic_path`, so an interrupted run never leaves a
truncated file under the final name.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from stylenerf_edit.files import atomic_path


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """[N, 3, H, W] in [-1, 1] -> [N, H, W, 3] uint8, as the official scripts convert (x * 127.5 + 128)."""
    assert images.ndim == 4 and images.shape[1] == 3, f"expected [N, 3, H, W], got {tuple(images.shape)}"
    x = (images.detach().float() * 127.5 + 128).clamp(0, 255).to(torch.uint8)
    return x.permute(0, 2, 3, 1).cpu().numpy()


def save_png(image: np.ndarray, path: str | Path) -> Path:
    """[H, W, 3] uint8 -> PNG file."""
    with atomic_path(path) as tmp:
        Image.fromarray(image).save(tmp, format="PNG")
    return Path(path)


def contact_sheet(frames: Sequence[np.ndarray], columns: int | None = None) -> np.ndarray:
    """Frames [H, W, 3] -> one image with ``columns`` frames per row (default: all in one row)."""
    columns = columns or len(frames)
    rows = -(-len(frames) // columns)
    h, w, c = frames[0].shape
    sheet = np.zeros((rows * h, columns * w, c), dtype=np.uint8)
    for i, frame in enumerate(frames):
        r, col = divmod(i, columns)
        sheet[r * h:(r + 1) * h, col * w:(col + 1) * w] = frame
    return sheet


def labelled_sheet(rows: Sequence[tuple[str, Sequence[np.ndarray]]], column_labels: Sequence[str] = (),
                   tile: int | None = None, label_width: int | None = None) -> np.ndarray:
    """Rows of tiles [H, W, 3] uint8 with a text label left of each row and, optionally, one above each column.

    Args:
        rows: (label, tiles); a label may hold line breaks. Rows may be of different lengths.
        tile: resize every tile to ``tile`` x ``tile`` (default: the first tile's size, which all must share).
        label_width: pixels for the row labels (default: what the longest line needs).
    Returns:
        uint8 [H', W', 3] on white.
    """
    h, w = (tile, tile) if tile else rows[0][1][0].shape[:2]
    font = ImageFont.load_default(size=max(11, min(h, 256) // 9))
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    lines = [line for label, _ in rows for line in label.split("\n")]
    width = label_width if label_width is not None else \
        12 + max(int(measure.textlength(line, font=font)) for line in lines)
    header = int(font.size * 1.6) if column_labels else 0
    columns = max(len(tiles) for _, tiles in rows)
    sheet = Image.new("RGB", (width + columns * w, header + len(rows) * h), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    for c, text in enumerate(column_labels):
        draw.text((width + c * w + w / 2, header / 2), text, fill=(0, 0, 0), font=font, anchor="mm")
    for r, (label, tiles) in enumerate(rows):
        draw.multiline_text((6, header + r * h + h / 2), label, fill=(0, 0, 0), font=font, anchor="lm")
        for c, image in enumerate(tiles):
            im = Image.fromarray(image)
            if tile:
                im = im.resize((tile, tile), Image.Resampling.LANCZOS)
            elif im.size != (w, h):
                raise ValueError(f"tiles differ in size: {im.size} and {(w, h)}")
            sheet.paste(im, (width + c * w, header + r * h))
    return np.asarray(sheet)


def pingpong(frames: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Forward then backward without repeating the end frames: a seamless loop for a sweep."""
    frames = list(frames)
    return frames + frames[-2:0:-1]


def write_gif(frames: Sequence[np.ndarray], path: str | Path, fps: float = 15.0) -> Path:
    images = [Image.fromarray(f) for f in frames]
    with atomic_path(path) as tmp:
        images[0].save(tmp, format="GIF", save_all=True, append_images=images[1:], duration=int(1000 / fps), loop=0)
    return Path(path)


def write_mp4(frames: Sequence[np.ndarray], path: str | Path, fps: float = 30.0) -> Path:
    """H.264 MP4 through the ffmpeg binary that imageio-ffmpeg ships (even sizes are padded by ffmpeg)."""
    import imageio.v2 as imageio

    with atomic_path(path) as tmp, imageio.get_writer(tmp, format="FFMPEG", mode="I", fps=fps, codec="libx264",
                                                      quality=8, macro_block_size=1,
                                                      ffmpeg_log_level="error") as writer:
        for frame in frames:
            writer.append_data(frame)
    return Path(path)
