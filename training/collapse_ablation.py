#!/usr/bin/env python
"""Codebook collapse of TE-VQGAN at CPU scale: an ablation of remedies, several seeds per row.

    python training/collapse_ablation.py --mnist_dir ../shared/data/mnist --output_dir outputs/collapse_ablation
    python training/collapse_ablation.py --rows te_kmeans --seeds 0 ...   # one row, one seed

Every row trains `hub_configs/te-vqgan-mnist-cpu.json` (or its plain-VQGAN twin) with
`training/train_vqgan.py` and the CPU recipe of `te-vqgan reproduce` (`te_vqgan.reproduce.CPU_STAGE1`),
changing one thing; the runs are a plan on reproduce's runner (`StageRunner`: each run
`train_vqgan.py --config OUTPUT/runs/<row>-seed<seed>.json`, `--jobs` side by side). Each run's final validation
(`metrics.json`) gives the table: equivariance three ways (the authors' score, the digit's own
tokens, all four colours), codes used, perplexity, reconstruction error, colour fidelity and
shape. Results: `results.json`, `table.md` (mean (std) over seeds) and `scatter.png`
(equivariance on the digit's tokens against codes used) in `--output_dir`.

Runs are resumable and idempotent: a finished run (its completion marker) is read, not retrained;
an interrupted one continues from its last checkpoint.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from te_vqgan.reproduce import CPU_STAGE1, StageFailed, StageRunner, Step
from te_vqgan.training.settings import VQGANTrainingSettings


REPO_ROOT = Path(__file__).resolve().parents[1]
TE_CPU = REPO_ROOT / "hub_configs" / "te-vqgan-mnist-cpu.json"
SC_CPU = REPO_ROOT / "hub_configs" / "vqgan-mnist-sc-cpu.json"


@dataclass(frozen=True)
class Row:
    """One recipe: a base config, config overrides and further training settings (by name)."""

    name: str
    description: str
    config: Path = TE_CPU
    overrides: tuple[tuple[str, object], ...] = ()
    settings: dict = field(default_factory=dict)  # `VQGANTrainingSettings` fields beyond the CPU recipe


KMEANS = {"kmeans_init_step": 300}
SHIFT = {"shift_equivariance_weight": 1.0}
ROWS = {
    row.name: row
    for row in (
        Row("sc", "VQGAN, strided conv (SC), lambda 0", config=SC_CPU),
        Row("te", "TE-VQGAN as in the paper (lambda 10)"),
        Row("te_kmeans", "TE + k-means init at step 300", settings=KMEANS),
        Row(
            "te_kmeans_restarts",
            "TE + k-means init + dead-code restarts every 100 steps",
            settings={**KMEANS, "dead_code_restart_steps": 100},
        ),
        Row(
            "te_kmeans_active",
            "TE + k-means init + orthogonal term on active codes only",
            overrides=(("orthogonal_reg_active_codes_only", True),),
            settings=KMEANS,
        ),
        Row(
            "te_cosine_kmeans",
            "TE + cosine lookup + k-means init",
            overrides=(("codebook_lookup", "cosine"),),
            settings=KMEANS,
        ),
        Row(
            "sc_l1",
            "SC with L1 instead of L2 (the paper's pixel loss, without its LPIPS)",
            config=SC_CPU,
            settings={"reconstruction_loss": "l1"},
        ),
        Row("te_l1", "TE with L1 instead of L2", settings={"reconstruction_loss": "l1"}),
        # The direct shift-equivariance term (te_vqgan.losses.shift_equivariance_loss), with and without the orthogonal one.
        Row("te_shift", "TE + the shift-equivariance term (weight 1)", settings=SHIFT),
        Row("sc_shift", "SC + the shift-equivariance term alone (weight 1, lambda 0)", config=SC_CPU, settings=SHIFT),
        Row(
            "te_shift10", "TE + the shift-equivariance term at weight 10", settings={"shift_equivariance_weight": 10.0}
        ),
        Row("te_kmeans_shift", "TE + k-means init + the shift-equivariance term", settings={**KMEANS, **SHIFT}),
        Row(
            "sc_kmeans_shift",
            "SC + k-means init + the shift-equivariance term alone",
            config=SC_CPU,
            settings={**KMEANS, **SHIFT},
        ),
        Row(
            "te_simvq",
            "TE + SimVQ codebook (frozen basis x learnt linear map)",
            overrides=(("codebook_parametrization", "simvq"),),
        ),
    )
}

# Table columns: (metrics.json key, header, format).
COLUMNS = (
    ("shift_equivariance", "equiv. (authors')", "{:.3f}"),
    ("shift_equivariance_foreground", "equiv. digit tokens", "{:.3f}"),
    ("shift_equivariance_foreground_all_colours", "equiv. digit tokens, 4 colours", "{:.3f}"),
    ("image_shift_equivariance", "equiv. any-image (whole-token shifts)", "{:.3f}"),
    ("codes_used", "codes used", "{:.1f}"),
    ("perplexity", "perplexity", "{:.1f}"),
    ("recon_l1", "recon L1", "{:.4f}"),
    ("recon_l2", "recon L2", "{:.4f}"),
    ("colour_fidelity", "colour fidelity", "{:.3f}"),
    ("shape_iou", "shape IoU", "{:.3f}"),
)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--rows", default=",".join(ROWS), help=f"Comma-separated rows (default all: {','.join(ROWS)})."
    )
    parser.add_argument("--seeds", default="0,1", help="Comma-separated training seeds (default 0,1).")
    parser.add_argument("--output_dir", required=True, help="Runs, results.json, table.md and scatter.png go here.")
    parser.add_argument(
        "--mnist_dir",
        default=None,
        help="Folder of the MNIST .gz files (default: $TE_VQGAN_MNIST_DIR, else download).",
    )
    parser.add_argument("--cache_dir", default=None, help="datasets cache (default OUTPUT_DIR/cache).")
    parser.add_argument("--max_train_steps", type=int, default=1000, help="Steps per run (default 1000).")
    parser.add_argument("--train_batch_size", type=int, default=16)
    parser.add_argument("--learning_rate", type=float, default=None, help="Default: the CPU recipe's (3e-4).")
    parser.add_argument("--jobs", type=int, default=1, help="Runs side by side, each a process (default 1).")
    parser.add_argument("--num_train", type=int, default=5000, help="Training images (default 5000).")
    parser.add_argument(
        "--dataset",
        default="textmnist",
        help="What every row trains on: TextMNIST (default), or any image dataset `train_vqgan.py --dataset` takes "
        "(a folder of images, a datasets folder, a Hub id, mnist / fashion_mnist read from --mnist_dir).",
    )
    parser.add_argument(
        "--resolution", type=int, default=None, help="With --dataset: the image side (default the config's, 64)."
    )
    parser.add_argument(
        "--validation_split", default="validation", help="With --dataset: the validation split (default validation)."
    )
    parser.add_argument(
        "--validation_fraction",
        type=float,
        default=None,
        help="With --dataset and no validation split: hold out this fraction of train.",
    )
    parser.add_argument("--num_validation_images", type=int, default=512)
    parser.add_argument(
        "--report_only", action="store_true", help="Write the table from finished runs; train nothing."
    )
    args = parser.parse_args(argv)
    args.rows = [name.strip() for name in args.rows.split(",") if name.strip()]
    unknown = [name for name in args.rows if name not in ROWS]
    if unknown or not args.rows:
        parser.error(f"--rows: unknown row(s) {unknown}; expected names from {list(ROWS)}")
    try:
        args.seeds = [int(seed) for seed in args.seeds.split(",")]
    except ValueError:
        parser.error(f"--seeds must be comma-separated integers (got {args.seeds!r})")
    if args.max_train_steps < 1:
        parser.error(f"--max_train_steps must be >= 1 (got {args.max_train_steps})")
    if args.jobs < 1:
        parser.error(f"--jobs must be >= 1 (got {args.jobs})")
    return args


def run_folder(output_dir: Path, row: str, seed: int) -> Path:
    return output_dir / "runs" / f"{row}-seed{seed}"


class AblationPlan(StageRunner):
    """One training stage per (row, seed), on `te-vqgan reproduce`'s runner and its CPU recipe."""

    def __init__(self, args):
        self.args = args
        super().__init__(Path(args.output_dir), self._build_steps)

    def recorded_settings(self) -> dict:
        # What every run shares; rows and seeds may be added to a folder later.
        keys = ("max_train_steps", "train_batch_size", "learning_rate", "num_train", "num_validation_images")
        if self.args.dataset != "textmnist":  # (not recorded for TextMNIST: folders made before keep their settings)
            keys += ("dataset", "resolution", "validation_split", "validation_fraction")
        return {key: getattr(self.args, key) for key in keys}

    def settings_of(self, row: Row, seed: int) -> VQGANTrainingSettings:
        """The run's training settings: the CPU recipe, this ablation's sizes, the row's changes."""
        args, folder = self.args, run_folder(self.output, row.name, seed)
        recipe = {**CPU_STAGE1, **({"learning_rate": args.learning_rate} if args.learning_rate is not None else {})}
        data = {}
        if args.dataset != "textmnist":  # any images: the first --num_train of train, validation as asked
            data = dict(
                dataset=args.dataset,
                resolution=args.resolution,
                validation_split=args.validation_split,
                validation_fraction=args.validation_fraction,
                max_train_samples=args.num_train,
            )
        return VQGANTrainingSettings(
            model_config=str(folder.parent / f"{folder.name}.config.json"),
            output_dir=str(folder),
            cache_dir=str(args.cache_dir or self.output / "cache"),
            mnist_dir=args.mnist_dir,
            seed=seed,
            num_train=args.num_train,
            num_validation=args.num_validation_images,
            num_validation_images=args.num_validation_images,
            num_shift_groups=100,
            train_batch_size=args.train_batch_size,
            max_train_steps=args.max_train_steps,
            checkpointing_steps=250,
            checkpoints_total_limit=1,
            validation_steps=10 * args.max_train_steps,
            report_to="none",
            scaled_down=f"CPU-scale collapse ablation, {args.max_train_steps} steps",
            **data,
            **{**recipe, **row.settings},
        )

    def _build_steps(self) -> list[Step]:
        return [
            self.training_step(f"{name}-seed{seed}", "stage1", "train_vqgan.py", self.settings_of(ROWS[name], seed))
            for name in self.args.rows
            for seed in self.args.seeds
        ]

    def write_model_configs(self) -> None:
        """Each run's model config (the row's base config with its overrides), beside its folder."""
        from te_vqgan.files import write_json_atomic

        for step in self.steps:
            row = ROWS[step.key.rsplit("-seed", 1)[0]]
            write_json_atomic(
                Path(step.settings.model_config), {**json.loads(row.config.read_text()), **dict(row.overrides)}
            )


