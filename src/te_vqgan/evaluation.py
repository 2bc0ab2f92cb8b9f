"""Scoring generated captions against the objects an image holds (the paper's image-to-text rule).

A generated caption is parsed into (location, colour, digit) clauses
(`te_vqgan.data.parse_caption`); a clause is correct only if all three match a ground-truth
clause of the image. Accuracy = correct clauses / ground-truth clauses, over a set of images.

    >>> from te_vqgan.data import Triplet
    >>> truth = [{Triplet("upper_left", "red", 3), Triplet("lower_right", "white", 7)}]
    >>> image_to_text_accuracy(["the red 3 is on the upper left, and white 1 on the bottom right."], truth)
    0.5
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from .data.captions import Triplet, parse_caption


__all__ = ["image_to_text_accuracy", "objects_to_triplets"]


def objects_to_triplets(objects: Sequence[dict], features) -> frozenset[Triplet]:
    """A TextMNIST example's `objects` (ClassLabel ids) as `Triplet`s, read with the split's
    `features` (`dataset.features`)."""
    fields = features["objects"].feature
    return frozenset(
        Triplet(fields["location"].int2str(o["location"]), fields["colour"].int2str(o["colour"]), int(o["digit"]))
        for o in objects
    )


def image_to_text_accuracy(captions: Sequence[str], truths: Iterable[Iterable[Triplet]], variant: str = "mnist") -> float:
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
