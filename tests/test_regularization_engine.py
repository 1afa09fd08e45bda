"""The engine's regularization options: TSLA, DisturbLabel, DropBlock's
schedule, the augmentation policies and RandomErasing in a real run, with an
exact resume."""
import os

import pytest
import torch

import operad
from operad.experiments import train
from operad.experiments.config import Config, ConfigError
from operad.experiments.regularization import disturb_labels, step_regularization, tsla_smoothing
from operad.experiments.synthetic import write_cifar_pickle
from operad.experiments.train import load_checkpoint

EXPR = ("ops.conv(8) >> ops.bn() >> ops.relu() >> ops.drop_block(3, 0.2) >> ops.spatial_dropout(0.1) >> "
        "ops.residual(ops.shake_shake(ops.conv(8), ops.conv(8)) >> ops.shake_drop(0.3), drop_path=0.2) >> "
        "ops.global_pool() >> ops.linear(10)")


def test_tsla_switches_to_hard_labels_at_its_epoch():
    c = Config(label_smoothing=0.2, tsla_until=2)
    assert [tsla_smoothing(c, e) for e in range(4)] == [0.2, 0.2, 0.0, 0.0]
    assert tsla_smoothing(Config(label_smoothing=0.2), 100) == 0.2


def test_disturb_label_rate_uniformity_and_determinism():
    y = torch.arange(10).repeat(2000)
    z = disturb_labels(y, 0.3, 10, torch.Generator().manual_seed(1))
    changed = (z != y).float().mean().item()
    assert changed == pytest.approx(0.3 * 9 / 10, abs=0.015)  # a uniform draw keeps the label 1/10 of the time
    counts = torch.bincount(z[z != y], minlength=10).float()
    assert (counts / counts.mean() - 1).abs().max() < 0.15  # new labels uniform
    assert torch.equal(z, disturb_labels(y, 0.3, 10, torch.Generator().manual_seed(1)))
    half = disturb_labels(y[1000:2000], 0.3, 10, torch.Generator().manual_seed(1), total=len(y),
                          part=slice(1000, 2000))
    assert torch.equal(half, z[1000:2000])  # a rank's slice of the global draw
    ign = torch.full((100,), 255)

    assert torch.equal(disturb_labels(ign, 0.9, 10, torch.Generator().manual_seed(0)), ign)


def test_step_regularization_sets_the_drop_block_schedule():
    from operad import Field, ops
    m = (ops.conv(4) >> ops.drop_block(3, 0.2)).bind(Field(3))
    cfg = Config(drop_block_ramp=0.5, label_smoothing=0.1, tsla_until=1)
    y, ls = step_regularization(cfg, m, torch.zeros(4, dtype=torch.long), 25, 100, 10, 10)
    assert float(m[1].scale) == pytest.approx(0.5) and ls == 0.0
    step_regularization(cfg, m, y, 80, 100, 10, 10)
    assert float(m[1].scale) == 1.0


@pytest.mark.parametrize("kv,msg", [({"auto_augment": "cifar"}, "auto_augment"), ({"erasing": 1.5}, "erasing"),
                                    ({"disturb_label": 1.0}, "disturb_label"), ({"tsla_until": -1}, "tsla_until"),
                                    ({"erasing_area": [0.5, 0.1]}, "erasing_area"),
                                    ({"drop_block_ramp": 2.0}, "drop_block_ramp"),
                                    ({"rand_augment_m": 31}, "rand_augment")])
def test_bad_regularization_keys_fail_at_load(kv, msg):
    with pytest.raises(ConfigError, match=msg) as e:
        Config.from_dict(kv)
    assert e.value.key == next(iter(kv))  # the schema (or validate's cross-key rule) names the key


@pytest.fixture(scope="module")
def cifar_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    write_cifar_pickle(str(root), per_class=8, test_per_class=2)
    return str(root)


def _cfg(root, out, name):
    return {"model_expr": EXPR, "dataset": "cifar10", "data_root": root, "out_dir": str(out), "name": name,
            "batch_size": 16, "eval_batch_size": 40, "epochs": 2, "lr": 0.05, "log_every": 5, "progress": False,
            "threads": 1, "seed": 3, "plot_every": 0, "auto_augment": "cifar10", "erasing": 0.5,
            "disturb_label": 0.1, "label_smoothing": 0.1, "tsla_until": 1, "drop_block_ramp": 1.0}


