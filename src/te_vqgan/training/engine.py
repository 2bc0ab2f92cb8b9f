"""One training loop for both stages: the quantizer (`training/train_vqgan.py`) and the
generator (`training/train_generator.py`) are two thin scripts over `TrainingEngine`.

A script describes its stage with a `TrainingStage` (what to build, one training step,
validation, what the published folder holds); the engine owns everything the two have in
common, written once:

- the `Accelerator` (mixed precision, DDP, gradient accumulation, trackers);
- the data order: `EpochShuffleSampler` (a shuffle that depends on (seed, epoch) only), the
  prepared loader's `set_epoch`, and `skip_first_batches` when resuming mid-epoch; the RNGs
  seeded per batch from (seed, epoch, batch) (`derive_seed`), so dropout and other draws resume exactly;
- the optimisation step (`OptimizerUpdate`): backward, optional gradient clipping, optimizer
  step, the learning-rate schedule;
- the step arithmetic (epochs, `--max_train_steps`, optimizer steps vs. batches under
  accumulation), checkpoints every `--checkpointing_steps` and at the last step, with
  `--checkpoints_total_limit`,
  `--resume_from_checkpoint latest|PATH` (exact: data order, RNG, optimizers, schedulers);
- validation every `--validation_steps` and at the end, logged to the trackers;
- the divergence guard: a NaN or infinite loss, gradient norm, weight or validation figure
  stops the run with `TrainingDiverged` naming the step and the term, before anything is saved
  as a result or pushed;
- one run per folder (a lock file naming its owner; a stale one is taken over);
- the final folder: staged in `OUTPUT/.final.tmp`, moved into place file by file with the
  model card last, then `OUTPUT/.complete.json` listing every file (`folder_is_complete`), then pushed to the Hub with `--push_to_hub` (never the checkpoints).

    settings = parse_settings(MySettings)      # a TrainingSettings subclass (`te_vqgan.training.settings`)
    engine = TrainingEngine(settings)
    result = engine.fit(MyStage(settings))     # TrainingResult(model, metrics, global_step)
"""

from __future__ import annotations

import abc
import contextlib
import json
import logging
import math
import os
import shlex
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from ..files import (
    COMPLETION_MARKER,
    FINAL_STAGING,
    FolderLockedError,
    folder_lock,
    install_folder,
    write_completion_marker,
    write_json_atomic,
)
from ..hub import push_folder_to_hub
from ..torch_utils import non_finite_weights
from .accelerate_utils import (
    EpochShuffleSampler,
    build_accelerator,
    check_checkpoint_fits,
    derive_seed,
    list_checkpoints,
    resolve_resume_checkpoint,
    save_checkpoint,
)
from .settings import SETTINGS_FILE, TrainingSettings


logger = logging.getLogger(__name__)

__all__ = [
    "NonFiniteError",
    "OptimizerUpdate",
    "RunInfo",
    "StageParts",
    "TrainingEngine",
    "TrainingResult",
    "TrainingDiverged",
    "TrainingStage",
    "run_script",
    "training_command",
]

CARD_NAME = "README.md"


# ---------------------------------------------------------------------------- the optimisation step
class NonFiniteError(FloatingPointError):
    """A loss or gradient of one update is NaN or infinite (raised by `OptimizerUpdate`)."""


class TrainingDiverged(FloatingPointError):
    """Training produced a NaN or infinite loss, gradient or weight. The run stops; nothing is
    saved as a result and nothing is pushed (checkpoints written before stay as they were)."""


