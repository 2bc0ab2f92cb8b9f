"""`te-vqgan equivariance`: the shift-equivariance score and codebook usage of a quantizer.

    te-vqgan equivariance --model hub_configs/te-vqgan-mnist.json --mnist-dir ../shared/data/mnist
    te-vqgan equivariance --model outputs/te-vqgan-mnist        # a save_pretrained folder
    te-vqgan equivariance --vqmodel org/te-vqgan-mnist          # a Hub repo
    te-vqgan equivariance --vqmodel MODEL --images my_photos/   # any images (no TextMNIST placements)
    te-vqgan equivariance --vqmodel MODEL --images fashion_mnist --mnist-dir ../shared/data/fashion_mnist
    te-vqgan equivariance --vqmodel MODEL --images uoft-cs/cifar10 --image-column img   # a Hub dataset

With `--images` (a folder of image files, a datasets folder, a Hub dataset id, or mnist /
fashion_mnist), each image (resized on its shorter side to the model's size and centre-cropped)
is tokenised as two crops a whole number of tokens apart, and the score is the fraction of
tokens whose index moves with the shift (`te_vqgan.metrics.image_shift_equivariance`: no border
is filled in, both crops are real content), per shift and overall.
"""

from __future__ import annotations

import numpy as np

from ..options import add_deprecated_alias
from . import add_command


def register(subparsers) -> None:
    parser = add_command(
        subparsers,
        "equivariance",
        help="Shift-equivariance score and codebook usage of a quantizer, with a PNG of its token maps.",
        description=__doc__,
    )
    parser.add_argument(
        "--vqmodel",
        dest="model",
        default=None,
        help="A model config .json, a save_pretrained folder or a Hub repo id.",
    )
    add_deprecated_alias(parser, "--model", "--vqmodel", "model", required=True)
    parser.add_argument(
        "--mnist-dir",
        default=None,
        help="Folder with the MNIST IDX .gz files (default: $TE_VQGAN_MNIST_DIR, else download the official files).",
    )
    parser.add_argument(
        "--num-digits", type=int, default=100, help="MNIST test digits to shift, 10 per class (default 100)."
    )
    parser.add_argument(
        "--colour",
        default="all",
        choices=["all", "white", "red", "green", "blue"],
        help="Stroke colour of the shifted digits (default all four, side by side; the authors' metric uses white).",
    )
    parser.add_argument(
        "--output", default="equivariance.png", help="Where the PNG figure goes (default equivariance.png)."
    )
    parser.add_argument(
        "--figure-digits",
        type=int,
        default=2,
        help="Digits shown per colour in the figure (default 2); with --images, the images shown.",
    )
    parser.add_argument("--json", default=None, help="Also write the figures as JSON to this file.")
    parser.add_argument("--seed", type=int, default=0, help="Seed of a randomly initialised model (default 0).")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available).")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument(
        "--images",
        default=None,
        help="Measure equivariance by token shifts on these images instead of on MNIST digits: a folder of image "
        "files, a datasets folder, a Hub dataset id, or mnist / fashion_mnist (read from --mnist-dir).",
    )
    parser.add_argument(
        "--split", default=None, help="With --images: the split (default: validation, else test, else train)."
    )
    parser.add_argument("--image-column", default="image", help="With --images: the image column (default image).")
    parser.add_argument("--max-images", type=int, default=256, help="With --images: at most this many (default 256).")
    parser.set_defaults(func=run)


def _dataset_images(args, size: int) -> tuple[np.ndarray, str]:
    """The first `--max-images` images of `--images` (`te_vqgan.data.image_datasets.load_image_dataset`: a folder
    of image files, a dataset folder, a Hub id, mnist / fashion_mnist), resized on the shorter side to the
    model's size and centre-cropped; and the split they came from."""
    from ..data.image_datasets import load_image_dataset, prepare_image

    splits = load_image_dataset(args.images, mnist_dir=args.mnist_dir, option="--images")
    split = args.split or next((name for name in ("validation", "test", "train") if name in splits), None)
    if split is None or split not in splits:
        raise ValueError(f"--images {args.images!r} has no split {split!r} (splits: {sorted(splits)}); pass --split.")
    dataset = splits[split]
    if args.image_column not in dataset.column_names:
        raise ValueError(
            f"--images {args.images!r}: split {split!r} has no {args.image_column!r} column "
            f"(columns: {dataset.column_names}); pass --image-column."
        )
    chosen = dataset.select(range(min(args.max_images, len(dataset))))
    if len(chosen) == 0:
        raise ValueError(f"--images {args.images!r}: split {split!r} holds no images.")
    return np.stack([prepare_image(image, size) for image in chosen[args.image_column]]), split


