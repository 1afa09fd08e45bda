"""Group actions on fields: the transforms equivariance is checked under.

=============  ==================================================================
``shift``      circular shift by ``(dy, dx)`` pixels (``torch.roll``)
``rot90``      rotation by ``k`` quarter turns (``torch.rot90`` over (H, W):
               counter-clockwise as an image is displayed)
``flip``       mirror left-right
``rotation``   rotation by an angle in radians, counter-clockwise as displayed,
               by bilinear interpolation; compare inside a disk
=============  ==================================================================

On a complex field with rotation orders, a rotation by ``theta`` also
multiplies every channel of order m by ``exp(i m theta)``: that is how a
circular-harmonic feature map transforms. A flip of a field with non-zero
orders is not defined here (it maps order m to -m).
"""
from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F

from ..operators.algebra.field import Field

TRANSFORMS = ("shift", "rot90", "flip", "rotation")

__all__ = ["TRANSFORMS", "act", "rotate", "disk_mask"]


def rotate(x: torch.Tensor, angle: float) -> torch.Tensor:
    """Rotate (B, C, H, W) by ``angle`` radians counter-clockwise (bilinear, zeros outside)."""
    b, _, h, w = x.shape
    c, s = math.cos(angle), math.sin(angle)
    # grid_sample maps output coords to input coords: the inverse rotation.
    # Normalised coords have y pointing down, so a counter-clockwise display
    # rotation is a clockwise one in (x, y).
    theta = torch.tensor([[c, -s, 0.0], [s, c, 0.0]], dtype=x.dtype, device=x.device)
    if h != w:
        theta[0, 1] *= h / w
        theta[1, 0] *= w / h
    grid = F.affine_grid(theta.expand(b, 2, 3), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def disk_mask(h: int, w: int, radius_fraction: float = 0.45, taper: float = 0.0,
              dtype=torch.float32, device=None) -> torch.Tensor:
    """A (H, W) mask of the centred disk of radius ``radius_fraction * min(H, W)``."""
    yy = torch.arange(h, dtype=dtype, device=device) - (h - 1) / 2
    xx = torch.arange(w, dtype=dtype, device=device) - (w - 1) / 2
    r = torch.sqrt(yy[:, None] ** 2 + xx[None, :] ** 2)
    R = radius_fraction * min(h, w)
    if taper <= 0:
        return (r <= R).to(dtype)
    return torch.clamp((R - r) / taper, 0.0, 1.0)


def _phase(x: torch.Tensor, field: Field, angle: float) -> torch.Tensor:
    if not field.is_complex or not field.orders or not any(field.orders):
        return x
    orders = torch.tensor(field.channel_orders(), dtype=x.dtype, device=x.device)
    c, s = torch.cos(orders * angle), torch.sin(orders * angle)
    shape = (1, -1) + (1,) * (x.dim() - 2)
    c, s = c.view(shape), s.view(shape)
    re, im = x[:, 0::2], x[:, 1::2]
    out = torch.stack((re * c - im * s, re * s + im * c), dim=2)
    return out.reshape(x.shape)


def act(x: torch.Tensor, field: Field, transform: str, amount=None) -> torch.Tensor:
    """Apply ``transform`` to a tensor of type ``field``.

    ``amount``: ``(dy, dx)`` for shift, quarter turns for rot90, radians for
    rotation; ignored for flip. Rank-0 fields are moved only by their orders'
    phases (invariant features do not move at all).
    """
    if transform not in TRANSFORMS:
        raise ValueError(f"unknown transform {transform!r}; choose from {TRANSFORMS}")
    spatial = field.rank == 2
    if transform == "shift":
        return torch.roll(x, tuple(amount), dims=(-2, -1)) if spatial else x
    if transform == "flip":
        if field.orders and any(field.orders):
            raise ValueError(f"a flip of {field!r} is not defined (it maps order m to -m)")
        return torch.flip(x, dims=(-1,)) if spatial else x
    if transform == "rot90":
        k = int(amount) % 4
        y = torch.rot90(x, k, dims=(-2, -1)) if spatial else x
        return _phase(y, field, k * math.pi / 2)
    angle = float(amount)
    y = rotate(x, angle) if spatial else x
    return _phase(y, field, angle)
