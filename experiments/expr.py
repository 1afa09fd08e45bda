"""Model expressions read from configs, checkpoints and the command line.

An expression is parsed with Python's :mod:`ast` and built by a small
interpreter that knows only this grammar; nothing in it is passed to
``eval``, so a checkpoint or config cannot run code through it::

    term := ops.NAME(arg, ..., key=arg, ...)      a registered operator
          | term >> term | term + term             sequence, sum of branches
          | term * INT | INT * term                the block INT times
          | term.named("name")                     a named node
          | ( term )
    arg  := term | literal | num_classes | (arg, ...) | [arg, ...]
    literal := number (optionally negated) | "string" | True | False | None

Anything else (other names, attribute chains such as ``ops.conv.__globals__``,
subscripts, lambdas, comprehensions, f-strings, ``**kwargs``, ...) is an
:class:`ExprError` (a :class:`~operad.experiments.config.ConfigError`) that
quotes the offending piece with its line and column. Parses are cached.

>>> parse_expr("ops.conv(8) >> ops.relu() >> ops.global_pool() >> ops.linear(num_classes)", num_classes=10)
conv(8) >> relu() >> global_pool() >> linear(10)
>>> parse_expr("ops.conv.__globals__")
Traceback (most recent call last):
...
operad.experiments.expr.ExprError: model_expr: 'ops.conv.__globals__' at line 1, column 0: only ops.<operator>(...) and .named("...") may follow a dot...
"""
from __future__ import annotations

import ast
import difflib
import functools
from typing import Any, List, Optional, Tuple

from operad.experiments.config import ConfigError

__all__ = ["parse_expr", "ExprError", "GRAMMAR"]

GRAMMAR = ('an expression allows only ops.<operator>(...) calls with literal or term arguments, '
           '>> * +, .named("...") and num_classes')

_BINOPS = {ast.RShift: ">>", ast.Mult: "*", ast.Add: "+"}
_LITERALS = (int, float, str, bool, type(None))


class ExprError(ConfigError):
    """A model expression outside the grammar, or one whose operator refused
    its arguments; ``piece``, ``line`` and ``col`` locate it."""

    def __init__(self, message: str, piece: str = "", line: int = 0, col: int = 0):
        super().__init__(message)
        self.piece, self.line, self.col = piece, line, col


# A compiled expression is a tree of tuples ("kind", where, ...); ``where``
# finds the node's piece of source, line and column when an error needs them.
class _Where:
    __slots__ = ("lines", "pos")

    def __init__(self, lines: List[str], node: ast.AST):
        self.lines, self.pos = lines, (node.lineno, node.col_offset, node.end_lineno, node.end_col_offset)

    def locate(self) -> Tuple[str, int, int]:
        """(piece, line, column) in the text (ast counts UTF-8 bytes; this counts characters)."""
        l0, c0, l1, c1 = self.pos
        enc = [self.lines[i].encode() for i in range(l0 - 1, l1)]
        if l0 == l1:
            piece = enc[0][c0:c1].decode(errors="replace")
        else:
            piece = " ".join([enc[0][c0:].decode(errors="replace")] + [e.decode() for e in enc[1:-1]]
                             + [enc[-1][:c1].decode(errors="replace")])
        piece = " ".join(piece.split())
        if len(piece) > 60:
            piece = piece[:57] + "..."
        return piece, l0 - 1, len(enc[0][:c0].decode(errors="replace"))


