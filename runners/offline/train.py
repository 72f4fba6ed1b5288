"""Offline training: a fixed dataset -> learner, evaluated in the live env.

The run lifecycle (run directory, evaluation, logs, videos, progress bar, checkpoints and exact
resume) is the online one (runners/core/run.py), keyed on learner updates instead of env frames.
The dataset is sampled where it lives: copied to the learner's GPU when it fits, else read through
its memory map on the CPU (never a DataLoader); batches are moved to the learner's device.
A checkpoint holds no copy of the data, only the dataset's checksum: resuming on another dataset
is refused.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import torch

from taco_rl.runners.core import checkpoint as ckpt
from taco_rl.runners.core.config import ConfigError, OfflineConfig
from taco_rl.runners.core.run import Run, build_agent, progress_bar
from taco_rl.runners.core.rundir import DATASET_RECORD
from taco_rl.runners.data.datasets import DatasetError, dataset_device, load_dataset

NORMALISER = 10.0  # DMC return / 10 = the normalised score offline RL papers report (SPEC 7)


def open_dataset(cfg: OfflineConfig, learner_device: torch.device):
    """(replay, info, reason): the dataset sampled with the learner's stack, n-step, gamma and K."""
    if not cfg.dataset:
        raise ConfigError(
            "dataset= is required: a dataset directory (dataset.json + arrays), e.g. one written by `taco data`"
        )
    if cfg.replay_device == "cpu":
        device, reason = torch.device("cpu"), "replay_device=cpu: dataset memory-mapped on the CPU"
    else:
        device, reason = dataset_device(cfg.dataset, learner_device)
    replay, info = load_dataset(
        cfg.dataset,
        device=device,
        frame_stack=cfg.frame_stack,
        nstep=cfg.nstep,
        gamma=cfg.gamma,
        seq_len=cfg.taco_k if cfg.aux == "taco" else 0,
    )
    return replay, info, reason


class OfflineTrainer(Run):
    clock = "update"
    step_key = "update"
    cfg: OfflineConfig

    def __init__(self, cfg: OfflineConfig, progress: bool = True) -> None:
        super().__init__(cfg, progress)
        with self.releasing_lock():
            self.eval_every = cfg.eval_every_updates
            self.dataset, self.info, where = open_dataset(cfg, self.device)  # a bad dataset is refused first
            if self.info.get("task") not in (None, cfg.task):  # resolve() takes the task from the dataset
                raise DatasetError(f"{cfg.dataset} was recorded on {self.info['task']}; task={cfg.task} differs")
            env = self.make_eval_env()
            obs_shape, action_dim = env.observation_space.shape, env.action_space.shape[0]
            frame_shape = (3, *obs_shape[1:])
            if tuple(self.info["frame_shape"]) != frame_shape or self.info["action_dim"] != action_dim:
                raise DatasetError(
                    f"{cfg.dataset} holds frames {tuple(self.info['frame_shape'])} and "
                    f"{self.info['action_dim']}-d actions; task={cfg.task} with image_size="
                    f"{cfg.image_size} needs frames {frame_shape} and {action_dim}-d actions"
                )
            print(
                f"dataset: {self.info['transitions']} transitions in {self.info['episodes']} episodes; {where}",
                flush=True,
            )
            self.agent = build_agent(cfg, obs_shape, action_dim, self.device)
            self.counters = {
                "update": 0,
                "evals": 0,
                "last_eval": -1,
                "next_eval": 0,
                "next_checkpoint": cfg.checkpoint_every_updates,
            }
            (self.run_dir / DATASET_RECORD).write_text(json.dumps(self.info, indent=1) + "\n")
        self.open()

    # ------------------------------------------------------------------ checkpoints
    def check_resume(self, state: dict[str, Any]) -> None:
        if state.get("dataset_checksum") != self.info["checksum"]:  # a mismatch, not damage: no fallback
            raise ckpt.CheckpointMismatch(
                f"{self.ckpt_dir / 'state.pt'} was trained on dataset {state.get('dataset', '?')} "
                f"({state.get('dataset_checksum')}); {self.cfg.dataset} is another dataset "
                f"({self.info['checksum']}); pass a new run_dir= to train on it"
            )

    def restore_extra(self, state: dict[str, Any], payload: Path) -> None:
        """Nothing beyond the learner: the data is the dataset (check_resume matched its checksum)."""

    def checkpoint_extra(self) -> dict[str, Any]:
        return {"dataset": self.info["path"], "dataset_checksum": self.info["checksum"]}

    # ------------------------------------------------------------------ logs
    def log_row(self, kind: str, metrics: dict[str, Any]) -> dict[str, float]:
        return self.logger.log_at(kind, {"update": self.counters["update"]}, metrics)

    def where(self) -> str:
        return f"update {self.counters['update']}"

    def eval_metrics(self, returns, lengths):
        metrics = super().eval_metrics(returns, lengths)
        return {
            "episode_return": metrics["episode_return"],
            "normalized_score": metrics["episode_return"] / NORMALISER,
            **metrics,
        }

    def score_text(self, row: dict[str, float]) -> str:
        return f" (score {row['normalized_score']:.1f})"

    # ------------------------------------------------------------------ the loop
    def loop(self) -> Path:
        cfg, c = self.cfg, self.counters
        self.bar = bar = progress_bar(cfg.updates, c["update"], self.progress, unit="update")
        bar.set_description_str("train", refresh=False)
        every = cfg.log_every_updates
        next_log = (c["update"] // every + 1) * every
        t0, u0 = time.time(), c["update"]
        while c["update"] < cfg.updates:
            if c["update"] >= c["next_eval"]:
                self.evaluate()
            if c["update"] >= c["next_checkpoint"]:
                c["next_checkpoint"] += cfg.checkpoint_every_updates
                self.save_checkpoint()
            batch = self.dataset.sample(cfg.batch_size).to(self.device, non_blocking=True)
            self.record(self.agent.update(batch, c["update"]), c["update"])
            c["update"] += 1
            bar.update(1)
            if c["update"] >= next_log:
                ups = (c["update"] - u0) / max(time.time() - t0, 1e-9)
                self.log_row("train", {**self.drain_metrics(), "updates_per_s": ups})
                bar.set_postfix(ups=f"{ups:.1f}", refresh=False)
                next_log += every
        if c["last_eval"] != c["update"]:
            self.evaluate()
        if c["update"] != u0 or self.checkpoints.frame is None:  # a finished run rerun: nothing new
            self.save_checkpoint()
        return self.run_dir


def train_offline(cfg: OfflineConfig, progress: bool = True) -> Path:
    return OfflineTrainer(cfg, progress).train()
