"""Metrics of an image quantizer: shift equivariance in the quantized space and codebook usage.

`shift_equivariance` is the authors' `ShiftEqMetric` (docs/REPRODUCTION.md, "The equivariance
metric"): the same digit is drawn at the centre and in each quadrant of a 64x64 canvas, the
five images are tokenized, and the code indices of the digit's cell are compared between
every pair of placements. A quantizer that is translation equivariant in the quantized
space gives the same indices wherever the digit is, so it scores 1.

Both metrics take any model with `encode_to_indices`; a stock `diffusers.VQModel` is wrapped
by `VQModelTokenizer` automatically.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import combinations

import numpy as np
import torch

from .data.layout import (
    CANVAS_SIZE,
    CELL_ORIGINS,
    CELL_SIZE,
    COLOUR_RGB,
    COLOURS,
    LOCATIONS,
    QUADRANTS,
    index_cell,
    render_canvas,
)
from .images import images_to_tensor, tensor_to_images
from .models.quantizer import check_code_indices
from .models.stock_vq_model import VQModelTokenizer, as_tokenizer
from .torch_utils import check_integer_tensor, eval_mode, non_finite_weights


__all__ = [
    "CodebookUsage",
    "DEFAULT_TOKEN_SHIFTS",
    "ShiftedTokenMaps",
    "image_shift_token_maps",
    "ImageShiftEquivarianceResult",
    "ReconstructionFidelity",
    "colour_of_stroke",
    "equivariance_summary",
    "reconstruction_fidelity",
    "recolour_groups",
    "shift_equivariance_by_colour",
    "ShiftEquivarianceResult",
    "VQModelTokenizer",
    "as_tokenizer",
    "check_finite_weights",
    "codebook_usage",
    "image_shift_equivariance",
    "images_to_tensor",
    "render_shift_group",
    "shift_equivariance",
    "shift_equivariance_of_groups",
    "token_shifts_that_fit",
    "tensor_to_images",
]

# The 10 pairs of the five placements, in a fixed order.
PLACEMENT_PAIRS: tuple[tuple[str, str], ...] = tuple(combinations(LOCATIONS, 2))


def check_finite_weights(model) -> None:
    """ValueError if a weight of `model` is NaN or infinite: the metrics of a diverged model
    (every token the same code, a "perfect" equivariance of 1.0) are not numbers to report."""
    module = getattr(model, "model", model)  # a stock VQModel inside its wrapper
    if not hasattr(module, "named_parameters"):  # a duck-typed quantizer without weights
        return
    bad = non_finite_weights(module)
    if bad:
        raise ValueError(
            f"The model's weights hold NaN or Inf ({bad[:3]}{' ...' if len(bad) > 3 else ''}): it diverged; no metric is computed."
        )


def _model_device_dtype(model) -> tuple[torch.device, torch.dtype]:
    try:
        parameter = next(iter(model.parameters()))
        return parameter.device, parameter.dtype
    except (AttributeError, StopIteration):
        return torch.device("cpu"), torch.float32


def _as_uint8_digits(digits) -> np.ndarray:
    digits = digits.detach().cpu().numpy() if isinstance(digits, torch.Tensor) else np.asarray(digits)
    if digits.ndim == 2:
        digits = digits[None]
    if digits.ndim != 3 or digits.shape[1:] != (28, 28):
        raise ValueError(f"Expected digits of shape (N, 28, 28) (got shape {digits.shape}).")
    if digits.dtype == np.uint8:
        return digits
    if np.issubdtype(digits.dtype, np.floating):
        if not np.isfinite(digits).all() or digits.min() < 0 or digits.max() > 1:
            raise ValueError("Floating-point digits must be finite and lie in [0, 1].")
        return np.round(digits * 255).astype(np.uint8)
    raise ValueError(f"Expected uint8 digits or floats in [0, 1] (got dtype {digits.dtype}).")


def render_shift_group(digit: np.ndarray, colour: str = "white") -> np.ndarray:
    """The five placements of one digit, in `LOCATIONS` order: uint8 `[5, 64, 64, 3]`."""
    return np.stack([render_canvas([(location, colour, digit)]) for location in LOCATIONS])


@dataclass
class ShiftEquivarianceResult:
    """Result of `shift_equivariance`.

    Args:
        score (`float`): fraction of identical indices over all pairs and digits.
        per_pair (`dict[str, float]`): the score of each of the 10 placement pairs,
            keyed `"centre~upper_left"` and so on.
        per_digit (`np.ndarray` of shape `(N,)`): each digit's score over its 10 pairs.
        index_maps (`torch.LongTensor` of shape `(N, 5, H/f, W/f)`): the token maps, placements
            in `LOCATIONS` order.
        downsample_factor (`int`): f, inferred from the token maps.
        foreground_score (`float`): the same fraction counted only over the tokens whose f x f
            patch touches the digit (not in the authors' metric: there, the black background,
            most of each cell, makes every quantizer look fairly equivariant).
    """

    score: float
    per_pair: dict[str, float]
    per_digit: np.ndarray
    index_maps: torch.LongTensor
    downsample_factor: int
    foreground_score: float = float("nan")
    placements: tuple[str, ...] = field(default=LOCATIONS)


@torch.no_grad()
def shift_equivariance(model, digits, colour: str = "white", batch_size: int = 64) -> ShiftEquivarianceResult:
    """The authors' shift-equivariance score of a quantizer.

    Each digit is drawn at the centre and in the four quadrants (shifts of 16 and 32 pixels).
    Each of the five images is tokenized; the sub-grid covering the digit's 32x32 cell (8x8
    tokens at f=4) is cut out; the score is the fraction of identical indices over the 10
    pairs of sub-grids, averaged over digits.

    Args:
        model: anything with `encode_to_indices(images [B, 3, 64, 64] in [-1, 1]) -> [B, h, w]`
            whose f divides 16, or a stock `diffusers.VQModel`.
        digits (`np.ndarray` or `torch.Tensor` of shape `(N, 28, 28)`): uint8, or floats in [0, 1].
        colour (`str`, *optional*, defaults to `"white"`): stroke colour.
        batch_size (`int`, *optional*, defaults to `64`): images per `encode_to_indices` call.

    Example::

        >>> from te_vqgan.data.mnist import load_mnist
        >>> images, _ = load_mnist("test", data_dir="../shared/data/mnist")
        >>> shift_equivariance(TEVQModel(), images[:10]).score  # doctest: +SKIP
    """
    digits = _as_uint8_digits(digits)
    if len(digits) == 0:
        raise ValueError("`digits` is empty; expected at least one (28, 28) digit.")
    groups = np.stack([render_shift_group(digit, colour) for digit in digits])
    return shift_equivariance_of_groups(model, groups, batch_size=batch_size)


@torch.no_grad()
def shift_equivariance_of_groups(model, groups, batch_size: int = 64) -> ShiftEquivarianceResult:
    """`shift_equivariance` on pre-rendered placements, e.g. TextMNIST's `shift` split.

    Args:
        model: see `shift_equivariance`.
        groups (`np.ndarray` of shape `(N, 5, 64, 64, 3)`): uint8 images, the same digit at
            the placements of `LOCATIONS` (centre, upper left, upper right, lower left, lower right).
        batch_size (`int`, *optional*, defaults to `64`): images per `encode_to_indices` call.
    """
    groups = np.asarray(groups)
    if (
        groups.ndim != 5
        or groups.shape[1:] != (len(LOCATIONS), CANVAS_SIZE, CANVAS_SIZE, 3)
        or groups.dtype != np.uint8
    ):
        raise ValueError(
            f"Expected uint8 groups of shape (N, {len(LOCATIONS)}, {CANVAS_SIZE}, {CANVAS_SIZE}, 3) "
            f"(got {groups.dtype} {groups.shape})."
        )
    if len(groups) == 0:
        raise ValueError("`groups` is empty; expected at least one group of five placements.")
    if batch_size < 1:
        raise ValueError(f"`batch_size` must be >= 1 (got {batch_size}).")
    quantizer = as_tokenizer(model)
    device, dtype = _model_device_dtype(quantizer)
    check_finite_weights(quantizer)
    flat = groups.reshape(-1, CANVAS_SIZE, CANVAS_SIZE, 3)
    maps = []
    with eval_mode(quantizer):
        for start in range(0, len(flat), batch_size):
            batch = images_to_tensor(flat[start : start + batch_size]).to(device=device, dtype=dtype)
            maps.append(quantizer.encode_to_indices(batch).cpu())
    index_maps = torch.cat(maps).view(len(groups), len(LOCATIONS), *maps[0].shape[1:])

    side = index_maps.shape[-1]
    if CANVAS_SIZE % side or index_maps.shape[-2] != side:
        raise ValueError(
            f"Expected square token maps whose side divides {CANVAS_SIZE} (got {tuple(index_maps.shape[-2:])})."
        )
    f = CANVAS_SIZE // side
    cells = torch.stack(
        [index_maps[:, i][(slice(None), *index_cell(location, f))] for i, location in enumerate(LOCATIONS)], dim=1
    )  # [N, 5, 32/f, 32/f]

    # Tokens whose patch touches the digit, from the centre placement (the digit sits at the
    # same place in its cell in all five images).
    rows, cols = index_cell("centre", 1)
    centre_cells = torch.from_numpy(groups[:, 0, rows, cols].max(axis=-1)).float()  # [N, 32, 32]
    foreground = torch.nn.functional.max_pool2d(centre_cells[:, None], f)[:, 0] > 0  # [N, 32/f, 32/f]

    per_pair = {}
    per_digit = torch.zeros(len(groups), dtype=torch.float64)
    foreground_per_digit = torch.zeros(len(groups), dtype=torch.float64)
    for a, b in PLACEMENT_PAIRS:
        i, j = LOCATIONS.index(a), LOCATIONS.index(b)
        equal = cells[:, i] == cells[:, j]
        same = equal.double().mean(dim=(1, 2))  # [N]
        per_pair[f"{a}~{b}"] = same.mean().item()
        per_digit += same
        foreground_per_digit += (equal & foreground).sum(dim=(1, 2)) / foreground.sum(dim=(1, 2)).clamp(min=1)
    per_digit /= len(PLACEMENT_PAIRS)
    foreground_per_digit /= len(PLACEMENT_PAIRS)
    return ShiftEquivarianceResult(
        score=per_digit.mean().item(),
        per_pair=per_pair,
        per_digit=per_digit.numpy(),
        index_maps=index_maps,
        downsample_factor=f,
        foreground_score=foreground_per_digit.mean().item(),
    )


@dataclass
class ImageShiftEquivarianceResult:
    """Result of `image_shift_equivariance`.

    Args:
        score (`float`): fraction of tokens whose index moves with the shift, over every shift and image.
        per_shift (`dict[str, float]`): the fraction for each token shift, keyed `"dy,dx"`.
        downsample_factor (`int`): f; a token shift of (dy, dx) is a pixel shift of (dy * f, dx * f).
        window (`int`): side in pixels of the two crops compared.
    """

    score: float
    per_shift: dict[str, float]
    downsample_factor: int
    window: int


DEFAULT_TOKEN_SHIFTS = ((0, 1), (1, 0), (1, 1), (0, 2), (2, 0), (2, 2))


def token_shifts_that_fit(side: int, downsample_factor: int, shifts=DEFAULT_TOKEN_SHIFTS) -> list[tuple[int, int]]:
    """The token shifts of `shifts` that `image_shift_equivariance` can measure together on images of `side` pixels
    at f = `downsample_factor`: the crops of side `side - largest * f` must still overlap after the largest shift
    (a code map of `side // f` tokens holds shifts up to `(side // f - 1) // 2`). At f = 16 on 64-pixel images: the
    1-token shifts only."""
    return [tuple(s) for s in shifts if max(s) <= _largest_token_shift(side, downsample_factor)]


def _largest_token_shift(side: int, f: int) -> int:
    """The largest token shift whose crops' code maps still overlap on images of `side` pixels at f."""
    return (side // f - 1) // 2


@torch.no_grad()
def image_shift_equivariance(
    model, images, shifts=DEFAULT_TOKEN_SHIFTS, batch_size: int = 32
) -> ImageShiftEquivarianceResult:
    """Shift equivariance of a quantizer on any images (no TextMNIST placements needed).

    For a token shift (dy, dx) two crops of each image are tokenised: the window at (0, 0) and the
    one moved by (dy * f, dx * f) pixels, both of side `S - max_shift * f` (S the image side). Both
    are real image content, so no border is filled in: the only padding is the model's own, at
    the crops' edges. A token of the moved crop at (i, j) sees what the first crop's token at
    (i + dy, j + dx) sees; the score is the fraction of those pairs with the same index, over the
    overlap of the two code maps.

    Args:
        model: a TEVQModel, a stock `diffusers.VQModel` or anything with `encode_to_indices`.
        images (`torch.Tensor` float `[N, 3, S, S]` in [-1, 1], or uint8 `np.ndarray` `[N, S, S, 3]`).
        shifts (`tuple[tuple[int, int], ...]`): token shifts (dy, dx), each >= 0, not both 0.
        batch_size (`int`): crops per `encode_to_indices` call.
    """
    shifts = [tuple(int(v) for v in shift) for shift in shifts]
    if not shifts or any(len(s) != 2 or min(s) < 0 or s == (0, 0) for s in shifts):
        raise ValueError(f"`shifts` must be token shifts (dy, dx) >= 0, not both 0 (got {shifts}).")
    largest = max(max(s) for s in shifts)
    if isinstance(images, np.ndarray):
        images = images_to_tensor(images)
    per_shift, same, total, base = {}, 0, 0, None
    for shift in shifts:
        maps = image_shift_token_maps(model, images, shift, max_shift=largest, batch_size=batch_size, base=base)
        base = maps.base
        per_shift[f"{shift[0]},{shift[1]}"] = maps.match.float().mean().item()
        same, total = same + int(maps.match.sum()), total + maps.match.numel()
    return ImageShiftEquivarianceResult(same / total, per_shift, maps.downsample_factor, maps.window)


@dataclass
class ShiftedTokenMaps:
    """Result of `image_shift_token_maps`: `base` `[N, h, w]` the code map of the crop at (0, 0), `moved` that of
    the crop moved by `shift` tokens, `match` `[N, h - dy, w - dx]` whether the moved crop's token shows the
    index of the base crop's token at the same content; `window` the crops' side in pixels."""

    base: torch.Tensor
    moved: torch.Tensor
    match: torch.Tensor
    shift: tuple[int, int]
    downsample_factor: int
    window: int


@torch.no_grad()
def image_shift_token_maps(
    model, images, shift: tuple[int, int], *, max_shift: int | None = None, batch_size: int = 32, base=None
) -> ShiftedTokenMaps:
    """The two crops of `image_shift_equivariance` for one token shift, tokenised (see there). The crops' side is
    set by `max_shift` (default the shift's largest component), so that every shift of one measurement compares
    crops of one size; `base` reuses the code maps of the crops at (0, 0) already computed for that size."""
    quantizer = as_tokenizer(model)
    if isinstance(images, np.ndarray):
        images = images_to_tensor(images)
    if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[1] != 3 or len(images) == 0:
        raise ValueError(f"Expected images [N, 3, S, S] (got {getattr(images, 'shape', type(images).__name__)}).")
    dy, dx = (int(v) for v in shift)
    if min(dy, dx) < 0 or (dy, dx) == (0, 0):
        raise ValueError(f"`shifts` must be token shifts (dy, dx) >= 0, not both 0 (got {[(dy, dx)]}).")
    f = quantizer.downsample_factor
    side = min(images.shape[-2:])
    largest = max(dy, dx) if max_shift is None else max_shift
    window = (side - largest * f) // f * f
    if largest > _largest_token_shift(side, f):  # the moved crop's code map would not overlap the base crop's
        raise ValueError(
            f"Images of side {side} are too small for token shifts up to {largest} at f = {f}: their crops' code maps "
            f"do not overlap (shifts up to {_largest_token_shift(side, f)} fit; `token_shifts_that_fit`)."
        )
    device, dtype = _model_device_dtype(quantizer)

    def encode(crops):
        return torch.cat([quantizer.encode_to_indices(c.to(device, dtype)).cpu() for c in crops.split(batch_size)])

    if base is None:
        base = encode(images[:, :, :window, :window])
    moved = encode(images[:, :, dy * f : dy * f + window, dx * f : dx * f + window])
    h, w = base.shape[-2:]
    match = moved[:, : h - dy, : w - dx] == base[:, dy:, dx:]
    return ShiftedTokenMaps(base, moved, match, (dy, dx), f, window)


@dataclass
class CodebookUsage:
    """Result of `codebook_usage`.

    Args:
        codes_used (`int`): codes that occur at least once (paper, Table 3).
        perplexity (`float`): exp of the entropy of the code distribution; K for uniform use.
        histogram (`torch.LongTensor` of shape `(K,)`): occurrences of each code.
    """

    codes_used: int
    perplexity: float
    histogram: torch.LongTensor

    @property
    def num_codes(self) -> int:
        return self.histogram.numel()


def codebook_usage(indices: torch.Tensor, num_codes: int) -> CodebookUsage:
    """How many of `num_codes` codes `indices` (any shape) uses, and how evenly."""
    if not isinstance(indices, torch.Tensor):
        indices = torch.as_tensor(np.asarray(indices))
    check_integer_tensor("indices", indices)
    if num_codes < 1:
        raise ValueError(f"`num_codes` must be >= 1 (got {num_codes}).")
    flat = indices.reshape(-1).long().cpu()
    if flat.numel() == 0:
        raise ValueError("`indices` is empty.")
    check_code_indices(flat, num_codes)
    histogram = torch.bincount(flat, minlength=num_codes)
    probs = histogram.double() / histogram.sum()
    nonzero = probs[probs > 0]
    perplexity = torch.exp(-(nonzero * nonzero.log()).sum()).item()
    return CodebookUsage(codes_used=int((histogram > 0).sum()), perplexity=perplexity, histogram=histogram)


def recolour_groups(groups: np.ndarray, colour: str) -> np.ndarray:
    """Shift groups (or any uint8 `[..., 3]` canvases of tinted digits on black) redrawn in
    `colour`: each pixel's stroke intensity (its brightest channel) times the colour's tint,
    exactly what `render_canvas` draws for that colour."""
    if colour not in COLOUR_RGB:
        raise ValueError(f"Unknown colour {colour!r}; expected one of {COLOURS}.")
    groups = np.asarray(groups)
    if groups.dtype != np.uint8 or groups.shape[-1] != 3:
        raise ValueError(f"Expected uint8 images with 3 channels last (got {groups.dtype} {groups.shape}).")
    return groups.max(axis=-1, keepdims=True) * np.asarray(COLOUR_RGB[colour], dtype=np.uint8)


@torch.no_grad()
def shift_equivariance_by_colour(
    model, groups, colours=COLOURS, batch_size: int = 64
) -> dict[str, ShiftEquivarianceResult]:
    """`shift_equivariance_of_groups` with the digits of `groups` redrawn in each of `colours`.

    The authors' metric places white digits only; a quantizer can be equivariant for white
    strokes and not for the one-channel red, green and blue ones, which are three quarters of
    TextMNIST's digits. Each result carries both the authors' score and the score on the
    digit's own tokens (`foreground_score`).
    """
    unknown = [c for c in colours if c not in COLOUR_RGB]
    if unknown or not colours:
        raise ValueError(f"`colours` must be a non-empty subset of {COLOURS} (got {list(colours)}).")
    return {
        colour: shift_equivariance_of_groups(model, recolour_groups(groups, colour), batch_size=batch_size)
        for colour in colours
    }


def equivariance_summary(results: dict[str, ShiftEquivarianceResult]) -> dict[str, float]:
    """The three views of equivariance as flat metrics: the authors' score and the digit-token
    score on white digits (the paper's placement), and both per colour and averaged over
    colours (`shift_equivariance`, `shift_equivariance_foreground`,
    `shift_equivariance_{colour}`, `shift_equivariance_foreground_{colour}`,
    `shift_equivariance_all_colours`, `shift_equivariance_foreground_all_colours`)."""
    summary = {}
    if "white" in results:
        summary["shift_equivariance"] = results["white"].score
        summary["shift_equivariance_foreground"] = results["white"].foreground_score
    for colour, result in results.items():
        summary[f"shift_equivariance_{colour}"] = result.score
        summary[f"shift_equivariance_foreground_{colour}"] = result.foreground_score
    summary["shift_equivariance_all_colours"] = float(np.mean([r.score for r in results.values()]))
    summary["shift_equivariance_foreground_all_colours"] = float(
        np.mean([r.foreground_score for r in results.values()])
    )
    return summary


# A stroke pixel: brightest channel at least half on (uint8 128).
STROKE_THRESHOLD = 128
# A reconstructed stroke whose brightest channel averages below this (over the input's stroke)
# has been erased: its colour counts as wrong.
ERASED_THRESHOLD = 0.25


def colour_of_stroke(mean_rgb: np.ndarray) -> str | None:
    """The colour of `COLOURS` whose tint is nearest the direction of a stroke's mean RGB
    (values in [0, 1]), or None when the stroke is too dark to have one (erased)."""
    mean_rgb = np.asarray(mean_rgb, dtype=np.float64)
    peak = mean_rgb.max()
    if peak < ERASED_THRESHOLD:
        return None
    direction = mean_rgb / peak
    distances = {colour: np.abs(direction - np.asarray(rgb)).sum() for colour, rgb in COLOUR_RGB.items()}
    return min(distances, key=distances.get)


@dataclass
class ReconstructionFidelity:
    """Result of `reconstruction_fidelity`.

    Args:
        colour_fidelity (`float`): fraction of digit cells whose reconstruction has the input's colour.
        shape_iou (`float`): mean over digit cells of the stroke masks' intersection over union.
        num_cells (`int`): digit cells scored.
        per_colour (`dict[str, float]`): colour fidelity of the cells of each input colour.
        erased (`float`): fraction of cells whose reconstructed stroke is too dark to have a colour.
    """

    colour_fidelity: float
    shape_iou: float
    num_cells: int
    per_colour: dict[str, float]
    erased: float

    def as_metrics(self, prefix: str = "") -> dict[str, float]:
        metrics = {f"{prefix}colour_fidelity": self.colour_fidelity, f"{prefix}shape_iou": self.shape_iou}
        metrics.update({f"{prefix}colour_fidelity_{c}": v for c, v in self.per_colour.items()})
        return metrics


def _digit_cells(image: np.ndarray, locations) -> list[tuple[slice, slice]]:
    if locations is None:  # the quadrants holding a stroke (a centre digit: its four pieces)
        locations = [q for q in QUADRANTS if (_cell(image, q).max(axis=-1) >= STROKE_THRESHOLD).any()]
    return [_cell_slices(location) for location in locations]


def _cell_slices(location: str) -> tuple[slice, slice]:
    row, col = CELL_ORIGINS[location]
    return slice(row, row + CELL_SIZE), slice(col, col + CELL_SIZE)


def _cell(image: np.ndarray, location: str) -> np.ndarray:
    return image[_cell_slices(location)]


def reconstruction_fidelity(images, reconstructions, locations=None) -> ReconstructionFidelity:
    """Does a reconstruction keep each digit's colour and shape?

    Per digit cell (32x32): the input's stroke is its pixels whose brightest channel is at
    least 128; the cell's colour is `colour_of_stroke` of the mean RGB over that stroke, for
    the input and for the reconstruction (over the same pixels; a stroke erased to black has
    no colour and counts as wrong). The shape score is the IoU of the input's and the
    reconstruction's stroke masks. L1 training without a perceptual term scores near 0 on
    colour for red, green and blue digits: it paints them grey or black.

    Args:
        images, reconstructions (`np.ndarray` uint8 `[N, 64, 64, 3]` or `torch.Tensor`
            `[N, 3, 64, 64]` in [-1, 1]): inputs and their reconstructions.
        locations (`list[list[str]]`, *optional*): each image's digit locations (TextMNIST's
            `objects`); by default, the quadrants that hold a stroke.
    """
    images, reconstructions = (
        tensor_to_images(x) if isinstance(x, torch.Tensor) else np.asarray(x) for x in (images, reconstructions)
    )
    if images.shape != reconstructions.shape or images.ndim != 4 or images.shape[1:] != (CANVAS_SIZE, CANVAS_SIZE, 3):
        raise ValueError(
            f"Expected images and reconstructions of the same shape (N, {CANVAS_SIZE}, {CANVAS_SIZE}, 3) "
            f"(got {images.shape} and {reconstructions.shape})."
        )
    if locations is not None and len(locations) != len(images):
        raise ValueError(f"`locations` has {len(locations)} entries for {len(images)} images.")
    right, ious, erased = [], [], 0
    per_colour: dict[str, list[bool]] = {c: [] for c in COLOURS}
    for n, (image, recon) in enumerate(zip(images, reconstructions)):
        for cell in _digit_cells(image, None if locations is None else locations[n]):
            source, output = image[cell].astype(np.float64) / 255, recon[cell].astype(np.float64) / 255
            stroke = source.max(axis=-1) >= STROKE_THRESHOLD / 255
            if not stroke.any():
                continue
            expected = colour_of_stroke(source[stroke].mean(axis=0))
            got = colour_of_stroke(output[stroke].mean(axis=0))
            erased += got is None
            right.append(got == expected)
            per_colour[expected].append(got == expected)
            output_stroke = output.max(axis=-1) >= STROKE_THRESHOLD / 255
            ious.append((stroke & output_stroke).sum() / (stroke | output_stroke).sum())
    if not right:
        raise ValueError("No digit cell with a stroke in `images`: nothing to score.")
    return ReconstructionFidelity(
        colour_fidelity=float(np.mean(right)),
        shape_iou=float(np.mean(ious)),
        num_cells=len(right),
        per_colour={c: float(np.mean(v)) for c, v in per_colour.items() if v},
        erased=erased / len(right),
    )
