"""Aggregate statistics across seeds and tasks (the rliable method) on numpy/scipy.

Scores come as a list with one 1-D array per task (the runs of that task; tasks may have different
run counts). The aggregates follow rliable 1.2's definitions (metrics.py) on a runs x tasks matrix:

- IQM: mean of the middle 50% of all pooled run scores (scipy's trim_mean, 25% cut each side).
- mean: mean over tasks of each task's mean score (every task weighs the same, whatever its runs).
- median: median over tasks of each task's mean score (not the median of the pooled runs).
- Optimality gap: mean over all pooled runs of max(0, threshold - score) (how far below a normalised
  score of 1 runs fall).

On a rectangular matrix pooled and per-task means agree for mean and gap; with unequal run counts the
pooled statistics (IQM, gap) weigh each run the same, mean and median each task the same.
Confidence intervals come from a *stratified* bootstrap: each replicate resamples, with replacement,
the runs within each task (the stratum) and keeps the task count fixed, then recomputes the
aggregate. The interval is the percentile interval of the replicates (rliable's default).

- Probability of improvement P(X > Y): per task, the fraction of (x, y) run pairs with x > y (ties
  count half: the Mann-Whitney U statistic over n_x * n_y), averaged over tasks.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeAlias

import numpy as np
from scipy.stats import trim_mean

Scores = Sequence[np.ndarray]  # one array of run scores per task
# a reduction's result: an array over the axes it keeps, or a numpy scalar when it keeps none
Stat: TypeAlias = np.ndarray | np.floating[Any]


def iqm(x: np.ndarray, axis: int | None = None) -> Stat:
    """IQM of one array of scores (25% trimmed mean)."""
    return trim_mean(x, proportiontocut=0.25, axis=axis)


def optimality_gap(x: np.ndarray, axis: int | None = None, threshold: float = 1.0) -> Stat:
    return np.mean(np.maximum(threshold - x, 0.0), axis=axis)


# Aggregates over tasks: each takes one array per task whose LAST axis holds that task's runs
# (leading axes, e.g. bootstrap replicates, are kept) and returns the leading shape.
def _pooled(tasks: Sequence[np.ndarray]) -> np.ndarray:
    return np.concatenate(list(tasks), axis=-1)


def _task_means(tasks: Sequence[np.ndarray]) -> np.ndarray:
    return np.stack([t.mean(axis=-1) for t in tasks], axis=-1)


def aggregate_iqm(tasks: Sequence[np.ndarray]) -> Stat:
    return iqm(_pooled(tasks), axis=-1)


def aggregate_mean(tasks: Sequence[np.ndarray]) -> Stat:
    return np.mean(_task_means(tasks), axis=-1)


def aggregate_median(tasks: Sequence[np.ndarray]) -> Stat:
    return np.median(_task_means(tasks), axis=-1)


def aggregate_optimality_gap(tasks: Sequence[np.ndarray], threshold: float = 1.0) -> Stat:
    return optimality_gap(_pooled(tasks), axis=-1, threshold=threshold)


AGGREGATES: dict[str, Callable[[Sequence[np.ndarray]], Stat]] = {
    "IQM": aggregate_iqm,
    "mean": aggregate_mean,
    "median": aggregate_median,
    "optimality gap": aggregate_optimality_gap,
}


def _check(scores: Scores) -> list[np.ndarray]:
    arrays = [np.asarray(s, dtype=np.float64).reshape(-1) for s in scores]
    if not arrays or any(a.size == 0 for a in arrays):
        raise ValueError("every task needs at least one run score")
    return arrays


def stratified_resample(scores: Scores, reps: int, rng: np.random.Generator) -> list[np.ndarray]:
    """One (reps, runs of the task) array per task: each row resamples that task's runs with replacement."""
    return [a[rng.integers(0, a.size, size=(reps, a.size))] for a in _check(scores)]


def aggregate(
    scores: Scores,
    stat: Callable[[Sequence[np.ndarray]], Stat],
    reps: int = 2000,
    seed: int = 0,
    level: float = 0.95,
) -> tuple[float, float, float]:
    """(point estimate, CI low, CI high) of an aggregate over tasks (one of AGGREGATES), stratified by task."""
    arrays = _check(scores)
    point = float(stat(arrays))
    boot = stat(stratified_resample(arrays, reps, np.random.default_rng(seed)))
    alpha = (1.0 - level) / 2.0 * 100.0
    low, high = np.percentile(boot, [alpha, 100.0 - alpha])
    return point, float(low), float(high)


def _improvement(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """P(x > y) over the last axis pairs: x (..., n), y (..., m) -> (...)."""
    diff = x[..., :, None] - y[..., None, :]
    return ((diff > 0).astype(np.float64) + 0.5 * (diff == 0)).mean(axis=(-2, -1))


def probability_of_improvement(
    x_scores: Scores, y_scores: Scores, reps: int = 2000, seed: int = 0, level: float = 0.95
) -> tuple[float, float, float]:
    """P(X > Y) averaged over tasks, with a stratified-bootstrap percentile CI (x and y resampled
    independently within each task). Both lists hold the same tasks in the same order."""
    xs, ys = _check(x_scores), _check(y_scores)
    if len(xs) != len(ys):
        raise ValueError(f"probability of improvement needs the same tasks on both sides ({len(xs)} vs {len(ys)})")
    point = float(np.mean([_improvement(x, y) for x, y in zip(xs, ys, strict=True)]))
    rng = np.random.default_rng(seed)
    per_task = []
    for x, y in zip(xs, ys, strict=True):
        bx = x[rng.integers(0, x.size, size=(reps, x.size))]
        by = y[rng.integers(0, y.size, size=(reps, y.size))]
        per_task.append(_improvement(bx, by))
    boot = np.mean(per_task, axis=0)
    alpha = (1.0 - level) / 2.0 * 100.0
    low, high = np.percentile(boot, [alpha, 100.0 - alpha])
    return point, float(low), float(high)
