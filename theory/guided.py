"""Guided backpropagation and the deconvnet approach (Springenberg et al. 2015,
"Striving for simplicity: the all convolutional net", section 3.4), for any
model whose non-linearities are ``nn.ReLU`` modules (every operad ``relu()``).

The saliency of an input is the gradient of a class score, except at each
ReLU the backward signal is changed:

- ``"gradient"``: the plain gradient (mask by the forward input);
- ``"deconvnet"``: mask by the sign of the backward signal only (Zeiler & Fergus);
- ``"guided"``: both masks (guided backpropagation).

>>> import torch
>>> from operad.models import create_model
>>> m = create_model("allcnn_c", drop=False).eval()
>>> g = guided_backprop(m, torch.rand(2, 3, 32, 32))
>>> g.shape
torch.Size([2, 3, 32, 32])
"""
from __future__ import annotations

import math
from typing import Optional, Sequence, Union

import torch
from torch import nn

__all__ = ["guided_backprop", "saliency_grid", "save_guided_grid"]


def guided_backprop(model: nn.Module, x: torch.Tensor, target: Optional[Union[int, Sequence[int], torch.Tensor]] = None,
                    mode: str = "guided") -> torch.Tensor:
    """The input saliency of ``target`` (default: each image's top class), same shape as ``x``.

    The model is run in its current mode (call ``.eval()`` first for dropout and BN).
    """
    if mode not in ("guided", "deconvnet", "gradient"):
        raise ValueError(f"mode must be 'guided', 'deconvnet' or 'gradient'; got {mode!r}")
    relus = [m for m in model.modules() if isinstance(m, nn.ReLU)]
    if mode != "gradient" and not relus:
        raise ValueError("guided backpropagation needs nn.ReLU non-linearities; the model has none "
                         "(substituted activations are not guided)")
    hooks = []
    if mode != "gradient":
        fn = _Guided if mode == "guided" else _Deconv

        def hook(module, inp, out):
            return fn.apply(inp[0])  # same value as relu, the modified backward
        hooks = [m.register_forward_hook(hook) for m in relus]
    try:
        x = x.detach().clone().requires_grad_(True)
        y = model(x)
        if y.dim() != 2:
            raise ValueError(f"guided_backprop needs class scores (N, classes); the model gives {tuple(y.shape)}")
        if target is None:
            idx = y.argmax(1)
        elif isinstance(target, int):
            idx = torch.full((y.shape[0],), target, dtype=torch.long)
        else:
            idx = torch.as_tensor(target, dtype=torch.long)
        score = y.gather(1, idx.view(-1, 1).to(y.device)).sum()
        (grad,) = torch.autograd.grad(score, x)
    finally:
        for h in hooks:
            h.remove()
    return grad


class _Guided(torch.autograd.Function):
    """relu forward; backward passes positive signal where the input was positive."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x.clamp(min=0)

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return grad.clamp(min=0) * (x > 0).to(grad.dtype)


class _Deconv(torch.autograd.Function):
    """relu forward; backward passes the positive part of the signal (no forward mask)."""

    @staticmethod
    def forward(ctx, x):
        return x.clamp(min=0)

    @staticmethod
    def backward(ctx, grad):
        return grad.clamp(min=0)


def saliency_grid(maps: torch.Tensor, images: Optional[torch.Tensor] = None, ncol: int = 8) -> torch.Tensor:
    """A (3, H', W') grid in [0, 1]: each map rescaled to its own range (and the
    images above their maps when given)."""
    m = maps.detach().float()
    lo = m.flatten(1).min(1)[0].view(-1, 1, 1, 1)
    hi = m.flatten(1).max(1)[0].view(-1, 1, 1, 1)
    m = (m - lo) / (hi - lo).clamp_min(1e-12)
    if m.shape[1] == 1:
        m = m.expand(-1, 3, -1, -1)
    tiles = list(m)
    if images is not None:
        im = images.detach().float()
        im = (im - im.amin((1, 2, 3), keepdim=True)) / (im.amax((1, 2, 3), keepdim=True)
                                                         - im.amin((1, 2, 3), keepdim=True)).clamp_min(1e-12)
        tiles = [t for pair in zip(im.expand(-1, 3, -1, -1) if im.shape[1] == 1 else im, m) for t in pair]
        ncol = max(2, ncol - ncol % 2)
    n, (c, h, w) = len(tiles), tiles[0].shape
    rows = math.ceil(n / ncol)
    grid = torch.ones(3, rows * (h + 2), ncol * (w + 2))
    for i, t in enumerate(tiles):
        r, q = divmod(i, ncol)
        grid[:, r * (h + 2) + 1:r * (h + 2) + 1 + h, q * (w + 2) + 1:q * (w + 2) + 1 + w] = t
    return grid


def save_guided_grid(model: nn.Module, images: torch.Tensor, path: str, target=None, mode: str = "guided",
                     ncol: int = 8, scale: int = 4) -> str:
    """Compute guided backpropagation for a batch and write a PNG grid (each image
    followed by its map) to ``path``; returns the path."""
    from PIL import Image
    maps = guided_backprop(model, images, target, mode)
    grid = saliency_grid(maps, images, ncol)
    arr = (grid.permute(1, 2, 0).clamp(0, 1) * 255).round().to(torch.uint8).numpy()
    img = Image.fromarray(arr)
    if scale > 1:
        img = img.resize((img.width * scale, img.height * scale), Image.NEAREST)
    img.save(path)
    return path
