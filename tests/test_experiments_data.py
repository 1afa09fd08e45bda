"""Data loading: both CIFAR layouts, CIFAR-100, CamVid, the cache, errors,
subsets, the data root, downloads from a file:// URL, and real shared files."""
import hashlib
import os
import pickle
import tarfile
import time

import numpy as np
import pytest

from operad.experiments import data as D
from operad.experiments.data import DataError, load_dataset
from operad.experiments.synthetic import (class_images, write_camvid, write_cifar100_pickle, write_cifar_folder,
                                          write_cifar_pickle)


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("OPERAD_CACHE", str(tmp_path / "cache"))


def test_cifar_pickle_layout_exact(tmp_path):
    d = write_cifar_pickle(str(tmp_path), per_class=3, test_per_class=2)
    tr = load_dataset("cifar10", "train", str(tmp_path))
    te = load_dataset("cifar10", "test", str(tmp_path))
    assert tr.images.shape == (30, 32, 32, 3) and tr.images.dtype == np.uint8
    assert te.images.shape == (20, 32, 32, 3)
    assert tr.classes[0] == "airplane" and tr.classes[-1] == "truck"
    # the first row of data_batch_1 is channel-major: pixel (0, 0) is data[0], data[1024], data[2048]
    with open(os.path.join(d, "data_batch_1"), "rb") as f:
        b = pickle.load(f, encoding="bytes")
    row = np.asarray(b[b"data"][0])
    assert tr.images[0, 0, 0].tolist() == [row[0], row[1024], row[2048]]
    assert tr.images[0, 2, 5, 1] == row[1024 + 2 * 32 + 5]
    assert tr.labels[: len(b[b"labels"])].tolist() == b[b"labels"]
    assert np.bincount(tr.labels).tolist() == [3] * 10


def test_cifar_folder_layout_exact_png(tmp_path):
    written = write_cifar_folder(str(tmp_path), per_class=3, test_per_class=2, ext="png")
    tr = load_dataset("cifar10", "train", str(tmp_path))
    assert np.array_equal(tr.images, written["train"])
    assert np.array_equal(tr.labels, written["train_labels"])
    assert tr.classes == D.CIFAR10_CLASSES
    te = load_dataset("cifar10", "val", str(tmp_path))  # val is an alias for test
    assert te.split == "test" and len(te) == 20


def test_pickle_preferred_over_folder(tmp_path):
    write_cifar_folder(str(tmp_path), per_class=1, test_per_class=1)
    write_cifar_pickle(str(tmp_path), per_class=2, test_per_class=1)
    assert len(load_dataset("cifar10", "train", str(tmp_path))) == 20


def test_cifar100_pickle(tmp_path):
    write_cifar100_pickle(str(tmp_path), per_class=2, test_per_class=1)
    tr = load_dataset("cifar100", "train", str(tmp_path))
    assert tr.num_classes == 100 and len(tr) == 200 and tr.classes[7] == "class07"
    assert sorted(load_dataset("cifar100", "test", str(tmp_path), subset=1).labels.tolist()) == list(range(100))


def test_stratified_subset(tmp_path):
    write_cifar_pickle(str(tmp_path), per_class=5, test_per_class=1)
    full = load_dataset("cifar10", "train", str(tmp_path))
    sub = load_dataset("cifar10", "train", str(tmp_path), subset=2)
    assert np.bincount(sub.labels).tolist() == [2] * 10
    # the first two of each class, in the original order
    idx = D.stratified_subset(full.labels, 2)
    assert np.array_equal(sub.images, full.images[idx])
    write_cifar_folder(str(tmp_path / "f"), per_class=4, test_per_class=1)
    s2 = load_dataset("cifar10", "train", str(tmp_path / "f"), subset=1)
    assert len(s2) == 10 and s2.labels.tolist() == list(range(10))


