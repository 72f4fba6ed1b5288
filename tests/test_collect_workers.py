"""`taco data collect workers=N`: the dataset of workers=1, and a dead worker is a clear error
that keeps the finished episodes for a rerun."""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
import signal
import threading

import pytest

from taco_rl.runners.cli import main
from taco_rl.runners.core import workers as workers_mod
from taco_rl.runners.core.config import resolve
from taco_rl.runners.core.workers import WorkerError
from taco_rl.runners.data import collect_workers
from taco_rl.runners.data.datasets import dataset_info, verify_checksum
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
    "logger=none",
]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    return Trainer(resolve([*TINY, f"root={root}", "frames=150", "device=cpu"]), progress=False).train()


def _collect(*args):
    return main(["data", "collect", *args, "--no-progress"])


def test_policy_collect_with_workers_has_the_serial_checksum(run_dir, tmp_path):
    assert _collect(f"policy={run_dir}", "episodes=5", "noise=0.2", "seed=3", f"out={tmp_path / 'one'}") == 0
    assert (
        _collect(f"policy={run_dir}", "episodes=5", "noise=0.2", "seed=3", "workers=2", f"out={tmp_path / 'two'}") == 0
    )
    assert (
        dataset_info(tmp_path / "two")["checksum"]
        == dataset_info(tmp_path / "one")["checksum"]
        == verify_checksum(tmp_path / "two")
    )
    assert not mp.active_children()


def test_random_collect_with_workers_has_the_serial_checksum(tmp_path):
    common = ["task=point_reach", "policy=random", "episodes=5", "image_size=16", "seed=2"]
    assert _collect(*common, f"out={tmp_path / 'one'}") == 0
    assert _collect(*common, "workers=2", f"out={tmp_path / 'three'}") == 0
    assert dataset_info(tmp_path / "three")["checksum"] == dataset_info(tmp_path / "one")["checksum"]
    assert _collect(*common, "workers=0", f"out={tmp_path / 'zero'}") == 2


def _signal_second_worker(monkeypatch, sig: int) -> list:
    """collect's worker processes, the second one sent `sig` as soon as it is spawned."""
    started = []
    real_spawn = collect_workers.spawn

    def spawn(*a, **kw):
        proc, conn = real_spawn(*a, **kw)
        started.append(proc)
        if len(started) == 2:
            os.kill(proc.pid, sig)
        return proc, conn

    monkeypatch.setattr(collect_workers, "spawn", spawn)
    return started


def test_killed_collect_worker_is_an_error_and_a_rerun_finishes(tmp_path, monkeypatch, capsys):
    common = ["task=point_reach", "policy=random", "episodes=12", "image_size=16", "seed=2"]
    assert _collect(*common, f"out={tmp_path / 'ref'}") == 0
    real_spawn = collect_workers.spawn
    started = _signal_second_worker(monkeypatch, signal.SIGKILL)  # it dies before its first episode
    out = tmp_path / "out"
    with pytest.raises(
        WorkerError,
        match=r"collect worker collect1 \(pid \d+\) was killed by SIGKILL; the "
        r"episodes finished are kept in .*rerun the same command",
    ):
        from taco_rl.runners.data.collect import collect

        collect("random", 12, str(out), seed=2, task="point_reach", env={"image_size": 16}, workers=2)
    assert not any(p.is_alive() for p in started) and not out.exists()
    monkeypatch.setattr(collect_workers, "spawn", real_spawn)
    assert _collect(*common, "workers=2", f"out={out}") == 0
    assert dataset_info(out)["checksum"] == dataset_info(tmp_path / "ref")["checksum"]


def test_cli_reports_a_dead_worker_in_one_line(tmp_path, monkeypatch, capsys):
    def spawn(*a, **kw):
        proc, conn = workers_mod.spawn(*a, **kw)
        os.kill(proc.pid, signal.SIGKILL)
        return proc, conn

    monkeypatch.setattr(collect_workers, "spawn", spawn)
    assert (
        _collect(
            "task=point_reach", "policy=random", "episodes=4", "image_size=16", "workers=2", f"out={tmp_path / 'x'}"
        )
        == 1
    )
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "killed by SIGKILL" in err


def test_hung_collect_worker_is_an_error_that_keeps_the_finished_episodes(tmp_path, monkeypatch):
    started = _signal_second_worker(monkeypatch, signal.SIGSTOP)  # alive and silent from the start
    monkeypatch.setenv("TACO_WORKER_TIMEOUT", "10")  # the other worker starts up within it
    from taco_rl.runners.data.collect import collect

    with pytest.raises(
        WorkerError,
        match=r"collect worker collect1 \(pid \d+\) sent nothing for 10 s "
        r"\(hung; .*the episodes finished are kept in ",
    ):
        collect("random", 12, str(tmp_path / "out"), seed=2, task="point_reach", env={"image_size": 16}, workers=2)
    assert not any(p.is_alive() for p in started)
    kept = sorted(f.name for f in (tmp_path / ".out.collecting").glob("episode_*.npz"))
    assert kept == [f"episode_{i:06d}.npz" for i in range(0, 12, 2)]  # collect0's share, all of it


def test_collect_silence_limit_counts_from_each_workers_last_episode(tmp_path, monkeypatch):
    """TACO_WORKER_TIMEOUT=5 is per episode: workers held still for 1.4 s four times (5.6 s in all, past
    the limit since they started), each time after every worker still collecting finished an episode,
    are not taken for hung."""
    started = []
    real_spawn = collect_workers.spawn

    def spawn(*a, **kw):
        proc, conn = real_spawn(*a, **kw)
        started.append(proc)
        return proc, conn

    monkeypatch.setattr(collect_workers, "spawn", spawn)
    monkeypatch.setenv("TACO_WORKER_TIMEOUT", "5")  # the workers start up within it
    pauses: list[threading.Timer] = []
    finished, reported = [], set()

    def signal_all(pids: list[int], sig: int) -> None:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)

    def done(i: int) -> None:
        finished.append(i)
        if pauses and pauses[-1].is_alive():
            return  # sent before the pause
        reported.add(i % 2)  # two workers: episode i is worker i % 2's
        # a worker whose last episode (78 or 79) is in has left the silence watch: one that started
        # seconds before the other (a loaded machine) may finish its share before the other's first
        busy = {w for w in (0, 1) if 78 + w not in finished}
        if len(pauses) < 4 and busy and busy <= reported:
            reported.clear()
            pids = [p.pid for p in started]
            signal_all(pids, signal.SIGSTOP)
            pauses.append(threading.Timer(1.4, signal_all, (pids, signal.SIGCONT)))
            pauses[-1].start()

    cfg = resolve(["task=point_reach", "image_size=16"])
    jobs = [(i, tmp_path / f"episode_{i:06d}.npz") for i in range(80)]
    try:
        collect_workers.collect_parallel(2, cfg, None, 0.0, 2, jobs, done, tmp_path)
    finally:
        for t in pauses:
            t.join()
    assert len(pauses) == 4 and sorted(finished) == list(range(80))
    assert all(f.is_file() for _, f in jobs) and not any(p.is_alive() for p in started)
