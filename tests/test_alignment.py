"""The batch's action_seq and future_obs line up with what the env did, through the trainer's own data path.

A counter env draws its step index and episode index into every frame and records every action it
receives; the Trainer collects with it (random actions, no updates), then sampled batches are
checked against the env's records.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch

from taco_rl.envs import ActionRepeat, FrameStack
from taco_rl.runners.core import run as run_mod
from taco_rl.runners.core.config import resolve
from taco_rl.runners.online import train as train_mod

EPISODE = 23  # agent steps; not a multiple of anything in the test


class CounterEnv(gym.Env):
    """Frame channel 0 = step index in the episode, channel 1 = episode index; terminal never."""

    def __init__(self, log: dict) -> None:
        self.observation_space = gym.spaces.Box(0, 255, (3, 20, 20), np.uint8)
        self.action_space = gym.spaces.Box(-1, 1, (2,), np.float32)
        self.log, self.episode, self.t = log, -1, 0

    def _frame(self) -> np.ndarray:
        frame = np.zeros((3, 20, 20), np.uint8)
        frame[0], frame[1] = self.t, self.episode % 256
        return frame

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.episode, self.t = self.episode + 1, 0
        return self._frame(), {"discount": 1.0}

    def step(self, action):
        self.log[(self.episode, self.t)] = np.asarray(action, np.float32).copy()
        self.t += 1
        return self._frame(), float(self.t), False, self.t >= EPISODE, {"discount": 1.0}


@pytest.mark.parametrize("k,n", [(1, 1), (3, 3), (5, 2)])
def test_future_obs_and_action_seq_follow_the_env(tmp_path, monkeypatch, k, n):
    logs: list[dict] = []  # the trainer makes the training env first, then the eval env

    def make_env(task, seed, action_repeat, frame_stack, image_size, fast_render):
        logs.append({})
        return FrameStack(ActionRepeat(CounterEnv(logs[-1]), action_repeat), frame_stack)

    monkeypatch.setattr(train_mod, "make_env", make_env)
    monkeypatch.setattr(run_mod, "make_env", make_env)  # the eval env (shared run lifecycle)
    cfg = resolve(
        [
            "task=point_reach",
            "aux=taco",
            f"taco_k={k}",
            f"nstep={n}",
            "gamma=0.5",
            "frames=200",
            "seed_frames=100000",
            "expl_steps=100000",
            "eval_every_frames=100000",
            "eval_episodes=1",
            "save_video=false",
            "hidden_dim=32",
            "batch_size=8",
            f"run_dir={tmp_path}",
        ]
    )
    trainer = train_mod.Trainer(cfg, progress=False)
    trainer.train()
    log = logs[0]
    torch.manual_seed(0)
    batch = trainer.replay.sample(256)
    t = batch["obs"][:, -3].flatten(1)[:, 0].long()  # step index of the newest obs frame
    ep = batch["obs"][:, -2].flatten(1)[:, 0].long()
    assert (batch["future_obs"][:, -3].flatten(1)[:, 0].long() == t + k).all()  # exactly K steps later
    assert (batch["future_obs"][:, -2].flatten(1)[:, 0].long() == ep).all()  # same episode
    assert (batch["next_obs"][:, -3].flatten(1)[:, 0].long() == t + n).all()
    assert (t + max(n, k) <= EPISODE).all()  # never past the end
    # older frames of the stack: one step earlier each, the first frame repeated at episode start
    assert (batch["obs"][:, 0].flatten(1)[:, 0].long() == (t - 2).clamp(min=0)).all()
    for i in range(len(t)):
        e, s = int(ep[i]), int(t[i])
        assert np.allclose(batch["action"][i].numpy(), log[(e, s)])
        expected = np.stack([log[(e, s + j)] for j in range(k)])  # a_t .. a_{t+K-1}
        assert np.allclose(batch["action_seq"][i].numpy(), expected)
        # reward r_{t+i} = t+i+1 here; n-step return with gamma 0.5
        assert float(batch["reward"][i]) == pytest.approx(sum(0.5**j * (s + j + 1) for j in range(n)))
        assert float(batch["discount"][i]) == pytest.approx(0.5**n)
