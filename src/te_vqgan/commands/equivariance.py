"""`te-vqgan equivariance`: the shift-equivariance score and codebook usage of a tokenizer.

    te-vqgan equivariance --model hub_configs/te-vqgan-mnist.json --mnist-dir ../shared/data/mnist
    te-vqgan equivariance --model outputs/te-vqgan-mnist        # a save_pretrained folder
    te-vqgan equivariance --model org/te-vqgan-mnist            # a Hub repo
"""

from __future__ import annotations

import numpy as np


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "equivariance",
        help="Shift-equivariance score and codebook usage of a tokenizer, with a PNG of its token maps.",
        description=__doc__,
        formatter_class=__import__("argparse").RawDescriptionHelpFormatter,
    )
    parser.add_argument("--model", required=True, help="A model config .json, a save_pretrained folder or a Hub repo id.")
    parser.add_argument(
        "--mnist-dir",
        default=None,
        help="Folder with the MNIST IDX .gz files (default: $TE_VQGAN_MNIST_DIR, else download the official files).",
    )
    parser.add_argument("--num-digits", type=int, default=100, help="MNIST test digits to shift, 10 per class (default 100).")
    parser.add_argument("--colour", default="white", choices=["white", "red", "green", "blue"])
    parser.add_argument("--output", default="equivariance.png", help="Where the PNG figure goes (default equivariance.png).")
    parser.add_argument("--figure-digits", type=int, default=3, help="Digits shown in the figure (default 3).")
    parser.add_argument("--json", default=None, help="Also write the figures as JSON to this file.")
    parser.add_argument("--seed", type=int, default=0, help="Seed of a randomly initialised model (default 0).")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available).")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.set_defaults(func=run)


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
    for name in ("num_digits", "batch_size", "figure_digits"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 1 (got {getattr(args, name)}).")
    from ..data.layout import LOCATIONS, index_cell
    from ..data.mnist import load_mnist
    from ..loading import load_vq_model
    from ..metrics import as_tokenizer, codebook_usage, render_shift_group, shift_equivariance
    from ..files import write_json_atomic
    from ..visualization import save_shift_equivariance_figure

    model, description = load_vq_model(args.model, seed=args.seed, device=args.device)
    tokenizer = as_tokenizer(model)
    images, labels = load_mnist("test", data_dir=args.mnist_dir)
    digits = select_digits(images, labels, args.num_digits)

    result = shift_equivariance(tokenizer, digits, colour=args.colour, batch_size=args.batch_size)
    usage = codebook_usage(result.index_maps, tokenizer.num_codes)

    print(description)
    print(f"shift equivariance: {result.score:.4f}  ({len(digits)} digits x 10 placement pairs, f={result.downsample_factor})")
    print(f"  on the digit's own tokens only: {result.foreground_score:.4f}")
    for pair, score in result.per_pair.items():
        print(f"  {pair:<26} {score:.4f}")
    print(
        f"codebook usage: {usage.codes_used} / {usage.num_codes} codes used, perplexity {usage.perplexity:.2f} "
        f"(over {result.index_maps.numel()} tokens of {result.index_maps.shape[0] * 5} images)"
    )

    shown = min(args.figure_digits, len(digits))
    figure = save_shift_equivariance_figure(
        images=np.stack([render_shift_group(d, args.colour) for d in digits[:shown]]),
        index_maps=result.index_maps[:shown],
        num_codes=tokenizer.num_codes,
        path=args.output,
        placements=LOCATIONS,
        cell_slices=[index_cell(location, result.downsample_factor) for location in LOCATIONS],
        title=f"shift equivariance {result.score:.3f}, {usage.codes_used}/{usage.num_codes} codes used\n{description}",
        row_scores=[float(s) for s in result.per_digit[:shown]],
    )
    print(f"figure: {figure}")

    if args.json:
        report = {
            "model": args.model,
            "description": description,
            "num_digits": len(digits),
            "shift_equivariance": result.score,
            "shift_equivariance_foreground": result.foreground_score,
            "per_pair": result.per_pair,
            "codes_used": usage.codes_used,
            "num_codes": usage.num_codes,
            "perplexity": usage.perplexity,
        }
        write_json_atomic(args.json, report)
    return 0
