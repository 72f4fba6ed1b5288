"""Evaluation episodes: in-process one after another (`eval_workers=0`), or stepped in env worker
processes (runners/workers.py) with the policy acting on all their current observations at once.

Both play the same episodes: episode i starts from `reset(seed=seeds[i])`, which fixes the whole
episode whichever env plays it (the task's random stream is reseeded in place). The policy is the
learner's deterministic evaluation action (the mean), so a batch of B observations gives each the
action it gets alone up to the rounding of a batch-B forward pass (exactly, with one worker).
Episodes that end drop out of the batch; a freed worker takes the next episode. The video is
episode 0's: its worker renders after the reset and after every step, as the serial loop does.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .workers import EnvWorker, close_all, cores, start_workers


@dataclass
class Episodes:
    returns: list[float]
    lengths: list[int]
    video: list[np.ndarray] = field(default_factory=list)


def eval_worker_count(setting: str | int, episodes: int) -> int:
    """Workers `eval_workers=` asks for: an integer as given (at most one per episode), `auto` one
    per episode up to the cores; 0 (the in-process loop) when that leaves fewer than two."""
    if str(setting) != "auto":
        return min(int(setting), episodes)
    n = min(episodes, cores())
    return n if n >= 2 else 0


def play_serial(env, agent, step: int, seeds: list[int], video: bool) -> Episodes:
    """The in-process loop: each episode in turn on `env`."""
    out = Episodes([], [])
    for i, seed in enumerate(seeds):
        obs, _ = env.reset(seed=seed)
        done, ret, length = False, 0.0, 0
        while not done:
            if i == 0 and video:
                out.video.append(env.render())
            action = agent.act(obs, step, True)
            obs, reward, terminated, truncated, _ = env.step(action)
            ret, length, done = ret + float(reward), length + 1, terminated or truncated
        out.returns.append(ret)
        out.lengths.append(length)
        if i == 0 and video:
            out.video.append(env.render())
    return out


class EvalPool:
    """`count` eval env workers, started once and reused by every evaluation of a run."""

    def __init__(self, count: int, task: str, seed: int, kwargs: dict[str, Any]) -> None:
        self.workers: list[EnvWorker] = start_workers(count, task, seed, kwargs, "eval")

    def play(self, agent, step: int, seeds: list[int], video: bool) -> Episodes:
        n = len(seeds)
        returns, lengths = [0.0] * n, [0] * n
        frames: list[np.ndarray] = []
        queue = list(range(n))  # episodes not started yet, in order
        current: dict[int, tuple[int, np.ndarray]] = {}  # worker index -> (episode, its observation)
        while queue or current:
            idle = [w for w in range(len(self.workers)) if w not in current][:len(queue)]
            for w in idle:  # free workers start the next episodes, all resets in flight at once
                self.workers[w].send("reset", seeds[queue[0]], video and queue[0] == 0)
                current[w] = (queue.pop(0), None)
            for w in idle:
                (obs, _), frame = self.workers[w].recv()
                current[w] = (current[w][0], obs)
                if frame is not None:
                    frames.append(frame)
            order = sorted(current)
            actions = agent.act_batch(np.stack([current[w][1] for w in order]), step, True)
            for w, action in zip(order, actions):
                self.workers[w].send("step", action, video and current[w][0] == 0)
            for w in order:
                (obs, reward, terminated, truncated, _), frame = self.workers[w].recv()
                episode = current[w][0]
                returns[episode] += float(reward)
                lengths[episode] += 1
                if frame is not None:
                    frames.append(frame)
                if terminated or truncated:
                    del current[w]
                else:
                    current[w] = (episode, obs)
        return Episodes(returns, lengths, frames)

    def close(self) -> None:
        close_all(self.workers)
        self.workers = []
