"""A run never corrupts, duplicates or misleads: run-dir lock, logs after restarts, bad values,
non-finite training, failed and damaged checkpoints, SIGTERM, and kills at any moment.

Everything runs on the numpy env point_reach with tiny settings (CPU seconds).
"""

from __future__ import annotations

import csv
import dataclasses
import errno
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from taco_rl.runners.cli import main
from taco_rl.runners.core import checkpoint as ckpt
from taco_rl.runners.core.config import RULES, Config, OfflineConfig, resolve
from taco_rl.runners.core.guard import NonFiniteError, check_metrics, check_state
from taco_rl.runners.core.rundir import RunDirError, RunInterrupted, RunLock
from taco_rl.runners.online.train import Trainer

ROOT = Path(__file__).resolve().parents[1]
TINY = [
    "task=point_reach",
    "hidden_dim=32",
    "feature_dim=16",
    "batch_size=16",
    "seed_frames=100",
    "expl_steps=50",
    "eval_episodes=1",
    "save_video=false",
    "eval_every_frames=100",
    "checkpoint_every_frames=100",
    "log_every_frames=50",
    "capacity=2000",
    "update_every_steps=4",
]


def _cfg(run_dir: Path, *extra: str, frames: int = 300):
    return resolve([*TINY, f"frames={frames}", f"run_dir={run_dir}", *extra])


def _rows(path: Path, drop=("fps",)) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return [{k: v for k, v in r.items() if k not in drop} for r in csv.DictReader(f)]


def _tb_steps(run_dir: Path, tag: str) -> list[int]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_dir / "tb"))
    acc.Reload()
    return [e.step for e in acc.Scalars(tag)]


@pytest.fixture(scope="module")
def unkilled(tmp_path_factory) -> Path:
    """The reference: the same tiny run, never stopped."""
    run = tmp_path_factory.mktemp("unkilled")
    Trainer(_cfg(run), progress=False).train()
    return run


# ---------------------------------------------------------------- bad values: one line, exit 2
BAD = [
    (["device=tpu9"], "device='tpu9': expected auto, cpu, cuda or cuda:N"),
    (["lr=nan"], "lr=nan: expected a finite number >= 0"),
    (["lr=-0.1"], "lr=-0.1: expected a finite number >= 0"),  # lr=0 is allowed: frozen weights, a control
    (["lr=inf"], "lr=inf: expected a finite number >= 0"),
    (["image_size=8"], "image_size=8: expected at least 15"),
    (["task=reach_duplo", "image_size=64"], "image_size=64: expected 84 for reach_duplo"),
    (["gamma=0"], "gamma=0.0: expected a number in (0, 1]"),
    (["gamma=1.01"], "gamma=1.01: expected a number in (0, 1]"),
    (["critic_tau=nan"], "critic_tau=nan: expected a number in (0, 1]"),
    (["init_alpha=0"], "init_alpha=0.0: expected a finite number > 0"),
    (["std_clip=-1"], "std_clip=-1.0: expected a finite number >= 0"),
    (["std_schedule=linear(1.0,0.1)"], "std_schedule='linear(1.0,0.1)': expected a number >= 0 or linear"),
    (["std_schedule=linear(1.0,0.1,0)"], "std_schedule='linear(1.0,0.1,0)': expected"),
    (["std_schedule=fast"], "std_schedule='fast': expected"),
    (["taco_weight=nan"], "taco_weight=nan: expected a finite number >= 0"),
    (["reward_weight=-1"], "reward_weight=-1.0: expected a finite number >= 0"),
    (["aux=curl", "curl_weight=0"], "curl_weight=0.0: expected > 0 with aux=curl"),
    (["aux=taco", "taco_weight=0", "curl_weight=0", "reward_weight=0"], "taco_weight=0.0: expected > 0 for at least"),
    (["seed_frames=2"], "seed_frames=2: expected at least 3"),
    (["seed=-1"], "seed=-1: expected an integer >= 0"),
    (["eval_episodes=0"], "eval_episodes=0: expected a positive integer"),
    (["log_every_frames=0"], "log_every_frames=0: expected a positive integer"),
    (["checkpoint_every_frames=-5"], "checkpoint_every_frames=-5: expected a positive integer"),
    (["capacity=3"], "capacity=3: expected more than max(nstep, taco_k) = 3"),
    (["latent_action_dim=-1"], "latent_action_dim=-1: expected an integer >= 0"),
    (["replay_device=gpu"], "replay_device='gpu': expected one of auto, cpu"),
    (["resume_from=/nonexistent/run"], "resume_from='/nonexistent/run': expected a run directory with a checkpoint"),
    # the ones that were already caught
    (["task=cheetah_rn"], "cheetah_run"),
    (["lrr=1"], "unknown config key 'lrr'; did you mean lr"),
    (["agent=ppo"], "agent='ppo': expected one of"),
    (["batch_size=abc"], "batch_size"),
    (["nstep=0"], "nstep=0: expected a positive integer"),
    (["preset=fastest"], "unknown preset"),
    (["task"], "malformed override"),
]


