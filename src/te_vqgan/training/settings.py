"""Typed settings of the two training stages: one frozen dataclass per stage, parsed once.

transformers' way (`TrainingArguments` + `HfArgumentParser`): every setting is a field with its
help text, checked in `__post_init__` with a one-line error, and the object the command line makes
is the object the code reads, unchanged, to the end. A run saves it beside its outputs
(`OUTPUT/training_settings.json`).

- `TrainingSettings`: what the engine reads (the loop, the schedule, checkpoints, logging, the Hub);
- `VQGANTrainingSettings` (stage 1, `training/train_vqgan.py`) and `GeneratorTrainingSettings`
  (stage 2, `training/train_generator.py`) add their stage's settings and defaults.

Flags and a JSON file are two spellings of the same object, and round-trip:

    settings = parse_settings(GeneratorTrainingSettings, ["--tokenized_dataset", "t", "--vqmodel", "q", "--output_dir", "o"])
    settings.to_json("run.json")
    assert parse_settings(GeneratorTrainingSettings, ["--config", "run.json"]) == settings
    assert parse_settings(GeneratorTrainingSettings, settings.to_flags()) == settings

Flags given after `--config` override the file's values (`--config run.json --resume_from_checkpoint latest`).
Values are checked here; whether input folders exist is checked by the script when the run
starts (`check_inputs`), so that a plan can build the settings of stages whose inputs are not made yet.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, TypeVar

from ..generation.layout import POSITION_SCHEMES
from ..generation.sampling import check_temperature, check_top_k_fraction
from ..generation.tokenizer import CAPTION_FORMS
from ..losses import RECONSTRUCTION_LOSSES


__all__ = [
    "LR_SCHEDULERS",
    "GeneratorTrainingSettings",
    "SETTINGS_FILE",
    "TrainingSettings",
    "VQGANTrainingSettings",
    "parse_settings",
    "settings_parser",
]

# diffusers.optimization's schedules (the ones the diffusers training examples offer).
LR_SCHEDULERS = ("constant", "constant_with_warmup", "linear", "cosine", "cosine_with_restarts", "polynomial")
LRScheduler = Literal["constant", "constant_with_warmup", "linear", "cosine", "cosine_with_restarts", "polynomial"]
#: where a run saves its settings, beside its outputs
SETTINGS_FILE = "training_settings.json"

Settings = TypeVar("Settings", bound="TrainingSettings")


def _help(text: str, **metadata) -> dict:
    return {"help": text, **metadata}


def _at_least(settings, minimum: int, *names: str) -> None:
    for name in names:
        value = getattr(settings, name)
        if value is not None and value < minimum:
            raise ValueError(f"--{name} must be >= {minimum} (got {value})")


def _finite(settings, *names: str) -> None:
    for name in names:
        value = getattr(settings, name)
        if value is not None and not (isinstance(value, (int, float)) and math.isfinite(value)):
            raise ValueError(f"argument --{name}: expected a finite number (got '{value}')")


@dataclass(frozen=True, kw_only=True)
class TrainingSettings:
    """The engine's settings (`te_vqgan.training.engine.TrainingEngine`); defaults are a stage's own."""

    output_dir: str = field(metadata=_help("The run's folder: checkpoints, then the published model."))
    seed: int = field(default=0, metadata=_help("Seeds the model, the data order and every draw."))
    train_batch_size: int = field(default=32, metadata=_help("Per device."))
    num_train_epochs: int = 1
    max_train_steps: int | None = field(default=None, metadata=_help("Overrides --num_train_epochs."))
    gradient_accumulation_steps: int = 1
    learning_rate: float = 1e-3
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    lr_scheduler: LRScheduler = field(default="constant", metadata=_help("diffusers.optimization schedule."))
    lr_warmup_steps: int | None = field(default=0, metadata=_help("Warm-up optimizer steps (None: one epoch)."))
    lr_num_cycles: int = field(default=1, metadata=_help("Hard restarts of cosine_with_restarts."))
    max_grad_norm: float | None = field(
        default=None, metadata=_help("Clip each optimizer step's gradient norm to this (None: no clipping).")
    )
    mixed_precision: Literal["no", "fp16", "bf16"] | None = field(
        default=None, metadata=_help("Default: what `accelerate launch` / its config file says, else no.")
    )
    cpu: bool = field(
        default=False, metadata=_help("Train on CPU even where a GPU is present (also: DDP over gloo on CPU).")
    )
    dataloader_num_workers: int = 0
    checkpointing_steps: int = 5000
    checkpoints_total_limit: int | None = None
    resume_from_checkpoint: str | None = field(default=None, metadata=_help("'latest' or a checkpoint-<step> folder."))
    validation_steps: int = 2000
    report_to: str = field(default="tensorboard", metadata=_help("tensorboard, wandb, all or none."))
    logging_dir: str = "logs"
    push_to_hub: bool = False
    hub_model_id: str | None = None
    hub_token: str | None = None
    hub_private_repo: bool = False
    scaled_down: str | None = field(
        default=None,
        metadata=_help(
            "Say in the model card how this run is smaller than the paper's (e.g. '2k images, 300 steps')."
        ),
    )

    def __post_init__(self):
        _at_least(
            self,
            1,
            "train_batch_size",
            "num_train_epochs",
            "gradient_accumulation_steps",
            "checkpointing_steps",
            "validation_steps",
            "lr_num_cycles",
            "max_train_steps",
            "checkpoints_total_limit",
        )
        _at_least(self, 0, "lr_warmup_steps", "dataloader_num_workers")
        _finite(self, "learning_rate", "adam_beta1", "adam_beta2", "max_grad_norm")
        if not self.learning_rate >= 0:
            raise ValueError(f"--learning_rate must be >= 0 (got {self.learning_rate})")
        if self.max_grad_norm is not None and not self.max_grad_norm > 0:
            raise ValueError(f"--max_grad_norm must be a finite number > 0 (got {self.max_grad_norm})")
        for name in ("adam_beta1", "adam_beta2"):
            if not 0 <= getattr(self, name) < 1:
                raise ValueError(f"--{name} must be in [0, 1) (got {getattr(self, name)})")
        if self.lr_scheduler not in LR_SCHEDULERS:
            raise ValueError(f"--lr_scheduler must be one of {', '.join(LR_SCHEDULERS)} (got {self.lr_scheduler!r})")
        if self.mixed_precision not in (None, "no", "fp16", "bf16"):
            raise ValueError(f"--mixed_precision must be no, fp16 or bf16 (got {self.mixed_precision!r})")
        if self.push_to_hub and not self.hub_model_id:
            raise ValueError("--push_to_hub needs --hub_model_id")
        if not str(self.output_dir).strip():
            raise ValueError("--output_dir is empty; give the run's folder")
        if Path(self.output_dir).exists() and not Path(self.output_dir).is_dir():
            raise ValueError(
                f"--output_dir {self.output_dir!r} is a file; expected a folder (new or of an earlier run)"
            )

    # ------------------------------------------------------------ the two spellings
    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def to_json(self, path) -> Path:
        """Write the settings to `path` (atomically); `parse_settings(cls, ["--config", path])` reads them back.
        A Hub token is never written (the file is published with the model)."""
        from ..files import write_json_atomic

        write_json_atomic(Path(path), {k: v for k, v in self.to_dict().items() if k != "hub_token"})
        return Path(path)

    @classmethod
    def from_dict(cls: type[Settings], values: dict, source: str = "the settings") -> Settings:
        """The settings `values` describe; an unknown key or a missing required one is a one-line ValueError."""
        if not isinstance(values, dict):
            raise ValueError(f"{source} must be a JSON object of settings (got {type(values).__name__})")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - names)
        if unknown:
            import difflib

            hints = [
                f"{k!r}" + (f" (did you mean {m[0]!r}?)" if (m := difflib.get_close_matches(k, names, n=1)) else "")
                for k in unknown
            ]
            raise ValueError(f"{source} has settings {cls.__name__} does not take: {', '.join(hints)}")
        missing = [
            f.name
            for f in dataclasses.fields(cls)
            if f.name not in values and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        ]
        if missing:
            raise ValueError(f"{source} lacks the required settings {', '.join(missing)}")
        return cls(**values)

    @classmethod
    def from_json(cls: type[Settings], path) -> Settings:
        path = Path(path)
        if not path.is_file():
            raise ValueError(f"--config {str(path)!r} is not a file; expected a JSON file of {cls.__name__}")
        try:
            values = json.loads(path.read_text())
        except json.JSONDecodeError as error:
            raise ValueError(f"--config {str(path)!r} is not valid JSON ({error})") from None
        return cls.from_dict(values, source=f"--config {str(path)!r}")

    def to_flags(self) -> list[str]:
        """The flags that parse to these settings: the required ones and every value that is not its default."""
        flags: list[str] = []
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            has_default = f.default is not dataclasses.MISSING
            if has_default and value == f.default:
                continue
            if value is None:
                raise ValueError(
                    f"--{f.name} None cannot be written as a flag (its default is {f.default!r}); use --config"
                )
            if isinstance(value, bool):
                flags.append(f"--{f.name}" if value else f"--no-{f.name}")
            else:
                flags += [f"--{f.name}", str(value)]
        return flags

    def replace(self: Settings, **changes) -> Settings:
        """A copy with `changes` (validated again): settings are never changed in place."""
        return dataclasses.replace(self, **changes)

    def check_inputs(self) -> None:
        """Raise a one-line ValueError when an input the run reads is missing (called when it starts)."""


# ---------------------------------------------------------------------------- stage 1
TEXTMNIST_CONFIGS = ("mnist", "fashion_mnist")


@dataclass(frozen=True, kw_only=True)
class VQGANTrainingSettings(TrainingSettings):
    """Stage 1 (`training/train_vqgan.py`): the quantizer. Defaults are the authors' (seed 23, batch
    96, 40 epochs, 8e-6 x batch, Adam (0.5, 0.9))."""

    # model
    model_config: str | None = field(
        default=None, metadata=_help("A model config JSON (e.g. hub_configs/te-vqgan-mnist.json).")
    )
    pretrained_model_name_or_path: str | None = field(
        default=None,
        metadata=_help(
            "Start from a save_pretrained folder or Hub id instead: a TEVQModel, or a stock diffusers VQModel "
            "(converted with TEVQModel.from_vq_model, then fine-tuned with the orthogonal term)."
        ),
    )
    orthogonal_reg_weight: float | None = field(
        default=None,
        metadata=_help(
            "With --pretrained_model_name_or_path of a stock diffusers VQModel: the orthogonal term's weight of the "
            "converted model (default 10, TE-VQGAN's; 0 fine-tunes without it). A TEVQModel keeps its config's."
        ),
    )
    freeze_encoder: bool = field(
        default=False,
        metadata=_help("Fine-tune without updating the encoder (and its quant_conv): the codebook and decoder learn."),
    )
    freeze_decoder: bool = field(
        default=False, metadata=_help("Fine-tune without updating the decoder (and its post_quant_conv).")
    )
    # data
    dataset: str = field(
        default="textmnist",
        metadata=_help(
            "'textmnist' (built here by te_vqgan.data.TextMNIST), or a datasets name / local folder with an `image` column.",
            aliases=["--dataset_name", "--train_data_dir"],
        ),
    )
    dataset_config: str = field(default="mnist", metadata=_help("TextMNIST config: mnist or fashion_mnist."))
    mnist_dir: str | None = field(
        default=None, metadata=_help("Folder of the MNIST .gz files (default: $TE_VQGAN_MNIST_DIR, else download).")
    )
    num_train: int = field(default=300_000, metadata=_help("TextMNIST train images."))
    num_validation: int = field(default=3_000, metadata=_help("TextMNIST validation images."))
    num_shift_groups: int = field(default=100, metadata=_help("TextMNIST shift groups for the equivariance metric."))
    dataset_seed: int = field(default=0, metadata=_help("Seed of the TextMNIST build."))
    cache_dir: str | None = field(default=None, metadata=_help("datasets cache folder."))
    validation_split: str = field(default="validation", metadata=_help("The split validation runs on."))
    image_column: str = "image"
    resolution: int | None = field(
        default=None,
        metadata=_help(
            "Images are resized on their shorter side to this, then cropped square (default: the model's sample_size); "
            "the saved model's sample_size follows it."
        ),
    )
    center_crop: bool = field(default=False, metadata=_help("Crop the centre (default: a random crop for training)."))
    random_flip: bool = field(default=False, metadata=_help("Flip training images left-right at random."))
    train_crop_size: int | None = field(
        default=None,
        metadata=_help(
            "Train on random square crops of this many pixels, cut from each image after --resolution (a multiple of "
            "the model's f, at most --resolution): a step costs about (crop / resolution)^2 of a whole image's, the "
            "model being convolutional; validation, the metrics and the saved model keep --resolution."
        ),
    )
    validation_fraction: float | None = field(
        default=None,
        metadata=_help(
            "Without a --validation_split in the dataset: hold out this fraction of train (a fixed slice)."
        ),
    )
    max_train_samples: int | None = field(default=None, metadata=_help("Train on the first N images only."))
    # the authors' optimisation
    seed: int = 23
    train_batch_size: int = 96
    num_train_epochs: int = 40
    learning_rate: float = 8e-6
    adam_beta1: float = 0.5
    adam_beta2: float = 0.9
    # losses
    scale_lr: bool = field(
        default=True,
        metadata=_help(
            "Multiply the learning rate by batch x accumulation x processes (taming; 8e-6 x 96 x 2 = 1.536e-3)."
        ),
    )
    perceptual_weight: float = field(default=1.0, metadata=_help("LPIPS weight; 0 trains without it."))
    reconstruction_loss: Literal["l1", "l2", "l1+l2"] | None = field(
        default=None,
        metadata=_help(
            "Pixel loss. Default: l1 (the paper's) with LPIPS, l2 without it (L1 alone loses the digits' colour)."
        ),
    )
    codebook_weight: float = 1.0
    disc_weight: float = 0.8
    disc_start: int = field(default=30001, metadata=_help("Step at which the GAN terms switch on."))
    disc_num_layers: int = 3
    disc_ndf: int = 64
    num_validation_images: int = field(default=256, metadata=_help("Validation images used per evaluation."))
    allow_perceptual_download: bool = field(
        default=False, metadata=_help("Let torchvision download the VGG16 weights.")
    )
    # a direct shift-equivariance term (beyond the paper; te_vqgan.losses.shift_equivariance_loss)
    shift_equivariance_weight: float = field(
        default=0.0,
        metadata=_help(
            "Weight of the direct shift-equivariance term: the encoder's latents of the image shifted by whole tokens are "
            "pulled toward its latents, shifted (0: off)."
        ),
    )
    shift_equivariance_max_shift: int = field(
        default=1, metadata=_help("Each step shifts by (rows, columns) drawn from 0..N tokens each, not both 0.")
    )
    # codebook collapse (beyond the paper; the model-side remedies are config keys of TEVQModel)
    kmeans_init_step: int | None = field(
        default=None,
        metadata=_help(
            "At this step, set the codes to the k-means centroids of the batch's encoder outputs (e.g. 300; default off)."
        ),
    )
    dead_code_restart_steps: int = field(
        default=0,
        metadata=_help(
            "Every N steps, move the codes the batch chooses fewer than --dead_code_min_count times onto its encoder outputs (0: off)."
        ),
    )
    dead_code_min_count: int = field(
        default=1, metadata=_help("A code chosen fewer times than this in the batch is dead.")
    )

    def __post_init__(self):
        super().__post_init__()
        if (self.model_config is None) == (self.pretrained_model_name_or_path is None):
            raise ValueError("give exactly one of --model_config and --pretrained_model_name_or_path")
        _at_least(self, 0, "kmeans_init_step", "dead_code_restart_steps", "dead_code_min_count")
        _finite(self, "orthogonal_reg_weight")
        if self.orthogonal_reg_weight is not None and (
            self.model_config is not None or not self.orthogonal_reg_weight >= 0
        ):
            raise ValueError(
                f"--orthogonal_reg_weight {self.orthogonal_reg_weight} applies to converting a stock VQModel "
                "(--pretrained_model_name_or_path) and must be >= 0; with --model_config set it in the config."
            )
        _at_least(
            self,
            1,
            "num_validation_images",
            "resolution",
            "train_crop_size",
            "max_train_samples",
            "disc_num_layers",
            "disc_ndf",
        )
        _finite(
            self,
            "perceptual_weight",
            "codebook_weight",
            "disc_weight",
            "validation_fraction",
            "shift_equivariance_weight",
        )
        _at_least(self, 1, "shift_equivariance_max_shift")
        for name in ("perceptual_weight", "codebook_weight", "disc_weight", "shift_equivariance_weight"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"--{name} must be >= 0 (got {getattr(self, name)})")
        if self.validation_fraction is not None and not 0 < self.validation_fraction < 1:
            raise ValueError(f"--validation_fraction must be in (0, 1) (got {self.validation_fraction})")
        # Derived once, here, so that the object read to the end is complete: the pixel loss
        # follows LPIPS, and "textmnist:fashion_mnist" (as every command spells it) sets the config.
        if self.reconstruction_loss is None:
            object.__setattr__(self, "reconstruction_loss", "l1" if self.perceptual_weight > 0 else "l2")
        if self.reconstruction_loss not in RECONSTRUCTION_LOSSES:
            raise ValueError(
                f"--reconstruction_loss must be one of {', '.join(RECONSTRUCTION_LOSSES)} (got {self.reconstruction_loss!r})"
            )
        if self.builds_textmnist:
            if ":" in self.dataset:
                object.__setattr__(self, "dataset_config", self.dataset.split(":", 1)[1])
            if self.dataset_config not in TEXTMNIST_CONFIGS:
                raise ValueError(
                    f"--dataset_config must be mnist or fashion_mnist for TextMNIST (got {self.dataset_config!r})"
                )
            if self.num_validation < 1:
                raise ValueError(f"--num_validation must be >= 1: validation needs images (got {self.num_validation})")

    @property
    def builds_textmnist(self) -> bool:
        from ..data.tokenized import builds_textmnist

        return builds_textmnist(self.dataset)

    def check_inputs(self) -> None:
        from ..loading import load_model_config
        from ..models.te_vq_model import TEVQModel, check_config_keys

        if self.model_config is not None:
            if not Path(self.model_config).is_file():
                raise ValueError(f"--model_config {self.model_config!r} is not a file")
            # a typo or another class in the config: refused here, before any work
            config = load_model_config(self.model_config)
            if config.get("_class_name") not in (None, "TEVQModel"):
                raise ValueError(
                    f"--model_config {self.model_config!r} describes a {config['_class_name']!r}; training needs a TEVQModel config."
                )
            check_config_keys(TEVQModel, config, repr(self.model_config))
        source = self.pretrained_model_name_or_path
        if source is not None and not Path(source).is_dir() and (source.count("/") != 1 or Path(source).exists()):
            raise ValueError(
                f"--pretrained_model_name_or_path {source!r} is neither a save_pretrained folder nor a Hub repo id (org/name)"
            )


# ---------------------------------------------------------------------------- stage 2
DIRECTIONS = ("i2t", "t2i")  # the authors' order within a batch
IMAGE_POSITION_INITS = ("learned", "sincos2d")


@dataclass(frozen=True, kw_only=True)
class GeneratorTrainingSettings(TrainingSettings):
    """Stage 2 (`training/train_generator.py`): the GPT over text and image tokens. Defaults are the
    authors' (seed 42, batch 100, 20 epochs, lr 1e-3 with 6 cosine restarts, one epoch of warm-up,
    gradient clipping at 1)."""

    # data
    tokenized_dataset: str = field(metadata=_help("A folder written by `te-vqgan tokenize-dataset`."))
    vqmodel: str = field(metadata=_help("The quantizer that tokenised it (a save_pretrained folder or Hub id)."))
    train_subset_size: int | None = field(
        default=None, metadata=_help("Train on the first N examples only (sample efficiency).")
    )
    validation_split: str = "validation"
    evaluation_splits: str = field(
        default="test_seen,test",
        metadata=_help("Splits scored by image-to-text accuracy at the end (those present; '' for none)."),
    )
    num_evaluation_examples: int = field(default=200, metadata=_help("Images per evaluation split."))
    # generator
    text_length: int = field(default=50, metadata=_help("Tokens of the text block (<bot> caption <eot> padding)."))
    caption_form: Literal["as_written", "canonical"] = field(
        default="as_written",
        metadata=_help(
            "as_written: captions are encoded as the dataset words them (the authors); canonical: each caption is "
            "encoded in one fixed wording of what it says (clauses in quadrant order, one form: `canonical_caption`), "
            "in training and, through the saved tokenizer, in every pipeline."
        ),
    )
    n_embd: int = 256
    n_layer: int = 8
    n_head: int = 8
    dropout: float = field(
        default=0.1,
        metadata=_help(
            "GPT-2's residual, embedding and attention dropout (GPT2Config's default 0.1; the presets train with 0)."
        ),
    )
    position_scheme: Literal["index", "modality"] = field(
        default="index",
        metadata=_help(
            "index: a token's position is its index in the sequence (GPT-2's own); modality: positions counted inside "
            "each modality and shared by both directions, as the authors do (`SequenceLayout.position_ids`)."
        ),
    )
    image_position_init: Literal["learned", "sincos2d"] = field(
        default="learned",
        metadata=_help(
            "learned: GPT-2's random position table; sincos2d: the image block's rows start as 2-D sine-cosine values "
            "of each token's (row, column), as the authors' fixed image positions (still learnt; under --position_scheme "
            "index only the text-to-image block's rows)."
        ),
    )
    # the authors' optimisation
    seed: int = 42
    train_batch_size: int = 100
    num_train_epochs: int = 20
    learning_rate: float = 1e-3
    lr_scheduler: LRScheduler = "cosine_with_restarts"
    lr_warmup_steps: int | None = field(default=None, metadata=_help("Warm-up optimizer steps (default: one epoch)."))
    lr_num_cycles: int = 6
    max_grad_norm: float | None = 1.0
    # stage 2
    directions: str = field(
        default="t2i,i2t", metadata=_help("t2i, i2t or both (each batch: i2t step, then t2i step).")
    )
    weight_decay: float = field(
        default=0.0,
        metadata=_help(
            "AdamW's decoupled weight decay on the 2-D weights (0: Adam, as the authors; biases and LayerNorms never decay)."
        ),
    )
    target_loss_weight: float = field(default=7.0, metadata=_help("Weight of the target modality's loss."))
    num_validation_examples: int = field(
        default=256, metadata=_help("Validation examples for the teacher-forced losses.")
    )
    num_validation_samples: int = field(default=8, metadata=_help("Images and captions sampled at each validation."))
    top_k_fraction: float = field(
        default=0.1, metadata=_help("Sampling keeps this fraction of the vocabulary (authors 0.1).")
    )
    temperature: float = 1.0

    def __post_init__(self):
        super().__post_init__()
        directions = [d.strip() for d in self.directions.split(",") if d.strip()]
        if not directions or set(directions) - set(DIRECTIONS):
            raise ValueError(f"--directions must name t2i and/or i2t (got {self.directions!r})")
        _at_least(
            self,
            1,
            "text_length",
            "n_embd",
            "n_layer",
            "n_head",
            "num_validation_examples",
            "num_validation_samples",
            "train_subset_size",
        )
        _at_least(self, 0, "num_evaluation_examples")
        if self.n_embd % self.n_head:
            raise ValueError(f"--n_embd must be divisible by --n_head (got {self.n_embd} and {self.n_head})")
        _finite(self, "target_loss_weight", "dropout", "weight_decay", "top_k_fraction", "temperature")
        if not self.target_loss_weight >= 0:
            raise ValueError(f"--target_loss_weight must be >= 0 (got {self.target_loss_weight})")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"--dropout must be in [0, 1) (got {self.dropout})")
        if not self.weight_decay >= 0:
            raise ValueError(f"--weight_decay must be >= 0 (got {self.weight_decay})")
        check_top_k_fraction(self.top_k_fraction, "--top_k_fraction")
        check_temperature(self.temperature, "--temperature")
        if self.position_scheme not in POSITION_SCHEMES:
            raise ValueError(f"--position_scheme must be index or modality (got {self.position_scheme!r})")
        if self.caption_form not in CAPTION_FORMS:
            raise ValueError(f"--caption_form must be as_written or canonical (got {self.caption_form!r})")
        if self.image_position_init not in IMAGE_POSITION_INITS:
            raise ValueError(f"--image_position_init must be learned or sincos2d (got {self.image_position_init!r})")

    @property
    def direction_list(self) -> list[str]:
        """The trained directions, in the authors' order within a batch."""
        named = {d.strip() for d in self.directions.split(",")}
        return [d for d in DIRECTIONS if d in named]

    def check_inputs(self) -> None:
        if not Path(self.tokenized_dataset).is_dir():
            raise ValueError(
                f"--tokenized_dataset {self.tokenized_dataset!r} is not a folder (make one with `te-vqgan tokenize-dataset`)"
            )


