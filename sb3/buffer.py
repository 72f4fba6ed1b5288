"""A replay buffer that also returns what TACO needs: a_t .. a_{t+K-1} and the observation K steps ahead.

Each batch holds two draws, each uniform over the stored steps whose sequence stays inside one
episode of one env (no sample ever spans an episode end or two envs):

- SAC's transitions (observations, actions, n-step rewards, next observations, dones, discounts):
  t with n steps left, so an episode's last transition, terminal or not, is trained on;
- TACO's (taco_observations, action_seq, future_observations, taco_rewards): t' with max(n, K)
  steps left, as in the suite (SPEC section 2).  When K <= n both draws are the same positions.

(A single draw needing max(n, K) steps would never train the critic on the last K - n transitions of
an episode, nor ever on a terminal one when K > n.)  The observation after an episode's last step is
the env's final observation (SB3 hands it over from ``infos[i]["terminal_observation"]``); ``dones``
excludes time limits when ``handle_timeout_termination`` is on (the default), so a truncated episode
is bootstrapped.

Memory: each observation is stored once (next observations are read from the following slot, and
only the final observation of each episode is kept aside), about half of SB3's default ReplayBuffer.
At 9x84x84 uint8 that is 63.5 KB per transition: 100k transitions ~ 6.4 GB, SB3's default 1M ~ 64 GB.
"""

from __future__ import annotations

from typing import Any, NamedTuple, NoReturn

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3.common.buffers import ReplayBuffer
from stable_baselines3.common.vec_env import VecNormalize

__all__ = ["TacoReplayBuffer", "TacoReplayBufferSamples"]

MAX_DRAWS = 64  # redraws of invalid positions before giving up (valid positions are the vast majority)


class TacoReplayBufferSamples(NamedTuple):
    """SB3's ReplayBufferSamples fields first (draw t), then TACO's (draw t')."""

    observations: th.Tensor
    actions: th.Tensor
    next_observations: th.Tensor  # s_{t+n}
    dones: th.Tensor  # 1 only for a true terminal at step t+n-1
    rewards: th.Tensor  # n-step return sum_{i<n} gamma^i r_{t+i} (r_t when n_steps=1)
    discounts: th.Tensor  # gamma^n
    taco_observations: th.Tensor  # s_t'
    action_seq: th.Tensor  # (B, K, |A|): a_t' .. a_{t'+K-1}
    future_observations: th.Tensor  # s_{t'+K}
    taco_rewards: th.Tensor  # n-step return from t' (the target of TACO's reward head)


