"""The run directory ``<out_dir>/<name>``: what operad writes there, and what it never touches.

A run marks its directory with a marker file, ``.operad-run`` (JSON), that
records the entries the directory held before operad first used it: those
are the user's. operad writes only files with its own names (``OWNED``), never
replaces a user's file, and ``--overwrite`` deletes only operad's own files
in a marked directory, so a run pointed at a folder of one's own loses
nothing. A user's ``config.toml`` stays; the resolved config then goes to
``config.resolved.toml``. Stale checkpoint temporaries left by a killed
write (``.checkpoint.pt.tmp<pid>``) are removed when a run starts or resumes.

    >>> import tempfile
    >>> out = tempfile.mkdtemp()
    >>> rd = RunDir.open(out, "exp1")
    >>> rd.prepare()
    >>> sorted(os.listdir(rd.path))
    ['.operad-run']
    >>> RunDir.open(out, "../elsewhere")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    operad.experiments.config.ConfigError: name '../elsewhere' is not a plain folder name: ...
"""
from __future__ import annotations

import datetime
import json
import os
import re
from typing import Any, Dict, List, Optional, Sequence

from operad.experiments.config import ConfigError

__all__ = ["RunDir", "MARKER", "check_run_name", "is_owned", "stale_temporaries"]

MARKER = ".operad-run"
CONFIG = "config.toml"
RESOLVED_CONFIG = "config.resolved.toml"
CKPT = "checkpoint.pt"
ROBUSTNESS = "robustness"

# files operad writes at the top of a run directory (training, `operad eval`)
OWNED = ("config.toml", "config.resolved.toml", "env.json", "metrics.jsonl", "checkpoint.pt", "checkpoint.json",
         "final.pt", "final.safetensors", "eval.json", "summary.json", "curves.png", "confusion.png")
OWNED_PATTERNS = (
    re.compile(r"\.(checkpoint|final)\.pt\.tmp\d+"),          # save_checkpoint's temporaries
    re.compile(r"(metrics\.jsonl|checkpoint\.json)\.tmp"),
    re.compile(r"(curves|confusion)(-\w+)?\.png\.tmp\.png"),   # plots' temporaries
    re.compile(r"eval-\w+\.json|confusion-\w+\.png"),          # `operad eval`
    re.compile(r"boxes-\w+\.png"),                              # detection: predicted boxes (training, `operad eval`)
)
# files the robustness sweeps write under robustness/
OWNED_ROBUSTNESS = re.compile(r"(jpeg|shift|rotation)\.(json|png)(\.tmp\.png)?")
_TMP = re.compile(r"\.(checkpoint|final)\.pt\.tmp(\d+)")


def check_run_name(name: str) -> None:
    """A run's ``name`` must be one plain folder name: not empty, not absolute,
    not ``.`` or ``..``, no path separator (it would put the run, or an
    ``--overwrite``, somewhere else).

    >>> check_run_name("resnet20-seed1")
    >>> check_run_name("")
    Traceback (most recent call last):
    ...
    operad.experiments.config.ConfigError: name is empty: set name= to a folder name for the run, e.g. name=run1
    """
    if not isinstance(name, str) or not name.strip():
        raise ConfigError("name is empty: set name= to a folder name for the run, e.g. name=run1")
    seps = {"/", "\\", os.sep} | ({os.altsep} if os.altsep else set())
    bad = None
    if name in (".", ".."):
        bad = "it names a folder relative to out_dir, not a new one"
    elif os.path.isabs(name) or any(s in name for s in seps):
        bad = "it holds a path separator; put the parent folders in out_dir="
    elif "\0" in name:
        bad = "it holds a NUL character"
    elif name != name.strip():
        bad = "it starts or ends with white space"
    if bad:
        raise ConfigError(f"name {name!r} is not a plain folder name: {bad} "
                          f"(the run goes to <out_dir>/<name>; e.g. out_dir=runs/exp name=run1)")


