"""Fuzz the data loaders with damaged copies of real files.

Small copies of real files from the shared data (CIFAR-10 JPEGs, the same
pixels as PNGs, CIFAR batches pickled as the official archive does, CamVid
label maps and list files, and the decoded-array cache) get random byte flips
and truncations (seeded). Every load must end as

* a DataError whose message names the damaged file, or
* the original arrays, or
* for damage no format can detect (a JPEG has no checksum; a CIFAR pickle
  stores raw pixels and label ints), a load that differs exactly as the
  damaged bytes say: the one image of the damaged JPEG, the one pixel of a
  flipped payload byte, the one label of a flipped label int.

Any other exception, or any other difference from the original, fails. The
outcome table prints with ``pytest -s``.
"""
import collections
import os
import pickle
import pickletools
import shutil
import struct

import numpy as np
import pytest

from operad.experiments import data as D
from operad.experiments.data import DataError, load_dataset

SEED = 14
CLASSES = D.CIFAR10_CLASSES


class _Py2Pickler(pickle._Pickler):
    """Writes bytes as Python 2's cPickle did (SHORT_BINSTRING/BINSTRING), so that a
    protocol-2 pickle has the form of the official CIFAR batches."""

    dispatch = pickle._Pickler.dispatch.copy()

    def _save_py2_bytes(self, obj):
        n = len(obj)
        self.write((pickle.SHORT_BINSTRING + bytes([n]) if n < 256 else pickle.BINSTRING + struct.pack("<i", n)) + obj)
        self.memoize(obj)

    dispatch[bytes] = _save_py2_bytes


def official_pickle(obj) -> bytes:
    """``obj`` pickled as the official archive's batches are: protocol 2, str keys
    as byte strings, arrays through numpy.core.multiarray._reconstruct."""
    import io

    buf = io.BytesIO()
    _Py2Pickler(buf, protocol=2).dump(obj)
    return buf.getvalue().replace(b"numpy._core.multiarray\n", b"numpy.core.multiarray\n")


# ----------------------------------------------------------------------------- the corpus

def _real_images(shared, n_per_class=1):
    from PIL import Image

    paths = [os.path.join(shared, "cifar10", "test", c, f"{i:04d}.jpg") for c in CLASSES for i in range(n_per_class)]
    return paths, np.stack([np.asarray(Image.open(p).convert("RGB")) for p in paths])


def _make_corpus(shared, root):
    """Data roots built from real files; returns {name: root}."""
    from PIL import Image

    paths, pix = _real_images(shared)
    roots = {}
    for ext in ("jpg", "png"):
        r = os.path.join(root, ext)
        for c, p, x in zip(CLASSES, paths, pix):
            d = os.path.join(r, "cifar10", "test", c)
            os.makedirs(d)
            if ext == "jpg":
                shutil.copyfile(p, os.path.join(d, "0000.jpg"))  # the real file, bytes as shipped
            else:
                Image.fromarray(x).save(os.path.join(d, "0000.png"))
        roots[ext] = r
    roots["cached"] = os.path.join(root, "cached")  # an undamaged copy whose cache file is fuzzed
    shutil.copytree(roots["png"], roots["cached"])
    labels = list(range(10))
    batch = {b"batch_label": b"testing batch 1 of 1", b"labels": labels,
             b"data": pix.transpose(0, 3, 1, 2).reshape(10, -1), b"filenames": [f"{c}_0000.png".encode() for c in CLASSES]}
    meta = {b"label_names": [c.encode() for c in CLASSES], b"num_cases_per_batch": 10, b"num_vis": 3072}
    for name, dump in (("pickle2", official_pickle), ("pickle5", lambda o: pickle.dumps(o, protocol=5))):
        d = os.path.join(root, name, "cifar-10-batches-py")
        os.makedirs(d)
        for f, obj in (("test_batch", batch), ("batches.meta", meta)):
            with open(os.path.join(d, f), "wb") as fh:
                fh.write(dump(obj))
        roots[name] = os.path.join(root, name)
    # CamVid: a real frame and its label map, cropped small, and the list file
    cam = os.path.join(shared, "camvid")
    first = open(os.path.join(cam, "val.txt")).read().split()[:2]
    img = np.asarray(Image.open(os.path.join(cam, first[0])).convert("RGB"))[150:198, 200:264]
    ann = np.asarray(Image.open(os.path.join(cam, first[1])))[150:198, 200:264]
    assert len(np.unique(ann)) > 2, "the crop should hold several classes"
    d = os.path.join(root, "camvid", "camvid")
    os.makedirs(os.path.join(d, "val"))
    os.makedirs(os.path.join(d, "valannot"))
    Image.fromarray(img).save(os.path.join(d, "val", "f0.png"))
    Image.fromarray(ann, mode="L").save(os.path.join(d, "valannot", "f0.png"))
    with open(os.path.join(d, "val.txt"), "w") as f:
        f.write("val/f0.png valannot/f0.png\n")
    roots["camvid"] = os.path.join(root, "camvid")
    return roots


