"""Sweeps: one YAML file expands into runs (tasks x seeds x grid x variants) and executes them.

A run is an ordinary `taco train` (or `taco offline`) command; its run directory is derived from its
resolved config, so executing a sweep again skips finished runs and resumes unfinished ones from their
checkpoints. Runs execute as subprocesses of the `taco` CLI on this machine (`--workers N` at a time),
each writing its output to <run dir>/sweep.log while the console shows where that log is and each
run's evaluations as they happen, or as Ray tasks on an existing cluster (`--backend ray --address
auto|HOST:PORT`), whose output Ray shows on the console. Ray schedules and retries them: a run whose
worker dies is started again and resumes from its last checkpoint.

File format (every key but `tasks` and `seeds` optional):

    description: TACO horizon K          # free text, shown by --dry-run
    command: train                       # train | offline: the taco command each run is
    tasks: [cheetah_run, walker_run]
    seeds: [1, 2, 3]
    overrides: {aux: taco, root: runs/k} # config keys set for every run
    grid: {taco_k: [1, 3, 5]}            # the cartesian product of these lists
    variants:                            # named settings, each a run family of its own
      taco: {aux: taco}
      drqv2: {aux: none}
    resources: {cpus: 1, gpus: 0.25}     # per run (Ray: fractional GPUs share a card)
    retries: 3                           # Ray: restarts of a run whose worker died
    compare: [taco, drqv2]               # the pair `taco report` tests for improvement

Values may contain `{task}` (replaced by the run's task, e.g. a per-task dataset folder), here and
on the command line.
Precedence, later wins: overrides, variant, grid, then `key=value` given on the command line.
"""

from __future__ import annotations

import dataclasses
import difflib
import itertools
import os
import queue
import shlex
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

PROJECT_ROOT = Path(__file__).resolve().parent.parent
SWEEP_KEYS = (
    "description",
    "command",
    "tasks",
    "seeds",
    "overrides",
    "grid",
    "variants",
    "resources",
    "retries",
    "compare",
)
RESOURCE_KEYS = ("cpus", "gpus")


class SweepError(ValueError):
    """A bad sweep file or sweep option; raised before any run starts."""


# ---------------------------------------------------------------------------- commands
@dataclass(frozen=True)
class Command:
    """What the sweep needs to know about a `taco` subcommand."""

    name: str
    resolve: Callable[[list[str]], Any]  # overrides -> config (raises ConfigError on bad input)
    run_dir: Callable[[Any], Path]  # config -> its run directory
    budget: Callable[[Any], int]  # config -> the counter value at which the run is done
    counter: str  # the checkpoint/state.pt counter compared with the budget
    run: Callable[[Any], Path]  # config -> run it in this process


def _train(cfg: Any) -> Path:
    from taco_rl.runners.online.train import train

    return train(cfg, progress=False)


def _offline(cfg: Any) -> Path:
    from taco_rl.runners.offline.train import train_offline

    return train_offline(cfg, progress=False)


def commands() -> dict[str, Command]:
    """`taco train` (budget: frames) and `taco offline` (budget: learner updates)."""
    from taco_rl.runners.core.config import resolve, run_directory

    return {
        "train": Command("train", resolve, run_directory, lambda c: c.frames, "frame", _train),
        "offline": Command(
            "offline", lambda o: resolve(o, offline=True), run_directory, lambda c: c.updates, "update", _offline
        ),
    }


# ---------------------------------------------------------------------------- expansion
@dataclass
class Run:
    command: str
    task: str
    seed: int
    labels: list[str]  # the variant(s) this run belongs to (identical runs are run once)
    overrides: list[str]
    run_dir: Path
    budget: int
    cfg: Any = field(repr=False, default=None)

    @property
    def label(self) -> str:
        return self.labels[0]

    def argv(self) -> list[str]:
        return ["taco", self.command, *self.overrides]


