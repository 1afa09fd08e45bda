"""Run safety (issue 14): operad never deletes or replaces what the user owns,
cleans up after killed checkpoint writes, survives a failed write, and a
resume means what it says (changed keys applied or refused, the divergence
advice works, the first log record after a resume is the uninterrupted one).
Tiny synthetic data, a few steps each."""
import doctest
import hashlib
import importlib
import json
import os
import re
import subprocess
import sys

import pytest
import torch

from operad.experiments import train
from operad.experiments.config import Config, ConfigError
from operad.experiments.results import UnreadableSummary, collect_results
from operad.experiments.resume import CHANGEABLE, resume_changes
from operad.experiments.run_dir import MARKER, RunDir
from operad.experiments.synthetic import write_cifar_pickle

T = importlib.import_module("operad.experiments.train")
T = sys.modules["operad.experiments.train"]  # the package exports a function named train

EXPR = "ops.conv(4) >> ops.bn() >> ops.relu() >> ops.global_pool() >> ops.linear(10)"
SPE = 5  # 40 synthetic training images, batch 8


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    write_cifar_pickle(str(root), per_class=4, test_per_class=2)
    return str(root)


@pytest.fixture(autouse=True)
def _cache_and_no_plots(tmp_path, monkeypatch):
    monkeypatch.setenv("OPERAD_CACHE", str(tmp_path / "cache"))
    import operad.experiments.plots as plots  # drawing PNGs is most of a tiny run's time, and not tested here

    monkeypatch.setattr(plots, "plot_run", lambda *a, **k: None)
    monkeypatch.setattr(plots, "plot_confusion", lambda *a, **k: None)


def _cfg(data_root, out, **kw):
    c = {"model_expr": EXPR, "dataset": "cifar10", "data_root": data_root, "out_dir": str(out), "name": "r",
         "batch_size": 8, "eval_batch_size": 32, "epochs": 2, "lr": 0.05, "log_every": 2, "progress": False,
         "threads": 1, "seed": 3, "plot_every": 0, "device": "cpu"}
    c.update(kw)
    return c


def _sha(path):
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def _records(path):
    out = []
    for line in open(path):
        r = json.loads(line)
        for k in ("img_per_s", "time", "eval_s"):
            r.pop(k, None)
        out.append(r)
    return out


# ----------------------------------------------------------------------------- names

@pytest.mark.parametrize("name", ["", "  ", ".", "..", "/tmp/x", "a/b", "../up", "a\\b", " lead"])
def test_names_that_are_not_plain_folder_names_are_refused_before_data(tmp_path, name):
    out = tmp_path / "out"
    with pytest.raises(ConfigError, match=r"name .*(empty|not a plain folder name)"):
        # the data root does not exist: a ConfigError, not a DataError, shows the check runs first
        train(_cfg(str(tmp_path / "no-data"), out, name=name))
    assert not out.exists()


def test_an_out_dir_or_run_path_that_is_a_file_is_refused(tmp_path):
    (tmp_path / "afile").write_text("mine")
    with pytest.raises(ConfigError, match="afile exists and is not a directory"):
        RunDir.open(str(tmp_path / "afile"), "r")
    with pytest.raises(ConfigError, match="afile exists and is not a directory"):
        RunDir.open(str(tmp_path), "afile")
    assert (tmp_path / "afile").read_text() == "mine"


# ----------------------------------------------------------------------------- overwrite

