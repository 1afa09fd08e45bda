"""The DT-CWPT, complex fields, CMod/RMax: mathematics and behaviour.

Measured figures these thresholds come from (qshift_a / qshift_b, CPU, float64):
- analyticity (energy fraction in the packet's half-plane): J=2 packets kept by
  ``select_packets`` >= 0.945, J=3 >= 0.782 (mean 0.976); every non-low-pass
  packet >= 0.605.
- Hilbert pair (||H a - b|| / ||b||, 1-D packets on the level-1 low-pass
  branch): <= 0.099 (qshift_a), <= 0.022 (qshift_b).
- shift stability on 32 CIFAR-10 test images, RMax / CMod error: J=2 1.60
  (qshift_a) and 1.64 (qshift_b); J=3 2.31 and 2.39.
"""
import glob
import math
import os

import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st

import operad
from operad import Field, TypeMismatch, ops, verify
from operad.operators._wavelet_bank import QSHIFT, bank, qshift_filters, select_packets, tree_filters


# ----------------------------------------------------------------------------- coefficients
def test_qshift_coefficients_match_dtcwt():
    coeffs = pytest.importorskip("dtcwt.coeffs")
    for name in QSHIFT:
        h0a, h0b, g0a, g0b, h1a, h1b, g1a, g1b = coeffs.qshift(name)
        f = qshift_filters(name)
        for key, ref in (("h0a", h0a), ("h0b", h0b), ("h1a", h1a), ("h1b", h1b)):
            np.testing.assert_allclose(f[key], ref[:, 0], rtol=0, atol=1e-15, err_msg=f"{name} {key}")


