"""Export to ONNX (run in onnxruntime, compared with PyTorch) and to torch.export
programs (saved, reloaded, compared), one registered network per operator family.

The default run exports a few small networks; ``-m slow`` covers every family."""
import json
import os

import pytest
import torch

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

from operad.experiments.cli import main  # noqa: E402
from operad.experiments.export import ExportError, compare, export_model, resolve_model  # noqa: E402
from operad.models import create_model  # noqa: E402

slow = pytest.mark.slow

# (model, options, input shape): one network per operator family, at small sizes
FAMILIES = [
    pytest.param("pide_net_grid", {"blocks": 1}, (1, 3, 16, 16), id="grid_fractional_laplacian_fft"),
    pytest.param("cifar10_speedrun", {"widths": (8, 16, 16)}, (1, 3, 32, 32), id="whiten_scale"),
    pytest.param("hnet_digits", {"widths": (2, 2, 4)}, (1, 1, 20, 20), id="harmonic"),
    pytest.param("twin_resnet18_cifar", {"width": 8}, (1, 3, 32, 32), id="dtcwpt_twin", marks=slow),
    pytest.param("min_resnet20", {}, (1, 3, 16, 16), id="min", marks=slow),
    pytest.param("dendritic_resnet20", {}, (1, 3, 16, 16), id="dendritic", marks=slow),
    pytest.param("g_ghost_resnet56", {}, (1, 3, 16, 16), id="ghost", marks=slow),
    pytest.param("ghostnet_100", {}, (1, 3, 64, 64), id="ghost_imagenet", marks=slow),
    pytest.param("sk_resnext29", {"cardinality": 2, "base_width": 4}, (1, 3, 16, 16), id="sk", marks=slow),
    pytest.param("mgic_resnet56", {}, (1, 3, 16, 16), id="mgic", marks=slow),
    pytest.param("lraspp_mobilenetv2", {"width": 0.5}, (1, 3, 64, 64), id="seg_lraspp", marks=slow),
    pytest.param("deeplabv3_mobilenetv2", {"width": 0.5}, (1, 3, 64, 64), id="seg_deeplabv3_aspp", marks=slow),
    pytest.param("fcn_resnet18", {}, (1, 3, 64, 64), id="seg_fcn", marks=slow),
    pytest.param("threshnet79", {}, (1, 3, 32, 32), id="threshnet", marks=slow),
    pytest.param("hardnet68_cifar", {}, (1, 3, 32, 32), id="hardnet", marks=slow),
    pytest.param("densenet_bc100_k12", {}, (1, 3, 16, 16), id="densenet", marks=slow),
    pytest.param("mobilenetv2_050_cifar", {}, (1, 3, 32, 32), id="inverted_residual", marks=slow),
    pytest.param("preact_resnet20", {}, (1, 3, 32, 32), id="preact", marks=slow),
    pytest.param("allcnn_c", {}, (1, 3, 32, 32), id="allcnn", marks=slow),
    pytest.param("pide_local", {}, (1, 3, 16, 16), id="pide_local", marks=slow),
    pytest.param("twin_alexnet", {}, (1, 3, 64, 64), id="dtcwpt_alexnet", marks=slow),
    pytest.param("nonlocal_resnet20", {"nonlocal_op": "weighted"}, (1, 3, 16, 16), id="weighted_laplacian",
                 marks=slow),
    pytest.param("pide_net", {"blocks": 1, "nonlocal_op": "grid_inverse"}, (1, 3, 16, 16),
                 id="grid_inverse_fractional_laplacian", marks=slow),
]

# every binary and quantized network (binarize/quantize rewrites), with trained-like BN statistics:
# a fresh net's BN has mean 0, so an average pool of +-alpha sums that is exactly 0 lands on sign's jump
BINARY = [pytest.param(n, (1, 3, 64, 64) if n.startswith(("alexnet", "resnet18")) else (1, 3, 32, 32), id=n,
                       marks=slow)
          for n in [f"{b}_{k}" for b in ("resnet20", "nin_cifar", "resnet18", "alexnet") for k in ("bwn", "xnor", "qnn")]
          + ["bnn_vgg_cifar"]]

