"""Symbolic facts and numeric verification: costs, Lipschitz bounds, equivariance, layer redundancy."""
from . import cost as _cost_mod, transforms, verify
from .cost import H, W, cost, count
from .summary import Summary, summary
from .redundancy import RedundancyReport, redundancy

__all__ = ["H", "W", "cost", "count", "summary", "Summary", "verify", "transforms", "redundancy", "RedundancyReport"]