def test_cache_is_used_and_rebuilt_when_sources_change(tmp_path, monkeypatch):
    written = write_cifar_folder(str(tmp_path), per_class=2, test_per_class=1, ext="png")
    a = load_dataset("cifar10", "train", str(tmp_path))
    cache = tmp_path / "cache"
    files = [f for f in os.listdir(cache) if f.endswith(".npz")]
    assert len(files) == 1 and not [f for f in os.listdir(cache) if f.startswith(".tmp")]
    calls = []
    real = D.decode_images
    monkeypatch.setattr(D, "decode_images", lambda *a, **k: calls.append(1) or real(*a, **k))
    b = load_dataset("cifar10", "train", str(tmp_path))
    assert calls == [] and np.array_equal(a.images, b.images)  # served from the cache
    # change one source image: new content, new mtime -> rebuilt, old cache removed
    from PIL import Image

    p = tmp_path / "cifar10" / "train" / "cat" / "0000.png"
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(p)
    os.utime(p, ns=(time.time_ns() + 10 ** 9, time.time_ns() + 10 ** 9))
    c = load_dataset("cifar10", "train", str(tmp_path))
    assert calls == [1]
    i = int(np.flatnonzero(c.labels == 3)[0])
    assert c.images[i].max() == 0 and a.images[i].max() > 0
    assert len([f for f in os.listdir(cache) if f.endswith(".npz")]) == 1
    # a damaged cache file is rebuilt, not trusted
    f = [f for f in os.listdir(cache) if f.endswith(".npz")][0]
    (cache / f).write_bytes(b"garbage")
    d = load_dataset("cifar10", "train", str(tmp_path))
    assert np.array_equal(d.images, c.images) and calls == [1, 1]


def test_truncated_jpeg_names_the_file(tmp_path):
    write_cifar_folder(str(tmp_path), per_class=2, test_per_class=1, ext="jpg")
    p = tmp_path / "cifar10" / "train" / "dog" / "0001.jpg"
    raw = p.read_bytes()
    p.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(DataError, match=r"dog/0001\.jpg.*(decode|truncated)"):
        load_dataset("cifar10", "train", str(tmp_path))


def test_wrong_image_size_and_garbage_file(tmp_path):
    write_cifar_folder(str(tmp_path), per_class=1, test_per_class=1)
    from PIL import Image

    p = tmp_path / "cifar10" / "train" / "ship" / "0000.png"
    Image.fromarray(np.zeros((30, 32, 3), np.uint8)).save(p)
    with pytest.raises(DataError, match=r"ship/0000\.png.*expected 32x32"):
        load_dataset("cifar10", "train", str(tmp_path))
    p.write_bytes(b"not an image at all")
    with pytest.raises(DataError, match=r"ship/0000\.png.*cannot decode"):
        load_dataset("cifar10", "train", str(tmp_path))


