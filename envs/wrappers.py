"""The wrapper chain shared by every base env: base -> ActionRepeat -> FrameStack.

Base envs emit single CHW uint8 frames (3, H, W), put the env discount in
``info["discount"]`` and separate true terminals (``terminated``) from time limits
(``truncated``).  These wrappers keep those semantics across repeats and stacks.

Rendering dominates the cost of a MuJoCo step (~10-30 ms vs ~0.02 ms physics on
CPU), and the frames inside a repeat are thrown away.  A base env may therefore
implement the small ``FrameDeferringEnv`` protocol (``step_no_frame`` + ``frame``)
and ActionRepeat renders once per agent step instead of once per env frame.  The
pixels, rewards and discounts are identical either way.
"""

from __future__ import annotations

from collections import deque
from typing import Any, Protocol, SupportsFloat, runtime_checkable

import gymnasium as gym
import numpy as np

__all__ = ["ActionRepeat", "FrameStack", "FrameDeferringEnv"]


@runtime_checkable
class FrameDeferringEnv(Protocol):
    """A base env that can advance one frame without rendering it."""

    def step_no_frame(self, action: np.ndarray) -> tuple[float, bool, bool, dict[str, Any]]:
        """Like ``step`` but returns (reward, terminated, truncated, info), no observation."""
        ...

    def frame(self) -> np.ndarray:
        """The current (3, H, W) uint8 frame."""
        ...


class ActionRepeat(gym.Wrapper[np.ndarray, np.ndarray, np.ndarray, np.ndarray]):
    """Repeat each action ``repeat`` env frames; the reward is the sum over them.

    The discount is the product of the frames' discounts (1.0 unless a true terminal
    was hit).  If the episode ends mid-repeat the repeat stops there;
    ``info["frames"]`` says how many env frames this step actually ran, so callers
    can count simulator frames exactly.  If the wrapped env is a
    FrameDeferringEnv only the last frame of the repeat is rendered.
    """

    def __init__(self, env: gym.Env, repeat: int) -> None:
        if repeat < 1:
            raise ValueError(f"action repeat must be >= 1, got {repeat}")
        super().__init__(env)
        self.repeat = repeat
        self._deferred: FrameDeferringEnv | None = env if isinstance(env, FrameDeferringEnv) else None
        if "render_fps" in env.metadata:  # a video shows one frame per agent step
            self.metadata = dict(env.metadata, render_fps=env.metadata["render_fps"] / repeat)

    def step(self, action: np.ndarray) -> tuple[np.ndarray, SupportsFloat, bool, bool, dict[str, Any]]:
        deferred = self._deferred
        total_reward = 0.0
        discount = 1.0
        frames = 0
        reward: SupportsFloat
        for _ in range(self.repeat):
            if deferred is not None:
                reward, terminated, truncated, info = deferred.step_no_frame(action)
            else:
                obs, reward, terminated, truncated, info = self.env.step(action)
            total_reward += float(reward)
            discount *= float(info.get("discount", 0.0 if terminated else 1.0))
            frames += 1
            if terminated or truncated:
                break
        if deferred is not None:
            obs = deferred.frame()
        info = dict(info, discount=discount, frames=frames)
        return obs, total_reward, terminated, truncated, info


class FrameStack(gym.Wrapper[np.ndarray, np.ndarray, np.ndarray, np.ndarray]):
    """Stack the last ``num_frames`` CHW frames along channels, oldest first.

    At reset the first frame is repeated to fill the stack, so the observation
    shape never changes within an episode.
    """

    def __init__(self, env: gym.Env, num_frames: int) -> None:
        if num_frames < 1:
            raise ValueError(f"frame stack must be >= 1, got {num_frames}")
        super().__init__(env)
        space = env.observation_space
        assert isinstance(space, gym.spaces.Box) and space.dtype == np.uint8 and len(space.shape) == 3
        channels, height, width = space.shape
        self.num_frames = num_frames
        self.observation_space = gym.spaces.Box(0, 255, (channels * num_frames, height, width), np.uint8)
        self._frames: deque[np.ndarray] = deque(maxlen=num_frames)

    def _observation(self) -> np.ndarray:
        return np.concatenate(self._frames, axis=0)

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        frame, info = self.env.reset(seed=seed, options=options)
        for _ in range(self.num_frames):
            self._frames.append(frame)
        return self._observation(), info

    def step(self, action: np.ndarray) -> tuple[np.ndarray, SupportsFloat, bool, bool, dict[str, Any]]:
        frame, reward, terminated, truncated, info = self.env.step(action)
        self._frames.append(frame)
        return self._observation(), reward, terminated, truncated, info
