"""Tokens → AST: a small recursive-descent parser with hard caps on depth and size.

Precedence, loosest first: ``+ -`` · elementwise ``* ⊙ ∘ /`` · matrix product ``· @`` and
juxtaposition (``W x``) · unary minus · ``^`` · postfix ``ᵀ ² ³`` · atoms. So ``a ⊙ W x`` is
``a ⊙ (W x)`` and ``-a+b`` is ``(-a)+b``. Nothing here evaluates the text.
"""

from __future__ import annotations

import difflib
import re
import unicodedata
from collections.abc import Mapping

from nnre.equations import ast
from nnre.equations.blocks import expand_blocks
from nnre.equations.lexer import MAX_NODES, Token, is_base_letter, tokenize
from nnre.errors import EquationError
from nnre.ops import BY_ARITY, FUNCTIONS, OPS, Op

MAX_DEPTH = 64
MAX_AXES = 8
NATURALS = "ℕ"  # x ∈ ℕ declares token ids
MAX_MULTIPLE = 64  # 4·d in a dimension is d + d + d + d: a small multiple only
ROLE_WORDS = ("input", "state", "output", "frozen")
_WORD_RE = re.compile(r"^[a-z][a-z]+$")
_ATOM_START = ("NAME", "NUMBER", "(", "[")
_COMPARE = ("<", ">", "≤", "≥")
BLOCK_WORD = "for"  # for l = 1…L: starts a block (§3.5)
INDENT_CHARS = " \t\r\u00a0\u2009\u200a\u202f"  # the white space of §1.4


