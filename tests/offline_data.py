"""point_reach datasets for offline tests: the scripted straight-to-target policy plus Gaussian
action noise (clipped to [-1, 1]), written as a taco-rl dataset."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from taco_rl.envs import make_env
from taco_rl.envs.point import scripted_action
from taco_rl.runners.data.datasets import new_replay, write_dataset


def scripted_dataset(path: Path, episodes: int = 40, noise: float = 0.3, seed: int = 0, image_size: int = 32) -> Path:
    env = make_env("point_reach", seed, action_repeat=1, frame_stack=1, image_size=image_size)
    rng = np.random.default_rng(seed)
    frames, actions, rewards = [], [], []
    for ep in range(episodes):
        obs, _ = env.reset(seed=seed * 1000 + ep)
        ep_frames, ep_actions, ep_rewards, done = [obs[-3:]], [], [], False
        while not done:
            a = np.clip(scripted_action(env) + noise * rng.standard_normal(2), -1, 1).astype(np.float32)
            obs, r, terminated, truncated, _ = env.step(a)
            ep_frames.append(obs[-3:])
            ep_actions.append(a)
            ep_rewards.append(r)
            done = terminated or truncated
        frames.append(np.stack(ep_frames))
        actions.append(np.stack(ep_actions))
        rewards.append(np.asarray(ep_rewards, np.float32))
    replay = new_replay(sum(len(f) for f in frames), (3, image_size, image_size), 2)
    for f, a, r in zip(frames, actions, rewards, strict=True):
        replay.add_episode(f, a, r, np.ones(len(r), np.float32))
    write_dataset(replay, path, task="point_reach", source={"policy": "scripted", "noise": noise, "seed": seed})
    return path
