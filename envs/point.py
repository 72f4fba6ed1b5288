"""``point_reach``: a tiny pure-numpy pixel task for tests and CPU learning proofs.

A red point p in [-1, 1]^2 moves by ``p <- clip(p + 0.15 * a, -1, 1)`` per env frame
(a in [-1, 1]^2) toward a green target (the image centre by default).  Reward per
frame is ``max(0, 1 - ||p - target||)``; an episode is 50 frames and then
*truncated* (there are no terminal states, as in DMC).  The start position is
uniform in [-1, 1]^2 from the seeded RNG.  No MuJoCo or render backend is needed,
and a step costs a few microseconds, so DrQ-v2 can learn it on a CPU with small
images (24 or 32 px).

Reference returns (``measure_returns``: action_repeat=1, 200 episodes, seed 0):
uniform random actions score RANDOM_RETURN = 11.9 and the scripted policy that
heads straight for the target, ``a = clip((target - p) / 0.15, -1, 1)``, scores
SCRIPTED_RETURN = 48.5 (of a maximum 50).  Over 20 episodes the random mean
varies by about +-1.5 (one std), the scripted one by +-0.2.  tests/test_envs.py
recomputes both.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import gymnasium as gym
import numpy as np

from taco_rl.envs.render import check_render_args
from taco_rl.envs.wrappers import ActionRepeat, FrameStack

__all__ = ["PointReach", "scripted_action", "measure_returns", "RANDOM_RETURN", "SCRIPTED_RETURN"]

# Mean episode returns measured with measure_returns(episodes=200, seed=0);
# tests/test_envs.py checks them again.
RANDOM_RETURN: float = 11.9
SCRIPTED_RETURN: float = 48.5

STEP_SIZE = 0.15
EPISODE_FRAMES = 50


class PointReach(gym.Env[np.ndarray, np.ndarray]):
    """Base env: single CHW uint8 frames, ``info["discount"]`` always 1.0.

    With ``render_mode="rgb_array"``, ``render()`` draws the current state as
    (render_size, render_size, 3) uint8 (the observation drawn at another size).
    """

    metadata: dict[str, Any] = {"render_modes": ["rgb_array"], "render_fps": 25}

    def __init__(
        self,
        seed: int | None = None,
        image_size: int = 84,
        random_target: bool = False,
        render_mode: str | None = None,
        render_size: int = 256,
    ) -> None:
        if image_size < 8:
            raise ValueError(f"image_size must be >= 8 for point_reach, got {image_size}")
        check_render_args(render_mode, render_size)
        self.render_mode = render_mode
        self.render_size = render_size
        self.image_size = image_size
        self.random_target = random_target
        self.observation_space = gym.spaces.Box(0, 255, (3, image_size, image_size), np.uint8)
        self.action_space = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)
        self.marker = max(2, math.ceil(image_size / 10))  # square side in pixels
        self.position = np.zeros(2)
        self.target = np.zeros(2)
        self._frame_count = 0
        self._pending_seed = seed  # used by the first reset() that passes no seed

    @staticmethod
    def _to_pixel(xy: np.ndarray, size: int, marker: int) -> tuple[int, int]:
        """Top-left corner (row, col) of the marker centred on xy; y points up."""
        span = size - marker
        col = int(round((xy[0] + 1.0) / 2.0 * span))
        row = int(round((1.0 - xy[1]) / 2.0 * span))
        return row, col

    def render_frame(self, size: int | None = None) -> np.ndarray:
        """The current state drawn as (3, size, size) uint8 (default: the observation size)."""
        size = self.image_size if size is None else size
        m = self.marker if size == self.image_size else max(2, math.ceil(size / 10))
        frame = np.zeros((3, size, size), np.uint8)
        row, col = self._to_pixel(self.target, size, m)
        frame[1, row : row + m, col : col + m] = 255
        row, col = self._to_pixel(self.position, size, m)
        frame[:, row : row + m, col : col + m] = 0  # the point is drawn over the target
        frame[0, row : row + m, col : col + m] = 255
        return frame

    def render_rgb(self, size: int | None = None) -> np.ndarray:
        """The current state as (size, size, 3) uint8 (default render_size)."""
        size = self.render_size if size is None else size
        return np.ascontiguousarray(self.render_frame(size).transpose(1, 2, 0))

    def render(self) -> np.ndarray | None:
        if self.render_mode is None:
            gym.logger.warn("render() needs render_mode='rgb_array' (make_env(..., render_mode='rgb_array'))")
            return None
        return self.render_rgb()

    def _reward(self) -> float:
        return max(0.0, 1.0 - float(np.linalg.norm(self.position - self.target)))

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        if seed is None:
            seed, self._pending_seed = self._pending_seed, None
        super().reset(seed=seed)
        self.position = self.np_random.uniform(-1.0, 1.0, size=2)
        self.target = self.np_random.uniform(-1.0, 1.0, size=2) if self.random_target else np.zeros(2)
        self._frame_count = 0
        return self.render_frame(), {"discount": 1.0}

    def step_no_frame(self, action: np.ndarray) -> tuple[float, bool, bool, dict[str, Any]]:
        """Advance one frame without drawing it (see wrappers.FrameDeferringEnv)."""
        a = np.clip(np.asarray(action, dtype=np.float64).reshape(2), -1.0, 1.0)
        self.position = np.clip(self.position + STEP_SIZE * a, -1.0, 1.0)
        self._frame_count += 1
        truncated = self._frame_count >= EPISODE_FRAMES
        return self._reward(), False, truncated, {"discount": 1.0}

    def frame(self) -> np.ndarray:
        return self.render_frame()

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        reward, terminated, truncated, info = self.step_no_frame(action)
        return self.render_frame(), reward, terminated, truncated, info


def scripted_action(env: gym.Env) -> np.ndarray:
    """The straight-to-target policy; reads the state of the underlying PointReach."""
    base = env.unwrapped
    assert isinstance(base, PointReach)
    return np.clip((base.target - base.position) / STEP_SIZE, -1.0, 1.0).astype(np.float32)


def _episode_returns(env: gym.Env, policy: Callable[[], np.ndarray], episodes: int, seed: int) -> float:
    total = 0.0
    for episode in range(episodes):
        env.reset(seed=seed + episode)
        done = False
        while not done:
            _, reward, terminated, truncated, _ = env.step(policy())
            total += float(reward)
            done = terminated or truncated
    return total / episodes


def measure_returns(episodes: int = 200, seed: int = 0, image_size: int = 24) -> tuple[float, float]:
    """Mean (random, scripted) episode returns of point_reach at action_repeat=1.

    Episode i starts from reset(seed=seed+i) for both policies; random actions come
    from numpy's default_rng(seed).
    """
    env = FrameStack(ActionRepeat(PointReach(seed=seed, image_size=image_size), 1), 1)
    rng = np.random.default_rng(seed)
    random_return = _episode_returns(env, lambda: rng.uniform(-1.0, 1.0, size=2).astype(np.float32), episodes, seed)
    scripted_return = _episode_returns(env, lambda: scripted_action(env), episodes, seed)
    return random_return, scripted_return
