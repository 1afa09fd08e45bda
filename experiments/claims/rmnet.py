"""RMNet (Meng et al., 2021): removing residual connections after training is exact and faster."""
from ._common import latency_ratio, rewrite_error
from .base import Claim, register

PAPER = "Meng, Chen, Zhang, Li, Ding, Huang, Wang. RMNet: Equivalently Removing Residual Connection from " \
        "Networks. 2021"


def _plain():
    from operad.models import create_model
    from operad.rewrite import remove_residuals

    from ._common import randomize_bn

    return remove_residuals(randomize_bn(create_model("resnet20"), 0))


def _res():
    from operad.models import create_model
    from operad.rewrite import fuse

    from ._common import randomize_bn

    return fuse(randomize_bn(create_model("resnet20"), 0))


register(
    Claim("rmnet_equivalence", PAPER, "RMNet", "the RM operation turns a ResNet into a plain network with the "
          "same outputs (an exact rewrite)", metric="max relative output change",
          measure=rewrite_error("resnet20", "remove_residuals"), bound=1e-9, direction="less", gpu_priority=0,
          note="float64, random weights and BN statistics, per seed"),
    Claim("rmnet_fuse_equivalence", PAPER, "RMNet", "folding batch norms into convolutions (the deployment "
          "step RMNet builds on) is exact", metric="max relative output change",
          measure=rewrite_error("resnet56", "fuse"), bound=1e-9, direction="less"),
    Claim("rmnet_speed", PAPER, "RMNet", "the RM-plain ResNet-20 infers faster than the residual one "
          "(both deployed: batch norms folded)",
          metric="latency ratio (plain / residual)", measure=latency_ratio(_plain, _res), bound=1.0,
          direction="less", gpu_priority=4, note="CPU, one thread, batch 32 at 32x32; RM widens the convolutions to carry the identity, so it "
               "pays off where memory traffic, not arithmetic, bounds the speed (the paper times GPUs)"),
)
