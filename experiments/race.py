"""A side-by-side race of the speed recipe against a peer training script on one device.

The issue's target for ``cifar10_speedrun``: time to 94% (mean of 5 runs, every
run reaching it) at most that of airbench94 run beside it on the same GPU and the
same data, in the same call. On a copy of CIFAR-10 where neither reaches 94% (the
JPEG copy in ``../shared/data``), the target becomes the peer's own mean final
accuracy there.

How the peer runs: its script is imported by a small driver in a child process
(``python -u -c DRIVER PEER``), so its module-level set-up runs once and its
``__main__`` block never does. The driver calls the peer's ``main(run)`` once per
line it reads on stdin and answers with one JSON line: the returned accuracy and
the columns of the last row the peer printed (airbench prints a table whose last
row, ``epoch == 'eval'``, carries ``tta_val_acc`` and ``total_time_seconds``, its
own GPU-event timer). The peer reads ``cifar10/train.pt`` and ``test.pt`` from its
working folder; :func:`write_peer_data` writes them from operad's copy of the data
(uint8 ``(N, 32, 32, 3)`` images, int64 labels, class names), so the peer never
downloads anything and both sides see the same images.

The two sides alternate, one run each in turn after one untimed warm-up run each,
so a drift in the machine's state touches both. The recipe evaluates after every
epoch (untimed), so its time to any target is known after the fact; the peer's
time to its own final accuracy is its whole timed run.

The peer script is code the user names (``--peer``), run as a program, as
``python PEER`` would; it is never copied into operad.

    >>> from operad.experiments.race import parse_row
    >>> parse_row("|  0  |  eval  |  0.94  |  3.5  |", ["run", "epoch", "tta_val_acc", "total_time_seconds"])
    {'run': '0', 'epoch': 'eval', 'tta_val_acc': '0.94', 'total_time_seconds': '3.5'}
"""
from __future__ import annotations

import json
import os
import queue
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any, Dict, List, Optional, Sequence

import torch

from operad.experiments.data import ArrayData

__all__ = ["race", "write_peer_data", "parse_row", "time_to", "PeerProcess", "DRIVER"]

#: the child's program: import the peer file, then one ``main(run)`` per stdin line, one JSON line back
DRIVER = r"""
import contextlib, importlib.util, io, json, sys, traceback
spec = importlib.util.spec_from_file_location("peer", sys.argv[1])
peer = importlib.util.module_from_spec(spec)
with contextlib.redirect_stdout(io.StringIO()):
    spec.loader.exec_module(peer)
print(json.dumps({"ready": True, "columns": list(getattr(peer, "logging_columns_list", []))}), flush=True)
for line in sys.stdin:
    run = line.strip()
    buf = io.StringIO()
    try:
        with contextlib.redirect_stdout(buf):
            acc = peer.main(int(run) if run.isdigit() else run)
        print(json.dumps({"run": run, "acc": float(acc), "stdout": buf.getvalue()[-4000:]}), flush=True)
    except Exception:
        print(json.dumps({"run": run, "error": traceback.format_exc()[-2000:], "stdout": buf.getvalue()[-2000:]}),
              flush=True)
"""


def write_peer_data(folder: str, train: ArrayData, test: ArrayData) -> str:
    """Write ``folder/cifar10/{train,test}.pt`` (the layout airbench reads) from operad's
    arrays; returns the ``cifar10`` folder. Existing files there are replaced only if
    operad wrote them (a ``.operad`` marker beside them)."""
    root = os.path.join(folder, "cifar10")
    marker = os.path.join(root, ".operad")
    for name in ("train.pt", "test.pt"):
        if os.path.exists(os.path.join(root, name)) and not os.path.exists(marker):
            raise FileExistsError(f"{os.path.join(root, name)} exists and operad did not write it; "
                                  "choose another --out folder for the race")
    os.makedirs(root, exist_ok=True)
    open(marker, "w").close()
    for name, d in (("train.pt", train), ("test.pt", test)):
        torch.save({"images": torch.from_numpy(d.images).contiguous(), "labels": torch.from_numpy(d.labels).long(),
                    "classes": list(d.classes)}, os.path.join(root, name))
    return root