def test_overwrite_deletes_only_operads_files(data_root, tmp_path):
    train(_cfg(data_root, tmp_path))
    run = tmp_path / "r"
    assert (run / MARKER).is_file()
    first_log = _records(run / "metrics.jsonl")
    (run / "notes.txt").write_text("mine")
    (run / "mine").mkdir()
    (run / "mine" / "checkpoint.pt").write_text("my own file named like operad's")
    (run / "robustness").mkdir()
    (run / "robustness" / "jpeg.json").write_text("{}")        # operad's name: removed
    (run / "robustness" / "notes.md").write_text("mine too")   # not operad's: kept
    train(_cfg(data_root, tmp_path), overwrite=True)
    assert (run / "notes.txt").read_text() == "mine"
    assert (run / "mine" / "checkpoint.pt").read_text() == "my own file named like operad's"
    assert (run / "robustness" / "notes.md").read_text() == "mine too"
    assert not (run / "robustness" / "jpeg.json").exists()
    assert _records(run / "metrics.jsonl") == first_log  # a fresh log, not the old one appended to


def test_overwrite_refuses_a_directory_operad_did_not_mark(data_root, tmp_path):
    run = tmp_path / "r"
    run.mkdir()
    (run / "checkpoint.pt").write_bytes(b"the user's own checkpoint")
    (run / "config.toml").write_text("# the user's own config\n")
    before = {p.name: _sha(p) for p in run.iterdir()}
    with pytest.raises(ConfigError, match=r"no \.operad-run marker.*--overwrite deletes nothing"):
        train(_cfg(data_root, tmp_path), overwrite=True)
    assert {p.name: _sha(p) for p in run.iterdir()} == before


def test_a_bad_name_in_a_later_run_is_refused_before_the_first_trains(data_root, tmp_path):
    cfg = dict(_cfg(data_root, tmp_path), runs=[{"name": "ok"}, {"name": "../escape"}])
    with pytest.raises(ConfigError, match="'../escape' is not a plain folder name"):
        train(cfg)
    assert not (tmp_path / "ok").exists()


def test_a_run_from_before_markers_resumes_and_is_adopted(data_root, tmp_path, capsys):
    run = tmp_path / "r"
    train(_cfg(data_root, tmp_path, epochs=1))
    os.remove(run / MARKER)  # as an operad before markers left it
    (run / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match="no .operad-run marker"):
        train(_cfg(data_root, tmp_path, epochs=1), overwrite=True)
    r = train(_cfg(data_root, tmp_path, epochs=2), resume=True)
    assert r["steps"] == 2 * SPE and "resumed from step 5" in capsys.readouterr().out
    marker = json.load(open(run / MARKER))
    assert marker["user_files"] == ["notes.txt"]  # its own files are operad's; config.toml is rewritten in place
    assert not (run / "config.resolved.toml").exists()
    train(_cfg(data_root, tmp_path, epochs=1), overwrite=True)  # adopted: --overwrite works now
    assert (run / "notes.txt").read_text() == "mine"


def test_users_config_toml_is_never_replaced(data_root, tmp_path, capsys):
    run = tmp_path / "r"
    run.mkdir()
    mine = "# my notes for this experiment\nlr = 123\n"
    (run / "config.toml").write_text(mine)
    train(_cfg(data_root, tmp_path))
    assert "the resolved config goes to config.resolved.toml" in capsys.readouterr().out
    import tomllib

    resolved = tomllib.loads((run / "config.resolved.toml").read_text())
    assert Config.from_dict(resolved) == Config.from_dict(_cfg(data_root, tmp_path))
    train(_cfg(data_root, tmp_path, lr=0.02), overwrite=True)
    train(_cfg(data_root, tmp_path, lr=0.02, epochs=3), resume=True)
    assert (run / "config.toml").read_text() == mine
    assert tomllib.loads((run / "config.resolved.toml").read_text())["epochs"] == 3


def test_a_user_file_with_a_name_operad_writes_is_refused(data_root, tmp_path):
    run = tmp_path / "r"
    run.mkdir()
    (run / "metrics.jsonl").write_text("my own log\n")
    with pytest.raises(ConfigError, match=r"holds metrics\.jsonl, which operad writes but did not write there"):
        train(_cfg(data_root, tmp_path))
    assert (run / "metrics.jsonl").read_text() == "my own log\n"


# ----------------------------------------------------------------------------- temporaries and failed writes

