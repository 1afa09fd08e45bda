"""torch-fidelity with operad: a trained network registered as torch-fidelity's
feature extractor (KID in the network's own feature space, nothing downloaded),
and FID/KID in Inception space from an Inception weight file the user supplies.

torch-fidelity is optional (``pip install torch-fidelity``; it imports
torchvision). operad computes KID itself (:mod:`operad.experiments.kid`);
:func:`torch_fidelity_kid` runs torch-fidelity's own code on the same network
so the two can be compared (:func:`crosscheck`, used by the tests and the GPU
suite). Without torch-fidelity, asking for Inception-space metrics is an error
that says what is missing.

Weight files are read as data only: ``.safetensors``, or ``torch.load(...,
weights_only=True)``. torch-fidelity itself reads its weight path with
``weights_only=False``, so it is only handed a file operad wrote from the
validated tensors.

    >>> from operad.experiments.fidelity import fidelity_available
    >>> isinstance(fidelity_available(), bool)
    True
"""
from __future__ import annotations

import os
import tempfile
import uuid
from typing import Any, Dict, Mapping, Optional, Sequence

import numpy as np
import torch
from torch import nn

from operad.experiments.kid import FeatureTap, KidSettings, kid
from operad.operators.algebra.errors import OperadError

__all__ = ["fidelity_available", "require_torch_fidelity", "torch_fidelity_kid", "InceptionMetrics", "crosscheck",
           "load_inception_weights"]

FEATURE = "penultimate"  # the one feature the operad extractor provides
KID_MEAN, KID_STD = "kernel_inception_distance_mean", "kernel_inception_distance_std"
FID = "frechet_inception_distance"


def _import_error() -> Optional[BaseException]:
    try:
        import torch_fidelity  # noqa: F401
    except Exception as e:  # noqa: BLE001 - ImportError, or torchvision failing inside it
        return e
    return None


def fidelity_available() -> bool:
    """Whether ``import torch_fidelity`` works here."""
    return _import_error() is None


def require_torch_fidelity(what: str):
    """The ``torch_fidelity`` module, or an :class:`OperadError` saying ``what`` needs it and why it is missing."""
    err = _import_error()
    if err is not None:
        raise OperadError(f"{what} needs torch-fidelity, which does not import here ({type(err).__name__}: {err}). "
                          f"Install it with `pip install torch-fidelity torchvision` (torchvision must match your "
                          f"torch); KID in the network's own feature space needs neither")
    import torch_fidelity

    return torch_fidelity


class _Uint8Images(torch.utils.data.Dataset):
    """uint8 (N, H, W, 3) images as the (3, H, W) uint8 tensors torch-fidelity reads."""

    def __init__(self, images: np.ndarray):
        self.images = images

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(self.images[i])).permute(2, 0, 1)


def _operad_extractor_class(tf, model: nn.Module, mean: Sequence[float], std: Sequence[float]):
    """A torch-fidelity FeatureExtractorBase running ``model`` on uint8 images
    normalised with ``mean``/``std``; its one feature is the classifier's input."""
    m = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1) * 255
    s = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1) * 255

    class OperadPenultimate(tf.FeatureExtractorBase):
        def __init__(self, name, features_list, **kwargs):
            super().__init__(name, features_list)
            self.net = model
            self.register_buffer("mean", m.clone())
            self.register_buffer("std", s.clone())

        @staticmethod
        def get_provided_features_list():
            return (FEATURE,)

        @staticmethod
        def get_default_feature_layer_for_metric(metric):
            return FEATURE

        @staticmethod
        def can_be_compiled():
            return False

        @staticmethod
        def get_dummy_input_for_compile():
            return None

        def forward(self, x):
            x = (x.to(self.mean.device).float() - self.mean) / self.std
            with FeatureTap(self.net) as tap:
                self.net(x)
                return (tap.take(),)

    return OperadPenultimate


def torch_fidelity_kid(model: nn.Module, images1: np.ndarray, images2: np.ndarray, mean: Sequence[float],
                       std: Sequence[float], settings: KidSettings = KidSettings(),
                       batch_size: int = 256) -> Dict[str, float]:
    """KID between two uint8 image sets computed by torch-fidelity, with ``model``
    registered as its feature extractor (the input of the classifier layer).
    ``subset_size`` is clipped to the smaller set, as :func:`~operad.experiments.kid.kid` does."""
    tf = require_torch_fidelity("KID through torch-fidelity")
    from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY

    name = f"operad-{uuid.uuid4().hex[:12]}"
    tf.register_feature_extractor(name, _operad_extractor_class(tf, model, mean, std))
    cuda = next(model.parameters()).is_cuda
    try:
        r = tf.calculate_metrics(input1=_Uint8Images(images1), input2=_Uint8Images(images2), kid=True,
                                 feature_extractor=name, feature_layer_kid=FEATURE, kid_subsets=settings.subsets,
                                 kid_subset_size=min(settings.subset_size, len(images1), len(images2)),
                                 rng_seed=settings.seed, cuda=cuda, cache=False, verbose=False, save_cpu_ram=True,
                                 batch_size=batch_size)
    finally:
        FEATURE_EXTRACTORS_REGISTRY.pop(name, None)
    return {"mean": float(r[KID_MEAN]), "std": float(r[KID_STD])}


