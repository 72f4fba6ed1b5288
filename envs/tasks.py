"""The table of supported tasks and how each is built (SPEC section 1).

Kept free of dm_control/mujoco imports: the task table must be readable (and the
gymnasium ids registered) before a render backend has been chosen.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Literal

__all__ = [
    "TaskSpec",
    "TASK_TABLE",
    "TASKS",
    "BENCHMARK_TASKS",
    "EASY_TASKS",
    "UnknownTaskError",
    "get_task_spec",
    "max_return",
]

Kind = Literal["suite", "manipulation", "point"]


@dataclass(frozen=True)
class TaskSpec:
    """How to build one task.

    For ``suite`` tasks ``domain``/``task`` are the ``dm_control.suite.load``
    arguments and ``camera_id`` the camera rendered; ``manipulation`` tasks name
    the ``dm_control.manipulation.load`` environment in ``task`` and take pixels
    from the ``pixels_key`` observation; ``point`` is the pure-numpy toy task.
    """

    name: str
    kind: Kind
    domain: str = ""
    task: str = ""
    camera_id: int = 0
    pixels_key: str = ""


def _suite(name: str, domain: str, task: str, camera_id: int = 0) -> TaskSpec:
    return TaskSpec(name=name, kind="suite", domain=domain, task=task, camera_id=camera_id)


# TACO's nine benchmark tasks ("medium" difficulty). Quadruped uses camera 2,
# as in DrQ-v2 / TACO: camera 0 of that domain does not follow the body.
BENCHMARK_TASKS: tuple[TaskSpec, ...] = (
    _suite("quadruped_run", "quadruped", "run", camera_id=2),
    _suite("quadruped_walk", "quadruped", "walk", camera_id=2),
    _suite("hopper_hop", "hopper", "hop"),
    _suite("walker_run", "walker", "run"),
    _suite("cheetah_run", "cheetah", "run"),
    _suite("finger_turn_hard", "finger", "turn_hard"),
    _suite("acrobot_swingup", "acrobot", "swingup"),
    _suite("reacher_hard", "reacher", "hard"),
    # dm_control.manipulation (composer): pixels from its own 84x84 `front_close`
    # camera; its built-in time limit is 10 s = 250 frames (125 steps at repeat 2).
    TaskSpec(name="reach_duplo", kind="manipulation", task="reach_duplo_vision", pixels_key="front_close"),
)

# Easy tasks for quick checks (exploration std schedule over 100k steps).
EASY_TASKS: tuple[TaskSpec, ...] = (
    _suite("cartpole_balance", "cartpole", "balance"),
    _suite("cartpole_balance_sparse", "cartpole", "balance_sparse"),
    _suite("cartpole_swingup", "cartpole", "swingup"),
    _suite("reacher_easy", "reacher", "easy"),
    _suite("walker_walk", "walker", "walk"),
    _suite("cup_catch", "ball_in_cup", "catch"),
    _suite("finger_spin", "finger", "spin"),
)

TASK_TABLE: dict[str, TaskSpec] = {
    spec.name: spec for spec in BENCHMARK_TASKS + EASY_TASKS + (TaskSpec(name="point_reach", kind="point"),)
}

TASKS: tuple[str, ...] = tuple(TASK_TABLE)


class UnknownTaskError(ValueError):
    """A task name that is not in TASKS; the message suggests the closest names."""

    def __init__(self, task: str) -> None:
        close = difflib.get_close_matches(task, TASKS, n=3, cutoff=0.5)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        super().__init__(
            f"unknown task {task!r}{hint} (`python -c 'from taco_rl import envs; print(envs.TASKS)'` lists them)"
        )
        self.task = task
        self.suggestions = tuple(close)


def get_task_spec(task: str) -> TaskSpec:
    """Look up a task by name, raising UnknownTaskError with suggestions."""
    try:
        return TASK_TABLE[task]
    except KeyError:
        raise UnknownTaskError(task) from None


# The highest episode return a task can give (rewards lie in [0, 1] per simulator frame): the
# normaliser of scores in reports and of Minari's ref_max_score.
_MAX_RETURN = {"point_reach": 50.0, "reach_duplo": 250.0}
_DEFAULT_MAX_RETURN = 1000.0


def max_return(task: str) -> float:
    """The task's best possible episode return (1000 for a 1000-frame DMC episode)."""
    return _MAX_RETURN.get(task, _DEFAULT_MAX_RETURN)
