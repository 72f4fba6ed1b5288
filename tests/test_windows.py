"""WindowSampler: TACO's K-step windows from plain arrays never cross an episode end (SPEC 2).

As in tests/test_alignment.py, every stored value says where it came from: observation, action and
reward of step s of episode e carry (e, s), so each window is checked against what the "env" did.
With next_obs the valid starts are exactly the suite's replay's (the same episodes stored in a
`Replay` agree start for start); without it a window also needs obs[t+K] in its episode.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from taco_rl import WindowSampler
from taco_rl.runners.core.replay import Replay

A = 2
LENGTHS = [5, 1, 2, 3, 7, 4, 9, 3]  # transitions per episode; the last episode is still running (no end)


def episode_frames(e: int, steps: int) -> np.ndarray:
    """(steps + 1, 3, 4, 4) uint8: frame s of episode e carries e in channel 0 and s in channel 1."""
    frames = np.zeros((steps + 1, 3, 4, 4), np.uint8)
    frames[:, 0] = e
    frames[:, 1] = np.arange(steps + 1)[:, None, None]
    return frames


def episode_actions(e: int, steps: int) -> np.ndarray:
    return np.stack([np.full(steps, e), np.arange(steps)], axis=1).astype(np.float32)


def episode_rewards(e: int, steps: int) -> np.ndarray:
    return (100.0 * e + np.arange(steps)).astype(np.float32)


def transitions(lengths: list[int] = LENGTHS, open_last: bool = True) -> dict[str, np.ndarray]:
    """The usual flat arrays of a learner's own storage: obs, actions, rewards, next_obs, dones."""
    parts: dict[str, list[np.ndarray]] = {"obs": [], "next_obs": [], "actions": [], "rewards": [], "dones": []}
    for e, steps in enumerate(lengths):
        frames = episode_frames(e, steps)
        parts["obs"].append(frames[:-1])
        parts["next_obs"].append(frames[1:])
        parts["actions"].append(episode_actions(e, steps))
        parts["rewards"].append(episode_rewards(e, steps))
        done = np.zeros(steps, bool)
        done[-1] = not (open_last and e == len(lengths) - 1)
        parts["dones"].append(done)
    return {k: np.concatenate(v) for k, v in parts.items()}


def brute_force_starts(lengths: list[int], k: int, with_next_obs: bool) -> list[tuple[int, int]]:
    """(episode, step) of every start whose window stays in its episode, by walking the episodes."""
    need = k if with_next_obs else k + 1  # rows of the episode the window reads from obs/next_obs
    return [(e, s) for e, steps in enumerate(lengths) for s in range(steps) if s + need <= steps]


def check_windows(w: dict[str, torch.Tensor], k: int, lengths: list[int]) -> list[tuple[int, int]]:
    """Each window against the episodes it came from; returns its (episode, step)."""
    e, s = w["obs"][:, 0, 0, 0].long(), w["obs"][:, 1, 0, 0].long()
    assert (w["future_obs"][:, 0, 0, 0].long() == e).all()  # the same episode
    assert (w["future_obs"][:, 1, 0, 0].long() == s + k).all()  # exactly K steps later
    for i in range(len(e)):
        ei, si = int(e[i]), int(s[i])
        assert si + k <= lengths[ei]  # never past the episode's end
        np.testing.assert_array_equal(w["action_seq"][i].numpy(), episode_actions(ei, lengths[ei])[si : si + k])
        np.testing.assert_array_equal(w["reward_seq"][i].numpy(), episode_rewards(ei, lengths[ei])[si : si + k])
    return list(zip(e.tolist(), s.tolist(), strict=True))


@pytest.mark.parametrize("with_next_obs", [True, False])
@pytest.mark.parametrize("k", [1, 3, 5])
def test_every_valid_start_and_only_those(k, with_next_obs):
    data = transitions()
    sampler = WindowSampler(
        data["obs"],
        data["actions"],
        data["rewards"],
        data["dones"],
        k=k,
        next_obs=data["next_obs"] if with_next_obs else None,
    )
    expected = brute_force_starts(LENGTHS, k, with_next_obs)
    assert len(sampler) == len(expected)
    assert check_windows(sampler.gather(sampler.starts), k, LENGTHS) == expected


def test_the_boundary_cases_one_by_one():
    data = transitions([4, 2, 3], open_last=True)  # rows: episode 0 = 0..3, episode 1 = 4..5, episode 2 = 6..8
    with_next = WindowSampler(
        data["obs"], data["actions"], data["rewards"], data["dones"], k=2, next_obs=data["next_obs"]
    )
    # a window may end with its episode (0..2 reach next_obs[3], the final frame), never run into the next;
    # the running last episode counts up to its newest transition
    assert with_next.starts.tolist() == [0, 1, 2, 4, 6, 7]
    without = WindowSampler(data["obs"], data["actions"], data["rewards"], data["dones"], k=2)
    # without next_obs, s_{t+K} is obs[t+K]: one step less in each episode, none in a 2-step one
    assert without.starts.tolist() == [0, 1, 6]
    # a window of K=3 fits neither the 2-step episode nor, without next_obs, the 3-step one
    assert WindowSampler(
        data["obs"], data["actions"], data["rewards"], data["dones"], k=3, next_obs=data["next_obs"]
    ).starts.tolist() == [0, 1, 6]
    assert WindowSampler(data["obs"], data["actions"], data["rewards"], data["dones"], k=3).starts.tolist() == [0]


