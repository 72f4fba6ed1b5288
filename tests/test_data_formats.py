"""Importers (V-D4RL hdf5/npz, DrQ-v2 npz, Minari) against brute-force readings of files the tests write
in the published layouts, the Minari export round trip, and one-line CLI errors for bad input."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest
import torch

from taco_rl.runners.cli import main
from taco_rl.runners.data.convert import import_dataset
from taco_rl.runners.data.datasets import DatasetError, dataset_info, iter_episodes, load_dataset, verify_checksum

A = 3  # action size
HW = 16  # frame size of the test files


def rng(seed):
    return np.random.default_rng(seed)


# ---------------------------------------------------------------- writers in the published layouts
def write_vd4rl_hdf5(folder, shards, seed=0):
    """shards: list of lists of episode lengths (transitions). float64 actions/rewards, int64 step types,
    an unknown key; record 0 of each episode is the reset."""
    g = rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for k, lengths in enumerate(shards):
        n = sum(t + 1 for t in lengths)
        st = np.concatenate([np.r_[0, np.ones(t - 1), 2] for t in lengths]).astype(np.int64)
        with h5py.File(folder / f"shard_{k}_len999.hdf5", "w") as f:
            f["observation"] = g.integers(0, 256, (n, 3, HW, HW), dtype=np.uint8)
            f["action"] = g.uniform(-1, 1, (n, A))
            f["reward"] = g.normal(size=n)
            f["discount"] = np.ones(n)
            f["step_type"] = st
            f["extra_info"] = np.arange(n)


def brute_vd4rl_hdf5(folder):
    eps = []
    for file in sorted(folder.glob("*.hdf5")):
        with h5py.File(file, "r") as f:
            obs, act, rew, st = (f[k][()] for k in ("observation", "action", "reward", "step_type"))
        for i in range(len(st)):
            if st[i] == 0:
                eps.append(([obs[i]], [], [], []))
            else:
                fr, a, r, d = eps[-1]
                fr.append(obs[i])
                a.append(np.float32(act[i]))
                r.append(np.float32(rew[i]))
                d.append(np.float32(1.0))
    return eps


def write_vd4rl_npz(folder, lengths, seed=0):
    g = rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for k, t in enumerate(lengths):
        act = g.uniform(-1, 1, (t + 1, A))
        act[0] = 0
        rew = g.normal(size=t + 1)
        rew[0] = 0
        first = np.zeros(t + 1, bool)
        first[0] = True
        last = np.zeros(t + 1, bool)
        last[-1] = True
        term = np.zeros(t + 1, bool)
        term[-1] = k == 1  # one episode ends in a true terminal
        np.savez_compressed(
            folder / f"2022-ep{k}-500.npz",
            image=g.integers(0, 256, (t + 1, HW, HW, 3), dtype=np.uint8),
            action=act,
            reward=rew,
            discount=1.0 - term,
            is_first=first,
            is_last=last,
            is_terminal=term,
            logprob=np.zeros(t + 1),
        )


def brute_npz(folder, frames_key, to_frame, discount_of):
    eps = []
    for file in sorted(folder.glob("*.npz")):
        d = dict(np.load(file))
        fr, a, r, dc = [to_frame(d[frames_key][0])], [], [], []
        for i in range(1, len(d[frames_key])):
            fr.append(to_frame(d[frames_key][i]))
            a.append(np.asarray(d["action"][i], np.float32))
            r.append(np.float32(np.ravel(d["reward"][i])[0]))
            dc.append(np.float32(discount_of(d, i)))
        eps.append((fr, a, r, dc))
    return eps


def write_drqv2(folder, lengths, seed=0):
    """DrQ-v2 replay episodes: frame stacks of 3 (the reset frame repeated at the start)."""
    g = rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for k, t in enumerate(lengths):
        single = g.integers(0, 256, (t + 1, 3, HW, HW), dtype=np.uint8)
        stacks = np.stack([np.concatenate([single[max(0, i - j)] for j in (2, 1, 0)]) for i in range(t + 1)])
        act = g.uniform(-1, 1, (t + 1, A)).astype(np.float32)
        act[0] = 0
        rew = g.normal(size=(t + 1, 1)).astype(np.float32)
        rew[0] = 0
        disc = np.ones((t + 1, 1), np.float32)
        np.savez(
            folder / f"20230101T0000{k:02d}_{k}_{t + 7}.npz", observation=stacks, action=act, reward=rew, discount=disc
        )


def assert_episodes(path, expected):
    got = list(iter_episodes(load_dataset(path, nstep=1, frame_stack=1)[0]))
    assert len(got) == len(expected)
    for (f, a, r, d), (ef, ea, er, ed) in zip(got, expected, strict=True):
        assert torch.equal(f, torch.from_numpy(np.stack(ef)))
        assert torch.equal(a, torch.from_numpy(np.stack(ea).astype(np.float32)))
        assert torch.equal(r, torch.from_numpy(np.asarray(er, np.float32)))
        assert torch.equal(d, torch.from_numpy(np.asarray(ed, np.float32)))
    info = dataset_info(path)
    assert info["episodes"] == len(expected)
    assert info["transitions"] == sum(len(e[1]) for e in expected)
    returns = [float(np.sum(np.asarray(e[2], np.float64))) for e in expected]
    assert info["return"]["mean"] == pytest.approx(np.mean(returns), rel=1e-5)
    verify_checksum(path)


# ---------------------------------------------------------------- importers vs brute force
def test_vd4rl_hdf5_shards(tmp_path):
    write_vd4rl_hdf5(tmp_path / "84px", [[4, 7], [5], [3, 2, 6]])
    import_dataset("vd4rl", str(tmp_path / "84px"), str(tmp_path / "ds"), task="walker_walk")
    assert_episodes(tmp_path / "ds", brute_vd4rl_hdf5(tmp_path / "84px"))
    info = dataset_info(tmp_path / "ds")
    assert info["source"]["format"] == "vd4rl-hdf5" and info["frame_shape"] == [3, HW, HW]


def _split_like_vd4rl(src, dst, parts):
    """V-D4RL's conversion_scripts/split_hdf5_shards.py: np.array_split of every key, files 0.hdf5, 1.hdf5, ..."""
    dst.mkdir()
    with h5py.File(next(src.glob("*.hdf5")), "r") as f:
        data = {k: f[k][()] for k in f}
    for i in range(parts):
        with h5py.File(dst / f"{i}.hdf5", "w") as f:
            for k, v in data.items():
                f[k] = np.array_split(v, parts)[i]


