"""Training: a short run, NaN stop, resume after a real kill, DDP on 2 CPU
processes equal to one process, schedules, EMA, checkpoints."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

import operad
from operad.experiments import train
from operad.experiments.config import Config, dump_toml
from operad.experiments.synthetic import write_cifar_pickle
from operad.experiments.train import DivergenceError, EMA, load_checkpoint, lr_factor, param_groups

EXPR = "ops.conv(8) >> ops.bn() >> ops.relu() >> ops.global_pool() >> ops.linear(10)"


@pytest.fixture(scope="module")
def cifar_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    write_cifar_pickle(str(root), per_class=16, test_per_class=4)
    return str(root)


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("OPERAD_CACHE", str(tmp_path / "cache"))


def _env():
    env = dict(os.environ)
    pkg_parent = os.path.dirname(os.path.dirname(os.path.abspath(operad.__file__)))
    env["PYTHONPATH"] = os.pathsep.join([pkg_parent] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    env["OMP_NUM_THREADS"] = "1"
    return env


def _base(cifar_root, out, **kw):
    cfg = {"model_expr": EXPR, "dataset": "cifar10", "data_root": cifar_root, "out_dir": str(out), "name": "t",
           "batch_size": 32, "eval_batch_size": 64, "epochs": 2, "lr": 0.05, "log_every": 2, "progress": False,
           "threads": 1, "seed": 1, "plot_every": 0}
    cfg.update(kw)
    return cfg


def test_short_training_run_writes_everything(cifar_root, tmp_path):
    r = train(_base(cifar_root, tmp_path, epochs=3, ema=0.9, cutout=8))
    run = tmp_path / "t"
    for f in ("config.toml", "env.json", "metrics.jsonl", "checkpoint.pt", "final.pt", "summary.json", "curves.png",
              "confusion.png", "eval.json"):
        assert (run / f).is_file(), f
    assert r["steps"] == 3 * (160 // 32) and r["train_size"] == 160 and r["val_size"] == 40
    assert 0.0 <= r["top1"] <= r["top5"] <= 1.0
    for k in ("top1", "top5"):  # fractions of the 40 validation images, not averages of batch means
        assert r[k] * r["val_size"] == pytest.approx(round(r[k] * r["val_size"]), abs=1e-6)
    recs = [json.loads(l) for l in open(run / "metrics.jsonl")]
    train_recs = [x for x in recs if x["kind"] == "train"]
    assert len([x for x in recs if x["kind"] == "eval"]) == 3
    assert all(torch.isfinite(torch.tensor(x["loss"])) for x in train_recs)
    # the logged rates account for every image and second: window by window, images / rate adds up to
    # the training time, and the summary's rate is all images over that time
    steps = [0] + [x["step"] for x in train_recs]
    window_s = [(b - a) * 32 / x["img_per_s"] for a, b, x in zip(steps, steps[1:], train_recs)]
    assert steps[-1] == r["steps"] and sum(window_s) == pytest.approx(r["train_time_s"], rel=0.01, abs=2e-3)
    assert r["train_img_per_s"] == pytest.approx(r["steps"] * 32 / r["train_time_s"], rel=0.01)
    assert train_recs[-1]["lr"] == pytest.approx(0.0, abs=1e-12)  # cosine ends at min_lr 0
    env = json.load(open(run / "env.json"))
    assert env["git_commit"] is None or len(env["git_commit"]) == 40
    assert env["torch"] == torch.__version__
    # the saved config reads back into the same Config
    import tomllib

    saved = tomllib.loads((run / "config.toml").read_text())
    assert Config.from_dict(saved) == Config.from_dict(_base(cifar_root, tmp_path, epochs=3, ema=0.9, cutout=8))
    ck = load_checkpoint(str(run / "final.pt"))
    assert ck["ema"] is not None and set(ck["model"]) == set(ck["ema"])


def test_learns_the_synthetic_task(cifar_root, tmp_path):
    r = train(_base(cifar_root, tmp_path, epochs=8, lr=0.1, optimizer="adamw", weight_decay=0.01, schedule="onecycle",
                    crop_padding=0, flip=False))
    assert r["top1"] >= 0.5  # chance is 0.1; the synthetic classes have distinct colours


def test_existing_run_needs_resume_or_overwrite(cifar_root, tmp_path):
    train(_base(cifar_root, tmp_path, epochs=1))
    from operad.experiments.config import ConfigError

    with pytest.raises(ConfigError, match="already holds a run; pass --resume"):
        train(_base(cifar_root, tmp_path, epochs=1))
    train(_base(cifar_root, tmp_path, epochs=1), overwrite=True)


def test_nan_loss_stops_with_step_and_checkpoint(cifar_root, tmp_path):
    cfg = _base(cifar_root, tmp_path, epochs=20, lr=1e12, momentum=0.0, checkpoint_every=1, log_every=1,
                warmup_epochs=2, warmup_start=1e-12, schedule="constant")
    with pytest.raises(DivergenceError) as ei:
        train(cfg)
    msg = str(ei.value)
    import re

    m = re.search(r"NaN or inf (at|after) step (\d+).*last good checkpoint is (\S+) \(step (\d+)\)", msg)
    assert m, msg
    bad, path, good = int(m.group(2)), m.group(3), int(m.group(4))
    assert good == bad - 1 and os.path.isfile(path)  # a checkpoint every step: the one just before
    ck = load_checkpoint(path)
    assert ck["step"] == good
    assert all(torch.isfinite(v).all() for v in ck["model"].values() if v.is_floating_point())


def test_nan_without_checkpoint_says_so(cifar_root, tmp_path):
    with pytest.raises(DivergenceError, match=r"(at|after) step [12] .*no checkpoint was written"):
        train(_base(cifar_root, tmp_path, lr=1e30, momentum=0.0, log_every=1, model_expr=EXPR.replace(
            "ops.linear(10)", "ops.linear(10) >> ops.linear(10)")))


def _write_cfg(path, cfg):
    path.write_text(dump_toml(cfg))
    return str(path)


def _cli(args, **kw):
    return subprocess.Popen([sys.executable, "-m", "operad.experiments.cli"] + args, env=_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kw)


RESUME_EXPR = ("ops.conv(16) >> ops.bn() >> ops.relu() >> ops.conv(16) >> ops.bn() >> ops.relu() >> ops.dropout(0.2) "
               ">> ops.global_pool() >> ops.linear(10)")


def test_resume_after_kill_equals_uninterrupted(cifar_root, tmp_path):
    common = dict(model_expr=RESUME_EXPR, epochs=8, batch_size=16, checkpoint_every=7, ema=0.95, cutout=6,
                  label_smoothing=0.1, mixup=0.2, clip_grad=5.0, warmup_epochs=1, deterministic=True,
                  log_every=5)
    cfg_a = _write_cfg(tmp_path / "a.toml", _base(cifar_root, tmp_path / "a", **common))
    cfg_b = _write_cfg(tmp_path / "b.toml", _base(cifar_root, tmp_path / "b", **common))
    total = 8 * (160 // 16)
    # run B (uninterrupted) and run A (to be killed) side by side
    pb = _cli(["train", cfg_b])
    p = _cli(["train", cfg_a])
    # run A: killed with SIGKILL once it has written a checkpoint past step 20, then resumed
    sidecar = tmp_path / "a" / "t" / "checkpoint.json"
    t0 = time.time()
    while time.time() - t0 < 120:
        if sidecar.exists():
            try:
                if json.loads(sidecar.read_text())["step"] >= 20:
                    break
            except (json.JSONDecodeError, KeyError):
                pass
        if p.poll() is not None:
            break
        time.sleep(0.002)
    p.send_signal(signal.SIGKILL)
    out_a1 = p.communicate()[0]
    assert p.returncode == -signal.SIGKILL, f"the run ended before it could be killed:\n{out_a1}"
    killed_at = json.loads(sidecar.read_text())["step"]
    assert 20 <= killed_at < total
    assert not (tmp_path / "a" / "t" / "final.pt").exists()
    p = _cli(["train", cfg_a, "--resume"])
    out_a2 = p.communicate(timeout=300)[0]
    assert p.returncode == 0, out_a2
    assert f"resumed from step {killed_at}" in out_a2
    out_b = pb.communicate(timeout=300)[0]
    assert pb.returncode == 0, out_b
    a = load_checkpoint(str(tmp_path / "a" / "t" / "final.pt"))
    b = load_checkpoint(str(tmp_path / "b" / "t" / "final.pt"))
    for part in ("model", "ema"):
        assert a[part].keys() == b[part].keys()
        for k in a[part]:
            assert torch.equal(a[part][k], b[part][k]), f"{part}.{k} differs after resume"
    # the metrics logs agree too (the killed run's records past its checkpoint were dropped)
    la = [json.loads(l) for l in open(tmp_path / "a" / "t" / "metrics.jsonl")]
    lb = [json.loads(l) for l in open(tmp_path / "b" / "t" / "metrics.jsonl")]
    key = lambda r: (r["kind"], r["step"])
    assert [key(r) for r in la] == [key(r) for r in lb]
    for ra, rb in zip(la, lb):
        assert ra.get("loss") == rb.get("loss") and ra.get("top1") == rb.get("top1")


DDP_EXPR = "ops.conv(8) >> ops.relu() >> ops.conv(8, stride=2) >> ops.relu() >> ops.global_pool() >> ops.linear(10)"


def test_ddp_two_processes_equal_single_process(cifar_root, tmp_path):
    common = dict(model_expr=DDP_EXPR, epochs=2, batch_size=32, lr=0.1, log_every=5, ema=0.9)
    cfg_single = _base(cifar_root, tmp_path / "single", **common)
    cfg_ddp = _write_cfg(tmp_path / "ddp.toml", _base(cifar_root, tmp_path / "ddp", **common))
    p = subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                          "-m", "operad.experiments.cli", "train", cfg_ddp], env=_env(), stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, text=True)
    train(cfg_single)  # meanwhile, the single-process reference
    out = p.communicate(timeout=300)[0]
    assert p.returncode == 0, out
    s = json.load(open(tmp_path / "ddp" / "t" / "summary.json"))
    assert s["world_size"] == 2
    a = load_checkpoint(str(tmp_path / "ddp" / "t" / "final.pt"))
    b = load_checkpoint(str(tmp_path / "single" / "t" / "final.pt"))
    for part in ("model", "ema"):
        for k in a[part]:
            torch.testing.assert_close(a[part][k], b[part][k], rtol=1e-4, atol=1e-5, msg=f"{part}.{k}")
    # and the distributed evaluation (sharded, all-reduced) saw the whole test set
    single = json.load(open(tmp_path / "single" / "t" / "summary.json"))
    assert s["final"]["top1"] == pytest.approx(single["final"]["top1"])
    assert sum(map(sum, json.load(open(tmp_path / "ddp" / "t" / "eval.json"))["confusion_matrix"])) == 40


def test_schedules_and_param_groups():
    c = Config(schedule="step", milestones=[0.5, 0.75], gamma=0.1)
    assert [lr_factor(c, s, 100, 10) for s in (0, 49, 50, 75, 99)] == pytest.approx([1, 1, 0.1, 0.01, 0.01])
    c = Config(schedule="step", milestones=[3, 6], gamma=0.5)  # epochs
    assert [lr_factor(c, s, 100, 10) for s in (29, 30, 60)] == pytest.approx([1, 0.5, 0.25])
    c = Config(schedule="onecycle", onecycle_pct=0.25)
    f = [lr_factor(c, s, 100, 10) for s in range(101)]
    assert f[0] == pytest.approx(1 / 25) and f[25] == pytest.approx(1.0) and max(f) == pytest.approx(1.0)
    assert f[100] < 1e-4 and all(a >= b for a, b in zip(f[25:], f[26:]))
    c = Config(schedule="cosine", warmup_epochs=1, warmup_start=0.1, min_lr=0.01, lr=0.1)
    assert lr_factor(c, 0, 100, 10) == pytest.approx(0.1) and lr_factor(c, 100, 100, 10) == pytest.approx(0.1)
    m = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.Linear(4, 2))
    g = param_groups(m, 5e-4)
    assert [len(x["params"]) for x in g] == [2, 4] and g[1]["weight_decay"] == 0.0


def test_ema_tracks_weights():
    m = torch.nn.Linear(3, 1, bias=False)
    e = EMA(m, 0.5)
    with torch.no_grad():
        m.weight.fill_(1.0)
    e.update(m, 1000)  # decay min(0.5, ...) = 0.5
    w0 = e.module.weight.clone()
    with torch.no_grad():
        m.weight.fill_(3.0)
    e.update(m, 1000)
    assert torch.allclose(e.module.weight, 0.5 * w0 + 0.5 * 3.0)


@pytest.mark.parametrize("rewrite", ["fuse", "remove_residuals"])
def test_deploy_rewrites_the_trained_model_exactly(tmp_path, rewrite):
    from operad.experiments.synthetic import write_cifar_pickle
    root = tmp_path / "data"
    write_cifar_pickle(str(root), per_class=2, test_per_class=1)
    res = train({"model": "resnet20", "dataset": "cifar10", "data_root": str(root), "epochs": 1, "batch_size": 8,
                 "eval_batch_size": 8, "out_dir": str(tmp_path / "runs"), "name": rewrite, "deploy": rewrite,
                 "progress": False, "threads": 1, "device": "cpu"})
    dep = res["deploy"]
    assert dep["rewrite"] == rewrite
    assert dep["max_abs_diff"] < 1e-3
    assert dep["infer_img_per_s"] > 0 and dep["speedup"] == pytest.approx(
        dep["infer_img_per_s"] / dep["original_infer_img_per_s"])
