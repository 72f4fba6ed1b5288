"""`taco bench`'s whole-run figures: env stepping in worker processes at several env counts, and
the seconds one evaluation takes in-process and with `eval_workers`, for hours per 1M frames that
count evaluation at the configured cadence.
"""

from __future__ import annotations

import os
import time
from typing import Any

import numpy as np
import torch

from taco_rl.envs import make_env
from taco_rl.runners.core.config import Config
from taco_rl.runners.core.evaluation import EvalPool, eval_worker_count, play_serial
from taco_rl.runners.core.run import EVAL_SEED_OFFSET, env_kwargs
from taco_rl.runners.core.workers import start_workers

DMC_EPISODE_FRAMES = 1000  # dm_control's time limit (point_reach: 50 agent steps)


def episode_frames(cfg: Config) -> int:
    return 50 * cfg.action_repeat if cfg.task == "point_reach" else DMC_EPISODE_FRAMES


def _cpu_seconds(pid: int | None = None) -> float | None:
    """CPU seconds (user + system, all threads) used so far by this process or by `pid`; None where
    /proc cannot say (not Linux)."""
    if pid is None:
        return time.process_time()
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


class _InProcess:
    """The env a `num_envs=1` run steps, in this process, behind EnvWorker's send/recv."""

    def __init__(self, env) -> None:
        self.env = env
        self.out: tuple[Any, None] | None = None  # the reply `recv` returns

    def send(self, cmd: str, arg: Any = None) -> None:
        self.out = (self.env.reset(seed=arg) if cmd == "reset" else self.env.step(arg)), None

    def recv(self) -> Any:
        return self.out

    def close(self) -> None:
        self.env.close()


