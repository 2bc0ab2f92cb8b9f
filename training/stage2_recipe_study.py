#!/usr/bin/env python
"""Stage 2 at CPU scale: which generator recipe learns to follow its input in the fewest examples.

    python training/stage2_recipe_study.py --preset_output outputs/cpu-preset --output_dir outputs/stage2-recipe
    python training/stage2_recipe_study.py ... --rows baseline,no_dropout      # some rows only

Every row trains `training/train_generator.py` on the same tokens (a finished `te-vqgan
reproduce --preset cpu` folder's `tokens/<run>` and `stage1/<run>`, TE seed 0 by default) from
the `cpu` preset's stage-2 recipe, changing what the row says, and is judged by `te-vqgan
evaluate` with the same classifier on the same images of `test` and `test_seen`, both
directions, the chance level beside each. A row with `evaluate_only` reuses another row's
generator and changes only the sampling settings of the evaluation.

Rows are resumable and idempotent: a finished training (its `metrics.json`) and a finished
evaluation (its `evaluation.json`) are read, not redone; an interrupted training continues
from its last checkpoint. `results.json`, `table.md` and `curve.png` (accuracy against
examples seen per direction) in `--output_dir` are rewritten from what is on disk after every
row.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path


REPO_ROOT = Path(__file__).resolve().parents[1]

# The cpu preset's stage 2 (te_vqgan.reproduce.PRESETS["cpu"]), the study's baseline.
BASE = {
    "n_layer": 4,
    "n_embd": 128,
    "n_head": 4,
    "train_batch_size": 32,
    "max_train_steps": 1400,
    "learning_rate": 1e-3,
    "lr_warmup_steps": 100,
    "lr_num_cycles": 1,
    "text_length": 45,
    "train_subset_size": 20_000,
}


@dataclass(frozen=True)
class Row:
    """One recipe: changes to the baseline's settings (`BASE` keys or other train_generator flags)."""

    name: str
    description: str
    changes: tuple[tuple[str, object], ...] = ()
    evaluate_only: str | None = None  # another row's generator, evaluated with `sampling`
    sampling: tuple[
        tuple[str, object], ...
    ] = ()  # te-vqgan evaluate's --top-k-fraction / --temperature / --num-candidates

    def settings(self) -> dict:
        return {**BASE, **dict(self.changes)}

    def examples_per_direction(self) -> int:
        s = self.settings()
        return s["max_train_steps"] * s["train_batch_size"]


NO_DROPOUT = (("dropout", 0.0),)
# The cpu preset's sampling at evaluation (te_vqgan.reproduce.CPU_EVAL), without its reranking.
CPU_SAMPLING = (("top_k_fraction", 0.02), ("temperature", 0.7))


def sampled(generator: str, candidates: int, note: str = "") -> Row:
    """A row evaluating `generator`'s row with the cpu preset's sampling and `candidates` per input."""
    if candidates == 1:
        return Row(
            f"{generator}_k0.02_t0.7",
            f"{generator}'s generator{note}, top-k 2% and temperature 0.7 (no reranking)",
            evaluate_only=generator,
            sampling=CPU_SAMPLING,
        )
    return Row(
        f"{generator}_rerank{candidates}",
        f"{generator}'s generator{note}, top-k 2%, temperature 0.7, the best of {candidates} candidates by the other direction",
        evaluate_only=generator,
        sampling=CPU_SAMPLING + (("num_candidates", candidates),),
    )