@dataclass
class Sweep:
    path: Path
    description: str
    command: Command
    runs: list[Run]
    cpus: float = 1.0
    gpus: float = 0.0
    retries: int = 3
    compare: tuple[str, ...] = ()

    @property
    def labels(self) -> list[str]:
        return list(dict.fromkeys(label for run in self.runs for label in run.labels))


def _fmt(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _scalars(where: str, mapping: Any) -> dict[str, Any]:
    if mapping is None:
        return {}
    if not isinstance(mapping, dict):
        raise SweepError(f"{where}: expected a mapping of config keys to values, got {type(mapping).__name__}")
    for key, value in mapping.items():
        if not isinstance(key, str):
            raise SweepError(f"{where}: key {key!r} is not a config key name")
        if key in ("task", "seed"):
            raise SweepError(f"{where}: set {key} through the top-level `{key}s:` list")
        if key == "run_dir":
            raise SweepError(f"{where}: run_dir would put every run in one folder; set root= instead")
        if value is None or isinstance(value, (list, dict)):
            raise SweepError(f"{where}: {key} must be a single value (a number, string or true/false), got {value!r}")
    return mapping


def _check_keys(where: str, keys: Any, names: list[str]) -> None:
    for key in keys:
        if key not in names:
            close = difflib.get_close_matches(str(key), names, n=3, cutoff=0.5)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise SweepError(f"{where}: unknown config key {key!r}{hint}")


def _config_names(cmd: Command) -> list[str] | None:
    try:
        cfg = cmd.resolve([])
    except Exception:
        return None
    return [f.name for f in dataclasses.fields(cfg)] if dataclasses.is_dataclass(cfg) else None


def load_sweep(path: str | Path, extra: list[str] | tuple[str, ...] = ()) -> Sweep:
    """Parse, validate and expand a sweep file; `extra` are key=value overrides for every run.

    Every run's config is resolved here, so a bad key or value anywhere stops the sweep before it starts.
    """
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as e:
        raise SweepError(f"cannot read sweep file {path}: {e.strerror}") from None
    except yaml.YAMLError as e:
        raise SweepError(f"{path} is not valid YAML: {str(e).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise SweepError(f"{path}: expected a mapping with at least `tasks:` and `seeds:`")
    for key in data:
        if key not in SWEEP_KEYS:
            close = difflib.get_close_matches(str(key), SWEEP_KEYS, n=2, cutoff=0.5)
            hint = f"; did you mean {', '.join(close)}?" if close else f"; expected {', '.join(SWEEP_KEYS)}"
            raise SweepError(f"{path}: unknown sweep key {key!r}{hint} (config keys go under `overrides:`)")

    table = commands()
    name = data.get("command", "train")
    if name not in table:
        raise SweepError(f"{path}: command {name!r} is not available: expected one of {', '.join(table)}")
    cmd = table[name]

    tasks, seeds = data.get("tasks"), data.get("seeds")
    if not isinstance(tasks, list) or not tasks or not all(isinstance(t, str) for t in tasks):
        raise SweepError(f"{path}: `tasks:` must be a non-empty list of task names, got {tasks!r}")
    if not isinstance(seeds, list) or not seeds or not all(type(s) is int for s in seeds):
        raise SweepError(f"{path}: `seeds:` must be a non-empty list of integers, got {seeds!r}")

    base = _scalars(f"{path}: overrides", data.get("overrides"))
    grid = data.get("grid") or {}
    if not isinstance(grid, dict):
        raise SweepError(f"{path}: `grid:` must map config keys to lists of values")
    for key, values in grid.items():
        if not isinstance(values, list) or not values:
            raise SweepError(f"{path}: grid {key} must be a non-empty list of values, got {values!r}")
        for value in values:
            _scalars(f"{path}: grid", {key: value})
    variants = data.get("variants")
    if variants is None:
        variants = {"": {}}
    elif not isinstance(variants, dict) or not variants:
        raise SweepError(f"{path}: `variants:` must be a non-empty mapping of names to config settings")
    variants = {str(k): _scalars(f"{path}: variant {k!r}", v) for k, v in variants.items()}

    extra_map: dict[str, str] = {}
    for item in extra:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise SweepError(f"malformed override {item!r}: expected key=value")
        if key in ("task", "seed", "run_dir"):
            raise SweepError(f"override {item!r}: set tasks and seeds in the sweep file, and root= for run folders")
        extra_map[key] = value

    names = _config_names(cmd)
    if names is not None:
        _check_keys(f"{path}: overrides", base, names)
        _check_keys(f"{path}: grid", grid, names)
        for vname, settings in variants.items():
            _check_keys(f"{path}: variant {vname!r}", settings, names)
        _check_keys("command line", extra_map, names)

    resources = data.get("resources") or {}
    if not isinstance(resources, dict):
        raise SweepError(f"{path}: `resources:` must be a mapping with cpus and/or gpus")
    _check_keys(f"{path}: resources", resources, list(RESOURCE_KEYS))
    for key, value in resources.items():
        if (
            isinstance(value, bool)
            or not isinstance(value, (int, float))
            or value < 0
            or (key == "cpus" and value == 0)
        ):
            raise SweepError(
                f"{path}: resources {key} must be a {'positive' if key == 'cpus' else 'non-negative'} "
                f"number, got {value!r}"
            )
    retries = data.get("retries", 3)
    if type(retries) is not int or retries < 0:
        raise SweepError(f"{path}: `retries:` must be a non-negative integer, got {retries!r}")

    runs: dict[Path, Run] = {}
    grid_keys = list(grid)
    for vname, settings in variants.items():
        for combo in itertools.product(*(grid[k] for k in grid_keys)):
            point = dict(zip(grid_keys, combo, strict=True))
            label = " ".join([vname] * bool(vname) + [f"{k}={_fmt(v)}" for k, v in point.items()]) or "default"
            for task in tasks:
                merged = {k: _fmt(v) for k, v in {**base, **settings, **point, **extra_map}.items()}
                merged = {k: v.replace("{task}", task) for k, v in merged.items()}
                # folders as absolute paths: a run may execute on another machine or in another cwd
                merged["root"] = str(Path(merged.get("root", "runs")).expanduser().resolve())
                if "wandb" in merged.get("logger", "") and not merged.get("wandb_group"):
                    merged["wandb_group"] = path.stem  # W&B groups a sweep's runs under the sweep file's name
                if merged.get("dataset"):
                    merged["dataset"] = str(Path(merged["dataset"]).expanduser().resolve())
                first = None
                for seed in seeds:
                    overrides = [f"task={task}", f"seed={seed}", *(f"{k}={v}" for k, v in merged.items())]
                    if first is not None:  # the seed selects no preset: resolve once per task and setting
                        cfg = dataclasses.replace(first, seed=seed)
                    else:
                        where = f"{path}: {('variant ' + label) if label != 'default' else 'run'} on {task}"
                        try:
                            cfg = first = cmd.resolve(overrides)
                        except ValueError as e:  # ConfigError, an unknown task, ...
                            raise SweepError(f"{where}: {e}") from None
                    run_dir = cmd.run_dir(cfg)
                    if run_dir in runs:
                        if label not in runs[run_dir].labels:
                            runs[run_dir].labels.append(label)
                        continue
                    runs[run_dir] = Run(name, task, seed, [label], overrides, run_dir, int(cmd.budget(cfg)), cfg)

    sweep = Sweep(
        path,
        str(data.get("description", "")),
        cmd,
        list(runs.values()),
        cpus=float(resources.get("cpus", 1)),
        gpus=float(resources.get("gpus", 0)),
        retries=retries,
    )
    compare = data.get("compare") or []
    if compare:
        if not isinstance(compare, list) or len(compare) != 2 or not all(isinstance(c, str) for c in compare):
            raise SweepError(f"{path}: `compare:` must name two variants, e.g. [taco, drqv2]")
        for label in compare:
            if label not in sweep.labels:
                raise SweepError(
                    f"{path}: compare names {label!r}, which is not a variant here "
                    f"(variants: {', '.join(sweep.labels)})"
                )
        sweep.compare = tuple(compare)
    return sweep


# ---------------------------------------------------------------------------- status
def progress(run: Run, cmd: Command) -> int | None:
    """The counter of the run's last checkpoint (None: no checkpoint yet)."""
    import torch

    state_path = run.run_dir / "checkpoint" / "state.pt"
    if not state_path.exists():
        return None
    try:
        state = torch.load(state_path, map_location="cpu", weights_only=True, mmap=True)
        return int(state["counters"][cmd.counter])
    except Exception:
        return -1  # unreadable: the run itself reports it when it starts


def status(run: Run, cmd: Command) -> str:
    done = progress(run, cmd)
    if done is None:
        return "new"
    if done < 0:
        return "unreadable checkpoint"
    if done >= run.budget:
        return "finished"
    return f"resume at {cmd.counter} {done}/{run.budget}"


def describe(sweep: Sweep) -> str:
    lines, counts = [], {"finished": 0, "new": 0, "resume": 0}
    for run in sweep.runs:
        state = status(run, sweep.command)
        counts["finished" if state == "finished" else "new" if state == "new" else "resume"] += 1
        lines.append(f"[{state}] {' | '.join(run.labels)} | {run.run_dir}\n    {shlex.join(run.argv())}")
    head = (
        f"{sweep.path}: {len(sweep.runs)} runs of `taco {sweep.command.name}`"
        f" ({counts['finished']} finished, {counts['resume']} to resume, {counts['new']} new)"
    )
    if sweep.description:
        head += f"\n{sweep.description.strip()}"
    return "\n".join([head, *lines])


# ---------------------------------------------------------------------------- execution
def execute(command: str, overrides: list[str]) -> str:
    """Resolve and run one run in this process (what a Ray task does)."""
    cmd = commands()[command]
    return str(cmd.run(cmd.resolve(list(overrides))))


def _child_env(cpus: float) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(PROJECT_ROOT), *filter(None, [env.get("PYTHONPATH")])])
    env.setdefault("OMP_NUM_THREADS", str(max(1, int(cpus))))
    return env


