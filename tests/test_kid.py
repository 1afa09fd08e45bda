"""KID (Binkowski et al.; torch-fidelity's definition) in the robustness report: the formula
on a hand-checked case, about 0 for a set against itself, growing with the corruption, the
network's penultimate features, the sweeps' JSON/PNG/table, torch-fidelity agreement (where it
imports) and a clear error for Inception-space metrics without it."""
import json
import os
import sys

import numpy as np
import pytest
import torch

import operad.experiments.evaluate  # noqa: F401
from operad.experiments.data import CIFAR10_CLASSES, ArrayData
from operad.experiments.fidelity import InceptionMetrics, crosscheck, fidelity_available, load_inception_weights
from operad.experiments.kid import FeatureTap, KidSettings, classifier_layer, kid, mmd2_unbiased, penultimate_features
from operad.experiments.synthetic import class_images
from operad.operators.algebra.errors import OperadError

ev = sys.modules["operad.experiments.evaluate"]
EXPR = ("ops.conv(16) >> ops.bn() >> ops.relu() >> ops.max_pool() >> ops.conv(32) >> ops.bn() >> ops.relu() "
        ">> ops.global_pool() >> ops.linear(10)")


@pytest.fixture(scope="module")
def net():
    from operad.experiments.config import Config
    from operad.experiments.train import build_model

    torch.manual_seed(0)
    return build_model(Config(model_expr=EXPR), 10).eval()


@pytest.fixture(scope="module")
def data():
    labels = np.repeat(np.arange(10), 12)
    return ArrayData("syn", "test", class_images(labels), labels, list(CIFAR10_CLASSES))


def test_hand_checked_case():
    """1-D features, k(x, y) = (x y + 1)^3; X = {0, 1}, Y = {1, 2}, one subset of both points:
    Kxx off-diagonal 1 + 1, Kyy off-diagonal 27 + 27, Kxy 1 + 1 + 8 + 27 = 37:
    MMD^2 = 2/2 + 54/2 - 2 * 37/4 = 9.5 (every subset is the whole set, so std 0)."""
    x, y = torch.tensor([[0.0], [1.0]]), torch.tensor([[1.0], [2.0]])
    r = kid(x, y, subsets=3, subset_size=10)
    assert r == {"mean": 9.5, "std": 0.0, "subsets": 3, "subset_size": 2}
    k = lambda a, b: (a @ b.T + 1) ** 3  # noqa: E731
    assert mmd2_unbiased(k(x, x), k(x, y), k(y, y)) == 9.5


def test_matches_torch_fidelity_formula_with_its_subsets():
    """The subsets are torch-fidelity's: RandomState(seed).choice(n, m, replace=False), first set then second."""
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(30, 5, generator=g), torch.randn(40, 5, generator=g) + 0.5
    rng = np.random.RandomState(7)
    want = []
    for _ in range(4):
        a, b = x[rng.choice(30, 10, replace=False)].double(), y[rng.choice(40, 10, replace=False)].double()
        kxx, kyy, kxy = [(p @ q.T / 5 + 1) ** 3 for p, q in ((a, a), (b, b), (a, b))]
        want.append(((kxx.sum() - kxx.trace() + kyy.sum() - kyy.trace()) / 90 - 2 * kxy.sum() / 100).item())
    r = kid(x, y, subsets=4, subset_size=10, seed=7)
    assert r["mean"] == pytest.approx(np.mean(want), rel=1e-12) and r["std"] == pytest.approx(np.std(want), rel=1e-9)
    # the subset-by-subset path (large sets) gives the same numbers as the precomputed kernels
    from operad.experiments import kid as K

    old, K._FULL_KERNEL_ENTRIES = K._FULL_KERNEL_ENTRIES, 0
    try:
        assert kid(x, y, subsets=4, subset_size=10, seed=7)["mean"] == pytest.approx(r["mean"], rel=1e-12)
    finally:
        K._FULL_KERNEL_ENTRIES = old


def test_about_zero_for_one_distribution_and_growing_with_the_shift():
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(500, 16, generator=g), torch.randn(500, 16, generator=g)
    vals = [kid(x, y + s, 50, 200)["mean"] for s in (0.0, 0.1, 0.3, 1.0)]
    assert abs(vals[0]) < 0.01 and vals == sorted(vals) and vals[-1] > 100 * abs(vals[0])