def test_vd4rl_hdf5_shards_split_mid_episode_are_stitched(tmp_path):
    write_vd4rl_hdf5(tmp_path / "whole", [[4, 7, 5, 3, 6, 8, 2]])
    _split_like_vd4rl(tmp_path / "whole", tmp_path / "split", 12)  # 42 records: some files wholly mid-episode
    firsts = [int(h5py.File(tmp_path / "split" / f"{i}.hdf5", "r")["step_type"][0]) for i in range(12)]
    assert firsts.count(1) >= 5  # the cut lands mid-episode in most files
    import_dataset("vd4rl", str(tmp_path / "split"), str(tmp_path / "ds"), task="walker_walk")
    assert_episodes(tmp_path / "ds", brute_vd4rl_hdf5(tmp_path / "whole"))  # 10.hdf5 after 9.hdf5, not 1.hdf5
    cuts = np.cumsum([len(x) for x in np.array_split(np.arange(42), 12)])[:-1]
    ends = np.cumsum([t + 1 for t in (4, 7, 5, 3, 6, 8, 2)])
    spanning = sum(any(s < c < e for c in cuts) for s, e in zip(np.r_[0, ends[:-1]], ends, strict=True))
    assert dataset_info(tmp_path / "ds")["source"]["stitched_episodes"] == spanning >= 5


