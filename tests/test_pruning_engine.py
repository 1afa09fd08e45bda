"""Hierarchical pruning through the engine: a config's ``prune`` table runs rounds of
prune + fine-tune as ordinary runs; settings are checked before any training."""
import json

import pytest

from operad.experiments import train
from operad.experiments.config import ConfigError
from operad.experiments.pruning import prune_settings, term_expr
from operad.experiments.synthetic import write_cifar_pickle

EXPR = ("ops.conv(16) >> ops.bn() >> ops.relu() >> ops.residual(ops.conv(16) >> ops.bn() >> ops.relu() "
        ">> ops.conv(16) >> ops.bn()) >> ops.relu() >> ops.global_pool() >> ops.linear(10)")


@pytest.fixture(scope="module")
def cifar_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    write_cifar_pickle(str(root), per_class=8, test_per_class=4)
    return str(root)


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("OPERAD_CACHE", str(tmp_path / "cache"))


def _cfg(root, out, **prune):
    return {"model_expr": EXPR, "dataset": "cifar10", "data_root": root, "out_dir": str(out), "name": "p",
            "batch_size": 16, "eval_batch_size": 40, "epochs": 1, "lr": 0.05, "progress": False, "threads": 1,
            "seed": 0, "plot_every": 0, "prune": prune}


def test_rounds_shrink_the_model_and_fine_tune_each_round(cifar_root, tmp_path):
    r = train(_cfg(cifar_root, tmp_path, rounds=2, macs=0.4, importance="l1", epochs=1))
    recs = r["prune"]
    assert [x["round"] for x in recs] == [0, 1, 2]
    macs = [x["macs"] for x in recs]
    assert macs[0] > macs[1] > macs[2] and macs[2] <= 0.4 * macs[0] * 1.001
    assert macs[1] > 0.4 * macs[0]                       # round 1 stops half way (0.4 ** 1/2)
    for x in recs[1:]:
        run = tmp_path / x["run"]
        summary = json.load(open(run / "summary.json"))
        assert summary["top1"] == x["acc"] and summary["params"] == x["params"]
        assert (run / "final.pt").is_file()
    assert json.load(open(tmp_path / "p" / "prune.json")) == json.loads(json.dumps(recs))
    assert (tmp_path / "p" / "prune.png").is_file()


def test_taylor_rounds_read_the_training_data(cifar_root, tmp_path):
    r = train(_cfg(cifar_root, tmp_path, rounds=1, amount=0.5, importance="taylor", epochs=0, batches=2))
    assert r["prune"][1]["params"] < r["prune"][0]["params"]


def test_bad_prune_settings_fail_before_training(cifar_root, tmp_path):
    for table, msg in (({"rounds": 0}, "prune.rounds"), ({"macs": 1.5}, "prune.macs"),
                       ({"importance": "l7", "macs": 0.5}, "prune.importance"), ({"depth": 1}, "no setting depth"),
                       ({"macs": 0.5, "amount": 0.2}, "not both"), ({"importance": "l1"}, "needs macs or amount")):
        with pytest.raises(ConfigError, match=msg):
            train(_cfg(cifar_root, tmp_path, **table))
    assert not (tmp_path / "p").exists()


def test_term_expr_round_trips_pruned_models():
    from operad.models import create_model
    from operad.rewrite import prune

    for name in ("resnet20", "densenet_bc100_k12", "preact_resnet20"):
        t = prune(create_model(name), amount=0.5, importance="random").term
        from operad.experiments.expr import parse_expr
        assert parse_expr(term_expr(t)) == t
    assert prune_settings({"amount": 0.3, "importance": "l2"})["rounds"] == 1


def test_grad_rank_rounds_prune_by_the_estimated_redundancy(cifar_root, tmp_path):
    r = train(_cfg(cifar_root, tmp_path, rounds=2, importance="grad_rank", epochs=0, batches=2))
    params = [x["params"] for x in r["prune"]]
    assert params[0] > params[1] >= params[2]
