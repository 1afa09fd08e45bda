"""Binary and quantized networks: BWN and XNOR-Net (Rastegari et al. 2016), BinaryNet and QNN (Hubara et al.).

Trained claims compare the float network with its rewrites
(``operad.rewrite.binarize`` / ``quantize``; first and last layer float, as in
the papers) on CIFAR-10 (``experiments/configs/binary_vs_float.toml`` for
ResNet-20, ``binary_nin.toml`` for XNOR-Net's CIFAR network, NIN). Measured
claims grade storage and bit operations, exact from ``operad.cost`` (its
``bytes`` and ``bops`` fields) or from the bytes ``torch.save`` writes for the
packed model (``operad.rewrite.pack``).
"""
from __future__ import annotations

import io
from typing import Callable, Tuple

from .base import Arm, Claim, cifar_profiles, register

XNOR = "Rastegari, Ordonez, Redmon, Farhadi. XNOR-Net: ImageNet Classification Using Binary Convolutional " \
       "Neural Networks. ECCV 2016"
BNN = "Hubara, Courbariaux, Soudry, El-Yaniv, Bengio. Binarized Neural Networks. NeurIPS 2016"
QNN = "Hubara, Courbariaux, Soudry, El-Yaniv, Bengio. Quantized Neural Networks: Training Neural Networks with " \
      "Low Precision Weights and Activations. JMLR 2018"

_BINARY_LAYERS = ("BinaryConv2d", "BinaryLinearModule", "QuantConv2d", "QuantLinearModule")


def _layer_costs(name: str) -> Tuple[float, float, float, float]:
    """Over the binarized / quantized layers of registered model ``name`` (at its input size):
    (bytes at float32, bytes as stored, BOPs at float32 x float32, BOPs as computed), exact from ``operad.cost``."""
    import torch

    import operad
    from operad.models import create_model, model_info

    m = create_model(name)
    size = model_info(name).input_size[1:]
    fb = sb = fo = so = 0.0
    n = 0
    shapes = {}  # each layer's input height and width, from one forward pass (the MACs and BOPs depend on them)
    hooks = [mod.register_forward_hook(lambda mod, inp, out, key=k: shapes.__setitem__(key, tuple(inp[0].shape[2:])))
             for k, mod in m.named_modules() if type(mod).__name__ in _BINARY_LAYERS]
    with torch.no_grad():
        m.eval()(torch.zeros(1, model_info(name).input_size[0], *size))
    for h in hooks:
        h.remove()
    for k, mod in m.named_modules():
        if type(mod).__name__ not in _BINARY_LAYERS:
            continue
        c = operad.cost(mod, size=shapes[k] or None)
        fb += 4 * float(c.params)
        sb += float(c.bytes)
        fo += 1024 * float(c.macs)
        so += float(c.bops)
        n += 1
    if n == 0:
        raise ValueError(f"{name} has no binarized or quantized layer")
    return fb, sb, fo, so


def layer_bytes_ratio(name: str) -> Callable[[int, str], float]:
    """``measure``: float32 bytes of ``name``'s binarized layers over the bytes they store (exact, operad.cost)."""

    def measure(seed: int, profile: str) -> float:
        fb, sb, _, _ = _layer_costs(name)
        return fb / sb

    measure.__name__ = f"layer_bytes_ratio({name})"
    return measure


def layer_bops_ratio(name: str) -> Callable[[int, str], float]:
    """``measure``: BOPs of ``name``'s binarized layers at float32 over their BOPs as binarized (exact)."""

    def measure(seed: int, profile: str) -> float:
        _, _, fo, so = _layer_costs(name)
        return fo / so

    measure.__name__ = f"layer_bops_ratio({name})"
    return measure


def model_ratio(float_name: str, binary_name: str, what: str) -> Callable[[int, str], float]:
    """``measure``: the float model's exact ``bytes``/``bops`` over the binarized model's (whole networks)."""

    def measure(seed: int, profile: str) -> float:
        import operad
        from operad import Field
        from operad.models import model_info, model_term

        def c(n):
            i = model_info(n).input_size
            return getattr(operad.cost(model_term(n), Field(i[0]), size=i[1:]), what)

        return float(c(float_name)) / float(c(binary_name))

    measure.__name__ = f"{what}({float_name})/{what}({binary_name})"
    return measure