class _Compiler:
    """Turns the ``ast`` of one expression into a plan, refusing anything outside the grammar."""

    def __init__(self, text: str, source: str):
        self.text, self.source = text.replace("\r\n", "\n").replace("\r", "\n"), source
        self.wrapped = "(\n" + self.text + "\n)"  # multi-line configs; line 1 of the text is line 2 here
        self.lines = self.wrapped.split("\n")

    def where(self, node: ast.AST) -> _Where:
        return _Where(self.lines, node)

    def fail(self, node: ast.AST, reason: str) -> ExprError:
        return _fail_at(self.source, self.where(node), f"{reason}; {GRAMMAR}")

    def compile(self) -> tuple:
        try:
            tree = ast.parse(self.wrapped, mode="eval")
        except SyntaxError as e:
            raise self.syntax_error(e) from None
        except (RecursionError, MemoryError, ValueError) as e:  # too deeply nested, or a NUL byte
            raise ExprError(f"{self.source}: cannot parse the expression ({type(e).__name__}: {e})") from None
        try:
            return self.node(tree.body)
        except RecursionError:
            raise ExprError(f"{self.source}: cannot parse the expression: it is nested too deeply") from None

    def syntax_error(self, e: SyntaxError) -> ExprError:
        # the wrapper's own parentheses make poor locations: re-parse the text on one
        # line (newlines as spaces, so offsets still map to the text's lines and columns)
        flat = self.text.replace("\r", " ").replace("\n", " ")
        try:
            ast.parse(flat.lstrip(), mode="eval")
            msg, offset = e.msg, None
        except SyntaxError as e2:
            lead = len(flat) - len(flat.lstrip())
            msg, offset = e2.msg, min(max((e2.offset or 1) - 1, 0) + lead, len(flat))
        except (RecursionError, MemoryError, ValueError):
            msg, offset = e.msg, None
        if offset is None:
            return ExprError(f"{self.source}: invalid syntax ({msg}): {self.text.strip()[:60]!r}")
        lines = self.text.split("\n")
        line, col = 0, offset
        while line < len(lines) - 1 and col > len(lines[line]):
            col -= len(lines[line]) + 1
            line += 1
        piece = lines[line][col:col + 20].strip() or lines[line].strip()
        return ExprError(f"{self.source}: invalid syntax ({msg}) at line {line + 1}, column {col}: {piece!r}",
                         piece, line + 1, col)

    def node(self, n: ast.AST) -> tuple:
        if isinstance(n, ast.Constant):
            if type(n.value) not in _LITERALS:
                raise self.fail(n, f"{type(n.value).__name__} literals are not allowed")
            return ("const", self.where(n), n.value)
        if isinstance(n, ast.UnaryOp) and isinstance(n.op, (ast.USub, ast.UAdd)) \
                and isinstance(n.operand, ast.Constant) and type(n.operand.value) in (int, float):
            v = n.operand.value
            return ("const", self.where(n), -v if isinstance(n.op, ast.USub) else v)
        if isinstance(n, ast.Name):
            if n.id == "num_classes":
                return ("num_classes", self.where(n))
            if n.id == "ops":
                raise self.fail(n, "ops must be followed by .<operator>(...)")
            raise self.fail(n, f"the name {n.id!r} is not defined in an expression")
        if isinstance(n, (ast.Tuple, ast.List)):
            return ("tuple" if isinstance(n, ast.Tuple) else "list", self.where(n), [self.node(e) for e in n.elts])
        if isinstance(n, ast.BinOp) and type(n.op) in _BINOPS:
            return self.binop(n)
        if isinstance(n, ast.Call):
            return self.call(n)
        if isinstance(n, ast.Attribute):
            if isinstance(n.value, ast.Name) and n.value.id == "ops":
                self.operator(n)
                raise self.fail(n, f"ops.{n.attr} is an operator constructor; call it: ops.{n.attr}(...)")
            raise self.fail(n, 'only ops.<operator>(...) and .named("...") may follow a dot')
        kind = type(n).__name__
        what = {"Subscript": "subscripts", "Lambda": "lambdas", "JoinedStr": "f-strings", "Starred": "* unpacking",
                "Dict": "dicts", "Set": "sets", "ListComp": "comprehensions", "GeneratorExp": "comprehensions",
                "DictComp": "comprehensions", "SetComp": "comprehensions", "IfExp": "conditionals",
                "Compare": "comparisons", "BoolOp": "and/or", "NamedExpr": ":= assignments",
                "Await": "await", "Yield": "yield", "YieldFrom": "yield"}.get(kind)
        if isinstance(n, (ast.BinOp, ast.UnaryOp)):
            op = type(n.op).__name__
            what = f"the operator {op}" if isinstance(n, ast.BinOp) else f"the unary {op} on anything but a number"
        raise self.fail(n, f"{what or kind} cannot appear in an expression")

    def binop(self, n: ast.BinOp) -> tuple:
        # a >> b >> c ... parses left-nested; walk it iteratively so long chains never recurse deeply
        op, right = type(n.op), []
        while isinstance(n, ast.BinOp) and type(n.op) is op:
            right.append(n)
            n = n.left
        plan = self.node(n)
        for b in reversed(right):
            plan = ("binop", self.where(b), _BINOPS[op], plan, self.node(b.right))
        return plan

    def operator(self, f: ast.Attribute) -> None:
        """Refuse ``ops.NAME`` unless NAME is a registered operator."""
        from operad.operators.algebra.term import OPS

        if f.attr.startswith("_") or f.attr not in OPS:
            close = difflib.get_close_matches(f.attr, list(OPS), n=3)
            hint = f" (did you mean {', '.join('ops.' + c for c in close)}?)" if close else ""
            raise self.fail(f, f"ops has no operator {f.attr!r}{hint}")

    def call(self, n: ast.Call) -> tuple:
        f = n.func
        for a in n.args:
            if isinstance(a, ast.Starred):
                raise self.fail(a, "* unpacking cannot appear in an expression")
        for k in n.keywords:
            if k.arg is None:
                raise self.fail(k.value, "** unpacking cannot appear in an expression")
            if k.arg.startswith("__"):
                raise self.fail(k.value, f"the keyword {k.arg!r} is not allowed")
        if isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name) and f.value.id == "ops":
            self.operator(f)
            return ("call", self.where(n), f.attr, [self.node(a) for a in n.args],
                    [(k.arg, self.node(k.value)) for k in n.keywords])
        if isinstance(f, ast.Attribute) and f.attr == "named":
            if n.keywords or len(n.args) != 1 or not (isinstance(n.args[0], ast.Constant)
                                                      and isinstance(n.args[0].value, str)):
                raise self.fail(n, '.named takes one string: .named("stage1")')
            return ("named", self.where(n), self.node(f.value), n.args[0].value)
        raise self.fail(f, "only ops.<operator>(...) and .named(...) may be called")


