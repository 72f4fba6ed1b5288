"""Evaluation episodes in env worker processes: the serial loop's episodes, and workers that fail,
die or are interrupted never hang a run nor outlive it."""

from __future__ import annotations

import csv
import multiprocessing as mp
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from taco_rl.envs import make_env
from taco_rl.runners.core import evaluation as parallel_eval
from taco_rl.runners.core import workers
from taco_rl.runners.core.config import config_hash, resolve
from taco_rl.runners.core.evaluation import EvalPool, eval_worker_count, play_serial
from taco_rl.runners.core.run import build_agent, env_kwargs
from taco_rl.runners.core.workers import EnvWorker, WorkerError, render_threads, share_render_cores
from taco_rl.runners.online.train import Trainer

ROOT = Path(__file__).resolve().parents[1]
TINY = [
    "task=point_reach",
    "image_size=16",
    "hidden_dim=32",
    "batch_size=16",
    "seed_frames=100",
    "expl_steps=50",
    "eval_episodes=3",
    "eval_every_frames=100",
    "checkpoint_every_frames=100",
    "save_video=false",
    "logger=none",
]


def _agent(cfg, env):
    torch.manual_seed(0)
    agent = build_agent(cfg, env.observation_space.shape, env.action_space.shape[0], torch.device("cpu"))
    agent.train(False)
    return agent


def _setup(task_args):
    cfg = resolve(task_args)
    kwargs = {**env_kwargs(cfg), "render_mode": "rgb_array", "render_size": 24}
    env = make_env(cfg.task, 7, **kwargs)
    return cfg, kwargs, env, _agent(cfg, env)


def test_worker_count():
    assert eval_worker_count("0", 10) == 0
    assert eval_worker_count("3", 2) == 2  # never more than the episodes
    assert eval_worker_count("auto", 1) == 0  # one episode: nothing to overlap
    assert 0 <= eval_worker_count("auto", 10) <= os.cpu_count()


def test_render_threads_share_the_cores(monkeypatch):
    monkeypatch.setattr(workers, "cores", lambda: 16)
    assert [render_threads(n) for n in (1, 2, 4, 8, 10, 16, 32)] == [16, 8, 4, 2, 0, 0, 0]  # 0: no pool
    monkeypatch.setattr(workers, "cores", lambda: 2)
    assert [render_threads(n) for n in (1, 2)] == [2, 0]
    monkeypatch.delenv("LP_NUM_THREADS", raising=False)
    share_render_cores(2)
    assert os.environ["LP_NUM_THREADS"] == "0"
    monkeypatch.setenv("LP_NUM_THREADS", "3")  # the user's setting wins
    share_render_cores(2)
    assert os.environ["LP_NUM_THREADS"] == "3"


def _rasterizer_threads(pid: int) -> int:
    task = Path(f"/proc/{pid}/task")
    return sum((t / "comm").read_text().startswith("llvmpipe-") for t in task.iterdir())


def _llvmpipe() -> bool:
    env = make_env("cheetah_run", 0, image_size=16)
    env.reset(seed=0)
    from OpenGL import GL  # after dm_control has chosen PyOpenGL's platform

    try:
        with env.unwrapped.physics.contexts.gl.make_current() as ctx:
            return b"llvmpipe" in ctx.call(GL.glGetString, GL.GL_RENDERER)
    finally:
        env.close()


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="counts the worker's threads in /proc")
def test_real_workers_start_their_share_of_rasterizer_threads(monkeypatch):
    if not _llvmpipe():
        pytest.skip("the GL driver is not Mesa llvmpipe (an accelerator's): no rasterizer threads to share")
    monkeypatch.delenv("LP_NUM_THREADS", raising=False)
    for siblings, user, expected in [(1, None, render_threads(1)), (2, None, render_threads(2)), (2, "1", 1)]:
        if user is not None:
            monkeypatch.setenv("LP_NUM_THREADS", user)
        w = EnvWorker("cheetah_run", 0, dict(image_size=16), "t", siblings=siblings)
        try:
            w.started()
            w.send("reset", 1)  # its first frame starts llvmpipe's pool
            w.recv()
            assert _rasterizer_threads(w.proc.pid) == expected, (siblings, user)
        finally:
            w.close()