def _saved_bytes(sd) -> int:
    import torch

    buf = io.BytesIO()
    torch.save(sd, buf)
    return buf.getbuffer().nbytes


def packed_file_ratio(name: str) -> Callable[[int, str], float]:
    """``measure``: bytes ``torch.save`` writes for the binarized layers of ``name`` in their trained form
    (float weights) over the same layers after ``operad.rewrite.pack`` (sign bits + alpha in one store),
    seeded weights; both sides are ``operad.rewrite.packable_state``."""

    def measure(seed: int, profile: str) -> float:
        import torch

        from operad import rewrite
        from operad.models import create_model

        torch.manual_seed(seed)
        m = create_model(name).eval()
        trained, packed = rewrite.packable_state(m), rewrite.packable_state(rewrite.pack(m))
        if not trained or not packed:
            raise ValueError(f"{name}: no binarized layer to pack")
        return _saved_bytes(trained) / _saved_bytes(packed)

    measure.__name__ = f"saved_bytes_ratio(pack({name}))"
    return measure


# -- trained claims: the binary_vs_float (ResNet-20) and binary_nin (NIN) configs -------------------------

def _profiles(cpu_subset: int, cpu_epochs: int):
    """AdamW lr 2e-3 as in the configs' [cpu] tables (cifar_profiles' SGD lr would not suit AdamW)."""
    p = cifar_profiles(cpu_subset, cpu_epochs, cpu_lr=2e-3)
    p["smoke"] = dict(p["smoke"], lr=2e-3)
    return p


_R20 = _profiles(200, 4)     # binary_vs_float.toml's [cpu] table
_NIN = _profiles(200, 3)     # 2,000 images (binary_nin.toml's [cpu] table has 1,000: NIN costs 5x ResNet-20)


def _r20(run: str) -> Arm:
    return Arm(run, config="binary_vs_float", run=run)


def _nin(run: str) -> Arm:
    return Arm(run, config="binary_nin", run=run)


_SHORT = "cpu profile: 4 epochs on 2,000 images, far from converged; it ranks the variants, it does not " \
         "reproduce the papers' figures"