def _dead_pid():
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_stale_checkpoint_temporaries_are_removed_on_start_and_resume(data_root, tmp_path, capsys):
    run = tmp_path / "r"
    train(_cfg(data_root, tmp_path, epochs=1))
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        stale = run / f".checkpoint.pt.tmp{_dead_pid()}"
        busy = run / f".checkpoint.pt.tmp{live.pid}"  # a live writer's temporary is not stale
        stale.write_bytes(b"half a checkpoint")
        busy.write_bytes(b"being written")
        capsys.readouterr()
        train(_cfg(data_root, tmp_path, epochs=2), resume=True)
        assert not stale.exists() and busy.exists()
        assert f"removed stale temporaries of an interrupted write: {stale.name}" in capsys.readouterr().out
        stale.write_bytes(b"half a checkpoint")
        train(_cfg(data_root, tmp_path, epochs=1), overwrite=True)  # a fresh start cleans too
        assert not stale.exists()
    finally:
        live.kill()
        live.wait()


@pytest.mark.parametrize("fault", ["torch.save", "os.replace"])
def test_a_failed_checkpoint_write_keeps_the_previous_one_and_says_so(data_root, tmp_path, monkeypatch, fault):
    run = tmp_path / "r"
    cfg = _cfg(data_root, tmp_path, epochs=2, checkpoint_every=2)
    calls = []
    real_save, real_replace = torch.save, os.replace

    def failing_save(obj, f, *a, **k):
        calls.append(obj.get("step"))
        if len(calls) == 2:  # the second checkpoint: half written, then the disk is full
            f.write(b"PK\x03\x04 partial")
            raise OSError(28, "No space left on device")
        return real_save(obj, f, *a, **k)

    def failing_replace(src, dst):
        if str(dst).endswith("checkpoint.pt"):
            calls.append(dst)
            if len(calls) == 2:
                raise OSError(5, "Input/output error")
        return real_replace(src, dst)

    if fault == "torch.save":
        monkeypatch.setattr(torch, "save", failing_save)
    else:
        monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(T.CheckpointError, match=r"checkpoint of step 4 was not written .*"
                                                r"the previous checkpoint \(step 2\) is intact"):
        train(cfg)
    monkeypatch.undo()
    assert T.load_checkpoint(str(run / "checkpoint.pt"))["step"] == 2
    assert not [p for p in os.listdir(run) if ".tmp" in p]
    r = train(cfg, resume=True)  # the intact checkpoint continues the run to its end
    assert r["steps"] == 2 * SPE


# ----------------------------------------------------------------------------- resume

def test_resume_changes_are_classified():
    for k in ("lr", "epochs", "eval_every", "log_every", "clip_grad", "warmup_epochs"):
        assert k in CHANGEABLE
    for k in ("model", "model_expr", "model_args", "dataset", "batch_size", "seed", "subset", "optimizer"):
        assert k not in CHANGEABLE
    regularization = ("auto_augment", "rand_augment_n", "rand_augment_m", "erasing", "erasing_area", "tsla_until",
                      "disturb_label", "drop_block_ramp")  # issue 19: they define the experiment, like cutout
    for k in regularization + ("cutout", "mixup", "cutmix"):
        assert k not in CHANGEABLE
    with pytest.raises(ConfigError, match=r"--resume cannot change disturb_label \(0.0 in the checkpoint, 0.1 now\)"):
        resume_changes(Config(model="resnet20").to_dict(), Config(model="resnet20", disturb_label=0.1))
    pre19 = {k: v for k, v in Config(model="resnet20").to_dict().items() if k not in regularization}
    assert resume_changes(pre19, Config(model="resnet20")) == {}  # a checkpoint from before issue 19
    old = Config(model="resnet20").to_dict()
    del old["label_smoothing"]  # a checkpoint from before a key existed: its default
    assert resume_changes(old, Config(model="resnet20")) == {}
    with pytest.raises(ConfigError) as ei:
        resume_changes(old, Config(model="resnet20", seed=1, lr=0.5, model_args={"width": 2}))
    msg = str(ei.value)
    assert "seed (0 in the checkpoint, 1 now)" in msg and "model_args ({} in the checkpoint" in msg
    assert "lr" not in msg.split(":")[0]


