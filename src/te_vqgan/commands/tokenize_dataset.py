"""`te-vqgan tokenize-dataset`: encode every image of a TextMNIST once with a frozen quantizer.

    te-vqgan tokenize-dataset --vqmodel outputs/te-small --dataset textmnist --mnist-dir ../shared/data/mnist \
        --num-train 2000 --output-dir textmnist-tokens
    te-vqgan tokenize-dataset --vqmodel org/te-vqgan-mnist --dataset textmnist-built --output-dir textmnist-tokens

`--dataset` is `textmnist` / `textmnist:fashion_mnist` (built here, sizes from the options),
a folder written by `te-vqgan build-dataset`, a `save_to_disk` folder or a Hub dataset id.
The output is a `datasets` folder with the index maps as an `indices` column next to the
captions and labels, and `quantizer.json` with the quantizer's fingerprint: stage-2 training
(`training/train_generator.py --tokenized_dataset OUTPUT`) refuses it with another quantizer.
"""

from __future__ import annotations

from pathlib import Path

from ..options import add_output_dir_option
from . import add_command


_BUILDER_OPTIONS = ("num_train", "num_validation", "num_test", "num_test_seen", "seed")


def register(subparsers) -> None:
    parser = add_command(
        subparsers,
        "tokenize-dataset",
        help="Encode a TextMNIST's images once with a frozen quantizer (index maps for stage-2 training).",
        description=__doc__,
    )
    parser.add_argument(
        "--vqmodel", required=True, help="A trained quantizer: a save_pretrained folder or a Hub repo id."
    )
    parser.add_argument(
        "--dataset",
        default="textmnist",
        help="textmnist[:fashion_mnist], a build-dataset folder, a save_to_disk folder or a Hub id.",
    )
    add_output_dir_option(
        parser,
        help="Folder to create (must be absent or empty unless --overwrite).",
        overwrite="Replace an existing --output folder.",
    )
    parser.add_argument(
        "--splits", default=None, help="Comma-separated splits (default: train,validation,test,test_seen present)."
    )
    parser.add_argument("--batch-size", type=int, default=256, help="Images per forward (default 256).")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available).")
    parser.add_argument(
        "--mnist-dir",
        default=None,
        help="TextMNIST builder: folder of the MNIST .gz files (default: $TE_VQGAN_MNIST_DIR, else download).",
    )
    for option in _BUILDER_OPTIONS:
        parser.add_argument(f"--{option.replace('_', '-')}", type=int, default=None, help="TextMNIST builder option.")
    parser.add_argument("--cache-dir", default=None, help="datasets cache folder.")
    parser.set_defaults(func=run)


def tokenize_dataset_folder(
    vqmodel: str,
    dataset: str,
    output,
    *,
    splits=None,
    batch_size: int = 256,
    device=None,
    mnist_dir=None,
    cache_dir=None,
    overwrite: bool = False,
    **builder_options,
):
    """Encode `dataset`'s images once with the frozen quantizer `vqmodel` into the folder `output`
    (what stage 2 trains on). Returns `(tokenised splits, TokenizedInfo, a line describing the quantizer)`;
    bad input and an occupied `output` (unless `overwrite`) are refused before any model or data is loaded."""
    from ..data.tokenized import builds_textmnist, load_source_dataset, tokenize_dataset
    from ..files import check_not_an_input, check_output_dir
    from ..loading import load_vq_model

    if batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1 (got {batch_size}).")
    if Path(vqmodel).is_file():
        raise ValueError(
            f"--vqmodel {vqmodel!r} is a file; tokenising needs a trained quantizer (a save_pretrained folder or a Hub id)."
        )
    unknown = sorted(set(builder_options) - set(_BUILDER_OPTIONS))
    if unknown:
        raise ValueError(f"Unknown TextMNIST option(s) {unknown}; expected {list(_BUILDER_OPTIONS)}.")
    output = Path(output)
    check_not_an_input(output, vqmodel=vqmodel, dataset=dataset, mnist_dir=mnist_dir)
    check_output_dir(output, overwrite)  # before loading models and data
    model, description = load_vq_model(vqmodel, device=device, output_loading_info=True)
    options = {name: value for name, value in builder_options.items() if value is not None}
    if builds_textmnist(dataset):
        options["data_dir"] = mnist_dir
    data = load_source_dataset(dataset, builder_options=options, cache_dir=cache_dir)
    # What stage 2 reads beside the codes: refused here, not when training starts on the tokens.
    for name, split in data.items():
        missing = [column for column in ("image", "captions", "objects") if column not in split.column_names]
        if missing:
            raise ValueError(
                f"--dataset {dataset!r} split {name!r} has no {missing} column(s) (columns: {split.column_names}): "
                "stage 2 trains on TextMNIST (`te-vqgan build-dataset`, or `textmnist` built here)."
            )
    tokenised, info = tokenize_dataset(
        model, data, output, source=vqmodel, splits=splits, batch_size=batch_size, overwrite=overwrite
    )
    return tokenised, info, description


def run(args) -> int:
    splits = tuple(s.strip() for s in args.splits.split(",") if s.strip()) if args.splits else None
    output = Path(args.output)
    tokenised, info, description = tokenize_dataset_folder(
        args.vqmodel,
        args.dataset,
        output,
        splits=splits,
        batch_size=args.batch_size,
        device=args.device,
        mnist_dir=args.mnist_dir,
        cache_dir=args.cache_dir,
        overwrite=args.overwrite,
        **{name: getattr(args, name) for name in _BUILDER_OPTIONS},
    )
    print(
        f"{description}: K={info.num_codes}, {info.image_grid[0]}x{info.image_grid[1]} tokens, fingerprint {info.fingerprint[:12]}"
    )
    for name, split in tokenised.items():
        print(f"  {name:<10} {len(split):>8,} images")
    print(f"-> {output}")
    return 0
