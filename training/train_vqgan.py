#!/usr/bin/env python
"""Stage 1: train a TE-VQGAN (or a VQGAN baseline) on TextMNIST with Accelerate.

    accelerate launch training/train_vqgan.py --model_config hub_configs/te-vqgan-mnist.json \
        --dataset textmnist --mnist_dir ../shared/data/mnist --output_dir outputs/te-vqgan-mnist

Losses (the authors' stage 1): L1 reconstruction + LPIPS (`--perceptual_weight`) + hinge
PatchGAN with VQGAN's adaptive weight (from `--disc_start`) + the VQ loss (beta on the
commitment term) + the model's orthogonal regulariser. Adam (0.5, 0.9) for the autoencoder
and the discriminator. Without LPIPS (`--perceptual_weight 0`) the pixel loss defaults to L2:
L1 alone erases the colour of red, green and blue digits (`--reconstruction_loss`).

Beyond the paper, against codebook collapse: `--kmeans_init_step` and
`--dead_code_restart_steps` (`te_vqgan.training.codebook`); the model-side remedies are config
keys of `TEVQModel`. Validation reports colour fidelity and shape of the digits and shift
equivariance three ways (the authors' score, the digit's own tokens, per colour).

The final `--output_dir` is a `save_pretrained` folder (config.json + safetensors, a model
card and metrics.json) that `TEVQModel.from_pretrained` loads; `checkpoint-{step}` folders
beside it hold the training state for `--resume_from_checkpoint`, which continues exactly.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

import te_vqgan
from te_vqgan import TEVQModel, codebook_usage, orthogonal_loss
from te_vqgan.data.image_datasets import load_image_dataset, prepare_image
from te_vqgan.data.layout import LOCATIONS
from te_vqgan.data.tokenized import builds_textmnist
from te_vqgan.hub import eval_results, hub_repo_id
from te_vqgan.images import images_to_tensor, tensor_to_images
from te_vqgan.loading import load_model_config
from te_vqgan.metrics import (
    equivariance_summary,
    reconstruction_fidelity,
    shift_equivariance_by_colour,
    token_shifts_that_fit,
)
from te_vqgan.torch_utils import eval_mode
from te_vqgan.training import NLayerDiscriminator, PerceptualLossUnavailable, load_perceptual_loss  # noqa: F401 (re-exported for callers)
from te_vqgan.training.accelerate_utils import derive_seed, render_model_card, scaled_learning_rate
from te_vqgan.training.codebook import encoder_latents, init_codebook_kmeans, restart_dead_codes
from te_vqgan.training.engine import (
    RunInfo,
    StageParts,
    TrainingEngine,
    TrainingResult,
    TrainingStage,
    run_script,
    training_command,
)
from te_vqgan.training.settings import VQGANTrainingSettings, parse_settings
from te_vqgan.training.vqgan_step import VQGANLossWeights, vqgan_train_step
from te_vqgan.visualization import index_map_to_rgb, new_figure, save_figure


MODEL_CARD_TEMPLATE = Path(te_vqgan.__file__).parent / "model_cards" / "te_vqgan_model_card.md"  # = model_cards/ here


def parse_args(argv: list[str] | None = None) -> VQGANTrainingSettings:
    """Flags or `--config run.json` -> the run's settings (`te_vqgan.training.settings`), checked."""
    return parse_settings(VQGANTrainingSettings, argv, description=__doc__)


