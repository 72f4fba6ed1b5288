"""Pixel environments: dm_control tasks (and a toy numpy task) as gymnasium envs.

Envs know nothing of learning.  Every task is a base env emitting single CHW uint8
frames, wrapped ActionRepeat -> FrameStack:

    import envs
    env = envs.make_env("cheetah_run", seed=0)            # obs (9, 84, 84) uint8
    obs, info = env.reset()
    obs, reward, terminated, truncated, info = env.step(env.action_space.sample())

The same tasks are registered with gymnasium on ``import envs`` under the ids
``taco/<task>-v0`` (e.g. ``gymnasium.make("taco/cheetah_run-v0", seed=0,
action_repeat=2)``; keyword arguments go to make_env, ``seed`` is required).

Semantics (SPEC section 1): reward is summed over the repeated frames;
``info["discount"]`` is the env discount (1.0 on DMC); ``terminated`` only for a
true terminal, a time limit is ``truncated`` (DMC: 1000 frames = 500 steps at
action repeat 2); ``info["frames"]`` counts the env frames a step ran.
MuJoCo tasks call ``probe_render_backend()`` first, which sets ``MUJOCO_GL``
(egl, else osmesa) if unset.  ``reach_duplo`` only supports image_size=84 (its
camera observation is fixed at 84x84; other sizes raise ValueError) and keeps
dm_control's own time limit of 250 frames (125 steps at action repeat 2).
``point_reach`` is pure numpy (see envs.point) and needs no GL backend.
"""

from envs.dmc import rescale_action
from envs.point import PointReach
from envs.registry import gym_id, make_base_env, make_env, register_gymnasium
from envs.render import RenderBackendError, probe_render_backend
from envs.tasks import TASK_TABLE, TASKS, TaskSpec, UnknownTaskError, get_task_spec
from envs.wrappers import ActionRepeat, FrameStack

__all__ = [
    "TASKS", "TASK_TABLE", "TaskSpec", "UnknownTaskError", "get_task_spec",
    "RenderBackendError", "probe_render_backend",
    "make_env", "make_base_env", "gym_id",
    "ActionRepeat", "FrameStack", "PointReach", "rescale_action",
]

register_gymnasium()
