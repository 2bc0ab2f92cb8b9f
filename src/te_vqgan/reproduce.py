"""`te-vqgan reproduce`: the paper's experiment end to end, as a resumable plan of stages.

data -> evaluation classifier -> per quantizer and seed: stage 1, tokenise, stage 2 per train
size, evaluate -> report. Each stage writes its own folder under `--output` and counts as done
when its marker file is there (the training scripts, the builders and the evaluator all write
their folders whole, so a marker means a complete stage); a rerun skips done stages, an
interrupted training continues from its last checkpoint. `state.json` keeps each stage's
wall-clock; `results.json` and `report.md` (Tables 1-3 as mean (std) over seeds beside the
paper's numbers, the sanity rows, equivariance three ways, wall-clock, commands, versions) and
`figures/` are rewritten at the end of every run from what is on disk.

Presets (`PRESETS`): `smoke` checks the whole chain on a 2-core CPU in under half an hour (its generators
follow their prompts, but its numbers are not comparable to the paper's, and the report says so); `cpu` is the largest experiment our 2-core machines finish in
a few hours; `paper` is the authors' settings under `accelerate launch` on GPUs.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import platform
import re
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np


__all__ = [
    "display_command",
    "resuming",
    "run_training",
    "StageRunner",
    "PAPER",
    "PRESETS",
    "Preset",
    "ReproducePlan",
    "StageFailed",
    "Step",
    "render_report",
    "reproduce",
    "summarise_results",
]

QUANTIZER_CONFIGS = {
    "te": "te-vqgan-mnist",
    "sc": "vqgan-mnist-sc",
    "cb": "vqgan-mnist-cb",
    "mp": "vqgan-mnist-mp",
    "mb": "vqgan-mnist-mb",
}
QUANTIZER_NAMES = {"te": "TE (SC + orth.)", "sc": "SC", "cb": "CB", "mp": "MP", "mb": "MB"}

# The paper's Table 1 (mean over 3 runs), Table 2 (T2I Quad1 by train size) and Table 3.
PAPER = {
    "t2i": {
        "mb": (0.724, 0.697, 0.635, 0.620),
        "mp": (0.713, 0.703, 0.669, 0.656),
        "cb": (0.753, 0.741, 0.682, 0.649),
        "sc": (0.812, 0.806, 0.790, 0.761),
        "te": (0.931, 0.913, 0.890, 0.868),
    },
    "i2t": {
        "mb": (0.587, 0.507, 0.433, 0.378),
        "mp": (0.561, 0.500, 0.412, 0.360),
        "cb": (0.563, 0.455, 0.362, 0.309),
        "sc": (0.786, 0.692, 0.595, 0.542),
        "te": (0.825, 0.713, 0.621, 0.554),
    },
    "t2i_quad1_by_size": {"sc": {300_000: 0.812, 100_000: 0.739}, "te": {300_000: 0.931, 100_000: 0.919}},
    "codes_used": {"sc": 252, "te": 14},
    "recon_loss": {"sc": 0.0079, "te": 0.0084},
}
QUADS = ("Quad1", "Quad2", "Quad3", "Quad4")
SANITY_KEYS = ("t2i_ground_truth", "i2t_ground_truth", "t2i_reconstructions")


class StageFailed(RuntimeError):
    """A stage of the plan failed; what finished before it stays, and a rerun continues there."""


@dataclass(frozen=True, kw_only=True)
class Preset:
    """Sizes and settings of one scale of the experiment, each by name."""

    name: str
    description: str
    comparable: bool  # may its numbers be set beside the paper's?
    quantizers: tuple[str, ...]
    seeds: tuple[int, ...]
    train_sizes: tuple[int, ...]  # stage-2 train examples (the largest is Table 1's)
    num_train: int  # TextMNIST images built for training (>= max(train_sizes))
    num_validation: int
    num_test: int
    num_shift_groups: int
    classifier_train: int  # TextMNIST train images whose windows train the classifier
    classifier_epochs: int
    config_suffix: str  # "-cpu-f8" or "" (the authors' model)
    stage1_steps: int
    stage1_batch: int
    stage1_settings: dict  # further `VQGANTrainingSettings` fields, by name
    stage2_steps: int  # for num_train examples; a smaller train size gets as many epochs (the authors: 20 for each)
    stage2_batch: int
    stage2_model: tuple[int, int, int]  # n_layer, n_embd, n_head
    num_eval: int  # images per evaluated split
    stage2_settings: dict = field(default_factory=dict)  # further `GeneratorTrainingSettings` fields, by name
    classifier_settings: dict = field(default_factory=dict)  # further `train_and_save` arguments (e.g. channels)
    classifier_test: int = 3_000  # images of test and test_seen whose windows measure the classifier (7,500 windows)
    evaluation_settings: dict = field(
        default_factory=dict
    )  # further `evaluate_pipeline` arguments (sampling settings)
    launcher: tuple[str, ...] = ()  # prefix of the training commands (default: this Python)
    estimates: dict = field(default_factory=dict)  # seconds per stage kind, before any is measured
    jobs: int = 1  # stages side by side by default (`--jobs`); not a setting of the experiment

    def __post_init__(self):
        from .training.settings import GeneratorTrainingSettings, VQGANTrainingSettings

        # A misspelt setting is refused when the preset is made, not when its stage starts.
        for settings, cls in (
            (self.stage1_settings, VQGANTrainingSettings),
            (self.stage2_settings, GeneratorTrainingSettings),
        ):
            unknown = sorted(set(settings) - {f.name for f in dataclasses.fields(cls)})
            if unknown:
                raise ValueError(f"Preset {self.name!r}: {cls.__name__} has no settings {unknown}.")


CPU_STAGE1 = dict(learning_rate=3e-4, scale_lr=False, perceptual_weight=0.0, reconstruction_loss="l2")
# The stage-2 recipe at CPU scale, chosen by measurement (results/stage2_recipe): no dropout (GPT-2's 0.1 slowed
# learning at these budgets), batch 8 (four times the updates of batch 32 for the same examples and CPU time: image-to-text
# 0.295 -> 0.475 on test_seen at 54,400 examples), one cosine cycle, a 45-token text block; the evaluation samples sharper than the
# authors (top-k 2% of the vocabulary, temperature 0.7), which an undertrained generator's flat distribution needs, and
# keeps the best of 8 candidates by the generator's other direction (text-to-image 0.116 -> 0.216, image-to-text
# 0.505 -> 0.552 on test_seen for the cpu preset's generator, results/stage2_recipe).
# Captions are encoded in their canonical wording (`--caption_form canonical`: clauses in quadrant order, one form), so that
# the generator learns what a caption says, not the grammar's many ways of saying it: at 12,800 examples (the smoke preset's scale)
# text-to-image 0.080 -> 0.186 and image-to-text 0.048 -> 0.268 on test_seen, on the same tokens (results/stage2_recipe).
CPU_STAGE2 = dict(dropout=0.0, lr_num_cycles=1, text_length=45, caption_form="canonical")
CPU_EVAL = dict(top_k_fraction=0.02, temperature=0.7, num_candidates=8)
CPU_PRESET = Preset(
    name="cpu",
    description="the largest run our 2-core CPU machines finish in a working day or two, resumable: "
    "TE and SC, 3 seeds. Stage 1: the CPU quantizer configs at f = 8 (`-cpu-f8`: 8x8 = 64 tokens per image, a "
    "quarter of the paper's 256, so that the generator's sequence is 112 tokens instead of 309), L2, k-means codebook "
    "initialisation at step 300, 1,500 steps of batch 16. Stage 2: the recipe of results/stage2_recipe (no dropout, one "
    "cosine cycle, batch 8, captions in their canonical wording) on a 4-layer, 128-wide GPT-2 with a 45-token text block, 6,800 steps (54,400 examples per "
    "direction, about 2.7 epochs); train sizes scaled down 15x (20,000 and 6,667). Evaluation: 500 images per split, "
    "sampled with top-k 2% and temperature 0.7, the best of 8 candidates kept by the generator's other direction "
    "(reranking; the authors sample one), judged by the smoke preset's classifier (32-64-128 wide, 8,000 images). Not comparable to the paper's numbers; its "
    "question is whether TE's text-to-image gain over SC is outside the seed spread at this scale.",
    comparable=False,
    quantizers=("te", "sc"),
    seeds=(0, 1, 2),
    train_sizes=(20_000, 6_667),
    num_train=20_000,
    num_validation=256,
    num_test=500,
    num_shift_groups=100,
    # The smoke preset's judge (`train_and_save`'s 32-64-128 on 8,000 images, 20,000 windows) reads 0.9929 / 0.9971 of
    # the test / test_seen windows, trained in 184 s, against 0.9941 / 0.9973 in 2,399 s on 48,000 images (120,000
    # windows; results/smoke_preset, results/cpu_preset): one judge for the CPU presets, trained in minutes by the first
    # folder of a run split over sessions (the others take it with `--classifier`: weights are not tracked).
    classifier_train=8_000,
    classifier_epochs=4,
    config_suffix="-cpu-f8",
    stage1_steps=1_500,
    stage1_batch=16,
    stage1_settings={**CPU_STAGE1, "kmeans_init_step": 300},
    stage2_steps=6_800,
    stage2_batch=8,
    stage2_model=(4, 128, 4),
    num_eval=500,
    stage2_settings={"lr_warmup_steps": 400, **CPU_STAGE2},
    evaluation_settings=CPU_EVAL,
    # Seconds per stage on one core, before any is measured: stage 2 at batch 8 (6,800 steps ~3,200 s, 2,267 ~1,100 s),
    # "evaluate" with 8 candidates (1,540 s beside two other jobs).
    estimates={"data": 60, "classifier": 200, "stage1": 240, "tokenize": 40, "stage2": 2_100, "evaluate": 900},
)

PRESETS = {
    # The cpu preset's design, smaller.
    "smoke": replace(
        CPU_PRESET,
        name="smoke",
        description="a check of the whole chain on a 2-core CPU in under half an hour: TE and SC, one seed, tiny data "
        "and models (the `cpu` preset's design and stage-2 recipe, smaller: f = 8 quantizers for 800 steps, a 2-layer "
        "generator for 3,200 steps of 8 on 3,000 examples, captions in their canonical wording, the best of 8 samples; "
        "three stages side by side on two cores). Its numbers are NOT comparable to the paper's.",
        seeds=(0,),
        train_sizes=(3_000,),
        num_train=3_000,
        num_validation=128,
        num_test=200,
        num_shift_groups=20,
        stage1_steps=800,
        stage1_settings={**CPU_STAGE1, "kmeans_init_step": 200},
        # 25,600 examples per direction (8.5 epochs): with canonical captions 1,600 steps reached text-to-image 0.254 and
        # image-to-text 0.374 on test_seen with 8 candidates, 2,400 steps 0.554 and 0.732 (results/stage2_recipe) with
        # one TE quantizer but 0.234 / 0.586 with a weaker one (ceiling 0.70, results/smoke_preset); on that one 3,200
        # steps reached 0.334 / 0.690 (16 candidates at 2,400 steps: 0.264 / 0.564), so the preset trains 3,200.
        stage2_steps=3_200,
        stage2_model=(2, 128, 4),
        num_eval=200,
        stage2_settings={"lr_warmup_steps": 160, **CPU_STAGE2},
        # The best of 8, as the cpu preset: with canonical captions its image-to-text reads its input (0.268 on test_seen
        # single-sample), so reranking pays (text-to-image 0.186 -> 0.254, image-to-text 0.268 -> 0.374; results/stage2_recipe).
        evaluation_settings=CPU_EVAL,
        estimates={"data": 5, "classifier": 60, "stage1": 140, "tokenize": 8, "stage2": 200, "evaluate": 70},
        # Three stages side by side on two cores, one thread each: the TE and SC chains are independent, and a 2-layer
        # generator or a small quantizer gains less than twice from a second thread; the third slot is the evaluation
        # classifier's, which with two slots ran after both chains' stage 2, alone, one core idle for its 216 s
        # (results/smoke_preset, figures/timeline.png), and now runs beside the two stage 1s.
        jobs=3,
    ),
    "cpu": CPU_PRESET,
    # The cpu preset's data, quantizers and evaluation with a longer stage 2, side by side on one GPU.
    "gpu": replace(
        CPU_PRESET,
        name="gpu",
        description="the cpu preset's data, quantizers and evaluation with a longer stage 2, for one GPU in "
        "minutes: TE and SC, 3 seeds, stages side by side on the one device (--jobs 6). Stage 1 as in the cpu preset (f = 8, "
        "1,500 steps of 16); stage 2 the authors' GPT size (8 layers, 256 wide) in bf16, batch 100 for 3,000 steps (300,000 "
        "examples per direction, 15 epochs of 20,000); 1,000 images per evaluated split, the best of 32 candidates. Not comparable to the paper's numbers.",
        num_test=1_000,
        stage1_settings={**CPU_STAGE1, "kmeans_init_step": 300, "dataloader_num_workers": 1},
        stage2_steps=3_000,
        stage2_batch=100,
        stage2_model=(8, 256, 8),
        num_eval=1_000,
        stage2_settings={"lr_warmup_steps": 150, **CPU_STAGE2, "mixed_precision": "bf16", "dataloader_num_workers": 1},
        # Sampling is cheap on the GPU: 32 candidates (on CPU, 8 -> 32 lifted text-to-image 0.216 -> 0.348).
        evaluation_settings={**CPU_EVAL, "num_candidates": 32},
        # Not yet measured on a GPU: from the H100 run of results/stage2_gpu (stage 2 at 8 x 256 ran 7.1 steps/s of 100
        # at 309 tokens alone) with six jobs sharing the device.
        estimates={"data": 40, "classifier": 120, "stage1": 90, "tokenize": 30, "stage2": 300, "evaluate": 40},
        jobs=6,
    ),
    "paper": Preset(
        name="paper",
        description="the authors' settings: the paper's quantizers (K = 128, f = 4, L1 + LPIPS + GAN), 300K "
        "images, their GPT (8 layers, 256 wide) for 20 epochs, 3 seeds; under `accelerate launch` on GPUs.",
        comparable=True,
        quantizers=("te", "sc", "cb", "mp", "mb"),
        seeds=(0, 1, 2),
        train_sizes=(300_000, 100_000),
        num_train=300_000,
        num_validation=3_000,
        num_test=3_000,
        num_shift_groups=100,
        classifier_train=60_000,
        classifier_epochs=10,
        config_suffix="",
        stage1_steps=125_000,
        stage1_batch=96,
        stage1_settings={},
        stage2_steps=60_000,
        stage2_batch=100,
        stage2_model=(8, 256, 8),
        num_eval=3_000,
        # The authors' positions: counted inside each modality, the image's 2-D (sine-cosine).
        stage2_settings={"position_scheme": "modality", "image_position_init": "sincos2d"},
        launcher=("accelerate", "launch"),
        estimates={
            "data": 600,
            "classifier": 600,
            "stage1": 36_000,
            "tokenize": 300,
            "stage2": 36_000,
            "evaluate": 1_800,
        },
    ),
}


# Settings an output folder may change between runs, and the stage kinds each change reruns (the
# evaluation classifier and the evaluation read nothing that training made under other settings);
# any other change is refused, since it would mix results of two experiments in one report.
RERUN_ON_CHANGE = {
    "classifier_train": ("classifier", "evaluate"),
    "classifier_epochs": ("classifier", "evaluate"),
    "classifier_settings": ("classifier", "evaluate"),
    "classifier_test": ("classifier",),
    "num_eval": ("evaluate",),
    "evaluation_settings": ("evaluate",),
    # The generator's recipe: stage 2 is trained again (its old folders moved to OUTPUT/replaced/), on the same tokens.
    "stage2_steps": ("stage2", "evaluate"),
    "stage2_batch": ("stage2", "evaluate"),
    "stage2_model": ("stage2", "evaluate"),
    "stage2_settings": ("stage2", "evaluate"),
    # Which runs a folder holds: more (or fewer) quantizers, seeds or train sizes add (or leave out)
    # stages and rerun none; `num_train`, the data every run reads, may not change.
    "quantizers": (),
    "seeds": (),
    "train_sizes": (),
}


# Preset fields that describe or schedule a run without changing its results.
NOT_SETTINGS = ("description", "estimates", "jobs")


def _settings_in_todays_form(before: dict | None) -> dict | None:
    """A state.json's recorded preset settings in today's form: runs started before the typed settings
    recorded their training settings as flags (`stage1_flags`, `stage2_flags`), now named values."""
    from .training.settings import GeneratorTrainingSettings, VQGANTrainingSettings, settings_parser

    if before is None:
        return None
    before = {k: v for k, v in before.items() if k not in NOT_SETTINGS}
    required = {
        VQGANTrainingSettings: ["--output_dir", "o", "--model_config", "c"],
        GeneratorTrainingSettings: ["--output_dir", "o", "--tokenized_dataset", "t", "--vqmodel", "q"],
    }
    for old, new, cls in (
        ("stage1_flags", "stage1_settings", VQGANTrainingSettings),
        ("stage2_flags", "stage2_settings", GeneratorTrainingSettings),
    ):
        if old in before and new not in before:
            flags = list(before.pop(old))
            parsed = settings_parser(cls).parse_args([*required[cls], *flags])
            names = [
                f.removeprefix("--").removeprefix("no-").removeprefix("no_").replace("-", "_")
                for f in flags
                if f.startswith("--")
            ]
            before[new] = {name: getattr(parsed, name) for name in names}
    # `te-vqgan train-classifier` / `evaluate` flags, now the library functions' arguments.
    for old, new in (("classifier_flags", "classifier_settings"), ("eval_flags", "evaluation_settings")):
        if old in before and new not in before:
            flags = list(before.pop(old))
            values = {}
            for flag, value in zip(flags[::2], flags[1::2]):
                name = flag.removeprefix("--").replace("-", "_")
                values[name] = [int(v) for v in value.split(",")] if name == "channels" else float(value)
            before[new] = values
    return before


@dataclass
class Step:
    """One stage of the plan: its folder, the file that marks it done and how to run it: a library
    function (`call`) or, for a training stage, a process (`command`) that a launcher must own."""

    key: str  # e.g. "stage1/te-seed0"
    kind: str  # data, classifier, stage1, tokenize, stage2, evaluate
    folder: Path
    marker: str
    command: list[str] | None = None  # a training stage: `python|accelerate launch SCRIPT --config FILE`
    resumable: bool = False  # a training script: continue from its last checkpoint
    needs: tuple[str, ...] = ()  # keys of the stages whose outputs it reads (`--jobs` starts it after them)

    check: Callable[[], bool] | None = (
        None  # an extra condition for done (e.g. the evaluation's classifier is current)
    )
    settings: object = None  # a training stage's `TrainingSettings` ...
    settings_file: Path | None = None  # ... and the file its command reads them from (`--config FILE`)
    call: functools.partial | None = None  # a library stage: the function and its arguments
    replaces_folder: bool = False  # `call` takes `overwrite=True` to replace what an interrupted or stale run left

    def write_settings(self) -> None:
        """Write a training stage's settings to the file its command names (before it starts)."""
        if self.settings is not None:
            self.settings_file.parent.mkdir(parents=True, exist_ok=True)
            self.settings.to_json(self.settings_file)

    def run_call(self) -> None:
        """Run a library stage here, replacing its folder's leftovers where it writes a folder whole."""
        overwrite = {"overwrite": True} if self.replaces_folder and self.folder.exists() else {}
        self.call(**overwrite)

    @property
    def done(self) -> bool:
        from .files import COMPLETION_MARKER, FINAL_STAGING, folder_is_complete

        if self.resumable:
            # A training folder is filled file by file: done only when its completion marker and its
            # files agree. Folders finished before the marker existed: the card is moved in last,
            # so card + marker file with no staging folder left means complete.
            if folder_is_complete(self.folder):
                return self.check is None or self.check()
            legacy = (self.folder / "README.md").is_file() and (self.folder / self.marker).is_file()
            if not legacy or (self.folder / FINAL_STAGING).exists() or (self.folder / COMPLETION_MARKER).exists():
                return False
        elif not (self.folder / self.marker).is_file():
            return False
        return self.check is None or self.check()


