"""TacoSAC's policy: SB3's SAC actor and critic around the suite's encoder, as in DrQ-v2/TACO.

- The features extractor is the suite's ``Encoder`` (agents/nets.py), owned by the critic: the critic
  loss and the TACO loss train it; the actor reads its features detached.  The target critic reads the
  same online encoder (the suite's SAC does too), so only its trunk and Q heads are an EMA.
- Actor and critic each put a trunk (Linear -> LayerNorm -> Tanh to ``feature_dim``) in front of SB3's
  MLPs, so heads see 50 features instead of the encoder's 39,200 (the reference networks).
- With the action encoder on, the critic scores Q(z, tok(a)); ``tok`` is one ``ActionEncoder`` shared
  with the TACO module (SPEC section 6).
- The encoder normalises uint8 frames itself (``obs / 255 - 0.5``), so ``normalize_images`` is False
  and frames reach it as uint8 (SB3's float conversion is skipped); any observation size the encoder
  takes works (32x32 point_reach frames included), which SB3's NatureCNN does not.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch as th
from gymnasium import spaces
from stable_baselines3.common.policies import BaseModel, ContinuousCritic
from stable_baselines3.common.preprocessing import get_action_dim
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor, get_actor_critic_arch
from stable_baselines3.common.type_aliases import PyTorchObs
from stable_baselines3.sac.policies import LOG_STD_MAX, LOG_STD_MIN, Actor, SACPolicy
from torch import nn

from taco_rl.agents.nets import ActionEncoder, Encoder, RandomShift, latent_action_dim, trunk, weight_init
from taco_rl.agents.taco import TACO

__all__ = ["SuiteEncoder", "TacoActor", "TacoCritic", "TacoSACPolicy"]


class SuiteEncoder(BaseFeaturesExtractor):
    """The suite's 4-layer conv encoder as an SB3 features extractor (features = flattened conv maps)."""

    takes_uint8 = True  # normalises frames itself; see TacoSACPolicy

    def __init__(self, observation_space: spaces.Box) -> None:
        if not isinstance(observation_space, spaces.Box) or len(observation_space.shape) != 3:
            raise ValueError(f"SuiteEncoder takes (C, H, W) image observations, got {observation_space}")
        c, h, w = observation_space.shape
        encoder = Encoder((c, h, w))
        super().__init__(observation_space, encoder.repr_dim)
        self.encoder = encoder

    def forward(self, observations: th.Tensor) -> th.Tensor:
        return self.encoder(observations)


def _features(model: BaseModel, obs: PyTorchObs, features_extractor: BaseFeaturesExtractor) -> th.Tensor:
    """uint8 frames straight into an encoder that normalises them itself; else SB3's preprocessing."""
    if getattr(features_extractor, "takes_uint8", False) and not model.normalize_images:
        return features_extractor(obs)
    return BaseModel.extract_features(model, obs, features_extractor)