def visible_gpus() -> list[str]:
    """The GPUs this process may use (CUDA_VISIBLE_DEVICES, else every device torch counts)."""
    listed = os.environ.get("CUDA_VISIBLE_DEVICES")
    if listed is not None:
        return [g for g in listed.split(",") if g.strip()]
    import torch

    return [str(i) for i in range(torch.cuda.device_count())]


def gpu_for_slot(slot: int, gpus_per_run: float, gpus: list[str]) -> str | None:
    """The GPU worker slot `slot` pins its runs to (round robin), or None to leave the choice alone:
    runs that ask for no GPU, or a machine with at most one."""
    if gpus_per_run <= 0 or len(gpus) < 2:
        return None
    return gpus[slot % len(gpus)]


# Started in place of a run's command on Linux: asks the kernel to SIGKILL this process when the
# thread that started it dies (the driver's worker thread, which lives as long as the driver), checks
# that the driver did not die before that, then becomes the run's command (the pid stays the same, and
# the death signal survives exec). A killed driver so never leaves runs training (and holding their
# run directories' locks): rerunning the sweep at once resumes them from their checkpoints.
_DIE_WITH_DRIVER = (
    "import ctypes, os, signal, sys\n"
    "if ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGKILL), 0, 0, 0) != 0:\n"  # PR_SET_PDEATHSIG
    "    sys.exit(f'taco sweep: prctl(PR_SET_PDEATHSIG) failed: {os.strerror(ctypes.get_errno())}')\n"
    "if os.getppid() != int(sys.argv[1]):\n"
    "    sys.exit('taco sweep: the driver died before this run started')\n"
    "os.execv(sys.argv[2], sys.argv[2:])\n"
)


