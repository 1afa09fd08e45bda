"""Bit packing and the XNOR/popcount convolution on the CPU.

Storage packs ``k``-bit integers into one stream of bytes (:func:`pack_bits`,
:func:`unpack_bits`): signs eight to a byte, 2-bit levels four to a byte, 3-bit
levels across byte boundaries, ``ceil(n k / 8)`` bytes for ``n`` values.
The XNOR convolution packs channels 64 to an ``int64`` word: for ``+-1``
vectors ``a``, ``w`` of length ``n``, ``a . w = n - 2 popcount(a xor w)``, so a
3x3 convolution over 256 channels takes 36 xors and popcounts per output
instead of 2304 multiply-adds. Zero padding (a 0 that is neither +1 nor -1) is
packed as -1 and corrected exactly by a one-channel convolution of the padding
mask with the channel sums of ``sign(W)``.

>>> w = torch.randn(4, 3, 3, 3).sign()
>>> x = torch.randn(2, 3, 8, 8)
>>> ref = torch.nn.functional.conv2d(torch.where(x >= 0, 1.0, -1.0), w, padding=1)
>>> bool((xnor_conv2d(x, pack_words(w > 0), 3, padding=(1, 1)) == ref).all())
True
"""
from __future__ import annotations

from typing import Tuple

import torch
import torch.nn.functional as F

__all__ = ["pack_bits", "unpack_bits", "to_unsigned", "to_signed", "pack_words", "xnor_conv2d", "popcount64",
           "load_cpp", "cpp_loaded", "correction_kernel"]

_SHIFTS8 = torch.arange(8, dtype=torch.uint8)
_SHIFTS64 = torch.arange(64, dtype=torch.int64)
_M1, _M2, _M4, _H01 = 0x5555555555555555, 0x3333333333333333, 0x0F0F0F0F0F0F0F0F, 0x0101010101010101


def pack_bits(values: torch.Tensor, k: int) -> torch.Tensor:
    """Integers in ``[0, 2**k)`` (any shape, read flattened) as a ``uint8`` stream of
    ``ceil(numel * k / 8)`` bytes: value ``i`` takes bits ``i k .. i k + k - 1``
    (least significant first), bit ``j`` of the stream is bit ``j % 8`` of byte ``j // 8``.

    >>> pack_bits(torch.tensor([1, 2, 3, 0, 3]), 2).tolist()   # 4 values to a byte
    [57, 3]
    """
    if not 1 <= k <= 32:
        raise ValueError(f"pack_bits packs 1..32 bits per value; got k={k}")
    v = values.reshape(-1).to(torch.int64)
    if v.numel() and (int(v.min()) < 0 or int(v.max()) >= 1 << k):
        raise ValueError(f"pack_bits: values must lie in [0, 2**{k}); got [{int(v.min())}, {int(v.max())}]")
    b = v.unsqueeze(1) >> torch.arange(k, device=v.device) if k > 1 else v.unsqueeze(1)
    b = (b & 1).to(torch.uint8).reshape(-1)
    b = F.pad(b, (0, -b.numel() % 8)).view(-1, 8)
    return (b << _SHIFTS8.to(b.device)).sum(-1, dtype=torch.uint8)


def unpack_bits(packed: torch.Tensor, k: int, n: int) -> torch.Tensor:
    """The first ``n`` ``k``-bit values of a :func:`pack_bits` stream, as ``int64`` ``(n,)``."""
    if packed.numel() * 8 < n * k:
        raise ValueError(f"unpack_bits: {packed.numel()} bytes hold fewer than {n} values of {k} bits")
    b = ((packed.reshape(-1, 1) >> _SHIFTS8.to(packed.device)) & 1).reshape(-1)[:n * k].to(torch.int64)
    if k == 1:
        return b
    return (b.view(n, k) << torch.arange(k, device=b.device)).sum(1)


def to_unsigned(q: torch.Tensor, k: int) -> torch.Tensor:
    """Signed integers in ``[-2**(k-1), 2**(k-1))`` as their ``k``-bit two's complement."""
    q = q.to(torch.int64)
    lo, hi = -(1 << (k - 1)), (1 << (k - 1)) - 1
    if q.numel() and (int(q.min()) < lo or int(q.max()) > hi):
        raise ValueError(f"to_unsigned: {k}-bit signed integers lie in [{lo}, {hi}]; "
                         f"got [{int(q.min())}, {int(q.max())}]")
    return q & ((1 << k) - 1)


def to_signed(u: torch.Tensor, k: int) -> torch.Tensor:
    """The inverse of :func:`to_unsigned`."""
    return u - (((u >> (k - 1)) & 1) << k)


