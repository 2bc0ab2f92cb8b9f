"""The compositional split of TextMNIST: which combinations are held out, and where digits come from.

The paper holds (digit, colour, location) combinations out of training: "white 0 on the
upper left does not exist in the train set, while all 0's in the test set are white and
placed in upper left". `HELD_OUT_COMBINATIONS` does the same for every digit: each digit
has exactly one held-out (colour, quadrant), the colours and quadrants spread so that every
quadrant holds two or three of them. The table (in `Triplet` order: location, colour, digit):

| digit | colour | location |
|---|---|---|
| 0 | white | upper_left (the paper's example) |
| 1 | red | upper_right |
| 2 | green | lower_left |
| 3 | blue | lower_right |
| 4 | red | upper_left |
| 5 | green | upper_right |
| 6 | blue | lower_left |
| 7 | white | lower_right |
| 8 | green | upper_left |
| 9 | blue | upper_right |

Splits and their objects:

* `train`, `validation`, `test_seen`: every object is a *seen* combination (not in the table).
* `test`: every object is a held-out combination.
* `shift`: groups of five images, the same MNIST digit at the centre and in each quadrant,
  for the equivariance metric of the quantizer; it ignores the table.

An image with index `i` holds `1 + i % 4` digits, so every split is balanced over the digit
counts (a 3,000-image split has 750 of each). One digit goes to any location that has a
combination for the split (the centre included, for the seen splits); two to four go to
distinct quadrants.

Digit pools never overlap between splits (`SOURCE_POOLS`): train and validation draw from
disjoint parts of the MNIST training file, the three test splits from disjoint parts of the
t10k file.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from .captions import Triplet
from .layout import COLOURS, LOCATIONS, QUADRANTS


__all__ = [
    "HELD_OUT_COMBINATIONS",
    "SOURCE_POOLS",
    "SPLITS",
    "SPLIT_IDS",
    "SourcePool",
    "combination_table",
    "sample_objects",
    "validate_held_out",
]

HELD_OUT_COMBINATIONS: tuple[Triplet, ...] = (
    Triplet("upper_left", "white", 0),  # the paper's example
    Triplet("upper_right", "red", 1),
    Triplet("lower_left", "green", 2),
    Triplet("lower_right", "blue", 3),
    Triplet("upper_left", "red", 4),
    Triplet("upper_right", "green", 5),
    Triplet("lower_left", "blue", 6),
    Triplet("lower_right", "white", 7),
    Triplet("upper_left", "green", 8),
    Triplet("upper_right", "blue", 9),
)

SPLITS = ("train", "validation", "test", "test_seen", "shift")
# Part of every example's random seed: (seed, split id, example index).
SPLIT_IDS = {name: i for i, name in enumerate(SPLITS)}


@dataclass(frozen=True)
class SourcePool:
    """The MNIST items a split may draw: `mnist_split` file ("train" or "test"), items [start, stop)."""

    mnist_split: str
    start: int
    stop: int


# MNIST train has 60,000 items, t10k 10,000. Validation takes the last 5,000 of train, the
# customary hold-out; the three test splits share t10k without overlapping.
SOURCE_POOLS: dict[str, SourcePool] = {
    "train": SourcePool("train", 0, 55_000),
    "validation": SourcePool("train", 55_000, 60_000),
    "test": SourcePool("test", 0, 5_000),
    "test_seen": SourcePool("test", 5_000, 9_000),
    "shift": SourcePool("test", 9_000, 10_000),
}


def validate_held_out(entries: Iterable[Sequence], num_classes: int = 10) -> tuple[Triplet, ...]:
    """Check a held-out table and return it as `Triplet`s in canonical order.

    Each entry is `(location, colour, digit)`. Raises a `ValueError` naming the entry that
    is malformed, unknown or repeated.
    """
    table: list[Triplet] = []
    for entry in entries:
        if isinstance(entry, (str, bytes)) or len(entry) != 3:
            raise ValueError(f"A held-out entry must be (location, colour, digit) (got {entry!r}).")
        location, colour, digit = entry
        if location not in LOCATIONS:
            raise ValueError(
                f"Held-out entry {tuple(entry)!r}: unknown location {location!r}; expected one of {LOCATIONS}."
            )
        if colour not in COLOURS:
            raise ValueError(f"Held-out entry {tuple(entry)!r}: unknown colour {colour!r}; expected one of {COLOURS}.")
        if isinstance(digit, bool) or not isinstance(digit, (int, np.integer)) or not 0 <= digit < num_classes:
            raise ValueError(
                f"Held-out entry {tuple(entry)!r}: `digit` must be an int in [0, {num_classes}) (got {digit!r})."
            )
        triplet = Triplet(location, colour, int(digit))
        if triplet in table:
            raise ValueError(f"Held-out entry {tuple(entry)!r} is listed twice.")
        table.append(triplet)
    return tuple(sorted(table, key=lambda t: (LOCATIONS.index(t.location), COLOURS.index(t.colour), t.digit)))


def combination_table(
    held_out: Iterable[Triplet], held_out_only: bool, num_classes: int = 10
) -> dict[str, tuple[tuple[str, int], ...]]:
    """For every location, the `(colour, digit)` pairs a split may place there.

    `held_out_only=True` gives the held-out pairs (the `test` split), `False` all others.
    """
    held = set(held_out)
    return {
        location: tuple(
            (colour, digit)
            for colour in COLOURS
            for digit in range(num_classes)
            if (Triplet(location, colour, digit) in held) == held_out_only
        )
        for location in LOCATIONS
    }


def sample_objects(
    rng: np.random.Generator, num_digits: int, table: dict[str, Sequence[tuple[str, int]]]
) -> list[Triplet]:
    """Draw the objects of one image.

    One digit goes to any location with a pair in `table`; two to four go to distinct
    quadrants. Each location's `(colour, digit)` is uniform over its pairs.

    Returns:
        `list[Triplet]` in the canonical order of `LOCATIONS`.
    """
    if not 1 <= num_digits <= len(QUADRANTS):
        raise ValueError(f"`num_digits` must be in [1, {len(QUADRANTS)}] (got {num_digits}).")
    candidates = [loc for loc in (LOCATIONS if num_digits == 1 else QUADRANTS) if table[loc]]
    if len(candidates) < num_digits:
        raise ValueError(f"Cannot place {num_digits} digits: only {candidates} have combinations to draw from.")
    chosen = np.sort(rng.choice(len(candidates), size=num_digits, replace=False))
    objects = []
    for i in chosen:
        location = candidates[i]
        colour, digit = table[location][rng.integers(len(table[location]))]
        objects.append(Triplet(location, colour, digit))
    return objects
