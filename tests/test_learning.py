"""Learning, honestly: each learner must beat a return that random and broken learners cannot reach.

Task: point_reach (pure numpy, 32x32 frames, 50-step episodes, reward in [0, 1] per step).
Measured by envs.point.measure_returns (200 episodes): uniform random actions return about 11.9,
the scripted straight-to-target policy about 48.5 (max 50). THRESHOLD sits well above random and
above anything a learner with frozen weights achieves (checked by the lr=0 control below).
"""

from __future__ import annotations

import csv

import pytest

from taco_rl.envs.point import RANDOM_RETURN, SCRIPTED_RETURN
from taco_rl.runners.core.config import resolve
from taco_rl.runners.online.train import Trainer

THRESHOLD = 35.0
pytestmark = pytest.mark.slow


def final_return(run_dir) -> float:
    with open(run_dir / "eval.csv", newline="") as f:
        return float(list(csv.DictReader(f))[-1]["episode_return"])


def run(tmp_path, *overrides: str) -> Trainer:
    cfg = resolve(
        [
            "task=point_reach",
            "frames=3000",
            "eval_every_frames=3000",
            "eval_episodes=10",
            "save_video=false",
            "checkpoint_every_frames=100000",
            f"run_dir={tmp_path}",
            *overrides,
        ]
    )
    trainer = Trainer(cfg, progress=False)
    trainer.train()
    return trainer


def test_threshold_separates_random_from_solved():
    assert RANDOM_RETURN + 15 < THRESHOLD < SCRIPTED_RETURN - 5


def test_drqv2_learns(tmp_path):
    run(tmp_path)
    assert final_return(tmp_path) > THRESHOLD


def test_broken_drqv2_does_not(tmp_path):
    run(tmp_path, "lr=0")
    assert final_return(tmp_path) < THRESHOLD


@pytest.mark.parametrize("agent", ["drqv2", "sac"])
def test_taco_learns_and_its_loss_falls(tmp_path, agent):
    run(tmp_path, f"agent={agent}", "aux=taco", "batch_size=64", "log_every_frames=250")
    assert final_return(tmp_path) > THRESHOLD
    with open(tmp_path / "train.csv", newline="") as f:
        losses = [float(r["taco_loss"]) for r in csv.DictReader(f) if r.get("taco_loss")]
    import math

    # first logged window vs the last: the InfoNCE term must fall well below log(batch)
    # (its value for uniform logits) and below where it started
    assert losses[-1] < 0.7 * math.log(64), losses
    assert losses[-1] < 0.7 * losses[0], losses
