"""Data: the MNIST IDX reader, the canvas layout, and (later) the TextMNIST builder."""

from .layout import (
    CANVAS_SIZE,
    CELL_ORIGINS,
    COLOUR_RGB,
    COLOURS,
    LOCATIONS,
    QUADRANTS,
    index_cell,
    render_canvas,
)
from .mnist import MNIST_VARIANTS, ChecksumError, load_mnist, read_idx, resolve_mnist_files, verify_file


__all__ = [
    "CANVAS_SIZE",
    "CELL_ORIGINS",
    "COLOURS",
    "COLOUR_RGB",
    "ChecksumError",
    "LOCATIONS",
    "MNIST_VARIANTS",
    "QUADRANTS",
    "index_cell",
    "load_mnist",
    "read_idx",
    "render_canvas",
    "resolve_mnist_files",
    "verify_file",
]
