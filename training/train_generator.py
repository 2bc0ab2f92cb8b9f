#!/usr/bin/env python
"""Stage 2: train a GPT-2 over the merged text+image vocabulary, in both directions, on a
TextMNIST tokenised once by a frozen quantizer.

    te-vqgan tokenize-dataset --vqmodel outputs/te-vqgan-mnist --output-dir textmnist-tokens
    accelerate launch training/train_generator.py --tokenized_dataset textmnist-tokens \
        --vqmodel outputs/te-vqgan-mnist --output_dir outputs/generator

Each batch makes an image-to-text optimiser step, then a text-to-image step, as the authors
do (`--directions` picks one or both); each step's loss weighs the target modality 7 times
the other ((other + 7 x target) / 8), padding ignored. The authors' optimisation: Adam lr
1e-3, cosine schedule with 6 hard restarts and one epoch of warm-up, gradient norm clipped at
1.0, batch 100 per GPU, 20 epochs, seed 42; their model size: width 256, 8 layers, 8 heads,
text length 50 (a stock GPT-2 here; `te_vqgan.generation` documents the sequence layouts).

The quantizer never runs in training (the tokens come from the cache, whose fingerprint must
match `--vqmodel`); it decodes the validation samples only. The final `--output_dir` is a
pipeline folder: `TextToImagePipeline.from_pretrained(OUTPUT)` and
`ImageToTextPipeline.from_pretrained(OUTPUT)` load it.
"""

from __future__ import annotations

from pathlib import Path

import torch

import te_vqgan
from te_vqgan.data.captions import get_grammar
from te_vqgan.data.tokenized import load_tokenized_dataset
from te_vqgan.evaluation import caption_variant, image_to_text_accuracy, objects_to_triplets
from te_vqgan.generation import (
    SequenceLayout,
    TextImageTokenizer,
    build_generator_config,
    generate_caption_ids,
    generate_image_indices,
    generator_loss,
    init_image_positions_2d,
    top_k_from_fraction,
)
from te_vqgan.hub import eval_results, hub_repo_id
from te_vqgan.images import tensor_to_images
from te_vqgan.loading import load_vq_model
from te_vqgan.models.stock_vq_model import as_tokenizer
from te_vqgan.pipelines import TextToImagePipeline
from te_vqgan.torch_utils import eval_mode
from te_vqgan.training.accelerate_utils import render_model_card
from te_vqgan.training.engine import (
    RunInfo,
    StageParts,
    TrainingEngine,
    TrainingResult,
    TrainingStage,
    run_script,
    training_command,
)
from te_vqgan.training.settings import DIRECTIONS, GeneratorTrainingSettings, parse_settings
from te_vqgan.visualization import save_captioned_images


MODEL_CARD_TEMPLATE = (
    Path(te_vqgan.__file__).parent / "model_cards" / "te_vqgan_pipeline_card.md"
)  # = model_cards/ here


def parse_args(argv: list[str] | None = None) -> GeneratorTrainingSettings:
    """Flags or `--config run.json` -> the run's settings (`te_vqgan.training.settings`), checked."""
    return parse_settings(GeneratorTrainingSettings, argv, description=__doc__)


class CaptionsAndTokens:
    """Collate: every caption of each example as text ids `[B, C, T]` (C the most captions of
    an example, shorter lists padded by repeating their first) with `num_captions` `[B]`, and
    the index maps as image ids `[B, H*W]`.

    Which caption an example trains with is drawn in the training step (`pick_captions`), not
    here: Accelerate fetches one batch ahead, so a draw here would come before the checkpoint
    of the previous step and a resumed run would draw differently.
    """

    def __init__(self, tokenizer: TextImageTokenizer):
        self.tokenizer = tokenizer

    def __call__(self, examples: list[dict]) -> dict[str, torch.Tensor]:
        most = max(len(e["captions"]) for e in examples)
        captions = [
            c for e in examples for c in (list(e["captions"]) + [e["captions"][0]] * (most - len(e["captions"])))
        ]
        text_ids = self.tokenizer.encode_captions(captions).view(len(examples), most, -1)
        indices = torch.stack([torch.as_tensor(e["indices"]) for e in examples])
        return {
            "text_ids": text_ids,
            "num_captions": torch.tensor([len(e["captions"]) for e in examples]),
            "image_ids": self.tokenizer.encode_image_indices(indices),
        }


