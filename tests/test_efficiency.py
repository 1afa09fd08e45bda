"""operad efficiency: the variants table on a tiny network, bytes measured from the saved file, Pareto
fronts, failures reported as rows, accuracy from claims results or measured for a run, the CLI, and the
efficiency claims' grading."""
import json
import os
import re

import pytest
import torch
from torch import nn

from operad.experiments import efficiency as eff
from operad.experiments.cli import main

EXPR = "ops.conv(8) >> ops.bn() >> ops.relu() >> ops.conv(8) >> ops.bn() >> ops.relu() >> ops.global_pool() " \
       ">> ops.linear(10)"


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("OPERAD_CACHE", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def tiny():
    return eff.efficiency_table(EXPR, ["float32", "int8", "qnn", "pruned2x"], batches=(1, 3), runs=2, warmup=0,
                                int8_path="fx", calib_batches=1, results_dir=None, gpu=False, progress=False)


def test_table_structure_and_costs(tiny, tmp_path):
    rows = {r["variant"]: r for r in tiny["rows"]}
    assert list(rows) == ["float32", "int8", "qnn", "pruned2x"] and not any(r["error"] for r in rows.values())
    f, q, p = rows["float32"], rows["int8"], rows["pruned2x"]
    assert f["params"] == (3 * 8 * 9 + 8) + (8 * 8 * 9 + 8) + 2 * 2 * 8 + 8 * 10 + 10 and f["macs"] > 0
    assert q["macs"] == f["macs"] and q["bops"] == 64 * f["macs"] and "FX" in q["note"]
    assert p["macs"] <= 0.5 * f["macs"] and p["params"] < f["params"] and "not fine-tuned" in p["note"]
    assert rows["qnn"]["bops"] < f["bops"] and "packed" in rows["qnn"]["note"]
    for r in rows.values():  # every variant timed at both batch sizes, on the CPU only
        assert set(r["latency_s"]) == {"cpu"} and all(r["latency_s"]["cpu"][b] > 0 for b in ("1", "3"))
        assert r["top1"] is None and r["top1_source"] == "n/a"  # no claims, no run: never invented
    c = tiny["conclusion"]
    assert c["fastest_cpu_b1"] in rows and c["smallest_bytes"] == min(rows, key=lambda k: rows[k]["bytes"])
    t = {k: r["latency_s"]["cpu"]["3"] for k, r in rows.items()}
    assert c["fastest_cpu_b3"] == min(t, key=t.get) and c["runner_up_cpu_b3"][1] >= 1.0
    paths = eff.write_outputs(tiny, str(tmp_path / "out"))
    assert all(os.path.getsize(p) > 0 for p in paths.values())
    assert json.load(open(paths["json"]))["rows"][0]["variant"] == "float32"
    md = open(paths["md"]).read()
    assert "| float32 |" in md and "Conclusion" in md


def test_printed_table_is_aligned(tiny):
    lines = eff.format_table(tiny).splitlines()
    spans = [(m.start(), m.end()) for m in re.finditer(r"-+", lines[1])]
    assert len(spans) == len(eff._columns(tiny)[0])
    for line in [lines[0]] + lines[2:6]:  # header and rows: every number column right-aligned under its rule
        for s, e in spans[1:-1]:
            assert line[e - 1] != " " and (e == len(line) or line[e] == " "), (line, s, e)


def test_bytes_are_the_saved_files_size(tiny, tmp_path):
    sd = {"w": torch.randn(1000), "b": torch.zeros(3, dtype=torch.int8)}
    torch.save(sd, tmp_path / "state.pt")  # the archive's record names come from the file's name: the same one
    assert eff.saved_bytes(sd) == os.path.getsize(tmp_path / "state.pt")
    grow = eff.saved_bytes({"w": torch.randn(2000)}) - eff.saved_bytes({"w": torch.randn(1000)})
    assert abs(grow - 4000) <= 64  # 4 bytes per float32, up to the archive's 64-byte alignment
    rows = {r["variant"]: r for r in tiny["rows"]}
    # the int8 row is the quantized model's state, smaller than the float one (not a cost formula's figure)
    assert rows["int8"]["cost_bytes"] is None and rows["int8"]["bytes"] < rows["float32"]["bytes"]
    base = eff._resolve_base(EXPR, "", "", 10)[1]
    assert rows["float32"]["bytes"] == eff.saved_bytes(base.state_dict())


def test_pareto_front_on_synthetic_points():
    assert eff.pareto_front([1, 2, 3], [0.5, 0.6, 0.7]) == [True, True, True]      # a clean trade-off
    assert eff.pareto_front([1, 2, 3], [0.7, 0.6, 0.5]) == [True, False, False]    # one point dominates
    assert eff.pareto_front([1, 1, 2], [0.5, 0.5, 0.4]) == [True, True, False]     # ties both stay
    assert eff.pareto_front([1, 1], [0.5, 0.6]) == [False, True]                   # same cost, less accuracy
    assert eff.pareto_front([5], [0.1]) == [True] and eff.pareto_front([], []) == []


class _OnlyBatchOne(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(3, 10)

    def forward(self, x):
        if x.shape[0] > 1:
            raise RuntimeError("this network only takes one image")
        return self.fc(x.mean((2, 3)))


def test_failing_variants_are_rows_not_crashes():
    r = eff.efficiency_table(nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 10)),
                             ["float32", "xnor"], name="plain", batches=(2,), runs=1, warmup=0, results_dir=None,
                             gpu=False, progress=False)
    rows = {x["variant"]: x for x in r["rows"]}
    assert not rows["float32"]["error"] and rows["float32"]["macs"] is None  # not an operad module: params only
    assert "operad network" in rows["xnor"]["error"] and rows["xnor"]["bytes"] is None
    assert "failed: OperadError" in eff.format_table(r)
    # a variant that breaks only while timed: the others are still timed
    vs = [eff.Variant("ok", "float", nn.Linear(3 * 4 * 4, 10).eval()), eff.Variant("bad", "float", _OnlyBatchOne())]
    vs[0].module = nn.Sequential(nn.Flatten(), vs[0].module)
    ticks = []
    t = eff.time_variants(vs, (3, 4, 4), (1, 2), runs=2, warmup=0, tick=ticks.append)
    assert t["ok"]["1"] > 0 and t["ok"]["2"] > 0 and t["bad"]["1"] > 0
    assert t["bad"]["2"].startswith("failed: RuntimeError: this network only takes one image")
    assert len(ticks) == 2 * 2 * 2  # variants x rounds x batch sizes: the progress bar's total


