"""The update shared by every pixel actor-critic learner (DrQ-v2 and SAC).

One update, in the reference order (SPEC 6):
  1. encode aug(obs) with gradients and aug(next_obs) without;
  2. critic step (critic loss reaches encoder, action encoder and critic);
  3. actor step on detached features (reaches the actor only);
  4. critic target EMA;
  5. auxiliary step (TACO / CURL) with fresh augmentations, on its own optimizer that also steps
     the encoder and the action encoder ("reference" semantics).
With `optimizer="single"` (an ablation) the critic and auxiliary losses share one backward pass and
one Adam: the auxiliary anchor is the critic's encoding, and every no-grad encoder pass of the
update (next_obs, CURL positive, future_obs) runs as one batched call.

Subclasses say what the policy is: `_target_value`, `_actor_loss`, `_act`. Offline learners say
what differs through the same hooks (`critic_loss` for a penalty or a value head, `_actor_loss` with
the batch's dataset actions); a learner without a critic (`has_critic = False`, behaviour cloning)
skips steps 2 and 4 and its actor loss trains the encoder.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from typing import Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from taco_rl.learner_choices import AUX_KINDS

from .nets import ActionEncoder, Actor, Batch, Critic, Encoder, RandomShift, latent_action_dim, soft_update
from .taco import TACO

ADAM_IMPLS = ("fused", "foreach", "plain")


def _check_adam_impl(impl: str) -> None:
    if impl not in ADAM_IMPLS:
        raise ValueError(f"adam impl {impl!r}: expected one of {ADAM_IMPLS}")


def adam(params: Iterable[torch.Tensor], lr: float, impl: str = "fused") -> torch.optim.Adam:
    """torch's Adam; `impl` picks its kernel, not its math: "fused" (one kernel over every tensor,
    CPU and CUDA), "foreach" (multi-tensor ops) or "plain" (a loop over tensors, the reference's).
    Results agree to float rounding."""
    _check_adam_impl(impl)
    return torch.optim.Adam(params, lr=lr, fused=impl == "fused" or None, foreach=impl == "foreach")


def set_adam_impl(opt: torch.optim.Optimizer, impl: str) -> None:
    """Switch an Adam's kernel in place (its state carries over: every kernel keeps the same state)."""
    _check_adam_impl(impl)
    for group in opt.param_groups:
        group["fused"], group["foreach"] = (True if impl == "fused" else None), impl == "foreach"
        for p in group["params"]:
            state = opt.state.get(p)
            if state and "step" in state:  # fused keeps the step count on the parameter's device
                on_device = impl == "fused" or group["capturable"]
                state["step"] = state["step"].to(p.device if on_device else "cpu", torch.float32)


class PixelActorCritic:
    actor_out_mult = 1  # how many outputs per action dimension the actor head has
    has_critic = True  # False: no critic, target or critic step; the actor loss trains the encoder
    options: tuple[str, ...] = ()  # config keys a subclass takes as keyword arguments

    def __init__(
        self,
        obs_shape: tuple[int, int, int],
        action_dim: int,
        *,
        device: str | torch.device = "cpu",
        lr: float = 1e-4,
        feature_dim: int = 50,
        hidden_dim: int = 1024,
        critic_tau: float = 0.01,
        expl_steps: int = 2000,
        precision: str = "fp32",
        aux: str = "none",
        taco_k: int = 3,
        taco_weight: float = 1.0,
        curl_weight: float = 1.0,
        reward_weight: float = 1.0,
        latent_dim: int = 0,
        action_encoder: bool = True,
        latent_critic: bool = True,
        optimizer: str = "reference",
        batch_nograd: bool = True,
        adam_impl: str = "fused",
    ) -> None:
        if aux not in AUX_KINDS:
            raise ValueError(f"aux={aux!r}: expected one of {AUX_KINDS}")
        if precision not in ("fp32", "bf16"):
            raise ValueError(f"precision={precision!r}: expected 'fp32' or 'bf16'")
        if optimizer not in ("reference", "single"):
            raise ValueError(f"optimizer={optimizer!r}: expected 'reference' or 'single'")
        self.device = torch.device(device)
        self.action_dim, self.critic_tau, self.expl_steps = action_dim, critic_tau, expl_steps
        self.feature_dim, self.hidden_dim = feature_dim, hidden_dim
        self.bf16, self.single_opt, self.batch_nograd = precision == "bf16", optimizer == "single", batch_nograd

        self.encoder = Encoder(obs_shape).to(self.device)
        repr_dim = self.encoder.repr_dim
        self.tok: ActionEncoder | None = None
        if aux == "taco" and action_encoder:
            self.tok = ActionEncoder(action_dim, latent_dim or latent_action_dim(action_dim)).to(self.device)
        self.latent_critic = self.tok is not None and latent_critic and self.has_critic
        code_dim = self.tok.latent_dim if self.latent_critic and self.tok is not None else action_dim
        self.actor = Actor(repr_dim, action_dim, feature_dim, hidden_dim, self.actor_out_mult).to(self.device)
        # None exactly when has_critic is False (learners with a critic declare it as Critic)
        self.critic: Critic | None = None
        self.critic_target: Critic | None = None
        if self.has_critic:
            self.critic = Critic(repr_dim, code_dim, feature_dim, hidden_dim).to(self.device)
            self.critic_target = Critic(repr_dim, code_dim, feature_dim, hidden_dim).to(self.device)
            self.critic_target.load_state_dict(self.critic.state_dict())
            self.critic_target.requires_grad_(False)
        self.aux: TACO | None = None
        if aux == "curl" and curl_weight <= 0:
            raise ValueError("aux=curl needs curl_weight > 0 (use aux=none for no auxiliary loss)")
        if aux == "taco" and max(taco_weight, curl_weight, reward_weight) <= 0:
            raise ValueError("aux=taco with every weight 0 has no loss; use aux=none")
        if aux != "none":
            weights = (taco_weight, curl_weight, reward_weight) if aux == "taco" else (0.0, curl_weight, 0.0)
            self.aux = TACO(
                repr_dim,
                action_dim,
                k=taco_k,
                feature_dim=feature_dim,
                hidden_dim=hidden_dim,
                action_encoder=self.tok,
                taco_weight=weights[0],
                curl_weight=weights[1],
                reward_weight=weights[2],
            ).to(self.device)
        self.aug = RandomShift(pad=4)

        shared = list(self.encoder.parameters()) + (list(self.tok.parameters()) if self.tok else [])
        aux_own = self.aux.own_parameters() if self.aux is not None else []
        # what the actor loss reaches (backward inputs) = what the actor optimizer steps
        self.actor_params = list(self.actor.parameters())
        if not self.has_critic:
            if self.single_opt:
                raise ValueError("optimizer=single sums the critic and auxiliary losses; this learner has no critic")
            self.actor_params += list(self.encoder.parameters())
        self.adam_impl = adam_impl
        self.opts: dict[str, torch.optim.Optimizer] = {"actor": adam(self.actor_params, lr, adam_impl)}
        if self.critic is None:  # has_critic False
            if self.aux is not None:
                self.opts["aux"] = adam(shared + aux_own, lr, adam_impl)
        elif self.single_opt:
            self.opts["critic"] = adam(list(self.critic.parameters()) + shared + aux_own, lr, adam_impl)
        else:
            self.opts["critic"] = adam(list(self.critic.parameters()) + shared, lr, adam_impl)
            if self.aux is not None:
                self.opts["aux"] = adam(shared + aux_own, lr, adam_impl)

    # ----------------------------------------------------------------- helpers
    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        if not self.bf16:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16)

    def action_code(self, action: torch.Tensor) -> torch.Tensor:
        return self.tok(action) if self.latent_critic and self.tok is not None else action

    def encode_nograd(self, frames: list[torch.Tensor]) -> list[torch.Tensor]:
        """enc(aug(x)) under no-grad for each x; one batched encoder call unless `batch_nograd` is off.

        Augmentations are drawn per input in order either way, so both paths see the same shifts.
        """
        with torch.no_grad():
            augmented = [self.aug(x) for x in frames]
            if not self.batch_nograd:
                return [self.encoder(x) for x in augmented]
            return list(self.encoder(torch.cat(augmented)).split([len(x) for x in augmented]))

    def modules(self) -> dict[str, nn.Module]:
        mods: dict[str, nn.Module] = {"encoder": self.encoder, "actor": self.actor}
        if self.critic is not None and self.critic_target is not None:
            mods.update(critic=self.critic, critic_target=self.critic_target)
        if self.tok is not None:
            mods["tok"] = self.tok
        if self.aux is not None:
            mods["aux"] = self.aux
        return mods

    def train(self, training: bool = True) -> None:
        for m in self.modules().values():
            m.train(training)

    # ----------------------------------------------------------------- acting
    @torch.no_grad()
    def act(self, obs: np.ndarray, step: int, eval_mode: bool) -> np.ndarray:
        """Action in [-1, 1] for one uint8 observation; uniform random during the first `expl_steps`."""
        if not eval_mode and step < self.expl_steps:
            return (torch.rand(self.action_dim) * 2.0 - 1.0).numpy()
        return self.act_batch(np.asarray(obs)[None], step, eval_mode)[0]

    @torch.no_grad()
    def act_batch(self, obs: np.ndarray, step: int, eval_mode: bool) -> np.ndarray:
        """Actions in [-1, 1] for a (B, C, H, W) uint8 batch in one forward pass (the policy's own:
        no uniform exploration phase). `act` is this with B = 1."""
        obs_t = torch.as_tensor(obs, device=self.device)
        with self.autocast():
            action = self._act(self.encoder(obs_t), step, eval_mode)
        return action.float().clamp(-1.0, 1.0).cpu().numpy()

    # ----------------------------------------------------------------- learning
    def td_target(self, batch: Batch, next_feat: torch.Tensor, step: int) -> torch.Tensor:
        with torch.no_grad():
            return batch["reward"] + batch["discount"] * self._target_value(next_feat, step)

    def critic_loss(
        self, feat: torch.Tensor, batch: Batch, next_feat: torch.Tensor, step: int
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        if self.critic is None:
            raise RuntimeError(f"{type(self).__name__} has no critic: it has no critic loss")
        target_q = self.td_target(batch, next_feat, step)
        q1, q2 = self.critic(feat, self.action_code(batch["action"]))
        return self.td_loss(q1, q2, target_q)

    def td_loss(
        self, q1: torch.Tensor, q2: torch.Tensor, target_q: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        loss = F.mse_loss(q1.float(), target_q.float()) + F.mse_loss(q2.float(), target_q.float())
        return loss, {
            "critic_loss": loss.detach(),
            "critic_q1": q1.detach().float().mean(),
            "critic_target_q": target_q.detach().float().mean(),
        }

    def update_actor(self, feat: torch.Tensor, step: int, batch: Batch | None = None) -> dict[str, torch.Tensor]:
        with self.autocast():
            loss, metrics = self._actor_loss(feat, step, batch)
        self.opts["actor"].zero_grad(set_to_none=True)
        loss.backward(inputs=self.actor_params)  # critic and tok get no gradient
        self.opts["actor"].step()
        return metrics

    def update(self, batch: Batch, step: int) -> dict[str, torch.Tensor]:
        """One learner update on a sampled batch; returns 0-dim tensors (no host sync here)."""
        metrics: dict[str, torch.Tensor] = {"batch_reward": batch["reward"].mean()}
        # has_critic False: the actor loss trains the encoder; then the auxiliary step
        if self.critic is None or self.critic_target is None:
            with self.autocast():
                feat = self.encoder(self.aug(batch["obs"]))
            metrics.update(self.update_actor(feat, step, batch))
            if self.aux is not None:
                metrics.update(self.update_aux(batch))
            return metrics
        aux_keys = self.aux.nograd_keys if self.aux is not None else []
        with self.autocast():
            feat = self.encoder(self.aug(batch["obs"]))
            extra = aux_keys if self.single_opt else []
            encoded = self.encode_nograd([batch["next_obs"]] + [batch[k] for k in extra])
            loss, m = self.critic_loss(feat, batch, encoded[0], step)
            metrics.update(m)
            if self.single_opt and self.aux is not None:
                aux_loss, m = self.aux.loss(batch, feat, encoded[1:])
                metrics.update(m)
                loss = loss + aux_loss
        self.opts["critic"].zero_grad(set_to_none=True)
        loss.backward()
        self.opts["critic"].step()

        metrics.update(self.update_actor(feat.detach(), step, batch))
        soft_update(self.critic, self.critic_target, self.critic_tau)
        if self.aux is not None and not self.single_opt:
            metrics.update(self.update_aux(batch))
        return metrics

    def update_aux(self, batch: Batch) -> dict[str, torch.Tensor]:
        if self.aux is None:
            raise RuntimeError(f"{type(self).__name__} has no auxiliary module (aux=none): no auxiliary step")
        with self.autocast():
            anchor = self.encoder(self.aug(batch["obs"]))
            targets = self.encode_nograd([batch[k] for k in self.aux.nograd_keys])
            loss, metrics = self.aux.loss(batch, anchor, targets)
        self.opts["aux"].zero_grad(set_to_none=True)
        loss.backward()
        self.opts["aux"].step()
        return metrics

    # ----------------------------------------------------------------- state
    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {f"net/{k}": m.state_dict() for k, m in self.modules().items()}
        state.update({f"opt/{k}": o.state_dict() for k, o in self.opts.items()})
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        expected = set(self.state_dict())
        if set(state) != expected:
            raise ValueError(
                f"checkpoint holds {sorted(state)}, this learner expects {sorted(expected)}: "
                "was it written by a different agent/aux configuration?"
            )
        for k, m in self.modules().items():
            m.load_state_dict(state[f"net/{k}"])
        for k, o in self.opts.items():
            o.load_state_dict(state[f"opt/{k}"])
            set_adam_impl(o, self.adam_impl)  # the kernel is this learner's choice, not the file's

    # ----------------------------------------------------------------- policy (subclasses)
    def _act(self, feat: torch.Tensor, step: int, eval_mode: bool) -> torch.Tensor:
        raise NotImplementedError

    def _target_value(self, next_feat: torch.Tensor, step: int) -> torch.Tensor:
        raise NotImplementedError

    def _actor_loss(
        self, feat: torch.Tensor, step: int, batch: Batch | None = None
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The actor's loss on encoder features; `batch` holds the dataset actions offline learners need."""
        raise NotImplementedError
