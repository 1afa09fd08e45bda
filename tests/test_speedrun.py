"""The speed recipe: patch whitening, identity init, alternating flip, translation,
the optimiser, lookahead, test-time augmentation and a tiny end-to-end run."""
import dataclasses
import json
import math
import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import operad
from operad import Field, ops, verify
from operad.experiments import speedrun as sr
from operad.experiments.data import CIFAR10_CLASSES, ArrayData
from operad.experiments.synthetic import class_images
from operad.models import create_model
from operad.operators.whiten import patch_moments


def _correlated(n=32, c=3, size=12, seed=0):
    """Smooth, channel-correlated images: patch moments far from the identity."""
    g = torch.Generator().manual_seed(seed)
    base = torch.randn(n, 1, size + 2, size + 2, generator=g)
    x = F.avg_pool2d(base, 3, 1) + 0.3 * torch.randn(n, c, size, size, generator=g)
    return x * torch.tensor([1.0, 2.0, 0.5][:c]).view(1, c, 1, 1) + 0.2


def _whitened_moments(m, x):
    d = m.eigenvalues.numel()
    y = m(x)[:, :d] - (m.bias[:d].view(1, -1, 1, 1) if m.bias is not None else 0)
    flat = y.transpose(0, 1).reshape(d, -1).double()
    return flat @ flat.T / flat.shape[1]