def _repo_root() -> Path:
    root = Path(__file__).resolve().parents[2]
    if not (root / "training" / "train_vqgan.py").is_file() or not (root / "hub_configs").is_dir():
        raise FileNotFoundError(
            f"te-vqgan reproduce runs the training scripts and configs of a source checkout (training/, hub_configs/) "
            f"and found none beside {Path(__file__).resolve().parent}; run it from a clone installed with `pip install -e .`."
        )
    return root


def display_command(command: list[str], root: Path) -> str:
    """`command` as a user types it in the repository `root`: `python` for this interpreter, paths relative to it."""
    prefix = str(root) + "/"
    return shlex.join(["python" if part == sys.executable else part.removeprefix(prefix) for part in command])


def resuming(command: list[str], output_dir: Path) -> list[str]:
    """A training script's `command`, continuing from `output_dir`'s last checkpoint when it has one."""
    if any(Path(output_dir).glob("checkpoint-*")):
        return [*command, "--resume_from_checkpoint", "latest"]
    return list(command)


def run_training(command: list[str], output_dir: Path, cwd: Path | None = None) -> int:
    """Run a training script's `command` (its `--output_dir` is `output_dir`) as a subprocess,
    continuing from the folder's last checkpoint when it has one; returns the exit status."""
    return subprocess.run(resuming(command, output_dir), cwd=cwd).returncode


