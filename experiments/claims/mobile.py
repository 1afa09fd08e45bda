"""Efficient networks: MobileNetV2, GhostNet and G-Ghost, SKNet, MGIC."""
from ._common import cost_ratio, model_cost
from .base import Arm, Claim, cifar_profiles, register

MOBILENETV2 = "Sandler, Howard, Zhu, Zhmoginov, Chen. MobileNetV2: Inverted Residuals and Linear Bottlenecks. CVPR 2018"
GHOST = "Han, Wang, Tian, Guo, Xu, Xu. GhostNet: More Features from Cheap Operations. CVPR 2020"
GGHOST = "Han, Guo, Wang, Wu, Xu, Xu. GhostNets on Heterogeneous Devices via Cheap Operations (G-Ghost). IJCV 2022"
SKNET = "Li, Wang, Hu, Yang. Selective Kernel Networks. CVPR 2019"
MGIC = "Eliasof, Ephrath, Ruthotto, Treister. MGIC: Multigrid-in-Channels Neural Network Architectures. 2020"

# 6,000 images a run at batch 32 (about 190 steps): at 600 images and 30 steps every arm stayed at chance
_PROFILES = cifar_profiles(200, 3, cpu_batch=32)
_EARLY = ("; at the cpu profile ResNet-56 is early in its training (about 17% top-1), so there the verdict says "
          "whether the subject learns at least as fast at first, not whether it matches the converged accuracy")


def _vs_resnet56(name, subject, paper, system, sentence, priority, run=""):
    ov = {"model": subject} if run else {}
    return Claim(name, paper, system, sentence, metric="top1", direction="noninferior", margin=0.01,
                 arms=[Arm(subject, config="efficient_vs_resnet", run=run or subject, overrides=ov),
                       Arm("resnet56", config="efficient_vs_resnet", run="resnet56")],
                 profiles=_PROFILES, gpu_priority=priority,
                 note="non-inferiority within 1 point of top-1" + _EARLY)


