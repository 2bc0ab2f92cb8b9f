"""The MNIST IDX reader: local files, checksums, and real downloads from a local HTTP server."""

import dataclasses
import functools
import gzip
import http.server
import shutil
import threading
from pathlib import Path

import numpy as np
import pytest

from te_vqgan.data.mnist import (
    MNIST_VARIANTS,
    ChecksumError,
    download_file,
    load_mnist,
    read_idx,
    read_mnist_split,
    resolve_mnist_files,
    sha256_file,
)


MNIST = MNIST_VARIANTS["mnist"]
LABELS = "train-labels-idx1-ubyte.gz"


def corrupt_copy(source: Path, destination: Path) -> Path:
    """Copy `source` and flip one byte in the middle."""
    data = bytearray(source.read_bytes())
    data[len(data) // 2] ^= 0xFF
    destination.write_bytes(bytes(data))
    return destination


class _Handler(http.server.SimpleHTTPRequestHandler):
    requests: list[str] = []

    def do_GET(self):
        type(self).requests.append(self.path)
        super().do_GET()

    def log_message(self, *args):  # keep pytest output clean
        pass


@pytest.fixture(scope="module")
def mirror(tmp_path_factory, mnist_dir):
    """An HTTP server on 127.0.0.1: `/good/` serves the real MNIST files, `/bad/` a corrupt train-labels."""
    root = tmp_path_factory.mktemp("mirror")
    (root / "good").mkdir()
    (root / "bad").mkdir()
    for name in MNIST.sha256:
        shutil.copy(mnist_dir / name, root / "good" / name)
        shutil.copy(mnist_dir / name, root / "bad" / name)
    corrupt_copy(mnist_dir / LABELS, root / "bad" / LABELS)
    handler = functools.partial(_Handler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture
def mirrors_at(monkeypatch):
    """Point the `mnist` variant at other mirrors and make sure nothing is read from a local folder."""
    monkeypatch.delenv(MNIST.env_var, raising=False)

    def set_mirrors(*urls):
        monkeypatch.setitem(MNIST_VARIANTS, "mnist", dataclasses.replace(MNIST, mirrors=tuple(urls)))

    return set_mirrors


def test_load_mnist_and_fashion(mnist_test_digits, fashion_mnist_dir):
    images, labels = mnist_test_digits
    assert images.shape == (10000, 28, 28) and images.dtype == np.uint8
    assert labels[:3].tolist() == [7, 2, 1]
    assert images.max() == 255 and images.min() == 0
    f_images, f_labels = load_mnist("train", variant="fashion_mnist", data_dir=fashion_mnist_dir)
    assert f_images.shape == (60000, 28, 28)
    assert sorted(np.unique(f_labels).tolist()) == list(range(10))
    assert len(MNIST_VARIANTS["fashion_mnist"].class_names) == 10


def test_read_mnist_split_matches_load_mnist(mnist_dir, mnist_test_digits):
    files = resolve_mnist_files("mnist", data_dir=mnist_dir)
    images, labels = read_mnist_split(files, "test", "mnist")
    np.testing.assert_array_equal(images, mnist_test_digits[0])
    np.testing.assert_array_equal(labels, mnist_test_digits[1])


def test_corrupt_local_file_names_file_and_both_checksums(tmp_path, mnist_dir):
    for name in MNIST.sha256:
        shutil.copy(mnist_dir / name, tmp_path / name)
    corrupt_copy(mnist_dir / LABELS, tmp_path / LABELS)
    actual = sha256_file(tmp_path / LABELS)
    with pytest.raises(ChecksumError) as error:
        load_mnist("train", data_dir=tmp_path)
    message = str(error.value)
    assert str(tmp_path / LABELS) in message
    assert MNIST.sha256[LABELS] in message and actual in message


def test_missing_local_file(tmp_path, mnist_dir):
    shutil.copy(mnist_dir / LABELS, tmp_path / LABELS)
    with pytest.raises(FileNotFoundError, match="train-images-idx3-ubyte.gz"):
        load_mnist("train", data_dir=tmp_path)


def test_read_idx_rejects_a_bad_header(tmp_path):
    path = tmp_path / "bad-idx1-ubyte.gz"
    with gzip.open(path, "wb") as f:
        f.write(b"\x00\x00\x0d\x01" + (3).to_bytes(4, "big") + b"\x00\x00\x00")
    with pytest.raises(ValueError, match="0000 08 0N"):
        read_idx(path)


def test_download_is_checksummed_and_cached(tmp_path, mirror, mirrors_at):
    mirrors_at(f"{mirror}/missing/", f"{mirror}/good/")  # the first mirror 404s: the next one is tried
    cache = tmp_path / "cache"
    files = resolve_mnist_files("mnist", cache_dir=cache)
    assert sorted(p.name for p in cache.iterdir()) == sorted(MNIST.sha256)
    for name, path in files.items():
        assert sha256_file(path) == MNIST.sha256[name]
    served = len(_Handler.requests)
    resolve_mnist_files("mnist", cache_dir=cache)  # verified from the cache, no new request
    assert len(_Handler.requests) == served


def test_corrupt_download_leaves_nothing(tmp_path, mirror):
    with pytest.raises(ChecksumError) as error:
        download_file(f"{mirror}/bad/{LABELS}", tmp_path / LABELS, MNIST.sha256[LABELS])
    assert LABELS in str(error.value) and MNIST.sha256[LABELS] in str(error.value)
    assert list(tmp_path.iterdir()) == []  # neither the file nor a .part


def test_corrupt_cached_file_is_downloaded_again(tmp_path, mirror, mirrors_at, mnist_dir):
    mirrors_at(f"{mirror}/good/")
    corrupt_copy(mnist_dir / LABELS, tmp_path / LABELS)
    files = resolve_mnist_files("mnist", cache_dir=tmp_path)
    assert sha256_file(files[LABELS]) == MNIST.sha256[LABELS]


def test_unreachable_mirrors_name_every_url(tmp_path, mirror, mirrors_at):
    mirrors_at(f"{mirror}/missing/", f"{mirror}/also-missing/")
    with pytest.raises(OSError, match="also-missing") as error:
        resolve_mnist_files("mnist", cache_dir=tmp_path)
    assert "/missing/" in str(error.value)
    assert [p for p in tmp_path.iterdir() if p.is_file()] == []


def test_textmnist_downloads_into_the_builder_cache(tmp_path, mirror, mirrors_at):
    from te_vqgan.data import TextMNIST

    mirrors_at(f"{mirror}/good/")
    builder = TextMNIST(
        config_name="mnist",
        num_train=8,
        num_validation=0,
        num_test=4,
        num_test_seen=0,
        num_shift_groups=0,
        cache_dir=str(tmp_path),
    )
    builder.download_and_prepare()
    assert len(builder.as_dataset(split="train")) == 8
    downloaded = tmp_path / "downloads" / "te_vqgan" / "mnist"
    assert sorted(p.name for p in downloaded.iterdir()) == sorted(MNIST.sha256)


def test_textmnist_corrupt_download_leaves_nothing(tmp_path, mirror, mirrors_at):
    from te_vqgan.data import TextMNIST

    mirrors_at(f"{mirror}/bad/")
    builder = TextMNIST(config_name="mnist", num_train=8, num_validation=0, num_test=0, cache_dir=str(tmp_path))
    with pytest.raises(ChecksumError, match=MNIST.sha256[LABELS]):
        builder.download_and_prepare()
    downloaded = tmp_path / "downloads" / "te_vqgan" / "mnist"
    assert LABELS not in [p.name for p in downloaded.iterdir()]
    assert not any(p.name.endswith(".part") for p in downloaded.iterdir())
    # and no half-written dataset
    assert not list(tmp_path.glob("textmnist/**/*.arrow"))