def _claim_json(path, claim, arms):
    path.write_text(json.dumps({"claim": claim, "kind": "trained", "profile": "cpu", "grade": {},
                                "arms": {k: {"top1": t, "config": c, "run": r} for k, (c, r, t) in arms.items()}}))


def test_accuracy_comes_from_the_claims_results(tmp_path):
    # registered claims with made-up results: ResNet-20 appears in two studies; the one that also holds XNOR wins
    _claim_json(tmp_path / "resnet56_vs_resnet20.json", "resnet56_vs_resnet20",
                {"resnet56": ("", "resnet56", [0.1] * 3), "resnet20": ("", "resnet20", [0.4, 0.5, 0.45])})
    _claim_json(tmp_path / "xnor_below_float_resnet20.json", "xnor_below_float_resnet20",
                {"resnet20_xnor": ("binary_vs_float", "resnet20_xnor", [0.3] * 3),
                 "resnet20_fp": ("binary_vs_float", "resnet20_fp", [0.6, 0.6, 0.6])})
    # an arm that swaps its config run's model (ghost_resnet56's run, trained as g_ghost_resnet56)
    _claim_json(tmp_path / "g_ghost_resnet56_vs_resnet56.json", "g_ghost_resnet56_vs_resnet56",
                {"g_ghost_resnet56": ("efficient_vs_resnet", "ghost_resnet56", [0.7] * 3)})
    _claim_json(tmp_path / "not_a_claim.json", "not_a_claim", {"resnet20": ("", "resnet20", [0.99] * 3)})
    # ResNet-20 trained with AutoAugment is not the plain network's accuracy
    _claim_json(tmp_path / "autoaugment_vs_baseline.json", "autoaugment_vs_baseline",
                {"autoaugment": ("regularization_autoaugment", "autoaugment", [0.8] * 3)})
    (tmp_path / "measured.json").write_text(json.dumps({"claim": "m", "kind": "measured", "values": [1.0]}))
    found = eff.claims_accuracy(str(tmp_path))
    assert sorted(found) == ["g_ghost_resnet56", "resnet20", "resnet20_xnor", "resnet56"]
    assert len(found["resnet20"]) == 3 and found["g_ghost_resnet56"][0]["top1"] == pytest.approx(0.7)
    assert found["resnet56"][0]["reason"].startswith("near chance") and not found["g_ghost_resnet56"][0]["reason"]
    r = eff.efficiency_table("resnet20", ["float32", "xnor", "pruned2x"], batches=(), results_dir=str(tmp_path),
                             gpu=False, progress=False, calib_batches=1)
    rows = {x["variant"]: x for x in r["rows"]}
    # one study (the config covering both) gives both accuracies; pruned has none and says so
    assert rows["float32"]["top1"] == pytest.approx(0.6)
    assert "claim xnor_below_float_resnet20" in rows["float32"]["top1_source"]
    assert rows["xnor"]["top1"] == pytest.approx(0.3) and "seeds)" in rows["xnor"]["top1_source"]
    assert rows["pruned2x"]["top1"] is None and rows["pruned2x"]["top1_source"] == "n/a"
    assert rows["float32"]["latency_s"] == {"cpu": {}}
    alone = eff.efficiency_table("resnet20", ["float32"], batches=(), results_dir=str(tmp_path), gpu=False,
                                 progress=False, calib_batches=1)["rows"][0]
    assert alone["top1"] == pytest.approx(0.45) and "arm resnet20 " in alone["top1_source"]
    # a run's own weights are not the claims' networks: without data to measure them, no accuracy
    mine = [eff.Variant("float32", "float", nn.Identity(), model_name="resnet20", derived=True),
            eff.Variant("xnor", "binary", nn.Identity(), model_name="resnet20_xnor")]
    acc = eff._accuracies(mine, "runs/mine", "cifar10", None, 0, str(tmp_path))
    assert "float32" not in acc and acc["xnor"]["top1"] == pytest.approx(0.3)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    from operad.experiments.config import dump_toml
    from operad.experiments.synthetic import write_cifar_pickle

    tmp = tmp_path_factory.mktemp("eff_run")
    os.environ.setdefault("OPERAD_CACHE", str(tmp / "cache"))
    write_cifar_pickle(str(tmp / "data"), per_class=6, test_per_class=3)
    cfg = tmp / "exp.toml"
    cfg.write_text(dump_toml({"model_expr": EXPR, "epochs": 1, "batch_size": 16, "progress": False, "threads": 1,
                              "plot_every": 0, "name": "tiny"}))
    assert main(["train", str(cfg), "--data", str(tmp / "data"), "--out", str(tmp / "runs")]) == 0
    return tmp


