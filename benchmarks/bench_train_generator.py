"""Stage-2 training speed: tokens/s of one training step, and on a GPU the fraction of the bf16 peak.

    python benchmarks/bench_train_generator.py                   # the cpu preset's generator (4 x 128), batch 32, 64 image tokens
    python benchmarks/bench_train_generator.py --size authors --grid 16 --batch 100 --dtype bf16 --compile   # on a GPU

Measured side by side in one run (`common.interleaved_medians`):

1. the whole training step as `training/train_generator.py` takes it (the layout check, forward,
   the modality-masked weighted loss, backward, gradient clipping, Adam), both directions;
2. forward + backward alone on the same sequences (plain cross-entropy, no check, no optimizer):
   the gap is what the step spends outside the network;
3. forward + backward of the same weights with GPT-2's stock activation (`"gelu_new"`, the tanh
   GELU in five elementwise operations) instead of ours (`"gelu_pytorch_tanh"`, the same
   function in torch's fused kernel): what the fused kernel saves;
4. with `--compile`, the training step of 1. on the same weights uncompiled: what compiling saves.

Tokens/s counts every position of every sequence (both directions). On CUDA the achieved
FLOP/s is set against `--peak-tflops` (by default an H200's bf16 matmul peak, as measured in
benchmarks/RESULTS.md): training FLOPs per token = 6 x (non-embedding parameters) + 12 x layers x width x
sequence length (the attention scores, PaLM's appendix B count). Weights and tokens are random:
a step's time does not depend on them.
"""

from __future__ import annotations

import argparse
import json
import math

import torch
import torch.nn.functional as F
from common import interleaved_medians

from te_vqgan.generation import SequenceLayout, TextImageTokenizer, build_generator_config, generator_loss


SIZES = {"cpu": dict(n_layer=4, n_embd=128, n_head=4), "authors": dict(n_layer=8, n_embd=256, n_head=8)}


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", default="cpu", choices=sorted(SIZES))
    parser.add_argument(
        "--grid", type=int, default=8, help="image tokens per side (8: the CPU quantizers at f = 8; 16: the authors')"
    )
    parser.add_argument("--text-length", type=int, default=45)
    parser.add_argument("--codebook-size", type=int, default=128)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument(
        "--dtype", default="fp32", choices=["fp32", "bf16"], help="bf16: autocast, as --mixed_precision bf16"
    )
    parser.add_argument("--compile", action="store_true", help="torch.compile the model")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument(
        "--peak-tflops",
        type=float,
        default=790.0,
        help="the device's bf16 matrix peak in TFLOP/s (default: an H200's, benchmarks/RESULTS.md)",
    )
    parser.add_argument("--json", default=None, help="also write the figures to this JSON file")
    return parser.parse_args()


