"""The ``nnre`` command line: thin click commands over the library API.

Library errors (``NnreError``) become one ``error:`` line on stderr and a non-zero exit in
exactly one place, :func:`main`; nothing here holds logic that the API lacks.
"""

from __future__ import annotations

import io
import json
import os
import re
import secrets
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO, Any

import click

from nnre import __version__, budget, bundle, loader
from nnre.bundle.info import escaped, info, json_escaped, render
from nnre.errors import EquationError, FeedError, NnreError
from nnre.files import open_regular
from nnre.serve.command import SERVE_HELP, serve_main, serve_options
from nnre.threads import set_blas_threads


def error_line(err: Exception) -> str:
    """One printable line for an error: location, message and, for nnre's own errors, the
    stable code in brackets at the end (``… [bad-magic]``); no caret display."""
    text = err.one_line() if isinstance(err, EquationError) else str(err).split("\n", 1)[0]
    return f"{text} [{err.code}]" if isinstance(err, NnreError) else text


def run_cli(group: click.Group, prog_name: str) -> None:
    """Run a click group, turning NnreError/OSError into one ``error:`` line and exit 1.

    The process runs BLAS on one thread unless ``--threads``/$NNRE_THREADS says otherwise
    (``nnre.threads``: more threads thrash on a busy machine)."""
    if not os.environ.get("NNRE_THREADS"):
        set_blas_threads(1)
    try:
        group.main(prog_name=prog_name, standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("error: aborted", err=True)
        sys.exit(130)
    except click.UsageError as err:  # one line, like every other error, with where to look
        where = err.ctx.command_path if err.ctx is not None else prog_name
        click.echo(f"error: {escaped(err.format_message())} (see '{where} --help')", err=True)
        sys.exit(err.exit_code)
    except click.ClickException as err:
        click.echo(f"error: {escaped(err.format_message())}", err=True)
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


def threads_option(f: Any) -> Any:
    """``--threads N`` (or $NNRE_THREADS): the BLAS thread count, for every subcommand."""
    def apply(ctx: click.Context, param: click.Parameter, value: int | None) -> int | None:
        if value is not None and not set_blas_threads(value):
            click.echo("note: no BLAS library found to set the thread count", err=True)
        return value

    return click.option("--threads", type=click.IntRange(min=1), envvar="NNRE_THREADS",
                        expose_value=False, is_eager=True, callback=apply,
                        help="BLAS threads for matrix products (default 1: more threads "
                             "thrash when another process is busy; 2+ can speed up large "
                             "models on an idle machine). Also $NNRE_THREADS.")(f)


def max_bytes_option(f: Any) -> Any:
    """``--max-bytes SIZE``: the memory budget (``nnre.budget``), for every subcommand."""
    def apply(ctx: click.Context, param: click.Parameter, value: str | None) -> None:
        if value is not None:
            try:
                budget.set_limit(budget.parse_bytes(value))
            except ValueError as err:
                raise click.BadParameter(str(err)) from None

    return click.option("--max-bytes", metavar="SIZE", expose_value=False, is_eager=True,
                        callback=apply,
                        help="Memory budget: refuse models, inputs and runs that would "
                             "allocate more (e.g. 4G, 512M; default half the RAM). Also "
                             "$NNRE_MAX_BYTES.")(f)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="nnre")
@threads_option
@max_bytes_option
def cli() -> None:
    """nnre: run neural networks written as Unicode equations plus weights."""


@cli.command()
@threads_option
@max_bytes_option
@click.argument("path")
@click.option("--json", "as_json", is_flag=True,
              help="Machine-readable output: UTF-8 JSON, with Unicode kept as is (equations "
                   "stay readable) except controls, bidi overrides and other invisible "
                   "characters, written as \\uXXXX escapes.")
