"""N envs' interleaved steps feed one replay: every sample against the brute-force reference.

Three streams step in a random interleaving, each with episodes of different lengths and kinds; the
reference holds each env's episodes whole, in the order they ended. A stack, n-step return or K-step
window that reached into another env's frames would decode to the wrong (episode, t) or carry the
wrong actions and rewards.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_replay import FRAME, GAMMA, A, Reference, S, check_against_reference, make_episode

from taco_rl.runners.core.replay import Replay
from taco_rl.runners.online.episode_staging import EpisodeStaging

KINDS = ("truncated", "terminal", "random")


def interleaved(rb: Replay, ref: Reference, rng: np.random.Generator, lengths: list[list[int]]) -> None:
    staging = EpisodeStaging(rb, len(lengths))
    queues = []
    next_id = 1
    for env, lens in enumerate(lengths):
        eps = []
        for j, n in enumerate(lens):
            eps.append(make_episode(rng, next_id, n, KINDS[(env + j) % 3]))
            next_id += 1
        queues.append(eps)
    pos = [0] * len(lengths)  # steps taken in each env's current episode
    while any(queues):
        env = int(rng.choice([i for i, q in enumerate(queues) if q]))
        ep = queues[env][0]
        if not staging.open(env):
            staging.begin(env, ep["frames"][0])
            pos[env] = 0
            continue
        t = pos[env]
        if t < len(ep["actions"]):
            staging.add(env, ep["frames"][t + 1], ep["actions"][t], ep["rewards"][t], ep["discounts"][t])
            pos[env] += 1
        if pos[env] == len(ep["actions"]):
            staging.flush(env)
            ref.add_episode(ep)
            queues[env].pop(0)


@pytest.mark.parametrize("capacity", [1000, 53])  # 53: the ring wraps, old episodes fall out
def test_interleaved_envs_match_reference(capacity: int) -> None:
    rng = np.random.default_rng(capacity)
    torch.manual_seed(0)
    rb = Replay(capacity, FRAME, A, frame_stack=S, nstep=3, gamma=GAMMA, seq_len=3)
    ref = Reference(capacity, 3, 3)
    interleaved(rb, ref, rng, [[7, 0, 12, 3], [25, 1, 9], [4, 5, 6, 17, 2]])
    assert len(rb) == min(ref.total, capacity)
    check_against_reference(rb, ref, draws_per_position=20)


def test_flush_of_a_partial_episode_and_misuse() -> None:
    rng = np.random.default_rng(3)
    rb = Replay(100, FRAME, A, frame_stack=S, nstep=1, gamma=GAMMA)
    ref = Reference(100, 1, 0)
    staging = EpisodeStaging(rb, 2)
    with pytest.raises(RuntimeError, match="env 1: add\\(\\) before begin"):
        staging.add(1, np.zeros(FRAME, np.uint8), np.zeros(A), 0.0, 1.0)
    ep = make_episode(rng, 1, 6, "truncated")
    staging.begin(0, ep["frames"][0])
    with pytest.raises(RuntimeError, match="env 0: begin\\(\\) while its episode is still open"):
        staging.begin(0, ep["frames"][0])
    for t in range(4):  # the run stopped mid-episode: what was stepped is kept
        staging.add(0, ep["frames"][t + 1], ep["actions"][t], ep["rewards"][t], ep["discounts"][t])
    staging.flush_all()
    cut = {k: v[:5] if k == "frames" else v[:4] if k != "id" else v for k, v in ep.items()}
    ref.add_episode(cut)
    assert not staging.open(0) and len(rb) == 5
    check_against_reference(rb, ref)