def test_vd4rl_hdf5_mid_episode_after_a_last_step_names_both_files(tmp_path, capsys):
    write_vd4rl_hdf5(tmp_path / "src", [[4], [3]])
    second = sorted((tmp_path / "src").glob("*.hdf5"))[1]
    with h5py.File(second, "a") as f:
        f["step_type"][0] = 1  # shard 0 ends with a last step (2); shard 1 starts mid-episode
    code = main(
        [
            "data",
            "import",
            "vd4rl",
            str(tmp_path / "src"),
            "task=walker_walk",
            f"out={tmp_path / 'ds'}",
            "--no-progress",
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "cannot stitch" in err, err
    assert str(second) in err and "shard_0_len999.hdf5" in err, err


def test_import_of_a_missing_path_says_it_does_not_exist(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "minari"))
    for fmt, says in (
        ("vd4rl", "no such file or folder"),
        ("drqv2", "no such file or folder"),
        ("minari", "no such folder, and no local Minari dataset"),
    ):
        code = main(["data", "import", fmt, str(tmp_path / "nowhere"), f"out={tmp_path / 'ds'}", "--no-progress"])
        err = capsys.readouterr().err
        assert code == 2 and err.count("\n") == 1, err
        assert str(tmp_path / "nowhere") in err and says in err and "cannot tell the task" not in err, err


def test_vd4rl_npz_episodes(tmp_path):
    write_vd4rl_npz(tmp_path / "64px", [5, 8, 3])
    import_dataset("vd4rl", str(tmp_path / "64px"), str(tmp_path / "ds"), task="cheetah_run")
    expected = brute_npz(
        tmp_path / "64px", "image", lambda x: x.transpose(2, 0, 1), lambda d, i: 0.0 if d["is_terminal"][i] else 1.0
    )
    assert_episodes(tmp_path / "ds", expected)
    assert dataset_info(tmp_path / "ds")["source"]["format"] == "vd4rl-npz"


def test_drqv2_episodes_keep_one_frame(tmp_path):
    write_drqv2(tmp_path / "buffer", [6, 4, 9])
    import_dataset("drqv2", str(tmp_path / "buffer"), str(tmp_path / "ds"), task="cheetah_run")
    expected = brute_npz(tmp_path / "buffer", "observation", lambda x: x[-3:], lambda d, i: d["discount"][i, 0])
    assert_episodes(tmp_path / "ds", expected)
    assert dataset_info(tmp_path / "ds")["slots"] == 6 + 4 + 9 + 3  # one frame per step, not a stack


def test_task_guessed_from_path(tmp_path):
    write_drqv2(tmp_path / "walker_walk" / "buffer", [4])
    import_dataset("drqv2", str(tmp_path / "walker_walk" / "buffer"), str(tmp_path / "ds"))
    assert dataset_info(tmp_path / "ds")["task"] == "walker_walk"


# ---------------------------------------------------------------- Minari
def _minari_dataset(root, dataset_id, lengths, jpeg, seed=0, monkeypatch=None, hw=(32, 32)):
    import gymnasium as gym
    import minari
    from minari.data_collector import EpisodeBuffer

    monkeypatch.setenv("MINARI_DATASETS_PATH", str(root))
    g = rng(seed)
    bufs = []
    for t in lengths:
        term = np.zeros(t, bool)
        term[-1] = t % 2 == 1
        trunc = ~term & (np.arange(t) == t - 1)
        bufs.append(
            EpisodeBuffer(
                observations=g.integers(0, 256, (t + 1, *hw, 3), dtype=np.uint8),
                actions=g.uniform(-1, 1, (t, A)).astype(np.float32),
                rewards=g.normal(size=t),
                terminations=term,
                truncations=trunc,
            )
        )
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        minari.create_dataset_from_buffers(
            dataset_id,
            bufs,
            observation_space=gym.spaces.Box(0, 255, (*hw, 3), np.uint8),
            action_space=gym.spaces.Box(-1, 1, (A,), np.float32),
            jpeg_encoding=jpeg,
        )
    return minari.load_dataset(dataset_id)


def brute_minari(ds):
    eps = []
    for ep in ds.iterate_episodes():
        obs = ep.observations
        eps.append(
            (
                [o.transpose(2, 0, 1) for o in obs],
                list(ep.actions),
                list(np.float32(ep.rewards)),
                [np.float32(0.0 if t else 1.0) for t in ep.terminations],
            )
        )
    return eps


@pytest.mark.parametrize("jpeg", [False, True])
def test_minari_import(tmp_path, monkeypatch, jpeg):
    ds = _minari_dataset(tmp_path / "minari", "test/pix-v0", [5, 3, 8], jpeg, monkeypatch=monkeypatch)
    import_dataset("minari", "test/pix-v0", str(tmp_path / "ds"), task="point_reach")  # by local ID
    assert_episodes(tmp_path / "ds", brute_minari(ds))  # JPEG frames: the same pixels Minari decodes
    assert dataset_info(tmp_path / "ds")["source"]["jpeg_decoded"] is jpeg


@pytest.mark.parametrize("hw, jpeg", [((33, 20), False), ((30, 45), False), ((84, 84), False), ((30, 45), True)])
def test_minari_hwc_images_whose_height_is_a_multiple_of_3_are_images(tmp_path, monkeypatch, hw, jpeg):
    """(H, W, 3) images, raw or JPEG, square or not, whose height could be read as 3S channels: the
    recorded (H, W, 3) space makes them images, never CHW frame stacks."""
    ds = _minari_dataset(tmp_path / "minari", "test/hwc-v0", [4, 3], jpeg, monkeypatch=monkeypatch, hw=hw)
    import_dataset("minari", "test/hwc-v0", str(tmp_path / "ds"), task="point_reach")
    assert dataset_info(tmp_path / "ds")["frame_shape"] == [3, *hw]
    assert_episodes(tmp_path / "ds", brute_minari(ds))


def test_minari_chw_frame_stacks_of_non_square_frames(tmp_path, monkeypatch):
    """(T+1, 9, 30, 44) stacks recorded as a (9, 30, 44) space: stacks of 30x44 frames, the newest kept."""
    import warnings

    import gymnasium as gym
    import minari
    from minari.data_collector import EpisodeBuffer

    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "minari"))
    g = rng(4)
    bufs, expected = [], []
    for t in (5, 3):
        frames = g.integers(0, 256, (t + 1, 3, 30, 44), dtype=np.uint8)
        stacks = np.stack([np.concatenate([frames[max(0, i - k)] for k in (2, 1, 0)]) for i in range(t + 1)])
        acts, rews = g.uniform(-1, 1, (t, A)).astype(np.float32), g.normal(size=t)
        term = np.arange(t) == t - 1
        bufs.append(
            EpisodeBuffer(observations=stacks, actions=acts, rewards=rews, terminations=term, truncations=~term)
        )
        expected.append((list(frames), list(acts), list(np.float32(rews)), [np.float32(not x) for x in term]))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        minari.create_dataset_from_buffers(
            "test/chw-v0",
            bufs,
            observation_space=gym.spaces.Box(0, 255, (9, 30, 44), np.uint8),
            action_space=gym.spaces.Box(-1, 1, (A,), np.float32),
        )
    import_dataset("minari", "test/chw-v0", str(tmp_path / "ds"), task="point_reach")
    assert dataset_info(tmp_path / "ds")["frame_shape"] == [3, 30, 44]
    assert_episodes(tmp_path / "ds", expected)


