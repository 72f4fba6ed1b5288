"""The `taco` command: `taco train|offline|bench key=value ...`, `taco data ...`, `taco sweep FILE.yaml`,
`taco report RUNS --out DIR`, `taco tasks`.

Options may come anywhere among a subcommand's items (`taco train task=x --no-progress seed=2`).
Help, and the check of every `key=value`, answer before torch (and the learners and dm_control) is
imported: the modules that do the work are imported once the command line is known to be good.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from taco_rl.runners.core.config import OFFLINE_AGENT_PRESETS, ConfigError, OfflineConfig, help_text, resolve

EPILOG = """config keys (key=value; presets per task and aux are applied first, your overrides last):
{fields}

examples:
  taco train task=cheetah_run                       # DrQ-v2, the paper protocol (1M frames)
  taco train task=cheetah_run aux=taco              # TACO on DrQ-v2 (K=3, batch 1024)
  taco train task=cartpole_swingup preset=quick     # a few minutes on 2 CPU cores, every artefact
  taco tasks                                        # every task name, its difficulty and source
  taco bench agent=drqv2 batch_size=256 device=cpu  # one JSON line of timings
  taco sweep ablations/taco_k.yaml --dry-run        # list an ablation's runs; drop --dry-run to run them
  taco report runs/cheetah_run/*/* --out report     # tables, IQM with bootstrap CIs, curves
"""


OFFLINE_EPILOG = """config keys (key=value; presets per task, agent and aux are applied first, your overrides last):
{fields}

per-agent defaults (SPEC 7; V-D4RL's settings, lr 3e-4 and batch 256 unless set):
{agents}
  aux=taco: taco_k=1 (hopper_hop: 3); td3bc with aux=taco: batch_size=1024

task= defaults to the task the dataset's dataset.json records; preset=quick: 1000 updates, evaluations
and checkpoints every 500 (and the online quick preset's batch, width and one eval episode)

examples:
  taco data collect task=point_reach policy=random episodes=20 out=data/pr_random
  taco offline dataset=data/pr_random preset=quick   # about a minute on 2 CPU cores, every artefact
  taco offline task=walker_walk dataset=DIR agent=td3bc aux=taco updates=550000 eval_every_updates=5000
  taco offline task=walker_walk dataset=DIR agent=cql cql_alpha=5 cql_temp=0.5
  taco bench mode=offline agent=td3bc aux=taco batch_size=1024 --vs-online
"""


def _offline_epilog() -> str:
    agents = "\n".join(
        f"  agent={a}: " + ", ".join(f"{k}={v}" for k, v in p.items()) for a, p in OFFLINE_AGENT_PRESETS.items()
    )
    return OFFLINE_EPILOG.format(fields=help_text(OfflineConfig), agents=agents)


class SubcommandParser(argparse.ArgumentParser):
    """A subcommand's parser: options anywhere among its positional items (argparse's plain parsing
    stops filling a positional list at the first option), and an unknown option is refused with this
    subcommand's usage, not the top-level one."""

    _intermixing = False

    def parse_known_args(self, args=None, namespace=None):
        if self._intermixing or self._subparsers is not None:  # a parser of subcommands (`taco data`) cannot intermix
            return super().parse_known_args(args, namespace)
        self._intermixing = True
        try:
            namespace, extras = super().parse_known_intermixed_args(args, namespace)
        finally:
            self._intermixing = False
        if extras:
            name = extras[0].lstrip("-").partition("=")[0]
            hint = f" (settings are key=value items: {name}=..., not --{name})" if extras[0].startswith("--") else ""
            self.error(f"unrecognized arguments: {' '.join(extras)}{hint}")
        return namespace, extras


def _parser() -> argparse.ArgumentParser:
    fmt = argparse.RawDescriptionHelpFormatter
    p = argparse.ArgumentParser(
        prog="taco",
        description="TACO / DrQ-v2 / SAC from pixels.",
        epilog=EPILOG.format(fields=help_text()),
        formatter_class=fmt,
    )
    sub = p.add_subparsers(dest="command", required=True, parser_class=SubcommandParser)
    t = sub.add_parser(
        "train",
        help="train online (rerunning the same command resumes)",
        epilog=EPILOG.format(fields=help_text()),
        formatter_class=fmt,
    )
    t.add_argument("overrides", nargs="*", metavar="key=value")
    t.add_argument("--no-progress", action="store_true", help="no progress bar (eval lines still print)")
    o = sub.add_parser(
        "offline",
        help="train on a fixed dataset, evaluate in the live env (rerunning resumes)",
        epilog=_offline_epilog(),
        formatter_class=fmt,
    )
    o.add_argument("overrides", nargs="*", metavar="key=value")
    o.add_argument("--no-progress", action="store_true", help="no progress bar (eval lines still print)")
    b = sub.add_parser(
        "bench",
        help="time sampling, updates and env stepping; prints one JSON object",
        epilog=EPILOG.format(fields=help_text()),
        formatter_class=fmt,
    )
    b.add_argument("overrides", nargs="*", metavar="key=value")
    b.add_argument("--updates", type=int, default=5, help="timed learner updates (median reported)")
    b.add_argument("--samples", type=int, default=20, help="timed replay samples (median reported)")
    b.add_argument("--env-steps", type=int, default=200, help="env steps per fps measurement")
    b.add_argument(
        "--baseline",
        action="store_true",
        help="also time the reference implementation's way of computing the same update",
    )
    b.add_argument("--skip-env", action="store_true", help="skip the env fps measurements")
    b.add_argument(
        "--vs-online",
        action="store_true",
        help="mode=offline: also time the online DrQ-v2 update with the same aux and batch size",
    )
    b.epilog = (
        b.epilog or ""
    ) + "\nmode=offline (first override) times an offline learner: offline keys as in `taco offline --help`\n"
    b.add_argument(
        "--loop-steps",
        type=int,
        default=0,
        help="also time this many steps of the training loop, serial and with env_overlap=thread",
    )
    b.add_argument(
        "--num-envs",
        default="1,2,4",
        help="env frames/s with this many envs in worker processes (comma list; empty: none)",
    )
    b.add_argument(
        "--eval",
        action="store_true",
        help="time one evaluation (eval_episodes, video as set) in-process and with eval_workers",
    )
    b.add_argument(
        "--compile",
        action="store_true",
        help="torch.compile the encoder first (an option for GPUs; unmeasured on CPU, off by default)",
    )
    from taco_rl.runners.core.tasks import add_parser as add_tasks_parser
    from taco_rl.runners.data.cli import add_parser as add_data_parser

    add_data_parser(sub)
    add_tasks_parser(sub)
    _add_sweep_parsers(sub, fmt)
    return p


def _add_sweep_parsers(sub, fmt) -> None:
    from taco_rl.runners.study.sweep import __doc__ as sweep_doc

    s = sub.add_parser(
        "sweep",
        help="run a grid of runs from a YAML file (rerunning skips finished runs)",
        description=sweep_doc,
        formatter_class=fmt,
    )
    s.add_argument("file", help="sweep file (see ablations/)")
    s.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides for every run (e.g. root=)")
    s.add_argument("--dry-run", action="store_true", help="list the runs (status, run dir, command) and exit")
    s.add_argument("--workers", type=int, default=1, help="local backend: runs at a time")
    s.add_argument(
        "--backend",
        choices=("local", "ray"),
        default="local",
        help="local subprocesses (default) or tasks on a Ray cluster",
    )
    s.add_argument("--address", default="auto", help="Ray cluster address: auto | HOST:PORT")
    s.add_argument("--cpus", type=float, default=None, help="CPUs per run (overrides the file's resources)")
    s.add_argument(
        "--gpus", type=float, default=None, help="GPUs per run, fractions share a card (overrides the file's resources)"
    )
    r = sub.add_parser(
        "report",
        help="tables (IQM, bootstrap CIs), learning curves and a markdown summary",
        formatter_class=fmt,
        description=REPORT_HELP,
    )
    r.add_argument(
        "runs",
        nargs="+",
        metavar="RUN_DIR|GLOB|SWEEP.yaml",
        help="run directories, globs of them, or sweep files (their runs, labelled by variant); "
        "key=value items are overrides applied when expanding sweep files",
    )
    r.add_argument(
        "--out",
        default=None,
        help="output folder (report.md, CSV tables, PNG figures); default: "
        "reports/<sweep file name> for a sweep file, else reports/runs",
    )
    r.add_argument(
        "--frame",
        type=int,
        default=None,
        help="score online runs at this frame (a report of offline runs only: at this update); "
        "default: the largest budget among the online runs",
    )
    r.add_argument(
        "--update",
        type=int,
        default=None,
        help="score offline runs at this learner update; default: the largest budget among the offline runs",
    )
    r.add_argument(
        "--reference",
        default=None,
        metavar="NAME",
        help="draw a method's published per-seed curves (mean, min-max over seeds) behind each task's online "
        "curves and compare the runs with them at the frames both have; NAME: drqv2 (DrQ-v2's curves, "
        "24 DeepMind Control tasks)",
    )
    r.add_argument("--metric", default="episode_return", help="eval.csv column to aggregate")
    r.add_argument(
        "--compare",
        nargs=2,
        metavar=("X", "Y"),
        default=None,
        help="variants for the probability of improvement P(X > Y) (default: the sweep file's compare)",
    )
    r.add_argument("--reps", type=int, default=2000, help="bootstrap replicates")
    r.add_argument("--seed", type=int, default=0, help="bootstrap random seed")


REPORT_HELP = """Aggregate the eval logs of finished runs into report.md, tables (CSV) and figures (PNG).

Scores are normalised by each task's maximum return (1000 for DMC, 250 for the manipulation tasks
such as reach_duplo, 50 for point_reach) for the aggregates; per-task tables keep raw returns. Online
runs (counted in frames) and offline runs (counted in learner updates) are reported in separate
sections and never compared; offline rows show the mean return of the data their runs trained on.
Runs that have not reached the frame (offline: update) are listed in report.md and left out of
every number.
"""


def _sweep_main(args) -> int:
    from taco_rl.runners.study.sweep import describe, load_sweep, run_local, run_ray

    sweep = load_sweep(args.file, args.overrides)
    if args.cpus is not None:
        if args.cpus <= 0:
            raise ConfigError(f"--cpus {args.cpus:g}: expected a positive number")
        sweep.cpus = args.cpus
    if args.gpus is not None:
        if args.gpus < 0:
            raise ConfigError(f"--gpus {args.gpus:g}: expected a non-negative number")
        sweep.gpus = args.gpus
    if args.dry_run:
        try:
            print(describe(sweep), flush=True)
        except BrokenPipeError:  # `taco sweep FILE --dry-run | head`
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - stays open as stdout until exit
        return 0
    if args.workers < 1:
        raise ConfigError(f"--workers {args.workers}: expected a positive integer")
    failed = run_local(sweep, args.workers) if args.backend == "local" else run_ray(sweep, args.address)
    if failed:
        print(
            f"taco: error: {len(failed)} of {len(sweep.runs)} runs failed: "
            + ", ".join(str(r.run_dir) for r in failed),
            file=sys.stderr,
        )
        return 1
    print(f"done: {len(sweep.runs)} runs of {args.file} finished")
    return 0


def _report_main(args) -> int:
    from taco_rl.runners.study.report import report

    out = report(
        args.runs,
        args.out,
        frame=args.frame,
        metric=args.metric,
        compare=args.compare,
        reps=args.reps,
        seed=args.seed,
        update=args.update,
        reference=args.reference,
    )
    print(f"report: {out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["tasks"]:  # before the full parser: building it imports torch (the data commands)
        from taco_rl.runners.core.tasks import main as tasks_main

        return tasks_main(argv[1:])
    args = _parser().parse_args(argv)
    if args.command in ("sweep", "report"):
        from taco_rl.runners.core.rundir import sigterm_as_interrupt
        from taco_rl.runners.study.report import ReportError
        from taco_rl.runners.study.sweep import SweepError

        try:
            with sigterm_as_interrupt():  # a preempted sweep stops its runs like Ctrl-C
                return _sweep_main(args) if args.command == "sweep" else _report_main(args)
        except (SweepError, ReportError, ConfigError) as e:
            print(f"taco: error: {e}", file=sys.stderr)
            return 2
        except KeyboardInterrupt:
            print("taco: interrupted; rerun the same command to resume the unfinished runs", file=sys.stderr)
            return 130
    from taco_rl.runners.core.rundir import RunInterrupted, sigterm_as_interrupt

    try:
        with sigterm_as_interrupt():  # a preempted job stops like Ctrl-C
            return _run(args)
    except Exception as e:
        status = _error_status(e)
        if status is None:
            raise
        print(f"taco: error: {e}", file=sys.stderr)
        return status
    except RunInterrupted as e:
        print(f"taco: {e.message()}", file=sys.stderr)
        return 143 if e.signal_name == "SIGTERM" else 130
    except KeyboardInterrupt as e:  # before a run started (or outside one)
        what = "SIGTERM" if str(e) == "SIGTERM" else "Ctrl-C"
        rerun = "; rerun the same command to resume from the last checkpoint" if args.command == "train" else ""
        print(f"taco: interrupted ({what}){rerun}", file=sys.stderr)
        return 143 if what == "SIGTERM" else 130


def _error_status(e: Exception) -> int | None:
    """The exit status of an error that `taco` reports in one line: 1 when the run failed and what is
    on disk is whole, 2 for bad input; None for anything else (a bug: its traceback is shown). The
    error classes of the modules that need torch are imported only here, once something failed."""
    from taco_rl.envs import RenderBackendError, UnknownTaskError
    from taco_rl.runners.core.rundir import RunDirError

    if isinstance(e, (ConfigError, UnknownTaskError, RenderBackendError, RunDirError)):
        return 2
    from taco_rl.runners.core.checkpoint import CheckpointError, CheckpointWriteError
    from taco_rl.runners.core.guard import NonFiniteError
    from taco_rl.runners.core.workers import WorkerError
    from taco_rl.runners.data.datasets import DatasetError

    if isinstance(e, (NonFiniteError, CheckpointWriteError, WorkerError)):
        return 1
    return 2 if isinstance(e, (CheckpointError, DatasetError)) else None


def _num_envs(text: str) -> tuple[int, ...]:
    try:
        counts = tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        counts = (0,)
    if any(n < 1 for n in counts):
        raise ConfigError(f"--num-envs {text!r}: expected a comma list of positive integers (e.g. 1,2,4) or ''")
    return counts


def _run(args: argparse.Namespace) -> int:
    from taco_rl.runners.core.cpu_memory import set_cpu_malloc

    if args.command == "data":
        from taco_rl.runners.data.cli import run as run_data

        return run_data(args)
    overrides = [o for o in args.overrides if o not in ("mode=online", "mode=offline")]
    offline = args.command == "offline" or "mode=offline" in args.overrides
    cfg = resolve(overrides, offline=offline)
    # torch is loaded before malloc's settings change, the order every cpu_malloc figure was measured in
    import torch  # noqa: F401

    set_cpu_malloc(cfg.cpu_malloc)
    if args.command == "offline":
        from taco_rl.runners.offline.train import train_offline

        if not isinstance(cfg, OfflineConfig):  # resolve(..., offline=True) makes one
            raise TypeError(f"taco offline needs an OfflineConfig, got {type(cfg).__name__}")
        run_dir = train_offline(cfg, progress=not args.no_progress)
        print(f"done: {run_dir}")
    elif args.command == "bench" and offline:
        from taco_rl.runners.bench.bench import bench_offline

        print(json.dumps(bench_offline(cfg, updates=args.updates, samples=args.samples, vs_online=args.vs_online)))
    elif args.command == "train":
        from taco_rl.runners.online.train import train

        run_dir = train(cfg, progress=not args.no_progress)
        print(f"done: {run_dir}")
    else:
        from taco_rl.runners.bench.bench import bench

        result = bench(
            cfg,
            updates=args.updates,
            samples=args.samples,
            env_steps=args.env_steps,
            baseline=args.baseline,
            skip_env=args.skip_env,
            loop_steps=args.loop_steps,
            compile_encoder=args.compile,
            num_envs=_num_envs(args.num_envs),
            evaluation=args.eval,
        )
        print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
