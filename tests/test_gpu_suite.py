"""The GPU suite's smoke mode runs every section on the CPU (CI keeps the GPU path alive)."""
import json
import os

from operad.experiments import gpu_suite


def test_gpu_suite_smoke_runs_every_section(shared_data, tmp_path):
    from operad.experiments.cli import main

    out = str(tmp_path / "suite")
    assert main(["gpu-suite", "--smoke", "--budget", "120", "--out", out, "--data", shared_data]) == 0
    with open(os.path.join(out, "suite.json")) as f:
        res = json.load(f)
    assert [s["name"] for s in res["sections"]] == [s[0] for s in gpu_suite.SECTIONS]
    status = {s["name"]: s["status"] for s in res["sections"]}
    assert all(v != "failed" for v in status.values()), [s.get("error") for s in res["sections"]]
    byname = {s["name"]: s.get("result") or {} for s in res["sections"]}
    assert byname["correctness"]["total"] > 50 and byname["correctness"]["passed"] > 40
    items = [r["item"] for r in byname["correctness"]["rows"]]
    for lib, row in (("torchvision", "convert torchvision"), ("timm", "convert timm"),
                     ("torch-fidelity", "kid operad vs torch-fidelity")):  # checked, or a note says why not
        assert any(i.startswith(row) for i in items) or any(f"{lib} does not import" in n for n in res["notes"])
    assert len(byname["throughput"]["rows"]) == len(gpu_suite.THROUGHPUT_MODELS)
    assert all("ratio" in r for r in byname["operator_ratios"]["rows"])
    assert byname["claims"]["verdicts"]
    for f in ("SUITE.md", "throughput.png", "operator_ratios.png", os.path.join("claims", "RESULTS.md")):
        assert os.path.isfile(os.path.join(out, f)), f


def test_a_failing_section_is_recorded_and_the_suite_goes_on(tmp_path, monkeypatch):
    def boom(ctx):
        raise RuntimeError("section exploded")

    sections = [("environment", 0.5, gpu_suite.environment), ("broken", 0.1, boom),
                ("environment2", 0.4, gpu_suite.environment)]
    monkeypatch.setattr(gpu_suite, "SECTIONS", sections)
    res = gpu_suite.run_suite(str(tmp_path), budget=10, smoke=True)
    assert [s["status"] for s in res["sections"]] == ["ok", "failed", "ok"]
    assert "section exploded" in res["sections"][1]["error"]
    assert "section exploded" in open(tmp_path / "SUITE.md").read()


def test_a_chosen_section_gets_the_whole_budget(tmp_path):
    import pytest

    res = gpu_suite.run_suite(str(tmp_path), budget=10, smoke=True, sections=["environment"])
    assert [s["name"] for s in res["sections"]] == ["environment"]
    assert res["sections"][0]["budget_s"] == pytest.approx(10)
    with pytest.raises(ValueError, match="unknown sections"):
        gpu_suite.run_suite(str(tmp_path), budget=10, smoke=True, sections=["envirnoment"])


def test_dendritic_backward_under_bf16_autocast():
    """The suite's first finding: the fused dendritic product's backward mixed bf16 and float32."""
    import torch

    from operad import Field, ops

    m = ops.dendritic_conv(8, k=3).bind(Field(4))
    r = gpu_suite.check_module(m, torch.randn(2, 4, 8, 8), torch.device("cpu"), 0.1)
    assert r["ok"] and r["grads_finite"]


def test_make_gpu_suite_target_calls_the_suite():
    import shutil
    import subprocess

    import pytest

    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    cmds = subprocess.run(["make", "-n", "-C", root, "gpu-suite", "SMOKE=1"], capture_output=True, text=True,
                          check=True).stdout
    line = [c for c in cmds.splitlines() if "gpu-suite" in c][-1]
    assert "operad gpu-suite --budget 540 --out runs/gpu-suite-smoke" in line and line.rstrip().endswith("--smoke")
    peer = subprocess.run(["make", "-n", "-C", root, "gpu-suite", "PEER=.device/airbench94.py"], capture_output=True,
                          text=True, check=True).stdout
    assert [c for c in peer.splitlines() if "gpu-suite" in c][-1].rstrip().endswith("--peer .device/airbench94.py")
    full = subprocess.run(["make", "-n", "-C", root, "gpu-suite"], capture_output=True, text=True,
                          check=True).stdout
    assert "--out experiments/results/gpu/" in full and "--smoke" not in full


def test_correctness_checks_converters_and_kid_where_the_libraries_import(monkeypatch):
    """Here torchvision, timm and torch-fidelity do not import: notes say so. Where they do (faked
    here), each converter and the KID cross-check is a row, and a disagreement is a failed row."""
    import sys
    import time
    import types

    import torch

    from operad.experiments import fidelity
    from operad.models import convert

    ctx = gpu_suite.Ctx(torch.device("cpu"), False, time.time() + 60, "", "")
    for lib in ("torchvision", "timm"):
        monkeypatch.setitem(sys.modules, lib, None)  # "import timm" raises ImportError
    monkeypatch.setattr(fidelity, "fidelity_available", lambda: False)
    assert gpu_suite._ecosystem_checks(ctx) == []
    assert sum(("does not import" in n) for n in ctx.notes) == 3
    monkeypatch.setitem(sys.modules, "timm", types.ModuleType("timm"))
    monkeypatch.setattr(convert, "conversion_check", lambda n, s, device: {
        "max_abs_diff": 0.5 if n == "densenet121" else 0.0, "output_abs_max": 2.0})
    monkeypatch.setattr(fidelity, "fidelity_available", lambda: True)
    monkeypatch.setattr(fidelity, "crosscheck", lambda device: {"rel_diff": 1e-8})
    rows = {r["item"]: r["ok"] for r in gpu_suite._ecosystem_checks(ctx)}
    assert rows == {**{f"convert timm {n}": n != "densenet121" for n in convert.SUPPORTED},
                    "kid operad vs torch-fidelity": True}


def test_the_gpu_call_script_runs_the_suite_without_installing_anything(shared_data, tmp_path):
    import subprocess
    import sys

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, UNPACK="0", OUT=str(tmp_path), DATA_DIR=shared_data, PYTHON=sys.executable, SMOKE="1")
    r = subprocess.run(["bash", os.path.join(root, "experiments", "gpu_call.sh"), "30", "--sections", "environment"],
                       cwd=root, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    (day,) = os.listdir(tmp_path / "gpu")
    with open(tmp_path / "gpu" / day / "suite.json") as f:
        res = json.load(f)
    assert [s["name"] for s in res["sections"]] == ["environment"] and res["smoke"]
    assert f"outputs in {tmp_path}" in r.stdout