def test_eval_workers_keep_the_run_directory():
    assert config_hash(resolve(TINY)) == config_hash(resolve([*TINY, "eval_workers=0"]))


def _same(a, b):
    assert a.returns == b.returns and a.lengths == b.lengths
    assert len(a.video) == len(b.video) == b.lengths[0] + 1  # episode 0: reset + every step
    assert all(np.array_equal(x, y) for x, y in zip(a.video, b.video, strict=True))


def _compare(task_args, seeds):
    """The serial episodes, and those of two workers in lock-step batches (`batched`, as on an
    accelerator); one worker, and two acting as observations arrive (the CPU's default), must
    give the serial episodes exactly."""
    cfg, kwargs, env, agent = _setup(task_args)
    serial = play_serial(env, agent, 10**6, seeds, video=True)
    env.close()
    pool = EvalPool(1, cfg.task, 7, kwargs)
    try:
        _same(pool.play(agent, 10**6, seeds, video=True), serial)
    finally:
        pool.close()
    pool = EvalPool(2, cfg.task, 7, kwargs)
    threads = torch.get_num_threads()
    try:
        _same(pool.play(agent, 10**6, seeds, video=True), serial)
        assert torch.get_num_threads() == threads  # the CPU threads it gave the workers are back
        two = pool.play(agent, 10**6, seeds, video=True, batched=True)
        # the batched forward pass gives each observation its batch-1 action to float rounding
        obs = np.stack(
            [pool.workers[i].send("reset", s) or pool.workers[i].recv()[0][0] for i, s in enumerate(seeds[:2])]
        )
    finally:
        pool.close()
    batched = agent.act_batch(obs, 10**6, True)
    alone = np.stack([agent.act(o, 10**6, True) for o in obs])
    np.testing.assert_allclose(batched, alone, rtol=0, atol=1e-5)
    assert two.lengths == serial.lengths and len(two.video) == len(serial.video)
    return serial, two


def test_cpu_pool_acts_on_the_cores_the_workers_leave(monkeypatch):
    cfg, kwargs, env, agent = _setup(TINY)
    env.close()
    seen, act_batch = [], agent.act_batch
    monkeypatch.setattr(agent, "act_batch", lambda *a: seen.append(torch.get_num_threads()) or act_batch(*a))
    monkeypatch.setattr(parallel_eval, "cores", lambda: 4)
    threads = torch.get_num_threads()
    torch.set_num_threads(3)
    pool = EvalPool(2, cfg.task, 7, kwargs)
    try:
        pool.play(agent, 10**6, [1, 2], video=False)
    finally:
        pool.close()
        after = torch.get_num_threads()
        torch.set_num_threads(threads)
    assert set(seen) == {2} and after == 3  # 4 cores - 2 workers while it plays, then as before


def test_point_reach_pool_plays_the_serial_episodes():
    serial, two = _compare(TINY, [101, 102, 103])
    np.testing.assert_allclose(two.returns, serial.returns, rtol=1e-5)  # a smooth env: returns to rounding


@pytest.mark.slow
def test_cheetah_pool_plays_the_serial_episodes():
    serial, two = _compare(
        ["task=cheetah_run", "action_repeat=8", "fast_render=true", "hidden_dim=32"], [101, 102, 103]
    )
    # batched, episodes 0 and 1 ran at policy batch 2: actions equal to rounding, which MuJoCo's
    # chaotic contacts grow over 125 steps (measured: 1.3015 vs 1.3080)
    np.testing.assert_allclose(two.returns[:2], serial.returns[:2], rtol=0.05)


def _eval_returns(run: Path) -> list[float]:
    with open(run / "eval.csv") as f:
        return [float(r["episode_return"]) for r in csv.DictReader(f)]