@click.option("--no-tensors", is_flag=True, help="Leave out the tensor table.")
def inspect(path: str, as_json: bool, no_tensors: bool) -> None:
    """Show a bundle's format, id, signature, equations, tensors and metadata."""
    facts = info(bundle.decode(loader.resolve(path)), tensors=not no_tensors)
    if as_json:  # readable Unicode, but nothing a terminal would obey (json_escaped)
        click.echo(json_escaped(json.dumps(facts, indent=2, ensure_ascii=False)))
    else:
        click.echo("\n".join(render(facts)))


@cli.command()
@threads_option
@max_bytes_option
@click.argument("path")
def verify(path: str) -> None:
    """Check everything: structure, every sha256, equations against weights."""
    got, model = loader.verified(path)
    meta = got.header.metadata
    click.echo(f"ok: {escaped(path)}: {escaped(meta['name'])} {escaped(meta['version'])}, "
               f"id {got.bundle_id[:16]}, {len(got.header.tensors)} tensors, "
               f"{got.size:,} bytes; structure, digests and equations verified; needs "
               f"{budget.show(model.memory(1))} to run at batch 1 besides the mapped weights "
               f"(memory budget {budget.show(budget.limit())})")


@dataclass(frozen=True)
class Sampling:
    """The sampling options as given; None means: the bundle's recommendation, else default."""

    temperature: float | None
    top_k: int | None
    top_p: float | None
    min_p: float | None
    repeat_penalty: float | None
    repeat_last_n: int | None
    greedy: bool | None

    def settings(self, recommended: dict[str, Any]) -> dict[str, Any]:
        given = {k: v for k, v in vars(self).items() if v is not None}
        return {k: v for k, v in recommended.items() if k in vars(self)} | given


#: ``--stop`` escapes: what a shell's double quotes leave as two characters.
ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "0": "\0", "\\": "\\", "'": "'", '"': '"'}
_ESCAPE = re.compile(r"\\(x[0-9a-fA-F]{2}|u[0-9a-fA-F]{4}|.?)", re.S)


def unescape(text: str) -> str:
    """``\\n``, ``\\t``, ``\\r``, ``\\0``, ``\\\\``, quotes, ``\\xHH`` and ``\\uXXXX`` as the
    characters they name; any other backslash is a ValueError naming it (never guessed)."""
    def one(m: re.Match[str]) -> str:
        code = m.group(1)
        if code[:1] in "xu" and len(code) > 1:
            return chr(int(code[1:], 16))
        if code in ESCAPES:
            return ESCAPES[code]
        if not code:
            raise ValueError("ends with a lone backslash (write \\\\ for one)")
        raise ValueError(f"unknown escape '{escaped(m.group(0))}' (known: \\n \\t \\r \\0 "
                         "\\\\ \\' \\\" \\xHH \\uXXXX; write a backslash as \\\\)")
    return _ESCAPE.sub(one, text)