def test_missing_and_corrupt_pickle_batches(tmp_path):
    d = write_cifar_pickle(str(tmp_path), per_class=2, test_per_class=1)
    os.unlink(os.path.join(d, "data_batch_3"))
    with pytest.raises(DataError, match=r"missing CIFAR batch file .*data_batch_3"):
        load_dataset("cifar10", "train", str(tmp_path))
    raw = open(os.path.join(d, "test_batch"), "rb").read()
    with open(os.path.join(d, "test_batch"), "wb") as f:
        f.write(raw[: len(raw) // 3])
    with pytest.raises(DataError, match=r"test_batch: truncated or corrupt"):
        load_dataset("cifar10", "test", str(tmp_path))
    with open(os.path.join(d, "test_batch"), "wb") as f:
        pickle.dump({b"data": np.zeros((2, 100), np.uint8), b"labels": [0, 1]}, f)
    with pytest.raises(DataError, match=r"test_batch: data has shape \(2, 100\).*expected \(N, 3072\)"):
        load_dataset("cifar10", "test", str(tmp_path))


def test_not_found_message_lists_layouts(tmp_path):
    with pytest.raises(DataError, match=r"cifar-10-batches-py.*cifar10/train/<class>.*download"):
        load_dataset("cifar10", "train", str(tmp_path))
    with pytest.raises(DataError, match=r"did you mean 'cifar10'"):
        load_dataset("cifar01", "train", str(tmp_path))


def test_camvid_layout_and_segnet_paths(tmp_path):
    write_camvid(str(tmp_path), n_train=3, n_val=2, segnet_paths=True)
    tr = load_dataset("camvid", "train", str(tmp_path))
    assert tr.task == "segmentation" and tr.ignore_index == 11 and tr.num_classes == 11
    assert tr.images.shape == (3, 24, 32, 3) and tr.labels.shape == (3, 24, 32)
    assert (tr.labels[:, 0] == 11).all() and tr.labels.max() == 11
    assert len(load_dataset("camvid", "train", str(tmp_path), subset=2)) == 2


def test_camvid_errors(tmp_path):
    d = write_camvid(str(tmp_path), n_train=2, n_val=1)
    from PIL import Image

    Image.fromarray(np.full((24, 32), 40, np.uint8)).save(os.path.join(d, "valannot", "val0000.png"))
    with pytest.raises(DataError, match=r"valannot/val0000\.png: label values up to 40"):
        load_dataset("camvid", "val", str(tmp_path))
    os.unlink(os.path.join(d, "train", "train0001.png"))
    with pytest.raises(DataError, match=r"train\.txt:2: missing file .*train0001\.png"):
        load_dataset("camvid", "train", str(tmp_path))
    with pytest.raises(DataError, match=r"missing CamVid list file .*test\.txt"):
        load_dataset("camvid", "test", str(tmp_path))


def test_data_root_precedence(monkeypatch, tmp_path):
    monkeypatch.setenv("OPERAD_DATA", str(tmp_path / "env"))
    assert D.data_root(str(tmp_path / "cli")) == str(tmp_path / "cli")
    assert D.data_root() == str(tmp_path / "env")
    monkeypatch.delenv("OPERAD_DATA")
    monkeypatch.chdir(tmp_path)
    assert D.data_root() == str(tmp_path / "data")


def _tarball(tmp_path):
    src = tmp_path / "src"
    write_cifar_pickle(str(src), per_class=2, test_per_class=1)
    arc = tmp_path / "cifar-10-python.tar.gz"
    with tarfile.open(arc, "w:gz") as t:
        t.add(src / "cifar-10-batches-py", arcname="cifar-10-batches-py")
    return arc, hashlib.md5(arc.read_bytes()).hexdigest()


def test_download_from_file_url_with_md5(tmp_path):
    arc, md5 = _tarball(tmp_path)
    root = tmp_path / "root"
    D.download_cifar("cifar10", str(root), url=arc.as_uri(), md5=md5)
    assert (root / "cifar-10-python.tar.gz").is_file()
    assert len(load_dataset("cifar10", "train", str(root))) == 20
    with pytest.raises(DataError, match="checksum mismatch.*expected 0{32}"):
        D.download(arc.as_uri(), str(tmp_path / "bad"), "0" * 32)
    assert not [f for f in os.listdir(tmp_path / "bad")]  # nothing half-written left behind
    with pytest.raises(DataError, match="cannot download"):
        D.download((tmp_path / "nope.tar.gz").as_uri(), str(tmp_path / "bad"), md5)


def test_download_rejects_escaping_archive(tmp_path):
    arc = tmp_path / "evil.tar.gz"
    payload = tmp_path / "x.txt"
    payload.write_text("x")
    with tarfile.open(arc, "w:gz") as t:
        t.add(payload, arcname="../escaped.txt")
    md5 = hashlib.md5(arc.read_bytes()).hexdigest()
    with pytest.raises(DataError, match="escape"):
        D.download(arc.as_uri(), str(tmp_path / "dest"), md5)
    assert not (tmp_path / "escaped.txt").exists()


def test_real_shared_cifar10_files(shared_data):
    d = load_dataset("cifar10", "test", shared_data, subset=2)
    assert len(d) == 20 and d.labels.tolist() == [c for c in range(10) for _ in range(2)]
    assert d.images.std() > 20  # real pictures, not blank
    from PIL import Image

    ref = np.asarray(Image.open(os.path.join(shared_data, "cifar10", "test", "bird", "0001.jpg")).convert("RGB"))
    assert np.array_equal(d.images[5], ref)


def test_real_shared_camvid_files(shared_data):
    d = load_dataset("camvid", "val", shared_data, subset=2)
    assert d.images.shape == (2, 360, 480, 3) and d.labels.shape == (2, 360, 480)
    assert d.labels.max() <= 11 and len(np.unique(d.labels)) > 5
