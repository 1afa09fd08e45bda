"""operad.theory.redundancy: per-sample filter gradients, their singular spectrum,
effective rank, maximal pruning ratio and filter scores; the report, its plot and
the ``operad redundancy`` command."""
import json

import pytest
import torch
import torch.nn.functional as F

from operad import Field, ops
from operad.operators.algebra.errors import SizeError
from operad.experiments.cli import main
from operad.experiments.synthetic import write_cifar_pickle
from operad.theory import RedundancyReport, redundancy
from operad.theory.redundancy import (RedundancyError, effective_rank, gradient_matrix, per_sample_gradients,
                                      prunable_layers)


def _net(seed=0):
    """conv -> bn -> relu -> grouped conv -> relu -> pool -> linear -> relu -> linear, float64,
    with batch-norm statistics that are not the defaults."""
    torch.manual_seed(seed)
    t = (ops.conv(6) >> ops.bn() >> ops.relu() >> ops.conv(4, groups=2) >> ops.relu() >> ops.global_pool()
         >> ops.linear(5) >> ops.relu() >> ops.linear(3))
    m = t.bind(Field(3)).double()
    bn = m[1]
    bn.running_mean.uniform_(-0.5, 0.5)
    bn.running_var.uniform_(0.5, 2.0)
    return m


def _data(n=7, seed=1, batches=1):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(n, 3, 6, 6, generator=g, dtype=torch.float64), torch.randint(0, 3, (n,), generator=g))
            for _ in range(batches)]


def test_per_sample_gradients_equal_single_sample_autograd():
    m = _net().train()
    stats = m[1].running_mean.clone()
    x, y = _data()[0]
    g = per_sample_gradients(m, x, y)
    assert list(g) == ["[0]", "[3]", "[6]"]  # the output layer [8] is not prunable
    assert m.training and torch.equal(m[1].running_mean, stats)  # flag restored, statistics untouched
    m.eval()
    for n in range(x.shape[0]):
        m.zero_grad()
        F.cross_entropy(m(x[n:n + 1]), y[n:n + 1]).backward()
        for path, i in (("[0]", 0), ("[3]", 3), ("[6]", 6)):
            w = m[i].weight
            assert g[path][n].shape == (w.shape[0], w[0].numel())
            torch.testing.assert_close(g[path][n], w.grad.reshape(w.shape[0], -1), rtol=1e-12, atol=1e-14)


def test_spectrum_is_that_of_the_explicit_gradient_matrix():
    """The block-wise (TSQR) spectrum over two batches, fed three samples at a time,
    equals the singular values of the whole C x (N d) matrix."""
    m, data = _net(), _data(n=5, batches=2)
    rep = redundancy(m, data, batches=2, chunk=3, progress=False)
    assert rep.samples == 10 and rep.batches == 2
    for layer in rep.layers:
        g = torch.cat([per_sample_gradients(m, x, y, layers=[layer.path])[layer.path] for x, y in data])
        rows = torch.cat(list(g), dim=1)  # row c: filter c's gradient for sample 1, then sample 2, ...
        assert torch.equal(gradient_matrix(g), rows)
        s = torch.linalg.svdvals(rows)
        torch.testing.assert_close(layer.singular_values, s, rtol=1e-10, atol=1e-12 * float(s[0]))
        assert layer.effective_rank == effective_rank(s, 0.99)
        assert layer.max_prune_ratio == 1 - layer.effective_rank / layer.out_channels


def _singular_net(dead: bool):
    """8 filters in the first conv: filters 4..7 copy 0..3 (overlap singularity) and so do
    the next conv's weights on them; with ``dead`` filters 3 and 7 feed nothing
    (elimination singularity). The gradient matrix then has rank 4, or 3 with ``dead``."""
    torch.manual_seed(3)
    m = (ops.conv(8) >> ops.relu() >> ops.conv(6, k=1) >> ops.relu() >> ops.global_pool()
         >> ops.linear(3)).bind(Field(3)).double()
    with torch.no_grad():
        m[0].weight[4:] = m[0].weight[:4]
        m[0].bias.normal_()
        m[0].bias[4:] = m[0].bias[:4]
        m[2].weight[:, 4:] = m[2].weight[:, :4]
        if dead:
            m[2].weight[:, [3, 7]] = 0
    return m


