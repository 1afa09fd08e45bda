"""The claims registry: t quantiles, paired grading, coverage of the seed systems,
and `operad reproduce` end to end (smoke profile, resumable)."""
import json
import os

import pytest

from operad.experiments.claims import PROFILES, all_claims, get_claims
from operad.experiments.claims.base import metric_value
from operad.experiments.claims.runner import _grade_measured, arm_config, reproduce
from operad.experiments.claims.stats import interval, paired, t_quantile, verdict

SEED_SYSTEMS = {"ResNet", "DenseNet-BC", "HarDNet", "ThreshNet", "All-CNN-C", "RMNet", "MobileNetV2", "GhostNet",
                "G-Ghost", "SKNet", "MGIC", "nonlocal PIDE", "CMod/DT-CWPT twins", "Harmonic Networks", "Min-Nets",
                "dendritic units", "XNOR/BWN", "QNN", "SSDLite", "speed recipe", "Cutout", "RandomErasing", "Mixup",
                "CutMix", "DropBlock", "AutoAugment", "RandAugment", "TrivialAugment", "label smoothing", "TSLA",
                "DisturbLabel", "stochastic depth", "Shake-Shake", "ShakeDrop"}
REGULARIZATION_CONFIGS = sorted(f[len("regularization_"):-len(".toml")] for f in os.listdir(
    os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "experiments", "configs"))
    if f.startswith("regularization_") and f.endswith(".toml"))


@pytest.mark.parametrize("p,df,expected", [(0.975, 1, 12.7062), (0.975, 2, 4.3027), (0.975, 3, 3.1824),
                                           (0.975, 4, 2.7764), (0.975, 10, 2.2281), (0.975, 30, 2.0423),
                                           (0.95, 5, 2.0150), (0.995, 7, 3.4995), (0.025, 4, -2.7764)])
def test_t_quantile_matches_tables(p, df, expected):
    assert t_quantile(p, df) == pytest.approx(expected, abs=1e-4)


def test_interval_by_hand():
    iv = interval([1.0, 2.0, 3.0])  # mean 2, sd 1, half-width 4.3027 / sqrt(3)
    assert iv["mean"] == 2.0 and iv["std"] == pytest.approx(1.0)
    assert iv["hi"] - 2.0 == pytest.approx(4.302653 / 3 ** 0.5, rel=1e-5)


def test_verdict_rules():
    assert paired([0.6, 0.62, 0.61], [0.5, 0.51, 0.5], "greater")["verdict"] == "reproduced"
    assert paired([0.6, 0.62, 0.61], [0.5, 0.51, 0.5], "less")["verdict"] == "contradicted"
    assert paired([0.5, 0.7, 0.4], [0.5, 0.5, 0.5], "greater")["verdict"] == "inconclusive"
    assert verdict(-0.004, 0.005, "match", 0.01) == "reproduced"
    assert verdict(-0.03, 0.005, "match", 0.01) == "inconclusive"
    assert verdict(0.02, 0.03, "match", 0.01) == "contradicted"
    assert verdict(-0.009, 0.02, "noninferior", 0.01) == "reproduced"
    assert verdict(-0.05, -0.02, "noninferior", 0.01) == "contradicted"
    assert paired([0.5], [0.4], "greater")["verdict"] == "inconclusive"  # one seed: no interval


def test_measured_grading():
    c = get_claims(["resnet20_params"])[0]
    assert _grade_measured(c, [269722.0])["verdict"] == "reproduced"
    assert _grade_measured(c, [300000.0])["verdict"] == "contradicted"


def test_metrics_from_summaries():
    s = {"top1": 0.5, "jpeg": {"clean": 0.5, "mean_corrupted": 0.4},
         "rotation": {"angle": {"0": 0.5, "90": 0.25, "180": 0.25}, "mean": 0.33}}
    assert metric_value("jpeg_drop", s) == pytest.approx(0.1)
    assert metric_value("rotation_retention", s) == pytest.approx(0.5)


def test_registry_covers_every_seed_system_and_profiles():
    claims = all_claims()
    assert SEED_SYSTEMS <= {c.system for c in claims.values()}
    trained = [c for c in claims.values() if c.kind == "trained"]
    assert trained and all(set(PROFILES) <= set(c.profiles) for c in trained)
    for c in trained:  # every arm resolves to a valid config in every profile (nothing is trained here)
        for arm in c.arms:
            for prof in PROFILES:
                cfg = arm_config(c, arm, prof, 0, "/tmp/x")
                assert cfg.model or cfg.model_expr
                if prof == "cpu":
                    assert cfg.threads == 1 and cfg.device == "cpu"


