"""The operator algebra and its operator families.

``algebra/`` holds the core (field types, terms, combinators, binding),
``rewrites/`` the rewrite passes, and every other module here is one operator
family. Every family module is imported here, so a family registers itself (and
joins ``operad.ops`` and the property suite) by being a file in this folder.
"""
import importlib as _importlib
import pkgutil as _pkgutil

from .algebra import FAMILIES, OPS, Cost, Family, Field, Term, TypeMismatch, as_complex, from_complex, op, register_family
from . import conv, norm, activation, pooling, linear, resample, rearrange  # noqa: F401

for _m in _pkgutil.iter_modules(__path__):
    if not _m.name.startswith("_") and not _m.ispkg:
        _importlib.import_module(f"{__name__}.{_m.name}")

from .algebra import ops  # noqa: E402  (after every family has registered)
from . import rewrites  # noqa: E402

__all__ = ["Field", "TypeMismatch", "Term", "Cost", "Family", "FAMILIES", "OPS", "op",
           "register_family", "ops", "rewrites", "as_complex", "from_complex"]
