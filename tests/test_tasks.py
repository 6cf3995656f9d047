import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.metrics import accuracy_score, mean_absolute_error, mean_squared_error, r2_score

from distmtl.data.sample_set import TargetSpec
from distmtl.tasks import build_tasks, selectable_metrics

SPECS = {"cls": TargetSpec("classification", 5), "reg": TargetSpec("regression", 3)}


@pytest.fixture
def tasks():
    return build_tasks(["cls", "reg"], SPECS)


def test_classification_loss_and_accuracy_match_torch_and_sklearn(tasks):
    g = torch.Generator().manual_seed(0)
    logits, target = torch.randn(50, 5, generator=g), torch.randint(0, 5, (50,), generator=g)
    mask = torch.ones(50, dtype=torch.bool)
    total, count = tasks["cls"].masked_loss_terms(logits, target, mask)
    assert torch.isclose(total / count, F.cross_entropy(logits, target))
    acc = tasks["cls"].metrics(tasks["cls"].metric_state(logits, target, mask))["accuracy"]
    assert acc == pytest.approx(accuracy_score(target, logits.argmax(1)))


def test_regression_metrics_match_sklearn(tasks):
    rng = np.random.default_rng(0)
    y = rng.normal(size=(40, 3)) * [1.0, 2.0, 0.5]
    pred = y + rng.normal(scale=0.4, size=(40, 3))
    yt, pt = torch.tensor(y, dtype=torch.float32), torch.tensor(pred, dtype=torch.float32)
    m = tasks["reg"].metrics(tasks["reg"].metric_state(pt, yt, torch.ones(40, dtype=torch.bool)))
    assert m["mse"] == pytest.approx(mean_squared_error(y, pred), rel=1e-5)
    assert m["mae"] == pytest.approx(mean_absolute_error(y, pred), rel=1e-5)
    assert m["r2"] == pytest.approx(r2_score(y, pred, multioutput="uniform_average"), rel=1e-5)
    assert m["med"] == pytest.approx(np.linalg.norm(y - pred, axis=1).mean(), rel=1e-5)
    total, count = tasks["reg"].masked_loss_terms(pt, yt, torch.ones(40, dtype=torch.bool))
    assert (total / count).item() == pytest.approx(mean_squared_error(y, pred), rel=1e-5)


def test_masked_samples_change_neither_loss_nor_metrics(tasks):
    g = torch.Generator().manual_seed(1)
    out, y = torch.randn(10, 3, generator=g), torch.randn(10, 3, generator=g)
    mask = torch.tensor([True, False] * 5)
    garbage = torch.where(mask[:, None], y, torch.full_like(y, 1e6))
    reg = tasks["reg"]
    total, count = reg.masked_loss_terms(out, garbage, mask)
    assert count == 5
    assert torch.isclose(total / count, F.mse_loss(out[mask], y[mask]))
    assert reg.metrics(reg.metric_state(out, garbage, mask)) == pytest.approx(
        reg.metrics(reg.metric_state(out[mask], y[mask], torch.ones(5, dtype=torch.bool))))
    cls = tasks["cls"]
    logits, labels = torch.randn(10, 5, generator=g), torch.randint(0, 5, (10,), generator=g)
    missing = torch.where(mask, labels, torch.full_like(labels, -1))
    total, count = cls.masked_loss_terms(logits, missing, mask)
    assert torch.isclose(total / count, F.cross_entropy(logits[mask], labels[mask]))


def test_masked_loss_of_a_batch_without_targets_is_zero_with_a_gradient(tasks):
    out = torch.randn(4, 3, requires_grad=True)
    total, count = tasks["reg"].masked_loss_terms(out, torch.zeros(4, 3), torch.zeros(4, dtype=torch.bool))
    (total / count.clamp(min=1)).backward()
    assert total.item() == 0 and out.grad is not None and torch.all(out.grad == 0)


def test_metric_states_add_across_batches(tasks):
    """Summing the states of two halves (as the all-reduce across ranks does) gives the whole's metrics."""
    g = torch.Generator().manual_seed(2)
    out, y, mask = torch.randn(30, 3, generator=g), torch.randn(30, 3, generator=g), torch.rand(30, generator=g) > 0.3
    reg = tasks["reg"]
    halves = reg.metric_state(out[:13], y[:13], mask[:13]) + reg.metric_state(out[13:], y[13:], mask[13:])
    assert reg.metrics(halves) == pytest.approx(reg.metrics(reg.metric_state(out, y, mask)))
    assert len(halves) == reg.metric_state_size()


def test_metrics_without_any_target_are_nan(tasks):
    empty = tasks["cls"].metric_state(torch.randn(3, 5), torch.zeros(3, dtype=torch.long),
                                      torch.zeros(3, dtype=torch.bool))
    assert math.isnan(tasks["cls"].metrics(empty)["accuracy"])


def test_selectable_metrics_carry_their_direction(tasks):
    names = selectable_metrics(tasks)
    assert names["val/cls/accuracy"] == "max" and names["val/reg/r2"] == "max"
    assert names["val/reg/med"] == "min" and names["val/loss"] == "min"
