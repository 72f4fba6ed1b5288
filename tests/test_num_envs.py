"""num_envs=N training envs in worker processes: validation, hashes, update counts, a killed worker,
and exact resume after it (on the numpy env: CPU seconds)."""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import signal

import pytest
import torch

from taco_rl.runners.cli import main
from taco_rl.runners.config import UNHASHED, Config, ConfigError, config_hash, resolve
from taco_rl.runners.train import Trainer

TINY = ["task=point_reach", "hidden_dim=32", "batch_size=16", "seed_frames=100", "expl_steps=50",
        "eval_episodes=1", "save_video=false", "checkpoint_every_frames=100", "eval_every_frames=200"]


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
    data = {k: v for k, v in dataclasses.asdict(one).items()
            if k not in UNHASHED and k not in ("resume_from", "num_envs")}
    before = hashlib.sha1(json.dumps(data, sort_keys=True).encode()).hexdigest()[:8]
    assert config_hash(one) == config_hash(resolve([*TINY, "num_envs=1"])) == before
    assert config_hash(resolve([*TINY, "num_envs=2"])) != before
    assert Config.num_envs == 1


def test_updates_per_env_frame_do_not_change(tmp_path, monkeypatch):
    counts = {}
    for n in (1, 2):
        tr = Trainer(resolve([*TINY, "frames=300", f"num_envs={n}", f"run_dir={tmp_path / str(n)}"]), progress=False)
        calls = []
        update = tr.agent.update
        monkeypatch.setattr(tr.agent, "update", lambda batch, step: calls.append(step) or update(batch, step))
        tr.train()
        counts[n] = (len(calls), tr.counters["frame"], tr.counters["step"], tr.counters["episode"])
        assert not any(w.proc.is_alive() for w in getattr(tr, "train_workers", []) or [])
    assert counts[1] == counts[2] == (200, 300, 300, 6)


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
    assert err == [f"taco: error: env worker train-env1 (pid {killed['pid']}) was killed by SIGKILL"]
    assert not any(w.proc.is_alive() for w in killed["workers"])  # the other worker was stopped too
    monkeypatch.setattr(Trainer, "record", record)

    resumed = Trainer(resolve([*common, f"run_dir={tmp_path / 'split'}"]), progress=False)
    assert resumed.counters["frame"] == 200
    resumed.train()
    a, b = _params(full), _params(resumed)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert full.counters == resumed.counters
    assert _rows(tmp_path / "full" / "eval.csv") == _rows(tmp_path / "split" / "eval.csv")
