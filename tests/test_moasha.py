"""Multi-objective ASHA's promotion rule and rungs, and the hypervolume of a front, in-process (no Ray cluster)."""

from types import SimpleNamespace

import numpy as np
import pytest
from ray.tune.schedulers import TrialScheduler

from distmtl.tune.hypervolume import derived_reference, front_hypervolume, hypervolume
from distmtl.tune.moasha import MultiObjectiveASHA, continues, crowding_distance

MAX_MIN = ["max", "min"]  # e.g. accuracy up, MAE down


def test_a_dominated_trial_stops_and_a_non_dominated_one_continues():
    """At η = 2 with two trials recorded (N = 3, top ⌈3/2⌉ = 2 go on): a newcomer both beat stops; one that
    trades off against the better of them (best accuracy, worst MAE) is on the first front and goes on."""
    recorded = [[0.8, 0.1], [0.7, 0.2]]
    assert not continues([0.6, 0.3], recorded, MAX_MIN, 2)
    assert continues([0.9, 0.3], recorded, MAX_MIN, 2)
    assert continues([0.75, 0.15], recorded, MAX_MIN, 2)  # second front: one trial ahead of it, 1 < 2


def test_directions_decide_domination():
    """The same numbers: dominated when accuracy is maximised and MAE minimised, dominating when reversed."""
    assert not continues([0.6, 0.3], [[0.8, 0.1]], ["max", "min"], 2)
    assert continues([0.6, 0.3], [[0.8, 0.1]], ["min", "max"], 2)


def test_within_a_front_the_larger_crowding_distance_goes_on_and_an_exact_tie_goes_to_the_newcomer():
    """Five mutually non-dominated trials (N = 5, top 3): the two extremes rank first (infinite crowding
    distance); a newcomer in the empty middle of the front goes on, one squeezed between two recorded trials
    stops. A newcomer equal to the one recorded trial ties with it and goes on, as a value equal to ASHA's
    cut-off does."""
    recorded = [[0.0, 1.0], [1.0, 0.0], [0.9, 0.12], [0.88, 0.14]]
    assert continues([0.5, 0.55], recorded, ["max", "max"], 2)
    assert not continues([0.89, 0.13], recorded, ["max", "max"], 2)
    assert continues([0.5, 0.5], [[0.5, 0.5]], ["max", "max"], 2)
    assert not continues([0.4, 0.5], [[0.5, 0.5]], ["max", "max"], 2)


def test_crowding_distance_by_hand():
    """Sorted along x: 0, 0.5, 0.88, 0.9, 1 (range 1); along y: 0, 0.12, 0.14, 0.55, 1. The middle point's
    neighbours are 0.88 apart on x and 0.86 on y."""
    points = np.array([[0.0, 1.0], [1.0, 0.0], [0.9, 0.12], [0.88, 0.14], [0.5, 0.55]])
    distance = crowding_distance(points)
    assert np.isinf(distance[:2]).all()
    assert distance[4] == pytest.approx(0.88 + 0.86)
    assert distance[3] == pytest.approx((0.9 - 0.5) + (0.55 - 0.12))
    assert distance[2] == pytest.approx((1.0 - 0.88) + (0.14 - 0.0))


def test_a_failed_report_stops_unless_alone():
    assert not continues([float("-inf"), float("inf")], [[0.1, 0.9]], MAX_MIN, 2)
    assert continues([float("-inf"), float("inf")], [], MAX_MIN, 2)


def report(epochs, accuracy, mae):
    return {"epochs_done": epochs, "acc": accuracy, "mae": mae}


def test_the_scheduler_keeps_asha_rungs_and_decides_asynchronously():
    """grace 1, η 2, max_t 8: milestones 1, 2, 4 (and 8, where every trial ends). The first trial at a rung
    goes on; a later one is judged at once against those recorded there; a trial is judged once per rung."""
    scheduler = MultiObjectiveASHA([("acc", "max"), ("mae", "min")], time_attr="epochs_done", max_t=8,
                                   grace_period=1, reduction_factor=2)
    assert sorted(m for m, _ in scheduler.rungs) == [1, 2, 4, 8]
    a, b, c = (SimpleNamespace(trial_id=t) for t in "abc")
    go, stop = TrialScheduler.CONTINUE, TrialScheduler.STOP
    assert scheduler.on_trial_result(None, a, report(1, 0.5, 0.5)) == go
    assert scheduler.on_trial_result(None, b, report(1, 0.4, 0.6)) == stop  # dominated by a at milestone 1
    assert scheduler.on_trial_result(None, c, report(1, 0.6, 0.7)) == go  # trades off with a
    assert scheduler.on_trial_result(None, a, report(2, 0.6, 0.4)) == go  # first at milestone 2
    assert scheduler.on_trial_result(None, a, report(3, 0.1, 0.9)) == go  # no new milestone: not judged
    assert scheduler.on_trial_result(None, c, report(2, 0.5, 0.5)) == stop  # a (0.6, 0.4) dominates it there
    assert scheduler.on_trial_result(None, a, report(8, 0.7, 0.3)) == stop  # max_t reached
    assert scheduler.stopped == {"b", "c"}
    assert {t for _, recorded in scheduler.rungs for t in recorded} == {"a", "b", "c"}
    assert not scheduler.set_search_properties("acc", "max") and scheduler.set_search_properties(None, None)
    assert scheduler.on_trial_result(None, a, {"epochs_done": 4, "acc": 0.7}) == go  # an objective missing


def test_hypervolume_of_a_2d_front_by_hand():
    """Both maximised from (0, 0): the staircase (1, 3), (2, 2), (3, 1) covers 1·3 + 1·2 + 1·1 = 6; a dominated
    point and one beyond the reference add nothing. Minimising the first objective from 4 mirrors it."""
    front = [[1.0, 3.0], [2.0, 2.0], [3.0, 1.0]]
    assert hypervolume(front, [0.0, 0.0], ["max", "max"]) == pytest.approx(6.0)
    assert hypervolume(front + [[1.0, 1.0], [-1.0, 5.0]], [0.0, 0.0], ["max", "max"]) == pytest.approx(6.0)
    assert hypervolume([[3.0, 3.0], [2.0, 2.0], [1.0, 1.0]], [4.0, 0.0], ["min", "max"]) == pytest.approx(6.0)
    assert hypervolume([], [0.0, 0.0], ["max", "max"]) == 0.0


def test_a_derived_reference_lies_a_tenth_of_the_range_beyond_the_worst_trial():
    """Accuracy (max) 0.2–0.6 and MAE (min) 0.1–0.5: reference (0.16, 0.54); the better point alone
    dominates the other, so the volume is (0.6 − 0.16)·(0.54 − 0.1)."""
    points = [[0.2, 0.5], [0.6, 0.1]]
    assert derived_reference(points, MAX_MIN) == pytest.approx([0.16, 0.54])
    volume, reference = front_hypervolume(points + [[float("nan"), 0.0]], MAX_MIN)
    assert reference == pytest.approx([0.16, 0.54]) and volume == pytest.approx(0.44 * 0.44)
    assert front_hypervolume(points, MAX_MIN, [0.0, 1.0]) == (pytest.approx(0.6 * 0.9), [0.0, 1.0])
    assert front_hypervolume([[float("nan"), 0.0]], MAX_MIN) is None