def _pack_last(b: torch.Tensor) -> torch.Tensor:
    """``(..., C)`` booleans -> ``(..., ceil(C/64))`` int64 words: bit ``j`` of word
    ``i`` is element ``64i + j`` (eight bits to a byte first, then the bytes of
    each word read as one little-endian int64); missing elements are 0."""
    c = b.shape[-1]
    b = F.pad(b.to(torch.uint8), (0, -c % 64))
    byte = (b.view(*b.shape[:-1], -1, 8) << _SHIFTS8.to(b.device)).sum(-1, dtype=torch.uint8)
    if byte.device.type == "cpu" and not _little_endian():
        raise RuntimeError("bit packing assumes a little-endian CPU")
    return byte.contiguous().view(torch.int64)


def _little_endian() -> bool:
    import sys
    return sys.byteorder == "little"


def _pack_channels(b: torch.Tensor) -> torch.Tensor:
    """``(N, C, ...)`` booleans -> ``(N, ceil(C/64), ...)`` int64 words of the channels."""
    if b.dim() == 2:
        return _pack_last(b)
    return _pack_last(b.movedim(1, -1)).movedim(-1, 1)


def pack_words(positive: torch.Tensor) -> torch.Tensor:
    """Weights ``(O, C, kh, kw)`` as booleans (``W > 0``) -> int64 ``(O, ceil(C/64), kh, kw)``."""
    return _pack_channels(positive).contiguous()


def correction_kernel(w_words: torch.Tensor, channels: int, dtype=torch.float32) -> torch.Tensor:
    """``sum_c sign(W)[o, c]`` as ``(O, 1, kh, kw)``: what zero padding adds back (see :func:`xnor_conv2d`)."""
    return _unpack_words(w_words, channels).sum(1, keepdim=True).to(dtype)


def popcount64(x: torch.Tensor) -> torch.Tensor:
    """The number of set bits of every int64 (SWAR: 8 element-wise operations)."""
    x = x - ((x >> 1) & _M1)
    x = (x & _M2) + ((x >> 2) & _M2)
    x = (x + (x >> 4)) & _M4
    return (x * _H01) >> 56


_CPP_SRC = r"""
#include <torch/extension.h>
#include <ATen/Parallel.h>
torch::Tensor mismatches(torch::Tensor a, torch::Tensor w) {
  a = a.contiguous(); w = w.contiguous();
  const int64_t R = a.size(0), K = a.size(1), O = w.size(0);
  auto out = torch::empty({R, O}, a.options());
  const uint64_t* A = reinterpret_cast<const uint64_t*>(a.data_ptr<int64_t>());
  const uint64_t* W = reinterpret_cast<const uint64_t*>(w.data_ptr<int64_t>());
  int64_t* Y = out.data_ptr<int64_t>();
  at::parallel_for(0, R, 16, [&](int64_t b, int64_t e) {
    for (int64_t r = b; r < e; ++r) {
      const uint64_t* ar = A + r * K;
      for (int64_t o = 0; o < O; ++o) {
        const uint64_t* wo = W + o * K;
        int64_t s = 0;
        for (int64_t k = 0; k < K; ++k) s += __builtin_popcountll(ar[k] ^ wo[k]);
        Y[r * O + o] = s;
      }
    }
  });
  return out;
}

// out[(r / L), o, (r % L)] = n - 2 * popcount(a[r] ^ w[o]): the conv output in (B, O, L) layout
void xnor_dot_into(torch::Tensor a, torch::Tensor w, torch::Tensor out, int64_t n, int64_t L) {
  a = a.contiguous(); w = w.contiguous();
  const int64_t R = a.size(0), K = a.size(1), O = w.size(0);
  const uint64_t* A = reinterpret_cast<const uint64_t*>(a.data_ptr<int64_t>());
  const uint64_t* W = reinterpret_cast<const uint64_t*>(w.data_ptr<int64_t>());
  AT_DISPATCH_FLOATING_TYPES(out.scalar_type(), "xnor_dot_into", [&] {
    scalar_t* Y = out.data_ptr<scalar_t>();
    at::parallel_for(0, R, 16, [&](int64_t b, int64_t e) {
      for (int64_t r = b; r < e; ++r) {
        const uint64_t* ar = A + r * K;
        scalar_t* yr = Y + (r / L) * O * L + (r % L);
        for (int64_t o = 0; o < O; ++o) {
          const uint64_t* wo = W + o * K;
          int64_t s = 0;
          for (int64_t k = 0; k < K; ++k) s += __builtin_popcountll(ar[k] ^ wo[k]);
          yr[o * L] = static_cast<scalar_t>(n - 2 * s);
        }
      }
    });
  });
}
"""
_CPP = None


