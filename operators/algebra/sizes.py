"""Which input sizes a term can run on: every node's output must be non-empty.

``operad.cost`` and ``operad.summary`` call :func:`check_sizes` before they
count anything, so a 5x5 ``valid`` convolution on a 2x2 input is an error
naming the node instead of a negative size with positive MACs::

    >>> from operad import ops, Field
    >>> check_sizes(ops.conv(8).named("stem") >> ops.conv(8, k=5, padding="valid").named("head"), Field(3), (2, 2))
    Traceback (most recent call last):
    ...
    operad.operators.algebra.errors.SizeError: head: conv(8, k=5, padding='valid') maps a 2x2 input to -2x-2: its output would be empty (give a larger input)
"""
from __future__ import annotations

from typing import Any, Iterator, Optional, Sequence, Tuple

import sympy

from .errors import SizeError
from .field import Field, TypeMismatch
from .term import Size, Term, _join

__all__ = ["check_sizes", "check_input_shape"]


def _concrete(size: Size) -> bool:
    return size is not None and all(isinstance(n, int) or (isinstance(n, sympy.Basic) and n.is_Integer)
                                    for n in size)


def _fmt(size) -> str:
    return "x".join(str(int(n)) for n in size)


def check_sizes(term: Term, t: Field, size: Size, path: str = "") -> None:
    """Raise :class:`SizeError` if ``term`` on a ``t`` input of spatial ``size``
    gives any node an empty (or negative) output, naming the deepest such node.
    Symbolic sizes and rank-0 fields pass (there is nothing to check)."""
    if not _concrete(size):
        return
    if any(int(n) < 1 for n in size):
        raise SizeError(f"{path or '<input>'}: the input size {_fmt(size)} is empty; give positive sizes")
    _walk(term, t, tuple(int(n) for n in size), path)


def _walk(term: Term, t: Field, size: Tuple[int, ...], path: str) -> None:
    for child, ct, csize, cpath in _children(term, t, size, path):
        if _concrete(csize) and all(int(n) >= 1 for n in csize):
            _walk(child, ct, tuple(int(n) for n in csize), cpath)
    out = term.out_size(t, size)
    if _concrete(out) and any(int(n) < 1 for n in out):
        r = repr(term)
        r = r if len(r) <= 60 else r[:57] + "..."
        raise SizeError(f"{path or '<root>'}: {r} maps a {_fmt(size)} input to {_fmt(out)}: "
                        f"its output would be empty (give a larger input)")


def _children(term: Term, t: Field, size, path: str) -> Iterator[Tuple[Term, Field, Any, str]]:
    """Each child with the field, size and path it sees (as binding gives them)."""
    from .combinators import Dense, Named, Repeat, Residual, Seq, _BranchTerm
    from .macro import Macro

    if isinstance(term, Repeat):
        term = term._seq()
    if isinstance(term, Named):
        yield term.inner, t, size, path
    elif isinstance(term, Seq):
        for (seg, _, item), ti in zip(term._entries(), term._types(t)):
            yield item, ti, size, _join(path, seg)
            size = item.out_size(ti, size)
            if not _concrete(size) or any(int(n) < 1 for n in size):
                return  # this child is empty: it is the deepest node to blame
    elif isinstance(term, Macro):
        yield term.expand(t), t, size, path
    elif isinstance(term, _BranchTerm):
        for i, b in enumerate(term.items):
            yield b, t, size, _join(path, f"branch[{i}]")
    elif isinstance(term, Residual):
        yield term.body, t, size, _join(path, "body")
        yield term._short(), t, size, _join(path, "shortcut")
    elif isinstance(term, Dense):
        for i, ti in enumerate(term._types(t)[:-1]):
            yield term.layer, ti, size, _join(path, f"layers[{i}]")
    else:  # other combinators: their children see the input, at most (the node itself is checked after)
        for c in term.children():
            try:
                c._infer(t)
            except (TypeMismatch, ValueError, TypeError):
                continue
            yield c, t, size, path


def check_input_shape(module, shape: Sequence[int]) -> None:
    """Check a batch shape against a bound module: rank, channels and spatial size.

    >>> from operad import ops, Field
    >>> check_input_shape((ops.conv(8) >> ops.relu()).bind(Field(3)), (1, 7, 32, 32))
    Traceback (most recent call last):
    ...
    operad.operators.algebra.errors.SizeError: <root>: the input has 7 channels; the model takes Field(3) (3 channels)
    """
    t: Field = module.in_type
    want = 2 + (t.rank or 0)
    shape = tuple(shape)
    if len(shape) != want or any(not isinstance(n, int) or n < 1 for n in shape):
        raise SizeError(f"{module.path}: the input shape {shape} is not {want} positive ints "
                        f"(N, C{', H, W' if t.rank == 2 else ''}) for {t!r}")
    if isinstance(t.tensor_channels, int) and shape[1] != t.tensor_channels:
        raise SizeError(f"{module.path}: the input has {shape[1]} channels; the model takes {t!r} "
                        f"({t.tensor_channels} channels)")
    if t.rank == 2:
        check_sizes(module.term, t, shape[2:], "" if module.path == "<root>" else module.path)
