"""Quantizer benchmarks, measured side by side in one run.

1. A training step's time with the orthogonal regulariser on over off, at K=128 (target
   <= 1.03) and at K=16384 with `orthogonal_reg_max_codes` (target <= 1.10).
2. `TEVQModel.encode_to_indices` images/s against a stock `diffusers.VQModel` of the same
   size doing `encode` + `quantize`.

Steps of the compared variants are interleaved (on, off, on, off, ...) so that drift in the
machine's speed hits both alike; each figure is the median over steps.

    python benchmarks/bench_quantizer.py                   # the authors' model, CPU or GPU
    python benchmarks/bench_quantizer.py --config small    # a small model, quick
"""

from __future__ import annotations

import argparse
import inspect
import json
from pathlib import Path

import torch
from diffusers import VQModel

from common import interleaved_medians, model_config
from te_vqgan import TEVQModel


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="default", help="'default', 'small' or a model config .json")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--steps", type=int, default=8, help="timed steps per variant")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--large-k", type=int, default=16384)
    parser.add_argument("--max-codes", type=int, default=1024, help="orthogonal_reg_max_codes at the large K")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--json", default=None, help="also write the figures to this JSON file")
    return parser.parse_args()


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
        args.steps, args.warmup, device,
    )
    return {"K": k, "max_codes": max_codes, "on_s": medians["on"], "off_s": medians["off"], "ratio": medians["on"] / medians["off"]}


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


def main():
    args = parse_args()
    device = torch.device(args.device)
    config = model_config(args.config)
    print(f"device {device}, torch {torch.__version__}, threads {torch.get_num_threads()}, config {args.config}, "
          f"batch {args.batch_size}, {args.steps} timed steps per variant (median)")

    results = {"config": args.config, "device": str(device), "batch_size": args.batch_size}
    results["regulariser_small_k"] = bench_regulariser(config, config["num_vq_embeddings"], None, args, device)
    results["regulariser_large_k"] = bench_regulariser(config, args.large_k, args.max_codes, args, device)
    results["encode_to_indices"] = bench_encode(config, args, device)

    print("\nTraining step, orthogonal regulariser on vs off")
    print(f"{'K':>6} {'max_codes':>9} {'on (s)':>9} {'off (s)':>9} {'on/off':>7} {'target':>7}")
    for key, target in (("regulariser_small_k", 1.03), ("regulariser_large_k", 1.10)):
        r = results[key]
        verdict = "ok" if r["ratio"] <= target else "MISSED"
        print(f"{r['K']:>6} {str(r['max_codes']):>9} {r['on_s']:>9.4f} {r['off_s']:>9.4f} {r['ratio']:>7.3f} {'<= ' + str(target):>7} {verdict}")
    e = results["encode_to_indices"]
    print("\nencode_to_indices vs diffusers VQModel encode + quantize (same size)")
    print(f"  te-vqgan  {e['te_vqgan_images_per_s']:10.1f} images/s")
    print(f"  diffusers {e['diffusers_images_per_s']:10.1f} images/s")
    print(f"  te-vqgan / diffusers speed: {e['ratio']:.3f}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
