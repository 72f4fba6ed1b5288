"""The online loop with `num_envs=N > 1` training envs, each in its own worker process.

Episodes run in lockstep rounds: all N envs are reset together (env i of a round gets the reset seed
of episode index `episode + i`, so episodes are numbered over all envs), each vector step sends every
running env the current policy's action for its observation and the learner updates while they step.
An env whose episode ends waits for the others (dm_control episodes all have the same length, so
none waits there); then each env's episode is written to the replay whole, in env order
(runners/online/episode_staging.py), and the round's joint is where evaluation and checkpoints happen, as at
an episode end with one env. A checkpoint therefore holds no unfinished episode and pins the run's
whole future: a resumed run continues exactly as one that never stopped.

Counting: `step` and `frame` count env steps and frames over all envs, so `frames`, `seed_frames`,
`update_every_steps` and the exploration schedule (by step) mean per env frame what they mean with one
env: a vector step of N env steps does N / update_every_steps updates. An update needs one episode
in the replay (running episodes become sampleable when they end).

A worker that dies (a segfault in the renderer, a kill) raises WorkerError naming it; the run ends
(`taco train` exits 1) and the last checkpoint is whole, so a rerun resumes from it. However the loop
ends, `Trainer.close` stops every worker.
"""

from __future__ import annotations

import time
from pathlib import Path

from taco_rl.runners.core.run import env_kwargs, progress_bar
from taco_rl.runners.core.workers import WorkerError, start_workers
from taco_rl.runners.online.episode_staging import EpisodeStaging


def vector_loop(tr) -> Path:
    try:
        return _loop(tr)
    except WorkerError as e:  # mid-round: the state there holds unfinished episodes, the last checkpoint is whole
        point = tr.resume_point
        again = f"from {tr.clock} {point} (the last checkpoint)" if point is not None else "from the start"
        raise WorkerError(
            f"training stopped at {tr.where()}: {e}; rerunning the same command resumes {again}"
        ) from None


def _loop(tr) -> Path:
    cfg, c, n = tr.cfg, tr.counters, tr.cfg.num_envs
    tr.bar = bar = progress_bar(cfg.frames, c["frame"], tr.progress)
    next_log = c["frame"] + cfg.log_every_frames
    t0, f0 = time.time(), c["frame"]
    if not getattr(tr, "train_workers", None):
        if getattr(tr, "env", None) is not None:  # the in-process env only gave the spaces: free its renderer
            tr.env.close()
            tr.env = None
        tr.train_workers = []  # close() stops whatever was started, however the start ends
        tr.train_workers = start_workers(n, cfg.task, cfg.seed, env_kwargs(cfg), "train-env")
    workers = tr.train_workers
    staging = EpisodeStaging(tr.replay, n)
    obs: list = [None] * n
    returns = [0.0] * n
    running = [False] * n
    while c["frame"] < cfg.frames:
        if not any(running):  # a round's joint: evaluate, checkpoint, reset every env
            tr.at_boundary()
            for i, w in enumerate(workers):
                w.send("reset", tr.reset_seed(c["episode"] + i))
            for i, w in enumerate(workers):
                obs[i], _ = w.recv()[0]
                staging.begin(i, obs[i][-3:])
            c["episode"] += n
            returns, running = [0.0] * n, [True] * n

        active = [i for i in range(n) if running[i]]
        actions = {}
        for k, i in enumerate(active):  # in env order: the exploration noise draws are the run's own
            actions[i] = tr.agent.act(obs[i], c["step"] + k, eval_mode=False)
            workers[i].send("step", actions[i])
        for k in range(len(active)):  # the updates these env steps are due, while the envs step
            step = c["step"] + k
            if c["frame"] >= cfg.seed_frames and step % cfg.update_every_steps == 0 and tr.replay.num_sampleable:
                batch = tr.replay.sample(cfg.batch_size).to(tr.device, non_blocking=True)
                tr.record(tr.agent.update(batch, step), step)
        for i in active:
            (obs[i], reward, terminated, truncated, info), _ = workers[i].recv()
            staging.add(i, obs[i][-3:], actions[i], float(reward), float(info["discount"]))
            frames = int(info.get("frames", cfg.action_repeat))
            c["step"], c["frame"] = c["step"] + 1, c["frame"] + frames
            returns[i] += float(reward)
            bar.update(frames)
            if terminated or truncated:
                running[i] = False
                tr.logger.scalars(c["frame"], {"train/episode_return": returns[i]})
                bar.set_postfix(ret=f"{returns[i]:.1f}", refresh=False)
        if not any(running):
            staging.flush_all()  # each env's episode whole, in env order
        if c["frame"] >= next_log:
            fps = (c["frame"] - f0) / max(time.time() - t0, 1e-9)
            tr.logger.log("train", c["frame"], c["step"], {**tr.drain_metrics(), "episode": c["episode"], "fps": fps})
            next_log += cfg.log_every_frames
    staging.flush_all()  # a run that ends mid-round keeps what its envs stepped, as with one env
    return tr.finish(f0)
