"""Export a network to ONNX or a ``torch.export`` program, checked by a runtime.

- :func:`export_onnx` goes through PyTorch's exporter (``torch.export`` then the
  ONNX translator), then runs the file in onnxruntime and compares its output
  with PyTorch's. Where ONNX has no counterpart for an operation (e.g. ``lgamma``
  in the learned-order fractional Laplacian), :class:`ExportError` names the
  operation, the operad module that uses it (its path and class) and the
  alternative, ``--format pt2``.
- :func:`export_pt2` saves a ``torch.export`` program, loads it back and compares.

    >>> from operad.models import create_model
    >>> from operad.experiments.export import export_model
    >>> r = export_model(create_model("resnet20"), (1, 3, 32, 32), "resnet20.onnx", "onnx")  # doctest: +SKIP
    >>> r["max_abs_diff"] < 1e-4                                                            # doctest: +SKIP
    True

The command is ``operad export MODEL_OR_RUN --format onnx|pt2 [--deploy fuse|remove_residuals] --out FILE``.
"""
from __future__ import annotations

import copy
import io
import logging
import os
import re
import warnings
from contextlib import redirect_stdout
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
from torch import nn

__all__ = ["ExportError", "export_onnx", "export_pt2", "export_model", "apply_deploy", "compare",
           "unsupported_onnx_ops", "resolve_model", "activation_quantizers", "TIE_INPUTS"]


OPTIMIZE_ONNX = False  # see export_onnx


class ExportError(RuntimeError):
    """An export that failed or whose exported program disagrees with PyTorch."""


def apply_deploy(model: nn.Module, deploy: Optional[str]) -> nn.Module:
    """A copy of ``model`` with a deployment rewrite (``fuse`` or ``remove_residuals``) applied."""
    if deploy in (None, "", "none"):
        return model
    from operad import rewrite

    src = copy.deepcopy(model).float().eval()
    if deploy == "fuse":
        return rewrite.fuse(src)
    if deploy == "remove_residuals":
        return rewrite.remove_residuals(src, strict=False)
    raise ValueError(f"unknown deploy rewrite {deploy!r}: use 'fuse' or 'remove_residuals'")


def compare(ref: torch.Tensor, out: torch.Tensor, what: str, rtol: float = 1e-3, atol: float = 1e-4) -> float:
    """Max absolute difference of ``out`` from ``ref``; raises :class:`ExportError` beyond
    ``atol + rtol * max|ref|`` or on a non-finite value."""
    ref, out = ref.detach().float().cpu(), torch.as_tensor(out).detach().float().cpu()
    if tuple(ref.shape) != tuple(out.shape):
        raise ExportError(f"{what}: output shape {tuple(out.shape)} differs from PyTorch's {tuple(ref.shape)}")
    if not torch.isfinite(out).all() and torch.isfinite(ref).all():
        raise ExportError(f"{what}: the output has non-finite values where PyTorch's is finite")
    diff = float((out - ref).abs().max()) if ref.numel() else 0.0
    tol = atol + rtol * float(ref.abs().max()) if ref.numel() else atol
    if diff > tol:
        raise ExportError(f"{what}: max |difference| {diff:.3g} from PyTorch's output exceeds {tol:.3g}")
    return diff


def _quiet():
    """Silence the exporter's progress prints and warnings (they go to stdout)."""
    class _Q:
        def __enter__(self):
            self._buf = io.StringIO()
            self._r = redirect_stdout(self._buf)
            self._r.__enter__()
            self._w = warnings.catch_warnings()
            self._w.__enter__()
            warnings.simplefilter("ignore")
            self._lvl = logging.root.manager.disable
            logging.disable(logging.WARNING)

        def __exit__(self, *exc):
            logging.disable(self._lvl)
            self._w.__exit__(*exc)
            self._r.__exit__(*exc)
            return False
    return _Q()


def _torch_export(model: nn.Module, x: torch.Tensor):
    try:
        with torch.no_grad():
            model(x)
    except Exception as e:  # noqa: BLE001
        raise ExportError(f"the model does not run at input {tuple(x.shape)}: {type(e).__name__}: "
                          f"{str(e).splitlines()[0] if str(e) else ''} (give the shape with --input N,C,H,W)") from e
    try:
        with _quiet():
            return torch.export.export(model, (x,), strict=False)
    except Exception as e:  # noqa: BLE001 - re-raised with what to do
        raise ExportError(f"torch.export could not trace the model at input {tuple(x.shape)}: "
                          f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''} "
                          f"(a data-dependent branch in a forward usually causes this)") from e


