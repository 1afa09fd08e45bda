"""All-CNN-C (Springenberg et al., 2015): strided convolutions in place of max-pooling."""
from ._common import model_cost
from .base import Arm, Claim, cifar_profiles, register

PAPER = "Springenberg, Dosovitskiy, Brox, Riedmiller. Striving for Simplicity: The All Convolutional Net. ICLR 2015"

register(
    Claim("allcnn_c_params", PAPER, "All-CNN-C", "All-CNN-C has about 1.4M parameters (Table 3)",
          metric="params", measure=model_cost("allcnn_c", "params"), published=1.4e6, rel_tol=0.05),
    Claim("allcnn_vs_maxpool", PAPER, "All-CNN-C", "All-CNN-C (strided convolutions only) matches or beats the "
          "max-pooling ConvPool-CNN-C on CIFAR-10 (9.08% vs 9.31% error)", metric="top1",
          direction="noninferior", margin=0.01,
          arms=[Arm("allcnn_c", config="allcnn_vs_maxpool", run="allcnn_c"),
                Arm("convpool_cnn_c", config="allcnn_vs_maxpool", run="convpool_cnn_c")],
          profiles=cifar_profiles(60, 3), gpu_priority=3,
          note="non-inferiority within 1 point of top-1"),
)