# ---------------------------------------------------------------------------- data
def load_image_datasets(args):
    """`(train, validation, shift_groups)`: two datasets with an image column, and uint8
    placements `[N, 5, 64, 64, 3]` for the equivariance metric (None without a shift split)."""

    if builds_textmnist(args.dataset):
        from te_vqgan.data import TextMNIST

        builder = TextMNIST(
            config_name=args.dataset_config,
            num_train=args.num_train,
            num_validation=args.num_validation,
            num_test=0,
            num_shift_groups=args.num_shift_groups,
            seed=args.dataset_seed,
            data_dir=args.mnist_dir,
            cache_dir=args.cache_dir,
        )
        builder.download_and_prepare()
        splits = {
            name: builder.as_dataset(split=name)
            for name in ("train", "validation", "shift")
            if name in builder.info.splits
        }
    else:
        splits = load_image_dataset(args.dataset, cache_dir=args.cache_dir, mnist_dir=args.mnist_dir)
    if "train" not in splits:
        raise ValueError(f"Dataset {args.dataset!r} has no train split (splits: {sorted(splits)}).")
    if args.max_train_samples is not None:
        splits["train"] = splits["train"].select(range(min(args.max_train_samples, len(splits["train"]))))
    if args.validation_split not in splits and args.validation_fraction is not None:
        # A fixed slice: the same images whatever the seed, so runs compare on one validation set.
        held = splits["train"].train_test_split(test_size=args.validation_fraction, shuffle=True, seed=0)
        splits["train"], splits[args.validation_split] = held["train"], held["test"]
    if args.validation_split not in splits:
        raise ValueError(
            f"Dataset {args.dataset!r} has no {args.validation_split!r} split for validation (splits: {sorted(splits)}); "
            "pass --validation_split with one of them, or --validation_fraction to hold out part of train."
        )
    validation = splits[args.validation_split]
    for name, split in (("train", splits["train"]), ("validation", validation)):
        if args.image_column not in split.column_names:
            raise ValueError(f"The {name} split has no {args.image_column!r} column (columns: {split.column_names}).")
    shift = splits.get("shift")
    return splits["train"], validation, None if shift is None else shift_groups_from_split(shift)


def shift_groups_from_split(shift) -> np.ndarray:
    """TextMNIST's `shift` split as uint8 placements `[groups, 5, H, W, 3]` in `LOCATIONS` order."""
    location_names = shift.features["objects"].feature["location"].names
    groups: dict[int, dict[str, np.ndarray]] = {}
    for example in shift:
        location = location_names[example["objects"][0]["location"]]
        groups.setdefault(example["shift_group"], {})[location] = np.asarray(example["image"].convert("RGB"))
    return np.stack([np.stack([group[name] for name in LOCATIONS]) for _, group in sorted(groups.items())])


class ToTensor:
    """Images of a batch -> `pixel_values` float `[B, 3, R, R]` in [-1, 1], each prepared by
    `te_vqgan.data.image_datasets.prepare_image` (RGB, resized on the shorter side, cropped square, flipped
    at random with `random_flip`); images already R x R, as TextMNIST's, are used as they are. With
    `crop_size` C, each is then cut to a random C x C window (`[B, 3, C, C]`; torch's global RNG, as
    `prepare_image`'s draws)."""

    def __init__(
        self,
        image_column: str,
        resolution: int,
        random_crop: bool = False,
        random_flip: bool = False,
        crop_size: int | None = None,
    ):
        self.image_column = image_column
        self.resolution = resolution
        self.random_crop, self.random_flip = random_crop, random_flip
        self.crop_size = crop_size

    def __call__(self, batch: dict) -> dict:
        prepared = [
            prepare_image(image, self.resolution, random_crop=self.random_crop, random_flip=self.random_flip)
            for image in batch[self.image_column]
        ]
        if self.crop_size is not None and self.crop_size != self.resolution:
            c, room = self.crop_size, self.resolution - self.crop_size + 1
            corners = torch.randint(0, room, (len(prepared), 2)).tolist()
            prepared = [array[top : top + c, left : left + c] for array, (top, left) in zip(prepared, corners)]
        return {"pixel_values": images_to_tensor(np.stack(prepared))}


def collate(examples: list[dict]) -> torch.Tensor:
    return torch.stack([example["pixel_values"] for example in examples])


