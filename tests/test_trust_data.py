"""Data files are data: a CIFAR pickle cannot run code, every damaged pickle is a
DataError naming the file, class folders must match the data set's classes (and
the checkpoint's at eval time), and a cache that fails validation is rebuilt."""
import os
import pickle
import sys

import numpy as np
import pytest

from operad.experiments import data as D
from operad.experiments.cli import main
from operad.experiments.config import Config
from operad.experiments.data import DataError, load_cifar_pickle, load_dataset
from operad.experiments.synthetic import class_images, write_camvid, write_cifar_folder, write_cifar_pickle
from operad.experiments.train import build_model, save_checkpoint


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("OPERAD_CACHE", str(tmp_path / "cache"))


class _System:
    def __init__(self, cmd):
        self.cmd = cmd

    def __reduce__(self):
        return os.system, (self.cmd,)


class _Eval:
    def __init__(self, src):
        self.src = src

    def __reduce__(self):
        return eval, (self.src,)


def _malicious(marker):
    m = str(marker)
    for proto in (0, 2, 4, 5):
        yield f"os.system p{proto}", pickle.dumps({b"data": _System(f"touch {m}"), b"labels": []}, protocol=proto)
    yield "builtins.eval", pickle.dumps({b"labels": _Eval(f"open({m!r}, 'w')")}, protocol=2)
    # protocol-0 INST (its own opcode path to find_class) and a numpy-looking module that is not allowed
    yield "INST", b"(S'touch " + m.encode() + b"'\nios\nsystem\n."
    yield "numpy.testing", b"\x80\x02cnumpy.testing\nrun_module_suite\n)R."
    yield "numpy attribute", b"\x80\x02cnumpy\nload\nX\x03\x00\x00\x00abc\x85R."
    yield "persistent id", b"\x80\x02X\x01\x00\x00\x00xQ."


def test_malicious_pickles_run_nothing_and_name_the_file(tmp_path):
    root = tmp_path / "root"
    d = write_cifar_pickle(str(root), per_class=1, test_per_class=1)
    marker = tmp_path / "pwned"
    for what, payload in _malicious(marker):
        with open(os.path.join(d, "test_batch"), "wb") as f:
            f.write(payload)
        with pytest.raises(DataError) as e:
            load_dataset("cifar10", "test", str(root), use_cache=False)
        assert not marker.exists(), f"{what}: the pickle ran code"
        assert "test_batch" in str(e.value) and ("refused" in str(e.value) or "corrupt" in str(e.value)), what
    # the error says what was refused
    with pytest.raises(DataError, match=r"test_batch: refused global (posix|os)\.system.*nothing in it was run"):
        with open(os.path.join(d, "test_batch"), "wb") as f:
            pickle.dump(_System(f"touch {marker}"), f)
        load_cifar_pickle(os.path.join(d, "test_batch"))
    assert not marker.exists()


@pytest.mark.parametrize("proto", [2, 4, 5])
def test_official_forms_load(tmp_path, proto):
    """The official batches are Python 2 pickles that name numpy.core.multiarray;
    Python 3 writes numpy._core and, at protocol 5, _frombuffer."""
    x = np.random.default_rng(0).integers(0, 256, (3, 3072), dtype=np.uint8)
    raw = pickle.dumps({b"batch_label": b"testing batch 1 of 1", b"labels": [0, 9, 3], b"data": x,
                        b"filenames": [b"a.png", b"b.png", b"c.png"]}, protocol=proto)
    if proto == 2:  # name the module as numpy 1 (and the official archive) did
        raw = raw.replace(b"numpy._core.multiarray\n", b"numpy.core.multiarray\n")
        assert b"numpy.core.multiarray\n_reconstruct" in raw
    p = tmp_path / "batch"
    p.write_bytes(raw)
    d = load_cifar_pickle(str(p))
    assert np.array_equal(d[b"data"], x) and d[b"labels"] == [0, 9, 3]


