"""Conservative Q-learning from pixels (SPEC section 7; V-D4RL's CQL, on DrQ-v2).

The critic loss adds, per Q head, a penalty that pushes Q down on actions the dataset does not
support and up on the dataset action:

    alpha * ( temp * logsumexp_j(Q(s, a_j) / temp) - Q(s, a_data) )

over a_j = the data action, `samples` uniform random actions, `samples` current-policy actions at s
and `samples` policy actions at s' (all scored at s; no importance sampling). The sampled actions
carry no gradient; the penalty reaches the encoder, the action encoder and the critic, like the
TD loss it is added to. The actor is DrQ-v2's.

Logged as V-D4RL logs it: `critic_loss` is the whole critic loss (TD + penalty), `critic_td_loss`
the TD part alone, `cql_penalty` the penalty summed over both heads.

The policy actions carry the DrQ-v2 policy noise (`std_schedule`, `std_clip`). A fresh actor acts
alike in every state, so with a narrow clip (0.3) they crowd one small box in every state and the
penalty's dip there can push the actor to one constant action (on point_reach it then runs into a
wall); a wide noise (std_schedule=1.0 std_clip=1.0) spreads them over the action box (see the CQL
learning test in tests/test_offline.py).
"""

from __future__ import annotations

from typing import Any

import torch

from .drqv2 import DrQV2, schedule, truncated_normal_sample
from .nets import Batch


class CQL(DrQV2):
    options = DrQV2.options + ("cql_alpha", "cql_temp", "cql_samples")

    def __init__(
        self, *args: Any, cql_alpha: float = 10.0, cql_temp: float = 1.0, cql_samples: int = 10, **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        if cql_temp <= 0 or cql_samples < 1:
            raise ValueError(f"CQL needs cql_temp > 0 and cql_samples >= 1, got {cql_temp}, {cql_samples}")
        self.cql_alpha, self.cql_temp, self.cql_samples = cql_alpha, cql_temp, cql_samples

    @torch.no_grad()
    def penalty_actions(self, feat: torch.Tensor, next_feat: torch.Tensor, step: int) -> torch.Tensor:
        """(B, 3N, |A|): N uniform random, N pi(s) and N pi(s') samples per state."""
        n, std = self.cql_samples, schedule(self.std_schedule, step)
        rand = torch.rand(feat.shape[0], n, self.action_dim, device=feat.device) * 2.0 - 1.0
        policy = [
            truncated_normal_sample(self._mean(f).float().unsqueeze(1).expand(-1, n, -1), std, self.std_clip)
            for f in (feat, next_feat)
        ]
        return torch.cat([rand, *policy], dim=1)

    def critic_loss(
        self, feat: torch.Tensor, batch: Batch, next_feat: torch.Tensor, step: int
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        target_q = self.td_target(batch, next_feat, step)
        actions = torch.cat([batch["action"].unsqueeze(1), self.penalty_actions(feat.detach(), next_feat, step)], 1)
        z = self.critic.trunk(feat).unsqueeze(1).expand(-1, actions.shape[1], -1)
        q1, q2 = self.critic.heads(z, self.action_code(actions).to(feat.dtype))  # (B, 1 + 3N, 1) each
        td, metrics = self.td_loss(q1[:, 0], q2[:, 0], target_q)
        penalty = self.conservative_penalty(q1) + self.conservative_penalty(q2)
        loss = td + penalty
        n = self.cql_samples  # Q1 at the random and at the policy actions: the penalty should keep both under critic_q1
        metrics.update(
            critic_loss=loss.detach(),
            critic_td_loss=td.detach(),
            cql_penalty=penalty.detach(),
            cql_q_random=q1[:, 1 : 1 + n].detach().mean(),
            cql_q_policy=q1[:, 1 + n :].detach().mean(),
        )
        return loss, metrics

    def conservative_penalty(self, q: torch.Tensor) -> torch.Tensor:
        """alpha * mean_s(temp * logsumexp(Q(s, .) / temp) - Q(s, a_data)); q[:, 0] is the data action."""
        q = q.squeeze(-1).float()
        soft_max = torch.logsumexp(q / self.cql_temp, dim=1) * self.cql_temp
        return self.cql_alpha * (soft_max - q[:, 0]).mean()
