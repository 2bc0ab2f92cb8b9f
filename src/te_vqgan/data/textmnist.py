"""TextMNIST: text-augmented colored MNIST with a compositional split, as a `datasets` builder.

Each image is a 64x64 RGB canvas with one digit at the centre or one to four digits in
distinct quadrants (`layout.render_canvas`), each tinted white, red, green or blue, with
several captions from the grammar in `captions.py`. Some (location, colour, digit)
combinations never appear in training (`splits.HELD_OUT_COMBINATIONS`); the `test` split
holds only those. The paper's authors published pre-rendered tarballs only; this is the
first generator.

Splits: `train` (300,000), `validation` (3,000), `test` (3,000, held-out combinations only),
`test_seen` (3,000, seen combinations, unseen MNIST items) and `shift` (100 groups of five:
one MNIST digit at the centre and in each quadrant, for the equivariance metric).

Every example is drawn from its own generator seeded with `(seed, split id, index)`, so the
data depend on the config only: not on sharding, `num_proc` or the order of generation.

Example::

    >>> from te_vqgan.data import TextMNIST
    >>> builder = TextMNIST(config_name="mnist", num_train=2000, data_dir="../shared/data/mnist",
    ...                     cache_dir="/tmp/textmnist")
    >>> builder.download_and_prepare(num_proc=2)
    >>> test = builder.as_dataset(split="test")
    >>> test[0]["captions"][0], test[0]["image"].size
    ('on the bottom right is the white 7.', (64, 64))

`te-vqgan build-dataset` writes the same data as Parquet with a dataset card; read that folder
back with `datasets.load_dataset(folder)` (docs/DATASET.md, "Loading a built folder").
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
from collections.abc import Iterator
from pathlib import Path

import datasets
import numpy as np

from . import captions as captions_module
from . import layout as layout_module
from . import splits as splits_module
from .captions import get_grammar
from .layout import COLOURS, LOCATIONS, render_canvas
from .mnist import MNIST_VARIANTS, read_idx, read_mnist_split, resolve_mnist_files
from .splits import (
    HELD_OUT_COMBINATIONS,
    SOURCE_POOLS,
    SPLIT_IDS,
    SPLITS,
    combination_table,
    sample_objects,
    validate_held_out,
)


logger = logging.getLogger(__name__)

__all__ = ["CITATION", "LICENSES", "TextMNIST", "TextMNISTConfig", "source_pools_by_label"]

CITATION = """\
@inproceedings{shin2023translation,
  title     = {Exploration into Translation-Equivariant Image Quantization},
  author    = {Shin, Woncheol and Lee, Gyubok and Lee, Jiyoung and Lyu, Eunyi and Lee, Joonseok and Choi, Edward},
  booktitle = {ICASSP 2023 - IEEE International Conference on Acoustics, Speech and Signal Processing},
  year      = {2023},
  note      = {arXiv:2112.00384}
}
"""

LICENSES = {
    # As stated by the sources: MNIST (Yann LeCun and Corinna Cortes) under CC BY-SA 3.0, as
    # the TensorFlow docs of `tf.keras.datasets.mnist` put it; Fashion-MNIST under MIT (the
    # LICENSE of zalandoresearch/fashion-mnist). The generated images are derived works of the
    # digits and inherit their licence (docs/DATASET.md, "Licences").
    "mnist": "cc-by-sa-3.0",
    "fashion_mnist": "mit",
}

# Each split's examples are cut into this many index ranges (fewer for tiny splits), the
# unit `num_proc` distributes. The content never depends on it.
_NUM_SOURCE_SHARDS = 64


def _is_count(value) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool) and value >= 0


@dataclasses.dataclass
class TextMNISTConfig(datasets.BuilderConfig):
    """Configuration of a TextMNIST build.

    Args:
        variant (`str`, defaults to `"mnist"`): the source digits, `"mnist"` or `"fashion_mnist"`.
        num_train (`int`, defaults to 300000): images in `train`.
        num_validation (`int`, defaults to 3000): images in `validation`.
        num_test (`int`, defaults to 3000): images in `test` (held-out combinations only).
        num_test_seen (`int`, *optional*): images in `test_seen`; defaults to `num_test`.
        num_shift_groups (`int`, defaults to 100): groups of five images in `shift`.
        captions_per_image (`int`, defaults to 5): caption variants per image.
        seed (`int`, defaults to 0): with the split and the index, seeds every example.
        held_out (`tuple`, defaults to `HELD_OUT_COMBINATIONS`): `(location, colour, digit)`
            combinations kept out of `train`, `validation` and `test_seen`. Every quadrant
            needs one for `test` to hold two to four digits per image.
        shift_colour (`str`, defaults to `"white"`): the colour of the `shift` digits.
        data_dir (`str`, *optional*): folder holding the four MNIST `.gz` files (else the
            `TE_VQGAN_MNIST_DIR` / `TE_VQGAN_FASHION_MNIST_DIR` variable, else a download).

    A split of size 0 is not generated. Sizes of 0 are allowed; negative sizes are not.
    """

    variant: str = "mnist"
    num_train: int = 300_000
    num_validation: int = 3_000
    num_test: int = 3_000
    num_test_seen: int | None = None
    num_shift_groups: int = 100
    captions_per_image: int = 5
    seed: int = 0
    held_out: tuple = HELD_OUT_COMBINATIONS
    shift_colour: str = "white"

    def __post_init__(self):
        super().__post_init__()
        if self.variant not in MNIST_VARIANTS:
            raise ValueError(f"Unknown `variant` {self.variant!r}; expected one of {sorted(MNIST_VARIANTS)}.")
        if self.name in MNIST_VARIANTS and self.name != self.variant:
            raise ValueError(
                f"The config named {self.name!r} builds from {self.name!r} digits (got `variant`={self.variant!r})."
            )
        for field in ("num_train", "num_validation", "num_test", "num_shift_groups", "seed"):
            value = getattr(self, field)
            if not _is_count(value):
                raise ValueError(f"`{field}` must be a non-negative integer (got {value!r}).")
        if self.num_test_seen is not None and not _is_count(self.num_test_seen):
            raise ValueError(f"`num_test_seen` must be a non-negative integer or None (got {self.num_test_seen!r}).")
        if not any(self.split_sizes.values()):
            raise ValueError(
                "Every split size is 0 (num_train, num_validation, num_test, num_test_seen, num_shift_groups): "
                "nothing to build; give at least one split a size."
            )
        if not _is_count(self.captions_per_image) or self.captions_per_image < 1:
            raise ValueError(f"`captions_per_image` must be a positive integer (got {self.captions_per_image!r}).")
        if self.shift_colour not in COLOURS:
            raise ValueError(f"Unknown `shift_colour` {self.shift_colour!r}; expected one of {COLOURS}.")
        self.held_out = validate_held_out(self.held_out, num_classes=len(MNIST_VARIANTS[self.variant].class_names))

        seen = combination_table(self.held_out, held_out_only=False)
        full = [location for location, pairs in seen.items() if not pairs]
        if full:
            raise ValueError(f"`held_out` leaves no combination to draw at {full}: every location needs a seen one.")
        unseen = combination_table(self.held_out, held_out_only=True)
        missing = [q for q in layout_module.QUADRANTS if not unseen[q]]
        if self.num_test > 0 and missing:
            raise ValueError(
                f"`held_out` has no combination at {missing}, so the `test` split cannot hold 2-4 digits per "
                f"image in distinct quadrants; add one per quadrant or set `num_test=0`."
            )

    @property
    def split_sizes(self) -> dict[str, int]:
        """Examples per split (`shift` counts images: five per group)."""
        return {
            "train": self.num_train,
            "validation": self.num_validation,
            "test": self.num_test,
            "test_seen": self.num_test if self.num_test_seen is None else self.num_test_seen,
            "shift": 5 * self.num_shift_groups,
        }


def _source_hash() -> str:
    """A hash of the code that decides the data, so a code change gets a new cache folder."""
    digest = hashlib.sha256()
    for module in (layout_module, captions_module, splits_module):
        digest.update(Path(module.__file__).read_bytes())
    digest.update(Path(__file__).read_bytes())
    return digest.hexdigest()[:16]


def source_pools_by_label(labels: np.ndarray, split: str, num_classes: int = 10) -> list[np.ndarray]:
    """The MNIST item indices a split may draw, one array per class label.

    Args:
        labels (`np.ndarray` uint8 `[N]`): the labels of the MNIST file of `SOURCE_POOLS[split]`.
        split (`str`): a TextMNIST split name.

    Returns:
        `list[np.ndarray]`: for each label, the sorted absolute indices in `[start, stop)`.
    """
    pool = SOURCE_POOLS[split]
    if len(labels) < pool.stop:
        raise ValueError(
            f"Split {split!r} draws MNIST items [{pool.start}, {pool.stop}) but the file has {len(labels)}."
        )
    window = labels[pool.start : pool.stop]
    by_label = [np.flatnonzero(window == label) + pool.start for label in range(num_classes)]
    empty = [label for label, items in enumerate(by_label) if len(items) == 0]
    if empty:
        raise ValueError(f"Split {split!r}: no MNIST item with label(s) {empty} in [{pool.start}, {pool.stop}).")
    return by_label


def _shift_sources(by_label: list[np.ndarray], seed: int, num_groups: int) -> np.ndarray:
    """The MNIST item of each `shift` group: group g shows label g % 10, items never repeat."""
    rng = np.random.default_rng([seed, SPLIT_IDS["shift"]])
    shuffled = [rng.permutation(items) for items in by_label]
    num_classes = len(by_label)
    capacity = num_classes * min(len(items) for items in by_label)
    if num_groups > capacity:
        raise ValueError(
            f"`num_shift_groups`={num_groups} needs more distinct MNIST items than the `shift` pool holds "
            f"(at most {capacity} groups)."
        )
    return np.array([shuffled[g % num_classes][g // num_classes] for g in range(num_groups)], dtype=np.int64)


class TextMNIST(datasets.GeneratorBasedBuilder):
    """Text-augmented colored MNIST (configs `mnist` and `fashion_mnist`).

    Keyword arguments other than the `DatasetBuilder` ones override `TextMNISTConfig`
    fields: `TextMNIST(config_name="mnist", num_train=2000, data_dir=..., cache_dir=...)`.
    """

    VERSION = datasets.Version("1.0.0")
    BUILDER_CONFIG_CLASS = TextMNISTConfig
    BUILDER_CONFIGS = [
        TextMNISTConfig(
            name="mnist",
            variant="mnist",
            version=VERSION,
            description="MNIST digits, 300K/3K/3K, with the compositional test split.",
        ),
        TextMNISTConfig(
            name="fashion_mnist",
            variant="fashion_mnist",
            version=VERSION,
            description="Fashion-MNIST items in the same layout, captions name the classes.",
        ),
    ]
    DEFAULT_CONFIG_NAME = "mnist"
    # Examples are small (~1 KB of PNG): bigger Arrow batches write faster.
    DEFAULT_WRITER_BATCH_SIZE = 1000

    def __init__(self, *args, hash: str | None = None, **kwargs):
        super().__init__(*args, hash=hash or _source_hash(), **kwargs)

    def _create_builder_config(self, config_name=None, custom_features=None, config_id=None, **config_kwargs):
        config, config_id = super()._create_builder_config(
            config_name=config_name, custom_features=custom_features, config_id=config_id, **config_kwargs
        )
        # `datasets` applies keyword overrides to a named config with setattr, which skips
        # `__post_init__`; rebuilding the dataclass validates the final values.
        return dataclasses.replace(config), config_id

    def _info(self) -> datasets.DatasetInfo:
        class_names = list(MNIST_VARIANTS[self.config.variant].class_names)
        features = datasets.Features(
            {
                "image": datasets.Image(),
                "captions": datasets.List(datasets.Value("string")),
                "objects": datasets.List(
                    {
                        "location": datasets.ClassLabel(names=list(LOCATIONS)),
                        "colour": datasets.ClassLabel(names=list(COLOURS)),
                        "digit": datasets.ClassLabel(names=class_names),
                        # Index into the MNIST file the split draws from (train or t10k).
                        "source_index": datasets.Value("int32"),
                    }
                ),
                "num_digits": datasets.Value("int8"),
                # `shift` only: images with the same id show the same MNIST item; -1 elsewhere.
                "shift_group": datasets.Value("int32"),
            }
        )
        return datasets.DatasetInfo(
            description=__doc__.split("\n\n")[0],
            features=features,
            homepage="https://arxiv.org/abs/2112.00384",
            citation=CITATION,
            license=LICENSES[self.config.variant],
        )

    def _split_generators(self, dl_manager: datasets.DownloadManager) -> list[datasets.SplitGenerator]:
        variant = self.config.variant
        # `dl_manager.download` needs aiohttp for http(s) URLs (not a dependency of
        # `datasets` 5) and tries a single URL; the project's downloader tries every
        # official mirror, verifies the checksum and writes atomically. The files go to the
        # download manager's cache folder.
        cache = Path(dl_manager.download_config.cache_dir or self._cache_downloaded_dir) / "te_vqgan" / variant
        files = resolve_mnist_files(variant, data_dir=self.config.data_dir, cache_dir=cache)
        spec = MNIST_VARIANTS[variant]
        num_classes = len(spec.class_names)

        if self.config.num_shift_groups:
            # Fail before any image is written if the pool is too small.
            labels = read_idx(files[spec.file_name(SOURCE_POOLS["shift"].mnist_split, "labels")])
            _shift_sources(
                source_pools_by_label(labels, "shift", num_classes), self.config.seed, self.config.num_shift_groups
            )

        generators = []
        for split in SPLITS:
            size = self.config.split_sizes[split]
            if size == 0:
                continue
            bounds = np.linspace(0, size, min(size, _NUM_SOURCE_SHARDS) + 1).astype(int)
            generators.append(
                datasets.SplitGenerator(
                    name=split,
                    gen_kwargs={
                        "split": split,
                        # A list, so that `num_proc` workers each take a run of ranges.
                        "ranges": [(int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:])],
                        "files": {name: str(path) for name, path in files.items()},
                    },
                )
            )
        return generators

    def _generate_examples(self, split: str, ranges: list[tuple[int, int]], files: dict[str, str]) -> Iterator:
        config = self.config
        variant = config.variant
        grammar = get_grammar(variant)
        num_classes = len(MNIST_VARIANTS[variant].class_names)
        # One MNIST file per process (47 MB for train); examples are yielded one at a time.
        images, labels = read_mnist_split(files, SOURCE_POOLS[split].mnist_split, variant)
        by_label = source_pools_by_label(labels, split, num_classes)
        split_id = SPLIT_IDS[split]

        if split == "shift":
            sources = _shift_sources(by_label, config.seed, config.num_shift_groups)
        else:
            table = combination_table(config.held_out, held_out_only=split == "test", num_classes=num_classes)

        for start, stop in ranges:
            for index in range(start, stop):
                rng = np.random.default_rng([config.seed, split_id, index])
                if split == "shift":
                    group, location = divmod(index, len(LOCATIONS))
                    source = int(sources[group])
                    objects = [(LOCATIONS[location], config.shift_colour, int(labels[source]))]
                    object_sources = [source]
                    shift_group = group
                else:
                    objects = sample_objects(rng, 1 + index % 4, table)
                    object_sources = [
                        int(by_label[digit][rng.integers(len(by_label[digit]))]) for _, _, digit in objects
                    ]
                    shift_group = -1
                yield (
                    index,
                    {
                        "image": render_canvas(
                            (loc, colour, images[src]) for (loc, colour, _), src in zip(objects, object_sources)
                        ),
                        "captions": grammar.generate(objects, rng, config.captions_per_image),
                        "objects": [
                            {"location": loc, "colour": colour, "digit": digit, "source_index": src}
                            for (loc, colour, digit), src in zip(objects, object_sources)
                        ],
                        "num_digits": len(objects),
                        "shift_group": shift_group,
                    },
                )