class TacoActor(Actor):
    """SB3's squashed-Gaussian SAC actor with a trunk in front, reading detached encoder features."""

    # SB3 types Actor.log_std as gSDE's Parameter; without gSDE (checked below) it is a Linear
    log_std: nn.Linear  # type: ignore[assignment]

    def __init__(
        self,
        observation_space: spaces.Space,
        action_space: spaces.Box,
        net_arch: list[int],
        features_extractor: BaseFeaturesExtractor,
        features_dim: int,
        *,
        feature_dim: int = 50,
        **kwargs: Any,
    ) -> None:
        # Actor builds its MLP on `features_dim` inputs: give it the trunk's width, then put the trunk in front
        super().__init__(observation_space, action_space, net_arch, features_extractor, feature_dim, **kwargs)
        if not isinstance(self.log_std, nn.Linear):
            raise ValueError("TacoActor does not support gSDE (use_sde=True)")
        self.features_dim, self.feature_dim = features_dim, feature_dim
        self.latent_pi = nn.Sequential(trunk(features_dim, feature_dim), *self.latent_pi)
        for module in (self.latent_pi, self.mu, self.log_std):
            module.apply(weight_init)

    def extract_features(self, obs: PyTorchObs, features_extractor: BaseFeaturesExtractor) -> th.Tensor:
        return _features(self, obs, features_extractor).detach()  # the critic and TACO train the encoder

    def get_action_dist_params(self, obs: PyTorchObs) -> tuple[th.Tensor, th.Tensor, dict[str, th.Tensor]]:
        return self.dist_params_from_features(self.extract_features(obs, self.features_extractor))

    def dist_params_from_features(self, features: th.Tensor) -> tuple[th.Tensor, th.Tensor, dict[str, th.Tensor]]:
        latent_pi = self.latent_pi(features)
        log_std = th.clamp(self.log_std(latent_pi), LOG_STD_MIN, LOG_STD_MAX)
        return self.mu(latent_pi), log_std, {}

    def action_log_prob_from_features(self, features: th.Tensor) -> tuple[th.Tensor, th.Tensor]:
        """A squashed sample and its log-probability for encoder features already computed."""
        mean_actions, log_std, kwargs = self.dist_params_from_features(features)
        return self.action_dist.log_prob_from_params(mean_actions, log_std, **kwargs)

    def _get_constructor_parameters(self) -> dict[str, Any]:
        return dict(super()._get_constructor_parameters(), feature_dim=self.feature_dim)


class TacoCritic(ContinuousCritic):
    """Clipped double Q on trunk(features) and the action code tok(a) (raw actions without ``tok``)."""

    def __init__(
        self,
        observation_space: spaces.Space,
        action_space: spaces.Box,
        net_arch: list[int],
        features_extractor: BaseFeaturesExtractor,
        features_dim: int,
        *,
        feature_dim: int = 50,
        action_encoder: ActionEncoder | None = None,
        **kwargs: Any,
    ) -> None:
        code_dim = action_encoder.latent_dim if action_encoder is not None else get_action_dim(action_space)
        # ContinuousCritic sizes each Q head for (features_dim + |A|) inputs; ours see feature_dim + code_dim
        head_inputs = feature_dim + code_dim - get_action_dim(action_space)
        super().__init__(observation_space, action_space, net_arch, features_extractor, head_inputs, **kwargs)
        self.feature_dim = feature_dim
        self.trunk = trunk(features_dim, feature_dim)
        self.action_encoder = action_encoder
        for module in (self.trunk, *self.q_networks):
            module.apply(weight_init)

    def extract_features(self, obs: PyTorchObs, features_extractor: BaseFeaturesExtractor) -> th.Tensor:
        return _features(self, obs, features_extractor)

    def code(self, actions: th.Tensor) -> th.Tensor:
        return self.action_encoder(actions) if self.action_encoder is not None else actions

    def q_values(self, features: th.Tensor, actions: th.Tensor) -> tuple[th.Tensor, ...]:
        """Every Q head on encoder features already computed."""
        h = th.cat([self.trunk(features), self.code(actions)], dim=1)
        return tuple(q_net(h) for q_net in self.q_networks)

    def forward(self, obs: th.Tensor, actions: th.Tensor) -> tuple[th.Tensor, ...]:
        return self.q_values(self.extract_features(obs, self.features_extractor), actions)

    def q1_forward(self, obs: th.Tensor, actions: th.Tensor) -> th.Tensor:
        with th.no_grad():
            features = self.extract_features(obs, self.features_extractor)
        return self.q_networks[0](th.cat([self.trunk(features), self.code(actions)], dim=1))

    def ema_parameters(self) -> list[nn.Parameter]:
        """What the target critic averages: trunk and Q heads (encoder and tok are shared, online)."""
        return list(self.trunk.parameters()) + [p for q in self.q_networks for p in q.parameters()]