@pytest.mark.parametrize("k", [1, 2, 3])
def test_whitening_makes_patch_moments_the_identity(k):
    x = _correlated()
    m = ops.patch_whiten(k=k, eps=1e-6).bind(Field(3)).fit(x)
    assert not torch.allclose(patch_moments(x, k), torch.eye(3 * k * k, dtype=torch.float64), atol=0.1)
    cov = _whitened_moments(m, x)
    lam = m.eigenvalues.double()
    torch.testing.assert_close(cov, torch.diag(lam / (lam + m.eps)), atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(cov, torch.eye(len(lam), dtype=torch.float64), atol=1e-2, rtol=0)
    y = m(x)
    d = len(lam)
    torch.testing.assert_close(y[:, d:] - m.bias[d:].view(1, -1, 1, 1), -(y[:, :d] - m.bias[:d].view(1, -1, 1, 1)))


def test_whitening_on_cifar(shared_data):
    from operad.experiments.data import load_dataset

    d = load_dataset("cifar10", "train", shared_data, subset=10)
    x = sr.DeviceSplit.from_array(d, "cpu").normalized()
    m = ops.patch_whiten(k=2).bind(Field(3))
    assert sr.init_whitening(m, x) == 1
    cov, lam = _whitened_moments(m, x), m.eigenvalues.double()
    torch.testing.assert_close(cov, torch.diag(lam / (lam + m.eps)), atol=1e-3, rtol=1e-3)
    assert (lam[:-1] >= lam[1:]).all() and lam[0] > 10 * lam[-1]


def test_whitening_lipschitz_bound_comes_from_the_eigenvalues():
    x = _correlated(size=10)
    m = ops.patch_whiten(k=2, eps=1e-3).bind(Field(3)).fit(x).double()
    bound = m.term.lipschitz_bound(m)
    w = m.weight.reshape(m.weight.shape[0], -1)
    assert bound == pytest.approx(2 * float(torch.linalg.matrix_norm(w, ord=2)), rel=1e-6)
    assert bound == pytest.approx(2 * math.sqrt(2 / (float(m.eigenvalues.min()) + 1e-3)), rel=1e-9)
    rep = verify.lipschitz(m, torch.randn(1, 3, 10, 10, dtype=torch.float64), iters=40)
    assert rep.ok and rep.measured > 0.5 * rep.claimed, rep


def test_whitening_weights_are_frozen_buffers_and_round_trip():
    m = ops.patch_whiten(k=2).bind(Field(3)).fit(_correlated())
    assert [n for n, _ in m.named_parameters()] == ["bias"]
    fresh = ops.patch_whiten(k=2).bind(Field(3))
    fresh.load_state_dict(m.state_dict())
    x = torch.randn(2, 3, 8, 8)
    torch.testing.assert_close(fresh(x), m(x))
    with pytest.raises(ValueError, match="eps"):
        ops.patch_whiten(eps=0.0)
    with pytest.raises(ValueError, match="expects images"):
        m.fit(torch.randn(2, 4, 8, 8))


def test_init_whitening_fits_the_stem_of_the_speed_net():
    model = create_model("cifar10_speedrun", widths=(8, 8, 8))
    x = _correlated(n=8, size=32)
    assert sr.init_whitening(model, x) == 1
    lam = torch.linalg.eigvalsh(patch_moments(x, 2)).flip(0)
    torch.testing.assert_close(model.stem[0].eigenvalues.double(), lam.clamp_min(0), rtol=1e-5, atol=1e-6)
    assert model.training


def test_dirac_conv_starts_as_identity_on_the_first_channels():
    m = ops.conv(8, k=3, bias=False, init="dirac").bind(Field(4))
    x = torch.randn(2, 4, 6, 6)
    torch.testing.assert_close(m(x)[:, :4], x)
    assert m.weight[4:].abs().sum() > 0  # the other filters keep a random init
    g = ops.conv(8, k=3, groups=2, bias=False, init="dirac").bind(Field(4))
    torch.testing.assert_close(g(x)[:, [0, 1, 4, 5]], x)
    with pytest.raises(ValueError, match="init"):
        ops.conv(8, init="orthogonal")


def test_speed_net_term_and_costs():
    term = operad.models.model_term("cifar10_speedrun")
    assert "patch_whiten" in repr(term) and "init='dirac'" in repr(term) and "scale(" in repr(term)
    m = create_model("cifar10_speedrun")
    assert operad.cost(m, size=(32, 32)) == operad.count(m, (2, 3, 32, 32))
    assert [b.eps for b in m.modules() if isinstance(b, torch.nn.BatchNorm2d)] == [1e-12] * 6


def test_alternating_flip_is_deterministic_and_complementary():
    x = torch.randn(64, 3, 4, 5)
    mask = sr.flip_mask(64, seed=3)
    assert torch.equal(mask, sr.flip_mask(64, seed=3)) and not torch.equal(mask, sr.flip_mask(64, seed=4))
    assert 16 < int(mask.sum()) < 48
    e0, e1, e2 = (sr.alternating_flip(x, mask, e) for e in (0, 1, 2))
    assert torch.equal(e0, e2)
    flipped0 = (e0 == x.flip(-1)).flatten(1).all(1) & ~(e0 == x).flatten(1).all(1)
    flipped1 = (e1 == x.flip(-1)).flatten(1).all(1) & ~(e1 == x).flatten(1).all(1)
    assert torch.equal(flipped0, mask) and torch.equal(flipped1, ~mask)
    ep = sr.EpochImages(x, flip=True, translate=0, seed=3)
    g = torch.Generator()
    assert torch.equal(ep.epoch(0, g), e0) and torch.equal(ep.epoch(1, g), e1)


def test_translation_crops_reflect_padded_windows():
    x = torch.randn(20, 3, 8, 8)
    ep = sr.EpochImages(x, flip=False, translate=2, seed=0)
    out = ep.epoch(0, torch.Generator().manual_seed(1))
    again = ep.epoch(0, torch.Generator().manual_seed(1))
    assert torch.equal(out, again) and out.shape == x.shape
    pad = F.pad(x, (2, 2, 2, 2), mode="reflect")
    shifts = set()
    for i in range(20):
        hits = [(oy, ox) for oy in range(5) for ox in range(5) if torch.equal(out[i], pad[i, :, oy:oy + 8, ox:ox + 8])]
        assert hits, f"image {i} is not a translated window"
        shifts.add(hits[0])
    assert len(shifts) > 3


def test_triangle_and_optimizer_groups():
    assert sr.triangle(0, 100, 0.2, 0.23, 0.07) == pytest.approx(0.2)
    assert sr.triangle(23, 100, 0.2, 0.23, 0.07) == pytest.approx(1.0)
    assert sr.triangle(100, 100, 0.2, 0.23, 0.07) == pytest.approx(0.07)
    cfg = sr.SpeedConfig(batch_size=512)
    model = create_model("cifar10_speedrun", widths=(8, 8, 8))
    opt = sr.make_optimizer(model, cfg)
    norm, other = opt.param_groups
    bns = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert all(not b.weight.requires_grad for b in bns)
    assert {id(p) for p in norm["params"]} == {id(b.bias) for b in bns}
    scale = 1024 * (1 + 1 / (1 - cfg.momentum))
    assert other["lr"] == pytest.approx(cfg.lr / scale) and norm["lr"] == pytest.approx(64 * other["lr"])
    for g in (norm, other):  # decay per step is decoupled from each group's lr
        assert g["lr"] * g["weight_decay"] == pytest.approx(cfg.weight_decay * 512 / scale)
    assert opt.defaults["nesterov"]
    with pytest.raises(ValueError, match="did you mean 'epochs'"):
        sr.SpeedConfig.from_dict({"epoch": 3})


def test_lookahead_update_is_an_ema_copied_back():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(2, 3, 3), torch.nn.BatchNorm2d(3))
    la = sr.Lookahead(model)
    start = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
        model(torch.randn(4, 2, 5, 5))  # moves the running statistics
    moved = {k: v.clone() for k, v in model.state_dict().items()}
    la.update(model, 0.7)
    for k, v in model.state_dict().items():
        if v.is_floating_point():
            torch.testing.assert_close(v, 0.7 * start[k] + 0.3 * moved[k])
            torch.testing.assert_close(la.avg[k], v)
        else:
            assert torch.equal(v, moved[k])  # num_batches_tracked is left alone
    with torch.no_grad():
        model[0].weight.add_(5.0)
    la.update(model, 1.0)  # a sync: back to the average
    torch.testing.assert_close(model[0].weight, la.avg["0.weight"])