# binary (XNOR, BWN) and quantized (QNN) layers in one small net, fresh: XNOR's +-1 sums hit exact ties
BINARY_EXPR = ("ops.conv(8) >> ops.bn() >> ops.binary_conv(64, scheme='xnor', bias=False) >> ops.bn() "
               ">> ops.binary_conv(64, scheme='xnor', bias=False) >> ops.max_pool() >> ops.bn() "
               ">> ops.binary_conv(16, scheme='bwn') >> ops.quant_conv(16, w_bits=1, a_bits=2) >> ops.global_pool() "
               ">> ops.binary_linear(10, scheme='xnor')")

# networks ONNX cannot express, and the operation that stops it
PT2_ONLY = [
    pytest.param("nonlocal_resnet20", {}, (1, 3, 16, 16), "lgamma", id="feature_fractional_laplacian", marks=slow),
    pytest.param("pide_net", {"blocks": 1}, (1, 3, 16, 16), "lgamma", id="pide_net", marks=slow),
    pytest.param("nonlocal_resnet20", {"nonlocal_op": "inverse"}, (1, 3, 16, 16), "lgamma",
                 id="feature_inverse_fractional_laplacian", marks=slow),
]

# a tiny network with the paper's feature-space fractional Laplacian (Gamma constants via lgamma)
FEATURE_FRAC = "ops.conv(4) >> ops.fractional_laplacian(0.5, space='feature') >> ops.global_pool() >> ops.linear(3)"


@pytest.mark.parametrize("name,kw,shape", FAMILIES)
def test_onnx_runs_in_onnxruntime_like_pytorch(tmp_path, name, kw, shape):
    model = create_model(name, **kw)
    r = export_model(model, shape, str(tmp_path / f"{name}.onnx"), "onnx")
    assert os.path.getsize(r["path"]) > 0
    assert r["max_abs_diff"] <= 1e-4 + 1e-3 * r["output_abs_max"]  # untrained deep nets can output ~1e3


def test_binary_and_quantized_layers_run_in_onnxruntime_like_pytorch(tmp_path):
    torch.manual_seed(0)
    model, shape = resolve_model(BINARY_EXPR, (2, 3, 16, 16))
    r = export_model(model, shape, str(tmp_path / "binary.onnx"), "onnx")
    assert r["max_abs_diff"] <= 1e-5 * max(1.0, r["output_abs_max"]) and r["inputs_differing"] == 0


@pytest.mark.parametrize("name,shape", BINARY)
def test_registered_binary_and_quantized_networks_export_to_onnx(tmp_path, name, shape):
    from operad.experiments.gpu_suite import _settle

    torch.manual_seed(0)
    model = _settle(create_model(name))
    r = export_model(model, shape, str(tmp_path / f"{name}.onnx"), "onnx")
    assert r["max_abs_diff"] <= 1e-4 + 1e-3 * r["output_abs_max"]


class _FakeSession:
    """onnxruntime stand-in: the model's own output, off by 1 on the first ``wrong`` calls."""

    def __init__(self, model, wrong):
        self.model, self.wrong = model, wrong

    def get_inputs(self):
        return [type("I", (), {"name": "x"})()]

    def run(self, _, feed):
        with torch.no_grad():
            y = self.model(torch.from_numpy(feed["x"])).numpy()
        self.wrong -= 1
        return [y + 1.0 if self.wrong >= 0 else y]


def test_a_threshold_tie_on_one_input_is_not_an_export_error(monkeypatch):
    """A network that rounds activations may differ on an input with a value on a threshold;
    another input decides. An export error differs on every input; a float network gets one try."""
    import onnxruntime

    from operad.experiments import export as E

    quantized, _ = resolve_model(BINARY_EXPR, (1, 3, 8, 8))
    plain, _ = resolve_model("ops.conv(4) >> ops.global_pool() >> ops.linear(3)", (1, 3, 8, 8))
    assert len(E.activation_quantizers(quantized)) == 4 and E.activation_quantizers(plain) == []
    x = torch.randn(1, 3, 8, 8)
    for model, wrong, ok in ((quantized, 1, True), (quantized, E.TIE_INPUTS, False), (plain, 1, False)):
        session = _FakeSession(model.eval(), wrong)
        monkeypatch.setattr(onnxruntime, "InferenceSession", lambda *a, **k: session)
        if ok:
            assert E._check_in_onnxruntime(model, x, "m.onnx")["inputs_differing"] == 1
        else:
            with pytest.raises(ExportError, match="exceeds") as e:
                E._check_in_onnxruntime(model, x, "m.onnx")
            assert ("on each of 3 more inputs" in str(e.value)) == (model is quantized)
            assert session.wrong == 0  # tried once (float) or TIE_INPUTS times, never more


