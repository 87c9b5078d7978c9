"""The ``nndk`` command line: thin click commands over the SDK and runtime APIs."""

from __future__ import annotations

import click

from nndk import __version__
from nndk.check import describe
from nndk.gradcheck import gradcheck, make_problem
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


@cli.command("gradcheck")
@click.argument("model", metavar="MODEL")
@click.option("--set", "bindings", multiple=True, metavar="NAME=N",
              help="Bind a dimension, e.g. --set H=8 (repeatable).")
@click.option("--steps", default=4, show_default=True, help="Time steps to unroll.")
@click.option("--batch", default=2, show_default=True, help="Examples per batch.")
@click.option("--seed", default=0, show_default=True, help="Seed of the random problem.")
@click.option("--tolerance", default=1e-6, show_default=True,
              help="Largest relative error accepted.")
def gradcheck_command(model: str, bindings: tuple[str, ...], steps: int, batch: int, seed: int,
                      tolerance: float) -> None:
    """Check backpropagation through MODEL against float64 central differences.

    Builds random float64 weights, inputs and initial state, and compares the gradient of
    a random linear loss (over every output at every step and the final state) with
    finite differences along random directions. Exits 1 if any error exceeds --tolerance.

    \b
    Example:
      nndk gradcheck gru --set H=8 --set V=5
    """
    text, filename = read_model(model)
    problem = make_problem(text, parse_bindings(bindings), steps=steps, batch=batch, seed=seed)
    errors = gradcheck(problem)
    width = max(len(k) for k in errors)
    for name, err in errors.items():
        mark = "ok" if err <= tolerance else "FAIL"
        click.echo(f"{name:<{width}}  {err:.2e}  {mark}")
    worst = max(errors.values())
    if worst > tolerance:
        raise click.ClickException(f"{filename}: gradient check failed (worst relative error "
                                   f"{worst:.2e} > {tolerance:g})")
    click.echo(f"{filename}: {len(errors)} gradients match (worst relative error {worst:.2e})")


def main() -> None:
    run_cli(cli, "nndk")