@pytest.mark.parametrize("dead,rank", [(False, 4), (True, 3)])
def test_known_rank_is_detected_and_singular_filters_score_lowest(dead, rank):
    rep = redundancy(_singular_net(dead), _data(n=12), batches=1, energy=1.0, layers=["[0]"], progress=False)
    (layer,) = rep.layers
    s = layer.singular_values
    assert float(s[rank - 1]) > 1e-3 * float(s[0]) and float(s[rank]) < 1e-12 * float(s[0])
    assert layer.effective_rank == rank and layer.max_prune_ratio == 1 - rank / 8
    scores = layer.filter_scores
    top = torch.argsort(scores, descending=True)[:rank].tolist()
    assert sorted(c % 4 for c in top) == list(range(rank))  # one filter of each live pair
    assert float(scores.sort(descending=True).values[rank]) < 1e-10 * float(scores.max())
    # the same net without the copies is full rank
    free = redundancy(_net(), _data(n=12), batches=1, energy=1.0, layers=["[0]"], progress=False)
    assert free.layers[0].effective_rank == 6


def test_effective_rank_thresholds():
    s = torch.tensor([2.0, 1.0, 1.0, 0.0], dtype=torch.float64)  # energies 4, 1, 1, 0 of 6
    assert effective_rank(s, 1.0) == 3
    assert effective_rank(s, 4 / 6) == 1  # exactly reached counts
    assert effective_rank(s, 4 / 6 + 1e-9) == 2
    assert effective_rank(s, 5 / 6) == 2 and effective_rank(s, 1e-9) == 1
    assert effective_rank(torch.zeros(5), 0.99) == 0 and effective_rank(torch.zeros(0), 0.5) == 0
    for bad in (0, 0.0, -0.1, 1.0000001, 2, float("nan"), True, "0.9", None):
        with pytest.raises(RedundancyError, match=r"energy must be a number in \(0, 1\]"):
            effective_rank(s, bad)


def test_report_round_trips_through_json_and_plots_a_png(tmp_path):
    rep = redundancy(_net(), _data(n=6, batches=2), batches=2, energy=0.9, progress=False)
    back = RedundancyReport.from_dict(json.loads(json.dumps(rep.to_dict())))
    assert back.table() == rep.table() and back.skipped == rep.skipped == {
        "[8]": "output layer: its width is the network's output"}
    for a, b in zip(rep.layers, back.layers):
        assert torch.equal(a.singular_values, b.singular_values) and torch.equal(a.filter_scores, b.filter_scores)
        assert (a.effective_rank, a.max_prune_ratio) == (b.effective_rank, b.max_prune_ratio)
    assert set(rep.filter_scores) == set(rep.max_prune_ratios) == {"[0]", "[3]", "[6]"}
    assert rep.filter_scores["[0]"].shape == (6,)
    loose = rep.with_energy(0.5)
    assert all(l.effective_rank <= k.effective_rank for l, k in zip(loose.layers, rep.layers))
    assert "rank@0.9" in rep.table() and "12 samples in 2 batches" in rep.table()
    png = tmp_path / "sub" / "spectra.png"
    assert rep.plot(str(png)) == str(png)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    with pytest.raises(RedundancyError, match="not a redundancy report"):
        RedundancyReport.from_dict({"layers": [{"path": "x"}]})


def test_layer_selection_and_skips():
    m = (ops.conv(8) >> ops.relu() >> ops.conv(8, groups=0) >> ops.conv(4, k=1) >> ops.global_pool()
         >> ops.linear(10)).bind(Field(3))
    found, skipped = prunable_layers(m)
    assert list(found) == ["[0]", "[3]"] and set(skipped) == {"[2]", "[5]"}
    assert skipped["[2]"].startswith("depthwise")
    found, skipped = prunable_layers(m, ["[5]", "[0]"])  # the output layer when asked for
    assert list(found) == ["[5]", "[0]"] and list(skipped) == ["[2]"]
    with pytest.raises(RedundancyError, match=r"no prunable layer at '\[1\]'.*\[0\], \[3\]"):
        prunable_layers(m, ["[1]"])