@pytest.mark.parametrize("k", [1, 3])
def test_same_starts_as_the_suites_replay(k):
    """The same episodes in the suite's Replay (one frame per step, n = 1): the windows it samples are
    the sampler's, start for start, and as many."""
    data = transitions()
    sampler = WindowSampler(
        data["obs"], data["actions"], data["rewards"], data["dones"], k=k, next_obs=data["next_obs"]
    )
    replay = Replay(1000, (3, 4, 4), A, frame_stack=1, nstep=1, seq_len=k)
    for e, steps in enumerate(LENGTHS):
        replay.add_episode(
            episode_frames(e, steps), episode_actions(e, steps), episode_rewards(e, steps), np.ones(steps, np.float32)
        )
    assert replay.num_sampleable == len(sampler)
    torch.manual_seed(0)
    batch = replay.sample(2000)
    drawn = list(zip(batch["obs"][:, 0, 0, 0].tolist(), batch["obs"][:, 1, 0, 0].tolist(), strict=True))
    assert set(drawn) == set(brute_force_starts(LENGTHS, k, with_next_obs=True))
    row_of = dict(zip(check_windows(sampler.gather(sampler.starts), k, LENGTHS), sampler.starts.tolist(), strict=True))
    rows = torch.tensor([row_of[key] for key in drawn])
    mine = sampler.gather(rows)
    assert torch.equal(mine["future_obs"], batch["future_obs"]) and torch.equal(mine["action_seq"], batch["action_seq"])


def test_sample_is_uniform_over_the_valid_starts_and_seeded():
    data = transitions()
    sampler = WindowSampler(
        data["obs"], data["actions"], data["rewards"], data["dones"], k=3, next_obs=data["next_obs"]
    )
    w = sampler.sample(6000, generator=torch.Generator().manual_seed(0))
    drawn = check_windows(w, 3, LENGTHS)
    counts = {key: drawn.count(key) for key in set(drawn)}
    assert set(counts) == set(brute_force_starts(LENGTHS, 3, True))
    mean = len(drawn) / len(counts)
    assert all(abs(c - mean) <= 6 * mean**0.5 for c in counts.values())
    again = sampler.sample(6000, generator=torch.Generator().manual_seed(0))
    assert all(torch.equal(w[key], again[key]) for key in w)
    assert set(w) == {"obs", "action_seq", "reward_seq", "future_obs"}  # TacoLoss's keyword arguments
    assert w["reward_seq"].dtype == torch.float32 and w["obs"].dtype == torch.uint8


def test_numpy_and_torch_give_the_same_windows_without_copying_the_arrays():
    data = transitions()
    as_numpy = WindowSampler(
        data["obs"], data["actions"], data["rewards"], data["dones"], k=3, next_obs=data["next_obs"]
    )
    tensors = {key: torch.from_numpy(v.copy()) for key, v in data.items()}
    as_torch = WindowSampler(
        tensors["obs"],
        tensors["actions"],
        tensors["rewards"][:, None],
        tensors["dones"][:, None],
        k=3,
        next_obs=tensors["next_obs"],
    )
    assert torch.equal(as_numpy.starts, as_torch.starts)
    a, b = as_numpy.gather(as_numpy.starts), as_torch.gather(as_torch.starts)
    assert all(torch.equal(a[key], b[key]) for key in a)
    data["actions"][0, 0] = 42.0  # the sampler reads the caller's array in place
    assert as_numpy.gather([0])["action_seq"][0, 0, 0] == 42.0


def test_bad_inputs_say_what_was_expected():
    d = transitions()
    n = len(d["dones"])
    args = (d["obs"], d["actions"], d["rewards"], d["dones"])
    cases = [
        ((d["obs"][:, 0, 0, 0], *args[1:]), {}, "obs: expected"),
        ((d["obs"], d["actions"][:-1], *args[2:]), {}, rf"actions: expected \(N, A\) with N={n}"),
        ((*args[:2], d["rewards"][:, None, None], d["dones"]), {}, rf"rewards: expected \({n},\)"),
        ((*args[:3], d["dones"].astype(np.float32)), {}, "dones: expected a bool array"),
        ((*args[:3], d["dones"][:-1]), {}, rf"dones: expected \({n},\)"),
        (args, {"next_obs": d["next_obs"][:-1]}, "next_obs: expected the shape of obs"),
        (args, {"k": 0}, "k must be >= 1"),
        (args, {"k": 10}, "no window of k=10"),
    ]
    for positional, keywords, message in cases:
        with pytest.raises(ValueError, match=message):
            WindowSampler(*positional, **keywords)
    with pytest.raises(TypeError, match="obs: expected a numpy array or a torch.Tensor, got list"):
        WindowSampler(d["obs"].tolist(), *args[1:])
    sampler = WindowSampler(*args, k=3, next_obs=d["next_obs"])
    with pytest.raises(ValueError, match=r"starts \[3\]: their K=3-step windows leave the stored episodes"):
        sampler.gather([0, 3])  # episode 0 has 5 steps: a window at 3 would run into episode 1