def test_run_with_eval_workers_equals_in_process_eval(tmp_path):
    a = Trainer(resolve([*TINY, "frames=200", "eval_workers=0", f"run_dir={tmp_path / 'a'}"]), progress=False)
    a.train()
    b = Trainer(resolve([*TINY, "frames=200", "eval_workers=2", f"run_dir={tmp_path / 'b'}"]), progress=False)
    b.train()
    assert b.eval_pool is None and not mp.active_children()  # the workers ended with the run
    assert _eval_returns(tmp_path / "b") == _eval_returns(tmp_path / "a")  # on the CPU: batch-1 actions
    assert len(_eval_returns(tmp_path / "a")) == 3
    # training is untouched: the same learner at the end
    sa, sb = a.agent.state_dict(), b.agent.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa if isinstance(sa[k], torch.Tensor))


def test_worker_segfault_and_env_error_are_clear_errors():
    w = EnvWorker("point_reach", 0, dict(image_size=16, action_repeat=1), "t0")
    try:
        w.started()
        w.send("bogus")
        with pytest.raises(WorkerError, match="t0: ValueError: unknown worker command 'bogus'"):
            w.recv()
        w.send("crash")
        t = time.time()
        with pytest.raises(WorkerError, match=r"t0 \(pid \d+\) was killed by SIGSEGV"):
            w.recv()
        assert time.time() - t < 10
        with pytest.raises(WorkerError, match="killed by SIGSEGV"):  # and after, without waiting
            w.send("reset", 1)
            w.recv()
    finally:
        w.close()
    assert not w.proc.is_alive()


def _stop(pid: int) -> None:
    """SIGSTOP `pid` and wait until it is stopped, not just signalled (a SIGTERM would overtake it)."""
    os.kill(pid, signal.SIGSTOP)
    deadline = time.time() + 10
    while "stopped" not in _state(pid) and time.time() < deadline:
        time.sleep(0.01)
    assert "stopped" in _state(pid)


def test_hung_worker_is_a_clear_error_and_is_ended_at_once(monkeypatch):
    w = EnvWorker("point_reach", 0, dict(image_size=16, action_repeat=1), "t0")
    try:
        w.started()
        monkeypatch.setenv("TACO_WORKER_TIMEOUT", "1")
        _stop(w.proc.pid)  # alive, silent: what a deadlocked renderer looks like
        w.send("reset", 1)
        with pytest.raises(WorkerError, match=r"t0 \(pid \d+\) sent nothing for 1 s \(hung; TACO_WORKER_TIMEOUT"):
            w.recv()
        t = time.time()
    finally:
        w.close()
    assert not w.proc.is_alive() and time.time() - t < 4  # not the 5 s + 5 s a close of a live worker may wait


def _continue_after(pid: int, seconds: float) -> threading.Timer:
    timer = threading.Timer(seconds, os.kill, (pid, signal.SIGCONT))
    timer.start()
    return timer


def test_silence_limit_is_timed_from_each_command(monkeypatch):
    """TACO_WORKER_TIMEOUT=2 counts from the command a worker was sent: a worker alive for longer than
    that, steps that each take most of it, or a reply the parent reads late do not trip it; a stopped
    worker is an error one limit after its command, not one limit after the parent began to wait."""
    w = EnvWorker("point_reach", 0, dict(image_size=16, action_repeat=1), "t2")
    try:
        w.started()
        monkeypatch.setenv("TACO_WORKER_TIMEOUT", "2")
        time.sleep(2.2)  # alive and idle for longer than the limit
        for cmd, arg in [("reset", 1), ("step", np.zeros(2, np.float32))]:
            _stop(w.proc.pid)  # each answer takes 1.2 s of the 2 (2.4 s in all)
            w.send(cmd, arg)
            _continue_after(w.proc.pid, 1.2).join()
            w.recv()
        w.send("step", np.zeros(2, np.float32))
        time.sleep(2.2)  # the parent reads the reply late (a slow update): it was sent in time
        w.recv()
        _stop(w.proc.pid)
        w.send("step", np.zeros(2, np.float32))
        time.sleep(2.1)
        t = time.monotonic()
        with pytest.raises(WorkerError, match=r"t2 \(pid \d+\) sent nothing for 2 s"):
            w.recv()
        assert time.monotonic() - t < 1.5  # the limit was already up: no second wait of 2 s
    finally:
        w.close()
    assert not w.proc.is_alive()