class Parser:
    """Parses one equation text into an ``ast.Module``."""

    def __init__(self, text: str, filename: str | None = None) -> None:
        self.tokens = tokenize(text, filename)
        # the lexer's columns count characters of the NFC text: show that text under the caret
        self.lines = unicodedata.normalize("NFC", text.replace("\r\n", "\n")).split("\n")
        self.filename = filename
        self.i = 0
        self.depth = 0
        self.nodes = 0
        self.ids = _declared_ids(self.tokens)
        if any(tok.kind == "NAME" and tok.time is not None for tok in self.tokens):
            self.ids.add("t")  # P[t]: row t of a table, t the step's index (a timed text)
        self.var: str | None = None  # the variable of the block being parsed
        self.layer_dims: dict[str, ast.Pos] = {}  # dims named by bounds and layer indices
        self.inner_symbols: list[tuple[str, ast.Pos, str]] = []  # (name, where, block var)

    # -- helpers -------------------------------------------------------------------------
    @property
    def tok(self) -> Token:
        return self.tokens[self.i]

    def peek(self, k: int = 1) -> Token:
        return self.tokens[min(self.i + k, len(self.tokens) - 1)]

    def advance(self) -> Token:
        tok = self.tokens[self.i]
        self.i += 1
        return tok

    def error(self, message: str, tok: Token | None = None, expected: str | None = None
              ) -> EquationError:
        tok = tok or self.tok
        source = self.lines[tok.line - 1] if tok.line - 1 < len(self.lines) else ""
        return EquationError(message, line=tok.line, column=tok.column, source_line=source,
                             expected=expected, filename=self.filename)

    def expect(self, kind: str, what: str) -> Token:
        if self.tok.kind != kind:
            raise self.error(f"unexpected {_show(self.tok)}", expected=what)
        return self.advance()

    def close(self, opened: Token, kind: str, what: str) -> Token:
        """The token closing ``opened``; a line that ends first is reported at the opener,
        which is where the fix goes (the end of the line says nothing about which one)."""
        if self.tok.kind in ("NEWLINE", "EOF"):
            raise self.error(f"'{opened.text}' is never closed", opened, expected=what)
        return self.expect(kind, what)

    def pos(self, tok: Token) -> ast.Pos:
        return ast.Pos(tok.line, tok.column)

    def count(self) -> None:
        self.nodes += 1
        if self.nodes > MAX_NODES:
            raise self.error("equations are too large", expected=f"at most {MAX_NODES} nodes")

    def nest(self) -> None:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise self.error("expression is nested too deeply",
                             expected=f"at most {MAX_DEPTH} levels")

    # -- statements ----------------------------------------------------------------------
    def parse(self) -> ast.Module:
        """The text as written: statements, and blocks holding theirs (not yet expanded)."""
        module = ast.Module(lines=self.lines, filename=self.filename)
        while self.tok.kind != "EOF":
            if self.tok.kind == "NEWLINE":
                self.advance()
                continue
            if self._is_block_header():
                module.blocks.append(self.block())
                continue
            self.statement(module)
            self.end_of_statement()
        module.layer_dims = self.layer_dims
        check_block_names(module, self.inner_symbols)
        return module

    def end_of_statement(self) -> None:
        if self.tok.kind != "NEWLINE":
            raise self.error(f"unexpected {_show(self.tok)}",
                             expected="an operator or the end of the line")

    def statement(self, module: ast.Module) -> None:
        first = self.tok
        if first.kind != "NAME":
            raise self.error(f"unexpected {_show(first)} at the start of a statement",
                             expected="a name")
        if first.text in ROLE_WORDS and first.time is None and self.peek().kind == "NAME":
            self.advance()
            names = self.name_list()
            module.roles.append(ast.RoleDeclaration(first.text, names, first.line))
            return
        if self._is_declaration():
            module.declarations.append(self.declaration())
            return
        target = self.target()
        self.expect("=", "'=' after the name being defined")
        expr = self.expression()
        module.equations.append(
            ast.Equation(target, expr, first.line, self.lines[first.line - 1]))

    # -- blocks (§3.5) -------------------------------------------------------------------
    def _is_block_header(self) -> bool:
        tok = self.tok
        return tok.kind == "NAME" and tok.text == BLOCK_WORD and tok.time is None and \
            self.peek().kind == "NAME"

    def indent(self, tok: Token) -> str:
        """The whitespace that starts the line of ``tok``, as written (a tab is not spaces)."""
        line = self.lines[tok.line - 1]
        return line[:len(line) - len(line.lstrip(INDENT_CHARS))]

    def block(self) -> ast.Block:
        """``for l = 1…L:`` and its body (``body``)."""
        header = self.advance()
        var_tok = self.expect("NAME", "the block's variable, e.g. 'for l = 1…L:'")
        if var_tok.time is not None or not all(  # what a layer index can name (§2.2)
                is_base_letter(ch) or ch.isascii() and ch.isdigit() for ch in var_tok.text):
            raise self.error(f"the block's variable '{var_tok.raw}' must be a plain name",
                             var_tok, expected="letters and digits, e.g. 'l'")
        self.expect("=", "'=' after the block's variable")
        first, first_pos = self.bound()
        self.expect("…", "'…' or '..' between the first and the last layer")
        last, last_pos = self.bound()
        self.expect(":", "':' at the end of the 'for' line")
        self.end_of_statement()
        var = self.name_node(var_tok)
        nodes = self.nodes
        self.var = var.name
        body = self.body(header)
        self.var = None
        names = sum(len(d.names) for d in body.declarations) + \
            sum(len(r.names) for r in body.roles)
        statements = len(body.equations) + len(body.declarations) + len(body.roles)
        return ast.Block(var, (first, last), (first_pos, last_pos), header.line, body,
                         self.nodes - nodes + names + statements)

    def body(self, header: Token) -> ast.Module:
        """The statements after a ``for`` line indented more than it, up to the first line
        indented less than the body's first line (§3.6); blank and comment lines have no
        tokens, so they never end it."""
        body = ast.Module(lines=self.lines, filename=self.filename)
        outer = self.indent(header)
        first: Token | None = None
        while True:
            while self.tok.kind == "NEWLINE":
                self.advance()
            if self.tok.kind == "EOF":
                break
            here = self.indent(self.tok)
            inner, since = (outer, header) if first is None else (self.indent(first), first)
            if not here.startswith(inner) and not inner.startswith(here):
                what = "the 'for' line" if first is None else "the block's first line"
                raise self.error(f"this line's indentation mixes tabs and spaces differently "
                                 f"from {what} (line {since.line})",
                                 expected="the same indentation characters as that line")
            if len(here) < len(inner) or first is None and here == outer:
                break  # indented less than the body's first line: the block ends
            first = first or self.tok
            if self._is_block_header():
                raise self.error(f"blocks do not nest: this block is inside the block on line "
                                 f"{header.line}", expected="one level of 'for' blocks")
            self.statement(body)
            self.end_of_statement()
        if first is None:
            raise self.error(f"the block on line {header.line} has no body", header,
                             expected="lines indented more than the 'for' line after it")
        return body

    def bound(self) -> tuple[int | str, ast.Pos]:
        """A block's first or last layer: a whole number, or a dimension named like 'L'."""
        tok = self.advance()
        if tok.kind == "NUMBER" and tok.text.isdigit() and len(tok.text) <= 10 and \
                int(tok.text) < 2**31:  # as a dimension; each layer index is checked too
            return int(tok.text), self.pos(tok)
        if tok.kind == "NAME" and tok.time is None and tok.layer is None and \
                tok.text not in FUNCTIONS and "^" not in tok.text:
            self.layer_dims.setdefault(tok.text, self.pos(tok))
            return tok.text, self.pos(tok)
        raise self.error(f"unexpected {_show(tok)} as a layer of the block", tok,
                         expected="a whole number or a dimension name, as in 'for l = 1…L:'")

    def name_node(self, tok: Token) -> ast.Name:
        """The AST name of a token. A layer index that is not the enclosing block's variable
        names a dimension (``h^{(L)}``); the variable alone is not a value (``l``)."""
        if self.var is not None and tok.text == self.var:
            raise self.error(f"'{tok.raw}' is the block's variable: it is read only in layer "
                             "indices", tok, expected=f"'h^{{({self.var})}}' or "
                                                     f"'h^{{({self.var}-1)}}'")
        if tok.layer is not None and tok.layer[0] != self.var:
            if self.var is None:
                self.layer_dims.setdefault(tok.layer[0], self.pos(tok))
            else:
                self.inner_symbols.append((tok.layer[0], self.pos(tok), self.var))
        return ast.Name(tok.text, tok.time, tok.raw, self.pos(tok), tok.layer)

    def _is_declaration(self) -> bool:
        j = self.i
        while self.tokens[j].kind in ("NAME", ","):
            if self.tokens[j].kind == "NAME" and self.tokens[j].text == "in":
                return True
            j += 1
        return self.tokens[j].kind == "in"

    def target(self) -> ast.Name:
        tok = self.advance()
        if tok.text in FUNCTIONS and tok.time is None:
            raise self.error(f"'{tok.text}' is a function and cannot be defined", tok,
                             expected="a variable name")
        if tok.time is not None and tok.time < 0:
            raise self.error(f"'{tok.raw}' is an earlier step and cannot be defined", tok,
                             expected="the current step (ₜ) or no time index")
        if tok.time is not None and tok.time > 0:
            raise self.error(f"'{tok.raw}' is a later step and cannot be defined", tok,
                             expected="the current step (ₜ) or no time index")
        return self.name_node(tok)

    def name_list(self) -> tuple[ast.Name, ...]:
        names = []
        while True:
            tok = self.expect("NAME", "a name")
            names.append(self.name_node(tok))
            if self.tok.kind != ",":
                return tuple(names)
            self.advance()

    def declaration(self) -> ast.Declaration:
        line = self.tok.line
        names = self.name_list()
        in_tok = self.advance()  # '∈' or the word 'in'
        if not (in_tok.kind == "in" or in_tok.text == "in"):
            raise self.error(f"unexpected {_show(in_tok)}", in_tok, expected="'∈' or 'in'")
        reals = self.advance()
        ids = reals.kind == "NAME" and reals.text == NATURALS
        if not (reals.kind == "REALS" or ids or (reals.kind == "NAME" and reals.text == "R")):
            raise self.error(f"unexpected {_show(reals)}", reals, expected="ℝ, R or ℕ")
        if self.tok.kind != "^":
            return ast.Declaration(names, (), line, ids)
        self.advance()
        if self.tok.kind in ("(", "{"):
            close = ")" if self.advance().kind == "(" else "}"
            dims = [self.dim()]
            while self.tok.kind in ("×", ",", "*") or (
                self.tok.kind == "NAME" and self.tok.text == "x"
            ):
                self.advance()
                dims.append(self.dim())
            self.expect(close, f"'{close}' or '×' between dimensions")
        else:
            dims = [self.dim_term_only()]
        if len(dims) > MAX_AXES:
            raise self.error(f"{len(dims)} dimensions declared",
                             expected=f"at most {MAX_AXES} (a tensor's axes)")
        return ast.Declaration(names, tuple(dims), line, ids)

    def dim(self) -> ast.Dim:
        terms = self.scaled_term()
        while self.tok.kind == "+":
            self.advance()
            terms.extend(self.scaled_term())
        return ast.Dim(tuple(terms))

    def scaled_term(self) -> list[str | int]:
        """A term, or a small whole multiple of a dimension, ``4·d`` or ``4d`` (the hidden
        width of a transformer's MLP): k terms of d, so sizes add up as sums do."""
        term = self.dim_term()
        if not isinstance(term, int) or not (self.tok.kind == "@" or (
                self.tok.kind == "NAME" and self.tok.time is None)):
            return [term]
        if self.tok.kind == "@":
            self.advance()
        name = self.dim_term()
        if isinstance(name, int) or term > MAX_MULTIPLE:
            raise self.error(f"'{term}·{name}' in a dimension", self.tok,
                             expected=f"a whole number up to {MAX_MULTIPLE} times a dimension "
                                      "name, e.g. 4·d")
        return [name] * term

    def dim_term_only(self) -> ast.Dim:
        return ast.Dim((self.dim_term(),))

    def dim_term(self) -> str | int:
        tok = self.advance()
        if tok.kind == "NUMBER" and tok.text.isdigit() and 0 < int(tok.text) < 2**31:
            return int(tok.text)
        if tok.kind == "NAME" and tok.time is None and "^" not in tok.text:
            return tok.text
        raise self.error(f"unexpected {_show(tok)} in a dimension", tok,
                         expected="a dimension name like H or a positive integer")

    # -- expressions ---------------------------------------------------------------------
    def expression(self) -> ast.Expr:
        """A comparison (``a < b``: 1 where it holds, else 0), or a sum; comparisons bind
        loosest and do not chain."""
        left = self.sum()
        if self.tok.kind in _COMPARE:
            op = self.advance()
            right = self.sum()
            self.count()
            if self.tok.kind in _COMPARE:
                raise self.error("comparisons do not chain", expected="parentheses, or "
                                 "⊙ of two comparisons for 'a < b < c'")
            left = ast.Binary(op.kind, left, right, self.pos(op))
        return left

    def sum(self) -> ast.Expr:
        left = self.product()
        while self.tok.kind in ("+", "-"):
            op = self.advance()
            right = self.product()
            self.count()
            left = ast.Binary(op.kind, left, right, self.pos(op))
        return left

    def product(self) -> ast.Expr:
        left = self.matprod()
        while self.tok.kind in ("*", "/"):
            op = self.advance()
            right = self.matprod()
            self.count()
            left = ast.Binary(op.kind, left, right, self.pos(op))
        return left

    def matprod(self) -> ast.Expr:
        left = self.unary()
        while self.tok.kind == "@" or self.tok.kind in _ATOM_START:
            op = self.tok
            if op.kind == "@":
                self.advance()
            right = self.unary()
            self.count()
            left = ast.Binary("@", left, right, self.pos(op))
        return left

    def unary(self) -> ast.Expr:
        if self.tok.kind == "-":
            op = self.advance()
            self.nest()
            operand = self.unary()
            self.depth -= 1
            self.count()
            return ast.Unary("-", operand, self.pos(op))
        if self.tok.kind == "+":
            self.advance()
            return self.unary()
        return self.power()

    def power(self) -> ast.Expr:
        base = self.postfix()
        if self.tok.kind != "^":
            return base
        op = self.advance()
        if self.tok.kind == "{":  # not a layer index: the lexer reads W^{(1)} as one name
            raise self.error("unexpected '{' after '^'", expected="a number as the exponent, "
                             "or a layer index right after a name: a whole number '^{(1)}', "
                             "or a block's variable or a dimension '^{(l)}', '^{(l-1)}'")
        exponent = self.signed_number()
        self.count()
        return ast.Power(base, exponent, self.pos(op))

    def signed_number(self, what: str = "a number as the exponent") -> float:
        parens = self.tok.kind == "("
        if parens:
            self.advance()
        sign = 1.0
        while self.tok.kind in ("-", "+"):
            if self.advance().kind == "-":
                sign = -sign
        tok = self.expect("NUMBER", what)
        if parens:
            self.expect(")", "')'")
        return sign * float(tok.text)

    def postfix(self) -> ast.Expr:
        expr = self.atom()
        depth = self.depth
        while self.tok.kind in ("T", "POW") or self.indexing():
            if self.tok.kind == "[":
                expr = self.index(expr)
                continue
            tok = self.advance()
            self.count()
            self.nest()  # xᵀᵀᵀ… nests like parentheses in SymPy, so it counts as depth
            if tok.kind == "T":
                expr = ast.Transpose(expr, self.pos(tok))
            else:
                expr = ast.Power(expr, float(tok.text), self.pos(tok))
        self.depth = depth
        return expr

    def indexing(self) -> bool:
        """``x[2]`` or ``x[0:k]``: a ``[`` right after the operand (no space) holding integers
        and at most one ``:``. Anything else after ``[`` is a stacked vector (``W [a; b]``)."""
        prev, tok = self.tokens[self.i - 1], self.tok
        if tok.kind != "[" or tok.line != prev.line or \
                tok.column != prev.column + len(prev.raw or prev.text):
            return False
        kinds = [self.peek(k).kind for k in range(1, 5)]
        if kinds[:2] == ["NAME", "]"] and self.peek().text in self.ids and \
                (self.peek().text != "t" or self.peek().time is None):
            return True  # E[xₜ]: a gather by ids (without ∈ ℕ it stays a product, E·[xₜ])
        return kinds[:2] == ["NUMBER", "]"] or kinds == ["NUMBER", ":", "NUMBER", "]"]

    def index(self, operand: ast.Expr) -> ast.Expr:
        open_tok = self.advance()
        if self.tok.kind == "NAME":
            tok = self.advance()
            self.expect("]", "']'")
            self.count()
            return ast.Gather(operand, self.name_node(tok), self.pos(open_tok))
        start = self.index_number()
        stop = start + 1
        if self.tok.kind == ":":
            self.advance()
            stop = self.index_number()
            if stop <= start:
                raise self.error(f"the slice [{start}:{stop}] is empty", open_tok,
                                 expected="start < stop (entries start … stop−1)")
        self.expect("]", "']'")
        self.count()
        return ast.Slice(operand, start, stop, self.pos(open_tok))

    def index_number(self) -> int:
        tok = self.expect("NUMBER", "an entry number")
        if not tok.text.isdigit() or len(tok.text) > 10:
            raise self.error(f"'{tok.text}' is not an entry number", tok,
                             expected="a whole number from 0")
        return int(tok.text)

    def atom(self) -> ast.Expr:
        tok = self.tok
        self.count()
        if tok.kind == "NUMBER":
            self.advance()
            return ast.Number(float(tok.text), tok.text, self.pos(tok))
        if tok.kind == "NAME":
            return self.name_or_call()
        if tok.kind == "‖":  # ‖x‖, the Euclidean norm (not a juxtaposed operand: ‖ also closes)
            self.advance()
            self.nest()
            inner = self.expression()
            self.depth -= 1
            self.expect("‖", "'‖' closing the norm")
            return ast.Call("norm", (inner,), self.pos(tok))
        if tok.kind == "(":
            self.advance()
            self.nest()
            inner = self.expression()
            self.depth -= 1
            self.close(tok, ")", "')'")
            return inner
        if tok.kind == "[":
            return self.concat()
        raise self.error(f"unexpected {_show(tok)}", expected="a name, a number, '(' or '['")

    def name_or_call(self) -> ast.Expr:
        tok = self.advance()
        if tok.text in FUNCTIONS and tok.time is None:
            return self.call(tok)
        adjacent = self.tok.kind == "(" and self.tok.line == tok.line and \
            self.tok.column == tok.column + len(tok.raw)
        if adjacent and tok.time is None:
            self.unknown_function(tok)
        return self.name_node(tok)

    def unknown_function(self, tok: Token) -> None:
        """A name written right before ``(`` that reads as a misspelt function is an error,
        not a matrix: a function's spelling up to case (``Tanh``), a close match of one of two
        or more letters (``relu6``), or a word of two or more lowercase letters (``foo``).
        One-letter and matrix-like names stay products: ``W(x + b)``, ``U(h)``, ``Wx(…)``."""
        suggestion = _suggest(tok.text)
        if suggestion is not None:
            raise self.error(f"unknown function '{tok.raw}'; did you mean '{suggestion}'?", tok,
                             expected=f"'{suggestion}(…)', or a space before '(' for a product")
        if _WORD_RE.match(tok.text):
            known = ", ".join(sorted(FUNCTIONS))
            raise self.error(f"unknown function '{tok.text}'", tok, expected=f"one of {known}")

    def call(self, tok: Token) -> ast.Expr:
        func = FUNCTIONS[tok.text]
        self.nest()
        given: dict[str, float] = {}
        if self.tok.kind == "(":
            opened = self.advance()
            args = [self.expression()]
            while self.tok.kind == ",":
                self.advance()
                args.append(self.expression())
            if self.tok.kind == ";":
                given = self.params(tok)
            self.close(opened, ")", "')' after the function's argument")
            func = BY_ARITY.get((tok.text, len(args)), "")
            if not func:
                counts = sorted(n for s, n in BY_ARITY if s == tok.text)
                takes = " or ".join(map(str, counts))
                noun = "argument" if counts == [1] else "arguments"
                raise self.error(f"{tok.raw} takes {takes} {noun}, got {len(args)}", tok,
                                 expected="one argument" if counts == [1] else
                                 f"{takes} arguments")
            if given and set(given) - set(_params(OPS[func])):
                raise self.error(f"{tok.raw} with {len(args)} arguments has no parameters", tok)
        elif self.tok.kind in _ATOM_START:
            func = BY_ARITY.get((tok.text, 1), "")
            if not func:  # where a: a function of several arguments needs its parentheses
                arities = " or ".join(str(n) for s, n in sorted(BY_ARITY) if s == tok.text)
                raise self.error(f"{tok.raw} takes {arities} arguments", tok,
                                 expected=f"{tok.raw}(…, …) with its arguments in parentheses")
            args = [self.postfix()]
        else:
            raise self.error(f"function {tok.raw} needs an argument", expected="'(' or a name")
        self.depth -= 1
        params = tuple((k, given.get(k, v)) for k, v in OPS[func].params.items())
        if "axis" in given:  # no default: without it the op works as version 1's
            params += (("axis", given["axis"]),)
        return ast.Call(func, tuple(args), self.pos(tok), params)

    def params(self, func: Token) -> dict[str, float]:
        """``; name=number, …`` after a function's argument: its parameters by name."""
        known = _params(OPS[FUNCTIONS[func.text]])
        given: dict[str, float] = {}
        while self.tok.kind in (";", ",") and (self.tok.kind == ";" or given):
            self.advance()
            key = self.expect("NAME", "a parameter name")
            if key.text not in known:
                names = ", ".join(known) or "none"
                raise self.error(f"{func.raw} has no parameter '{key.raw}'", key,
                                 expected=f"one of its parameters ({names})")
            if key.text in given:
                raise self.error(f"parameter '{key.raw}' given twice", key)
            self.expect("=", f"'=' after the parameter name '{key.raw}'")
            given[key.text] = self.signed_number(f"a number for '{key.raw}'")
            if key.text == "axis" and given["axis"] != int(given["axis"]):
                raise self.error(f"axis={given['axis']:g} is not a whole number", key,
                                 expected="an axis counted from 0, or from -1 at the end")
        return given

    def concat(self) -> ast.Expr:
        """``[a; b]``, ``[a, b]``, ``[a, b; c, d]``: rows separated by ``;``, the parts of a
        row by ``,`` (side by side along the last axis, then the rows stacked)."""
        open_tok = self.advance()
        self.nest()
        rows = [self.concat_row(open_tok)]
        while self.tok.kind == ";":
            self.advance()
            rows.append(self.concat_row(open_tok))
        self.close(open_tok, "]", "']', ';' or ','")
        self.depth -= 1
        if len(rows) == 1 and isinstance(rows[0], ast.Concat) and rows[0].across:
            return rows[0]
        return ast.Concat(tuple(rows), self.pos(open_tok))

    def concat_row(self, open_tok: Token) -> ast.Expr:
        parts = [self.expression()]
        while self.tok.kind == ",":
            self.advance()
            parts.append(self.expression())
        if len(parts) == 1:
            return parts[0]
        return ast.Concat(tuple(parts), self.pos(open_tok), across=True)


