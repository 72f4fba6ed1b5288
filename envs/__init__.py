"""Pixel environments: dm_control tasks (and a toy numpy task) as gymnasium envs.

Envs know nothing of learning.  Every task is a base env emitting single CHW uint8
frames, wrapped ActionRepeat -> FrameStack:

    from taco_rl import envs
    env = envs.make_env("cheetah_run", seed=0)            # obs (9, 84, 84) uint8
    obs, info = env.reset()
    obs, reward, terminated, truncated, info = env.step(env.action_space.sample())

The same tasks are registered with gymnasium under the ids
``taco/<task>-v0`` (on ``import taco_rl.envs``, and in any process of an environment where
taco-rl is installed, as soon as gymnasium is imported: see taco_rl/_gymnasium_hook.py), following
gymnasium's conventions: ``gymnasium.make("taco/cheetah_run-v0")``
needs no arguments and is seeded by ``reset(seed=...)`` (so SB3's ``make_vec_env``
and gymnasium's env checkers work); keyword arguments go to make_env, e.g.
``gymnasium.make("taco/cheetah_run-v0", seed=0, action_repeat=2)``.  ``close()``
may be called any number of times.

Videos: pass ``render_mode="rgb_array"`` (and ``render_size``, default 256, the
size of the reference's eval videos) and ``env.render()`` returns the current
state as (render_size, render_size, 3) uint8 RGB through the whole wrapper
chain, rendered anew at that size by the task's own camera (point_reach draws it),
while observations stay at ``image_size``.  ``metadata["render_fps"]`` is one frame
per agent step, so gymnasium's RecordVideo and SB3's VecVideoRecorder work as is:

    env = envs.make_env("cheetah_run", seed=0, render_mode="rgb_array", render_size=256)
    env.reset(); frame = env.render()                      # (256, 256, 3) uint8
    env.unwrapped.render_rgb(128)                          # any size, any render_mode

Semantics (SPEC section 1): reward is summed over the repeated frames;
``info["discount"]`` is the env discount (1.0 on DMC); ``terminated`` only for a
true terminal, a time limit is ``truncated`` (DMC: 1000 frames = 500 steps at
action repeat 2); ``info["frames"]`` counts the env frames a step ran.
MuJoCo tasks call ``probe_render_backend()`` first, which sets ``MUJOCO_GL``
(egl, else osmesa) if unset.  Tasks (envs.tasks): every dm_control suite task as
``<domain>_<task>`` (``cup_catch``, alias ``ball_in_cup_catch``) and every
dm_control.manipulation ``<name>_vision`` env as ``<name>``.  Manipulation tasks
(``reach_duplo``, ``lift_brick``, ...) only support image_size=84 (their camera
observation is fixed at 84x84; other sizes raise ValueError) and keep dm_control's
own time limit of 250 frames (125 steps at action repeat 2); lqr has none.
``point_reach`` is pure numpy (see envs.point) and needs no GL backend.
"""

from taco_rl.envs.dmc import rescale_action
from taco_rl.envs.point import PointReach
from taco_rl.envs.registry import gym_id, make_base_env, make_env, register_gymnasium
from taco_rl.envs.render import RenderBackendError, probe_render_backend
from taco_rl.envs.tasks import ALIASES, REFERENCE_TASKS, TASK_TABLE, TASKS, TaskSpec, UnknownTaskError, get_task_spec
from taco_rl.envs.wrappers import ActionRepeat, FrameStack

__all__ = [
    "TASKS",
    "TASK_TABLE",
    "ALIASES",
    "REFERENCE_TASKS",
    "TaskSpec",
    "UnknownTaskError",
    "get_task_spec",
    "RenderBackendError",
    "probe_render_backend",
    "make_env",
    "make_base_env",
    "gym_id",
    "ActionRepeat",
    "FrameStack",
    "PointReach",
    "rescale_action",
]

register_gymnasium()
