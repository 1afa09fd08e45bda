"""Learned and random augmentation policies on the device, batched:
AutoAugment's CIFAR-10 policy (Cubuk et al. 2019), RandAugment (Cubuk et al.
2020) and TrivialAugment (Mueller and Hutter 2021), plus RandomErasing
(Zhong et al. 2020).

The image operations follow PIL (``ImageOps``, ``ImageEnhance``,
``Image.transform`` with nearest resampling) on uint8 batches and are tested
against it; float batches in [0, 1] take the same path on the scale 0..255
without the rounding after each operation. Every random draw comes from the
caller's generator (seeded by ``(seed, step)``) for the whole global batch,
``part`` then selects this rank's rows, as in :mod:`operad.experiments.augment`::

    >>> import torch
    >>> x = torch.randint(0, 256, (8, 3, 32, 32), dtype=torch.uint8)
    >>> pol = Policy("cifar10")
    >>> y = pol(x, torch.Generator().manual_seed(0))
    >>> y.dtype, y.shape
    (torch.uint8, torch.Size([8, 3, 32, 32]))
    >>> torch.equal(y, pol(x, torch.Generator().manual_seed(0)))
    True
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch

__all__ = ["OPS", "Policy", "CIFAR10_POLICY", "apply_op", "random_erasing", "affine_nearest", "magnitude"]

FILL = 128.0  # AutoAugment's reference code fills uncovered pixels with grey (128, 128, 128)


# ----------------------------------------------------------------------------- the image operations
# Each takes x: float (n, C, H, W) on the scale 0..255 and v: (n,) magnitudes (signed where it matters).

def affine_nearest(x: torch.Tensor, coeffs: torch.Tensor, fill: float = FILL) -> torch.Tensor:
    """PIL's ``Image.transform(size, AFFINE, (a, b, c, d, e, f), NEAREST)`` per
    sample: output pixel (i, j) takes the input at ``floor(a (j + .5) + b (i + .5) + c)``,
    ``floor(d (j + .5) + e (i + .5) + f)``, or ``fill`` outside. ``coeffs``: (n, 6)."""
    n, C, H, W = x.shape
    dev = x.device
    cx = torch.arange(W, device=dev, dtype=torch.float64) + 0.5
    cy = torch.arange(H, device=dev, dtype=torch.float64) + 0.5
    a, b, c, d, e, f = (coeffs.to(dev, torch.float64)[:, k, None, None] for k in range(6))
    xs = torch.floor(a * cx[None, None, :] + b * cy[None, :, None] + c).long()
    ys = torch.floor(d * cx[None, None, :] + e * cy[None, :, None] + f).long()
    inside = (xs >= 0) & (xs < W) & (ys >= 0) & (ys < H)
    flat = (ys.clamp(0, H - 1) * W + xs.clamp(0, W - 1)).view(n, 1, H * W).expand(n, C, H * W)
    out = torch.gather(x.reshape(n, C, H * W), 2, flat).view(n, C, H, W)
    return torch.where(inside[:, None], out, torch.full_like(out, fill))


def _coeffs(*cols: torch.Tensor) -> torch.Tensor:
    v = next(c for c in cols if isinstance(c, torch.Tensor)).double()
    return torch.stack([c.double() if isinstance(c, torch.Tensor) else torch.full_like(v, float(c)) for c in cols], 1)


def _shear_x(x, v):
    return affine_nearest(x, _coeffs(1.0, v, 0.0, 0.0, 1.0, 0.0))


def _shear_y(x, v):
    return affine_nearest(x, _coeffs(1.0, 0.0, 0.0, v, 1.0, 0.0))


def _translate_x(x, v):
    return affine_nearest(x, _coeffs(1.0, 0.0, v, 0.0, 1.0, 0.0))


def _translate_y(x, v):
    return affine_nearest(x, _coeffs(1.0, 0.0, 0.0, 0.0, 1.0, v))


def _rotate(x, v):
    """``Image.rotate(v)`` (counter-clockwise degrees, about the centre, nearest)."""
    H, W = x.shape[-2:]
    t = -v.double() * math.pi / 180
    cos, sin = torch.round(torch.cos(t), decimals=15), torch.round(torch.sin(t), decimals=15)  # as PIL
    cx, cy = W / 2.0, H / 2.0
    c = cos * -cx + sin * -cy + cx
    f = -sin * -cx + cos * -cy + cy
    return affine_nearest(x, torch.stack([cos, sin, c, -sin, cos, f], 1))


def _gray(x: torch.Tensor) -> torch.Tensor:
    """PIL's ``convert("L")``: ``(19595 R + 38470 G + 7471 B + 0x8000) >> 16`` (n, 1, H, W)."""
    if x.shape[1] == 1:
        return x
    r, g, b = x[:, 0:1], x[:, 1:2], x[:, 2:3]
    return torch.floor((r * 19595 + g * 38470 + b * 7471 + 32768) / 65536)


