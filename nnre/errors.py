"""The one error hierarchy of nnre: every failure a user can cause is an NnreError.

Each error carries *where* (file, line, column, field, tensor) and *what was expected*, so the
CLI can print one located ``error:`` line and the library never has to print or exit.
"""

from __future__ import annotations


class NnreError(Exception):
    """Base of every error nnre raises on bad input.

    ``code`` is a stable kind (``formats/bundle.md`` §9) that the CLI prints in its one
    ``error:`` line and conformance vectors match; subclasses narrow it.
    """

    code = "error"


class EquationError(NnreError):
    """A problem in equation text: syntax, names, functions, time indices, cycles, shapes.

    ``line`` and ``column`` are 1-based; ``source_line`` is the offending line as written, and
    ``str(err)`` shows it with a caret under the spot.
    """

    code = "equation-error"

    def __init__(
        self,
        message: str,
        *,
        line: int | None = None,
        column: int | None = None,
        source_line: str | None = None,
        expected: str | None = None,
        filename: str | None = None,
    ) -> None:
        self.message = message
        self.line = line
        self.column = column
        self.source_line = source_line
        self.expected = expected
        self.filename = filename
        super().__init__(self._render())

    def _render(self) -> str:
        where = self.filename or ("<equations>" if self.line is not None else "")
        if self.line is not None:
            where += f":{self.line}"
            if self.column is not None:
                where += f":{self.column}"
        text = f"{where}: {self.message}" if where else self.message
        if self.expected:
            text += f" (expected {self.expected})"
        if self.source_line is not None and self.column is not None:
            shown = self.source_line.replace("\t", " ")
            text += f"\n    {shown}\n    {' ' * (self.column - 1)}^"
        return text

    def one_line(self) -> str:
        """The message without the caret display, for single-line CLI output."""
        return self._render().split("\n", 1)[0]


class ShapeError(EquationError):
    """Operand shapes that do not fit an equation, or weights that do not fit the equations."""

    code = "shape-error"


class BundleError(NnreError):
    """A .bundle file (or bytes) that is malformed, unsafe, or not what the reader supports.

    Carries a stable ``code`` (one per rule of ``formats/bundle.md``, matched by the
    conformance vectors), the dotted header ``field`` or tensor it concerns, and the absolute
    byte ``offset`` when there is one.
    """

    def __init__(
        self,
        code: str,
        message: str,
        *,
        field: str | None = None,
        offset: int | None = None,
        source: str | None = None,
    ) -> None:
        self.code = code
        self.message = message
        self.field = field
        self.offset = offset
        self.source = source
        where = "".join(f"{part}: " for part in (source, field) if part)
        at = f" (at byte {offset})" if offset is not None else ""
        super().__init__(f"{where}{message}{at}")

    def at_source(self, source: str) -> BundleError:
        """The same error, prefixed with the file it came from."""
        return BundleError(self.code, self.message, field=self.field, offset=self.offset,
                           source=source)


class FeedError(NnreError):
    """Inputs or state passed to a model that do not match its signature."""

    code = "bad-feed"


class ContextError(FeedError):
    """A stream that would step past the model's context (its histories hold that many
    steps): start again from the zero state, fed the last steps."""

    code = "context-full"

    def __init__(self, message: str, expected: str | None = None) -> None:
        super().__init__(message if expected is None else f"{message} (expected {expected})")


class OutputError(NnreError):
    """A model output that cannot be decoded the way its codec says: e.g. a ``sample`` output
    holding NaN, infinities, negative values or no mass at all, so there is nothing to draw
    from. The inputs may be fine; the weights or the equations produce it."""

    code = "bad-output"


class FetchError(NnreError):
    """A model location (``https://…``, ``s3://…``) that could not be fetched: not found,
    refused, unreachable, larger than the memory budget or the free disk, a download that
    ended short of the size announced or ran past it, or the ``remote`` extra missing."""

    code = "fetch-error"
