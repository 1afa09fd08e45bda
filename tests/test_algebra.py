"""The algebra's core: fields, composition, binding, costs, rewrites, summary."""
import os
import subprocess
import sys
import tempfile

import pytest
import sympy
import torch

import operad
from operad import Field, ops
from operad.rewrite import substitute

C = sympy.Symbol("C", positive=True, integer=True)


def test_field_is_a_value():
    assert Field(3) == Field(3) and hash(Field(3)) == hash(Field(3))
    assert Field(3) != Field(3, kind="complex")
    assert repr(Field(8, kind="complex", orders=(0, 1))) == "Field(8, complex, orders=(0, 1))"
    assert Field(8, kind="complex").tensor_channels == 16
    with pytest.raises(Exception):
        Field(3).channels = 4
    assert Field(C).channels == C and Field(C).is_symbolic


def test_complex_layout_round_trips():
    z = torch.randn(2, 3, 4, 5, dtype=torch.complex64)
    x = operad.from_complex(z)
    assert x.shape == (2, 6, 4, 5)
    assert torch.equal(x[:, 0], z[:, 0].real) and torch.equal(x[:, 1], z[:, 0].imag)
    assert torch.equal(operad.as_complex(x), z)


def test_terms_are_immutable_hashable_and_print_as_written():
    t = ops.conv(64, k=3, stride=2)
    assert repr(t) == "conv(64, stride=2)"
    assert t == ops.conv(64, stride=2) and hash(t) == hash(ops.conv(64, stride=2))
    with pytest.raises(Exception):
        t.out = 3
    expr = ops.conv(8) >> (ops.relu() + ops.identity()) >> ops.global_pool()
    assert repr(expr) == "conv(8) >> (relu() + identity()) >> global_pool()"


def test_sequence_flattens_and_repeat_binds_independent_weights():
    assert len((ops.conv(4) >> ops.relu() >> ops.bn()).items) == 3
    m = (ops.conv(4) * 3).bind(Field(4))
    assert len(m) == 3
    assert m[0].weight.data_ptr() != m[1].weight.data_ptr()


def test_every_node_knows_its_types_and_path():
    net = (ops.conv(8) >> ops.relu()).named("stem") >> ops.residual(ops.conv(8) >> ops.bn()) >> ops.global_pool()
    m = net.bind(Field(3))
    paths = {mod.path: (mod.in_type, mod.out_type) for mod in m.modules() if hasattr(mod, "term")}
    assert paths["stem[0]"] == (Field(3), Field(8))
    assert paths["[1].body[1]"] == (Field(8), Field(8))
    assert paths["[2]"] == (Field(8), Field(8, rank=0))
    assert m.out_type == Field(8, rank=0)


def test_dense_channel_arithmetic():
    assert ops.dense(ops.conv(4) >> ops.relu(), 3).bind(Field(6)).out_type == Field(18)
    m = ops.dense(ops.conv(4) >> ops.relu(), 3).bind(Field(6))
    assert [layer[0].in_channels for layer in m.layers] == [6, 10, 14]
    assert m(torch.randn(1, 6, 5, 5)).shape == (1, 18, 5, 5)


def test_rearrange_infers_type_and_runs():
    s2d = ops.rearrange("b c (h p) (w q) -> b (c p q) h w", p=2, q=2)
    m = s2d.bind(Field(3))
    assert m.out_type == Field(12)
    assert m(torch.randn(1, 3, 8, 6)).shape == (1, 12, 4, 3)
    assert ops.rearrange("b (g c) h w -> b (c g) h w", g=4).out_type(Field(4 * C)) == Field(4 * C)


def test_cost_example_from_the_issue():
    c = operad.cost(ops.conv(C, k=3, bias=False) >> ops.conv(C, k=3, bias=False), Field(C))
    assert c.params == 18 * C**2
    assert sympy.expand(c.macs - 18 * C**2 * operad.H * operad.W) == 0


def test_cost_with_numbers_and_strides():
    net = ops.conv(16, stride=2, bias=False) >> ops.conv(32, stride=2, bias=False)
    c = operad.cost(net, Field(3), size=(32, 32))
    assert c == operad.Cost(3 * 16 * 9 + 16 * 32 * 9, 3 * 16 * 9 * 256 + 16 * 32 * 9 * 64)
    sym = operad.cost(net, Field(3))
    assert sym.macs.subs({operad.H: 33, operad.W: 31}) == operad.cost(net, Field(3), size=(33, 31)).macs


def test_cost_of_module_equals_count():
    net = (ops.conv(8, stride=2) >> ops.bn() >> ops.relu()) * 2 >> ops.global_pool() >> ops.linear(10)
    m = net.bind(Field(3))
    assert operad.cost(m, size=(17, 23)) == operad.count(m, (3, 3, 17, 23))


def test_substitute_swaps_units_everywhere():
    net = ops.residual(ops.conv(8) >> ops.relu() >> ops.conv(8)) >> ops.relu()
    new = substitute(net, ops.relu, ops.gelu())
    assert "relu" not in repr(new) and repr(new).count("gelu()") == 2
    wider = substitute(net, "conv", lambda c: ops.conv(c.out, k=5))
    assert repr(wider).count("k=5") == 2
    assert substitute(net, lambda t: False, ops.gelu()) == net


