"""operad: a typed operator algebra for PDE-inspired and mathematical
convolutional networks on PyTorch.

>>> import operad
>>> from operad import ops, Field
>>> net = ops.conv(16) >> ops.bn() >> ops.relu() >> ops.global_pool() >> ops.linear(10)
>>> model = net.bind(Field(3))
>>> model.out_type
Field(10, rank=0)
"""
import sys as _sys

if __name__ != "operad":
    # This file was loaded under another name: test runners import a checkout's
    # root `__init__.py` by its folder's name (or as a bare `__init__` when the
    # folder name is not an identifier). Defer to the installed package rather
    # than load every module twice.
    import operad as _operad

    globals().update({k: getattr(_operad, k) for k in _operad.__all__})
    __all__ = list(_operad.__all__)
else:
    from .operators import Cost, Field, Term, TypeMismatch, ops, as_complex, from_complex
    from .operators import rewrites as rewrite
    from .theory import H, W, cost, count, summary, verify
    from . import models
    from .models import create_model, list_models

    __version__ = "0.1.0"

    # `import operad.ops`, `import operad.verify` and `import operad.rewrite` work too.
    _sys.modules[__name__ + ".ops"] = ops
    _sys.modules[__name__ + ".verify"] = verify
    _sys.modules[__name__ + ".rewrite"] = rewrite

    __all__ = ["Field", "Term", "TypeMismatch", "Cost", "ops", "rewrite", "cost", "count", "summary",
               "verify", "models", "create_model", "list_models", "H", "W", "as_complex", "from_complex"]