# ----------------------------------------------------------------------------- judging

def _label_arg_bytes(raw: bytes) -> set:
    """Byte offsets of the label ints' arguments in a CIFAR pickle (BININT1/2/BININT)."""
    out, inside = set(), False
    for op, arg, pos in pickletools.genops(raw):
        if isinstance(arg, (bytes, str)):
            inside = arg in (b"labels", "labels")
        elif inside and op.name in ("BININT1", "BININT2", "BININT"):
            out.update(range(pos + 1, pos + 1 + {"BININT1": 1, "BININT2": 2, "BININT": 4}[op.name]))
    return out


class Target:
    """One file to damage, how to load its data set, and which differences its
    format cannot detect."""

    def __init__(self, kind, path, load, explain=None):
        self.kind, self.path, self.load, self.explain = kind, path, load, explain
        self.raw = open(path, "rb").read()
        self.want = load()

    def judge(self, got, offset, flipped):
        """'same' if equal, an 'undetectable: ...' label if the difference is what
        the damaged bytes mean, else None (a wrong array)."""
        w = self.want
        if (np.array_equal(got.images, w.images) and np.array_equal(got.labels, w.labels)
                and got.classes == w.classes and got.images.dtype == w.images.dtype):
            return "same"
        if got.images.shape != w.images.shape or got.images.dtype != np.uint8 or got.classes != w.classes:
            return None
        return self.explain(w, got, offset, flipped) if self.explain else None


def _jpeg_explain(index):
    def explain(want, got, offset, flipped):
        others = np.ones(len(got.images), bool)
        others[index] = False
        ok = np.array_equal(got.images[others], want.images[others]) and np.array_equal(got.labels, want.labels)
        return "undetectable: the damaged JPEG decodes to other pixels" if ok else None
    return explain


def _pickle_explain(payload_at, label_bytes):
    def explain(w, got, offset, flipped):
        if offset is None:
            return None
        if payload_at <= offset < payload_at + 10 * 3072 and np.array_equal(got.labels, w.labels):
            k = offset - payload_at
            n, c, y, x = k // 3072, (k % 3072) // 1024, (k % 1024) // 32, k % 32
            diff = np.argwhere(got.images != w.images)
            if diff.tolist() == [[n, y, x, c]] and got.images[n, y, x, c] == flipped:
                return "undetectable: one pixel byte changed (raw payload)"
        if offset in label_bytes and np.array_equal(got.images, w.images):
            if int((got.labels != w.labels).sum()) == 1:
                return "undetectable: one label int changed, still in range"
        return None
    return explain


# ----------------------------------------------------------------------------- the fuzz

def _damage(raw: bytes, rng, op: str, region=None, bits=8):
    if op == "truncate":
        cut = int(rng.integers(0, len(raw)))
        return raw[:cut], None, None
    lo, hi = region or (0, len(raw))
    i = int(rng.integers(lo, hi))
    b = bytearray(raw)
    b[i] ^= int(rng.integers(1, 2 ** bits))
    return bytes(b), i, b[i]


def _try(target, data):
    with open(target.path, "wb") as f:
        f.write(data)
    try:
        return target.load(), None
    except Exception as e:  # judged below: only a DataError naming the file is right
        return None, e
    finally:
        with open(target.path, "wb") as f:
            f.write(target.raw)


@pytest.fixture
def corpus(shared_data, tmp_path):
    if not os.path.isdir(os.path.join(shared_data, "cifar10")) or not os.path.isdir(os.path.join(shared_data, "camvid")):
        pytest.skip(f"shared data at {shared_data} lacks cifar10/ or camvid/")
    return _make_corpus(shared_data, str(tmp_path / "fuzz"))


