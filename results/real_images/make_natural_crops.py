#!/usr/bin/env python
"""A folder of natural-image crops from the photographs that Python packages ship, for a CPU-scale demonstration.

    python results/real_images/make_natural_crops.py --output outputs/real-images/natural-crops

The photographs: scikit-image's sample images (read from its wheel, fetched with `pip download --no-deps`
from the package registry and opened as a zip: scikit-image is never installed or imported) and
matplotlib's `grace_hopper.jpg` (installed with te-vqgan). Photographs are split by photograph, so
validation crops come from photographs training never saw. Each crop is a random square of side
64..192 px (a random scale) at a random place, resized to 64x64 and saved as PNG in
`OUTPUT/train/` and `OUTPUT/validation/`, the layout `datasets`' `imagefolder` reads as two splits.
Deterministic (`--seed`); written to a temporary folder and moved into place at the end.
"""

from __future__ import annotations

import argparse
import io
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image


# scikit-image's photographs (its synthetic, text and microscopy images are left out).
TRAIN_PHOTOS = (
    "astronaut.png",
    "brick.png",
    "camera.png",
    "coins.png",
    "grass.png",
    "gravel.png",
    "hubble_deep_field.jpg",
    "moon.png",
    "motorcycle_left.png",
    "motorcycle_right.png",
    "retina.jpg",
)
VALIDATION_PHOTOS = ("chelsea.png", "coffee.png", "rocket.jpg", "grace_hopper.jpg")  # the last from matplotlib


def photographs(wheel: Path | None) -> dict[str, Image.Image]:
    if wheel is None:
        download = Path(tempfile.mkdtemp(prefix="skimage-wheel-"))
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "scikit-image", "--no-deps", "-q", "-d", str(download)],
            check=True,
        )
        wheel = next(download.glob("scikit_image-*.whl"))
    photos = {}
    with zipfile.ZipFile(wheel) as archive:
        for name in TRAIN_PHOTOS + VALIDATION_PHOTOS[:-1]:
            photos[name] = Image.open(io.BytesIO(archive.read(f"skimage/data/{name}"))).convert("RGB")
    import matplotlib.cbook

    photos["grace_hopper.jpg"] = Image.open(matplotlib.cbook.get_sample_data("grace_hopper.jpg")).convert("RGB")
    return photos


def random_crops(photo: Image.Image, count: int, rng: np.random.Generator, size: int = 64) -> list[Image.Image]:
    crops = []
    for _ in range(count):
        side = int(rng.integers(64, min(192, *photo.size) + 1))
        left, top = int(rng.integers(0, photo.width - side + 1)), int(rng.integers(0, photo.height - side + 1))
        crops.append(photo.crop((left, top, left + side, top + side)).resize((size, size), Image.BICUBIC))
    return crops


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", required=True, help="The folder to write (train/ and validation/).")
    parser.add_argument("--num_train", type=int, default=4000, help="Training crops (default 4000).")
    parser.add_argument("--num_validation", type=int, default=512, help="Validation crops (default 512).")
    parser.add_argument("--wheel", default=None, help="A scikit-image wheel already here (default: pip download).")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    for name in ("num_train", "num_validation"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be >= 1 (got {getattr(args, name)})")
    output = Path(args.output)
    if (output / "train").is_dir() and (output / "validation").is_dir():
        print(f"{output} exists; nothing to do")
        return 0
    photos = photographs(Path(args.wheel) if args.wheel else None)
    rng = np.random.default_rng(args.seed)
    output.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{output.name}-", dir=output.parent))
    for split, names, total in (
        ("train", TRAIN_PHOTOS, args.num_train),
        ("validation", VALIDATION_PHOTOS, args.num_validation),
    ):
        (staging / split).mkdir()
        per_photo = np.full(len(names), total // len(names))
        per_photo[: total % len(names)] += 1
        index = 0
        for name, count in zip(names, per_photo):
            for crop in random_crops(photos[name], int(count), rng):
                crop.save(staging / split / f"{index:05d}-{Path(name).stem}.png")
                index += 1
    if output.exists():
        shutil.rmtree(output)
    staging.rename(output)
    print(
        f"{output}: {args.num_train} training crops of {len(TRAIN_PHOTOS)} photographs, "
        f"{args.num_validation} validation crops of {len(VALIDATION_PHOTOS)} others"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