def test_reproduce_smoke_end_to_end_and_resumes(shared_data, tmp_path):
    out = str(tmp_path / "claims")
    rs = reproduce(["rmnet_equivalence", "minnet_top1"], "smoke", 2, out, shared_data, progress=False)
    assert [r["verdict"] for r in rs][0] == "reproduced"
    for n in ("rmnet_equivalence", "minnet_top1"):
        assert os.path.isfile(os.path.join(out, f"{n}.png"))
        with open(os.path.join(out, f"{n}.json")) as f:
            assert json.load(f)["claim"] == n
    text = open(os.path.join(out, "RESULTS.md")).read()
    assert "`minnet_top1`" in text and "`rmnet_equivalence`" in text
    r = rs[1]
    assert len(r["arms"]["min_resnet20"]["values"]) == 2 and len(r["grade"]["ci"]) == 2
    summaries = [os.path.join(out, d, "summary.json") for a in r["arms"].values() for d in a["runs"]]
    stamps = [os.path.getmtime(p) for p in summaries]
    again = reproduce(["minnet_top1"], "smoke", 2, out, shared_data, progress=False)[0]  # reuses every run
    assert [os.path.getmtime(p) for p in summaries] == stamps
    assert again["grade"]["diffs"] == r["grade"]["diffs"]


