"""Published reference numbers, installed with the package (``reference/``, README there): the papers'
per-task scores (SPEC 7 and 8), published per-seed evaluation curves, and where runs fall among the
published seeds."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np

REFERENCE_DIR = Path(__file__).resolve().parent / "reference"
# --reference NAME -> (the method's name, the folder of its per-task curves under REFERENCE_DIR)
CURVES: dict[str, tuple[str, str]] = {"drqv2": ("DrQ-v2", "drqv2_curves")}


class PublishedDataError(ValueError):
    """An unknown reference name, or a reference file that cannot be read."""


def table(name: str) -> list[dict[str, str]]:
    """The rows of one reference table (``scores.csv``, ``offline_scores.csv``); none if it is absent."""
    path = REFERENCE_DIR / name
    if not path.exists():
        return []
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


@dataclass(frozen=True)
class Curve:
    """One task's published evaluation curve: the seeds' returns at each published frame."""

    method: str
    task: str
    path: Path
    frames: np.ndarray  # (n,) increasing
    returns: tuple[np.ndarray, ...]  # one array of the seeds' returns per frame

    @property
    def seeds(self) -> int:
        return max(len(r) for r in self.returns)

    def at(self, frame: float) -> np.ndarray | None:
        """The seeds' returns at exactly `frame`; None where nothing was published at it."""
        hit = np.nonzero(self.frames == frame)[0]
        return self.returns[int(hit[0])] if hit.size else None

    def band(self, up_to: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Frames <= up_to and the seeds' mean, minimum and maximum at each."""
        keep = [i for i, f in enumerate(self.frames) if f <= up_to]
        values = [self.returns[i] for i in keep]
        return (
            self.frames[keep],
            np.array([v.mean() for v in values]),
            np.array([v.min() for v in values]),
            np.array([v.max() for v in values]),
        )

    def spacing(self) -> str:
        """How the published frames are spaced, in words."""
        steps = sorted({int(s) for s in np.diff(self.frames)})
        if len(steps) == 1:
            return f"every {steps[0]:,} frames from {int(self.frames[0]):,}"
        return "at " + ", ".join(f"{int(f):,}" for f in self.frames)


def check_name(reference: str) -> tuple[str, str]:
    if reference not in CURVES:
        raise PublishedDataError(f"--reference {reference!r}: expected one of {', '.join(sorted(CURVES))}")
    return CURVES[reference]


def curve(reference: str, task: str) -> Curve | None:
    """The published curve of `task` under `reference` (a CURVES name); None if none was published."""
    method, folder = check_name(reference)
    path = REFERENCE_DIR / folder / f"{task}.csv"
    if not path.exists():
        return None
    points: dict[float, list[float]] = {}
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        missing = {"task", "seed", "frame", "return"} - set(reader.fieldnames or ())
        if missing:
            raise PublishedDataError(f"{path}: no {', '.join(sorted(missing))} column")
        for line, row in enumerate(reader, 2):
            try:
                points.setdefault(float(row["frame"]), []).append(float(row["return"]))
            except (TypeError, ValueError):
                raise PublishedDataError(f"{path}, line {line}: unreadable frame or return {row}") from None
            if row["task"] != task:
                raise PublishedDataError(f"{path}, line {line}: task {row['task']!r} in the file of {task!r}")
    if not points:
        raise PublishedDataError(f"{path}: no rows")
    frames = sorted(points)
    return Curve(method, task, path, np.array(frames), tuple(np.array(points[f]) for f in frames))


def position(value: float, published: np.ndarray) -> str:
    """Where `value` falls against the published seeds' range: below, within or above."""
    if value < published.min():
        return "below"
    return "above" if value > published.max() else "within"


def percentile(value: float, published: np.ndarray) -> float:
    """`value`'s percentile among the published seeds: the share of them below it, ties counting half."""
    return float(100.0 * (np.sum(published < value) + 0.5 * np.sum(published == value)) / published.size)
