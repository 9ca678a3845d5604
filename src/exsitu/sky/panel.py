"""The PNG beside a prediction file: the input maps, the posterior mean and std, side by side.

Each map is coloured with its matplotlib colour map into one RGBA mosaic (nearest-neighbour, an
integer number of screen pixels per spaxel) and labelled with Pillow in matplotlib's DejaVu Sans:
no figure, axes, ticks or colour-bar axes, whose layout alone cost ~0.5 s per galaxy, a third of
the survey budget (issue 16). A colour strip under each map, labelled with its limits, replaces
the colour bar. NaN spaxels are light grey; row 0 of the image is at the bottom, as the FITS
image is shown.
"""

from __future__ import annotations

import functools
from pathlib import Path

import matplotlib
import numpy as np
from PIL import Image, ImageDraw, ImageFont

from exsitu.contracts import CHANNELS, UNITS

PANEL_PX = 160  # target side of one map [screen px]
GAP_PX = 18  # between maps
TOP_PX = 56  # name line and two-line map titles
STRIP_PX = 8  # colour strip under a map
BOTTOM_PX = 22  # below the strip: its limits
NAN_RGBA = (225, 225, 225, 255)
FONT = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"
#: zlib level of the PNG: 1 writes ~5x faster than the default 6 for a slightly larger file
PNG_COMPRESSION = 1

#: A panel: (label, up to two lines; image (ny, nx); colour map; limits, or None for the data's).
Panel = tuple[str, np.ndarray, str, "tuple[float, float] | None"]


@functools.cache
def font(size: int) -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(str(FONT), size)


def colour_limits(image: np.ndarray, cmap: str) -> tuple[float, float]:
    """(low, high) of the finite values; symmetric about 0 for the diverging map (velocities)."""
    finite = image[np.isfinite(image)]
    if finite.size == 0:
        return 0.0, 1.0
    if cmap == "RdBu_r":
        limit = float(np.abs(finite).max()) or 1.0
        return -limit, limit
    low, high = float(finite.min()), float(finite.max())
    return (low, high) if high > low else (low - 0.5, low + 0.5)


def coloured(image: np.ndarray, cmap: str, limits: tuple[float, float], scale: int) -> np.ndarray:
    """(ny * scale, nx * scale, 4) uint8 RGBA of ``image`` with row 0 at the bottom."""
    low, high = limits
    with np.errstate(invalid="ignore"):
        normed = np.clip((image - low) / (high - low), 0.0, 1.0)
    rgba = matplotlib.colormaps[cmap](np.nan_to_num(normed), bytes=True)
    rgba[~np.isfinite(image)] = NAN_RGBA
    return np.repeat(np.repeat(rgba[::-1], scale, axis=0), scale, axis=1)


def draw_maps(png: Path, title: str, panels: list[Panel]) -> None:
    """Write ``png``: ``title`` over one map per panel, all panels on the grid of the first."""
    ny, nx = panels[0][1].shape
    scale = max(1, PANEL_PX // max(ny, nx))
    h, w = ny * scale, nx * scale
    width, height = len(panels) * (w + GAP_PX) + GAP_PX, TOP_PX + h + 4 + STRIP_PX + BOTTOM_PX
    mosaic = np.full((height, width, 4), 255, dtype=np.uint8)
    strip = np.linspace(0.0, 1.0, w)[None, :].repeat(STRIP_PX, axis=0)
    limits = []
    for i, (_, image, cmap, given) in enumerate(panels):
        limits.append(given or colour_limits(image, cmap))
        x0 = GAP_PX + i * (w + GAP_PX)
        mosaic[TOP_PX : TOP_PX + h, x0 : x0 + w] = coloured(image, cmap, limits[-1], scale)
        mosaic[TOP_PX + h + 4 : TOP_PX + h + 4 + STRIP_PX, x0 : x0 + w] = matplotlib.colormaps[cmap](strip, bytes=True)
    picture = Image.fromarray(mosaic, "RGBA")
    draw = ImageDraw.Draw(picture)
    draw.text((width / 2, 4), title, fill="black", font=font(12), anchor="ma")
    y_limits = TOP_PX + h + 4 + STRIP_PX + 3
    for i, ((label, _, _, _), (low, high)) in enumerate(zip(panels, limits)):
        x0 = GAP_PX + i * (w + GAP_PX)
        draw.multiline_text((x0 + w / 2, 22), label, fill="black", font=font(10), anchor="ma", align="center")
        draw.text((x0, y_limits), f"{low:.3g}", fill="black", font=font(9), anchor="la")
        draw.text((x0 + w, y_limits), f"{high:.3g}", fill="black", font=font(9), anchor="ra")
    picture.save(png, format="png", compress_level=PNG_COMPRESSION)


def channel_panels(maps: dict[str, np.ndarray]) -> list[Panel]:
    """Panels of input maps (channel -> image): labelled with their units, velocity diverging."""
    units = dict(zip(CHANNELS, UNITS))
    return [
        (f"{name}\n[{units[name]}]", image, "RdBu_r" if name == "velocity" else "viridis", None)
        for name, image in maps.items()
    ]
