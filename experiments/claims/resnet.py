"""ResNet (He et al., 2016): the CIFAR family's sizes and the depth claim."""
from ._common import model_cost
from .base import Arm, Claim, cifar_profiles, register

PAPER = "He, Zhang, Ren, Sun. Deep Residual Learning for Image Recognition. CVPR 2016"

register(
    Claim("resnet20_params", PAPER, "ResNet", "ResNet-20 for CIFAR-10 has 0.27M parameters (Table 6)",
          metric="params", measure=model_cost("resnet20", "params"), published=0.27e6, rel_tol=0.01),
    Claim("resnet110_params", PAPER, "ResNet", "ResNet-110 for CIFAR-10 has 1.7M parameters (Table 6)",
          metric="params", measure=model_cost("resnet110", "params"), published=1.7e6, rel_tol=0.03),
    Claim("resnet50_macs", PAPER, "ResNet", "ResNet-50 costs 3.8 billion FLOPs (multiply-adds) at 224x224 (Table 1)",
          metric="MACs", measure=model_cost("resnet50", "macs"), published=3.8e9, rel_tol=0.1,
          note="the paper's 3.8G omits the projection shortcuts' and the fc layer's MACs; torchvision counts 4.09G"),
    Claim("resnet56_vs_resnet20", PAPER, "ResNet", "ResNet-56 is more accurate than ResNet-20 on CIFAR-10 "
          "(6.97% vs 8.75% error)", metric="top1", direction="greater",
          arms=[Arm("resnet56", model="resnet56"), Arm("resnet20", model="resnet20")],
          profiles=cifar_profiles(200, 3, cpu_batch=32), gpu_priority=5,
          note="the depth advantage appears late in a long schedule; a 3-epoch subset run mostly measures "
               "early optimisation speed"),
)
