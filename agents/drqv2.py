"""DrQ-v2 (SPEC section 4): DDPG-style actor-critic from pixels with a scheduled exploration std.

The shared update (critic step, actor step, target EMA, auxiliary step) is in learner.py; this file
says what the policy is.
"""

from __future__ import annotations

import re
from typing import Any

import torch

from .learner import PixelActorCritic
from .nets import Batch, Critic


def schedule(spec: str | float, step: int) -> float:
    """A constant, or 'linear(init, final, steps)' interpolated by agent step."""
    try:
        return float(spec)
    except ValueError:
        pass
    match = re.fullmatch(r"\s*linear\(([^,]+),([^,]+),([^,]+)\)\s*", str(spec))
    if not match:
        raise ValueError(f"schedule {spec!r}: expected a number or 'linear(init,final,steps)'")
    init, final, duration = (float(g) for g in match.groups())
    mix = min(max(step / duration, 0.0), 1.0)
    return (1.0 - mix) * init + mix * final


def truncated_normal_sample(
    mean: torch.Tensor, std: float, clip: float | None = None, eps: float = 1e-6
) -> torch.Tensor:
    """mean + clipped Gaussian noise, clamped inside (-1, 1) with a straight-through gradient."""
    noise = torch.randn_like(mean) * std
    if clip is not None:
        noise = noise.clamp(-clip, clip)
    x = mean + noise
    return x - x.detach() + x.detach().clamp(-1.0 + eps, 1.0 - eps)


class DrQV2(PixelActorCritic):
    options: tuple[str, ...] = ("std_schedule", "std_clip")  # config keys this learner takes beyond the shared ones
    # has_critic: the base class builds both (typed Critic | None there for learners without one)
    critic: Critic
    critic_target: Critic

    def __init__(
        self, *args: Any, std_schedule: str = "linear(1.0,0.1,500000)", std_clip: float = 0.3, **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        schedule(std_schedule, 0)  # fail early on a malformed schedule
        self.std_schedule, self.std_clip = std_schedule, std_clip

    def _mean(self, feat: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.actor(feat))

    def _act(self, feat: torch.Tensor, step: int, eval_mode: bool) -> torch.Tensor:
        mean = self._mean(feat)
        return mean if eval_mode else truncated_normal_sample(mean, schedule(self.std_schedule, step))

    def _target_value(self, next_feat: torch.Tensor, step: int) -> torch.Tensor:
        std = schedule(self.std_schedule, step)
        next_action = truncated_normal_sample(self._mean(next_feat), std, self.std_clip)
        q1, q2 = self.critic_target(next_feat, self.action_code(next_action))
        return torch.min(q1, q2)

    def _policy_q(self, feat: torch.Tensor, step: int) -> tuple[torch.Tensor, torch.Tensor, float]:
        """(a ~ pi(s) with clipped noise, min(Q1, Q2)(s, a) in fp32, the std used)."""
        std = schedule(self.std_schedule, step)
        action = truncated_normal_sample(self._mean(feat), std, self.std_clip)
        q1, q2 = self.critic(feat, self.action_code(action))
        return action, torch.min(q1, q2).float(), std

    def _actor_loss(
        self, feat: torch.Tensor, step: int, batch: Batch | None = None
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        _, q, std = self._policy_q(feat, step)
        loss = -q.mean()
        return loss, {"actor_loss": loss.detach(), "actor_std": torch.tensor(std)}
