"""What trained offline policies do on their dataset's states, beside the dataset's own actions.

For each run directory given: its checkpoint's mean action on a batch of the dataset's observations
(how much it varies across states, how often it sits at the action bound, its correlation with the
data's action and the mean squared difference), and how much the encoder's features vary across
those states relative to their size, for the trained encoder and for the same network freshly
initialised; for a learner with a critic, the share of states where the critic's Q over a grid of
actions (the same value in every action dimension) is highest at the action bound. A policy whose
action does not vary across states has learnt nothing about the state, whatever its loss says.

    python results/learning/probe.py DATASET RUN [RUN ...] [--batch 512] [--seed 0]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from taco_rl.runners.core.run import build_agent
from taco_rl.runners.data.datasets import load_dataset
from taco_rl.runners.data.from_run import load_run_config, run_state


def feature_spread(encoder: torch.nn.Module, obs: torch.Tensor) -> float:
    """Mean over feature dimensions of their std across states, over the features' mean magnitude."""
    with torch.no_grad():
        f = encoder(obs).float()
    return float(f.std(0).mean() / f.abs().mean().clamp_min(1e-12))


def critic_best_action(agent, obs: torch.Tensor, points: int = 21) -> torch.Tensor | None:
    """Per state, the action on a grid over [-1, 1] (every action dimension at once) where the critic's
    min(Q1, Q2) is highest; None for a learner without a critic."""
    if agent.critic is None:
        return None
    grid = torch.linspace(-1.0, 1.0, points)
    with torch.no_grad():
        feat = agent.encoder(obs)
        qs = []
        for value in grid:
            action = torch.full((len(obs), agent.action_dim), float(value))
            q1, q2 = agent.critic(feat, agent.action_code(action))
            qs.append(torch.min(q1, q2).float().flatten())
    return grid[torch.stack(qs, 1).argmax(1)]


def probe(dataset: str, runs: list[str], batch: int = 512, seed: int = 0) -> list[dict[str, float | str]]:
    torch.manual_seed(seed)
    replay, _ = load_dataset(dataset, nstep=1)
    sample = replay.sample(batch)
    obs, data_action = sample["obs"], sample["action"].float()
    rows: list[dict[str, float | str]] = []
    for run in runs:
        cfg, state = load_run_config(Path(run)), run_state(Path(run))
        shape, action_dim = tuple(obs.shape[1:]), data_action.shape[1]
        torch.manual_seed(cfg.seed)  # the fresh network: the same draw for every run of one seed
        fresh = build_agent(cfg, shape, action_dim, torch.device("cpu"))
        agent = build_agent(cfg, shape, action_dim, torch.device("cpu"))
        agent.load_state_dict(state["agent"])
        agent.train(False)
        fresh.train(False)
        step = int(state["counters"].get("update", 0))
        action = torch.as_tensor(agent.act_batch(obs.numpy(), step, eval_mode=True))
        a, d = action.flatten().numpy(), data_action.flatten().numpy()
        corr = float(np.corrcoef(a, d)[0, 1]) if a.std() > 0 and d.std() > 0 else float("nan")
        best = critic_best_action(agent, obs)
        rows.append(
            {
                "run": f"{cfg.agent}-{cfg.aux}",
                "update": step,
                "action_std_over_states": float(action.std(0).mean()),
                "at_bound": float((action.abs() > 0.99).float().mean()),
                "corr_with_data": corr,
                "mse_to_data": float(((action - data_action) ** 2).mean()),
                "feature_spread": feature_spread(agent.encoder, obs),
                "feature_spread_fresh": feature_spread(fresh.encoder, obs),
                "critic_best_at_bound": float("nan") if best is None else float((best.abs() > 0.99).float().mean()),
            }
        )
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("dataset")
    p.add_argument("runs", nargs="+")
    p.add_argument("--batch", type=int, default=512)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    rows = probe(args.dataset, args.runs, args.batch, args.seed)
    keys = list(rows[0])
    print("| " + " | ".join(keys) + " |")
    print("| " + " | ".join("---" for _ in keys) + " |")
    for r in rows:
        print("| " + " | ".join(f"{v:.3f}" if isinstance(v, float) else str(v) for v in r.values()) + " |")


if __name__ == "__main__":
    main()
