"""The dual-tree complex wavelet packet filter bank, precomputed (numpy, float64).

Kingsbury's q-shift low-pass filters ``h0a`` (tree a) below are the published
coefficients as distributed in the ``dtcwt`` package (version 0.14.0, files
``dtcwt/data/qshift_{a,b,c,d,06}.npz``; N. Kingsbury, "Complex wavelets for
shift invariant analysis and filtering of signals", ACHA 2001). The other
filters follow from them exactly: ``h1a[n] = (-1)**n h0a[L-1-n]`` and tree b
uses the time reverses ``h0b = h0a[::-1]``, ``h1b = h1a[::-1]`` (what ``dtcwt``
tabulates too; ``tests/test_wavelet.py`` compares when ``dtcwt`` is installed).

The 1-D packet tree (Bayram & Selesnick, "On the dual-tree complex wavelet
packet and M-band transforms", IEEE TSP 2008):

- level 1: both trees use the orthonormal pair ``(h0a, h1a)``, tree b one
  sample earlier than tree a (the sign measured to give the analytic packets);
- levels >= 2 on the all-low-pass path: tree a ``(h0a, h1a)``, tree b the
  q-shift pair ``(h0b, h1b)`` (a further half-sample delay);
- levels >= 2 below a high-pass node: the same pair ``(h0a, h1a)`` in both
  trees, which keeps the Hilbert relation between the trees.

Every filter is orthonormal, so each real tree is an orthonormal transform on
periodic images whose sides are multiples of ``2**J``; the four 2-D trees
combined into complex packets by the orthogonal map
``((aa - bb) + i(ba + ab), (aa + bb) + i(ba - ab)) / (2 sqrt 2)`` (first
letter: tree along H, second: along W) form a Parseval frame, whose adjoint
is its inverse. A J-level transform is then one 1-D composite filter per
(tree, packet) of length ``(L - 1)(2**J - 1) + 1`` applied at stride ``2**J``,
which is how :mod:`operad.operators.wavelet` computes it: two strided
convolutions (rows, then columns with the tree mixing folded in).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

__all__ = ["QSHIFT", "qshift_filters", "Packet", "Bank", "bank", "tree_filters"]

#: tree-a q-shift low-pass filters (source: the dtcwt package 0.14.0, see the module docstring)
QSHIFT: Dict[str, Tuple[float, ...]] = {
    "qshift_a": (0.051130405283831656, -0.013975370246888838, -0.10983605166597087, 0.26383956105893763,
                 0.7666284677930372, 0.5636557101270515, 0.0008736226952170968, -0.1002312195074762,
                 -0.0016896812725281543, -0.006181881892116438),
    "qshift_b": (0.003253142763653182, -0.00388321199915849, 0.03466034684485349, -0.03887280126882779,
                 -0.11720388769911527, 0.27529538466888204, 0.7561456438925225, 0.5688104207121227,
                 0.011866092033797, -0.1067118046866654, 0.023825384794920298, 0.01702522388155399,
                 -0.005439475937274115, -0.004556895628475491),
    "qshift_c": (-0.0047616119384559135, -0.00044602278926228516, -7.144197327965012e-05, 0.034914612306842195,
                 -0.03727389579989796, -0.11591145742744076, 0.2763686431330317, 0.7563937651990367,
                 0.567134484100133, 0.01463740596447335, -0.11255888425752203, 0.02228926326692271,
                 0.018498682724156248, -0.0072026778782583465, -0.0002276522058977718, 0.002430349945148675),
    "qshift_d": (-0.002284127440270531, 0.0012098941630734423, -0.011834794515430786, 0.0012834569993443994,
                 0.044365221606616996, -0.05327610880304726, -0.1133058863621428, 0.2809028632221865,
                 0.7528160380878561, 0.5658080673964587, 0.024550152433666563, -0.12018854471079482,
                 0.018156493945546453, 0.03152637712208465, -0.006628794612430063, -0.0025761743066007948,
                 0.0012775586538069982, 0.002411869456666278),
    "qshift_06": (0.03516383657149474, 0.0, -0.08832942445107285, 0.23389032060723564, 0.7602723690661257,
                  0.5875182977235605, 0.0, -0.11430183714424873, 0.0, 0.0),
}


def qshift_filters(name: str) -> Dict[str, np.ndarray]:
    """``h0a, h1a, h0b, h1b`` of a q-shift set.

    >>> f = qshift_filters("qshift_a"); round(float(f["h0a"].sum()), 6)
    1.414214
    """
    if name not in QSHIFT:
        raise ValueError(f"unknown wavelet filters {name!r}; choose from {sorted(QSHIFT)}")
    h0a = np.asarray(QSHIFT[name], dtype=np.float64)
    n = np.arange(len(h0a))
    h1a = (-1.0) ** n * h0a[::-1]
    return {"h0a": h0a, "h1a": h1a, "h0b": h0a[::-1].copy(), "h1b": h1a[::-1].copy()}


def _upsample(f: np.ndarray, r: int) -> np.ndarray:
    out = np.zeros((len(f) - 1) * r + 1)
    out[::r] = f
    return out


@lru_cache(maxsize=None)
def tree_filters(levels: int, filters: str, tree: str, delay: int = -1) -> Tuple[Tuple[np.ndarray, int], ...]:
    """The 1-D composite packet filters of one tree, in natural (Paley) order:
    ``(g, offset)`` with ``y[m] = sum_t g[t] x[2**J m + t + offset]``."""
    f = qshift_filters(filters)
    nodes = [(np.ones(1), 0 if tree == "a" else -delay, True)]  # (composite, offset, all-low-pass path)
    for j in range(1, levels + 1):
        r = 2 ** (j - 1)
        nxt = []
        for g, off, low in nodes:
            if j >= 2 and low and tree == "b":
                pair = (f["h0b"], f["h1b"])
            else:
                pair = (f["h0a"], f["h1a"])
            for bit, h in enumerate(pair):
                nxt.append((np.convolve(g, _upsample(h, r)), off, low and bit == 0))
        nodes = nxt
    return tuple((g, off) for g, off, _ in nodes)


@dataclass(frozen=True)
class Packet:
    """One complex packet of the 2-D transform (per input channel).

    ``ky``/``kx``: 1-D packet indices (Paley order) along H and W; ``branch``
    1 or 2 (the two complex combinations); ``conj``: conjugated so that its
    spectrum lies in the half-plane ``omega_x > 0`` (or ``omega_y > 0`` for
    packets centred on ``omega_x = 0``); ``freq`` = (nu_y, nu_x) spectral
    centroid in cycles per pixel; ``radius``/``angle`` (degrees, in
    (-90, 90]) its polar form; ``band`` = (band_y, band_x), the 1-D frequency
    ranks (0 = low-pass); ``analyticity``: fraction of the spectral energy in
    its half-plane.
    """

    index: int
    ky: int
    kx: int
    branch: int
    conj: bool
    freq: Tuple[float, float]
    radius: float
    angle: float
    band: Tuple[int, int]
    analyticity: float


class Bank:
    """The precomputed J-level DT-CWPT filter bank (see the module docstring)."""

    def __init__(self, levels: int, filters: str = "qshift_a", delay: int = -1, grid: int = 0):
        if not isinstance(levels, int) or levels < 1:
            raise ValueError(f"dtcwpt levels must be a positive int; got {levels!r}")
        self.levels, self.filters, self.delay = levels, filters, delay
        s = self.s = 2 ** levels
        ta, tb = tree_filters(levels, filters, "a", delay), tree_filters(levels, filters, "b", delay)
        lo = min(off for _, off in ta + tb)
        hi = max(off + len(g) for g, off in ta + tb)
        L = hi - lo
        # common support [start, start + L): centre the window on [s m, s m + s)
        shift = (lo + hi - s) // 2
        self.start = lo - shift
        self.length = L
        rows = np.zeros((2, s, L))
        for t, tf in enumerate((ta, tb)):
            for k, (g, off) in enumerate(tf):
                rows[t, k, off - lo:off - lo + len(g)] = g
        self.rows = rows  # (tree, packet, tap)
        self.grid = grid or max(4 * L, 128)
        self._packets = self._analyse()

    # -- 2-D complex packets ------------------------------------------------------------
    def complex_kernel(self, ky: int, kx: int, branch: int, conj: bool = False) -> np.ndarray:
        """The L x L complex kernel of a packet (correlation, before the stride)."""
        a, b = self.rows[0], self.rows[1]
        aa, bb = np.outer(a[ky], a[kx]), np.outer(b[ky], b[kx])
        ab, ba = np.outer(a[ky], b[kx]), np.outer(b[ky], a[kx])
        if branch == 1:
            z = (aa - bb) + 1j * (ba + ab)
        else:
            z = (aa + bb) + 1j * (ba - ab)
        z = z / (2 * math.sqrt(2))
        return np.conj(z) if conj else z

    def _spectrum(self, k: np.ndarray) -> np.ndarray:
        # correlation kernel -> the frequency response of the filter applied as a correlation
        n = self.grid
        return np.fft.fftshift(np.abs(np.fft.fft2(k[::-1, ::-1], s=(n, n))) ** 2)

    def _analyse(self) -> List[Packet]:
        s, n = self.s, self.grid
        nu = np.fft.fftshift(np.fft.fftfreq(n))
        NY, NX = np.meshgrid(nu, nu, indexing="ij")
        cent = [float(np.sum(np.abs(nu) * _p) / np.sum(_p)) for _p in
                (np.abs(np.fft.fftshift(np.fft.fft(self.rows[0, k], n))) ** 2 for k in range(s))]
        band = np.argsort(np.argsort(cent))
        out = []
        for ky in range(s):
            for kx in range(s):
                for branch in (1, 2):
                    P = self._spectrum(self.complex_kernel(ky, kx, branch))
                    tot = P.sum()
                    halves = {"x+": P[NX > 0].sum(), "x-": P[NX < 0].sum(),
                              "y+": P[NY > 0].sum(), "y-": P[NY < 0].sum()}
                    best = max(halves, key=halves.get)
                    conj = best.endswith("-")
                    if conj:
                        P = P[::-1, ::-1]
                        P = np.roll(P, (1, 1), axis=(0, 1)) if n % 2 == 0 else P
                    fy, fx = float((NY * P).sum() / tot), float((NX * P).sum() / tot)
                    ang = math.degrees(math.atan2(fy, fx))
                    if ang <= -90:
                        ang += 180
                    elif ang > 90:
                        ang -= 180
                    out.append(Packet(len(out), ky, kx, branch, conj, (fy, fx), math.hypot(fy, fx), ang,
                                      (int(band[ky]), int(band[kx])), float(halves[best] / tot)))
        return out

    @property
    def packets(self) -> List[Packet]:
        return list(self._packets)

    # -- norms ------------------------------------------------------------------------
    def tree_norm(self, tree: int) -> float:
        """Operator norm of one 1-D tree (stride 2**J, periodic), from the
        polyphase matrix sampled on a fine grid (rounded up by 1e-9)."""
        s, n = self.s, self.grid
        G = np.fft.fft(self.rows[tree], n * s, axis=-1)  # (packet, n s): G(2 pi f / (n s))
        worst = 0.0
        for w in range(n):
            cols = G[:, [(w + r * n) % (n * s) for r in range(s)]] / math.sqrt(s)
            worst = max(worst, float(np.linalg.norm(cols, 2)) ** 2)
        return math.sqrt(worst) + 1e-9

    @property
    def frame_norm(self) -> float:
        """Upper bound of the 2-D complex transform's operator norm (1 for a Parseval frame)."""
        na, nb = self.tree_norm(0), self.tree_norm(1)
        return 0.5 * (na * na + nb * nb)