def load_inception_weights(path: str) -> Dict[str, torch.Tensor]:
    """A state dict of tensors from ``path`` (``.safetensors``, or a torch file read with
    ``weights_only=True``); anything else is an :class:`OperadError` naming the file."""
    if not os.path.isfile(path):
        raise OperadError(f"Inception weight file {path} does not exist")
    try:
        if path.endswith(".safetensors"):
            from safetensors.torch import load_file

            sd = load_file(path)
        else:
            sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - unreadable, or a pickle that is not plain tensors
        raise OperadError(f"{path}: cannot read as Inception weights ({type(e).__name__}: {str(e)[:200]}); "
                          f"expected a state dict saved with torch.save or safetensors") from None
    if isinstance(sd, Mapping) and "state_dict" in sd and isinstance(sd["state_dict"], Mapping):
        sd = sd["state_dict"]
    if not isinstance(sd, Mapping) or not sd or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise OperadError(f"{path}: expected a state dict (names to tensors) of torch-fidelity's InceptionV3 "
                          f"(pt_inception-2015-12-05), got {type(sd).__name__}")
    return dict(sd)


class InceptionMetrics:
    """FID and KID in Inception space (torch-fidelity's ``inception-v3-compat``,
    2048-d pool features) from a weight file the user supplies; nothing is downloaded.

    >>> InceptionMetrics("/missing.pth")  # doctest: +SKIP
    Traceback (most recent call last):
    OperadError: FID/KID in Inception space needs torch-fidelity, which does not import here ...
    """

    def __init__(self, weights_path: str, settings: KidSettings = KidSettings(), device: str = "cpu",
                 batch_size: int = 64):
        self.tf = require_torch_fidelity("FID/KID in Inception space (--inception-weights)")
        sd = load_inception_weights(weights_path)
        self._dir = tempfile.mkdtemp(prefix="operad-inception-")
        self.path = os.path.join(self._dir, "inception.pth")  # plain tensors operad wrote, for torch-fidelity
        torch.save(sd, self.path)
        self.settings, self.cuda, self.batch_size = settings, torch.device(device).type == "cuda", batch_size

    def measure(self, clean: np.ndarray, corrupted: np.ndarray) -> Dict[str, float]:
        """``{"fid", "kid_mean", "kid_std"}`` between two uint8 (N, H, W, 3) image sets."""
        r = self.tf.calculate_metrics(
            input1=_Uint8Images(clean), input2=_Uint8Images(corrupted), fid=True, kid=True,
            feature_extractor="inception-v3-compat", feature_extractor_weights_path=self.path,
            kid_subsets=self.settings.subsets, kid_subset_size=min(self.settings.subset_size, len(clean),
                                                                    len(corrupted)),
            rng_seed=self.settings.seed, cuda=self.cuda, cache=False, verbose=False, save_cpu_ram=True,
            batch_size=self.batch_size)
        return {"fid": float(r[FID]), "kid_mean": float(r[KID_MEAN]), "kid_std": float(r[KID_STD])}

    def close(self) -> None:
        """Remove the weight copy operad wrote (only that file and its folder)."""
        if os.path.isfile(self.path):
            os.unlink(self.path)
        if os.path.isdir(self._dir) and not os.listdir(self._dir):
            os.rmdir(self._dir)

    def __enter__(self) -> "InceptionMetrics":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def crosscheck(model: Optional[nn.Module] = None, n: int = 120, device: str = "cpu",
               settings: KidSettings = KidSettings(subsets=20, subset_size=50)) -> Dict[str, Any]:
    """KID between a small image set and its JPEG-recoded copy, by operad and by
    torch-fidelity with the same network and subsets: ``{"operad", "torch_fidelity",
    "rel_diff"}``. Raises :class:`OperadError` when torch-fidelity does not import."""
    from operad.experiments.augment import DeviceBatches
    from operad.experiments.data import ArrayData
    from operad.experiments.evaluate import jpeg_recode
    from operad.experiments.kid import penultimate_features

    require_torch_fidelity("the torch-fidelity cross-check")
    if model is None:
        from operad.models import create_model

        torch.manual_seed(0)
        model = create_model("resnet20")
    model = model.to(device).eval()
    rng = np.random.default_rng(0)
    base = rng.integers(0, 256, (n, 4, 4, 3), dtype=np.uint8).repeat(8, 1).repeat(8, 2)  # blocky: JPEG moves it
    corrupted = jpeg_recode(base, 20)
    mean, std = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)
    feats = [penultimate_features(model, DeviceBatches(ArrayData("x", "test", im, np.zeros(n, np.int64), ["a"],
                                                                 mean=mean, std=std), 64, device))
             for im in (base, corrupted)]
    ours = kid(feats[0], feats[1], settings.subsets, settings.subset_size, settings.seed)
    theirs = torch_fidelity_kid(model, base, corrupted, mean, std, settings, batch_size=64)
    rel = abs(ours["mean"] - theirs["mean"]) / max(abs(theirs["mean"]), 1e-12)
    return {"operad": ours, "torch_fidelity": theirs, "rel_diff": rel}
