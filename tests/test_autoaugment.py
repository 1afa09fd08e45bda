"""The batched image operations of AutoAugment / RandAugment / TrivialAugment
against PIL on a few images, and the policies' determinism by (seed, step)."""
import os

import numpy as np
import pytest
import torch
from PIL import Image, ImageEnhance, ImageOps

from operad.experiments.augment import Augment, step_generator
from operad.experiments.autoaugment import Policy, apply_op, random_erasing

GREY = (128, 128, 128)


def _images(shared=None):
    """Three synthetic 32x32 RGB images (a low-contrast gradient, noise, a shape
    on a flat background) and, where the shared data is present, two CIFAR-10 ones."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:32, 0:32]
    grad = np.stack([60 + 2 * xx, 80 + yy, 100 + xx + yy // 2], -1).clip(0, 255)
    noise = rng.integers(0, 256, (32, 32, 3))
    shape = np.full((32, 32, 3), 40)
    shape[8:20, 10:26] = (200, 30, 120)
    imgs = [grad, noise, shape]
    root = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data", "cifar10", "test")
    for cls in ("bird", "ship"):
        p = os.path.join(os.environ.get("OPERAD_SHARED_DATA", os.path.dirname(os.path.dirname(root))),
                         "cifar10", "test", cls, "0001.jpg")
        if os.path.isfile(p):
            imgs.append(np.asarray(Image.open(p).convert("RGB")))
    return [np.ascontiguousarray(i, dtype=np.uint8) for i in imgs]


def _pil(name, img, v):
    im = Image.fromarray(img)
    affine = {"ShearX": (1, v, 0, 0, 1, 0), "ShearY": (1, 0, 0, v, 1, 0),
              "TranslateX": (1, 0, v, 0, 1, 0), "TranslateY": (1, 0, 0, 0, 1, v)}
    if name in affine:
        out = im.transform(im.size, Image.AFFINE, affine[name], resample=Image.NEAREST, fillcolor=GREY)
    elif name == "Rotate":
        out = im.rotate(v, resample=Image.NEAREST, fillcolor=GREY)
    elif name in ("Brightness", "Color", "Contrast", "Sharpness"):
        out = getattr(ImageEnhance, name)(im).enhance(1.0 + v)
    elif name == "Posterize":
        out = ImageOps.posterize(im, int(v))
    elif name == "Solarize":
        out = ImageOps.solarize(im, v)
    else:
        out = {"AutoContrast": ImageOps.autocontrast, "Equalize": ImageOps.equalize,
               "Invert": ImageOps.invert}[name](im)
    return np.asarray(out)


# (name, magnitudes, largest allowed |difference| in levels, largest fraction of pixels that may differ)
CASES = [
    ("ShearX", (0.3, -0.17), 0, 0.0), ("ShearY", (0.25, -0.3), 0, 0.0),
    ("TranslateX", (9.0, -4.3), 0, 0.0), ("TranslateY", (14.5, -7.0), 0, 0.0),
    # PIL steps its source coordinates by additions along a row: at 7 degrees 0.2% of the pixels
    # sit on a boundary that the accumulated and the direct sums round apart
    ("Rotate", (30.0, -13.3, 90.0, 7.0), 255, 0.005),
    ("Brightness", (0.9, -0.5, 0.33), 0, 0.0), ("Color", (0.9, -0.7), 0, 0.0),
    ("Contrast", (0.9, -0.6), 0, 0.0), ("Sharpness", (0.9, -0.9, 0.3), 0, 0.0),
    ("Posterize", (4, 6, 8), 0, 0.0), ("Solarize", (255, 128, 0), 0, 0.0),
    ("AutoContrast", (0,), 0, 0.0), ("Equalize", (0,), 0, 0.0), ("Invert", (0,), 0, 0.0),
]


@pytest.mark.parametrize("name,mags,tol,frac", CASES, ids=[c[0] for c in CASES])
def test_image_op_matches_pil(name, mags, tol, frac):
    imgs = _images()
    x = torch.from_numpy(np.stack(imgs)).permute(0, 3, 1, 2).contiguous()
    for v in mags:
        out = apply_op(x, name, torch.full((len(imgs),), float(v)))
        assert out.dtype == torch.uint8
        for i, img in enumerate(imgs):
            ref = _pil(name, img, v).astype(int)
            got = out[i].permute(1, 2, 0).numpy().astype(int)
            diff = np.abs(ref - got)
            assert (diff > tol).mean() <= frac, \
                f"{name}({v}) image {i}: {(diff > tol).mean():.4f} of pixels differ by more than {tol} (max {diff.max()})"
            if tol == 0 and frac == 0:
                assert np.array_equal(ref, got)


def test_float_batches_follow_the_uint8_path():
    x = torch.from_numpy(np.stack(_images())).permute(0, 3, 1, 2).contiguous()
    v = torch.full((x.shape[0],), 0.5)
    for name in ("Contrast", "Rotate", "Equalize", "Solarize"):
        u = apply_op(x, name, v if name != "Solarize" else v * 256).float()
        f = apply_op(x.float() / 255, name, v if name != "Solarize" else v * 256) * 255
        assert f.dtype == torch.float32 and (u - f).abs().max() <= 1.0 + 1e-4


@pytest.mark.parametrize("kind", ["cifar10", "rand", "trivial"])
def test_policies_are_deterministic_by_seed_and_step_and_sliceable(kind):
    x = torch.randint(0, 256, (16, 3, 16, 16), dtype=torch.uint8)
    pol = Policy(kind)
    a = pol(x, step_generator(3, 7))
    assert torch.equal(a, pol(x, step_generator(3, 7)))
    nhwc = x.permute(0, 2, 3, 1).contiguous().permute(0, 3, 1, 2)  # the layout DeviceBatches holds
    assert torch.equal(a, pol(nhwc, step_generator(3, 7)))
    assert not torch.equal(a, pol(x, step_generator(3, 8)))
    assert (a != x).any(dim=(1, 2, 3)).float().mean() > 0.3  # most images change
    # a data-parallel rank draws for the global batch and keeps its rows
    half = pol(x[8:], step_generator(3, 7), total=16, part=slice(8, 16))
    assert torch.equal(half, a[8:])


def test_random_erasing_rate_area_and_slicing():
    g = lambda: torch.Generator().manual_seed(5)
    x = torch.zeros(400, 3, 32, 32)
    y = random_erasing(x, g(), p=0.5)
    erased = (y != 0).any(1)
    hit = erased.any(dim=(1, 2))
    assert hit.float().mean().item() == pytest.approx(0.5, abs=0.1)
    frac = erased[hit].float().mean((1, 2))
    assert frac.min() >= 0.02 * 0.8 and frac.max() <= 0.4 * 1.2  # rounding of the sides
    rows, cols = erased[hit].any(2), erased[hit].any(1)
    assert torch.equal(erased[hit].sum((1, 2)), rows.sum(1) * cols.sum(1))  # one rectangle
    assert torch.equal(random_erasing(x[:100], g(), p=0.5, total=400, part=slice(0, 100)), y[:100])


def test_augment_hooks_policy_and_erasing():
    x = torch.randint(0, 256, (8, 3, 16, 16), dtype=torch.uint8)
    aug = Augment(policy=Policy("trivial"), erasing=1.0)
    assert aug.active
    pre = aug.before_normalize(x, step_generator(0, 1))
    assert pre.dtype == torch.uint8 and not torch.equal(pre, x)
    post = aug(torch.zeros(8, 3, 16, 16), step_generator(0, 1))
    assert (post != 0).any(dim=(1, 2, 3)).all()
    assert torch.equal(Augment().before_normalize(x, step_generator(0, 1)), x)
