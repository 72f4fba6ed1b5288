"""Behaviour cloning from pixels (SPEC section 7): the policy mean regresses the dataset action.

No critic: the encoder learns from the BC loss on augmented frames (and from TACO/CURL when an
auxiliary module is on, which keeps its own optimizer and fresh augmentations, as online).
The loss is on the policy mean; V-D4RL's code regresses a noisy sample of the DrQ-v2 policy,
whose gradient equals this one in expectation.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .learner import PixelActorCritic


class BC(PixelActorCritic):
    has_critic = False

    def _act(self, feat, step, eval_mode):
        return torch.tanh(self.actor(feat))

    def _actor_loss(self, feat, step, batch=None):
        loss = F.mse_loss(torch.tanh(self.actor(feat)).float(), batch["action"].float())
        return loss, {"actor_loss": loss.detach(), "bc_loss": loss.detach()}
