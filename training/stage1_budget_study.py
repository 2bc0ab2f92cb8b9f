#!/usr/bin/env python
"""Stage 1 at the smoke preset's scale: what a cheaper quantizer costs its ceiling.

    python training/stage1_budget_study.py --classifier outputs/reproduce-smoke/classifier \
        --mnist_dir ../shared/data/mnist --output_dir outputs/stage1-budget
    python training/stage1_budget_study.py ... --rows preset,steps400      # some rows only

Every row trains `training/train_vqgan.py` as `te-vqgan reproduce --preset smoke` does (its data,
its `-cpu-f8` config, its seed-0 settings, one thread), changing what the row says, and measures
the quantizer's ceiling: its reconstructions of the first `num_eval` images of `test_seen` and
`test` through the text-to-image evaluator (`te_vqgan.commands.evaluate.reconstruction_scores`,
the `t2i_reconstructions` sanity row of `te-vqgan evaluate`), with the codes those images use and
the training's wall-clock. A row whose `metrics.json` exists is measured, not retrained; an
interrupted row continues from its last checkpoint. `results.json` and `table.md` in
`--output_dir` are rewritten after every row.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import time
from dataclasses import replace
from pathlib import Path


REPO_ROOT = Path(__file__).resolve().parents[1]

# name -> (what the row changes, `Preset` fields of the smoke preset it replaces; `stage1_settings` merge)
ROWS = {
    "preset": ("the smoke preset: 800 steps of 16, lr 3e-4, k-means at step 200", {}),
    "lr6e-4": ("twice the learning rate (6e-4)", {"stage1_settings": {"learning_rate": 6e-4}}),
    "steps400": (
        "half the steps (400 of 16), k-means at step 100",
        {"stage1_steps": 400, "stage1_settings": {"kmeans_init_step": 100}},
    ),
    "steps400_lr1e-3": (
        "400 steps of 16 at lr 1e-3, k-means at step 100",
        {"stage1_steps": 400, "stage1_settings": {"kmeans_init_step": 100, "learning_rate": 1e-3}},
    ),
    "batch8": ("half the batch (800 steps of 8)", {"stage1_batch": 8}),
    "crop32": ("800 steps of 16 random 32x32 crops", {"stage1_settings": {"train_crop_size": 32}}),
    "crop32_steps1600": (
        "1,600 steps of 16 random 32x32 crops",
        {"stage1_steps": 1600, "stage1_settings": {"train_crop_size": 32}},
    ),
}


def preset_for(changes: dict, quantizer: str):
    from te_vqgan.reproduce import PRESETS

    smoke = PRESETS["smoke"]
    changes = dict(changes)
    if "stage1_settings" in changes:
        changes["stage1_settings"] = {**smoke.stage1_settings, **changes["stage1_settings"]}
    return replace(smoke, quantizers=(quantizer,), seeds=(0,), **changes)


def ceiling(stage1: Path, data: Path, classifier, num_eval: int, cache_dir: str) -> dict:
    import numpy as np

    from te_vqgan.commands.evaluate import quantizer_round_trip
    from te_vqgan.data.tokenized import load_evaluation_splits
    from te_vqgan.evaluation import objects_to_triplets, text_to_image_scores
    from te_vqgan.loading import load_vq_model

    vqmodel = load_vq_model(str(stage1))
    splits = load_evaluation_splits(str(data), cache_dir=cache_dir)
    result = {}
    for name in ("test_seen", "test"):
        split = splits[name].select(range(min(num_eval, len(splits[name]))))
        truths = [objects_to_triplets(objects, split.features) for objects in split["objects"]]
        images = np.stack([np.asarray(image.convert("RGB")) for image in split["image"]])
        # `te-vqgan evaluate`'s ceiling (`reconstruction_scores`), with the codes of the same round trip
        indices, reconstructions = quantizer_round_trip(vqmodel, images)
        result[f"ceiling_{name}"] = text_to_image_scores(reconstructions, truths, classifier).accuracy
        result[f"codes_{name}"] = int(indices.unique().numel())
    return result


def write_table(output: Path, results: dict) -> None:
    lines = [
        "| row | quantizer | stage-1 s (1 thread) | recon L1 (validation) | codes (test_seen) | ceiling test_seen | ceiling test |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in results.values():
        if "ceiling_test" not in r:  # a row not measured yet
            continue
        lines.append(
            f"| `{r['row']}`: {r['description']} | {r['quantizer']} | {r['seconds'] if r['seconds'] is not None else '-'} "
            f"| {r['recon_l1']:.4f} | {r['codes_test_seen']} | {r['ceiling_test_seen']:.3f} | {r['ceiling_test']:.3f} |"
        )
    (output / "table.md").write_text("\n".join(lines) + "\n")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--classifier", required=True, help="A `te-vqgan train-classifier` folder (the judge).")
    parser.add_argument("--output_dir", required=True)
    parser.add_argument("--mnist_dir", default=None)
    parser.add_argument("--rows", default=",".join(ROWS), help=f"Comma-separated, of {sorted(ROWS)}.")
    parser.add_argument("--quantizers", default="te", help="Comma-separated: te, sc.")
    args = parser.parse_args(argv)
    rows = [r.strip() for r in args.rows.split(",") if r.strip()]
    unknown = sorted(set(rows) - set(ROWS))
    if unknown:
        parser.error(f"--rows {unknown} are not rows of the study (rows: {sorted(ROWS)}).")
    if not (Path(args.classifier) / "config.json").is_file():
        parser.error(f"--classifier {args.classifier!r} is not a `te-vqgan train-classifier` folder (no config.json).")

    from te_vqgan.classifier import DigitColourClassifier
    from te_vqgan.reproduce import ReproducePlan

    output = Path(args.output_dir).resolve()
    output.mkdir(parents=True, exist_ok=True)
    results_file = output / "results.json"
    results = json.loads(results_file.read_text()) if results_file.is_file() else {}
    judge = DigitColourClassifier.from_pretrained(args.classifier)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for quantizer in [q.strip() for q in args.quantizers.split(",") if q.strip()]:
        for row in rows:
            description, changes = ROWS[row]
            preset = preset_for(changes, quantizer)
            plan = ReproducePlan(preset, output / row, mnist_dir=args.mnist_dir, classifier=args.classifier)
            data_step = next(s for s in plan.steps if s.kind == "data")
            if not data_step.done:
                data_step.run_call()
            step = next(s for s in plan.steps if s.kind == "stage1")
            seconds = results.get(f"{row}/{quantizer}", {}).get("seconds")
            if not step.done:
                step.write_settings()
                started = time.perf_counter()
                subprocess.run(step.command, check=True, cwd=REPO_ROOT, env=env)
                seconds = round(time.perf_counter() - started)
            metrics = json.loads((step.folder / "metrics.json").read_text())
            results[f"{row}/{quantizer}"] = {
                "row": row,
                "description": description,
                "quantizer": quantizer,
                "seconds": seconds,
                "recon_l1": metrics["recon_l1"],
                "settings": json.loads(step.settings_file.read_text()),
                **ceiling(step.folder, data_step.folder, judge, preset.num_eval, str(output / row / "cache")),
            }
            results_file.write_text(json.dumps(results, indent=1))
            write_table(output, results)
            print(json.dumps({k: v for k, v in results[f"{row}/{quantizer}"].items() if k != "settings"}), flush=True)


if __name__ == "__main__":
    main()