@pytest.mark.parametrize("levels", [1, 2, 3])
@pytest.mark.parametrize("filters", ["qshift_a", "qshift_b", "qshift_d"])
def test_each_tree_is_orthonormal(levels, filters):
    s = 2 ** levels
    for tree in ("a", "b"):
        gs = tree_filters(levels, filters, tree)
        L = max(len(g) + off for g, off in gs) - min(off for g, off in gs)
        n = s * (L // s + 2)
        rows = []
        for g, off in gs:
            for m in range(n // s):
                r = np.zeros(n)
                for t, v in enumerate(g):
                    r[(s * m + t + off) % n] += v
                rows.append(r)
        A = np.array(rows)
        np.testing.assert_allclose(A @ A.T, np.eye(len(rows)), atol=1e-9)


# ----------------------------------------------------------------------------- transform
@settings(deadline=None, max_examples=10)
@given(levels=st.integers(1, 3), filters=st.sampled_from(sorted(QSHIFT)), c=st.integers(1, 3),
       hm=st.integers(1, 3), wm=st.integers(1, 3), seed=st.integers(0, 1000))
def test_perfect_reconstruction_float64(levels, filters, c, hm, wm, seed):
    s = 2 ** levels
    fwd = ops.dtcwpt(levels, filters).bind(Field(c)).double()
    inv = ops.idtcwpt(levels, filters).bind(fwd.out_type).double()
    x = torch.randn(2, c, s * hm, s * wm, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
    z = fwd(x)
    assert z.shape == (2, 2 * c * 2 * 4 ** levels, hm, wm)
    assert (inv(z) - x).abs().max() < 1e-5
    # a Parseval frame: energy is kept
    assert abs(z.norm() / x.norm() - 1) < 1e-5


def test_frame_norm_is_one():
    for levels in (1, 2, 3):
        for f in ("qshift_a", "qshift_b"):
            assert abs(bank(levels, f).frame_norm - 1) < 1e-6


def test_module_kernels_are_the_bank_kernels():
    """The synthesis atoms of the bound inverse are the bank's complex kernels
    (conjugations included): what the metadata describes is what runs."""
    levels, f = 2, "qshift_a"
    b = bank(levels, f)
    n = 2 * b.length // b.s + 2
    inv = ops.idtcwpt(levels, f).bind(Field(2 * 4 ** levels, kind="complex")).double()
    for p in b.packets[::3]:
        z = torch.zeros(1, 4 * 4 ** levels, n, n, dtype=torch.float64)
        z[0, 2 * p.index, 0, 0] = 1.0
        re = inv(z)[0, 0]
        z.zero_()
        z[0, 2 * p.index + 1, 0, 0] = 1.0
        im = inv(z)[0, 0]
        atom = torch.roll(re + 1j * im, (-b.start, -b.start), dims=(0, 1))[:b.length, :b.length].numpy()
        np.testing.assert_allclose(atom, b.complex_kernel(p.ky, p.kx, p.branch, p.conj), atol=1e-6)


@pytest.mark.parametrize("filters", ["qshift_a", "qshift_b"])
def test_analyticity(filters):
    thresholds = {2: 0.94, 3: 0.75}
    for levels, thr in thresholds.items():
        b = bank(levels, filters)
        kept = [b.packets[i].analyticity for i in select_packets(levels, filters)]
        assert min(kept) >= thr, (levels, min(kept))
        assert np.mean(kept) >= 0.97
        assert min(p.analyticity for p in b.packets if p.band != (0, 0)) >= 0.6
        # conjugation puts every packet's centroid in the half-plane omega_x > 0 or omega_y > 0
        for p in b.packets:
            assert p.freq[1] > 1e-6 or p.freq[0] > 1e-6, p


@pytest.mark.parametrize("filters,thr", [("qshift_a", 0.1), ("qshift_b", 0.025)])
def test_hilbert_pairs_on_the_lowpass_branch(filters, thr):
    from scipy.signal import hilbert
    for levels in (2, 3):
        b = bank(levels, filters)
        for k in range(1, b.s // 2):
            a = np.zeros(4096)
            a[:b.length] = b.rows[0, k]
            bb = np.zeros(4096)
            bb[:b.length] = b.rows[1, k]
            ha = np.imag(hilbert(a))
            err = min(np.linalg.norm(ha - bb), np.linalg.norm(ha + bb)) / np.linalg.norm(bb)
            assert err <= thr, (levels, k, err)


def test_select_packets():
    sel = select_packets(2)
    b = bank(2)
    assert len(sel) == 16
    assert all(3 not in b.packets[i].band and b.packets[i].band != (0, 0) for i in sel)
    horiz = select_packets(2, angles=(0,), angle_tol=20)
    assert horiz and all(abs(b.packets[i].angle) <= 20 for i in horiz)
    low = select_packets(3, n=8)
    radii = sorted(p.radius for p in bank(3).packets if p.index in low)
    others = [bank(3).packets[i].radius for i in select_packets(3) if i not in low]
    assert max(radii) <= min(others) + 1e-9
    with pytest.raises(ValueError, match="only 16 packets"):
        select_packets(2, n=17)


def test_selected_transform_equals_slice_of_full():
    x = torch.randn(2, 2, 16, 16, dtype=torch.float64)
    full = ops.dtcwpt(2).bind(Field(2)).double()(x)
    for sel in ((1, 5, 7), select_packets(2)):
        part = ops.dtcwpt(2, select=sel).bind(Field(2)).double()(x)
        idx = [2 * (c * 32 + i) + r for c in range(2) for i in sel for r in (0, 1)]
        torch.testing.assert_close(part, full[:, idx])


def test_real_parts_at_half_stride():
    x = torch.randn(1, 1, 16, 16, dtype=torch.float64)
    sel = select_packets(2)
    half = ops.dtcwpt(2, select=sel, stride=2, parts="real").bind(Field(1)).double()(x)
    full = ops.dtcwpt(2, select=sel).bind(Field(1)).double()(x)
    torch.testing.assert_close(half[:, :, ::2, ::2], full[:, 0::2])


def test_bad_configs_and_types():
    with pytest.raises(ValueError, match="filters"):
        ops.dtcwpt(2, filters="haar")
    with pytest.raises(ValueError, match="stride"):
        ops.dtcwpt(2, stride=3)
    with pytest.raises(TypeMismatch, match="dtcwpt expects a real field"):
        ops.dtcwpt(1).bind(Field(2, kind="complex"))
    with pytest.raises(TypeMismatch, match="multiple of"):
        ops.idtcwpt(1).bind(Field(5, kind="complex"))
    with pytest.raises(TypeMismatch, match="modulus"):
        (ops.dtcwpt(1) >> ops.conv(4)).bind(Field(1))  # a real-only op on a complex field
    with pytest.raises(TypeMismatch, match="complex field"):
        ops.modulus().bind(Field(3))
    with pytest.raises(ValueError, match="multiple of mix"):
        ops.cmod(7, mix=2)


# ----------------------------------------------------------------------------- complex ops
def test_complex_conv_matches_complex_arithmetic():
    m = ops.complex_conv(3, k=3, bias=False).bind(Field(2, kind="complex")).double()
    x = torch.randn(2, 4, 9, 9, dtype=torch.float64)
    z = operad.as_complex(x)
    w = (m.weight_re + 1j * m.weight_im).detach()
    ref = (torch.nn.functional.conv2d(z.real, w.real, padding=1) - torch.nn.functional.conv2d(z.imag, w.imag, padding=1)
           + 1j * (torch.nn.functional.conv2d(z.real, w.imag, padding=1)
                   + torch.nn.functional.conv2d(z.imag, w.real, padding=1)))
    torch.testing.assert_close(operad.as_complex(m(x)), ref)


def test_modulus_and_complex_bn():
    x = torch.randn(4, 6, 5, 5, dtype=torch.float64)
    torch.testing.assert_close(ops.modulus().bind(Field(3, kind="complex"))(x), operad.as_complex(x).abs())
    bn = ops.complex_bn().bind(Field(3, kind="complex")).double().train()
    y = operad.as_complex(bn(x))
    # unit mean squared modulus per channel, phases kept
    torch.testing.assert_close(y.abs().square().mean(dim=(0, 2, 3)), torch.ones(3, dtype=torch.float64), atol=1e-4, rtol=0)
    torch.testing.assert_close(torch.angle(y), torch.angle(operad.as_complex(x)))


def test_cmod_rmax_structure_and_params():
    for levels, out, mix in ((1, 6, 1), (2, 16, 1), (2, 32, 2), (3, 32, 1)):
        c = ops.cmod(out, levels=levels, mix=mix)
        r = ops.rmax(out, levels=levels, mix=mix)
        assert c.select == r.select
        for t in (c, r):
            m = t.bind(Field(3))
            assert operad.cost(m, size=(32, 32)).params == 3 * mix + 2 * out == sum(p.numel() for p in m.parameters())
            y = m(torch.randn(2, 3, 32, 32))
            assert y.shape == (2, out, 32 // 2 ** levels, 32 // 2 ** levels)
    assert ops.colour_mix(2).bind(Field(3)).weight[:, :, 0, 0].tolist()[1] == pytest.approx([0.299, 0.587, 0.114])


# ----------------------------------------------------------------------------- shift stability
def test_shift_stability_report():
    from operad.theory.shift_stability import small_shifts
    assert len(small_shifts()) == 24 and len(small_shifts((1,))) == 8
    m = ops.pointwise(2, bias=False).bind(Field(2))
    x = torch.randn(1, 2, 8, 8)
    rep = verify.shift_stability(m, x, shifts=[(0, 0)], tol=1e-6)
    assert rep.error == 0 and rep.ok is True
    rep = verify.shift_stability(m, x, shifts=[(1, 0)], tol=1e-6)
    assert rep.error > 0.5 and rep.ok is False


def _cifar_images(root, n=32):
    from PIL import Image
    files = sorted(glob.glob(os.path.join(root, "cifar10", "test", "*", "*.jpg")))[::250][:n]
    if len(files) < n:
        pytest.skip("CIFAR-10 JPEG folders not found")
    x = torch.stack([torch.from_numpy(np.asarray(Image.open(f).convert("RGB"), dtype=np.float32) / 255.0)
                     .permute(2, 0, 1) for f in files])
    return (x - x.mean(dim=(0, 2, 3), keepdim=True)) / x.std(dim=(0, 2, 3), keepdim=True)


@pytest.mark.parametrize("levels,out,ratio", [(2, 16, 1.4), (3, 32, 2.0)])
def test_cmod_markedly_more_stable_than_rmax_on_cifar(levels, out, ratio, shared_data):
    x = _cifar_images(shared_data)
    torch.manual_seed(0)
    c = ops.cmod(out, levels=levels).bind(Field(3))
    r = ops.rmax(out, levels=levels).bind(Field(3))  # the same filters and colour mixing
    ec, er = verify.shift_stability(c, x).error, verify.shift_stability(r, x).error
    assert er / ec >= ratio, f"RMax {er:.4f} / CMod {ec:.4f} = {er / ec:.2f}"


def test_folded_colour_mixing_equals_mix_then_transform():
    x = torch.randn(2, 3, 16, 16, dtype=torch.float64)
    sel = select_packets(2)[:6]
    fused = ops.dtcwpt(2, select=sel, mix=2).bind(Field(3)).double()
    with torch.no_grad():
        fused.mix.copy_(torch.randn(2, 3))
    mix = ops.colour_mix(2).bind(Field(3)).double()
    with torch.no_grad():
        mix.weight.copy_(fused.mix[:, :, None, None])
    plain = ops.dtcwpt(2, select=sel).bind(Field(2)).double()
    torch.testing.assert_close(fused(x), plain(mix(x)))
    assert operad.cost(fused, size=(16, 16)).params == 6