def pick_captions(batch: dict[str, torch.Tensor], generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
    """One caption per example, uniformly among its own (the global CPU RNG unless
    `generator`): `text_ids` `[B, T]`, `image_ids` unchanged."""
    counts = batch["num_captions"].cpu()
    choice = (torch.rand(len(counts), generator=generator) * counts).long().clamp_max(counts - 1)
    device = batch["text_ids"].device
    text_ids = batch["text_ids"][torch.arange(len(counts), device=device), choice.to(device)]
    return {"text_ids": text_ids, "image_ids": batch["image_ids"]}


# ---------------------------------------------------------------------------- the stage
class GeneratorStage(TrainingStage):
    """Stage 2 for the engine: one GPT-2, an i2t and a t2i optimizer step per batch."""

    name = "train_generator"
    script = "training/train_generator.py"
    final_figure_name = "samples.png"

    def __init__(self, args: GeneratorTrainingSettings):
        self.args = args
        self.updates_per_batch = len(args.direction_list)

    def build(self, accelerator) -> StageParts:
        from transformers import GPT2LMHeadModel

        args = self.args
        # Everything that can fail on bad input before the model is built.
        self.vqmodel, self.vq_description = load_vq_model(
            args.vqmodel, device=accelerator.device, output_loading_info=True
        )
        self.vqmodel.requires_grad_(False)
        dataset, self.quantizer_info = load_tokenized_dataset(args.tokenized_dataset, vqmodel=self.vqmodel)
        for split in ("train", args.validation_split):
            if split not in dataset:
                raise ValueError(f"The tokenised dataset has no {split!r} split (splits: {sorted(dataset)}).")
        unknown = [s.strip() for s in args.evaluation_splits.split(",") if s.strip() and s.strip() not in dataset]
        if args.num_evaluation_examples and unknown:  # before training, not skipped at the end
            raise ValueError(
                f"--evaluation_splits {unknown} are not splits of the tokenised dataset (splits: {sorted(dataset)})."
            )
        train = dataset["train"]
        if args.train_subset_size is not None:
            if args.train_subset_size > len(train):
                raise ValueError(
                    f"--train_subset_size {args.train_subset_size} is more than the {len(train)} train examples."
                )
            train = train.select(range(args.train_subset_size))
        self.num_train = len(train)
        self.variant = caption_variant(train.features)
        grammar = get_grammar(self.variant)
        longest = grammar.max_canonical_tokens if args.caption_form == "canonical" else grammar.max_caption_tokens
        if args.text_length < longest + 2:
            raise ValueError(
                f"--text_length {args.text_length} cannot hold the longest {args.caption_form} caption of "
                f"{self.variant!r}: {longest} words plus <bot> and <eot> need --text_length {longest + 2}."
            )
        self.tokenizer = TextImageTokenizer.build(
            self.quantizer_info.num_codes, args.text_length, self.variant, caption_form=args.caption_form
        )
        self.layout = SequenceLayout.from_tokenizer(self.tokenizer, tuple(self.quantizer_info.image_grid))
        self.dataset = dataset

        config = build_generator_config(
            self.tokenizer,
            tuple(self.quantizer_info.image_grid),
            n_embd=args.n_embd,
            n_layer=args.n_layer,
            n_head=args.n_head,
            position_scheme=args.position_scheme,
            resid_pdrop=args.dropout,
            embd_pdrop=args.dropout,
            attn_pdrop=args.dropout,
        )
        model = GPT2LMHeadModel(config)
        if args.image_position_init == "sincos2d":
            init_image_positions_2d(model, self.layout)
        validation = dataset[args.validation_split]
        # A fixed caption per validation example, so that every validation compares alike.
        self.validation_batch = pick_captions(
            CaptionsAndTokens(self.tokenizer)(
                [validation[i] for i in range(min(args.num_validation_examples, len(validation)))]
            ),
            generator=torch.Generator().manual_seed(0),
        )
        betas = (args.adam_beta1, args.adam_beta2)
        if args.weight_decay:
            decayed = [p for p in model.parameters() if p.ndim >= 2]
            kept = [p for p in model.parameters() if p.ndim < 2]
            groups = [{"params": decayed, "weight_decay": args.weight_decay}, {"params": kept, "weight_decay": 0.0}]
            optimizer = torch.optim.AdamW(groups, lr=args.learning_rate, betas=betas)
        else:
            optimizer = torch.optim.Adam(model.parameters(), lr=args.learning_rate, betas=betas)
        return StageParts([model], [optimizer], train, CaptionsAndTokens(self.tokenizer), args.learning_rate)

    def _sequence(self, direction: str, batch: dict[str, torch.Tensor]) -> torch.LongTensor:
        if direction == "t2i":
            return self.layout.t2i_sequence(batch["text_ids"], batch["image_ids"])
        return self.layout.i2t_sequence(batch["image_ids"], batch["text_ids"])

    def train_step(self, batch, global_step: int) -> dict[str, torch.Tensor]:
        model, update = self.models[0], self.updates[0]
        batch = pick_captions(batch)  # both directions train on the same caption
        terms: dict[str, torch.Tensor] = {}
        for direction in self.args.direction_list:
            with self.accelerator.autocast():
                output = generator_loss(
                    model, self._sequence(direction, batch), self.layout, direction, self.args.target_loss_weight
                )
            update(output.loss)
            terms[f"{direction}_loss"] = output.loss.detach().float()
            terms[f"{direction}_text_loss"] = output.text_loss.detach().float()
            terms[f"{direction}_image_loss"] = output.image_loss.detach().float()
        terms["loss"] = torch.stack([terms[f"{d}_loss"] for d in self.args.direction_list]).mean()
        return terms

    @torch.no_grad()
    @torch.random.fork_rng(devices=[])
    def validate(self, step: int, output_dir: Path):
        """Teacher-forced losses on validation examples, then samples both ways (seeded) as
        one figure: generated images under their prompts, validation images (as the quantizer
        reconstructs them) over their generated captions."""
        args, accelerator = self.args, self.accelerator
        model = accelerator.unwrap_model(self.models[0])
        device = accelerator.device
        with eval_mode(model):
            batch = {k: v.to(device) for k, v in self.validation_batch.items()}
            results: dict[str, float] = {}
            for direction in DIRECTIONS:
                sums = {"loss": 0.0, "text_loss": 0.0, "image_loss": 0.0}
                count = len(batch["text_ids"])
                for start in range(0, count, args.train_batch_size):
                    chunk = {k: v[start : start + args.train_batch_size] for k, v in batch.items()}
                    with accelerator.autocast():
                        output = generator_loss(
                            model, self._sequence(direction, chunk), self.layout, direction, args.target_loss_weight
                        )
                    for name in sums:
                        sums[name] += getattr(output, name).float().item() * len(chunk["text_ids"])
                results.update({f"val/{direction}_{name}": value / count for name, value in sums.items()})

            n = min(args.num_validation_samples, len(batch["text_ids"]))
            options = dict(top_k_fraction=args.top_k_fraction, temperature=args.temperature)
            quantizer = as_tokenizer(self.vqmodel)
            grid = tuple(self.quantizer_info.image_grid)
            prompts = self.tokenizer.decode_captions(batch["text_ids"][:n].cpu())
            codes = generate_image_indices(
                model, self.tokenizer, batch["text_ids"][:n], generator=torch.Generator().manual_seed(0), **options
            )
            generated = tensor_to_images(quantizer.decode_indices(codes.to(device)))
            caption_ids = generate_caption_ids(
                model, self.tokenizer, batch["image_ids"][:n], generator=torch.Generator().manual_seed(0), **options
            )
            captions = self.tokenizer.decode_captions(caption_ids.cpu())
            inputs = tensor_to_images(
                quantizer.decode_indices(
                    self.tokenizer.decode_image_indices(batch["image_ids"][:n].cpu(), grid).to(device)
                )
            )
            validation = self.dataset[args.validation_split]
            truths = [objects_to_triplets(validation[i]["objects"], validation.features) for i in range(n)]
            results["val/i2t_accuracy_samples"] = image_to_text_accuracy(captions, truths, self.variant)
            figure = save_captioned_images(
                list(generated) + list(inputs),
                [f"prompt: {p}" for p in prompts] + [f"generated: {c}" for c in captions],
                output_dir / "validation" / f"step-{step:07d}.png",
                title=f"step {step}: text-to-image (prompt under each image), then image-to-text (generated caption under each)",
                columns=n,
            )
        return results, figure

    @torch.no_grad()
    def evaluate_image_to_text(self, model, split: str) -> float:
        """Image-to-text accuracy (`te_vqgan.evaluation`) on the first examples of `split`."""
        data = self.dataset[split]
        n = min(self.args.num_evaluation_examples, len(data))
        examples = [data[i] for i in range(n)]
        image_ids = self.tokenizer.encode_image_indices(torch.stack([torch.as_tensor(e["indices"]) for e in examples]))
        captions: list[str] = []
        generator = torch.Generator().manual_seed(0)
        for chunk in image_ids.split(self.args.train_batch_size):
            ids = generate_caption_ids(
                model,
                self.tokenizer,
                chunk.to(self.accelerator.device),
                top_k_fraction=self.args.top_k_fraction,
                temperature=self.args.temperature,
                generator=generator,
            )
            captions.extend(self.tokenizer.decode_captions(ids.cpu()))
        return image_to_text_accuracy(
            captions, [objects_to_triplets(e["objects"], data.features) for e in examples], self.variant
        )

    def save_final(self, folder: Path, record: dict, run: RunInfo) -> None:
        from huggingface_hub import ModelCardData

        args = self.args
        model = self.accelerator.unwrap_model(self.models[0])
        model.eval()
        if args.num_evaluation_examples:
            for split in [s.strip() for s in args.evaluation_splits.split(",") if s.strip()]:
                if split in self.dataset:  # checked at build
                    with torch.random.fork_rng(devices=[]):
                        record[f"i2t_accuracy_{split}"] = self.evaluate_image_to_text(model, split)
        pipeline = TextToImagePipeline(
            vqmodel=self.vqmodel,
            generator=model,
            tokenizer=self.tokenizer,
            top_k_fraction=args.top_k_fraction,
            temperature=args.temperature,
        )
        pipeline.save_pretrained(folder, safe_serialization=True)

        name = args.hub_model_id or Path(args.output_dir).name
        config = model.config
        card_data = ModelCardData(
            library_name="diffusers",
            license="mit",
            pipeline_tag="text-to-image",
            base_model=hub_repo_id(self.quantizer_info.source),  # the quantizer, when it came from the Hub
            eval_results=[
                result
                for split in self.dataset
                if f"i2t_accuracy_{split}" in record
                for result in eval_results(
                    record,
                    {f"i2t_accuracy_{split}": f"image-to-text accuracy ({split})"},
                    task_type="image-to-text",
                    dataset_name=f"TextMNIST ({self.variant}), tokenised",
                    dataset_type=f"textmnist-{self.variant}",
                    dataset_split=split,
                )
            ]
            or None,
            tags=["te-vqgan", "text-to-image", "image-to-text", "gpt2", "vector-quantization"],
            metrics=sorted(
                k
                for k in record
                if not k.startswith("final_") and (k.endswith("_loss") or k.startswith("i2t_accuracy"))
            ),
            model_name=name,
        )
        shown = {
            k: (f"{v:.4f}" if isinstance(v, float) else v) for k, v in record.items() if not k.startswith("final_")
        }
        card = render_model_card(
            MODEL_CARD_TEMPLATE,
            card_data,
            model_name=name,
            repo_id=args.hub_model_id or str(args.output_dir),
            quantizer_description=f"{self.quantizer_info.class_name} from `{self.quantizer_info.source}`",
            num_codes=self.quantizer_info.num_codes,
            grid="x".join(str(n) for n in self.quantizer_info.image_grid),
            n_layer=config.n_layer,
            n_embd=config.n_embd,
            n_head=config.n_head,
            num_parameters=f"{sum(p.numel() for p in model.parameters()) / 1e6:.2f}M",
            vocab_size=config.vocab_size,
            directions=" then ".join(args.direction_list),
            num_image_tokens=self.layout.num_image_tokens,
            top_k_percent=f"{100 * args.top_k_fraction:g} (k = {top_k_from_fraction(config.vocab_size, args.top_k_fraction)})",
            global_step=run.global_step,
            scaled_down=args.scaled_down,
            metrics=shown,
            dataset=f"TextMNIST ({self.variant}) tokenised at `{args.tokenized_dataset}`",
            num_train=self.num_train,
            train_subset_size=args.train_subset_size,
            fingerprint=self.quantizer_info.fingerprint[:12],
            target_weight=f"{args.target_loss_weight:g}",
            target_weight_plus_one=f"{args.target_loss_weight + 1:g}",
            total_batch_size=run.total_batch_size,
            learning_rate=f"{run.learning_rate:.4g}",
            lr_scheduler=f"{args.lr_scheduler}, {args.lr_num_cycles} cycle(s)",
            max_grad_norm=args.max_grad_norm,
            mixed_precision=run.mixed_precision,
            training_command=training_command(self.script, run.settings),
        )
        card.save(folder / "README.md")

    def tracker_config(self) -> dict:
        return {"directions": ",".join(self.args.direction_list)}

    def checkpoint_state(self) -> dict:
        return {"quantizer_fingerprint": self.quantizer_info.fingerprint}

    def check_resume_state(self, state: dict, checkpoint: Path) -> None:
        recorded = state.get("quantizer_fingerprint")
        if recorded is not None and recorded != self.quantizer_info.fingerprint:
            raise ValueError(
                f"Checkpoint {str(checkpoint)!r} was trained on the tokens of another quantizer (fingerprint {recorded[:12]}) "
                f"than --tokenized_dataset {self.args.tokenized_dataset!r} ({self.quantizer_info.fingerprint[:12]}); "
                "resume it with its own tokens, or train into a new --output_dir."
            )


def main(args: GeneratorTrainingSettings) -> TrainingResult:
    return TrainingEngine(args).fit(GeneratorStage(args))


if __name__ == "__main__":
    run_script(main, parse_args, "train_generator.py")
