"""The benchmarks at small sizes: each one's baseline and ours compute the same function,
the figures they print are the ones they measure, and competitors are timed in alternation."""
import pytest
import torch

from operad.experiments.bench.timing import time_interleaved


def test_interleaved_timer_alternates_the_competitors():
    calls = []
    t = time_interleaved({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}, runs=4, warmup=1)
    assert calls == ["a", "b"] * 5 and set(t) == {"a", "b"}


def test_bench_dendritic_forms_compute_one_function_and_fused_keeps_less(capsys):
    from operad.experiments.bench import dendritic
    torch.manual_seed(0)
    rows = dendritic.run([(2, 4, 4, 8)], runs=1, warmup=0)
    by = {r["impl"]: r for r in rows}
    assert set(by) == {"conv(relu)", "naive", "fused", "compiled"}
    assert all(r["max_diff"] < 1e-5 for r in rows)
    assert by["fused"]["saved_mib"] < by["naive"]["saved_mib"]
    assert by["conv(relu)"]["ratio"] == 1.0 and by["naive"]["ratio"] == by["naive"]["seconds"] / by["conv(relu)"]["seconds"]
    assert "max diff" in capsys.readouterr().out


def test_bench_rmnet_forms_compute_one_function():
    from operad.experiments.bench import rmnet
    rows = rmnet.main(["--models", "resnet20", "--batch", "2", "--size", "16", "--runs", "1", "--iters", "1",
                       "--threads", "1"])
    by = {r["form"]: r for r in rows}
    assert by["original"]["diff"] == 0 and by["fused"]["diff"] < 1e-5 and by["rm-plain"]["diff"] < 1e-5
    assert by["fused"]["params"] < by["original"]["params"] < by["rm-plain"]["params"]  # BN folded; reserve channels
    assert by["original"]["speedup"] == 1.0


def test_bench_harmonic_conv_baseline_is_the_same_function(capsys):
    from operad.experiments.bench import harmonic
    rows = harmonic.main(["--small", "--runs", "1", "--warmup", "0", "--threads", "1"])
    assert len(rows) == 1 and rows[0]["max_diff"] < 1e-5
    assert all(rows[0][k] > 0 for k in ("conv_train", "harm_train", "conv_eval", "harm_eval"))
    assert "max diff" in capsys.readouterr().out


def test_bench_zoo_times_a_model_with_its_baseline():
    from operad import create_model
    from operad.experiments.bench.zoo import _ratios, measure
    base = (create_model("resnet20"), (16, 16), (8, 8), "classification")
    r = measure(create_model("resnet20"), (16, 16), (8, 8), "classification", batch=2, runs=1, warmup=0,
                baseline=base)
    assert r["base_latency_ms"] > 0 and r["base_train_img_s"] > 0
    rows = _ratios([dict(model="resnet20", input="32x32", train_input="32x32", params=1, macs=10, latency_ms=1.0,
                         train_img_s=1.0),
                    dict(model="x", input="32x32", train_input="32x32", params=1, macs=20, latency_ms=4.0,
                         train_img_s=1.0, base_latency_ms=2.0, base_train_img_s=2.0)])
    # the ratio uses the paired (alternating) baseline figures, not the baseline's own row
    assert rows[1]["lat_ratio"] == 2.0 and rows[1]["train_ratio"] == 0.5


def test_bench_binary_sizes_measure_the_packed_store(capsys):
    from operad.experiments.bench import binary

    s = binary.sizes("resnet20_xnor")
    assert s["layers_float"] / s["layers_packed"] >= 25 and s["model_packed"] < s["model_float"]
    binary.main(["--sizes-only", "--models", "resnet20_xnor"])
    row = capsys.readouterr().out.strip().splitlines()[-1]
    assert row.startswith("| resnet20_xnor | 1,074,925 |") and f"{s['layers_packed']:,}" in row
