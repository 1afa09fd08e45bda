"""The speed recipe's race against a peer script: the driver, the peer's data, the
grading of a race, and the GPU suite's speed-recipe section racing a stand-in peer."""
import doctest
import json
import os

import numpy as np
import pytest

from operad.experiments import race as R
from operad.experiments.data import ArrayData

PEER = os.path.join(os.path.dirname(__file__), "fixtures", "peer_script.py")


def _data(n_per_class=4, seed=0):
    g = np.random.default_rng(seed)
    labels = np.repeat(np.arange(3), n_per_class).astype(np.int64)
    images = (g.integers(0, 60, (len(labels), 8, 8, 3)) + 60 * labels[:, None, None, None]).astype(np.uint8)
    return ArrayData("toy", "train", images, labels, ["a", "b", "c"])


def test_module_examples():
    assert doctest.testmod(R).failed == 0


def test_peer_runs_in_a_child_and_reads_the_data_operad_wrote(tmp_path):
    d = _data()
    R.write_peer_data(str(tmp_path), d, d)
    with R.PeerProcess(PEER, str(tmp_path)) as p:
        assert p.columns[-1] == "total_time_seconds"
        first, second = p.run("warmup"), p.run(0)
    assert first["acc"] == second["acc"] == 1.0  # nearest class mean separates the toy classes
    assert second["row"]["epoch"] == "eval" and second["time_s"] >= 0


def test_peer_data_never_replaces_files_operad_did_not_write(tmp_path):
    (tmp_path / "cifar10").mkdir()
    (tmp_path / "cifar10" / "train.pt").write_bytes(b"somebody's file")
    with pytest.raises(FileExistsError, match="operad did not write it"):
        R.write_peer_data(str(tmp_path), _data(), _data())
    assert (tmp_path / "cifar10" / "train.pt").read_bytes() == b"somebody's file"
    R.write_peer_data(str(tmp_path / "mine"), _data(), _data())
    R.write_peer_data(str(tmp_path / "mine"), _data(), _data())  # its own files: rewritten


def test_peer_failures_say_what_happened(tmp_path):
    with pytest.raises(FileNotFoundError, match="airbench94.py"):
        R.PeerProcess(str(tmp_path / "missing.py"), str(tmp_path))
    bad = tmp_path / "bad.py"
    bad.write_text("logging_columns_list = ['run', 'total_time_seconds']\n"
                   "def main(run):\n    raise ValueError('no data here')\n")
    with R.PeerProcess(str(bad), str(tmp_path)) as p:
        with pytest.raises(RuntimeError, match="no data here"):
            p.run(0)
    quiet = tmp_path / "quiet.py"
    quiet.write_text("logging_columns_list = ['run', 'total_time_seconds']\ndef main(run):\n    return 0.5\n")
    with R.PeerProcess(str(quiet), str(tmp_path)) as p:
        with pytest.raises(RuntimeError, match="no row with 'total_time_seconds'"):
            p.run(0)


def test_a_peer_that_hangs_is_stopped(tmp_path):
    slow = tmp_path / "slow.py"
    slow.write_text("import time\nlogging_columns_list = ['run', 'total_time_seconds']\n"
                    "def main(run):\n    time.sleep(600)\n")
    p = R.PeerProcess(str(slow), str(tmp_path))
    with pytest.raises(TimeoutError, match="no answer within 1 s"):
        p.run(0, timeout=1)
    assert p.proc.wait(timeout=10) is not None  # killed, not left running
    p.close()


def _ours(evals, final_acc, time_s, completed=True):
    return {"evals": [{"tta_acc": a, "time_s": t} for a, t in evals], "tta_acc": final_acc, "acc": final_acc,
            "time_s": time_s, "completed": completed}


def test_time_to_target_is_the_first_evaluation_reaching_it():
    r = _ours([(0.90, 1.0), (0.941, 2.0), (0.95, 3.0)], 0.96, 4.0)
    assert R.time_to(r, 0.94) == 2.0
    assert R.time_to(r, 0.955) == 4.0  # only the final evaluation gets there
    assert R.time_to(r, 0.97) is None
    assert R.time_to(_ours([], 0.99, 4.0, completed=False), 0.94) is None


def test_grading_a_race():
    res = {"theirs": [{"acc": 0.941, "time_s": 4.0}, {"acc": 0.943, "time_s": 4.2}],
           "ours": [_ours([(0.945, 3.0)], 0.95, 5.0), _ours([(0.93, 3.0)], 0.944, 5.0)]}
    R._finish(res, 0.94)
    assert res["target"] == 0.94 and not res["target_is_peer_mean"]
    assert res["ours_times_to_target_s"] == [3.0, 5.0] and res["ours_time_to_target_mean_s"] == 4.0
    assert res["verdict"] == "won" and res["time_ratio"] == pytest.approx(4.0 / 4.1)
    res["ours"][1] = _ours([(0.93, 3.0)], 0.939, 5.0)
    R._finish(res, 0.94)
    assert res["verdict"].startswith("lost: 1 of 2 recipe runs missed")
    low = {"theirs": [{"acc": 0.92, "time_s": 4.0}, {"acc": 0.93, "time_s": 4.0}],
           "ours": [_ours([(0.926, 5.0)], 0.93, 6.0)]}
    R._finish(low, 0.94)  # the peer tops out below 94%: the race is to its own mean
    assert low["target"] == pytest.approx(0.925) and low["target_is_peer_mean"] and low["peer_reached"] == 1
    assert low["verdict"] == "lost: 1.25x the peer's time"


def test_race_alternates_and_writes_as_it_goes(shared_data, tmp_path):
    from operad.experiments.data import load_dataset
    from operad.experiments.speedrun import SMOKE

    train = load_dataset("cifar10", "train", shared_data, 10)
    test = load_dataset("cifar10", "test", shared_data, 5)
    recipe = {k: v for k, v in SMOKE.items() if k not in ("subset", "val_subset", "target")}
    recipe["epochs"] = 2.0
    res = R.race(PEER, str(tmp_path), train, test, device="cpu", runs=2, warmup=False, recipe=recipe)
    assert res["runs_done"] == 2 and len(res["ours"]) == len(res["theirs"]) == 2
    assert [r["seed"] for r in res["ours"]] == [0, 1]
    assert all(len(r["evals"]) == 1 for r in res["ours"])  # evaluated after epoch 1 (untimed), then at the end
    assert res["target_is_peer_mean"] and res["target"] == pytest.approx(res["peer_acc_mean"])
    with open(tmp_path / "race.json") as f:
        assert json.load(f)["verdict"] == res["verdict"]
    assert os.listdir(tmp_path) == ["race.json"]  # the peer's copy of the data lived in a removed temp folder


def test_gpu_suite_races_the_peer(shared_data, tmp_path):
    from operad.experiments import gpu_suite

    res = gpu_suite.run_suite(str(tmp_path), budget=60, smoke=True, data_root=shared_data,
                              sections=["speed_recipe"], peer=PEER)
    sec = res["sections"][0]
    assert sec["status"] == "ok", sec.get("error")
    assert sec["result"]["race"]["runs_done"] == 1
    md = open(tmp_path / "SUITE.md").read()
    assert "Speed recipe against the peer" in md and "peer_script.py" in md
    with pytest.raises(FileNotFoundError, match="peer script"):
        gpu_suite.run_suite(str(tmp_path), budget=5, smoke=True, sections=["environment"], peer="nope.py")