def _failed_ops(exc: BaseException) -> List[str]:
    """Operator names (``prims.lgamma``) the ONNX translator found no function for."""
    names, seen = [], set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        names += re.findall(r"OpOverload\(op='([\w.]+)'", str(exc))
        names += re.findall(r"target=torch\.ops\.([\w]+\.[\w]+)\.", str(exc))
        exc = exc.__cause__ or exc.__context__
    return list(dict.fromkeys(names))


def _modules_using(ep, op: str, model: Optional[nn.Module] = None) -> List[Tuple[str, str]]:
    """``(module path, description)`` of the innermost modules whose forward calls ``op``:
    the operad family (``ops.feature_nonlocal``) where the module is a bound term, else its class."""
    base = op.rsplit(".", 1)[-1]
    found = []
    for prog in (ep, ep.run_decompositions()):
        for node in prog.graph.nodes:
            if node.op == "call_function" and re.search(rf"(^|\.){base}(\.|$)", str(node.target)):
                stack = node.meta.get("nn_module_stack") or {}
                if stack:
                    path, cls = list(stack.values())[-1]
                    cls = cls.__name__ if isinstance(cls, type) else str(cls).rsplit(".", 1)[-1].strip("'>")
                    path = path.replace("L['self'].", "").replace("L__self___", "")
                    found.append((path, _describe(model, path, cls)))
        if found:
            break
    return list(dict.fromkeys(found))


def _describe(model: Optional[nn.Module], path: str, cls: str) -> str:
    try:
        fam = getattr(getattr(model.get_submodule(path), "term", None), "family", None)
    except (AttributeError, TypeError):
        fam = None
    return f"ops.{fam} ({cls})" if fam else cls


def unsupported_onnx_ops(exc: BaseException, ep, model: Optional[nn.Module] = None) -> str:
    """A message naming what ONNX cannot express in the failed export, and where it is used."""
    ops = _failed_ops(exc)
    if not ops:
        return f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
    parts = []
    for op in ops:
        users = _modules_using(ep, op, model)
        where = ", ".join(f"{cls} at '{p}'" for p, cls in users[:3]) or "an unidentified module"
        parts.append(f"{op} (used by {where})")
    return "ONNX has no operator for " + "; ".join(parts)


def export_onnx(model: nn.Module, x: torch.Tensor, path: str, check: bool = True,
                opset: Optional[int] = None) -> Dict[str, Any]:
    """Write ``model`` as ONNX to ``path``; with ``check``, run it in onnxruntime on ``x``
    and compare with PyTorch. Returns ``{"path", "max_abs_diff"}``."""
    model = model.eval()
    ep = _torch_export(model, x)
    kw = {"opset_version": opset} if opset else {}
    try:
        with _quiet():
            # optimize=False: the exporter's optimizer drops ``x + 1e-8`` as if adding zero (torch 2.13,
            # onnxscript 0.7), which turns harmonic_relu's sqrt(|z|^2 + eps^2) into 0/0 at z = 0
            torch.onnx.export(ep, (x,), path, dynamo=True, external_data=False, optimize=OPTIMIZE_ONNX, **kw)
    except Exception as e:  # noqa: BLE001
        raise ExportError(f"cannot export to ONNX: {unsupported_onnx_ops(e, ep, model)}. "
                          f"Use --format pt2 (a torch.export program) for this network instead.") from e
    out: Dict[str, Any] = {"path": path, "format": "onnx", "input_shape": list(x.shape)}
    if check:
        out.update(_check_in_onnxruntime(model, x, path))
    return out


TIE_INPUTS = 4  # inputs tried on a network that rounds activations (see _check_in_onnxruntime)


def activation_quantizers(model: nn.Module) -> List[str]:
    """Paths of the modules that round their input to a few levels (sign, XNOR
    layers, k-bit activations): where a value on a threshold may round either way."""
    from operad.operators.binary import BinaryConv2d, BinaryLinearModule, SignModule
    from operad.operators.quant import QuantConv2d, QuantizeModule, QuantLinearModule

    out = []
    for name, m in model.named_modules():
        if isinstance(m, SignModule) or (isinstance(m, (BinaryConv2d, BinaryLinearModule)) and m.scheme == "xnor") \
                or (isinstance(m, QuantizeModule) and m.bits < 32) \
                or (isinstance(m, (QuantConv2d, QuantLinearModule)) and m.a_quant_bits < 32):
            out.append(name)
    return out