def test_resume_refuses_keys_that_define_the_experiment_before_reading_data(data_root, tmp_path):
    train(_cfg(data_root, tmp_path, epochs=1))
    ck = str(tmp_path / "r" / "checkpoint.pt")
    before = _sha(ck)
    changed = _cfg(str(tmp_path / "no-data"), tmp_path, epochs=1, batch_size=4, seed=9,
                   model_expr=EXPR.replace("conv(4)", "conv(6)"))
    with pytest.raises(ConfigError) as ei:
        train(changed, resume=True)
    head = str(ei.value).split(":")[0]
    assert re.findall(r"(\w+) \(", head) == ["batch_size", "model_expr", "seed"]
    assert _sha(ck) == before


def test_resume_applies_a_new_lr_and_length_with_the_schedule_rescaled(data_root, tmp_path, capsys):
    train(_cfg(data_root, tmp_path, epochs=2, lr=0.05))
    capsys.readouterr()
    new = _cfg(data_root, tmp_path, epochs=4, lr=0.01)
    r = train(new, resume=True)
    out = capsys.readouterr().out
    assert "resume changes epochs 2 -> 4, lr 0.05 -> 0.01" in out
    assert re.search(r"LR schedule is rescaled to lr 0.01 over 20 steps: step 10 continues at lr \S+ "
                     r"\(the checkpoint's schedule was at 0\)", out), out
    assert r["steps"] == 4 * SPE
    c = Config.from_dict(new)
    recs = [x for x in _records(tmp_path / "r" / "metrics.jsonl") if x["kind"] == "train" and x["step"] > 10]
    assert recs and all(x["lr"] == pytest.approx(0.01 * T.lr_factor(c, x["step"], 20, SPE), rel=1e-6, abs=1e-12)
                        for x in recs)
    assert json.load(open(tmp_path / "r" / "env.json"))["resume_changes"] == {"epochs": [2, 4], "lr": [0.05, 0.01]}
    assert T.load_checkpoint(str(tmp_path / "r" / "checkpoint.pt"))["config"]["lr"] == 0.01


def test_resume_writes_new_optimiser_hyper_parameters_into_the_restored_optimiser(data_root, tmp_path, capsys):
    train(_cfg(data_root, tmp_path, epochs=1, momentum=0.9, weight_decay=5e-4))
    train(_cfg(data_root, tmp_path, epochs=2, momentum=0.5, weight_decay=1e-3, nesterov=False), resume=True)
    assert "momentum 0.9 -> 0.5, nesterov True -> False, weight_decay 0.0005 -> 0.001" in capsys.readouterr().out
    groups = T.load_checkpoint(str(tmp_path / "r" / "checkpoint.pt"))["optimizer"]["param_groups"]
    assert [(g["momentum"], g["nesterov"], g["weight_decay"]) for g in groups] == [(0.5, False, 1e-3),
                                                                                 (0.5, False, 0.0)]


