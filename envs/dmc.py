"""dm_control tasks as gymnasium base envs that emit single CHW uint8 frames.

Two loaders share one class: suite tasks render ``physics.render(camera_id=...)``
themselves; manipulation tasks such as ``reach_duplo`` (dm_control.manipulation,
composer envs) render their own ``front_close`` camera observation at 84x84 every
control step.

dm_control is imported inside functions only, after ``probe_render_backend`` has
set ``MUJOCO_GL`` (dm_control fixes its GL backend when first imported).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import Any

import gymnasium as gym
import numpy as np

from taco_rl.envs.render import check_render_args
from taco_rl.envs.tasks import TaskSpec

__all__ = ["DMCPixelEnv", "rescale_action", "apply_fast_render"]

MANIPULATION_IMAGE_SIZE = 84  # dm_control's *_vision manipulation cameras are 84x84
# MuJoCo's compiler warns about cheetah.xml's `<compiler settotalmass=...>` at every build, through
# dm_control's warning callback into absl's logger; the model is dm_control's, not ours to change.
SETTOTALMASS_WARNING = "compiler attribute 'settotalmass' is deprecated"


def _not_settotalmass(record: logging.LogRecord) -> bool:
    return SETTOTALMASS_WARNING not in record.getMessage()


@contextlib.contextmanager
def _quiet_settotalmass() -> Iterator[None]:
    """Drop exactly MuJoCo's settotalmass deprecation warning while a task's model is compiled."""
    absl_logger = logging.getLogger("absl")
    absl_logger.addFilter(_not_settotalmass)
    try:
        yield
    finally:
        absl_logger.removeFilter(_not_settotalmass)


def rescale_action(
    action: np.ndarray, minimum: np.ndarray, maximum: np.ndarray, dtype: np.dtype | type = np.float64
) -> np.ndarray:
    """Clip ``action`` to [-1, 1] and map it linearly onto [minimum, maximum].

    -1 -> minimum, +1 -> maximum; the result is cast to ``dtype`` (the spec's
    dtype: dm_control checks it and numpy 2 will not cast silently).  Rounded as
    the reference implementations' env chain rounds it, bit for bit: the action
    and the bounds as float32 (their float32 action spec), the map in float64
    (dm_control's ``action_scale.Wrapper`` under NumPy 2), the result to float32,
    then to ``dtype``.
    """
    a = np.clip(np.asarray(action, dtype=np.float32), -1.0, 1.0).astype(np.float64)
    low = np.asarray(minimum, dtype=np.float32)
    high = np.asarray(maximum, dtype=np.float32)
    half_span = (high - low).astype(np.float64) / 2.0
    return (low.astype(np.float64) + half_span * (a + 1.0)).astype(np.float32).astype(dtype)


def apply_fast_render(quality: Any) -> None:
    """Turn off shadows and multisampling on a ``vis.quality``/``visual.quality``.

    Must happen before the first render: the render context copies these when it
    is created (lazily, at the first ``physics.render``). ~4-6x faster frames on
    CPU, slightly different pixels, so never a benchmark default.
    """
    quality.shadowsize = 0
    quality.offsamples = 0


class DMCPixelEnv(gym.Env[np.ndarray, np.ndarray]):
    """A dm_control task seen through pixels.

    Actions in [-1, 1] are rescaled to the task's spec.  A dm_control LAST step
    with discount 0 is ``terminated``; with discount > 0 (the time limit) it is
    ``truncated``.  ``info["discount"]`` carries the env discount.

    ``seed=None`` draws the task's randomness from the OS until ``reset(seed=s)``.
    With ``render_mode="rgb_array"``, ``render()`` returns the current state seen by
    the task's camera as (render_size, render_size, 3) uint8, rendered anew at
    that size (observations are unchanged).
    """

    metadata: dict[str, Any] = {"render_modes": ["rgb_array"], "render_fps": 100}

    def __init__(
        self,
        spec: TaskSpec,
        seed: int | None = None,
        image_size: int = 84,
        fast_render: bool = False,
        render_mode: str | None = None,
        render_size: int = 256,
    ) -> None:
        check_render_args(render_mode, render_size)
        if spec.kind == "manipulation" and image_size != MANIPULATION_IMAGE_SIZE:
            # Its camera observable is fixed at 84x84; resizing would change the task's pixels.
            raise ValueError(
                f"{spec.name} renders its {spec.pixels_key!r} camera at "
                f"{MANIPULATION_IMAGE_SIZE}x{MANIPULATION_IMAGE_SIZE} only; got image_size={image_size}"
            )
        self.task_spec = spec
        self.image_size = image_size
        self.fast_render = fast_render
        self._env = self._load(spec, seed)
        if spec.kind == "manipulation":
            # The composer env recompiles Physics from the MJCF model at every reset,
            # so the quality settings go on the MJCF model itself.
            if fast_render:
                apply_fast_render(self._env.task.root_entity.mjcf_model.visual.quality)
        elif fast_render:
            apply_fast_render(self._env.physics.model.vis.quality)

        action_spec = self._env.action_spec()
        self._action_dtype = action_spec.dtype
        self._action_min = np.broadcast_to(action_spec.minimum, action_spec.shape).astype(np.float64)
        self._action_max = np.broadcast_to(action_spec.maximum, action_spec.shape).astype(np.float64)
        self.action_space = gym.spaces.Box(-1.0, 1.0, action_spec.shape, np.float32)
        self.observation_space = gym.spaces.Box(0, 255, (3, image_size, image_size), np.uint8)
        self._needs_reset = True
        self._time_step: Any = None
        self._closed = False
        self._cameras: dict[tuple[int, int | str], Any] = {}
        self.render_mode = render_mode
        self.render_size = render_size
        # one video frame per control step; ActionRepeat divides this by its repeat
        self.metadata = dict(self.metadata, render_fps=round(1.0 / self._env.control_timestep()))

    @staticmethod
    def _load(spec: TaskSpec, seed: int | None) -> Any:
        if spec.kind == "suite":
            from dm_control import suite

            with _quiet_settotalmass():
                return suite.load(spec.domain, spec.task, task_kwargs={"random": seed}, visualize_reward=False)
        if spec.kind == "manipulation":
            from dm_control import manipulation

            return manipulation.load(spec.task, seed=seed)
        raise ValueError(f"{spec.name} is not a dm_control task")

    @property
    def physics(self) -> Any:
        """The current dm_control Physics (a composer env replaces it at each reset)."""
        return self._env.physics

    def _reseed(self, seed: int) -> None:
        """Restart the task's random stream in place, as if built with ``seed``."""
        if self.task_spec.kind == "suite":
            self._env.task.random.seed(seed)
        else:
            self._env.random_state.seed(seed)

    def _camera(self) -> int | str:
        if self.task_spec.kind == "manipulation":
            return self._env.task.observables[self.task_spec.pixels_key]._mjcf_element.full_identifier
        return self.task_spec.camera_id

    def render_rgb(self, size: int | None = None) -> np.ndarray:
        """The current state through the task's camera as (size, size, 3) uint8 (default render_size)."""
        size = self.render_size if size is None else size
        if self._time_step is None:
            raise RuntimeError("nothing to render yet: call reset() first")
        return self._render(size, self._camera()).copy()

    def _render(self, size: int, camera_id: int | str) -> np.ndarray:
        """What ``physics.render(size, size, camera_id=camera_id)`` returns, from a dm_control Camera
        kept per (size, camera) instead of one built and freed per call (its scene allocation is
        ~10% of a faithful 84x84 frame on CPU). Each render rebuilds the scene from the current
        state, so the pixels are the same; a new Physics (a composer env's reset) gets new cameras.
        The array is the camera's buffer: valid until its next render."""
        physics = self._env.physics
        camera = self._cameras.get((size, camera_id))
        if camera is None or camera._physics is not physics:  # noqa: SLF001 - dm_control's own link
            from dm_control.mujoco import Camera

            camera = self._cameras[(size, camera_id)] = Camera(physics, height=size, width=size, camera_id=camera_id)
        return camera.render()

    def render(self) -> np.ndarray | None:
        if self.render_mode is None:
            gym.logger.warn("render() needs render_mode='rgb_array' (make_env(..., render_mode='rgb_array'))")
            return None
        return self.render_rgb()

    def frame(self) -> np.ndarray:
        """The current frame as (3, H, W) uint8 (rendered now for suite tasks)."""
        if self.task_spec.kind == "manipulation":
            pixels = self._time_step.observation[self.task_spec.pixels_key][0]
        else:
            pixels = self._render(self.image_size, self.task_spec.camera_id)
        return np.ascontiguousarray(pixels.transpose(2, 0, 1), dtype=np.uint8)

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        if seed is not None:
            self._reseed(seed)
        self._time_step = self._env.reset()
        self._needs_reset = False
        return self.frame(), {"discount": 1.0}

    def step_no_frame(self, action: np.ndarray) -> tuple[float, bool, bool, dict[str, Any]]:
        """Advance one env frame without rendering (see wrappers.FrameDeferringEnv)."""
        if self._needs_reset:
            raise RuntimeError("episode is over (or never started): call reset() before step()")
        env_action = rescale_action(action, self._action_min, self._action_max, self._action_dtype)
        time_step = self._time_step = self._env.step(env_action)
        discount = float(time_step.discount) if time_step.discount is not None else 1.0
        last = time_step.last()
        terminated = last and discount == 0.0
        truncated = last and not terminated
        self._needs_reset = last
        reward = float(time_step.reward) if time_step.reward is not None else 0.0
        return reward, terminated, truncated, {"discount": discount}

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        reward, terminated, truncated, info = self.step_no_frame(action)
        return self.frame(), reward, terminated, truncated, info

    def close(self) -> None:
        """Free the simulator (idempotent)."""
        if not self._closed:
            self._closed = True
            for camera in self._cameras.values():
                camera._scene.free()  # noqa: SLF001 - what physics.render does with its own
            self._cameras.clear()
            self._env.close()
            # free the GL context now, on this thread (it is bound to the one that rendered); a composer
            # env (reach_duplo) freed its physics on close already
            with contextlib.suppress(ReferenceError):
                self._env.physics.free()
