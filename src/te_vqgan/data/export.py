"""Publish a built TextMNIST: Parquet shards, a dataset card and a contact sheet of samples.

The folder `export_textmnist` writes is what the Hub expects of a Parquet dataset, so after
`te_vqgan.hub.push_folder_to_hub` users load it with a plain `load_dataset("org/name")`::

    OUTPUT/
      README.md                               dataset card (YAML metadata + grammar, held-out table, licences)
      contact_sheet.png                       samples of each split with a caption
      data/train-00000-of-00002.parquet ...   one or more shards per split

Everything is written to a temporary folder beside `OUTPUT` and moved into place at the
end, so a failure leaves nothing half-written.
"""

from __future__ import annotations

import logging
import math
import os
import shutil
import tempfile
import textwrap
from pathlib import Path

import datasets
from datasets.info import DatasetInfosDict
from datasets.utils.py_utils import convert_file_size_to_int
from huggingface_hub import DatasetCard, DatasetCardData
from tqdm.auto import tqdm

from ..files import check_output_dir, install_folder
from .captions import get_grammar
from .layout import COLOURS, LOCATIONS
from .mnist import MNIST_VARIANTS
from .splits import SOURCE_POOLS, SPLITS
from .textmnist import CITATION, LICENSES, TextMNIST


logger = logging.getLogger(__name__)

__all__ = [
    "DATASET_CARD_TEMPLATE",
    "build_dataset_card",
    "export_textmnist",
    "save_contact_sheet",
    "write_parquet_shards",
]

# The package's model_cards/ (a link to the repository's model_cards/, a folder in a wheel).
DATASET_CARD_TEMPLATE = Path(__file__).parents[1] / "model_cards" / "textmnist_dataset_card.md"

_SPLIT_CONTENT = {
    "train": "seen combinations only",
    "validation": "seen combinations only, {source} items unused by `train`",
    "test": "held-out combinations only (the compositional test)",
    "test_seen": "seen combinations, {source} items unused by `train`",
    "shift": "groups of five: one item at the centre and in each quadrant, in {colour} (equivariance metric)",
}

_LICENCE_TEXT = """\
* **MNIST** (config `mnist`): Yann LeCun and Corinna Cortes hold the copyright of MNIST, a
  derivative work of NIST data, made available under the Creative Commons Attribution-Share
  Alike 3.0 licence (as stated in the TensorFlow documentation of `tf.keras.datasets.mnist`;
  some mirrors label it otherwise). Images made from MNIST digits are shared under the same
  licence, `cc-by-sa-3.0`.
* **Fashion-MNIST** (config `fashion_mnist`): MIT licence, Copyright (c) 2017 Zalando SE.
* The captions, the layout and the generator (te-vqgan) are MIT-licensed.

This card's `license` field gives the licence of the {source} items these images are made of."""


def _size_category(n: int) -> str:
    for limit, name in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M")):
        if n < limit:
            return name
    return "1M<n<10M"


