"""Geometry and colours of the text-augmented colored MNIST canvas (docs/REPRODUCTION.md, "The data").

A 64x64 RGB canvas is four 32x32 quadrants. A 28x28 digit sits in a 32x32 cell with a
2-pixel margin. The centre cell (rows and cols 16-47) is used only when the image holds a
single digit. Both the dataset builder and the shift-equivariance metric place digits
through `render_canvas`, so the two can never disagree on where a digit is.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np


__all__ = [
    "CANVAS_SIZE",
    "CELL_ORIGINS",
    "CELL_SIZE",
    "COLOURS",
    "COLOUR_RGB",
    "DIGIT_SIZE",
    "LOCATIONS",
    "MARGIN",
    "QUADRANTS",
    "digit_window",
    "index_cell",
    "render_canvas",
]

CANVAS_SIZE = 64
CELL_SIZE = 32
DIGIT_SIZE = 28
MARGIN = (CELL_SIZE - DIGIT_SIZE) // 2  # 2 pixels

QUADRANTS = ("upper_left", "upper_right", "lower_left", "lower_right")
LOCATIONS = ("centre",) + QUADRANTS

# (row, col) of each cell's top-left pixel.
CELL_ORIGINS: dict[str, tuple[int, int]] = {
    "centre": (16, 16),
    "upper_left": (0, 0),
    "upper_right": (0, 32),
    "lower_left": (32, 0),
    "lower_right": (32, 32),
}

COLOURS = ("white", "red", "green", "blue")
# The stroke is tinted: a pixel of intensity v becomes v * rgb (black background).
COLOUR_RGB: dict[str, tuple[int, int, int]] = {
    "white": (1, 1, 1),
    "red": (1, 0, 0),
    "green": (0, 1, 0),
    "blue": (0, 0, 1),
}


def render_canvas(objects: Iterable[tuple[str, str, np.ndarray]]) -> np.ndarray:
    """Draw digits on a black 64x64 canvas.

    Args:
        objects: `(location, colour, digit)` triples; `digit` is a uint8 `[28, 28]` array.
            Locations must be distinct, and `"centre"` must be alone.

    Returns:
        `np.ndarray` of shape `[64, 64, 3]`, dtype uint8.
    """
    canvas = np.zeros((CANVAS_SIZE, CANVAS_SIZE, 3), dtype=np.uint8)
    objects = list(objects)
    locations = [location for location, _, _ in objects]
    if len(set(locations)) != len(locations):
        raise ValueError(f"Locations must be distinct (got {locations}).")
    if "centre" in locations and len(locations) > 1:
        raise ValueError(f"The centre cell overlaps every quadrant and must be alone (got {locations}).")
    for location, colour, digit in objects:
        if location not in CELL_ORIGINS:
            raise ValueError(f"Unknown location {location!r}; expected one of {LOCATIONS}.")
        if colour not in COLOUR_RGB:
            raise ValueError(f"Unknown colour {colour!r}; expected one of {COLOURS}.")
        digit = np.asarray(digit)
        if digit.shape != (DIGIT_SIZE, DIGIT_SIZE) or digit.dtype != np.uint8:
            raise ValueError(f"A digit must be a uint8 array of shape (28, 28) (got {digit.dtype} {digit.shape}).")
        tint = np.asarray(COLOUR_RGB[colour], dtype=np.uint8)
        canvas[digit_window(location)] = digit[:, :, None] * tint
    return canvas


def index_cell(location: str, downsample_factor: int) -> tuple[slice, slice]:
    """The (rows, cols) slices of a cell in a token map of a model with factor `f`.

    For f=4 the token map is 16x16: the centre cell is `[4:12, 4:12]`, the upper left
    `[0:8, 0:8]`, and so on. The cells' 16-pixel offsets must be multiples of f.
    """
    if downsample_factor < 1 or 16 % downsample_factor != 0:
        raise ValueError(
            f"The downsampling factor must divide 16 so that every cell starts on a token "
            f"boundary (got f={downsample_factor})."
        )
    if location not in CELL_ORIGINS:
        raise ValueError(f"Unknown location {location!r}; expected one of {LOCATIONS}.")
    row, col = CELL_ORIGINS[location]
    size = CELL_SIZE // downsample_factor
    row, col = row // downsample_factor, col // downsample_factor
    return slice(row, row + size), slice(col, col + size)


def digit_window(location: str) -> tuple[slice, slice]:
    """The (rows, cols) pixel slices of the 28x28 window where `render_canvas` draws a digit at
    `location`: the window the authors' text-to-image evaluation crops (centre [18:46, 18:46],
    upper left [2:30, 2:30], upper right [2:30, 34:62], lower left [34:62, 2:30], lower right
    [34:62, 34:62])."""
    if location not in CELL_ORIGINS:
        raise ValueError(f"Unknown location {location!r}; expected one of {LOCATIONS}.")
    row, col = CELL_ORIGINS[location]
    return slice(row + MARGIN, row + MARGIN + DIGIT_SIZE), slice(col + MARGIN, col + MARGIN + DIGIT_SIZE)
