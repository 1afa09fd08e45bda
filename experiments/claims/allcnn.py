"""All-CNN-C (Springenberg et al., 2015): strided convolutions in place of max-pooling."""
from ._common import model_cost
from .base import Arm, Claim, cifar_profiles, register

PAPER = "Springenberg, Dosovitskiy, Brox, Riedmiller. Striving for Simplicity: The All Convolutional Net. ICLR 2015"

# 6,000 images a run at batch 32 (about 190 steps); at 1,800 images both arms stayed near chance
_PROFILES = cifar_profiles(200, 3, cpu_batch=32, model_args={"bn": True})
_PROFILES["smoke"]["model_args"] = {"bn": True}

register(
    Claim("allcnn_c_params", PAPER, "All-CNN-C", "All-CNN-C has about 1.4M parameters (Table 3)",
          metric="params", measure=model_cost("allcnn_c", "params"), published=1.4e6, rel_tol=0.05),
    Claim("allcnn_vs_maxpool", PAPER, "All-CNN-C", "All-CNN-C (strided convolutions only) matches or beats "
          "its max-pooling base network, Model C, on CIFAR-10 (9.08% vs 9.74% error without augmentation, "
          "Table 3)", metric="top1", direction="noninferior", margin=0.01,
          arms=[Arm("allcnn_c", config="allcnn_vs_maxpool", run="allcnn_c"),
                Arm("allcnn_c_maxpool", config="allcnn_vs_maxpool", run="allcnn_c",
                    overrides={"model": "allcnn_c_maxpool"})],
          profiles=_PROFILES, gpu_priority=3,
          note="non-inferiority within 1 point of top-1; both arms are the registry's matched pair (same "
               "dropout and norm settings, only the downsampling differs); the cpu and smoke profiles add batch "
               "norm to both to speed up the first steps"),
)
