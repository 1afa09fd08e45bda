"""SSDLite (MobileNetV2 paper, section 6.2) on MobileNetV2 or any backbone's feature pyramid.

SSDLite is SSD with every regular convolution of the extra layers and the
prediction layers replaced by a depthwise-separable one:

- levels: MobileNetV2's stride-16 expansion layer (the 1x1 expansion of the
  first 160-channel block, 576 channels), its last layer (the 1x1 conv to 1280,
  stride 32), and four extra blocks ``1x1 conv to c/2 -> 3x3 depthwise stride 2
  -> 1x1 conv to c`` (BN + ReLU6 after each) with c = 512, 256, 256, 128, down
  to 1x1 at 300/320 input;
- heads per level: box offsets and class logits, each ``3x3 depthwise -> BN ->
  ReLU6 -> 1x1 conv`` (torchvision's ``_prediction_block``);
- default boxes (SSD paper): scales ``s_k`` linear from 0.2 to 0.95 over the
  levels, aspect ratios {1, 2, 1/2, 3, 1/3} plus a box of scale
  ``sqrt(s_k s_{k+1})`` at ratio 1 (6 per pixel). ``reduce_lowest=True`` gives the
  TensorFlow object-detection configuration's lowest level of 3 boxes (scale
  0.1 at ratio 1, ``s_0`` at 2 and 1/2).

The whole network is one ``ops.multibox`` term, so ``operad.cost`` and
``summary`` count the heads. Its output is a rank-1 field of ``4 + num_classes
+ 1`` channels, one sample per default box (channel 0..3: offsets; 4..: logits,
index 0 = background). :func:`default_boxes` gives the matching boxes.

Counted by ``operad.cost`` (``tests/test_detection_model.py`` asserts these):
80 classes + background at 320x320 with the TF configuration's 3 boxes on the
lowest level (the default, ``reduce_lowest=True``): 4,337,013 parameters and
788,830,144 multiply-adds, the paper's "4.3M / 0.8B" (its table 6). With 6
boxes on every level: 4,484,148 and 847,582,144 (at 300x300: 787,634,096).
"""
from __future__ import annotations

import math
from typing import List, Optional, Sequence, Tuple

import torch

from .. import ops
from ..operators.algebra.combinators import Named, Seq
from ..operators.algebra.field import Field
from ..operators.algebra.term import Term
from ..operators.gate import make_divisible
from ..operators.multibox import MultiBox
from .registry import register_model

__all__ = ["ssdlite", "ssdlite_head", "extra_block", "ssdlite_mobilenetv2", "ssdlite_backbone",
           "mobilenetv2_levels", "default_boxes", "box_shapes"]


def _chain(items):
    out = items[0]
    for it in items[1:]:
        out = out >> it
    return out


def _items(term: Term) -> Tuple[Term, ...]:
    return term.items if isinstance(term, Seq) else (term,)


def ssdlite_head(out: int, k: int = 3) -> Term:
    """SSDLite prediction layer: ``k x k`` depthwise, BN, ReLU6, then a 1x1 conv (with bias) to ``out``,
    initialised small (``init="small"``, torchvision's N(0, 0.03^2)): offsets and logits start near 0."""
    return ops.conv(None, k=k, groups=0, bias=False) >> ops.bn() >> ops.relu6() >> ops.conv(out, k=1, init="small")


def extra_block(out: int) -> Term:
    """SSDLite extra layer: 1x1 to out/2, 3x3 depthwise stride 2, 1x1 to out (BN + ReLU6 after each)."""
    mid = out // 2
    return (ops.conv(mid, k=1, bias=False) >> ops.bn() >> ops.relu6()
            >> ops.conv(None, k=3, stride=2, groups=0, bias=False) >> ops.bn() >> ops.relu6()
            >> ops.conv(out, k=1, bias=False) >> ops.bn() >> ops.relu6())


def ssdlite(levels: Sequence[Term], num_classes: int = 80, extras: Sequence[int] = (512, 256, 256, 128),
            reduce_lowest: bool = False) -> MultiBox:
    """SSDLite on a backbone cut into ``levels`` (each runs on the previous one's output),
    plus extra blocks to ``extras`` channels; ``num_classes`` foreground classes (+1 background).

    >>> from operad import ops, Field
    >>> t = ssdlite([ops.conv(8, stride=16), ops.conv(16, stride=2)], num_classes=3, extras=(16,))
    >>> t.anchors(Field(3)), t.bind(Field(3)).out_type
    ((6, 6, 6), Field(8, rank=1))
    """
    stages = list(levels) + [extra_block(c) for c in extras]
    k = num_classes + 1
    heads = []
    for i in range(len(stages)):
        a = 3 if (i == 0 and reduce_lowest) else 6
        heads.append(ops.concat(ssdlite_head(a * 4), ssdlite_head(a * k)))
    return ops.multibox(stages, heads, (4, k))