def _blend(degenerate: torch.Tensor, x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """PIL's ``Image.blend``: ``degenerate + factor (x - degenerate)``, clipped, truncated."""
    f = factor.to(x.dtype).view(-1, 1, 1, 1)
    return torch.trunc((degenerate + f * (x - degenerate)).clamp(0, 255))


def _brightness(x, v):
    return _blend(torch.zeros_like(x), x, 1.0 + v)


def _color(x, v):
    return _blend(_gray(x).expand_as(x), x, 1.0 + v)


def _contrast(x, v):
    mean = torch.floor(_gray(x).mean((1, 2, 3), keepdim=True) + 0.5)
    return _blend(mean.expand_as(x), x, 1.0 + v)


def _sharpness(x, v):
    """Blend with ``ImageFilter.SMOOTH`` (3x3 kernel 1 1 1 / 1 5 1 / 1 1 1, over 13;
    the border keeps its pixels)."""
    n, C, H, W = x.shape
    k = torch.ones(3, 3, dtype=x.dtype, device=x.device)
    k[1, 1] = 5.0
    k = (k / 13.0).expand(C, 1, 3, 3)
    smooth = torch.nn.functional.conv2d(x, k, groups=C)
    smooth = torch.floor(smooth + 0.5).clamp(0, 255)
    degenerate = x.clone()
    degenerate[:, :, 1:-1, 1:-1] = smooth
    return _blend(degenerate, x, 1.0 + v)


def _posterize(x, v):
    """Keep the top ``bits = v`` bits of every 8-bit value."""
    q = torch.pow(2.0, 8 - v.to(x.dtype)).view(-1, 1, 1, 1)
    return torch.floor(torch.floor(x) / q) * q


def _solarize(x, v):
    """Invert every value at or above the threshold ``v``."""
    return torch.where(x < v.to(x.dtype).view(-1, 1, 1, 1), x, 255.0 - x)


def _autocontrast(x, v):
    """``ImageOps.autocontrast``: per channel, stretch [min, max] to [0, 255]
    (truncating, in double precision as PIL's lookup table is built)."""
    xd = x.double()
    lo = xd.amin((2, 3), keepdim=True)
    hi = xd.amax((2, 3), keepdim=True)
    scale = torch.full_like(lo, 255.0) / (hi - lo).clamp_min(1.0)  # scalar / tensor rounds differently
    out = torch.trunc((xd * scale - lo * scale).clamp(0, 255))
    return torch.where(hi > lo, out, xd).to(x.dtype)


def _equalize(x, v):
    """``ImageOps.equalize``: the per-channel histogram lookup table of PIL, exactly."""
    n, C, H, W = x.shape
    xi = x.round().clamp(0, 255).long().reshape(n * C, H * W)
    hist = torch.zeros(n * C, 256, dtype=torch.long, device=x.device).scatter_add_(1, xi, torch.ones_like(xi))
    levels = torch.arange(256, device=x.device)
    last = torch.where(hist > 0, levels, torch.full_like(levels, -1)).amax(1, keepdim=True)
    step = (H * W - hist.gather(1, last)) // 255
    cum = torch.cumsum(hist, 1) - hist
    lut = ((step // 2 + cum) // step.clamp_min(1)).clamp(max=255)
    lut = torch.where(step > 0, lut, levels.expand_as(lut))  # one level only, or too few pixels: unchanged
    return lut.gather(1, xi).view(n, C, H, W).to(x.dtype)


def _invert(x, v):
    return 255.0 - x


def _identity(x, v):
    return x


OPS: Dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "Identity": _identity, "ShearX": _shear_x, "ShearY": _shear_y, "TranslateX": _translate_x,
    "TranslateY": _translate_y, "Rotate": _rotate, "Brightness": _brightness, "Color": _color,
    "Contrast": _contrast, "Sharpness": _sharpness, "Posterize": _posterize, "Solarize": _solarize,
    "AutoContrast": _autocontrast, "Equalize": _equalize, "Invert": _invert,
}
SIGNED = {"ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate", "Brightness", "Color", "Contrast", "Sharpness"}


def magnitude(name: str, bin_: torch.Tensor, bins: int, size: Tuple[int, int], wide: bool = False) -> torch.Tensor:
    """The magnitude of ``name`` at (integer) ``bin_`` of ``bins``: torchvision's
    spaces (AutoAugment / RandAugment, or TrivialAugment's ``wide`` ones).

    >>> magnitude("Rotate", torch.tensor([9]), 10, (32, 32)).item()
    30.0
    >>> magnitude("Posterize", torch.tensor([0, 9]), 10, (32, 32)).tolist()
    [8.0, 4.0]
    """
    H, W = size
    t = bin_.double() / max(bins - 1, 1)
    top = {"ShearX": 0.3, "ShearY": 0.3, "TranslateX": 150.0 / 331.0 * W, "TranslateY": 150.0 / 331.0 * H,
           "Rotate": 30.0, "Brightness": 0.9, "Color": 0.9, "Contrast": 0.9, "Sharpness": 0.9}
    if wide:
        top.update(ShearX=0.99, ShearY=0.99, TranslateX=32.0, TranslateY=32.0, Rotate=135.0, Brightness=0.99,
                   Color=0.99, Contrast=0.99, Sharpness=0.99)
    if name in top:
        return t * top[name]
    if name == "Posterize":
        return 8.0 - torch.round(bin_.double() / ((bins - 1) / (6.0 if wide else 4.0)))
    if name == "Solarize":
        return 255.0 * (1.0 - t)
    return torch.zeros_like(t)


def apply_op(x: torch.Tensor, name: str, v: torch.Tensor) -> torch.Tensor:
    """One named operation on a uint8 batch (PIL semantics: a uint8 result) or a
    float batch in [0, 1]; ``v`` the per-sample magnitudes.

    >>> apply_op(torch.full((1, 3, 2, 2), 200, dtype=torch.uint8), "Invert", torch.zeros(1))[0, 0, 0, 0].item()
    55
    """
    is_uint8 = x.dtype == torch.uint8
    y = OPS[name](x.float() if is_uint8 else x * 255.0, v.to(x.device))
    return y.round().clamp(0, 255).to(torch.uint8) if is_uint8 else y / 255.0


# ----------------------------------------------------------------------------- policies

CIFAR10_POLICY: Tuple[Tuple[Tuple[str, float, Optional[int]], ...], ...] = (
    (("Invert", 0.1, None), ("Contrast", 0.2, 6)), (("Rotate", 0.7, 2), ("TranslateX", 0.3, 9)),
    (("Sharpness", 0.8, 1), ("Sharpness", 0.9, 3)), (("ShearY", 0.5, 8), ("TranslateY", 0.7, 9)),
    (("AutoContrast", 0.5, None), ("Equalize", 0.9, None)), (("ShearY", 0.2, 7), ("Posterize", 0.3, 7)),
    (("Color", 0.4, 3), ("Brightness", 0.6, 7)), (("Sharpness", 0.3, 9), ("Brightness", 0.7, 9)),
    (("Equalize", 0.6, None), ("Equalize", 0.5, None)), (("Contrast", 0.6, 7), ("Sharpness", 0.6, 5)),
    (("Color", 0.7, 7), ("TranslateX", 0.5, 8)), (("Equalize", 0.3, None), ("AutoContrast", 0.4, None)),
    (("TranslateY", 0.4, 3), ("Sharpness", 0.2, 6)), (("Brightness", 0.9, 6), ("Color", 0.2, 8)),
    (("Solarize", 0.5, 2), ("Invert", 0.0, None)), (("Equalize", 0.2, None), ("AutoContrast", 0.6, None)),
    (("Equalize", 0.2, None), ("Equalize", 0.6, None)), (("Color", 0.9, 9), ("Equalize", 0.6, None)),
    (("AutoContrast", 0.8, None), ("Solarize", 0.2, 8)), (("Brightness", 0.1, 3), ("Color", 0.7, 0)),
    (("Solarize", 0.4, 5), ("AutoContrast", 0.9, None)), (("TranslateY", 0.9, 9), ("TranslateY", 0.7, 9)),
    (("AutoContrast", 0.9, None), ("Solarize", 0.2, 3)), (("Equalize", 0.8, None), ("Invert", 0.1, None)),
    (("TranslateY", 0.7, 9), ("AutoContrast", 0.9, None)),
)
"""AutoAugment's CIFAR-10 policy (Cubuk et al. 2019, as torchvision lists it):
25 sub-policies of two (operation, probability, magnitude bin of 10)."""

RAND_OPS = ("Identity", "ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate", "Brightness", "Color",
            "Contrast", "Sharpness", "Posterize", "Solarize", "AutoContrast", "Equalize")


def _sel(t: torch.Tensor, part: Optional[slice]) -> torch.Tensor:
    return t if part is None else t[part]


def _apply_rows(x: torch.Tensor, names: Sequence[str], which: torch.Tensor, mags: torch.Tensor,
                use: torch.Tensor) -> torch.Tensor:
    """For every op index k, apply ``names[k]`` with ``mags`` to the rows where
    ``which == k`` and ``use`` holds (one call per operation, not per image)."""
    out = x.clone()
    for k, name in enumerate(names):
        rows = ((which == k) & use).nonzero().flatten()
        if rows.numel() and name != "Identity":
            out[rows] = apply_op(x[rows], name, mags[rows])
    return out


@dataclass
class Policy:
    """``kind`` = ``"cifar10"`` (AutoAugment), ``"rand"`` (RandAugment with
    ``n`` operations at magnitude ``m`` of 31 bins) or ``"trivial"``
    (TrivialAugmentWide: one operation at a uniform magnitude of 31 bins).
    Called on a uint8 (or [0, 1] float) batch with a generator; draws are made
    for ``total`` samples and ``part`` selects this batch's rows."""

    kind: str = "cifar10"
    n: int = 2
    m: int = 9

    def __post_init__(self):
        if self.kind not in ("cifar10", "rand", "trivial"):
            raise ValueError(f"augmentation policy must be cifar10, rand or trivial; got {self.kind!r}")

    def __call__(self, x: torch.Tensor, gen: torch.Generator, total: Optional[int] = None,
                 part: Optional[slice] = None) -> torch.Tensor:
        n = total or x.shape[0]
        dev = x.device
        size = tuple(x.shape[-2:])

        def rand(*shape):
            return _sel(torch.rand(*shape, generator=gen, device=dev), part)

        def randint(hi, *shape):
            return _sel(torch.randint(0, hi, shape, generator=gen, device=dev), part)

        if self.kind == "cifar10":
            sub = randint(len(CIFAR10_POLICY), n)
            for stage in range(2):
                apply, sign = rand(n), rand(n) < 0.5
                names = [p[stage][0] for p in CIFAR10_POLICY]
                prob = torch.tensor([p[stage][1] for p in CIFAR10_POLICY], device=dev)[sub]
                mags = torch.stack([self._mag(p[stage][0], p[stage][2] or 0, 10, size, sign) for p in CIFAR10_POLICY])
                mags = mags.gather(0, sub[None]).squeeze(0)
                x = _apply_rows(x, names, sub, mags, apply < prob)
            return x
        rounds = self.n if self.kind == "rand" else 1
        for _ in range(rounds):
            which, sign = randint(len(RAND_OPS), n), rand(n) < 0.5
            bins = torch.full_like(which, self.m) if self.kind == "rand" else randint(31, n)
            mags = torch.stack([self._mag(o, bins, 31, size, sign, self.kind == "trivial") for o in RAND_OPS])
            x = _apply_rows(x, RAND_OPS, which, mags.gather(0, which[None]).squeeze(0), torch.ones_like(sign))
        return x

    @staticmethod
    def _mag(name, bin_, bins, size, sign, wide=False) -> torch.Tensor:
        b = bin_ if isinstance(bin_, torch.Tensor) else torch.full(sign.shape, int(bin_), device=sign.device)
        v = magnitude(name, b, bins, size, wide).to(sign.device)
        return torch.where(sign, -v, v) if name in SIGNED else v


# ----------------------------------------------------------------------------- RandomErasing

def random_erasing(x: torch.Tensor, gen: torch.Generator, p: float = 0.5, area: Tuple[float, float] = (0.02, 0.4),
                   ratio: Tuple[float, float] = (0.3, 1 / 0.3), total: Optional[int] = None,
                   part: Optional[slice] = None, attempts: int = 10) -> torch.Tensor:
    """RandomErasing (Zhong et al. 2020) on a normalised float batch: with
    probability ``p`` per image, a rectangle of ``area`` (fraction of the
    image) and aspect ``ratio`` (log-uniform) at a uniform position is filled
    with standard normal noise. As in the paper, up to ``attempts`` draws are
    made until one fits; none fitting leaves the image unchanged.

    >>> y = random_erasing(torch.zeros(4, 3, 16, 16), torch.Generator().manual_seed(0), p=1.0)
    >>> bool((y != 0).any(dim=(1, 2, 3)).all())
    True
    """
    n = total or x.shape[0]
    B, C, H, W = x.shape
    dev = x.device

    def rand(*shape):
        return _sel(torch.rand(*shape, generator=gen, device=dev), part)

    use = rand(n) < p
    s = (area[0] + (area[1] - area[0]) * rand(n, attempts)) * (H * W)
    r = torch.exp(math.log(ratio[0]) + (math.log(ratio[1]) - math.log(ratio[0])) * rand(n, attempts))
    h, w = torch.round(torch.sqrt(s * r)).long(), torch.round(torch.sqrt(s / r)).long()
    fits = (h < H) & (w < W) & (h > 0) & (w > 0)
    first = torch.where(fits, torch.arange(attempts, device=dev), torch.full_like(h, attempts)).amin(1)
    use = use & (first < attempts)
    k = first.clamp(max=attempts - 1)[:, None]
    h, w = h.gather(1, k)[:, 0], w.gather(1, k)[:, 0]
    u = rand(n, 2)
    top = torch.floor(u[:, 0] * (H - h + 1).clamp_min(1)).long()
    left = torch.floor(u[:, 1] * (W - w + 1).clamp_min(1)).long()
    noise = _sel(torch.randn(n, C, H, W, generator=gen, device=dev), part).to(x.dtype)
    ys = torch.arange(H, device=dev)[None, :, None]
    xs = torch.arange(W, device=dev)[None, None, :]
    box = (ys >= top[:, None, None]) & (ys < (top + h)[:, None, None]) & \
          (xs >= left[:, None, None]) & (xs < (left + w)[:, None, None]) & use[:, None, None]
    return torch.where(box[:, None], noise, x)