def test_cli_with_a_run_measures_accuracy_and_writes_files(run_dir, capsys):
    from operad.experiments.augment import DeviceBatches
    from operad.experiments.data import load_dataset
    from operad.experiments.evaluate import evaluate
    from operad.experiments.train import load_run_model

    run, data, out = str(run_dir / "runs" / "tiny"), str(run_dir / "data"), str(run_dir / "eff")
    rc = main(["efficiency", "--run", run, "--data", data, "--variants", "float32,int8", "--variants", "pruned2x",
               "--batch-sizes", "1", "--runs", "1", "--warmup", "0", "--int8", "fx", "--no-gpu", "--out", out])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "CPU b1 ms" in printed and "int8 path: torch.ao.quantization FX" in printed
    res = json.load(open(os.path.join(out, "efficiency.json")))
    rows = {r["variant"]: r for r in res["rows"]}
    model, _, _ = load_run_model(run)
    want = evaluate(model, DeviceBatches(load_dataset("cifar10", "test", data), 256))["top1"]
    assert rows["float32"]["top1"] == pytest.approx(want) and rows["float32"]["top1_source"].startswith("measured")
    assert rows["int8"]["top1"] is not None and "calibrat" in res["calibration"] + rows["int8"]["note"]
    assert "cifar10/train" in res["calibration"]  # calibrated on the data, not on random inputs
    assert os.path.isfile(os.path.join(out, "efficiency.png")) and os.path.isfile(os.path.join(out, "efficiency.md"))


def test_cli_errors_are_clear(run_dir, capsys):
    assert main(["efficiency", "resnet20", "--variants", "float32,halfprecision"]) == 2
    assert "unknown variant 'halfprecision'" in capsys.readouterr().err
    assert main(["efficiency", "resnet56", "--run", str(run_dir / "runs" / "tiny"), "--variants", "float32"]) == 2
    assert "trained" in capsys.readouterr().err
    assert main(["efficiency"]) == 2
    assert main(["efficiency", "resnet20", "--results", str(run_dir / "nowhere")]) == 2
    with pytest.raises(SystemExit):
        main(["efficiency", "resnet20", "--batch-sizes", "0,4"])


