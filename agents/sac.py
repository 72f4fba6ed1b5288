"""DrQ-style SAC from pixels (SPEC section 5): tanh-squashed Gaussian actor, clipped double Q,
learned temperature. Same encoder, augmentation, critic, target EMA and auxiliary hook as DrQ-v2
(learner.py). As in DrQ-v2 the target features come from the online encoder under no-grad, so SAC
and DrQ-v2 differ only in the policy and its losses: TACO's effect compares across both bases.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from .learner import PixelActorCritic, adam
from .nets import Batch, Critic

LOG_STD_MIN, LOG_STD_MAX = -10.0, 2.0


class Temperature(nn.Module):
    def __init__(self, init_alpha: float) -> None:
        super().__init__()
        self.log_alpha = nn.Parameter(torch.tensor(math.log(init_alpha)))

    def forward(self) -> torch.Tensor:
        return self.log_alpha.exp()


class SAC(PixelActorCritic):
    actor_out_mult = 2
    options = ("init_alpha",)
    # has_critic: the base class builds both (typed Critic | None there for learners without one)
    critic: Critic
    critic_target: Critic

    def __init__(
        self,
        obs_shape: tuple[int, int, int],
        action_dim: int,
        *,
        init_alpha: float = 0.1,
        alpha_lr: float | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(obs_shape, action_dim, **kwargs)
        self.temperature = Temperature(init_alpha).to(self.device)
        self.target_entropy = -float(action_dim)
        lr = alpha_lr or self.opts["actor"].param_groups[0]["lr"]
        self.opts["alpha"] = adam(self.temperature.parameters(), lr, self.adam_impl)

    def modules(self) -> dict[str, nn.Module]:
        mods = super().modules()
        if hasattr(self, "temperature"):
            mods["temperature"] = self.temperature
        return mods

    def _sample(self, feat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(tanh sample, its log-prob with the tanh correction, tanh mean)."""
        mu, log_std = self.actor(feat).float().chunk(2, dim=-1)
        log_std = LOG_STD_MIN + 0.5 * (LOG_STD_MAX - LOG_STD_MIN) * (torch.tanh(log_std) + 1.0)
        x = mu + log_std.exp() * torch.randn_like(mu)
        log_prob = -0.5 * ((x - mu) / log_std.exp()).pow(2) - log_std - 0.5 * math.log(2 * math.pi)
        # log(1 - tanh(x)^2) = 2 (log 2 - x - softplus(-2x)), stable for large |x|
        log_prob = log_prob - 2.0 * (math.log(2.0) - x - F.softplus(-2.0 * x))
        return torch.tanh(x), log_prob.sum(-1, keepdim=True), torch.tanh(mu)

    def _act(self, feat: torch.Tensor, step: int, eval_mode: bool) -> torch.Tensor:
        if eval_mode:  # the mean action, without drawing noise (evaluation leaves the RNG alone)
            return torch.tanh(self.actor(feat).float().chunk(2, dim=-1)[0])
        return self._sample(feat)[0]

    def _target_value(self, next_feat: torch.Tensor, step: int) -> torch.Tensor:
        action, log_prob, _ = self._sample(next_feat)
        q1, q2 = self.critic_target(next_feat, self.action_code(action))
        return torch.min(q1, q2).float() - self.temperature().detach() * log_prob

    def _actor_loss(
        self, feat: torch.Tensor, step: int, batch: Batch | None = None
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        action, log_prob, _ = self._sample(feat)
        q1, q2 = self.critic(feat, self.action_code(action))
        alpha = self.temperature().detach()
        loss = (alpha * log_prob - torch.min(q1, q2).float()).mean()
        self._log_prob = log_prob.detach()  # for the temperature step that follows the actor step
        return loss, {"actor_loss": loss.detach(), "alpha": alpha, "entropy": -log_prob.detach().mean()}

    def update_actor(self, feat: torch.Tensor, step: int, batch: Batch | None = None) -> dict[str, torch.Tensor]:
        metrics = super().update_actor(feat, step, batch)
        alpha_loss = -(self.temperature() * (self._log_prob + self.target_entropy)).mean()
        self.opts["alpha"].zero_grad(set_to_none=True)
        alpha_loss.backward()
        self.opts["alpha"].step()
        return metrics