# ---------------------------------------------------------------------------- parsing
# Spellings kept for one release (hidden, with a FutureWarning): (old flag, field, the new flag).
DEPRECATED_FLAGS = {
    VQGANTrainingSettings: [
        ("--pretrained_model", "pretrained_model_name_or_path", "--pretrained_model_name_or_path")
    ],
}


def settings_parser(
    cls: type[TrainingSettings], description: str | None = None, defaults: bool = True
) -> argparse.ArgumentParser:
    """An argument parser for `cls`: `--NAME` per field (typed from its annotation, choices from a
    `Literal`, `--NAME/--no-NAME` for a switch, aliases from the field's metadata), `--config FILE`,
    and the deprecated spellings of `DEPRECATED_FLAGS`. With `defaults=False` nothing is required and
    a flag not given is absent from the result (to override a `--config` file with the flags given).

    transformers' `HfArgumentParser` does the same but adds a kebab-case twin of every flag; the
    scripts keep diffusers' snake-case flags only, as their `--help` and error messages always said.
    """
    from ..options import add_deprecated_alias

    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        kind, optional = _field_type(hints[f.name])
        kwargs = {"help": f.metadata.get("help"), "dest": f.name}
        if not defaults:
            kwargs["default"] = argparse.SUPPRESS
        elif f.default is dataclasses.MISSING:
            kwargs["required"] = True
        else:
            kwargs["default"] = f.default
        if kind is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        elif typing.get_origin(kind) is Literal:
            kwargs["choices"] = typing.get_args(kind)
        else:
            kwargs["type"] = kind
        parser.add_argument(f"--{f.name}", *f.metadata.get("aliases", ()), **kwargs)
    parser.add_argument(
        "--config",
        default=None if defaults else argparse.SUPPRESS,
        metavar="FILE",
        help=f"A JSON file of {cls.__name__} (as a run writes to {SETTINGS_FILE}); flags after it override it.",
    )
    for old, dest, new in DEPRECATED_FLAGS.get(cls, []):
        add_deprecated_alias(parser, old, new, dest)
    return parser


