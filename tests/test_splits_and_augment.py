import numpy as np
import pytest
import torch

from distmtl.config.schema import AugmentConfig
from distmtl.data.augment import Augmenter
from distmtl.data.splits import cv_split, fold_assignment, split_by_group
from distmtl.data.synthetic import generate

GROUPS = np.repeat(np.arange(40), 3)  # 40 original images, 3 augmented copies each


def test_folds_never_split_a_group():
    fold_of = fold_assignment(GROUPS, 5, seed=0)
    for g in np.unique(GROUPS):
        assert len(set(fold_of[GROUPS == g])) == 1
    assert sorted(np.bincount(fold_of).tolist()) == [24] * 5


@pytest.mark.parametrize("fold", range(5))
def test_fold_i_tests_fold_i_plus_one_validates_the_rest_trains(fold):
    fold_of = fold_assignment(GROUPS, 5, seed=0)
    train, val, test = cv_split(GROUPS, 5, fold, seed=0)
    assert set(fold_of[test]) == {fold} and set(fold_of[val]) == {(fold + 1) % 5}
    assert len(train) + len(val) + len(test) == len(GROUPS)
    assert not (set(GROUPS[train]) & set(GROUPS[val]) or set(GROUPS[train]) & set(GROUPS[test]))


def test_random_split_is_by_group_and_respects_a_predefined_test_set():
    train, val, test = split_by_group(GROUPS, 0.2, 0.2, seed=1)
    assert not (set(GROUPS[train]) & set(GROUPS[val]) or set(GROUPS[val]) & set(GROUPS[test]))
    mask = np.arange(len(GROUPS)) >= 90
    train, val, test = split_by_group(GROUPS, 0.2, 0.2, seed=1, test_mask=mask)
    assert test.tolist() == list(range(90, 120)) and max(train.max(), val.max()) < 90


def item(samples, i, labelled):
    return {"image": samples.images[i].float() / 255, "targets": {t: v[i] for t, v in samples.targets.items()},
            "has_target": {t: torch.tensor(t in labelled) for t in samples.targets}}


def test_samples_carrying_a_forbid_task_are_not_augmented():
    samples = generate(4, 32, seed=0)
    augment = Augmenter(AugmentConfig(hflip=1.0), samples.specs)
    original = item(samples, 0, {"fine", "shape"})
    assert augment(original) is original  # regression (shape) defaults to 'forbid'


def test_flip_moves_boxes_and_masks_with_the_image():
    samples = generate(4, 32, seed=0)
    augment = Augmenter(AugmentConfig(hflip=1.0), samples.specs)
    original = item(samples, 1, {"fine", "bbox", "mask"})
    out = augment(original)
    assert torch.equal(out["image"], original["image"].flip(-1))
    assert torch.equal(out["targets"]["mask"], original["targets"]["mask"].flip(-1))
    x0, y0, x1, y1 = original["targets"]["bbox"].tolist()
    assert out["targets"]["bbox"].tolist() == pytest.approx([1 - x1, y0, 1 - x0, y1])
    assert torch.equal(out["targets"]["fine"], original["targets"]["fine"])


def test_policy_overrides_the_kind_default():
    samples = generate(4, 32, seed=0)
    augment = Augmenter(AugmentConfig(hflip=1.0, policy={"shape": "invariant", "fine": "forbid"}), samples.specs)
    assert not torch.equal(augment(item(samples, 2, {"shape"}))["image"], item(samples, 2, {"shape"})["image"])
    kept = item(samples, 2, {"fine"})
    assert augment(kept) is kept


def test_rotation_keeps_the_box_around_the_moved_mask():
    samples = generate(8, 64, seed=3)
    augment = Augmenter(AugmentConfig(rotation=30, translate=0.1), samples.specs)
    torch.manual_seed(0)
    for i in range(8):
        out = augment(item(samples, i, {"bbox", "mask"}))
        ys, xs = torch.nonzero(out["targets"]["mask"], as_tuple=True)
        box = out["targets"]["bbox"] * 64
        assert box[0] <= xs.min() + 1 and box[1] <= ys.min() + 1 and box[2] >= xs.max() and box[3] >= ys.max()