def mobilenetv2_levels(width: float = 1.0, in_chans: int = 3) -> Tuple[Term, Term]:
    """MobileNetV2 cut after the expansion layer of its first stride-32 block (stride 16,
    576 channels at width 1) and ending at the 1x1 conv to 1280 (stride 32)."""
    from .mobilenet import mobilenetv2
    items = list(_items(mobilenetv2(width, in_chans=in_chans, features_only=True)))
    idx = next(i for i, it in enumerate(items) if isinstance(it, Named) and it.name == "stage6")
    blocks = list(_items(items[idx].inner))
    t = Field(in_chans)
    for it in items[:idx]:
        t = it._infer(t)
    body = list(_items(blocks[0].expand(t)))
    low = _chain(items[:idx] + [_chain(body[:3]).named("expansion")])
    head_c = make_divisible(1280 * max(1.0, width))
    conv_head = (ops.conv(head_c, k=1, bias=False) >> ops.bn() >> ops.relu6()).named("conv_head")
    high = _chain([_chain(body[3:]).named("stage6_0")] + blocks[1:] + items[idx + 1:] + [conv_head])
    return low, high


_DET = dict(input_size=(3, 320, 320), task="detection", tags=("detection", "mobilenet"))


@register_model(**_DET)
def ssdlite_mobilenetv2(num_classes: int = 80, in_chans: int = 3, width: float = 1.0,
                        reduce_lowest: bool = True) -> Term:
    """SSDLite on MobileNetV2 (input 320x320 or 300x300; ``num_classes`` without background)."""
    return ssdlite(mobilenetv2_levels(width, in_chans), num_classes, reduce_lowest=reduce_lowest)


def ssdlite_backbone(name: str, num_classes: int = 80, in_chans: int = 3, extras: Sequence[int] = (512, 256, 256, 128),
                     **kwargs) -> MultiBox:
    """SSDLite on any registered backbone's pyramid: the trunk cut after its last stride-16
    stage (level 0), the rest of the trunk (level 1), then the extra blocks.

    >>> t = ssdlite_backbone("resnet18", num_classes=5)
    >>> [s for s in t.anchors(Field(3))]
    [6, 6, 6, 6, 6, 6]
    """
    from .seg_heads import backbone, split_at_stride
    low, high, _ = split_at_stride(backbone(name, in_chans, **kwargs), 16, Field(in_chans))
    return ssdlite([low, high], num_classes, extras)


def box_shapes(anchors: int, s: float, s_next: float) -> List[Tuple[float, float]]:
    """Relative ``(w, h)`` of the default boxes of one level with scale ``s``."""
    if anchors == 3:
        return [(0.1, 0.1), (s * math.sqrt(2), s / math.sqrt(2)), (s / math.sqrt(2), s * math.sqrt(2))]
    ratios = {4: (2.0,), 6: (2.0, 3.0)}.get(anchors)
    if ratios is None:
        raise ValueError(f"default boxes are defined for 3, 4 or 6 boxes per pixel; got {anchors}")
    out = [(s, s), (math.sqrt(s * s_next),) * 2]
    for r in ratios:
        out += [(s * math.sqrt(r), s / math.sqrt(r)), (s / math.sqrt(r), s * math.sqrt(r))]
    return out


def default_boxes(term: MultiBox, size: Tuple[int, int], in_type: Optional[Field] = None,
                  s_min: float = 0.2, s_max: float = 0.95) -> torch.Tensor:
    """``(N, 4)`` default boxes ``(cx, cy, w, h)`` in [0, 1] units, in the order of the
    term's output (level, row, column, box).

    >>> from operad.models import model_term
    >>> default_boxes(model_term("ssdlite_mobilenetv2"), (320, 320)).shape
    torch.Size([2034, 4])
    """
    t = in_type or Field(3)
    sizes = term.level_sizes(t, tuple(size))
    anchors = term.anchors(t)
    m = len(sizes)
    scales = [s_min + (s_max - s_min) * k / max(m - 1, 1) for k in range(m)] + [1.0]
    out = []
    for k, ((h, w), a) in enumerate(zip(sizes, anchors)):
        h, w = int(h), int(w)
        shapes = torch.tensor(box_shapes(a, scales[k], scales[k + 1]), dtype=torch.float32)
        cy, cx = torch.meshgrid((torch.arange(h) + 0.5) / h, (torch.arange(w) + 0.5) / w, indexing="ij")
        centres = torch.stack([cx, cy], -1).reshape(h * w, 1, 2).expand(h * w, a, 2)
        wh = shapes[None].expand(h * w, a, 2)
        out.append(torch.cat([centres, wh], -1).reshape(-1, 4))
    return torch.cat(out).clamp(0.0, 1.0)