# ---------------------------------------------------------------------------- validation
@torch.no_grad()
@torch.random.fork_rng(devices=[])
def validate(
    model, images: torch.Tensor, shift_groups, perceptual, batch_size: int, locations=None
) -> tuple[dict, torch.Tensor, torch.Tensor]:
    """Reconstruction errors, colour fidelity and shape (IoU) of the digits, codebook usage,
    the orthogonal term and shift equivariance three ways (the authors' score, the digit's own
    tokens, per colour). `locations`: each image's digit locations, when the dataset has them.

    Runs with the CPU RNG forked and draws nothing from any other, so validating never
    changes the training run.
    Returns `(metrics, reconstructions, index_maps)` of `images`.
    """
    device = next(model.parameters()).device
    with eval_mode(model):
        reconstructions, index_maps = [], []
        l1 = l2 = lp = 0.0
        for start in range(0, len(images), batch_size):
            x = images[start : start + batch_size].to(device)
            indices = model.encode_to_indices(x)
            recon = model.decode_indices(indices).clamp(-1, 1)
            l1 += (recon - x).abs().mean().item() * len(x)
            l2 += (recon - x).pow(2).mean().item() * len(x)
            if perceptual is not None:
                lp += perceptual(x, recon).mean().item() * len(x)
            reconstructions.append(recon.cpu())
            index_maps.append(indices.cpu())
        index_maps = torch.cat(index_maps)
        usage = codebook_usage(index_maps, model.num_codes)
        codebook = model.codebook.detach()
        if codebook.shape[0] > 4096:  # the full Gram matrix of a huge codebook is costly: a fixed subset
            codebook = codebook[
                torch.randperm(codebook.shape[0], generator=torch.Generator().manual_seed(0))[:4096].to(
                    codebook.device
                )
            ]
        metrics = {
            "val/recon_l1": l1 / len(images),
            "val/recon_l2": l2 / len(images),
            "val/codes_used": usage.codes_used,
            "val/perplexity": usage.perplexity,
            "val/orthogonal_loss": orthogonal_loss(codebook).item(),
        }
        if perceptual is not None:
            metrics["val/perceptual"] = lp / len(images)
        try:
            fidelity = reconstruction_fidelity(images, torch.cat(reconstructions), locations)
            metrics.update({f"val/{k}": v for k, v in fidelity.as_metrics().items()})
        except ValueError:  # a dataset without digit strokes (another domain): no colour to score
            pass
        if shift_groups is not None:
            by_colour = shift_equivariance_by_colour(model, shift_groups, batch_size=batch_size)
            metrics.update({f"val/{k}": v for k, v in equivariance_summary(by_colour).items()})
        shifts = token_shifts_that_fit(min(images.shape[-2:]), model.downsample_factor)
        if shifts:
            # On any dataset (beside the authors' protocol on TextMNIST): the validation images themselves,
            # by whole-token shifts.
            from te_vqgan.metrics import image_shift_equivariance  # noqa: PLC0415

            result = image_shift_equivariance(model, images, shifts=shifts, batch_size=batch_size)
            metrics["val/image_shift_equivariance"] = result.score
            metrics.update(
                {f"val/image_shift_equivariance_{k.replace(',', '_')}": v for k, v in result.per_shift.items()}
            )
    return metrics, torch.cat(reconstructions), index_maps


def save_validation_grid(images, reconstructions, index_maps, num_codes: int, path: Path, title: str) -> Path:
    """Rows of input | reconstruction | index map, as a PNG."""
    rows = min(8, len(images))
    figure, axes = new_figure(rows, 3, figsize=(6, 2 * rows))
    images, reconstructions = tensor_to_images(images[:rows]), tensor_to_images(reconstructions[:rows])
    for r in range(rows):
        for c, (picture, name) in enumerate(
            (
                (images[r], "input"),
                (reconstructions[r], "reconstruction"),
                (index_map_to_rgb(index_maps[r], num_codes), "code indices"),
            )
        ):
            axes[r, c].imshow(picture, interpolation="nearest")
            axes[r, c].set_xticks([])
            axes[r, c].set_yticks([])
            if r == 0:
                axes[r, c].set_title(name, fontsize=9)
    figure.suptitle(title, fontsize=9)
    figure.tight_layout()
    return save_figure(figure, path)