class TacoReplayBuffer(ReplayBuffer):
    """SB3 ReplayBuffer subclass with K-step action sequences and future observations (and n-step returns).

    :param k: TACO's K (TacoSAC passes its ``taco_k``)
    :param n_steps: n of the n-step return (1: SB3's one-step target)
    :param gamma: discount of the n-step return
    :param optimize_memory_usage: ignored: observations are always stored once
    """

    def __init__(
        self,
        buffer_size: int,
        observation_space: spaces.Space,
        action_space: spaces.Space,
        device: th.device | str = "auto",
        n_envs: int = 1,
        optimize_memory_usage: bool = False,
        handle_timeout_termination: bool = True,
        *,
        k: int = 3,
        n_steps: int = 1,
        gamma: float = 0.99,
    ) -> None:
        if k < 1 or n_steps < 1:
            raise ValueError(f"k and n_steps must be >= 1, got k={k}, n_steps={n_steps}")
        # SB3's memory-optimised layout (no next_observations array); timeouts are handled below
        super().__init__(
            buffer_size,
            observation_space,
            action_space,
            device,
            n_envs,
            optimize_memory_usage=True,
            handle_timeout_termination=False,
        )
        self.optimize_memory_usage = False  # SB3's own variant is not used: sample() is ours
        self.handle_timeout_termination = handle_timeout_termination
        self.k, self.n_steps, self.gamma = k, n_steps, gamma
        self.final_obs: dict[tuple[int, int], np.ndarray] = {}  # (pos, env) -> s_T of an episode ending there
        self._pending_next: np.ndarray | None = None  # next_obs of the newest step, not yet stored

    # ------------------------------------------------------------------ writing
    def add(
        self,
        obs: np.ndarray,
        next_obs: np.ndarray,
        action: np.ndarray,
        reward: np.ndarray,
        done: np.ndarray,
        infos: list[dict[str, Any]],
    ) -> None:
        obs = np.asarray(obs).reshape((self.n_envs, *self.obs_shape))
        next_obs = np.asarray(next_obs).reshape((self.n_envs, *self.obs_shape))
        prev = (self.pos - 1) % self.buffer_size
        if self._pending_next is not None:
            # An env reset that no `done` announced (e.g. learn() called again) ends the episode there.
            for env in np.flatnonzero(~self.dones[prev].astype(bool)):
                if not np.array_equal(obs[env], self._pending_next[env]):
                    self.dones[prev, env], self.timeouts[prev, env] = 1.0, 1.0
                    self.final_obs[(prev, int(env))] = self._pending_next[env].copy()
        for i in range(self.n_envs):
            self.final_obs.pop((self.pos, i), None)  # this slot is being overwritten
        self.observations[self.pos] = obs
        self.actions[self.pos] = np.asarray(action).reshape((self.n_envs, self.action_dim))
        self.rewards[self.pos] = np.asarray(reward)
        self.dones[self.pos] = np.asarray(done)
        self.timeouts[self.pos] = [
            bool(self.handle_timeout_termination and info.get("TimeLimit.truncated", False)) for info in infos
        ]
        for env in np.flatnonzero(self.dones[self.pos]):
            self.final_obs[(self.pos, int(env))] = next_obs[env].copy()
        self._pending_next = next_obs.copy()
        self.pos += 1
        if self.pos == self.buffer_size:
            self.full, self.pos = True, 0

    # ------------------------------------------------------------------ reading
    def _valid(self, u: np.ndarray, env: np.ndarray, span: int) -> np.ndarray:
        """Whether the steps u .. u+span-1 (ages from the oldest stored) are stored and in one episode."""
        oldest = self.pos if self.full else 0
        idx = (oldest + u[:, None] + np.arange(span - 1)) % self.buffer_size  # all but the last step
        return (u + span - 1 < self.size()) & ~self.dones[idx, env[:, None]].astype(bool).any(axis=1)

    def _obs_after(self, idx: np.ndarray, env: np.ndarray) -> np.ndarray:
        """s_{t+1} for stored steps (idx, env): the next slot, the kept final observation of an episode,
        or, for the newest step, the next observation it was added with."""
        out = self.observations[(idx + 1) % self.buffer_size, env]
        newest = (self.pos - 1) % self.buffer_size
        for i in np.flatnonzero(self.dones[idx, env].astype(bool) | (idx == newest)):
            key = (int(idx[i]), int(env[i]))
            if key in self.final_obs:
                out[i] = self.final_obs[key]
            elif self._pending_next is not None:
                out[i] = self._pending_next[env[i]]
            else:
                raise RuntimeError("the replay buffer has no step stored: there is no observation to read")
        return out

    def ready(self) -> bool:
        """Whether max(K, n_steps) steps per env are stored (sampling before that cannot succeed)."""
        return self.size() >= max(self.k, self.n_steps)

    def _draw(self, batch_size: int, span: int) -> tuple[np.ndarray, np.ndarray]:
        """(step, env) pairs uniform over the stored steps with `span` steps left in their episode."""
        stored = self.size()
        u = np.random.randint(0, max(stored, 1), size=batch_size)
        env_ids = np.random.randint(0, self.n_envs, size=batch_size)
        ok = self._valid(u, env_ids, span) if stored else np.zeros(batch_size, bool)
        for _ in range(MAX_DRAWS):
            if ok.all():
                break
            bad = np.flatnonzero(~ok)
            u[bad] = np.random.randint(0, max(stored, 1), size=len(bad))
            env_ids[bad] = np.random.randint(0, self.n_envs, size=len(bad))
            ok[bad] = self._valid(u[bad], env_ids[bad], span) if stored else False
        if not ok.all():
            raise RuntimeError(
                f"the replay buffer holds {stored} steps per env but (almost) none with {span} steps left in "
                f"its episode (K={self.k}, n_steps={self.n_steps}): collect more (learning_starts) before sampling"
            )
        return ((self.pos if self.full else 0) + u) % self.buffer_size, env_ids

    def _returns(self, t: np.ndarray, e: np.ndarray, env: VecNormalize | None) -> np.ndarray:
        steps = (t[:, None] + np.arange(self.n_steps)) % self.buffer_size
        rewards = self._normalize_reward(self.rewards[steps, e[:, None]], env)
        return (rewards * self.gamma ** np.arange(self.n_steps, dtype=np.float32)).sum(axis=1, keepdims=True)

    def _tensor(self, array: np.ndarray | dict[str, np.ndarray]) -> th.Tensor:
        if not isinstance(array, np.ndarray):  # SB3's _normalize_obs is typed for Dict observations too
            raise TypeError("TacoReplayBuffer holds image observations, not Dict observations")
        return self.to_torch(array, copy=False)  # every array here is a fresh gather: no second copy

    # A NamedTuple cannot extend SB3's ReplayBufferSamples; this one starts with its five fields, in order.
    def sample(  # type: ignore[override]
        self, batch_size: int, env: VecNormalize | None = None
    ) -> TacoReplayBufferSamples:
        n, k = self.n_steps, self.k
        t, e = self._draw(batch_size, n)
        last = (t + n - 1) % self.buffer_size
        sac = (
            self._normalize_obs(self.observations[t, e], env),
            self.actions[t, e],
            self._normalize_obs(self._obs_after(last, e), env),
            (self.dones[last, e] * (1.0 - self.timeouts[last, e])).reshape(-1, 1),
            self._returns(t, e, env).astype(np.float32),
            np.full((batch_size, 1), self.gamma**n, np.float32),
        )
        obs, actions, next_obs, dones, returns, discounts = (self._tensor(x) for x in sac)
        if k <= n:  # TACO's sequences fit in SAC's draw
            t2, e2, obs2, returns2 = t, e, obs, returns
        else:
            t2, e2 = self._draw(batch_size, k)
            obs2 = self._tensor(self._normalize_obs(self.observations[t2, e2], env))
            returns2 = self._tensor(self._returns(t2, e2, env).astype(np.float32))
        seq = (t2[:, None] + np.arange(k)) % self.buffer_size
        action_seq = self._tensor(self.actions[seq, e2[:, None]])
        future = self._tensor(self._normalize_obs(self._obs_after(seq[:, -1], e2), env))
        return TacoReplayBufferSamples(
            obs, actions, next_obs, dones, returns, discounts, obs2, action_seq, future, returns2
        )

    def _get_samples(self, batch_inds: np.ndarray, env: VecNormalize | None = None) -> NoReturn:
        raise TypeError("TacoReplayBuffer draws (step, env) pairs itself: use sample()")