def _field_type(hint) -> tuple[object, bool]:
    """`(type, optional)` of a field's annotation: `int | None` -> `(int, True)`."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(args) != 1:
            raise TypeError(f"A setting takes one type or None (got {hint}).")
        return args[0], True
    return hint, False


def parse_settings(
    cls: type[Settings], argv: list[str] | None = None, description: str | None = None, check_inputs: bool = True
) -> Settings:
    """Parse `argv` (default `sys.argv[1:]`) into a `cls`; a bad value exits 2 with one line, as argparse does.

    `--config FILE` reads a JSON file of settings; flags beside it override the file's values. With
    `check_inputs`, the input folders and files the settings name must exist (`check_inputs()`).
    """
    import sys

    argv = list(sys.argv[1:] if argv is None else argv)
    parser = settings_parser(cls, description)
    try:
        if "--config" in argv or any(a.startswith("--config=") for a in argv):
            pre = argparse.ArgumentParser(add_help=False)
            pre.add_argument("--config")
            known, rest = pre.parse_known_args(argv)
            base = cls.from_json(known.config)
            # Flags beside the file override its values, and only the ones given.
            given = vars(settings_parser(cls, description, defaults=False).parse_args(rest))
            settings = cls(**{**base.to_dict(), **given})
        else:
            namespace = parser.parse_args(argv)
            settings = cls(**{f.name: getattr(namespace, f.name) for f in dataclasses.fields(cls)})
        if check_inputs:
            settings.check_inputs()
        return settings
    except ValueError as error:
        parser.error(str(error))
