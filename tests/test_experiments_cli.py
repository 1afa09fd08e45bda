"""The ``operad`` command: train with overrides, eval, robustness, results,
list, summary, verify, and error exits."""
import json
import os

import pytest

from operad.experiments.cli import main
from operad.experiments.config import dump_toml
from operad.experiments.synthetic import write_camvid, write_cifar_pickle

EXPR = "ops.conv(8) >> ops.bn() >> ops.relu() >> ops.global_pool() >> ops.linear(10)"


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("OPERAD_CACHE", str(tmp_path / "cache"))


@pytest.fixture
def trained(tmp_path, capsys):
    write_cifar_pickle(str(tmp_path / "data"), per_class=8, test_per_class=3)
    cfg = tmp_path / "exp.toml"
    cfg.write_text(dump_toml({"claim": "a small test", "epochs": 5, "batch_size": 16, "progress": False,
                              "threads": 1, "plot_every": 0,
                              "runs": [{"name": "a", "model_expr": EXPR},
                                       {"name": "b", "model_expr": EXPR.replace("8", "4")}]}))
    rc = main(["train", str(cfg), "epochs=1", "--data", str(tmp_path / "data"), "--out", str(tmp_path / "runs"),
               "lr=0.02"])
    assert rc == 0
    out = capsys.readouterr().out
    return tmp_path, out


def test_train_runs_with_overrides_and_prints_table(trained):
    tmp_path, out = trained
    assert "### exp" in out and "| a |" in out and "| b |" in out
    s = json.load(open(tmp_path / "runs" / "a" / "summary.json"))
    assert s["epochs"] == 1 and s["experiment"] == "exp" and s["claim"] == "a small test"
    import tomllib

    saved = tomllib.loads((tmp_path / "runs" / "b" / "config.toml").read_text())
    assert saved["lr"] == 0.02 and saved["epochs"] == 1 and "4" in saved["model_expr"]


def test_eval_and_robustness_and_results(trained, capsys):
    tmp_path, _ = trained
    run = str(tmp_path / "runs" / "a")
    assert main(["eval", run, "--data", str(tmp_path / "data")]) == 0
    out = capsys.readouterr().out
    r = json.load(open(os.path.join(run, "eval-test.json")))
    s = json.load(open(os.path.join(run, "summary.json")))
    assert r["top1"] == pytest.approx(s["top1"]) and f"top1 {r['top1']:.4f}" in out
    assert os.path.isfile(os.path.join(run, "confusion-test.png"))
    assert main(["robustness", run, "--data", str(tmp_path / "data"), "--angles", "0,90", "--max-shift", "2"]) == 0
    rob = os.path.join(run, "robustness")
    for f in ("jpeg.json", "jpeg.png", "shift.json", "shift.png", "rotation.json", "rotation.png"):
        assert os.path.isfile(os.path.join(rob, f)), f
    j = json.load(open(os.path.join(rob, "jpeg.json")))
    assert set(j["quality"]) == {"75", "80", "65", "58", "50", "40"}
    assert j["mean_corrupted"] == pytest.approx(sum(j["quality"][q] for q in ("80", "65", "58", "50", "40")) / 5)
    rot = json.load(open(os.path.join(rob, "rotation.json")))
    assert rot["angle"]["0"] == pytest.approx(s["top1"])
    md = tmp_path / "results.md"
    png = tmp_path / "results.png"
    assert main(["results", str(tmp_path / "runs"), "--out", str(md), "--plot", str(png)]) == 0
    text = md.read_text()
    assert text.count("| a |") == 1 and "top-1 %" in text and "Claim: a small test" in text
    assert png.stat().st_size > 1000


def test_resume_of_finished_run_is_a_no_op(trained, capsys):
    tmp_path, _ = trained
    cfg = str(tmp_path / "exp.toml")
    args = ["train", cfg, "epochs=1", "--data", str(tmp_path / "data"), "--out", str(tmp_path / "runs"), "lr=0.02"]
    assert main(args + ["--only", "a", "--resume"]) == 0
    assert "resumed from step" in capsys.readouterr().out
    assert main(args) == 2  # exists: needs --resume or --overwrite
    assert "already holds a run" in capsys.readouterr().err


def test_config_errors_exit_2(tmp_path, capsys):
    cfg = tmp_path / "bad.toml"
    cfg.write_text('model_expr = "ops.relu()"\nepocs = 3\n')
    assert main(["train", str(cfg)]) == 2
    assert "unknown config key 'epocs'; did you mean 'epochs'?" in capsys.readouterr().err
    assert main(["train", str(tmp_path / "missing.toml")]) == 2
    assert main(["train", "--data", str(tmp_path), str(cfg), "epocs=1"]) == 2


def test_list_summary_verify(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert "min_resnet_vs_resnet" in out and "camvid_segmentation" in out
    assert main(["summary", EXPR]) == 0
    out = capsys.readouterr().out
    assert "params" in out and "conv(8)" in out
    assert main(["verify", EXPR.replace("ops.conv(8)", "ops.conv(8, padding_mode='circular')")]) == 0
    out = capsys.readouterr().out
    assert "lipschitz" in out and "checks hold" in out
    assert main(["summary", "no_such_model_xyz"]) == 2
    assert "unknown model" in capsys.readouterr().err


def test_train_segmentation_on_tiny_camvid(tmp_path):
    write_camvid(str(tmp_path / "data"), n_train=4, n_val=2, size=(24, 32))
    from operad.experiments import train

    expr = "ops.conv(8) >> ops.bn() >> ops.relu() >> ops.conv(num_classes, k=1)"
    r = train({"model_expr": expr, "dataset": "camvid", "data_root": str(tmp_path / "data"), "epochs": 4,
               "batch_size": 2, "eval_batch_size": 2, "lr": 0.05, "crop_size": [16, 24], "scale_range": [0.75, 1.25],
               "out_dir": str(tmp_path / "runs"), "progress": False, "threads": 1, "robustness": ["rotation"],
               "rotation_angles": [0, 90]})
    assert 0 <= r["mean_iou"] <= 1 and 0 <= r["pixel_accuracy"] <= 1
    ev = json.load(open(tmp_path / "runs" / "run" / "eval.json"))
    assert len(ev["iou"]) == 11 and len(ev["confusion_matrix"]) == 11
    # void (11) pixels are not counted: 2 val frames x 23 labelled rows x 32 columns
    assert sum(map(sum, ev["confusion_matrix"])) == 2 * 23 * 32
    # the reported figures are those of the confusion matrix (rows: targets, columns: predictions)
    import numpy as np
    cm = np.array(ev["confusion_matrix"], dtype=float)
    inter, union = np.diag(cm), cm.sum(0) + cm.sum(1) - np.diag(cm)
    assert r["pixel_accuracy"] == pytest.approx(np.trace(cm) / cm.sum())
    assert r["mean_iou"] == pytest.approx(np.mean(inter[union > 0] / union[union > 0]))
    assert r["rotation"]["metric"] == "mean_iou"
