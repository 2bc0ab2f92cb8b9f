"""Pre-tokenised TextMNIST: every image encoded once by a frozen quantizer, for stage 2.

Stage-2 training reads code-index maps, never images, so the quantizer runs once per image
here instead of once per image per epoch. The folder `tokenize_dataset` writes::

    OUTPUT/
      quantizer.json        the quantizer's fingerprint, codebook size, token grid and source
      dataset_dict.json     a `datasets.DatasetDict.save_to_disk` folder: per split the
      train/ validation/ ...   columns of the source (captions, objects, num_digits ...) without
                               `image`, plus `indices` (int16 [H, W] code indices)

The fingerprint is a SHA-256 of the quantizer's config and weights: training with another
quantizer (or another version of the same one) refuses the cache (`check_fingerprint`).

    >>> from te_vqgan.data.tokenized import load_tokenized_dataset
    >>> dataset, info = load_tokenized_dataset("textmnist-tokens", vqmodel=quantizer)
    >>> dataset["train"][0]["indices"]   # 16 x 16 nested list of code indices
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from ..files import check_output_dir, install_folder, write_json_atomic
from ..images import images_to_tensor
from ..models.stock_vq_model import as_tokenizer


logger = logging.getLogger(__name__)

__all__ = [
    "QuantizerInfo",
    "TOKENIZED_INFO_FILE",
    "check_fingerprint",
    "load_source_dataset",
    "load_tokenized_dataset",
    "quantizer_fingerprint",
    "tokenize_dataset",
]

TOKENIZED_INFO_FILE = "quantizer.json"
DEFAULT_SPLITS = ("train", "validation", "test", "test_seen")


@dataclass(frozen=True)
class QuantizerInfo:
    """What a tokenised dataset records about the quantizer that made it."""

    fingerprint: str  # SHA-256 of the config and the weights (`quantizer_fingerprint`)
    num_codes: int  # K
    image_grid: tuple[int, int]  # (H, W) tokens per image
    source: str  # where the quantizer was loaded from (a folder or a Hub id), for people
    class_name: str


def quantizer_fingerprint(model) -> str:
    """SHA-256 of a quantizer's config (without private keys such as `_name_or_path`) and of
    every weight, in name order. Equal fingerprints mean the same tokens for the same images."""
    from ..models.te_vq_model import stock_block_type

    digest = hashlib.sha256()
    config = {k: v for k, v in dict(model.config).items() if not k.startswith("_")}
    # Block types as diffusers names them: the "TEVQModel." prefix only marks a folder a stock
    # VQModel must refuse (the network is fixed by padding_mode and the other keys), and folders
    # saved before it existed must keep their fingerprint.
    for key in ("down_block_types", "up_block_types"):
        if key in config:
            config[key] = [stock_block_type(name) for name in config[key]]
    digest.update(json.dumps(config, sort_keys=True, default=str).encode())
    state = model.state_dict()
    for name in sorted(state):
        tensor = state[name].detach().to("cpu", torch.float32).contiguous()
        digest.update(name.encode())
        digest.update(str(tuple(tensor.shape)).encode())
        digest.update(tensor.numpy().tobytes())
    return digest.hexdigest()


def check_fingerprint(info: QuantizerInfo, model, where: str | os.PathLike) -> None:
    """ValueError unless `model` is the quantizer that tokenised the dataset at `where`."""
    actual = quantizer_fingerprint(model)
    if actual != info.fingerprint:
        raise ValueError(
            f"The tokenised dataset {str(where)!r} was made by the quantizer {info.source!r} (fingerprint "
            f"{info.fingerprint[:12]}, K={info.num_codes}), but the quantizer given has fingerprint {actual[:12]} "
            f"(K={model.config.num_vq_embeddings}). Its tokens would mean other codes: re-run "
            "`te-vqgan tokenize-dataset` with this quantizer, or pass the quantizer that made the cache."
        )


def builds_textmnist(spec: str) -> bool:
    """Whether `load_source_dataset(spec)` builds TextMNIST (`"textmnist"`, `"textmnist:fashion_mnist"`)
    rather than reading a folder or a Hub dataset; only then do builder options apply. A folder
    named `textmnist` is read, not built."""
    return spec.split(":")[0] == "textmnist" and not Path(spec).is_dir()


def load_evaluation_splits(
    spec: str,
    *,
    num_train: int = 0,
    num_test: int = 3_000,
    seed: int = 0,
    mnist_dir=None,
    cache_dir: str | None = None,
):
    """`load_source_dataset(spec)` for judging: a TextMNIST `spec` is built with `num_train` train
    images and `num_test` images each of `test` and `test_seen` (no validation, no shift split)."""
    options = None
    if builds_textmnist(spec):
        options = dict(
            num_train=num_train,
            num_validation=0,
            num_test=num_test,
            num_test_seen=num_test,
            num_shift_groups=0,
            seed=seed,
            data_dir=mnist_dir,
        )
    return load_source_dataset(spec, builder_options=options, cache_dir=cache_dir)


def load_source_dataset(spec: str, *, builder_options: dict | None = None, cache_dir: str | None = None):
    """The image dataset to tokenise, as a `datasets.DatasetDict`.

    Args:
        spec (`str`): one of
            - `"textmnist"` or `"textmnist:fashion_mnist"`: built here by `te_vqgan.data.TextMNIST`
              with `builder_options` (sizes, seed, `data_dir`);
            - a folder written by `te-vqgan build-dataset` (`data/{split}-*.parquet`);
            - a folder written by `DatasetDict.save_to_disk`;
            - a Hub dataset id.
        builder_options (`dict`, *optional*): `TextMNIST` config overrides.
        cache_dir (`str`, *optional*): the `datasets` cache.
    """
    import datasets

    if builds_textmnist(spec):
        from .textmnist import TextMNIST

        config_name = spec.split(":", 1)[1] if ":" in spec else "mnist"
        builder = TextMNIST(config_name=config_name, cache_dir=cache_dir, **(builder_options or {}))
        builder.download_and_prepare()
        return datasets.DatasetDict({name: builder.as_dataset(split=name) for name in builder.info.splits})
    if builder_options:
        raise ValueError(f"Dataset size and seed options apply to the TextMNIST builder only, not to {spec!r}.")
    path = Path(spec)
    if (path / "dataset_dict.json").is_file():
        return datasets.load_from_disk(str(path))
    if (path / "data").is_dir():
        # Explicit patterns per split: the default ones would read `test_seen-*` into `test`.
        splits = sorted({p.name.split("-", 1)[0] for p in (path / "data").glob("*.parquet")})
        if not splits:
            raise ValueError(f"{str(path / 'data')!r} holds no Parquet shards (expected data/{{split}}-*.parquet).")
        files = {split: str(path / "data" / f"{split}-*.parquet") for split in splits}
        return datasets.load_dataset("parquet", data_files=files, cache_dir=cache_dir)
    if path.exists():
        raise ValueError(
            f"Dataset {spec!r} is neither a `te-vqgan build-dataset` folder (data/*.parquet) nor a save_to_disk folder."
        )
    if spec.count("/") != 1:
        raise ValueError(
            f"Dataset {spec!r} does not exist: expected 'textmnist', 'textmnist:fashion_mnist', a folder or a Hub id (org/name)."
        )
    return datasets.load_dataset(spec, cache_dir=cache_dir)


def _encode_batch(model, batch: dict, device: torch.device, dtype: torch.dtype) -> dict:
    pixels = np.stack([np.asarray(image.convert("RGB"), dtype=np.uint8) for image in batch["image"]])
    with torch.no_grad():
        indices = model.encode_to_indices(images_to_tensor(pixels).to(device, dtype))
    return {"indices": indices.to(torch.int16).cpu().numpy()}


def tokenize_dataset(
    model,
    dataset,
    output_dir: str | os.PathLike,
    *,
    source: str,
    splits: tuple[str, ...] | None = None,
    batch_size: int = 256,
    overwrite: bool = False,
):
    """Encode the `image` column of each split with `model` and save the result.

    Args:
        model: a `TEVQModel` or stock `diffusers.VQModel` (in eval mode, on its device).
        dataset (`datasets.DatasetDict`): splits with an `image` column (64x64 RGB for TextMNIST).
        output_dir: the folder to write (absent or empty, unless `overwrite`).
        source (`str`): where the quantizer came from, recorded in `quantizer.json`.
        splits (`tuple[str]`, *optional*): which splits (default: those of train, validation,
            test, test_seen that exist).
        batch_size (`int`, *optional*, defaults to 256): images per forward.

    Returns:
        `(DatasetDict, QuantizerInfo)`. The folder is written next to `output_dir` and renamed
        into place once complete.
    """
    import datasets

    if batch_size < 1:
        raise ValueError(f"`batch_size` must be >= 1 (got {batch_size}).")
    output_dir = Path(output_dir)
    check_output_dir(output_dir, overwrite)
    names = tuple(splits) if splits else tuple(s for s in DEFAULT_SPLITS if s in dataset)
    missing = [s for s in names if s not in dataset]
    if missing or not names:
        raise ValueError(f"Splits {missing or list(names)} are not in the dataset (it has {sorted(dataset)}).")
    for name in names:
        if "image" not in dataset[name].column_names:
            raise ValueError(f"Split {name!r} has no `image` column (columns: {dataset[name].column_names}).")

    quantizer = as_tokenizer(model)
    parameter = next(quantizer.parameters())
    device, dtype = parameter.device, parameter.dtype
    fingerprint = quantizer_fingerprint(model)
    probe = _encode_batch(quantizer, dataset[names[0]][:1], device, dtype)["indices"]
    grid = tuple(int(n) for n in probe.shape[1:])
    info = QuantizerInfo(fingerprint, quantizer.num_codes, grid, source, type(model).__name__)
    if quantizer.num_codes > np.iinfo(np.int16).max:
        raise ValueError(f"A codebook of {quantizer.num_codes} codes does not fit the int16 index column.")

    tokenised = {}
    for name in names:
        split = dataset[name]
        features = split.features.copy()
        del features["image"]
        features["indices"] = datasets.Array2D(shape=grid, dtype="int16")
        tokenised[name] = split.map(
            lambda batch: _encode_batch(quantizer, batch, device, dtype),
            batched=True,
            batch_size=batch_size,
            remove_columns=["image"],
            features=features,
            # The quantizer is part of the result: the cache key is its fingerprint, not a hash of the function.
            new_fingerprint=hashlib.sha256(f"{split._fingerprint}-{fingerprint}-{batch_size}".encode()).hexdigest()[
                :16
            ],
            desc=f"tokenizing {name}",
        )
    result = datasets.DatasetDict(tokenised)

    staging = output_dir.with_name(f".{output_dir.name}.tmp")
    shutil.rmtree(staging, ignore_errors=True)
    result.save_to_disk(str(staging))
    write_json_atomic(
        staging / TOKENIZED_INFO_FILE, {**asdict(info), "splits": {n: len(s) for n, s in result.items()}}
    )
    install_folder(staging, output_dir)
    return datasets.load_from_disk(str(output_dir)), info


def load_tokenized_dataset(path: str | os.PathLike, vqmodel=None):
    """`(DatasetDict, QuantizerInfo)` of a folder written by `tokenize_dataset`; with
    `vqmodel`, a ValueError unless it is the quantizer that made it."""
    import datasets

    path = Path(path)
    info_file = path / TOKENIZED_INFO_FILE
    if not info_file.is_file():
        raise ValueError(
            f"{str(path)!r} is not a tokenised dataset (no {TOKENIZED_INFO_FILE}); make one with `te-vqgan tokenize-dataset`."
        )
    record = json.loads(info_file.read_text())
    try:
        info = QuantizerInfo(
            record["fingerprint"],
            int(record["num_codes"]),
            tuple(record["image_grid"]),
            record["source"],
            record["class_name"],
        )
    except KeyError as error:
        raise ValueError(f"{str(info_file)!r} lacks the field {error.args[0]!r}.") from error
    if vqmodel is not None:
        check_fingerprint(info, vqmodel, path)
    return datasets.load_from_disk(str(path)), info
