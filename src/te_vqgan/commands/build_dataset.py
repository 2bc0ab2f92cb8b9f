"""`te-vqgan build-dataset`: build TextMNIST and write it as Parquet with a dataset card.

    te-vqgan build-dataset --dataset-config mnist --output-dir textmnist --mnist-dir ../shared/data/mnist
    te-vqgan build-dataset --dataset-config mnist --output-dir textmnist-100k --num-train 100000
    te-vqgan build-dataset --dataset-config fashion_mnist --output-dir textfashion --push-to-hub --hub-model-id org/textfashion

The output folder holds `data/{split}-0000i-of-0000n.parquet`, a `README.md` dataset card and
`contact_sheet.png`. Load the folder itself, which reads the split patterns in the card's
YAML `configs` and gives the five splits (train, validation, test, test_seen, shift):

    datasets.load_dataset("OUTPUT")            # once pushed: datasets.load_dataset("org/name")

With the generic Parquet loader, name every split's files (leave out a split built with size
0: it has none):

    datasets.load_dataset("parquet", data_files={split: f"OUTPUT/data/{split}-*.parquet" for split in
                          ["train", "validation", "test", "test_seen", "shift"]})

`load_dataset("parquet", data_dir="OUTPUT/data")` is not enough: its default file patterns put
test_seen into test and drop shift.

The Arrow cache of the build stays in `--cache-dir` (default: the `datasets` cache), so a
second run with the same options only re-exports.
"""

from __future__ import annotations

import os
import shlex
import time
from pathlib import Path

from ..options import (
    add_deprecated_alias,
    add_hub_push_options,
    add_output_dir_option,
    resolve_hub_push,
    usable_cpu_cores,
)
from . import add_command


# Options that change the data: quoted in the dataset card's reproduce command.
_CONFIG_OPTIONS = (
    ("num_train", "--num-train"),
    ("num_validation", "--num-validation"),
    ("num_test", "--num-test"),
    ("num_test_seen", "--num-test-seen"),
    ("num_shift_groups", "--num-shift-groups"),
    ("captions_per_image", "--captions-per-image"),
    ("seed", "--seed"),
)


def register(subparsers) -> None:
    parser = add_command(
        subparsers,
        "build-dataset",
        help="Build TextMNIST (text-augmented colored MNIST) and write Parquet shards, a dataset card and a contact sheet.",
        description=__doc__,
    )
    parser.add_argument(
        "--dataset-config",
        dest="config",
        default="mnist",
        choices=["mnist", "fashion_mnist"],
        help="Source digits (default mnist).",
    )
    add_deprecated_alias(parser, "--config", "--dataset-config", "config", choices=["mnist", "fashion_mnist"])
    add_output_dir_option(
        parser,
        help="Folder to create (must be absent or empty unless --overwrite).",
        overwrite="Replace an existing --output folder.",
    )
    parser.add_argument("--num-train", type=int, default=None, help="Train images (default 300000).")
    parser.add_argument("--num-validation", type=int, default=None, help="Validation images (default 3000).")
    parser.add_argument(
        "--num-test", type=int, default=None, help="Test images, held-out combinations only (default 3000)."
    )
    parser.add_argument("--num-test-seen", type=int, default=None, help="test_seen images (default: --num-test).")
    parser.add_argument(
        "--num-shift-groups", type=int, default=None, help="Groups of five in the shift split (default 100)."
    )
    parser.add_argument("--captions-per-image", type=int, default=None, help="Caption variants per image (default 5).")
    parser.add_argument("--seed", type=int, default=None, help="Dataset seed (default 0).")
    parser.add_argument(
        "--mnist-dir",
        dest="data_dir",
        default=None,
        help="Folder with the four IDX .gz files (default: $TE_VQGAN_MNIST_DIR / $TE_VQGAN_FASHION_MNIST_DIR, "
        "else download the official files). Always SHA-256-checked.",
    )
    add_deprecated_alias(parser, "--data-dir", "--mnist-dir", "data_dir")
    parser.add_argument(
        "--cache-dir", default=None, help="datasets cache for the Arrow build (default: the datasets cache)."
    )
    parser.add_argument(
        "--num-proc",
        type=int,
        default=None,
        help="Worker processes (default: all CPUs); the data do not depend on it.",
    )
    parser.add_argument("--max-shard-size", default="500MB", help="Parquet shard size (default 500MB).")
    add_hub_push_options(parser, repo_type="dataset")
    parser.set_defaults(func=run)


