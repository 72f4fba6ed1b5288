"""`taco data ...`: make, import, combine, inspect and export offline datasets.

Every subcommand takes ``key=value`` arguments (like ``taco train``) after its positional ones;
``out=`` names the destination dataset folder, which must not exist yet (``overwrite=true`` replaces
it). Datasets are written atomically (see :mod:`taco_rl.runners.datasets`).
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import difflib
import functools
import json
import shutil
from pathlib import Path
from typing import Any, Callable

import numpy as np

from .config import Config, ConfigError
from .datasets import (DatasetError, DatasetWriter, dataset_info, is_verified, load_dataset, verify_checksum,
                       write_dataset)

EPILOG = """examples:
  taco data collect policy=runs/walker_walk/drqv2-none/seed1-ab12cd34 episodes=200 noise=0.2 out=data/ww_noisy
  taco data collect task=point_reach policy=random episodes=50 out=data/pr_random
  taco data from-run runs/walker_walk/drqv2-none/seed1-ab12cd34 out=data/ww_medium_replay
  taco data concat data/ww_medium data/ww_expert out=data/ww_medium_expert
  taco data info data/ww_medium_expert verify=true
  taco data import vd4rl vd4rl/main/walker_walk/medium/84px task=walker_walk out=data/ww_medium
  taco data import drqv2 exp/buffer task=cheetah_run out=data/cr_replay
  taco data import minari mujoco/pusher/expert-v0 task=point_reach out=data/x     # local IDs or paths only
  taco data export minari data/ww_medium taco/walker_walk/medium-v0            # root=DIR: Minari root
