"""The project's one reader for the MNIST and Fashion-MNIST IDX files.

Files come from a local folder (an argument, or the ``TE_VQGAN_MNIST_DIR`` /
``TE_VQGAN_FASHION_MNIST_DIR`` variable) or are downloaded from the official locations.
Either way every file is SHA-256-checked before it is read; a missing or corrupt file is an
error that names the file with the expected and the actual checksum. Downloads are written
to a temporary name and moved into place only once their checksum matches, so nothing
half-written is ever left in the cache.

Example::

    >>> from te_vqgan.data.mnist import load_mnist
    >>> images, labels = load_mnist("test", data_dir="../shared/data/mnist")
    >>> images.shape, images.dtype, labels[:3]
    ((10000, 28, 28), dtype('uint8'), array([7, 2, 1], dtype=uint8))
"""

from __future__ import annotations

import gzip
import hashlib
import http.client
import logging
import os
import struct
import urllib.request
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from ..files import atomic_path


logger = logging.getLogger(__name__)

__all__ = [
    "ChecksumError",
    "MNIST_VARIANTS",
    "MnistVariant",
    "default_cache_dir",
    "download_file",
    "load_mnist",
    "read_idx",
    "read_mnist_split",
    "resolve_mnist_files",
    "sha256_file",
    "verify_file",
]


class ChecksumError(ValueError):
    """A data file's SHA-256 is not the published one."""


@dataclass(frozen=True)
class MnistVariant:
    """Where one MNIST-like dataset lives and what its files must hash to."""

    name: str
    env_var: str
    mirrors: tuple[str, ...]
    sha256: dict[str, str]
    class_names: tuple[str, ...]

    def file_name(self, split: str, kind: str) -> str:
        """`split` is `"train"` or `"test"`, `kind` is `"images"` or `"labels"`."""
        if split not in ("train", "test"):
            raise ValueError(f"`split` must be 'train' or 'test' (got {split!r}).")
        if kind not in ("images", "labels"):
            raise ValueError(f"`kind` must be 'images' or 'labels' (got {kind!r}).")
        prefix = "train" if split == "train" else "t10k"
        return f"{prefix}-{kind}-idx{3 if kind == 'images' else 1}-ubyte.gz"


# The official SHA-256 of the original gzip files (the checksums published for the official downloads; docs/INSTALL.md, "The MNIST files").
MNIST_VARIANTS: dict[str, MnistVariant] = {
    "mnist": MnistVariant(
        name="mnist",
        env_var="TE_VQGAN_MNIST_DIR",
        # yann.lecun.com is often unreachable; these two mirrors serve the identical files.
        mirrors=(
            "https://ossci-datasets.s3.amazonaws.com/mnist/",
            "https://storage.googleapis.com/cvdf-datasets/mnist/",
            "http://yann.lecun.com/exdb/mnist/",
        ),
        sha256={
            "train-images-idx3-ubyte.gz": "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
            "train-labels-idx1-ubyte.gz": "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
            "t10k-images-idx3-ubyte.gz": "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
            "t10k-labels-idx1-ubyte.gz": "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
        },
        class_names=tuple(str(d) for d in range(10)),
    ),
    "fashion_mnist": MnistVariant(
        name="fashion_mnist",
        env_var="TE_VQGAN_FASHION_MNIST_DIR",
        mirrors=(
            "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
            "https://storage.googleapis.com/tensorflow/tf-keras-datasets/",
        ),
        sha256={
            "train-images-idx3-ubyte.gz": "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84",
            "train-labels-idx1-ubyte.gz": "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845",
            "t10k-images-idx3-ubyte.gz": "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073",
            "t10k-labels-idx1-ubyte.gz": "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5",
        },
        class_names=(
            "t-shirt",
            "trouser",
            "pullover",
            "dress",
            "coat",
            "sandal",
            "shirt",
            "sneaker",
            "bag",
            "ankle boot",
        ),
    ),
}


def _variant(variant: str) -> MnistVariant:
    if variant not in MNIST_VARIANTS:
        raise ValueError(f"Unknown MNIST variant {variant!r}; expected one of {sorted(MNIST_VARIANTS)}.")
    return MNIST_VARIANTS[variant]


def default_cache_dir() -> Path:
    """`$TE_VQGAN_CACHE`, else `$XDG_CACHE_HOME/te_vqgan`, else `~/.cache/te_vqgan`."""
    if os.environ.get("TE_VQGAN_CACHE"):
        return Path(os.environ["TE_VQGAN_CACHE"])
    xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(xdg) / "te_vqgan"


