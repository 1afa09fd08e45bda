"""Data sets: CIFAR-10/100 and CamVid, decoded once into cached uint8 arrays.

Layouts understood (below a data root, see :func:`data_root`):

* CIFAR-10, python pickle batches: ``cifar-10-batches-py/data_batch_{1..5}``,
  ``test_batch``, ``batches.meta`` (lossless; preferred when present);
* CIFAR-10, image folders: ``cifar10/{train,test}/<class>/*.jpg|png``;
* CIFAR-100, python pickle: ``cifar-100-python/{train,test,meta}``
  (or image folders ``cifar100/{train,test}/<class>/...``);
* CamVid, SegNet layout: ``camvid/{train,val,test}.txt`` listing
  ``image annotation`` pairs; 11 classes, index 11 is void (ignored).

Decoded arrays are cached (``$OPERAD_CACHE``, else ``~/.cache/operad``) in a
file keyed by a checksum of the source file list, sizes and mtimes, so a
changed source rebuilds the cache. Example::

    >>> from operad.experiments.data import load_dataset
    >>> train = load_dataset("cifar10", "train", subset=100)   # doctest: +SKIP
    >>> train.images.shape, train.images.dtype                 # doctest: +SKIP
    ((1000, 32, 32, 3), dtype('uint8'))
"""
from __future__ import annotations

import functools
import hashlib
import io
import os
import pickle
import re
import zlib
import tarfile
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
from operad.operators.algebra.errors import OperadError

__all__ = ["ArrayData", "DataError", "DataNotFound", "OfflineError", "data_root", "cache_dir", "load_dataset", "download", "check_classes",
           "DATASETS", "CIFAR10_CLASSES", "CIFAR100_CLASSES", "CAMVID_CLASSES", "stratified_subset",
           "decode_images", "load_cifar_pickle"]

CACHE_VERSION = 1

CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
CIFAR100_CLASSES = [  # the official fine label names, in label order (alphabetical)
    "apple", "aquarium_fish", "baby", "bear", "beaver", "bed", "bee", "beetle", "bicycle", "bottle", "bowl", "boy",
    "bridge", "bus", "butterfly", "camel", "can", "castle", "caterpillar", "cattle", "chair", "chimpanzee", "clock",
    "cloud", "cockroach", "couch", "crab", "crocodile", "cup", "dinosaur", "dolphin", "elephant", "flatfish",
    "forest", "fox", "girl", "hamster", "house", "kangaroo", "keyboard", "lamp", "lawn_mower", "leopard", "lion",
    "lizard", "lobster", "man", "maple_tree", "motorcycle", "mountain", "mouse", "mushroom", "oak_tree", "orange",
    "orchid", "otter", "palm_tree", "pear", "pickup_truck", "pine_tree", "plain", "plate", "poppy", "porcupine",
    "possum", "rabbit", "raccoon", "ray", "road", "rocket", "rose", "sea", "seal", "shark", "shrew", "skunk",
    "skyscraper", "snail", "snake", "spider", "squirrel", "streetcar", "sunflower", "sweet_pepper", "table", "tank",
    "telephone", "television", "tiger", "tractor", "train", "trout", "tulip", "turtle", "wardrobe", "whale",
    "willow_tree", "wolf", "woman", "worm"]
CAMVID_CLASSES = ["Sky", "Building", "Pole", "Road", "Pavement", "Tree", "SignSymbol", "Fence", "Car",
                  "Pedestrian", "Bicyclist"]
CAMVID_VOID = 11

MEAN_STD = {
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
    "camvid": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
}

ARCHIVES = {
    "cifar10": ("https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
                "c58f30108f718f92721af3b95e74349a", "cifar-10-batches-py"),
    "cifar100": ("https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
                 "eb9058c3a382ffc7106e4002c42a8d85", "cifar-100-python"),
}

IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".webp")


class DataError(OperadError, RuntimeError):
    """A data file is missing, truncated or not what was expected."""


class DataNotFound(DataError):
    """No copy of the data set in any layout operad reads under the data root
    (as opposed to a copy that is there but damaged)."""


@dataclass
class ArrayData:
    """A whole split in memory: ``images`` uint8 (N, H, W, 3); ``labels`` int64
    (N,) for classification or uint8 (N, H, W) label maps for segmentation."""

    name: str
    split: str
    images: np.ndarray
    labels: np.ndarray
    classes: List[str]
    task: str = "classification"
    ignore_index: Optional[int] = None
    mean: Tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: Tuple[float, float, float] = (0.25, 0.25, 0.25)
    source: str = ""

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def __repr__(self) -> str:
        return (f"ArrayData({self.name}/{self.split}: {len(self)} x {tuple(self.images.shape[1:])} uint8, "
                f"{self.num_classes} classes, {self.task}, from {self.source})")