def test_minari_layout_needs_the_recorded_space(tmp_path, monkeypatch, capsys):
    """Arrays that are not of the recorded space's shape, or no recorded space: refused in one line."""
    _minari_dataset(tmp_path / "minari", "test/sp-v0", [4, 3], False, monkeypatch=monkeypatch, hw=(33, 20))
    meta_file = tmp_path / "minari" / "test" / "sp-v0" / "data" / "metadata.json"
    meta = json.loads(meta_file.read_text())
    space = json.loads(meta["observation_space"])
    for bad, says in [
        ({**meta, "observation_space": json.dumps({**space, "shape": [20, 33, 3]})}, "records an observation space"),
        ({**meta, "observation_space": json.dumps({**space, "shape": [9, 11, 20]})}, "records an observation space"),
        ({k: v for k, v in meta.items() if k != "observation_space"}, "records no observation_space"),
    ]:
        meta_file.write_text(json.dumps(bad))
        code = main(["data", "import", "minari", "test/sp-v0", "task=point_reach", f"out={tmp_path / 'ds'}"])
        err = capsys.readouterr().err
        assert code == 2 and err.count("\n") == 1 and says in err, err
        assert not (tmp_path / "ds").exists()


def _record_taco_env(root, dataset_id, monkeypatch, episodes=2, damage=None):
    """What minari's DataCollector stores around gymnasium.make("taco/point_reach-v0"): its observations
    ((T+1, 9, H, W) uint8 frame stacks, which Minari keeps raw), actions, rewards and flags, written
    through the same storage (DataCollector itself needs jax, which is not installed here)."""
    import warnings

    import gymnasium as gym
    import minari
    from minari.data_collector import EpisodeBuffer

    import taco_rl.envs  # noqa: F401 - registers taco/<task>-v0

    monkeypatch.setenv("MINARI_DATASETS_PATH", str(root))
    env = gym.make("taco/point_reach-v0", image_size=32)
    env.action_space.seed(0)
    bufs, recorded = [], []
    for ep in range(episodes):
        obs = [env.reset(seed=ep)[0]]
        acts, rews, terms, truncs = [], [], [], []
        while not (terms[-1:] == [True] or truncs[-1:] == [True]):
            a = env.action_space.sample()
            o, r, te, tr, _ = env.step(a)
            obs.append(o), acts.append(a), rews.append(r), terms.append(te), truncs.append(tr)
        obs = np.stack(obs)
        if damage is not None and ep == 1:
            damage(obs)
        recorded.append((obs, np.stack(acts), np.array(rews), np.array(terms)))
        bufs.append(
            EpisodeBuffer(
                observations=obs,
                actions=np.stack(acts),
                rewards=np.array(rews),
                terminations=np.array(terms),
                truncations=np.array(truncs),
            )
        )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        minari.create_dataset_from_buffers(
            dataset_id,
            bufs,
            observation_space=env.observation_space,
            action_space=env.action_space,
            algorithm_name="random",
        )
    env.close()
    return recorded


