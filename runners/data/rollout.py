"""One collected episode: a policy (a learner's mean action plus Gaussian noise, or uniform random
actions) played in an env and written atomically to an episode file. Used in-process by
`taco data collect` and in its worker processes alike, so both give the same episodes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np


def rollout_to_file(env: Any, agent: Any, noise: float, seed: int, i: int, action_dim: int, file: Path) -> None:
    """Episode `i` of a collect with `seed`, written atomically to `file`."""
    ep = _rollout(env, agent, noise, np.random.default_rng([seed, i]), seed * 1_000_003 + i, action_dim)
    tmp = file.with_name(f".{file.name}.tmp.npz")
    np.savez(tmp, frames=ep[0], actions=ep[1], rewards=ep[2], discounts=ep[3])
    tmp.replace(file)


def _rollout(
    env: Any, agent: Any, noise: float, rng: np.random.Generator, reset_seed: int, action_dim: int
) -> tuple[np.ndarray, ...]:
    """One episode: frames (T+1, 3, H, W), actions (T, A), rewards (T,), discounts (T,)."""
    obs, _ = env.reset(seed=reset_seed)
    frames, acts, rews, discs = [obs[-3:]], [], [], []
    done = False
    while not done:
        if agent is None:
            a = rng.uniform(-1.0, 1.0, action_dim).astype(np.float32)
        else:
            a = agent.act(obs, 0, eval_mode=True).astype(np.float32)
            if noise > 0:
                a = np.clip(a + rng.normal(0.0, noise, action_dim), -1.0, 1.0).astype(np.float32)
        obs, r, terminated, truncated, info = env.step(a)
        frames.append(obs[-3:])
        acts.append(a)
        rews.append(float(r))
        discs.append(float(info.get("discount", 0.0 if terminated else 1.0)))
        done = terminated or truncated
    return np.stack(frames), np.stack(acts), np.asarray(rews, np.float32), np.asarray(discs, np.float32)
