"""taco_rl.runners.stats against hand-computed values."""
from __future__ import annotations

import numpy as np
import pytest

from taco_rl.runners import stats


def test_iqm_by_hand():
    assert stats.iqm(np.arange(1, 9)) == pytest.approx(4.5)  # middle half of 1..8: 3,4,5,6
    assert stats.iqm(np.array([100.0, 0.0, 3.0, 1.0, 2.0])) == pytest.approx(2.0)  # one cut each side: 1,2,3
    assert stats.iqm(np.array([7.0])) == 7.0


def test_optimality_gap_median_mean_by_hand():
    x = np.array([0.5, 1.2, 0.8])
    assert stats.optimality_gap(x) == pytest.approx((0.5 + 0.0 + 0.2) / 3)
    assert stats.median(x) == 0.8 and stats.mean(x) == pytest.approx(2.5 / 3)


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
    assert stats.aggregate(scores, stats.mean, reps=1000) == (0.5, 0.5, 0.5)


def test_bootstrap_ci_matches_normal_approximation():
    # task A constant (contributes no variance), task B 40 runs with population std s:
    # pooled mean = (sum A + sum B) / N, its std = (n_B / N) * s / sqrt(n_B)
    rng = np.random.default_rng(1)
    a = np.full(10, 3.0)
    b = rng.normal(0.0, 2.0, size=40)
    point, low, high = stats.aggregate([a, b], stats.mean, reps=20000, seed=0)
    assert point == pytest.approx((30.0 + b.sum()) / 50)
    half = 1.96 * (40 / 50) * b.std() / np.sqrt(40)
    assert (high - low) / 2 == pytest.approx(half, rel=0.06)  # bootstrap noise at 20k replicates
    assert (low + high) / 2 == pytest.approx(point, abs=0.05 * half)
    # the same seed gives the same interval; another seed moves it only by bootstrap noise
    assert stats.aggregate([a, b], stats.mean, reps=20000, seed=0) == (point, low, high)
    other = stats.aggregate([a, b], stats.mean, reps=20000, seed=5)
    assert other[1] == pytest.approx(low, abs=0.05 * half) and other[2] == pytest.approx(high, abs=0.05 * half)


def test_iqm_ci_contains_point_and_narrows_with_runs():
    rng = np.random.default_rng(0)
    few = [rng.normal(size=5) for _ in range(3)]
    many = [rng.normal(size=80) for _ in range(3)]
    p1, l1, h1 = stats.aggregate(few, stats.iqm, reps=2000)
    p2, l2, h2 = stats.aggregate(many, stats.iqm, reps=2000)
    assert l1 <= p1 <= h1 and l2 <= p2 <= h2
    assert (h2 - l2) < (h1 - l1) / 2


def test_empty_task_rejected():
    with pytest.raises(ValueError, match="at least one run"):
        stats.aggregate([np.array([1.0]), np.array([])], stats.mean)