def test_tta_is_the_weighted_mean_of_its_views():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.Flatten(), torch.nn.LazyLinear(5)).eval()
    x = torch.randn(6, 3, 8, 8)
    model(x)
    m = lambda v: model(v)
    pad = F.pad(x, (1, 1, 1, 1), mode="reflect")
    down_right, up_left = pad[..., 0:8, 0:8], pad[..., 2:10, 2:10]
    with torch.no_grad():
        torch.testing.assert_close(sr.tta_logits(model, x, 0), m(x))
        torch.testing.assert_close(sr.tta_logits(model, x, 1), (m(x) + m(x.flip(-1))) / 2)
        views = [x, x.flip(-1), down_right, down_right.flip(-1), up_left, up_left.flip(-1)]
        want = 0.25 * (m(views[0]) + m(views[1])) + 0.125 * sum(m(v) for v in views[2:])
        torch.testing.assert_close(sr.tta_logits(model, x, 2), want)
        torch.testing.assert_close(sr.tta_logits(model, x, 2, batch_size=4), want)
    y = want.argmax(1)
    assert sr.tta_accuracy(model, x, y, 2) == 1.0


def _syn(n, seed):
    y = np.random.default_rng(seed).integers(0, 10, n)
    return ArrayData("syn", "x", class_images(y, seed=seed), y, CIFAR10_CLASSES, mean=(0.5,) * 3, std=(0.25,) * 3)


TINY = dict(batch_size=64, model_args={"widths": [8, 16, 16]}, whiten_images=128, lookahead_start_epochs=1.0,
            whiten_bias_epochs=1.0, eval_batch_size=50)


def test_tiny_speedrun_learns():
    out = sr.run(train_data=_syn(256, 0), val_data=_syn(100, 1), device="cpu", runs=1, epochs=3, target=0.2,
                 eval_every=2, **TINY)
    r = out["runs"][0]
    assert r["completed"] and out["runs_done"] == 1 and not out["cut_short"]
    assert r["epoch_loss"][-1] < r["epoch_loss"][0]
    assert out["acc_mean"] > 0.3  # chance is 0.1
    assert r["time_to_target_s"] is not None and r["time_to_target_s"] <= r["time_s"]
    assert out["all_reached"] and out["time_to_target_mean_s"] == r["time_to_target_s"]
    assert r["steps"] == math.ceil(4 * 3) and r["train_img_per_s"] > 0 and len(r["evals"]) == 1
    json.dumps(out)


def test_speedrun_budget_stops_runs():
    out = sr.run(train_data=_syn(128, 0), val_data=_syn(20, 1), device="cpu", runs=3, epochs=2, target=0.99,
                 budget_s=1e-9, **TINY)
    assert out["cut_short"] and out["runs"] == [] and not out["all_reached"]
    assert out["time_to_target_mean_s"] is None
    cfg = sr.SpeedConfig.from_dict({**TINY, "epochs": 2})
    train = sr.DeviceSplit.from_array(_syn(128, 0), "cpu")
    r = sr.train_speedrun(cfg, train, sr.DeviceSplit.from_array(_syn(20, 1), "cpu"), deadline=0.0, target=0.0)
    assert not r["completed"] and r["epochs_run"] == 0 and r["time_to_target_s"] is None


