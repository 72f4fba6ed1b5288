"""`taco tasks`: every task name, how it is built and how the references configure it.

Reads the static task table (taco_rl.envs.tasks) and the presets (runners/core/config.py): it imports
neither dm_control nor torch, so it answers at once.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from typing import Any

from taco_rl.envs.registry import gym_id
from taco_rl.envs.tasks import TASK_TABLE, TaskSpec
from taco_rl.runners.core.config import DRQV2_FRAMES, STD_SCHEDULES, TASK_PRESETS, Config

DESCRIPTION = """Every task `taco train task=NAME` (and gymnasium.make("taco/NAME-v0")) takes: each dm_control
suite task as <domain>_<task> (cup_catch is ball_in_cup's catch; ball_in_cup_catch works too), each
dm_control.manipulation <name>_vision env as <name>, and point_reach."""

EPILOG = """columns: kind (suite | manipulation | point), domain (dm_control suite domain), difficulty (from the
references' task configs), source (the references that configure the task; dm_control: none does),
act (action dimensions, rescaled from [-1, 1]), steps (agent steps per episode at the task's action
repeat; -: no time limit), camera (suite camera id, or the manipulation env's camera observation)."""

COLUMNS = (
    ("name", "name"),
    ("kind", "kind"),
    ("domain", "domain"),
    ("difficulty", "difficulty"),
    ("source", "source"),
    ("act", "action_dim"),
    ("steps", "episode_steps"),
    ("camera", "camera"),
)


def _action_repeat(name: str) -> int:
    return int(TASK_PRESETS.get(name, {}).get("action_repeat", Config.action_repeat))


def task_row(spec: TaskSpec) -> dict[str, Any]:
    """One task as plain data (the `--json` record)."""
    repeat = _action_repeat(spec.name)
    frames = spec.episode_frames
    return {
        "name": spec.name,
        "aliases": list(spec.aliases),
        "kind": spec.kind,
        "domain": spec.domain or None,
        "task": spec.task or None,
        "difficulty": spec.difficulty,
        "configured": bool(spec.references),
        "source": spec.source,
        "references": list(spec.references),
        "action_dim": spec.action_dim,
        "action_repeat": repeat,
        "episode_frames": frames,
        "episode_steps": None if frames is None else math.ceil(frames / repeat),
        "camera": spec.camera_id if spec.kind == "suite" else (spec.pixels_key or None),
        "gym_id": gym_id(spec.name),
        "preset": dict(TASK_PRESETS.get(spec.name, {})),
    }


def task_rows() -> list[dict[str, Any]]:
    """Every task of the table, in its order (suite, manipulation, point_reach)."""
    return [task_row(spec) for spec in TASK_TABLE.values()]


def _cell(row: dict[str, Any], key: str) -> str:
    value = row[key]
    if key == "name" and row["aliases"]:
        return f"{value} (= {', '.join(row['aliases'])})"
    if key == "difficulty" and value is not None and not row["configured"]:
        return f"{value}*"
    return "-" if value is None else str(value)


def format_table(rows: list[dict[str, Any]]) -> str:
    cells = [[_cell(row, key) for _, key in COLUMNS] for row in rows]
    widths = [max(len(title), *(len(c[i]) for c in cells)) for i, (title, _) in enumerate(COLUMNS)]
    numeric = {"act", "steps"}

    def line(values: list[str]) -> str:
        pairs = enumerate(zip(values, widths, strict=True))
        return "  ".join(v.rjust(w) if COLUMNS[i][0] in numeric else v.ljust(w) for i, (v, w) in pairs).rstrip()

    n_suite = sum(r["kind"] == "suite" for r in rows)
    n_manip = sum(r["kind"] == "manipulation" for r in rows)
    n_ref = sum(r["configured"] for r in rows)
    std = ", ".join(f"{d} {s}" for d, s in STD_SCHEDULES.items())
    frames = ", ".join(f"{d} {f / 1e6:g}M" for d, f in DRQV2_FRAMES.items())
    footer = [
        "",
        f"{len(rows)} tasks: {n_suite} dm_control suite, {n_manip} manipulation, point_reach; "
        f"{n_ref} configured by DrQ-v2 and/or TACO.",
        f"difficulty: exploration std_schedule {std} (agent steps).",
        "* no reference configures the task: it gets the medium settings.",
        f"frames: {Config.frames:,} by default (TACO's budget); preset=drqv2 gives DrQ-v2's: {frames}.",
        "task presets beyond the difficulty: " + "; ".join(_overrides()) + ".",
    ]
    return "\n".join([line([t for t, _ in COLUMNS]), *(line(c) for c in cells), *footer])


def _overrides() -> list[str]:
    """The DMC tasks' preset settings other than the exploration schedule, tasks sharing them grouped."""
    groups: dict[str, list[str]] = {}
    for name, preset in TASK_PRESETS.items():
        if TASK_TABLE[name].kind == "point":
            continue
        settings = " ".join(f"{k}={v}" for k, v in preset.items() if k != "std_schedule")
        if settings:
            groups.setdefault(settings, []).append(name)
    return [f"{', '.join(names)}: {settings}" for settings, names in groups.items()]


def add_parser(sub: Any) -> argparse.ArgumentParser:
    """The `tasks` subcommand on the `taco` parser (for `taco --help`)."""
    return _configure(
        sub.add_parser(
            "tasks",
            help="list every task name (kind, difficulty, source, action size, episode steps, camera)",
            description=DESCRIPTION,
            epilog=EPILOG,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
    )


def _configure(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    p.add_argument("--json", action="store_true", help="one JSON list of task records instead of the table")
    return p


def main(argv: list[str] | None = None) -> int:
    """`taco tasks [--json]`."""
    parser = _configure(
        argparse.ArgumentParser(
            prog="taco tasks",
            description=DESCRIPTION,
            epilog=EPILOG,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
    )
    args = parser.parse_args(argv)
    rows = task_rows()
    text = json.dumps(rows, indent=1) if args.json else format_table(rows)
    try:
        print(text, flush=True)
    except BrokenPipeError:  # `taco tasks | head`
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - left open for the interpreter's final flush
    return 0
