"""The `taco` command: `taco train key=value ...` and `taco bench key=value ...`."""
from __future__ import annotations

import argparse
import json
import sys

from .config import ConfigError, help_text, resolve

EPILOG = """config keys (key=value; presets per task and aux are applied first, your overrides last):
{fields}

examples:
  taco train task=cheetah_run                       # DrQ-v2, the paper protocol (1M frames)
  taco train task=cheetah_run aux=taco              # TACO on DrQ-v2 (K=3, batch 1024)
  taco train task=cartpole_swingup preset=quick     # about a CPU minute, every artefact
  taco bench agent=drqv2 batch_size=256 device=cpu  # one JSON line of timings
"""


def _parser() -> argparse.ArgumentParser:
    fmt = argparse.RawDescriptionHelpFormatter
    p = argparse.ArgumentParser(prog="taco", description="TACO / DrQ-v2 / SAC from pixels.",
                                epilog=EPILOG.format(fields=help_text()), formatter_class=fmt)
    sub = p.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train", help="train online (rerunning the same command resumes)",
                       epilog=EPILOG.format(fields=help_text()), formatter_class=fmt)
    t.add_argument("overrides", nargs="*", metavar="key=value")
    t.add_argument("--no-progress", action="store_true", help="no progress bar (eval lines still print)")
    b = sub.add_parser("bench", help="time sampling, updates and env stepping; prints one JSON object",
                       epilog=EPILOG.format(fields=help_text()), formatter_class=fmt)
    b.add_argument("overrides", nargs="*", metavar="key=value")
    b.add_argument("--updates", type=int, default=5, help="timed learner updates (median reported)")
    b.add_argument("--samples", type=int, default=20, help="timed replay samples (median reported)")
    b.add_argument("--env-steps", type=int, default=200, help="env steps per fps measurement")
    b.add_argument("--baseline", action="store_true",
                   help="also time the reference implementation's way of computing the same update")
    b.add_argument("--skip-env", action="store_true", help="skip the env fps measurements")
    from .data_cli import add_parser as add_data_parser

    add_data_parser(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    from envs import RenderBackendError, UnknownTaskError

    from .checkpoint import CheckpointError
    from .datasets import DatasetError
    from .train import RunDirError

    try:
        if args.command == "data":
            from .data_cli import run as run_data

            return run_data(args)
        cfg = resolve(args.overrides)
        if args.command == "train":
            from .train import train

            run_dir = train(cfg, progress=not args.no_progress)
            print(f"done: {run_dir}")
        else:
            from .bench import bench

            result = bench(cfg, updates=args.updates, samples=args.samples, env_steps=args.env_steps,
                           baseline=args.baseline, skip_env=args.skip_env)
            print(json.dumps(result))
    except (ConfigError, UnknownTaskError, RenderBackendError, RunDirError, CheckpointError,
            DatasetError) as e:
        print(f"taco: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("taco: interrupted; rerun the same command to resume from the last checkpoint", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