def test_minari_frame_stacks_of_the_suites_env_import(tmp_path, monkeypatch):
    recorded = _record_taco_env(tmp_path / "minari", "taco/point_reach-random-v0", monkeypatch)
    with h5py.File(tmp_path / "minari" / "taco" / "point_reach-random-v0" / "data" / "main_data.hdf5") as f:
        assert f["episode_0/observations"].shape == recorded[0][0].shape == (26, 9, 32, 32)  # CHW stacks, raw
    import_dataset("minari", "taco/point_reach-random-v0", str(tmp_path / "ds"), task="point_reach")
    expected = [
        ([f[-3:] for f in obs], list(acts), list(np.float32(rews)), [np.float32(not t) for t in terms])
        for obs, acts, rews, terms in recorded
    ]  # the newest frame of each stack
    assert_episodes(tmp_path / "ds", expected)


@pytest.mark.parametrize(
    "damage, says",
    [
        (
            lambda obs: obs.__setitem__((0, slice(0, 3)), 255 - obs[0, :3]),
            "record 0 is a frame stack whose frames differ",
        ),
        (lambda obs: obs.__setitem__((7, slice(0, 3)), 255 - obs[7, :3]), "record 7: its older frames"),
    ],
)
def test_minari_inconsistent_frame_stacks_are_refused(tmp_path, monkeypatch, capsys, damage, says):
    _record_taco_env(tmp_path / "minari", "taco/bad-v0", monkeypatch, damage=damage)
    code = main(
        ["data", "import", "minari", "taco/bad-v0", "task=point_reach", f"out={tmp_path / 'ds'}", "--no-progress"]
    )
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and says in err and "episode_1/observations" in err, err


def test_minari_export_env_spec_replays_the_dataset(tmp_path, monkeypatch):
    """The export's env spec (taco/<task>-frame-v0) rebuilds the env that made the data: reset with a
    collected episode's seed and stepped with its actions, it emits that episode's (H, W, 3) frames,
    pixel for pixel, on frames that a transpose would change."""
    import minari

    from taco_rl.runners.data.collect import collect

    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "minari"))
    collect("random", 2, str(tmp_path / "native"), seed=3, task="point_reach", env={"image_size": 16})
    assert main(["data", "export", "minari", str(tmp_path / "native"), "taco/replay-v0", "--no-progress"]) == 0
    md = minari.load_dataset("taco/replay-v0")
    env = md.recover_environment()
    assert md.spec.env_spec.id == "taco/point_reach-frame-v0"
    for i, ep in enumerate(md.iterate_episodes()):
        frames = [env.reset(seed=3 * 1_000_003 + i)[0]]  # collect's reset seed of episode i
        frames += [env.step(a)[0] for a in ep.actions]
        assert all(f.shape == (16, 16, 3) for f in frames)
        assert any(not np.array_equal(f, f.transpose(1, 0, 2)) for f in ep.observations)  # not symmetric
        np.testing.assert_array_equal(np.stack(frames), ep.observations)
    env.close()


