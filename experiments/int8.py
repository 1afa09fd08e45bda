"""Int8 post-training static quantization through PyTorch's own paths.

``quantize_int8(model, calib, path="auto")`` returns an :class:`Int8Model`: the
module that runs (real int8 kernels on the CPU), the tensors a deployment
stores, and a sentence saying which path made it. Two paths:

``"pt2e"``  torchao's PT2E flow: ``torch.export`` -> ``prepare_pt2e`` with the
            ``X86InductorQuantizer`` -> calibration -> ``convert_pt2e`` ->
            ``torch.compile`` (Inductor with freezing lowers the quantize /
            dequantize pattern to oneDNN int8 kernels; the first call at each
            input shape compiles, about a minute for a ResNet-20 on one core).
            Needs ``pip install torchao`` (``operad[int8]``; torchao 0.18 runs on
            torch 2.13 CPU); torch 2.13 itself no longer ships the PT2E modules.
``"fx"``    ``torch.ao.quantization`` FX graph mode: ``prepare_fx`` with the
            engine's default qconfig mapping (per-channel int8 weights, uint8
            activations with histogram observers), calibration, ``convert_fx``;
            the quantized modules call the engine's int8 kernels directly. The
            engine is the first of ``x86``, ``fbgemm``, ``onednn``, ``qnnpack``
            this build supports.
``"auto"``  ``pt2e`` when torchao imports, else ``fx``; a ``pt2e`` failure falls
            back to ``fx`` and the description says why.

Both calibrate on the batches given (a few batches of real data, or random
inputs) and keep batch norms folded into the convolutions.

>>> import torch
>>> from operad import ops, Field
>>> m = (ops.conv(8) >> ops.bn() >> ops.relu() >> ops.global_pool() >> ops.linear(4)).bind(Field(3)).eval()
>>> q = quantize_int8(m, [torch.randn(2, 3, 8, 8)], path="fx")
>>> q.path, q(torch.randn(1, 3, 8, 8)).shape
('fx', torch.Size([1, 4]))
"""
from __future__ import annotations

import contextlib
import copy
import warnings
from dataclasses import dataclass
from typing import Dict, Iterable, Iterator, List, Sequence

import torch
from torch import nn

__all__ = ["Int8Model", "quantize_int8", "int8_engine", "torchao_available", "int8_runtime", "INT8_PATHS"]

INT8_PATHS = ("auto", "pt2e", "fx")
_ENGINES = ("x86", "fbgemm", "onednn", "qnnpack")


@dataclass
class Int8Model:
    """An int8 network: ``module`` runs it, ``state`` is what a deployment stores
    (for PT2E only the tensors the converted graph reads, not the float weights
    the exported program still holds), ``path`` is ``"pt2e"`` or ``"fx"`` and
    ``description`` says how it was made."""

    module: nn.Module
    state: Dict[str, torch.Tensor]
    path: str
    description: str
    engine: str = ""

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.module(x)


def torchao_available() -> bool:
    """Whether torchao's PT2E flow imports on this torch."""
    try:
        from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e  # noqa: F401
        from torchao.quantization.pt2e.quantizer import x86_inductor_quantizer  # noqa: F401
    except Exception:  # ImportError, or a torchao built for another torch failing on import
        return False
    return True


def int8_engine() -> str:
    """The quantized engine the FX path uses: the first of x86, fbgemm, onednn, qnnpack this build has."""
    have = torch.backends.quantized.supported_engines
    for e in _ENGINES:
        if e in have:
            return e
    raise RuntimeError(f"this torch build has no int8 CPU engine (supported: {have})")


@contextlib.contextmanager
def int8_runtime(engine: str = "") -> Iterator[None]:
    """Set the quantized engine (and Inductor's freezing, which PT2E's int8 lowering needs) for the
    duration: a quantized model made under an engine must also run under it. Restores both after."""
    from torch._inductor import config as inductor_config

    old_engine, old_freezing = torch.backends.quantized.engine, inductor_config.freezing
    torch.backends.quantized.engine = engine or int8_engine()
    inductor_config.freezing = True
    try:
        yield
    finally:
        torch.backends.quantized.engine = old_engine
        inductor_config.freezing = old_freezing