def check_block_names(module: ast.Module, inner: list[tuple[str, ast.Pos, str]]) -> None:
    """A block's variable is not a dimension's name (it would hide it), and a layer index
    inside a block names either its variable or a dimension of the text."""
    dims = {t for d in module.declarations for dim in d.shape for t in dim.terms
            if isinstance(t, str)}
    dims |= {t for b in module.blocks for d in b.body.declarations for dim in d.shape
             for t in dim.terms if isinstance(t, str)}
    dims |= set(module.layer_dims)
    for block in module.blocks:
        if block.var.name in dims:
            raise _at(module, f"the block's variable '{block.var.raw}' is also a dimension of "
                      "the text", block.var.pos,
                      expected="another name for the variable, e.g. 'l' in 'for l = 1…L:'")
    for name, pos, var in inner:
        if name not in dims:
            raise _at(module, f"the layer index '{name}' is neither the block's variable "
                      f"'{var}' nor a dimension", pos,
                      expected=f"'^{{({var})}}', '^{{({var}-1)}}', or a declared dimension")


def _at(module: ast.Module, message: str, pos: ast.Pos, expected: str) -> EquationError:
    return EquationError(message, line=pos.line, column=pos.column,
                         source_line=module.lines[pos.line - 1], expected=expected,
                         filename=module.filename)