def reproduce_command(config: str, output, options: dict) -> str:
    """The `te-vqgan build-dataset` line that rebuilds the same data (no local paths)."""
    parts = [
        "te-vqgan",
        "build-dataset",
        "--dataset-config",
        config,
        "--output-dir",
        os.path.basename(os.path.normpath(str(output))),
    ]
    for field, flag in _CONFIG_OPTIONS:
        if options.get(field) is not None:
            parts += [flag, str(options[field])]
    return shlex.join(parts)


def build_dataset(
    output,
    config: str = "mnist",
    *,
    mnist_dir=None,
    cache_dir=None,
    num_proc: int | None = None,
    max_shard_size: str = "500MB",
    overwrite: bool = False,
    **options,
):
    """Build TextMNIST `config` with the builder `options` (`num_train`, `num_validation`, `num_test`,
    `num_test_seen`, `num_shift_groups`, `captions_per_image`, `seed`) and export it to `output`
    (Parquet shards, a dataset card, a contact sheet). Returns `(output, builder, build seconds)`."""
    from ..data.export import export_textmnist
    from ..data.textmnist import TextMNIST
    from ..files import check_output_dir

    unknown = sorted(set(options) - {field for field, _ in _CONFIG_OPTIONS})
    if unknown:
        raise ValueError(f"Unknown TextMNIST option(s) {unknown}; expected {[field for field, _ in _CONFIG_OPTIONS]}.")
    num_proc = num_proc if num_proc is not None else usable_cpu_cores()
    if num_proc < 1:
        raise ValueError(f"--num-proc must be at least 1 (got {num_proc}).")
    options = {k: v for k, v in options.items() if v is not None}
    builder = TextMNIST(config_name=config, cache_dir=cache_dir, data_dir=mnist_dir, **options)
    # Refuse an occupied output folder before spending minutes on the build.
    check_output_dir(Path(output), overwrite)
    start = time.perf_counter()
    builder.download_and_prepare(num_proc=num_proc if num_proc > 1 else None)
    built = time.perf_counter() - start
    output = export_textmnist(
        builder,
        output,
        command=reproduce_command(config, output, options),
        max_shard_size=max_shard_size,
        overwrite=overwrite,
    )
    return output, builder, built


def run(args) -> int:
    import datasets

    from ..hub import push_folder_to_hub

    repo_id = resolve_hub_push(args)  # before any work
    options = {field: getattr(args, field) for field, _ in _CONFIG_OPTIONS}
    output, builder, built = build_dataset(
        args.output,
        args.config,
        mnist_dir=args.data_dir,
        cache_dir=args.cache_dir,
        num_proc=args.num_proc,
        max_shard_size=args.max_shard_size,
        overwrite=args.overwrite,
        **options,
    )
    splits: datasets.SplitDict = builder.info.splits
    print(f"TextMNIST {args.config}: built in {built:.1f} s -> {output}")
    for name, info in splits.items():
        shards = sorted((output / "data").glob(f"{name}-*.parquet"))
        print(f"  {name:<10} {info.num_examples:>8,} images  {len(shards)} Parquet shard(s)")
    print(f"  {output / 'README.md'}\n  {output / 'contact_sheet.png'}")
    if repo_id:
        url = push_folder_to_hub(
            output,
            repo_id,
            repo_type="dataset",
            private=args.hub_private_repo or None,
            commit_message="Upload TextMNIST",
            ignore_patterns=None,
        )
        print(f"Pushed to {url}")
    return 0
