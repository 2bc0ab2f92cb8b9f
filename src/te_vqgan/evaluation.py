"""The paper's text-image metrics (the authors' `train_dalle.py` validation and `parser.py`).

- Image-to-text: a generated caption is parsed into (location, colour, digit) clauses
  (`te_vqgan.data.parse_caption`); a clause is correct only if all three match a
  ground-truth clause of the image.
- Text-to-image: for each ground-truth clause of the prompt, the fixed 28x28 window of its
  location (`te_vqgan.data.layout.digit_window`) is cut from the generated image and the
  evaluation classifier (`te_vqgan.classifier.DigitColourClassifier`) must name both its
  colour and its digit.

Accuracy = correct clauses / ground-truth clauses. Results are bucketed by the number of
ground-truth clauses (Quad1 .. Quad4), a single centre clause apart (Centre), as the paper's
tables are.

    >>> from te_vqgan.data import Triplet
    >>> truth = [{Triplet("upper_left", "red", 3), Triplet("lower_right", "white", 7)}]
    >>> image_to_text_accuracy(["the red 3 is on the upper left, and white 1 on the bottom right."], truth)
    0.5
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

from .data.captions import Triplet, parse_caption
from .data.layout import CANVAS_SIZE, COLOURS, digit_window


__all__ = [
    "BUCKETS",
    "BucketedAccuracy",
    "bucket_of",
    "caption_variant",
    "cut_windows",
    "image_to_text_accuracy",
    "image_to_text_scores",
    "objects_to_triplets",
    "text_to_image_scores",
]

# The paper's columns: Quad1 .. Quad4 by the number of digits; a lone centre digit apart.
BUCKETS = ("Quad1", "Quad2", "Quad3", "Quad4", "Centre")


def objects_to_triplets(objects: Sequence[dict], features) -> frozenset[Triplet]:
    """A TextMNIST example's `objects` (ClassLabel ids) as `Triplet`s, read with the split's
    `features` (`dataset.features`)."""
    fields = features["objects"].feature
    return frozenset(
        Triplet(fields["location"].int2str(o["location"]), fields["colour"].int2str(o["colour"]), int(o["digit"]))
        for o in objects
    )


def caption_variant(features) -> str:
    """The caption grammar of a TextMNIST split, read from its digit class names."""
    names = tuple(features["objects"].feature["digit"].names)
    from .data.mnist import MNIST_VARIANTS

    for variant, spec in MNIST_VARIANTS.items():
        if tuple(spec.class_names) == names:
            return variant
    raise ValueError(f"The dataset's class names {names} match no TextMNIST variant ({sorted(MNIST_VARIANTS)}).")


def image_to_text_accuracy(
    captions: Sequence[str], truths: Iterable[Iterable[Triplet]], variant: str = "mnist"
) -> float:
    """Fraction of ground-truth clauses that the generated captions state exactly.

    Args:
        captions (`list[str]`): one generated caption per image.
        truths: the ground-truth `Triplet`s of each image.
        variant (`str`, defaults to `"mnist"`): the caption grammar to parse with.
    """
    truths = [set(t) for t in truths]
    if len(truths) != len(captions):
        raise ValueError(f"Got {len(captions)} captions for {len(truths)} images.")
    total = sum(len(t) for t in truths)
    if total == 0:
        raise ValueError("The ground truth holds no clause: accuracy is undefined.")
    correct = sum(len(parse_caption(caption, variant=variant) & truth) for caption, truth in zip(captions, truths))
    return correct / total


def bucket_of(truth: Iterable[Triplet]) -> str:
    """`"Centre"` for a single centre clause, else `"Quad{n}"` for n ground-truth clauses."""
    truth = list(truth)
    if not 1 <= len(truth) <= 4:
        raise ValueError(f"Expected 1 to 4 ground-truth clauses (got {len(truth)}: {truth}).")
    if len(truth) == 1 and truth[0].location == "centre":
        return "Centre"
    return f"Quad{len(truth)}"


@dataclass
class BucketedAccuracy:
    """Correct and total ground-truth clauses, overall and per bucket (`BUCKETS`).

    Args:
        correct (`dict[str, int]`), total (`dict[str, int]`): per bucket present.
        per_image (`list[int]`): correct clauses of each image, in input order.
    """

    correct: dict[str, int] = field(default_factory=dict)
    total: dict[str, int] = field(default_factory=dict)
    per_image: list[int] = field(default_factory=list)

    def add(self, truth, num_correct: int) -> None:
        bucket = bucket_of(truth)
        self.correct[bucket] = self.correct.get(bucket, 0) + num_correct
        self.total[bucket] = self.total.get(bucket, 0) + len(truth)
        self.per_image.append(num_correct)

    @property
    def accuracy(self) -> float:
        """Correct / ground-truth clauses over all images."""
        total = sum(self.total.values())
        if total == 0:
            raise ValueError("The ground truth holds no clause: accuracy is undefined.")
        return sum(self.correct.values()) / total

    @property
    def buckets(self) -> dict[str, float]:
        """Accuracy per bucket present, in `BUCKETS` order."""
        return {b: self.correct[b] / self.total[b] for b in BUCKETS if self.total.get(b)}

    def as_dict(self) -> dict:
        return {"accuracy": self.accuracy, **self.buckets, "clauses": dict(self.total)}


def image_to_text_scores(
    captions: Sequence[str], truths: Iterable[Iterable[Triplet]], variant: str = "mnist"
) -> BucketedAccuracy:
    """`image_to_text_accuracy` per bucket: a clause counts if location, colour and digit all
    match a ground-truth clause of its image."""
    truths = [set(t) for t in truths]
    if len(truths) != len(captions):
        raise ValueError(f"Got {len(captions)} captions for {len(truths)} images.")
    scores = BucketedAccuracy()
    for caption, truth in zip(captions, truths):
        scores.add(truth, len(parse_caption(caption, variant=variant) & truth))
    return scores


def cut_windows(images: np.ndarray, truths: Sequence[Iterable[Triplet]]) -> tuple[np.ndarray, list[Triplet]]:
    """The 28x28 window of every ground-truth clause's location: uint8 `[M, 28, 28, 3]` and
    the M clauses, image by image."""
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[1:] != (CANVAS_SIZE, CANVAS_SIZE, 3) or images.dtype != np.uint8:
        raise ValueError(
            f"Expected uint8 images of shape (N, {CANVAS_SIZE}, {CANVAS_SIZE}, 3) (got {images.dtype} {images.shape})."
        )
    if len(images) != len(truths):
        raise ValueError(f"Got {len(images)} images for {len(truths)} ground truths.")
    windows, clauses = [], []
    for image, truth in zip(images, truths):
        for clause in sorted(truth):
            windows.append(image[digit_window(clause.location)])
            clauses.append(clause)
    return (np.stack(windows) if windows else np.zeros((0, 28, 28, 3), np.uint8)), clauses


def text_to_image_scores(images: np.ndarray, truths: Sequence[Iterable[Triplet]], classifier) -> BucketedAccuracy:
    """The paper's text-to-image accuracy of generated `images` (uint8 `[N, 64, 64, 3]`) for
    prompts whose clauses are `truths`: a clause is correct when `classifier.predict` names
    both the colour and the digit of its location's window."""
    truths = [sorted(set(t)) for t in truths]
    windows, clauses = cut_windows(images, truths)
    colours, digits = classifier.predict(windows)
    right = [
        COLOURS[int(c)] == clause.colour and int(d) == clause.digit for c, d, clause in zip(colours, digits, clauses)
    ]
    scores, position = BucketedAccuracy(), 0
    for truth in truths:
        scores.add(truth, int(sum(right[position : position + len(truth)])))
        position += len(truth)
    return scores