# ----------------------------------------------------------------------------- roots and caches

def data_root(explicit: Optional[str] = None) -> str:
    """The data root: ``explicit`` (``--data``), else ``$OPERAD_DATA``, else ``./data``.

    >>> data_root("/tmp/x")
    '/tmp/x'
    """
    root = explicit or os.environ.get("OPERAD_DATA") or "data"
    return os.path.abspath(os.path.expanduser(root))


def cache_dir() -> str:
    """Where decoded arrays are cached: ``$OPERAD_CACHE``, else ``$XDG_CACHE_HOME/operad``
    (``~/.cache/operad``)."""
    d = os.environ.get("OPERAD_CACHE")
    if not d:
        d = os.path.join(os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "operad")
    return os.path.abspath(d)


def _fingerprint(paths: Sequence[str], extra: str = "") -> str:
    """SHA-1 over each source file's path, size and mtime (and ``extra``)."""
    h = hashlib.sha1(f"v{CACHE_VERSION}|{extra}".encode())
    for p in paths:
        try:
            st = os.stat(p)
        except FileNotFoundError:
            raise DataError(f"missing data file {p}") from None
        h.update(f"{p}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:16]


def _atomic_save_npz(path: str, **arrays) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".tmp-", suffix=".npz")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _valid_cache(arrays: Dict[str, np.ndarray]) -> bool:
    """Whether cached arrays are what a loader writes: uint8 ``images`` (N, H, W, 3)
    and N ``labels`` (int64 class indices, or uint8 (N, H, W) label maps)."""
    x, y = arrays.get("images"), arrays.get("labels")
    if not isinstance(x, np.ndarray) or not isinstance(y, np.ndarray):
        return False
    if x.dtype != np.uint8 or x.ndim != 4 or x.shape[-1] != 3 or y.shape[:1] != x.shape[:1]:
        return False
    return (y.dtype == np.int64 and y.ndim == 1) or (y.dtype == np.uint8 and y.shape == x.shape[:3])


def _read_cache(path: str) -> Optional[Dict[str, np.ndarray]]:
    """The arrays of a cache file, or None if it is missing, unreadable or fails validation."""
    if not os.path.exists(path):
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except Exception:  # any damage (zip, header, truncation) means: rebuild
        return None
    return arrays if _valid_cache(arrays) else None


def _cached(key: str, sources: Sequence[str], build: Callable[[], Dict[str, np.ndarray]],
            use_cache: bool = True, extra: str = "") -> Dict[str, np.ndarray]:
    """Load ``key``'s arrays from the cache when the sources are unchanged; else
    build them, write the cache atomically and remove stale versions. A cache
    file that cannot be read or fails validation is rebuilt, never trusted."""
    if not use_cache:
        return build()
    digest = _fingerprint(sources, extra)
    d = cache_dir()
    path = os.path.join(d, f"{key}-{digest}.npz")
    arrays = _read_cache(path)
    if arrays is not None:
        return arrays
    arrays = build()
    try:
        _atomic_save_npz(path, **arrays)  # replaces a damaged file in place
        mine = re.compile(re.escape(key) + r"-[0-9a-f]{16}\.npz")  # this key's versions, not another key's
        for old in os.listdir(d):
            if mine.fullmatch(old) and old != os.path.basename(path):
                try:
                    os.unlink(os.path.join(d, old))
                except OSError:
                    pass
    except OSError:
        pass  # a read-only cache directory is not an error, only slower
    return arrays


# ----------------------------------------------------------------------------- image decoding

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _check_png(path: str, raw: bytes) -> None:
    """Walk a PNG's chunks and verify each CRC up to ``IEND``: PIL does not check
    the CRCs of pixel data, so a flipped byte there would decode to a wrong image."""
    pos = len(PNG_SIGNATURE)
    while True:
        if pos + 12 > len(raw):
            raise DataError(f"{path}: truncated PNG (ends at byte {len(raw)} before the IEND chunk)")
        n = int.from_bytes(raw[pos:pos + 4], "big")
        kind = raw[pos + 4:pos + 8]
        end = pos + 8 + n
        if end + 4 > len(raw):
            raise DataError(f"{path}: truncated PNG (chunk {kind!r} at byte {pos} runs past the end)")
        if zlib.crc32(raw[pos + 4:end]) != int.from_bytes(raw[end:end + 4], "big"):
            raise DataError(f"{path}: corrupt PNG (CRC mismatch in chunk {kind!r} at byte {pos})")
        if kind == b"IEND":
            return
        pos = end + 4


