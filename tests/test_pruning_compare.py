"""Pruning side by side with Torch-Pruning (issue 18): the study's non-training parts on a tiny option-A
ResNet, the claims' grading on synthetic records (both directions), the runner's measured claims with
details; the Torch-Pruning tests skip when it is not installed (pip install operad[compare])."""
import json

import pytest
import torch
from torch import nn

import operad
from operad import Field, ops
from operad.experiments.claims import get_claims
from operad.experiments.claims.base import Claim
from operad.experiments.claims.pruning import grade_resnet_compare
from operad.experiments.claims.report import results_markdown
from operad.experiments.claims.runner import run_claim
from operad.experiments.studies import pruning_compare as pc
from operad.experiments.studies import pruning_structures as ps
from operad.theory import count

needs_tp = pytest.mark.skipif(not pc.tp_available(), reason="torch-pruning is not installed (operad[compare])")
SIZE = (16, 16)


def _block(c, stride=1):
    body = ops.conv(c, stride=stride, bias=False) >> ops.bn() >> ops.relu() >> ops.conv(c, bias=False) >> ops.bn()
    return ops.residual(body, shortcut=ops.option_a(c, stride)) if stride > 1 else ops.residual(body)


@pytest.fixture(scope="module")
def tiny():
    """A two-block ResNet with an option-A (zero-padded) downsampling shortcut, as ResNet-56 has."""
    torch.manual_seed(0)
    t = (ops.conv(8, bias=False) >> ops.bn() >> ops.relu() >> _block(8) >> ops.relu() >> _block(16, 2) >> ops.relu()
         >> ops.global_pool() >> ops.linear(10))
    return t.bind(Field(3)).eval()


# -- the study's pieces ------------------------------------------------------------------------------------

def test_operad_reaches_the_target_with_an_exact_cost(tiny):
    p, info = pc.operad_to_target(tiny, 2.0, SIZE)
    assert 0 < info["amount"] < 1
    assert pc.macs_of(p, SIZE) <= pc.macs_of(tiny, SIZE) / 2
    assert operad.cost(p, size=SIZE) == count(p, (1, 3, *SIZE))
    assert pc.macs_of(tiny, SIZE) == 571552  # the model itself is untouched


def test_residual_writers_are_the_stem_and_each_blocks_last_conv(tiny):
    convs = [m for m in tiny.modules() if isinstance(m, nn.Conv2d)]
    assert pc.residual_writers(tiny) == [convs[0], convs[2], convs[4]]


def test_check_runs_catches_a_wrong_shape(tiny):
    x = torch.randn(2, 3, *SIZE)
    pc.check_runs(tiny, x, (2, 10))
    with pytest.raises(RuntimeError, match="output shape"):
        pc.check_runs(tiny, x, (2, 11))


def test_operad_row_flags_a_cost_formula_that_disagrees_with_the_count(tiny, monkeypatch):
    assert ps.operad_row(tiny, 16)["exact"] is True
    real = operad.theory.count

    def off_by_one(m, shape):
        c = real(m, shape)
        return type(c)(c.params, c.macs + 1, c.bops, c.bytes)

    monkeypatch.setattr(operad.theory, "count", off_by_one)
    row = ps.operad_row(tiny, 16)
    assert row["exact"] is False and not ps.operad_ok({"operad": row})


def _info(top1, speedup, macs=100):
    return {"top1": top1, "top1_pruned": top1 / 2, "speedup": speedup, "params": 10, "macs": macs}


def _records(op, tp, op_speed=(2.06, 2.55), base=0.40, targets=(2.0, 2.5), tp_error=None):
    """Synthetic per-seed study records: ``op[s][i]``/``tp[s][i]`` the top-1 of each tool at target i."""
    recs = []
    for s, (o_row, t_row) in enumerate(zip(op, tp)):
        rows = []
        for i, t in enumerate(targets):
            tpi = {"error": tp_error} if tp_error else _info(t_row[i], t * 1.01)
            rows.append({"target": t, "operad": _info(o_row[i], op_speed[i]), "torch_pruning": tpi})
        recs.append({"seed": s, "base": {"top1": base, "params": 20, "macs": 200}, "targets": rows,
                     "value": sum(o - t for o, t in zip(o_row, t_row)) / len(targets)})
    return recs


def _grade(recs, profile="cpu"):
    return grade_resnet_compare([r["value"] for r in recs], recs, profile)