def summarise(records: dict[str, list[dict]]) -> dict[str, dict[str, tuple[float, float]]]:
    """Per row and column: (mean, std over seeds); std is 0 for one seed."""
    return {
        row: {
            key: (float(np.mean([r[key] for r in runs])), float(np.std([r[key] for r in runs])))
            for key, _, _ in COLUMNS
            if all(key in r for r in runs)
        }
        for row, runs in records.items()
        if runs
    }


def render_table(summary, records) -> str:
    """The markdown table: mean (std) over seeds, "-" where a row lacks a column; a column no row has (TextMNIST's
    scores on other images) is left out."""
    columns = [column for column in COLUMNS if any(column[0] in values for values in summary.values())]
    lines = [
        "| row | seeds | " + " | ".join(header for _, header, _ in columns) + " |",
        "|---" * (len(columns) + 2) + "|",
    ]
    for row, values in summary.items():
        cells = [
            f"{fmt.format(values[key][0])} ({fmt.format(values[key][1])})" if key in values else "-"
            for key, _, fmt in columns
        ]
        lines.append(f"| `{row}` | {len(records[row])} | " + " | ".join(cells) + " |")
    lines.append("")
    lines += [f"- `{name}`: {ROWS[name].description}" for name in summary]
    return "\n".join(lines) + "\n"


