"""Guided backpropagation (All-CNN paper): definitions checked on a tiny net, and the PNG grid."""
import os

import pytest
import torch

from operad import Field, ops
from operad.models import create_model
from operad.theory.guided import guided_backprop, save_guided_grid


def _tiny():
    torch.manual_seed(0)
    return (ops.conv(4, bias=False) >> ops.relu() >> ops.conv(4, bias=False) >> ops.relu() >> ops.global_pool()
            >> ops.linear(3)).bind(Field(2)).eval()


def test_gradient_mode_is_the_plain_gradient_and_guided_differs():
    m = _tiny()
    x = torch.randn(2, 2, 6, 6)
    xr = x.clone().requires_grad_(True)
    y = m(xr)
    (g,) = torch.autograd.grad(y[:, 1].sum(), xr)
    assert torch.allclose(guided_backprop(m, x, target=1, mode="gradient"), g)
    gb = guided_backprop(m, x, target=1)
    dc = guided_backprop(m, x, target=1, mode="deconvnet")
    assert gb.shape == x.shape and not torch.allclose(gb, g) and not torch.allclose(dc, gb)


def test_guided_matches_a_manual_backward():
    # one hidden ReLU: guided = W1^T [(W2^T e) clamped at 0, masked by the forward input]
    torch.manual_seed(0)
    m = (ops.linear(5, bias=False) >> ops.relu() >> ops.linear(2, bias=False)).bind(Field(3, rank=0)).eval()
    x = torch.randn(4, 3)
    w1, w2 = m[0].weight, m[2].weight
    h = x @ w1.T
    sig = w2[1].expand(4, -1)
    manual = ((sig.clamp(min=0) * (h > 0)) @ w1)
    assert torch.allclose(guided_backprop(m, x, target=1), manual, atol=1e-6)
    assert torch.allclose(guided_backprop(m, x, target=1, mode="deconvnet"), sig.clamp(min=0) @ w1, atol=1e-6)
    with pytest.raises(ValueError, match="mode"):
        guided_backprop(m, x, mode="x")


def test_save_grid_png(tmp_path):
    m = create_model("allcnn_c", drop=False).eval()
    x = torch.rand(4, 3, 32, 32)
    path = save_guided_grid(m, x, os.path.join(tmp_path, "g.png"), ncol=4, scale=1)
    from PIL import Image
    img = Image.open(path)
    assert img.size == (4 * 34, 2 * 34)
    no_relu = create_model("allcnn_c", drop=False, act=ops.gelu()).eval()
    with pytest.raises(ValueError, match="nn.ReLU"):
        guided_backprop(no_relu, x)
