"""Small torch helpers that models, metrics, pipelines and training share.

- `eval_mode(model)`: eval mode for a block of code, the caller's mode restored after.
- `non_finite_weights(model)`: the parameters holding NaN or Inf (a diverged model).
- `check_integer_tensor(name, value)` and `first_outside(ids, low, high)`: the checks on
  code indices and token ids (integer tensors, in range).
"""

from __future__ import annotations

from contextlib import contextmanager

import torch


__all__ = ["INTEGER_DTYPES", "check_integer_tensor", "eval_mode", "first_outside", "non_finite_weights"]

# The dtypes accepted for code indices and token ids (those torch indexes and compares with).
INTEGER_DTYPES = (torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8)


@contextmanager
def eval_mode(model):
    """Runs the block with `model` in eval mode, then puts it back in train mode if it was in
    train mode before. `model` may be any object with `eval()` (and `train()` and `training`
    when it can train), e.g. a wrapped quantizer.

    Example::

        >>> with eval_mode(model):
        ...     indices = model.encode_to_indices(images)
    """
    was_training = getattr(model, "training", False)
    model.eval()
    try:
        yield model
    finally:
        if was_training:
            model.train()


def non_finite_weights(model: torch.nn.Module) -> list[str]:
    """The names of `model`'s parameters that hold a NaN or an infinity (`[]` when all are
    finite): a model with any is diverged, and its outputs are not numbers to report."""
    return [name for name, parameter in model.named_parameters() if not torch.isfinite(parameter).all()]


def check_integer_tensor(what: str, value: object) -> torch.Tensor:
    """`value` itself if it is a `torch.Tensor` of an integer dtype (`INTEGER_DTYPES`); else a
    `ValueError` that names `what` (e.g. ``"`text_ids`"`` or `"code indices"`) and the type or
    dtype it got."""
    if not isinstance(value, torch.Tensor):
        raise ValueError(f"Expected {what} as a torch.Tensor (got {type(value).__name__}).")
    if value.dtype not in INTEGER_DTYPES:
        raise ValueError(f"Expected integer {what} (got dtype {value.dtype}).")
    return value


def first_outside(ids: torch.Tensor, low: int, high: int) -> int | None:
    """The first of `ids` (in row-major order) outside `[low, high)`, or None when all lie
    inside (empty `ids` included): what a range check names in its error."""
    bad = (ids < low) | (ids >= high)
    return ids[bad][0].item() if bad.any() else None
