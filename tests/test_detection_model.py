"""SSDLite: the published size, the layout of its output and default boxes, and any backbone."""
import pytest
import torch

import operad
from operad import Field
from operad.models import create_model, model_term
from operad.models.ssdlite import default_boxes, ssdlite_backbone


@pytest.mark.parametrize("num_classes,reduce_lowest,size,params,macs", [
    # the paper's table 6 (MobileNetV2 + SSDLite): "4.3M parameters, 0.8B MAdds"; 80 classes + background,
    # TF object-detection config (3 boxes on the lowest level), 320x320
    (80, True, 320, 4_337_013, 788_830_144),
    (80, False, 320, 4_484_148, 847_582_144),
    (80, False, 300, 4_484_148, 787_634_096),
])
def test_published_size(num_classes, reduce_lowest, size, params, macs):
    term = model_term("ssdlite_mobilenetv2", num_classes=num_classes, reduce_lowest=reduce_lowest)
    c = operad.cost(term, Field(3), size=(size, size))
    assert (c.params, c.macs) == (params, macs)
    if reduce_lowest:
        assert round(c.params / 1e6, 1) == 4.3 and round(c.macs / 1e9, 1) == 0.8


def test_levels_follow_the_paper():
    term = model_term("ssdlite_mobilenetv2")
    t = Field(3)
    types = term._types(t)
    assert [o.channels for _, o, _ in types] == [576, 1280, 512, 256, 256, 128]
    assert term.level_sizes(t, (320, 320)) == [(20, 20), (10, 10), (5, 5), (3, 3), (2, 2), (1, 1)]
    assert term.level_sizes(t, (300, 300))[0] == (19, 19)
    assert term.anchors(t) == (3, 6, 6, 6, 6, 6)


def test_output_matches_default_boxes_and_counter():
    torch.set_num_threads(1)
    m = create_model("ssdlite_mobilenetv2", num_classes=3).eval()
    x = torch.randn(1, 3, 96, 96)
    y = m(x)
    boxes = default_boxes(m.term, (96, 96))
    assert y.shape == (1, 4 + 4, boxes.shape[0])
    assert operad.cost(m, size=(96, 96)) == operad.count(m, x)
    # order (level, row, column, box): the first level's boxes walk along the first row
    assert torch.allclose(boxes[:3, :2], torch.tensor([[1 / 12, 1 / 12]] * 3))
    assert boxes[3, 0] > boxes[0, 0] and boxes[3, 1] == boxes[0, 1]
    # a head's output for one pixel lands at that pixel's boxes
    level0 = m.stages[0](x)
    h0 = m.heads[0](level0)
    a = 3
    assert torch.equal(y[0, :4, 5 * a:6 * a], h0[0, :4 * a, 0, 5].reshape(a, 4).T)  # row 0, column 5
    assert torch.equal(y[0, 4:, 7 * a:8 * a], h0[0, 4 * a:, 1, 1].reshape(a, 4).T)  # row 1, column 1 (classes)
    assert (boxes[:, 2:] > 0).all() and (boxes <= 1).all()


def test_any_backbone():
    term = ssdlite_backbone("resnet18", num_classes=5)
    m = term.bind(Field(3)).eval()
    y = m(torch.randn(1, 3, 64, 64))
    assert y.shape[:2] == (1, 10) and y.shape[2] == default_boxes(term, (64, 64)).shape[0]


def test_summary_covers_the_heads_level_by_level():
    m = create_model("ssdlite_mobilenetv2")
    s = operad.summary(m, (1, 3, 320, 320), max_depth=1)
    rows = {r.path: r for r in s.rows}
    assert [r.path for r in s.rows[1:4]] == ["stage0", "head0", "stage1"]
    assert rows["head0"].in_type == "Field(576)" and rows["head0"].out_type == "Field(255)"  # 3 boxes x (4 + 81)
    # box and class branches: a 3x3 depthwise each, then 1x1 convs to 12 and 243 channels, at 20x20
    assert rows["head0"].macs == 20 * 20 * (2 * 576 * 9 + 576 * (12 + 243))
    assert sum(r.params for r in s.rows[1:]) == s.total.params
    assert sum(r.macs for r in s.rows[1:]) == s.total.macs


def test_prediction_layers_start_near_zero():
    """The heads' last 1x1 convs start at N(0, 0.03^2) (torchvision's SSDLite), so box offsets and
    logits start near 0 (He init on such a narrow layer puts them several units away)."""
    torch.manual_seed(0)
    m = create_model("ssdlite_mobilenetv2", num_classes=4, width=0.5)
    last = [mod for name, mod in m.named_modules() if name.startswith("head") and isinstance(mod, torch.nn.Conv2d)
            and mod.kernel_size == (1, 1)]
    assert len(last) == 12 and all(0.02 < float(c.weight.detach().std()) < 0.04 for c in last)
    y = m(torch.randn(2, 3, 128, 128))
    assert y.abs().mean() < 0.5
