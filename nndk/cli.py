"""The ``nndk`` command line: thin click commands over the SDK and runtime APIs."""

from __future__ import annotations

import click

from nndk import __version__
from nndk.check import describe
from nndk.models import parse_bindings, read_model
from nnre.cli import run_cli


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="nndk")
def cli() -> None:
    """nndk: check, train and pack equation models for the nnre runtime."""


@cli.command("check")
@click.argument("model", metavar="MODEL")
@click.option("--set", "bindings", multiple=True, metavar="NAME=N",
              help="Bind a dimension, e.g. --set H=128 (repeatable).")
@click.option("--dtype", type=click.Choice(["float32", "float64"]), default="float32",
              show_default=True, help="Precision of the compiled program.")
def check_command(model: str, bindings: tuple[str, ...], dtype: str) -> None:
    """Parse and shape-check MODEL (an .eqn file or a template: lstm, gru, rnn, mlp).

    Prints the canonical equations, the roles (inputs, state, outputs), every parameter's
    shape, the parameter count and the compiled program. On an error, prints where it is
    (file:line:column) and exits with status 1.

    \b
    Example:
      nndk check lstm --set H=128 --set V=65
    """
    text, filename = read_model(model)
    click.echo(describe(text, parse_bindings(bindings), filename, dtype))


def main() -> None:
    run_cli(cli, "nndk")
