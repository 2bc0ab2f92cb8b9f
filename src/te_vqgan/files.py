"""Writing files and folders so that an interrupted run never leaves one half-written.

One mechanism for every output of the package:

- `atomic_path(path)`: a temporary file beside `path` to write, moved into place only when
  the block ends without an error (else removed), with the permissions of a normally created
  file (`0o666 & ~umask`, not the `0o600` of a temporary file);
- `write_json_atomic(path, payload)`: JSON through `atomic_path`;
- `install_folder(staging, destination)`: a folder written completely beside its destination,
  then swapped into place (an existing destination is replaced only at that moment);
- `write_completion_marker(folder, names)` / `folder_is_complete(folder)`: for a folder filled
  file by file (a training run's final save), a marker written last that lists every file it
  vouches for with its size; the folder counts as complete only when they all agree;
- `folder_lock(folder)`: one run per folder, a lock file naming its owner (pid, host); a second
  run is refused with that name, a stale lock (its process gone) is taken over.
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


__all__ = [
    "COMPLETION_MARKER",
    "FINAL_STAGING",
    "FolderLockedError",
    "LOCK_FILE",
    "atomic_path",
    "check_not_an_input",
    "check_output_dir",
    "folder_is_complete",
    "folder_lock",
    "install_folder",
    "write_completion_marker",
    "write_json_atomic",
]

COMPLETION_MARKER = ".complete.json"
LOCK_FILE = ".lock"
FINAL_STAGING = ".final.tmp"  # where a training run's final folder is staged


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
    `overwrite`, and `PermissionError` if it cannot be written: checked before any work, so a
    long build never ends on an occupied or read-only folder."""
    output_dir = Path(output_dir)
    if output_dir.exists() and (not output_dir.is_dir() or any(output_dir.iterdir())) and not overwrite:
        raise FileExistsError(
            f"Output {str(output_dir)!r} is not empty: it exists and is not an empty folder; pass --overwrite "
            "(overwrite=True from Python) to replace it."
        )
    # Writable: the folder itself, or the nearest folder above it that exists (where it will be made).
    resolved = output_dir.resolve()
    existing = next(p for p in ((resolved,) if resolved.is_dir() else ()) + tuple(resolved.parents) if p.exists())
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        raise PermissionError(
            f"Output {str(output_dir)!r} cannot be written: {str(existing)!r} is not a writable folder."
        )


def check_not_an_input(output: str | os.PathLike, **inputs) -> None:
    """ValueError if the folder `output` is, holds or lies inside one of the local `inputs`
    (`name=path`; Hub ids and absent paths are skipped): an `--overwrite` there would destroy it."""
    target = Path(output).resolve()
    for name, value in inputs.items():
        if value is None or not Path(str(value)).exists():
            continue
        source = Path(str(value)).resolve()
        if target == source or source in target.parents or target in source.parents:
            raise ValueError(
                f"--output-dir {str(output)!r} would write over --{name.replace('_', '-')} {str(value)!r}; give another output folder."
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


def write_completion_marker(folder: str | os.PathLike, names) -> Path:
    """Write `folder/COMPLETION_MARKER` listing every file under the entries `names` of `folder`
    (files, or folders walked whole) with its size, giving each the normal file mode. Call it
    last, once they are all in place."""
    folder = Path(folder)
    files = {}
    mode = _default_file_mode()
    for name in names:
        path = folder / name
        for file in [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file()):
            os.chmod(file, mode)  # published with the normal modes (a library's temporary file may be 0600)
            files[file.relative_to(folder).as_posix()] = file.stat().st_size
    return write_json_atomic(folder / COMPLETION_MARKER, {"files": files})


def folder_is_complete(folder: str | os.PathLike) -> bool:
    """Whether `folder` holds a completion marker whose every listed file is there at its size."""
    marker = Path(folder) / COMPLETION_MARKER
    try:
        files = json.loads(marker.read_text())["files"]
    except (OSError, ValueError, KeyError, TypeError):
        return False
    if not isinstance(files, dict):
        return False
    for name, size in files.items():
        path = Path(folder) / name
        if not path.is_file() or path.stat().st_size != size:
            return False
    return True


class FolderLockedError(OSError):
    """Another live run holds the folder's lock."""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


@contextlib.contextmanager
def folder_lock(folder: str | os.PathLike, what: str = "a run") -> Iterator[Path]:
    """Hold `folder/LOCK_FILE` (created with O_EXCL: the pid, host and command of its owner) for
    the block. Held by a live process: `FolderLockedError` naming it. Held by a process of this
    host that is gone (a killed run): taken over. Released (removed) when the block ends."""
    import socket
    import sys
    import time

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    lock = folder / LOCK_FILE
    me = {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "command": " ".join(sys.argv),
        "started": time.time(),
        "what": what,
    }
    for _ in range(2):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            try:
                owner = json.loads(lock.read_text())
            except (OSError, ValueError):
                owner = {}
            pid, host = owner.get("pid"), owner.get("host")
            if host == me["host"] and isinstance(pid, int) and pid != me["pid"] and not _alive(pid):
                lock.unlink(missing_ok=True)  # stale: its process is gone
                continue
            if host == me["host"] and pid == me["pid"]:
                yield lock  # re-entered by the same process: the outer block owns it
                return
            raise FolderLockedError(
                f"{str(folder)!r} is in use by {owner.get('what', 'another run')} (pid {pid} on {host}: "
                f"{owner.get('command', '?')!r}); wait for it to end or stop it (a lock of a process that is gone is taken over)."
            ) from None
        with os.fdopen(fd, "w") as handle:
            json.dump(me, handle)
        break
    try:
        yield lock
    finally:
        with contextlib.suppress(OSError):
            if json.loads(lock.read_text()).get("pid") == me["pid"]:
                lock.unlink()


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
