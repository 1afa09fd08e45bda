"""The operator algebra: field types, terms, combinators, binding, rewrites,
and the operator families (one module per family).

Every module in this package is imported here, so a family registers itself
(and joins ``operad.ops`` and the property suite) by being a file in this folder.
"""
import importlib as _importlib
import pkgutil as _pkgutil

from .field import Field, TypeMismatch, as_complex, from_complex
from .term import FAMILIES, OPS, Cost, Family, Term, op, register_family
from . import combinators, conv, norm, activation, pooling, linear, resample, rearrange  # noqa: F401

for _m in _pkgutil.iter_modules(__path__):
    if not _m.name.startswith("_") and _m.name != "ops":
        _importlib.import_module(f"{__name__}.{_m.name}")

from . import ops  # noqa: E402  (after every family has registered)

__all__ = ["Field", "TypeMismatch", "Term", "Cost", "Family", "FAMILIES", "OPS", "op",
           "register_family", "ops", "as_complex", "from_complex"]