def write_parquet_shards(
    dataset: datasets.Dataset, data_dir: str | os.PathLike, split: str, max_shard_size: int | str = "500MB"
) -> list[Path]:
    """Write `dataset` as `data_dir/{split}-0000i-of-0000n.parquet`, shards of at most ~`max_shard_size`.

    Shards are contiguous slices read from the memory-mapped Arrow cache, so memory stays
    bounded by one Parquet row group.
    """
    data_dir = Path(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    num_shards = max(1, math.ceil(dataset.data.nbytes / convert_file_size_to_int(max_shard_size)))
    paths = []
    for index in range(num_shards):
        path = data_dir / f"{split}-{index:05d}-of-{num_shards:05d}.parquet"
        dataset.shard(num_shards=num_shards, index=index, contiguous=True).to_parquet(str(path))
        paths.append(path)
    return paths


def save_contact_sheet(
    splits: dict[str, datasets.Dataset], path: str | os.PathLike, per_row: int = 5, wrap: int = 30
) -> Path:
    """A PNG grid: one row per split (its first `per_row` images), each with its first caption.

    The first images of a split hold 1, 2, 3, 4, 1 digits; the `shift` row is one group.
    """
    # The object-oriented API keeps pyplot's global state (and backend) out of it.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    rows = [(name, ds) for name, ds in splits.items() if len(ds)]
    if not rows:
        raise ValueError("A contact sheet needs at least one non-empty split (got none).")
    figure = Figure(figsize=(2.2 * per_row, 2.9 * len(rows)))
    FigureCanvasAgg(figure)
    axes = figure.subplots(len(rows), per_row, squeeze=False)
    for r, (name, ds) in enumerate(rows):
        for c in range(per_row):
            ax = axes[r][c]
            ax.set_xticks([])
            ax.set_yticks([])
            if c >= len(ds):
                ax.set_axis_off()
                continue
            example = ds[c]
            ax.imshow(example["image"], interpolation="nearest")
            ax.set_xlabel(textwrap.fill(example["captions"][0], wrap), fontsize=6.5)
            if c == 0:
                ax.set_ylabel(name, fontsize=10)
    figure.tight_layout()
    path = Path(path)
    figure.savefig(path, dpi=110)
    return path


def build_dataset_card(
    builder: TextMNIST,
    splits: dict[str, datasets.Dataset],
    command: str,
    contact_sheet: str = "contact_sheet.png",
    template_path: str | os.PathLike = DATASET_CARD_TEMPLATE,
) -> DatasetCard:
    """The README.md of an exported TextMNIST: YAML metadata (`DatasetCardData`, with the
    Parquet `configs` and the `dataset_info` features) and the grammar, held-out table and licences."""
    template_path = Path(template_path)
    if not template_path.is_file():
        raise FileNotFoundError(
            f"Dataset card template {str(template_path)!r} is missing; it ships in the package's model_cards/ folder."
        )
    config = builder.config
    variant = config.variant
    class_names = MNIST_VARIANTS[variant].class_names
    source_name = "MNIST" if variant == "mnist" else "Fashion-MNIST"
    item_kind = "digit" if variant == "mnist" else "item"
    total = sum(len(ds) for ds in splits.values())

    card_data = DatasetCardData(
        language=["en"],
        license=LICENSES[variant],
        pretty_name=f"TextMNIST ({config.name})",
        task_categories=["text-to-image", "image-to-text"],
        size_categories=[_size_category(total)],
        source_datasets=[f"extended|{variant}"],
        annotations_creators=["machine-generated"],
        language_creators=["machine-generated"],
        multilinguality=["monolingual"],
        tags=["mnist", "synthetic", "compositional-generalization", "te-vqgan"],
        configs=[
            {
                "config_name": config.name,
                "default": True,
                "data_files": [{"split": name, "path": f"data/{name}-*"} for name in splits],
            }
        ],
    )
    DatasetInfosDict({config.name: builder.info}).to_dataset_card_data(card_data)

    first = next(iter(splits.values()))
    return DatasetCard.from_template(
        card_data,
        template_path=str(template_path),
        pretty_name=f"TextMNIST ({config.name})",
        config_name=config.name,
        variant=variant,
        seed=config.seed,
        command=command,
        contact_sheet=contact_sheet,
        source_name=source_name,
        item_kind=item_kind,
        captions_per_image=config.captions_per_image,
        split_rows=[
            {
                "name": name,
                "size": f"{len(ds):,}",
                "content": _SPLIT_CONTENT[name].format(source=source_name, colour=config.shift_colour),
            }
            for name, ds in splits.items()
        ],
        pool_rows=[
            {
                "name": name,
                "file": "train" if SOURCE_POOLS[name].mnist_split == "train" else "t10k",
                "start": SOURCE_POOLS[name].start,
                "stop": SOURCE_POOLS[name].stop,
            }
            for name in splits
        ],
        held_out_rows=[
            {"location": t.location, "colour": t.colour, "item": class_names[t.digit]} for t in config.held_out
        ],
        locations=", ".join(f"`{n}`" for n in LOCATIONS),
        colours=", ".join(f"`{n}`" for n in COLOURS),
        class_names=", ".join(f"`{n}`" for n in class_names),
        grammar=get_grammar(variant).describe(),
        example_captions=first[0]["captions"][:3] + first[3]["captions"][:1]
        if len(first) > 3
        else first[0]["captions"],
        licence_text=_LICENCE_TEXT.format(source=source_name),
        citation=CITATION.strip(),
    )


def export_textmnist(
    builder: TextMNIST,
    output_dir: str | os.PathLike,
    command: str,
    max_shard_size: int | str = "500MB",
    overwrite: bool = False,
) -> Path:
    """Write Parquet shards, README.md and contact_sheet.png of a prepared builder, atomically.

    Args:
        builder (`TextMNIST`): after `download_and_prepare()`.
        output_dir (`str`): the folder to create (must be absent or empty unless `overwrite`).
        command (`str`): the command line that reproduces the build, quoted in the card.
        max_shard_size (`int` or `str`, defaults to `"500MB"`): Parquet shard size (Arrow bytes).
        overwrite (`bool`, defaults to `False`): replace an existing `output_dir`.
    """
    output_dir = Path(output_dir)
    check_output_dir(output_dir, overwrite)
    splits = {name: builder.as_dataset(split=name) for name in SPLITS if name in builder.info.splits}
    if not splits:
        raise ValueError("The builder has no split to export; call `download_and_prepare()` first.")

    output_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{output_dir.name}.", suffix=".partial", dir=output_dir.parent))
    try:
        for name, ds in tqdm(splits.items(), desc="Writing Parquet", unit="split"):
            write_parquet_shards(ds, staging / "data", name, max_shard_size=max_shard_size)
        save_contact_sheet(splits, staging / "contact_sheet.png")
        card = build_dataset_card(builder, splits, command=command)
        card.save(staging / "README.md")
        install_folder(staging, output_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    logger.info("Wrote %s", output_dir)
    return output_dir
