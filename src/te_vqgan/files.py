"""Writing files and folders so that an interrupted run never leaves one half-written.

One mechanism for every output of the package:

- `atomic_path(path)`: a temporary file beside `path` to write, moved into place only when
  the block ends without an error (else removed), with the permissions of a normally created
  file (`0o666 & ~umask`, not the `0o600` of a temporary file);
- `write_json_atomic(path, payload)`: JSON through `atomic_path`;
- `install_folder(staging, destination)`: a folder written completely beside its destination,
  then swapped into place (an existing destination is replaced only at that moment).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path


__all__ = ["atomic_path", "check_output_dir", "install_folder", "write_json_atomic"]


def _default_file_mode() -> int:
    # os.umask can only be read by setting it; restore it at once.
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success it becomes `path`, on error it is removed.

        >>> with atomic_path("figure.png") as tmp:
        ...     image.save(tmp, format="PNG")
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        os.chmod(tmp, _default_file_mode())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_json_atomic(path: str | os.PathLike, payload) -> Path:
    """Write JSON to a temporary file beside `path`, then move it into place.

    Tensors and numpy scalars become numbers, paths strings; NaN and infinities (not JSON)
    become null.
    """
    path = Path(path)
    text = json.dumps(_plain(payload), indent=2, sort_keys=True, allow_nan=False) + "\n"
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return path


def check_output_dir(output_dir: str | os.PathLike, overwrite: bool = False) -> None:
    """Raise `FileExistsError` if `output_dir` is a file or a folder holding anything, unless
    `overwrite`: checked before any work, so a long build never ends on an occupied folder."""
    output_dir = Path(output_dir)
    if output_dir.exists() and (not output_dir.is_dir() or any(output_dir.iterdir())) and not overwrite:
        raise FileExistsError(
            f"Output {str(output_dir)!r} is not empty: it exists and is not an empty folder; pass --overwrite "
            "(overwrite=True from Python) to replace it."
        )


def install_folder(staging: str | os.PathLike, destination: str | os.PathLike) -> Path:
    """Move the complete folder `staging` to `destination`, replacing what is there.

    The old destination is moved aside first and deleted only once the new one is in place,
    so at every moment `destination` is either the old complete folder or the new one.
    """
    staging, destination = Path(staging), Path(destination)
    if destination.exists():
        old = destination.with_name(f".{destination.name}.old.tmp")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(destination, old)
        os.replace(staging, destination)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(staging, destination)
    return destination


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
