"""TacoLoss: TACO for anyone's learner, from plain tensors.

The suite's learners hand `agents/taco.py`'s TACO the encodings it needs (they batch every encoder
pass of an update). A learner written elsewhere (a single-file script, a lab codebase, torchrl) has
its own encoder and its own batches; this module takes that encoder and plain tensors, augments and
encodes what TACO needs itself, and calls the same TACO for the math: one copy of the loss.

    taco = TacoLoss(encoder, action_dim, obs_shape=(9, 84, 84))    # K=3, CURL and reward terms on
    aux_opt = torch.optim.Adam(taco.parameters(), lr=1e-4)           # encoder, action encoder, heads
    loss, metrics = taco(obs, action_seq, reward_seq, future_obs)   # (B, ...), (B, K, A), (B, K), (B, ...)
    aux_opt.zero_grad(); loss.backward(); aux_opt.step()
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Literal

import torch
import torch.nn as nn

from .nets import ActionEncoder, RandomShift, latent_action_dim
from .taco import TACO

Augment = Callable[[torch.Tensor], torch.Tensor]


def _module_device(module: nn.Module) -> torch.device:
    for tensor in module.parameters():
        return tensor.device
    for buffer in module.buffers():
        return buffer.device
    return torch.device("cpu")


class TacoLoss(nn.Module):
    """TACO's auxiliary loss (with its CURL and reward terms) on a user's encoder.

    Args:
        encoder: any module from a batch of observations ``(B, *obs_shape)`` to features ``(B, D)``;
            D is read by one dry forward. Its parameters belong to this module too, so an optimizer
            over ``parameters()`` steps the encoder, as the reference's auxiliary optimizer does.
        action_dim: size of the (continuous) action vector.
        obs_shape: shape of one observation, e.g. ``(9, 84, 84)`` for three stacked RGB frames.
        obs_dtype: dtype of the observations the encoder takes (uint8 frames by default).
        k: K, the number of actions between the anchor and the future observation (the paper's 3).
        aux: ``"taco"`` (TACO with its CURL and reward terms, as weighted) or ``"curl"`` (the CURL
            baseline: no action encoder, no predictor, no reward head), the suite's ``aux`` switch.
        taco_weight, curl_weight, reward_weight: each term's weight; 0 turns a term off.
        action_encoder: True builds TACO's per-step action encoder (``self.action_encoder``; the
            paper's critic scores Q(z, tok(a)) with it); False feeds raw actions to the sequence
            encoder; an ``ActionEncoder`` you already have (e.g. your critic's) is shared.
        latent_dim: latent action size of a new action encoder (0: the paper's int(1.25 |A|) + 1).
        feature_dim, hidden_dim: TACO's projection and head widths (the paper's 50 and 1024).
        gamma: the reward head predicts sum_i gamma^i reward_seq[:, i], the n-step return of the
            rewards given (the suite's ``reward`` with n = K = 3).
        augment: ``"shift"`` (the suite's random shift by up to 4 pixels, a fresh draw per sample and
            call), None (no augmentation) or any callable on a batch of observations.
    """

    def __init__(
        self,
        encoder: nn.Module,
        action_dim: int,
        *,
        obs_shape: Sequence[int],
        obs_dtype: torch.dtype = torch.uint8,
        k: int = 3,
        aux: Literal["taco", "curl"] = "taco",
        taco_weight: float = 1.0,
        curl_weight: float = 1.0,
        reward_weight: float = 1.0,
        action_encoder: bool | ActionEncoder = True,
        latent_dim: int = 0,
        feature_dim: int = 50,
        hidden_dim: int = 1024,
        gamma: float = 0.99,
        augment: Augment | Literal["shift"] | None = "shift",
    ) -> None:
        super().__init__()
        if aux not in ("taco", "curl"):
            raise ValueError(f"aux={aux!r}: expected 'taco' or 'curl'")
        for name, value in (
            ("taco_weight", taco_weight),
            ("curl_weight", curl_weight),
            ("reward_weight", reward_weight),
        ):
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"{name}={value!r}: expected a finite number >= 0 (0 turns the term off)")
        if aux == "curl" and curl_weight <= 0:
            raise ValueError("aux='curl' needs curl_weight > 0")
        if aux == "taco" and max(taco_weight, curl_weight, reward_weight) <= 0:
            raise ValueError("aux='taco' with every weight 0 has no loss")
        if k < 1 or action_dim < 1:
            raise ValueError(f"k and action_dim must be >= 1, got k={k}, action_dim={action_dim}")
        if augment is not None and augment != "shift" and not callable(augment):
            raise ValueError(f"augment={augment!r}: expected 'shift', None or a callable on a batch of observations")
        self.obs_shape, self.obs_dtype, self.k, self.action_dim = tuple(obs_shape), obs_dtype, k, action_dim
        self.gamma = gamma
        self.encoder = encoder
        self.augment = RandomShift(pad=4) if augment == "shift" else augment
        device = _module_device(encoder)
        self.repr_dim = repr_dim = self._dry_forward(device)  # the encoder's feature size

        tok: ActionEncoder | None = None
        if aux == "taco" and isinstance(action_encoder, nn.Module):
            if not isinstance(getattr(action_encoder, "latent_dim", None), int):
                raise ValueError("action_encoder: expected an ActionEncoder (a module with an int `latent_dim`)")
            tok = action_encoder
        elif aux == "taco" and action_encoder:
            tok = ActionEncoder(action_dim, latent_dim or latent_action_dim(action_dim)).to(device)
        weights = (taco_weight, curl_weight, reward_weight) if aux == "taco" else (0.0, curl_weight, 0.0)
        self.taco = TACO(
            repr_dim,
            action_dim,
            k=k,
            feature_dim=feature_dim,
            hidden_dim=hidden_dim,
            action_encoder=tok,
            taco_weight=weights[0],
            curl_weight=weights[1],
            reward_weight=weights[2],
        ).to(device)

    def _dry_forward(self, device: torch.device) -> int:
        """The encoder's feature size, from one no-grad forward on two blank observations (in eval
        mode, so that a BatchNorm's running statistics are left as they were)."""
        training = self.encoder.training
        self.encoder.eval()
        try:
            with torch.no_grad():
                out = self.encoder(torch.zeros((2, *self.obs_shape), dtype=self.obs_dtype, device=device))
        finally:
            self.encoder.train(training)
        if not isinstance(out, torch.Tensor) or out.dim() != 2 or out.shape[0] != 2:
            shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise ValueError(
                f"encoder: expected (batch, features) out of (batch, *{self.obs_shape}) in, got {shape} "
                "(end it with nn.Flatten() if it returns a feature map)"
            )
        return int(out.shape[1])

    @property
    def action_encoder(self) -> ActionEncoder | None:
        """TACO's per-step action encoder (None with raw actions or aux='curl'): give it to your critic
        to score Q(z, tok(a)) as the paper does."""
        return getattr(self.taco, "tok", None)

    def head_parameters(self) -> list[nn.Parameter]:
        """TACO's own parameters (projection, W, sequence encoder, predictor, reward head), without the
        encoder and the action encoder: for a learner that already steps those with another optimizer."""
        return self.taco.own_parameters()

    def _aug(self, x: torch.Tensor) -> torch.Tensor:
        return x if self.augment is None else self.augment(x)

    @staticmethod
    def _check(
        name: str, x: torch.Tensor | None, expected: tuple[int | str, ...], batch: int | None, needed_by: str
    ) -> torch.Tensor:
        """x itself, once its shape is the expected one ("B": the batch size, "n": any size >= 1)."""
        if x is None:
            raise ValueError(f"{name} is None, but {needed_by} reads it")
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"{name}: expected a torch.Tensor of shape {expected}, got {type(x).__name__}")
        sizes = [batch if s == "B" else s for s in expected]
        if (
            x.dim() != len(expected)
            or any(isinstance(s, int) and s != d for s, d in zip(sizes, x.shape, strict=True))
            or x.numel() == 0
        ):
            raise ValueError(
                f"{name}: expected shape {tuple(expected)}{'' if batch is None else f' with B={batch}'}, "
                f"got {tuple(x.shape)}"
            )
        return x

    def prepare(
        self,
        obs: torch.Tensor,
        action_seq: torch.Tensor | None = None,
        reward_seq: torch.Tensor | None = None,
        future_obs: torch.Tensor | None = None,
    ) -> tuple[dict[str, torch.Tensor], torch.Tensor, list[torch.Tensor]]:
        """Check the inputs and encode them: TACO's (batch, anchor, no-grad targets).

        The anchor is enc(aug(obs)) with gradients; the targets, enc(aug'(obs)) for CURL and
        enc(aug(future_obs)) for TACO, come from one no-grad encoder call. Augmentations are drawn in
        that order, the order of the suite's own update, so both see the same shifts from one seed.
        """
        obs = self._check("obs", obs, ("B", *self.obs_shape), None, "every term")
        b = obs.shape[0]
        batch: dict[str, torch.Tensor] = {}
        frames = {"obs": obs}
        if self.taco.uses_actions:
            action_seq = self._check(
                "action_seq", action_seq, ("B", self.k, self.action_dim), b, "the TACO and reward terms"
            )
            batch["action_seq"] = action_seq.float()
        if self.taco.reward_weight > 0:
            rewards = self._check("reward_seq", reward_seq, ("B", "n"), b, "the reward term").float()
            discounts = self.gamma ** torch.arange(rewards.shape[1], device=rewards.device, dtype=rewards.dtype)
            batch["reward"] = (rewards * discounts).sum(dim=1, keepdim=True)
        if self.taco.taco_weight > 0:
            frames["future_obs"] = self._check("future_obs", future_obs, ("B", *self.obs_shape), b, "the TACO term")
        anchor = self.encoder(self._aug(obs))
        targets: list[torch.Tensor] = []
        if self.taco.nograd_keys:
            with torch.no_grad():
                augmented = [self._aug(frames[key]) for key in self.taco.nograd_keys]
                targets = list(self.encoder(torch.cat(augmented)).split([len(x) for x in augmented]))
        return batch, anchor, targets

    def forward(
        self,
        obs: torch.Tensor,
        action_seq: torch.Tensor | None = None,
        reward_seq: torch.Tensor | None = None,
        future_obs: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """(loss, metrics) on a batch of K-step windows.

        obs: (B, *obs_shape), the observations s_t; action_seq: (B, K, A), a_t .. a_{t+K-1};
        reward_seq: (B, n), r_t .. r_{t+n-1} (n = K from ``WindowSampler``); future_obs:
        (B, *obs_shape), s_{t+K}. With aux='curl' only obs is read. metrics holds ``curl_loss``,
        ``taco_loss``, ``reward_loss`` (each term unweighted, those that are on) and ``aux_loss``
        (the weighted total), detached.
        """
        return self.taco.loss(*self.prepare(obs, action_seq, reward_seq, future_obs))

    def terms(
        self,
        obs: torch.Tensor,
        action_seq: torch.Tensor | None = None,
        reward_seq: torch.Tensor | None = None,
        future_obs: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """Each term that is on, weighted and with its gradient ({"curl", "taco", "reward"}): their sum
        is ``forward``'s loss."""
        terms = self.taco.terms(*self.prepare(obs, action_seq, reward_seq, future_obs))
        return {name: self.taco.weight(name) * value for name, value in terms.items()}