def load_cpp(verbose: bool = False) -> bool:
    """Build (once; cached by torch under ``~/.cache/torch_extensions``) and use a
    C++ xor/popcount kernel (``__builtin_popcountll``, ``-march=native``). Returns
    whether it loaded; without a compiler the pure-torch kernel stays in use."""
    global _CPP
    if _CPP is None:
        try:
            from torch.utils.cpp_extension import load_inline
            _CPP = load_inline("operad_xnor_popcount", cpp_sources=_CPP_SRC, functions=["mismatches", "xnor_dot_into"],
                               extra_cflags=["-O3", "-march=native"], verbose=verbose)
        except Exception as e:  # no compiler, no ninja: stay on the torch kernel
            if verbose:
                print(f"operad: C++ popcount kernel unavailable ({e}); using torch bit operations")
            _CPP = False
    return bool(_CPP)


def cpp_loaded() -> bool:
    """Whether :func:`load_cpp` has loaded the C++ kernel."""
    return bool(_CPP)


def _mismatches(a: torch.Tensor, w: torch.Tensor, rows: int, backend: str = "auto") -> torch.Tensor:
    """``sum_k popcount(a[r, k] ^ w[o, k])`` for rows of ``a`` (R, K) and ``w`` (O, K).

    ``backend``: ``"torch"`` (SWAR popcount with torch bit operations, in row
    blocks), ``"cpp"`` (:func:`load_cpp`), or ``"auto"`` (the C++ kernel once loaded)."""
    if backend == "cpp" or (backend == "auto" and _CPP):
        if not load_cpp():
            raise RuntimeError("the C++ popcount kernel did not build; use backend='torch'")
        return _CPP.mismatches(a, w)
    out = torch.empty(a.shape[0], w.shape[0], dtype=torch.int64)
    for i in range(0, a.shape[0], rows):
        blk = a[i:i + rows].unsqueeze(1) ^ w.unsqueeze(0)
        out[i:i + rows] = popcount64(blk).sum(-1)
    return out


def xnor_conv2d(x: torch.Tensor, w_words: torch.Tensor, channels: int, stride: int = 1,
                padding: Tuple[int, int] = (0, 0), dilation: int = 1, padding_mode: str = "zeros",
                budget: int = 1 << 22, backend: str = "auto", wsum: torch.Tensor = None) -> torch.Tensor:
    """``conv2d(sign(x), sign(W))`` with xor and popcount; exact integers as ``x.dtype``.

    ``w_words`` is :func:`pack_words` of ``W > 0``; ``channels`` the real input
    channel count; ``padding`` is per side. ``budget`` bounds the int64 words of
    one xor block (rows x filters x words) of the torch kernel; ``backend`` as in
    :func:`_mismatches` (``"torch"``, ``"cpp"`` or ``"auto"``); ``wsum``, the
    :func:`correction_kernel` of the weights, saves recomputing it per call.
    """
    o, cw, kh, kw = w_words.shape
    b, c, h, wd = x.shape
    ph, pw = padding
    s = x >= 0
    if padding_mode != "zeros" and (ph or pw):
        s = F.pad(s.to(x.dtype), (pw, pw, ph, ph), mode=padding_mode) > 0
        ph = pw = 0
    words = F.pad(_pack_last(s.permute(0, 2, 3, 1)), (0, 0, pw, pw, ph, ph))  # B, H', W', Cw; zero pads pack as -1
    eh, ew = dilation * (kh - 1) + 1, dilation * (kw - 1) + 1
    p = words.unfold(1, eh, stride).unfold(2, ew, stride)[..., ::dilation, ::dilation]  # B, Ho, Wo, Cw, kh, kw
    ho, wo = p.shape[1], p.shape[2]
    a = p.reshape(b * ho * wo, cw * kh * kw)
    wmat = w_words.reshape(o, cw * kh * kw)
    n = channels * kh * kw
    if (backend == "cpp" or (backend == "auto" and _CPP)) and load_cpp() and x.dtype in (torch.float32, torch.float64):
        dot = torch.empty(b, o, ho, wo, dtype=x.dtype)
        _CPP.xnor_dot_into(a, wmat, dot, n, ho * wo)
    else:
        rows = max(1, budget // max(1, o * wmat.shape[1]))
        mism = _mismatches(a, wmat, rows, "torch")
        dot = (n - 2 * mism).to(x.dtype).view(b, ho, wo, o).permute(0, 3, 1, 2)
    if ph or pw:
        mask = F.pad(torch.zeros(1, 1, h, wd, dtype=x.dtype), (pw, pw, ph, ph), value=1.0)
        if wsum is None:
            wsum = correction_kernel(w_words, channels)
        dot = dot + F.conv2d(mask, wsum.to(x.dtype), stride=stride, dilation=dilation)
    return dot.contiguous()


def _unpack_words(w_words: torch.Tensor, channels: int) -> torch.Tensor:
    """+-1 weights ``(O, channels, kh, kw)`` from :func:`pack_words` words."""
    o, cw, kh, kw = w_words.shape
    bits = (w_words.unsqueeze(2) >> _SHIFTS64.view(1, 1, 64, 1, 1)) & 1
    bits = bits.reshape(o, cw * 64, kh, kw)[:, :channels]
    return bits * 2 - 1