def test_bad_feature_sets_are_clear_errors():
    with pytest.raises(OperadError, match="same"):
        kid(torch.zeros(4, 3), torch.zeros(4, 2))
    with pytest.raises(OperadError, match="at least 2 samples"):
        kid(torch.zeros(1, 3), torch.zeros(4, 3))
    with pytest.raises(OperadError, match="non-finite"):
        kid(torch.full((4, 3), float("nan")), torch.zeros(4, 3))
    with pytest.raises(OperadError, match="subset"):
        KidSettings(subsets=0)


def test_penultimate_features_are_timms_pre_logits():
    from operad.models import create_model

    torch.manual_seed(0)
    m = create_model("nin_cifar").eval()  # a conv 1x1 classifier: its input is pooled over space
    x = torch.randn(3, 3, 32, 32)
    with FeatureTap(m) as tap, torch.no_grad():
        m(x)
        got = tap.take()
        want = m.forward_head(m.forward_features(x), pre_logits=True)
    assert got.shape == (3, 192) and torch.allclose(got, want, atol=1e-6)
    assert classifier_layer(m) is m.get_classifier()


def test_sweeps_report_kid_about_zero_clean_and_growing_with_corruption(net, data, tmp_path):
    k = KidSettings(50, 100)
    j = ev.jpeg_sweep(net, data, "cpu", 64, qualities=(50, 20, 5), out_dir=str(tmp_path), kid=k)
    r = ev.rotation_sweep(net, data, "cpu", 64, angles=(0, 10, 45), out_dir=str(tmp_path), kid=k)
    s = ev.shift_consistency(net, data, "cpu", 64, max_shift=3, out_dir=str(tmp_path), kid=k)
    jk = [j["kid"][q]["mean"] for q in ("50", "20", "5")]
    rk = [r["kid"][a]["mean"] for a in ("0", "10", "45")]
    sk = [s["kid"][d]["mean"] for d in ("0", "1", "2", "3")]
    assert jk == sorted(jk) and rk == sorted(rk) and sk[1:] == sorted(sk[1:])
    assert abs(rk[0]) < 0.1 * rk[-1] and abs(sk[0]) < sk[-1]  # the set against itself: about 0
    saved = json.load(open(tmp_path / "jpeg.json"))
    assert saved["kid"]["5"]["std"] > 0 and saved["kid_settings"]["dim"] == 32
    assert saved["kid_settings"]["subset_size"] == 100 and saved["kid_settings"]["subsets"] == 50
    table = ev.sweep_table("rotation", r)
    assert "KID (network features)" in table and f"{r['kid']['45']['mean']:.4f} +- " in table


def test_sweep_png_shows_kid_beside_accuracy(net, data, tmp_path):
    from PIL import Image

    ev.rotation_sweep(net, data, "cpu", 64, angles=(0, 45), out_dir=str(tmp_path / "with"), kid=KidSettings(5, 50))
    ev.rotation_sweep(net, data, "cpu", 64, angles=(0, 45), out_dir=str(tmp_path / "without"), kid=None)
    w_with = Image.open(tmp_path / "with" / "rotation.png").size[0]
    w_without = Image.open(tmp_path / "without" / "rotation.png").size[0]
    assert w_with > 1.5 * w_without  # a second panel
    assert "kid" not in json.load(open(tmp_path / "without" / "rotation.json"))


def test_torch_fidelity_with_the_network_as_extractor_agrees():
    if not fidelity_available():
        pytest.skip("torch-fidelity does not import here (it needs torchvision)")
    r = crosscheck()
    assert r["rel_diff"] < 1e-3, r
    assert r["operad"]["mean"] > r["operad"]["std"] > 0  # JPEG q20 of blocky images moves the features


def test_inception_metrics_need_torch_fidelity_or_say_so(tmp_path):
    w = tmp_path / "inception.pth"
    torch.save({"a": torch.zeros(1)}, w)
    if fidelity_available():
        pytest.skip("torch-fidelity imports here: the error path is not reachable")
    with pytest.raises(OperadError, match=r"Inception space.*needs torch-fidelity.*pip install torch-fidelity"):
        InceptionMetrics(str(w))


def test_inception_weights_are_read_as_data_only(tmp_path):
    class Boom:
        def __reduce__(self):
            return os.system, (f"touch {tmp_path / 'pwned'}",)

    import pickle

    evil = tmp_path / "evil.pth"
    evil.write_bytes(pickle.dumps({"w": Boom()}, protocol=2))
    with pytest.raises(OperadError, match="cannot read as Inception weights"):
        load_inception_weights(str(evil))
    assert not (tmp_path / "pwned").exists()
    with pytest.raises(OperadError, match="does not exist"):
        load_inception_weights(str(tmp_path / "missing.pth"))
    torch.save([1, 2], tmp_path / "list.pth")
    with pytest.raises(OperadError, match="expected a state dict"):
        load_inception_weights(str(tmp_path / "list.pth"))
    torch.save({"state_dict": {"w": torch.ones(2)}}, tmp_path / "ok.pth")
    assert torch.equal(load_inception_weights(str(tmp_path / "ok.pth"))["w"], torch.ones(2))


