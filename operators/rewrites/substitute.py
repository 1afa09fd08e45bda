"""``substitute`` swaps one operator for another everywhere in an expression::

    >>> from operad import ops
    >>> from operad.rewrite import substitute
    >>> substitute(ops.conv(8) >> ops.relu(), ops.relu, ops.gelu())
    conv(8) >> gelu()
    >>> substitute(ops.conv(8) >> ops.relu(), "conv", lambda c: ops.conv(c.out, k=5))
    conv(8, k=5) >> relu()
"""
from __future__ import annotations

from typing import Callable, Union

from ..algebra.term import Term

__all__ = ["substitute", "matcher"]

Match = Union[str, type, Callable]


def matcher(match: Match) -> Callable[[Term], bool]:
    """A predicate on terms from a family name, a term class, an ``ops``
    constructor (matches the family it builds), or a predicate."""
    if isinstance(match, str):
        return lambda t: t.family == match
    if isinstance(match, type):
        return lambda t: isinstance(t, match)
    fam = getattr(match, "family", None)
    if fam is not None:
        return lambda t: t.family == fam
    if callable(match):
        return match
    raise TypeError(f"cannot match terms by {match!r}")


def substitute(term: Term, match: Match, replacement: Union[Term, Callable[[Term], Term]]) -> Term:
    """Replace every sub-term that ``match`` selects by ``replacement`` (a term,
    or a function of the old term that returns the new one)."""
    pred = matcher(match)
    if isinstance(replacement, Term):
        make = lambda old: replacement
    elif callable(replacement):
        make = replacement
    else:
        raise TypeError(f"replacement must be a term or a function of the old term; got {replacement!r}")

    def fn(t: Term) -> Term:
        if pred(t):
            new = make(t)
            if not isinstance(new, Term):
                raise TypeError(f"replacement for {t!r} returned {type(new).__name__}, not a term")
            return new
        return t

    return term.map(fn)
