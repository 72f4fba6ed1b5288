"""Env stepping that runs while the learner updates.

In the online loop the action of step t is chosen before update t, and update t reads nothing that
env.step(action_t) returns. So the step can run in a worker thread during the update and the run
computes exactly the numbers of the serial loop:
- the env draws only from its own generators (numpy, MuJoCo), never from torch's global generator
  that the learner samples augmentations and noise from;
- the caller waits for the step (`result`) before anything reads it, and resets the env only
  when no step is in flight, so the env sees the same calls in the same order either way.
MuJoCo, the renderer and torch release the GIL while they compute, so a thread overlaps for real.
Every env call goes through the stepper (`call` for resets): dm_control's EGL context is bound to
the thread that first renders with it, so the worker is the only thread that ever touches the env.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

_IDLE = object()


class EnvStepper:
    """`start(action)` begins env.step(action); `result()` returns what it returned; `call(fn)`
    runs any other env call (reset) on the same thread; `close()` closes the env there.

    With `overlap=False` the step runs inside `result()` on the calling thread: the serial loop.
    """

    def __init__(self, env, overlap: bool) -> None:
        self.env, self.overlap = env, overlap
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="env-step") if overlap else None
        self._pending: Any = _IDLE
        self._closed = False

    def start(self, action) -> None:
        if self._pending is not _IDLE:
            raise RuntimeError("EnvStepper.start: the previous step's result was not collected")
        self._pending = self._pool.submit(self.env.step, action) if self._pool is not None else action

    def result(self) -> tuple:
        pending, self._pending = self._pending, _IDLE
        if pending is _IDLE:
            raise RuntimeError("EnvStepper.result: no step was started")
        if isinstance(pending, Future):
            return pending.result()
        return self.env.step(pending)

    def call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """fn(*args, **kwargs) on the thread that steps the env (e.g. `env.reset`), waiting for it."""
        if self._pending is not _IDLE:
            raise RuntimeError("EnvStepper.call: a step is in flight; collect its result first")
        if self._pool is None:
            return fn(*args, **kwargs)
        return self._pool.submit(fn, *args, **kwargs).result()

    def close(self) -> None:
        """Wait for a step in flight (its result is dropped), close the env on its thread (a GL
        context freed from another thread fails) and stop the worker. Idempotent."""
        pending, self._pending = self._pending, _IDLE
        if isinstance(pending, Future):
            pending.exception()  # wait; an error there is not this caller's to raise now
        close = getattr(self.env, "close", None)
        if close is not None and not self._closed:
            self._closed = True
            self.call(close)
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
