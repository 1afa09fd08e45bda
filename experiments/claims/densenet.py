"""DenseNet-BC, HarDNet and ThreshNet: published sizes and costs."""
from ._common import latency_ratio, model_cost
from .base import Claim, register

DENSENET = "Huang, Liu, van der Maaten, Weinberger. Densely Connected Convolutional Networks. CVPR 2017"
HARDNET = "Chao, Kao, Ruan, Huang, Lin. HarDNet: A Low Memory Traffic Network. ICCV 2019"
THRESHNET = "Ju, Luo, Lin, Wu. ThreshNet: An Efficient DenseNet Using Threshold Mechanism. 2022"


def _create(name):
    def f():
        from operad.models import create_model

        return create_model(name)
    return f


register(
    Claim("densenet_bc100_params", DENSENET, "DenseNet-BC", "DenseNet-BC (L=100, k=12) has 0.8M parameters "
          "(Table 2)", metric="params", measure=model_cost("densenet_bc100_k12", "params"), published=0.8e6,
          rel_tol=0.05),
    Claim("densenet121_params", DENSENET, "DenseNet-BC", "DenseNet-121 (ImageNet) has 8.0M parameters",
          metric="params", measure=model_cost("densenet121", "params"), published=7.98e6, rel_tol=0.01),
    Claim("hardnet68_params", HARDNET, "HarDNet", "HarDNet-68 has 17.6M parameters (Table 5)",
          metric="params", measure=model_cost("hardnet68", "params"), published=17.6e6, rel_tol=0.01),
    Claim("hardnet68_macs", HARDNET, "HarDNet", "HarDNet-68 costs 4.3 GMACs at 224x224 (Table 5)",
          metric="MACs", measure=model_cost("hardnet68", "macs"), published=4.3e9, rel_tol=0.02),
    Claim("hardnet85_params", HARDNET, "HarDNet", "HarDNet-85 has 36.7M parameters (Table 5)",
          metric="params", measure=model_cost("hardnet85", "params"), published=36.7e6, rel_tol=0.01),
    Claim("threshnet79_latency", THRESHNET, "ThreshNet", "ThreshNet-79 infers faster than HarDNet-68 on "
          "CIFAR-sized inputs", metric="latency ratio", measure=latency_ratio(_create("threshnet79"),
                                                                                _create("hardnet68_cifar")),
          bound=1.0, direction="less", gpu_priority=12,
          note="CPU latency, one thread, batch 32, 32x32; the paper times a GPU"),
)