def sha256_file(path: str | os.PathLike, chunk_size: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


def verify_file(path: str | os.PathLike, expected_sha256: str) -> Path:
    """Return `path` if its SHA-256 is `expected_sha256`; raise naming the file otherwise."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"MNIST file {str(path)!r} is missing (expected a file with SHA-256 {expected_sha256})."
        )
    actual = sha256_file(path)
    if actual != expected_sha256:
        raise ChecksumError(f"MNIST file {str(path)!r} is corrupt: expected SHA-256 {expected_sha256}, got {actual}.")
    return path


def download_file(urls: str | list[str] | tuple[str, ...], destination: str | os.PathLike, sha256: str) -> Path:
    """Download the first reachable URL to `destination`, atomically and checksum-verified.

    The bytes go to a temporary file beside `destination`, are hashed, and are moved into
    place only when the hash matches; on any failure the temporary file is removed and the
    next mirror is tried. When every mirror fails: a `ChecksumError` if one of them served
    corrupt bytes, else an `OSError`, listing what each mirror did.
    """
    destination = Path(destination)
    destination.parent.mkdir(parents=True, exist_ok=True)
    urls = [urls] if isinstance(urls, str) else list(urls)
    errors, corrupt = [], []
    for url in urls:
        try:
            with atomic_path(destination) as tmp:  # moved into place only if the hash matches
                digest = hashlib.sha256()
                with open(tmp, "wb") as out, urllib.request.urlopen(url, timeout=60) as response:
                    total = int(response.headers.get("Content-Length") or 0) or None
                    with tqdm(total=total, unit="B", unit_scale=True, desc=destination.name, leave=False) as bar:
                        while chunk := response.read(1 << 20):
                            out.write(chunk)
                            digest.update(chunk)
                            bar.update(len(chunk))
                actual = digest.hexdigest()
                if actual != sha256:
                    raise ChecksumError(f"{url}: expected SHA-256 {sha256}, got {actual}")
            return destination
        except ChecksumError as error:
            corrupt.append(str(error))
        except (OSError, http.client.HTTPException) as error:  # URLError, sockets, truncated bodies
            errors.append(f"{url}: {error!r}")
    if corrupt:
        raise ChecksumError(
            f"Downloaded MNIST file {destination.name!r} is corrupt: "
            + "; ".join(corrupt)
            + ("" if not errors else "; other mirrors failed: " + "; ".join(errors))
        )
    raise OSError(f"Could not download {destination.name!r} from any mirror:\n  " + "\n  ".join(errors))


def resolve_mnist_files(
    variant: str = "mnist",
    data_dir: str | os.PathLike | None = None,
    cache_dir: str | os.PathLike | None = None,
) -> dict[str, Path]:
    """Map each of the variant's four file names to a verified local path.

    Args:
        variant (`str`, *optional*, defaults to `"mnist"`): `"mnist"` or `"fashion_mnist"`.
        data_dir (`str`, *optional*): folder holding the four `.gz` files. Defaults to the
            variant's environment variable (`TE_VQGAN_MNIST_DIR`, `TE_VQGAN_FASHION_MNIST_DIR`).
            When neither is set the files are downloaded.
        cache_dir (`str`, *optional*): where downloads go (default: `default_cache_dir()/variant`).
    """
    spec = _variant(variant)
    data_dir = data_dir if data_dir is not None else os.environ.get(spec.env_var)
    paths: dict[str, Path] = {}
    if data_dir is not None:
        for name, sha in spec.sha256.items():
            paths[name] = verify_file(Path(data_dir) / name, sha)
        return paths

    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir() / spec.name
    for name, sha in spec.sha256.items():
        target = cache / name
        if target.is_file():
            try:
                paths[name] = verify_file(target, sha)
                continue
            except ChecksumError:
                logger.warning("Cached %s is corrupt; downloading it again.", target)
                target.unlink()
        logger.info("Downloading %s to %s", name, cache)
        paths[name] = download_file([m + name for m in spec.mirrors], target, sha)
    return paths


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Parse an IDX file (gzip-compressed or raw) into a numpy array of unsigned bytes."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
    except (EOFError, zlib.error, gzip.BadGzipFile) as error:  # truncated or not gzip at all
        raise ValueError(
            f"IDX file {str(path)!r} cannot be read ({type(error).__name__}: {error}); expected a complete "
            "gzip-compressed IDX file (delete it to download it again)."
        ) from error
    if len(data) < 4:
        raise ValueError(f"IDX file {str(path)!r} is too short ({len(data)} bytes).")
    zero, dtype_code, ndim = struct.unpack(">HBB", data[:4])
    if zero != 0 or dtype_code != 0x08:
        raise ValueError(
            f"IDX file {str(path)!r} has magic {data[:4].hex()}; expected unsigned-byte data (0000 08 0N)."
        )
    shape = struct.unpack(f">{ndim}I", data[4 : 4 + 4 * ndim])
    body = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if body.size != int(np.prod(shape)):
        raise ValueError(f"IDX file {str(path)!r}: header says shape {shape} but holds {body.size} values.")
    return body.reshape(shape)


def load_mnist(
    split: str = "train",
    variant: str = "mnist",
    data_dir: str | os.PathLike | None = None,
    cache_dir: str | os.PathLike | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Return `(images uint8 [N, 28, 28], labels uint8 [N])` of one split, checksum-verified.

    `split` is `"train"` (60,000) or `"test"` (10,000). See `resolve_mnist_files` for the rest.
    """
    files = resolve_mnist_files(variant, data_dir=data_dir, cache_dir=cache_dir)
    return read_mnist_split(files, split, variant)


def read_mnist_split(
    files: dict[str, str | os.PathLike], split: str = "train", variant: str = "mnist"
) -> tuple[np.ndarray, np.ndarray]:
    """Read `(images uint8 [N, 28, 28], labels uint8 [N])` of one split from already resolved files.

    `files` is what `resolve_mnist_files` returns; a dataset builder resolves (and verifies)
    the files once, then each worker process reads them with this.
    """
    spec = _variant(variant)
    images = read_idx(files[spec.file_name(split, "images")])
    labels = read_idx(files[spec.file_name(split, "labels")])
    if images.ndim != 3 or images.shape[1:] != (28, 28) or labels.shape != images.shape[:1]:
        raise ValueError(
            f"{variant} {split}: expected images [N, 28, 28] and labels [N] (got {images.shape} and {labels.shape})."
        )
    return images, labels
