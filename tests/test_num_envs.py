"""num_envs=N training envs in worker processes: validation, hashes, update counts, a killed worker,
and exact resume after it (on the numpy env: CPU seconds)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import signal
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from test_hardening import _cli, _wait_for

from taco_rl.runners.cli import main
from taco_rl.runners.core.config import UNHASHED, Config, ConfigError, config_hash, resolve
from taco_rl.runners.core.rundir import RunInterrupted
from taco_rl.runners.core.workers import EnvWorker
from taco_rl.runners.online.train import Trainer

TINY = [
    "task=point_reach",
    "hidden_dim=32",
    "batch_size=16",
    "seed_frames=100",
    "expl_steps=50",
    "eval_episodes=1",
    "save_video=false",
    "checkpoint_every_frames=100",
    "eval_every_frames=200",
]


def _params(trainer: Trainer) -> dict[str, torch.Tensor]:
    return {f"{n}.{k}": v.clone() for n, m in trainer.agent.modules().items() for k, v in m.state_dict().items()}


def _rows(path) -> list[str]:
    return path.read_text().splitlines()


def test_num_envs_rule_and_hash():
    for bad in ("num_envs=0", "num_envs=-2"):
        with pytest.raises(ConfigError, match=r"num_envs=-?\d+: expected a positive integer"):
            resolve([*TINY, bad])
    one = resolve(TINY)
    # the hash of num_envs=1 is the one computed before the field existed
    data = {
        k: v for k, v in dataclasses.asdict(one).items() if k not in UNHASHED and k not in ("resume_from", "num_envs")
    }
    before = hashlib.sha1(json.dumps(data, sort_keys=True).encode()).hexdigest()[:8]
    assert config_hash(one) == config_hash(resolve([*TINY, "num_envs=1"])) == before
    assert config_hash(resolve([*TINY, "num_envs=2"])) != before
    assert Config.num_envs == 1


def test_updates_per_env_frame_do_not_change(tmp_path, monkeypatch):
    """The learner updates at the same env steps with 1 and 2 envs; episodes are numbered over envs."""
    resets, workers = [], set()
    send = EnvWorker.send

    def recording_send(self, cmd, arg=None, render=False):
        workers.add(self)
        if cmd == "reset":
            resets.append(arg)
        return send(self, cmd, arg, render)

    monkeypatch.setattr(EnvWorker, "send", recording_send)
    runs = {}
    for n in (1, 2):
        tr = Trainer(
            resolve([*TINY, "frames=300", "update_every_steps=2", f"num_envs={n}", f"run_dir={tmp_path / str(n)}"]),
            progress=False,
        )
        calls = []
        update = tr.agent.update
        monkeypatch.setattr(
            tr.agent,
            "update",
            lambda batch, step, calls=calls, update=update: calls.append(step) or update(batch, step),
        )
        tr.train()
        runs[n] = (calls, tr.counters["frame"], tr.counters["step"], tr.counters["episode"])
    assert runs[1] == runs[2] == (list(range(100, 300, 2)), 300, 300, 6)
    assert sorted(resets) == [1 * 1_000_003 + e for e in range(6)]  # seed=1: one reset seed per episode
    assert len(workers) == 2 and not any(w.proc.is_alive() for w in workers)


def test_killed_worker_ends_the_run_then_rerun_equals_unkilled(tmp_path, monkeypatch, capsys):
    common = [*TINY, "num_envs=2", "frames=400"]
    full = Trainer(resolve([*common, f"run_dir={tmp_path / 'full'}"]), progress=False)
    full.train()

    killed = {}
    record = Trainer.record

    def kill_after(self, metrics, step):  # a worker dies mid-round, after the checkpoint at frame 200
        record(self, metrics, step)
        if step >= 250 and not killed:
            killed["pid"] = self.train_workers[1].proc.pid
            killed["workers"] = list(self.train_workers)
            os.kill(killed["pid"], signal.SIGKILL)

    monkeypatch.setattr(Trainer, "record", kill_after)
    assert main(["train", *common, f"run_dir={tmp_path / 'split'}", "--no-progress"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("taco: error: training stopped at frame ")
    assert err[0].endswith(
        f": env worker train-env1 (pid {killed['pid']}) was killed by SIGKILL; rerunning the "
        "same command resumes from frame 200 (the last checkpoint)"
    )
    assert not any(w.proc.is_alive() for w in killed["workers"])  # the other worker was stopped too
    monkeypatch.setattr(Trainer, "record", record)

    resumed = Trainer(resolve([*common, f"run_dir={tmp_path / 'split'}"]), progress=False)
    assert resumed.counters["frame"] == 200
    resumed.train()
    a, b = _params(full), _params(resumed)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert full.counters == resumed.counters
    assert _rows(tmp_path / "full" / "eval.csv") == _rows(tmp_path / "split" / "eval.csv")


def test_hung_worker_ends_the_run_with_a_clear_error(tmp_path, monkeypatch, capsys):
    stopped = {}
    record = Trainer.record

    def stop_after(self, metrics, step):  # a worker stops answering mid-round, after the checkpoint at frame 100
        record(self, metrics, step)
        if step >= 150 and not stopped:
            monkeypatch.setenv("TACO_WORKER_TIMEOUT", "2")
            stopped["pid"] = self.train_workers[0].proc.pid
            stopped["workers"] = list(self.train_workers)
            os.kill(stopped["pid"], signal.SIGSTOP)

    monkeypatch.setattr(Trainer, "record", stop_after)
    assert main(["train", *TINY, "num_envs=2", "frames=400", f"run_dir={tmp_path}", "--no-progress"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].endswith(
        f": env worker train-env0 (pid {stopped['pid']}) sent nothing for 2 s (hung; TACO_WORKER_TIMEOUT sets this "
        "limit); rerunning the same command resumes from frame 100 (the last checkpoint)"
    ), err
    assert not any(w.proc.is_alive() for w in stopped["workers"])


def test_ctrl_c_stops_the_workers(tmp_path, monkeypatch):
    seen = {}
    record = Trainer.record

    def interrupt(self, metrics, step):
        record(self, metrics, step)
        if step >= 150:
            seen["workers"] = list(self.train_workers)
            raise KeyboardInterrupt

    monkeypatch.setattr(Trainer, "record", interrupt)
    tr = Trainer(resolve([*TINY, "num_envs=2", "frames=400", f"run_dir={tmp_path}"]), progress=False)
    with pytest.raises(RunInterrupted) as e:
        tr.train()
    assert e.value.resume_frame == 100  # the checkpoint a rerun resumes from
    assert len(seen["workers"]) == 2 and not any(w.proc.is_alive() for w in seen["workers"])


def _children(pid: int) -> list[int]:
    return [
        int(p) for t in os.listdir(f"/proc/{pid}/task") for p in open(f"/proc/{pid}/task/{t}/children").read().split()
    ]


def _gone(pids: list[int], timeout: float = 30.0) -> bool:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if not any(
            os.path.exists(f"/proc/{p}") and "zombie" not in Path(f"/proc/{p}/status").read_text() for p in pids
        ):
            return True
        time.sleep(0.1)
    return False


@pytest.mark.slow
@pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="reads /proc for the worker processes")
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_no_worker_outlives_a_stopped_or_killed_run(tmp_path, sig):
    run = tmp_path / "run"
    proc = _cli(*TINY, "num_envs=2", "frames=100000", f"run_dir={run}")
    _wait_for(lambda: (run / "checkpoint" / "state.pt").exists(), proc)
    workers = _children(proc.pid)  # the two training-env workers (and the eval workers, if running)
    assert len(workers) >= 2
    proc.send_signal(sig)
    proc.communicate(timeout=60)
    assert proc.returncode == (143 if sig == signal.SIGTERM else -signal.SIGKILL)
    assert _gone(workers)


def _record_train_episodes(monkeypatch) -> dict[str, list[dict[str, list]]]:
    """Each training-env worker's episodes as its replies gave them: the reset frame, then per step
    the frame reached, the action sent, the reward and the env discount."""
    episodes: dict[str, list[dict[str, list]]] = {}
    send, recv = EnvWorker.send, EnvWorker.recv

    def recording_send(self, cmd, arg=None, render=False):
        self.awaited = (cmd, arg)
        return send(self, cmd, arg, render)

    def recording_recv(self):
        value = recv(self)
        cmd, arg = getattr(self, "awaited", (None, None))
        self.awaited = (None, None)
        if self.name.startswith("train-env") and cmd == "reset":
            obs = value[0][0]
            episodes.setdefault(self.name, []).append(
                {"frames": [obs[-3:]], "actions": [], "rewards": [], "discounts": []}
            )
        elif self.name.startswith("train-env") and cmd == "step":
            obs, reward, _, _, info = value[0]
            ep = episodes[self.name][-1]
            ep["frames"].append(obs[-3:])
            ep["actions"].append(np.asarray(arg, np.float32).reshape(-1))
            ep["rewards"].append(float(reward))
            ep["discounts"].append(float(info["discount"]))
        return value

    monkeypatch.setattr(EnvWorker, "send", recording_send)
    monkeypatch.setattr(EnvWorker, "recv", recording_recv)
    return episodes


def _replay_episodes(replay) -> list[dict[str, np.ndarray]]:
    """The replay's episodes in the order they were written (a ring that has not wrapped)."""
    total = replay.total_added
    assert total <= replay.capacity
    starts = replay._ep_start[:total].numpy()
    bounds = [*np.flatnonzero(np.diff(starts)) + 1, total]
    out, lo = [], 0
    for hi in bounds:
        out.append(
            {
                "frames": replay._frames[lo:hi].numpy(),
                "actions": replay._actions[lo + 1 : hi].numpy(),
                "rewards": replay._rewards[lo + 1 : hi].numpy(),
                "discounts": replay._discounts[lo + 1 : hi].numpy(),
            }
        )
        lo = hi
    return out


