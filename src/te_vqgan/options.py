"""One flag vocabulary for every command and script, and the old spellings as deprecated aliases.

Each concept has one word: sub-commands spell it in kebab case, the accelerate scripts in
diffusers' snake case.

==================  ===========================  ======================================
concept             `te-vqgan` sub-commands      `training/*.py` scripts
==================  ===========================  ======================================
MNIST files         `--mnist-dir`                `--mnist_dir`
output folder       `--output-dir`               `--output_dir`
quantizer           `--vqmodel`                  `--vqmodel` (read) /
                                                 `--pretrained_model_name_or_path` (start from)
dataset variant     `--dataset-config`           `--dataset_config`
Hub push            `--push-to-hub --hub-model-id REPO [--hub-private-repo]`
                                                 `--push_to_hub --hub_model_id REPO [--hub_private_repo]`
images per prompt   `--num-images-per-prompt`    (the pipelines' `num_images_per_prompt`)
==================  ===========================  ======================================

The spellings before this table (`--data-dir`, `--output`, `--model`, `--config`, `--private`,
`--num-images`, `--push-to-hub REPO`, `--pretrained_model`) still work for one release, hidden
from `--help`, with a `FutureWarning` naming the new one.
"""

from __future__ import annotations

import argparse
import warnings


__all__ = [
    "add_deprecated_alias",
    "add_hub_push_options",
    "add_output_dir_option",
    "check_required",
    "resolve_hub_push",
    "usable_cpu_cores",
]


def usable_cpu_cores() -> int:
    """The CPU cores this process may run on (its affinity where the OS tells it): the default of
    `--num-proc` and what `reproduce --jobs` shares out among its stages."""
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


class _DeprecatedAlias(argparse.Action):
    def __init__(self, option_strings, dest, replacement: str, constant=None, **kwargs):
        self.replacement = replacement
        self.constant = constant
        super().__init__(option_strings, dest, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        warnings.warn(
            f"{option_string} is deprecated and will be removed in the next release; use {self.replacement}.",
            FutureWarning,
            stacklevel=2,
        )
        setattr(namespace, self.dest, self.constant if self.nargs == 0 else values)


def add_deprecated_alias(
    parser, old: str, replacement: str, dest: str, flag: bool = False, required: bool = False, **kwargs
) -> None:
    """Accept `old` as a hidden, deprecated spelling of `replacement` (stored in `dest`); `flag`
    for an option that takes no value (sets `dest` to True). With `required`, one of the two must be
    given (add `replacement` itself as not required, default None): `check_required(args)` says so."""
    if required:
        parser.set_defaults(_required_options=[*(parser.get_default("_required_options") or []), (dest, replacement)])
    if flag:
        kwargs.update(nargs=0, constant=True)
    parser.add_argument(
        old,
        dest=dest,
        action=_DeprecatedAlias,
        replacement=replacement,
        default=argparse.SUPPRESS,
        help=argparse.SUPPRESS,
        **kwargs,
    )


def add_output_dir_option(parser, help: str, overwrite: str | None = None) -> None:
    """`--output-dir` (required; `--output` its deprecated spelling), stored as `output`, and with
    `overwrite` (its help) an `--overwrite` switch."""
    parser.add_argument("--output-dir", dest="output", default=None, help=help)
    add_deprecated_alias(parser, "--output", "--output-dir", "output", required=True)
    if overwrite is not None:
        parser.add_argument("--overwrite", action="store_true", help=overwrite)


def add_hub_push_options(parser, repo_type: str = "model") -> None:
    """`--push-to-hub --hub-model-id REPO [--hub-private-repo]`, as the training scripts' options;
    `--push-to-hub REPO` and `--private` stay as deprecated spellings."""
    parser.add_argument(
        "--push-to-hub",
        nargs="?",
        const=True,
        default=False,
        metavar="",
        help=f"Also upload the folder to the Hub {repo_type} repo --hub-model-id.",
    )
    parser.add_argument("--hub-model-id", default=None, metavar="REPO_ID", help="The Hub repo to push to (org/name).")
    parser.add_argument("--hub-private-repo", action="store_true", help="Create the Hub repo as private.")
    add_deprecated_alias(parser, "--private", "--hub-private-repo", "hub_private_repo", flag=True)


def resolve_hub_push(args) -> str | None:
    """The repo id to push to (None: no push) from `add_hub_push_options`' values; a one-line
    ValueError when they do not fit together."""
    value = args.push_to_hub
    if isinstance(value, str):  # the old `--push-to-hub REPO`
        warnings.warn(
            "--push-to-hub REPO is deprecated; use --push-to-hub --hub-model-id REPO.", FutureWarning, stacklevel=2
        )
        if args.hub_model_id not in (None, value):
            raise ValueError(
                f"--push-to-hub {value!r} and --hub-model-id {args.hub_model_id!r} name two repos; give one."
            )
        return value
    if value and not args.hub_model_id:
        raise ValueError("--push-to-hub needs --hub-model-id REPO_ID (org/name).")
    if args.hub_model_id and not value:
        raise ValueError(f"--hub-model-id {args.hub_model_id!r} is given without --push-to-hub.")
    return args.hub_model_id if value else None


def check_required(args) -> str | None:
    """The message for a required option given in neither spelling (`add_deprecated_alias(required=True)`), or None."""
    missing = [
        option for dest, option in getattr(args, "_required_options", None) or [] if getattr(args, dest, None) is None
    ]
    return f"the following arguments are required: {', '.join(missing)}" if missing else None
