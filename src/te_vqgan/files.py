"""Writing files so that an interrupted run never leaves one half-written."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path


__all__ = ["write_json_atomic"]


def write_json_atomic(path: str | os.PathLike, payload) -> Path:
    """Write JSON to a temporary file beside `path`, then move it into place.

    Tensors and numpy scalars become numbers, paths strings; NaN and infinities (not JSON)
    become null.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(_plain(payload), indent=2, sort_keys=True, allow_nan=False) + "\n")
    os.replace(tmp, path)
    return path


def _plain(value):
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [_plain(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "item") and getattr(value, "ndim", 0) == 0:  # torch / numpy scalars
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
