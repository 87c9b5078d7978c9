"""The ``nndk`` command line: thin click commands over the SDK and runtime APIs."""

from __future__ import annotations

from pathlib import Path

import click

from nndk import __version__
from nndk.pack import PackRequest, pack
from nnre.bundle_info import escaped
from nnre.cli import run_cli


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="nndk")
def cli() -> None:
    """nndk: check, train and pack equation models for the nnre runtime."""


@cli.command("pack")
@click.argument("equations", type=click.Path(path_type=Path))
@click.option("--weights", type=click.Path(path_type=Path), required=True,
              help="An .npz of weights keyed by canonical name (W_i, b_f, ...).")
@click.option("--name", required=True, help="Model name.")
@click.option("--version", "version_", required=True, help="Semantic version, e.g. 1.0.0.")
@click.option("--description")
@click.option("--license", "license_")
@click.option("--author", "authors", multiple=True, help="Repeat for several authors.")
@click.option("--meta", multiple=True, metavar="KEY=VALUE", help="Free-form string metadata.")
@click.option("--dtype", type=click.Choice(["float32", "float64"]), default=None)
@click.option("--created", help="RFC 3339 UTC time (default: $SOURCE_DATE_EPOCH or now).")
@click.option("-o", "--output", type=click.Path(path_type=Path), required=True)
def pack_command(equations: Path, weights: Path, name: str, version_: str,
                 description: str | None, license_: str | None, authors: tuple[str, ...],
                 meta: tuple[str, ...], dtype: str | None, created: str | None,
                 output: Path) -> None:
    """Pack EQUATIONS (an .eqn file) and --weights into a versioned .bundle."""
    result = pack(PackRequest(equations, weights, output, name, version_, description,
                              license_, authors, meta, dtype, created))
    click.echo(f"packed {escaped(str(result.path))}: {result.tensors} tensors, "
               f"{result.size:,} bytes, id {result.bundle_id}")


def main() -> None:
    run_cli(cli, "nndk")