"""

DESCRIPTION = """Make, import, combine, inspect and export offline datasets (the native format: a saved
frame-once replay plus dataset.json). Every subcommand takes key=value arguments after its
positional ones; out= names the destination folder, which must not exist yet (overwrite=true
replaces it). A dataset appears only once completely written. Writing streams episode by
episode into files of the final size: memory holds about one episode, the disk the whole dataset.
Reading checks every array file's size; `info verify=true` (and the first load for training) hashes
the arrays against the recorded checksum."""
_BOOL = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}
# env settings that collect with policy=random takes (a run's checkpoint fixes them)
_ENV_KEYS = ("action_repeat", "image_size", "frame_stack", "fast_render")


def add_parser(sub: Any) -> None:
    """Register ``taco data`` and its subcommands on the top-level subparsers."""
    fmt = argparse.RawDescriptionHelpFormatter
    d = sub.add_parser("data", help="offline datasets: collect, from-run, concat, info, import, export",
                       description=DESCRIPTION, epilog=EPILOG, formatter_class=fmt)
    ds = d.add_subparsers(dest="data_command", required=True)
    specs = [
        ("collect", "roll out a run's checkpoint (or random actions) into a dataset",
         "policy=RUN_DIR|random episodes=N out=DIR [noise=0.2] [seed=0] [task=...] [device=cpu] [workers=1] "
         "[action_repeat= image_size= frame_stack= fast_render= (policy=random only)]"),
        ("from-run", "turn a run's replay (its last checkpoint) into a dataset", "RUN_DIR out=DIR"),
        ("concat", "join datasets of the same task and shapes (e.g. medium + expert)", "A B [C ...] out=DIR"),
        ("info", "print task, image size, action dim, counts, returns and checksum",
         "DIR [verify=true] [json=true]"),
        ("import", "import vd4rl (84px hdf5 / 64px npz), drqv2 (replay npz) or minari (path or local ID)",
         "FORMAT PATH out=DIR [task=...] [obs_key=... (minari)]"),
        ("export", "export a dataset as a Minari dataset (raw frames, lossless)",
         "minari DIR ID [root=MINARI_ROOT]"),
    ]
    for name, help_, usage in specs:
        p = ds.add_parser(name, help=help_, description=f"{help_}.\n\n  taco data {name} {usage}",
                          epilog=EPILOG, formatter_class=fmt)
        p.add_argument("args", nargs="*", metavar="ARG|key=value")
        p.add_argument("--no-progress", action="store_true", help="no progress bar")


def _split(items: list[str], keys: dict[str, Callable[[str], Any]], npos: tuple[int, int | None],
           usage: str) -> tuple[list[str], dict[str, Any]]:
    """Positional arguments and typed ``key=value`` options; unknown keys name the closest ones."""
    pos, kv = [], {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or "/" in key or not key:
            pos.append(item)
            continue
        if key not in keys:
            close = difflib.get_close_matches(key, list(keys), n=3, cutoff=0.5)
            hint = f"; did you mean {', '.join(close)}?" if close else f"; expected {', '.join(keys) or 'none'}"
            raise ConfigError(f"unknown key {key!r}{hint} (usage: {usage})")
        try:
            kv[key] = keys[key](value)
        except (ValueError, KeyError):
            raise ConfigError(f"bad value {key}={value!r} (usage: {usage})") from None
    lo, hi = npos
    if len(pos) < lo or (hi is not None and len(pos) > hi):
        raise ConfigError(f"expected {lo if lo == hi else f'at least {lo}'} positional argument(s), got "
                          f"{len(pos)}: {pos} (usage: {usage})")
    return pos, kv


def _bool(v: str) -> bool:
    return _BOOL[v.lower()]


def _require_out(kv: dict[str, Any], usage: str) -> str:
    if not kv.get("out"):
        raise ConfigError(f"missing out=DIR, the dataset folder to write (usage: {usage})")
    return kv["out"]


# ------------------------------------------------------------------------------------------------ runs
def load_run_config(run_dir: Path) -> Config:
    """The resolved config a run saved in ``config.yaml``."""
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    from .config import validate

    file = run_dir / "config.yaml"
    if not file.is_file():
        raise DatasetError(f"{file}: missing; {run_dir} is not a run directory")
    try:
        merged = OmegaConf.merge(OmegaConf.structured(Config), OmegaConf.load(file))
        cfg = Config(**OmegaConf.to_container(merged))  # type: ignore[arg-type]
    except (OmegaConfBaseException, OSError, ValueError, TypeError) as e:
        raise DatasetError(f"{file}: unreadable run config ({str(e).splitlines()[0]})") from None
    validate(cfg)
    return cfg


def _run_state(run_dir: Path) -> dict[str, Any]:
    from . import checkpoint as ckpt

    state_path = run_dir / "checkpoint" / "state.pt"
    if not state_path.is_file():
        raise DatasetError(f"{state_path}: missing; the run has no checkpoint yet")
    return ckpt.load(state_path)


def from_run(run_dir: str | Path, out: str, *, overwrite: bool = False) -> dict[str, Any]:
    """A dataset of the replay a run's last checkpoint holds (a "medium-replay" dataset). The run
    directory is locked meanwhile, as a training run locks it: not while that run is going."""
    run = Path(run_dir).expanduser().resolve()
    cfg = load_run_config(run)
    with _run_lock(run):  # a run writing its next checkpoint could rewrite the replay being read
        return _from_run(run, cfg, out, overwrite)


def _run_lock(run: Path):
    from .rundir import RunDirError, RunLock

    try:
        return RunLock(run)
    except RunDirError as e:
        raise DatasetError(f"{run} is in use by a running process ({e.holder}); its checkpoint can change "
                           "while it is read: rerun once that run has stopped") from None
    except OSError as e:
        raise DatasetError(f"{run}: cannot lock the run directory ({e.strerror})") from None


def _from_run(run: Path, cfg: Config, out: str, overwrite: bool) -> dict[str, Any]:
    from .replay import Replay, ReplayFormatError

    state = _run_state(run)
    name = state.get("replay_dir")
    if name not in ("replay_a", "replay_b"):
        raise DatasetError(f"{run / 'checkpoint' / 'state.pt'}: names replay folder {name!r}, expected replay_a or replay_b")
    try:
        replay = Replay.load(run / "checkpoint" / name, "cpu")
    except ReplayFormatError as e:
        raise DatasetError(str(e)) from None
    if replay.total_added != state.get("replay_total"):
        raise DatasetError(f"{run / 'checkpoint' / name}: holds {replay.total_added} slots, state.pt expects "
                           f"{state.get('replay_total')}")
    counters = state.get("counters", {})
    source = {"kind": "from-run", "run": str(run), "frame": counters.get("frame"), "agent": cfg.agent,
              "aux": cfg.aux, "seed": cfg.seed, "image_size": cfg.image_size, "action_repeat": cfg.action_repeat}
    return write_dataset(replay, out, task=cfg.task, source=source, overwrite=overwrite,
                         files=run / "checkpoint" / name)


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
    from .rundir import LOCK_FILE, RunDirError, RunLock

    work = out.parent / f".{out.name}.collecting"
    fresh = not work.exists()
    try:
        work.mkdir(parents=True, exist_ok=True)
        lock = RunLock(work)
    except RunDirError as e:
        raise DatasetError(f"{out} is being collected by another process ({e.holder}); wait for it to finish "
                           "or stop it, or choose another out=") from None
    except OSError as e:
        raise DatasetError(f"{work}: cannot create or lock the collection folder ({e.strerror})") from None
    try:
        yield
    finally:
        if fresh and work.is_dir() and [p.name for p in work.iterdir()] == [LOCK_FILE]:
            shutil.rmtree(work, ignore_errors=True)  # refused before collecting anything: leave nothing
        lock.release()


@_holding_collect_lock
def collect(policy: str, episodes: int, out: str, *, noise: float = 0.0, seed: int = 0, task: str | None = None,
            device: str = "cpu", env: dict[str, Any] | None = None, overwrite: bool = False,
            progress: bool = False, workers: int = 1) -> dict[str, Any]:
    """Roll out ``policy`` (a run directory: its checkpoint, mean action plus Gaussian ``noise``; or
    ``random``: uniform actions) for ``episodes`` episodes into a dataset at ``out``.

    Episode ``i`` resets with seed ``seed * 1_000_003 + i`` and draws its noise from
    ``numpy.random.default_rng([seed, i])``, so the same command makes the same dataset. Finished
    episodes are kept in a hidden folder beside ``out`` until the dataset is written: an interrupted
    collect resumes where it stopped when rerun with the same arguments (``episodes`` may grow).
    ``workers`` > 1 rolls episodes out in that many processes (runners/collect_workers.py; the
    policy on the CPU there): the same episodes, the same dataset checksum.
    """
    from taco_rl.envs import make_env

    from .config import resolve
    from .datasets import check_destination
    from .run import build_agent, resolve_device

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
        state = _run_state(run)
        source.update(policy=str(run), checkpoint_frame=state.get("counters", {}).get("frame"), agent=cfg.agent,
                      aux=cfg.aux)
    source.update(task=cfg.task, **{k: getattr(cfg, k) for k in _ENV_KEYS})
    work = _work_folder(out_path, source)
    e = make_env(cfg.task, seed, action_repeat=cfg.action_repeat, frame_stack=cfg.frame_stack,
                 image_size=cfg.image_size, fast_render=cfg.fast_render)
    action_dim = e.action_space.shape[0]
    if policy != "random":
        agent = build_agent(cfg, e.observation_space.shape, action_dim, resolve_device(device))
        agent.load_state_dict(state["agent"])
        agent.train(False)
    from .formats.common import _bar

    files = [work / f"episode_{i:06d}.npz" for i in range(episodes)]
    have = sum(f.is_file() for f in files)
    if have:
        print(f"resuming: {have} of {episodes} episodes already collected in {work}", flush=True)
    bar = _bar(episodes, progress)
    bar.update(have)
    jobs = [(i, file) for i, file in enumerate(files) if not file.is_file()]
    if workers > 1 and len(jobs) > 1:  # the same episodes, each in one of the worker processes
        from .collect_workers import collect_parallel

        e.close()
        collect_parallel(workers, cfg, state["agent"] if agent is not None else None, noise, seed, jobs,
                         lambda i: bar.update(1), work)
    for i, file in jobs:
        if not file.is_file():
            rollout_to_file(e, agent, noise, seed, i, action_dim, file)
            bar.update(1)
    bar.close()
    info = _write_episode_files(files, out_path, action_dim, task=cfg.task,
                                source={**source, "episodes": episodes}, overwrite=overwrite)
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
            raise DatasetError(f"{work} holds an interrupted collect with other arguments ({old}); rerun that "
                               "command to finish it, or delete the folder")
    else:
        work.mkdir(parents=True, exist_ok=True)
        spec_file.write_text(json.dumps(spec))
    return work


def rollout_to_file(env: Any, agent: Any, noise: float, seed: int, i: int, action_dim: int, file: Path) -> None:
    """Episode `i` of a collect with `seed`, written atomically to `file`."""
    ep = _rollout(env, agent, noise, np.random.default_rng([seed, i]), seed * 1_000_003 + i, action_dim)
    tmp = file.with_name(f".{file.name}.tmp.npz")
    np.savez(tmp, frames=ep[0], actions=ep[1], rewards=ep[2], discounts=ep[3])
    tmp.replace(file)


def _rollout(env: Any, agent: Any, noise: float, rng: np.random.Generator, reset_seed: int,
             action_dim: int) -> tuple[np.ndarray, ...]:
    """One episode: frames (T+1, 3, H, W), actions (T, A), rewards (T,), discounts (T,)."""
    obs, _ = env.reset(seed=reset_seed)
    frames, acts, rews, discs = [obs[-3:]], [], [], []
    done = False
    while not done:
        if agent is None:
            a = rng.uniform(-1.0, 1.0, action_dim).astype(np.float32)
        else:
            a = agent.act(obs, 0, eval_mode=True).astype(np.float32)
            if noise > 0:
                a = np.clip(a + rng.normal(0.0, noise, action_dim), -1.0, 1.0).astype(np.float32)
        obs, r, terminated, truncated, info = env.step(a)
        frames.append(obs[-3:])
        acts.append(a)
        rews.append(float(r))
        discs.append(float(info.get("discount", 0.0 if terminated else 1.0)))
        done = terminated or truncated
    return np.stack(frames), np.stack(acts), np.asarray(rews, np.float32), np.asarray(discs, np.float32)


def _write_episode_files(files: list[Path], out: Path, action_dim: int, **kw: Any) -> dict[str, Any]:
    """Stream collect's episode files (in order) into the dataset ``out``."""
    from .formats.common import NpzFile

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


