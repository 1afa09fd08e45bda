"""operad.cost, operad.summary and `operad summary/verify` refuse input sizes and
channel counts a network cannot run on, naming the node."""
import pytest
import sympy

from operad import Field, H, W, cost, ops, summary
from operad.experiments.cli import main
from operad.operators.algebra.errors import SizeError
from operad.operators.algebra.sizes import check_sizes

HEAD = ops.relu() >> ops.global_pool() >> ops.linear(10)


def test_valid_conv_on_a_too_small_input_names_the_node():
    with pytest.raises(SizeError, match=r"^<root>: conv\(8, k=5, padding='valid'\) maps a 2x2 input to -2x-2"):
        cost(ops.conv(8, k=5, padding="valid"), Field(3), (2, 2))
    net = ops.conv(8).named("stem") >> (ops.conv(8, k=5, padding="valid") >> ops.relu()).named("stage1") >> HEAD
    with pytest.raises(SizeError, match=r"^stage1\[0\]: conv"):
        cost(net, Field(3), (4, 4))
    m = net.bind(Field(3))
    with pytest.raises(SizeError, match=r"^stage1\[0\]: conv"):
        summary(m, (1, 3, 4, 4))
    with pytest.raises(SizeError, match=r"^stage1\[0\]"):
        cost(m, size=(3, 3))
    assert cost(m, size=(5, 5)).macs > 0  # the smallest size that runs


def test_empty_node_hidden_by_a_later_adaptive_pool_is_found():
    net = ops.max_pool(4) >> ops.max_pool(4) >> ops.adaptive_pool(2) >> HEAD
    with pytest.raises(SizeError, match=r"^\[1\]: max_pool\(4\) maps a 2x2 input to 0x0"):
        cost(net, Field(3), (8, 8))
    valid = ops.conv(4, k=5, padding="valid")
    branchy = ops.residual(ops.conv(4) >> valid, shortcut=valid) >> HEAD
    with pytest.raises(SizeError, match=r"^\[0\]\.body\[1\]: conv"):
        cost(branchy, Field(4), (3, 3))
    with pytest.raises(SizeError, match=r"^\[0\]\.branch\[0\]: conv\(None, k=4, padding='valid'\) maps a 3x3 input to 0x0"):
        cost((ops.conv(k=4, padding="valid") + ops.max_pool(4, stride=1)) >> HEAD, Field(4), (3, 3))
    with pytest.raises(SizeError, match=r"input size 0x8 is empty"):
        cost(HEAD, Field(3), (0, 8))


def test_channels_that_differ_from_the_model():
    m = (ops.conv(8) >> HEAD).bind(Field(3))
    with pytest.raises(SizeError, match=r"the input has 7 channels; the model takes Field\(3\)"):
        summary(m, (1, 7, 32, 32))
    with pytest.raises(SizeError, match=r"takes Field\(3\); got in_type=Field\(7\)"):
        cost(m, Field(7), (8, 8))
    with pytest.raises(SizeError, match=r"input shape \(1, 3, 32\) is not 4 positive ints"):
        summary(m, (1, 3, 32))
    cm = ops.complex_conv(4).bind(Field(2, kind="complex"))  # complex fields take 2 tensor channels each
    assert summary(cm, (1, 4, 8, 8)).total.params > 0
    with pytest.raises(SizeError, match="the input has 2 channels"):
        summary(cm, (1, 2, 8, 8))


def test_symbolic_sizes_and_channels_still_cost():
    C = sympy.Symbol("C", positive=True, integer=True)
    assert cost(ops.conv(C, k=3, bias=False), Field(C)).macs == 9 * C ** 2 * H * W
    check_sizes(ops.conv(8, k=5, padding="valid"), Field(3), (H, W))  # nothing to check
    assert cost(ops.conv(8, k=5, padding="valid", bias=False), Field(3), (5, 5)).macs == 8 * 3 * 25


def test_cli_summary_and_verify_refuse(capsys):
    expr = "ops.conv(8, k=5, padding='valid') >> ops.relu() >> ops.global_pool() >> ops.linear(10)"
    assert main(["summary", expr, "--input", "1,3,2,2"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("operad summary: error: [0]: conv(8, k=5, padding='valid') maps a 2x2 input"), err
    assert main(["summary", expr, "--input", "1,7,32,32"]) == 2
    assert "the input has 7 channels" in capsys.readouterr().err
    assert main(["verify", expr, "--input", "1,3,3,3"]) == 2
    assert "operad verify: error: [0]: conv" in capsys.readouterr().err
