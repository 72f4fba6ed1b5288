"""``make_env``: build a task's base env and wrap it (ActionRepeat -> FrameStack).

Also registers every task with gymnasium as ``taco/<task>-v0`` so that
``gymnasium.make("taco/cheetah_run-v0")`` works with no arguments (seed through
``reset(seed=...)``) and ``gymnasium.make("taco/cheetah_run-v0", seed=0,
action_repeat=2, render_mode="rgb_array")`` too; keyword arguments go to make_env.
"""

from __future__ import annotations

import gymnasium as gym

from taco_rl.envs.point import PointReach
from taco_rl.envs.render import check_render_args, probe_render_backend
from taco_rl.envs.tasks import ALIASES, TASKS, get_task_spec
from taco_rl.envs.wrappers import ActionRepeat, FrameStack

__all__ = ["make_env", "make_base_env", "env_shapes", "gym_id", "register_gymnasium"]

GYM_NAMESPACE = "taco"


def make_base_env(
    task: str,
    seed: int | None = None,
    *,
    image_size: int = 84,
    fast_render: bool = False,
    render_mode: str | None = None,
    render_size: int = 256,
) -> gym.Env:
    """The unwrapped env of ``task``: single (3, image_size, image_size) uint8 frames."""
    spec = get_task_spec(task)
    check_render_args(render_mode, render_size)
    if spec.kind == "point":
        return PointReach(seed=seed, image_size=image_size, render_mode=render_mode, render_size=render_size)
    probe_render_backend()  # sets MUJOCO_GL before dm_control is first imported
    from taco_rl.envs.dmc import DMCPixelEnv

    return DMCPixelEnv(
        spec, seed, image_size=image_size, fast_render=fast_render, render_mode=render_mode, render_size=render_size
    )


def make_env(
    task: str,
    seed: int | None = None,
    *,
    action_repeat: int = 2,
    frame_stack: int = 3,
    image_size: int = 84,
    fast_render: bool = False,
    render_mode: str | None = None,
    render_size: int = 256,
) -> gym.Env:
    """Build ``task`` as a pixel env: observations (3*frame_stack, S, S) uint8, actions in [-1, 1].

    ``seed`` seeds the first reset (and everything it randomises); ``seed=None``
    leaves it to ``reset(seed=s)``, which reseeds at any time (gymnasium's way).
    ``fast_render`` disables shadows and multisampling (faster, slightly
    different pixels; never a benchmark default).  ``render_mode="rgb_array"``
    makes ``env.render()`` return the current state as (render_size,
    render_size, 3) uint8 for videos; observations do not change.
    """
    base = make_base_env(
        task, seed, image_size=image_size, fast_render=fast_render, render_mode=render_mode, render_size=render_size
    )
    return FrameStack(ActionRepeat(base, action_repeat), frame_stack)


def env_shapes(env: gym.Env) -> tuple[tuple[int, int, int], int]:
    """A pixel env's observation shape (C, H, W) and action dimension (``make_env``'s envs have both)."""
    obs, action = env.observation_space.shape, env.action_space.shape
    if obs is None or len(obs) != 3 or action is None or len(action) != 1:
        raise ValueError(f"expected (C, H, W) observations and flat actions, got shapes {obs} and {action}")
    return obs, action[0]


def gym_id(task: str) -> str:
    """The gymnasium id of a task, e.g. ``taco/cheetah_run-v0``."""
    return f"{GYM_NAMESPACE}/{task}-v0"


def register_gymnasium() -> None:
    """Register every task (and alias) with gymnasium (idempotent; runs on ``import taco_rl.envs`` and from
    taco_rl._gymnasium_hook)."""
    for task in (*TASKS, *ALIASES):
        env_id = gym_id(task)
        if env_id not in gym.registry:
            gym.register(id=env_id, entry_point="taco_rl.envs.registry:make_env", kwargs={"task": task})