def test_long_lived_eval_pool_and_a_slow_learner_do_not_trip_the_limit(monkeypatch):
    """An eval pool reused after idling longer than TACO_WORKER_TIMEOUT plays as before, and so does one
    whose learner takes longer than the limit to act while another worker's reply waits."""
    cfg, kwargs, env, agent = _setup(TINY)
    env.close()
    pool = EvalPool(2, cfg.task, 7, kwargs)
    try:
        first = pool.play(agent, 10**6, [1, 2], video=False, batched=False)
        monkeypatch.setenv("TACO_WORKER_TIMEOUT", "1")
        time.sleep(1.5)  # the pool idles between evaluations for longer than the limit
        assert pool.play(agent, 10**6, [1, 2], video=False, batched=False) == first
        late = pool.workers[1].proc.pid
        _stop(late)  # its reset answers only once the learner has begun to act on eval0's
        act_batch, slow = agent.act_batch, [True]

        def slow_act(obs, step, eval_mode):
            if slow:
                slow.clear()
                os.kill(late, signal.SIGCONT)
                time.sleep(1.5)  # a first action slower than the limit
            return act_batch(obs, step, eval_mode)

        monkeypatch.setattr(agent, "act_batch", slow_act)
        assert pool.play(agent, 10**6, [1, 2], video=False, batched=False) == first and not slow
    finally:
        pool.close()


def test_terminate_ends_a_stopped_worker():
    w = EnvWorker("point_reach", 0, dict(image_size=16, action_repeat=1), "t1")
    try:
        w.started()
        _stop(w.proc.pid)
        workers.terminate(w.proc)
        w.proc.join(5)  # a stopped process holds SIGTERM until it is continued
        assert w.proc.exitcode == -signal.SIGTERM
    finally:
        w.close()


def test_worker_timeout_setting(monkeypatch):
    monkeypatch.delenv("TACO_WORKER_TIMEOUT", raising=False)
    assert workers.answer_timeout() == 600
    for text, value in [("0", None), ("2.5", 2.5), (" 30 ", 30.0)]:
        monkeypatch.setenv("TACO_WORKER_TIMEOUT", text)
        assert workers.answer_timeout() == value
    for bad in ["soon", "-1", "nan", "inf"]:
        monkeypatch.setenv("TACO_WORKER_TIMEOUT", bad)
        with pytest.raises(
            ValueError,
            match=f"TACO_WORKER_TIMEOUT='{bad}': expected the seconds a worker may "
            r"stay silent, a number >= 0 \(0 waits forever\)",
        ):
            workers.answer_timeout()


@pytest.mark.parametrize("fault", ["killed", "hung"])
def test_worker_failing_mid_evaluation_ends_the_run_with_a_resumable_checkpoint(tmp_path, monkeypatch, fault):
    args = [*TINY, "frames=300", "eval_workers=2"]
    Trainer(resolve([*args, f"run_dir={tmp_path / 'ref'}"]), progress=False).train()
    original, calls, failed = EvalPool.play, [], []

    def play(self, *a, **kw):
        calls.append(1)
        if len(calls) == 2:  # the second evaluation (frame 100): a worker dies, or stops answering, under it
            failed.append(self.workers[1].proc)
            if fault == "hung":
                monkeypatch.setenv("TACO_WORKER_TIMEOUT", "2")
            os.kill(self.workers[1].proc.pid, signal.SIGKILL if fault == "killed" else signal.SIGSTOP)
        return original(self, *a, **kw)

    monkeypatch.setattr(EvalPool, "play", play)
    run = tmp_path / "run"
    how = r"was killed by SIGKILL" if fault == "killed" else r"sent nothing for 2 s \(hung; TACO_WORKER_TIMEOUT .*\)"
    with pytest.raises(
        WorkerError,
        match=r"evaluation at frame 100 stopped: env worker eval1 \(pid \d+\) "
        f"{how}; a checkpoint at frame 100 was written",
    ):
        Trainer(resolve([*args, f"run_dir={run}"]), progress=False).train()
    assert not mp.active_children() and not failed[0].is_alive()
    monkeypatch.setattr(EvalPool, "play", original)
    monkeypatch.delenv("TACO_WORKER_TIMEOUT", raising=False)
    resumed = Trainer(resolve([*args, f"run_dir={run}"]), progress=False)
    assert resumed.counters["frame"] == 100
    resumed.train()
    assert _eval_returns(run) == _eval_returns(tmp_path / "ref")  # evaluated again at 100, then as unfailed