@dataclass
class OptimizerUpdate:
    """One optimizer with its schedule and clipping: `update(loss)` runs backward, clips the
    gradient norm of `parameters` to `max_grad_norm` (when set, on steps that sync gradients),
    steps the optimizer and the schedule, and clears the gradients.

    A NaN or infinite loss, or gradient norm, raises `NonFiniteError` before the optimizer
    steps, so non-finite values never reach the weights (under fp16 the gradient check is left
    to the grad scaler, which skips such steps by design).

    `accelerator` may be anything with `backward` (and `clip_grad_norm_` / `sync_gradients`
    when clipping), e.g. the benchmarks' single-device stand-in.
    """

    accelerator: object
    optimizer: torch.optim.Optimizer
    parameters: list = field(default_factory=list)
    scheduler: object | None = None
    max_grad_norm: float | None = None
    name: str = "model"  # what this optimizer updates, for error messages

    def __call__(self, loss: torch.Tensor) -> None:
        self.accelerator.backward(loss)
        if getattr(self.accelerator, "sync_gradients", True):
            if self.max_grad_norm is not None:
                norm = self.accelerator.clip_grad_norm_(self.parameters, self.max_grad_norm)
            else:
                norm = torch.nn.utils.get_total_norm([p.grad for p in self.parameters if p.grad is not None])
            # One read-back per update: a non-finite loss always gives a non-finite gradient
            # norm, so the loss is looked at only to name the cause.
            if getattr(self.accelerator, "mixed_precision", "no") != "fp16" and not torch.isfinite(norm):
                self.optimizer.zero_grad(set_to_none=True)
                if not torch.isfinite(loss.detach()).all():
                    raise NonFiniteError(f"the loss of the {self.name} update is {loss.detach().float().item()}")
                raise NonFiniteError(f"the gradient norm of the {self.name} update is {float(norm)}")
        self.optimizer.step()
        if self.scheduler is not None:
            self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)

    @property
    def learning_rate(self) -> float:
        return self.optimizer.param_groups[0]["lr"]


# ---------------------------------------------------------------------------- the stage interface
@dataclass
class StageParts:
    """What a stage builds before training (unprepared; the engine prepares them)."""

    models: list[torch.nn.Module]  # models[0] is the one published; all are checkpointed
    optimizers: list[torch.optim.Optimizer]  # one OptimizerUpdate each, in this order
    train_dataset: object  # a map-style dataset of examples
    collate_fn: Callable
    learning_rate: float  # the learning rate the optimizers were built with (for the log and card)


@dataclass
class RunInfo:
    """Facts of the run a stage may put in its card."""

    global_step: int
    total_batch_size: int
    learning_rate: float
    mixed_precision: str
    num_processes: int
    train_seconds: float
    settings: TrainingSettings  # the run's, as parsed (its `to_flags()` rerun it)


class TrainingStage(abc.ABC):
    """What a training script tells the engine about its stage."""

    #: tracker project name, e.g. "train_vqgan"
    name: str = "train"
    #: the script, for the card's reproduce command
    script: str = "training/train.py"
    #: optimizer steps one batch makes (stage 2 steps once per direction): scales the schedule
    updates_per_batch: int = 1
    #: name under which the last validation figure is copied into the final folder (or None)
    final_figure_name: str | None = None

    @abc.abstractmethod
    def build(self, accelerator) -> StageParts:
        """Build models, optimizers and the train dataset; raise before any work on bad input."""

    def attach(self, accelerator, models: Sequence[torch.nn.Module], updates: Sequence[OptimizerUpdate]) -> None:
        """Receive the prepared (possibly DDP-wrapped) models and their updates."""
        self.accelerator = accelerator
        self.models = list(models)
        self.updates = list(updates)

    @abc.abstractmethod
    def train_step(self, batch, global_step: int) -> dict[str, torch.Tensor]:
        """One batch: compute the losses and call the updates. Returns detached scalars; the
        key "loss" is shown on the progress bar."""

    @abc.abstractmethod
    def validate(self, step: int, output_dir: Path) -> tuple[dict[str, float], Path | None]:
        """On the main process: `({"val/...": value}, figure PNG or None)`. Must not change
        the training run (fork the RNG)."""

    @abc.abstractmethod
    def save_final(self, folder: Path, record: dict, run: RunInfo) -> None:
        """Write the published model and its card (`README.md`) into `folder`. Figures measured
        here (e.g. a final evaluation) may be added to `record`: it becomes metrics.json."""

    def tracker_config(self) -> dict:
        return {}

    def checkpoint_state(self) -> dict:
        """JSON-able facts a checkpoint records for `check_resume_state` (e.g. the tokens' quantizer fingerprint)."""
        return {}

    def check_resume_state(self, state: dict, checkpoint: Path) -> None:
        """Raise a ValueError when the checkpoint's recorded `state` (`training_state.json`) is not this run's."""