def _calibrate(m: nn.Module, calib: Sequence[torch.Tensor]) -> None:
    with torch.no_grad():
        for x in calib:
            m(x)


def _fx(model: nn.Module, calib: Sequence[torch.Tensor]) -> Int8Model:
    from torch.ao.quantization import get_default_qconfig_mapping
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

    engine = int8_engine()
    with int8_runtime(engine), warnings.catch_warnings():
        # torch 2.13 warns that torch.ao.quantization and its quantized tensors are deprecated; they still run
        warnings.simplefilter("ignore", UserWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        prepared = prepare_fx(copy.deepcopy(model).eval(), get_default_qconfig_mapping(engine), (calib[0][:1],))
        _calibrate(prepared, calib)
        q = convert_fx(prepared).eval()
    return Int8Model(q, dict(q.state_dict()), "fx",
                     f"torch.ao.quantization FX static ({engine} engine, per-channel int8 weights, "
                     f"calibrated on {len(calib)} batches; deprecated in favour of torchao but working on torch "
                     f"{torch.__version__.split('+')[0]})", engine)


def _graph_state(gm: nn.Module) -> Dict[str, torch.Tensor]:
    """The tensors a converted PT2E graph reads (its ``get_attr`` nodes)."""
    used = {n.target for n in gm.graph.nodes if n.op == "get_attr"}
    sd = gm.state_dict()
    return {k: v for k, v in sd.items() if k in used}


def _pt2e(model: nn.Module, calib: Sequence[torch.Tensor]) -> Int8Model:
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e
    from torchao.quantization.pt2e.quantizer import x86_inductor_quantizer as xiq

    batch = torch.export.Dim("batch", min=1, max=4096)
    ep = torch.export.export(copy.deepcopy(model).eval(), (calib[0],), dynamic_shapes=({0: batch},)).module()
    quantizer = xiq.X86InductorQuantizer().set_global(xiq.get_default_x86_inductor_quantization_config())
    prepared = prepare_pt2e(ep, quantizer)
    _calibrate(prepared, calib)
    q = convert_pt2e(prepared)
    compiled = torch.compile(q)
    with torch.no_grad():
        compiled(calib[0][:1])  # compile now, so that a lowering failure shows here (and "auto" falls back)
    return Int8Model(compiled, _graph_state(q), "pt2e",
                     f"torchao PT2E (X86InductorQuantizer, calibrated on {len(calib)} batches) compiled by "
                     f"Inductor with freezing (oneDNN int8 kernels)", "x86")


def quantize_int8(model: nn.Module, calib: Iterable[torch.Tensor], path: str = "auto") -> Int8Model:
    """``model`` (float, eval) quantized to int8 after training, calibrated on the input batches ``calib``.

    Run the result under :func:`int8_runtime` when anything else may change the quantized engine.
    """
    if path not in INT8_PATHS:
        raise ValueError(f"int8 path must be one of {', '.join(INT8_PATHS)}; got {path!r}")
    batches: List[torch.Tensor] = list(calib)
    if not batches:
        raise ValueError("int8 quantization needs at least one calibration batch")
    if path == "fx":
        return _fx(model, batches)
    if path == "pt2e":
        return _pt2e(model, batches)
    if not torchao_available():
        q = _fx(model, batches)
        q.description += "; torchao (PT2E) is not installed"
        return q
    try:
        return _pt2e(model, batches)
    except Exception as e:  # a model torch.export cannot capture: the FX path may still trace it
        q = _fx(model, batches)
        q.description += f"; PT2E failed ({type(e).__name__}: {str(e).splitlines()[0][:160]})"
        return q
