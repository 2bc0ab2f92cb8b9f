"""`te-vqgan report`: the tables, verdicts and figures of `te-vqgan reproduce` runs, from their
finished stages, without running any; several output folders merge into one report.

    te-vqgan report --preset cpu --mnist-dir ../shared/data/mnist --output-dir outputs/cpu-preset outputs/cpu-preset   # a run still going
    te-vqgan report --preset cpu --output-dir results/cpu_preset node-te/ node-sc/          # one run per machine

Each folder is a `reproduce` output folder, or one holding only its runs' `stage1/<run>/metrics.json`
and `evaluation/<run>/evaluation.json` (what a results folder keeps). Refused: a run in two
folders, evaluations scored by different classifiers or sampled otherwise than the preset says,
and a folder whose recorded settings are another preset's.
"""

from __future__ import annotations

from ..options import add_output_dir_option
from . import add_command


def register(subparsers) -> None:
    from ..reproduce import PRESETS

    parser = add_command(
        subparsers,
        "report",
        help="The report of `reproduce` runs from their finished stages (several folders merge into one); runs nothing.",
        description=__doc__,
    )
    parser.add_argument("folders", nargs="+", help="`te-vqgan reproduce` output folders.")
    parser.add_argument("--preset", required=True, choices=sorted(PRESETS), help="The preset the runs were made with.")
    add_output_dir_option(parser, help="Folder for report.md, results.json and figures/ (created).")
    parser.add_argument(
        "--mnist-dir",
        default=None,
        help="Folder of the MNIST .gz files, for the index-map figures of quantizers whose weights a folder holds "
        "(default: $TE_VQGAN_MNIST_DIR, else download).",
    )
    parser.add_argument("--device", default=None, help="cpu or cuda for those figures (default: cuda when available).")
    parser.set_defaults(func=run)


def run(args) -> int:
    from ..reproduce import report_from_folders

    report_from_folders(args.preset, args.folders, args.output, mnist_dir=args.mnist_dir, device=args.device)
    return 0
