"""Accelerate plumbing for the training scripts in `training/`, kept in the package so that
every script (stage 1 now, stage 2 next) shares one copy.

- `build_accelerator`: an `Accelerator` with a project config, trackers and mixed precision.
- `derive_seed`: the seed of one epoch, batch or step, from the run's seed and its counters.
- `EpochShuffleSampler`: a shuffle that depends only on (seed, epoch), so a resumed run sees
  exactly the batches an uninterrupted one would.
- `save_checkpoint` / `resolve_resume_checkpoint`: `checkpoint-{step}` folders written
  atomically (a temporary folder renamed once complete), pruned to a total limit.
- `render_model_card`: a model card from a template in `model_cards/`; pushes go through
  `te_vqgan.hub.push_folder_to_hub`, which never uploads `checkpoint-*` folders.

Checkpoint folders hold Accelerate's training state (optimizer and RNG states are pickles):
load them only from your own runs. Released weights are safetensors.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
from pathlib import Path

import torch
from torch.utils.data import Sampler

from ..files import install_folder, write_json_atomic


logger = logging.getLogger(__name__)

__all__ = [
    "CHECKPOINT_PREFIX",
    "EpochShuffleSampler",
    "build_accelerator",
    "check_checkpoint_fits",
    "derive_seed",
    "list_checkpoints",
    "missing_checkpoint_files",
    "render_model_card",
    "resolve_resume_checkpoint",
    "save_checkpoint",
    "scaled_learning_rate",
]

CHECKPOINT_PREFIX = "checkpoint-"
_CHECKPOINT_RE = re.compile(rf"^{CHECKPOINT_PREFIX}(\d+)$")


def build_accelerator(
    output_dir: str | os.PathLike,
    mixed_precision: str | None = None,
    gradient_accumulation_steps: int = 1,
    report_to: str | None = "tensorboard",
    logging_dir: str = "logs",
    cpu: bool = False,
):
    """An `Accelerator` whose project folder is `output_dir` (trackers log to `output_dir/logging_dir`).

    `mixed_precision=None` takes the setting of `accelerate launch` (its flags or config file).

    `cpu=True` also makes `accelerate launch --multi_gpu --num_processes 2` run two real
    processes (DDP over gloo) on a machine without GPUs (docs/INSTALL.md, "CPU-only machines").
    """
    from accelerate import Accelerator
    from accelerate.utils import ProjectConfiguration

    project_config = ProjectConfiguration(project_dir=str(output_dir), logging_dir=str(Path(output_dir) / logging_dir))
    return Accelerator(
        mixed_precision=mixed_precision,
        gradient_accumulation_steps=gradient_accumulation_steps,
        log_with=None if report_to in (None, "none") else report_to,
        project_config=project_config,
        cpu=cpu,
    )


def scaled_learning_rate(
    base_lr: float, batch_size: int, gradient_accumulation_steps: int, num_processes: int
) -> float:
    """taming-transformers' rule: lr = base_lr x batch per device x accumulation x devices.

    The authors' 8e-6 x 96 x 1 x 2 = 1.536e-3 (docs/REPRODUCTION.md, "Stage 1: the quantizer")."""
    return base_lr * batch_size * gradient_accumulation_steps * num_processes


def derive_seed(seed: int, *counters: int) -> int:
    """A seed for one epoch, batch or step of a run, from the run's `seed` and its counters
    (e.g. `(epoch,)`, `(epoch, batch_index)`, `(global_step,)`): the draws of that piece then
    depend on these numbers only, so a resumed run draws exactly what an uninterrupted one drew.

    `seed * 1_000_003 + c_1 * 10_007**(n-1) + ... + c_n` (the counters read in base 10_007),
    not reduced: a caller whose consumer takes a bounded seed reduces it. Resumed runs and
    saved results depend on these exact numbers: do not change the formula.

    Example::

        >>> derive_seed(3, 2)      # EpochShuffleSampler(seed=3), epoch 2
        3000011
        >>> derive_seed(3, 2, 5)   # the engine's batch 5 of epoch 2
        3020028
    """
    value = 0
    for counter in counters:
        value = value * 10_007 + counter
    return seed * 1_000_003 + value


class EpochShuffleSampler(Sampler[int]):
    """A random permutation of `range(num_samples)` drawn from a generator seeded with
    `(seed, epoch)`: the order of epoch e is the same in every run, resumed or not.

    Call `set_epoch(epoch)` before iterating each epoch.
    """

    def __init__(self, num_samples: int, seed: int = 0):
        if num_samples < 1:
            raise ValueError(f"`num_samples` must be >= 1 (got {num_samples}).")
        self.num_samples = num_samples
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        generator = torch.Generator().manual_seed(derive_seed(self.seed, self.epoch))
        return iter(torch.randperm(self.num_samples, generator=generator).tolist())

    def __len__(self) -> int:
        return self.num_samples


# Written by `save_checkpoint` after Accelerate's state, so its presence marks a complete checkpoint.
COMPLETION_MARKER = "training_state.json"
# What an exact resume cannot do without (besides the marker).
REQUIRED_FILES = ("model.safetensors", "random_states_0.pkl")


def _checkpoint_folders(output_dir: Path) -> list[tuple[int, Path]]:
    if not output_dir.is_dir():
        return []
    found = []
    for path in output_dir.iterdir():
        match = _CHECKPOINT_RE.match(path.name)
        if match and path.is_dir():
            found.append((int(match.group(1)), path))
    return sorted(found)