def test_run_with_every_option_resumes_bit_identically(cifar_root, tmp_path, monkeypatch):
    full = train(_cfg(cifar_root, tmp_path, "full"))
    assert full["steps"] == 10 and 0.0 <= full["top1"] <= 1.0
    import sys
    tr = sys.modules["operad.experiments.train"]
    real = tr.step_regularization

    def crash(cfg, model, y, step, *a):
        if step == 7:  # after the end-of-epoch checkpoint at step 5
            raise KeyboardInterrupt
        return real(cfg, model, y, step, *a)

    monkeypatch.setattr(tr, "step_regularization", crash)
    with pytest.raises(KeyboardInterrupt):
        train(_cfg(cifar_root, tmp_path, "cut"))
    monkeypatch.setattr(tr, "step_regularization", real)
    train(_cfg(cifar_root, tmp_path, "cut"), resume=True)
    a = load_checkpoint(str(tmp_path / "full" / "final.pt"))["model"]
    b = load_checkpoint(str(tmp_path / "cut" / "final.pt"))["model"]
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_study_ranks_paired_gains_and_plots(cifar_root, tmp_path):
    import json
    from operad.experiments.studies import regularization as study
    rows = [dict(method=m, role=role, seed=s, top1=acc) for m, role, s, acc in [
        ("a", "baseline", 0, 0.50), ("a", "method", 0, 0.52), ("a", "baseline", 1, 0.40), ("a", "method", 1, 0.44),
        ("b", "baseline", 0, 0.50), ("b", "method", 0, 0.45)]]
    ranked = study.summarize(rows)
    assert [r["method"] for r in ranked] == ["a", "b"]
    assert ranked[0]["gain_mean"] == pytest.approx(0.03) and ranked[0]["gain_std"] == pytest.approx(0.01 * 2 ** 0.5)
    assert ranked[1]["seeds"] == 1 and ranked[1]["gain_std"] == 0.0
    # a real (tiny) study: the baseline trains once and is shared; outputs land in --out
    out = tmp_path / "out"
    study.main(["--methods", "label_smoothing", "tsla", "--seeds", "0", "--data", cifar_root, "--runs",
                str(tmp_path / "runs"), "--out", str(out), "epochs=1", "subset=2", "val_subset=1", "batch_size=10",
                "eval_batch_size=10"])
    assert sorted(os.listdir(tmp_path / "runs" / "seed0")) == ["baseline_resnet20", "label_smoothing", "tsla"]
    res = json.load(open(out / "results.json"))
    assert {r["method"] for r in res["ranking"]} == {"label_smoothing", "tsla"}
    assert (out / "ranking.png").stat().st_size > 1000 and (out / "results.md").is_file()


def test_study_ranks_from_the_claims_results(tmp_path):
    import json
    from operad.experiments.studies import regularization as study
    for method, (m, b) in {"cutout": ([0.5, 0.6], [0.4, 0.5]), "mixup": ([0.3, 0.35], [0.4, 0.4])}.items():
        res = {"profile": "cpu", "commit": "x", "arms": {method: {"top1": m}, "resnet20_baseline": {"top1": b}}}
        (tmp_path / f"{method}_vs_baseline.json").write_text(json.dumps(res))
    (tmp_path / "unrelated_claim.json").write_text("{}")
    out = tmp_path / "out"
    study.main(["--from-claims", str(tmp_path), "--out", str(out)])
    ranked = json.load(open(out / "results.json"))["ranking"]
    assert [r["method"] for r in ranked] == ["cutout", "mixup"]
    assert ranked[0]["gain_mean"] == pytest.approx(0.1) and ranked[1]["gain_mean"] == pytest.approx(-0.075)
    assert (out / "ranking.png").is_file()
    with pytest.raises(SystemExit, match="no <method>_vs_baseline.json"):
        study.main(["--from-claims", str(tmp_path / "out"), "--out", str(out)])
