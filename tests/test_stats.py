"""taco_rl.runners.study.stats against hand-computed values."""

from __future__ import annotations

import numpy as np
import pytest

from taco_rl.runners.study import stats


def test_iqm_by_hand():
    assert stats.iqm(np.arange(1, 9)) == pytest.approx(4.5)  # middle half of 1..8: 3,4,5,6
    assert stats.iqm(np.array([100.0, 0.0, 3.0, 1.0, 2.0])) == pytest.approx(2.0)  # one cut each side: 1,2,3
    assert stats.iqm(np.array([7.0])) == 7.0


def test_optimality_gap_by_hand():
    x = np.array([0.5, 1.2, 0.8])
    assert stats.optimality_gap(x) == pytest.approx((0.5 + 0.0 + 0.2) / 3)


# 3 runs x 4 tasks with ties. Task means: A 0.5, B 0.6, C 0.6, D 0.6 -> rliable's median 0.6, mean 0.575.
# Pooled sorted: 0, 0.5 x7, 0.8, 0.8, 0.9, 0.9 -> the pooled median (the 6th and 7th values) is 0.5;
# IQM: the middle six 0.5 x5, 0.8 -> 3.3 / 6 = 0.55; optimality gap: every score <= 1 -> 1 - 0.575.
MATRIX = {"A": [0.5, 0.5, 0.5], "B": [0.5, 0.5, 0.8], "C": [0.8, 0.5, 0.5], "D": [0.0, 0.9, 0.9]}
# unequal run counts. Task means 0.2, 1.0, 0.5: mean 1.7 / 3, median 0.5. Pooled (8 runs, sum 3):
# 0, 0, 0, 0, 0.4, 0.6, 1, 1 -> IQM of the middle four 0, 0, 0.4, 0.6 = 0.25; gap 1 - 3 / 8.
RAGGED = {"A": [0.0, 0.0, 0.0, 0.0, 1.0], "B": [1.0], "C": [0.6, 0.4]}


@pytest.mark.parametrize(
    "scores, expected",
    [
        (MATRIX, {"IQM": 0.55, "mean": 0.575, "median": 0.6, "optimality gap": 0.425}),
        (RAGGED, {"IQM": 0.25, "mean": 1.7 / 3, "median": 0.5, "optimality gap": 0.625}),
    ],
)
def test_aggregates_follow_rliable_definitions_by_hand(scores, expected):
    tasks = [np.array(v) for v in scores.values()]
    for name, fn in stats.AGGREGATES.items():
        assert float(fn(tasks)) == pytest.approx(expected[name], abs=1e-12), name
    # the pooled median and pooled mean (what rliable does not compute) differ here
    pooled = np.concatenate(tasks)
    assert np.median(pooled) != pytest.approx(expected["median"])
    if scores is RAGGED:
        assert pooled.mean() == pytest.approx(0.375) != expected["mean"]


def test_aggregates_keep_leading_axes():
    # bootstrap replicates: rows are independent score sets; each row gets its own aggregate
    tasks = [
        np.array([[0.5, 0.5, 0.5], [0.0, 0.0, 0.3]]),
        np.array([[0.6, 0.6, 0.6], [1.0, 1.0, 0.7]]),
        np.array([[0.9, 0.6, 0.6], [0.0, 0.3, 0.0]]),
    ]
    assert stats.aggregate_median(tasks) == pytest.approx([0.6, 0.1])
    assert stats.aggregate_mean(tasks) == pytest.approx([0.6, 1.1 / 3])  # task means 0.5 0.6 0.7; 0.1 0.9 0.1


def test_bootstrap_replicates_use_the_same_definition():
    # each replicate resamples every task's runs, then takes the median of the task means
    tasks = [np.array(v) for v in MATRIX.values()]
    point, low, high = stats.aggregate(tasks, stats.aggregate_median, reps=300, seed=3)
    rng = np.random.default_rng(3)
    boot = []
    idx = [rng.integers(0, t.size, size=(300, t.size)) for t in tasks]
    for r in range(300):
        boot.append(np.median([t[i[r]].mean() for t, i in zip(tasks, idx, strict=True)]))
    assert point == pytest.approx(0.6)
    assert (low, high) == pytest.approx(tuple(np.percentile(boot, [2.5, 97.5])))


def test_probability_of_improvement_by_hand():
    # task 1: pairs (1,2)x2 -> 0, (2,2)x2 -> ties count half, (3,2)x2 -> 1: 3/6; task 2: 5 > 4: 1
    point, low, high = stats.probability_of_improvement([[1, 2, 3], [5]], [[2, 2], [4]], reps=500)
    assert point == pytest.approx(0.75)
    assert 0.5 <= low <= point <= high <= 1.0
    # every x beats every y: the bootstrap cannot change that
    assert stats.probability_of_improvement([[3, 4]], [[1, 2]]) == (1.0, 1.0, 1.0)
    with pytest.raises(ValueError, match="same tasks"):
        stats.probability_of_improvement([[1]], [[1], [2]])


def test_bootstrap_is_stratified_by_task():
    # two tasks, each constant: resampling within a task changes nothing, so the CI is a point;
    # a pooled (unstratified) bootstrap would move the share of 0s and 1s and widen it
    scores = [np.zeros(4), np.ones(4)]
    assert stats.aggregate(scores, stats.aggregate_mean, reps=1000) == (0.5, 0.5, 0.5)


def test_bootstrap_ci_matches_normal_approximation():
    # task A constant (contributes no variance), task B 40 runs with population std s:
    # mean of task means = (mean A + mean B) / 2, its std = (1 / 2) * s / sqrt(n_B)
    rng = np.random.default_rng(1)
    a = np.full(10, 3.0)
    b = rng.normal(0.0, 2.0, size=40)
    point, low, high = stats.aggregate([a, b], stats.aggregate_mean, reps=20000, seed=0)
    assert point == pytest.approx((3.0 + b.mean()) / 2)
    half = 1.96 * 0.5 * b.std() / np.sqrt(40)
    assert (high - low) / 2 == pytest.approx(half, rel=0.06)  # bootstrap noise at 20k replicates
    assert (low + high) / 2 == pytest.approx(point, abs=0.05 * half)
    # the same seed gives the same interval; another seed moves it only by bootstrap noise
    assert stats.aggregate([a, b], stats.aggregate_mean, reps=20000, seed=0) == (point, low, high)
    other = stats.aggregate([a, b], stats.aggregate_mean, reps=20000, seed=5)
    assert other[1] == pytest.approx(low, abs=0.05 * half) and other[2] == pytest.approx(high, abs=0.05 * half)


def test_iqm_ci_contains_point_and_narrows_with_runs():
    rng = np.random.default_rng(0)
    few = [rng.normal(size=5) for _ in range(3)]
    many = [rng.normal(size=80) for _ in range(3)]
    p1, l1, h1 = stats.aggregate(few, stats.aggregate_iqm, reps=2000)
    p2, l2, h2 = stats.aggregate(many, stats.aggregate_iqm, reps=2000)
    assert l1 <= p1 <= h1 and l2 <= p2 <= h2
    assert (h2 - l2) < (h1 - l1) / 2


def test_empty_task_rejected():
    with pytest.raises(ValueError, match="at least one run"):
        stats.aggregate([np.array([1.0]), np.array([])], stats.aggregate_mean)
