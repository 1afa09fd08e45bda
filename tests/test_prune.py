"""Structural pruning (operad.rewrite.prune): exact against the zeroed network, exact costs,
the couplings the expression states, importance criteria and errors."""
import math

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from operad import Field, ops, rewrite
from operad.models import create_model, list_models
from operad.operators.algebra.term import FAMILIES
from operad.rewrite import importance_scores, prune, prune_plan, trace_channels, zero_channels
from operad.testing import draw_example, random_input, settle
from operad.theory.cost import cost, count


def _zeroed_and_pruned(model, amount, seed=0):
    """The model with a random plan's channels zeroed, and its pruned form."""
    g = trace_channels(model)
    drop = prune_plan(g, importance_scores(g, "random", seed=seed), amount=amount)
    zero_channels(g, drop)
    return model, prune(model, drop=drop), drop


def _assert_same_function(a, b, x):
    a.eval(), b.eval()
    with torch.no_grad():
        ya, yb = a(x), b(x)
    assert ya.shape == yb.shape
    scale = max(1.0, ya.abs().max().item())
    assert (ya - yb).abs().max().item() <= 1e-10 * scale


# ---------------------------------------------------------------------------
# Exactness over every operator family and random compositions of the combinators
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(n for n, f in FAMILIES.items() if f.examples is not None))
@settings(max_examples=8, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_prune_is_exact_on_every_family(name, data):
    term, t, size = draw_example(data, name)
    m = settle(term.bind(t).double())
    amount = data.draw(st.sampled_from([0.25, 0.5, 0.75]))
    m, p, drop = _zeroed_and_pruned(m, amount, seed=data.draw(st.integers(0, 100)))
    _assert_same_function(m, p, random_input(t, size, dtype=torch.float64))
    assert p.in_type == m.in_type and p.out_type == m.out_type


def _leaf(draw, c):
    k = draw(st.sampled_from([1, 3]))
    head = ops.conv(c, k=k, bias=draw(st.booleans()))
    tail = draw(st.sampled_from(["bn", "relu", "bn_relu", "sigmoid", None]))
    return {"bn": head >> ops.bn(), "relu": head >> ops.relu(), "bn_relu": head >> ops.bn() >> ops.relu(),
            "sigmoid": head >> ops.sigmoid(), None: head}[tail]


def _composite(draw, c, depth):
    """A random size-keeping composite mapping c channels to c channels."""
    if depth == 0:
        return _leaf(draw, c)
    kind = draw(st.sampled_from(["seq", "repeat", "sum", "concat", "minimum", "residual", "dense", "gate",
                                 "select", "shake", "ghost", "ir", "se", "pad", "dw", "grouped"]))
    sub = lambda cc=c: _composite(draw, cc, depth - 1)
    if kind == "seq":
        mid = draw(st.integers(2, 6))
        return _composite(draw, mid, depth - 1) >> sub()
    if kind == "repeat":
        return sub() * draw(st.integers(2, 3))
    if kind == "sum":
        return sub() + sub()
    if kind == "minimum":
        return ops.minimum(sub(), sub())
    if kind == "shake":
        return ops.shake_shake(sub(), sub())
    if kind == "concat":
        a = draw(st.integers(1, c - 1)) if c > 1 else 1
        return ops.concat(_composite(draw, a, depth - 1), _composite(draw, max(1, c - a), depth - 1)) \
            >> ops.conv(c, k=1)
    if kind == "residual":
        return ops.residual(sub())
    if kind == "dense":
        return ops.dense(_leaf(draw, 2), 2) >> ops.conv(c, k=1)
    if kind == "gate":
        return ops.gate(ops.global_pool() >> ops.linear(c) >> ops.sigmoid(), sub())
    if kind == "select":
        return ops.select(sub(), sub(), r=2, L=2)
    if kind == "ghost":
        return ops.ghost(c, ratio=2)
    if kind == "ir":
        return ops.inverted_residual(c, t=2)
    if kind == "se":
        return sub() >> ops.squeeze_excite(0.5, divisor=1)
    if kind == "pad":
        return ops.narrow(max(1, c // 2)) >> ops.pad_channels(c)
    if kind == "dw":
        return ops.conv(None, k=3, groups=0) >> ops.bn() >> ops.relu()
    g = draw(st.sampled_from([1, 2]))
    return ops.conv(2 * c, k=1) >> ops.conv(2 * c, k=3, groups=2 * g if 2 * c % (2 * g) == 0 else 2) \
        >> ops.relu() >> ops.conv(c, k=1)


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_prune_is_exact_on_random_compositions(data):
    c = data.draw(st.integers(2, 6))
    body = data.draw(st.builds(lambda d: _composite(d.draw, c, 2), st.data()))
    term = ops.conv(c, k=3) >> ops.bn() >> ops.relu() >> body >> ops.global_pool() >> ops.linear(3)
    torch.manual_seed(data.draw(st.integers(0, 10 ** 6)))
    m = term.bind(Field(3)).double()
    settle(m)
    m, p, drop = _zeroed_and_pruned(m, data.draw(st.sampled_from([0.3, 0.6, 0.9])), data.draw(st.integers(0, 99)))
    _assert_same_function(m, p, torch.randn(2, 3, 6, 7, dtype=torch.float64))
    assert cost(p, size=(6, 7)) == count(p, torch.zeros(1, 3, 6, 7, dtype=torch.float64))


CIFAR = list_models(tags="cifar")


@pytest.mark.parametrize("name", CIFAR)
def test_prune_is_exact_on_every_registered_cifar_model(name):
    torch.manual_seed(0)
    m = create_model(name).double().eval()
    settle(m)
    g = trace_channels(m)
    m, p, drop = _zeroed_and_pruned(m, 0.4, seed=1)
    _assert_same_function(m, p, torch.randn(1, 3, 32, 32, dtype=torch.float64))
    c = cost(p, size=(32, 32))
    assert (c.params, c.macs) == (sum(q.numel() for q in p.parameters()), count(p, torch.zeros(1, 3, 32, 32, dtype=torch.float64)).macs)
    if g.spaces():
        assert c.macs < cost(m, size=(32, 32)).macs


@pytest.mark.parametrize("name", list_models(tags="segmentation"))
def test_prune_is_exact_on_segmentation_models(name):
    """Heads resized to the input and image-pooling branches pass their channels through."""
    torch.manual_seed(0)
    m = settle(create_model(name).double())
    g = trace_channels(m)
    m, p, drop = _zeroed_and_pruned(m, 0.4, seed=2)
    _assert_same_function(m, p, torch.randn(1, 3, 48, 64, dtype=torch.float64))
    if name.endswith("mobilenetv2"):
        assert len(g.spaces()) > 10 and drop


def test_prune_keeps_registry_metadata_and_timm_methods():
    m = create_model("resnet20")
    p = rewrite.prune(m, amount=0.5)
    assert p.model_name == "resnet20" and p.default_cfg == m.default_cfg and type(p) is type(m)
    x = torch.randn(2, 3, 32, 32)
    assert p.forward_head(p.forward_features(x)).shape == (2, 10)
    assert p.feature_info[-1]["num_chs"] < m.feature_info[-1]["num_chs"]
    p.train()  # the pruned model trains: gradients reach every kept weight
    p(x).sum().backward()
    assert all(q.grad is not None for q in p.parameters())


# ---------------------------------------------------------------------------
# The couplings the expression states
# ---------------------------------------------------------------------------
def test_residual_partners_keep_one_width_and_the_stream_is_one_space():
    block = ops.residual(ops.conv(8) >> ops.bn() >> ops.relu() >> ops.conv(8) >> ops.bn())
    m = (ops.conv(8) >> ops.bn() >> ops.relu() >> block >> block >> ops.global_pool() >> ops.linear(2)).bind(Field(3))
    g = trace_channels(m)
    sizes = sorted(len(s.units) for s in g.spaces())
    assert sizes == [8, 8, 8]          # the stream (stem + both blocks' last convs), two inner widths
    p = prune(m, amount=0.5)
    widths = [mod.out_channels for mod in p.modules() if isinstance(mod, torch.nn.Conv2d)]
    assert widths == [4, 4, 4, 4, 4]


def test_option_a_padding_keeps_an_asymmetric_split():
    m = create_model("resnet20")
    p = prune(m, amount=0.5, importance="random", seed=3)
    pads = [mod.term for mod in p.modules() if getattr(getattr(mod, "term", None), "family", "") == "pad_channels"]
    assert pads and all(t.before is not None for t in pads)
    assert "pad_channels(" in repr(p.term)


def test_concat_and_dense_growth_are_sliced_per_layer():
    m = (ops.conv(6) >> ops.dense(ops.bn() >> ops.relu() >> ops.conv(4), 3) >> ops.global_pool()
         >> ops.linear(2)).bind(Field(3))
    g = trace_channels(m)
    assert sorted(len(s.units) for s in g.spaces()) == [4, 4, 4, 6]
    scores = importance_scores(g, "random", seed=0)
    spaces = g.spaces()
    drop = [spaces[1].units[0], spaces[2].units[0], spaces[2].units[1]]  # growth 4 -> 3 and 4 -> 2
    p = prune(m, drop=drop)
    assert repr(p.term).count("dense([") == 1
    assert p.term.items[1].layers[0] != p.term.items[1].layers[1]
    assert scores


def test_grouped_conv_loses_whole_groups_and_depthwise_follows_its_input():
    m = (ops.conv(8, k=1) >> ops.conv(8, k=3, groups=4) >> ops.conv(None, k=3, groups=0) >> ops.relu()
         >> ops.conv(2, k=1)).bind(Field(3))
    g = trace_channels(m)
    assert [len(s.units) for s in g.spaces()] == [4]   # four groups: each is one unit
    p = prune(m, amount=0.5)
    convs = [mod for mod in p.modules() if isinstance(mod, torch.nn.Conv2d)]
    assert [c.out_channels for c in convs] == [4, 4, 4, 2] and convs[1].groups == 2 and convs[2].groups == 4


def test_a_channel_alive_after_zeroing_is_fixed():
    """sigmoid(0) = 1/2: a conv reading a sigmoid's output cannot lose its channels."""
    m = (ops.conv(4) >> ops.sigmoid() >> ops.conv(2)).bind(Field(3))
    assert trace_channels(m).spaces() == []
    m2 = (ops.conv(4) >> ops.relu() >> ops.conv(2)).bind(Field(3))
    assert len(trace_channels(m2).spaces()) == 1


def test_se_gate_couples_its_fc_with_the_gated_channels():
    m = (ops.conv(8) >> ops.squeeze_excite(0.5, divisor=1) >> ops.conv(2)).bind(Field(3))
    g = trace_channels(m)
    assert sorted(len(s.units) for s in g.spaces()) == [4, 8]
    p = prune(m, amount=0.5)
    lin = [mod for mod in p.modules() if isinstance(mod, torch.nn.Linear)]
    assert [(l.in_features, l.out_features) for l in lin] == [(4, 2), (2, 4)]


def test_unknown_families_are_opaque_and_exact():
    m = (ops.conv(4) >> ops.relu() >> ops.rearrange("b c h w -> b c w h") >> ops.conv(2)).bind(Field(3))
    assert trace_channels(m).spaces() == []
    assert prune(m, amount=0.5).term == m.term


def test_repeat_becomes_a_sequence_when_its_copies_differ():
    m = ((ops.conv(4) >> ops.relu()) * 3 >> ops.conv(2)).bind(Field(4)).double()
    p = prune(m, amount=0.5, importance="random", seed=0)
    assert "* 3" in repr(p.term)          # a uniform amount keeps the copies equal
    g = trace_channels(m)
    drop = [g.spaces()[0].units[0]]
    zero_channels(g, drop)
    p = prune(m, drop=drop)
    assert "* 3" not in repr(p.term)
    _assert_same_function(m, p, torch.randn(1, 4, 5, 5, dtype=torch.float64))


# ---------------------------------------------------------------------------
# Importance, amounts, targets
# ---------------------------------------------------------------------------
def _conv_with_norms(norms):
    m = (ops.conv(len(norms), k=1, bias=False) >> ops.relu() >> ops.conv(1, k=1)).bind(Field(1))
    with torch.no_grad():
        m[0].weight.copy_(torch.tensor(norms, dtype=torch.float32).view(-1, 1, 1, 1))
    return m


def test_l1_removes_the_smallest_filters():
    m = _conv_with_norms([3.0, 0.1, 2.0, 0.2])
    p = prune(m, amount=0.5, importance="l1")
    assert sorted(p[0].weight.flatten().tolist()) == [2.0, 3.0]


def test_bn_scale_removes_the_smallest_gammas():
    m = (ops.conv(4, k=1) >> ops.bn() >> ops.relu() >> ops.conv(1, k=1)).bind(Field(1))
    with torch.no_grad():
        m[1].weight.copy_(torch.tensor([0.5, 2.0, 0.1, 1.0]))
    p = prune(m, amount=0.5, importance="bn_scale")
    assert sorted(p[1].weight.tolist()) == [1.0, 2.0]


def test_taylor_uses_the_data_and_needs_it():
    torch.manual_seed(0)
    m = (ops.conv(6, k=3) >> ops.relu() >> ops.global_pool() >> ops.linear(3)).bind(Field(3))
    data = [(torch.randn(4, 3, 8, 8), torch.randint(0, 3, (4,))) for _ in range(2)]
    with pytest.raises(ValueError, match="needs data"):
        prune(m, amount=0.5, importance="taylor")
    with torch.no_grad():
        m[0].weight[2].zero_()        # a filter with no effect has zero Taylor importance
    g = trace_channels(m)
    s = importance_scores(g, "taylor", data)
    assert min(s, key=s.get) == g.spaces()[0].units[2]
    assert m.training and all(q.grad is None for q in m.parameters())


def test_random_importance_is_seeded():
    m = create_model("resnet20")
    a, b = (repr(prune(m, amount=0.3, importance="random", seed=s).term) for s in (1, 1))
    assert a == b


def test_round_to_keeps_multiples():
    m = (ops.conv(16) >> ops.relu() >> ops.conv(16) >> ops.relu() >> ops.conv(2)).bind(Field(3))
    p = prune(m, amount=0.3, round_to=4)
    assert [mod.out_channels for mod in p.modules() if isinstance(mod, torch.nn.Conv2d)] == [12, 12, 2]


def test_ratios_by_layer_pattern_override_amount():
    m = (ops.conv(8).named("a") >> ops.relu() >> ops.conv(8).named("b") >> ops.relu() >> ops.conv(2)).bind(Field(3))
    p = prune(m, amount=0.5, ratios={"b": 0.75})
    assert [mod.out_channels for mod in p.modules() if isinstance(mod, torch.nn.Conv2d)] == [4, 2, 2]


def test_amount_for_macs_reaches_the_target():
    m = create_model("resnet56")
    a = rewrite.amount_for_macs(m, 0.5)
    p = prune(m, amount=a)
    ratio = cost(p, size=(32, 32)).macs / cost(m, size=(32, 32)).macs
    assert 0.45 < ratio <= 0.5


# ---------------------------------------------------------------------------
# Bad input
# ---------------------------------------------------------------------------
def test_errors_say_what_to_change():
    m = (ops.conv(4) >> ops.relu() >> ops.conv(2)).bind(Field(3))
    with pytest.raises(ValueError, match="amount="):
        prune(m)
    with pytest.raises(ValueError, match=r"fraction in \[0, 1\)"):
        prune(m, amount=1.0)
    with pytest.raises(ValueError, match="unknown importance"):
        prune(m, amount=0.5, importance="l3")
    with pytest.raises(ValueError, match="round_to"):
        prune(m, amount=0.5, round_to=0)
    with pytest.raises(TypeError, match="bound operad module"):
        prune(torch.nn.Conv2d(3, 4, 3), amount=0.5)
    g = trace_channels(m)
    with pytest.raises(ValueError, match="fixed units"):
        prune(m, drop=[0])                              # an input channel
    with pytest.raises(ValueError, match="keep at least one"):
        prune(m, drop=g.spaces()[0].units)
    with pytest.raises(ValueError, match="cannot be reached"):
        rewrite.amount_for_macs((ops.conv(4) >> ops.relu() >> ops.conv(2)).bind(Field(3)), 0.01)


def test_the_readme_example_runs_and_reaches_its_target(capsys):
    import os
    import re
    text = open(os.path.join(os.path.dirname(__file__), "..", "README.md")).read()
    block = re.search(r"## Pruning.*?```python\n(.*?)```", text, re.S).group(1)
    exec(compile(block, "README.md", "exec"), {})
    assert float(capsys.readouterr().out) <= 0.4


def _duplicated_filters_model():
    torch.manual_seed(0)
    m = (ops.conv(8, k=3) >> ops.relu() >> ops.global_pool() >> ops.linear(3)).bind(Field(3)).double()
    with torch.no_grad():
        m[0].weight[4:] = m[0].weight[:4]
        m[0].bias[4:] = m[0].bias[:4]
        m[3].weight[:, 4:] = m[3].weight[:, :4]   # copies feed the head alike: their gradients coincide
    data = [(torch.randn(16, 3, 8, 8, dtype=torch.float64), torch.randint(0, 3, (16,))) for _ in range(2)]
    return m, data


def test_grad_rank_removes_one_filter_of_each_duplicate_pair():
    m, data = _duplicated_filters_model()
    p = prune(m, amount=0.5, importance="grad_rank", data=data)
    kept = p[0].weight.reshape(4, -1)
    originals = m[0].weight[:4].reshape(4, -1)
    # the four kept filters are the four distinct ones (in some copy), never both copies of one
    match = [int(((originals - k).abs().sum(1) < 1e-12).nonzero()[0]) for k in kept]
    assert sorted(match) == [0, 1, 2, 3]
    with pytest.raises(ValueError, match="needs data"):
        prune(m, importance="grad_rank")


def test_grad_rank_without_amount_takes_each_layers_estimated_ratio():
    m, data = _duplicated_filters_model()
    from operad.theory import redundancy
    ratio = redundancy(m, data, progress=False).max_prune_ratios["[0]"]
    assert ratio >= 0.5                       # at least the four copies are redundant
    p = prune(m, importance="grad_rank", data=data)
    assert p[0].out_channels == 8 - math.floor(ratio * 8)
