"""The ``nnre`` command line: thin click commands over the library API.

Library errors (``NnreError``) become one ``error:`` line on stderr and a non-zero exit in
exactly one place, :func:`main`; nothing here holds logic that the API lacks.
"""

from __future__ import annotations

import json
import sys

import click

from nnre import __version__, bundle
from nnre.bundle_info import escaped, info, render
from nnre.errors import EquationError, NnreError


def error_line(err: Exception) -> str:
    """One printable line for an error: its location and message, no caret display."""
    if isinstance(err, EquationError):
        return err.one_line()
    return str(err).split("\n", 1)[0]


def run_cli(group: click.Group, prog_name: str) -> None:
    """Run a click group, turning NnreError/OSError into one ``error:`` line and exit 1."""
    try:
        group.main(prog_name=prog_name, standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("error: aborted", err=True)
        sys.exit(130)
    except click.ClickException as err:
        err.show()
        sys.exit(err.exit_code)
    except click.exceptions.Exit as err:
        sys.exit(err.exit_code)
    except NnreError as err:
        click.echo(f"error: {escaped(error_line(err))}", err=True)
        sys.exit(1)
    except OSError as err:
        where = f"{err.filename}: " if getattr(err, "filename", None) else ""
        click.echo(f"error: {escaped(where + str(err.strerror or err))}", err=True)
        sys.exit(1)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="nnre")
def cli() -> None:
    """nnre: run neural networks written as Unicode equations plus weights."""


@cli.command()
@click.argument("path")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--no-tensors", is_flag=True, help="Leave out the tensor table.")
def inspect(path: str, as_json: bool, no_tensors: bool) -> None:
    """Show a bundle's format, id, signature, equations, tensors and metadata."""
    facts = info(bundle.decode(path), tensors=not no_tensors)
    if as_json:
        click.echo(json.dumps(facts, indent=2, ensure_ascii=True))
    else:
        click.echo("\n".join(render(facts)))


@cli.command()
@click.argument("path")
def verify(path: str) -> None:
    """Check everything: structure, every sha256, equations against weights."""
    got = bundle.verify(path)
    meta = got.header.metadata
    click.echo(f"ok: {escaped(path)}: {escaped(meta['name'])} {escaped(meta['version'])}, "
               f"id {got.bundle_id[:16]}, {len(got.header.tensors)} tensors, "
               f"{got.size:,} bytes; structure, digests and equations verified")


def main() -> None:
    run_cli(cli, "nnre")
