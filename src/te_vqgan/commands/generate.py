"""`te-vqgan generate` and `te-vqgan caption`: use a saved text-image pipeline from the shell.

    te-vqgan generate --pipeline outputs/generator --prompt "the red 3 is on the upper left." \
        --num-images-per-prompt 4 --seed 0 --output-dir samples
    te-vqgan caption --pipeline outputs/generator samples/*.png

`--pipeline` is a folder written by `training/train_generator.py` (or `save_pretrained` of a
pipeline) or a Hub repo id. `generate` writes one PNG per image and `grid.png` (the prompt
under each image); `caption` prints one line per image: `path<TAB>caption`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ..options import add_deprecated_alias, add_output_dir_option
from . import add_command


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--pipeline", required=True, help="A pipeline folder or a Hub repo id.")
    parser.add_argument("--seed", type=int, default=0, help="Sampling seed in [0, 2**63) (default 0).")
    parser.add_argument(
        "--top-k-fraction",
        type=float,
        default=None,
        help="Keep this fraction of the vocabulary (default: the pipeline's, model_index.json).",
    )
    parser.add_argument(
        "--temperature", type=float, default=None, help="Softmax temperature (default: the pipeline's)."
    )
    parser.add_argument(
        "--num-candidates",
        type=int,
        default=1,
        help="Samples per output, the one the generator's other direction scores highest kept (default 1).",
    )
    parser.add_argument("--batch-size", type=int, default=None, help="Inputs sampled at once (default: all).")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available).")


def register(subparsers) -> None:
    generate = add_command(
        subparsers,
        "generate",
        help="Images from a caption with a saved text-to-image pipeline (PNGs and a grid).",
        description=__doc__,
    )
    _add_common(generate)
    generate.add_argument("--prompt", required=True, action="append", help="A caption; repeat for several.")
    generate.add_argument(
        "--num-images-per-prompt", dest="num_images", type=int, default=4, help="Images per prompt (default 4)."
    )
    add_deprecated_alias(generate, "--num-images", "--num-images-per-prompt", "num_images", type=int)
    add_output_dir_option(
        generate,
        help="Folder for the PNGs and grid.png.",
        overwrite="Replace the images of an earlier run in --output-dir.",
    )
    generate.set_defaults(func=run_generate)

    caption = add_command(
        subparsers,
        "caption",
        help="Captions of images with a saved image-to-text pipeline, one line per image.",
        description=__doc__,
    )
    _add_common(caption)
    caption.add_argument("images", nargs="+", help="RGB image files of the quantizer's size (64x64 for TextMNIST).")
    caption.set_defaults(func=run_caption)


def _check(args) -> None:
    from ..generation.sampling import check_num_candidates, check_temperature, check_top_k_fraction

    if not 0 <= args.seed < 2**63:
        raise ValueError(f"--seed must be in [0, 2**63) (got {args.seed}).")
    if args.batch_size is not None and args.batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1 (got {args.batch_size}).")
    if args.top_k_fraction is not None:
        check_top_k_fraction(args.top_k_fraction, "--top-k-fraction")
    if args.temperature is not None:
        check_temperature(args.temperature, "--temperature")
    check_num_candidates(args.num_candidates, "--num-candidates")


def _load(cls, args):
    from ..loading import resolve_device

    device = resolve_device(args.device)  # an unavailable device: one line before loading
    return cls.from_pretrained(args.pipeline).to(device)


def run_generate(args) -> int:
    import torch

    from ..files import atomic_path, check_not_an_input, check_output_dir
    from ..pipelines import TextToImagePipeline
    from ..visualization import save_captioned_images

    _check(args)
    check_not_an_input(Path(args.output), pipeline=args.pipeline)
    if args.num_images < 1:
        raise ValueError(f"--num-images-per-prompt must be >= 1 (got {args.num_images}).")
    # Never beside an earlier run's images: one folder, one run (or --overwrite).
    check_output_dir(Path(args.output), args.overwrite)
    pipeline = _load(TextToImagePipeline, args)
    pipeline.tokenizer.encode_captions(args.prompt)  # unknown words: one clear line before any work
    output = pipeline(
        args.prompt,
        num_images_per_prompt=args.num_images,
        top_k_fraction=args.top_k_fraction,
        temperature=args.temperature,
        generator=torch.Generator().manual_seed(args.seed),
        batch_size=args.batch_size,
        output_type="np",
        num_candidates=args.num_candidates,
    )
    folder = Path(args.output)
    if folder.is_dir() and args.overwrite:
        for old in folder.glob("*.png"):
            old.unlink()
    folder.mkdir(parents=True, exist_ok=True)
    from PIL import Image

    prompts = [p for p in args.prompt for _ in range(args.num_images)]
    for position, image in enumerate(output.images):
        path = folder / f"{position // args.num_images:02d}-{position % args.num_images:02d}.png"
        with atomic_path(path) as tmp:
            Image.fromarray(image).save(tmp, format="PNG")
        print(path)
    grid = save_captioned_images(output.images, prompts, folder / "grid.png", columns=args.num_images)
    print(grid)
    return 0


def run_caption(args) -> int:
    import torch
    from PIL import Image

    from ..pipelines import ImageToTextPipeline

    _check(args)
    images = []
    for name in args.images:
        path = Path(name)
        if not path.is_file():
            raise FileNotFoundError(f"Image {name!r} does not exist.")
        try:
            with Image.open(path) as image:
                image.load()
                images.append(image.copy())
        except (OSError, Image.DecompressionBombError) as error:
            raise ValueError(f"{name!r} is not an image PIL can read ({error}).") from error
    pipeline = _load(ImageToTextPipeline, args)
    for name, image in zip(args.images, images):  # size and mode: one clear line naming the file
        try:
            pipeline.preprocess(image)
        except ValueError as error:
            raise ValueError(f"{name}: {error}") from error
    captions = pipeline(
        images,
        top_k_fraction=args.top_k_fraction,
        temperature=args.temperature,
        generator=torch.Generator().manual_seed(args.seed),
        batch_size=args.batch_size,
        num_candidates=args.num_candidates,
    ).captions
    for name, caption in zip(args.images, captions):
        print(f"{name}\t{caption}")
    return 0
