import os
import sys
from pathlib import Path

import pytest


REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"


def _data_dir(env_var: str, sub: str) -> Path:
    path = Path(os.environ.get(env_var) or SHARED_DATA / sub).resolve()  # tests may change the working folder
    if not path.is_dir():
        raise RuntimeError(
            f"{sub} files not found at {path}: set {env_var} to the folder holding the IDX .gz files "
            f"(CI uses ../shared/data/{sub})."
        )
    return path


@pytest.fixture(autouse=True)
def fresh_accelerate_state():
    """Every test starts with no Accelerate state left by an earlier one."""
    yield
    if "accelerate.state" in sys.modules:  # nothing to forget otherwise
        from train_helpers import reset_accelerate_state

        reset_accelerate_state()


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


@pytest.fixture(scope="session")
def stage2_assets(tmp_path_factory, mnist_dir):
    """A tiny saved quantizer and a TextMNIST tokenised by it (seconds to build, shared by the
    stage-2 tests): `(vqmodel_dir, tokenized_dir, datasets_cache)`."""
    import torch
    from tiny_configs import TINY_MODEL_CONFIG

    from te_vqgan import TEVQModel
    from te_vqgan.data.tokenized import load_source_dataset, tokenize_dataset

    root = tmp_path_factory.mktemp("stage2")
    config = {k: v for k, v in TINY_MODEL_CONFIG.items() if not k.startswith("_")}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        vqmodel = TEVQModel(**config).eval()
    vqmodel.save_pretrained(root / "vqmodel")
    cache = root / "datasets-cache"
    source = load_source_dataset(
        "textmnist",
        cache_dir=str(cache),
        builder_options=dict(
            num_train=96, num_validation=24, num_test=24, num_shift_groups=0, data_dir=str(mnist_dir)
        ),
    )
    tokenize_dataset(vqmodel, source, root / "tokens", source=str(root / "vqmodel"), batch_size=32)
    return root / "vqmodel", root / "tokens", cache