def test_hwc_frame_wrapper_on_non_square_frames():
    """HWCFrame on (3, 6, 10) frames: a (6, 10, 3) space and frame[r, c, k] == observation[k, r, c]."""
    import gymnasium as gym

    from taco_rl.envs.frame_env import HWCFrame

    pattern = np.arange(3 * 6 * 10, dtype=np.uint8).reshape(3, 6, 10)

    class Stub(gym.Env):
        observation_space = gym.spaces.Box(0, 255, (3, 6, 10), np.uint8)
        action_space = gym.spaces.Box(-1, 1, (1,), np.float32)

        def reset(self, *, seed=None, options=None):
            return pattern, {}

        def step(self, action):
            return pattern[::-1].copy(), 0.0, False, False, {}

    env = HWCFrame(Stub())
    assert env.observation_space.shape == (6, 10, 3)
    obs, _ = env.reset()
    assert obs.shape == (6, 10, 3) and env.observation_space.contains(obs)
    r, c, k = np.meshgrid(np.arange(6), np.arange(10), np.arange(3), indexing="ij")
    np.testing.assert_array_equal(obs, pattern[k, r, c])
    np.testing.assert_array_equal(env.step(np.zeros(1))[0], pattern[::-1][k, r, c])


def test_minari_export_algorithm_names_hold_no_paths():
    from taco_rl.runners.data.formats.minari import algorithm_name

    assert algorithm_name({"kind": "collect", "policy": "random", "noise": 0.0, "seed": 1}) == "random"
    assert (
        algorithm_name({"kind": "collect", "policy": "/home/u/runs/x", "agent": "drqv2", "aux": "taco", "noise": 0.2})
        == "drqv2+taco policy, action noise 0.2"
    )
    assert (
        algorithm_name({"kind": "from-run", "run": "/home/u/runs/x", "agent": "sac", "aux": "none"})
        == "sac replay buffer"
    )
    assert algorithm_name({"format": "vd4rl-hdf5", "path": "/data/x", "files": 3}) == "imported from vd4rl-hdf5"
    assert algorithm_name({"kind": "concat", "inputs": [{}, {}]}) == "concatenation of 2 datasets"


def test_native_minari_native_round_trip_is_exact(tmp_path, monkeypatch):
    import minari
    from test_datasets import make_episodes, replay_of

    from taco_rl.runners.data.datasets import write_dataset

    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "minari"))
    eps = make_episodes([5, 9, 4])  # 8x8 frames; one ends in a terminal
    write_dataset(replay_of(eps, action_dim=2), tmp_path / "native", task="point_reach", source="test")
    assert main(["data", "export", "minari", str(tmp_path / "native"), "taco/rt-v0", "--no-progress"]) == 0
    md = minari.load_dataset("taco/rt-v0")  # Minari itself reads the export
    assert md.total_episodes == 3 and md.total_steps == 18
    assert np.array_equal(next(md.iterate_episodes()).observations, eps[0][0].transpose(0, 2, 3, 1))
    assert (
        main(
            [
                "data",
                "import",
                "minari",
                str(tmp_path / "minari" / "taco" / "rt-v0"),
                "task=point_reach",
                f"out={tmp_path / 'back'}",
                "--no-progress",
            ]
        )
        == 0
    )
    assert dataset_info(tmp_path / "back")["checksum"] == dataset_info(tmp_path / "native")["checksum"]
    assert verify_checksum(tmp_path / "back") == dataset_info(tmp_path / "native")["checksum"]
    # a Minari user's view: the env spec builds an env whose observations are the dataset's, and scores normalise
    env = md.recover_environment()
    assert env.observation_space == md.observation_space == md.spec.observation_space
    obs, _ = env.reset(seed=0)
    assert md.observation_space.contains(obs) and md.observation_space.contains(env.step(env.action_space.sample())[0])
    assert md.spec.env_spec.id == "taco/point_reach-frame-v0" and md.spec.env_spec.kwargs["image_size"] == 8
    env.close()
    assert md.storage.metadata["algorithm_name"] == "taco-rl dataset"  # source="test" says nothing more
    assert minari.get_normalized_score(md, np.array([0.0, 25.0, 50.0])) == pytest.approx([0.0, 0.5, 1.0])
    # exporting to an existing ID is refused, and nothing is changed
    assert main(["data", "export", "minari", str(tmp_path / "native"), "taco/rt-v0"]) == 2