def vec_env_fps(cfg: Config, num_envs: list[int], steps: int, rounds: int = 4) -> dict[int, tuple[float, float | None]]:
    """Env frames per second for each N in `num_envs`, stepped as a run with `num_envs=N` steps
    them: N = 1 is the one env in this process; N > 1 is N worker processes in lock-step (every
    env one step, then the next vector step), each with its share of the cores for rendering.
    Random actions, faithful rendering, the sum over the N envs. Each N has its own envs (idle
    ones wait blocked), and the N are measured in interleaved rounds, so a change in the
    machine's load moves every figure alike. Start-up and the first render are not timed.
    For each N: (frames/s, cores kept busy: the CPU seconds of this process and the workers per second; None
    where unknown). One env's renderer may already keep more than one core busy (Mesa's llvmpipe
    rasterizes on a thread per core), which bounds what more envs can add on few cores."""
    envs: dict[int, list] = {}
    try:
        for n in num_envs:
            envs[n] = (
                [_InProcess(make_env(cfg.task, cfg.seed, **env_kwargs(cfg)))]
                if n == 1
                else start_workers(n, cfg.task, cfg.seed, env_kwargs(cfg), f"bench{n}-")
            )
        first = envs[num_envs[0]][0]
        action_shape = first.env.action_space.shape if isinstance(first, _InProcess) else first.spaces[1]
        rng = np.random.default_rng(cfg.seed)
        for group in envs.values():
            for i, w in enumerate(group):
                w.send("reset", cfg.seed + i)
            for w in group:
                w.recv()
        frames = {n: 0 for n in num_envs}
        seconds = {n: 0.0 for n in num_envs}
        cpu: dict[int, float | None] = {n: 0.0 for n in num_envs}
        per_round = max(1, steps // rounds)
        for _ in range(rounds):
            for n, group in envs.items():
                pids = [None] + [w.proc.pid for w in group if not isinstance(w, _InProcess)]  # None: this process
                cpu0 = [_cpu_seconds(p) for p in pids]
                t = time.perf_counter()
                for _ in range(per_round):
                    for w in group:
                        w.send("step", rng.uniform(-1, 1, action_shape).astype(np.float32))
                    for w in group:
                        (_, _, terminated, truncated, info), _ = w.recv()
                        frames[n] += int(info.get("frames", cfg.action_repeat))
                        if terminated or truncated:
                            w.send("reset", None)
                            w.recv()
                seconds[n] += time.perf_counter() - t
                cpu1 = [_cpu_seconds(p) for p in pids]
                known = [(a, b) for a, b in zip(cpu0, cpu1, strict=True) if a is not None and b is not None]
                busy = cpu[n]
                if busy is not None and len(known) == len(pids):
                    cpu[n] = busy + sum(b - a for a, b in known)
                else:
                    cpu[n] = None
        return {n: (frames[n] / seconds[n], None if (c := cpu[n]) is None else c / seconds[n]) for n in num_envs}
    finally:
        for group in envs.values():
            for w in group:
                w.close()


def eval_seconds(cfg: Config, agent, workers: int) -> tuple[float, float | None]:
    """Seconds of one evaluation as a run plays it (cfg.eval_episodes episodes, the episode-0 video
    when save_video): in-process, and in `workers` eval workers (None when 0; started before timing,
    as a run starts them once). Measured in interleaved rounds of `workers` episodes (in-process,
    then the same episodes in the workers), so a change in the machine's load moves both alike; the
    rounds add up to the whole evaluation."""
    video = dict(render_mode="rgb_array", render_size=cfg.video_size) if cfg.save_video else {}
    seeds = [cfg.seed + EVAL_SEED_OFFSET + i for i in range(cfg.eval_episodes)]
    kwargs = {**env_kwargs(cfg), **video}
    agent.train(False)
    env = make_env(cfg.task, cfg.seed + EVAL_SEED_OFFSET, **kwargs)
    pool = EvalPool(workers, cfg.task, cfg.seed + EVAL_SEED_OFFSET, kwargs) if workers > 0 else None
    try:
        env.reset(seed=0)  # the first render makes the GL context, as a run's eval env has it
        for w in pool.workers if pool is not None else []:
            w.send("reset", 0)
        for w in pool.workers if pool is not None else []:
            w.recv()
        serial, parallel = 0.0, 0.0
        size = max(workers, 1)
        for start in range(0, len(seeds), size):
            part, video_now = seeds[start : start + size], cfg.save_video and start == 0
            t = time.perf_counter()
            play_serial(env, agent, 10**9, part, video_now)
            serial += time.perf_counter() - t
            if pool is not None:
                t = time.perf_counter()
                pool.play(agent, 10**9, part, video_now)
                parallel += time.perf_counter() - t
        return serial, (parallel if pool is not None else None)
    finally:
        env.close()
        if pool is not None:
            pool.close()
        agent.train(True)


def whole_run(cfg: Config, agent, num_envs: list[int], env_steps: int, evaluation: bool) -> dict[str, Any]:
    """env_fps_envs_N for each N, and with `evaluation` eval_s_serial / eval_s_parallel (and the
    eval_workers they used); every env-stepping figure is taken in this one process run."""
    out: dict[str, Any] = {}
    if num_envs:
        for n, (fps, busy) in vec_env_fps(cfg, sorted(set(num_envs)), env_steps).items():
            out[f"env_fps_envs_{n}"] = fps
            if busy is not None:
                out[f"env_cores_envs_{n}"] = busy
    if len(num_envs) > 1 and 1 in num_envs:
        for n in num_envs:
            if n != 1:
                out[f"env_speedup_envs_{n}"] = out[f"env_fps_envs_{n}"] / out["env_fps_envs_1"]
    if evaluation:
        with torch.no_grad():
            workers = eval_worker_count(cfg.eval_workers, cfg.eval_episodes)
            out["eval_workers"] = workers
            out["eval_s_serial"], parallel = eval_seconds(cfg, agent, workers)
            if parallel is not None:
                out["eval_s_parallel"] = parallel
                out["eval_parallel_vs_serial"] = out["eval_s_parallel"] / out["eval_s_serial"]
    return out


def eval_hours(cfg: Config, r: dict[str, Any]) -> tuple[float, str] | None:
    """Hours per 1M frames spent evaluating at eval_every_frames, and how they were obtained: from
    the measured evaluation (`eval_s_parallel` when eval_workers > 0, else `eval_s_serial`), or,
    unmeasured, estimated as the evaluation's env frames at the in-process `env_fps` (acting and
    the video not counted)."""
    evals = 1e6 / cfg.eval_every_frames
    if "eval_s_parallel" in r:
        return evals * r["eval_s_parallel"] / 3600, "measured (eval_workers)"
    if "eval_s_serial" in r:
        return evals * r["eval_s_serial"] / 3600, "measured (in-process)"
    if "env_fps" in r:
        frames = cfg.eval_episodes * episode_frames(cfg)
        return evals * frames / r["env_fps"] / 3600, "estimated from env_fps (in-process, no acting or video)"
    return None