def test_summary_prints_every_node_and_the_formula():
    net = (ops.conv(16, bias=False) >> ops.bn() >> ops.relu()).named("stem") >> \
        ops.residual(ops.conv(16, bias=False) >> ops.bn() >> ops.relu()) >> ops.global_pool() >> ops.linear(10)
    s = operad.summary(net.bind(Field(3)), (1, 3, 32, 32))
    text = str(s)
    for col in ("path", "operator", "params", "MACs", "Lip", "equiv", "stem[0]", "[1].body[0]"):
        assert col in text
    assert s.total.params == 432 + 32 + 2304 + 32 + 170
    assert f"{s.total.params:,} params" in text
    assert "H*W" in str(s.formula.macs)


def test_verify_catches_a_false_claim():
    m = ops.conv(4, padding_mode="zeros").bind(Field(2))
    # zero padding breaks circular shift equivariance; the claim is not made...
    rep = operad.verify.equivariance(m, "shift", torch.randn(1, 2, 8, 8))
    assert rep.claimed is False and rep.measured > 1e-3 and rep.ok is None
    # ...and when a claim is false, the check says so
    class Liar(type(m.term)):
        def equivariance(self, t):
            return frozenset({"shift"})
    liar = Liar(*[getattr(m.term, f) for f in m.term.__dataclass_fields__]).bind(Field(2))
    assert operad.verify.equivariance(liar, "shift", torch.randn(1, 2, 8, 8)).ok is False


def test_rotation_transform_agrees_with_rot90():
    from operad.theory.transforms import rotate
    import math
    x = torch.randn(1, 2, 9, 9, dtype=torch.float64)
    torch.testing.assert_close(rotate(x, math.pi / 2), torch.rot90(x, 1, (-2, -1)), atol=1e-9, rtol=0)


def test_compiled_composite_matches_eager():
    net = ops.residual(ops.conv(8) >> ops.bn() >> ops.relu()) >> ops.concat(ops.conv(4), ops.max_pool(3, 1, 1)) \
        >> ops.rearrange("b (g c) h w -> b (c g) h w", g=2) >> ops.global_pool() >> ops.linear(3)
    m = net.bind(Field(8)).eval()
    x = torch.randn(2, 8, 12, 12)
    torch._dynamo.reset()
    compiled = torch.compile(m, backend="eager", fullgraph=True)
    torch.testing.assert_close(compiled(x), m(x))


@pytest.mark.slow
def test_compiled_composite_matches_eager_inductor():
    net = ops.residual(ops.conv(8) >> ops.bn() >> ops.relu()) >> ops.dense(ops.conv(4) >> ops.relu(), 2) \
        >> ops.global_pool() >> ops.linear(3)
    m = net.bind(Field(8)).eval()
    x = torch.randn(2, 8, 12, 12)
    torch._dynamo.reset()
    compiled = torch.compile(m, fullgraph=True)
    torch.testing.assert_close(compiled(x), m(x), rtol=1e-4, atol=1e-5)


def test_import_from_any_directory():
    with tempfile.TemporaryDirectory() as d:
        out = subprocess.run([sys.executable, "-c", "import operad, operad.ops, operad.verify; print(operad.__file__)"],
                             cwd=d, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": os.environ.get("PYTHONPATH", "")})
        assert out.returncode == 0, out.stderr
        assert out.stdout.strip().endswith("__init__.py")


def test_ordered_fields_claim_no_flip_and_no_order_mixing():
    t = Field(4, kind="complex", orders=(0, 1))
    assert "flip" not in ops.modulus().equivariance(t)
    assert "flip" not in ops.complex_bn().equivariance(t)
    assert ops.complex_conv(2, k=1).equivariance(t) == {"shift"}
    assert "flip" in ops.modulus().equivariance(Field(4, kind="complex"))


def test_adaptive_pool_matches_torch_and_its_bound_is_the_exact_norm():
    from operad.operators.adaptive_pool import adaptive_windows
    assert adaptive_windows(5, 3) == [(0, 2), (1, 4), (3, 5)] and adaptive_windows(2, 4) == [(0, 1)] * 2 + [(1, 2)] * 2
    for size, out in (((13, 9), (6, 6)), ((4, 3), (6, 5)), ((12, 12), (3, 4))):
        m = ops.adaptive_pool(out).bind(Field(1)).double()
        n = size[0] * size[1]
        eye = torch.eye(n, dtype=torch.float64).reshape(n, 1, *size)
        dense = m(eye).reshape(n, -1).T
        assert m.term.lipschitz_bound(m, size) == pytest.approx(float(torch.linalg.matrix_norm(dense, ord=2)))
        x = torch.randn(2, 3, *size)
        torch.testing.assert_close(ops.adaptive_pool(out, "max").bind(Field(3))(x),
                                   torch.nn.functional.adaptive_max_pool2d(x, out))
    assert ops.adaptive_pool(6).out_size(Field(8), (224, 300)) == (6, 6)
    assert ops.adaptive_pool((2, 3)).equivariance(Field(4)) == {"flip"}
    assert ops.adaptive_pool(2).lipschitz_bound(None) is None
    with pytest.raises(ValueError, match="two positive ints"):
        ops.adaptive_pool((0, 3))
    with pytest.raises(ValueError, match="'avg' or 'max'"):
        ops.adaptive_pool(2, "mean")


def test_twin_alexnet_head_pools_any_input_to_six_by_six():
    from operad.models import create_model
    m = create_model("twin_alexnet", num_classes=7).eval()
    with torch.no_grad():
        assert m(torch.randn(1, 3, 64, 64)).shape == (1, 7) == m(torch.randn(1, 3, 120, 96)).shape