def _assert_same_episodes(got: list[dict[str, np.ndarray]], want: list[dict[str, list]]) -> None:
    assert [len(e["frames"]) for e in got] == [len(e["frames"]) for e in want]
    for g, w in zip(got, want, strict=True):
        np.testing.assert_array_equal(g["frames"], np.stack(w["frames"]))
        np.testing.assert_array_equal(g["actions"], np.stack(w["actions"]))
        np.testing.assert_array_equal(g["rewards"], np.asarray(w["rewards"], np.float32))
        np.testing.assert_array_equal(g["discounts"], np.asarray(w["discounts"], np.float32))


def test_a_run_that_ends_mid_round_keeps_every_envs_unfinished_episode(tmp_path, monkeypatch):
    """Two envs with 50-step episodes and frames=250: two whole rounds, then a round cut after 25 steps
    of each env. The replay holds every env's episodes, the cut ones too, each whole and in env order;
    the last checkpoint holds them, and the run resumed to frames=400 writes its own after them."""
    episodes = _record_train_episodes(monkeypatch)
    common = [*TINY, "num_envs=2", "seed_frames=1000", "eval_every_frames=1000", f"run_dir={tmp_path}"]
    tr = Trainer(resolve([*common, "frames=250"]), progress=False)
    tr.train()
    by_round = [episodes[f"train-env{i}"][r] for r in range(3) for i in range(2)]  # rounds, envs in order
    assert [len(e["actions"]) for e in by_round] == [50, 50, 50, 50, 25, 25]
    _assert_same_episodes(_replay_episodes(tr.replay), by_round)
    assert tr.counters["episode"] == 6

    episodes.clear()
    resumed = Trainer(resolve([*common, "frames=400"]), progress=False)
    assert resumed.counters["frame"] == 250
    _assert_same_episodes(_replay_episodes(resumed.replay), by_round)  # the cut episodes were checkpointed
    resumed.train()
    more = [episodes[f"train-env{i}"][r] for r in range(2) for i in range(2)]
    assert [len(e["actions"]) for e in more] == [50, 50, 25, 25]
    _assert_same_episodes(_replay_episodes(resumed.replay), by_round + more)
    assert resumed.counters["episode"] == 10