def save_scatter(records, path: Path) -> Path:
    from te_vqgan.visualization import new_figure, save_figure

    figure, axes = new_figure(1, 1, figsize=(6.5, 4.5))
    axis = axes[0, 0]
    # TextMNIST: the digit's own tokens; any other images: whole-token shifts of the validation images.
    key = "shift_equivariance_foreground"
    if not all(key in r for runs in records.values() for r in runs):
        key = "image_shift_equivariance"
    for row, runs in records.items():
        axis.scatter([r["codes_used"] for r in runs], [r[key] for r in runs], label=row, s=36)
    axis.set_xlabel("codes used (of 128), validation images")
    axis.set_ylabel(
        "shift equivariance on the digit's tokens"
        if key == "shift_equivariance_foreground"
        else "shift equivariance, whole-token shifts"
    )
    axis.axhline(0.99, color="grey", lw=0.6, ls="--")
    axis.axvline(64, color="grey", lw=0.6, ls="--")
    axis.legend(fontsize=7, loc="best")
    axis.set_title("Equivariance against codebook use (one point per seed)", fontsize=9)
    figure.tight_layout()
    return save_figure(figure, path)


def main(args) -> int:
    from te_vqgan.files import folder_lock, write_json_atomic

    plan = AblationPlan(args)
    with folder_lock(plan.output, "training/collapse_ablation.py"):
        if not args.report_only:
            plan.write_model_configs()
            try:
                plan.run(log=lambda line: print(line, flush=True), jobs=args.jobs)
            except StageFailed as error:
                print(f"collapse_ablation.py: error: {error}", file=sys.stderr)
                return 1
        records: dict[str, list[dict]] = {row: [] for row in args.rows}
        commands = {}
        for step in plan.steps:
            if step.done:
                name, seed = step.key.rsplit("-seed", 1)
                records[name].append({"seed": int(seed), **json.loads((step.folder / "metrics.json").read_text())})
                commands[step.key] = plan.display(
                    step
                )  # as a user types it: `python`, paths relative to the repository
        summary = summarise(records)
        write_json_atomic(
            plan.output / "results.json",
            {"summary": summary, "runs": records, "commands": commands, "settings": plan.recorded_settings()},
        )
        table = render_table(summary, records)
        (plan.output / "table.md").write_text(table)
        figure = save_scatter({row: runs for row, runs in records.items() if runs}, plan.output / "scatter.png")
    print(table)
    print(f"results: {plan.output / 'results.json'}, {plan.output / 'table.md'}, {figure}")
    return 0


if __name__ == "__main__":
    sys.exit(main(parse_args()))
