"""Schedules and precedence: the exploration boundary (`expl_steps`), the std schedule's ends, the
evaluation grid of a resumed run, and which of overrides, variants, grid values and the command line
wins in a sweep."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import torch
import yaml

from taco_rl.agents.drqv2 import DrQV2, schedule
from taco_rl.agents.sac import SAC
from taco_rl.runners.core.config import resolve
from taco_rl.runners.offline.train import OfflineTrainer
from taco_rl.runners.study.sweep import load_sweep
from tests.offline_data import scripted_dataset

A = 4


# ---------------------------------------------------------------- exploration boundary
@pytest.mark.parametrize("cls,kw", [(DrQV2, {"std_schedule": "0"}), (SAC, {})])
def test_uniform_actions_exactly_before_expl_steps(cls, kw):
    torch.manual_seed(0)
    agent = cls((3, 16, 16), A, hidden_dim=16, expl_steps=7, **kw)
    obs = np.random.default_rng(0).integers(0, 256, (3, 16, 16), dtype=np.uint8)
    mean = agent.act(obs, 0, eval_mode=True)  # evaluation is never random, even at step 0
    assert np.array_equal(mean, agent.act(obs, 6, eval_mode=True))
    explore = np.stack([agent.act(obs, s, eval_mode=False) for s in [0, 3, 6] * 100])
    assert explore.min() < -0.95 and explore.max() > 0.95  # uniform over [-1, 1]
    assert abs(explore.mean()) < 0.1 and np.abs(explore - mean).min(axis=1).max() > 0.1
    policy = np.stack([agent.act(obs, 7, eval_mode=False) for _ in range(20)])
    if cls is DrQV2:  # std 0: the policy's action is its mean from step expl_steps on
        assert np.array_equal(policy, np.broadcast_to(mean, policy.shape))
    else:  # a tanh-Gaussian sample around the mean, not a uniform draw
        assert np.abs(policy - mean).max() < 0.9 * np.abs(explore - mean).max()


def test_std_schedule_ends_and_middle():
    spec = "linear(1.0,0.1,100)"
    assert [schedule(spec, s) for s in (0, 50, 100, 250)] == pytest.approx([1.0, 0.55, 0.1, 0.1])
    assert schedule(spec, -10) == pytest.approx(1.0)
    assert schedule("0.25", 10**9) == 0.25


# ---------------------------------------------------------------- evaluation grid after a resume
def _eval_updates(run_dir) -> list[int]:
    with open(run_dir / "eval.csv", newline="") as f:
        return [int(r["update"]) for r in csv.DictReader(f)]


def test_resumed_run_keeps_the_evaluation_grid(tmp_path):
    data = scripted_dataset(tmp_path / "data", episodes=3, noise=0.3, seed=0)
    common = [
        "task=point_reach",
        "hidden_dim=16",
        "batch_size=8",
        "eval_episodes=1",
        "save_video=false",
        f"dataset={data}",
        "agent=bc",
        "eval_every_updates=10",
        "checkpoint_every_updates=10",
        f"run_dir={tmp_path / 'run'}",
    ]
    OfflineTrainer(resolve([*common, "updates=15"], offline=True), progress=False).train()
    assert _eval_updates(tmp_path / "run") == [0, 10, 15]  # the last update is always evaluated
    resumed = OfflineTrainer(resolve([*common, "updates=32"], offline=True), progress=False)
    assert resumed.counters["next_eval"] == 20
    resumed.train()
    # back on the grid of multiples of eval_every (20, 30), not 15 + 10 = 25; then the final 32
    assert _eval_updates(tmp_path / "run") == [0, 10, 15, 20, 30, 32]


# ---------------------------------------------------------------- sweep precedence
def test_sweep_precedence_overrides_variant_grid_command_line(tmp_path):
    f = tmp_path / "s.yaml"
    f.write_text(
        yaml.safe_dump(
            {
                "tasks": ["point_reach"],
                "seeds": [1],
                "overrides": {"root": str(tmp_path), "lr": 1e-3, "feature_dim": 40, "hidden_dim": 64, "taco_k": 2},
                "variants": {"v": {"lr": 2e-3, "feature_dim": 30, "aux": "taco"}},
                "grid": {"feature_dim": [20, 25]},
            }
        )
    )
    runs = {r.label: r.cfg for r in load_sweep(f, ["hidden_dim=48"]).runs}
    assert sorted(runs) == ["v feature_dim=20", "v feature_dim=25"]
    for label, cfg in runs.items():
        assert cfg.lr == 2e-3  # the variant over the overrides
        assert cfg.feature_dim == int(label.split("=")[1])  # the grid over the variant and the overrides
        assert (cfg.hidden_dim, cfg.taco_k, cfg.aux) == (48, 2, "taco")  # command line over overrides
    cli = load_sweep(f, ["feature_dim=10", "lr=5e-4"]).runs  # the command line over everything
    assert len(cli) == 1 and (cli[0].cfg.feature_dim, cli[0].cfg.lr) == (10, 5e-4)
    assert cli[0].labels == ["v feature_dim=20", "v feature_dim=25"]