def test_operad_train_runs_the_recipe(tmp_path):
    from operad.experiments import train
    from operad.experiments.synthetic import write_cifar_pickle

    write_cifar_pickle(str(tmp_path), per_class=12, test_per_class=3)
    res = train({"model": "cifar10_speedrun", "recipe": "speedrun", "model_args": {"widths": [8, 8, 8]},
                 "data_root": str(tmp_path), "batch_size": 32, "out_dir": str(tmp_path / "runs"), "name": "sr",
                 "recipe_args": {"epochs": 1.5, "runs": 2, "whiten_images": 64, "target": 0.0}})
    assert res["top1"] is not None and res["params"] > 0
    rec = json.load(open(tmp_path / "runs" / "sr" / "speedrun.json"))
    assert rec["runs_done"] == 2 and rec["config"]["epochs"] == 1.5 and rec["config"]["batch_size"] == 32
    assert rec["all_reached"] and [r["seed"] for r in rec["runs"]] == [0, 1]
    assert rec["times_to_target_s"] == rec["times_s"]  # no intermediate evaluation: reached at the final one
    assert os.path.isfile(tmp_path / "runs" / "sr" / "summary.json")


def test_smoke_settings_run_on_the_shared_data(shared_data):
    out = sr.run(shared_data, "cpu", runs=1, **sr.SMOKE)
    assert out["runs_done"] == 1 and out["train_size"] == 100 and out["test_size"] == 50
    assert 0.0 <= out["acc_mean"] <= 1.0 and out["time_to_target_mean_s"] is None


def test_bf16_path_runs_on_cpu():
    # the CUDA path's dtypes (bf16 images, autocast, whitening fitted from bf16 inputs), exercised on the CPU
    out = sr.run(train_data=_syn(128, 0), val_data=_syn(40, 1), device="cpu", runs=1, epochs=2, target=None,
                 amp="bf16", **TINY)
    r = out["runs"][0]
    assert r["completed"] and all(math.isfinite(v) for v in r["epoch_loss"]) and out["acc_mean"] > 0.1


def test_lookahead_starts_with_the_first_step_of_its_epoch():
    cfg = sr.SpeedConfig.from_dict({**TINY, "epochs": 3, "lookahead_start_epochs": 1.0, "lookahead_every": 4})
    train = sr.DeviceSplit.from_array(_syn(256, 0), "cpu")
    lp = sr._start(cfg, train, torch.device("cpu"), 0)
    x = train.normalized()
    sr._train_epoch(lp, x, train.labels)
    assert lp.step == 4 and lp.lookahead is None  # step 4 ends epoch 0: no averaging yet
    sr._train_epoch(lp, x, train.labels)
    assert lp.step == 8 and lp.lookahead is not None
    # every 3 steps: created at step 6, steps 7 and 8 move the model, the end of the epoch syncs it back
    cfg = dataclasses.replace(cfg, lookahead_every=3)
    lp = sr._start(cfg, train, torch.device("cpu"), 0)
    sr._train_epoch(lp, x, train.labels)
    sr._train_epoch(lp, x, train.labels)
    state = lp.model.state_dict()
    assert all(torch.equal(state[k], v) for k, v in lp.lookahead.avg.items())


@pytest.mark.parametrize("mod", ["operad.models.speedrun", "operad.experiments.speedrun", "operad.operators.whiten",
                                 "operad.operators.scale", "operad.operators.conv"])
def test_docstring_examples(mod):
    import doctest
    import importlib

    res = doctest.testmod(importlib.import_module(mod), optionflags=doctest.ELLIPSIS)
    assert res.failed == 0 and res.attempted > 0


@pytest.mark.slow  # two small trainings through both engines: ~15 s on the shared CPU
def test_cpu_proxy_study_writes_its_figures(shared_data, tmp_path):
    from operad.experiments.studies import speedrun_cpu

    n = torch.get_num_threads()
    try:
        rec = speedrun_cpu.main(["--data", shared_data, "--per-class", "13", "--test-per-class", "2", "--epochs", "1",
                                 "--out", str(tmp_path)])
    finally:
        torch.set_num_threads(n)
    assert rec["setup"]["train_size"] == 130 and rec["speedrun"]["steps"] == 1 and rec["resnet20"]["steps"] == 1
    on_disk = json.load(open(tmp_path / "speedrun_cpu.json"))
    assert on_disk["speedrun"]["top1"] == rec["speedrun"]["top1"]
    assert "| cifar10_speedrun |" in (tmp_path / "README.md").read_text()
