"""Run logs: CSV files (eval.csv, train.csv) and TensorBoard scalars (and, with `logger=wandb`, W&B:
runners/core/wandb_log.py), all with frame and step columns.

Every start makes the logs agree with the state being resumed: rows after the checkpoint's frame are
dropped (all of them on a fresh start), and TensorBoard purges the events after it, so a run that died
between two checkpoints (or before its first) never shows those frames twice.
"""

from __future__ import annotations

import csv
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np


class CSVLog:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.fields: list[str] | None = None
        if path.exists():
            with path.open(newline="") as f:
                reader = csv.reader(f)
                self.fields = next(reader, None)

    def truncate_after(self, frame: int | None, axis: str = "frame") -> None:
        """Drop rows whose `axis` column is beyond `frame` (left by a run that died after its last
        checkpoint); `None` (a fresh start) drops every row."""
        if not self.path.exists():
            return
        if frame is None:
            self.path.unlink()
            self.fields = None
            return
        with self.path.open(newline="") as f:
            rows = list(csv.DictReader(f))
        kept = [r for r in rows if float(r[axis]) <= frame]
        if len(kept) != len(rows):
            with self.path.open("w", newline="") as f:
                writer = csv.DictWriter(f, fieldnames=self.fields or [])
                writer.writeheader()
                writer.writerows(kept)

    def write(self, row: Mapping[str, Any]) -> None:
        if self.fields is None:
            self.fields = list(row)
            with self.path.open("w", newline="") as f:
                csv.writer(f).writerow(self.fields)
        elif not set(row) <= set(self.fields):  # new columns (e.g. learner metrics once updates start)
            with self.path.open(newline="") as f:
                rows = list(csv.DictReader(f))
            self.fields += [k for k in row if k not in self.fields]
            with self.path.open("w", newline="") as f:
                writer = csv.DictWriter(f, fieldnames=self.fields)
                writer.writeheader()
                writer.writerows(rows)
        with self.path.open("a", newline="") as f:
            csv.DictWriter(f, fieldnames=self.fields, extrasaction="ignore").writerow(row)


class Logger:
    """CSV + TensorBoard (+ W&B). Metric values may be 0-dim tensors: they are converted only here.

    `axis` is the counter rows are keyed on and TensorBoard's x axis: `frame` online, `update` offline.
    `wandb`: keyword arguments of WandbSink (project, entity, group, config), or None for no W&B.
    """

    def __init__(
        self,
        run_dir: Path,
        resume_frame: int | None = None,
        tensorboard: bool = True,
        axis: str = "frame",
        wandb: Mapping[str, Any] | None = None,
    ) -> None:
        """`resume_frame`: the `axis` value of the checkpoint being resumed (None: a fresh start).
        What was logged at that value came before the checkpoint, so it stays; later rows go."""
        self.axis = axis
        self.wandb = None
        self.csv = {name: CSVLog(run_dir / f"{name}.csv") for name in ("train", "eval")}
        for log in self.csv.values():
            log.truncate_after(resume_frame, axis)
        self.tb = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            # TensorBoard drops earlier events whose step is >= purge_step
            purge = 0 if resume_frame is None else resume_frame + 1
            self.tb = SummaryWriter(str(run_dir / "tb"), purge_step=purge)
        if wandb is not None:
            from taco_rl.runners.core.wandb_log import WandbSink

            self.wandb = WandbSink(run_dir, resumed=resume_frame is not None, axis=axis, **wandb)

    def log(self, kind: str, frame: int, step: int, metrics: Mapping[str, Any]) -> dict[str, float]:
        return self.log_at(kind, {"frame": frame, "step": step}, metrics)

    def log_at(self, kind: str, counters: Mapping[str, int], metrics: Mapping[str, Any]) -> dict[str, float]:
        """One row: the counters (the logger's axis first), then the metrics."""
        row = {**counters, **{k: float(v) for k, v in metrics.items()}}
        self.csv[kind].write(row)
        x = counters[self.axis]  # x axis: the logger's axis; other counters are scalars of their own
        self.scalars(x, {f"{kind}/{k}": v for k, v in row.items() if k != self.axis})
        return row

    def scalars(self, x: int, values: Mapping[str, float]) -> None:
        """Scalars at clock value `x`, named `train/...` or `eval/...`, to TensorBoard and W&B (not CSV)."""
        if self.tb is not None:
            for k, v in values.items():
                self.tb.add_scalar(k, v, x)
        if self.wandb is not None:
            self.wandb.log(x, values)

    def video(self, x: int, path: Path, fps: float) -> None:
        """An eval video already written to `path` (see write_video), played at `fps`."""
        if self.wandb is not None:
            self.wandb.video(x, path, fps)

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()
            self.tb = None
        if self.wandb is not None:
            self.wandb.close()
            self.wandb = None


def mean_metrics(history: Sequence[Mapping[str, Any]]) -> dict[str, float]:
    """Average a list of metric dicts: one stack and one host sync per key, once per log interval."""
    if not history:
        return {}
    import torch

    keys = history[0].keys()
    return {k: float(torch.stack([torch.as_tensor(h[k]).float() for h in history]).mean()) for k in keys}


def write_video(path: Path, frames: list[np.ndarray], fps: float) -> None:
    """(H, W, 3) uint8 RGB frames (an env's render()) -> mp4 (via imageio's bundled ffmpeg) at `fps`
    frames per second: the env's `metadata["render_fps"]`, one frame per agent step."""
    import imageio.v2 as imageio

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.mp4")
    writer = imageio.get_writer(tmp, fps=fps, macro_block_size=1)
    with writer:  # (not `as writer`: imageio's stubs type __enter__ as its base class, without append_data)
        for frame in frames:
            writer.append_data(np.ascontiguousarray(frame))
    tmp.replace(path)