def _children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(p) for p in path.read_text().split()] if path.exists() else []


def _gone(pids: list[int], timeout: float = 20.0) -> bool:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if not any(Path(f"/proc/{p}").exists() and "zombie" not in _state(p) for p in pids):
            return True
        time.sleep(0.1)
    return False


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/status").read_text().split("State:")[1].split("\n")[0].lower()
    except (FileNotFoundError, IndexError):
        return "zombie"


WORKER_PARENT = """
import sys, time
from taco_rl.runners.core.workers import EnvWorker
w = EnvWorker("point_reach", 0, dict(image_size=16, action_repeat=1), "orphan")
w.started()
print(w.proc.pid, flush=True)
time.sleep(600)
"""


def test_worker_ends_when_its_parent_is_killed():
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-c", WORKER_PARENT], env=env, stdout=subprocess.PIPE, text=True)
    worker = int(proc.stdout.readline())
    proc.kill()  # SIGKILL: no cleanup runs in the parent
    proc.wait()
    assert _gone([worker])


@pytest.mark.slow
@pytest.mark.parametrize("how", ["SIGTERM", "SIGINT to the process group"])
def test_interrupted_run_stops_its_workers(tmp_path, how):
    run = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "taco_rl.runners.cli",
            "train",
            *TINY,
            "frames=100000",
            "eval_workers=2",
            f"run_dir={run}",
            "--no-progress",
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    deadline = time.time() + 120
    while not (run / "eval.csv").exists() or len(_children(proc.pid)) < 2:
        assert proc.poll() is None and time.time() < deadline, proc.communicate()
        time.sleep(0.1)
    workers = _children(proc.pid)
    if how == "SIGTERM":
        proc.send_signal(signal.SIGTERM)
    else:  # Ctrl-C in a terminal: every process of the group gets SIGINT
        os.killpg(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == (143 if how == "SIGTERM" else 130), err
    assert "rerunning the same command" in err and "Traceback" not in err
    assert _gone(workers)


def test_bench_times_env_workers_and_evaluation(capsys):
    import json

    from taco_rl.runners.cli import main

    assert (
        main(
            [
                "bench",
                "task=point_reach",
                "hidden_dim=32",
                "batch_size=16",
                "eval_workers=2",
                "eval_episodes=4",
                "--updates",
                "1",
                "--samples",
                "2",
                "--env-steps",
                "20",
                "--num-envs",
                "1,2",
                "--eval",
            ]
        )
        == 0
    )
    r = json.loads(capsys.readouterr().out)
    assert r["env_fps_envs_1"] > 0 and r["env_fps_envs_2"] > 0
    assert r["env_speedup_envs_2"] == pytest.approx(r["env_fps_envs_2"] / r["env_fps_envs_1"])
    assert 0 < r["env_cores_envs_1"] <= os.cpu_count() + 0.5 and 0 < r["env_cores_envs_2"] <= os.cpu_count() + 0.5
    assert r["eval_workers"] == 2 and r["eval_s_serial"] > 0 and r["eval_s_parallel"] > 0
    assert r["eval_parallel_vs_serial"] == pytest.approx(r["eval_s_parallel"] / r["eval_s_serial"])
    # hours per 1M frames count the measured evaluation (with eval_workers) at eval_every_frames
    eval_h = 1e6 / r["settings"]["eval_every_frames"] * r["eval_s_parallel"] / 3600
    assert (
        r["eval_hours_per_1M_frames"] == pytest.approx(eval_h) and r["eval_hours_source"] == "measured (eval_workers)"
    )
    updates_h = r["hours_per_1M_frames_updates_only"]
    assert r["hours_per_1M_frames"] == pytest.approx(updates_h + 1e6 / r["env_fps"] / 3600 + eval_h)
    assert not __import__("multiprocessing").active_children()


def test_bench_num_envs_is_checked():
    from taco_rl.runners.cli import main

    assert main(["bench", "task=point_reach", "--num-envs", "1,0"]) == 2
