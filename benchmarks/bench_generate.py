"""Stage-2 generation speed, every comparison measured side by side in one run.

    python benchmarks/bench_generate.py            # the authors' generator size (8 layers, width 256)
    python benchmarks/bench_generate.py --quick    # a 4-layer, width-128 generator, fewer repeats

1. text-to-image image tokens/s with the KV cache against without (batch 8, 256 tokens);
2. the modality-mask `LogitsProcessor` against plain top-k sampling (same number of tokens);
3. images/s of `TextToImagePipeline` (sampling + decoding) at batch 1, 8, 32, 128;
4. on CUDA only: the static cache against the dynamic one.

Timings are medians of calls interleaved round-robin (`common.interleaved_medians`), so that
a drift in the machine's speed hits every variant alike. Weights are random: the time of a
sampling step does not depend on them (the mask fixes the number of tokens).
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
import torch
from common import interleaved_medians, model_config

from te_vqgan import TEVQModel
from te_vqgan.data.captions import render_caption
from te_vqgan.data.layout import COLOURS, QUADRANTS
from te_vqgan.generation import (
    SequenceLayout,
    TextImageTokenizer,
    build_generator_config,
    generate_image_indices,
    top_k_from_fraction,
)
from te_vqgan.pipelines import TextToImagePipeline


SIZES = {"authors": dict(n_layer=8, n_embd=256, n_head=8), "quick": dict(n_layer=4, n_embd=128, n_head=4)}


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--quick", action="store_true", help="a 4-layer, width-128 generator, the small quantizer, 2 repeats"
    )
    parser.add_argument(
        "--repeats", type=int, default=None, help="timed calls per variant (median; default 3, quick 2)"
    )
    parser.add_argument("--batch-sizes", default="1,8,32,128", help="batches for the images/s figure")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--json", default=None, help="also write the figures to this JSON file")
    return parser.parse_args()


def prompts(count: int, seed: int = 0) -> list[str]:
    """Real captions of one to four digits in random quadrants."""
    rng = np.random.default_rng(seed)
    captions = []
    for _ in range(count):
        places = rng.choice(len(QUADRANTS), size=rng.integers(1, 5), replace=False)
        objects = [(QUADRANTS[p], COLOURS[rng.integers(4)], int(rng.integers(10))) for p in places]
        captions.append(render_caption(objects, rng))
    return captions


def say(text: str) -> None:
    print(text, flush=True)


def main() -> int:
    args = parse_args()
    device = torch.device(args.device)
    repeats = args.repeats or (2 if args.quick else 3)
    size = SIZES["quick" if args.quick else "authors"]
    torch.manual_seed(0)
    vqmodel = TEVQModel(**model_config("small" if args.quick else "default")).to(device).eval()
    tokenizer = TextImageTokenizer.build(vqmodel.num_codes, text_length=50)
    grid = vqmodel.config.sample_size // vqmodel.downsample_factor
    from transformers import GPT2LMHeadModel

    generator = GPT2LMHeadModel(build_generator_config(tokenizer, (grid, grid), **size)).to(device).eval()
    layout = SequenceLayout.from_tokenizer(tokenizer, (grid, grid))
    n = layout.num_image_tokens
    say(
        f"device {device}, torch {torch.__version__}, threads {torch.get_num_threads()}; generator {size} "
        f"({sum(p.numel() for p in generator.parameters()) / 1e6:.1f}M parameters), {n} image tokens, "
        f"vocabulary {len(tokenizer)}, top-k {top_k_from_fraction(len(tokenizer))}; median of {repeats} interleaved calls"
    )
    results: dict = {"device": str(device), "generator": size, "image_tokens": n, "repeats": repeats}
    text_ids = tokenizer.encode_captions(prompts(8)).to(device)

    @torch.no_grad()
    def t2i(use_cache: bool = True, cache_implementation: str | None = None, ids=text_ids):
        return generate_image_indices(
            generator, tokenizer, ids, use_cache=use_cache, cache_implementation=cache_implementation
        )

    @torch.no_grad()
    def plain_top_k():
        # The same prompt and number of new tokens, top-k over the whole vocabulary, no mask.
        prompt = layout.t2i_prompt(text_ids)
        return generator.generate(
            prompt,
            attention_mask=torch.ones_like(prompt),
            do_sample=True,
            top_k=top_k_from_fraction(len(tokenizer)),
            max_new_tokens=n + 1,
            min_new_tokens=n + 1,
            eos_token_id=layout.eoi_id,
            pad_token_id=layout.pad_id,
        )

    # 1. KV cache.
    times = interleaved_medians({"cache": lambda: t2i(True), "no_cache": lambda: t2i(False)}, repeats, 1, device)
    tokens = len(text_ids) * n
    results["kv_cache"] = {
        "batch": len(text_ids),
        "tokens_per_s_cache": tokens / times["cache"],
        "tokens_per_s_no_cache": tokens / times["no_cache"],
        "speedup": times["no_cache"] / times["cache"],
    }
    say(
        f"1. t2i batch 8 x {n} tokens: {tokens / times['cache']:,.0f} tokens/s with the KV cache, "
        f"{tokens / times['no_cache']:,.0f} without: {times['no_cache'] / times['cache']:.1f}x (target >= 8x)"
    )

    # 2. The mask's cost.
    times = interleaved_medians({"constrained": lambda: t2i(True), "plain": plain_top_k}, repeats + 2, 1, device)
    results["mask_cost"] = {
        "seconds_constrained": times["constrained"],
        "seconds_plain": times["plain"],
        "ratio": times["constrained"] / times["plain"],
    }
    say(
        f"2. modality mask + top-k {times['constrained']:.3f} s vs plain top-k {times['plain']:.3f} s per batch: "
        f"{times['constrained'] / times['plain']:.3f}x (target <= 1.05x)"
    )

    # 3. Images/s of the pipeline.
    pipeline = TextToImagePipeline(vqmodel=vqmodel, generator=generator, tokenizer=tokenizer)
    pipeline.set_progress_bar_config(disable=True)
    results["images_per_s"] = {}
    for batch in [int(b) for b in args.batch_sizes.split(",")]:
        captions = prompts(batch, seed=batch)
        seconds = interleaved_medians(
            {"pipeline": lambda: pipeline(captions, output_type="np")},
            max(1, repeats - 1),
            1 if batch <= 8 else 0,
            device,
        )["pipeline"]
        results["images_per_s"][batch] = batch / seconds
        say(
            f"3. pipeline batch {batch:>3}: {batch / seconds:,.2f} images/s ({seconds:.2f} s per call, decoding included)"
        )

    # 4. Static cache (CUDA).
    if device.type == "cuda":
        times = interleaved_medians(
            {"static": lambda: t2i(True, "static"), "dynamic": lambda: t2i(True)}, repeats + 2, 2, device
        )
        results["static_cache"] = {
            "tokens_per_s_static": tokens / times["static"],
            "tokens_per_s_dynamic": tokens / times["dynamic"],
            "speedup": times["dynamic"] / times["static"],
        }
        say(
            f"4. static cache {tokens / times['static']:,.0f} tokens/s vs dynamic {tokens / times['dynamic']:,.0f}: "
            f"{times['dynamic'] / times['static']:.2f}x"
        )
    if args.json:
        from te_vqgan.files import write_json_atomic

        write_json_atomic(args.json, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
