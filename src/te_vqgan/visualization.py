"""Figures people would rather look at than numbers: token maps and placements, as PNG files.

Every figure is written to a temporary file beside its target and moved into place, so an
interrupted run never leaves a half-written PNG.
"""

from __future__ import annotations

import colorsys
import os
from pathlib import Path

import numpy as np

from .files import atomic_path
from .models.quantizer import check_code_indices


__all__ = [
    "code_palette",
    "index_map_to_rgb",
    "new_figure",
    "save_captioned_images",
    "save_figure",
    "save_shift_equivariance_figure",
]


def code_palette(num_codes: int) -> np.ndarray:
    """A fixed, well-spread colour per code: uint8 `[K, 3]`.

    Hues step by the golden ratio, so neighbouring code ids get unrelated colours and the
    same code has the same colour in every figure of every run.
    """
    golden = 0.618033988749895
    colours = []
    for code in range(num_codes):
        hue = (code * golden) % 1.0
        saturation = 0.55 + 0.45 * ((code * 7) % 3) / 2
        value = 0.65 + 0.35 * ((code * 5) % 2)
        colours.append(colorsys.hsv_to_rgb(hue, saturation, value))
    return (np.asarray(colours) * 255).round().astype(np.uint8)


def index_map_to_rgb(indices, num_codes: int) -> np.ndarray:
    """A token map `[h, w]` as an RGB image `[h, w, 3]` (uint8), one colour per code."""
    indices = np.asarray(indices.cpu() if hasattr(indices, "cpu") else indices)
    check_code_indices(indices, num_codes)
    return code_palette(num_codes)[indices]