def _open_image(path: str):
    from PIL import Image

    try:
        with open(path, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        raise DataError(f"missing image file {path}") from None
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e})") from None
    if raw.startswith(PNG_SIGNATURE):
        _check_png(path, raw)
    return Image.open(io.BytesIO(raw))


def _decode_one(path: str, size: Optional[Tuple[int, int]], mode: str) -> np.ndarray:
    """One image as uint8 (H, W, 3) (``mode="RGB"``) or (H, W) (``"L"``, label maps);
    any damage is a DataError naming the file."""
    want = "RGB" if mode == "RGB" else "label"
    try:
        with _open_image(path) as im:
            if size is not None and (im.size[1], im.size[0]) != tuple(size):  # before decoding: no huge allocations
                raise DataError(f"{path}: image is {im.size[0]}x{im.size[1]} pixels; expected {size[1]}x{size[0]}")
            if mode == "L" and im.mode not in ("L", "P"):
                raise DataError(f"{path}: expected an 8-bit single-channel label image, got mode {im.mode}")
            im.load()
            if mode == "RGB" and im.mode != "RGB":
                im = im.convert("RGB")
            arr = np.asarray(im, dtype=np.uint8)
    except DataError:
        raise
    except Exception as e:  # PIL raises many types on damaged files (OSError, SyntaxError, struct.error, ...)
        raise DataError(f"{path}: cannot decode as an image ({type(e).__name__}: {e}); expected a complete "
                        f"{want} image file") from None
    if arr.shape[:2] != (im.size[1], im.size[0]) or arr.ndim != (2 if mode == "L" else 3):
        raise DataError(f"{path}: decoded to shape {arr.shape}; expected a {want} image")
    return arr


def decode_images(paths: Sequence[str], size: Optional[Tuple[int, int]] = None, mode: str = "RGB",
                  threads: Optional[int] = None, desc: str = "decoding") -> np.ndarray:
    """Decode image files into one uint8 array with a thread pool (PIL releases
    the GIL while decoding). Every image must have ``size`` (H, W) if given,
    else the size of the first one.

    >>> decode_images([]).shape
    (0,)
    """
    if not paths:
        return np.zeros((0,), np.uint8)
    if size is None:
        size = _decode_one(paths[0], None, mode).shape[:2]
    chans = () if mode == "L" else (3,)
    out = np.empty((len(paths),) + tuple(size) + chans, np.uint8)
    threads = threads or min(16, 2 * (os.cpu_count() or 1))
    chunk = max(64, len(paths) // (threads * 8) + 1)

    def work(lo: int) -> int:
        for i in range(lo, min(lo + chunk, len(paths))):
            out[i] = _decode_one(paths[i], size, mode)
        return min(chunk, len(paths) - lo)

    starts = list(range(0, len(paths), chunk))
    bar = _bar(len(paths), desc) if len(paths) > 5000 else None
    with ThreadPoolExecutor(threads) as ex:
        for n in ex.map(work, starts):
            if bar is not None:
                bar.update(n)
    if bar is not None:
        bar.close()
    return out


def _bar(total: int, desc: str):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="img", leave=False, dynamic_ncols=True)


# ----------------------------------------------------------------------------- subsets

def stratified_subset(labels: np.ndarray, per_class: int) -> np.ndarray:
    """Indices of the first ``per_class`` samples of every class, in original order.

    >>> stratified_subset(np.array([0, 1, 0, 1, 0, 2]), 2).tolist()
    [0, 1, 2, 3, 5]
    """
    labels = np.asarray(labels)
    keep = np.zeros(len(labels), bool)
    for c in np.unique(labels):
        keep[np.flatnonzero(labels == c)[:per_class]] = True
    return np.flatnonzero(keep)


# ----------------------------------------------------------------------------- CIFAR: pickle layout