def spawn_child(argv: list[str], **popen: Any) -> subprocess.Popen:
    """``subprocess.Popen(argv)`` that the kernel kills when this process dies, however it dies
    (Linux: a parent-death signal; elsewhere a plain Popen, where only Ctrl-C/SIGTERM stop runs).
    Call it from a thread that lives as long as the child should."""
    if sys.platform.startswith("linux"):
        argv = [sys.executable, "-S", "-c", _DIE_WITH_DRIVER, str(os.getpid()), *argv]
    return subprocess.Popen(argv, **popen)


# Lines of a run's output that the console shows while a local sweep runs: its evaluations, its resume
# point and a one-line error (everything else stays in its sweep.log).
PROGRESS_LINES = ("eval |", "resuming ", "taco: ")


def follow(proc: subprocess.Popen, log: Path, offset: int, show: Callable[[str], None], every: float = 2.0) -> int:
    """Wait for `proc`, passing `show` each line of its output that `log` gains after byte `offset`
    and that PROGRESS_LINES name, within `every` seconds of its writing; returns the exit status."""
    with log.open("rb") as f:
        f.seek(offset)
        pending = b""
        while True:
            try:
                rc: int | None = proc.wait(timeout=every)
            except subprocess.TimeoutExpired:
                rc = None
            *lines, pending = (pending + f.read()).split(b"\n")
            if rc is not None:  # the run is over: its last line is whole, newline or not
                lines, pending = [*lines, pending], b""
            for line in lines:
                text = line.decode("utf-8", "replace").rstrip("\r")
                if text.startswith(PROGRESS_LINES):
                    show(text)
            if rc is not None:
                return rc


