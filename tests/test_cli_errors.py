"""One voice on the command line: every error in the user's input is
``operad <verb>: error: <message>`` on stderr with exit status 2 and no
traceback; ``--debug`` shows the traceback; real bugs keep theirs."""
import os
import subprocess
import sys

import pytest

import operad
from operad.experiments import cli
from operad.experiments.cli import main
from operad.experiments.config import dump_toml

EXPR = "ops.conv(4) >> ops.relu() >> ops.global_pool() >> ops.linear(10)"


@pytest.fixture(autouse=True)
def _no_debug_env(monkeypatch, tmp_path):
    monkeypatch.delenv("OPERAD_DEBUG", raising=False)
    monkeypatch.setenv("OPERAD_CACHE", str(tmp_path / "cache"))


def run(capsys, *argv):
    rc = main(list(argv))
    cap = capsys.readouterr()
    return rc, cap.err


def one_error(capsys, verb, *argv):
    rc, err = run(capsys, verb, *argv)
    assert rc == 2, err
    assert err.startswith(f"operad {verb}: error: ") and "Traceback" not in err, err
    assert err.count("\n") == 1, err  # one line
    return err


@pytest.fixture
def cfg(tmp_path):
    p = tmp_path / "c.toml"
    p.write_text(dump_toml({"model_expr": EXPR, "epochs": 1, "data_root": str(tmp_path / "nodata"),
                            "out_dir": str(tmp_path / "runs"), "progress": False}))
    return str(p)


@pytest.mark.parametrize("override,key", [("eval_every=0", "eval_every"), ("lr=-1", "lr"), ("epochs=2.5", "epochs"),
                                          ("ema=1", "ema"), ("name=..", "name"), ("threads=-2", "threads"),
                                          ("momentum=1.5", "momentum"), ("flip=maybe", "flip")])
def test_config_errors_are_one_line_naming_the_key(capsys, cfg, tmp_path, override, key):
    err = one_error(capsys, "train", cfg, override)
    assert f"'{key}'" in err or err.startswith(f"operad train: error: {key} ")
    assert not (tmp_path / "runs").exists()


def test_bad_config_file_and_unknown_key(capsys, tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("epochs = [\n")
    assert "invalid TOML" in one_error(capsys, "train", str(bad))
    assert "not found" in one_error(capsys, "train", str(tmp_path / "missing.toml"))
    bad.write_text('model_expr = "ops.relu()"\nsubset = -3\n')
    assert "config key 'subset' = -3 is outside its allowed range [0, inf)" in one_error(capsys, "train", str(bad))


def test_data_errors_exit_2(capsys, cfg):
    err = one_error(capsys, "train", cfg)  # the data root holds no CIFAR-10
    assert "nodata" in err or "CIFAR" in err or "cifar" in err


def test_missing_paths_exit_2(capsys, tmp_path):
    err = one_error(capsys, "eval", str(tmp_path / "no-such-run"))
    assert "no-such-run" in err


def test_algebra_errors_exit_2(capsys):
    err = one_error(capsys, "summary", "ops.conv(8) >> ops.linear(10)")
    assert "[1]: linear expects a rank-0 field" in err
    err = one_error(capsys, "summary", "no_such_model_xyz")
    assert "unknown model 'no_such_model_xyz'" in err and '"' not in err  # not KeyError's quoted repr
    err = one_error(capsys, "verify", "ops.max_pool(2, stride=0) >> ops.global_pool() >> ops.linear(10)")
    assert "max_pool stride" in err and "got 0" in err
    err = one_error(capsys, "summary", EXPR, "--input", "1,3,x")
    assert "--input expects N,C,H,W" in err


def test_debug_shows_the_traceback(capsys, monkeypatch):
    from operad.operators.algebra.errors import OperadError, UnknownName

    with pytest.raises(UnknownName):
        main(["--debug", "summary", "no_such_model_xyz"])
    with pytest.raises(UnknownName):  # after the verb too
        main(["summary", "no_such_model_xyz", "--debug"])
    monkeypatch.setenv("OPERAD_DEBUG", "1")
    with pytest.raises(OperadError, match="--input expects"):
        main(["summary", EXPR, "--input", "0,3,8,8"])


def test_real_bugs_keep_their_traceback(monkeypatch):
    def broken(*a, **k):
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(cli, "_model_from_spec", broken)
    with pytest.raises(ZeroDivisionError):
        main(["summary", EXPR])
    monkeypatch.setattr(cli, "_model_from_spec", lambda *a, **k: {}["missing"])
    with pytest.raises(KeyError):  # a KeyError from a bug is not an unknown model name
        main(["summary", EXPR])


def test_console_script_in_a_subprocess(tmp_path):
    root = os.path.dirname(os.path.dirname(os.path.abspath(operad.__file__)))
    env = dict(os.environ, PYTHONPATH=root, OMP_NUM_THREADS="1")
    env.pop("OPERAD_DEBUG", None)
    p = subprocess.run([sys.executable, "-m", "operad.experiments.cli", "train", "nothing.toml", "lr=0"],
                       capture_output=True, text=True, env=env, cwd=str(tmp_path), timeout=120)
    assert p.returncode == 2, p.stderr
    assert p.stderr.startswith("operad train: error: config file nothing.toml not found"), p.stderr
    assert "Traceback" not in p.stderr and p.stdout == ""


@pytest.mark.parametrize("argv,what", [
    (["eval", "run", "--batch-size", "0"], "argument --batch-size: expects an integer >= 1; got 0"),
    (["eval", "run", "--subset", "-1"], "argument --subset: expects an integer >= 0; got -1"),
    (["robustness", "run", "--angles", "0,y"], "argument --angles: expects comma-separated finite angles"),
    (["robustness", "run", "--max-shift", "two"], "argument --max-shift: expects an integer >= 0; got 'two'"),
    (["summary", EXPR, "--num-classes", "0"], "argument --num-classes: expects an integer >= 1"),
    (["verify", EXPR, "--seed", "-3"], "argument --seed: expects an integer >= 0"),
    (["demo", "--budget", "inf"], "argument --budget: expects a positive number"),
])
def test_bad_options_are_usage_errors(capsys, argv, what):
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert f"operad {argv[0]}: error: {what}" in err and "Traceback" not in err, err


@pytest.mark.parametrize("make", ["checkpoint", "data", "divergence"])
def test_engine_errors_reach_the_user_in_one_line(capsys, monkeypatch, make):
    from operad.experiments.data import DataError
    from operad.experiments.train import CheckpointError, DivergenceError

    err = {"checkpoint": CheckpointError("the checkpoint of step 3 was not written"),
           "data": DataError("data_batch_1 is truncated"),
           "divergence": DivergenceError("loss is nan at step 4")}[make]

    def fail(*a, **k):
        raise err

    monkeypatch.setattr(cli, "_model_from_spec", fail)
    code = main(["summary", EXPR])
    assert code == (3 if make == "divergence" else 2)
    assert capsys.readouterr().err.strip() == f"operad summary: error: {err}"