def run_images(args) -> int:
    from ..files import write_json_atomic
    from ..loading import load_vq_model
    from ..metrics import DEFAULT_TOKEN_SHIFTS, image_shift_equivariance, image_shift_token_maps, token_shifts_that_fit
    from ..visualization import save_image_shift_figure

    for name in ("max_images", "figure_digits", "batch_size"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 1 (got {getattr(args, name)}).")
    model, description = load_vq_model(args.model, seed=args.seed, device=args.device, output_loading_info=True)
    size = model.config.sample_size if isinstance(model.config.sample_size, int) else model.config.sample_size[0]
    images, split = _dataset_images(args, size)
    # The shifts the images' code maps hold (at f = 16 on 64-pixel images, the 1-token ones); none: the metric's error.
    shifts = token_shifts_that_fit(size, model.downsample_factor) or DEFAULT_TOKEN_SHIFTS
    result = image_shift_equivariance(model, images, shifts=shifts, batch_size=args.batch_size)
    print(description)
    print(
        f"shift equivariance on {len(images)} images of {args.images} ({split}): {result.score:.4f} "
        f"(tokens whose index moves with the shift; crops of {result.window} px, f = {result.downsample_factor})"
    )
    for shift, score in result.per_shift.items():
        print(f"  shift {shift} tokens: {score:.4f}")
    # Images spread over the split (a folder sorted by name often groups similar images).
    shown = images[
        np.unique(np.linspace(0, len(images) - 1, min(args.figure_digits, len(images))).round().astype(int))
    ]
    maps = image_shift_token_maps(model, shown, (1, 1), batch_size=args.batch_size)
    figure = save_image_shift_figure(
        shown,
        maps,
        model.config.num_vq_embeddings,
        args.output,
        title=f"{args.model}: {result.score:.3f} of tokens move with a whole-token shift ({args.images}, {split})",
    )
    print(f"figure: {figure}")
    if args.json:
        write_json_atomic(
            args.json,
            {
                "model": args.model,
                "description": description,
                "images": args.images,
                "split": split,
                "num_images": len(images),
                "image_shift_equivariance": result.score,
                "per_shift": result.per_shift,
                "window": result.window,
                "downsample_factor": result.downsample_factor,
            },
        )
        print(f"json: {args.json}")
    return 0


def select_digits(images: np.ndarray, labels: np.ndarray, num_digits: int) -> np.ndarray:
    """The first `num_digits` test digits taken class by class (0, 1, ..., 9, 0, 1, ...)."""
    if num_digits < 1:
        raise ValueError(f"--num-digits must be >= 1 (got {num_digits}).")
    per_class = [np.flatnonzero(labels == c) for c in range(10)]
    available = 10 * min(len(indices) for indices in per_class)
    if num_digits > available:
        raise ValueError(f"--num-digits {num_digits} is more than the {available} that 10 balanced classes provide.")
    order = [per_class[i % 10][i // 10] for i in range(num_digits)]
    return images[order]


def run(args) -> int:
    if args.images is not None:
        if args.batch_size < 1:
            raise ValueError(f"--batch-size must be >= 1 (got {args.batch_size}).")
        return run_images(args)
    digit_equivariance(
        args.model,
        args.output,
        num_digits=args.num_digits,
        colour=args.colour,
        figure_digits=args.figure_digits,
        batch_size=args.batch_size,
        mnist_dir=args.mnist_dir,
        device=args.device,
        seed=args.seed,
        json_path=args.json,
    )
    return 0


def digit_equivariance(
    model: str,
    output="equivariance.png",
    *,
    num_digits: int = 100,
    colour: str = "all",
    figure_digits: int = 2,
    batch_size: int = 64,
    mnist_dir=None,
    device=None,
    seed: int = 0,
    json_path=None,
    log=print,
) -> dict:
    """The shift-equivariance scores and codebook usage of the quantizer `model` (a config .json, a
    save_pretrained folder or a Hub id) on `num_digits` MNIST test digits in the five placements,
    the figure of its token maps at `output`, the figures as JSON at `json_path`; returns the report.
    `log` receives the lines the command prints."""
    for name, value in (("num_digits", num_digits), ("batch_size", batch_size), ("figure_digits", figure_digits)):
        if value < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 1 (got {value}).")
    import torch

    from ..data.layout import COLOURS, LOCATIONS, index_cell
    from ..data.mnist import load_mnist
    from ..files import write_json_atomic
    from ..loading import load_vq_model
    from ..metrics import (
        codebook_usage,
        equivariance_summary,
        recolour_groups,
        render_shift_group,
        shift_equivariance_by_colour,
    )
    from ..models.stock_vq_model import as_tokenizer
    from ..visualization import save_shift_equivariance_figure

    loaded, description = load_vq_model(model, seed=seed, device=device, output_loading_info=True)
    quantizer = as_tokenizer(loaded)
    images, labels = load_mnist("test", data_dir=mnist_dir)
    digits = select_digits(images, labels, num_digits)
    colours = COLOURS if colour == "all" else (colour,)

    groups = np.stack([render_shift_group(digit) for digit in digits])
    results = shift_equivariance_by_colour(quantizer, groups, colours=colours, batch_size=batch_size)
    summary = equivariance_summary(results)
    main = results["white"] if "white" in results else results[colours[0]]
    usage = codebook_usage(torch.cat([r.index_maps for r in results.values()]), quantizer.num_codes)

    log(description)
    log(
        f"shift equivariance: {main.score:.4f}  (the authors' metric, {colours[0] if 'white' not in results else 'white'} digits; "
        f"{len(digits)} digits x 10 placement pairs, f={main.downsample_factor})"
    )
    log(f"  on the digit's own tokens only: {main.foreground_score:.4f}")
    log(f"  {'colour':<8} {'authors':>8} {'digit tokens':>13}")
    for colour, result in results.items():
        log(f"  {colour:<8} {result.score:>8.4f} {result.foreground_score:>13.4f}")
    if len(results) > 1:
        log(
            f"  {'mean':<8} {summary['shift_equivariance_all_colours']:>8.4f} {summary['shift_equivariance_foreground_all_colours']:>13.4f}"
        )
    log("  per placement pair:")
    for pair, score in main.per_pair.items():
        log(f"    {pair:<26} {score:.4f}")
    log(
        f"codebook usage: {usage.codes_used} / {usage.num_codes} codes used, perplexity {usage.perplexity:.2f} "
        f"(over {usage.histogram.sum().item()} tokens of {len(digits) * 5 * len(results)} images)"
    )

    shown = min(figure_digits, len(digits))
    figure = save_shift_equivariance_figure(
        images=np.concatenate([recolour_groups(groups[:shown], colour) for colour in results]),
        index_maps=torch.cat([result.index_maps[:shown] for result in results.values()]),
        num_codes=quantizer.num_codes,
        path=output,
        placements=LOCATIONS,
        cell_slices=[index_cell(location, main.downsample_factor) for location in LOCATIONS],
        title=(
            f"shift equivariance {main.score:.3f} (authors'), {main.foreground_score:.3f} (digit tokens)"
            + (
                f", {summary['shift_equivariance_foreground_all_colours']:.3f} (digit tokens, 4 colours)"
                if len(results) > 1
                else ""
            )
            + f"; {usage.codes_used}/{usage.num_codes} codes used\n{description}"
        ),
        row_scores=[float(s) for result in results.values() for s in result.per_digit[:shown]],
        row_labels=[f"{colour} {i}" for colour in results for i in range(shown)],
    )
    log(f"figure: {figure}")

    report = {
        "model": model,
        "description": description,
        "num_digits": len(digits),
        "shift_equivariance": main.score,
        "shift_equivariance_foreground": main.foreground_score,
        "per_pair": main.per_pair,
        "per_colour": {c: {"score": r.score, "foreground_score": r.foreground_score} for c, r in results.items()},
        **{k: v for k, v in summary.items() if k not in ("shift_equivariance", "shift_equivariance_foreground")},
        "codes_used": usage.codes_used,
        "num_codes": usage.num_codes,
        "perplexity": usage.perplexity,
    }
    if json_path:
        write_json_atomic(json_path, report)
    return report
