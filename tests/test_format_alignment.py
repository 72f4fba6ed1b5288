"""Per-format alignment: files built the way each format's own writer lays them out (SPEC 7), with
values that encode (episode, step), imported and checked field by field for every transition
(episode rows and sampled batches); the Minari export checked step by step as `minari.load_dataset`
reads it.

The code of record j of episode e: frame channels (e + 1, j, 200), action (e, j, -j) / 100, reward
1000 e + j. Record 0 is the reset. In every format transition i (0-based) of episode e must be
obs = frame (e, i), next_obs = frame (e, i + 1), action = action (e, i + 1), reward = 1000 e + i + 1,
discount 0 only at the last transition of an episode that ended in a true terminal.
"""

from __future__ import annotations

import warnings

import h5py
import numpy as np
import pytest
import torch

from taco_rl.runners.data.convert import import_dataset
from taco_rl.runners.data.datasets import iter_episodes, load_dataset

MARK = 200


def frame(e: int, j: int, hw: int) -> np.ndarray:
    f = np.empty((3, hw, hw), np.uint8)
    f[0], f[1], f[2] = e + 1, j, MARK
    return f


def action(e: int, j: int) -> np.ndarray:
    return np.array([e, j, -j], np.float64) / 100.0


def reward(e: int, j: int) -> float:
    return 1000.0 * e + j


def decode(obs: torch.Tensor) -> tuple[int, int]:
    """(episode, step) of one (3, H, W) frame, checking that it is one uniform code frame."""
    f = obs.numpy()
    assert (f == f[:, :1, :1]).all() and f[2, 0, 0] == MARK, "not an intact code frame"
    return int(f[0, 0, 0]) - 1, int(f[1, 0, 0])


def check_import(ds, lengths: list[int], hw: int, terminal: set[int]) -> None:
    replay, _ = load_dataset(ds, nstep=1, frame_stack=1, gamma=0.9)
    eps = list(iter_episodes(replay))
    assert [len(a) for _, a, _, _ in eps] == lengths
    for e, (frames, acts, rews, discs) in enumerate(eps):
        t = lengths[e]
        assert torch.equal(frames, torch.from_numpy(np.stack([frame(e, j, hw) for j in range(t + 1)])))
        assert torch.equal(acts, torch.from_numpy(np.stack([action(e, i + 1) for i in range(t)]).astype(np.float32)))
        assert torch.equal(rews, torch.tensor([reward(e, i + 1) for i in range(t)], dtype=torch.float32))
        want = torch.ones(t)
        if e in terminal:
            want[-1] = 0.0
        assert torch.equal(discs, want), (e, discs)
    # the learner's view: every sampled transition lines its fields up the same way
    torch.manual_seed(0)
    batch = replay.sample(40 * sum(lengths))
    seen = set()
    for k in range(len(batch["obs"])):
        e, i = decode(batch["obs"][k])
        assert decode(batch["next_obs"][k]) == (e, i + 1)
        assert torch.equal(batch["action"][k], torch.from_numpy(action(e, i + 1).astype(np.float32)))
        assert float(batch["reward"][k]) == reward(e, i + 1)
        d = 0.0 if (e in terminal and i == lengths[e] - 1) else 1.0
        assert float(batch["discount"][k]) == pytest.approx(0.9 * d)
        seen.add((e, i))
    assert seen == {(e, i) for e, t in enumerate(lengths) for i in range(t)}  # every transition sampled


# ---------------------------------------------------------------- V-D4RL 84px: flat HDF5 shards
def test_vd4rl_84px_hdf5_alignment(tmp_path):
    shards, hw = [[4, 7], [5], [3, 2]], 84
    folder = tmp_path / "84px"
    folder.mkdir()
    e = 0
    for k, lengths in enumerate(shards):
        obs, act, rew, st = [], [], [], []
        for t in lengths:
            for j in range(t + 1):
                obs.append(frame(e, j, hw))
                act.append(action(e, j) if j else np.zeros(3))  # the reset's action and reward: placeholders
                rew.append(reward(e, j) if j else 0.0)
                st.append(0 if j == 0 else 2 if j == t else 1)
            e += 1
        with h5py.File(folder / f"shard{k}.hdf5", "w") as f:
            f["observation"], f["action"], f["reward"] = np.stack(obs), np.stack(act), np.array(rew)
            f["discount"], f["step_type"] = np.ones(len(st)), np.array(st, np.int64)
    import_dataset("vd4rl", str(folder), str(tmp_path / "ds"), task="walker_walk")
    check_import(tmp_path / "ds", [t for s in shards for t in s], hw, terminal=set())