def run_local(sweep: Sweep, workers: int = 1, say: Callable[[str], None] = print) -> list[Run]:
    """Run the unfinished runs, `workers` at a time, each a `taco` subprocess whose output goes to
    <run_dir>/sweep.log; `say` gets where each log is when its run starts, then the run's
    evaluations (see `follow`). With `gpus` > 0 per run and several GPUs, worker slots take the GPUs
    in turn (CUDA_VISIBLE_DEVICES). Returns the runs that failed."""
    todo = [r for r in sweep.runs if status(r, sweep.command) != "finished"]
    say(
        f"{len(sweep.runs) - len(todo)} of {len(sweep.runs)} runs already finished; running {len(todo)} "
        f"with {workers} worker(s)"
    )
    env = _child_env(sweep.cpus)
    gpus = visible_gpus() if sweep.gpus > 0 else []
    slots: queue.SimpleQueue[int] = queue.SimpleQueue()
    for slot in range(max(1, workers)):
        slots.put(slot)
    procs: dict[int, subprocess.Popen] = {}
    lock = threading.Lock()
    stopping = threading.Event()

    def one(run: Run) -> int:
        if stopping.is_set():
            return -1
        slot = slots.get()
        gpu = gpu_for_slot(slot, sweep.gpus, gpus)
        run_env = env if gpu is None else {**env, "CUDA_VISIBLE_DEVICES": gpu}
        who = f"{run.label} | {run.task} seed {run.seed}"
        log_path = run.run_dir / "sweep.log"
        try:
            run.run_dir.mkdir(parents=True, exist_ok=True)
            with log_path.open("ab") as log:
                header = f"$ {shlex.join(run.argv())}" + (f"  (GPU {gpu})" if gpu is not None else "")
                log.write(header.encode() + b"\n")
                log.flush()
                offset = log.tell()
                argv = [sys.executable, "-m", "taco_rl.runners.cli", run.command, *run.overrides, "--no-progress"]
                with lock:
                    proc = spawn_child(argv, stdout=log, stderr=subprocess.STDOUT, env=run_env)
                    procs[id(run)] = proc
                say(f"started | {who} | output in {log_path}")
                rc = follow(proc, log_path, offset, lambda line: say(f"  {who} | {line}"))
                with lock:
                    procs.pop(id(run), None)
        finally:
            slots.put(slot)
        return rc

    failed: list[Run] = []
    t0 = time.time()
    pool = ThreadPoolExecutor(max_workers=max(1, workers))
    try:
        futures = {pool.submit(one, run): run for run in todo}
        for n, fut in enumerate(as_completed(futures), 1):
            run, rc = futures[fut], fut.result()
            if rc != 0:
                failed.append(run)
            verdict = "done" if rc == 0 else f"FAILED (exit {rc}; see {run.run_dir / 'sweep.log'})"
            say(f"[{n}/{len(todo)}] {verdict} | {run.label} | {run.task} seed {run.seed} | {time.time() - t0:.0f}s")
    except KeyboardInterrupt:
        stopping.set()
        with lock:
            for proc in procs.values():
                proc.terminate()
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    return failed


