"""TD3+BC from pixels (DrQ+BC in V-D4RL; SPEC section 7).

DrQ-v2's critic, target and policy; the actor loss adds a behaviour-cloning term and rescales the
Q term so that its size does not depend on the scale of returns (Fujimoto & Gu 2021, eq. 5):

    loss = -lambda * mean(Q(s, pi(s))) + MSE(pi(s), a_data),   lambda = alpha / mean|Q(s, pi(s))|

with lambda computed on detached Q values. As in V-D4RL, pi(s) is the DrQ-v2 policy sample (mean
plus clipped scheduled noise) used for both terms.

Logged as V-D4RL logs DrQ+BC: `actor_loss` is the policy-improvement term -mean(Q(s, pi(s))) alone
(unweighted), `bc_loss` the MSE term (V-D4RL's `actor_bc_loss`), `bc_lambda` the weight and
`actor_total_loss` the loss the actor steps on.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from .drqv2 import DrQV2
from .nets import Batch


class TD3BC(DrQV2):
    options = DrQV2.options + ("bc_alpha",)

    def __init__(self, *args: Any, bc_alpha: float = 2.5, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.bc_alpha = bc_alpha

    def _actor_loss(
        self, feat: torch.Tensor, step: int, batch: Batch | None = None
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        if batch is None:
            raise ValueError(f"{type(self).__name__}'s actor loss needs the batch (its dataset actions)")
        action, q, _ = self._policy_q(feat, step)
        lam = self.bc_alpha / q.detach().abs().mean()
        bc = F.mse_loss(action.float(), batch["action"].float())
        loss = -lam * q.mean() + bc
        return loss, {
            "actor_loss": -q.detach().mean(),
            "actor_total_loss": loss.detach(),
            "bc_loss": bc.detach(),
            "bc_lambda": lam.detach(),
            "actor_q": q.detach().mean(),
        }
