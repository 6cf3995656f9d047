"""The one aggregation helper of tables: mean, sample std, n and a paired t-test, against hand computations."""

import math

import pytest

from distmtl.evaluation.statistics import paired, summarize


def test_summary_is_the_mean_and_the_sample_std():
    # values 1, 2, 4: mean 7/3; squared deviations 16/9 + 1/9 + 25/9 = 42/9, over n − 1 = 2 → 7/3
    summary = summarize([1.0, 2.0, 4.0])
    assert summary.n == 3
    assert summary.mean == pytest.approx(7 / 3)
    assert summary.std == pytest.approx(math.sqrt(7 / 3))
    assert summary.cell(2) == "2.33 ± 1.53"


def test_one_value_has_no_spread_to_show():
    summary = summarize([0.25])
    assert (summary.mean, summary.n) == (0.25, 1) and math.isnan(summary.std)
    assert summary.cell() == "0.250"


def test_missing_values_are_left_out_and_nothing_gives_an_empty_cell():
    assert summarize([1.0, math.nan, 3.0]).n == 2
    assert summarize([1.0, math.nan, 3.0]).std == pytest.approx(math.sqrt(2))
    assert summarize([]).cell() == "" and summarize([math.nan]).n == 0


def test_paired_comparison_matches_a_hand_computed_t_test():
    # differences 2, 3, 2: mean 7/3, sample sd sqrt(1/3), se = sd/sqrt(3) = 1/3 → t = 7 with 2 degrees of freedom;
    # the t(2) CDF is 1/2 + t/(2·sqrt(t² + 2)), so the two-sided p = 1 − 7/sqrt(51)
    result = paired([3.0, 5.0, 6.0], [1.0, 2.0, 4.0])
    assert result.n == 3
    assert result.mean_difference == pytest.approx(7 / 3)
    assert result.t == pytest.approx(7.0)
    assert result.p == pytest.approx(1 - 7 / math.sqrt(51))


def test_paired_comparison_of_one_pair_has_no_test_and_unequal_sides_are_refused():
    single = paired([0.5], [0.25])
    assert single.mean_difference == 0.25 and math.isnan(single.t) and math.isnan(single.p)
    with pytest.raises(ValueError):
        paired([1.0, 2.0], [1.0])
