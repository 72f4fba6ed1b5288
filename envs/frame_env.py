"""A task env that emits what a dataset stores: one (H, W, 3) uint8 frame per step, no frame stack.

Minari datasets exported by taco-rl hold single HWC frames, so their env spec names this env
(``taco/<task>-frame-v0``, entry point ``taco_rl.envs.frame_env:make_frame_env``): its observation
space equals the dataset's, and ``MinariDataset.recover_environment()`` builds it. Stack frames
yourself (or use ``gymnasium.make("taco/<task>-v0")``) to feed a learner.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

from taco_rl.envs.registry import GYM_NAMESPACE, make_env

ENTRY_POINT = "taco_rl.envs.frame_env:make_frame_env"


class HWCFrame(gym.ObservationWrapper):
    """(3, H, W) CHW frames -> (H, W, 3) HWC frames (the layout of Minari image datasets)."""

    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)
        shape = env.observation_space.shape
        if shape is None or len(shape) != 3 or shape[0] != 3:
            raise ValueError(f"HWCFrame needs single RGB frames (3, H, W), got {shape}")
        _, h, w = shape
        self.observation_space = gym.spaces.Box(0, 255, (h, w, 3), np.uint8)

    def observation(self, observation: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(observation.transpose(1, 2, 0))


def make_frame_env(
    task: str,
    seed: int | None = None,
    *,
    action_repeat: int = 2,
    image_size: int = 84,
    fast_render: bool = False,
    **kwargs: Any,
) -> gym.Env:
    """``task`` with single HWC frames: make_env(frame_stack=1), transposed to (H, W, 3)."""
    return HWCFrame(
        make_env(
            task,
            seed,
            action_repeat=action_repeat,
            frame_stack=1,
            image_size=image_size,
            fast_render=fast_render,
            **kwargs,
        )
    )


def frame_env_spec(
    task: str, *, action_repeat: int, image_size: int, fast_render: bool = False
) -> gym.envs.registration.EnvSpec:
    """The env spec of ``make_frame_env`` with these settings (usable by ``gymnasium.make`` unregistered)."""
    return gym.envs.registration.EnvSpec(
        id=f"{GYM_NAMESPACE}/{task}-frame-v0",
        entry_point=ENTRY_POINT,
        kwargs={"task": task, "action_repeat": action_repeat, "image_size": image_size, "fast_render": fast_render},
    )