def _check_in_onnxruntime(model: nn.Module, x: torch.Tensor, path: str) -> Dict[str, Any]:
    """Run the ONNX file in onnxruntime on ``x`` and compare with PyTorch.

    A network that rounds activations is discontinuous: an activation within
    float rounding of a threshold (an XNOR sum of exactly 0 shifted by batch
    norm, a 2-bit level boundary) can round the other way in another runtime,
    and the difference propagates. Such a tie belongs to one input, an export
    error to all: for these networks up to :data:`TIE_INPUTS` seeded inputs are
    tried, the first that matches passes, and ``inputs_differing`` counts the
    others. A network without activation quantizers gets exactly one try."""
    try:
        import onnxruntime as ort
    except ImportError as e:
        raise ExportError("checking the ONNX file needs onnxruntime: pip install onnxruntime "
                          "(or pass check=False / --no-check)") from e
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    quantizers = activation_quantizers(model)
    tries = TIE_INPUTS if quantizers else 1
    misses: List[str] = []
    for i in range(tries):
        xi = x if i == 0 else torch.randn(x.shape, generator=torch.Generator().manual_seed(1000 + i)).to(x.dtype)
        with torch.no_grad():
            ref = model(xi)
        got = sess.run(None, {sess.get_inputs()[0].name: xi.detach().cpu().numpy()})[0]
        try:
            diff = compare(ref, torch.from_numpy(got), f"onnxruntime on {os.path.basename(path)}")
        except ExportError as e:
            if not quantizers:
                raise
            misses.append(str(e))
            continue
        return {"max_abs_diff": diff, "output_abs_max": float(ref.abs().max()), "inputs_differing": len(misses)}
    raise ExportError(f"{misses[0]}, and on each of {tries - 1} more inputs. The network rounds activations "
                      f"({', '.join(quantizers[:3])}{' ...' if len(quantizers) > 3 else ''}), where a value on a "
                      f"threshold may round either way in another runtime, but not on every input: the export "
                      f"computes something else. Use --format pt2 for this network")


def export_pt2(model: nn.Module, x: torch.Tensor, path: str, check: bool = True) -> Dict[str, Any]:
    """Save a ``torch.export`` program of ``model`` to ``path`` (``.pt2``); with ``check``,
    load it back and compare its output on ``x`` with the model's."""
    model = model.eval()
    ep = _torch_export(model, x)
    torch.export.save(ep, path)
    out: Dict[str, Any] = {"path": path, "format": "pt2", "input_shape": list(x.shape)}
    if check:
        loaded = torch.export.load(path)
        with torch.no_grad():
            ref = model(x)
            got = loaded.module()(x)
        out["max_abs_diff"] = compare(ref, got, f"the reloaded program {os.path.basename(path)}")
        out["output_abs_max"] = float(ref.abs().max())
    return out


def export_model(model: nn.Module, input_shape: Sequence[int], path: str, fmt: str = "onnx",
                 deploy: Optional[str] = None, check: bool = True, seed: int = 0) -> Dict[str, Any]:
    """Export ``model`` (after an optional ``deploy`` rewrite) at ``input_shape`` to ``path``
    as ``fmt`` (``onnx`` or ``pt2``), checked against PyTorch on a random input."""
    if fmt not in ("onnx", "pt2"):
        raise ValueError(f"unknown export format {fmt!r}: use 'onnx' or 'pt2'")
    model = apply_deploy(model.float().eval(), deploy)
    x = torch.randn(*input_shape, generator=torch.Generator().manual_seed(seed))
    d = os.path.dirname(os.path.abspath(path))
    os.makedirs(d, exist_ok=True)
    res = (export_onnx if fmt == "onnx" else export_pt2)(model, x, path, check)
    res["deploy"] = deploy
    return res


def resolve_model(spec: str, input_shape: Optional[Sequence[int]] = None,
                  num_classes: int = 10) -> Tuple[nn.Module, Tuple[int, ...]]:
    """A registered model name, an expression over ``ops``, a run directory or a
    ``final.pt`` / ``final.safetensors`` of a run; returns ``(model, input_shape)``."""
    if os.path.exists(spec):
        from operad.experiments.train import load_run_model

        if spec.endswith(".safetensors"):  # a run's weights file: the config from the run's final.pt
            from operad.models.hub import load_weights

            model = load_weights(load_run_model(os.path.dirname(os.path.abspath(spec)))[0], spec)
        else:
            model = load_run_model(spec)[0]
        size = getattr(model, "default_input_size", None)
        if size is None:
            size = (model.in_type.tensor_channels, 32, 32) if hasattr(model, "in_type") else (3, 32, 32)
        shape = (1,) + tuple(size)
    else:
        from operad.experiments.cli import _model_from_spec

        model, shape = _model_from_spec(spec, num_classes)
    return model.eval(), tuple(input_shape) if input_shape else tuple(shape)
