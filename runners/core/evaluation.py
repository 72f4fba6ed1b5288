"""Evaluation episodes: in-process one after another (`eval_workers=0`), or stepped in env worker
processes (runners/core/workers.py), the policy acting in the learner's process.

Both play the same episodes: episode i starts from `reset(seed=seeds[i])`, which fixes the whole
episode whichever env plays it (the task's random stream is reseeded in place). The policy is the
learner's deterministic evaluation action (the mean). On the CPU each observation is acted on alone
as its worker sends it, so the episodes are exactly the serial ones; on an accelerator the workers
step in lock-step rounds and one forward pass acts for all of them, which gives each observation
its batch-1 action up to the rounding of a batch-B pass. A freed worker takes the next episode.
The video is episode 0's: its worker renders after the reset and after every step, as the serial
loop does.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from multiprocessing.connection import wait
from typing import Any

import numpy as np
import torch

from taco_rl.runners.core.workers import EnvWorker, answer_timeout, close_all, cores, overdue, start_workers, time_left


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

    def play(self, agent, step: int, seeds: list[int], video: bool, batched: bool | None = None) -> Episodes:
        """Play episode i from `reset(seed=seeds[i])` on the workers, a freed worker taking the next.

        `batched` (default: on an accelerator): the workers step in lock-step rounds and the policy
        acts on all their observations in one forward pass, whose launch costs more there than its
        work. Otherwise (default on the CPU) each observation is acted on as it arrives, alone, while
        the other workers go on stepping: the serial loop's own batch-1 actions, so the serial
        episodes exactly, and no worker waits for the slowest; the learner's process keeps to the
        cores the workers leave it."""
        batched = agent.device.type != "cpu" if batched is None else batched
        n = len(seeds)
        returns, lengths = [0.0] * n, [0] * n
        frames: list[np.ndarray] = []
        queue = list(range(n))  # episodes not started yet, in order
        playing: dict[int, tuple[int, bool]] = {}  # worker index -> (episode, whether it has stepped)

        def start(w: int) -> None:
            playing[w] = (queue[0], False)
            self.workers[w].send("reset", seeds[queue[0]], video and queue[0] == 0)
            queue.pop(0)

        for w in range(min(n, len(self.workers))):  # every reset in flight at once
            start(w)
        with _intra_op_threads(None if batched else max(1, cores() - len(playing))):
            while playing:
                observations: dict[int, np.ndarray] = {}
                for w in sorted(playing) if batched else self._answered(playing):
                    reply, frame = self.workers[w].recv()
                    episode, stepped = playing[w]
                    if frame is not None:
                        frames.append(frame)
                    if not stepped:  # a reset's (obs, info)
                        observations[w] = reply[0]
                        playing[w] = (episode, True)
                        continue
                    obs, reward, terminated, truncated, _ = reply
                    returns[episode] += float(reward)
                    lengths[episode] += 1
                    if not (terminated or truncated):
                        observations[w] = obs
                    elif queue:
                        start(w)
                    else:
                        del playing[w]
                if not observations:
                    continue
                order = sorted(observations)
                if batched:
                    actions = agent.act_batch(np.stack([observations[w] for w in order]), step, True)
                else:
                    actions = [agent.act_batch(observations[w][None], step, True)[0] for w in order]
                for w, action in zip(order, actions, strict=True):
                    self.workers[w].send("step", action, video and playing[w][0] == 0)
        return Episodes(returns, lengths, frames)

    def _answered(self, playing: dict[int, Any]) -> list[int]:
        """The playing workers with a reply waiting (or that died: their recv says so), blocking
        until there is one. A worker silent for `answer_timeout()` seconds since its command is an
        error even while the others go on answering."""
        busy = [self.workers[w] for w in sorted(playing)]
        limit = answer_timeout()
        ready = set(wait([x for w in busy for x in w.waits()], time_left(min(w.sent_at for w in busy), limit)))
        for w in busy:
            if not set(w.waits()) & ready and overdue(w.sent_at, limit):
                raise w.silent(limit)
        return [w for w in sorted(playing) if set(self.workers[w].waits()) & ready]

    def close(self) -> None:
        close_all(self.workers)
        self.workers = []


@contextlib.contextmanager
def _intra_op_threads(count: int | None):
    """torch's CPU threads set to `count` for the block (None: left as they are)."""
    before = torch.get_num_threads()
    if count is not None and count < before:
        torch.set_num_threads(count)
    try:
        yield
    finally:
        if torch.get_num_threads() != before:
            torch.set_num_threads(before)