def test_every_unpickling_failure_is_a_data_error(tmp_path):
    root = tmp_path / "root"
    d = write_cifar_pickle(str(root), per_class=1, test_per_class=1)
    p = os.path.join(d, "test_batch")
    good = open(p, "rb").read()
    bad = {
        "frame overflow": b"\x80\x04\x95\xff\xff\xff\xff\xff\xff\xff\xff",  # OverflowError in plain pickle.load
        "unicode overflow": b"\x80\x04\x8d\xff\xff\xff\xff\xff\xff\xff\xff",
        "empty": b"",
        "truncated": good[: len(good) // 2],
        "garbage": b"\x00\x01\x02 not a pickle",
        "not a dict": pickle.dumps([1, 2, 3]),
        "missing key": pickle.dumps({b"data": np.zeros((1, 3072), np.uint8)}),
        "labels not ints": pickle.dumps({b"data": np.zeros((2, 3072), np.uint8), b"labels": ["a", "b"]}),
        "label count": pickle.dumps({b"data": np.zeros((2, 3072), np.uint8), b"labels": [1]}),
        "label range": pickle.dumps({b"data": np.zeros((2, 3072), np.uint8), b"labels": [1, 10]}),
        "negative label": pickle.dumps({b"data": np.zeros((2, 3072), np.uint8), b"labels": [-1, 0]}),
        "huge label": pickle.dumps({b"data": np.zeros((1, 3072), np.uint8), b"labels": [2 ** 70]}),
        "float data": pickle.dumps({b"data": np.zeros((2, 3072), np.float32), b"labels": [1, 2]}),
        "data a list": pickle.dumps({b"data": [[0] * 3072], b"labels": [1]}),
        "fortran data": pickle.dumps({b"data": np.asfortranarray(np.zeros((2, 3072), np.uint8)), b"labels": [1, 2]}),
    }
    for what, raw in bad.items():
        with open(p, "wb") as f:
            f.write(raw)
        with pytest.raises(DataError, match="test_batch") as e:
            load_dataset("cifar10", "test", str(root), use_cache=False)
        assert "Error:" not in str(e.value).split(":")[0], what
    with open(p, "wb") as f:
        f.write(good)
    meta = os.path.join(d, "batches.meta")
    for names in ([b"a"] * 10, [b"a", b"b"], [1] * 10, b"not a list"):
        with open(meta, "wb") as f:
            pickle.dump({b"label_names": names}, f)
        with pytest.raises(DataError, match=r"batches\.meta"):
            load_dataset("cifar10", "test", str(root), use_cache=False)


def test_class_folders_must_match_the_data_set(tmp_path):
    write_cifar_folder(str(tmp_path), per_class=1, test_per_class=1)
    test = tmp_path / "cifar10" / "test"
    os.rename(test / "cat", tmp_path / "cat-moved")
    with pytest.raises(DataError, match=r"cifar10/test: the class folders are not CIFAR-10's 10 classes: "
                                        r"missing classes: cat\b"):
        load_dataset("cifar10", "test", str(tmp_path))
    (test / "kitten").mkdir()
    with pytest.raises(DataError, match=r"missing classes: cat; extra classes: kitten"):
        load_dataset("cifar10", "test", str(tmp_path))
    os.rmdir(test / "kitten")
    (test / "cat").mkdir()
    with pytest.raises(DataError, match=r"test/cat holds no image files"):
        load_dataset("cifar10", "test", str(tmp_path))
    os.rmdir(test / "cat")
    os.rename(tmp_path / "cat-moved", test / "cat")
    assert load_dataset("cifar10", "test", str(tmp_path)).labels.tolist() == list(range(10))
    # CIFAR-100 folders are checked against the official 100 names
    write_cifar_folder(str(tmp_path / "c100"), per_class=1, test_per_class=1, name="cifar100")
    with pytest.raises(DataError, match=r"not CIFAR-100's 100 classes: missing classes: apple, aquarium_fish, .* "
                                        r"and 92 more; extra classes: airplane"):
        load_dataset("cifar100", "test", str(tmp_path / "c100"))


def test_check_classes_messages():
    d = D.ArrayData("cifar10", "test", np.zeros((0, 32, 32, 3), np.uint8), np.zeros(0, np.int64),
                    list(D.CIFAR10_CLASSES), source="/data")
    D.check_classes(d, list(D.CIFAR10_CLASSES), "x")
    D.check_classes(d, None, "x")
    with pytest.raises(DataError, match=r"classes of the checkpoint r: missing classes: emu; extra classes: truck"):
        D.check_classes(d, D.CIFAR10_CLASSES[:-1] + ["emu"], "the checkpoint r")
    with pytest.raises(DataError, match=r"the same classes in another order"):
        D.check_classes(d, D.CIFAR10_CLASSES[::-1], "the checkpoint r")


def test_eval_refuses_a_checkpoint_with_other_classes(tmp_path, capsys, monkeypatch):
    write_cifar_folder(str(tmp_path / "data"), per_class=1, test_per_class=1)
    cfg = Config(model_expr="ops.conv(4) >> ops.global_pool() >> ops.linear(num_classes)", dataset="cifar10",
                 data_root=str(tmp_path / "data"))
    model = build_model(cfg, 10)
    run = tmp_path / "run"
    run.mkdir()
    classes = D.CIFAR10_CLASSES[:-1] + ["lorry"]
    save_checkpoint(str(run / "final.pt"), {"config": cfg.to_dict(), "model": model.state_dict(), "ema": None,
                                            "classes": classes})
    calls = []
    ev = sys.modules["operad.experiments.evaluate"]  # the module (operad.experiments.evaluate is the function)
    real = ev.evaluate
    monkeypatch.setattr(ev, "evaluate", lambda *a, **k: calls.append(1) or real(*a, **k))
    rc = main(["eval", str(run), "--device", "cpu"])
    err = capsys.readouterr().err
    assert rc == 2 and calls == [] and not (run / "eval-test.json").exists()
    assert "missing classes: lorry; extra classes: truck" in err, err
    # the same checkpoint with the data set's classes evaluates
    save_checkpoint(str(run / "final.pt"), {"config": cfg.to_dict(), "model": model.state_dict(), "ema": None,
                                            "classes": list(D.CIFAR10_CLASSES)})
    assert main(["eval", str(run), "--device", "cpu"]) == 0 and (run / "eval-test.json").exists()


def _cache_files(tmp_path):
    return sorted(f for f in os.listdir(tmp_path / "cache") if f.endswith(".npz"))


def test_cache_failing_validation_is_rebuilt(tmp_path):
    written = write_cifar_folder(str(tmp_path), per_class=2, test_per_class=1, ext="png")
    load_dataset("cifar10", "train", str(tmp_path))
    [name] = _cache_files(tmp_path)
    path = tmp_path / "cache" / name
    good = D._read_cache(str(path))
    broken = {
        "missing labels": {"images": good["images"]},
        "missing images": {"labels": good["labels"]},
        "wrong dtype": {"images": good["images"].astype(np.float32), "labels": good["labels"]},
        "short labels": {"images": good["images"], "labels": good["labels"][:-1]},
        "labels as floats": {"images": good["images"], "labels": good["labels"].astype(np.float64)},
    }
    for what, arrays in broken.items():
        np.savez(path, **arrays)
        d = load_dataset("cifar10", "train", str(tmp_path))
        assert np.array_equal(d.images, written["train"]) and np.array_equal(d.labels, written["train_labels"]), what
        assert D._read_cache(str(path)) is not None, f"{what}: the cache was not rewritten"
    path.write_bytes(path.read_bytes()[:100])  # truncated zip
    assert np.array_equal(load_dataset("cifar10", "train", str(tmp_path)).images, written["train"])
    assert _cache_files(tmp_path) == [name]


def test_cache_versions_of_another_key_are_kept(tmp_path):
    write_cifar_folder(str(tmp_path), per_class=2, test_per_class=1, ext="png")
    load_dataset("cifar10", "train", str(tmp_path), subset=1)
    load_dataset("cifar10", "train", str(tmp_path))
    files = _cache_files(tmp_path)
    assert len(files) == 2 and any("-sub1-" in f for f in files), files


def test_camvid_list_that_is_not_text(tmp_path):
    d = write_camvid(str(tmp_path), n_train=1, n_val=1)
    lst = os.path.join(d, "val.txt")
    raw = open(lst, "rb").read()
    with open(lst, "wb") as f:
        f.write(b"\xff\xfe" + raw)
    with pytest.raises(DataError, match=r"val\.txt: not a UTF-8 text file"):
        load_dataset("camvid", "val", str(tmp_path))
    with open(lst, "wb") as f:
        f.write(raw.replace(b" ", b"\0", 1))
    with pytest.raises(DataError, match=r"val\.txt: holds a NUL byte"):
        load_dataset("camvid", "val", str(tmp_path))


def test_png_damage_pil_misses_is_detected(tmp_path):
    """PIL does not check the CRCs of pixel data: a few flipped bits near the end of
    IDAT decode to a wrong image without an error. operad checks every CRC."""
    import io

    from PIL import Image

    write_cifar_folder(str(tmp_path), per_class=1, test_per_class=1, ext="png")
    p = tmp_path / "cifar10" / "test" / "ship" / "0000.png"
    want = class_images(np.array([8]), seed=1)[0]  # an image whose PNG has such blind spots
    Image.fromarray(want).save(p)
    raw = p.read_bytes()
    idat = raw.index(b"IDAT")
    end = idat + 4 + int.from_bytes(raw[idat - 4:idat], "big")
    blind = []
    for i in range(max(idat + 4, end - 120), end):  # PIL's blind spots lie in the last deflate bytes
        for mask in range(1, 256):
            b = bytearray(raw)
            b[i] ^= mask
            try:
                got = np.asarray(Image.open(io.BytesIO(bytes(b))).convert("RGB"))
            except Exception:
                continue
            if not np.array_equal(got, want):
                blind.append(bytes(b))
        if len(blind) >= 3:
            break
    assert blind, "PIL caught every flip here; pick another image"
    for damaged in blind:
        p.write_bytes(damaged)
        with pytest.raises(DataError, match=r"ship/0000\.png: corrupt PNG \(CRC mismatch in chunk b'IDAT'"):
            load_dataset("cifar10", "test", str(tmp_path), use_cache=False)
    p.write_bytes(raw[:-5])
    with pytest.raises(DataError, match=r"ship/0000\.png: truncated PNG"):
        load_dataset("cifar10", "test", str(tmp_path), use_cache=False)