register(
    Claim("mobilenetv2_macs", MOBILENETV2, "MobileNetV2", "MobileNetV2 1.0 costs 300M multiply-adds at 224x224 "
          "(Table 4)", metric="MACs", measure=model_cost("mobilenetv2_100", "macs"), published=300e6, rel_tol=0.01),
    Claim("mobilenetv2_params", MOBILENETV2, "MobileNetV2", "MobileNetV2 1.0 has 3.4M parameters (Table 4)",
          metric="params", measure=model_cost("mobilenetv2_100", "params"), published=3.4e6, rel_tol=0.01,
          note="the reference implementations (torchvision, timm) also count 3.50M; the paper rounds differently"),
    Claim("ghostnet_macs", GHOST, "GhostNet", "GhostNet 1.0x costs 141M FLOPs (multiply-adds) at 224x224 (Table 7)",
          metric="MACs", measure=model_cost("ghostnet_100", "macs"), published=141e6, rel_tol=0.01),
    Claim("ghostnet_params", GHOST, "GhostNet", "GhostNet 1.0x has 5.2M parameters (Table 7)",
          metric="params", measure=model_cost("ghostnet_100", "params"), published=5.2e6, rel_tol=0.01),
    Claim("ghost_resnet56_macs", GHOST, "GhostNet", "Ghost-ResNet-56 (s=2) costs 63M FLOPs on CIFAR-10 (Table 4)",
          metric="MACs", measure=model_cost("ghost_resnet56", "macs"), published=63e6, rel_tol=0.02),
    Claim("ghost_resnet56_params", GHOST, "GhostNet", "Ghost-ResNet-56 (s=2) has 0.43M parameters (Table 4)",
          metric="params", measure=model_cost("ghost_resnet56", "params"), published=0.43e6, rel_tol=0.02),
    _vs_resnet56("ghost_resnet56_vs_resnet56", "ghost_resnet56", GHOST, "GhostNet",
                 "Ghost-ResNet-56 keeps ResNet-56's CIFAR-10 accuracy (92.7% vs 93.0%) at half the cost", 6),
    Claim("g_ghost_resnet56_cost", GGHOST, "G-Ghost", "the G-Ghost stage (cheap features for part of the "
          "channels) cuts ResNet-56's MACs by more than half", metric="MACs ratio to ResNet-56",
          measure=cost_ratio("g_ghost_resnet56", "resnet56", "macs"), bound=0.5, direction="less"),
    _vs_resnet56("g_ghost_resnet56_vs_resnet56", "g_ghost_resnet56", GGHOST, "G-Ghost",
                 "G-Ghost-ResNet-56 keeps ResNet-56's CIFAR-10 accuracy at lower cost", 9, run="ghost_resnet56"),
    Claim("sknet50_params", SKNET, "SKNet", "SKNet-50 has 27.5M parameters (Table 2)", metric="params",
          measure=model_cost("sknet50", "params"), published=27.5e6, rel_tol=0.01),
    Claim("sknet50_macs", SKNET, "SKNet", "SKNet-50 costs 4.47 GFLOPs (multiply-adds) at 224x224 (Table 2)",
          metric="MACs", measure=model_cost("sknet50", "macs"), published=4.47e9, rel_tol=0.01),
    Claim("mgic_resnet56_params", MGIC, "MGIC", "multigrid-in-channels blocks need fewer parameters than the "
          "ResNet-56 they replace (parameters grow like c log c instead of c^2)", metric="params ratio to ResNet-56",
          measure=cost_ratio("mgic_resnet56", "resnet56", "params"), bound=1.0, direction="less"),
    _vs_resnet56("mgic_resnet56_vs_resnet56", "mgic_resnet56", MGIC, "MGIC",
                 "MGIC-ResNet-56 keeps ResNet-56's CIFAR-10 accuracy with fewer parameters", 7),
    Claim("mobilenetv2_cifar_vs_resnet56", MOBILENETV2, "MobileNetV2", "MobileNetV2 (CIFAR stem) reaches "
          "ResNet-56's CIFAR-10 accuracy", metric="top1", direction="noninferior", margin=0.01,
          arms=[Arm("mobilenetv2_100", config="efficient_vs_resnet", run="mobilenetv2_100"),
                Arm("resnet56", config="efficient_vs_resnet", run="resnet56")],
          profiles=_PROFILES, gpu_priority=10, note="non-inferiority within 1 point of top-1" + _EARLY),
    Claim("deeplabv3_vs_lraspp_camvid", MOBILENETV2, "MobileNetV2", "Mobile DeepLabv3 (ASPP) on MobileNetV2 "
          "segments CamVid better than the LR-ASPP head", metric="miou", direction="greater",
          arms=[Arm("deeplabv3_mobilenetv2", config="camvid_segmentation", run="deeplabv3_mobilenetv2"),
                Arm("lraspp_mobilenetv2", config="camvid_segmentation", run="lraspp_mobilenetv2")],
          profiles={"smoke": {"subset": 2, "epochs": 1, "batch_size": 2, "crop_size": [64, 64],
                              "scale_range": [0.2, 0.2], "threads": 1, "device": "cpu", "measure_speed": False,
                              "plot_every": 0, "checkpoint_every": 0, "eval_every": 1, "val_subset": 2},
                    "cpu": {"subset": 0, "val_subset": 0, "epochs": 12, "batch_size": 8, "crop_size": [120, 160],
                            "scale_range": [0.33, 0.4], "threads": 1, "device": "cpu", "measure_speed": False,
                            "plot_every": 0, "checkpoint_every": 0, "eval_every": 12},
                    "gpu": {"epochs": 30, "measure_speed": False, "plot_every": 0, "eval_every": 30},
                    "full": {}},
          gpu_priority=11, dataset_classes=0,
          note="cpu profile: all 367 training frames as 120x160 crops at a third of the resolution, 12 epochs; "
               "mIoU on all 101 validation frames at full size"),
)