def test_bad_input_is_a_clear_error():
    m = _net()
    with pytest.raises(RedundancyError, match="no prunable layer.*skipped: \\[1\\] \\(output layer"):
        redundancy((ops.global_pool() >> ops.linear(3)).bind(Field(3)), _data(), progress=False)
    with pytest.raises(RedundancyError, match="no prunable layer"):
        redundancy(ops.relu().bind(Field(3)), _data(), progress=False)
    with pytest.raises(RedundancyError, match="bound operad module"):
        redundancy(torch.nn.Conv2d(3, 4, 3), _data(), progress=False)
    with pytest.raises(RedundancyError, match="the data yielded no batches"):
        redundancy(m, [], progress=False)
    with pytest.raises(RedundancyError, match="energy must be"):
        redundancy(m, _data(), energy=1.5, progress=False)
    with pytest.raises(RedundancyError, match="batches must be a positive int"):
        redundancy(m, _data(), batches=0, progress=False)
    with pytest.raises(RedundancyError, match="batch 0 is not a pair"):
        redundancy(m, [torch.zeros(2, 3, 6, 6)], progress=False)
    x, y = _data()[0]
    with pytest.raises(SizeError, match="the input has 1 channels"):
        redundancy(m, [(x[:, :1], y)], progress=False)
    with pytest.raises(RedundancyError, match="same positive number of samples"):
        redundancy(m, [(x, y[:3])], progress=False)
    with pytest.raises(RedundancyError, match="scalar per sample"):
        redundancy(m, [(x, y)], loss=lambda o, t: F.cross_entropy(o, t, reduction="none"), progress=False)
    with pytest.warns(UserWarning, match=r"\[6\] has 5 filters but only 1 samples x 4 weights"):
        redundancy(m, [(x[:1], y[:1])], progress=False)


EXPR = "ops.conv(8) >> ops.bn() >> ops.relu() >> ops.conv(8) >> ops.relu() >> ops.global_pool() >> ops.linear(10)"


@pytest.fixture
def cifar(tmp_path, monkeypatch):
    monkeypatch.setenv("OPERAD_CACHE", str(tmp_path / "cache"))
    write_cifar_pickle(str(tmp_path / "data"), per_class=4, test_per_class=1)
    return str(tmp_path / "data")


def test_cli_writes_report_table_and_plot(cifar, tmp_path, capsys):
    out = tmp_path / "red"
    assert main(["redundancy", "resnet20", "--data", cifar, "--batches", "2", "--batch-size", "6",
                 "--energy", "0.95", "--out", str(out), "--device", "cpu"]) == 0
    printed = capsys.readouterr().out
    rep = RedundancyReport.from_dict(json.loads((out / "report.json").read_text()))
    assert rep.samples == 12 and rep.energy == 0.95 and len(rep.layers) == 19
    assert rep.table() in printed and rep.table() in (out / "report.txt").read_text()
    assert "resnet20 on cifar10/train" in (out / "report.txt").read_text()
    assert (out / "spectra.png").read_bytes()[:4] == b"\x89PNG"
    expr = EXPR.replace("linear(10)", "linear(num_classes)")
    assert main(["redundancy", expr, "--data", cifar, "--batches", "1", "--out", str(out / "e")]) == 0
    assert json.loads((out / "e" / "report.json").read_text())["samples"] == 40  # 40 training images in all


def test_cli_reads_a_run_directory(cifar, tmp_path, capsys):
    from operad.experiments.config import dump_toml

    cfg = tmp_path / "c.toml"
    cfg.write_text(dump_toml({"model_expr": EXPR, "epochs": 1, "batch_size": 16, "progress": False, "threads": 1,
                              "plot_every": 0, "data_root": cifar, "out_dir": str(tmp_path / "runs"), "name": "r1"}))
    assert main(["train", str(cfg)]) == 0
    run = tmp_path / "runs" / "r1"
    assert main(["redundancy", str(run), "--batches", "1", "--batch-size", "8", "--out", str(tmp_path / "r")]) == 0
    assert json.loads((tmp_path / "r" / "report.json").read_text())["samples"] == 8


@pytest.mark.parametrize("argv,msg", [
    (["--energy", "0"], "expects a number in (0, 1]"),
    (["--energy", "1.2"], "expects a number in (0, 1]"),
    (["--batches", "0"], "expects an integer >= 1"),
])
def test_cli_rejects_bad_settings(cifar, tmp_path, capsys, argv, msg):
    with pytest.raises(SystemExit) as e:
        main(["redundancy", "resnet20", "--data", cifar, "--out", str(tmp_path / "o")] + argv)
    assert e.value.code == 2 and msg in capsys.readouterr().err


def test_cli_user_errors_are_one_line(cifar, tmp_path, capsys):
    assert main(["redundancy", "ops.global_pool() >> ops.linear(10)", "--data", cifar, "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("operad redundancy: error: ") and "no prunable layer" in err and err.count("\n") == 1
    assert main(["redundancy", EXPR.replace("linear(10)", "linear(4)"), "--data", cifar, "--out", str(tmp_path / "o")]) == 2
    assert "has 4 outputs but cifar10 has 10 classes" in capsys.readouterr().err
    assert main(["redundancy", "resnet2O", "--data", cifar, "--out", str(tmp_path / "o")]) == 2
    assert "unknown model 'resnet2O'" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