def test_summary_and_table_from_records(tmp_path):
    recs = _records([[0.30, 0.28], [0.32, 0.30]], [[0.29, 0.27], [0.31, 0.29]])
    rows = pc.summarize(recs)
    assert [(r["target"], r["tool"]) for r in rows] == [(1.0, "base"), (2.0, "operad"), (2.0, "torch_pruning"),
                                                         (2.5, "operad"), (2.5, "torch_pruning")]
    assert rows[1]["top1_mean"] == pytest.approx(0.31) and rows[1]["top1_std"] == pytest.approx(0.01414, abs=1e-4)
    failed = pc.summarize(_records([[0.3, 0.3]], [[0.3, 0.3]], tp_error="IndexError: index 32 is out of bounds"))
    assert failed[2]["failed"] == 1 and "IndexError: index 32" in pc.table(failed)
    png = pc.plot_accuracy_vs_macs(recs, str(tmp_path / "acc.png"))
    assert open(png, "rb").read(8) == b"\x89PNG\r\n\x1a\n"


# -- the claim's grade, on synthetic numbers ---------------------------------------------------------------

def test_grade_reproduced_when_operad_is_not_worse():
    # 2x: operad 1 point ahead on every seed; 2.5x: level within noise (-0.1..+0.2 points), inside the margin
    g = _grade(_records([[0.42, 0.40], [0.45, 0.412], [0.43, 0.409]], [[0.41, 0.40], [0.44, 0.41], [0.42, 0.41]]))
    assert g["verdict"] == "reproduced", g
    assert [p["verdict"] for p in g["per_target"]] == ["reproduced", "reproduced"]
    assert "2x: operad - TP +1.00 pt" in g["check"] and g["per_target"][1]["ci"][0] < 0


def test_grade_contradicted_when_operad_is_clearly_worse():
    g = _grade(_records([[0.35, 0.40], [0.36, 0.41], [0.34, 0.42]], [[0.40, 0.39], [0.41, 0.40], [0.40, 0.41]]))
    assert g["verdict"] == "contradicted"
    assert [p["verdict"] for p in g["per_target"]] == ["contradicted", "reproduced"]


def test_grade_contradicted_when_operad_misses_the_mac_target():
    g = _grade(_records([[0.50, 0.50]] * 3, [[0.40, 0.40]] * 3, op_speed=(2.06, 2.49)))
    assert g["verdict"] == "contradicted" and "2.5x: operad's MAC reduction 2.490x is below" in g["reason"]


def test_grade_inconclusive_when_noisy_or_torch_pruning_failed_or_at_chance():
    noisy = _grade(_records([[0.45, 0.40], [0.35, 0.40], [0.44, 0.40]], [[0.40, 0.40]] * 3))
    assert noisy["per_target"][0]["verdict"] == "inconclusive" and noisy["verdict"] == "inconclusive"
    failed = _grade(_records([[0.4, 0.4]] * 3, [[0.4, 0.4]] * 3, tp_error="IndexError: x"))
    assert failed["verdict"] == "inconclusive" and "Torch-Pruning produced no fine-tuned model" in failed["reason"]
    chance = _grade(_records([[0.11, 0.10], [0.12, 0.10], [0.11, 0.11]], [[0.10, 0.10]] * 3, base=0.11))
    assert chance["verdict"] == "inconclusive" and "chance" in chance["reason"]


def test_grade_checks_the_published_anchor_at_paper_scale():
    t = (2.0, 2.5, 2.57)
    ok = _records([[0.936, 0.935, 0.9364]] * 2 + [[0.937, 0.936, 0.9362]], [[0.934, 0.933, 0.933]] * 3,
                  op_speed=(2.06, 2.55, 2.6), base=0.9353, targets=t)
    g = _grade(ok, "gpu")
    assert g["anchor"]["verdict"] == "reproduced" and g["verdict"] == "reproduced" and g["margin"] == 0.003
    lost = _records([[0.936, 0.935, 0.925]] * 2 + [[0.937, 0.936, 0.926]], [[0.934, 0.933, 0.920]] * 3,
                    op_speed=(2.06, 2.55, 2.6), base=0.9353, targets=t)
    g = _grade(lost, "gpu")
    assert g["anchor"]["verdict"] == "contradicted" and g["verdict"] == "contradicted"


# -- the runner: measured claims with details, their own grade and plot, the data root ---------------------

def test_measured_claim_keeps_details_and_uses_its_own_grade_and_plot(tmp_path):
    seen = {}

    def measure(seed, profile, data_root):
        seen.setdefault("roots", []).append(data_root)
        return {"value": 0.1 * seed, "seed": seed}

    def grade(values, details, profile):
        return {"verdict": "reproduced", "check": f"{len(details)} records", "ci": [0, 0], "direction": "greater",
                "bound": 0.0, "diff_mean": 0.0}

    def plot(res, path):
        seen["plot"] = (len(res["details"]), path)

    c = Claim("demo_details", "a paper", "Demo", "demo", metric="x", measure=measure, bound=0.0, grade=grade,
              plot=plot, needs_data=True)
    r = run_claim(c, "smoke", 2, str(tmp_path), data_root="/data/root", progress=False)
    assert seen["roots"] == ["/data/root"] * 2 and seen["plot"] == (2, str(tmp_path / "demo_details.png"))
    saved = json.load(open(tmp_path / "demo_details.json"))
    assert saved["values"] == [0.0, 0.1] and saved["details"][1] == {"value": 0.1, "seed": 1}
    assert saved["verdict"] == "reproduced" and "| 2 records |" in results_markdown([r])