@lru_cache(maxsize=None)
def bank(levels: int, filters: str = "qshift_a") -> Bank:
    """The cached filter bank for ``levels`` and a q-shift filter set."""
    return Bank(levels, filters)


def select_packets(levels: int, filters: str = "qshift_a", n: Optional[int] = None, drop_highest: bool = True,
                   lowpass: bool = False, max_radius: Optional[float] = None,
                   angles: Optional[Sequence[float]] = None, angle_tol: float = 15.0) -> Tuple[int, ...]:
    """Indices of packets chosen by frequency and orientation, lowest frequency first.

    ``drop_highest`` drops packets in the highest 1-D band along either axis
    (as the paper does; ignored at one level); ``lowpass`` keeps the packets that are low-pass along
    both axes; ``max_radius`` (cycles/pixel) bounds the centre frequency;
    ``angles`` (degrees) keeps packets within ``angle_tol`` of one of them;
    ``n`` keeps the ``n`` lowest-frequency ones.

    >>> len(select_packets(2))
    16
    """
    b = bank(levels, filters)
    top = b.s - 1
    out = []
    for p in b.packets:
        if drop_highest and levels > 1 and top in p.band:
            continue
        if not lowpass and p.band == (0, 0):
            continue
        if max_radius is not None and p.radius > max_radius:
            continue
        if angles is not None and not any(abs(((p.angle - a) + 90) % 180 - 90) <= angle_tol for a in angles):
            continue
        out.append(p)
    out.sort(key=lambda p: (round(p.radius, 9), p.angle, p.index))
    if n is not None:
        if n > len(out):
            raise ValueError(f"only {len(out)} packets match at levels={levels}; asked for {n} "
                             f"(raise levels, set drop_highest=False or lowpass=True)")
        out = out[:n]
    return tuple(sorted(p.index for p in out))