class TacoSACPolicy(SACPolicy):
    """SACPolicy whose critic owns the suite's encoder, plus the suite's TACO module and its optimizer.

    :param feature_dim: trunk width of actor, critic and TACO's state projection (50)
    :param taco_k: K, the length of the action sequences TACO conditions on (3)
    :param taco_weight / curl_weight / reward_weight: weights of TACO's three terms (1.0 each; 0 turns a
        term off; all three 0 trains no auxiliary loss at all)
    :param action_encoder: learn TACO's action encoder ``tok`` and score the critic on tok(a) (True);
        False is the raw-action ablation
    :param latent_dim: size of a latent action (0: int(1.25 |A|) + 1)
    :param taco_hidden_dim: width of TACO's G and R heads (None: the critic's widest layer)
    :param augment: random shift (pad 4) on every frame the update encodes (True)
    """

    actor: TacoActor
    critic: TacoCritic
    critic_target: TacoCritic

    def __init__(
        self,
        observation_space: spaces.Box,
        action_space: spaces.Box,
        lr_schedule,
        net_arch: list[int] | dict[str, list[int]] | None = None,
        activation_fn: type[nn.Module] = nn.ReLU,
        use_sde: bool = False,
        log_std_init: float = -3,
        use_expln: bool = False,
        clip_mean: float = 2.0,
        features_extractor_class: type[BaseFeaturesExtractor] = SuiteEncoder,
        features_extractor_kwargs: dict[str, Any] | None = None,
        normalize_images: bool = False,
        optimizer_class: type[th.optim.Optimizer] = th.optim.Adam,
        optimizer_kwargs: dict[str, Any] | None = None,
        n_critics: int = 2,
        share_features_extractor: bool = True,
        *,
        feature_dim: int = 50,
        taco_k: int = 3,
        taco_weight: float = 1.0,
        curl_weight: float = 1.0,
        reward_weight: float = 1.0,
        action_encoder: bool = True,
        latent_dim: int = 0,
        taco_hidden_dim: int | None = None,
        augment: bool = True,
    ) -> None:
        if use_sde:
            raise ValueError("TacoSAC does not support gSDE (use_sde=True); its actor is SB3's squashed Gaussian")
        if not share_features_extractor:
            raise ValueError("TacoSAC's actor always reads the critic's encoder (share_features_extractor=True)")
        if taco_k < 1:
            raise ValueError(f"taco_k must be >= 1, got {taco_k}")
        if normalize_images and getattr(features_extractor_class, "takes_uint8", False):
            raise ValueError(
                f"{features_extractor_class.__name__} scales uint8 frames itself: "
                "leave normalize_images=False (it is for extractors such as NatureCNN)"
            )
        if min(taco_weight, curl_weight, reward_weight) < 0:
            raise ValueError("taco_weight, curl_weight and reward_weight must be >= 0")
        self.feature_dim, self.taco_k = feature_dim, taco_k
        self.taco_weights = (float(taco_weight), float(curl_weight), float(reward_weight))
        self.use_action_encoder, self.latent_dim = action_encoder, latent_dim
        self.taco_hidden_dim, self.augment = taco_hidden_dim, augment
        super().__init__(
            observation_space,
            action_space,
            lr_schedule,
            [1024, 1024] if net_arch is None else net_arch,
            activation_fn,
            use_sde,
            log_std_init,
            use_expln,
            clip_mean,
            features_extractor_class,
            features_extractor_kwargs,
            normalize_images,
            optimizer_class,
            optimizer_kwargs,
            n_critics,
            share_features_extractor,
        )

    def _build(self, lr_schedule) -> None:
        action_dim = get_action_dim(self.action_space)
        taco_w, curl_w, reward_w = self.taco_weights
        uses_actions = taco_w > 0 or reward_w > 0
        self.action_encoder = None
        if self.use_action_encoder and uses_actions:
            self.action_encoder = ActionEncoder(action_dim, self.latent_dim or latent_action_dim(action_dim))
        self.actor = self.make_actor()
        encoder = self.actor.features_extractor
        self.critic = self.make_critic(features_extractor=encoder)
        self.critic_target = self.make_critic(features_extractor=encoder)  # same online encoder and tok
        self.critic_target.load_state_dict(self.critic.state_dict())
        for p in self.critic_target.ema_parameters():
            p.requires_grad_(False)
        self.critic_target.set_training_mode(False)
        self.aug: nn.Module = RandomShift(pad=4) if self.augment else nn.Identity()

        shared = list(encoder.parameters())
        shared += list(self.action_encoder.parameters()) if self.action_encoder is not None else []
        shared_ids = {id(p) for p in encoder.parameters()}
        lr = lr_schedule(1)
        self.actor.optimizer = self._optimizer([p for p in self.actor.parameters() if id(p) not in shared_ids], lr)
        self.critic.optimizer = self._optimizer(self.critic.parameters(), lr)

        self.taco: TACO | None = None
        self.taco_optimizer: th.optim.Optimizer | None = None
        if max(self.taco_weights) > 0:
            _, critic_arch = get_actor_critic_arch(self.net_arch)
            hidden = self.taco_hidden_dim or max(critic_arch, default=1024)
            self.taco = TACO(
                encoder.features_dim,
                action_dim,
                k=self.taco_k,
                feature_dim=self.feature_dim,
                hidden_dim=hidden,
                action_encoder=self.action_encoder,
                taco_weight=taco_w,
                curl_weight=curl_w,
                reward_weight=reward_w,
            )
            # the reference's second Adam: the auxiliary loss steps encoder, tok and TACO's own heads
            self.taco_optimizer = self._optimizer(shared + self.taco.own_parameters(), lr)

    def _optimizer(self, params: Iterable[th.Tensor], lr: float) -> th.optim.Optimizer:
        # optimizer_class is typed type[Optimizer], whose __init__ takes (params, defaults); its subclasses take lr
        return self.optimizer_class(params, lr=lr, **self.optimizer_kwargs)  # type: ignore[call-arg]

    def make_actor(self, features_extractor: BaseFeaturesExtractor | None = None) -> TacoActor:
        kwargs = self._update_features_extractor(self.actor_kwargs, features_extractor)
        return TacoActor(**kwargs, feature_dim=self.feature_dim).to(self.device)

    def make_critic(self, features_extractor: BaseFeaturesExtractor | None = None) -> TacoCritic:
        kwargs = self._update_features_extractor(self.critic_kwargs, features_extractor)
        return TacoCritic(**kwargs, feature_dim=self.feature_dim, action_encoder=self.action_encoder).to(self.device)

    def encode(self, obs: th.Tensor) -> th.Tensor:
        """Encoder features of (already augmented) observations, with gradients."""
        return self.critic.extract_features(obs, self.critic.features_extractor)

    def encode_nograd(self, frames: list[th.Tensor]) -> list[th.Tensor]:
        """enc(aug(x)) for each x under no-grad, in one encoder call (fresh shifts per input)."""
        with th.no_grad():
            augmented = [self.aug(x) for x in frames]
            return list(self.encode(th.cat(augmented)).split([len(x) for x in augmented]))

    def _get_constructor_parameters(self) -> dict[str, Any]:
        data = super()._get_constructor_parameters()
        taco_w, curl_w, reward_w = self.taco_weights
        data.update(
            feature_dim=self.feature_dim,
            taco_k=self.taco_k,
            taco_weight=taco_w,
            curl_weight=curl_w,
            reward_weight=reward_w,
            action_encoder=self.use_action_encoder,
            latent_dim=self.latent_dim,
            taco_hidden_dim=self.taco_hidden_dim,
            augment=self.augment,
        )
        return data


CnnPolicy = TacoSACPolicy