# ------------------------------------------------------------------------------------------------ concat / info
def concat(inputs: list[str], out: str, *, overwrite: bool = False, progress: bool = False) -> dict[str, Any]:
    """One dataset holding every episode of ``inputs`` in order; refuses mismatched tasks or shapes."""
    from .datasets import iter_episodes

    if len(inputs) < 2:
        raise ConfigError(f"concat needs at least two datasets, got {len(inputs)}")
    infos = [dataset_info(p) for p in inputs]
    ref = infos[0]
    for info in infos[1:]:
        for key in ("task", "frame_shape", "action_dim"):
            if info[key] != ref[key]:
                raise DatasetError(f"cannot concatenate: {info['path']} has {key}={info[key]}, "
                                   f"{ref['path']} has {key}={ref[key]}")
    from .formats.common import _bar

    source = {"kind": "concat", "inputs": [{"path": i["path"], "checksum": i["checksum"], "source": i["source"]}
                                           for i in infos]}
    slots = sum(i["slots"] for i in infos)
    with DatasetWriter(out, slots, ref["frame_shape"], ref["action_dim"], overwrite=overwrite) as writer:
        bar = _bar(sum(i["episodes"] for i in infos), progress)
        for path in inputs:
            rb, info = load_dataset(path, frame_stack=1, nstep=1)
            for ep in iter_episodes(rb, info["path"]):
                writer.add_episode(*ep)
                bar.update(1)
        bar.close()
        return writer.finish(task=ref["task"], source=source)


