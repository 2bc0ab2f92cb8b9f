import os
from pathlib import Path

import pytest


REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"


def _data_dir(env_var: str, sub: str) -> Path:
    path = Path(os.environ.get(env_var) or SHARED_DATA / sub)
    if not path.is_dir():
        raise RuntimeError(
            f"{sub} files not found at {path}: set {env_var} to the folder holding the IDX .gz files "
            f"(CI uses ../shared/data/{sub})."
        )
    return path


@pytest.fixture(scope="session")
def mnist_dir() -> Path:
    return _data_dir("TE_VQGAN_MNIST_DIR", "mnist")


@pytest.fixture(scope="session")
def fashion_mnist_dir() -> Path:
    return _data_dir("TE_VQGAN_FASHION_MNIST_DIR", "fashion_mnist")


@pytest.fixture(scope="session")
def mnist_test_digits(mnist_dir):
    from te_vqgan.data.mnist import load_mnist

    return load_mnist("test", data_dir=mnist_dir)
