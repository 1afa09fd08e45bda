"""The quantize rewrite: convolutions and linear layers become QNN layers
(Hubara et al. 2016) with ``w_bits`` weights and ``a_bits`` inputs.

Every ``conv``/``linear`` except the first and the last (``keep_first_last``)
becomes ``quant_conv``/``quant_linear`` with the same hyper-parameters; the
layer quantizes its own input, so activations reach every quantized product at
``a_bits``. ``a_range`` is the input range: (0, 1) suits inputs that follow a
ReLU, (-1, 1) the paper's hard-tanh.

>>> from operad import ops
>>> quantize(ops.conv(8) >> ops.relu() >> ops.conv(8) >> ops.conv(4), w_bits=1, a_bits=2)
conv(8) >> relu() >> quant_conv(8) >> conv(4)
"""
from __future__ import annotations

from typing import Optional, Tuple, Union

from torch import nn

from ..algebra.term import Term
from ..linear import Linear
from ..quant import QuantConv, QuantLinear
from .binarize import carry_state, conv_args, replace_layers

__all__ = ["quantize"]


def quantize(model_or_term: Union[Term, nn.Module], w_bits: int = 1, a_bits: int = 2, keep_first_last: bool = True,
             a_range: Tuple[float, float] = (0.0, 1.0), log: bool = False,
             grad_bits: Optional[int] = None) -> Union[Term, nn.Module]:
    """The QNN version of a network (see the module docstring); a bound module
    gives a bound module that keeps every weight whose name and shape match.

    >>> from operad import ops, Field, cost
    >>> q = quantize(ops.conv(8) >> ops.conv(8, bias=False) >> ops.conv(4), 1, 2)
    >>> cost(q, Field(3), size=(4, 4)).bops == 1024 * (3*8*9 + 8*4*9) * 16 + 2 * 8*8*9*16
    True
    """
    if isinstance(model_or_term, nn.Module):
        m = model_or_term
        if not hasattr(m, "term"):
            raise TypeError(f"quantize takes a term or a bound operad module; got {type(m).__name__}")
        new = quantize(m.term, w_bits, a_bits, keep_first_last, a_range, log, grad_bits).bind(m.in_type)
        return carry_state(m, new)

    def make(t: Term) -> Term:
        q = dict(w_bits=w_bits, a_bits=a_bits, a_range=tuple(a_range), log=log, grad_bits=grad_bits)
        if isinstance(t, Linear):
            return QuantLinear(out=t.out, bias=t.bias, **q)
        return QuantConv(**conv_args(t), **q)

    return replace_layers(model_or_term, make, keep_first_last)