@pytest.mark.parametrize("dataset_id", ["taco/point_reach/scripted-v0", "taco/point_reach-scripted-v0", "taco/x-v0"])
def test_reimporting_our_export_takes_the_task_from_its_env_spec(tmp_path, monkeypatch, dataset_id):
    from test_datasets import make_episodes, replay_of

    from taco_rl.runners.data.datasets import write_dataset

    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "minari"))
    write_dataset(replay_of(make_episodes([5, 4]), action_dim=2), tmp_path / "native", task="point_reach", source="t")
    assert main(["data", "export", "minari", str(tmp_path / "native"), dataset_id, "--no-progress"]) == 0
    # by ID, no task=: the ID need not name the task (the last two do not as a path part), the env spec does
    assert main(["data", "import", "minari", dataset_id, f"out={tmp_path / 'back'}", "--no-progress"]) == 0
    assert dataset_info(tmp_path / "back")["task"] == "point_reach"
    assert dataset_info(tmp_path / "back")["checksum"] == dataset_info(tmp_path / "native")["checksum"]


def test_the_recorded_task_is_read_from_our_env_specs_only():
    from taco_rl.runners.data.formats.minari import recorded_task

    spec = {
        "id": "taco/cheetah_run-v0",
        "entry_point": "taco_rl.envs.registry:make_env",
        "kwargs": {"task": "cheetah_run"},
    }
    assert recorded_task({"env_spec": json.dumps(spec)}) == "cheetah_run"  # DataCollector around gymnasium.make
    assert recorded_task({"env_spec": json.dumps({**spec, "kwargs": {}})}) == "cheetah_run"  # from the ID
    assert recorded_task({"env_spec": json.dumps({"id": "mujoco/Pusher-v5", "kwargs": {}})}) is None
    assert recorded_task({"env_spec": json.dumps({"id": "taco/nope-frame-v0", "kwargs": {}})}) is None
    assert recorded_task({}) is None


# ---------------------------------------------------------------- bad input: one line, exit 2
def _cut(file, keep=0.5):
    data = file.read_bytes()
    file.write_bytes(data[: int(len(data) * keep)])


def _h5_edit(folder, key, value):
    file = sorted(folder.glob("*.hdf5"))[0]
    with h5py.File(file, "a") as f:
        del f[key]
        if value is not None:
            f[key] = value
    return file


def _npz_edit(folder, key, value):
    file = sorted(folder.glob("*.npz"))[0]
    d = dict(np.load(file))
    if value is None:
        del d[key]
    else:
        d[key] = value
    np.savez(file, **d)
    return file


