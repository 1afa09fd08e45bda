"""Twin networks with DT-CWPT / CMod front ends (Leterme et al.)."""
from ._common import cost_ratio
from .base import Arm, Claim, cifar_profiles, register

PAPER = "Leterme, Polisano, Perrier, Alahari. Modulus of the dual-tree complex wavelet transform in CNNs " \
        "(CMod / RMax twins)"

register(
    Claim("twin_resnet18_macs", PAPER, "CMod/DT-CWPT twins", "the twin CMod ResNet-18 needs fewer multiply-adds "
          "than ResNet-18 (the wavelet front end replaces half of the first convolution)",
          metric="MACs ratio to ResNet-18", measure=cost_ratio("twin_resnet18", "resnet18", "macs"), bound=1.0,
          direction="less"),
    Claim("twin_resnet18_vs_resnet18", PAPER, "CMod/DT-CWPT twins", "a twin CMod ResNet-18 keeps the accuracy of "
          "ResNet-18 on CIFAR-10 (within 1 point)", metric="top1", direction="noninferior", margin=0.01,
          arms=[Arm("twin_resnet18_cifar", config="twin_cmod_vs_resnet", run="twin_resnet18_cifar"),
                Arm("resnet18_cifar", config="twin_cmod_vs_resnet", run="resnet18_cifar")],
          profiles=cifar_profiles(200, 3), gpu_priority=8),
)
