"""`taco data collect`: roll out a run's checkpoint (or random actions) into a dataset, resumably.

Finished episodes are kept as files in a hidden folder beside ``out`` until the dataset is written;
``workers=N`` plays them in worker processes (collect_workers.py), in-process otherwise (rollout.py).
"""

from __future__ import annotations

import contextlib
import functools
import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from taco_rl.runners.core.config import ENV_KEYS, ConfigError
from taco_rl.runners.data.datasets import DatasetError, DatasetWriter
from taco_rl.runners.data.from_run import load_run_config, run_state
from taco_rl.runners.data.rollout import rollout_to_file


def _holding_collect_lock(collect_fn: Callable[..., dict[str, Any]]) -> Callable[..., dict[str, Any]]:
    """Run ``collect_fn`` holding the lock of its ``out=``'s collection folder, as a run holds its run
    directory's: a second collect into the same ``out=`` stops at once, naming the holder."""

    @functools.wraps(collect_fn)
    def locked(*args: Any, **kw: Any) -> dict[str, Any]:
        out = kw.get("out", args[2] if len(args) > 2 else None)
        if not out:
            return collect_fn(*args, **kw)
        with _collect_lock(Path(str(out)).expanduser().resolve()):
            return collect_fn(*args, **kw)

    return locked


@contextlib.contextmanager
def _collect_lock(out: Path):
    from taco_rl.runners.core.rundir import LOCK_FILE, RunDirError, RunLock

    work = out.parent / f".{out.name}.collecting"
    fresh = not work.exists()
    try:
        work.mkdir(parents=True, exist_ok=True)
        lock = RunLock(work)
    except RunDirError as e:
        raise DatasetError(
            f"{out} is being collected by another process ({e.holder}); wait for it to finish "
            "or stop it, or choose another out="
        ) from None
    except OSError as e:
        raise DatasetError(f"{work}: cannot create or lock the collection folder ({e.strerror})") from None
    try:
        yield
    finally:
        if fresh and work.is_dir() and [p.name for p in work.iterdir()] == [LOCK_FILE]:
            shutil.rmtree(work, ignore_errors=True)  # refused before collecting anything: leave nothing
        lock.release()