def format_info(info: dict[str, Any], verified: bool = False) -> str:
    c, h, w = info["frame_shape"]
    r, length = info["return"], info.get("episode_length", {})
    lines = [
        ("dataset", info["path"]),
        ("task", info["task"]),
        ("images", f"{h}x{w}, {c} channels (uint8, one frame per step)"),
        ("action dim", info["action_dim"]),
        ("episodes", info["episodes"]),
        ("transitions", f"{info['transitions']} (episode length {length.get('min', '?')}..{length.get('max', '?')})"),
        ("return", f"min {r['min']:.2f}  mean {r['mean']:.2f}  max {r['max']:.2f}"),
        ("checksum", info["checksum"] + ("  (verified)" if verified else
                                         "  (not verified yet: verify=true, or the first load, hashes the files)")),
        ("source", json.dumps(info["source"])),
    ]
    return "\n".join(f"{k:<12} {v}" for k, v in lines)


# ------------------------------------------------------------------------------------------------ dispatch
def run(args: argparse.Namespace) -> int:
    cmd, items, progress = args.data_command, args.args, not args.no_progress
    out_keys: dict[str, Callable[[str], Any]] = {"out": str, "overwrite": _bool}
    if cmd == "collect":
        usage = "taco data collect policy=RUN_DIR|random episodes=N out=DIR"
        keys: dict[str, Callable[[str], Any]] = {
            **out_keys, "policy": str, "episodes": int, "noise": float, "seed": int, "task": str, "device": str,
            "workers": int}
        types = {f.name: f.type for f in dataclasses.fields(Config)}
        keys.update({k: (_bool if types[k] in (bool, "bool") else int) for k in _ENV_KEYS})
        _, kv = _split(items, keys, (0, 0), usage)
        if "policy" not in kv or "episodes" not in kv:
            raise ConfigError(f"collect needs policy= and episodes= (usage: {usage})")
        env = {k: kv[k] for k in _ENV_KEYS if k in kv}
        info = collect(kv["policy"], kv["episodes"], _require_out(kv, usage), noise=kv.get("noise", 0.0),
                       seed=kv.get("seed", 0), task=kv.get("task"), device=kv.get("device", "cpu"), env=env,
                       overwrite=kv.get("overwrite", False), progress=progress, workers=kv.get("workers", 1))
    elif cmd == "from-run":
        usage = "taco data from-run RUN_DIR out=DIR"
        pos, kv = _split(items, out_keys, (1, 1), usage)
        info = from_run(pos[0], _require_out(kv, usage), overwrite=kv.get("overwrite", False))
    elif cmd == "concat":
        usage = "taco data concat A B [C ...] out=DIR"
        pos, kv = _split(items, out_keys, (2, None), usage)
        info = concat(pos, _require_out(kv, usage), overwrite=kv.get("overwrite", False), progress=progress)
    elif cmd == "info":
        usage = "taco data info DIR [verify=true] [json=true]"
        pos, kv = _split(items, {"verify": _bool, "json": _bool}, (1, 1), usage)
        info = dataset_info(pos[0])  # checks the array file sizes
        if kv.get("verify"):
            verify_checksum(pos[0])
        verified = is_verified(info)
        print(json.dumps({**info, "verified": verified}, indent=1) if kv.get("json") else format_info(info, verified))
        return 0
    elif cmd == "import":
        usage = "taco data import vd4rl|drqv2|minari PATH out=DIR [task=NAME] [obs_key=KEY]"
        pos, kv = _split(items, {**out_keys, "task": str, "obs_key": str}, (2, 2), usage)
        info = import_dataset(pos[0], pos[1], _require_out(kv, usage), task=kv.get("task"),
                              obs_key=kv.get("obs_key"), overwrite=kv.get("overwrite", False), progress=progress)
    else:  # export
        usage = "taco data export minari DIR ID [root=MINARI_ROOT]"
        pos, kv = _split(items, {"root": str}, (3, 3), usage)
        if pos[0] != "minari":
            raise ConfigError(f"export format {pos[0]!r}: expected minari (usage: {usage})")
        from .formats import minari as fmt_minari

        target = fmt_minari.export(pos[1], pos[2], root=kv.get("root"), progress=progress)
        print(f"wrote Minari dataset {pos[2]} at {target}")
        return 0
    out_info = dataset_info(kv["out"])
    print(format_info(out_info, is_verified(out_info)))
    return 0