BAD = {
    "hdf5 missing key": ("vd4rl", "h5", lambda p: _h5_edit(p, "reward", None), "'reward'"),
    "hdf5 mismatched lengths": ("vd4rl", "h5", lambda p: _h5_edit(p, "action", np.zeros((3, A))), "'action'"),
    "hdf5 float frames": (
        "vd4rl",
        "h5",
        lambda p: _h5_edit(p, "observation", np.zeros((7, 3, HW, HW), np.float32)),
        "'observation' has dtype float32",
    ),
    "hdf5 wrong shape": (
        "vd4rl",
        "h5",
        lambda p: _h5_edit(p, "observation", np.zeros((7, 4, HW, HW), np.uint8)),
        "'observation' has shape",
    ),
    "hdf5 mid-episode start": (
        "vd4rl",
        "h5",
        lambda p: _h5_edit(p, "step_type", np.r_[1, 1, 1, 2, 0, 1, 2]),
        "'step_type'",
    ),
    "hdf5 truncated": ("vd4rl", "h5", lambda p: _cut(sorted(p.glob("*.hdf5"))[0]), "truncated"),
    "empty folder": ("vd4rl", "empty", lambda p: None, "empty folder"),
    "npz missing key": ("vd4rl", "npz", lambda p: _npz_edit(p, "is_first", None), "'is_first'"),
    "npz mismatched lengths": ("vd4rl", "npz", lambda p: _npz_edit(p, "reward", np.zeros(2)), "'reward'"),
    "npz truncated": ("vd4rl", "npz", lambda p: _cut(sorted(p.glob("*.npz"))[0]), "truncated"),
    "npz pickled object": (
        "vd4rl",
        "npz",
        lambda p: _npz_edit(p, "reward", np.array([None] * 6, dtype=object)),
        "'reward'",
    ),
    "drqv2 not a stack": (
        "drqv2",
        "drqv2",
        lambda p: _npz_edit(p, "observation", np.zeros((7, 4, HW, HW), np.uint8)),
        "multiple of 3",
    ),
    "drqv2 float frames": (
        "drqv2",
        "drqv2",
        lambda p: _npz_edit(p, "observation", np.zeros((7, 9, HW, HW))),
        "dtype float64",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_files_give_one_line_errors(tmp_path, capsys, case):
    fmt, layout, damage, expect = BAD[case]
    src = tmp_path / "src"
    if layout == "h5":
        write_vd4rl_hdf5(src, [[6], [3]])
    elif layout == "npz":
        write_vd4rl_npz(src, [5, 4])
    elif layout == "drqv2":
        write_drqv2(src, [6, 4])
    else:
        src.mkdir()
    damage(src)
    capsys.readouterr()
    code = main(["data", "import", fmt, str(src), "task=walker_walk", f"out={tmp_path / 'ds'}", "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.startswith("taco: error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    assert expect in err, err
    if layout != "empty":
        assert str(src) in err  # names the file
    assert not (tmp_path / "ds").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["src"]  # no partial dataset left


def test_bad_minari_and_native_datasets(tmp_path, capsys, monkeypatch):
    def run(*argv):
        capsys.readouterr()
        code = main(["data", *argv, "--no-progress"])
        err = capsys.readouterr().err
        assert code == 2 and err.startswith("taco: error: ") and err.count("\n") == 1, err
        return err

    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "minari"))
    assert "nothing is downloaded" in run("import", "minari", "nobody/nothing-v0", "task=x", f"out={tmp_path / 'a'}")
    _minari_dataset(tmp_path / "minari", "test/pix2-v0", [4, 4], False, monkeypatch=monkeypatch)
    main_file = tmp_path / "minari" / "test" / "pix2-v0" / "data" / "main_data.hdf5"
    _cut(main_file)
    assert "main_data.hdf5" in run("import", "minari", "test/pix2-v0", "task=x", f"out={tmp_path / 'a'}")
    assert "dataset.json: missing" in run("info", str(tmp_path))
    assert "no such dataset" in run("info", str(tmp_path / "nope"))
    assert "unknown key" in run("info", str(tmp_path), "verfy=true")
    assert "out=DIR" in run("concat", str(tmp_path), str(tmp_path))
    meta = json.loads((main_file.parent / "metadata.json").read_text())
    (main_file.parent / "metadata.json").write_text(json.dumps({**meta, "data_format": "arrow"}))
    assert "data_format 'arrow'" in run("import", "minari", "test/pix2-v0", "task=x", f"out={tmp_path / 'a'}")


def test_minari_dict_observations(tmp_path, monkeypatch):
    import warnings

    import gymnasium as gym
    import minari
    from minari.data_collector import EpisodeBuffer

    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "minari"))
    g = rng(5)
    pix = [g.integers(0, 256, (t + 1, 32, 32, 3), dtype=np.uint8) for t in (4, 6)]
    bufs = [
        EpisodeBuffer(
            observations={"pixels": p, "state": g.normal(size=(len(p), 5)).astype(np.float32)},
            actions=g.uniform(-1, 1, (len(p) - 1, A)).astype(np.float32),
            rewards=g.normal(size=len(p) - 1),
            terminations=np.zeros(len(p) - 1, bool),
            truncations=np.arange(len(p) - 1) == len(p) - 2,
        )
        for p in pix
    ]
    space = gym.spaces.Dict(
        {
            "pixels": gym.spaces.Box(0, 255, (32, 32, 3), np.uint8),
            "state": gym.spaces.Box(-np.inf, np.inf, (5,), np.float32),
        }
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        minari.create_dataset_from_buffers(
            "test/dict-v0",
            bufs,
            observation_space=space,
            action_space=gym.spaces.Box(-1, 1, (A,), np.float32),
            jpeg_encoding=False,
        )
    import_dataset("minari", "test/dict-v0", str(tmp_path / "auto"), task="point_reach")  # the one image entry
    import_dataset("minari", "test/dict-v0", str(tmp_path / "named"), task="point_reach", obs_key="pixels")
    expected = [
        (
            [f.transpose(2, 0, 1) for f in p],
            list(b.actions),
            list(np.float32(b.rewards)),
            [np.float32(1)] * (len(p) - 1),
        )
        for p, b in zip(pix, bufs, strict=True)
    ]
    assert_episodes(tmp_path / "auto", expected)
    assert dataset_info(tmp_path / "named")["checksum"] == dataset_info(tmp_path / "auto")["checksum"]
    with pytest.raises(DatasetError, match="missing key '/episode_0/observations/image'"):
        import_dataset("minari", "test/dict-v0", str(tmp_path / "bad"), task="point_reach", obs_key="image")
