"""Benchmarks: each module prints side-by-side ratios against a baseline,
timing the competitors in alternation (:func:`time_interleaved`).

    python -m operad.experiments.bench.pide       # grid fractional Laplacian vs dense and depthwise conv
    python -m operad.experiments.bench.wavelet    # DT-CWPT vs pytorch_wavelets
    python -m operad.experiments.bench.harmonic   # harmonic conv vs conv (and e2cnn)
    python -m operad.experiments.bench.dendritic  # fused vs naive dendritic conv
    python -m operad.experiments.bench.zoo        # zoo networks vs ResNets
    python -m operad.experiments.bench.rmnet      # ResNet vs its fused and RMNet forms

``make bench`` runs each at a small size (a check that they run, not figures).
"""
from .timing import inference_speed, saved_mib, time_fn, time_interleaved

__all__ = ["time_fn", "time_interleaved", "saved_mib", "inference_speed"]