@functools.lru_cache(maxsize=256)
def _compile(text: str, source: str) -> tuple:
    return _Compiler(text, source).compile()


def _fail_at(source: str, where: _Where, reason: str) -> ExprError:
    piece, line, col = where.locate()
    return ExprError(f"{source}: {piece!r} at line {line}, column {col}: {reason}", piece, line, col)


def _run(plan: tuple, num_classes: Optional[int], source: str) -> Any:
    from operad.operators.algebra.term import OPS, Term

    kind, where = plan[0], plan[1]
    if kind == "const":
        return plan[2]
    if kind == "num_classes":
        if num_classes is None:
            raise _fail_at(source, where, "num_classes is not known here")
        return int(num_classes)
    if kind in ("tuple", "list"):
        vals = [_run(p, num_classes, source) for p in plan[2]]
        return tuple(vals) if kind == "tuple" else vals
    if kind == "binop":
        op, a, b = plan[2], _run(plan[3], num_classes, source), _run(plan[4], num_classes, source)
        if op == "*":
            n, t = (b, a) if isinstance(a, Term) else (a, b)
            if not isinstance(t, Term) or not isinstance(n, int) or isinstance(n, bool) or isinstance(n, Term):
                raise _fail_at(source, where, "* repeats a term: term * n with a positive int n")
        elif not (isinstance(a, Term) and isinstance(b, Term)):
            raise _fail_at(source, where, f"{op} joins two terms; got {type(a).__name__} {op} {type(b).__name__}")
        try:
            return a >> b if op == ">>" else a + b if op == "+" else t * n
        except (TypeError, ValueError) as e:
            raise _fail_at(source, where, str(e)) from None
    if kind == "named":
        inner = _run(plan[2], num_classes, source)
        if not isinstance(inner, Term):
            raise _fail_at(source, where, f".named applies to a term, not to {type(inner).__name__}")
        try:
            return inner.named(plan[3])
        except (TypeError, ValueError) as e:
            raise _fail_at(source, where, str(e)) from None
    # a call of a registered constructor, with values already built
    args = [_run(p, num_classes, source) for p in plan[3]]
    kwargs = {k: _run(p, num_classes, source) for k, p in plan[4]}
    try:
        return OPS[plan[2]](*args, **kwargs)
    except Exception as e:  # a constructor refusing its arguments is the expression's error
        raise _fail_at(source, where, f"{type(e).__name__}: {e}") from None


def parse_expr(text: str, num_classes: Optional[int] = None, source: str = "model_expr") -> "Term":
    """The operad term of ``text`` (see the module docstring for the grammar);
    ``num_classes`` is the value of that name, ``source`` starts every error.

    >>> parse_expr("(ops.conv(16) >> ops.relu()).named('stem') >> ops.residual(ops.conv(16)) * 2")
    (conv(16) >> relu()).named('stem') >> residual(conv(16)) * 2
    """
    from operad.operators.algebra.term import Term

    if not isinstance(text, str):
        raise ConfigError(f"{source} must be a string, got {type(text).__name__}")
    if not text.strip():
        raise ConfigError(f"{source} is empty; {GRAMMAR}")
    try:
        term = _run(_compile(text, source), num_classes, source)
    except RecursionError:  # the plan is as deep as the text; how deep Python may go depends on who set the limit
        raise ExprError(f"{source}: cannot parse the expression: it is nested too deeply") from None
    if not isinstance(term, Term):
        raise ExprError(f"{source}: {text.strip()[:60]!r} gives {type(term).__name__}, not an operad term; {GRAMMAR}")
    return term
