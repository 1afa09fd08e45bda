"""The demo sets itself up: with no CIFAR-10 under the data root it downloads the official
archive (here a local fake through file:// URLs or a stand-in opener: no network in tests)
with a progress bar and an md5 check, unpacks it without overwriting anything, and loads it
with the restricted unpickler; --no-download and a missing network each stop with one line
that says what to do."""
import hashlib
import io
import os
import pickle
import socket
import tarfile
import urllib.error

import pytest

from operad.experiments import data as D
from operad.experiments.cli import main
from operad.experiments.data import DataError, DataNotFound, OfflineError, load_dataset
from operad.experiments.synthetic import write_cifar_pickle


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("OPERAD_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("OPERAD_DATA", raising=False)


def _archive(tmp_path, batch: bytes = b""):
    """A cifar-10-python.tar.gz in the official layout (synthetic images); ``batch`` replaces test_batch."""
    src = tmp_path / "src"
    d = write_cifar_pickle(str(src), per_class=2, test_per_class=2)
    if batch:
        with open(os.path.join(d, "test_batch"), "wb") as f:
            f.write(batch)
    arc = tmp_path / "cifar-10-python.tar.gz"
    with tarfile.open(arc, "w:gz") as t:
        t.add(d, arcname="cifar-10-batches-py")
    return arc, hashlib.md5(arc.read_bytes()).hexdigest()


def _official(monkeypatch, url, md5):
    monkeypatch.setitem(D.ARCHIVES, "cifar10", (url, md5, "cifar-10-batches-py"))


def test_the_official_archive_and_its_md5():
    url, md5, folder = D.ARCHIVES["cifar10"]
    assert url == "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
    assert md5 == "c58f30108f718f92721af3b95e74349a" and folder == "cifar-10-batches-py"


def test_missing_data_is_downloaded_with_progress_and_loaded(tmp_path, monkeypatch, capsys):
    arc, md5 = _archive(tmp_path)
    _official(monkeypatch, arc.as_uri(), md5)
    root = tmp_path / "root"
    root.mkdir()
    (root / "mine.txt").write_text("the user's")
    with pytest.raises(DataNotFound):
        load_dataset("cifar10", "train", str(root))
    d = load_dataset("cifar10", "train", str(root), download=True)
    assert len(d) == 20 and d.source == str(root / "cifar-10-batches-py")
    err = capsys.readouterr()
    assert "CIFAR-10 not found under" in err.out and "downloading the official archive" in err.out
    assert sorted(os.listdir(root)) == ["cifar-10-batches-py", "cifar-10-python.tar.gz", "mine.txt"]  # no temporaries
    assert (root / "mine.txt").read_text() == "the user's"
    D.download(arc.as_uri(), str(tmp_path / "bar"), md5, progress=True)  # the bar: bytes, rate and ETA
    bar = capsys.readouterr().err
    assert "download cifar-10-python.tar.gz" in bar and "B/s" in bar and "<" in bar


def test_md5_mismatch_removes_only_operads_partial_file(tmp_path):
    arc, _ = _archive(tmp_path)
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "keep.bin").write_bytes(b"x")
    with pytest.raises(DataError, match="checksum mismatch.*expected 0{32}.*discarded"):
        D.download(arc.as_uri(), str(dest), "0" * 32)
    assert os.listdir(dest) == ["keep.bin"]


class _Response(io.BytesIO):
    def __init__(self, payload: bytes, total: int, fail_after: int = -1):
        super().__init__(payload)
        self.headers = {"Content-Length": str(total)}
        self.fail_after = fail_after

    def read(self, n=-1):
        if 0 <= self.fail_after <= self.tell():
            raise ConnectionResetError(104, "Connection reset by peer")
        return super().read(min(n, 4096))