def _declared_ids(tokens: list[Token]) -> set[str]:
    """Names declared ``∈ ℕ`` anywhere in the text (a declaration may follow the use)."""
    ids: set[str] = set()
    for i, tok in enumerate(tokens[:-1]):
        nxt = tokens[i + 1]
        if (tok.kind == "in" or tok.text == "in") and nxt.kind == "NAME" and \
                nxt.text == NATURALS:
            j = i - 1
            while j >= 0 and tokens[j].kind in ("NAME", ","):
                if tokens[j].kind == "NAME":
                    ids.add(tokens[j].text)
                j -= 1
    return ids


def _suggest(name: str) -> str | None:
    """The function a name misspells, if it is one: the same spelling up to case, or the
    closest spelling of two or more letters by difflib's ratio (at least 0.8: ``relu6`` →
    ``relu``, ``sigmod`` → ``sigmoid``; ``Wx`` or ``W_h`` match nothing)."""
    for spelling in FUNCTIONS:
        if spelling.lower() == name.lower():
            return spelling
    if len(name) < 2:
        return None
    long = [s for s in FUNCTIONS if len(s) >= 2]
    close = difflib.get_close_matches(name, long, n=1, cutoff=0.8)
    return close[0] if close else None


def _params(op: Op) -> list[str]:
    """The parameters a call of ``op`` may name."""
    return [*op.params, *(["axis"] if op.takes_axis else [])]


def _show(tok: Token) -> str:
    if tok.kind == "NEWLINE":
        return "end of line"
    if tok.kind == "EOF":
        return "end of text"
    return f"'{tok.raw or tok.text}'"


def parse(text: str, filename: str | None = None, dims: Mapping[str, int] | None = None,
          *, expand: bool = True) -> ast.Module:
    """Parse equation text into a Module; raises EquationError on any syntax problem.

    Blocks (``for l = 1…L:``) are expanded with the dimension values in ``dims``, which must
    then name every bound a block uses; ``expand=False`` gives the text as written (its
    blocks unexpanded), e.g. to list its dimensions or render it."""
    module = Parser(text, filename).parse()
    return expand_blocks(module, dims or {}) if expand else module