register(
    Claim("bwn_vs_float_resnet20", XNOR, "XNOR/BWN", "Binary-Weight-Networks stay within a few points of full "
          "precision (BWN AlexNet 56.8% vs 56.6% ImageNet top-1): BWN ResNet-20 is within 3 points of the float "
          "ResNet-20 on CIFAR-10", metric="top1", direction="noninferior", margin=0.03,
          arms=[_r20("resnet20_bwn"), _r20("resnet20_fp")], profiles=_R20, gpu_priority=13, note=_SHORT),
    Claim("xnor_below_bwn_resnet20", XNOR, "XNOR/BWN", "binarizing the inputs too costs accuracy: XNOR-Net falls "
          "below BWN (AlexNet 44.2% vs 56.8% top-1); XNOR ResNet-20 is less accurate than BWN ResNet-20 on CIFAR-10",
          metric="top1", direction="less", arms=[_r20("resnet20_xnor"), _r20("resnet20_bwn")], profiles=_R20,
          gpu_priority=14, note=_SHORT),
    Claim("qnn_above_xnor_resnet20", QNN, "QNN", "2-bit activations recover part of what 1-bit ones lose: QNN "
          "(1-bit weights, 2-bit activations; AlexNet 51% top-1 against XNOR-Net's 44.2%) beats XNOR on ResNet-20 "
          "(CIFAR-10)", metric="top1", direction="greater", arms=[_r20("resnet20_qnn"), _r20("resnet20_xnor")],
          profiles=_R20, gpu_priority=16,
          note=_SHORT + "; the committed binary study (experiments/results/cpu/binary) saw QNN below XNOR there"),
    Claim("bwn_vs_float_nin", XNOR, "XNOR/BWN", "BWN NIN stays within a few points (3) of the float NIN on "
          "CIFAR-10 (XNOR-Net's CIFAR network)", metric="top1", direction="noninferior", margin=0.03,
          arms=[_nin("nin_bwn"), _nin("nin_fp")], profiles=_NIN, gpu_priority=15,
          note="cpu profile: 3 epochs on 2,000 images"),
    Claim("xnor_below_float_nin", XNOR, "XNOR/BWN", "XNOR NIN is less accurate than the float NIN on CIFAR-10 "
          "(86.3% vs 89.7% in a public reimplementation)", metric="top1", direction="less",
          arms=[_nin("nin_xnor"), _nin("nin_fp")], profiles=_NIN, gpu_priority=17,
          note="cpu profile: 3 epochs on 2,000 images"),
    Claim("xnor_below_bwn_nin", XNOR, "XNOR/BWN", "XNOR NIN is less accurate than BWN NIN on CIFAR-10",
          metric="top1", direction="less", arms=[_nin("nin_xnor"), _nin("nin_bwn")], profiles=_NIN,
          gpu_priority=18, note="cpu profile: 3 epochs on 2,000 images"),
    Claim("xnor_below_float_resnet20", XNOR, "XNOR/BWN", "binary weights and activations cost accuracy against "
          "full precision (XNOR-Net AlexNet 44.2% vs 56.6% top-1; BinaryNet 10.2-11.4% CIFAR-10 error against "
          "single-digit float error): XNOR ResNet-20 is less accurate than the float ResNet-20 on CIFAR-10",
          metric="top1", direction="less", arms=[_r20("resnet20_xnor"), _r20("resnet20_fp")], profiles=_R20,
          gpu_priority=19, note=_SHORT),
    # -- measured: storage and bit operations ----------------------------------------------------------------
    Claim("bwn_alexnet_layer_bytes", XNOR, "XNOR/BWN", "binary weights save 32x memory: AlexNet's binarized "
          "layers (all but the first and last) store 32x fewer bytes than at float32", metric="bytes ratio",
          measure=layer_bytes_ratio("alexnet_bwn"), published=32.0, rel_tol=0.02,
          note="exact operad.cost bytes: 1 bit per weight plus a float32 alpha (and bias) per filter"),
    Claim("bnn_vgg_bytes", BNN, "QNN", "BinaryNet's CIFAR-10 network (2x128C3-MP2-2x256C3-MP2-2x512C3-MP2-"
          "2x1024FC-10, first and last layer float) needs about 32x less weight memory than the same network at "
          "float32", metric="bytes ratio", measure=model_ratio("vgg_cifar", "bnn_vgg_cifar", "bytes"),
          published=32.0, rel_tol=0.1,
          note="whole networks (operad.cost bytes of vgg_cifar over bnn_vgg_cifar): the float first and last "
               "layers and the batch norms keep it below 32x, hence the 10% tolerance"),
    Claim("bnn_vgg_packed_file", BNN, "QNN", "packed for deployment (operad.rewrite.pack: sign bits, eight to a "
          "byte, and a float32 alpha per filter), BinaryNet's binarized layers save to about 32x fewer bytes than "
          "their trained float form", metric="saved bytes ratio", measure=packed_file_ratio("bnn_vgg_cifar"),
          published=32.0, rel_tol=0.05, note="bytes of torch.save of the binarized layers' state, trained vs packed"),
    Claim("xnor_alexnet_layer_bops", XNOR, "XNOR/BWN", "XNOR convolutions (binary weights and inputs) replace "
          "each 32-bit multiply-add by a 1-bit XNOR-popcount: AlexNet-XNOR's binarized layers need 32x32 = 1024x "
          "fewer bit operations than at float32", metric="BOPs ratio", measure=layer_bops_ratio("alexnet_xnor"),
          published=1024.0, rel_tol=0.001,
          note="operad.cost bops (1 per XNOR MAC, 1024 per float32 MAC): below 1024 if any binarized layer kept "
               "a float input"),
    Claim("bnn_vgg_bops", BNN, "QNN", "binarization replaces most arithmetic by bit operations: BinaryNet's CIFAR-10 "
          "network, its float first layer included, needs more than 58x (XNOR-Net's convolution speed-up) fewer "
          "bit operations than the same network at float32", metric="BOPs ratio",
          measure=model_ratio("vgg_cifar", "bnn_vgg_cifar", "bops"), bound=58.0, direction="greater",
          note="a bit-operation count (operad.cost), not a timed speed-up"),
    Claim("qnn_resnet20_layer_bops", QNN, "QNN", "QNN layers with 1-bit weights and 2-bit activations cost "
          "1x2 bit operations per multiply-add, 512x fewer than float32 x float32 (ResNet-20-QNN's quantized "
          "layers)", metric="BOPs ratio", measure=layer_bops_ratio("resnet20_qnn"), published=512.0, rel_tol=0.01),
)
