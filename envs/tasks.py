"""The table of supported tasks and how each is built (SPEC section 1).

Every task of ``dm_control.suite.ALL_TASKS`` is named ``<domain>_<task>`` (``cup_catch`` is
``ball_in_cup``'s ``catch``, with ``ball_in_cup_catch`` accepted as an alias) and every
``dm_control.manipulation`` ``<name>_vision`` environment by ``<name>``: the names the reference
implementations (DrQ-v2, TACO) take. The table is static, so that listing the names needs neither
dm_control nor a render backend (the gymnasium ids are registered before one has been chosen);
tests/test_tasks.py checks it against the installed dm_control.

Each entry also records how the references' task configs (DrQ-v2 ``cfgs/task``, TACO ``cfgs/task``)
classify the task: ``difficulty`` easy / medium / hard sets the exploration schedule and budget
(runners/core/config.py turns it into presets) and ``references`` names the implementations that
configure it. A task no reference configures is ``medium``.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Literal

__all__ = [
    "TaskSpec",
    "TASK_TABLE",
    "TASKS",
    "ALIASES",
    "BENCHMARK_TASKS",
    "EASY_TASKS",
    "REFERENCE_TASKS",
    "UnknownTaskError",
    "get_task_spec",
    "max_return",
]

Kind = Literal["suite", "manipulation", "point"]
Difficulty = Literal["easy", "medium", "hard"]

DRQV2 = "DrQ-v2"
TACO = "TACO"


@dataclass(frozen=True)
class TaskSpec:
    """How to build one task, and what the references make of it.

    For ``suite`` tasks ``domain``/``task`` are the ``dm_control.suite.load``
    arguments and ``camera_id`` the camera rendered; ``manipulation`` tasks name
    the ``dm_control.manipulation.load`` environment in ``task`` and take pixels
    from the ``pixels_key`` observation; ``point`` is the pure-numpy toy task.
    ``episode_frames`` counts env frames (control steps) per episode, None when the
    task has no time limit; ``difficulty`` is None for point_reach (its own preset).
    """

    name: str
    kind: Kind
    domain: str = ""
    task: str = ""
    camera_id: int = 0
    pixels_key: str = ""
    action_dim: int = 0
    episode_frames: int | None = None
    difficulty: Difficulty | None = "medium"
    references: tuple[str, ...] = ()
    aliases: tuple[str, ...] = ()

    @property
    def source(self) -> str:
        """Who configures the task: the reference implementations, else where it comes from."""
        if self.references:
            return ", ".join(self.references)
        return "taco-rl" if self.kind == "point" else "dm_control"


# Every (domain, task) of dm_control.suite.ALL_TASKS (dm_control 1.0.50, in its order) with the size
# of its action. Each episode is 1000 frames, except lqr's, which have no time limit (they end when
# the state reaches the origin).
_SUITE: tuple[tuple[str, str, int], ...] = (
    ("acrobot", "swingup", 1),
    ("acrobot", "swingup_sparse", 1),
    ("ball_in_cup", "catch", 2),
    ("cartpole", "balance", 1),
    ("cartpole", "balance_sparse", 1),
    ("cartpole", "swingup", 1),
    ("cartpole", "swingup_sparse", 1),
    ("cartpole", "two_poles", 1),
    ("cartpole", "three_poles", 1),
    ("cheetah", "run", 6),
    ("dog", "stand", 38),
    ("dog", "walk", 38),
    ("dog", "trot", 38),
    ("dog", "run", 38),
    ("dog", "fetch", 38),
    ("finger", "spin", 2),
    ("finger", "turn_easy", 2),
    ("finger", "turn_hard", 2),
    ("fish", "upright", 5),
    ("fish", "swim", 5),
    ("hopper", "stand", 4),
    ("hopper", "hop", 4),
    ("humanoid", "stand", 21),
    ("humanoid", "walk", 21),
    ("humanoid", "run", 21),
    ("humanoid", "run_pure_state", 21),
    ("humanoid_CMU", "stand", 56),
    ("humanoid_CMU", "walk", 56),
    ("humanoid_CMU", "run", 56),
    ("lqr", "lqr_2_1", 1),
    ("lqr", "lqr_6_2", 2),
    ("manipulator", "bring_ball", 5),
    ("manipulator", "bring_peg", 5),
    ("manipulator", "insert_ball", 5),
    ("manipulator", "insert_peg", 5),
    ("pendulum", "swingup", 1),
    ("point_mass", "easy", 2),
    ("point_mass", "hard", 2),
    ("quadruped", "walk", 12),
    ("quadruped", "run", 12),
    ("quadruped", "escape", 12),
    ("quadruped", "fetch", 12),
    ("reacher", "easy", 2),
    ("reacher", "hard", 2),
    ("stacker", "stack_2", 5),
    ("stacker", "stack_4", 5),
    ("swimmer", "swimmer6", 5),
    ("swimmer", "swimmer15", 14),
    ("walker", "stand", 6),
    ("walker", "walk", 6),
    ("walker", "run", 6),
)
_SUITE_EPISODE_FRAMES = 1000
_NO_TIME_LIMIT = ("lqr",)
# The references' own name for a domain (DrQ-v2 and TACO map `cup` to `ball_in_cup`).
_SHORT_DOMAIN = {"ball_in_cup": "cup"}
# Quadruped uses camera 2, as in DrQ-v2 / TACO: camera 0 of that domain does not follow the body.
_CAMERA = {"quadruped": 2}

# Every dm_control.manipulation `<name>_vision` environment by <name>: a 9-d action (arm joints and
# fingers, not [-1, 1]: the env rescales), pixels from its own 84x84 `front_close` camera, a time
# limit of 10 s = 250 frames (125 steps at action repeat 2).
_MANIPULATION: tuple[str, ...] = (
    "stack_2_bricks",
    "stack_2_bricks_moveable_base",
    "stack_3_bricks",
    "stack_2_of_3_bricks_random_order",
    "reassemble_3_bricks_fixed_order",
    "reassemble_5_bricks_random_order",
    "lift_brick",
    "lift_large_box",
    "place_brick",
    "place_cradle",
    "reach_duplo",
    "reach_site",
)
_MANIPULATION_ACTION_DIM = 9
_MANIPULATION_EPISODE_FRAMES = 250

# The references' task configs: exploration std linear(1.0, 0.1, N) over N = 100k (easy), 500k
# (medium) or 2M (hard) agent steps. DrQ-v2 configures 24 tasks; TACO the same but humanoid, plus
# acrobot_swingup_sparse and manipulator_bring_ball.
_CONFIGURED: dict[str, tuple[Difficulty, tuple[str, ...]]] = {
    "acrobot_swingup": ("medium", (DRQV2, TACO)),
    "acrobot_swingup_sparse": ("medium", (TACO,)),
    "cartpole_balance": ("easy", (DRQV2, TACO)),
    "cartpole_balance_sparse": ("easy", (DRQV2, TACO)),
    "cartpole_swingup": ("easy", (DRQV2, TACO)),
    "cartpole_swingup_sparse": ("medium", (DRQV2, TACO)),
    "cheetah_run": ("medium", (DRQV2, TACO)),
    "cup_catch": ("easy", (DRQV2, TACO)),
    "finger_spin": ("easy", (DRQV2, TACO)),
    "finger_turn_easy": ("medium", (DRQV2, TACO)),
    "finger_turn_hard": ("medium", (DRQV2, TACO)),
    "hopper_hop": ("medium", (DRQV2, TACO)),
    "hopper_stand": ("easy", (DRQV2, TACO)),
    "humanoid_run": ("hard", (DRQV2,)),
    "humanoid_stand": ("hard", (DRQV2,)),
    "humanoid_walk": ("hard", (DRQV2,)),
    "manipulator_bring_ball": ("hard", (TACO,)),
    "pendulum_swingup": ("easy", (DRQV2, TACO)),
    "quadruped_run": ("medium", (DRQV2, TACO)),
    "quadruped_walk": ("medium", (DRQV2, TACO)),
    "reach_duplo": ("medium", (DRQV2, TACO)),
    "reacher_easy": ("medium", (DRQV2, TACO)),
    "reacher_hard": ("medium", (DRQV2, TACO)),
    "walker_run": ("medium", (DRQV2, TACO)),
    "walker_stand": ("easy", (DRQV2, TACO)),
    "walker_walk": ("easy", (DRQV2, TACO)),
}


def _configured(name: str) -> tuple[Difficulty, tuple[str, ...]]:
    return _CONFIGURED.get(name, ("medium", ()))


def _suite_spec(domain: str, task: str, action_dim: int) -> TaskSpec:
    full = f"{domain}_{task}"
    short = _SHORT_DOMAIN.get(domain)
    name, aliases = (f"{short}_{task}", (full,)) if short else (full, ())
    difficulty, references = _configured(name)
    return TaskSpec(
        name=name,
        kind="suite",
        domain=domain,
        task=task,
        camera_id=_CAMERA.get(domain, 0),
        action_dim=action_dim,
        episode_frames=None if domain in _NO_TIME_LIMIT else _SUITE_EPISODE_FRAMES,
        difficulty=difficulty,
        references=references,
        aliases=aliases,
    )


def _manipulation_spec(name: str) -> TaskSpec:
    difficulty, references = _configured(name)
    return TaskSpec(
        name=name,
        kind="manipulation",
        task=f"{name}_vision",
        pixels_key="front_close",
        action_dim=_MANIPULATION_ACTION_DIM,
        episode_frames=_MANIPULATION_EPISODE_FRAMES,
        difficulty=difficulty,
        references=references,
    )


_POINT = TaskSpec(name="point_reach", kind="point", action_dim=2, episode_frames=50, difficulty=None)

TASK_TABLE: dict[str, TaskSpec] = {
    spec.name: spec
    for spec in (*(_suite_spec(*entry) for entry in _SUITE), *(_manipulation_spec(n) for n in _MANIPULATION), _POINT)
}

TASKS: tuple[str, ...] = tuple(TASK_TABLE)

# Other accepted names -> the task's name (its run directories and gymnasium id use the name).
ALIASES: dict[str, str] = {alias: spec.name for spec in TASK_TABLE.values() for alias in spec.aliases}

# Every task a reference configures (DrQ-v2's 24 and TACO's 23 give 26 together).
REFERENCE_TASKS: tuple[str, ...] = tuple(name for name, spec in TASK_TABLE.items() if spec.references)

# TACO's nine benchmark tasks ("medium" difficulty).
BENCHMARK_TASKS: tuple[TaskSpec, ...] = tuple(
    TASK_TABLE[name]
    for name in (
        "quadruped_run",
        "quadruped_walk",
        "hopper_hop",
        "walker_run",
        "cheetah_run",
        "finger_turn_hard",
        "acrobot_swingup",
        "reacher_hard",
        "reach_duplo",
    )
)

# Easy tasks for quick checks (exploration std schedule over 100k steps).
EASY_TASKS: tuple[TaskSpec, ...] = tuple(spec for spec in TASK_TABLE.values() if spec.difficulty == "easy")


class UnknownTaskError(ValueError):
    """A task name that is not in TASKS (nor an alias); the message suggests the closest names."""

    def __init__(self, task: str) -> None:
        names = (*TASKS, *ALIASES)
        close = difflib.get_close_matches(task, names, n=3, cutoff=0.5)
        if not close:  # e.g. `lqr_2_1` for lqr_lqr_2_1, `humanoid_cmu_run` for humanoid_CMU_run
            lowered = task.lower()
            close = [n for n in names if lowered and (lowered in n.lower() or n.lower() in lowered)][:3]
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        super().__init__(f"unknown task {task!r}{hint} (`taco tasks` lists all {len(TASKS)} names)")
        self.task = task
        self.suggestions = tuple(close)


def get_task_spec(task: str) -> TaskSpec:
    """Look up a task by name or alias, raising UnknownTaskError with suggestions."""
    try:
        return TASK_TABLE[ALIASES.get(task, task)]
    except KeyError:
        raise UnknownTaskError(task) from None


# point_reach: 50 steps, reward at most 1 each (envs/point.py)
_POINT_MAX_RETURN = 50.0


def max_return(task: str) -> float:
    """The task's best possible episode return, the normaliser of scores in reports and of Minari's
    ref_max_score: rewards lie in [0, 1] per simulator frame, so a DMC episode's frames (1000; 250
    for the manipulation tasks' 10 s limit), 1000 where an episode has no time limit (lqr)."""
    spec = get_task_spec(task)
    if spec.kind == "point":
        return _POINT_MAX_RETURN
    return float(spec.episode_frames or 1000)
