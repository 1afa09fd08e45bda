"""Whole-model checks over every registered model (``operad.models.list_models()``),
so a network joins them by registering itself:

- the inferred ``out_type`` equals the real output (channels, rank, spatial size);
- ``operad.cost(model, size=...)`` equals ``operad.count(model, x)`` (params and MACs);
- a state dict round trip into a fresh model gives the same output;
- a forward and backward pass on a batch of 2 gives finite gradients for every parameter.

Inputs are the registered input size, capped at ``CAP`` pixels a side to keep
the run fast (every model here accepts that; add a model to ``SIZE`` if it needs
a different test size). Models above ``HEAVY`` parameters run only with ``-m slow``.
"""
import math

import pytest
import torch

import operad
from operad.models import create_model, list_models, model_info, model_term

CAP = 64
HEAVY = 30_000_000
SIZE = {}  # name -> (H, W) for models that need another test size


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    # small inputs: one thread is faster, and far faster on a loaded machine (OpenMP spin-waits)
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _size(name):
    if name in SIZE:
        return SIZE[name]
    info = model_info(name)
    return tuple(min(s, CAP) for s in info.input_size[1:])


def _params(name):
    info = model_info(name)
    return operad.cost(model_term(name), operad.Field(info.input_size[0]), size=_size(name)).params


def _cases():
    out = []
    for name in list_models():
        marks = [pytest.mark.slow] if _params(name) > HEAVY else []
        out.append(pytest.param(name, marks=marks, id=name))
    return out


def _check_cost(name, model, x):
    h, w = x.shape[-2:]
    sym = operad.cost(model, size=(h, w))
    counted = operad.count(model, x)
    assert sym.params == counted.params == sum(p.numel() for p in model.parameters())
    assert sym.macs == counted.macs, f"{name}: cost says {sym.macs} MACs, the counter {counted.macs}"


@pytest.mark.parametrize("name", _cases())
def test_whole_model(name):
    torch.manual_seed(0)
    info = model_info(name)
    chans = info.input_size[0]
    h, w = _size(name)
    model = create_model(name)
    x = torch.randn(2, chans, h, w)

    # type inference == the real output
    model.train()
    y = model(x)
    t = model.out_type
    assert y.shape[1] == t.channels, f"{name}: out_type {t} but output {tuple(y.shape)}"
    assert y.dim() - 2 == t.rank, f"{name}: out_type {t} but output {tuple(y.shape)}"
    if t.rank == 2:
        assert tuple(y.shape[2:]) == tuple(model.term.out_size(model.in_type, (h, w)))

    # forward + backward on a batch of 2
    y.float().square().mean().backward()
    for pname, p in model.named_parameters():
        if p.requires_grad:
            assert p.grad is not None and torch.isfinite(p.grad).all(), f"{name}: bad gradient for {pname}"

    # symbolic cost == counted cost
    _check_cost(name, model, x)

    # state dict round trip
    model.eval()
    with torch.no_grad():
        ref = model(x)
        torch.manual_seed(1)
        other = create_model(name).eval()
        other.load_state_dict(model.state_dict())
        assert torch.equal(other(x), ref), f"{name}: state dict round trip changed the output"


def test_every_model_has_a_docstring_and_known_task():
    for name in list_models():
        info = model_info(name)
        assert info.task in ("classification", "segmentation", "detection"), name
        assert (info.fn.__doc__ or "").strip(), f"{name} has no docstring"
        assert len(info.input_size) == 3 and all(isinstance(s, int) and s > 0 for s in info.input_size)


@pytest.mark.parametrize("wrong", ["one_mac_per_strided_conv", "floor_not_ceil"])
def test_size_cap_does_not_hide_a_mismatch(wrong, monkeypatch):
    """The cost check of test_whole_model, at the capped test size, catches a wrong cost
    formula: one stray MAC per strided conv, or output sizes floor(H / s) in place of
    ceil(H / s) (which only differ at odd sizes, so the odd size is tested)."""
    from operad.operators.algebra.term import Cost
    from operad.operators.conv import Conv
    right = Conv.cost

    def cost(self, t, size):
        c = right(self, t, size)
        if self.stride == 1:
            return c
        if wrong == "one_mac_per_strided_conv":
            return Cost(c.params, c.macs + 1)
        ho, wo = (n // self.stride for n in size)
        return Cost(c.params, c.macs // math.prod(self.out_size(t, size)) * ho * wo)

    name = "resnet20"
    x = torch.randn(1, 3, *((32, 32) if wrong == "one_mac_per_strided_conv" else (31, 31)))
    model = create_model(name)
    _check_cost(name, model, x)  # right as it stands
    monkeypatch.setattr(Conv, "cost", cost)
    with pytest.raises(AssertionError, match="MACs"):
        _check_cost(name, model, x)
