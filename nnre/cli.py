"""The ``nnre`` command line: thin click commands over the library API.

Library errors (``NnreError``) become one ``error:`` line on stderr and a non-zero exit in
exactly one place, :func:`main`; nothing here holds logic that the API lacks.
"""

from __future__ import annotations

import sys

import click

from nnre import __version__
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
        click.echo(f"error: {error_line(err)}", err=True)
        sys.exit(1)
    except OSError as err:
        where = f"{err.filename}: " if getattr(err, "filename", None) else ""
        click.echo(f"error: {where}{err.strerror or err}", err=True)
        sys.exit(1)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="nnre")
def cli() -> None:
    """nnre: run neural networks written as Unicode equations plus weights."""


def main() -> None:
    run_cli(cli, "nnre")
