"""Figures as ``data:`` URIs, downscaled, so the page needs nothing beside it.

Plots and masks go as palette PNG (256 colours keep text and lines sharp at a
fraction of the bytes); photographic content (heatmap overlays, many shades) goes
as JPEG. Either way the width is at most ``max_width`` pixels, so a full run's
page stays a few megabytes and is built in about a second.
"""
from __future__ import annotations

import base64
import io
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

MAX_WIDTH = 1200  # px: wider than the page's column on any screen
JPEG_QUALITY = 85
PALETTE_COLOURS = 256
PHOTO_COLOURS = 4096  # more distinct colours than this (after downscaling): photographic, JPEG


@dataclass(frozen=True)
class EmbeddedImage:
    """A figure ready for ``<img src=...>``: its data URI and its pixel size."""

    data_uri: str
    width: int
    height: int
    mime: str
    n_bytes: int  # encoded size before base64


def embed_image(path: str | Path, max_width: int = MAX_WIDTH) -> EmbeddedImage:
    """Read ``path``, shrink it to at most ``max_width`` pixels wide, encode it as PNG or JPEG.

    The format follows the content, counted after downscaling: up to 256 colours
    is an exact palette PNG; up to 4096 (anti-aliased plots) a PNG quantized to 256
    colours (fast octree, no dithering: at most a few grey levels off, text stays
    crisp); more is photographic and goes as JPEG at quality 85. Transparency
    keeps a PNG.

    Parameters
    ----------
    path : path-like
        Any image Pillow reads.
    max_width : int
        Largest width in pixels; narrower images keep their size.
    """
    with Image.open(path) as opened:
        opened.load()
        transparent = opened.mode in ("RGBA", "LA", "PA") or (opened.mode == "P" and "transparency" in opened.info)
        if transparent and opened.mode in ("RGBA", "LA") and opened.getchannel("A").getextrema()[0] == 255:
            transparent = False  # matplotlib's figures: an alpha channel that is opaque everywhere
        image = opened.convert("RGBA" if transparent else "RGB")
    if image.width > max_width:
        height = max(1, round(image.height * max_width / image.width))
        # Pillow widens the bicubic kernel by the scale factor when shrinking: antialiased, and quicker than Lanczos
        image = image.resize((max_width, height), Image.Resampling.BICUBIC)
    buffer = io.BytesIO()
    if transparent:
        image.save(buffer, format="PNG", compress_level=6)
        mime = "image/png"
    elif image.getcolors(PHOTO_COLOURS) is None:
        image.save(buffer, format="JPEG", quality=JPEG_QUALITY)
        mime = "image/jpeg"
    else:
        palette = image.quantize(colors=PALETTE_COLOURS, method=Image.Quantize.FASTOCTREE, dither=Image.Dither.NONE)
        palette.save(buffer, format="PNG", compress_level=6)
        mime = "image/png"
    data = buffer.getvalue()
    uri = f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"
    return EmbeddedImage(uri, image.width, image.height, mime, len(data))