# ---------------------------------------------------------------------------- the stage
class VQGANStage(TrainingStage):
    """Stage 1 for the engine: the quantizer and the discriminator, one `vqgan_train_step` per batch."""

    name = "train_vqgan"
    script = "training/train_vqgan.py"
    final_figure_name = "reconstructions.png"

    def __init__(self, args: VQGANTrainingSettings):
        self.args = args

    def build(self, accelerator) -> StageParts:
        args = self.args
        # The perceptual network first: if it cannot be built the run stops before any work.
        self.perceptual = None
        if args.perceptual_weight > 0:
            self.perceptual = load_perceptual_loss(allow_download=args.allow_perceptual_download).to(
                accelerator.device
            )

        if args.model_config is not None:
            model = TEVQModel.from_config(load_model_config(args.model_config))
        else:
            from te_vqgan.loading import load_vq_model

            # A TEVQModel folder continues as it is; a stock diffusers VQModel (folder or Hub id) is
            # converted to the TEVQModel that computes exactly its outputs, then fine-tuned with the
            # orthogonal term (TEVQModel.from_vq_model).
            model = load_vq_model(args.pretrained_model_name_or_path, device="cpu")
            if not isinstance(model, TEVQModel):
                weight = (
                    {} if args.orthogonal_reg_weight is None else {"orthogonal_reg_weight": args.orthogonal_reg_weight}
                )
                model = TEVQModel.from_vq_model(model, **weight)
            elif args.orthogonal_reg_weight is not None:
                raise ValueError(
                    f"--orthogonal_reg_weight is for converting a stock VQModel; {args.pretrained_model_name_or_path!r} "
                    "is a TEVQModel, which keeps its config's weight."
                )
            model.train()
        if args.freeze_encoder:
            model.encoder.requires_grad_(False)
            model.quant_conv.requires_grad_(False)
        if args.freeze_decoder:
            model.decoder.requires_grad_(False)
            model.post_quant_conv.requires_grad_(False)
        resolution = args.resolution or model.config.sample_size
        if resolution % model.downsample_factor:
            raise ValueError(
                f"--resolution {resolution} is not a multiple of the model's downsampling factor f = {model.downsample_factor}."
            )
        crop = args.train_crop_size
        if crop is not None and (crop > resolution or crop % model.downsample_factor):
            raise ValueError(
                f"--train_crop_size {crop} must be a multiple of the model's downsampling factor f = "
                f"{model.downsample_factor} and at most --resolution {resolution}."
            )
        tokens = (crop or resolution) // model.downsample_factor
        if args.shift_equivariance_weight > 0 and tokens - 3 * args.shift_equivariance_max_shift < 1:
            raise ValueError(
                f"--shift_equivariance_max_shift {args.shift_equivariance_max_shift} leaves no token to compare on "
                f"{tokens}x{tokens}-token images (it needs at most {(tokens - 1) // 3})."
            )
        if resolution != model.config.sample_size:  # the saved config, card and grid say what it was trained on
            model.register_to_config(sample_size=resolution)
        if (
            args.kmeans_init_step is not None or args.dead_code_restart_steps
        ) and model.config.codebook_parametrization != "direct":
            raise ValueError(
                "--kmeans_init_step and --dead_code_restart_steps write the codes directly; the model's codebook is "
                f"{model.config.codebook_parametrization!r} (its codes are a learnt projection)."
            )
        discriminator = NLayerDiscriminator(model.config.out_channels, args.disc_ndf, args.disc_num_layers)

        with accelerator.local_main_process_first():  # one build per node, the others read its cache
            train_dataset, validation_dataset, self.shift_groups = load_image_datasets(args)
        transform = ToTensor(
            args.image_column,
            resolution,
            random_crop=not args.center_crop,
            random_flip=args.random_flip,
            crop_size=args.train_crop_size,
        )
        self.validation_images = ToTensor(args.image_column, resolution)(
            validation_dataset[: args.num_validation_images]
        )["pixel_values"]
        self.validation_locations = None
        if "objects" in validation_dataset.column_names:  # TextMNIST: score each digit's own cell
            names = validation_dataset.features["objects"].feature["location"].names
            self.validation_locations = [
                [names[o["location"]] for o in objects]
                for objects in validation_dataset[: args.num_validation_images]["objects"]
            ]

        learning_rate = args.learning_rate
        if args.scale_lr:
            learning_rate = scaled_learning_rate(
                args.learning_rate, args.train_batch_size, args.gradient_accumulation_steps, accelerator.num_processes
            )
        betas = (args.adam_beta1, args.adam_beta2)
        optimizers = [
            torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=learning_rate, betas=betas),
            torch.optim.Adam(discriminator.parameters(), lr=learning_rate, betas=betas),
        ]
        self.loss_weights = VQGANLossWeights(
            perceptual_weight=args.perceptual_weight,
            codebook_weight=args.codebook_weight,
            disc_weight=args.disc_weight,
            disc_start=args.disc_start,
            reconstruction_loss=args.reconstruction_loss,
            shift_equivariance_weight=args.shift_equivariance_weight,
        )
        return StageParts(
            [model, discriminator], optimizers, train_dataset.with_transform(transform), collate, learning_rate
        )

    def train_step(self, images, global_step: int) -> dict[str, torch.Tensor]:
        model, discriminator = self.models
        update_ae, update_d = self.updates
        restarted = self._codebook_remedies(images, global_step) if self.accelerator.sync_gradients else None
        terms = vqgan_train_step(
            self.accelerator,
            model,
            discriminator,
            update_ae,
            update_d,
            images,
            global_step,
            self.loss_weights,
            self.perceptual,
            shift=self._shift(global_step),
        )
        if restarted is not None:
            terms["codes_restarted"] = torch.tensor(float(restarted))
        return terms

    def _shift(self, global_step: int) -> tuple[int, int] | None:
        """This step's whole-token shift for the shift-equivariance term: (rows, columns), each drawn
        from 0..--shift_equivariance_max_shift, not both 0, from (seed, step) only (exact on resume)."""
        if self.args.shift_equivariance_weight <= 0:
            return None
        m = self.args.shift_equivariance_max_shift
        generator = torch.Generator().manual_seed(derive_seed(self.args.seed, global_step, 1))
        choice = int(torch.randint((m + 1) ** 2 - 1, (), generator=generator)) + 1  # 0 would be no shift
        return divmod(choice, m + 1)

    def _codebook_remedies(self, images, global_step: int) -> int | None:
        """k-means initialisation and dead-code restarts (`te_vqgan.training.codebook`) due at
        this step, before its update; returns the number of codes restarted, None if none ran.
        The draws come from a generator seeded by (seed, step), the same on every process."""
        args = self.args
        kmeans_due = args.kmeans_init_step is not None and global_step == args.kmeans_init_step
        restart_due = (
            args.dead_code_restart_steps > 0 and global_step > 0 and global_step % args.dead_code_restart_steps == 0
        )
        if not (kmeans_due or restart_due):
            return None
        model = self.accelerator.unwrap_model(self.models[0])
        latents = encoder_latents(self.accelerator, self.models[0], images)
        generator = torch.Generator().manual_seed(derive_seed(args.seed, global_step))
        if kmeans_due:
            init_codebook_kmeans(model, latents, generator=generator)
            return 0
        return restart_dead_codes(model, latents, args.dead_code_min_count, generator=generator)

    def validate(self, step: int, output_dir: Path):
        model = self.accelerator.unwrap_model(self.models[0])
        results, reconstructions, index_maps = validate(
            model,
            self.validation_images,
            self.shift_groups,
            self.perceptual,
            self.args.train_batch_size,
            self.validation_locations,
        )
        grid = save_validation_grid(
            self.validation_images,
            reconstructions,
            index_maps,
            model.num_codes,
            output_dir / "validation" / f"step-{step:07d}.png",
            f"step {step}",
        )
        return results, grid

    def save_final(self, folder: Path, record: dict, run: RunInfo) -> None:
        from huggingface_hub import ModelCardData

        args = self.args
        model = self.accelerator.unwrap_model(self.models[0])
        model.save_pretrained(folder, safe_serialization=True)
        record["reconstruction_loss"] = args.reconstruction_loss
        record["kmeans_init_step"] = args.kmeans_init_step
        record["dead_code_restart_steps"] = args.dead_code_restart_steps
        record["shift_equivariance_weight"] = args.shift_equivariance_weight
        config = model.config
        name = args.hub_model_id or Path(args.output_dir).name
        dataset_id = f"textmnist-{args.dataset_config}" if builds_textmnist(args.dataset) else args.dataset
        hub_dataset = hub_repo_id(args.dataset)  # the card's metadata names only Hub repos
        card_data = ModelCardData(
            library_name="diffusers",
            license="mit",
            datasets=[hub_dataset] if hub_dataset else None,
            base_model=hub_repo_id(args.pretrained_model_name_or_path),
            eval_results=eval_results(
                record,
                {
                    "shift_equivariance": "shift equivariance",
                    "image_shift_equivariance": "shift equivariance (whole-token shifts)",
                    "codes_used": "codes used",
                    "perplexity": "perplexity",
                    "recon_l1": "reconstruction L1",
                    "recon_l2": "reconstruction L2",
                },
                task_type="image-to-image",
                dataset_name=dataset_id,
                dataset_type=hub_dataset or dataset_id,
                dataset_split=args.validation_split,
            )
            or None,
            tags=["te-vqgan", "vqgan", "image-tokenizer", "translation-equivariance", "vector-quantization"],
            metrics=[
                m
                for m in (
                    "shift_equivariance",
                    "shift_equivariance_foreground",
                    "image_shift_equivariance",
                    "colour_fidelity",
                    "shape_iou",
                    "codes_used",
                    "perplexity",
                    "recon_l1",
                    "recon_l2",
                )
                if m in record
            ],
            model_name=name,
        )
        shown = {
            k: (f"{v:.4f}" if isinstance(v, float) else v) for k, v in record.items() if not k.startswith("final_")
        }
        card = render_model_card(
            MODEL_CARD_TEMPLATE,
            card_data,
            model_name=name,
            description=("TE-VQGAN" if config.orthogonal_reg_weight > 0 else "VQGAN")
            + f" ({config.downsample_type}) image quantizer.",
            repo_url="https://github.com/wcshin-git/TE-VQGAN",
            repo_id=args.hub_model_id or str(args.output_dir),
            resolution=config.sample_size,
            token_grid=config.sample_size // model.downsample_factor,
            num_codes=config.num_vq_embeddings,
            orthogonal=config.orthogonal_reg_weight > 0,
            orthogonal_weight=config.orthogonal_reg_weight,
            downsample_type=config.downsample_type,
            commitment_beta=config.commitment_beta,
            global_step=run.global_step,
            scaled_down=args.scaled_down,
            metrics=shown,
            dataset=dataset_id,
            total_batch_size=run.total_batch_size,
            learning_rate=f"{run.learning_rate:.4g}",
            mixed_precision=run.mixed_precision,
            perceptual_weight=args.perceptual_weight,
            reconstruction_loss=args.reconstruction_loss.upper().replace("+", " + "),
            disc_weight=args.disc_weight,
            disc_start=args.disc_start,
            codebook_lookup=config.codebook_lookup,
            codebook_parametrization=config.codebook_parametrization,
            active_codes_only=config.orthogonal_reg_active_codes_only,
            kmeans_init_step=args.kmeans_init_step,
            dead_code_restart_steps=args.dead_code_restart_steps,
            training_command=training_command(self.script, run.settings),
            config_json=json.dumps(
                {k: v for k, v in dict(config).items() if not k.startswith("_")}, indent=2, default=str
            ),
        )
        card.save(folder / "README.md")


def main(args: VQGANTrainingSettings) -> TrainingResult:
    return TrainingEngine(args).fit(VQGANStage(args))


if __name__ == "__main__":
    run_script(main, parse_args, "train_vqgan.py", expected=(PerceptualLossUnavailable,))