def main() -> None:
    from transformers import GPT2LMHeadModel

    args = parse_args()
    device = torch.device(args.device)
    tokenizer = TextImageTokenizer.build(codebook_size=args.codebook_size, text_length=args.text_length)
    grid = (args.grid, args.grid)
    layout = SequenceLayout.from_tokenizer(tokenizer, grid)
    config = build_generator_config(
        tokenizer, grid, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, **SIZES[args.size]
    )
    model = GPT2LMHeadModel(config).to(device).train()
    network = torch.compile(model) if args.compile else model
    stock_config = config.__class__(**{**config.to_dict(), "activation_function": "gelu_new"})
    stock = GPT2LMHeadModel(stock_config).to(device).train()
    stock.load_state_dict(model.state_dict())
    stock_network = torch.compile(stock) if args.compile else stock
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)

    generator = torch.Generator().manual_seed(0)
    words = torch.tensor(layout.text_word_ids)
    text = torch.full((args.batch, args.text_length), tokenizer.pad_token_id)
    text[:, 0] = tokenizer.bos_token_id
    text[:, 1:13] = words[torch.randint(len(words), (args.batch, 12), generator=generator)]
    text[:, 13] = tokenizer.eos_token_id
    codes = torch.randint(args.codebook_size, (args.batch, args.grid, args.grid), generator=generator)
    image = tokenizer.encode_image_indices(codes)
    sequences = {
        "t2i": layout.t2i_sequence(text, image).to(device),
        "i2t": layout.i2t_sequence(image, text).to(device),
    }
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.dtype == "bf16")

    def full_step(net=network):
        for direction, ids in sequences.items():
            with autocast:
                loss = generator_loss(net, ids, layout, direction).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

    def forward_backward(net=network, owner=model):
        for ids in sequences.values():
            with autocast:
                logits = net(input_ids=ids).logits
            F.cross_entropy(logits[:, :-1].float().flatten(0, 1), ids[:, 1:].flatten()).backward()
        owner.zero_grad(set_to_none=True)

    calls = {
        "step": full_step,
        "forward_backward": forward_backward,
        "forward_backward_gelu_new": lambda: forward_backward(stock_network, stock),
    }
    if args.compile:  # the same step of the same weights uncompiled, side by side: does compiling pay here?
        calls["step_eager"] = lambda: full_step(model)
    seconds = interleaved_medians(
        calls,
        args.repeats,
        2,
        device,
    )
    length = layout.sequence_length
    tokens = 2 * args.batch * length
    embedding = model.transformer.wte.weight.numel() + model.transformer.wpe.weight.numel()
    flops_per_token = (
        6 * (sum(p.numel() for p in model.parameters()) - embedding) + 12 * config.n_layer * config.n_embd * length
    )
    figures = {
        "device": torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else f"cpu, {torch.get_num_threads()} threads",
        "size": args.size,
        "grid": args.grid,
        "sequence_length": length,
        "batch": args.batch,
        "dtype": args.dtype,
        "compile": args.compile,
        "torch": torch.__version__,
        "step_seconds": seconds["step"],
        "forward_backward_seconds": seconds["forward_backward"],
        "tokens_per_second": tokens / seconds["step"],
        "forward_backward_tokens_per_second": tokens / seconds["forward_backward"],
        "outside_network_fraction": 1 - seconds["forward_backward"] / seconds["step"],
        "forward_backward_gelu_new_seconds": seconds["forward_backward_gelu_new"],
        "fused_gelu_speedup": seconds["forward_backward_gelu_new"] / seconds["forward_backward"],
        "tflops_per_second": flops_per_token * tokens / seconds["step"] / 1e12,
    }
    if args.compile:
        figures["step_eager_seconds"] = seconds["step_eager"]
        figures["compile_speedup"] = seconds["step_eager"] / seconds["step"]
    if device.type == "cuda":
        figures["fraction_of_peak"] = figures["tflops_per_second"] / args.peak_tflops
    print(
        f"{figures['device']}: generator {args.size} ({config.n_layer} x {config.n_embd}), sequence {length}, batch {args.batch}, "
        f"{args.dtype}{', compiled' if args.compile else ''}"
    )
    print(
        f"  training step (both directions): {seconds['step'] * 1e3:.1f} ms = {figures['tokens_per_second']:,.0f} tokens/s"
    )
    print(
        f"  forward + backward alone:        {seconds['forward_backward'] * 1e3:.1f} ms = "
        f"{figures['forward_backward_tokens_per_second']:,.0f} tokens/s "
        f"({100 * figures['outside_network_fraction']:.0f}% of the step is outside the network)"
    )
    if args.compile:
        print(
            f"  training step uncompiled:         {seconds['step_eager'] * 1e3:.1f} ms "
            f"(torch.compile makes the step {figures['compile_speedup']:.2f}x faster)"
        )
    print(
        f"  forward + backward, stock gelu_new: {seconds['forward_backward_gelu_new'] * 1e3:.1f} ms "
        f"(the fused activation is {figures['fused_gelu_speedup']:.2f}x faster)"
    )
    print(
        f"  {figures['tflops_per_second']:.3f} TFLOP/s"
        + (
            f" = {100 * figures['fraction_of_peak']:.1f}% of {args.peak_tflops:g}"
            if "fraction_of_peak" in figures
            else ""
        )
    )
    if not math.isfinite(figures["tokens_per_second"]):
        raise SystemExit("timing failed")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(figures, handle, indent=2)


if __name__ == "__main__":
    main()
