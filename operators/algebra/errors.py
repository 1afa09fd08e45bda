"""The errors operad raises about what a user gave it.

Every such error derives from :class:`OperadError`: the command line prints
its message as ``operad <verb>: error: <message>`` and exits with status 2,
without a traceback (``operad --debug`` shows one). Any other exception is a
bug in operad and keeps its traceback.

>>> from operad import ops
>>> try:
...     ops.max_pool(2, stride=0)
... except OpArgError as e:
...     print(e)
max_pool stride must be a positive int or None; got 0
"""
from __future__ import annotations

__all__ = ["OperadError", "OpArgError", "OpArgTypeError", "UnknownName", "UnknownOperator", "SizeError"]


class OperadError(Exception):
    """Base of the errors in a user's input (expressions, configs, data, sizes)."""


class OpArgError(OperadError, ValueError):
    """An operator's hyper-parameter is out of its allowed range; raised at construction."""


class OpArgTypeError(OpArgError, TypeError):
    """An operator's hyper-parameter has the wrong type (``conv(k=2.5)``, ``k="3"``)."""


class UnknownName(OperadError, KeyError):
    """A name (of a model, operator, ...) that is not registered; the message suggests close ones."""

    def __str__(self) -> str:  # KeyError would print the repr of its argument
        return str(self.args[0]) if self.args else ""


class UnknownOperator(OperadError, AttributeError):
    """``ops.<name>`` for a name no operator family publishes."""


class SizeError(OperadError, ValueError):
    """An input size (or channel count) a network cannot run on: some node's
    output would be empty, or the input's channels differ from the model's.
    The message names the node's path and operator."""