def is_owned(entry: str) -> bool:
    """Whether a top-level entry name of a run directory is one operad writes.

    >>> [is_owned(n) for n in ("checkpoint.pt", ".checkpoint.pt.tmp123", "notes.txt", "eval-test.json")]
    [True, True, False, True]
    """
    return entry in OWNED or any(p.fullmatch(entry) for p in OWNED_PATTERNS)


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True
    return True


def stale_temporaries(path: str) -> List[str]:
    """Checkpoint temporaries in ``path`` whose writing process is gone
    (a write killed between ``torch.save`` and ``os.replace``)."""
    if not os.path.isdir(path):
        return []
    out = []
    for e in sorted(os.listdir(path)):
        m = _TMP.fullmatch(e)
        if m and not _pid_alive(int(m.group(2))) and not os.path.isdir(os.path.join(path, e)):
            out.append(e)
        elif e in ("metrics.jsonl.tmp", "checkpoint.json.tmp") and os.path.isfile(os.path.join(path, e)):
            out.append(e)
    return out


def _entries(path: str) -> List[str]:
    """Top-level entries and ``robustness/`` entries (as ``robustness/<file>``)."""
    if not os.path.isdir(path):
        return []
    out = sorted(os.listdir(path))
    rob = os.path.join(path, ROBUSTNESS)
    if os.path.isdir(rob) and not os.path.islink(rob):
        out += [f"{ROBUSTNESS}/{e}" for e in sorted(os.listdir(rob))]
    return out


def _written_by_operad(entry: str) -> bool:
    if entry.startswith(ROBUSTNESS + "/"):
        return bool(OWNED_ROBUSTNESS.fullmatch(entry.split("/", 1)[1]))
    return is_owned(entry)