# ----------------------------------------------------------------------------- the claims

def _table(f_macs=100.0, p_macs=48.0, f_t=2.0, p_t=1.2, q_t=0.5, f_b=4000, q_b=1100, x_b=300):
    rows = [{"variant": "float32", "error": "", "macs": f_macs, "bytes": f_b, "latency_s": {"cpu": {"32": f_t}}},
            {"variant": "pruned2x", "error": "", "macs": p_macs, "bytes": 0, "latency_s": {"cpu": {"32": p_t}}},
            {"variant": "int8", "error": "", "macs": f_macs, "bytes": q_b, "latency_s": {"cpu": {"32": q_t}}},
            {"variant": "xnor", "error": "", "macs": f_macs, "bytes": x_b, "latency_s": {"cpu": {}}}]
    return {"rows": rows}


@pytest.mark.parametrize("claim,good,bad", [
    ("efficiency_resnet56_pruned2x_macs", _table(), _table(p_macs=70.0)),
    ("efficiency_resnet56_pruned2x_latency", _table(), _table(p_t=2.5)),
    ("efficiency_resnet56_int8_latency", _table(), _table(q_t=3.0)),
    ("efficiency_resnet56_int8_bytes", _table(), _table(q_b=2500)),
    ("efficiency_resnet56_xnor_packed_bytes", _table(), _table(x_b=1000)),
])
def test_efficiency_claims_grade_synthetic_tables(claim, good, bad):
    from operad.experiments.claims import get_claims
    from operad.experiments.claims.efficiency import table_ratio
    from operad.experiments.claims.runner import _grade_measured

    c = get_claims([claim])[0]
    what = claim[len("efficiency_resnet56_"):]
    g = table_ratio(good, what)
    jitter = [g * 0.98, g, g * 1.02] if "latency" in what else [g] * 3  # timing varies by seed; counts do not
    assert _grade_measured(c, jitter)["verdict"] == "reproduced"
    b = table_ratio(bad, what)
    assert _grade_measured(c, [b * 0.98, b, b * 1.02] if "latency" in what else [b] * 3)["verdict"] == "contradicted"


def test_efficiency_claim_reads_a_missing_or_failed_row_as_an_error():
    from operad.experiments.claims.efficiency import table_ratio

    t = _table()
    t["rows"][2]["error"] = "RuntimeError: no int8 engine"
    with pytest.raises(RuntimeError, match="no int8 engine"):
        table_ratio(t, "int8_bytes")
    t["rows"][0]["latency_s"]["cpu"]["32"] = "failed: x"
    with pytest.raises(RuntimeError, match="not timed"):
        table_ratio(t, "pruned2x_latency")


def test_pruned_macs_claim_measures_resnet56():
    from operad.experiments.claims import get_claims

    v = get_claims(["efficiency_resnet56_pruned2x_macs"])[0].measure(0, "smoke")
    assert 0.45 < v <= 0.5


@pytest.mark.parametrize("mod", ["operad.experiments.efficiency", "operad.experiments.int8",
                                 "operad.experiments.claims.efficiency"])
def test_docstring_examples(mod):
    import doctest
    import importlib

    res = doctest.testmod(importlib.import_module(mod))
    assert res.failed == 0 and res.attempted > 0


@pytest.mark.slow
def test_pt2e_path_when_torchao_imports():
    """torchao's PT2E flow (export, X86InductorQuantizer, Inductor compile: about a minute on one core)."""
    pytest.importorskip("torchao")
    from operad.experiments.int8 import int8_runtime, quantize_int8
    from operad.models import create_model

    m = create_model("resnet20").eval()
    calib = [torch.randn(8, 3, 32, 32)]
    with int8_runtime():
        q = quantize_int8(m, calib, "pt2e")
        x = torch.randn(2, 3, 32, 32)
        with torch.no_grad():
            assert q.path == "pt2e" and q(x).shape == (2, 10)
    assert all(v.dtype != torch.float32 or v.numel() < 1000 for v in q.state.values())  # int8 weights, small scales
    assert eff.saved_bytes(q.state) < eff.saved_bytes(m.state_dict()) / 3