ROWS = {
    row.name: row
    for row in (
        Row("baseline", "the cpu preset's recipe: GPT-2 dropout 0.1, lr 1e-3, batch 32, both directions"),
        Row("no_dropout", "dropout 0 (residual, embedding, attention)", NO_DROPOUT),
        Row("no_dropout_lr3e-3", "dropout 0, lr 3e-3", NO_DROPOUT + (("learning_rate", 3e-3),)),
        Row(
            "no_dropout_pos2d",
            "dropout 0, t2i image positions start as 2-D sine-cosine",
            NO_DROPOUT + (("image_position_init", "sincos2d"),),
        ),
        Row(
            "no_dropout_modality_pos2d",
            "dropout 0, the authors' position scheme: positions counted inside each modality, "
            "shared by both directions, the image rows starting as 2-D sine-cosine",
            NO_DROPOUT + (("position_scheme", "modality"), ("image_position_init", "sincos2d")),
        ),
        Row("no_dropout_wide", "dropout 0, 4 x 256 wide, 8 heads", NO_DROPOUT + (("n_embd", 256), ("n_head", 8))),
        Row(
            "no_dropout_batch64",
            "dropout 0, batch 64 for half the steps (same examples), lr 2e-3",
            NO_DROPOUT
            + (("train_batch_size", 64), ("max_train_steps", 700), ("learning_rate", 2e-3), ("lr_warmup_steps", 50)),
        ),
        Row(
            "no_dropout_weight1",
            "dropout 0, target-modality loss weight 1 (every token alike) instead of 7",
            NO_DROPOUT + (("target_loss_weight", 1.0),),
        ),
        Row(
            "no_dropout_wd",
            "dropout 0, AdamW weight decay 0.1, betas (0.9, 0.95)",
            NO_DROPOUT + (("weight_decay", 0.1), ("adam_beta2", 0.95)),
        ),
        Row(
            "no_dropout_t2i_only",
            "dropout 0, text-to-image only (half the compute: one update per batch)",
            NO_DROPOUT + (("directions", "t2i"),),
        ),
        Row(
            "no_dropout_i2t_only",
            "dropout 0, image-to-text only (half the compute: one update per batch)",
            NO_DROPOUT + (("directions", "i2t"),),
        ),
        Row("no_dropout_2x", "dropout 0, twice the steps (2,800)", NO_DROPOUT + (("max_train_steps", 2800),)),
        Row(
            "no_dropout_0.5x",
            "dropout 0, half the steps (700)",
            NO_DROPOUT + (("max_train_steps", 700), ("lr_warmup_steps", 50)),
        ),
        Row(
            "no_dropout_0.5x_batch8",
            "dropout 0, batch 8 for 2,800 steps (half no_dropout's examples, four times the updates)",
            NO_DROPOUT + (("train_batch_size", 8), ("max_train_steps", 2800), ("lr_warmup_steps", 200)),
        ),
        Row(
            "cpu_preset_batch8",
            "the cpu preset's stage 2 (dropout 0, 54,400 examples) at batch 8: 6,800 steps, warm-up 400",
            NO_DROPOUT + (("train_batch_size", 8), ("max_train_steps", 6800), ("lr_warmup_steps", 400)),
        ),
        Row(
            "cpu_preset_batch8_2x",
            "cpu_preset_batch8 with twice the steps: 13,600 steps of 8 (108,800 examples), warm-up 400",
            NO_DROPOUT + (("train_batch_size", 8), ("max_train_steps", 13600), ("lr_warmup_steps", 400)),
        ),
        Row(
            "no_dropout_t0.7",
            "no_dropout's generator, sampled at temperature 0.7",
            evaluate_only="no_dropout",
            sampling=(("temperature", 0.7),),
        ),
        Row(
            "no_dropout_k0.02",
            "no_dropout's generator, top-k 2% of the vocabulary instead of 10%",
            evaluate_only="no_dropout",
            sampling=(("top_k_fraction", 0.02),),
        ),
        Row(
            "no_dropout_k0.02_t0.7",
            "no_dropout's generator, top-k 2% and temperature 0.7",
            evaluate_only="no_dropout",
            sampling=CPU_SAMPLING,
        ),
        Row(
            "no_dropout_greedy",
            "no_dropout's generator, greedy (top-k keeps 1 id)",
            evaluate_only="no_dropout",
            sampling=(("top_k_fraction", 0.001),),
        ),
        *(sampled("cpu_preset_batch8", count) for count in (1, 8, 32)),
        *(sampled("no_dropout_0.5x_batch8", count, " (22,400 examples)") for count in (1, 8)),
        *(sampled("cpu_preset_batch8_2x", count, " (108,800 examples)") for count in (1, 8)),
    )
}


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--preset_output",
        required=True,
        help="A `te-vqgan reproduce --preset cpu` folder (data, classifier, stage1, tokens).",
    )
    parser.add_argument("--run", default="te-seed0", help="Which of its quantizers' tokens (default te-seed0).")
    parser.add_argument("--output_dir", required=True)
    parser.add_argument("--rows", default=",".join(ROWS), help="Comma-separated rows (default all, in order).")
    parser.add_argument(
        "--classifier",
        default=None,
        help="The evaluation classifier (default: the preset folder's classifier/; any `te-vqgan train-classifier` folder).",
    )
    parser.add_argument("--num_eval", type=int, default=300, help="Images per evaluated split (default 300).")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    rows = [r.strip() for r in args.rows.split(",") if r.strip()]
    unknown = [r for r in rows if r not in ROWS]
    if unknown or not rows:
        parser.error(f"--rows: unknown {unknown or 'none given'} (rows: {', '.join(ROWS)})")
    args.row_list = rows
    args.classifier = args.classifier or str(Path(args.preset_output) / "classifier")
    if args.num_eval < 1:
        parser.error(f"--num_eval must be >= 1 (got {args.num_eval})")
    preset = Path(args.preset_output)
    for needed in ("data/textmnist", f"stage1/{args.run}", f"tokens/{args.run}"):
        if not (preset / needed).is_dir():
            parser.error(
                f"--preset_output {args.preset_output!r} has no {needed}/ (run `te-vqgan reproduce --preset cpu` first)"
            )
    return args