def test_a_broken_download_leaves_nothing_behind(tmp_path):
    arc, md5 = _archive(tmp_path)
    raw = arc.read_bytes()
    dest = tmp_path / "dest"
    with pytest.raises(DataError, match="broke off after 8192 of .* bytes.*run the command again"):
        D.download("https://example.org/c.tar.gz", str(dest), md5, opener=lambda u, timeout: _Response(raw, len(raw), 8192))
    with pytest.raises(DataError, match="ended after 4096 of 9999 bytes"):
        D.download("https://example.org/c.tar.gz", str(dest), md5, opener=lambda u, timeout: _Response(raw[:4096], 9999))
    assert os.listdir(dest) == []
    D.download("https://example.org/c.tar.gz", str(dest), md5, opener=lambda u, timeout: _Response(raw, len(raw)))
    assert sorted(os.listdir(dest)) == ["c.tar.gz", "cifar-10-batches-py"]


def _offline(url, timeout):
    raise urllib.error.URLError(socket.gaierror(-3, "Temporary failure in name resolution"))


def test_without_network_the_demo_says_so_in_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(D.urllib.request, "urlopen", _offline)
    with pytest.raises(OfflineError, match=r"^no network: .*www\.cs\.toronto\.edu is not reachable"):
        D.download_cifar("cifar10", str(tmp_path / "a"))
    assert main(["demo", "--data", str(tmp_path / "b")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("operad demo: error: no network:")
    assert "--data PATH or OPERAD_DATA=PATH" in err and "cifar-10-python.tar.gz" in err
    assert os.listdir(tmp_path / "b") == []  # the temporary file is gone
    monkeypatch.setattr(D.urllib.request, "urlopen", lambda u, timeout: (_ for _ in ()).throw(
        urllib.error.HTTPError(u, 404, "Not Found", {}, None)))
    with pytest.raises(DataError, match="the server answered HTTP 404") as e:
        D.download_cifar("cifar10", str(tmp_path / "c"))
    assert not isinstance(e.value, OfflineError)


def test_no_download_stops_with_what_to_do(tmp_path, monkeypatch, capsys):
    def forbidden(*a, **k):
        raise AssertionError("--no-download must not open a connection")

    monkeypatch.setattr(D.urllib.request, "urlopen", forbidden)
    assert main(["demo", "--no-download", "--data", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "CIFAR-10 not found under" in err and "--no-download forbids" in err
    assert "--data PATH or OPERAD_DATA=PATH" in err


def test_a_damaged_copy_is_an_error_not_a_download_and_is_not_overwritten(tmp_path, monkeypatch):
    arc, md5 = _archive(tmp_path)
    _official(monkeypatch, arc.as_uri(), md5)
    root = tmp_path / "root"
    (root / "cifar-10-batches-py").mkdir(parents=True)
    (root / "cifar-10-batches-py" / "notes.txt").write_text("mine")
    with pytest.raises(DataError, match="missing CIFAR batch file") as e:
        load_dataset("cifar10", "train", str(root), download=True)
    assert not isinstance(e.value, DataNotFound) and not (root / "cifar-10-python.tar.gz").exists()
    with pytest.raises(DataError, match="already exists but is not a complete copy; operad does not overwrite it"):
        D.download(arc.as_uri(), str(root), md5)  # asked explicitly: still no overwriting
    assert os.listdir(root / "cifar-10-batches-py") == ["notes.txt"]
    assert sorted(os.listdir(root)) == ["cifar-10-batches-py", "cifar-10-python.tar.gz"]  # no staging folder left


class _System:
    def __reduce__(self):
        return os.system, ("touch pwned-by-download",)


def test_a_downloaded_malicious_batch_runs_nothing(tmp_path, monkeypatch):
    arc, md5 = _archive(tmp_path, pickle.dumps({b"data": _System(), b"labels": []}, protocol=2))
    _official(monkeypatch, arc.as_uri(), md5)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DataError, match=r"test_batch: refused global (posix|os)\.system.*nothing in it was run"):
        load_dataset("cifar10", "test", str(tmp_path / "root"), download=True)
    assert not (tmp_path / "pwned-by-download").exists()
