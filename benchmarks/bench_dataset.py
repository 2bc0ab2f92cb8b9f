"""TextMNIST build speed: images/s of the `train` split with 1 and 2 worker processes.

Each run builds `--num-images` train images (no other split) into a fresh temporary cache
with `TextMNIST.download_and_prepare(num_proc=...)`, so the figure covers everything a build
does: reading the MNIST files, drawing, captioning, PNG encoding and writing Arrow. Reading
and checksumming the MNIST files is included, so small runs understate the rate.

    python benchmarks/bench_dataset.py                         # 20,000 images, 1 and 2 processes
    python benchmarks/bench_dataset.py --num-images 300000 --num-proc 2
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import tempfile
import time
from pathlib import Path

import datasets

from te_vqgan.data import MNIST_VARIANTS, TextMNIST


REPO_ROOT = Path(__file__).resolve().parents[1]


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="mnist", choices=sorted(MNIST_VARIANTS))
    parser.add_argument("--num-images", type=int, default=20_000)
    parser.add_argument("--num-proc", default="1,2", help="comma-separated process counts to measure")
    parser.add_argument(
        "--data-dir",
        default=None,
        # ../shared/data is where our development checkout keeps the files; a fresh clone has no such
        # folder, so pass --data-dir or set the variable there.
        help="folder of the IDX .gz files (default: $TE_VQGAN_MNIST_DIR, else ../shared/data/<config>)",
    )
    parser.add_argument("--json", default=None, help="also write the figures to this JSON file")
    args = parser.parse_args()
    if args.num_images < 1:
        parser.error(f"--num-images must be positive (got {args.num_images}).")
    try:
        args.num_proc = [int(n) for n in args.num_proc.split(",")]
    except ValueError:
        parser.error(f"--num-proc must be comma-separated integers (got {args.num_proc!r}).")
    if args.data_dir is None:
        args.data_dir = os.environ.get(MNIST_VARIANTS[args.config].env_var) or str(
            REPO_ROOT.parent / "shared" / "data" / args.config
        )
    return args


def time_build(config: str, num_images: int, num_proc: int, data_dir: str) -> float:
    """Seconds to build `num_images` train images with `num_proc` processes."""
    with tempfile.TemporaryDirectory(prefix="bench_textmnist_") as cache_dir:
        builder = TextMNIST(
            config_name=config,
            num_train=num_images,
            num_validation=0,
            num_test=0,
            num_test_seen=0,
            num_shift_groups=0,
            data_dir=data_dir,
            cache_dir=cache_dir,
        )
        start = time.perf_counter()
        builder.download_and_prepare(num_proc=num_proc if num_proc > 1 else None)
        return time.perf_counter() - start


def main():
    args = parse_args()
    logging.basicConfig(level=logging.WARNING)
    datasets.disable_progress_bars()
    results = {}
    # flush=True: each figure is on screen as soon as it is measured, even through a pipe.
    print(f"TextMNIST {args.config}: {args.num_images} train images, {os.cpu_count()} CPUs", flush=True)
    for num_proc in args.num_proc:
        seconds = time_build(args.config, args.num_images, num_proc, args.data_dir)
        results[num_proc] = {"seconds": seconds, "images_per_s": args.num_images / seconds}
        print(f"  num_proc={num_proc}: {seconds:7.1f} s  {args.num_images / seconds:8.0f} images/s", flush=True)
    if args.json:
        Path(args.json).write_text(
            json.dumps({"config": args.config, "num_images": args.num_images, "runs": results}, indent=2)
        )


if __name__ == "__main__":
    main()