def new_figure(rows: int, columns: int, figsize: tuple[float, float]):
    """A matplotlib `Figure` and its axes grid, made without pyplot: no GUI backend, no global
    state, nothing to close (it is freed with the object)."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=figsize)
    return figure, figure.subplots(rows, columns, squeeze=False)


def save_figure(figure, path: str | os.PathLike, dpi: int = 120) -> Path:
    """Save a matplotlib figure as PNG atomically (`te_vqgan.files.atomic_path`)."""
    path = Path(path)
    with atomic_path(path) as tmp:
        figure.savefig(tmp, dpi=dpi, format="png", bbox_inches="tight")
    return path


def save_shift_equivariance_figure(
    images: np.ndarray,
    index_maps,
    num_codes: int,
    path: str | os.PathLike,
    placements: tuple[str, ...],
    cell_slices: list[tuple[slice, slice]] | None = None,
    title: str | None = None,
    row_scores: list[float] | None = None,
    row_labels: list[str] | None = None,
) -> Path:
    """The placements of each digit above their token maps, side by side.

    Args:
        images (`np.ndarray` of shape `(G, 5, 64, 64, 3)`): uint8 placements of G digits.
        index_maps (of shape `(G, 5, h, w)`): their token maps.
        num_codes (`int`): K, for the colour of each code.
        path: where the PNG goes.
        placements (`tuple[str]`): the five placement names, column titles.
        cell_slices (`list[(rows, cols)]`, *optional*): the digit's cell in each token map, outlined.
        title (`str`, *optional*): the figure's title.
        row_scores (`list[float]`, *optional*): each digit's score, printed beside its rows.
        row_labels (`list[str]`, *optional*): each digit's name (default `digit {g}`).
    """
    import matplotlib.patches as patches

    images = np.asarray(images)
    index_maps = np.asarray(index_maps.cpu() if hasattr(index_maps, "cpu") else index_maps)
    groups, columns = images.shape[:2]
    figure, axes = new_figure(2 * groups, columns, figsize=(2.0 * columns, 4.1 * groups))
    for g in range(groups):
        for c in range(columns):
            top, bottom = axes[2 * g, c], axes[2 * g + 1, c]
            top.imshow(images[g, c], interpolation="nearest")
            bottom.imshow(index_map_to_rgb(index_maps[g, c], num_codes), interpolation="nearest")
            if cell_slices is not None:
                rows, cols = cell_slices[c]
                bottom.add_patch(
                    patches.Rectangle(
                        (cols.start - 0.5, rows.start - 0.5),
                        cols.stop - cols.start,
                        rows.stop - rows.start,
                        fill=False,
                        edgecolor="white",
                        linewidth=1.5,
                    )
                )
            for axis in (top, bottom):
                axis.set_xticks([])
                axis.set_yticks([])
            if g == 0:
                top.set_title(placements[c].replace("_", " "), fontsize=9)
        name = row_labels[g] if row_labels is not None else f"digit {g}"
        label = name if row_scores is None else f"{name}\nscore {row_scores[g]:.3f}"
        axes[2 * g, 0].set_ylabel(label, fontsize=8)
        axes[2 * g + 1, 0].set_ylabel("code indices", fontsize=8)
    height = 4.1 * groups
    if title:
        figure.suptitle(title, fontsize=10)
    # Room for the title only (the default margins leave inches of blank over a tall figure).
    figure.tight_layout(rect=(0, 0, 1, 1 - (0.9 if title else 0.1) / height))
    return save_figure(figure, path)


def save_image_shift_figure(images: np.ndarray, maps, num_codes: int, path: str | os.PathLike, title=None) -> Path:
    """Per image (a row): the crop at (0, 0), the crop moved by the shift, their code maps, and where the index
    moved with the content (white) or not (black) over their overlap.

    Args:
        images (`np.ndarray` `[N, S, S, 3]` uint8): the images the maps were made of.
        maps (`te_vqgan.metrics.ShiftedTokenMaps`): `image_shift_token_maps` of those images.
        num_codes (`int`): K, for the colour of each code.
    """
    images = np.asarray(images)
    (dy, dx), f, window = maps.shift, maps.downsample_factor, maps.window
    rows = len(images)
    figure, axes = new_figure(rows, 5, figsize=(10, 2.1 * rows))
    for r in range(rows):
        pictures = (
            (images[r, :window, :window], "crop at (0, 0)"),
            (images[r, dy * f : dy * f + window, dx * f : dx * f + window], f"moved by ({dy}, {dx}) tokens"),
            (index_map_to_rgb(maps.base[r], num_codes), "codes of the crop"),
            (index_map_to_rgb(maps.moved[r], num_codes), "codes of the moved crop"),
            (maps.match[r].numpy().astype(np.float32), "index moved with it"),
        )
        for c, (picture, name) in enumerate(pictures):
            axes[r, c].imshow(picture, interpolation="nearest", cmap="gray", vmin=0, vmax=1)
            axes[r, c].set_xticks([])
            axes[r, c].set_yticks([])
            if r == 0:
                axes[r, c].set_title(name, fontsize=9)
        axes[r, 4].set_xlabel(f"{maps.match[r].float().mean().item():.2f} of tokens", fontsize=8)
    if title:
        figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    return save_figure(figure, path)


def save_captioned_images(
    images: np.ndarray,
    captions,
    path: str | os.PathLike,
    title: str | None = None,
    columns: int = 4,
    wrap: int = 28,
) -> Path:
    """A grid of images, each with its text underneath (prompts under generated images,
    generated captions under inputs), as PNG.

    Args:
        images (`np.ndarray` uint8 `[N, H, W, 3]`): the pictures.
        captions (`list[str]`): one text per image (wrapped at `wrap` characters).
        columns (`int`, *optional*, defaults to 4): images per row.
    """
    import textwrap

    images = np.asarray(images)
    if images.ndim != 4 or images.shape[-1] != 3 or len(images) != len(captions) or not len(images):
        raise ValueError(
            f"Expected uint8 images [N, H, W, 3] and N captions with N >= 1 (got images of shape {images.shape} and "
            f"{len(captions)} captions)."
        )
    columns = max(1, min(columns, len(images)))
    rows = -(-len(images) // columns)
    texts = ["\n".join(textwrap.wrap(str(caption), wrap)) for caption in captions]
    # Tall enough for the longest text under a row (a four-clause prompt is 5-6 lines), so none is cut off.
    lines = max(text.count("\n") + 1 for text in texts)
    figure, axes = new_figure(
        rows, columns, figsize=(2.3 * columns, (2.4 + 0.14 * lines) * rows + (0.3 if title else 0))
    )
    for position, axis in enumerate(axes.flat):
        axis.set_xticks([])
        axis.set_yticks([])
        if position >= len(images):
            axis.set_axis_off()
            continue
        axis.imshow(images[position], interpolation="nearest")
        axis.set_xlabel(texts[position], fontsize=7)
    if title:
        figure.suptitle(title, fontsize=9)
    figure.tight_layout()
    return save_figure(figure, path)
