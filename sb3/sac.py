"""TacoSAC: SB3's SAC from pixels with the DrQ-style encoder flow and the suite's TACO loss."""

from __future__ import annotations

import math
from typing import Any, ClassVar

import torch as th
import torch.nn.functional as F
from stable_baselines3 import SAC
from stable_baselines3.common.policies import BasePolicy
from stable_baselines3.common.utils import polyak_update

from taco_rl.sb3.buffer import TacoReplayBuffer, TacoReplayBufferSamples
from taco_rl.sb3.policy import TacoActor, TacoCritic, TacoSACPolicy

__all__ = ["TacoSAC"]


class TacoSAC(SAC):
    """SAC (stable-baselines3) + random-shift augmentation + TACO, trained by SB3's own ``learn()``.

    Everything SB3's SAC takes is accepted (env, callbacks, logger, ``save``/``load``, VecEnvs with
    ``n_envs >= 1``, learning-rate schedules, ``ent_coef``, ``target_update_interval``).  What changes:

    - one update, in the reference's order: encode aug(obs) with gradients and aug(next_obs) without;
      entropy-coefficient step; critic step (reaches the encoder and ``tok``); actor step on the
      detached features; target EMA (trunk and Q heads); then TACO's step on fresh augmentations with
      its own Adam over encoder, ``tok`` and the TACO heads (agents/taco.py, the suite's module);
    - the replay buffer is ``TacoReplayBuffer`` (K-step action sequences, observation K steps ahead,
      optional n-step returns via ``n_steps``); TACO's step reads its own draw of positions with K
      steps left in the episode, so SAC still trains on every transition, terminal ones included;
    - defaults follow the suite's SAC+TACO (lr 1e-4, tau 0.01, initial entropy coefficient 0.1,
      1024-wide heads, feature_dim 50, K = 3, weights 1.0) where they differ from SB3's SAC.

    TACO's arguments: ``taco_k``, ``taco_weight``, ``curl_weight``, ``reward_weight``,
    ``action_encoder``, ``feature_dim``, ``augment`` (see TacoSACPolicy; they become policy_kwargs, so a
    saved model rebuilds the same networks).  The logger gets ``train/taco_loss``, ``train/curl_loss``,
    ``train/reward_loss`` and ``train/aux_loss`` beside SAC's own losses.  Not supported: gSDE,
    Dict observations, HER, ``share_features_extractor=False``.
    """

    policy_aliases: ClassVar[dict[str, type[BasePolicy]]] = {"CnnPolicy": TacoSACPolicy}
    policy: TacoSACPolicy
    actor: TacoActor
    critic: TacoCritic
    critic_target: TacoCritic
    replay_buffer: TacoReplayBuffer

    def __init__(
        self,
        policy: str | type[TacoSACPolicy],
        env,
        learning_rate: float = 1e-4,
        buffer_size: int = 1_000_000,
        learning_starts: int = 1000,
        batch_size: int = 256,
        tau: float = 0.01,
        gamma: float = 0.99,
        *,
        taco_k: int = 3,
        taco_weight: float = 1.0,
        curl_weight: float = 1.0,
        reward_weight: float = 1.0,
        action_encoder: bool = True,
        feature_dim: int = 50,
        augment: bool = True,
        n_steps: int = 1,
        ent_coef: str | float = "auto_0.1",
        replay_buffer_class: type[TacoReplayBuffer] | None = None,
        replay_buffer_kwargs: dict[str, Any] | None = None,
        policy_kwargs: dict[str, Any] | None = None,
        _init_setup_model: bool = True,
        **kwargs: Any,
    ) -> None:
        if isinstance(policy, str) and policy not in self.policy_aliases:
            raise ValueError(
                f"TacoSAC takes image observations with policy 'CnnPolicy' (or a TacoSACPolicy "
                f"subclass), got {policy!r}"
            )
        if taco_k < 1 or n_steps < 1:
            raise ValueError(f"taco_k and n_steps must be >= 1, got taco_k={taco_k}, n_steps={n_steps}")
        policy_kwargs = dict(policy_kwargs or {})
        for key, value in dict(
            taco_k=taco_k,
            taco_weight=taco_weight,
            curl_weight=curl_weight,
            reward_weight=reward_weight,
            action_encoder=action_encoder,
            feature_dim=feature_dim,
            augment=augment,
        ).items():
            policy_kwargs.setdefault(key, value)
        for key in ("taco_weight", "curl_weight", "reward_weight"):
            value = policy_kwargs[key]
            try:
                ok = math.isfinite(float(value)) and float(value) >= 0
            except (TypeError, ValueError):
                ok = False
            if not ok:
                raise ValueError(f"{key}={value!r}: expected a finite number >= 0 (0 turns the term off)")
        if not (isinstance(policy_kwargs["feature_dim"], int) and policy_kwargs["feature_dim"] >= 1):
            raise ValueError(f"feature_dim={policy_kwargs['feature_dim']!r}: expected a positive integer")
        replay_buffer_class = replay_buffer_class or TacoReplayBuffer
        if not issubclass(replay_buffer_class, TacoReplayBuffer):
            raise ValueError(
                f"TacoSAC needs a TacoReplayBuffer (it samples action sequences), got {replay_buffer_class.__name__}"
            )
        replay_buffer_kwargs = dict(replay_buffer_kwargs or {})
        replay_buffer_kwargs.setdefault("k", policy_kwargs["taco_k"])
        replay_buffer_kwargs.setdefault("n_steps", n_steps)
        replay_buffer_kwargs.setdefault("gamma", gamma)
        if replay_buffer_kwargs["k"] != policy_kwargs["taco_k"]:
            raise ValueError(
                f"replay_buffer_kwargs k={replay_buffer_kwargs['k']} differs from taco_k={policy_kwargs['taco_k']}"
            )
        # n-step returns live in TacoReplayBuffer (replay_buffer_kwargs), so SB3's own n_steps stays 1
        super().__init__(
            policy,
            env,
            learning_rate=learning_rate,
            buffer_size=buffer_size,
            learning_starts=learning_starts,
            batch_size=batch_size,
            tau=tau,
            gamma=gamma,
            ent_coef=ent_coef,
            replay_buffer_class=replay_buffer_class,
            replay_buffer_kwargs=replay_buffer_kwargs,
            policy_kwargs=policy_kwargs,
            _init_setup_model=False,
            **kwargs,
        )
        if _init_setup_model:
            self._setup_model()

    def _setup_model(self) -> None:
        super()._setup_model()
        self.taco_optimizer = self.policy.taco_optimizer

    def _get_torch_save_params(self) -> tuple[list[str], list[str]]:
        state_dicts, variables = super()._get_torch_save_params()
        if self.policy.taco is not None:
            state_dicts.append("taco_optimizer")
        return state_dicts, variables

    def _excluded_save_params(self) -> list[str]:
        return [*super()._excluded_save_params(), "taco_optimizer"]

    # ------------------------------------------------------------------ learning
    def learn(
        self,
        total_timesteps: int,
        callback=None,
        log_interval: int = 4,
        tb_log_name: str = "TacoSAC",
        reset_num_timesteps: bool = True,
        progress_bar: bool = False,
    ) -> TacoSAC:
        """SB3's SAC.learn; TensorBoard runs are named TacoSAC_<n>."""
        return super().learn(
            total_timesteps,
            callback=callback,
            log_interval=log_interval,
            tb_log_name=tb_log_name,
            reset_num_timesteps=reset_num_timesteps,
            progress_bar=progress_bar,
        )

    def train(self, gradient_steps: int, batch_size: int = 64) -> None:
        if not self.replay_buffer.ready():  # e.g. learning goes on after load() without the old buffer
            return
        self.policy.set_training_mode(True)
        optimizers = [self.actor.optimizer, self.critic.optimizer]
        optimizers += [self.ent_coef_optimizer] if self.ent_coef_optimizer is not None else []
        optimizers += [self.taco_optimizer] if self.taco_optimizer is not None else []
        self._update_learning_rate(optimizers)

        logs: dict[str, list[th.Tensor]] = {}
        for gradient_step in range(gradient_steps):
            data = self.replay_buffer.sample(batch_size, env=self._vec_normalize_env)
            metrics = self._sac_step(data)
            if gradient_step % self.target_update_interval == 0:
                polyak_update(self.critic.ema_parameters(), self.critic_target.ema_parameters(), self.tau)
            if self.policy.taco is not None:
                metrics.update(self._taco_step(data))
            for key, value in metrics.items():
                logs.setdefault(key, []).append(value)
        self._n_updates += gradient_steps

        self.logger.record("train/n_updates", self._n_updates, exclude="tensorboard")
        for key, values in logs.items():  # one host sync per train() call
            self.logger.record(f"train/{key}", float(th.stack(values).float().mean()))

    def _sac_step(self, data: TacoReplayBufferSamples) -> dict[str, th.Tensor]:
        """SB3's SAC losses on encoder features: critic loss trains the encoder, the actor sees them detached."""
        policy, actor, critic = self.policy, self.actor, self.critic
        feat = policy.encode(policy.aug(data.observations))
        with th.no_grad():
            next_feat = policy.encode(policy.aug(data.next_observations))

        actions_pi, log_prob = actor.action_log_prob_from_features(feat.detach())
        log_prob = log_prob.reshape(-1, 1)
        metrics: dict[str, th.Tensor] = {}
        if self.ent_coef_optimizer is not None and self.log_ent_coef is not None:
            ent_coef = th.exp(self.log_ent_coef.detach())
            ent_coef_loss = -(self.log_ent_coef * (log_prob + float(self.target_entropy)).detach()).mean()
            self.ent_coef_optimizer.zero_grad()
            ent_coef_loss.backward()
            self.ent_coef_optimizer.step()
            metrics["ent_coef_loss"] = ent_coef_loss.detach()
        else:
            ent_coef = self.ent_coef_tensor
        metrics["ent_coef"] = ent_coef.reshape(())

        with th.no_grad():
            next_actions, next_log_prob = actor.action_log_prob_from_features(next_feat)
            next_q = th.cat(self.critic_target.q_values(next_feat, next_actions), dim=1).min(dim=1, keepdim=True)[0]
            next_q = next_q - ent_coef * next_log_prob.reshape(-1, 1)
            target_q = data.rewards + (1 - data.dones) * data.discounts * next_q
        q_losses = [F.mse_loss(q, target_q) for q in critic.q_values(feat, data.actions)]
        critic_loss = 0.5 * sum(q_losses[1:], q_losses[0])
        critic.optimizer.zero_grad()
        critic_loss.backward()
        critic.optimizer.step()

        min_q_pi = th.cat(critic.q_values(feat.detach(), actions_pi), dim=1).min(dim=1, keepdim=True)[0]
        actor_loss = (ent_coef * log_prob - min_q_pi).mean()
        actor.optimizer.zero_grad()
        actor_loss.backward(inputs=[p for group in actor.optimizer.param_groups for p in group["params"]])
        actor.optimizer.step()
        metrics.update(critic_loss=critic_loss.detach(), actor_loss=actor_loss.detach())
        return metrics

    def _taco_step(self, data: TacoReplayBufferSamples) -> dict[str, th.Tensor]:
        """The suite's TACO loss (with its CURL and reward terms) on fresh augmentations."""
        policy, taco, optimizer = self.policy, self.policy.taco, self.taco_optimizer
        if taco is None or optimizer is None:
            raise RuntimeError("TacoSAC's TACO step needs the TACO module (a TACO, CURL or reward weight > 0)")
        batch = {
            "obs": data.taco_observations,
            "future_obs": data.future_observations,
            "action_seq": data.action_seq,
            "reward": data.taco_rewards,
        }
        anchor = policy.encode(policy.aug(batch["obs"]))
        targets = policy.encode_nograd([batch[key] for key in taco.nograd_keys])
        loss, metrics = taco.loss(batch, anchor, targets)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        return metrics