def _guess_task(path: str) -> str | None:
    from taco_rl.envs import TASKS

    parts = Path(path).expanduser().resolve().parts
    found = [p for p in parts if p in TASKS]
    return found[-1] if found else None


def import_dataset(fmt: str, path: str, out: str, *, task: str | None = None, obs_key: str | None = None,
                   overwrite: bool = False, progress: bool = False) -> dict[str, Any]:
    """Import ``path`` in format ``fmt`` (vd4rl, drqv2, minari) as a native dataset at ``out``."""
    from .datasets import DatasetError
    from .formats import drqv2, minari, vd4rl
    from .formats.common import build

    readers = {"vd4rl": vd4rl.scan, "drqv2": drqv2.scan, "minari": lambda p: minari.scan(p, obs_key)}
    if fmt not in readers:
        raise ConfigError(f"import format {fmt!r}: expected one of {', '.join(readers)}")
    if obs_key and fmt != "minari":
        raise ConfigError("obs_key= applies to minari imports only")
    if fmt == "minari":
        minari.locate(path)  # a folder or a local dataset ID; says so when it is neither
    elif not Path(path).expanduser().exists():
        raise DatasetError(f"{path}: no such file or folder")
    task = task or _guess_task(path)
    if not task:
        raise ConfigError(f"cannot tell the task from {path}; pass task=NAME (e.g. task=walker_walk)")
    plan = readers[fmt](path)
    return build(plan, out, task=task, overwrite=overwrite, progress=progress)
