"""Rewrites: pure functions from terms to terms, or from bound modules to bound
modules that compute the same function. One pass per file; ``operad.rewrite``
is this package.

=========================  ====================================================
``substitute``             swap one operator for another everywhere
``fuse``                   fold BN into convolutions, merge parallel linear
                           branches (RepVGG)
``remove_residuals``       residual-free deployment form (RMNet)
``to_dendritic``           move ReLUs onto the connections they feed
``to_min``                 residual units to Min blocks (Min-Nets)
``binarize``               convs and linears to BWN/XNOR binary layers
``quantize``               convs and linears to QNN k-bit layers
``pack``                   a trained binary/quantized network's deployment
                           form (sign bits + alpha, k-bit levels + scale, in
                           one store); ``packable_state`` its saved entries
``prune``                  remove filters and every channel coupled to them
                           (``trace_channels`` shows the couplings)
=========================  ====================================================

>>> from operad import ops, rewrite
>>> rewrite.substitute(ops.conv(8) >> ops.relu(), ops.relu, ops.gelu())
conv(8) >> gelu()
"""
from .substitute import matcher, substitute
from .fuse import fuse
from .remove_residuals import remove_residuals
from .to_dendritic import to_dendritic
from .to_min import to_min
from .binarize import binarize
from .quantize import quantize
from .pack import pack, packable_state
from .channels import trace_channels, register_pruner
from .prune import prune, zero_channels, importance_scores, prune_plan, amount_for_macs

__all__ = ["substitute", "matcher", "fuse", "remove_residuals", "to_dendritic", "to_min", "binarize", "quantize",
           "pack", "packable_state", "prune", "trace_channels", "register_pruner", "zero_channels",
           "importance_scores", "prune_plan", "amount_for_macs"]
