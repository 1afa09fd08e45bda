"""Min-Nets (min units in place of ReLU) and dendritic units."""
from .base import Arm, Claim, cifar_profiles, register

MIN = "Min-Nets: element-wise minimum units for robust CNNs (operad's Min-Net seed paper)"
DENDRITIC = "Dendritic units: products / minima over dendritic branches (operad's dendritic seed paper)"

_MIN_ARMS = [Arm("min_resnet20", config="min_resnet_vs_resnet", run="min_resnet20"),
             Arm("resnet20", config="min_resnet_vs_resnet", run="resnet20")]
_MIN_PROF = cifar_profiles(250, 4)

register(
    Claim("minnet_jpeg", MIN, "Min-Nets", "Min-ResNet-20 loses less top-1 to JPEG compression (q80..40) than "
          "ResNet-20", metric="jpeg_drop", direction="less", arms=list(_MIN_ARMS), profiles=_MIN_PROF,
          gpu_priority=1),
    Claim("minnet_top1", MIN, "Min-Nets", "Min-ResNet-20 matches ResNet-20's CIFAR-10 top-1 (within 1 point)",
          metric="top1", direction="noninferior", margin=0.01, arms=list(_MIN_ARMS), profiles=_MIN_PROF,
          gpu_priority=1),
    Claim("dendritic_vs_resnet20", DENDRITIC, "dendritic units", "a dendritic ResNet-20 reaches the accuracy of "
          "the standard ResNet-20 on CIFAR-10 (within 1 point)", metric="top1", direction="noninferior",
          margin=0.01,
          arms=[Arm("dendritic_resnet20", config="dendritic_vs_resnet", run="dendritic_resnet20",
                    profiles={p: {"model_args": {"impl": "compiled"}} for p in ("cpu", "gpu", "full")}),
                Arm("resnet20", config="dendritic_vs_resnet", run="resnet20")],
          profiles=cifar_profiles(200, 3), gpu_priority=3,
          note="the dendritic arm trains with impl='compiled' (inductor), about 30x faster than the fused form"),
)
