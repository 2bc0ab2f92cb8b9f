"""Stage-1 training throughput: images/s of a full VQGAN step (autoencoder + discriminator,
GAN terms on, no LPIPS unless --perceptual), for the default and small model configs, fp32
against bf16, all measured side by side in one run.

The step is `te_vqgan.training.vqgan_train_step`, the one `training/train_vqgan.py` runs. One
process and no DDP, so the Accelerator is replaced by `SingleDevice` below, which does what
Accelerate does on one device (autocast, backward); that lets fp32 and bf16 steps interleave
(Accelerate's state is one per process).

    python benchmarks/bench_train_vqgan.py                       # CPU here, a GPU where there is one
    python benchmarks/bench_train_vqgan.py --configs small --batch-size 32
"""

from __future__ import annotations

import argparse
import json
from contextlib import nullcontext
from pathlib import Path

import torch
from common import interleaved_medians, model_config

from te_vqgan import TEVQModel
from te_vqgan.training import NLayerDiscriminator, OptimizerUpdate, VQGANLossWeights, vqgan_train_step


class SingleDevice:
    """The part of `accelerate.Accelerator` that `vqgan_train_step` uses, for one device."""

    def __init__(self, device: torch.device, dtype: torch.dtype | None):
        self.device, self.dtype = device, dtype

    def autocast(self):
        if self.dtype is None:
            return nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.dtype)

    def backward(self, loss):
        loss.backward()

    def unwrap_model(self, model):
        return model


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", nargs="+", default=["default", "small"], help="names in CONFIGS or .json paths")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--steps", type=int, default=6, help="timed steps per variant (median)")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--perceptual", action="store_true", help="include LPIPS (needs the lpips extra and weights)")
    parser.add_argument("--json", default=None, help="also write the figures to this JSON file")
    return parser.parse_args()


def make_step(config: dict, device: torch.device, dtype, batch: torch.Tensor, perceptual):
    torch.manual_seed(0)
    model = TEVQModel(**config).to(device).train()
    disc = NLayerDiscriminator().to(device).train()
    opt_ae = torch.optim.Adam(model.parameters(), lr=1e-4, betas=(0.5, 0.9))
    opt_d = torch.optim.Adam(disc.parameters(), lr=1e-4, betas=(0.5, 0.9))
    runner = SingleDevice(device, dtype)
    weights = VQGANLossWeights(perceptual_weight=1.0 if perceptual is not None else 0.0, disc_start=0)
    update_ae, update_d = OptimizerUpdate(runner, opt_ae), OptimizerUpdate(runner, opt_d)
    return lambda: vqgan_train_step(runner, model, disc, update_ae, update_d, batch, 1, weights, perceptual)


def main():
    args = parse_args()
    device = torch.device(args.device)
    perceptual = None
    if args.perceptual:
        from te_vqgan.training import load_perceptual_loss

        perceptual = load_perceptual_loss().to(device)
    # flush=True: each row is on screen as soon as it is measured (the default config takes minutes on a CPU).
    print(
        f"device {device}, torch {torch.__version__}, threads {torch.get_num_threads()}, batch {args.batch_size}, "
        f"{args.steps} timed steps per variant (median), GAN on, LPIPS {'on' if perceptual is not None else 'off'}",
        flush=True,
    )
    print(f"\n{'config':<10} {'fp32 img/s':>11} {'bf16 img/s':>11} {'bf16/fp32':>10}", flush=True)
    results = []
    for name in args.configs:
        config = model_config(name)
        size = config["sample_size"]
        batch = torch.rand(args.batch_size, 3, size, size, device=device) * 2 - 1
        medians = interleaved_medians(
            {
                "fp32": make_step(config, device, None, batch, perceptual),
                "bf16": make_step(config, device, torch.bfloat16, batch, perceptual),
            },
            args.steps,
            args.warmup,
            device,
        )
        row = {"config": name, **{f"{k}_images_per_s": args.batch_size / seconds for k, seconds in medians.items()}}
        row["bf16_speedup"] = row["bf16_images_per_s"] / row["fp32_images_per_s"]
        results.append(row)
        print(
            f"{row['config']:<10} {row['fp32_images_per_s']:>11.1f} {row['bf16_images_per_s']:>11.1f} {row['bf16_speedup']:>10.2f}",
            flush=True,
        )
    if args.json:
        Path(args.json).write_text(
            json.dumps({"device": str(device), "batch_size": args.batch_size, "results": results}, indent=2) + "\n"
        )


if __name__ == "__main__":
    main()
