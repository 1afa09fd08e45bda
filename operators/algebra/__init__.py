"""The algebra's core: field types, terms and their registry, combinators, the
link and macro machinery, and helpers shared by the operator families.

Imports go one way: ``field`` <- ``term`` <- ``combinators`` <- ``links``; a
term's ``>> * +`` reach the combinators through the registry in ``term``
(:func:`operad.operators.algebra.term.combinator`), never by importing them.
"""
from .errors import OpArgError, OpArgTypeError, OperadError, UnknownName
from .field import Field, TypeMismatch, as_complex, from_complex
from .term import FAMILIES, OPS, Cost, Family, Term, op, register_family
from . import combinators, links  # noqa: F401  (register the combinator families)

__all__ = ["Field", "TypeMismatch", "Term", "Cost", "Family", "FAMILIES", "OPS", "op",
           "register_family", "as_complex", "from_complex", "OperadError", "OpArgError", "OpArgTypeError",
           "UnknownName"]