def cpu_threads_per_job(jobs: int) -> int:
    """CPU threads for each of `jobs` stages side by side: the cores this process may use, shared out.
    Without it every stage's torch takes all the cores, and OpenMP threads that outnumber the cores
    wait on one another: measured on our 2-core machine, a two-thread stage-1 run of the smoke preset
    went from 1.2 steps/s to one step in 9 s when two single-thread jobs ran beside it."""
    from .options import usable_cpu_cores

    return max(1, usable_cpu_cores() // max(1, jobs))


class _LibraryStage:
    """A library stage run beside others (`--jobs` > 1): the call in a spawned worker process whose
    output goes to the stage's log, with the `Popen` methods the scheduler uses."""

    def __init__(self, step: Step, log_path: str, gpu: int | None, threads: int | None = None):
        import multiprocessing

        self.process = multiprocessing.get_context("spawn").Process(
            target=_run_library_stage,
            args=(step.call, step.replaces_folder and step.folder.exists(), log_path, gpu, threads),
            name=step.key,
        )
        self.process.start()

    def poll(self) -> int | None:
        return self.process.exitcode

    def terminate(self) -> None:
        self.process.terminate()

    def kill(self) -> None:
        self.process.kill()

    def wait(self, timeout: float | None = None) -> int:
        self.process.join(timeout)
        if self.process.exitcode is None:
            raise subprocess.TimeoutExpired(self.process.name, timeout)
        return self.process.exitcode


def _run_library_stage(call, overwrite: bool, log_path: str, gpu: int | None, threads: int | None = None) -> None:
    """In the worker: the stage's output into its log, its device and CPU threads, then the call (a
    traceback and exit 1 on error)."""
    import os

    if gpu is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = str(gpu)
    if threads is not None:
        import torch

        torch.set_num_threads(threads)
    with open(log_path, "ab") as log:
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
    call(**({"overwrite": True} if overwrite else {}))


class StageRunner:
    """Runs a plan's stages (`Step`s), resumable: one after another or side by side (`jobs`), a
    stage done when its marker says so, the wall-clock of each in `OUTPUT/state.json`. Used by
    `te-vqgan reproduce` (`ReproducePlan`) and by the ablations under `training/`.

    `recorded_settings()` (None: none) is what the stages compute: a folder continues only with the
    same, except the keys of `rerun_on_change`, whose change reruns the stage kinds it names.
    """

    def __init__(
        self,
        output: Path,
        build_steps: Callable[[], list[Step]],
        launcher: tuple[str, ...] = (),
        estimates: dict | None = None,
        rerun_on_change: dict | None = None,
    ):
        self.output = Path(output).resolve()
        self.root = _repo_root()
        self.launcher = tuple(launcher)
        self.estimates = dict(estimates or {})
        self.rerun_on_change = dict(rerun_on_change or {})
        self.steps = build_steps()

    def recorded_settings(self) -> dict | None:
        return None

    def settings_in_todays_form(self, recorded: dict | None) -> dict | None:
        return recorded

    def training_step(self, key: str, kind: str, script: str, settings, needs: tuple[str, ...] = ()) -> Step:
        """A training stage: `python|accelerate launch training/SCRIPT --config OUTPUT/runs/<key>.json`,
        the file holding `settings` (written when the stage starts)."""
        run_file = self.output / "runs" / f"{key}.json"
        command = [
            *(self.launcher or (sys.executable,)),
            str(self.root / "training" / script),
            "--config",
            str(run_file),
        ]
        return Step(
            key,
            kind,
            Path(settings.output_dir),
            "metrics.json",
            command,
            resumable=True,
            needs=needs,
            settings=settings,
            settings_file=run_file,
        )

    # ------------------------------------------------------------------ running
    def run(self, log=print, jobs: int = 1, gpus: list[int] | None = None) -> dict:
        """Run every stage not done yet; returns the state (wall-clock per stage).

        `jobs=1` runs them one after another in the plan's order. `jobs=N` runs up to N at a
        time, each as a subprocess with its output in `OUTPUT/logs/<stage>.log`, a stage
        starting once every stage it `needs` is done; a failing stage stops only the stages
        that need it, the others finish, and `StageFailed` then names every failure. `gpus`
        (CUDA device ids): each subprocess sees one of them (`CUDA_VISIBLE_DEVICES`), the one
        with the fewest stages running on it.
        """
        from .files import write_json_atomic

        if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
            raise ValueError(f"`jobs` must be an integer >= 1 (got {jobs!r}).")
        if gpus is not None and (
            not gpus
            or len(set(gpus)) != len(gpus)
            or any(isinstance(g, bool) or not isinstance(g, int) or g < 0 for g in gpus)
        ):
            raise ValueError(f"`gpus` must be distinct CUDA device ids >= 0 (got {gpus!r}).")
        if gpus and jobs == 1:
            raise ValueError(f"`gpus` {gpus} spreads stages run side by side: give `jobs` > 1 too.")
        self.output.mkdir(parents=True, exist_ok=True)
        state_path = self.output / "state.json"
        try:
            state = json.loads(state_path.read_text()) if state_path.is_file() else {"seconds": {}, "commands": {}}
        except (ValueError, UnicodeDecodeError) as error:
            raise ValueError(
                f"{str(state_path)!r} is damaged ({error}); move it aside to start the plan's bookkeeping afresh "
                "(finished stages are found again by their markers)."
            ) from error
        if not isinstance(state, dict):
            raise ValueError(
                f"{str(state_path)!r} must hold a JSON object (got a {type(state).__name__}); move it aside."
            )
        state.setdefault("timeline", {})
        settings = self.recorded_settings() or {}
        before = self.settings_in_todays_form(state.get("settings"))
        changed = sorted(k for k in settings if before is not None and before.get(k) != settings[k])
        invalidated = {kind for k in changed for kind in self.rerun_on_change.get(k, ())}
        refused = [k for k in changed if k not in self.rerun_on_change]
        if refused:
            raise ValueError(
                f"{str(self.output)!r} holds a run with other settings ({', '.join(f'{k}: {before.get(k)} -> {settings[k]}' for k in refused)}); "
                "continue it with the same options, or give another --output"
                + (
                    f" (only {', '.join(self.rerun_on_change)} may change: they rerun the stages that read them)."
                    if self.rerun_on_change
                    else "."
                )
            )
        state["settings"] = settings
        # Stages a settings change invalidates rerun, and stay marked until they have (an interrupted rerun continues).
        stale = set(state.get("stale", [])) | {
            step.key for step in self.steps if step.done and step.kind in invalidated
        }
        if stale:
            state["stale"] = sorted(stale)
            why = f"settings changed ({', '.join(changed)})" if changed else "an interrupted rerun continues"
            log(f"{why}: {len(stale)} finished stage(s) rerun: {', '.join(sorted(stale))}")
        # A training the change invalidates starts afresh, finished or not (its checkpoints hold the old settings):
        # its folder is moved aside, before the new settings are recorded, so that an interruption repeats the move.
        replaced = self.output / "replaced" / time.strftime("%Y%m%d-%H%M%S")
        for step in self.steps:
            if step.resumable and step.kind in invalidated and step.folder.exists():
                target = replaced / step.key
                target.parent.mkdir(parents=True, exist_ok=True)
                step.folder.rename(target)
                log(f"{step.key}: trained with the old settings, moved to {target}")
        write_json_atomic(state_path, state)

        def finished(step: Step, started: float) -> None:
            ended = time.time()
            state["seconds"][step.key] = round(ended - started, 1)
            state["timeline"][step.key] = [round(started, 1), round(ended, 1)]
            stale.discard(step.key)
            state["stale"] = sorted(stale)
            write_json_atomic(state_path, state)

        for step in self.steps:
            state["commands"][step.key] = self.display(step)
        if jobs > 1:
            self._run_side_by_side(jobs, stale, state, finished, log, gpus=gpus)
            return state
        total = len(self.steps)
        for position, step in enumerate(self.steps, start=1):
            if step.done and step.key not in stale:
                log(f"[{position}/{total}] {step.key}: done ({state['seconds'].get(step.key, 0):.0f} s), skipped")
                continue
            left = self.estimate_left(state, position - 1, stale)
            log(f"[{position}/{total}] {step.key}: running (about {left / 60:.0f} min left in the plan)")
            started = time.time()
            self._run_step(step)
            if not step.done:
                raise StageFailed(f"Stage {step.key} finished without writing {step.folder / step.marker}.")
            finished(step, started)
        write_json_atomic(state_path, state)
        return state

    def subprocess_command(self, step: Step) -> list[str]:
        """The process that runs a training `step`: its settings file written, the training continued
        from its last checkpoint."""
        step.write_settings()
        return resuming(step.command, step.folder) if step.resumable else list(step.command)

    def _start(self, step: Step, log_file, gpu: int | None, threads: int | None = None):
        """Start `step` beside others (`--jobs` > 1) with its output in `log_file`: a training stage as
        its process, a library stage in a worker process of its own (`_LibraryStage`), each with
        `threads` CPU threads (`cpu_threads_per_job`) unless the caller set OMP_NUM_THREADS."""
        import os

        threads = None if "OMP_NUM_THREADS" in os.environ else threads
        if step.call is not None:
            return _LibraryStage(step, log_file.name, gpu, threads)
        env = {**os.environ}
        if gpu is not None:
            env["CUDA_VISIBLE_DEVICES"] = str(gpu)
        if threads is not None:
            env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(threads)
        return subprocess.Popen(
            self.subprocess_command(step), cwd=self.root, stdout=log_file, stderr=subprocess.STDOUT, env=env
        )

    def _run_side_by_side(
        self, jobs: int, stale: set, state: dict, finished, log, gpus=None, poll: float = 0.2
    ) -> None:

        logs = self.output / "logs"
        logs.mkdir(exist_ok=True)
        done = {step.key for step in self.steps if step.done and step.key not in stale}
        pending = self.critical_path_first([step for step in self.steps if step.key not in done], state)
        known = {step.key for step in self.steps}
        running: dict[str, tuple[Step, subprocess.Popen, float, object]] = {}
        on_gpu: dict[str, int] = {}
        failed: dict[str, str] = {}
        blocked: list[str] = []
        threads = cpu_threads_per_job(jobs)
        log(
            f"{len(done)} of {len(self.steps)} stages done; {len(pending)} to run, up to {jobs} at a time (logs in {logs})"
        )
        try:
            while pending or running:
                for step in list(pending):
                    missing = [need for need in step.needs if need not in known]
                    if missing or any(need in failed or need in blocked for need in step.needs):
                        pending.remove(step)
                        blocked.append(step.key)
                        continue
                    if len(running) < jobs and all(need in done for need in step.needs):
                        pending.remove(step)
                        handle = open(logs / (step.key.replace("/", "__") + ".log"), "ab")
                        if gpus:
                            on_gpu[step.key] = min(gpus, key=lambda g: sum(1 for k in running if on_gpu.get(k) == g))
                        process = self._start(step, handle, on_gpu.get(step.key), threads)
                        running[step.key] = (step, process, time.time(), handle)
                        log(f"{step.key}: started ({len(running)} running, {len(pending)} waiting)")
                if not running:
                    blocked.extend(step.key for step in pending)  # needs that can never be met
                    break
                time.sleep(poll)
                for key, (step, process, started, handle) in list(running.items()):
                    code = process.poll()
                    if code is None:
                        continue
                    handle.close()
                    del running[key]
                    if code == 0 and step.done:
                        done.add(key)
                        finished(step, started)
                        log(f"{key}: done in {state['seconds'][key]:.0f} s")
                    else:
                        why = f"exited with {code}" if code else f"finished without writing {step.marker}"
                        failed[key] = f"{key} ({why}; log: {handle.name})"
                        log(f"{key}: FAILED ({why}); the stages that need it will not run, the others go on")
        finally:
            for step, process, _, handle in running.values():  # interrupted: end every child with it
                process.terminate()
            for step, process, _, handle in running.values():
                try:
                    process.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    process.kill()
                handle.close()
        if failed or blocked:
            raise StageFailed(
                f"{len(failed)} stage(s) failed: {'; '.join(failed.values()) or 'none'}"
                + (f"; not run because a stage they need failed: {', '.join(blocked)}" if blocked else "")
                + ". Rerun the same command to continue (finished stages are kept)."
            )

    def _run_step(self, step: Step) -> None:
        from .training.engine import EXPECTED_ERRORS

        if step.call is not None:
            try:
                step.run_call()
            except EXPECTED_ERRORS as error:
                raise StageFailed(f"Stage {step.key} failed: {error} Rerun to continue from it.") from error
            return
        command = self.subprocess_command(step)
        returncode = subprocess.run(command, cwd=self.root).returncode
        if returncode:
            raise StageFailed(
                f"Stage {step.key} failed ({Path(step.command[len(self.launcher) or 1]).name} exited with {returncode}); "
                "rerun to continue from its last checkpoint."
            )

    def display(self, step: Step) -> str:
        """How a user reruns `step` in the repository: a training stage's command (`python`, paths
        relative to it), a library stage's call."""
        if step.call is None:
            return display_command(step.command, self.root)
        prefix = str(self.root) + "/"
        relative = lambda v: v.removeprefix(prefix) if isinstance(v, str) else v  # noqa: E731
        arguments = [repr(relative(a)) for a in step.call.args] + [
            f"{k}={relative(v)!r}" for k, v in step.call.keywords.items()
        ]
        return f"{step.call.func.__module__}.{step.call.func.__name__}({', '.join(arguments)})"

    def estimated_seconds(self, state: dict) -> Callable[[Step], float]:
        """A stage's expected seconds: the mean measured time of its kind where one was measured,
        the preset's estimate otherwise."""
        measured: dict[str, list[float]] = {}
        for step in self.steps:
            if step.key in state["seconds"]:
                measured.setdefault(step.kind, []).append(state["seconds"][step.key])
        return lambda s: float(np.mean(measured[s.kind])) if s.kind in measured else self.estimates.get(s.kind, 60)

    def estimate_left(self, state: dict, done_before: int, stale=()) -> float:
        """Seconds the stages from `done_before` on should take (those not done, and the `stale`
        ones to rerun)."""
        seconds = self.estimated_seconds(state)
        return sum(seconds(s) for s in self.steps[done_before:] if not s.done or s.key in stale)

    def critical_path_first(self, steps: list[Step], state: dict) -> list[Step]:
        """`steps` by the longest chain of expected seconds from each to the end of the plan (itself
        and, transitively, the stages that need it), longest first, the plan's order breaking ties:
        side by side, a free slot goes to the stage the rest of the run waits on most (a second
        seed's stage 1 before a first seed's stage 2, which nothing else waits for)."""
        seconds = self.estimated_seconds(state)
        needed_by: dict[str, list[Step]] = {}
        for step in steps:
            for need in step.needs:
                needed_by.setdefault(need, []).append(step)

        @functools.cache
        def chain(key: str, cost: float) -> float:
            return cost + max((chain(s.key, seconds(s)) for s in needed_by.get(key, ())), default=0.0)

        return sorted(steps, key=lambda s: -chain(s.key, seconds(s)))


class ReproducePlan(StageRunner):
    """The stages of one `reproduce` run, in order: library calls and training processes."""

    def __init__(
        self,
        preset: Preset,
        output: Path,
        mnist_dir: str | None = None,
        device: str | None = None,
        classifier: str | None = None,
    ):
        # Absolute from the start: every stage, in-process or a subprocess, sees the same folders.
        self.preset, self.output, self.device = preset, Path(output).resolve(), device
        self.mnist_dir = str(Path(mnist_dir).resolve()) if mnist_dir is not None else None
        if self.output == Path.cwd() or self.output == Path(self.output.anchor):
            raise ValueError(
                f"--output-dir {str(output)!r} is the current folder or a root; give a folder of its own for the run."
            )
        if classifier is not None and not (Path(classifier) / "config.json").is_file():
            raise ValueError(
                f"--classifier {classifier!r} is not a `te-vqgan train-classifier` folder (no config.json)."
            )
        # A classifier trained before (it does not depend on the quantizers) is used as it is.
        self.classifier = Path(classifier).resolve() if classifier is not None else self.output / "classifier"
        super().__init__(
            self.output,
            self._build_steps,
            launcher=preset.launcher,
            estimates=preset.estimates,
            rerun_on_change=RERUN_ON_CHANGE,
        )

    def _build_steps(self) -> list[Step]:
        from .training.settings import GeneratorTrainingSettings, VQGANTrainingSettings

        p, out = self.preset, self.output
        scaled_down = None if p.comparable else f"te-vqgan reproduce --preset {p.name}"
        from .commands.build_dataset import build_dataset
        from .commands.evaluate import evaluate_pipeline
        from .commands.tokenize_dataset import tokenize_dataset_folder
        from .commands.train_classifier import train_and_save

        cache = str(out / "cache")
        data = out / "data" / "textmnist"
        steps = [
            Step(
                "data",
                "data",
                data,
                "README.md",
                replaces_folder=True,
                call=functools.partial(
                    build_dataset,
                    str(data),
                    num_train=p.num_train,
                    num_validation=p.num_validation,
                    num_test=p.num_test,
                    num_shift_groups=p.num_shift_groups,
                    cache_dir=cache,
                    mnist_dir=self.mnist_dir,
                    # One process: `datasets` forks its `num_proc` workers from this long-lived
                    # process, and a fork taken while one of its threads (pyarrow's jemalloc
                    # background thread) holds a lock hangs the worker for good (measured:
                    # the smoke preset's data stage idle for 30 min, a worker in `futex_wait`).
                    # The data do not depend on `num_proc`; the build takes seconds to a minute.
                    num_proc=1,
                ),
            ),
        ]
        if self.classifier == out / "classifier":
            steps.append(
                Step(
                    "classifier",
                    "classifier",
                    out / "classifier",
                    "metrics.json",
                    needs=("data",),
                    replaces_folder=True,
                    call=functools.partial(
                        train_and_save,
                        output=str(out / "classifier"),
                        num_train=p.classifier_train,
                        num_test=p.classifier_test,
                        epochs=p.classifier_epochs,
                        cache_dir=cache,
                        mnist_dir=self.mnist_dir,
                        device=self.device,
                        **p.classifier_settings,
                    ),
                )
            )
        for q in p.quantizers:
            config = self.root / "hub_configs" / f"{QUANTIZER_CONFIGS[q]}{p.config_suffix}.json"
            for seed in p.seeds:
                run = f"{q}-seed{seed}"
                stage1 = out / "stage1" / run
                steps.append(
                    self.training_step(
                        f"stage1/{run}",
                        "stage1",
                        "train_vqgan.py",
                        VQGANTrainingSettings(
                            model_config=str(config),
                            dataset=str(data),
                            output_dir=str(stage1),
                            seed=seed,
                            train_batch_size=p.stage1_batch,
                            max_train_steps=p.stage1_steps,
                            num_validation_images=min(512, p.num_validation),
                            checkpointing_steps=max(1, p.stage1_steps // 4),
                            checkpoints_total_limit=1,
                            validation_steps=p.stage1_steps,
                            report_to="none",
                            cache_dir=str(out / "cache"),
                            scaled_down=scaled_down,
                            **p.stage1_settings,
                        ),
                        needs=("data",),
                    )
                )
                tokens = out / "tokens" / run
                steps.append(
                    Step(
                        f"tokenize/{run}",
                        "tokenize",
                        tokens,
                        "quantizer.json",
                        needs=(f"stage1/{run}",),
                        replaces_folder=True,
                        call=functools.partial(
                            tokenize_dataset_folder,
                            str(stage1),
                            str(data),
                            str(tokens),
                            cache_dir=cache,
                            device=self.device,
                        ),
                    )
                )
                for size in p.train_sizes:
                    name = f"{run}-n{size}"
                    # Anchored to the data built (`num_train`, which a folder keeps), not to the largest
                    # size asked for: `--train-sizes 6667` alone trains as long as beside 20000.
                    steps2 = max(1, round(p.stage2_steps * size / p.num_train))
                    stage2 = out / "stage2" / name
                    n_layer, n_embd, n_head = p.stage2_model
                    steps.append(
                        self.training_step(
                            f"stage2/{name}",
                            "stage2",
                            "train_generator.py",
                            GeneratorTrainingSettings(
                                tokenized_dataset=str(tokens),
                                vqmodel=str(stage1),
                                output_dir=str(stage2),
                                seed=seed,
                                train_subset_size=size,
                                n_layer=n_layer,
                                n_embd=n_embd,
                                n_head=n_head,
                                train_batch_size=p.stage2_batch,
                                max_train_steps=steps2,
                                checkpointing_steps=max(1, steps2 // 4),
                                checkpoints_total_limit=1,
                                validation_steps=steps2,
                                num_evaluation_examples=0,
                                report_to="none",
                                num_validation_examples=min(256, p.num_validation),
                                scaled_down=scaled_down,
                                **p.stage2_settings,
                            ),
                            needs=(f"tokenize/{run}",),
                        )
                    )
                    evaluation = out / "evaluation" / name
                    own_classifier = ("classifier",) if self.classifier == out / "classifier" else ()
                    steps.append(
                        Step(
                            f"evaluate/{name}",
                            "evaluate",
                            evaluation,
                            "evaluation.json",
                            needs=(f"stage2/{name}", *own_classifier),
                            call=functools.partial(
                                evaluate_pipeline,
                                pipeline=str(stage2),
                                classifier=str(self.classifier),
                                output=str(evaluation),
                                dataset=str(data),
                                splits=("test", "test_seen"),
                                num_examples=p.num_eval,
                                seed=seed,
                                cache_dir=cache,
                                device=self.device,
                                **p.evaluation_settings,
                            ),
                            check=lambda evaluation=evaluation: self._judged_by_this_classifier(evaluation),
                        )
                    )
        return steps

    def _judged_by_this_classifier(self, evaluation: Path) -> bool:
        """Whether `evaluation/evaluation.json` was scored by this run's classifier (its fingerprint;
        the classifier's path for evaluations written before fingerprints): another `--classifier`
        reruns the evaluations instead of quoting its accuracy beside another judge's scores."""
        from .classifier import classifier_fingerprint

        try:
            recorded = json.loads((evaluation / "evaluation.json").read_text())
        except (OSError, ValueError):
            return False
        if "classifier_fingerprint" in recorded:
            return (self.classifier / "config.json").is_file() and recorded[
                "classifier_fingerprint"
            ] == classifier_fingerprint(self.classifier)
        return Path(str(recorded.get("classifier"))).resolve() == self.classifier

    def recorded_settings(self) -> dict:
        return json.loads(json.dumps({k: v for k, v in asdict(self.preset).items() if k not in NOT_SETTINGS}))

    def settings_in_todays_form(self, recorded: dict | None) -> dict | None:
        return _settings_in_todays_form(recorded)


# ---------------------------------------------------------------------------- results and report
def _mean_std(values) -> tuple[float, float] | None:
    values = [v for v in values if v is not None]
    return (float(np.mean(values)), float(np.std(values))) if values else None


def _run_result(q: str, seed: int, size: int, stage1_folder: Path | None, evaluation_folder: Path | None) -> dict:
    """One run's row of `results.json`: its quantizer's metrics and its evaluation, read from the
    output folders that hold them (None where a stage has not finished or no folder holds it)."""
    stage1 = stage1_folder / "stage1" / f"{q}-seed{seed}" / "metrics.json" if stage1_folder else None
    evaluation = (
        evaluation_folder / "evaluation" / f"{q}-seed{seed}-n{size}" / "evaluation.json" if evaluation_folder else None
    )
    recorded = json.loads(evaluation.read_text()) if evaluation and evaluation.is_file() else None
    return {
        "quantizer": q,
        "seed": seed,
        "train_size": size,
        "stage1": json.loads(stage1.read_text()) if stage1 and stage1.is_file() else None,
        "evaluation": recorded["splits"] if recorded else None,
        # Which judge scored it and how it sampled: a merged report checks that they agree.
        "classifier_fingerprint": recorded.get("classifier_fingerprint") if recorded else None,
        "sampling": recorded.get("sampling") if recorded else None,
    }


def collect_results(plan: ReproducePlan, state: dict) -> dict:
    """Everything the report needs, read from the stages' folders."""
    p, out = plan.preset, plan.output
    runs = [_run_result(q, seed, size, out, out) for q in p.quantizers for seed in p.seeds for size in p.train_sizes]
    classifier = plan.classifier / "metrics.json"
    return {
        "preset": asdict(p),
        "runs": runs,
        "classifier": {**json.loads(classifier.read_text()), "path": str(plan.classifier)}
        if classifier.is_file()
        else None,
        "seconds": state.get("seconds", {}),
        "timeline": state.get("timeline", {}),
        "commands": state.get("commands", {}),
        "versions": versions(),
    }


def versions() -> dict:
    import importlib.metadata as metadata

    found = {"python": platform.python_version(), "platform": platform.platform()}
    for package in ("te-vqgan", "torch", "transformers", "diffusers", "datasets", "accelerate", "huggingface_hub"):
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            found[package] = "not installed"
    try:
        found["git_commit"] = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
            cwd=Path(__file__).resolve().parent,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        found["git_commit"] = "unknown"
    return found


def summarise_results(results: dict) -> dict:
    """Mean and std over seeds of every number the tables show, per quantizer (and train size)."""
    preset = results["preset"]
    largest = max(preset["train_sizes"])
    summary: dict = {
        "table1": {},
        "table2": {},
        "table3": {},
        "sanity": {},
        "chance": {},
        "seen": {},
        "equivariance": {},
    }
    for q in preset["quantizers"]:
        runs = [r for r in results["runs"] if r["quantizer"] == q]
        full = [r for r in runs if r["train_size"] == largest and r["evaluation"]]
        row = {}
        for direction in ("t2i", "i2t"):
            for bucket in QUADS + ("Centre", "accuracy"):
                row[f"{direction}_{bucket}"] = _mean_std(
                    [r["evaluation"]["test"][direction].get(bucket) for r in full]
                )
        row["seeds"] = len(full)
        summary["table1"][q] = row
        summary["seen"][q] = {
            f"{d}_accuracy": _mean_std([r["evaluation"].get("test_seen", {}).get(d, {}).get("accuracy") for r in full])
            for d in ("t2i", "i2t")
        }
        summary["table2"][q] = {
            size: _mean_std(
                [
                    r["evaluation"]["test"]["t2i"].get("Quad1")
                    for r in runs
                    if r["train_size"] == size and r["evaluation"]
                ]
            )
            for size in preset["train_sizes"]
        }
        quantizers = {r["seed"]: r["stage1"] for r in runs if r["stage1"]}
        summary["table3"][q] = {
            key: _mean_std([m.get(key) for m in quantizers.values()])
            for key in (
                "codes_used",
                "perplexity",
                "recon_l1",
                "recon_l2",
                "perceptual",
                "colour_fidelity",
                "shape_iou",
            )
        }
        summary["equivariance"][q] = {
            key: _mean_std([m.get(key) for m in quantizers.values()])
            for key in (
                "shift_equivariance",
                "shift_equivariance_foreground",
                "shift_equivariance_all_colours",
                "shift_equivariance_foreground_all_colours",
                *[f"shift_equivariance_foreground_{c}" for c in ("white", "red", "green", "blue")],
            )
        }
        sanity = [
            (split, r["evaluation"][split]["sanity"])
            for r in full
            for split in ("test", "test_seen")
            if split in r["evaluation"]
        ]
        summary["sanity"][q] = {key: _mean_std([row.get(key) for _, row in sanity]) for key in SANITY_KEYS}
        summary["chance"][q] = {
            f"{key}_{split}": _mean_std([row.get(key) for name, row in sanity if name == split])
            for key in ("t2i_prompt_ignored", "i2t_image_ignored")
            for split in ("test", "test_seen")
        }
    return summary


def te_gain_verdict(summary: dict) -> str:
    """One sentence: is TE's text-to-image accuracy (all buckets) above SC's by more than the
    seed spread (the sum of the two standard deviations)?"""
    table = summary["table1"]
    te, sc = (table.get(q, {}).get("t2i_accuracy") for q in ("te", "sc"))
    if te is None or sc is None:
        return "TE against SC: not both measured."
    gain, spread = te[0] - sc[0], te[1] + sc[1]
    seeds = min(table["te"]["seeds"], table["sc"]["seeds"])
    if seeds < 2:
        return f"TE against SC, text-to-image over all buckets: {gain:+.3f} with one seed, so no seed spread to compare it with."
    verdict = "outside" if abs(gain) > spread else "**not** outside"
    return (
        f"TE against SC, text-to-image over all buckets: {gain:+.3f}; the seed spread (std TE + std SC) is {spread:.3f}, "
        f"so at this scale the difference is {verdict} the seed spread."
    )


def chance_verdict(summary: dict, quantizers) -> str:
    """One sentence per split and direction: is each generator above, at or below the chance level
    (another example's ground truth), its mean one seed std clear of it?"""
    parts = []
    for split, generator in (("test", lambda q: summary["table1"][q]), ("test_seen", lambda q: summary["seen"][q])):
        for direction, short, key in (
            ("text-to-image", "t2i", "t2i_prompt_ignored"),
            ("image-to-text", "i2t", "i2t_image_ignored"),
        ):
            words = []
            for q in quantizers:
                mine, chance = generator(q)[f"{short}_accuracy"], summary["chance"][q][f"{key}_{split}"]
                if mine is None or chance is None:
                    continue
                place = (
                    "above" if mine[0] - mine[1] > chance[0] else "below" if mine[0] + mine[1] < chance[0] else "at"
                )
                words.append(f"{QUANTIZER_NAMES[q]} {mine[0]:.3f} is {place} it")
            if words:
                chance_mean = np.mean(
                    [
                        summary["chance"][q][f"{key}_{split}"][0]
                        for q in quantizers
                        if summary["chance"][q][f"{key}_{split}"]
                    ]
                )
                parts.append(f"{direction} on `{split}` (chance {chance_mean:.3f}): " + ", ".join(words))
    return "Against chance (mean minus one std above it, or mean plus one std below it): " + "; ".join(parts) + "."


def what_to_see(summary: dict, quantizers) -> str:
    """One sentence: what the sample figures should show, given how far the generators are above chance on `test_seen`."""
    scores = [
        (
            q,
            summary["seen"][q]["t2i_accuracy"],
            summary["seen"][q]["i2t_accuracy"],
            summary["chance"][q]["t2i_prompt_ignored_test_seen"],
            summary["chance"][q]["i2t_image_ignored_test_seen"],
        )
        for q in quantizers
    ]
    scores = [row for row in scores if None not in row[1:]]
    if not scores:
        return "What to look at: no generator was evaluated."
    best = max(scores, key=lambda row: row[1][0] + row[2][0])
    q, t2i, i2t, t2i_chance, i2t_chance = best
    numbers = (
        f"{QUANTIZER_NAMES[q]}: text-to-image {t2i[0]:.2f} and image-to-text {i2t[0]:.2f} on `test_seen`, chance "
        f"{t2i_chance[0]:.2f} and {i2t_chance[0]:.2f}"
    )
    if min(t2i[0], i2t[0]) >= 0.25 and t2i[0] > t2i_chance[0] and i2t[0] > i2t_chance[0]:
        return (
            f"What to look at: in the text-to-image samples most digits have the colour and the place their prompt "
            f"names, and the generated captions name most digits of the image under them, in its colour and place ({numbers})."
        )
    return (
        f"What to look at: the samples are digit-like strokes in the four colours, but at this scale the generator does "
        f"not yet follow its prompt: most digits, colours or places differ from what the prompt says ({numbers})."
    )


def _fmt(value, digits: int = 3) -> str:
    if value is None:
        return "-"
    mean, std = value
    return f"{mean:.{digits}f} ({std:.{digits}f})"


def render_report(results: dict, figures: dict[str, str] | None = None) -> str:
    """`report.md` from `results.json`'s content (and the figures' relative paths)."""
    preset, summary = results["preset"], summarise_results(results)
    quantizers = preset["quantizers"]
    lines = [f"# te-vqgan reproduce: preset `{preset['name']}`", "", f"Preset: {preset['description']}", ""]
    if not preset["comparable"]:
        lines += [
            "**These numbers are not comparable to the paper's**: the data, the models and the training are scaled "
            "down (see the settings below). The paper's numbers stand beside ours for orientation only.",
            "",
        ]
    sources = results.get("sources")
    if sources:
        by_folder: dict[str, list[str]] = {}
        for key, folder in sources.items():
            by_folder.setdefault(folder, []).append(key)
        lines += [
            "Merged by `te-vqgan report` from the finished stages of "
            + "; ".join(f"`{folder}` ({', '.join(keys)})" for folder, keys in by_folder.items())
            + ". A run no folder holds shows as `-`.",
            "",
        ]
    largest = max(preset["train_sizes"])
    lines += [
        f"## Table 1: accuracy on held-out combinations (`test`), {largest:,} training examples",
        "",
        "Mean (std) over seeds; the paper's mean in the `paper` rows. Buckets: number of digits in the image.",
        "",
        "| model | seeds | T2I Quad1 | Quad2 | Quad3 | Quad4 | I2T Quad1 | Quad2 | Quad3 | Quad4 |",
        "|---" * 10 + "|",
    ]
    for q in quantizers:
        row = summary["table1"][q]
        lines.append(
            f"| {QUANTIZER_NAMES[q]} | {row['seeds']} | "
            + " | ".join(_fmt(row[f"{d}_{b}"]) for d in ("t2i", "i2t") for b in QUADS)
            + " |"
        )
        lines.append(
            f"| {QUANTIZER_NAMES[q]}, paper | 3 | "
            + " | ".join(f"{v:.3f}" for d in ("t2i", "i2t") for v in PAPER[d][q])
            + " |"
        )
    lines += ["", te_gain_verdict(summary), ""]
    if any(v is not None for row in summary["chance"].values() for v in row.values()):
        lines += [
            "Chance level (an output that ignores its input): each example judged against another example's ground "
            "truth, all buckets. A generator above it follows its prompt; at it, it does not.",
            "",
            "| model | T2I all (test) | chance, T2I (test) | I2T all (test) | chance, I2T (test) | T2I all (test_seen) | "
            "chance, T2I (test_seen) | I2T all (test_seen) | chance, I2T (test_seen) |",
            "|---" * 9 + "|",
        ]
        for q in quantizers:
            c, seen = summary["chance"][q], summary["seen"][q]
            lines.append(
                f"| {QUANTIZER_NAMES[q]} | {_fmt(summary['table1'][q]['t2i_accuracy'])} | {_fmt(c['t2i_prompt_ignored_test'])} | "
                f"{_fmt(summary['table1'][q]['i2t_accuracy'])} | {_fmt(c['i2t_image_ignored_test'])} | "
                f"{_fmt(seen['t2i_accuracy'])} | {_fmt(c['t2i_prompt_ignored_test_seen'])} | "
                f"{_fmt(seen['i2t_accuracy'])} | {_fmt(c['i2t_image_ignored_test_seen'])} |"
            )
        lines += ["", chance_verdict(summary, quantizers), ""]
    lines += [
        "Single centre digit (Centre) and all buckets together:",
        "",
        "| model | T2I Centre | T2I all | I2T Centre | I2T all |",
        "|---|---|---|---|---|",
    ]
    for q in quantizers:
        row = summary["table1"][q]
        lines.append(
            f"| {QUANTIZER_NAMES[q]} | {_fmt(row['t2i_Centre'])} | {_fmt(row['t2i_accuracy'])} | {_fmt(row['i2t_Centre'])} | {_fmt(row['i2t_accuracy'])} |"
        )
    lines += [
        "",
        "## Table 2: sample efficiency, text-to-image Quad1 by training examples",
        "",
        "| model | " + " | ".join(f"{n:,}" for n in preset["train_sizes"]) + " | paper (300K / 100K) |",
        "|---" * (len(preset["train_sizes"]) + 2) + "|",
    ]
    for q in quantizers:
        paper = PAPER["t2i_quad1_by_size"].get(q)
        lines.append(
            f"| {QUANTIZER_NAMES[q]} | "
            + " | ".join(_fmt(summary["table2"][q][n]) for n in preset["train_sizes"])
            + f" | {f'{paper[300_000]:.3f} / {paper[100_000]:.3f}' if paper else '-'} |"
        )
    lines += [
        "",
        "## Table 3: the quantizers",
        "",
        "| model | codes used | perplexity | recon L1 | recon L2 | perceptual | colour fidelity | shape IoU | paper: codes, recon |",
        "|---" * 9 + "|",
    ]
    for q in quantizers:
        t3 = summary["table3"][q]
        perceptual = (
            _fmt(t3["perceptual"], 4)
            if t3["perceptual"]
            else "-"
            if t3["codes_used"] is None  # no stage 1 of this quantizer in the results
            else "not measured (LPIPS not installed)"
        )
        paper = f"{PAPER['codes_used'][q]}, {PAPER['recon_loss'][q]}" if q in PAPER["codes_used"] else "-"
        lines.append(
            f"| {QUANTIZER_NAMES[q]} | {_fmt(t3['codes_used'], 1)} | {_fmt(t3['perplexity'], 1)} | {_fmt(t3['recon_l1'], 4)} | "
            f"{_fmt(t3['recon_l2'], 4)} | {perceptual} | {_fmt(t3['colour_fidelity'])} | {_fmt(t3['shape_iou'])} | {paper} |"
        )
    lines += [
        "",
        "## Sanity rows (test and test_seen)",
        "",
        "Ground truth through each evaluator must score at least 0.99; the quantizer's reconstructions through the "
        "text-to-image evaluator are the ceiling a perfect generator could reach with that quantizer.",
        "",
        "| model | ground-truth images -> T2I evaluator | ground-truth captions -> I2T evaluator | reconstructions -> T2I evaluator |",
        "|---|---|---|---|",
    ]
    for q in quantizers:
        s = summary["sanity"][q]
        lines.append(
            f"| {QUANTIZER_NAMES[q]} | {_fmt(s['t2i_ground_truth'])} | {_fmt(s['i2t_ground_truth'])} | {_fmt(s['t2i_reconstructions'])} |"
        )
    classifier = results.get("classifier")
    if classifier:
        lines += [
            "",
            "Evaluation classifier (windows of the splits; target 0.995 digit, 0.999 colour): "
            + "; ".join(
                f"{split} colour {r['colour_accuracy']:.4f}, digit {r['digit_accuracy']:.4f} ({r['windows']:,} windows)"
                for split, r in classifier["accuracy"].items()
            )
            + f" ({'met' if classifier['meets_target'] else 'not met'}).",
        ]
    lines += [
        "",
        "## Equivariance of the quantizers",
        "",
        "| model | authors' (white) | digit tokens (white) | authors', 4 colours | digit tokens, 4 colours | white | red | green | blue |",
        "|---" * 9 + "|",
    ]
    for q in quantizers:
        e = summary["equivariance"][q]
        lines.append(
            f"| {QUANTIZER_NAMES[q]} | "
            + " | ".join(
                _fmt(e[k])
                for k in (
                    "shift_equivariance",
                    "shift_equivariance_foreground",
                    "shift_equivariance_all_colours",
                    "shift_equivariance_foreground_all_colours",
                    "shift_equivariance_foreground_white",
                    "shift_equivariance_foreground_red",
                    "shift_equivariance_foreground_green",
                    "shift_equivariance_foreground_blue",
                )
            )
            + " |"
        )
    lines += ["", "The last four columns are the digit-token score per colour.", ""]
    if figures:
        lines += ["## Figures", "", what_to_see(summary, quantizers), ""]
        lines += [f"- {title}: ![]({path})" for title, path in figures.items()] + [""]
    seconds = results.get("seconds", {})
    lines += ["## Wall-clock per stage", "", "| stage | seconds |", "|---|---|"]
    lines += [f"| {key} | {value:.0f} |" for key, value in seconds.items()]
    kinds: dict[str, float] = {}
    for key, value in seconds.items():
        kinds[key.split("/")[0]] = kinds.get(key.split("/")[0], 0.0) + value
    lines += [f"| **all {kind}** | {value:.0f} |" for kind, value in kinds.items()]
    lines += [f"| **total** | {sum(seconds.values()):.0f} |", ""]
    timeline = results.get("timeline", {})
    if timeline:
        span = max(end for _, end in timeline.values()) - min(start for start, _ in timeline.values())
        lines += [
            f"From the first stage's start to the last one's end (the stages of the last run, side by side where "
            f"`--jobs` > 1; a run continued later counts the pause): {span:.0f} s.",
            "",
        ]
    lines += [
        "## Settings, commands and versions",
        "",
        "```json",
        json.dumps({k: v for k, v in preset.items() if k != "estimates"}, indent=1),
        "```",
        "",
        "```bash",
    ]
    lines += list(results.get("commands", {}).values())
    lines += ["```", "", "```json", json.dumps(results.get("versions", {}), indent=1), "```", ""]
    return "\n".join(lines)


def make_figures(
    out: Path,
    p: Preset,
    results: dict,
    mnist_dir: str | None = None,
    device: str | None = None,
    sources: dict[str, Path] | None = None,
) -> dict[str, str]:
    """Copy and draw the report's figures into `out/figures/`; returns {title: relative path}.
    `sources`: the output folder holding each stage ("stage1/te-seed0", "evaluation/te-seed0-n100";
    default `out`), for a report merged from several runs' folders."""
    from diffusers.utils import SAFETENSORS_WEIGHTS_NAME

    from .commands.equivariance import digit_equivariance
    from .visualization import new_figure, save_figure

    sources = sources or {}
    figures_dir = out / "figures"
    figures_dir.mkdir(parents=True, exist_ok=True)
    figures: dict[str, str] = {}
    size = max(p.train_sizes)

    def first_seed_with(q: str, stage: str, suffix: str, name: str):
        """(seed, path) of the first of the preset's seeds whose `stage/<q>-seed<seed><suffix>/name` a
        folder holds (a merged report's folders may lack a seed's files); the first seed otherwise."""
        for seed in p.seeds:
            run = f"{stage}/{q}-seed{seed}{suffix}"
            path = sources.get(run, out) / run / name
            if path.is_file():
                return seed, path
        run = f"{stage}/{q}-seed{p.seeds[0]}{suffix}"
        return p.seeds[0], sources.get(run, out) / run / name

    for q in p.quantizers:
        seed, metrics = first_seed_with(q, "stage1", "", "metrics.json")
        stage1 = metrics.parent
        reconstructions = stage1 / "reconstructions.png"
        if reconstructions.is_file():
            shutil.copyfile(reconstructions, figures_dir / f"reconstructions-{q}.png")
            figures[f"{QUANTIZER_NAMES[q]} (seed {seed}): validation images, reconstructions, code indices"] = (
                f"figures/reconstructions-{q}.png"
            )
        index_maps = figures_dir / f"index-maps-{q}.png"
        # A finished stage 1 with its weights (a merged report's folders may hold only metrics).
        weights = stage1 / SAFETENSORS_WEIGHTS_NAME
        if metrics.is_file() and (stage1 / "config.json").is_file() and weights.is_file() and not index_maps.is_file():
            digit_equivariance(
                str(stage1),
                str(index_maps),
                num_digits=20,
                mnist_dir=mnist_dir,
                device=device,
                log=lambda line: None,
            )
        if index_maps.is_file():
            figures[
                f"{QUANTIZER_NAMES[q]} (seed {seed}): the same digit shifted, four colours, and its code indices"
            ] = f"figures/index-maps-{q}.png"
        for name, title in (
            ("samples", "text-to-image samples (same prompts for every quantizer)"),
            ("captions", "generated captions under test images"),
        ):
            sampled_seed, source = first_seed_with(q, "evaluation", f"-n{size}", f"test-{name}.png")
            if source.is_file():
                shutil.copyfile(
                    source,
                    figures_dir / f"t2i-{name}-{q}.png" if name == "samples" else figures_dir / f"i2t-{name}-{q}.png",
                )
                figures[f"{QUANTIZER_NAMES[q]} (seed {sampled_seed}): {title}"] = (
                    f"figures/{'t2i' if name == 'samples' else 'i2t'}-{name}-{q}.png"
                )
    points = [
        (
            r["quantizer"],
            r["stage1"]["codes_used"],
            r["stage1"]["shift_equivariance_foreground"],
            r["stage1"]["shift_equivariance"],
        )
        for r in results["runs"]
        if r["stage1"] and r["train_size"] == size
    ]
    if points:
        figure, axes = new_figure(1, 1, figsize=(6, 4))
        axis = axes[0, 0]
        for q in p.quantizers:
            mine = [pt for pt in points if pt[0] == q]
            axis.scatter(
                [pt[1] for pt in mine], [pt[2] for pt in mine], label=f"{QUANTIZER_NAMES[q]}, digit tokens", marker="o"
            )
            axis.scatter(
                [pt[1] for pt in mine], [pt[3] for pt in mine], label=f"{QUANTIZER_NAMES[q]}, authors'", marker="x"
            )
        axis.set_xlabel("codes used")
        axis.set_ylabel("shift equivariance")
        axis.legend(fontsize=7)
        axis.set_title("Equivariance against codes used (one point per seed)", fontsize=9)
        figure.tight_layout()
        save_figure(figure, figures_dir / "equivariance-vs-codes.png")
        figures["equivariance against codes used"] = "figures/equivariance-vs-codes.png"
    timeline = results.get("timeline", {})
    if timeline:
        figures["when each stage ran"] = str(timeline_figure(timeline, figures_dir / "timeline.png").relative_to(out))
    return figures


def timeline_figure(timeline: dict[str, list[float]], path: Path) -> Path:
    """A bar per stage from its start to its end (seconds since the first start), by kind."""
    from .visualization import new_figure, save_figure

    keys = sorted(timeline, key=lambda k: timeline[k][0])
    origin = timeline[keys[0]][0]
    figure, axes = new_figure(1, 1, figsize=(9, 0.9 + 0.22 * len(keys)))
    axis = axes[0, 0]
    colours = {}
    for row, key in enumerate(keys):
        start, end = timeline[key]
        kind = key.split("/")[0]
        first_of_kind = kind not in colours
        colour = colours.setdefault(kind, f"C{len(colours)}")
        axis.barh(row, end - start, left=start - origin, color=colour, label=kind if first_of_kind else None)
    axis.set_yticks(range(len(keys)), keys, fontsize=6)
    axis.invert_yaxis()
    axis.set_xlabel("seconds since the first stage started")
    axis.legend(fontsize=7, loc="lower right")
    axis.set_title("When each stage ran", fontsize=9)
    figure.tight_layout()
    return save_figure(figure, path)


def reproduce(
    preset: Preset,
    output: str | Path,
    mnist_dir: str | None = None,
    device: str | None = None,
    classifier: str | None = None,
    log=print,
    jobs: int | None = None,
    gpus: list[int] | None = None,
) -> Path:
    """Run (or continue) the plan, then write `results.json`, `figures/` and `report.md`.
    `classifier`: a trained evaluation classifier to use instead of training one; `jobs`:
    stages run side by side (`ReproducePlan.run`; default the preset's), on the CUDA devices
    `gpus` if given."""
    import contextlib
    import signal
    import threading

    from .files import folder_lock

    plan = ReproducePlan(preset, Path(output), mnist_dir=mnist_dir, device=device, classifier=classifier)
    with contextlib.ExitStack() as stack:
        # One run per folder: a second `reproduce` on it is refused while this one lives.
        stack.enter_context(folder_lock(plan.output, "te-vqgan reproduce"))
        if threading.current_thread() is threading.main_thread():
            # SIGTERM as Ctrl-C: the running stage's subprocess is ended with it (never left training
            # on its own beside a rerun), and the lock is released.
            def interrupted(signum, frame):
                raise KeyboardInterrupt(f"signal {signum}")

            previous = signal.signal(signal.SIGTERM, interrupted)
            stack.callback(signal.signal, signal.SIGTERM, previous)
        log(
            f"te-vqgan reproduce --preset {preset.name}: {len(plan.steps)} stages, {sum(s.done for s in plan.steps)} done, output {plan.output}"
        )
        state = plan.run(log=log, jobs=preset.jobs if jobs is None else jobs, gpus=gpus)
        results = collect_results(plan, state)
        report = write_report(plan.output, preset, results, mnist_dir=plan.mnist_dir, device=plan.device)
    log(f"report: {report}")
    return report


# `reproduce` names each run's folder `<quantizer>-seed<seed>` (stage 1) and `...-n<train size>` (stage 2 on).
RUN_FOLDER = re.compile(r"(?P<quantizer>[a-z]+)-seed(?P<seed>\d+)(?:-n(?P<size>\d+))?")
# Preset fields a merged report's folders may differ in: which runs each holds.
RUN_SELECTION = ("quantizers", "seeds", "train_sizes", "num_train")


def _finished_runs(folders: list[Path]) -> tuple[dict, dict]:
    """{(quantizer, seed): folder} of finished stage 1s and {(quantizer, seed, size): folder} of
    finished evaluations over `folders`; a run in two folders is refused."""
    stage1_of: dict = {}
    evaluation_of: dict = {}
    for folder in folders:
        if not folder.is_dir():
            raise ValueError(f"{str(folder)!r} is not a folder (expected a `te-vqgan reproduce` output folder).")
        found = 0
        for kind, table, marker in (
            ("stage1", stage1_of, "metrics.json"),
            ("evaluation", evaluation_of, "evaluation.json"),
        ):
            for path in sorted((folder / kind).glob(f"*/{marker}")):
                match = RUN_FOLDER.fullmatch(path.parent.name)
                if not match or (kind == "evaluation") != (match["size"] is not None):
                    continue
                key = (match["quantizer"], int(match["seed"]), *((int(match["size"]),) if match["size"] else ()))
                if key in table:
                    raise ValueError(
                        f"{kind}/{path.parent.name} is in both {str(table[key])!r} and {str(folder)!r}: "
                        "each run must come from one folder, or its seed would be counted twice."
                    )
                table[key] = folder
                found += 1
        if not found:
            raise ValueError(
                f"{str(folder)!r} holds no finished stage 1 (stage1/<run>/metrics.json) or evaluation "
                "(evaluation/<run>/evaluation.json) of a `te-vqgan reproduce` run."
            )
    unknown = sorted({key[0] for key in (*stage1_of, *evaluation_of)} - set(QUANTIZER_CONFIGS))
    if unknown:
        raise ValueError(f"runs of unknown quantizers {unknown}; expected names from {sorted(QUANTIZER_CONFIGS)}.")
    return stage1_of, evaluation_of


def _state_of(folder: Path) -> dict:
    path = folder / "state.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def merge_results(name: str, folders) -> tuple[dict, dict[str, Path], Preset]:
    """`results.json`'s content for preset `name` from the finished stages of several `reproduce`
    output folders (a run split over machines, one quantizer or seed on each; or a run still
    going), the folder each stage came from, and the preset over the runs found. Refused before anything is written: a run found
    in two folders, evaluations scored by different classifiers or sampled otherwise than the
    preset says, and a folder whose recorded settings are not the preset's."""
    from .classifier import classifier_fingerprint

    if name not in PRESETS:
        raise ValueError(f"Unknown preset {name!r}; expected one of {sorted(PRESETS)}.")
    folders = [Path(f) for f in folders]
    if not folders:
        raise ValueError("Give at least one `te-vqgan reproduce` output folder to report on.")
    if len({f.resolve() for f in folders}) != len(folders):
        raise ValueError(f"A folder is given twice in {[str(f) for f in folders]}.")
    stage1_of, evaluation_of = _finished_runs(folders)
    pairs = {*stage1_of, *(key[:2] for key in evaluation_of)}
    preset = preset_with(
        name,
        quantizers=[q for q in QUANTIZER_CONFIGS if any(q == key[0] for key in pairs)],
        seeds=sorted({seed for _, seed in pairs}),
        train_sizes=sorted({key[2] for key in evaluation_of}, reverse=True) or None,
    )
    expected = {
        k: v for k, v in json.loads(json.dumps(asdict(preset))).items() if k not in (*NOT_SETTINGS, *RUN_SELECTION)
    }
    for folder in folders:
        recorded = _settings_in_todays_form(_state_of(folder).get("settings"))
        changed = sorted(k for k in expected if recorded is not None and k in recorded and recorded[k] != expected[k])
        if changed:
            raise ValueError(
                f"{str(folder)!r} holds a run with other settings than the {name} preset's "
                f"({', '.join(f'{k}: {recorded[k]} there, {expected[k]} in the preset' for k in changed)})."
            )
    runs, sources = [], {}
    for q in preset.quantizers:
        for seed in preset.seeds:
            stage1 = stage1_of.get((q, seed))
            if stage1:
                sources[f"stage1/{q}-seed{seed}"] = stage1
            for size in preset.train_sizes:
                evaluation = evaluation_of.get((q, seed, size))
                if evaluation:
                    sources[f"evaluation/{q}-seed{seed}-n{size}"] = evaluation
                runs.append(_run_result(q, seed, size, stage1, evaluation))
    judges: dict[str, list[str]] = {}
    for r in runs:
        name_of = f"{r['quantizer']}-seed{r['seed']}-n{r['train_size']}"
        if r["classifier_fingerprint"]:
            judges.setdefault(r["classifier_fingerprint"], []).append(name_of)
        sampled = r["sampling"] or {}
        other = {k: (sampled[k], v) for k, v in preset.evaluation_settings.items() if k in sampled and sampled[k] != v}
        if other:
            raise ValueError(
                f"evaluation/{name_of} sampled with "
                + ", ".join(f"{k} {mine} (the {name} preset: {theirs})" for k, (mine, theirs) in other.items())
                + "; evaluate it again with the preset's settings."
            )
    if len(judges) > 1:
        raise ValueError(
            "The evaluations were scored by different classifiers ("
            + "; ".join(f"{fp[:12]}: {', '.join(names)}" for fp, names in judges.items())
            + "); evaluate every run with one (`te-vqgan reproduce --classifier FOLDER`)."
        )
    classifier = None
    for folder in folders:
        metrics = folder / "classifier" / "metrics.json"
        if not metrics.is_file():
            continue
        if judges and (folder / "classifier" / "config.json").is_file():
            if classifier_fingerprint(folder / "classifier") not in judges:
                continue  # another judge than the evaluations': not the one to quote
        classifier = {**json.loads(metrics.read_text()), "path": str(folder / "classifier")}
        break
    seconds: dict = {}
    commands: dict = {}
    for folder in folders:
        state = _state_of(folder)
        for merged, recorded in ((seconds, state.get("seconds", {})), (commands, state.get("commands", {}))):
            for key, value in recorded.items():
                merged[key if key not in merged else f"{key} ({folder.name})"] = value
    results = {
        "preset": asdict(preset),
        "runs": runs,
        "classifier": classifier,
        "seconds": seconds,
        # One timeline's clock per run: side by side only for a single folder.
        "timeline": _state_of(folders[0]).get("timeline", {}) if len(folders) == 1 else {},
        "commands": commands,
        "versions": versions(),
        "sources": {key: str(folder) for key, folder in sources.items()},
    }
    return results, sources, preset


def write_report(output: Path, preset: Preset, results: dict, mnist_dir=None, device=None, sources=None) -> Path:
    """`figures/`, `results.json` and `report.md` in `output`, in that order: a figure that cannot be
    drawn (say, MNIST for an index map cannot be fetched offline) leaves an earlier report's
    `results.json` and `report.md` as they were, together."""
    from .files import atomic_path, write_json_atomic

    figures = make_figures(output, preset, results, mnist_dir=mnist_dir, device=device, sources=sources)
    write_json_atomic(output / "results.json", results)
    report = output / "report.md"
    with atomic_path(report) as tmp:
        Path(tmp).write_text(render_report(results, figures))
    return report


def report_from_folders(
    name: str, folders, output, mnist_dir: str | None = None, device: str | None = None, log=print
) -> Path:
    """`report.md`, `results.json` and `figures/` in `output` from the finished stages of the
    `reproduce` output `folders` of preset `name` (`merge_results`); runs no stage. `mnist_dir`
    and `device`: for the index-map figure of a quantizer whose weights a folder holds."""
    results, sources, preset = merge_results(name, folders)
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    report = write_report(output, preset, results, mnist_dir=mnist_dir, device=device, sources=sources)
    evaluated = sum(r["evaluation"] is not None for r in results["runs"])
    log(
        f"report: {report} ({evaluated} of {len(results['runs'])} runs evaluated, from {len(set(sources.values()))} folders)"
    )
    return report


def preset_with(name: str, quantizers=None, seeds=None, train_sizes=None) -> Preset:
    """A preset with the command line's overrides; checked."""
    if name not in PRESETS:
        raise ValueError(f"Unknown preset {name!r}; expected one of {sorted(PRESETS)}.")
    preset = PRESETS[name]
    if quantizers is not None:
        unknown = [q for q in quantizers if q not in QUANTIZER_CONFIGS]
        if unknown or not quantizers:
            raise ValueError(f"--quantizers: unknown {unknown}; expected names from {sorted(QUANTIZER_CONFIGS)}.")
        preset = replace(preset, quantizers=tuple(quantizers))
    for option, values in (("--quantizers", quantizers), ("--seeds", seeds), ("--train-sizes", train_sizes)):
        repeated = sorted({v for v in values or () if list(values).count(v) > 1})
        if repeated:
            raise ValueError(
                f"{option} names {repeated} more than once; each run would be counted twice in the mean and std."
            )
    if seeds is not None:
        if not seeds or min(seeds) < 0 or max(seeds) >= 2**32:
            raise ValueError(f"--seeds must be integers in [0, 2**32) (got {seeds}).")
        preset = replace(preset, seeds=tuple(seeds))
    if train_sizes is not None:
        if not train_sizes or min(train_sizes) < 1:
            raise ValueError(f"--train-sizes must be positive integers (got {train_sizes}).")
        if min(train_sizes) < preset.stage2_batch:
            raise ValueError(
                f"--train-sizes {list(train_sizes)}: each must hold at least one stage-2 batch ({preset.stage2_batch} examples "
                f"in the {name} preset)."
            )
        preset = replace(preset, train_sizes=tuple(train_sizes), num_train=max(preset.num_train, max(train_sizes)))
    return preset
