"""TACO: temporal action-driven contrastive learning (SPEC section 6), with its CURL and reward terms.

This file is the only place the auxiliary math lives. Learners talk to it through a small interface:

- `nograd_keys`: the batch keys whose augmented encodings the module needs under stop-gradient
  (the CURL positive is a second augmentation of `obs`; the TACO target is `future_obs`). The learner
  encodes them, batched with its own no-grad passes where the math allows.
- `loss(batch, anchor, targets) -> (loss, metrics)`: `anchor` is enc(aug(obs)) with gradients,
  `targets` the no-grad encodings in `nograd_keys` order.

With `taco_weight = reward_weight = 0` it is the CURL baseline (no action encoder, no G, no R).
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .nets import ActionEncoder, Batch, cat_rows, mlp, trunk, weight_init


class TACO(nn.Module):
    def __init__(
        self,
        repr_dim: int,
        action_dim: int,
        *,
        k: int = 3,
        feature_dim: int = 50,
        hidden_dim: int = 1024,
        action_encoder: ActionEncoder | None = None,
        taco_weight: float = 1.0,
        curl_weight: float = 1.0,
        reward_weight: float = 1.0,
    ) -> None:
        super().__init__()
        self.k = k
        self.taco_weight, self.curl_weight, self.reward_weight = taco_weight, curl_weight, reward_weight
        self.uses_actions = taco_weight > 0 or reward_weight > 0
        self.proj_s = trunk(repr_dim, feature_dim)
        self.W = nn.Parameter(torch.empty(feature_dim, feature_dim))
        if self.uses_actions:
            # tok is shared with the critic; without it (raw-action ablation) codes are raw actions.
            self.tok = action_encoder
            d_u = action_encoder.latent_dim if action_encoder is not None else action_dim
            seq_dim = k * d_u
            self.seq = nn.Sequential(nn.Linear(seq_dim, seq_dim), nn.LayerNorm(seq_dim), nn.Tanh())
            self.G = mlp(feature_dim + seq_dim, hidden_dim, feature_dim, depth=1)
            self.R = mlp(feature_dim + seq_dim, hidden_dim, 1, depth=1)
        for module in (self.proj_s, getattr(self, "seq", None), getattr(self, "G", None), getattr(self, "R", None)):
            if module is not None:  # the shared tok was initialised by its owner
                module.apply(weight_init)
        nn.init.uniform_(self.W, 0.0, 1.0)  # after weight_init, as in the reference: W ~ U[0, 1)

    @property
    def nograd_keys(self) -> list[str]:
        keys = []
        if self.curl_weight > 0:
            keys.append("obs")
        if self.taco_weight > 0:
            keys.append("future_obs")
        return keys

    def own_parameters(self) -> list[nn.Parameter]:
        """Parameters that belong to this module alone (the shared `tok` excluded)."""
        tok: ActionEncoder | None = getattr(self, "tok", None)
        shared = {id(p) for p in tok.parameters()} if tok is not None else set()
        return [p for p in self.parameters() if id(p) not in shared]

    def logits(self, anchors: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Bilinear similarities a_i^T W t_j, each row shifted by its max (no temperature); fp32 always."""
        with torch.autocast(anchors.device.type, enabled=False):
            logits = anchors.float() @ (self.W @ targets.float().T)
            return logits - logits.max(dim=1, keepdim=True).values

    def encode_actions(self, action_seq: torch.Tensor) -> torch.Tensor:
        """(B, K, |A|) -> (B, K*d_u) latent action-sequence code."""
        codes = self.tok(action_seq) if self.tok is not None else action_seq
        return self.seq(codes.flatten(1))

    def terms(self, batch: Batch, anchor: torch.Tensor, targets: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        """The terms that are on, unweighted and each with its gradient: "curl", "taco", "reward" (in that order).

        `loss` sums them with their weights; a caller that reports each term on its own (the torchrl
        LossModule's loss_* keys) reads them here.
        """
        z = self.proj_s(anchor).float()
        zt: dict[str, torch.Tensor] = {}
        if targets:
            with torch.no_grad():
                zt = dict(
                    zip(self.nograd_keys, self.proj_s(cat_rows(targets)).float().chunk(len(targets)), strict=True)
                )
        labels = torch.arange(z.shape[0], device=z.device)
        terms: dict[str, torch.Tensor] = {}
        if self.curl_weight > 0:
            terms["curl"] = F.cross_entropy(self.logits(z, zt["obs"]), labels)
        if self.uses_actions:
            za = torch.cat([z, self.encode_actions(batch["action_seq"]).float()], dim=-1)
            if self.taco_weight > 0:
                terms["taco"] = F.cross_entropy(self.logits(self.G(za).float(), zt["future_obs"]), labels)
            if self.reward_weight > 0:
                terms["reward"] = F.mse_loss(self.R(za).float(), batch["reward"].float())
        return terms

    def weight(self, term: str) -> float:
        """The weight of a term of `terms` in the total."""
        return {"curl": self.curl_weight, "taco": self.taco_weight, "reward": self.reward_weight}[term]

    def loss(
        self, batch: Batch, anchor: torch.Tensor, targets: list[torch.Tensor]
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        total = anchor.new_zeros((), dtype=torch.float32)
        metrics: dict[str, torch.Tensor] = {}
        for term, value in self.terms(batch, anchor, targets).items():
            total = total + self.weight(term) * value
            metrics[f"{term}_loss"] = value.detach()
        metrics["aux_loss"] = total.detach()
        return total, metrics
