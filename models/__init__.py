"""Networks built only from operator expressions, and their registry.

Every module in this package is imported here, so a network registers itself
by being a file in this folder.
"""
import importlib as _importlib
import pkgutil as _pkgutil

from .registry import MODELS, create_model, list_models, model_info, model_term, register_model

for _m in _pkgutil.iter_modules(__path__):
    if not _m.name.startswith("_") and _m.name != "registry":
        _importlib.import_module(f"{__name__}.{_m.name}")

__all__ = ["create_model", "list_models", "model_term", "model_info", "register_model", "MODELS"]
