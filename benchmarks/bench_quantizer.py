"""Quantizer benchmarks, measured side by side in one run.

1. A training step's time with the orthogonal regulariser on over off, at K=128 (target
   <= 1.03) and at K=16384 with `orthogonal_reg_max_codes` (target <= 1.10).
2. `TEVQModel.encode_to_indices` images/s against a stock `diffusers.VQModel` of the same
   size doing `encode` + `quantize`.

Steps of the compared variants are interleaved (on, off, on, off, ...) so that drift in the
machine's speed hits both alike; each figure is the median over steps. Each figure is printed
as soon as it is measured: the default run (the authors' model) takes minutes on a CPU; its
timings are in benchmarks/RESULTS.md.

    python benchmarks/bench_quantizer.py                   # the authors' model, CPU or GPU
    python benchmarks/bench_quantizer.py --quick           # the small config, 3 timed steps: seconds
    python benchmarks/bench_quantizer.py --config small    # the small config, 8 timed steps
"""

from __future__ import annotations

import argparse
import inspect
import json
import time
from pathlib import Path

import torch
from common import interleaved_medians, model_config
from diffusers import VQModel

from te_vqgan import TEVQModel


# What --quick changes; an option given explicitly still wins.
QUICK = {"config": "small", "steps": 3, "warmup": 1}
DEFAULTS = {"config": "default", "steps": 8, "warmup": 2}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"a quick check: config {QUICK['config']}, {QUICK['steps']} timed steps, {QUICK['warmup']} warm-up step",
    )
    parser.add_argument(
        "--config", default=None, help=f"'default', 'small' or a model config .json (default {DEFAULTS['config']})"
    )
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument(
        "--steps", type=int, default=None, help=f"timed steps per variant (default {DEFAULTS['steps']})"
    )
    parser.add_argument(
        "--warmup", type=int, default=None, help=f"warm-up steps per variant (default {DEFAULTS['warmup']})"
    )
    parser.add_argument("--large-k", type=int, default=16384)
    parser.add_argument("--max-codes", type=int, default=1024, help="orthogonal_reg_max_codes at the large K")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--json", default=None, help="also write the figures to this JSON file")
    args = parser.parse_args(argv)
    for name, value in (QUICK if args.quick else DEFAULTS).items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    for name in ("batch_size", "steps", "large_k", "max_codes"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1 (got {getattr(args, name)}).")
    if args.warmup < 0:
        parser.error(f"--warmup must be at least 0 (got {args.warmup}).")
    return args


def report(line: str) -> None:
    """Print at once: a figure should be on screen as soon as it is measured."""
    print(line, flush=True)


def make_trainer(config: dict, device: torch.device, batch: torch.Tensor):
    torch.manual_seed(0)
    model = TEVQModel(**config).to(device).train()
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-4, betas=(0.5, 0.9))

    def step():
        optimiser.zero_grad(set_to_none=True)
        out = model(batch)
        loss = (out.sample - batch).abs().mean() + out.commit_loss + out.orthogonal_loss
        loss.backward()
        optimiser.step()

    return step


def bench_regulariser(config: dict, k: int, max_codes: int | None, args, device) -> dict:
    batch = torch.rand(args.batch_size, 3, config["sample_size"], config["sample_size"], device=device) * 2 - 1
    base = {**config, "num_vq_embeddings": k, "orthogonal_reg_max_codes": max_codes}
    medians = interleaved_medians(
        {
            "on": make_trainer({**base, "orthogonal_reg_weight": 10.0}, device, batch),
            "off": make_trainer({**base, "orthogonal_reg_weight": 0.0}, device, batch),
        },
        args.steps,
        args.warmup,
        device,
    )
    return {
        "K": k,
        "max_codes": max_codes,
        "on_s": medians["on"],
        "off_s": medians["off"],
        "ratio": medians["on"] / medians["off"],
    }


def bench_encode(config: dict, args, device) -> dict:
    torch.manual_seed(0)
    te = TEVQModel(**config).to(device).eval()
    # The same architecture with diffusers' own layers (zero padding, legacy quantizer).
    stock_keys = inspect.signature(VQModel.__init__).parameters
    stock_config = {k: v for k, v in config.items() if k in stock_keys}
    stock = VQModel(**stock_config).to(device).eval()
    batch = torch.rand(args.batch_size, 3, config["sample_size"], config["sample_size"], device=device) * 2 - 1

    @torch.no_grad()
    def stock_encode():
        stock.quantize(stock.encode(batch).latents)

    medians = interleaved_medians(
        {"te_vqgan": lambda: te.encode_to_indices(batch), "diffusers": stock_encode}, args.steps, args.warmup, device
    )
    return {
        "te_vqgan_images_per_s": args.batch_size / medians["te_vqgan"],
        "diffusers_images_per_s": args.batch_size / medians["diffusers"],
        "ratio": medians["diffusers"] / medians["te_vqgan"],
    }


def main(argv: list[str] | None = None):
    args = parse_args(argv)
    device = torch.device(args.device)
    config = model_config(args.config)
    start = time.perf_counter()
    report(
        f"device {device}, torch {torch.__version__}, threads {torch.get_num_threads()}, config {args.config}, "
        f"batch {args.batch_size}, {args.warmup} warm-up + {args.steps} timed steps per variant (median)"
    )

    results = {"config": args.config, "device": str(device), "batch_size": args.batch_size}
    report("\nTraining step, orthogonal regulariser on vs off")
    report(f"{'K':>6} {'max_codes':>9} {'on (s)':>9} {'off (s)':>9} {'on/off':>7} {'target':>7}")
    for key, k, max_codes, target in (
        ("regulariser_small_k", config["num_vq_embeddings"], None, 1.03),
        ("regulariser_large_k", args.large_k, args.max_codes, 1.10),
    ):
        r = results[key] = bench_regulariser(config, k, max_codes, args, device)
        verdict = "ok" if r["ratio"] <= target else "MISSED"
        report(
            f"{r['K']:>6} {str(r['max_codes']):>9} {r['on_s']:>9.4f} {r['off_s']:>9.4f} {r['ratio']:>7.3f} {'<= ' + str(target):>7} {verdict}"
        )

    report("\nencode_to_indices vs diffusers VQModel encode + quantize (same size)")
    e = results["encode_to_indices"] = bench_encode(config, args, device)
    report(f"  te-vqgan  {e['te_vqgan_images_per_s']:10.1f} images/s")
    report(f"  diffusers {e['diffusers_images_per_s']:10.1f} images/s")
    report(f"  te-vqgan / diffusers speed: {e['ratio']:.3f}")
    report(f"\ntotal {time.perf_counter() - start:.0f} s")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
