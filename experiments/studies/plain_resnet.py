"""A plain ``nn.Module`` CIFAR ResNet with option-A shortcuts, copied weight for weight from a bound operad
ResNet (``resnet20``/``56``/``110``): the form common CIFAR code writes (``F.pad`` of a strided slice in the
shortcut, ``relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x))`` per block), which is what a Torch-Pruning
user hands it when the network is not an operad expression.

>>> import torch
>>> from operad.models import create_model
>>> m = create_model("resnet20").eval()
>>> p = plain_resnet(m).eval()
>>> x = torch.randn(2, 3, 32, 32)
>>> torch.allclose(p(x), m(x), atol=1e-5), len(p.blocks)
(True, 9)
"""
from __future__ import annotations

import copy
from typing import List

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["PadShortcut", "BasicBlock", "PlainResNet", "plain_resnet"]


class PadShortcut(nn.Module):
    """``F.pad(x[:, :, ::stride, ::stride], (0, 0, 0, 0, before, after))``: option A."""

    def __init__(self, stride: int, before: int, after: int):
        super().__init__()
        self.stride, self.before, self.after = stride, before, after

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.pad(x[:, :, ::self.stride, ::self.stride], (0, 0, 0, 0, self.before, self.after))


class BasicBlock(nn.Module):
    def __init__(self, conv1: nn.Conv2d, bn1: nn.BatchNorm2d, conv2: nn.Conv2d, bn2: nn.BatchNorm2d,
                 shortcut: nn.Module):
        super().__init__()
        self.conv1, self.bn1, self.conv2, self.bn2, self.shortcut = conv1, bn1, conv2, bn2, shortcut

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x))))) + self.shortcut(x))


class PlainResNet(nn.Module):
    def __init__(self, conv: nn.Conv2d, bn: nn.BatchNorm2d, blocks: List[BasicBlock], fc: nn.Linear):
        super().__init__()
        self.conv, self.bn, self.blocks, self.fc = conv, bn, nn.Sequential(*blocks), fc

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.blocks(F.relu(self.bn(self.conv(x))))
        return self.fc(F.adaptive_avg_pool2d(x, 1).flatten(1))


def _shortcut(sc: nn.Module) -> nn.Module:
    subs = [m for m in sc.modules() if type(m).__name__ == "_SubsampleModule"]
    pads = [m for m in sc.modules() if type(m).__name__ == "_PadChannelsModule"]
    if not subs and not pads:
        if any(p.numel() for p in sc.parameters()):
            raise ValueError("plain_resnet copies option-A (parameter-free) shortcuts only; this one has weights")
        return nn.Identity()
    return PadShortcut(subs[0].stride if subs else 1, *(pads[0].pad[-2:] if pads else (0, 0)))


def plain_resnet(model: nn.Module) -> PlainResNet:
    """The plain module computing what the bound CIFAR ResNet ``model`` computes, with copies of its weights."""
    blocks, inside = [], set()
    for m in model.modules():
        if type(m).__name__ != "ResidualModule":
            continue
        convs = [c for c in m.body.modules() if isinstance(c, nn.Conv2d)]
        bns = [b for b in m.body.modules() if isinstance(b, nn.BatchNorm2d)]
        if len(convs) != 2 or len(bns) != 2:
            raise ValueError(f"plain_resnet expects basic blocks (two convolutions and two batch norms); got "
                             f"{len(convs)} and {len(bns)}")
        inside.update(map(id, m.modules()))
        blocks.append(BasicBlock(*(copy.deepcopy(x) for x in (convs[0], bns[0], convs[1], bns[1])),
                                 _shortcut(m.shortcut)))
    stem = [c for c in model.modules() if isinstance(c, (nn.Conv2d, nn.BatchNorm2d)) and id(c) not in inside]
    fc = [c for c in model.modules() if isinstance(c, nn.Linear)]
    if not blocks or len(stem) != 2 or len(fc) != 1:
        raise ValueError("plain_resnet expects a CIFAR ResNet: a conv-bn stem, residual basic blocks, one linear")
    return PlainResNet(copy.deepcopy(stem[0]), copy.deepcopy(stem[1]), blocks, copy.deepcopy(fc[0]))