def parse_row(line: str, columns: Sequence[str]) -> Optional[Dict[str, str]]:
    """One ``|  a  |  b  |`` table row as ``{column: text}``; None if it is not a row of ``columns``."""
    if not line.strip().startswith("|"):
        return None
    cells = [c.strip() for c in line.strip().strip("|").split("|")]
    if len(cells) != len(columns):
        return None
    return {c.strip(): v for c, v in zip(columns, cells)}


def _last_row(stdout: str, columns: Sequence[str]) -> Dict[str, str]:
    rows = [r for r in (parse_row(ln, columns) for ln in stdout.splitlines()) if r]
    return rows[-1] if rows else {}


class PeerProcess:
    """The peer script in a child process: ``run(k)`` trains once and returns the peer's figures.

    ``time_key``/``acc_key`` name the columns of its last printed row to read (airbench's)."""

    def __init__(self, script: str, cwd: str, time_key: str = "total_time_seconds", acc_key: str = "tta_val_acc",
                 timeout: float = 600.0):
        if not os.path.isfile(script):
            raise FileNotFoundError(f"peer script {script!r} not found; pass the path to airbench94.py "
                                    "(carry it in .device/ for a GPU call)")
        self.time_key, self.acc_key, self.timeout = time_key, acc_key, timeout
        self.proc = subprocess.Popen([sys.executable, "-u", "-c", DRIVER, os.path.abspath(script)], cwd=cwd,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self._lines: "queue.Queue[str]" = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()
        hello = self._read(timeout)
        self.columns = [c.strip() for c in hello.get("columns", [])]

    def _pump(self) -> None:
        for line in self.proc.stdout:
            self._lines.put(line)
        self._lines.put("")  # the child closed its output

    def _read(self, timeout: float) -> Dict[str, Any]:
        try:
            line = self._lines.get(timeout=max(timeout, 0.1))
        except queue.Empty:
            self.proc.kill()
            raise TimeoutError(f"the peer gave no answer within {timeout:.0f} s; stopped it") from None
        if not line:
            self.proc.wait(timeout=30)
            raise RuntimeError(f"the peer process ended without an answer: {self.proc.stderr.read()[-2000:]}")
        return json.loads(line)

    def run(self, run: Any, timeout: Optional[float] = None) -> Dict[str, Any]:
        """One ``main(run)`` of the peer; stops the peer if it has not answered within ``timeout`` s."""
        self.proc.stdin.write(f"{run}\n")
        self.proc.stdin.flush()
        ans = self._read(self.timeout if timeout is None else timeout)
        if "error" in ans:
            raise RuntimeError(f"the peer's main({run!r}) failed:\n{ans['error']}")
        row = _last_row(ans.get("stdout", ""), self.columns)
        if self.time_key not in row:
            raise RuntimeError(f"the peer printed no row with {self.time_key!r} (columns {self.columns}); "
                               f"its output ended with:\n{ans.get('stdout', '')[-500:]}")
        acc = float(row[self.acc_key]) if self.acc_key in row else ans["acc"]
        return {"acc": acc, "time_s": float(row[self.time_key]), "row": row}

    def close(self) -> None:
        if self.proc.poll() is None and not self.proc.stdin.closed:
            self.proc.stdin.close()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()

    def __enter__(self) -> "PeerProcess":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def time_to(run: Dict[str, Any], target: float) -> Optional[float]:
    """A recipe run's timed seconds until its first evaluation at ``target`` or above
    (the evaluations after each epoch, then the final one); None if it never got there."""
    for e in run.get("evals", []):
        if e["tta_acc"] >= target:
            return e["time_s"]
    return run["time_s"] if run.get("completed", True) and run["tta_acc"] >= target else None


def _mean(v: List[float]) -> Optional[float]:
    return statistics.fmean(v) if v else None


def race(peer: str, out: str, train: ArrayData, test: ArrayData, device: str = "auto", runs: int = 5,
         target: float = 0.94, budget_s: Optional[float] = None, warmup: bool = True,
         recipe: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """Alternate ``runs`` timed runs of the speed recipe and of ``peer`` on one device;
    returns both sides' accuracies and times, the race's target (``target``, or the
    peer's mean accuracy where that is lower) and the verdict. ``recipe`` holds
    :class:`~operad.experiments.speedrun.SpeedConfig` settings (the published ones by
    default). Writes ``out/race.json`` after every run, so a run cut short keeps what
    it measured; the peer works in a temporary folder operad removes afterwards.
    """
    t0 = time.perf_counter()
    os.makedirs(out, exist_ok=True)
    work = tempfile.mkdtemp(prefix="operad-race-")  # the peer's data (~180 MB for CIFAR-10) stays out of ``out``
    try:
        return _race(peer, out, work, train, test, device, runs, target, budget_s, warmup, recipe, t0)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _race(peer, out, work, train, test, device, runs, target, budget_s, warmup, recipe, t0) -> Dict[str, Any]:
    from operad.experiments import speedrun

    write_peer_data(work, train, test)
    settings = {**(recipe or {}), "eval_every": 1}
    res: Dict[str, Any] = {"peer": os.path.basename(peer), "runs_asked": runs, "asked_target": target,
                           "train_size": len(train), "test_size": len(test), "ours": [], "theirs": [], "notes": []}
    path = os.path.join(out, "race.json")

    def left() -> float:
        return float("inf") if budget_s is None else budget_s - (time.perf_counter() - t0)

    def ours(i: int, warm: bool) -> Dict[str, Any]:
        s = speedrun.run(train_data=train, val_data=test, device=device, runs=1, target=None, warmup=warm,
                         seed=settings.get("seed", 0) + i, **{k: v for k, v in settings.items() if k != "seed"})
        r = s["runs"][0]
        return {"seed": r["seed"], "tta_acc": r["tta_acc"], "time_s": r["time_s"], "evals": r["evals"],
                "completed": r["completed"], "device": s["device"], "gpu": s["gpu"]}

    with PeerProcess(peer, work) as p:
        if warmup:
            p.run("warmup")
        for i in range(runs):
            if left() <= 0:
                res["notes"].append(f"budget spent after {i} runs a side")
                break
            res["theirs"].append(p.run(i, timeout=min(p.timeout, left())))
            res["ours"].append(ours(i, warm=warmup and i == 0))
            _finish(res, target)
            _dump(res, path)
    res["wall_s"] = time.perf_counter() - t0
    _finish(res, target)
    _dump(res, path)
    return res


def _finish(res: Dict[str, Any], target: float) -> None:
    """Fill in the race's target, both sides' means and the verdict from the runs so far."""
    theirs, ours = res["theirs"], res["ours"]
    peer_acc = _mean([r["acc"] for r in theirs])
    goal = target if peer_acc is None or peer_acc >= target else peer_acc
    ours_t = [time_to(r, goal) for r in ours]
    reached = [t for t in ours_t if t is not None]
    res.update(target=goal, target_is_peer_mean=goal != target, peer_acc_mean=peer_acc,
               peer_time_mean_s=_mean([r["time_s"] for r in theirs]),
               peer_reached=sum(r["acc"] >= goal for r in theirs),
               ours_acc_mean=_mean([r["tta_acc"] for r in ours]), ours_times_to_target_s=ours_t,
               ours_reached=len(reached), runs_done=min(len(ours), len(theirs)))
    all_ours = bool(ours) and len(reached) == len(ours)
    res["ours_time_to_target_mean_s"] = _mean(reached) if all_ours else None
    if not ours or not theirs:
        res["verdict"] = "not run"
    elif not all_ours:
        res["verdict"] = f"lost: {len(ours) - len(reached)} of {len(ours)} recipe runs missed {goal:.4f}"
    else:
        ratio = res["ours_time_to_target_mean_s"] / res["peer_time_mean_s"]
        res["time_ratio"] = ratio
        res["verdict"] = "won" if ratio <= 1.0 else f"lost: {ratio:.2f}x the peer's time"


def _dump(res: Dict[str, Any], path: str) -> None:
    with open(path + ".tmp", "w") as f:
        json.dump(res, f, indent=2, default=str)
    os.replace(path + ".tmp", path)
