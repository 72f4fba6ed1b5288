"""`taco data collect workers=N`: episodes rolled out in N worker processes.

Each episode is fixed by its index alone (reset seed, noise generator; the policy is the
checkpoint's, on the CPU in every worker, one observation at a time as in-process), so which
worker plays it does not change it: the dataset, written afterwards from the episode files in
index order, has the checksum of `workers=1`. Every worker writes each finished episode's file
atomically, so a collect stopped any way (a worker killed, Ctrl-C) keeps what was finished and a
rerun goes on from there.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from multiprocessing.connection import wait
from pathlib import Path
from typing import Any

from taco_rl.runners.core.workers import (
    WorkerError,
    answer_timeout,
    exit_text,
    overdue,
    share_render_cores,
    silent_text,
    spawn,
    stop,
    terminate,
    time_left,
)


def _collect(conn, cfg, agent_state, noise: float, seed: int, jobs: list[tuple[int, str]], siblings: int) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent stops its workers
    share_render_cores(siblings)
    from taco_rl.envs import make_env
    from taco_rl.envs.registry import env_shapes
    from taco_rl.runners.data.rollout import rollout_to_file

    env = make_env(
        cfg.task,
        seed,
        action_repeat=cfg.action_repeat,
        frame_stack=cfg.frame_stack,
        image_size=cfg.image_size,
        fast_render=cfg.fast_render,
    )
    obs_shape, action_dim = env_shapes(env)
    agent = None
    if agent_state is not None:
        import torch

        from taco_rl.runners.core.run import build_agent

        torch.set_num_threads(1)
        agent = build_agent(cfg, obs_shape, action_dim, torch.device("cpu"))
        agent.load_state_dict(agent_state)
        agent.train(False)
    for i, file in jobs:
        rollout_to_file(env, agent, noise, seed, i, action_dim, Path(file))
        try:
            conn.send(i)
        except (BrokenPipeError, OSError):  # the parent is gone
            return
    conn.send(None)
    env.close()


def collect_parallel(
    workers: int,
    cfg,
    agent_state: dict[str, Any] | None,
    noise: float,
    seed: int,
    jobs: list[tuple[int, Path]],
    done: Callable[[int], None],
    work: Path,
) -> None:
    """Roll out `jobs` (episode index, file) in `workers` processes, calling `done(i)` as each ends."""
    shares = [jobs[w::workers] for w in range(workers) if jobs[w::workers]]
    procs = []
    try:
        for w, share in enumerate(shares):
            procs.append(
                spawn(
                    _collect,
                    (cfg, agent_state, noise, seed, [(i, str(f)) for i, f in share], len(shares)),
                    f"collect{w}",
                )
            )
        running = {conn: proc for proc, conn in procs}
        heard = {conn: time.monotonic() for conn in running}  # its last episode (or its start)
        limit = answer_timeout()  # per episode
        while running:
            wait([*running, *(p.sentinel for p in running.values())], time_left(min(heard[c] for c in running), limit))
            for conn, proc in list(running.items()):
                try:
                    while conn.poll():
                        i = conn.recv()
                        heard[conn] = time.monotonic()
                        if i is None:  # all its episodes written
                            del running[conn]
                            break
                        done(i)
                except (EOFError, OSError):
                    pass
                if conn not in running:
                    continue
                if not proc.is_alive():
                    proc.join()
                    what = exit_text(proc.exitcode)
                elif overdue(heard[conn], limit):
                    what = silent_text(limit)  # an episode each at the least
                else:
                    continue
                raise WorkerError(
                    f"collect worker {proc.name} (pid {proc.pid}) {what}; the episodes finished "
                    f"are kept in {work}: rerun the same command to go on"
                )
    finally:
        for proc, conn in procs:
            if proc.is_alive() and proc.exitcode is None:
                terminate(proc)  # stopped early (an error, Ctrl-C): its unfinished episode is dropped
            stop(proc)
            conn.close()
