"""The claims registry: every seed paper's claim as a graded experiment.

One module per group of seed systems registers its claims with
:func:`register`; every module of this package is imported on first use, so
adding a claim is adding an entry to a module (or a new module here):
``binary`` (XNOR/BWN, BinaryNet/QNN), ``regularization`` (one claim per
``regularization_*.toml``), ``detection`` (SSDLite) and ``speedrun`` (the speed
recipe's CPU proxy) sit beside the seed systems' modules.

>>> from operad.experiments.claims import all_claims
>>> "minnet_jpeg" in all_claims()
True

Run them with ``operad reproduce --list`` and ``operad reproduce CLAIM --profile cpu``.
"""
from __future__ import annotations

import difflib
import importlib
import pkgutil
from typing import Dict, List, Optional, Sequence

from .base import CLAIMS, METRICS, PROFILES, Arm, Claim, cifar_profiles, metric_value, register

__all__ = ["Arm", "Claim", "CLAIMS", "METRICS", "PROFILES", "register", "all_claims", "get_claims",
           "cifar_profiles", "metric_value"]

_INFRA = {"base", "stats", "runner", "report"}
_loaded = False


def _load() -> None:
    global _loaded
    if _loaded:
        return
    _loaded = True
    for m in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if m.name not in _INFRA and not m.name.startswith("_"):
            importlib.import_module(f"{__name__}.{m.name}")


def all_claims() -> Dict[str, Claim]:
    """Every registered claim, by name."""
    _load()
    return dict(CLAIMS)


def get_claims(names: Optional[Sequence[str]] = None) -> List[Claim]:
    """The named claims (all when ``names`` is empty); an unknown name is a KeyError naming the closest."""
    cl = all_claims()
    if not names:
        return list(cl.values())
    out = []
    for n in names:
        if n not in cl:
            close = difflib.get_close_matches(n, list(cl), n=1)
            raise KeyError(f"no claim named {n!r}" + (f"; did you mean {close[0]!r}?" if close else "")
                           + " (operad reproduce --list)")
        out.append(cl[n])
    return out