@_holding_collect_lock
def collect(
    policy: str,
    episodes: int,
    out: str,
    *,
    noise: float = 0.0,
    seed: int = 0,
    task: str | None = None,
    device: str = "cpu",
    env: dict[str, Any] | None = None,
    overwrite: bool = False,
    progress: bool = False,
    workers: int = 1,
) -> dict[str, Any]:
    """Roll out ``policy`` (a run directory: its checkpoint, mean action plus Gaussian ``noise``; or
    ``random``: uniform actions) for ``episodes`` episodes into a dataset at ``out``.

    Episode ``i`` resets with seed ``seed * 1_000_003 + i`` and draws its noise from
    ``numpy.random.default_rng([seed, i])``, so the same command makes the same dataset. Finished
    episodes are kept in a hidden folder beside ``out`` until the dataset is written: an interrupted
    collect resumes where it stopped when rerun with the same arguments (``episodes`` may grow).
    ``workers`` > 1 rolls episodes out in that many processes (runners/data/collect_workers.py; the
    policy on the CPU there): the same episodes, the same dataset checksum.
    """
    from taco_rl.envs import make_env
    from taco_rl.envs.registry import env_shapes
    from taco_rl.runners.core.config import resolve
    from taco_rl.runners.core.run import build_agent, resolve_device
    from taco_rl.runners.data.datasets import check_destination

    if episodes < 1:
        raise ConfigError(f"episodes={episodes}: expected a positive integer")
    if noise < 0:
        raise ConfigError(f"noise={noise}: expected a standard deviation >= 0")
    if workers < 1:
        raise ConfigError(f"workers={workers}: expected a positive integer (1: in this process)")
    env = dict(env or {})
    out_path = check_destination(out, overwrite)
    agent, source = None, {"kind": "collect", "policy": policy, "noise": noise, "seed": seed}
    if policy == "random":
        if not task:
            raise ConfigError("policy=random needs task=NAME")
        cfg = resolve([f"task={task}", *(f"{k}={v}" for k, v in env.items())])
    else:
        run = Path(policy).expanduser().resolve()
        if not run.is_dir():
            raise DatasetError(f"policy={policy}: no such run directory (or pass policy=random)")
        if env:
            raise ConfigError(f"{sorted(env)}: a run's config fixes the env settings; only policy=random takes them")
        cfg = load_run_config(run)
        if task and task != cfg.task:
            raise ConfigError(f"task={task} but the run {run} was trained on {cfg.task}")
        state = run_state(run)
        source.update(
            policy=str(run), checkpoint_frame=state.get("counters", {}).get("frame"), agent=cfg.agent, aux=cfg.aux
        )
    source.update(task=cfg.task, **{k: getattr(cfg, k) for k in ENV_KEYS})
    work = _work_folder(out_path, source)
    e = make_env(
        cfg.task,
        seed,
        action_repeat=cfg.action_repeat,
        frame_stack=cfg.frame_stack,
        image_size=cfg.image_size,
        fast_render=cfg.fast_render,
    )
    obs_shape, action_dim = env_shapes(e)
    if policy != "random":
        agent = build_agent(cfg, obs_shape, action_dim, resolve_device(device))
        agent.load_state_dict(state["agent"])
        agent.train(False)
    from taco_rl.runners.data.formats.common import _bar

    files = [work / f"episode_{i:06d}.npz" for i in range(episodes)]
    have = sum(f.is_file() for f in files)
    if have:
        print(f"resuming: {have} of {episodes} episodes already collected in {work}", flush=True)
    bar = _bar(episodes, progress)
    bar.update(have)
    jobs = [(i, file) for i, file in enumerate(files) if not file.is_file()]
    if workers > 1 and len(jobs) > 1:  # the same episodes, each in one of the worker processes
        from taco_rl.runners.data.collect_workers import collect_parallel

        e.close()
        collect_parallel(
            workers,
            cfg,
            state["agent"] if agent is not None else None,
            noise,
            seed,
            jobs,
            lambda i: bar.update(1),
            work,
        )
    for i, file in jobs:
        if not file.is_file():
            rollout_to_file(e, agent, noise, seed, i, action_dim, file)
            bar.update(1)
    bar.close()
    info = _write_episode_files(
        files, out_path, action_dim, task=cfg.task, source={**source, "episodes": episodes}, overwrite=overwrite
    )
    shutil.rmtree(work, ignore_errors=True)
    return info


def _work_folder(out: Path, spec: dict[str, Any]) -> Path:
    """The hidden folder of a collect into ``out``; one left by different arguments is refused."""
    work = out.parent / f".{out.name}.collecting"
    spec_file = work / "collect.json"
    if spec_file.is_file():
        try:
            old = json.loads(spec_file.read_text())
        except ValueError:
            old = None
        if old != json.loads(json.dumps(spec)):
            raise DatasetError(
                f"{work} holds an interrupted collect with other arguments ({old}); rerun that "
                "command to finish it, or delete the folder"
            )
    else:
        work.mkdir(parents=True, exist_ok=True)
        spec_file.write_text(json.dumps(spec))
    return work


def _write_episode_files(files: list[Path], out: Path, action_dim: int, **kw: Any) -> dict[str, Any]:
    """Stream collect's episode files (in order) into the dataset ``out``."""
    from taco_rl.runners.data.formats.common import NpzFile

    shapes = []
    for file in files:
        with NpzFile(file) as f:
            shapes.append(f.header("frames")[0])
    overwrite = kw.pop("overwrite")
    with DatasetWriter(out, sum(s[0] for s in shapes), shapes[0][1:], action_dim, overwrite=overwrite) as writer:
        for file in files:
            with NpzFile(file) as f:
                writer.add_episode(f["frames"], f["actions"], f["rewards"], f["discounts"])
        return writer.finish(**kw)
