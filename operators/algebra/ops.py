"""All term constructors, in one namespace: ``from operad import ops``.

Every operator family module publishes its constructors with ``@op``; this
module collects them, so a new family appears here by registering itself.

>>> from operad import ops
>>> ops.conv(16) >> ops.bn() >> ops.relu()
conv(16) >> bn() >> relu()
"""
from .errors import UnknownOperator as _UnknownOperator
from .term import OPS as _OPS

globals().update(_OPS)
__all__ = sorted(_OPS)


def __getattr__(name):
    import difflib
    close = difflib.get_close_matches(name, list(_OPS), n=3)
    hint = f"; did you mean {', '.join('ops.' + c for c in close)}?" if close else ""
    raise _UnknownOperator(f"operad.ops has no operator {name!r}{hint}")


def __dir__():
    return sorted(_OPS)
