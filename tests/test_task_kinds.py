"""Every task kind: output shape, a loss that falls on a tiny batch, metrics against reference values."""

import math

import pytest
import torch
import torch.nn.functional as F
from sklearn.metrics import balanced_accuracy_score, mean_squared_error, roc_auc_score
from torchvision.ops import box_iou, distance_box_iou_loss

from distmtl.data.sample_set import TargetSpec
from distmtl.features import Features, FeatureShape
from distmtl.tasks import build_tasks
from distmtl.tasks.detection import to_boxes

SHAPE = FeatureShape(vector=8, maps=(4, 6), image_channels=3)
SPECS = {
    "cls": TargetSpec("classification", 3), "bin": TargetSpec("binary", 1), "reg": TargetSpec("regression", 2),
    "seg": TargetSpec("segmentation", 3), "det": TargetSpec("detection", 4), "rec": TargetSpec("reconstruction", 0),
    "rank": TargetSpec("ranking", 1),
}


def features(batch=6, size=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return Features(torch.randn(batch, 8, generator=g),
                    [torch.randn(batch, 4, size // 2, size // 2, generator=g),
                     torch.randn(batch, 6, size // 4, size // 4, generator=g)],
                    (size, size))


def targets(batch=6, size=8):
    g = torch.Generator().manual_seed(1)
    return {
        "cls": torch.randint(0, 3, (batch,), generator=g), "bin": torch.randint(0, 2, (batch,), generator=g),
        "reg": torch.randn(batch, 2, generator=g), "seg": torch.randint(0, 3, (batch, size, size), generator=g),
        "det": torch.tensor([[0.1, 0.2, 0.5, 0.7]] * batch),
        "rec": torch.randint(0, 2, (batch, 3, size, size), generator=g).float(),
        "rank": torch.rand(batch, generator=g),
    }


@pytest.mark.parametrize("name, shape", [("cls", (6, 3)), ("bin", (6, 1)), ("reg", (6, 2)), ("seg", (6, 3, 8, 8)),
                                         ("det", (6, 4)), ("rec", (6, 3, 8, 8)), ("rank", (6, 1))])
def test_output_shapes_and_loss_falls_on_a_tiny_batch(name, shape):
    torch.manual_seed(0)
    task = build_tasks([name], SPECS)[name]
    head = task.head(SHAPE)
    feats, target = features(), targets()[name]
    assert head(feats).shape == shape
    params = list(head.parameters()) + [feats.vector.requires_grad_()] + [m.requires_grad_() for m in feats.maps]
    optimizer = torch.optim.Adam(params, lr=0.05)
    mask = torch.ones(6, dtype=torch.bool)
    losses = []
    for _ in range(80):
        total, count = task.masked_loss_terms(head(feats), target, mask)
        loss = total / count
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.8 * losses[0]


def test_balanced_accuracy_matches_sklearn():
    task = build_tasks(["cls"], SPECS)["cls"]
    g = torch.Generator().manual_seed(3)
    logits, y = torch.randn(60, 3, generator=g), torch.randint(0, 3, (60,), generator=g)
    m = task.metrics(task.metric_state(logits, y, torch.ones(60, dtype=torch.bool)))
    assert m["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(y, logits.argmax(1)))


def test_binary_auc_and_balanced_accuracy_match_sklearn():
    task = build_tasks(["bin"], SPECS)["bin"]
    g = torch.Generator().manual_seed(4)
    y = (torch.rand(500, generator=g) < 0.1).long()  # one-vs-all: 90% negatives
    logits = torch.randn(500, 1, generator=g) + 1.5 * y[:, None]
    m = task.metrics(task.metric_state(logits, y, torch.ones(500, dtype=torch.bool)))
    prob = torch.sigmoid(logits[:, 0]).numpy()
    assert m["auc"] == pytest.approx(roc_auc_score(y, prob), abs=2e-3)
    assert m["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(y, prob >= 0.5))
    always_no = task.metrics(task.metric_state(torch.full((500, 1), -5.0), y, torch.ones(500, dtype=torch.bool)))
    assert always_no["accuracy"] > 0.85 and always_no["balanced_accuracy"] == 0.5


def test_miou_with_an_absent_class_is_a_nan_mean():
    """Two classes present, class 2 neither in truth nor prediction: mIoU averages the two IoUs."""
    task = build_tasks(["seg"], SPECS)["seg"]
    truth = torch.tensor([[[0, 0], [1, 1]]])
    pred = torch.tensor([[[0, 1], [1, 1]]])
    logits = torch.nn.functional.one_hot(pred, 3).permute(0, 3, 1, 2).float()
    m = task.metrics(task.metric_state(logits, truth, torch.ones(1, dtype=torch.bool)))
    assert m["miou"] == pytest.approx((1 / 2 + 2 / 3) / 2)
    assert m["pixel_accuracy"] == pytest.approx(3 / 4)


def test_iou_of_known_boxes():
    task = build_tasks(["det"], SPECS)["det"]
    target = torch.tensor([[0.0, 0.0, 0.5, 0.5], [0.2, 0.2, 0.6, 0.6]])
    # raw outputs whose sigmoid gives cx, cy, w, h of the box [0.25, 0.25, 0.75, 0.75]
    raw = torch.logit(torch.tensor([[0.5, 0.5, 0.5, 0.5]])).expand(2, 4)
    m = task.metrics(task.metric_state(raw, target, torch.ones(2, dtype=torch.bool)))
    pred = torch.tensor([[0.25, 0.25, 0.75, 0.75]])
    expected = box_iou(pred, target)[0].mean().item()
    assert m["iou"] == pytest.approx(expected, rel=1e-5)
    assert m["iou"] == pytest.approx((0.0625 / 0.4375 + 0.1225 / (0.25 + 0.16 - 0.1225)) / 2, rel=1e-5)


def test_detection_masks_images_without_a_box():
    """An image without a box adds nothing to the loss (whatever its placeholder target holds), no gradient,
    and nothing to the IoU: loss and metrics are those of the boxed images alone."""
    task = build_tasks(["det"], SPECS)["det"]
    out = torch.tensor([[0.2, -0.1, 0.3, 0.0], [1.0, 2.0, -1.0, 0.5], [-0.4, 0.6, 0.1, -0.2]], requires_grad=True)
    boxes = torch.tensor([[0.1, 0.1, 0.4, 0.4], [0.3, 0.3, 0.9, 0.9]])
    mask = torch.tensor([True, False, True])
    for missing in ([9.0, 9.0, -9.0, -9.0], [0.0, 0.0, 0.0, 0.0]):
        target = torch.stack([boxes[0], torch.tensor(missing), boxes[1]])
        total, count = task.masked_loss_terms(out, target, mask)
        expected = distance_box_iou_loss(to_boxes(out[[0, 2]]), boxes, reduction="sum")
        assert count == 2 and torch.isclose(total, expected)
        out.grad = None
        total.backward()
        assert torch.equal(out.grad[1], torch.zeros(4)) and out.grad[[0, 2]].abs().sum() > 0
        m = task.metrics(task.metric_state(out.detach(), target, mask))
        iou = box_iou(to_boxes(out.detach()[[0, 2]]), boxes).diagonal()
        assert m["iou"] == pytest.approx(iou.mean().item())
        assert m["hit50"] == pytest.approx((iou >= 0.5).float().mean().item())
    none = task.metrics(task.metric_state(out.detach(), target, torch.zeros(3, dtype=torch.bool)))
    assert math.isnan(none["iou"]) and math.isnan(none["hit50"])


def test_ranking_pair_accuracy():
    task = build_tasks(["rank"], SPECS)["rank"]
    target = torch.tensor([0.1, 0.5, 0.9, 0.3])
    scores = torch.tensor([[0.0], [1.0], [2.0], [3.0]])  # wrong only on pairs involving the last sample
    m = task.metrics(task.metric_state(scores, target, torch.ones(4, dtype=torch.bool)))
    assert m["pair_accuracy"] == pytest.approx(4 / 6)
    masked = task.metrics(task.metric_state(scores, target, torch.tensor([True, True, True, False])))
    assert masked["pair_accuracy"] == 1.0


def test_reconstruction_reports_bce_and_mse():
    """BCE on logits and MSE of the sigmoid, per pixel, averaged over the samples that carry a target."""
    task = build_tasks(["rec"], SPECS)["rec"]
    g = torch.Generator().manual_seed(5)
    target = torch.rand(3, 3, 4, 4, generator=g)
    logits = torch.randn(3, 3, 4, 4, generator=g)
    mask = torch.tensor([True, False, True])
    m = task.metrics(task.metric_state(logits, target, mask))
    kept = mask.nonzero().flatten()
    bce = F.binary_cross_entropy_with_logits(logits[kept], target[kept]).item()
    mse = mean_squared_error(target[kept].flatten().numpy(), torch.sigmoid(logits[kept]).flatten().numpy())
    assert m["bce"] == pytest.approx(bce, rel=1e-5) and m["mse"] == pytest.approx(mse, rel=1e-5)
    total, count = task.masked_loss_terms(logits, target, mask)
    assert count == 2 and (total / count).item() == pytest.approx(bce, rel=1e-5)
    perfect = task.metrics(task.metric_state(torch.logit(target.clamp(0.01, 0.99)), target, mask))
    assert perfect["mse"] < 1e-4 < m["mse"]
