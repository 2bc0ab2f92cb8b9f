"""The `paper` preset's compute, counted: training FLOPs per stage-1 image and per stage-2 token
of the authors' models, the preset's totals, and the hours they take at a given throughput.

FLOPs are counted by `torch.utils.flop_counter.FlopCounterMode` on one training step run on the
CPU (matrix products and convolutions, forward and backward; elementwise work, normalisation and
the optimizer are not counted, so the counts are lower bounds of the work and upper bounds of the
fraction of peak). Stage 1 is `te_vqgan.training.vqgan_train_step` at the authors' quantizer
(`hub_configs/te-vqgan-mnist.json`) with the GAN terms on and LPIPS: LPIPS's backbone is VGG16's
13 convolutions, whose shape alone fixes its FLOPs, so a frozen stand-in of that shape (random
weights, no torchvision, which does not import beside our torch) takes its place. Stage 2 is the
preset's GPT-2 (8 layers, 256 wide), built as `training/train_generator.py` builds it (the merged
tokenizer, `build_generator_config`, the preset's position scheme), on its sequence (309 tokens:
the 50-token text block, the 16 x 16 image, three specials), both directions per step.

The hours are the counts divided by an achieved TFLOP/s (`--tflops`, one figure or several):
the one GPU measurement made here ran the stage-2 step at about 20 TFLOP/s on an H100
(`results/stage2_gpu`, launch-bound at this size); convolutions at batch 96 keep a GPU busier,
which a lent GPU's run of `benchmarks/bench_train_vqgan.py` would measure.

    python benchmarks/count_paper_flops.py                      # 20 and 100 TFLOP/s
    python benchmarks/count_paper_flops.py --tflops 20 50 200 --json flops.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from types import SimpleNamespace

import torch
from bench_train_vqgan import SingleDevice
from common import model_config
from torch.utils.flop_counter import FlopCounterMode

from te_vqgan import TEVQModel
from te_vqgan.generation import SequenceLayout, TextImageTokenizer, build_generator_config
from te_vqgan.models.quantizer import downsample_factor
from te_vqgan.reproduce import PRESETS
from te_vqgan.training import NLayerDiscriminator, OptimizerUpdate, VQGANLossWeights, vqgan_train_step
from te_vqgan.training.settings import GeneratorTrainingSettings, VQGANTrainingSettings


# VGG16's convolutions up to relu5_3 (what LPIPS reads), with its max pooling between stages.
VGG16_STAGES = ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512))


class VGG16Shaped(torch.nn.Module):
    """LPIPS's cost without its weights: VGG16's features (frozen) and a squared distance of them."""

    def __init__(self):
        super().__init__()
        layers, width = [], 3
        for i, stage in enumerate(VGG16_STAGES):
            if i:
                layers.append(torch.nn.MaxPool2d(2))
            for out in stage:
                layers += [torch.nn.Conv2d(width, out, 3, padding=1), torch.nn.ReLU()]
                width = out
        self.features = torch.nn.Sequential(*layers).requires_grad_(False)

    def forward(self, x, y):
        return (self.features(x) - self.features(y)).pow(2).mean(dim=(1, 2, 3), keepdim=True)


def stage1_flops_per_image(batch: int, gan: bool) -> float:
    torch.manual_seed(0)
    model = TEVQModel(**model_config("default")).train()
    disc = NLayerDiscriminator().train()
    runner = SingleDevice(torch.device("cpu"), None)
    updates = [OptimizerUpdate(runner, torch.optim.Adam(m.parameters(), lr=1e-4)) for m in (model, disc)]
    weights = VQGANLossWeights(perceptual_weight=1.0, disc_start=0 if gan else 10**9)
    images = torch.rand(batch, 3, model.config.sample_size, model.config.sample_size) * 2 - 1
    with FlopCounterMode(display=False) as counter:
        vqgan_train_step(runner, model, disc, *updates, images, 1, weights, VGG16Shaped())
    return counter.get_total_flops() / batch


def stage2_flops_per_token(batch: int) -> tuple[float, int]:
    """Training FLOPs per token of the paper preset's generator, built as `train_generator.py` builds it,
    and its sequence length."""
    from transformers import GPT2LMHeadModel

    preset = PRESETS["paper"]
    layers, width, heads = preset.stage2_model
    quantizer = model_config("default")
    side = quantizer["sample_size"] // downsample_factor(SimpleNamespace(**quantizer))  # 64 / f = 16
    text_length = preset.stage2_settings.get("text_length", GeneratorTrainingSettings.text_length)
    scheme = preset.stage2_settings.get("position_scheme", GeneratorTrainingSettings.position_scheme)
    tokenizer = TextImageTokenizer.build(codebook_size=quantizer["num_vq_embeddings"], text_length=text_length)
    layout = SequenceLayout.from_tokenizer(tokenizer, (side, side))
    config = build_generator_config(
        tokenizer, (side, side), n_embd=width, n_layer=layers, n_head=heads, position_scheme=scheme
    )
    torch.manual_seed(0)
    model = GPT2LMHeadModel(config)
    length = layout.sequence_length
    tokens = torch.randint(0, len(tokenizer), (batch, length))
    positions = layout.position_ids("t2i", scheme).expand(batch, -1)
    with FlopCounterMode(display=False) as counter:
        logits = model(tokens, position_ids=positions).logits
        torch.nn.functional.cross_entropy(logits.flatten(0, 1), tokens.flatten()).backward()
    return counter.get_total_flops() / (batch * length), length


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--tflops",
        type=float,
        nargs="+",
        default=[20.0, 100.0, 200.0],
        help="stage 1's achieved TFLOP/s per GPU, each converted to hours (not measured on a GPU here)",
    )
    parser.add_argument(
        "--stage2-tflops",
        type=float,
        default=20.0,
        help="stage 2's achieved TFLOP/s per GPU (default: measured on an H100, results/stage2_gpu)",
    )
    parser.add_argument("--gpus", type=int, default=8, help="GPUs of a node running one stage each side by side")
    parser.add_argument("--json", default=None, help="also write the figures to this JSON file")
    return parser.parse_args()


def main():
    args = parse_args()
    if min(args.tflops + [args.stage2_tflops]) <= 0 or args.gpus < 1:
        raise SystemExit(
            f"--tflops and --stage2-tflops must be positive and --gpus >= 1 "
            f"(got {args.tflops}, {args.stage2_tflops}, {args.gpus})."
        )
    preset = PRESETS["paper"]
    runs = len(preset.quantizers) * len(preset.seeds)
    # The GAN terms (the discriminator's step and the adaptive weight) switch on at `disc_start`, as the authors'.
    disc_start = preset.stage1_settings.get("disc_start", VQGANTrainingSettings.disc_start)
    before = min(preset.stage1_steps, disc_start - 1)
    without_gan, per_image = stage1_flops_per_image(batch=2, gan=False), stage1_flops_per_image(batch=2, gan=True)
    stage1_run = (without_gan * before + per_image * (preset.stage1_steps - before)) * preset.stage1_batch
    per_token, sequence = stage2_flops_per_token(batch=2)
    # Both directions per example; a train size trains as many epochs as the largest (steps scale with the data).
    examples = [preset.stage2_steps * preset.stage2_batch * size / preset.num_train for size in preset.train_sizes]
    stage2_runs = [per_token * sequence * 2 * n for n in examples]
    stage2_hours = [flops / (args.stage2_tflops * 1e12) / 3600 for flops in stage2_runs]
    rounds = -(-runs // args.gpus)  # each stage kind's runs, one per GPU at a time
    figures = {
        "stage1_gflop_per_image": per_image / 1e9,
        "stage1_gflop_per_image_before_gan": without_gan / 1e9,
        "stage1_pflop_per_run": stage1_run / 1e15,
        "stage2_mflop_per_token": per_token / 1e6,
        "stage2_tokens_per_example": sequence,
        "stage2_pflop_per_run": [f / 1e15 for f in stage2_runs],
        "stage2_hours_per_run": stage2_hours,
        "runs_per_stage_and_size": runs,
        "hours": {},
    }
    print(
        f"paper preset, counted with torch {torch.__version__} (matrix products and convolutions, forward and backward)\n"
        f"stage 1: {per_image / 1e9:.1f} GFLOP per image (autoencoder, discriminator, LPIPS-shaped VGG16; "
        f"{without_gan / 1e9:.1f} before the GAN terms start at step {disc_start:,}) x {preset.stage1_steps:,} steps of "
        f"{preset.stage1_batch} = {stage1_run / 1e15:,.0f} PFLOP a run, {runs} runs\n"
        f"stage 2: {per_token / 1e6:.1f} MFLOP per token x {sequence} tokens x 2 directions: "
        + ", ".join(
            f"{n:,.0f} examples {f / 1e15:.0f} PFLOP ({h:.1f} h at {args.stage2_tflops:g} TFLOP/s)"
            for n, f, h in zip(examples, stage2_runs, stage2_hours)
        )
        + f", {runs} runs of each",
        flush=True,
    )
    for t in args.tflops:
        stage1_hours = stage1_run / (t * 1e12) / 3600
        one = runs * (stage1_hours + sum(stage2_hours))
        node = rounds * (stage1_hours + sum(stage2_hours))
        figures["hours"][f"{t:g}"] = {"stage1_per_run": stage1_hours, "one_gpu": one, f"{args.gpus}_gpus": node}
        print(
            f"stage 1 at {t:g} TFLOP/s: {stage1_hours:.1f} h a run; everything {one:.0f} h on one GPU, "
            f"{node:.0f} h on {args.gpus} GPUs ({rounds} rounds of one run per GPU)"
        )
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
