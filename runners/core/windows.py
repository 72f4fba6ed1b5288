"""K-step TACO windows from a user's own stored transitions (plain numpy or torch arrays).

The suite's replay builds TACO's inputs at sample time; a learner with its own storage (the usual
``obs, action, reward, next_obs, done`` arrays of a cleanrl-style script) gets them here. The rule is
the replay's (SPEC 2): a window starting at t is drawn only where its K transitions t .. t+K-1 lie in
one episode, so it never reads across an episode end.

    windows = WindowSampler(obs, actions, rewards, dones, next_obs=next_obs, k=3)
    loss, metrics = taco(**windows.sample(256))     # obs, action_seq, reward_seq, future_obs
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

__all__ = ["WindowSampler"]


def _tensor(x: Any, name: str) -> torch.Tensor:
    """A tensor sharing x's memory where it can (numpy arrays are not copied)."""
    if isinstance(x, torch.Tensor):
        return x
    if isinstance(x, np.ndarray):
        return torch.from_numpy(x if x.flags.writeable else x.copy())
    raise TypeError(f"{name}: expected a numpy array or a torch.Tensor, got {type(x).__name__}")


class WindowSampler:
    """Samples TACO's K-step windows uniformly over the starts that keep them inside one episode.

    Args:
        obs: (N, *obs_shape), the observation s_t each transition t starts from, oldest first.
        actions: (N, A), a_t.
        rewards: (N,) or (N, 1), r_t.
        dones: (N,) or (N, 1) bool, True where the episode ended with transition t, terminated *or*
            truncated (a time limit ends an episode too: windows must not run into the next one).
        k: K, the actions per window.
        next_obs: (N, *obs_shape), s_{t+1}, optional. With it the future observation s_{t+K} of a
            window is ``next_obs[t+K-1]``, so a window may end with its episode (the replay's rule:
            K transitions left). Without it, s_{t+K} is ``obs[t+K]``, which must still belong to the
            episode: a window needs K+1 observations of it, and an episode's last window is lost.
        device: where sampled windows go (default: where the arrays are).

    The arrays are read in place (numpy through ``torch.from_numpy``); only sampled rows are copied.
    A ring buffer must be passed in time order (``np.roll`` it so that the oldest row comes first).
    """

    def __init__(
        self,
        obs: Any,
        actions: Any,
        rewards: Any,
        dones: Any,
        *,
        k: int = 3,
        next_obs: Any = None,
        device: str | torch.device | None = None,
    ) -> None:
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        self.obs, self.actions = _tensor(obs, "obs"), _tensor(actions, "actions")
        self.rewards, dones_t = _tensor(rewards, "rewards"), _tensor(dones, "dones")
        self.next_obs = None if next_obs is None else _tensor(next_obs, "next_obs")
        self.k, self.device = k, device
        if self.obs.dim() < 2:
            raise ValueError(f"obs: expected (N, *obs_shape), got shape {tuple(self.obs.shape)}")
        n = self.obs.shape[0]
        if self.actions.dim() != 2 or self.actions.shape[0] != n:
            raise ValueError(f"actions: expected (N, A) with N={n} (the rows of obs), got {tuple(self.actions.shape)}")
        for name, x in (("rewards", self.rewards), ("dones", dones_t)):
            if x.shape not in ((n,), (n, 1)):
                raise ValueError(f"{name}: expected ({n},) or ({n}, 1), got {tuple(x.shape)}")
        if dones_t.dtype != torch.bool:
            raise ValueError(f"dones: expected a bool array (True where an episode ended), got {dones_t.dtype}")
        if self.next_obs is not None and self.next_obs.shape != self.obs.shape:
            raise ValueError(
                f"next_obs: expected the shape of obs {tuple(self.obs.shape)}, got {tuple(self.next_obs.shape)}"
            )
        self.rewards = self.rewards.reshape(n)
        self.starts = self.valid_starts(dones_t.reshape(n), k, with_next_obs=self.next_obs is not None)
        if len(self.starts) == 0:
            raise ValueError(
                f"no window of k={k} fits in one episode of these {n} transitions "
                f"(every episode is shorter than {k if self.next_obs is not None else k + 1} steps)"
            )

    @staticmethod
    def valid_starts(dones: torch.Tensor, k: int, *, with_next_obs: bool) -> torch.Tensor:
        """The starts t whose window stays in one episode, in increasing order.

        With next_obs the window reads transitions t .. t+K-1: no episode may end before the last of
        them (an end at t+K-1 itself is fine). Without it, it also reads obs[t+K]: no end at t+K-1
        either, and t+K must exist.
        """
        span = k if with_next_obs else k + 1  # rows read: t .. t+span-1
        n = len(dones)
        if n < span:
            return torch.zeros(0, dtype=torch.long, device=dones.device)
        ends_before = torch.cat([dones.new_zeros(1, dtype=torch.long), dones.long().cumsum(0)])  # ends in [0, i)
        t = torch.arange(n - span + 1, device=dones.device)
        # ends among t .. t+span-2: the last row of the window may end its episode only with next_obs
        inner = ends_before[t + span - 1] - ends_before[t]
        return t[inner == 0]

    def __len__(self) -> int:
        """How many windows there are to draw from."""
        return len(self.starts)

    def gather(self, starts: Any) -> dict[str, torch.Tensor]:
        """The windows starting at `starts` (B indices, each a valid start): ``obs`` (B, *obs_shape),
        ``action_seq`` (B, K, A), ``reward_seq`` (B, K) float32, ``future_obs`` (B, *obs_shape)."""
        t = torch.as_tensor(starts, dtype=torch.long, device=self.starts.device).reshape(-1)
        bad = t[~torch.isin(t, self.starts)]
        if len(bad):
            raise ValueError(
                f"starts {bad[:5].tolist()}: their K={self.k}-step windows leave the stored episodes (see valid_starts)"
            )
        return self._gather(t)

    def _gather(self, t: torch.Tensor) -> dict[str, torch.Tensor]:
        t = t.to(self.obs.device)
        steps = t[:, None] + torch.arange(self.k, device=t.device)  # (B, K)
        future = self.next_obs[t + self.k - 1] if self.next_obs is not None else self.obs[t + self.k]
        out = {
            "obs": self.obs[t],
            "action_seq": self.actions[steps],
            "reward_seq": self.rewards[steps].float(),
            "future_obs": future,
        }
        return {key: value.to(self.device) for key, value in out.items()} if self.device is not None else out

    def sample(self, batch_size: int, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """`batch_size` windows drawn uniformly, with replacement, over the valid starts."""
        pick = torch.randint(len(self.starts), (batch_size,), generator=generator, device=self.starts.device)
        return self._gather(self.starts[pick])
