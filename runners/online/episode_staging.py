"""Per-env episode staging for N training envs feeding one replay.

The replay's index arithmetic reads an episode as consecutive slots, so N envs stepping together must
not write their frames interleaved. Each env's running episode is kept here and written to the
replay whole (`Replay.add_episode`) when it ends, so no frame stack, n-step return or K-step window
can ever span two envs' streams. As in DrQ-v2's episode-file replay, a running episode becomes
sampleable when it is written. With one env the trainer writes step by step instead (unchanged).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from taco_rl.runners.core.replay import Replay


class EpisodeStaging:
    """`begin(i, reset_frame)`, then `add(i, frame, action, reward, discount)` per step of env i,
    then `flush(i)` writes env i's episode to the replay (envs in any interleaving)."""

    def __init__(self, replay: Replay, num_envs: int) -> None:
        self.replay = replay
        self._eps: list[dict[str, list] | None] = [None] * int(num_envs)

    def begin(self, i: int, frame: Any) -> None:
        if self._eps[i] is not None:
            raise RuntimeError(f"env {i}: begin() while its episode is still open; flush() it first")
        self._eps[i] = {"frames": [np.array(frame)], "actions": [], "rewards": [], "discounts": []}

    def add(self, i: int, frame: Any, action: Any, reward: float, discount: float) -> None:
        ep = self._eps[i]
        if ep is None:
            raise RuntimeError(f"env {i}: add() before begin() with its reset frame")
        ep["frames"].append(np.array(frame))  # a copy: a view would keep the whole stacked observation
        ep["actions"].append(np.asarray(action, dtype=np.float32).reshape(-1))
        ep["rewards"].append(float(reward))
        ep["discounts"].append(float(discount))

    def open(self, i: int) -> bool:
        return self._eps[i] is not None

    def flush(self, i: int) -> None:
        """Write env i's episode (as far as it went) to the replay and close it."""
        ep, self._eps[i] = self._eps[i], None
        if ep is None:
            return
        a = self.replay.action_dim
        actions = np.stack(ep["actions"]) if ep["actions"] else np.zeros((0, a), dtype=np.float32)
        self.replay.add_episode(
            np.stack(ep["frames"]),
            actions,
            np.asarray(ep["rewards"], dtype=np.float32),
            np.asarray(ep["discounts"], dtype=np.float32),
        )

    def flush_all(self) -> None:
        for i in range(len(self._eps)):
            self.flush(i)