def run_ray(sweep: Sweep, address: str, say: Callable[[str], None] = print) -> list[Run]:
    """Submit the unfinished runs as Ray tasks (resources and retries from the sweep file) and wait."""
    try:
        import ray
    except ImportError:
        raise SweepError("--backend ray needs the `ray` package: pip install -e .[ray]") from None
    todo = [r for r in sweep.runs if status(r, sweep.command) != "finished"]
    say(
        f"{len(sweep.runs) - len(todo)} of {len(sweep.runs)} runs already finished; submitting {len(todo)} "
        f"to Ray at {address} ({sweep.cpus:g} CPU, {sweep.gpus:g} GPU per run, {sweep.retries} retries)"
    )
    if not todo:
        return []
    _check_reachable(address)
    pythonpath = os.pathsep.join([str(PROJECT_ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])
    try:
        ray.init(address=address, runtime_env={"env_vars": {"PYTHONPATH": pythonpath}})
    except ConnectionError as e:
        raise SweepError(
            f"cannot reach a Ray cluster at {address!r} ({e}); start one with `ray start --head`"
            " or pass --address HOST:PORT"
        ) from None
    try:
        fits = [
            n
            for n in ray.nodes()
            if n.get("Alive")
            and n["Resources"].get("CPU", 0) >= sweep.cpus
            and n["Resources"].get("GPU", 0) >= sweep.gpus
        ]
        if not fits:
            raise SweepError(
                f"no node of the Ray cluster has {sweep.cpus:g} CPU and {sweep.gpus:g} GPU free for "
                f"one run (cluster: {ray.cluster_resources()}); lower `resources:` in the sweep file"
            )
        task = ray.remote(num_cpus=sweep.cpus, num_gpus=sweep.gpus, max_retries=sweep.retries)(taco_run)
        refs = {task.remote(run.command, run.overrides): run for run in todo}
        pending, failed, t0 = list(refs), [], time.time()
        for n in range(1, len(refs) + 1):
            (ref,), pending = ray.wait(pending, num_returns=1)
            run = refs[ref]
            try:
                ray.get(ref)
                verdict = "done"
            except Exception as e:  # the run raised, or its worker died more than `retries` times
                failed.append(run)
                verdict = f"FAILED ({type(e).__name__}: {str(e).strip().splitlines()[-1]})"
            say(f"[{n}/{len(todo)}] {verdict} | {run.label} | {run.task} seed {run.seed} | {time.time() - t0:.0f}s")
        return failed
    finally:
        ray.shutdown()


def _check_reachable(address: str, timeout: float = 5.0) -> None:
    """Fail fast on a HOST:PORT nobody listens on (ray.init would retry for minutes)."""
    import socket

    host, sep, port = address.rpartition(":")
    if address == "auto" or "://" in address or not sep or not port.isdigit():
        return
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except OSError as e:
        raise SweepError(
            f"cannot reach a Ray cluster at {address} ({e.strerror or e}); start one with "
            "`ray start --head` there, or pass --address auto on a cluster node"
        ) from None


def taco_run(command: str, overrides: list[str]) -> str:
    """The Ray task body (a named module-level function, so workers import it from this package)."""
    return execute(command, overrides)