def _stop_option(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    try:
        return None if value is None else unescape(value)
    except ValueError as err:
        raise click.BadParameter(str(err)) from None


RUN_HELP = """Generate text (streamed), or run tensors from --input / --input-jsonl.

Sampling options left out take the bundle's recommended settings (`nnre inspect
MODEL.bundle` shows them under 'sampling'), else the defaults named below. Without
--seed a random one is used and printed on stderr, so a good text can be made again.
MODEL.bundle may be an https:// or s3:// URL (pip install 'nnre[remote]'): fetched once
into the cache, verified, and fetched again only when the remote file changes.

\b
Examples:
  nnre run m.bundle -p "The " -n 200 --seed 7
  nnre run m.bundle -p "The " --temp 0.7 --min-p 0.05 --repeat-penalty 1.1
  nnre run m.bundle --prompt-file start.txt --stop "\\n\\n"
  nnre run m.bundle -p "3 May." --num-samples 4 --seed 1   # 4 texts, one batch
  nnre run m.bundle --temp 0                                # greedy
  echo '{"x": [[0.1, 0.2, 0.3]]}' | nnre run m.bundle --input -
  nnre run https://example.org/models/m.bundle -p "The " -n 200
"""


@cli.command(help=RUN_HELP)
@threads_option
@max_bytes_option
@click.argument("model_path", metavar="MODEL.bundle")
@click.option("-p", "--prompt", "--prime", "prime", metavar="TEXT",
              help="Text to start from, e.g. -p \"The \" (default: a newline if the "
                   "vocabulary has one).")
@click.option("--prompt-file", metavar="FILE",
              help="Start from this UTF-8 file's text (- reads stdin), as is: its last "
                   "newline included, e.g. --prompt-file start.txt.")
@click.option("-n", "--length", type=click.IntRange(min=0), default=500, show_default=True,
              help="Characters to generate.")
@click.option("--num-samples", type=click.IntRange(min=1), default=1, show_default=True,
              help="Texts from the same prompt, generated as one batch and printed after one "
                   "another, each under a header naming the --seed that gives it alone, "
                   "e.g. --num-samples 4 --seed 1.")
@click.option("--temperature", "--temp", type=click.FloatRange(min=0), metavar="T",
              help="≥ 0: lower is more conservative, 0 is greedy (default: the bundle's, "
                   "else 1.0), e.g. --temp 0.7.")
@click.option("--top-k", type=click.IntRange(min=0), metavar="K",
              help="Keep the K most likely characters, e.g. --top-k 10 (0: off, the default).")
@click.option("--top-p", type=click.FloatRange(0, 1, min_open=True), metavar="P",
              help="Keep the most likely characters holding mass P, in (0, 1], e.g. --top-p "
                   "0.9 (1: off, the default).")
@click.option("--min-p", type=click.FloatRange(0, 1), metavar="P",
              help="Keep characters at least P times as likely as the most likely one, in "
                   "[0, 1], e.g. --min-p 0.05 (0: off, the default).")
@click.option("--repeat-penalty", type=click.FloatRange(min=0, min_open=True), metavar="X",
              help="> 0: make characters seen in the last --repeat-last-n less likely "
                   "(llama.cpp's rule), e.g. --repeat-penalty 1.1 (1: off, the default).")
@click.option("--repeat-last-n", type=click.IntRange(min=0), metavar="N",
              help="How many recent characters, prompt included, --repeat-penalty looks at, "
                   "e.g. --repeat-last-n 200 (default 64; 0: off).")
@click.option("--greedy/--no-greedy", default=None,
              help="Always the most likely character (same as --temp 0).")
@click.option("--seed", type=click.IntRange(min=0),
              help="Same seed, same text (default: a random one, printed on stderr).")
@click.option("--stop", callback=_stop_option,
              help="Stop after generating this string; \\n, \\t, \\xHH, \\uXXXX are "
                   "escapes, e.g. --stop \"\\n\\n\" ends at a blank line.")
@click.option("--input", "input_path", metavar="FILE|-",
              help="Feeds: a JSON object of arrays or an .npz; prints outputs as JSON.")
@click.option("--input-jsonl", metavar="FILE|-", help="One JSON object per line in and out.")
@click.option("--output", "output_path", metavar="OUT.npz",
              help="Write --input outputs here as .npz (atomically; the path as given).")
@click.option("--no-cache", is_flag=True, help="Neither read nor write the compile cache.")
@click.option("--no-check-data", is_flag=True,
              help="Skip the sha256 check of the weights (by default every load checks them, "
                   "except a large file already verified unchanged): a corrupted weight "
                   "would then go unnoticed.")
def run(model_path: str, prime: str | None, prompt_file: str | None, length: int,
        num_samples: int, temperature: float | None, top_k: int | None, top_p: float | None,
        min_p: float | None, repeat_penalty: float | None, repeat_last_n: int | None,
        greedy: bool | None, seed: int | None, stop: str | None, input_path: str | None,
        input_jsonl: str | None, output_path: str | None, no_cache: bool,
        no_check_data: bool) -> None:
    if input_path and input_jsonl:
        raise FeedError("give --input or --input-jsonl, not both")
    if output_path and not input_path:
        raise FeedError("--output goes with --input")
    if prime is not None and prompt_file is not None:
        raise FeedError("give --prompt or --prompt-file, not both")
    model = loader.load(model_path, cache=not no_cache, check_data=False if no_check_data else None)
    if input_path or input_jsonl:
        _run_tensors(model, input_path, input_jsonl, output_path)
        return
    if prompt_file is not None:
        prime = _read_text(prompt_file, MAX_PROMPT_BYTES)
    sampling = Sampling(temperature, top_k, top_p, min_p, repeat_penalty, repeat_last_n, greedy)
    _generate(model, prime, length, num_samples, sampling.settings(model.sampling), seed, stop)


def _generate(model: Any, prime: str | None, length: int, count: int,
              settings: dict[str, Any], seed: int | None, stop: str | None) -> None:
    """Stream one text, or print ``count`` texts generated as one batch, each under a header
    naming the seed that gives it alone. Without a seed (and not greedy) a random one is
    used and said on stderr."""
    if prime is None:
        from nnre.generate import default_prime

        prime = default_prime(model)
    random = seed is None and not settings.get("greedy") and settings.get("temperature") != 0
    seed = secrets.randbelow(1 << 31) if random else seed
    if count > 1:
        from nnre.generate import check_batch

        check_batch(model, count, kept=length)  # before a list of `count` primes is made
    primes = prime if count == 1 else [prime] * count
    steps = model.generate(primes, length, seed=seed, stop=stop, **settings)  # checks all
    if random:  # said only now that the settings passed
        what = "this text" if count == 1 else "these texts"
        click.echo(f"note: --seed {seed} makes {what} again", err=True)
    if count == 1:
        _stream(prime, steps)
        return
    columns: list[list[str]] = [[] for _ in range(count)]
    for step in steps:
        for column, ch in zip(columns, step, strict=True):
            column.append(ch)
    texts = [f"--- sample {i + 1} of {count}"
             + (f", --seed {seed + i}" if seed is not None else "") + " ---\n"
             + prime + "".join(column) for i, column in enumerate(columns)]
    _stream("\n".join(texts), iter(()))


MAX_PROMPT_BYTES = 64 << 20  # a prompt is fed one character per step: 64 MiB is plenty


def _stream(prime: str, chars: Iterator[str]) -> None:
    """The prime, then each character as it is drawn, escaped (the vocabulary comes from the
    file; newlines and tabs are kept), then a newline."""
    out: Any = sys.stdout.buffer
    shown: dict[str, bytes] = {}  # escape once per character

    def show(text: str) -> bytes:
        if text not in shown:
            shown[text] = escaped(text, keep="\n\t").encode("utf-8", "backslashreplace")
        return shown[text]
    try:
        out.write(escaped(prime, keep="\n\t").encode("utf-8", "backslashreplace"))
        out.flush()
        for ch in chars:
            out.write(show(ch))
            out.flush()
        out.write(b"\n")
        out.flush()
    except BrokenPipeError:  # e.g. `| head`: stop quietly, and keep Python from complaining
        os.dup2(os.open(os.devnull, os.O_WRONLY), out.fileno())


def _read_text(path: str, cap: int) -> str:
    """A UTF-8 text file (``-``: stdin) of at most ``cap`` bytes, as is."""
    where = "<stdin>" if path == "-" else path
    with _open_input(path) as f:
        raw = f.read(cap + 1)
    if len(raw) > cap:
        raise FeedError(f"{where}: more than {cap:,} bytes, the cap for this file")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise FeedError(f"{where}: not UTF-8 text (byte {err.start:,})") from None


SCORE_HELP = """Bits per character and perplexity of a text under a text model.

The text (UTF-8; - reads stdin) is read through the model's char codec from the zero
state, after a newline when the vocabulary has one (not scored), and every character
costs -log2 of the probability the model gave it one step before, as llama-perplexity
scores tokens.

\b
Examples:
  nnre score samples/lighthouse.bundle held-out.txt
  nnre score m.bundle notes.txt --context 200      # chunks of 200, each from zero
  nnre score m.bundle notes.txt --skip-unknown     # leave out what the vocab lacks
"""


@cli.command("score", help=SCORE_HELP)
@threads_option
@max_bytes_option
@click.argument("model_path", metavar="MODEL.bundle")
@click.argument("text_path", metavar="FILE|-")
@click.option("--context", type=click.IntRange(min=1), metavar="N",
              help="Score chunks of N characters, each read from the zero state, e.g. "
                   "--context 200 (default: the whole text as one sequence).")
@click.option("--skip-unknown", is_flag=True,
              help="Leave out characters outside the vocabulary, and count them, instead of "
                   "stopping at the first with an error naming its line and column (e.g. "
                   "for a file with a few characters the training text lacked).")
@click.option("--no-cache", is_flag=True, help="Neither read nor write the compile cache.")
def score_command(model_path: str, text_path: str, context: int | None, skip_unknown: bool,
                  no_cache: bool) -> None:
    model = loader.load(model_path, cache=not no_cache)
    where = "<stdin>" if text_path == "-" else text_path
    text = _read_text(text_path, MAX_SCORE_BYTES)
    result = model.score(text, context=context, skip_unknown=skip_unknown, source=where)
    if not result.chars:
        raise FeedError(f"{where}: no character to score (the text has {len(text)})")
    skipped = f" ({result.skipped:,} not in the vocabulary, skipped)" if result.skipped else ""
    click.echo(f"bits per character  {result.bits_per_char:.4f}\n"
               f"perplexity          {result.perplexity:.4f}\n"
               f"characters scored   {result.chars:,}{skipped}")


MAX_SCORE_BYTES = 1 << 30  # the text is held in memory, with ~48 bytes per character more


def _open_input(path: str) -> IO[bytes]:
    """stdin for ``-``, else the file if it is a regular one (a FIFO would block forever)."""
    if path == "-":
        return os.fdopen(os.dup(sys.stdin.fileno()), "rb")
    return open_regular(path, FeedError)


def _run_tensors(model: Any, input_path: str | None, input_jsonl: str | None,
                 output_path: str | None) -> None:
    from nnre import tensor_io  # only tensor runs need it

    if input_jsonl:
        where = "<stdin>" if input_jsonl == "-" else input_jsonl
        with _open_input(input_jsonl) as f:
            lines = tensor_io.bounded_lines(io.TextIOWrapper(f, encoding="utf-8"))
            try:
                for result in tensor_io.jsonl_results(model, lines, where):
                    click.echo(result)
            except UnicodeDecodeError:
                raise FeedError(f"{where}: not UTF-8 text") from None
        return
    assert input_path is not None
    where = "<stdin>" if input_path == "-" else input_path
    with _open_input(input_path) as f:
        raw = f.read(tensor_io.MAX_INPUT_BYTES + 1)
    if len(raw) > tensor_io.MAX_INPUT_BYTES:
        raise FeedError(f"{where}: more than {tensor_io.MAX_INPUT_BYTES:,} bytes, the cap "
                        "for one input file")
    if raw.startswith(b"PK"):
        feeds = tensor_io.read_npz(io.BytesIO(raw), where)
    else:
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise FeedError(f"{where}: neither an .npz nor UTF-8 JSON") from None
        feeds = tensor_io.parse_json_feeds(text, where)
    outputs = tensor_io.run_feeds(model, feeds, where)
    if output_path:  # exactly this path, atomically: a failed write keeps the old file
        from nnre.npz import write_npz
        write_npz(output_path, outputs)
    else:
        click.echo(tensor_io.to_json(model, outputs))


@cli.command("serve", help=SERVE_HELP)
@threads_option
@max_bytes_option
@serve_options
def serve(**options: Any) -> None:
    serve_main(**options)


def main() -> None:
    run_cli(cli, "nnre")