@dataclass
class TrainingResult:
    model: torch.nn.Module  # the trained, published model, unwrapped, on this process
    metrics: dict  # the final validation figures (main process; empty elsewhere)
    global_step: int


# ---------------------------------------------------------------------------- the engine
class TrainingEngine:
    """Runs a `TrainingStage` with the engine's part of its `TrainingSettings`."""

    def __init__(self, settings: TrainingSettings):
        from accelerate.utils import set_seed

        if not isinstance(settings, TrainingSettings):
            raise TypeError(
                f"TrainingEngine takes a TrainingSettings (got {type(settings).__name__}); parse flags with parse_settings."
            )
        self.args = args = settings
        self.output_dir = Path(args.output_dir)
        self.accelerator = build_accelerator(
            self.output_dir,
            args.mixed_precision,
            args.gradient_accumulation_steps,
            args.report_to,
            args.logging_dir,
            cpu=args.cpu,
        )
        logging.basicConfig(
            format="%(asctime)s %(levelname)s %(name)s: %(message)s",
            level=logging.INFO if self.accelerator.is_main_process else logging.WARNING,
        )
        logger.info("%s", self.accelerator.state)
        set_seed(args.seed)

    # ------------------------------------------------------------ set-up
    def _prepare(self, stage: TrainingStage):
        args, accelerator = self.args, self.accelerator
        parts = stage.build(accelerator)
        if len(parts.optimizers) < 1 or len(parts.models) < 1:
            raise ValueError(
                f"A stage needs at least one model and one optimizer (got {len(parts.models)} and {len(parts.optimizers)})."
            )
        sampler = EpochShuffleSampler(len(parts.train_dataset), seed=args.seed)
        dataloader = DataLoader(
            parts.train_dataset,
            batch_size=args.train_batch_size,
            sampler=sampler,
            collate_fn=parts.collate_fn,
            num_workers=args.dataloader_num_workers,
            drop_last=True,
        )
        if len(dataloader) == 0:
            raise ValueError(
                f"The train split has {len(parts.train_dataset)} examples, fewer than one batch of {args.train_batch_size}."
            )
        n_models, n_optimizers = len(parts.models), len(parts.optimizers)
        prepared = accelerator.prepare(*parts.models, *parts.optimizers, dataloader)
        models, optimizers, dataloader = (
            prepared[:n_models],
            prepared[n_models : n_models + n_optimizers],
            prepared[-1],
        )

        steps_per_epoch = math.ceil(len(dataloader) / args.gradient_accumulation_steps)
        max_train_steps = args.max_train_steps or args.num_train_epochs * steps_per_epoch
        warmup = steps_per_epoch if args.lr_warmup_steps is None else args.lr_warmup_steps
        schedulers = [
            self._scheduler(optimizer, warmup, max_train_steps, stage.updates_per_batch) for optimizer in optimizers
        ]
        # Prepared schedulers are saved in checkpoints and step only when their optimizer did.
        schedulers = [accelerator.prepare(scheduler) for scheduler in schedulers]
        # Clipping acts on the parameters each optimizer owns.
        names = [type(model).__name__ for model in parts.models] + [f"optimizer {i}" for i in range(n_optimizers)]
        updates = [
            OptimizerUpdate(
                accelerator,
                optimizer,
                [p for group in optimizer.param_groups for p in group["params"]],
                scheduler,
                args.max_grad_norm,
                name=name,
            )
            for optimizer, scheduler, name in zip(optimizers, schedulers, names)
        ]
        stage.attach(accelerator, models, updates)
        return parts, models, dataloader, steps_per_epoch, max_train_steps

    def _scheduler(self, optimizer, warmup_steps: int, max_train_steps: int, updates_per_batch: int):
        from diffusers.optimization import get_scheduler

        # An AcceleratedScheduler steps `num_processes` times per optimizer step (as in the
        # diffusers examples), so the schedule's lengths are counted the same way.
        scale = self.accelerator.num_processes * updates_per_batch
        return get_scheduler(
            self.args.lr_scheduler,
            optimizer,
            num_warmup_steps=warmup_steps * scale,
            num_training_steps=max_train_steps * scale,
            num_cycles=self.args.lr_num_cycles,
        )

    # ------------------------------------------------------------ the loop
    def fit(self, stage: TrainingStage) -> TrainingResult:
        """Train `stage` into `output_dir`, holding its lock (`te_vqgan.files.folder_lock`): a second
        run on the same folder is refused while this one lives."""
        with contextlib.ExitStack() as stack:
            if self.accelerator.is_main_process:
                stack.enter_context(folder_lock(self.output_dir, f"training ({stage.name})"))
            return self._fit(stage)

    def _fit(self, stage: TrainingStage) -> TrainingResult:
        from accelerate.utils import set_seed

        args, accelerator, output_dir = self.args, self.accelerator, self.output_dir
        earlier = list_checkpoints(output_dir)
        if args.resume_from_checkpoint is None and earlier:
            # A new run would leave them for a later `latest`, which would resume the wrong run.
            raise ValueError(
                f"--output_dir {str(output_dir)!r} holds checkpoints of an earlier run ({', '.join(p.name for _, p in earlier)}); "
                "continue it with --resume_from_checkpoint latest, or train into another --output_dir."
            )
        parts, models, dataloader, steps_per_epoch, max_train_steps = self._prepare(stage)
        num_epochs = math.ceil(max_train_steps / steps_per_epoch)
        total_batch_size = args.train_batch_size * accelerator.num_processes * args.gradient_accumulation_steps

        if accelerator.is_main_process:
            output_dir.mkdir(parents=True, exist_ok=True)
            config = {
                k: v for k, v in args.to_dict().items() if isinstance(v, (int, float, str, bool))
            }  # no None/lists
            accelerator.init_trackers(stage.name, config={**config, **stage.tracker_config()})

        global_step = start_step = 0
        resume = resolve_resume_checkpoint(output_dir, args.resume_from_checkpoint)
        if resume is not None:
            path, global_step = resume
            start_step = global_step
            check_checkpoint_fits(path, [accelerator.unwrap_model(m) for m in models])
            saved_state = json.loads((path / "training_state.json").read_text())
            stage.check_resume_state(saved_state, path)
            logger.info("Resuming from %s (step %d)", path, global_step)
            accelerator.load_state(str(path))
        first_epoch = global_step // steps_per_epoch
        batches_to_skip = (global_step % steps_per_epoch) * args.gradient_accumulation_steps

        logger.info(
            "%d train examples, %d steps per epoch, %d steps, batch %d in total, lr %.3g, mixed precision %s",
            len(parts.train_dataset),
            steps_per_epoch,
            max_train_steps,
            total_batch_size,
            parts.learning_rate,
            accelerator.mixed_precision,
        )
        progress = _progress_bar(max_train_steps, global_step, not accelerator.is_local_main_process)
        start_time = time.time()
        metrics: dict = {}
        # The last step's training figures (the final_* metrics), as recorded by the checkpoint a
        # resumed run starts from: a kill between the last checkpoint and the final save loses none.
        logs: dict = dict(saved_state.get("train_logs", {})) if resume is not None else {}
        validated_step = -1

        for epoch in range(first_epoch, num_epochs):
            # On the prepared loader, not the sampler: Accelerate re-sets the sampler's epoch from
            # the loader's own counter at each iteration, and a resumed run must see epoch e's order.
            dataloader.set_epoch(epoch)
            for model in models:
                model.train()
            epoch_loader = dataloader
            first_batch = 0
            if epoch == first_epoch and batches_to_skip:
                epoch_loader = accelerator.skip_first_batches(dataloader, batches_to_skip)
                first_batch = batches_to_skip
            for batch_index, batch in enumerate(epoch_loader, start=first_batch):
                if global_step >= max_train_steps:  # e.g. resumed from the last checkpoint of a finished run
                    break
                # Each batch's random draws (dropout, a caption choice ...) depend on (seed, epoch,
                # batch) only: a resumed run draws exactly what the uninterrupted one drew, even
                # though building a new loader iterator on resume consumes from the global RNG.
                # (Reduced below 2**31 - 1: `set_seed` also seeds NumPy, which takes seeds < 2**32.)
                set_seed(derive_seed(args.seed, epoch, batch_index) % (2**31 - 1), device_specific=True)
                try:
                    with accelerator.accumulate(*models):
                        terms = stage.train_step(batch, global_step)
                except NonFiniteError as error:
                    raise self._diverged(global_step + 1, str(error)) from error
                if not accelerator.sync_gradients:
                    continue
                global_step += 1
                progress.update(1)
                logs = {f"train/{name}": value.item() for name, value in terms.items()}
                bad = {name: value for name, value in logs.items() if not math.isfinite(value)}
                if bad:
                    raise self._diverged(global_step, ", ".join(f"{k.split('/', 1)[1]} = {v}" for k, v in bad.items()))
                logs["train/lr"] = stage.updates[0].learning_rate
                progress.set_postfix(loss=f"{logs['train/loss']:.4f}")
                accelerator.log(logs, step=global_step)

                if global_step % args.checkpointing_steps == 0:
                    save_checkpoint(
                        accelerator,
                        output_dir,
                        global_step,
                        args.checkpoints_total_limit,
                        {"epoch": epoch, "train_logs": logs, **stage.checkpoint_state()},
                    )
                if global_step % args.validation_steps == 0:
                    if accelerator.is_main_process:
                        metrics, validated_step = self._validate(stage, global_step), global_step
                    accelerator.wait_for_everyone()
                if global_step >= max_train_steps:
                    break
            if global_step >= max_train_steps:
                break
        progress.close()

        accelerator.wait_for_everyone()
        published = accelerator.unwrap_model(models[0])
        self._check_finite_weights(models, global_step)
        if global_step % args.checkpointing_steps and global_step > start_step:
            # The last step too, so that a later, longer run resumes here instead of repeating steps,
            # and so that a kill during the final save loses nothing.
            save_checkpoint(
                accelerator,
                output_dir,
                global_step,
                args.checkpoints_total_limit,
                {"epoch": epoch, "train_logs": logs, **stage.checkpoint_state()},
            )
        if accelerator.is_main_process:
            if validated_step != global_step:
                metrics = self._validate(stage, global_step)
            run = RunInfo(
                global_step=global_step,
                total_batch_size=total_batch_size,
                learning_rate=parts.learning_rate,
                mixed_precision=str(accelerator.mixed_precision),
                num_processes=accelerator.num_processes,
                train_seconds=round(time.time() - start_time, 1),
                settings=args,
            )
            final = self._save_final(stage, metrics, logs, run)
            metrics = json.loads((final / "metrics.json").read_text())
            if args.push_to_hub:
                url = push_folder_to_hub(
                    output_dir, args.hub_model_id, token=args.hub_token, private=args.hub_private_repo or None
                )
                logger.info("Pushed %s to %s", output_dir, url)
        accelerator.end_training()
        return TrainingResult(model=published, metrics=metrics, global_step=global_step)

    def _diverged(self, step: int, what: str) -> TrainingDiverged:
        checkpoints = list_checkpoints(self.output_dir)
        last = f"the last checkpoint is {checkpoints[-1][1]}" if checkpoints else "no checkpoint was written"
        return TrainingDiverged(
            f"Training diverged at step {step}: {what}. Nothing was saved as a result and nothing was pushed "
            f"({last}). Lower --learning_rate, set --max_grad_norm, or check the data."
        )

    def _check_finite_weights(self, models, step: int) -> None:
        for model in models:
            model = self.accelerator.unwrap_model(model)
            bad = non_finite_weights(model)
            if bad:
                raise self._diverged(step, f"{type(model).__name__}.{bad[0]} holds NaN or Inf")

    def _validate(self, stage: TrainingStage, step: int) -> dict:
        self._check_finite_weights(stage.models, step)
        results, figure = stage.validate(step, self.output_dir)
        bad = [name for name, value in results.items() if isinstance(value, float) and not math.isfinite(value)]
        if bad:
            raise self._diverged(step, f"validation gave non-finite {bad}")
        self.accelerator.log(results, step=step)
        if figure is not None:
            for tracker in self.accelerator.trackers:
                if tracker.name == "tensorboard":
                    from PIL import Image

                    with Image.open(figure) as image:
                        tracker.writer.add_image(
                            "validation/figure", np.asarray(image.convert("RGB")), step, dataformats="HWC"
                        )
        logger.info("step %d: %s", step, ", ".join(f"{k}={v:.4g}" for k, v in results.items()))
        self._last_figure = figure
        return results

    def _save_final(self, stage: TrainingStage, metrics: dict, train_logs: dict, run: RunInfo) -> Path:
        """`output_dir`: the stage's model files, metrics.json, the last validation figure and
        the card.

        Everything is written to a staging folder first and moved into place file by file at
        the end, the card last (it says the folder is complete), so an interrupted save never
        leaves a folder that loads half a model.
        """
        output_dir = self.output_dir
        staging = output_dir / FINAL_STAGING
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        # Until the new marker is written the folder is not complete, whatever an earlier save left.
        (output_dir / COMPLETION_MARKER).unlink(missing_ok=True)
        record = {
            **{k.split("/", 1)[1]: v for k, v in metrics.items()},
            **{f"final_{k.split('/', 1)[1]}": v for k, v in train_logs.items()},
            "global_step": run.global_step,
            "train_seconds": run.train_seconds,
            "num_processes": run.num_processes,
            "mixed_precision": run.mixed_precision,
        }
        stage.save_final(staging, record, run)
        write_json_atomic(staging / "metrics.json", record)
        self.args.to_json(staging / SETTINGS_FILE)  # the run's settings, beside what they made
        figure = getattr(self, "_last_figure", None)
        if stage.final_figure_name and figure is not None and Path(figure).is_file():
            shutil.copyfile(figure, staging / stage.final_figure_name)
        names = sorted(p.name for p in staging.iterdir())
        for name in sorted(names, key=lambda n: n == CARD_NAME):  # the card last
            path = staging / name
            if path.is_dir():
                install_folder(path, output_dir / name)
            else:
                os.replace(path, output_dir / name)
        staging.rmdir()
        # Last: the marker that says the folder is complete, listing what it vouches for.
        write_completion_marker(output_dir, names)
        logger.info("Saved the model, its card and metrics to %s", output_dir)
        return output_dir


