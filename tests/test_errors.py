"""Every error a user can hit while composing or binding names what to change."""
import pytest
import sympy

from operad import Field, TypeMismatch, ops


def bind_error(term, field):
    with pytest.raises(TypeMismatch) as e:
        term.bind(field)
    return str(e.value)


def test_type_mismatch_is_a_type_error():
    assert issubclass(TypeMismatch, TypeError)


def test_conv_on_complex_field_names_path_and_both_types():
    net = ops.conv(8).named("stem") >> (ops.identity() + (ops.conv(8) >> ops.relu())).named("stage2")
    msg = bind_error(net, Field(3, kind="complex"))
    assert msg.startswith("stem: conv expects a real field")
    assert "Field(3, complex)" in msg


def test_nested_path_reaches_the_branch():
    inner = ops.residual(ops.relu() >> ops.conv(16))
    net = ops.pointwise(16).named("stem") >> (ops.identity() >> (ops.identity() + inner)).named("stage2")
    msg = bind_error(net >> ops.global_pool() >> ops.conv(4), Field(3))
    assert msg.startswith("[3]: conv expects a rank-2 field"), msg
    assert "Field(16, rank=0)" in msg


def test_path_inside_branch_and_residual_body():
    body = ops.conv(4) >> ops.global_pool() >> ops.max_pool(2)
    msg = bind_error((ops.identity() >> (ops.identity() + ops.residual(body))).named("stage2"), Field(4))
    assert msg.startswith("stage2[1].branch[1].body[2]: max_pool expects a rank-2 field"), msg


def test_linear_before_pooling():
    msg = bind_error(ops.conv(8) >> ops.linear(10), Field(3))
    assert msg.startswith("[1]: linear expects a rank-0 field (add ops.global_pool() first)")


def test_sum_of_different_widths():
    msg = bind_error(ops.conv(8) + ops.conv(4), Field(3))
    assert "sum expects branches that produce one field" in msg
    assert "Field(8)" in msg and "Field(4)" in msg


def test_sum_of_different_strides():
    msg = bind_error(ops.conv(8) + ops.conv(8, stride=2), Field(3))
    assert "sum expects branches that keep one spatial size" in msg and "same stride" in msg


def test_residual_width_change_suggests_shortcut():
    msg = bind_error(ops.residual(ops.conv(16)), Field(8))
    assert "residual expects a body that keeps the shortcut's field" in msg
    assert "shortcut=" in msg


def test_residual_stride_change():
    msg = bind_error(ops.residual(ops.conv(8, stride=2)), Field(8))
    assert "spatial size" in msg and "shortcut=" in msg


def test_residual_with_projection_shortcut_binds():
    m = ops.residual(ops.conv(16, stride=2), shortcut=ops.conv(16, k=1, stride=2)).bind(Field(8))
    assert m.out_type == Field(16)


def test_concat_real_and_complex():
    msg = bind_error(ops.concat(ops.identity(), ops.conv(3)), Field(3, kind="complex"))
    assert msg.startswith("branch[1]: conv expects a real field")
    with pytest.raises(TypeMismatch, match="one kind and rank"):
        from operad.operators.algebra.combinators import concat_types
        concat_types([Field(3), Field(3, kind="complex")])


def test_minimum_of_complex_fields():
    msg = bind_error(ops.minimum(ops.identity(), ops.identity()), Field(2, kind="complex"))
    assert "minimum expects real branches" in msg


def test_groups_must_divide_channels():
    msg = bind_error(ops.conv(8, groups=4), Field(6))
    assert "conv expects input channels divisible by groups=4" in msg


def test_dense_layer_must_keep_size():
    msg = bind_error(ops.dense(ops.conv(4, stride=2), 2), Field(4))
    assert "dense expects layers that keep the spatial size" in msg


def test_rearrange_indivisible_axis():
    msg = bind_error(ops.rearrange("b (g c) h w -> b (c g) h w", g=4), Field(6))
    assert "rearrange expects an axis of size divisible by 4" in msg


def test_rearrange_bad_patterns():
    with pytest.raises(ValueError, match="same axes"):
        ops.rearrange("b c h w -> b c h")
    with pytest.raises(ValueError, match="give sizes"):
        ops.rearrange("b (g c) h w -> b (c g) h w").out_type(Field(8))
    with pytest.raises(ValueError, match="does not use"):
        ops.rearrange("b c h w -> b c w h", z=2)


def test_symbolic_field_cannot_bind():
    C = sympy.Symbol("C", positive=True, integer=True)
    with pytest.raises(TypeError, match="concrete channels"):
        ops.conv(8).bind(Field(C))


def test_uncalled_constructor_in_expression():
    with pytest.raises(TypeError, match=r"ops.relu\(\) instead of ops.relu"):
        ops.conv(8) >> ops.relu


def test_unknown_operator_suggests_close_names():
    with pytest.raises(AttributeError, match="did you mean ops.conv"):
        ops.convv


def test_bad_hyper_parameters():
    with pytest.raises(ValueError, match="padding must be"):
        ops.conv(8, padding="full")
    with pytest.raises(ValueError, match="stride must be a positive int"):
        ops.conv(8, stride=0)
    with pytest.raises(ValueError, match="positive int n"):
        ops.conv(8) * 0
    with pytest.raises(ValueError, match="identifier"):
        ops.conv(8).named("stage 1")
    with pytest.raises(ValueError, match="unknown activation"):
        from operad.operators.activation import Activation
        Activation("swishy")
    with pytest.raises(ValueError, match="dropout p"):
        ops.dropout(1.5)


def test_bad_fields():
    with pytest.raises(ValueError, match="must be positive"):
        Field(0)
    with pytest.raises(ValueError, match="kind must be"):
        Field(3, kind="quaternion")
    with pytest.raises(ValueError, match="order groups"):
        Field(3, kind="complex", orders=(0, 1))


def test_error_survives_pickling():
    import pickle
    try:
        ops.conv(8).named("stem").bind(Field(3, kind="complex"))
    except TypeMismatch as e:
        again = pickle.loads(pickle.dumps(e))
        assert str(again) == str(e)