def _latin1_encode(text, encoding="latin1"):
    """``_codecs.encode`` as Python 3 writes bytes in protocol-2 pickles; latin-1 only."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise pickle.UnpicklingError(f"_codecs.encode is allowed only as latin1(str), got {encoding!r}")
    return text.encode("latin1")


@functools.lru_cache(maxsize=1)
def _pickle_globals() -> Dict[Tuple[str, str], object]:
    """The only globals a CIFAR batch may name: numpy array, dtype and scalar
    reconstruction (under numpy 1 and numpy 2 module names)."""
    try:
        from numpy._core import multiarray, numeric
    except ImportError:  # numpy < 1.26
        from numpy.core import multiarray, numeric
    allowed: Dict[Tuple[str, str], object] = {("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype,
                                              ("_codecs", "encode"): _latin1_encode}
    for core in ("numpy.core", "numpy._core"):
        allowed[(core + ".multiarray", "_reconstruct")] = multiarray._reconstruct
        allowed[(core + ".multiarray", "scalar")] = multiarray.scalar
        if hasattr(numeric, "_frombuffer"):  # protocol-5 pickles of arrays
            allowed[(core + ".numeric", "_frombuffer")] = numeric._frombuffer
    return allowed


class _Refused(pickle.UnpicklingError):
    pass


class _CifarUnpickler(pickle.Unpickler):
    """An unpickler that builds only dicts, lists, tuples, strings, bytes, numbers
    and numpy arrays: any other global (``os.system``, ``builtins.eval``, ...) is refused."""

    def find_class(self, module: str, name: str):
        obj = _pickle_globals().get((module, name))
        if obj is None:
            raise _Refused(f"refused global {module}.{name}")
        return obj

    def persistent_load(self, pid):
        raise _Refused("refused a persistent id")


def load_cifar_pickle(path: str) -> object:
    """Unpickle a CIFAR python batch without running code from it.

    Only what the official batches contain is built (dicts, lists, strings,
    bytes, numbers and numpy arrays); a file naming any other global, and every
    truncated or corrupt file, is a :class:`DataError` naming ``path``.

    >>> import tempfile, pickle, os
    >>> p = os.path.join(tempfile.mkdtemp(), "batch")
    >>> with open(p, "wb") as f: pickle.dump({b"labels": [1, 2]}, f)
    >>> load_cifar_pickle(p)
    {b'labels': [1, 2]}
    """
    if not os.path.isfile(path):
        raise DataError(f"missing CIFAR batch file {path}")
    try:
        with open(path, "rb") as f:
            return _CifarUnpickler(f, encoding="bytes").load()
    except _Refused as e:
        raise DataError(f"{path}: {e}; a CIFAR batch holds only dicts, lists, strings, bytes, ints and numpy "
                        f"arrays, so this file is not one (nothing in it was run)") from None
    except Exception as e:  # every way a damaged pickle fails: UnpicklingError, EOFError, OverflowError, ...
        raise DataError(f"{path}: truncated or corrupt CIFAR pickle batch ({type(e).__name__}: {e})") from None


def _unpickle(path: str, keys: Sequence[bytes]) -> dict:
    d = load_cifar_pickle(path)
    want = [k.decode() for k in keys]
    if not isinstance(d, dict):
        raise DataError(f"{path}: expected a dict in the CIFAR pickle batch, got {type(d).__name__}")
    d = {(k.encode() if isinstance(k, str) else k): v for k, v in d.items()}
    missing = [k.decode() for k in keys if k not in d]
    if missing:
        raise DataError(f"{path}: CIFAR pickle batch lacks keys {missing}; expected {want}")
    return d


def _batch_labels(path: str, value: object, key: bytes, n: int, num_classes: int) -> np.ndarray:
    """A batch's labels as int64: a list of ``n`` ints (or a 1-D integer array), each in 0..num_classes-1."""
    if isinstance(value, np.ndarray) and value.ndim == 1 and value.dtype.kind in "iu":
        labels = value.astype(np.int64)
    elif isinstance(value, list) and all(type(v) is int for v in value):
        labels = np.array(value, dtype=np.int64) if all(-2 ** 63 <= v < 2 ** 63 for v in value) else None
    else:
        labels = None
    if labels is None:
        raise DataError(f"{path}: {key.decode()} is not a list of integer labels")
    if len(labels) != n:
        raise DataError(f"{path}: {n} images but {len(labels)} {key.decode()}")
    if n and (labels.min() < 0 or labels.max() >= num_classes):
        raise DataError(f"{path}: {key.decode()} range over [{labels.min()}, {labels.max()}]; "
                        f"expected 0..{num_classes - 1}")
    return labels


