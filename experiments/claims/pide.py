"""Nonlocal PIDE networks: fractional-Laplacian (FFT) blocks against local convolutions."""
from .base import Arm, Claim, cifar_profiles, register

PAPER = "nonlocal PIDE / fractional-Laplacian networks (operad's seed papers on nonlocal operators)"

_ARMS = [Arm("nonlocal_resnet20", config="nonlocal_vs_local", run="nonlocal_resnet20"),
         Arm("resnet20", config="nonlocal_vs_local", run="resnet20")]
_PROF = cifar_profiles(200, 3)

register(
    Claim("pide_nonlocal_top1", PAPER, "nonlocal PIDE", "nonlocal PIDE blocks improve on the local ResNet-20 "
          "at equal depth on CIFAR-10", metric="top1", direction="greater", arms=list(_ARMS), profiles=_PROF,
          gpu_priority=2),
    Claim("pide_shift_consistency", PAPER, "nonlocal PIDE", "nonlocal PIDE blocks keep ResNet-20's shift "
          "consistency (within 2 points)", metric="shift_consistency", direction="noninferior", margin=0.02,
          arms=list(_ARMS), profiles=_PROF, gpu_priority=2),
)
