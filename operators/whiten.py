"""Patch whitening: a frozen k x k convolution fitted to data (``patch_whiten``).

The filters are the eigenvectors ``v_i`` of the second-moment matrix ``C`` of
the k x k patches of the input, scaled by ``1 / sqrt(lambda_i + eps)``, once
with a plus and once with a minus sign (so a following ReLU/GELU keeps both
halves of every whitened coordinate). A field of ``c`` channels becomes one of
``2 c k^2`` channels; the convolution is ``valid`` (the size shrinks by
``k - 1``). On the patches it was fitted to, the first ``c k^2`` output
channels have second-moment matrix ``diag(lambda_i / (lambda_i + eps))``,
which is the identity up to ``eps``.

The filters and eigenvalues are buffers (frozen, in the state dict, never seen
by an optimiser); only the optional bias is a parameter. A freshly bound layer
whitens white data (``C = I``: its filters are signed unit impulses) until
:meth:`PatchWhitening.fit` sees real data; the speed recipe
(:func:`operad.experiments.speedrun.init_whitening`) fits it from the first
training images.

Lipschitz bound: each pixel lies in at most ``k^2`` patches and the filter
matrix has orthogonal rows of norm ``(lambda_i + eps)^(-1/2)``, two of each,
so the layer is ``k * sqrt(2 / (lambda_min + eps))``-Lipschitz.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .algebra.field import Field
from .algebra.term import Cost, Term, op, register_family
from .conv import conv_out_size

__all__ = ["PatchWhiten", "PatchWhitening", "patch_whiten", "patch_moments"]


def patch_moments(x: torch.Tensor, k: int) -> torch.Tensor:
    """The (uncentred) second-moment matrix of the k x k patches of ``x``
    (B, C, H, W), in float64: ``(C k^2, C k^2)``, patch entries ordered as a
    conv weight ``(C, k, k)`` flattens.

    >>> patch_moments(torch.ones(1, 1, 3, 3), 2)
    tensor([[1., 1., 1., 1.],
            [1., 1., 1., 1.],
            [1., 1., 1., 1.],
            [1., 1., 1., 1.]], dtype=torch.float64)
    """
    p = F.unfold(x.float(), k)  # (B, C k^2, L)
    p = p.transpose(1, 2).reshape(-1, p.shape[1]).double()
    return p.T @ p / p.shape[0]


class PatchWhitening(nn.Module):
    """The bound patch-whitening layer: buffers ``weight`` (2 C k^2, C, k, k)
    and ``eigenvalues`` (C k^2, descending), an optional trainable ``bias``."""

    def __init__(self, channels: int, k: int, eps: float, bias: bool):
        super().__init__()
        self.channels, self.k, self.eps = channels, k, eps
        d = channels * k * k
        self.register_buffer("eigenvalues", torch.ones(d))
        self.register_buffer("weight", torch.empty(2 * d, channels, k, k))
        self.bias = nn.Parameter(torch.zeros(2 * d)) if bias else None
        self._set(torch.ones(d, dtype=torch.float64), torch.eye(d, dtype=torch.float64))

    @torch.no_grad()
    def _set(self, eigenvalues: torch.Tensor, eigenvectors: torch.Tensor) -> None:
        """``eigenvectors`` holds one eigenvector per column."""
        scaled = (eigenvectors / (eigenvalues + self.eps).sqrt()).T  # one filter per row
        w = torch.cat([scaled, -scaled]).reshape(self.weight.shape)
        self.weight.copy_(w.to(self.weight))
        self.eigenvalues.copy_(eigenvalues.to(self.eigenvalues))

    @torch.no_grad()
    def fit(self, x: torch.Tensor) -> "PatchWhitening":
        """Fit the filters to the patches of ``x`` (B, C, H, W), the inputs this
        layer will see; returns ``self``.

        >>> m = PatchWhitening(3, 2, 5e-4, True).fit(torch.randn(8, 3, 16, 16))
        >>> m.weight.shape, bool((m.eigenvalues[:-1] >= m.eigenvalues[1:]).all())
        (torch.Size([24, 3, 2, 2]), True)
        """
        if x.ndim != 4 or x.shape[1] != self.channels:
            raise ValueError(f"patch_whiten fit expects images (B, {self.channels}, H, W); got {tuple(x.shape)}")
        lam, vec = torch.linalg.eigh(patch_moments(x, self.k))
        lam, vec = lam.flip(0).clamp_min(0.0), vec.flip(1)  # descending; round-off below 0 is 0
        self._set(lam, vec)
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b = self.bias.to(x.dtype) if self.bias is not None else None
        return F.conv2d(x, self.weight.to(x.dtype), b)

    def extra_repr(self) -> str:
        return f"{self.channels}, k={self.k}, eps={self.eps}, bias={self.bias is not None}"


def _examples(draw):
    from hypothesis import strategies as st
    k = draw(st.sampled_from([1, 2, 2, 3]))
    c = draw(st.integers(1, 3))
    term = patch_whiten(k=k, eps=draw(st.sampled_from([5e-4, 1e-2, 0.5])), bias=draw(st.booleans()))
    return term, Field(c), (draw(st.integers(k + 2, 12)), draw(st.integers(k + 2, 12)))


@register_family("patch_whiten", examples=_examples)
@dataclass(frozen=True, repr=False)
class PatchWhiten(Term):
    """Frozen patch whitening of a real field: ``c`` channels -> ``2 c k^2``."""

    k: int = 2
    eps: float = 5e-4
    bias: bool = True
    linear = True  # affine: a convolution plus a bias

    def __post_init__(self):
        if not isinstance(self.k, int) or self.k < 1:
            raise ValueError(f"patch_whiten k must be a positive int; got {self.k!r}")
        if not self.eps > 0:
            raise ValueError(f"patch_whiten eps must be > 0 (it bounds the gain 1/sqrt(lambda + eps)); got {self.eps!r}")

    def out_type(self, t):
        self.require_real(t)
        return Field(2 * t.channels * self.k * self.k)

    def out_size(self, t, size):
        return tuple(conv_out_size(n, self.k, 1, 1, 0) for n in size)

    def cost(self, t, size):
        d = t.channels * self.k * self.k
        ho, wo = self.out_size(t, size)
        return Cost(2 * d if self.bias else 0, 2 * d * d * ho * wo)

    def lipschitz_bound(self, m, size=None):
        lam_min = float(m.eigenvalues.double().min())
        return self.k * math.sqrt(2.0 / (lam_min + self.eps))

    def build(self, t):
        return PatchWhitening(t.channels, self.k, self.eps, self.bias)


@op("patch_whiten")
def patch_whiten(k: int = 2, eps: float = 5e-4, bias: bool = True) -> PatchWhiten:
    """Frozen k x k patch whitening (eigenvectors of the patch covariance scaled
    by ``1/sqrt(lambda + eps)``, plus and minus); fit it with
    ``module.fit(images)`` or the speed recipe's ``init_whitening``.

    >>> from operad import ops, Field
    >>> m = ops.patch_whiten(k=2).bind(Field(3))
    >>> m.out_type, m.weight.shape, m.weight.requires_grad
    (Field(24), torch.Size([24, 3, 2, 2]), False)
    """
    return PatchWhiten(k, eps, bias)