def _cifar_pickle_arrays(folder: str, files: Sequence[str], label_key: bytes,
                         num_classes: int) -> Dict[str, np.ndarray]:
    xs, ys = [], []
    for name in files:
        path = os.path.join(folder, name)
        d = _unpickle(path, [b"data", label_key])
        data = d[b"data"]
        if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
            what = (f"has shape {data.shape} and dtype {data.dtype}" if isinstance(data, np.ndarray)
                    else f"is a {type(data).__name__}")
            raise DataError(f"{path}: data {what}; expected (N, 3072) uint8 rows (3x32x32, channel-major)")
        if len(data) > 1 and not data.flags.c_contiguous:
            raise DataError(f"{path}: data is stored in Fortran order; CIFAR batches are C-ordered rows")
        ys.append(_batch_labels(path, d[label_key], label_key, len(data), num_classes))
        xs.append(data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
    return {"images": np.ascontiguousarray(np.concatenate(xs)), "labels": np.concatenate(ys)}


def _cifar_meta(path: str, key: bytes, n: int) -> List[str]:
    if not os.path.isfile(path):
        return list(CIFAR10_CLASSES if n == 10 else CIFAR100_CLASSES)
    names = _unpickle(path, [key])[key]
    if not isinstance(names, list) or not all(isinstance(c, (bytes, str)) for c in names):
        raise DataError(f"{path}: {key.decode()} is not a list of class names")
    try:
        names = [c.decode() if isinstance(c, bytes) else c for c in names]
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: a class name is not UTF-8 ({e})") from None
    if len(names) != n or len(set(names)) != n:
        raise DataError(f"{path}: {key.decode()} lists {len(names)} names ({len(set(names))} distinct); "
                        f"expected {n} distinct class names")
    if n == 10 and names != CIFAR10_CLASSES:
        raise DataError(f"{path}: {key.decode()} are not CIFAR-10's classes in label order: "
                        f"{class_mismatch(names, CIFAR10_CLASSES)}")
    return names


# ----------------------------------------------------------------------------- image-folder layout

def _names(items: Sequence[str], limit: int = 8) -> str:
    items = list(items)
    more = f" and {len(items) - limit} more" if len(items) > limit else ""
    return ", ".join(items[:limit]) + more


def class_mismatch(found: Sequence[str], expected: Sequence[str]) -> str:
    """How a class list differs from the expected one ("" if equal): missing,
    extra, or the same names in another order.

    >>> class_mismatch(["cat", "dog", "emu"], ["cat", "dog", "fox"])
    'missing classes: fox; extra classes: emu'
    """
    found, expected = list(found), list(expected)
    if found == expected:
        return ""
    have, want = set(found), set(expected)
    missing = [c for c in expected if c not in have]
    extra = [c for c in found if c not in want]
    parts = ([f"missing classes: {_names(missing)}"] if missing else []) + \
            ([f"extra classes: {_names(extra)}"] if extra else [])
    return "; ".join(parts) or f"the same classes in another order ({_names(found)} vs {_names(expected)})"


def check_classes(data: "ArrayData", expected: Optional[Sequence[str]], against: str) -> None:
    """Raise a DataError if ``data``'s classes are not ``expected`` (names and
    label order), e.g. a split evaluated with a checkpoint trained on other classes.

    >>> d = ArrayData("x", "test", np.zeros((0, 1, 1, 3), np.uint8), np.zeros(0, np.int64), ["a", "b"])
    >>> check_classes(d, ["a", "b", "c"], "the checkpoint")
    Traceback (most recent call last):
    ...
    operad.experiments.data.DataError: x/test (from ) does not have the classes of the checkpoint: missing classes: c
    """
    if not expected:
        return
    diff = class_mismatch(data.classes, expected)
    if diff:
        raise DataError(f"{data.name}/{data.split} (from {data.source}) does not have the classes of {against}: {diff}")


def _folder_listing(split_dir: str, per_class: Optional[int],
                    expected: Sequence[str], label: str) -> Tuple[List[str], np.ndarray]:
    """Image paths and labels of ``split_dir/<class>/*``, with one folder for each
    of the ``expected`` classes (checked before any image is read)."""
    if not os.path.isdir(split_dir):
        raise DataError(f"missing folder {split_dir}; expected <split>/<class>/<image files>")
    classes = sorted(e.name for e in os.scandir(split_dir) if e.is_dir())
    if not classes:
        raise DataError(f"{split_dir} has no class folders; expected {split_dir}/<class>/<image files>")
    diff = class_mismatch(sorted(classes), sorted(expected))
    if diff:
        raise DataError(f"{split_dir}: the class folders are not {label}'s {len(expected)} classes: {diff}. "
                        f"Every split needs one folder per class, named as in {label}'s class list")
    paths, labels = [], []
    for i, c in enumerate(expected):
        names = sorted(n for n in os.listdir(os.path.join(split_dir, c)) if n.lower().endswith(IMAGE_EXTS))
        if not names:
            raise DataError(f"{os.path.join(split_dir, c)} holds no image files ({', '.join(IMAGE_EXTS)})")
        if per_class:
            names = names[:per_class]
        paths += [os.path.join(split_dir, c, n) for n in names]
        labels += [i] * len(names)
    return paths, np.asarray(labels, np.int64)


def _load_folder(name: str, split: str, split_dir: str, per_class: Optional[int], use_cache: bool,
                 classes: List[str], size: Tuple[int, int]) -> Tuple[Dict[str, np.ndarray], List[str]]:
    label = {"cifar10": "CIFAR-10", "cifar100": "CIFAR-100"}.get(name, name)
    paths, labels = _folder_listing(split_dir, per_class, classes, label)
    key = f"{name}-folder-{split}" + (f"-sub{per_class}" if per_class else "")
    arrays = _cached(key, paths, lambda: {"images": decode_images(paths, size, desc=f"{name}/{split}"),
                                          "labels": labels}, use_cache, extra=split_dir)
    return arrays, list(classes)


# ----------------------------------------------------------------------------- data sets

def _find(root: str, candidates: Sequence[str]) -> Optional[str]:
    for c in candidates:
        p = os.path.join(root, c) if c else root
        if os.path.isdir(p):
            return p
    return None


def _load_cifar(which: int, split: str, root: str, subset: Optional[int], use_cache: bool) -> ArrayData:
    if split not in ("train", "test", "val"):
        raise DataError(f"CIFAR-{which} has splits 'train' and 'test' (or 'val' for test); got {split!r}")
    split = "test" if split == "val" else split
    name = f"cifar{which}"
    pickle_dir = "cifar-10-batches-py" if which == 10 else "cifar-100-python"
    pdir = _find(root, [pickle_dir, os.path.join(name, pickle_dir)])
    if pdir is None and os.path.basename(root.rstrip("/")) == pickle_dir:
        pdir = root
    mean, std = MEAN_STD[name]
    if pdir is not None:
        if which == 10:
            files = [f"data_batch_{i}" for i in range(1, 6)] if split == "train" else ["test_batch"]
            label_key, meta, meta_key = b"labels", "batches.meta", b"label_names"
        else:
            files, label_key, meta, meta_key = [split], b"fine_labels", "meta", b"fine_label_names"
        srcs = [os.path.join(pdir, f) for f in files]
        for s in srcs:
            if not os.path.isfile(s):
                raise DataError(f"missing CIFAR batch file {s}; expected the standard {pickle_dir} layout "
                                f"({', '.join(files)})")
        arrays = _cached(f"{name}-pickle-{split}", srcs,
                         lambda: _cifar_pickle_arrays(pdir, files, label_key, which), use_cache, extra=pdir)
        classes = _cifar_meta(os.path.join(pdir, meta), meta_key, which)
        images, labels, source = arrays["images"], arrays["labels"], pdir
        if subset:
            idx = stratified_subset(labels, subset)
            images, labels = images[idx], labels[idx]
    else:
        fdir = _find(root, [name, os.path.join(name, "images"), ""])
        if fdir is None or not os.path.isdir(os.path.join(fdir, split)):
            raise DataNotFound(
                f"CIFAR-{which} not found under {root}: expected {os.path.join(root, pickle_dir)}/ (pickle batches) "
                f"or {os.path.join(root, name, split)}/<class>/*.jpg (image folders). Set --data or $OPERAD_DATA, "
                f"or pass download=True (operad ... --download) to fetch the official archive.")
        arrays, classes = _load_folder(name, split, os.path.join(fdir, split), subset, use_cache,
                                       list(CIFAR10_CLASSES if which == 10 else CIFAR100_CLASSES), (32, 32))
        images, labels, source = arrays["images"], arrays["labels"], os.path.join(fdir, split)
    n = len(classes)
    if labels.size and (labels.min() < 0 or labels.max() >= n):
        raise DataError(f"{source}: labels range over [{labels.min()}, {labels.max()}]; expected 0..{n - 1}")
    return ArrayData(name, split, images, labels.astype(np.int64), classes, "classification", None, mean, std, source)


def _camvid_pairs(folder: str, split: str) -> List[Tuple[str, str]]:
    lst = os.path.join(folder, f"{split}.txt")
    if not os.path.isfile(lst):
        raise DataError(f"missing CamVid list file {lst}; expected lines 'image annotation' (SegNet layout)")
    pairs = []
    with open(lst, "rb") as f:
        raw = f.read()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise DataError(f"{lst}: not a UTF-8 text file ({e}); expected lines 'image annotation'") from None
    if "\0" in text:
        raise DataError(f"{lst}: holds a NUL byte; expected lines 'image annotation'")
    for n, line in enumerate(text.split("\n"), 1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 2:
            raise DataError(f"{lst}:{n}: expected 'image annotation', got {line.strip()!r}")
        fixed = []
        for p in parts:
            q = os.path.join(folder, p.lstrip("/"))
            if not os.path.exists(q):  # SegNet's lists carry /SegNet/CamVid/<dir>/<file>
                q = os.path.join(folder, *p.replace("\\", "/").split("/")[-2:])
            if not os.path.isfile(q):
                raise DataError(f"{lst}:{n}: missing file {q} (listed as {p!r})")
            fixed.append(q)
        pairs.append((fixed[0], fixed[1]))
    if not pairs:
        raise DataError(f"{lst} lists no images")
    return pairs


def _load_camvid(split: str, root: str, subset: Optional[int], use_cache: bool) -> ArrayData:
    folder = _find(root, ["camvid", "CamVid", ""])
    if folder is None or not os.path.isfile(os.path.join(folder, f"{split}.txt")):
        folder = os.path.join(root, "camvid")
    pairs = _camvid_pairs(folder, split)
    if subset:
        pairs = pairs[:subset]
    imgs, anns = [p[0] for p in pairs], [p[1] for p in pairs]

    def build():
        x = decode_images(imgs, None, "RGB", desc=f"camvid/{split}")
        y = decode_images(anns, x.shape[1:3], "L", desc=f"camvid/{split} labels")
        bad = np.flatnonzero((y > CAMVID_VOID).reshape(len(y), -1).any(1))
        if bad.size:
            raise DataError(f"{anns[bad[0]]}: label values up to {int(y[bad[0]].max())}; "
                            f"expected class indices 0..10 and 11 for void")
        return {"images": x, "labels": y}

    arrays = _cached(f"camvid-{split}" + (f"-sub{subset}" if subset else ""), imgs + anns, build, use_cache,
                     extra=folder)
    mean, std = MEAN_STD["camvid"]
    return ArrayData("camvid", split, arrays["images"], arrays["labels"], list(CAMVID_CLASSES), "segmentation",
                     CAMVID_VOID, mean, std, folder)


DATASETS = ("cifar10", "cifar100", "camvid", "voc", "coco")  # voc, coco: detection layouts (experiments/detection)


def load_dataset(name: str, split: str = "train", root: Optional[str] = None, subset: Optional[int] = None,
                 download: bool = False, use_cache: bool = True) -> ArrayData:
    """Load a split as uint8 arrays.

    ``subset``: for classification, the first ``subset`` images of each class;
    for CamVid, the first ``subset`` listed frames. ``download``: fetch the
    official CIFAR archive (md5-verified) into the root if it is not there.

    >>> d = load_dataset("cifar10", "test", root="/work/shared/data", subset=2)  # doctest: +SKIP
    >>> len(d), d.classes[0]                                                     # doctest: +SKIP
    (20, 'airplane')
    """
    root = data_root(root)
    key = name.lower().replace("-", "")
    if key not in DATASETS:
        import difflib

        close = difflib.get_close_matches(key, DATASETS, n=1)
        raise DataError(f"unknown data set {name!r}" + (f"; did you mean {close[0]!r}?" if close else "")
                        + f" (known: {', '.join(DATASETS)})")
    if key in ("voc", "coco"):
        raise DataError(f"{name!r} is a detection layout: set task = \"detection\" (loaded by operad.experiments.detection)")
    if key == "camvid":
        return _load_camvid(split, root, subset, use_cache)
    which = 10 if key == "cifar10" else 100
    if download:
        try:
            return _load_cifar(which, split, root, subset, use_cache)
        except DataNotFound:  # only a missing data set: a damaged copy stays an error (and is not overwritten)
            download_cifar(key, root)
    return _load_cifar(which, split, root, subset, use_cache)


# ----------------------------------------------------------------------------- download

def _md5(path: str) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


class OfflineError(DataError):
    """The download could not reach its server (no network, DNS failure, refused, timed out)."""


def _bytes_bar(total: int, desc: str):
    from tqdm.auto import tqdm

    return tqdm(total=total or None, desc=desc, unit="B", unit_scale=True, unit_divisor=1024, dynamic_ncols=True,
                leave=False, miniters=1)


def _fetch(url: str, tmp_fd: int, filename: str, progress: Optional[bool], opener: Callable) -> None:
    """Stream ``url`` into the open temporary file, with a byte progress bar (rate, ETA)
    when ``progress`` (None: when the size is unknown or over 1 MiB)."""
    got = 0
    with os.fdopen(tmp_fd, "wb") as out, opener(url, timeout=60) as resp:
        total = int(resp.headers.get("Content-Length") or 0)
        show = progress if progress is not None else (total == 0 or total > (1 << 20))
        bar = _bytes_bar(total, f"download {filename}") if show else None
        try:
            while True:
                try:
                    block = resp.read(1 << 20)
                except OSError as e:  # reached, then lost: not "offline"
                    raise DataError(f"the download of {url} broke off after {got} of {total or '?'} bytes "
                                    f"({type(e).__name__}: {e}); run the command again to restart it") from None
                if not block:
                    break
                out.write(block)
                got += len(block)
                if bar is not None:
                    bar.update(len(block))
        finally:
            if bar is not None:
                bar.close()
    if total and got != total:
        raise DataError(f"the download of {url} ended after {got} of {total} bytes; run the command again")


def _download_error(url: str, e: OSError) -> DataError:
    """An HTTP answer is the server's; anything else means the server was not reached."""
    if isinstance(e, urllib.error.HTTPError):
        return DataError(f"cannot download {url}: the server answered HTTP {e.code} {e.reason}")
    reason = getattr(e, "reason", e)
    if url.startswith("file:"):
        return DataError(f"cannot download {url}: {reason}")
    host = urllib.parse.urlparse(url).netloc
    return OfflineError(f"cannot download {url}: {host} is not reachable ({reason})")


def _safe_extract(archive: str, dest_dir: str) -> None:
    """Unpack a tar archive into ``dest_dir``: members must be plain files or folders
    inside it; everything is unpacked into a temporary folder first and each
    top-level entry renamed into place, never over an existing one."""
    base = os.path.realpath(dest_dir)
    stage = tempfile.mkdtemp(dir=dest_dir, prefix=".tmp-extract-")
    try:
        with tarfile.open(archive) as tar:
            members = tar.getmembers()
            for m in members:
                target = os.path.realpath(os.path.join(dest_dir, m.name))
                if not (target == base or target.startswith(base + os.sep)) or not (m.isfile() or m.isdir()):
                    raise DataError(f"{archive}: archive member {m.name!r} would escape {dest_dir} or is not a "
                                    f"plain file or folder")
            tar.extractall(stage, members=members)
        for entry in sorted(os.listdir(stage)):
            target = os.path.join(dest_dir, entry)
            if os.path.lexists(target):
                raise DataError(f"{target} already exists but is not a complete copy; operad does not overwrite "
                                f"it: repair or move it, or point --data at another folder")
            os.replace(os.path.join(stage, entry), target)
    except tarfile.TarError as e:
        raise DataError(f"{archive}: corrupt or truncated tar archive ({e})") from None
    finally:
        import shutil

        shutil.rmtree(stage, ignore_errors=True)  # operad's own staging folder


def download(url: str, dest_dir: str, md5: str, filename: Optional[str] = None, extract: bool = True,
             progress: Optional[bool] = None, opener: Optional[Callable] = None) -> str:
    """Fetch ``url`` into ``dest_dir``, verify its md5, and unpack a tar archive
    (see :func:`_safe_extract`). Returns the archive path. Any URL urllib opens
    works, ``file://`` included; ``opener`` replaces ``urllib.request.urlopen``.

    The bytes go to a temporary file in ``dest_dir`` that is renamed to the
    archive's name only once its md5 matches; a failed or mismatched download
    removes that temporary file (operad's own) and nothing else. A server that
    cannot be reached is an :class:`OfflineError`.

    >>> download("file:///nonexistent.tar.gz", "/tmp", "0" * 32)  # doctest: +SKIP
    Traceback (most recent call last):
    DataError: cannot download file:///nonexistent.tar.gz: ...
    """
    os.makedirs(dest_dir, exist_ok=True)
    filename = filename or os.path.basename(urllib.parse.urlparse(url).path) or "download"
    path = os.path.join(dest_dir, filename)
    if not (os.path.isfile(path) and _md5(path) == md5):
        fd, tmp = tempfile.mkstemp(dir=dest_dir, prefix=".tmp-")
        try:
            try:
                _fetch(url, fd, filename, progress, opener or urllib.request.urlopen)
            except OSError as e:  # URLError, HTTPError, timeouts, connection resets
                raise _download_error(url, e) from None
            got = _md5(tmp)
            if got != md5:
                raise DataError(f"checksum mismatch for {url}: md5 {got}, expected {md5}; the file was discarded")
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    if extract:
        _safe_extract(path, dest_dir)
    return path


def download_cifar(name: str, root: Optional[str] = None, url: Optional[str] = None,
                   md5: Optional[str] = None, progress: Optional[bool] = None,
                   opener: Optional[Callable] = None) -> str:
    """Download and unpack the official CIFAR-10/100 python archive into the data root.

    Without network: an :class:`OfflineError` in one line that says how to point
    operad at a copy instead."""
    default_url, default_md5, folder = ARCHIVES[name]
    root = data_root(root)
    url = url or default_url
    label = {"cifar10": "CIFAR-10", "cifar100": "CIFAR-100"}[name]
    print(f"{label} not found under {root}: downloading the official archive {url}", flush=True)
    try:
        download(url, root, md5 or default_md5, filename=os.path.basename(default_url), progress=progress,
                 opener=opener)
    except OfflineError as e:
        raise OfflineError(f"no network: {e}. Point operad at a copy instead: --data PATH or OPERAD_DATA=PATH, a "
                           f"folder holding {folder}/ or {os.path.basename(default_url)}") from None
    return os.path.join(root, folder)
