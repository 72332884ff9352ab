"""Draws docs/camera_convention.png: the yaw/pitch sign conventions of stylenerf_edit.generator.camera.

    python docs/camera_convention.py
"""

from __future__ import annotations

import math
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from stylenerf_edit.generator.camera import Camera

W, H, S = 920, 440, 150  # canvas, pixels per world unit


def arrow(d: ImageDraw.ImageDraw, a: tuple[float, float], b: tuple[float, float], fill: str, width: int = 3) -> None:
    d.line([a, b], fill=fill, width=width)
    ang = math.atan2(b[1] - a[1], b[0] - a[0])
    for s in (-1, 1):
        d.line([b, (b[0] - 12 * math.cos(ang + s * 0.4), b[1] - 12 * math.sin(ang + s * 0.4))], fill=fill, width=width)


def panel(d: ImageDraw.ImageDraw, font: ImageFont.ImageFont, ox: float, title: str, axes: tuple[int, int],
          labels: tuple[str, str], cams: list[tuple[Camera, str]], head: str) -> None:
    """Project world axes ``axes`` (indices into x, y, z) onto the panel's right and up directions."""
    cx, cy = ox + 230, 250
    d.text((ox + 20, 20), title, fill="black", font=font)
    arrow(d, (cx, cy), (cx + 1.25 * S, cy), "gray", 2)
    arrow(d, (cx, cy), (cx, cy - 1.25 * S), "gray", 2)
    d.text((cx + 1.25 * S + 6, cy - 8), labels[0], fill="gray", font=font)
    d.text((cx - 10, cy - 1.25 * S - 22), labels[1], fill="gray", font=font)
    d.ellipse([cx - 22, cy - 26, cx + 22, cy + 26], outline="black", width=3)
    d.text((cx - 40, cy + 34), head, fill="black", font=font)
    for cam, colour in cams:
        m = cam.world_matrix()
        p = (cx + float(m[axes[0], 3]) * S, cy - float(m[axes[1], 3]) * S)
        look = (cx + float(m[axes[0], 3] - 0.3 * m[axes[0], 2]) * S, cy - float(m[axes[1], 3] - 0.3 * m[axes[1], 2]) * S)
        d.ellipse([p[0] - 9, p[1] - 9, p[0] + 9, p[1] + 9], fill=colour)
        arrow(d, p, look, colour)
        name = f"yaw {cam.yaw:+.0f}" if cam.pitch == 0 else f"pitch {cam.pitch:+.0f}"
        d.text((p[0] + 12, p[1] - 22), name, fill=colour, font=font)


def main() -> None:
    img = Image.new("RGB", (W, H), "white")
    d = ImageDraw.Draw(img)
    font = ImageFont.load_default(size=16)
    panel(d, font, 0, "Top view (looking down -z): yaw", (0, 1), ("+x", "+y"),
          [(Camera(), "black"), (Camera(yaw=30), "#1f77b4"), (Camera(yaw=-30), "#d62728")],
          "head faces +x")
    panel(d, font, W / 2, "Side view (looking along -y): pitch", (0, 2), ("+x", "+z (up)"),
          [(Camera(), "black"), (Camera(pitch=20), "#1f77b4"), (Camera(pitch=-20), "#d62728")], "head at origin")
    d.text((20, H - 56), "+yaw: camera moves towards the subject's left (+y): the face turns to the image's left.",
           fill="black", font=font)
    d.text((20, H - 30), "+pitch: camera rises above the face and looks down on it. Radius 1, fov 12 deg (FFHQ).",
           fill="black", font=font)
    out = Path(__file__).with_suffix(".png")
    img.save(out)
    print(out)


if __name__ == "__main__":
    main()