def test_cli_robustness_prints_kid_table_and_checks_inception_first(tmp_path, capsys, monkeypatch):
    from operad.experiments.cli import main
    from operad.experiments.config import dump_toml
    from operad.experiments.synthetic import write_cifar_pickle

    monkeypatch.setenv("OPERAD_CACHE", str(tmp_path / "cache"))
    write_cifar_pickle(str(tmp_path / "data"), per_class=4, test_per_class=6)
    cfg = tmp_path / "exp.toml"
    cfg.write_text(dump_toml({"claim": "kid", "epochs": 1, "batch_size": 20, "progress": False, "threads": 1,
                              "plot_every": 0, "runs": [{"name": "a", "model_expr": EXPR}]}))
    assert main(["train", str(cfg), "--data", str(tmp_path / "data"), "--out", str(tmp_path / "runs")]) == 0
    run = str(tmp_path / "runs" / "a")
    capsys.readouterr()
    assert main(["robustness", run, "--data", str(tmp_path / "data"), "--rotation", "--angles", "0,90",
                 "--kid-subsets", "10", "--kid-subset-size", "30"]) == 0
    out = capsys.readouterr().out
    assert "| rotation (deg) | top1 | KID (network features) |" in out and "10 subsets of 30" in out
    assert "every subset is the whole set" not in out  # 60 test images, subsets of 30: a real spread
    rot = json.load(open(os.path.join(run, "robustness", "rotation.json")))
    assert rot["kid_settings"]["subset_size"] == 30 and set(rot["kid"]) == {"0", "90"}
    assert rot["kid"]["90"]["std"] > 0
    assert main(["robustness", run, "--data", str(tmp_path / "data"), "--rotation", "--angles", "0,90"]) == 0
    out = capsys.readouterr().out  # the default 1000 is clipped to the 60 images: the note says what that means
    assert "100 subsets of 60 (all 60 images: every subset is the whole set, so the std is 0" in out
    if not fidelity_available():
        rc = main(["robustness", run, "--data", str(tmp_path / "data"), "--inception-weights", str(cfg)])
        err = capsys.readouterr().err
        assert rc == 2 and "needs torch-fidelity" in err and len(err.strip().splitlines()) == 1


def test_inception_fid_and_kid_from_a_weight_file(tmp_path, monkeypatch):
    """Where torch-fidelity imports: its InceptionV3 with weights from a file (random ones here,
    saved by the test; nothing downloaded): FID of a set with itself about 0, larger when corrupted."""
    if not fidelity_available():
        pytest.skip("torch-fidelity does not import here (it needs torchvision)")
    from torch_fidelity import feature_extractor_inceptionv3 as fe

    monkeypatch.setattr(fe, "load_state_dict_from_url", lambda *a, **k: None)
    monkeypatch.setattr(fe.FeatureExtractorInceptionV3, "load_state_dict", lambda self, sd: None)
    torch.manual_seed(0)
    sd = fe.FeatureExtractorInceptionV3("inception-v3-compat", ["2048"]).state_dict()
    monkeypatch.undo()
    for k, v in sd.items():  # He-scaled convolutions, so 94 random layers keep the signal
        if v.dim() == 4:
            v.normal_(0, (2 / v[0].numel()) ** 0.5)
    torch.save(sd, tmp_path / "inception.pth")
    labels = np.repeat(np.arange(3), 10)
    clean = class_images(labels)
    with InceptionMetrics(str(tmp_path / "inception.pth"), KidSettings(20, 15)) as inc:
        same, moved = inc.measure(clean, clean), inc.measure(clean, ev.jpeg_recode(clean, 5))
        path = inc.path
    assert abs(same["fid"]) < 1e-3 * moved["fid"]
    assert abs(same["kid_mean"]) <= 2 * same["kid_std"] and moved["kid_mean"] > 5 * abs(same["kid_mean"])
    assert not os.path.exists(path)  # operad's copy of the weights is removed


@pytest.mark.parametrize("mod", ["operad.experiments.kid", "operad.experiments.fidelity", "operad.experiments.evaluate"])
def test_docstring_examples(mod):
    import doctest
    import importlib

    res = doctest.testmod(importlib.import_module(mod))
    assert res.failed == 0 and res.attempted > 0
