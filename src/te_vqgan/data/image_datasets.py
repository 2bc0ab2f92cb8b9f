"""Any image dataset, for training a tokenizer and measuring it: one loader and one image preparation.

`load_image_dataset(spec)` reads what `training/train_vqgan.py --dataset` and
`te-vqgan equivariance --images` accept:

- a plain folder of image files (`imagefolder`, diffusers' `--train_data_dir`);
- a folder written by `Dataset.save_to_disk` / `DatasetDict.save_to_disk`;
- a folder of Parquet or Arrow files (as the Hub lays a dataset out) or a Hub dataset id (`datasets.load_dataset`);
- `"mnist"` or `"fashion_mnist"`: the IDX files read by `te_vqgan.data.mnist` (offline from a folder,
  or downloaded from the official mirrors with their checksums checked), as the Hub's datasets of
  those names lay them out: splits `train` and `test`, columns `image` (28x28, mode L) and `label`.

`prepare_image` is the one resize / crop / flip, as diffusers' training examples do it.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from .mnist import MNIST_VARIANTS, load_mnist


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".gif", ".tif", ".tiff")
DATA_FILE_SUFFIXES = (".parquet", ".arrow")
MNIST_CLASS_NAMES = {
    "mnist": [str(d) for d in range(10)],
    "fashion_mnist": [
        "T - shirt / top",
        "Trouser",
        "Pullover",
        "Dress",
        "Coat",
        "Sandal",
        "Shirt",
        "Sneaker",
        "Bag",
        "Ankle boot",
    ],  # the Hub dataset's label names
}


def mnist_image_dataset(
    variant: str = "mnist", data_dir: str | os.PathLike | None = None, cache_dir: str | os.PathLike | None = None
):
    """MNIST or Fashion-MNIST as a `datasets.DatasetDict` (`train`, `test`; `image`, `label`), read from the
    checksum-verified IDX files (`te_vqgan.data.mnist.load_mnist`: `data_dir`, else the variant's
    environment variable, else a download into `cache_dir`)."""
    import datasets

    if variant not in MNIST_VARIANTS:
        raise ValueError(f"Unknown MNIST variant {variant!r}; expected one of {sorted(MNIST_VARIANTS)}.")
    features = datasets.Features(
        {"image": datasets.Image(), "label": datasets.ClassLabel(names=MNIST_CLASS_NAMES[variant])}
    )
    splits = {}
    for split in ("train", "test"):
        images, labels = load_mnist(split, variant=variant, data_dir=data_dir, cache_dir=cache_dir)
        splits[split] = datasets.Dataset.from_dict(
            {"image": list(images), "label": labels.astype(np.int64)}, features=features, split=split
        )
    return datasets.DatasetDict(splits)


def load_image_dataset(
    spec: str, *, cache_dir: str | None = None, mnist_dir: str | None = None, option: str = "--dataset"
) -> dict:
    """The splits (`{name: datasets.Dataset}`) of a folder of images, a `save_to_disk` folder, a folder of
    data files, a Hub dataset id, or `"mnist"` / `"fashion_mnist"` (see the module's docstring).
    `option` names the flag in error messages."""
    import datasets

    path = Path(spec)
    if path.is_dir():
        if (path / "dataset_dict.json").is_file() or (path / "state.json").is_file():
            loaded = datasets.load_from_disk(str(path))
            return dict(loaded) if isinstance(loaded, datasets.DatasetDict) else {"train": loaded}
        suffixes = {p.suffix.lower() for p in path.rglob("*")}
        if suffixes & set(DATA_FILE_SUFFIXES):  # Parquet / Arrow shards, as the Hub lays a dataset out
            return dict(datasets.load_dataset(str(path), cache_dir=cache_dir))
        if not suffixes & set(IMAGE_SUFFIXES):
            raise ValueError(
                f"{option} {spec!r} is a folder without image files ({', '.join(IMAGE_SUFFIXES)}) "
                "or dataset files (.parquet, .arrow)."
            )
        return dict(datasets.load_dataset("imagefolder", data_dir=str(path), cache_dir=cache_dir))
    elif path.exists():
        raise ValueError(f"{option} {spec!r} is a file; expected a folder of images, a dataset folder or a Hub id.")
    elif spec in MNIST_VARIANTS:
        return dict(mnist_image_dataset(spec, data_dir=mnist_dir))
    return dict(datasets.load_dataset(spec, cache_dir=cache_dir))


def prepare_image(image, resolution: int, *, random_crop: bool = False, random_flip: bool = False) -> np.ndarray:
    """A PIL image -> uint8 `[R, R, 3]`: converted to RGB (L, RGBA, P ...), resized on its shorter side to
    `resolution` (bicubic) when it is not that already, cropped square (the centre, or at random with
    `random_crop`) and flipped left-right at random with `random_flip`. The random draws come from
    torch's global RNG (the training engine seeds it per batch)."""
    from PIL import Image

    image = image.convert("RGB")
    r = resolution
    if min(image.size) != r:
        scale = r / min(image.size)
        image = image.resize((max(r, round(image.width * scale)), max(r, round(image.height * scale))), Image.BICUBIC)
    if image.size != (r, r):
        if random_crop:
            left = int(torch.randint(0, image.width - r + 1, ()).item())
            top = int(torch.randint(0, image.height - r + 1, ()).item())
        else:
            left, top = (image.width - r) // 2, (image.height - r) // 2
        image = image.crop((left, top, left + r, top + r))
    array = np.asarray(image, dtype=np.uint8)
    if random_flip and torch.rand(()).item() < 0.5:
        array = array[:, ::-1]
    return np.ascontiguousarray(array)