def train_command(args, row: Row, folder: Path) -> list[str]:
    preset = Path(args.preset_output)
    command = [
        sys.executable,
        str(REPO_ROOT / "training" / "train_generator.py"),
        "--tokenized_dataset",
        str(preset / "tokens" / args.run),
        "--vqmodel",
        str(preset / "stage1" / args.run),
        "--output_dir",
        str(folder),
        "--seed",
        str(args.seed),
        "--report_to",
        "none",
        "--num_evaluation_examples",
        "0",
        "--checkpoints_total_limit",
        "1",
        "--num_validation_examples",
        "256",
    ]
    settings = row.settings()
    steps = settings["max_train_steps"]
    command += ["--checkpointing_steps", str(max(1, steps // 4)), "--validation_steps", str(steps)]
    for key, value in settings.items():
        command += [f"--{key}", str(value)]
    return command + ["--scaled_down", "training/stage2_recipe_study.py (cpu preset scale)"]


def evaluate_command(args, row: Row, pipeline: Path, folder: Path) -> list[str]:
    preset = Path(args.preset_output)
    command = [
        "te-vqgan",
        "evaluate",
        "--pipeline",
        str(pipeline),
        "--classifier",
        str(args.classifier),
        "--dataset",
        str(preset / "data" / "textmnist"),
        "--splits",
        "test,test_seen",
        "--num-examples",
        str(args.num_eval),
        "--seed",
        str(args.seed),
        "--output-dir",
        str(folder),
        "--cache-dir",
        str(preset / "cache"),
    ]
    for key, value in row.sampling:
        command += [f"--{key.replace('_', '-')}", str(value)]
    return command


def shown(command: list[str]) -> str:
    from te_vqgan.reproduce import display_command

    return display_command(command, REPO_ROOT)


def run_row(args, row: Row, out: Path) -> None:
    from te_vqgan.cli import main as cli_main
    from te_vqgan.reproduce import run_training

    trained = out / "generators" / (row.evaluate_only or row.name)
    if row.evaluate_only is None and not (trained / "metrics.json").is_file():
        print(f"[{row.name}] training: {shown(train_command(args, row, trained))}", flush=True)
        code = run_training(train_command(args, row, trained), trained, REPO_ROOT)
        if code:
            raise SystemExit(
                f"[{row.name}] train_generator exited with {code}; rerun to continue from its last checkpoint"
            )
    if not (trained / "metrics.json").is_file():
        raise SystemExit(f"[{row.name}] needs row {row.evaluate_only!r} trained first")
    evaluation = out / "evaluations" / row.name
    if not (evaluation / "evaluation.json").is_file():
        if not (Path(args.classifier) / "config.json").is_file():
            raise SystemExit(
                f"[{row.name}] --classifier {args.classifier} is not a trained classifier folder (no config.json)"
            )
        command = evaluate_command(args, row, trained, evaluation)
        print(f"[{row.name}] evaluating: {shown(command)}", flush=True)
        started = time.time()
        code = cli_main(command[1:])
        if code:
            raise SystemExit(f"[{row.name}] evaluate exited with {code}")
        print(f"[{row.name}] evaluated in {time.time() - started:.0f} s", flush=True)


def collect(args, out: Path) -> list[dict]:
    records = []
    for name, row in ROWS.items():
        source = ROWS[row.evaluate_only] if row.evaluate_only else row
        metrics_path = out / "generators" / source.name / "metrics.json"
        evaluation_path = out / "evaluations" / name / "evaluation.json"
        if not (metrics_path.is_file() and evaluation_path.is_file()):
            continue
        metrics = json.loads(metrics_path.read_text())
        splits = json.loads(evaluation_path.read_text())["splits"]
        record = {
            "row": name,
            "description": row.description,
            "examples_per_direction": source.examples_per_direction(),
            "train_seconds": metrics["train_seconds"],
            "settings": source.settings(),
            "sampling": dict(row.sampling),
            "train_command": shown(train_command(args, source, out / "generators" / source.name)),
            "evaluate_command": shown(
                evaluate_command(args, row, out / "generators" / source.name, out / "evaluations" / name)
            ),
        }
        for split, result in splits.items():
            record[split] = {
                "t2i": result["t2i"]["accuracy"],
                "i2t": result["i2t"]["accuracy"],
                "t2i_chance": result["sanity"]["t2i_prompt_ignored"],
                "i2t_chance": result["sanity"]["i2t_image_ignored"],
                "t2i_buckets": result["t2i"].get("buckets"),
                "i2t_buckets": result["i2t"].get("buckets"),
                "examples": result["examples"],
            }
        records.append(record)
    return records


def write_summary(records: list[dict], out: Path) -> None:
    from te_vqgan.files import write_json_atomic

    write_json_atomic(out / "results.json", {"rows": records})
    lines = [
        "| row | examples / direction | train s (2 cores) | T2I test | T2I test_seen | I2T test | I2T test_seen |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in records:
        cells = [f"{r[s][d]:.3f} ({r[s][f'{d}_chance']:.3f})" for d in ("t2i",) for s in ("test", "test_seen")]
        cells += [f"{r[s][d]:.3f} ({r[s][f'{d}_chance']:.3f})" for d in ("i2t",) for s in ("test", "test_seen")]
        lines.append(
            f"| `{r['row']}`: {r['description']} | {r['examples_per_direction']:,} | {r['train_seconds']:.0f} | "
            + " | ".join(cells)
            + " |"
        )
    (out / "table.md").write_text(
        "\n".join(lines) + "\n(chance level: an output that ignores its input, in brackets)\n"
    )
    if records:
        _figure(records, out / "curve.png")
        _reranking_figure(records, out / "reranking.png")


def _figure(records: list[dict], path: Path) -> None:
    """Accuracy against examples seen per direction: one line per recipe trained at several
    lengths (rows that differ only in `max_train_steps`), the other rows as points; dashed, the
    chance level. Rows that only change the evaluation's sampling are left out (see `table.md`)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    trained = [r for r in records if not r["sampling"]]
    families: dict[str, list[dict]] = {}
    for r in trained:
        recipe = {k: v for k, v in r["settings"].items() if k not in ("max_train_steps", "lr_warmup_steps")}
        families.setdefault(json.dumps(recipe, sort_keys=True), []).append(r)
    figure, axes = plt.subplots(1, 4, figsize=(18, 4.6))
    panels = [(d, s) for d in ("t2i", "i2t") for s in ("test_seen", "test")]
    for axis, (direction, split) in zip(axes, panels):
        for number, members in enumerate(families.values()):
            members = sorted(members, key=lambda r: r["examples_per_direction"])
            xs = [r["examples_per_direction"] for r in members]
            ys = [r[split][direction] for r in members]
            label = min((r["row"] for r in members), key=len)
            axis.plot(xs, ys, marker="o", color=f"C{number % 10}", label=label)
        chance = [r[split][f"{direction}_chance"] for r in trained]
        axis.axhline(sum(chance) / len(chance), color="grey", linestyle="--", linewidth=1, label="chance")
        axis.set_title(f"{direction.upper()} on {split}")
        axis.set_xlabel("training examples per direction")
        axis.set_xscale("log")
        axis.set_ylim(0, max(0.3, 1.15 * max(max(r[split][direction] for r in trained), max(chance))))
    axes[0].set_ylabel("all-bucket accuracy (authors' sampling)")
    axes[-1].legend(loc="center left", bbox_to_anchor=(1.02, 0.5), fontsize=7)
    figure.suptitle("Stage-2 recipes at CPU scale (scaled down: one seed, TE tokens, 300 images per split)")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)


def _reranking_figure(records: list[dict], path: Path) -> None:
    """Accuracy against `--num-candidates` (1 = no reranking), one line per generator and
    sampling temperature / top-k evaluated with several candidate counts."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups: dict[tuple, list[dict]] = {}
    for r in records:
        sampling = {k: v for k, v in r["sampling"].items() if k != "num_candidates"}
        source = ROWS[r["row"]].evaluate_only or r["row"]
        groups.setdefault((source, json.dumps(sampling, sort_keys=True)), []).append(r)
    groups = {key: members for key, members in groups.items() if len(members) > 1}
    if not groups:
        return
    figure, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for axis, direction in zip(axes, ("t2i", "i2t")):
        for number, ((source, _), members) in enumerate(groups.items()):
            members = sorted(members, key=lambda r: r["sampling"].get("num_candidates", 1))
            xs = [r["sampling"].get("num_candidates", 1) for r in members]
            for split, style in (("test_seen", "-"), ("test", ":")):
                axis.plot(
                    xs,
                    [r[split][direction] for r in members],
                    style,
                    marker="o",
                    color=f"C{number % 10}",
                    label=f"{source} ({members[0]['examples_per_direction']:,} examples), {split}",
                )
        axis.set_xscale("log", base=2)
        ticks = sorted({r["sampling"].get("num_candidates", 1) for members in groups.values() for r in members})
        axis.set_xticks(ticks, [str(t) for t in ticks])
        axis.set_xlabel("candidates per input (1: no reranking)")
        axis.set_title(f"{direction.upper()}, all buckets")
        axis.set_ylim(0, None)
    axes[0].set_ylabel("all-bucket accuracy")
    axes[1].legend(loc="center left", bbox_to_anchor=(1.02, 0.5), fontsize=7)
    figure.suptitle("Reranking at evaluation (scaled down: one seed, TE tokens, 300 images per split)")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)


def main(argv=None) -> int:
    args = parse_args(argv)
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    for name in args.row_list:
        run_row(args, ROWS[name], out)
        write_summary(collect(args, out), out)
    print((out / "table.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