@pytest.mark.parametrize("name,kw,shape,op", PT2_ONLY)
def test_pt2_only_networks_fail_onnx_naming_the_operator(tmp_path, name, kw, shape, op):
    model = create_model(name, **kw)
    with pytest.raises(ExportError, match=rf"{op}.*feature_nonlocal.*--format pt2"):
        export_model(model, shape, str(tmp_path / "m.onnx"), "onnx")
    assert export_model(model, shape, str(tmp_path / "m.pt2"), "pt2")["max_abs_diff"] < 1e-4


def test_onnx_failure_names_operator_and_module_path(tmp_path):
    model, shape = resolve_model(FEATURE_FRAC, (1, 3, 8, 8))
    with pytest.raises(ExportError) as e:
        export_model(model, shape, str(tmp_path / "m.onnx"), "onnx")
    msg = str(e.value)
    assert "lgamma" in msg and "ops.feature_nonlocal" in msg and "FeatureNonlocalModule" in msg
    assert "'1'" in msg and "--format pt2" in msg


def test_pt2_saved_reloaded_and_compared(tmp_path):
    model, shape = resolve_model(FEATURE_FRAC, (2, 3, 8, 8))
    r = export_model(model, shape, str(tmp_path / "m.pt2"), "pt2")
    assert r["max_abs_diff"] < 1e-5
    loaded = torch.export.load(r["path"]).module()
    x = torch.randn(2, 3, 8, 8)
    assert torch.allclose(loaded(x), model.eval()(x), atol=1e-5)


def test_compare_rejects_disagreement_and_nonfinite():
    ref = torch.ones(2, 3)
    assert compare(ref, ref + 1e-6, "x") < 1e-5
    with pytest.raises(ExportError, match="exceeds"):
        compare(ref, ref + 0.1, "x")
    with pytest.raises(ExportError, match="non-finite"):
        compare(ref, torch.full((2, 3), float("nan")), "x")
    with pytest.raises(ExportError, match="shape"):
        compare(ref, torch.ones(3, 2), "x")


def test_cli_export_onnx_with_fuse_and_pt2(tmp_path, capsys):
    expr = "ops.conv(4) >> ops.bn() >> ops.relu() >> ops.global_pool() >> ops.linear(3)"
    out = tmp_path / "m.onnx"
    assert main(["export", expr, "--format", "onnx", "--deploy", "fuse", "--input", "1,3,8,8",
                 "--out", str(out)]) == 0
    msg = capsys.readouterr().out
    assert out.exists() and "onnxruntime matches PyTorch" in msg and "fuse" in msg
    import onnx

    assert not any(n.op_type == "BatchNormalization" for n in onnx.load(str(out)).graph.node)  # fused away
    assert main(["export", expr, "--format", "pt2", "--input", "1,3,8,8", "--out", str(tmp_path / "m.pt2")]) == 0
    assert "reloaded program matches" in capsys.readouterr().out


def test_wrong_input_shape_says_which_option(tmp_path):
    model, _ = resolve_model("ops.conv(4) >> ops.global_pool() >> ops.linear(3)", None)
    with pytest.raises(ExportError, match=r"does not run at input \(1, 1, 8, 8\).*--input N,C,H,W"):
        export_model(model, (1, 1, 8, 8), str(tmp_path / "m.onnx"), "onnx")


def test_cli_export_unsupported_suggests_pt2(tmp_path, capsys):
    rc = main(["export", FEATURE_FRAC, "--input", "1,3,8,8", "--out", str(tmp_path / "m.onnx")])
    err = capsys.readouterr().err
    assert rc == 2 and "lgamma" in err and "--format pt2" in err


def test_small_epsilons_survive_onnx_export(tmp_path):
    """harmonic_relu divides by sqrt(|z|^2 + eps^2): at z = 0 it is 0/eps in PyTorch, and must not
    become 0/0 in onnxruntime (the exporter's optimizer drops ``+ 1e-8``; operad turns it off)."""
    from operad.experiments.export import export_onnx

    model, _ = resolve_model("ops.harmonic_conv(2, orders=(0, 1), k=3) >> ops.harmonic_relu()", (1, 3, 8, 8))
    x = torch.zeros(1, 3, 8, 8)
    x[..., :2, :2] = 1.0  # zero almost everywhere: z = 0 far from the corner
    r = export_onnx(model, x, str(tmp_path / "h.onnx"))
    assert r["max_abs_diff"] < 1e-5
