"""The montage side: captured slice views side by side, colour bars sampled from the colour nodes, caption, PNG."""

from __future__ import annotations

import os
from pathlib import Path

BACKGROUND = (24, 24, 26)
TEXT = (220, 220, 220)


def font(size: int):
    from PIL import ImageFont

    for name in ("DejaVuSans.ttf", "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
                 "LiberationSans-Regular.ttf"):
        try:
            return ImageFont.truetype(name, size)
        except OSError:
            continue
    return ImageFont.load_default()


def canvas(width: int, height: int):
    """(image, its ImageDraw) on the dark background."""
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (width, height), BACKGROUND)
    return image, ImageDraw.Draw(image)


def paste_views(image, draw, captures: dict[str, Path], x: int, y: int, px: int, pad: int, label_font) -> None:
    """One row: each capture (orientation -> PNG) resized to px x px, its orientation written in the corner."""
    from PIL import Image

    for i, (orientation, path) in enumerate(captures.items()):
        left = x + i * (px + pad)
        image.paste(Image.open(path).convert("RGB").resize((px, px)), (left, y))
        draw.text((left + 8, y + 6), orientation.lower(), fill=(255, 255, 255), font=label_font)


def color_bar(image, draw, lut, lo: float, hi: float, x: int, y: int, w: int, h: int, label_font,
              labels: tuple[str, str], *, mid_tick: bool = False) -> None:
    """`lut` (a colour node's `GetScalarsToColors()`, i.e. what the slice views use) sampled over [lo, hi], with the
    two end labels beside it."""
    import numpy as np
    from PIL import Image

    rgb = (np.array([lut.GetColor(v) for v in np.linspace(lo, hi, w)]) * 255).astype(np.uint8)
    image.paste(Image.fromarray(np.repeat(rgb[None], h, axis=0)), (x, y))
    draw.text((x - 6 - draw.textlength(labels[0], font=label_font), y - 1), labels[0], fill=TEXT, font=label_font)
    draw.text((x + w + 6, y - 1), labels[1], fill=TEXT, font=label_font)
    if mid_tick:
        draw.line([(x + w // 2, y - 3), (x + w // 2, y + h + 2)], fill=(30, 30, 30), width=1)


def text_lines(draw, lines: list[tuple[int, str, tuple]], y: int, line_h: int, line_font) -> int:
    """(x, text, colour) lines one below the other from `y`; returns the y after the last."""
    for x, text, colour in lines:
        draw.text((x, y), text, fill=colour, font=line_font)
        y += line_h
    return y


def save(image, out: Path) -> None:
    """PNG (optimised; a 256-colour palette when TOPOREG_SCREENSHOT_PALETTE is set)."""
    from PIL import Image

    out.parent.mkdir(parents=True, exist_ok=True)
    if os.environ.get("TOPOREG_SCREENSHOT_PALETTE"):
        image = image.convert("P", palette=Image.Palette.ADAPTIVE, colors=256)
    image.save(out, optimize=True)
