"""Behaviour cloning from pixels (SPEC section 7): the policy mean regresses the dataset action.

No critic: the encoder learns from the BC loss on augmented frames (and from TACO/CURL when an
auxiliary module is on, which keeps its own optimizer and fresh augmentations, as online).
The loss is on the policy mean mu = tanh(actor(feat)). V-D4RL's BC regresses a noisy sample instead,
a = clamp(mu + clip(std * eps, +-c), +-(1 - 1e-6)) with the scheduled std and c = std_clip = 0.3, and a
straight-through clamp, so its gradient in mu is 2 (a - y) per dimension. That equals this loss's
gradient 2 (mu - y) in expectation only while the clamp never acts, i.e. |mu| <= 1 - c - 1e-6 in
every dimension. Nearer the edge E[a] lies between mu and 0, so the reference's fixed point has
E[a] = y with |mu| > |y|: for data actions within c of +-1 its mean overshoots the data action (up to
the bound), where this one stops at y. Its logged loss also carries the noise variance (about
E[clip(std * eps)^2] per dimension) that this one has not; the std schedule does not enter here.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .learner import PixelActorCritic
from .nets import Batch


class BC(PixelActorCritic):
    has_critic = False

    def _act(self, feat: torch.Tensor, step: int, eval_mode: bool) -> torch.Tensor:
        return torch.tanh(self.actor(feat))

    def _actor_loss(
        self, feat: torch.Tensor, step: int, batch: Batch | None = None
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        if batch is None:
            raise ValueError(f"{type(self).__name__}'s actor loss needs the batch (its dataset actions)")
        loss = F.mse_loss(torch.tanh(self.actor(feat)).float(), batch["action"].float())
        return loss, {"actor_loss": loss.detach(), "bc_loss": loss.detach()}
