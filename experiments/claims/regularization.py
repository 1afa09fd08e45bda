"""Regularization methods (issue 19's study): each method against the same network and schedule without it.

Arms come from ``experiments/configs/regularization_<method>.toml`` (runs
``baseline`` and the method). Every ResNet-20 baseline has the same settings,
so its arm is named alike in every claim and its runs are shared (trained once
per seed). The published anchors are paper-scale figures (the ``full``
profile: 180 epochs, full data); the ``cpu`` profile (3 epochs on 2,000
images) mostly measures how much harder a method makes early training.
Survey: Santos, Papa. Avoiding Overfitting: A Survey on Regularization Methods for CNNs. ACM CSUR 2022.
"""
from __future__ import annotations

from .base import Arm, Claim, cifar_profiles, register

_NOTE = "cpu profile: 3 epochs on 2,000 images, far from overfitting, so a regularizer is not expected to help " \
        "there (experiments/results/cpu/regularization); the anchors need the gpu/full profiles"

_PROF = cifar_profiles(200, 3)  # the configs' [cpu] tables
_R20_BASE = "resnet20_baseline"  # one name for every ResNet-20 baseline: its runs are shared across claims

# method -> (system, paper, sentence, subject run, baseline arm name, gpu priority, extra kwargs)
_METHODS = {
    "cutout": ("Cutout", "DeVries, Taylor. Improved Regularization of Convolutional Neural Networks with Cutout. 2017",
               "Cutout (a 16x16 square masked out) lowers CIFAR-10 error (ResNet-18: 4.72% -> 3.99%)"),
    "random_erasing": ("RandomErasing", "Zhong, Zheng, Kang, Li, Yang. Random Erasing Data Augmentation. AAAI 2020",
                       "Random Erasing (p 0.5) lowers CIFAR-10 error (WRN-28-10: 3.80% -> 3.08%)"),
    "mixup": ("Mixup", "Zhang, Cisse, Dauphin, Lopez-Paz. mixup: Beyond Empirical Risk Minimization. ICLR 2018",
              "Mixup (alpha 1) lowers error (PyramidNet-200 on CIFAR-100: 16.45% -> 15.63%, as reported by CutMix)"),
    "cutmix": ("CutMix", "Yun, Han, Oh, Chun, Choe, Yoo. CutMix: Regularization Strategy to Train Strong Classifiers "
               "with Localizable Features. ICCV 2019",
               "CutMix (alpha 1) lowers error (PyramidNet-200 on CIFAR-100: 16.45% -> 14.23%)"),
    "dropblock": ("DropBlock", "Ghiasi, Lin, Le. DropBlock: A regularization method for convolutional networks. "
                  "NeurIPS 2018", "DropBlock lowers error (PyramidNet-200 on CIFAR-100: 16.45% -> 15.73%, as "
                  "reported by CutMix; ResNet-50 ImageNet top-1 76.51% -> 78.13%)"),
    "autoaugment": ("AutoAugment", "Cubuk, Zoph, Mane, Vasudevan, Le. AutoAugment: Learning Augmentation Strategies "
                    "from Data. CVPR 2019", "AutoAugment's CIFAR-10 policy lowers CIFAR-10 error (WRN-28-10: 3.9% -> "
                    "2.6%; 1.5% with PyramidNet+ShakeDrop)"),
    "randaugment": ("RandAugment", "Cubuk, Zoph, Shlens, Le. RandAugment: Practical automated data augmentation "
                    "with a reduced search space. NeurIPS 2020", "RandAugment (N 2, M 9) lowers CIFAR-10 error as "
                    "AutoAugment does without a policy search (WRN-28-10: 96.1% -> 97.3% accuracy)"),
    "trivialaugment": ("TrivialAugment", "Mueller, Hutter. TrivialAugment: Tuning-free Yet State-of-the-Art Data "
                       "Augmentation. ICCV 2021", "TrivialAugment (one op, uniform magnitude) lowers CIFAR-10 error "
                       "at least as much as RandAugment"),
    "label_smoothing": ("label smoothing", "Szegedy, Vanhoucke, Ioffe, Shlens, Wojna. Rethinking the Inception "
                        "Architecture for Computer Vision. CVPR 2016", "label smoothing 0.1 lowers error (about "
                        "0.2 points of ImageNet top-1 error for Inception-v2)"),
    "tsla": ("TSLA", "Xu, Xu, Qi, Li, Jin. Towards Understanding Label Smoothing (two-stage label smoothing). 2020",
             "two-stage label smoothing (0.1, then hard labels for the last 30% of epochs) lowers CIFAR-10 error"),
    "disturblabel": ("DisturbLabel", "Xie, Wang, Wei, Wang, Tian. DisturbLabel: Regularizing CNN on the Loss Layer. "
                     "CVPR 2016", "DisturbLabel (10% of labels redrawn uniformly) lowers CIFAR-10 error"),
    "spatial_dropout": ("spatial dropout", "Tompson, Goroshin, Jain, LeCun, Bregler. Efficient Object Localization "
                        "Using Convolutional Networks (SpatialDropout). CVPR 2015", "spatial dropout (whole "
                        "channels, p 0.1, on stages 2 and 3) lowers CIFAR-10 error"),
    "stochastic_depth": ("stochastic depth", "Huang, Sun, Liu, Sedra, Weinberger. Deep Networks with Stochastic "
                         "Depth. ECCV 2016", "stochastic depth (linear decay to p_L 0.2) lowers CIFAR-10 error of "
                         "ResNets (ResNet-110: 6.41% -> 5.25%)"),
    "shake_shake": ("Shake-Shake", "Gastaldi. Shake-Shake regularization. 2017", "Shake-Shake (Shake-Shake-Image) "
                    "lowers the CIFAR-10 error of Shake-Shake-26 2x32d against the same net with its branches "
                    "summed evenly (published: 3.55% for 2x32d, 2.86% for 2x96d)"),
    "shakedrop": ("ShakeDrop", "Yamada, Iwamura, Akiba, Kise. ShakeDrop Regularization for Deep Residual Learning. "
                  "IEEE Access 2019", "ShakeDrop (p linear to 0.5) lowers the CIFAR-10 error of PyramidNet "
                  "(here PyramidNet-20, alpha 48, against p = 0)"),
}

_PRIORITY = {m: 20 + i for i, m in enumerate(
    ("cutout", "mixup", "cutmix", "random_erasing", "autoaugment", "label_smoothing", "dropblock", "stochastic_depth",
     "randaugment", "trivialaugment", "tsla", "disturblabel", "shakedrop", "shake_shake", "spatial_dropout"))}


def _claim(method: str) -> Claim:
    system, paper, sentence = _METHODS[method]
    config = f"regularization_{method}"
    base = {"shake_shake": "shake_shake_26_2x32d_even", "shakedrop": "pyramidnet20_a48_p0"}.get(method, _R20_BASE)
    prof, note, arm_prof = _PROF, _NOTE, {}
    if method == "tsla":  # hard labels for the last 30% of each profile's epochs
        arm_prof = {"smoke": {"tsla_until": 0.7}, "gpu": {"tsla_until": 0.7 * prof["gpu"]["epochs"]}}
    return Claim(f"{method}_vs_baseline", paper, system, sentence, metric="top1", direction="greater",
                 arms=[Arm(method, config=config, run=method, profiles=arm_prof),
                       Arm(base, config=config, run="baseline")],
                 profiles=prof, gpu_priority=_PRIORITY[method], note=note)


register(*(_claim(m) for m in _METHODS))