# ---------------------------------------------------------------- V-D4RL 64px: one npz per episode
def test_vd4rl_64px_npz_alignment(tmp_path):
    lengths, hw, terminal = [5, 8, 3], 64, {1}
    folder = tmp_path / "64px"
    folder.mkdir()
    for e, t in enumerate(lengths):
        j = np.arange(t + 1)
        term = (j == t) & (e in terminal)
        np.savez_compressed(
            folder / f"ep{e}-{t + 100}.npz",  # the length in the name is wrong on purpose
            image=np.stack([frame(e, i, hw).transpose(1, 2, 0) for i in j]),
            action=np.stack([action(e, i) if i else np.zeros(3) for i in j]),
            reward=np.array([reward(e, i) if i else 0.0 for i in j]),
            discount=1.0 - term,
            is_first=j == 0,
            is_last=j == t,
            is_terminal=term,
        )
    import_dataset("vd4rl", str(folder), str(tmp_path / "ds"), task="cheetah_run")
    check_import(tmp_path / "ds", lengths, hw, terminal)


# ---------------------------------------------------------------- DrQ-v2 / TACO replay episodes
def test_drqv2_npz_alignment(tmp_path):
    lengths, hw, terminal = [6, 4], 84, {0}
    folder = tmp_path / "buffer"
    folder.mkdir()
    for e, t in enumerate(lengths):
        # frame stacks of 3, oldest first: the newest frame is the last three channels
        stacks = np.stack(
            [
                np.concatenate([frame(e, max(0, j - 2), hw) // 2, frame(e, max(0, j - 1), hw) // 3, frame(e, j, hw)])
                for j in range(t + 1)
            ]
        )
        disc = np.ones((t + 1, 1), np.float32)
        if e in terminal:
            disc[-1] = 0.0
        np.savez(
            folder / f"20230101T000000_{e}_{t}.npz",
            observation=stacks,
            action=np.stack([action(e, j) if j else np.zeros(3) for j in range(t + 1)]).astype(np.float32),
            reward=np.array([[reward(e, j) if j else 0.0] for j in range(t + 1)], np.float32),
            discount=disc,
        )
    import_dataset("drqv2", str(folder), str(tmp_path / "ds"), task="cheetah_run")
    check_import(tmp_path / "ds", lengths, hw, terminal)


# ---------------------------------------------------------------- Minari: import and export
def _minari_write(dataset_id, lengths, hw, terminal):
    import gymnasium as gym
    import minari
    from minari.data_collector import EpisodeBuffer

    bufs = []
    for e, t in enumerate(lengths):
        i = np.arange(t)
        term = (i == t - 1) & (e in terminal)
        bufs.append(
            EpisodeBuffer(
                observations=np.stack([frame(e, j, hw).transpose(1, 2, 0) for j in range(t + 1)]),
                actions=np.stack([action(e, k + 1) for k in i]).astype(np.float32),  # actions[i] led to obs i+1
                rewards=np.array([reward(e, k + 1) for k in i]),
                terminations=term,
                truncations=(i == t - 1) & ~term,
            )
        )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        minari.create_dataset_from_buffers(
            dataset_id,
            bufs,
            observation_space=gym.spaces.Box(0, 255, (hw, hw, 3), np.uint8),
            action_space=gym.spaces.Box(-1, 1, (3,), np.float32),
            jpeg_encoding=False,
        )


def test_minari_import_alignment(tmp_path, monkeypatch):
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "minari"))
    lengths, hw, terminal = [5, 3, 8], 32, {0, 2}
    _minari_write("align/imp-v0", lengths, hw, terminal)
    import_dataset("minari", "align/imp-v0", str(tmp_path / "ds"), task="point_reach")
    check_import(tmp_path / "ds", lengths, hw, terminal)


def test_minari_export_alignment_as_minari_reads_it(tmp_path, monkeypatch):
    import minari

    from taco_rl.runners.data.formats.minari import export

    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "minari"))
    lengths, hw, terminal = [5, 3, 8], 32, {1}
    _minari_write("align/src-v0", lengths, hw, terminal)
    import_dataset("minari", "align/src-v0", str(tmp_path / "native"), task="point_reach")
    export(tmp_path / "native", "align/out-v0")
    md = minari.load_dataset("align/out-v0")
    assert md.total_episodes == len(lengths) and md.total_steps == sum(lengths)
    for e, ep in enumerate(md.iterate_episodes()):
        t = lengths[e]
        assert ep.id == e and len(ep.actions) == t and len(ep.observations) == t + 1
        for j in range(t + 1):
            assert np.array_equal(ep.observations[j], frame(e, j, hw).transpose(1, 2, 0)), (e, j)
        for i in range(t):
            assert np.array_equal(ep.actions[i], action(e, i + 1).astype(np.float32)), (e, i)
            assert ep.rewards[i] == reward(e, i + 1), (e, i)
            last = i == t - 1
            assert bool(ep.terminations[i]) == (last and e in terminal), (e, i)
            assert bool(ep.truncations[i]) == (last and e not in terminal), (e, i)