def test_a_measure_dict_without_value_is_a_clear_error(tmp_path):
    c = Claim("demo_bad", "p", "Demo", "demo", metric="x", measure=lambda s, p: {"top1": 1.0}, bound=0.0)
    with pytest.raises(ValueError, match="'value'"):
        run_claim(c, "smoke", 1, str(tmp_path), progress=False)


def test_pruning_claims_are_registered_and_never_in_the_gpu_suite():
    a, b = get_claims(["prune_resnet56_vs_torch_pruning", "prune_structures_vs_torch_pruning"])
    assert a.needs_data and a.grade is grade_resnet_compare and a.gpu_priority == 0
    assert b.published == 1.0 and b.rel_tol == 0.0 and not b.needs_data
    assert pc.PROFILES["gpu"]["anchor"] == {"speedup": 2.57, "max_drop": 0.003}
    assert 2.57 in pc.PROFILES["gpu"]["targets"]


# -- with Torch-Pruning ------------------------------------------------------------------------------------

@needs_tp
def test_torch_pruning_fails_on_option_a_shortcuts_and_the_row_says_so(tiny):
    row = ps.structure_row("tiny", 16, model=tiny)
    assert ps.operad_ok(row), row["operad"]
    assert row["torch_pruning"]["pruned"] is False
    assert row["torch_pruning"]["error"].startswith("IndexError: index 8 is out of bounds")
    assert pc._tp_every_layer(tiny, torch.randn(2, 3, *SIZE)).startswith("IndexError")


@needs_tp
def test_torch_pruning_on_the_same_network_as_a_plain_module_gives_a_network_that_does_not_run(tiny):
    from operad.experiments.studies.plain_resnet import plain_resnet

    plain = plain_resnet(tiny).eval()
    x = torch.randn(2, 3, *SIZE)
    assert torch.allclose(plain(x), tiny(x), atol=1e-6)
    row = ps.tp_row(plain, 16, 0.5, x)
    assert row["pruned"] and row["runs"] is False
    assert row["error"].startswith("RuntimeError: mat1 and mat2 shapes cannot be multiplied")


@needs_tp
def test_torch_pruning_with_the_streams_ignored_reaches_the_target(tiny):
    x = torch.randn(2, 3, *SIZE)
    base = pc.macs_of(tiny, SIZE)
    q, info = pc.tp_to_target(tiny, 2.0, x, SIZE, ignore_streams=True)
    assert pc.macs_of(q, SIZE) <= base / 2 and 0 < info["ratio"] < 0.9
    assert [c.out_channels for c in q.modules() if isinstance(c, nn.Conv2d)][::2] == [8, 8, 16]  # streams kept
    goal = base / 2.3
    above, _ = pc.tp_to_target(tiny, 2.3, x, SIZE, ignore_streams=True)
    near, _ = pc.tp_to_target(tiny, 2.3, x, SIZE, ignore_streams=True, nearest=True)
    assert pc.macs_of(above, SIZE) <= goal  # 2.88x: the next step down from 2.295x
    assert abs(pc.macs_of(near, SIZE) - goal) < abs(pc.macs_of(above, SIZE) - goal)  # 2.295x
    both = pc.prune_both(tiny, 2.0, x, SIZE)
    assert both["operad"][1]["runs"] and both["torch_pruning"][1]["runs"]
    assert both["operad"][1]["speedup"] >= 2.0


@needs_tp
def test_structure_row_on_a_registered_mobilenet():
    row = ps.structure_row("mobilenetv2_050_cifar", 32)
    assert ps.operad_ok(row)
    assert row["operad"]["formula_macs"] == row["operad"]["macs"]
    t = row["torch_pruning"]
    assert t["pruned"] and t["runs"] and t["shape_kept"] and t["speedup"] > 1.5
    assert "mobilenetv2_050_cifar" in ps.table([row])


@pytest.mark.parametrize("mod", ["operad.experiments.studies.pruning_compare",
                                 "operad.experiments.studies.pruning_structures",
                                 "operad.experiments.studies.plain_resnet",
                                 "operad.experiments.claims.pruning"])
def test_docstring_examples(mod):
    import doctest
    import importlib

    res = doctest.testmod(importlib.import_module(mod))
    assert res.failed == 0 and res.attempted > 0