def test_the_divergence_advice_works_end_to_end(data_root, tmp_path, capsys):
    # sane for three epochs, then the step schedule multiplies the lr by 2**50: the run diverges in epoch 4
    cfg = _cfg(data_root, tmp_path, epochs=6, lr=0.05, momentum=0.0, schedule="step", milestones=[3],
               gamma=2.0 ** 50, log_every=1)
    with pytest.raises(T.DivergenceError) as ei:
        train(cfg)
    m = re.search(r"last good checkpoint is (\S+) \(step (\d+)\); resume from it with a lower lr", str(ei.value))
    assert m, str(ei.value)
    good = int(m.group(2))
    assert good == 3 * SPE and m.group(1) == str(tmp_path / "r" / "checkpoint.pt")
    with pytest.raises(T.DivergenceError):  # the same lr diverges again from the same checkpoint
        train(cfg, resume=True)
    capsys.readouterr()
    low = 0.05 / 2.0 ** 50
    r = train(dict(cfg, lr=low), resume=True)  # the advice: a lower lr (0.05 after the milestone)
    out = capsys.readouterr().out
    assert f"resumed from step {good}" in out and f"lr 0.05 -> {low!r}" in out
    assert f"step {good} continues at lr 0.05 (the checkpoint's schedule was at {0.05 * 2.0 ** 50:.6g})" in out
    assert r["steps"] == 6 * SPE and torch.isfinite(torch.tensor(r["loss"]))
    recs = [x for x in _records(tmp_path / "r" / "metrics.jsonl") if x["kind"] == "train"]
    assert [x["step"] for x in recs] == list(range(1, 6 * SPE + 1))  # the diverged records were dropped
    # (the record of step 15 was written before the divergence: it shows the lr its next step was to use)
    assert all(x["lr"] == pytest.approx(0.05) for x in recs if x["step"] != good)


class _Killed(Exception):
    pass


def test_first_log_record_after_a_resume_equals_the_uninterrupted_run(data_root, tmp_path, monkeypatch):
    # log windows end at steps 4, 8, ...; the run is killed right after the checkpoint of step 6
    kw = dict(epochs=3, log_every=4, checkpoint_every=3, mixup=0.2, ema=0.9, deterministic=True)
    train(_cfg(data_root, tmp_path / "a", **kw))
    real = T.save_checkpoint

    def kill_after_step_6(path, state):
        real(path, state)
        if state.get("step") == 6:
            raise _Killed()

    monkeypatch.setattr(T, "save_checkpoint", kill_after_step_6)
    with pytest.raises(_Killed):
        train(_cfg(data_root, tmp_path / "b", **kw))
    monkeypatch.undo()
    train(_cfg(data_root, tmp_path / "b", **kw), resume=True)
    la, lb = (_records(tmp_path / x / "r" / "metrics.jsonl") for x in ("a", "b"))
    assert [(x["kind"], x["step"]) for x in lb] == [(x["kind"], x["step"]) for x in la]
    assert lb == la  # the record of step 8 averages steps 5-8, as in the uninterrupted run
    a, b = (T.load_checkpoint(str(tmp_path / x / "r" / "final.pt")) for x in ("a", "b"))
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])


# ----------------------------------------------------------------------------- results

def test_results_warns_about_an_unreadable_summary(tmp_path):
    good = tmp_path / "runs" / "good"
    bad = tmp_path / "runs" / "bad"
    worse = tmp_path / "runs" / "worse"
    for d in (good, bad, worse):
        d.mkdir(parents=True)
    (good / "summary.json").write_text(json.dumps({"name": "good", "top1": 0.5}))
    (bad / "summary.json").write_text('{"name": "bad", "top1": 0.')  # a run killed while writing it
    (worse / "summary.json").write_bytes(b"\xff\xfe[1, 2]")
    with pytest.warns(UnreadableSummary) as rec:
        rows = collect_results([str(tmp_path / "runs")])
    assert [r["name"] for r in rows] == ["good"]
    msgs = sorted(str(w.message) for w in rec)
    assert len(msgs) == 2 and str(bad / "summary.json") in msgs[0] and str(worse / "summary.json") in msgs[1]


def test_module_examples():
    for mod in ("operad.experiments.run_dir", "operad.experiments.resume"):
        res = doctest.testmod(importlib.import_module(mod), optionflags=doctest.ELLIPSIS)
        assert res.failed == 0 and res.attempted > 0, mod


def test_run_dir_open_is_read_only(tmp_path):
    rd = RunDir.open(str(tmp_path), "x", resume=True)
    assert not (tmp_path / "x").exists()
    rd.prepare()
    assert json.load(open(tmp_path / "x" / MARKER))["user_files"] == []
