"""`te-vqgan reproduce`: data, classifier, stage 1, tokens, stage 2, evaluation and a report.

    te-vqgan reproduce --preset smoke --mnist-dir ../shared/data/mnist --output-dir outputs/reproduce-smoke
    te-vqgan reproduce --preset cpu --output-dir results/cpu_preset            # hours on 2 cores; rerun to continue
    te-vqgan reproduce --preset paper --quantizers te,sc --seeds 0 --output-dir outputs/paper   # GPUs, accelerate launch

Every stage is resumable and idempotent: rerunning skips finished stages and continues an
interrupted training from its last checkpoint. Writes `report.md` (Tables 1-3 as mean (std)
over seeds beside the paper's numbers, sanity rows, equivariance, wall-clock, commands,
versions), `results.json` and `figures/` in `--output`. See `te_vqgan.reproduce` for the presets.
"""

from __future__ import annotations

import argparse

from ..options import add_output_dir_option
from . import add_command


def _int_list(text: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers (got {text!r})") from None


def register(subparsers) -> None:
    from ..reproduce import PRESETS

    parser = add_command(
        subparsers,
        "reproduce",
        help="The paper's experiment end to end (smoke, cpu or paper preset), resumable, with a report and figures.",
        description=__doc__ + "\nPresets:\n" + "\n".join(f"  {name}: {p.description}" for name, p in PRESETS.items()),
    )
    parser.add_argument(
        "--preset", default="smoke", choices=sorted(PRESETS), help="Scale of the experiment (default smoke)."
    )
    parser.add_argument("--quantizers", default=None, help="Comma-separated: te,sc,cb,mp,mb (default: the preset's).")
    parser.add_argument("--seeds", type=_int_list, default=None, help="Comma-separated seeds (default: the preset's).")
    parser.add_argument(
        "--train-sizes",
        type=_int_list,
        default=None,
        help="Stage-2 train sizes, largest first (default: the preset's).",
    )
    parser.add_argument(
        "--mnist-dir",
        default=None,
        help="Folder of the MNIST .gz files (default: $TE_VQGAN_MNIST_DIR, else download).",
    )
    parser.add_argument(
        "--classifier",
        default=None,
        help="A trained `te-vqgan train-classifier` folder to evaluate with (default: train one in OUTPUT/classifier).",
    )
    parser.add_argument(
        "--device", default=None, help="cpu or cuda for the in-process stages (default: cuda when available)."
    )
    add_output_dir_option(parser, help="Folder of the run (created; an existing one is continued).")
    parser.add_argument(
        "--jobs",
        type=int,
        default=None,
        help="Stages run side by side, each as a subprocess, as soon as the stages it reads are done (default: the "
        "preset's, 1 = one after another on a CPU, 6 for the gpu preset, where small trainings share the one device).",
    )
    parser.add_argument(
        "--gpus",
        type=_int_list,
        default=None,
        help="With --jobs: CUDA device ids to spread the stages over (e.g. 0,1,2,3,4,5,6,7 on an 8-GPU node; each stage sees one).",
    )
    parser.set_defaults(func=run)


def run(args) -> int:
    import sys

    from ..loading import resolve_device
    from ..reproduce import StageFailed, preset_with, reproduce

    if args.jobs is not None and args.jobs < 1:
        raise ValueError(f"--jobs must be >= 1 (got {args.jobs}).")
    if args.device is not None:
        resolve_device(args.device)  # e.g. cuda without a GPU: one line before any stage runs
    quantizers = [q.strip() for q in args.quantizers.split(",") if q.strip()] if args.quantizers is not None else None
    preset = preset_with(args.preset, quantizers=quantizers, seeds=args.seeds, train_sizes=args.train_sizes)
    try:
        reproduce(
            preset,
            args.output,
            mnist_dir=args.mnist_dir,
            device=args.device,
            classifier=args.classifier,
            jobs=args.jobs,
            gpus=args.gpus,
        )
    except StageFailed as error:
        print(f"te-vqgan reproduce: error: {error}", file=sys.stderr)
        return 2
    return 0