def test_cli_reproduce_list(capsys):
    from operad.experiments.cli import main

    assert main(["reproduce", "--list"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == len(all_claims()) and lines[0].split()[0] in all_claims()


def test_unknown_claim_is_a_clear_error():
    with pytest.raises(KeyError, match="did you mean 'minnet_jpeg'"):
        get_claims(["minnet_jpg"])


def test_chance_level_arms_are_inconclusive():
    from operad.experiments.claims.runner import _at_chance

    assert _at_chance({"a": {"top1": [0.1, 0.12, 0.1]}, "b": {"top1": [0.1, 0.1, 0.1]}})
    assert not _at_chance({"a": {"top1": [0.3, 0.32, 0.3]}, "b": {"top1": [0.1, 0.1, 0.1]}})


def test_deadline_stops_before_a_run(tmp_path):
    import time

    from operad.experiments.claims.runner import OutOfTime, run_claim

    with pytest.raises(OutOfTime):
        run_claim(get_claims(["minnet_top1"])[0], "smoke", 2, str(tmp_path), deadline=time.time() - 1)


@pytest.mark.parametrize("mod", ["stats", "base", "report", "runner"])
def test_docstring_examples(mod):
    import doctest
    import importlib

    res = doctest.testmod(importlib.import_module(f"operad.experiments.claims.{mod}"))
    assert res.failed == 0 and res.attempted > 0


def test_every_regularization_config_has_a_claim():
    claims = all_claims()
    assert REGULARIZATION_CONFIGS and all(f"{m}_vs_baseline" in claims for m in REGULARIZATION_CONFIGS)
    for m in REGULARIZATION_CONFIGS:  # the method's own run against the same config's baseline run
        c = claims[f"{m}_vs_baseline"]
        assert [a.config for a in c.arms] == [f"regularization_{m}"] * 2 and c.arms[1].run == "baseline"


# the structural claims of the binary, detection groups: value each must measure (exact operad.cost figures)
NEW_MEASURED = {"bwn_alexnet_layer_bytes": 31.8343, "bnn_vgg_bytes": 29.4478, "xnor_alexnet_layer_bops": 1024.0,
                "bnn_vgg_bops": 148.729, "qnn_resnet20_layer_bops": 512.0, "ssdlite_params": 4337013.0,
                "ssdlite_macs": 788830144.0}


@pytest.mark.parametrize("name", sorted(NEW_MEASURED))
def test_new_structural_claims_measure_and_reproduce(name):
    c = get_claims([name])[0]
    v = c.measure(0, "smoke")
    assert v == pytest.approx(NEW_MEASURED[name], rel=1e-4)
    assert _grade_measured(c, [v] * 3)["verdict"] == "reproduced"  # 3 seeds, as the cpu study runs


def test_packed_file_claim_measures_real_bytes():
    c = get_claims(["bnn_vgg_packed_file"])[0]
    v = c.measure(0, "smoke")
    assert 30.0 < v < 32.0 and _grade_measured(c, [v] * 3)["verdict"] == "reproduced"


def test_a_broken_binary_measurement_is_caught(monkeypatch):
    """If binarize() stopped binarizing the inputs (XNOR layers fed float activations), the BOPs claim fails."""
    from operad.experiments.claims import binary

    real = binary._layer_costs

    def float_inputs(name):  # every binarized layer costing 32 bit operations per MAC (1-bit weight x float input)
        fb, sb, fo, so = real(name)
        return fb, sb, fo, 32 * so

    monkeypatch.setattr(binary, "_layer_costs", float_inputs)
    c = get_claims(["xnor_alexnet_layer_bops"])[0]
    v = c.measure(0, "smoke")
    assert v == pytest.approx(32.0) and _grade_measured(c, [v] * 3)["verdict"] == "contradicted"


def test_detection_claim_reads_map_and_finds_its_boxes():
    c = get_claims(["ssdlite_camvid_map"])[0]
    assert metric_value(c.metric, {"task": "detection", "val": {"map50": 0.31}}) == pytest.approx(0.31)
    sub, base = (arm_config(c, a, "cpu", 0, "/tmp/x", "/data") for a in c.arms)
    assert sub.task == "detection" and sub.data_root == "/data/camvid_cars" and c.floor == "map50_prior_boxes"
    assert (sub.epochs, base.epochs, base.lr) == (40, 1, 1e-9)  # the baseline stays at its initialisation
    assert (sub.crop_size, sub.box_scales, sub.model_args) == ([240, 320], [0.1, 0.6],
                                                               {"width": 0.5, "reduce_lowest": False})
    gpu = arm_config(c, c.arms[0], "gpu", 0, "/tmp/x", "/data")
    assert (gpu.data_root, gpu.epochs, gpu.crop_size) == ("/data/camvid_boxes", 200, [360, 480])


@pytest.mark.parametrize("trained,verdict_", [([0.05, 0.06, 0.055], "reproduced"),
                                              ([0.021, 0.019, 0.022], "inconclusive")])
def test_a_floor_must_be_beaten_too(tmp_path, monkeypatch, trained, verdict_):
    """A detector above its untrained copy but not clearly above the prior-box detector is inconclusive."""
    from operad.experiments.claims import runner
    from operad.experiments.claims.base import Arm, Claim
    from operad.experiments.claims.report import results_markdown

    c = Claim("floor_demo", "paper", "SSDLite", "learns", metric="map50", floor="map50_prior_boxes",
              dataset_classes=0, arms=[Arm("trained", model="resnet20"), Arm("untrained", model="resnet20")])

    def run_arm(cfg):
        arm, seed = os.path.basename(cfg.out_dir).split("-")[0], int(cfg.name[len("seed"):])
        v = trained[seed] if arm == "trained" else 0.0003
        return {"val": {"map50": v}, "baseline": {"prior_box_map50": 0.02}, "train_time_s": 1.0}

    monkeypatch.setattr(runner, "run_arm", run_arm)
    r = runner.run_claim(c, "cpu", 3, str(tmp_path), progress=False)
    assert r["grade"]["ci"][0] > 0  # above the untrained arm either way
    assert r["floor"]["values"] == [0.02] * 3 and r["verdict"] == verdict_
    assert ("not clearly above map50_prior_boxes" in r["grade"].get("reason", "")) == (verdict_ == "inconclusive")
    assert "subject - map50_prior_boxes (2.00%)" in results_markdown([r])
    with pytest.raises(ValueError, match="unknown floor metric"):
        Claim("x", "p", "s", "c", metric="map50", floor="map5", arms=list(c.arms))


def test_results_list_unrun_claims_as_not_run(tmp_path):
    from operad.experiments.claims.report import write_results

    reproduce(["ssdlite_params"], "smoke", 1, str(tmp_path), progress=False)
    text = open(write_results(str(tmp_path))).read()
    main, _, not_run = text.partition("## Not run")
    assert "`ssdlite_params`" in main and "`ssdlite_params`" not in not_run
    assert "`ssdlite_camvid_map`" in not_run and "`cutout_vs_baseline`" in not_run
    assert f"not run {len(all_claims()) - 1}" in main


def test_commit_id_is_dirty_for_code_changes_not_for_results(tmp_path):
    import subprocess

    from operad.experiments.claims.runner import commit_id

    def git(*a):
        subprocess.run(["git", "-C", str(tmp_path), *a], check=True, capture_output=True)

    git("init", "-q")
    (tmp_path / "experiments" / "results").mkdir(parents=True)
    (tmp_path / "code.py").write_text("a = 1\n")
    (tmp_path / "experiments" / "results" / "claim.json").write_text("{}\n")
    git("add", ".")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "x")
    clean = commit_id(str(tmp_path))
    assert clean and "+dirty" not in clean and clean != "unknown"
    (tmp_path / "experiments" / "results" / "claim.json").write_text('{"verdict": "reproduced"}\n')
    assert commit_id(str(tmp_path)) == clean  # new evidence is an output, not a code change
    (tmp_path / "code.py").write_text("a = 2\n")
    assert commit_id(str(tmp_path)) == clean + "+dirty"