def _targets(roots, cache_dir):
    def cifar(root, **kw):
        return lambda: load_dataset("cifar10", "test", root, use_cache=False, **kw)

    def camvid():
        return load_dataset("camvid", "val", roots["camvid"], use_cache=False)

    def cached():
        return load_dataset("cifar10", "test", roots["cached"], use_cache=True)

    ts = []
    for i in (0, 3, 8):
        ts.append(Target("JPEG image (real CIFAR-10 file)",
                         os.path.join(roots["jpg"], "cifar10", "test", CLASSES[i], "0000.jpg"), cifar(roots["jpg"]),
                         _jpeg_explain(i)))
    for i in (1, 6):
        ts.append(Target("PNG image (real CIFAR-10 pixels)",
                         os.path.join(roots["png"], "cifar10", "test", CLASSES[i], "0000.png"), cifar(roots["png"])))
    cam = os.path.join(roots["camvid"], "camvid")
    ts.append(Target("PNG label map (real CamVid crop)", os.path.join(cam, "valannot", "f0.png"), camvid))
    ts.append(Target("CamVid list file", os.path.join(cam, "val.txt"), camvid))
    for name, kind in (("pickle2", "CIFAR pickle batch, official form (protocol 2)"),
                       ("pickle5", "CIFAR pickle batch, protocol 5")):
        path = os.path.join(roots[name], "cifar-10-batches-py", "test_batch")
        raw = open(path, "rb").read()
        want = cifar(roots[name])()
        at = raw.find(np.ascontiguousarray(want.images.transpose(0, 3, 1, 2)).tobytes())
        assert at > 0
        t = Target(kind, path, cifar(roots[name]), _pickle_explain(at, _label_arg_bytes(raw)))
        t.payload = (at, at + 10 * 3072)
        ts.append(t)
    ts.append(Target("CIFAR meta pickle (batches.meta)",
                     os.path.join(roots["pickle2"], "cifar-10-batches-py", "batches.meta"), cifar(roots["pickle2"])))
    cached()  # write the cache file, then damage it
    [npz] = [f for f in os.listdir(cache_dir) if f.endswith(".npz")]
    ts.append(Target("decoded-array cache (.npz)", os.path.join(cache_dir, npz), cached))
    return ts


# kind -> (flips, truncations); flips in pickles go half to the structure, half anywhere
PLAN = {"JPEG image (real CIFAR-10 file)": (25, 8), "PNG image (real CIFAR-10 pixels)": (25, 8),
        "PNG label map (real CamVid crop)": (50, 15), "CamVid list file": (30, 10),
        "CIFAR pickle batch, official form (protocol 2)": (60, 20), "CIFAR pickle batch, protocol 5": (30, 10),
        "CIFAR meta pickle (batches.meta)": (30, 10), "decoded-array cache (.npz)": (25, 10)}


def test_fuzzed_files_load_correctly_or_fail_naming_the_file(corpus, tmp_path, monkeypatch):
    cache_dir = str(tmp_path / "cache")
    monkeypatch.setenv("OPERAD_CACHE", cache_dir)
    rng = np.random.default_rng(SEED)
    table = collections.OrderedDict()
    bad = []
    targets = _targets(corpus, cache_dir)
    by_kind = collections.defaultdict(list)
    for t in targets:
        by_kind[t.kind].append(t)
    for kind, (n_flip, n_trunc) in PLAN.items():
        ts = by_kind[kind]
        row = table.setdefault(kind, collections.Counter())
        for j in range(n_flip + n_trunc):
            t = ts[j % len(ts)]
            op = "flip" if j < n_flip else "truncate"
            region, bits = None, 8
            if op == "flip" and hasattr(t, "payload") and j % 5 == 1:
                # a label int: in range it is damage no format can see, out of range an error
                offsets = sorted(_label_arg_bytes(t.raw))
                i = offsets[int(rng.integers(len(offsets)))]
                region, bits = (i, i + 1), 4  # low bits: half the flips stay within 0..9
            elif op == "flip" and hasattr(t, "payload") and j % 2 == 0:
                # the structure around the pixels: everything but the payload
                lo, hi = t.payload
                region = (0, lo) if rng.random() < lo / (lo + len(t.raw) - hi) else (hi, len(t.raw))
            damaged, offset, flipped = _damage(t.raw, rng, op, region, bits)
            got, err = _try(t, damaged)
            row["tried"] += 1
            where = f"{kind} {op} at {offset if offset is not None else len(damaged)} of {os.path.basename(t.path)}"
            if err is not None:
                if isinstance(err, DataError) and t.path in str(err):
                    row["clear error (DataError naming the file)"] += 1
                else:
                    bad.append(f"{where}: {type(err).__name__}: {err}")
                continue
            verdict = t.judge(got, offset, flipped)
            if verdict == "same":
                row["correct load (original arrays)"] += 1
            elif verdict and op == "flip":
                row[verdict] += 1
            else:
                bad.append(f"{where}: loaded a wrong array")
    lines = [f"{'kind of bad input':<50} {'tried':>5}  outcomes"]
    for kind, row in table.items():
        outs = "; ".join(f"{k}: {v}" for k, v in sorted(row.items()) if k != "tried")
        lines.append(f"{kind:<50} {row['tried']:>5}  {outs}")
    lines.append(f"{'total':<50} {sum(r['tried'] for r in table.values()):>5}")
    print("\n" + "\n".join(lines))
    assert not bad, "\n".join(bad[:20])
    assert sum(r["tried"] for r in table.values()) >= 300
    for kind, row in table.items():
        if kind.startswith("decoded-array cache"):  # a damaged cache is rebuilt: always the original arrays
            assert row["correct load (original arrays)"] == row["tried"], row
        else:  # every kind exercised the error path
            assert row["clear error (DataError naming the file)"] > 0, kind