class RunDir:
    """One run's directory. :meth:`open` checks (read only; every rank may
    call it), :meth:`prepare` creates, marks, overwrites and cleans (the main
    rank only). ``config_name`` is where the resolved config goes.

    >>> import tempfile
    >>> rd = RunDir.open(tempfile.mkdtemp(), "r"); rd.prepare(); rd.config_name
    'config.toml'
    """

    def __init__(self, path: str, resume: bool, overwrite: bool, marker: Optional[Dict[str, Any]]):
        self.path = path
        self.resume = resume
        self.overwrite = overwrite
        self.marker = marker
        self.messages: List[str] = []

    # ------------------------------------------------------------------ checks
    @classmethod
    def open(cls, out_dir: str, name: str, resume: bool = False, overwrite: bool = False) -> "RunDir":
        """Check that ``<out_dir>/<name>`` may take this run: a plain name; an
        existing run needs ``resume`` or ``overwrite``; ``overwrite`` deletes
        only in a directory operad marked; no user file has a name operad
        writes (but ``config.toml``)."""
        check_run_name(name)
        path = os.path.abspath(os.path.join(out_dir or ".", name))
        for p in (os.path.dirname(path), path):
            if os.path.exists(p) and not os.path.isdir(p):
                raise ConfigError(f"{p} exists and is not a directory; choose another name= or out_dir=")
        marker = _read_marker(path)
        rd = cls(path, resume, overwrite, marker)
        if not os.path.isdir(path):
            return rd
        has_run = os.path.exists(os.path.join(path, CKPT))
        if has_run and not resume and not overwrite:
            raise ConfigError(f"{path} already holds a run; pass --resume to continue it, --overwrite to "
                              f"start again, or choose another name= / out_dir=")
        if marker is None and has_run and not resume:
            raise ConfigError(
                f"{path} holds {CKPT} but no {MARKER} marker, so operad did not mark it as its own run (it is "
                f"yours, or from an operad before markers): --overwrite deletes nothing there. Move or delete "
                f"its files yourself, pass --resume to continue it, or choose another name= / out_dir=")
        clash = [e for e in rd.user_files() if _written_by_operad(e) and e != CONFIG]
        if clash:
            raise ConfigError(f"{path} holds {', '.join(clash)}, which operad writes but did not write there "
                              f"(not listed as operad's in {MARKER}); move them, or choose another name= / out_dir=")
        return rd

    def user_files(self) -> List[str]:
        """Entries that are the user's: those recorded in the marker, or, in a
        directory operad has not marked, everything there (except, when
        resuming a run from before markers, the files operad writes)."""
        if self.marker is not None:
            return list(self.marker.get("user_files", []))
        legacy = self.resume and os.path.exists(os.path.join(self.path, CKPT))
        return [e for e in _entries(self.path) if not (legacy and _written_by_operad(e))]

    @property
    def config_name(self) -> str:
        """``config.toml``, or ``config.resolved.toml`` where the user's own ``config.toml`` lies."""
        return RESOLVED_CONFIG if CONFIG in self.user_files() else CONFIG

    def file(self, name: str) -> str:
        return os.path.join(self.path, name)

    # ------------------------------------------------------------------ changes (main rank)
    def prepare(self) -> None:
        """Create and mark the directory, delete operad's files on
        ``overwrite``, remove stale checkpoint temporaries. What it did is in
        :attr:`messages`."""
        user = self.user_files()
        os.makedirs(self.path, exist_ok=True)
        if self.marker is None:
            self.marker = {"operad_run": 1, "created": datetime.datetime.now().isoformat(timespec="seconds"),
                           "user_files": user}
            _write_marker(self.path, self.marker)
            if user:
                shown = ", ".join(user[:5]) + (f" and {len(user) - 5} more" if len(user) > 5 else "")
                self.messages.append(f"{self.path} already holds {shown}; operad leaves them alone")
        elif self.overwrite and not self.resume:
            gone = self._remove_owned(user)
            self.messages.append(f"--overwrite: removed the {len(gone)} files operad wrote in {self.path}; "
                                 f"nothing else there was touched")
        stale = [e for e in stale_temporaries(self.path) if e not in user]
        for e in stale:
            os.remove(self.file(e))
        if stale:
            self.messages.append(f"removed stale temporaries of an interrupted write: {', '.join(stale)}")
        if self.config_name != CONFIG:
            self.messages.append(f"{self.file(CONFIG)} is yours: the resolved config goes to {RESOLVED_CONFIG}")

    def _remove_owned(self, user: Sequence[str]) -> List[str]:
        """Delete operad's files (never directories, never a user's entry, links unlinked not followed)."""
        keep = set(user)
        gone = []
        for e in _entries(self.path):
            p = self.file(e)
            if e in keep or not _written_by_operad(e) or (os.path.isdir(p) and not os.path.islink(p)):
                continue
            os.remove(p)
            gone.append(e)
        rob = self.file(ROBUSTNESS)
        if ROBUSTNESS not in keep and os.path.isdir(rob) and not os.path.islink(rob) and not os.listdir(rob):
            os.rmdir(rob)
        return gone


def _read_marker(path: str) -> Optional[Dict[str, Any]]:
    m = os.path.join(path, MARKER)
    if not os.path.isfile(m):
        return None
    try:
        with open(m) as f:
            d = json.load(f)
        if not isinstance(d, dict) or not isinstance(d.get("user_files", []), list):
            raise ValueError("not a JSON object with a user_files list")
    except (OSError, ValueError) as e:
        raise ConfigError(f"{m} is unreadable ({e}); operad will not write or delete in {path} until it is fixed "
                          f"or removed (remove it only if the directory holds nothing of yours)") from None
    return d


def _write_marker(path: str, marker: Dict[str, Any]) -> None:
    tmp = os.path.join(path, MARKER + ".tmp")
    with open(tmp, "w") as f:
        json.dump(marker, f, indent=1)
    os.replace(tmp, os.path.join(path, MARKER))
