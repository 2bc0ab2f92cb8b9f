"""The `te-vqgan` console command: one sub-command per module in `te_vqgan.commands`."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from .options import check_required


# Each module defines `register(subparsers)`, which adds its parser and sets `func`.
COMMAND_MODULES = (
    "te_vqgan.commands.build_dataset",
    "te_vqgan.commands.equivariance",
    "te_vqgan.commands.evaluate",
    "te_vqgan.commands.generate",
    "te_vqgan.commands.report",
    "te_vqgan.commands.reproduce",
    "te_vqgan.commands.tokenize_dataset",
    "te_vqgan.commands.train_classifier",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="te-vqgan",
        description="Translation-equivariant image tokenization (TE-VQGAN): tools and experiments.",
    )
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module_name in COMMAND_MODULES:
        importlib.import_module(module_name).register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    missing = check_required(args)
    if missing:
        parser.error(f"{args.command}: {missing}")
    logging.basicConfig(level=args.log_level, format="%(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args) or 0)
    except (ValueError, FileNotFoundError, OSError) as error:
        # Bad input is reported as one clear line, not a traceback.
        print(f"te-vqgan {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