@pytest.mark.parametrize("bad,message", BAD, ids=[" ".join(b) for b, _ in BAD])
def test_bad_value_is_one_line_exit_2(bad, message, capsys, tmp_path):
    assert main(["train", "task=point_reach", f"root={tmp_path}", *bad, "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("taco: error: ") and err.count("\n") == 1, err
    assert message in err, err
    assert not any(tmp_path.iterdir())  # nothing was built or written


def test_cuda_device_that_is_not_there(capsys, tmp_path):
    assert main(["train", "task=point_reach", f"root={tmp_path}", "device=cuda:99", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("taco: error: device='cuda:99'") and err.count("\n") == 1, err
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("schema", [Config, OfflineConfig])
def test_every_field_has_a_rule(schema):
    typed_by_omegaconf = {f.name for f in dataclasses.fields(schema) if f.type in ("bool", bool)}
    missing = {f.name for f in dataclasses.fields(schema)} - typed_by_omegaconf - set(RULES) - {"task"}
    assert not missing, f"config fields without a validation rule: {sorted(missing)}"


OFFLINE_BAD = [
    (["cql_alpha=nan"], "cql_alpha=nan: expected a finite number >= 0"),
    (["iql_expectile=1"], "iql_expectile=1.0: expected a number in (0, 1)"),
    (["cql_samples=0"], "cql_samples=0: expected a positive integer"),
    (["bc_alpha=-1"], "bc_alpha=-1.0: expected a finite number >= 0"),
    (["updates=0"], "updates=0: expected a positive integer"),
    (["lr=inf"], "lr=inf: expected a finite number >= 0"),
]


@pytest.mark.parametrize("bad,message", OFFLINE_BAD, ids=[" ".join(b) for b, _ in OFFLINE_BAD])
def test_bad_offline_value_is_one_line_exit_2(bad, message, capsys, tmp_path):
    assert (
        main(["offline", "task=point_reach", f"root={tmp_path}", f"dataset={tmp_path / 'none'}", *bad, "--no-progress"])
        == 2
    )
    err = capsys.readouterr().err
    assert err.startswith("taco: error: ") and err.count("\n") == 1 and message in err, err


def test_good_values_pass():
    cfg = resolve(
        [
            "std_schedule=0.2",
            "gamma=1",
            "device=cuda:1",
            "std_clip=0",
            "seed=0",
            "image_size=15",
            "aux=taco",
            "curl_weight=0",
            "reward_weight=0",
        ]
    )
    assert (cfg.gamma, cfg.device, cfg.image_size) == (1.0, "cuda:1", 15)


# ---------------------------------------------------------------- one process per run directory
def test_lock_is_exclusive_and_names_the_holder(tmp_path):
    first = RunLock(tmp_path)
    with pytest.raises(RunDirError) as e:
        RunLock(tmp_path)
    assert str(tmp_path) in str(e.value) and f"pid {os.getpid()}" in str(e.value)
    assert socket.gethostname() in str(e.value)
    first.release()
    RunLock(tmp_path).release()  # free again


def test_trainer_releases_the_lock_when_it_fails(tmp_path):
    Trainer(_cfg(tmp_path, frames=100), progress=False).train()
    (tmp_path / "checkpoint" / "state.pt").write_bytes(b"garbage")
    with pytest.raises(ckpt.CheckpointError):
        Trainer(_cfg(tmp_path, frames=100), progress=False)
    RunLock(tmp_path).release()


def _cli(*args: str, **kw) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "taco_rl.runners.cli", "train", *args, "--no-progress"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kw,
    )


def _wait_for(predicate, proc: subprocess.Popen, timeout: float = 120.0) -> None:
    deadline = time.time() + timeout
    while not predicate():
        if proc.poll() is not None:
            raise AssertionError(f"the run ended early: {proc.communicate()}")
        if time.time() > deadline:
            proc.kill()
            raise AssertionError("timed out")
        time.sleep(0.05)


def _checkpointed(run: Path) -> bool:
    return (run / "checkpoint" / "state.pt").exists()


def test_second_process_refused_then_sigterm_says_where_it_resumes(tmp_path, capsys):
    run = tmp_path / "run"
    proc = _cli(*TINY, "frames=100000", f"run_dir={run}")
    _wait_for(lambda: _checkpointed(run), proc)
    # a second process on the same directory stops at once, naming the holder
    t0 = time.time()
    assert main(["train", *TINY, "frames=100000", f"run_dir={run}", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert time.time() - t0 < 30
    assert err.count("\n") == 1 and f"run directory {run} is in use" in err
    assert f"pid {proc.pid}" in err and socket.gethostname() in err
    # preemption: SIGTERM ends it like Ctrl-C, saying the frame a rerun starts from
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err
    frame = torch.load(run / "checkpoint" / "state.pt", weights_only=True)["frame"]
    assert err.strip().splitlines()[-1] == (
        f"taco: interrupted (SIGTERM); rerunning the same command resumes from frame {frame}"
    )
    assert Trainer(_cfg(run, frames=100000), progress=False).counters["frame"] == frame  # lock released


def test_interrupt_reports_the_resume_frame(tmp_path, monkeypatch):
    trainer = Trainer(_cfg(tmp_path), progress=False)
    calls = []

    def evaluate(self=trainer, original=Trainer.evaluate):
        calls.append(1)
        if len(calls) == 3:  # at frame 200, after the checkpoint at 100
            raise KeyboardInterrupt
        return original(self)

    monkeypatch.setattr(trainer, "evaluate", evaluate)
    with pytest.raises(RunInterrupted) as e:
        trainer.train()
    assert e.value.resume_frame == 100 and "resumes from frame 100" in e.value.message()


# ---------------------------------------------------------------- logs after a restart
class Killed(BaseException):
    """Stands in for a kill: nothing after it runs (no cleanup of logs, no checkpoint)."""


@pytest.mark.parametrize("dies_at_checkpoint", [1, 2], ids=["before-first-checkpoint", "after-first-checkpoint"])
def test_restart_keeps_exactly_the_rows_of_the_checkpoint(tmp_path, monkeypatch, unkilled, dies_at_checkpoint):
    calls = []
    original = Trainer.save_checkpoint

    def save_checkpoint(self):
        calls.append(1)
        if len(calls) == dies_at_checkpoint:
            raise Killed
        original(self)

    monkeypatch.setattr(Trainer, "save_checkpoint", save_checkpoint)
    with pytest.raises(Killed):
        Trainer(_cfg(tmp_path), progress=False).train()
    monkeypatch.undo()
    # TensorBoard reads event files in name order: <seconds>.<host>.<pid>.<writer counter>. A real restart
    # is a new process (counter 0) in a later second; in this one process the counter may pass 9 -> 10
    # within the same second, which sorts the new file first. Wait for the next second, as a restart would.
    time.sleep(1.05)
    died_at = [int(r["frame"]) for r in _rows(tmp_path / "eval.csv")]
    assert died_at == [0, 100, 200][: dies_at_checkpoint + 1]  # eval rows logged after the checkpoint frame

    resumed = Trainer(_cfg(tmp_path), progress=False)
    kept = [int(r["frame"]) for r in _rows(tmp_path / "eval.csv")] if (tmp_path / "eval.csv").exists() else []
    assert kept == ([] if dies_at_checkpoint == 1 else [0, 100])  # none on a fresh start
    resumed.train()
    for name in ("eval.csv", "train.csv"):
        assert _rows(tmp_path / name) == _rows(unkilled / name), name
    for tag in ("eval/episode_return", "train/critic_loss", "train/episode_return"):
        assert _tb_steps(tmp_path, tag) == _tb_steps(unkilled, tag), tag


# ---------------------------------------------------------------- non-finite training
def _inject_nan_loss(monkeypatch, from_step: int) -> None:
    from taco_rl.agents import DrQV2

    update = DrQV2.update

    def nan_update(self, batch, step):
        metrics = update(self, batch, step)
        if step >= from_step:
            metrics["critic_loss"] = metrics["critic_loss"] * float("nan")
        return metrics

    monkeypatch.setattr(DrQV2, "update", nan_update)


def test_nan_loss_stops_without_a_checkpoint_and_resume_from_goes_on(tmp_path, monkeypatch, capsys):
    run = tmp_path / "run"
    _inject_nan_loss(monkeypatch, from_step=230)
    assert main(["train", *TINY, "frames=400", f"run_dir={run}", "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("taco: error: non-finite critic_loss (nan) at step 232")
    assert "no checkpoint was written" in err and "last good checkpoint is at frame 200" in err
    assert f"resume_from={run}" in err
    state = torch.load(run / "checkpoint" / "state.pt", weights_only=True)
    assert state["frame"] == 200
    assert not list((run / "checkpoint").glob("*.tmp"))
    monkeypatch.undo()
    # other settings, from the last good checkpoint: a new run directory that starts at frame 200
    fork = tmp_path / "fork"
    assert (
        main(["train", *TINY, "frames=400", "lr=3e-5", f"resume_from={run}", f"run_dir={fork}", "--no-progress"]) == 0
    )
    assert "resuming" in capsys.readouterr().out
    assert [int(r["frame"]) for r in _rows(fork / "eval.csv")] == [300, 400]
    assert torch.load(fork / "checkpoint" / "state.pt", weights_only=True)["counters"]["frame"] == 400
    # a learner of another shape cannot start from it
    assert (
        main(["train", *TINY, "frames=400", "hidden_dim=64", f"resume_from={run}", f"run_dir={tmp_path / 'other'}"])
        == 2
    )
    assert "does not fit this configuration" in capsys.readouterr().err


def test_nan_parameter_is_caught_before_the_checkpoint(tmp_path, monkeypatch):
    trainer = Trainer(_cfg(tmp_path), progress=False)
    original = Trainer.save_checkpoint

    def save_checkpoint(self):
        if self.counters["frame"] >= 200:
            with torch.no_grad():
                next(self.agent.actor.parameters()).view(-1)[0] = float("inf")
        original(self)

    monkeypatch.setattr(Trainer, "save_checkpoint", save_checkpoint)
    # the eval at 200 comes first: it sees a clean state; the checkpoint then refuses
    with pytest.raises(NonFiniteError, match=r"non-finite values in agent\.net/actor\.\S+ at step"):
        trainer.train()
    assert torch.load(tmp_path / "checkpoint" / "state.pt", weights_only=True)["frame"] == 100


def test_guard_functions():
    check_metrics([{"a": torch.tensor(1.0)}, {"a": torch.tensor(2.0)}], [4, 6])
    with pytest.raises(NonFiniteError, match=r"non-finite b \(inf\) at step 6") as e:
        check_metrics([{"a": torch.tensor(1.0), "b": 0.0}, {"a": torch.tensor(2.0), "b": float("inf")}], [4, 6])
    assert (e.value.name, e.value.step) == ("b", 6)
    check_state({"x": {"w": torch.ones(3)}, "n": torch.tensor([1, 2])})
    with pytest.raises(NonFiniteError, match=r"x\.opt\.1"):
        check_state({"x": {"w": torch.ones(3), "opt": [torch.zeros(2), torch.tensor([0.0, float("nan")])]}})


def test_offline_runs_share_the_lifecycle(tmp_path, monkeypatch, capsys):
    """`taco offline` runs get the lock, the guard and the resume point counted in updates."""
    from taco_rl.agents import TD3BC
    from tests.offline_data import scripted_dataset

    data = scripted_dataset(tmp_path / "data", episodes=4)
    run = tmp_path / "run"
    args = [
        "offline",
        "task=point_reach",
        "agent=td3bc",
        "hidden_dim=32",
        "batch_size=16",
        "eval_episodes=1",
        "save_video=false",
        f"dataset={data}",
        "updates=30",
        "checkpoint_every_updates=10",
        "eval_every_updates=10",
        "log_every_updates=5",
        f"run_dir={run}",
        "--no-progress",
    ]
    run.mkdir()
    with RunLock(run):
        assert main(args) == 2
        assert f"run directory {run} is in use" in capsys.readouterr().err
    update = TD3BC.update

    def nan_update(self, batch, step):
        metrics = update(self, batch, step)
        if step >= 13:
            metrics["actor_loss"] = metrics["actor_loss"] * float("nan")
        return metrics

    monkeypatch.setattr(TD3BC, "update", nan_update)
    assert main(args) == 1
    err = capsys.readouterr().err
    assert err.startswith("taco: error: non-finite actor_loss (nan) at step 13 (noticed at update 15)"), err
    assert "last good checkpoint is at update 10" in err and f"resume_from={run}" in err
    assert torch.load(run / "checkpoint" / "state.pt", weights_only=True)["frame"] == 10


# ---------------------------------------------------------------- failed and damaged checkpoints
@pytest.mark.parametrize("where", ["replay", "state"])
def test_failed_save_keeps_the_previous_checkpoint_whole(tmp_path, monkeypatch, capsys, unkilled, where):
    calls = []

    if where == "replay":
        from taco_rl.runners.core.replay import Replay

        original = Replay.save

        def failing(self, path):
            calls.append(1)
            if len(calls) == 2:  # part of it written, then the disk is full
                Path(path).mkdir(parents=True, exist_ok=True)
                (Path(path) / "meta.json").write_text("{")
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            original(self, path)

        monkeypatch.setattr(Replay, "save", failing)
    else:
        original = torch.save

        def failing(obj, f, *a, **kw):
            calls.append(1)
            if len(calls) == 2:
                f.write(b"PK\x03\x04 half a checkpoint")
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            original(obj, f, *a, **kw)

        monkeypatch.setattr(ckpt.torch, "save", failing)
    assert main(["train", *TINY, "frames=300", f"run_dir={tmp_path}", "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "cannot write a checkpoint" in err and "No space left on device" in err
    assert "previous checkpoint (frame 100) is whole" in err
    monkeypatch.undo()
    assert not list((tmp_path / "checkpoint").glob("*.tmp"))
    assert torch.load(tmp_path / "checkpoint" / "state.pt", weights_only=True)["frame"] == 100
    assert main(["train", *TINY, "frames=300", f"run_dir={tmp_path}", "--no-progress"]) == 0
    assert _rows(tmp_path / "eval.csv") == _rows(unkilled / "eval.csv")


def test_too_little_disk_space_is_refused_before_writing(tmp_path, monkeypatch, capsys):
    import shutil
    from collections import namedtuple

    usage, real, calls = namedtuple("usage", "total used free"), shutil.disk_usage, []

    def disk_usage(path):  # the first checkpoint sees the real disk, the second a nearly full one
        calls.append(1)
        return usage(10**9, 10**9 - 5000, 5000) if len(calls) >= 2 else real(path)

    monkeypatch.setattr(ckpt.shutil, "disk_usage", disk_usage)
    assert main(["train", *TINY, "frames=300", f"run_dir={tmp_path}", "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "it needs about" in err and "4.9 KB is free" in err, err
    assert "previous checkpoint (frame 100) is whole" in err
    assert torch.load(tmp_path / "checkpoint" / "state.pt", weights_only=True)["frame"] == 100
    assert sorted(p.name for p in (tmp_path / "checkpoint").iterdir()) == ["replay_a", "state.pt"]


def test_bytes_to_save_counts_what_a_save_adds(tmp_path):
    from taco_rl.runners.core.replay import Replay

    replay = Replay(50, (3, 8, 8), 2, frame_stack=1, nstep=1)
    replay.add(torch.zeros(3, 8, 8, dtype=torch.uint8), first=True)
    for _ in range(9):
        replay.add(torch.zeros(3, 8, 8, dtype=torch.uint8), torch.zeros(2), 0.0, 1.0)
    row, other = 3 * 8 * 8, 2 * 4 + 4 + 4 + 8  # frame; action, reward, discount, episode start
    assert replay.bytes_to_save(tmp_path / "a") == 10 * row + 50 * other  # full: a new storage
    replay.save(tmp_path / "a")
    assert replay.bytes_to_save(tmp_path / "a") == 0
    for _ in range(4):
        replay.add(torch.zeros(3, 8, 8, dtype=torch.uint8), torch.zeros(2), 0.0, 1.0)
    assert replay.bytes_to_save(tmp_path / "a") == 4 * (row + other)  # incremental: the new rows
    assert replay.bytes_to_save(tmp_path / "b") == 14 * row + 50 * other


@pytest.mark.parametrize("damage", ["state", "replay"])
def test_damaged_newest_checkpoint_falls_back_to_the_previous(tmp_path, capsys, unkilled, damage):
    Trainer(_cfg(tmp_path, frames=250), progress=False).train()  # checkpoints at 100, 200 and 250
    folder = tmp_path / "checkpoint"
    newest = torch.load(folder / "state.pt", weights_only=True)
    assert newest["frame"] == 250 and torch.load(folder / "state.prev.pt", weights_only=True)["frame"] == 200
    if damage == "state":
        data = (folder / "state.pt").read_bytes()
        (folder / "state.pt").write_bytes(data[: len(data) // 2])
    else:
        (folder / newest["replay_dir"] / "meta.json").unlink()
    capsys.readouterr()
    trainer = Trainer(_cfg(tmp_path), progress=False)
    err = capsys.readouterr().err
    assert "resumed from the previous checkpoint (frame 200)" in err and "after frame 200" in err
    assert trainer.counters["frame"] == 200
    assert (folder / "state.damaged.pt").exists()
    trainer.train()
    assert _rows(tmp_path / "eval.csv") == _rows(unkilled / "eval.csv")
    assert _rows(tmp_path / "train.csv") == _rows(unkilled / "train.csv")


def test_a_refused_checkpoint_is_not_taken_for_damage(tmp_path, monkeypatch):
    Trainer(_cfg(tmp_path, frames=200), progress=False).train()
    before = sorted(p.name for p in (tmp_path / "checkpoint").iterdir())

    def refuse(self, state):
        raise ckpt.CheckpointError("trained on another dataset")

    monkeypatch.setattr(Trainer, "check_resume", refuse)
    with pytest.raises(ckpt.CheckpointMismatch, match="another dataset"):
        Trainer(_cfg(tmp_path), progress=False)
    assert sorted(p.name for p in (tmp_path / "checkpoint").iterdir()) == before  # no fallback, nothing moved


def test_both_generations_damaged_is_reported(tmp_path):
    Trainer(_cfg(tmp_path, frames=200), progress=False).train()
    for name in ("state.pt", "state.prev.pt"):
        (tmp_path / "checkpoint" / name).write_bytes(b"garbage")
    with pytest.raises(ckpt.CheckpointError, match="both checkpoint generations .* are unusable"):
        Trainer(_cfg(tmp_path), progress=False)


# ---------------------------------------------------------------- kills at any moment
def _logged_frames(run: Path, log: str = "eval") -> list[int]:
    """The frames of the rows in the run's `log`.csv so far (a row being written is left out)."""
    try:
        lines = (run / f"{log}.csv").read_text().splitlines(keepends=True)
        return [int(r["frame"]) for r in csv.DictReader(line for line in lines if line.endswith("\n"))]
    except (OSError, ValueError, KeyError, TypeError):
        return []


def _checkpoint_frame(run: Path) -> int:
    try:
        return torch.load(run / "checkpoint" / "state.pt", weights_only=True)["frame"]
    except Exception:  # noqa: BLE001 - absent or being replaced
        return -1


@pytest.mark.slow
def test_sigkill_at_several_moments_then_rerun_equals_unkilled(tmp_path):
    args = [*TINY, "frames=400", "eval_episodes=2"]
    ref = _cli(*args, f"run_dir={tmp_path / 'ref'}")
    run = tmp_path / "killed"
    moments = [  # each kill lands at the first poll (50 ms) where its moment has come
        lambda: True,  # just locked: setting up
        lambda: _logged_frames(run)[-1:] == [0],  # evaluated, no checkpoint yet
        lambda: _checkpoint_frame(run) >= 100,  # just after a checkpoint
        # between two checkpoints: a train log (every 50 frames) past the last checkpoint, so some
        # logged rows are newer than the state a rerun resumes from. (Evaluations come at the same
        # frames as checkpoints, a few ms before them: too short a window to poll for.)
        lambda: max(_logged_frames(run, "train"), default=0) > max(_checkpoint_frame(run), 100),
    ]
    for moment in moments:
        proc = _cli(*args, f"run_dir={run}")
        _wait_for(lambda p=proc: (run / ".lock").exists() and f"pid {p.pid}," in (run / ".lock").read_text(), proc)
        _wait_for(moment, proc)
        proc.kill()
        proc.wait()
    assert ref.wait(timeout=300) == 0, ref.communicate()
    final = _cli(*args, f"run_dir={run}")
    out, err = final.communicate(timeout=300)
    assert final.returncode == 0, err
    assert _rows(run / "eval.csv") == _rows(tmp_path / "ref" / "eval.csv")
    frames = [int(r["frame"]) for r in _rows(run / "eval.csv")]
    assert frames == sorted(set(frames)) and frames[-1] == 400
    assert _tb_steps(run, "eval/episode_return") == frames


def test_checkpoint_messages_name_the_runs_clock(tmp_path):
    """Offline runs count updates, not frames: the fallback warning says so."""
    folder, warnings = tmp_path / "checkpoint", []
    writer = ckpt.Checkpoints(folder, "update")
    for n in (10, 20):
        writer.save({"counters": {"update": n}}, n)
    data = (folder / "state.pt").read_bytes()
    (folder / "state.pt").write_bytes(data[: len(data) // 2])
    reader = ckpt.Checkpoints(folder, "update")
    reader.restore(lambda state, payload: None, warnings.append)
    assert reader.frame == 10 and "previous checkpoint (update 10)" in warnings[0] and "after update 10" in warnings[0]
    assert "frame" not in warnings[0]
