"""Harmonic Networks (Worrall et al., 2017): rotation equivariance by circular harmonics."""
from .base import Arm, Claim, cifar_profiles, register

PAPER = "Worrall, Garbin, Turmukhambetov, Brostow. Harmonic Networks: Deep Translation and Rotation " \
        "Equivariance. CVPR 2017"

register(
    Claim("hnet_rotation", PAPER, "Harmonic Networks", "an H-Net trained on upright images keeps more of its "
          "accuracy on rotated test images than a CNN (rotated / upright top-1)", metric="rotation_retention",
          direction="greater",
          arms=[Arm("hnet", config="hnet_vs_cnn_rotated", run="hnet"),
                Arm("resnet20", config="hnet_vs_cnn_rotated", run="resnet20")],
          profiles=cifar_profiles(200, 3, cpu_lr=2e-3, rotation_angles=[0, 45, 90, 180]),
          gpu_priority=1,
          note="near chance, retention tends to 1 for any model: read it with each arm's upright top-1"),
)