def missing_checkpoint_files(path: str | os.PathLike) -> list[str]:
    """The files a checkpoint folder lacks for an exact resume (empty when complete)."""
    path = Path(path)
    return [name for name in (COMPLETION_MARKER, *REQUIRED_FILES) if not (path / name).is_file()]


def list_checkpoints(output_dir: str | os.PathLike) -> list[tuple[int, Path]]:
    """Complete `checkpoint-{step}` folders in `output_dir` (those with every file a resume
    needs, the completion marker included), oldest first."""
    return [(step, path) for step, path in _checkpoint_folders(Path(output_dir)) if not missing_checkpoint_files(path)]


def save_checkpoint(
    accelerator,
    output_dir: str | os.PathLike,
    step: int,
    total_limit: int | None = None,
    extra_state: dict | None = None,
) -> Path:
    """Save the full training state as `output_dir/checkpoint-{step}`. Call on every process.

    The state goes to `checkpoint-{step}.tmp` first and is renamed once every process has
    written its part, so an interrupted save never looks like a checkpoint. Only then, with
    `total_limit`, are the oldest checkpoints removed so that at most that many remain: a
    kill at any moment leaves at least the previous complete checkpoint.
    """
    output_dir = Path(output_dir)
    final = output_dir / f"{CHECKPOINT_PREFIX}{step}"
    tmp = output_dir / f"{CHECKPOINT_PREFIX}{step}.tmp"
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp), safe_serialization=True)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        write_json_atomic(tmp / "training_state.json", {"global_step": step, **(extra_state or {})})
        install_folder(tmp, final)  # a re-run of the same step replaces the old one only once complete
        logger.info("Saved state to %s", final)
        if total_limit is not None:
            checkpoints = list_checkpoints(output_dir)
            for _, old in checkpoints[: max(0, len(checkpoints) - total_limit)]:
                logger.info("Removing old checkpoint %s (checkpoints_total_limit=%d)", old, total_limit)
                shutil.rmtree(old)
    accelerator.wait_for_everyone()
    return final


def resolve_resume_checkpoint(
    output_dir: str | os.PathLike, resume_from_checkpoint: str | None
) -> tuple[Path, int] | None:
    """`(path, step)` of the checkpoint to resume from, or None to start afresh.

    `"latest"` takes the newest complete checkpoint in `output_dir` (none there: start
    afresh, as diffusers' scripts do); a path must exist and be named `checkpoint-{step}`.
    """
    if resume_from_checkpoint is None:
        return None
    if resume_from_checkpoint == "latest":
        incomplete = [p.name for _, p in _checkpoint_folders(Path(output_dir)) if missing_checkpoint_files(p)]
        if incomplete:
            logger.warning(
                "Skipping incomplete checkpoint folders (no %s or state files): %s", COMPLETION_MARKER, incomplete
            )
        checkpoints = list_checkpoints(output_dir)
        if not checkpoints:
            logger.warning(
                "--resume_from_checkpoint latest: no complete checkpoint in %s; starting a new run.", output_dir
            )
            return None
        step, path = checkpoints[-1]
        return path, step
    path = Path(resume_from_checkpoint)
    if not path.is_dir() and (Path(output_dir) / resume_from_checkpoint).is_dir():
        path = Path(output_dir) / resume_from_checkpoint
    match = _CHECKPOINT_RE.match(path.name)
    if not path.is_dir() or match is None:
        raise ValueError(
            f"--resume_from_checkpoint {resume_from_checkpoint!r} is not a checkpoint folder; expected 'latest' "
            f"or a path to a `{CHECKPOINT_PREFIX}<step>` folder (found: {[p.name for _, p in list_checkpoints(output_dir)]})."
        )
    missing = missing_checkpoint_files(path)
    if missing:
        raise ValueError(
            f"Checkpoint {str(path)!r} is incomplete: it has no {missing} (an interrupted save, or not written by this "
            "training script), so it cannot be resumed exactly."
        )
    return path, int(match.group(1))


def check_checkpoint_fits(path: str | os.PathLike, models) -> None:
    """ValueError unless the weights in checkpoint `path` load into `models` (unwrapped, in
    the order they were prepared): a truncated or corrupt file, or a tensor of another shape
    (e.g. another codebook size K), is named with both shapes."""
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    for index, model in enumerate(models):
        file = path / ("model.safetensors" if index == 0 else f"model_{index}.safetensors")
        if not file.is_file():
            raise ValueError(f"Checkpoint {str(path)!r} has no {file.name} for {type(model).__name__}.")
        expected = {name: tuple(t.shape) for name, t in model.state_dict().items()}
        try:
            with safe_open(str(file), framework="pt") as weights:
                shapes = {name: tuple(weights.get_slice(name).get_shape()) for name in weights.keys()}
        except (SafetensorError, OSError) as error:
            raise ValueError(
                f"Checkpoint weights {str(file)!r} cannot be read ({type(error).__name__}: {error})."
            ) from error
        for name, shape in shapes.items():
            if name in expected and expected[name] != shape:
                raise ValueError(
                    f"Checkpoint {str(path)!r} is of another model: {type(model).__name__}.{name} has shape {shape} there "
                    f"but {expected[name]} in the model being trained (another config, e.g. another codebook size)."
                )


def render_model_card(template_path: str | os.PathLike, card_data, **template_kwargs):
    """A `huggingface_hub.ModelCard` from a Jinja template (YAML metadata from `card_data`)."""
    from huggingface_hub import ModelCard

    return ModelCard.from_template(card_data, template_path=str(template_path), **template_kwargs)
