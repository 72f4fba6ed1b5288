"""Implicit Q-learning from pixels (Kostrikov et al. 2021; SPEC section 7).

What differs from the shared update:
- a value head V(s) (own trunk and MLP on detached encoder features) regresses the target critic's
  min Q(s, a_data) with the expectile loss (tau = 0.7); it steps with the critic's optimizer in the
  critic step (Adam is per parameter, so this equals a separate Adam step of V);
- the critic's TD target bootstraps from V(s'), never from a policy action;
- the actor is advantage-weighted regression: maximise w * log pi(a_data | s) with
  w = min(exp(beta * (Q_target(s, a_data) - V(s))), max_weight), beta = 3, max_weight = 100.
  The critic step's Q_target(s, a_data) is reused by the actor step (same features, same target
  weights: the target EMA comes after); with a learned action code (TACO's `tok`, which the critic
  step has just moved) only the target trunk's features are reused and the heads score the new code.
The policy is a Gaussian around tanh(mean) with a state-dependent std; evaluation uses tanh(mean).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn

from .learner import PixelActorCritic
from .nets import Batch, Critic, mlp, trunk, weight_init

LOG_STD_MIN, LOG_STD_MAX = -5.0, 2.0


def expectile_loss(diff: torch.Tensor, tau: float) -> torch.Tensor:
    """mean(|tau - 1(diff < 0)| * diff^2), diff = target - prediction."""
    weight = torch.where(diff < 0, 1.0 - tau, tau)
    return (weight * diff.pow(2)).mean()


def advantage_weights(adv: torch.Tensor, beta: float, max_weight: float) -> torch.Tensor:
    return torch.exp(beta * adv).clamp(max=max_weight)


class ValueHead(nn.Module):
    def __init__(self, repr_dim: int, feature_dim: int, hidden_dim: int) -> None:
        super().__init__()
        self.net = nn.Sequential(trunk(repr_dim, feature_dim), mlp(feature_dim, hidden_dim, 1))
        self.apply(weight_init)

    def forward(self, feat: torch.Tensor) -> torch.Tensor:
        return self.net(feat).float()


class IQL(PixelActorCritic):
    actor_out_mult = 2
    options = ("iql_expectile", "iql_beta", "iql_max_weight")
    # has_critic: the base class builds both (typed Critic | None there for learners without one)
    critic: Critic
    critic_target: Critic
    # what the critic step leaves for this update's actor step: (features, data actions, target trunk
    # output, min Q_target or None when the action code has moved since); taken once
    _q_data: tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None] | None

    def __init__(
        self,
        obs_shape: tuple[int, int, int],
        action_dim: int,
        *,
        iql_expectile: float = 0.7,
        iql_beta: float = 3.0,
        iql_max_weight: float = 100.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(obs_shape, action_dim, **kwargs)
        if not 0.0 < iql_expectile < 1.0:
            raise ValueError(f"iql_expectile={iql_expectile}: expected 0 < tau < 1")
        self.expectile, self.beta, self.max_weight = iql_expectile, iql_beta, iql_max_weight
        self.value = ValueHead(self.encoder.repr_dim, self.feature_dim, self.hidden_dim).to(self.device)
        self.opts["critic"].add_param_group({"params": list(self.value.parameters())})

    def modules(self) -> dict[str, nn.Module]:
        mods = super().modules()
        if hasattr(self, "value"):
            mods["value"] = self.value
        return mods

    def _gaussian(self, feat: torch.Tensor) -> torch.distributions.Normal:
        mu, log_std = self.actor(feat).float().chunk(2, dim=-1)
        log_std = LOG_STD_MIN + 0.5 * (LOG_STD_MAX - LOG_STD_MIN) * (torch.tanh(log_std) + 1.0)
        return torch.distributions.Normal(torch.tanh(mu), log_std.exp())

    def _act(self, feat: torch.Tensor, step: int, eval_mode: bool) -> torch.Tensor:
        dist = self._gaussian(feat)
        return dist.mean if eval_mode else dist.sample()

    def _target_value(self, next_feat: torch.Tensor, step: int) -> torch.Tensor:
        return self.value(next_feat)

    @torch.no_grad()
    def _data_q_target(self, feat: torch.Tensor, batch: Batch, z: torch.Tensor | None = None) -> torch.Tensor:
        """min Q_target(s, a_data); `z`: the target trunk's output on `feat`, when already computed."""
        z = self.critic_target.trunk(feat) if z is None else z
        return torch.min(*self.critic_target.heads(z, self.action_code(batch["action"]).to(feat.dtype))).float()

    def _take_data_q_target(self, feat: torch.Tensor, batch: Batch) -> torch.Tensor:
        """min Q_target(s, a_data) from what the critic step cached for these features and actions
        (used once), else computed here (an actor loss evaluated on its own)."""
        cached, self._q_data = getattr(self, "_q_data", None), None
        if cached is not None:
            cached_feat, cached_action, z, q = cached  # holding cached_feat keeps its storage from reuse
            if (
                cached_feat.data_ptr() == feat.data_ptr()
                and cached_feat.shape == feat.shape
                and cached_action is batch["action"]
            ):
                return q if q is not None else self._data_q_target(feat, batch, z)
        return self._data_q_target(feat, batch)

    def critic_loss(
        self, feat: torch.Tensor, batch: Batch, next_feat: torch.Tensor, step: int
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        loss, metrics = super().critic_loss(feat, batch, next_feat, step)
        v = self.value(feat.detach())
        with torch.no_grad():
            z = self.critic_target.trunk(feat)
        q_data = self._data_q_target(feat.detach(), batch, z)
        # for this update's actor step; Q itself only when the critic step leaves the action code as is
        self._q_data = (feat.detach(), batch["action"], z, None if self.latent_critic else q_data)
        value_loss = expectile_loss(q_data - v, self.expectile)
        metrics.update(value_loss=value_loss.detach(), value=v.detach().mean())
        return loss + value_loss, metrics

    def _actor_loss(
        self, feat: torch.Tensor, step: int, batch: Batch | None = None
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        if batch is None:
            raise ValueError(f"{type(self).__name__}'s actor loss needs the batch (its dataset actions)")
        with torch.no_grad():
            weights = advantage_weights(
                self._take_data_q_target(feat, batch) - self.value(feat), self.beta, self.max_weight
            )
        log_prob = self._gaussian(feat).log_prob(batch["action"].float()).sum(-1, keepdim=True)
        loss = -(weights * log_prob).mean()
        return loss, {"actor_loss": loss.detach(), "adv_weight": weights.mean(), "log_prob": log_prob.detach().mean()}
