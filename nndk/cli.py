"""The ``nndk`` command line: thin click commands over the SDK and runtime APIs."""

from __future__ import annotations

import click

from nndk import __version__
from nnre.cli import run_cli


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="nndk")
def cli() -> None:
    """nndk: check, train and pack equation models for the nnre runtime."""


def main() -> None:
    run_cli(cli, "nndk")
