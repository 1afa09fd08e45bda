"""Exact spectral norms of circular convolutions (FFT) against the dense operator, their
use in the conv family's Lipschitz bound, and the tightness report."""
import pytest
import torch
from hypothesis import given, settings, strategies as st

import operad
from operad import Field, ops
from operad.operators.conv import circular_spectral_norm


def _dense(m, c, h, w):
    eye = torch.eye(c * h * w, dtype=torch.float64).reshape(-1, c, h, w)
    with torch.no_grad():
        return m(eye).reshape(c * h * w, -1).T


def _bias_free(term, t):
    return term.bind(t).double().eval()


@settings(max_examples=25, deadline=None)
@given(cin=st.integers(1, 4), out=st.integers(1, 4), k=st.sampled_from([1, 2, 3, 5]), dilation=st.sampled_from([1, 2]),
       h=st.integers(3, 9), w=st.integers(3, 9), depthwise=st.booleans(), seed=st.integers(0, 1000))
def test_fft_norm_of_a_circular_conv_is_its_dense_spectral_norm(cin, out, k, dilation, h, w, depthwise, seed):
    """Stride 1: the FFT norm is exact (kernels as large as or larger than the grid included)."""
    if dilation * (k - 1) // 2 > min(h, w):
        return
    torch.manual_seed(seed)
    groups, out = (cin, cin * out) if depthwise else (1, out)
    term = ops.conv(out, k=k, dilation=dilation, groups=groups, bias=False, padding_mode="circular")
    m = _bias_free(term, Field(cin))
    exact = float(torch.linalg.matrix_norm(_dense(m, cin, h, w), ord=2))
    assert circular_spectral_norm(m.weight, (h, w), groups, dilation) == pytest.approx(exact, rel=1e-9)
    # the family's bound is that exact figure when the size is known
    assert m.term.lipschitz_bound(m, (h, w)) == pytest.approx(exact, rel=1e-9)


@pytest.mark.parametrize("k, stride", [(3, 2), (4, 2), (5, 3)])
def test_strided_circular_conv_bound_holds_and_beats_the_general_one(k, stride):
    torch.manual_seed(0)
    m = _bias_free(ops.conv(4, k=k, stride=stride, bias=False, padding_mode="circular"), Field(3))
    dense = float(torch.linalg.matrix_norm(_dense(m, 3, 12, 12), ord=2))
    bound = m.term.lipschitz_bound(m, (12, 12))
    general = m.term.lipschitz_bound(m, None)
    assert dense <= bound * (1 + 1e-9) and bound <= general


def test_zero_padding_keeps_the_general_bound():
    torch.manual_seed(0)
    m = _bias_free(ops.conv(4, k=3, bias=False), Field(3))
    assert m.term.lipschitz_bound(m, (8, 8)) == m.term.lipschitz_bound(m, None)
    assert float(torch.linalg.matrix_norm(_dense(m, 3, 8, 8), ord=2)) <= m.term.lipschitz_bound(m, (8, 8))


def test_a_sequence_of_circular_convs_multiplies_exact_norms():
    torch.manual_seed(0)
    net = ops.conv(4, padding_mode="circular", bias=False) >> ops.conv(2, k=5, padding_mode="circular", bias=False)
    m = _bias_free(net, Field(3))
    exact = [float(torch.linalg.matrix_norm(_dense(c, c.in_type.channels, 7, 7), ord=2)) for c in m]
    assert operad.verify.declared_lipschitz(m, (7, 7)) == pytest.approx(exact[0] * exact[1], rel=1e-9)


def test_tightness_study_reports_bounds_estimates_and_missing_bounds(capsys):
    from operad.experiments.studies import tightness
    out = tightness.main(["--families", "conv", "residual", "feature_nonlocal", "--models", "none",
                          "--examples", "2", "--points", "1", "--iters", "10"])
    rows = {r["name"]: r for r in out["families"]}
    assert not out["models"]
    for name in ("conv", "residual"):
        r = rows[name]
        assert r["bounded"] == r["examples"] == 2 and r["violated"] == 0
        assert r["estimate"] > 0 and r["ratio"] >= 1 - 1e-3 and r["worst"] >= r["ratio"]
    assert rows["feature_nonlocal"]["bounded"] == 0 and rows["feature_nonlocal"]["ratio"] is None
    text = capsys.readouterr().out
    assert "| conv |" in text and "no Lipschitz bound declared: feature_nonlocal" in text


@pytest.mark.slow
def test_tightness_of_a_registered_model():
    from operad.experiments.studies import tightness
    r = tightness.model_row("resnet20", points=1, iters=8)
    assert r["bounded"] == 1 and r["violated"] == 0 and r["estimate"] > 0
    assert r["ratio"] > 2  # a deep net's product of layer bounds is loose


def test_family_examples_are_reproducible():
    from operad.experiments.studies.tightness import family_examples
    a, b = family_examples("conv", 3), family_examples("conv", 3)
    assert len(a) == 3 and [repr(x[0]) for x in a] == [repr(x[0]) for x in b]