# What a training script reports as one line (exit 2) rather than a traceback: bad input,
# missing files, a diverged run. Anything else is a bug and keeps its traceback.
EXPECTED_ERRORS = (
    ValueError,
    FileNotFoundError,
    NotADirectoryError,
    PermissionError,
    FloatingPointError,
    FolderLockedError,
)


def run_script(main: Callable, parse_args: Callable, prog: str, expected: tuple = ()) -> None:
    """`main(parse_args())`, with expected errors (`EXPECTED_ERRORS` + `expected`) printed as
    one line `prog: error: ...` and exit status 2, as argparse does for bad flags."""
    import sys

    args = parse_args()
    try:
        main(args)
    except (*EXPECTED_ERRORS, *expected) as error:
        print(f"{prog}: error: {error}", file=sys.stderr)
        raise SystemExit(2) from None


def training_command(script: str, settings: TrainingSettings) -> str:
    """The `accelerate launch` line that reruns a script with `settings` (for cards)."""
    try:
        flags = settings.to_flags()
    except ValueError:  # a setting only a file can hold (a None whose default is not None)
        flags = ["--config", SETTINGS_FILE]
    return " ".join(shlex.quote(a) for a in ["accelerate", "launch", script, *flags])


def _progress_bar(total: int, initial: int, disable: bool):
    from tqdm.auto import tqdm

    return tqdm(range(total), initial=initial, desc="steps", disable=disable)
