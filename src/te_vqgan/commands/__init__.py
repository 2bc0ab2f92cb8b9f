"""Sub-commands of the `te-vqgan` console command (see `te_vqgan.cli`)."""


def add_command(subparsers, name: str, help: str, description: str):
    """The parser of sub-command `name`: its one-line `help` in `te-vqgan --help`, and its
    `description` (the module docstring, examples included) kept as written in `te-vqgan NAME --help`."""
    import argparse

    return subparsers.add_parser(
        name, help=help, description=description, formatter_class=argparse.RawDescriptionHelpFormatter
    )
