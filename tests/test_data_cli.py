"""`taco data collect | from-run | concat | info` on a tiny point_reach run's checkpoint."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from taco_rl.envs import make_env
from taco_rl.runners.cli import main
from taco_rl.runners.core import checkpoint as ckpt
from taco_rl.runners.core.config import resolve
from taco_rl.runners.core.replay import Replay
from taco_rl.runners.core.run import build_agent
from taco_rl.runners.core.rundir import RunLock
from taco_rl.runners.data.datasets import dataset_info, iter_episodes, load_dataset, verify_checksum
from taco_rl.runners.data.from_run import load_run_config
from taco_rl.runners.online.train import Trainer

TINY = [
    "task=point_reach",
    "hidden_dim=32",
    "batch_size=16",
    "seed_frames=100",
    "expl_steps=50",
    "eval_episodes=1",
    "save_video=false",
    "image_size=16",
    "feature_dim=8",
]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    cfg = resolve([*TINY, f"root={root}", "frames=230", "device=cpu"])  # 4 episodes of 50 + a partial one
    return Trainer(cfg, progress=False).train()


def _cli(*argv):
    return main(["data", *argv, "--no-progress"])


def test_collect_rolls_out_the_checkpoint(run_dir, tmp_path, capsys):
    out = tmp_path / "noisy"
    assert _cli("collect", f"policy={run_dir}", "episodes=3", "noise=0.2", "seed=4", f"out={out}") == 0
    printed = capsys.readouterr().out
    info = dataset_info(out)
    assert (info["task"], info["episodes"], info["transitions"], info["frame_shape"]) == (
        "point_reach",
        3,
        150,
        [3, 16, 16],
    )
    assert info["checksum"] in printed and "episodes     3" in printed

    # brute force: the same seeds and the stored actions reproduce every stored frame and reward
    cfg = load_run_config(run_dir)
    env = make_env("point_reach", 4, action_repeat=1, frame_stack=cfg.frame_stack, image_size=16)
    eps = list(iter_episodes(load_dataset(out, nstep=1)[0]))
    for i, (frames, actions, rewards, discounts) in enumerate(eps):
        obs, _ = env.reset(seed=4 * 1_000_003 + i)
        assert np.array_equal(frames[0].numpy(), obs[-3:])
        for t in range(len(actions)):
            obs, r, *_ = env.step(actions[t].numpy())
            assert np.array_equal(frames[t + 1].numpy(), obs[-3:]) and np.float32(r) == rewards[t]
        assert bool((discounts == 1).all())

    # the actions are the checkpoint's mean actions plus noise: with noise=0 exactly the policy's
    agent = build_agent(cfg, env.observation_space.shape, 2, torch.device("cpu"))
    agent.load_state_dict(ckpt.load(run_dir / "checkpoint" / "state.pt")["agent"])
    agent.train(False)
    assert _cli("collect", f"policy={run_dir}", "episodes=1", "seed=4", f"out={tmp_path / 'mean'}") == 0
    frames, actions, _, _ = next(iter_episodes(load_dataset(tmp_path / "mean", nstep=1)[0]))
    obs, _ = env.reset(seed=4 * 1_000_003)
    assert np.array_equal(actions[0].numpy(), agent.act(obs, 0, eval_mode=True))
    noisy_first = eps[0][1][0].numpy()
    assert not np.array_equal(noisy_first, actions[0].numpy())
    assert np.abs(noisy_first - actions[0].numpy()).max() < 1.0  # noise of std 0.2, not a random action

    # the same command makes the same dataset, bit for bit
    assert _cli("collect", f"policy={run_dir}", "episodes=3", "noise=0.2", "seed=4", f"out={tmp_path / 'again'}") == 0
    assert dataset_info(tmp_path / "again")["checksum"] == info["checksum"] == verify_checksum(out)


def test_collect_random_and_concat(tmp_path, capsys):
    a, b = tmp_path / "a", tmp_path / "b"
    assert _cli("collect", "task=point_reach", "policy=random", "episodes=2", "image_size=16", f"out={a}") == 0
    assert (
        _cli("collect", "task=point_reach", "policy=random", "episodes=1", "seed=1", "image_size=16", f"out={b}") == 0
    )
    assert _cli("concat", str(a), str(b), f"out={tmp_path / 'ab'}") == 0
    ab = dataset_info(tmp_path / "ab")
    assert (ab["episodes"], ab["transitions"]) == (3, 150)
    got = list(iter_episodes(load_dataset(tmp_path / "ab", nstep=1)[0]))
    want = [*iter_episodes(load_dataset(a, nstep=1)[0]), *iter_episodes(load_dataset(b, nstep=1)[0])]
    assert all(all(torch.equal(x, y) for x, y in zip(g, w, strict=True)) for g, w in zip(got, want, strict=True))
    verify_checksum(tmp_path / "ab")

    # mismatched shapes are refused, and nothing is written
    assert (
        _cli("collect", "task=point_reach", "policy=random", "episodes=1", "image_size=24", f"out={tmp_path / 'c'}")
        == 0
    )
    capsys.readouterr()
    assert _cli("concat", str(a), str(tmp_path / "c"), f"out={tmp_path / 'bad'}") == 2
    err = capsys.readouterr().err
    assert "frame_shape" in err and err.count("\n") == 1 and not (tmp_path / "bad").exists()
    # an existing destination is refused
    assert _cli("concat", str(a), str(b), f"out={tmp_path / 'ab'}") == 2
    assert "already exists" in capsys.readouterr().err


def test_from_run_keeps_the_replay(run_dir, tmp_path, capsys):
    assert _cli("from-run", str(run_dir), f"out={tmp_path / 'mr'}") == 0
    info = dataset_info(tmp_path / "mr")
    state = ckpt.load(run_dir / "checkpoint" / "state.pt")
    replay = Replay.load(run_dir / "checkpoint" / state["replay_dir"])
    assert info["slots"] == replay.total_added == 235  # 4 whole episodes + the partial one the run ended in
    assert (info["episodes"], info["transitions"], info["source"]["kind"]) == (5, 230, "from-run")
    got = list(iter_episodes(load_dataset(tmp_path / "mr", nstep=1)[0]))
    want = list(iter_episodes(replay))
    assert len(got) == 5 and all(
        all(torch.equal(x, y) for x, y in zip(g, w, strict=True)) for g, w in zip(got, want, strict=True)
    )

    capsys.readouterr()
    assert _cli("info", str(tmp_path / "mr"), "verify=true") == 0
    printed = capsys.readouterr().out
    for text in (
        "point_reach",
        "16x16",
        "action dim   2",
        "episodes     5",
        "transitions  230",
        info["checksum"],
        "(verified)",
        f"min {info['return']['min']:.2f}",
    ):
        assert text in printed, text
    assert _cli("from-run", str(tmp_path), f"out={tmp_path / 'x'}") == 2
    assert "config.yaml: missing" in capsys.readouterr().err
    with RunLock(run_dir):  # as a training run holds it
        assert _cli("from-run", str(run_dir), f"out={tmp_path / 'busy'}") == 2
    err = capsys.readouterr().err
    assert f"{run_dir} is in use by a running process (host " in err and "pid" in err, err
    assert not (tmp_path / "busy").exists()
    assert _cli("collect", "policy=random", "episodes=1", f"out={tmp_path / 'x'}") == 2
    assert "needs task=" in capsys.readouterr().err


def test_interrupted_collect_resumes(tmp_path, capsys, monkeypatch):
    from taco_rl.runners.data import rollout as data_rollout

    args = ["collect", "task=point_reach", "policy=random", "episodes=4", "seed=3", "image_size=16"]
    assert _cli(*args, f"out={tmp_path / 'whole'}") == 0
    real, calls = data_rollout._rollout, []

    def interrupted(*a, **k):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(data_rollout, "_rollout", interrupted)
    assert _cli(*args, f"out={tmp_path / 'cut'}") == 130
    assert not (tmp_path / "cut").exists()  # nothing that looks like a dataset
    monkeypatch.setattr(data_rollout, "_rollout", real)
    capsys.readouterr()
    assert _cli(*args[:-1], "image_size=24", f"out={tmp_path / 'cut'}") == 2  # other arguments: refused
    assert "interrupted collect with other arguments" in capsys.readouterr().err
    assert _cli(*args, f"out={tmp_path / 'cut'}") == 0
    assert "resuming: 2 of 4 episodes" in capsys.readouterr().out
    assert dataset_info(tmp_path / "cut")["checksum"] == dataset_info(tmp_path / "whole")["checksum"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cut", "whole"]  # the work folder is gone
