"""TacoSAC (taco_rl.sb3): SB3's learn(), logger and save/load; the buffer's sequences against the env's records."""

from __future__ import annotations

import csv
import math

import gymnasium as gym
import numpy as np
import pytest
import torch
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.logger import configure
from stable_baselines3.common.vec_env import DummyVecEnv

from taco_rl import envs
from taco_rl.envs import ActionRepeat, FrameStack
from taco_rl.sb3 import TacoReplayBuffer, TacoSAC, TacoSACPolicy

SMALL = dict(net_arch=[32, 32], taco_hidden_dim=32)


class CounterEnv(gym.Env):
    """Frame channel 0 = step index, 1 = episode index, 2 = env id; records every action it receives.

    Episodes last `length` steps and end by truncation, or by termination when `terminal` is set.
    """

    def __init__(self, env_id: int, length: int, terminal: bool, log: dict) -> None:
        self.observation_space = gym.spaces.Box(0, 255, (3, 20, 20), np.uint8)
        self.action_space = gym.spaces.Box(-1, 1, (2,), np.float32)
        self.env_id, self.length, self.terminal, self.log = env_id, length, terminal, log
        self.episode, self.t = -1, 0

    def _frame(self) -> np.ndarray:
        frame = np.zeros((3, 20, 20), np.uint8)
        frame[0], frame[1], frame[2] = self.t, self.episode % 256, self.env_id
        return frame

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.episode, self.t = self.episode + 1, 0
        return self._frame(), {}

    def step(self, action):
        self.log[(self.env_id, self.episode, self.t)] = np.asarray(action, np.float32).copy()
        self.t += 1
        end = self.t >= self.length
        return self._frame(), float(self.t), end and self.terminal, end and not self.terminal, {}


def read(frames: torch.Tensor, channel: int) -> np.ndarray:
    """The counter in `channel` of the newest frame of each stacked observation."""
    return frames[:, -3 + channel].flatten(1)[:, 0].long().numpy()


@pytest.mark.parametrize("k,n", [(3, 1), (2, 3)])
def test_buffer_sequences_follow_each_env_and_never_cross_episodes(k, n):
    log: dict = {}
    lengths, terminal = (23, 17), (False, True)  # env 1's episodes end in a true terminal
    venv = DummyVecEnv(
        [lambda i=i: FrameStack(ActionRepeat(CounterEnv(i, lengths[i], terminal[i], log), 1), 3) for i in range(2)]
    )
    model = TacoSAC(
        "CnnPolicy",
        venv,
        buffer_size=2 * 120,
        learning_starts=10_000,
        taco_k=k,
        n_steps=n,
        gamma=0.5,
        policy_kwargs=SMALL,
        seed=0,
    )
    model.learn(300)  # uniform random actions, no updates; the ring of 120 steps per env wraps
    model.learn(37)  # learn() resets the envs mid-episode: the buffer must close those episodes
    buf = model.replay_buffer
    assert isinstance(buf, TacoReplayBuffer) and buf.full
    batch = buf.sample(512)
    # SAC's draw: every transition with n steps left, terminal ones included
    t, ep, env = read(batch.observations, 0), read(batch.observations, 1), read(batch.observations, 2)
    assert set(env) == {0, 1}
    assert (read(batch.next_observations, 0) == t + n).all()
    assert (read(batch.next_observations, 1) == ep).all() and (read(batch.next_observations, 2) == env).all()
    assert (t + n <= np.array(lengths)[env]).all()
    assert (batch.observations[:, 0].flatten(1)[:, 0].long().numpy() == np.maximum(t - 2, 0)).all()
    seen_terminal = False
    for i in range(len(t)):
        e, s, p = int(env[i]), int(t[i]), int(ep[i])
        assert np.allclose(batch.actions[i].numpy(), log[(e, p, s)])
        assert float(batch.rewards[i]) == pytest.approx(sum(0.5**j * (s + j + 1) for j in range(n)))
        assert float(batch.discounts[i]) == pytest.approx(0.5**n)
        ends_in_terminal = terminal[e] and s + n == lengths[e]
        assert float(batch.dones[i]) == float(ends_in_terminal)  # time limits are bootstrapped
        seen_terminal |= ends_in_terminal
    assert seen_terminal
    # TACO's draw: a_t .. a_{t+K-1} and s_{t+K} of the same env and episode, never past its end
    t, ep, env = (read(batch.taco_observations, c) for c in range(3))
    assert (read(batch.future_observations, 0) == t + k).all()
    assert (read(batch.future_observations, 1) == ep).all() and (read(batch.future_observations, 2) == env).all()
    assert (t + max(k, n) <= np.array(lengths)[env]).all()
    for i in range(len(t)):
        e, s, p = int(env[i]), int(t[i]), int(ep[i])
        expected = np.stack([log[(e, p, s + j)] for j in range(k)])
        assert np.allclose(batch.action_seq[i].numpy(), expected)
        assert float(batch.taco_rewards[i]) == pytest.approx(sum(0.5**j * (s + j + 1) for j in range(n)))


def test_buffer_says_when_nothing_can_be_sampled():
    env = FrameStack(ActionRepeat(CounterEnv(0, 2, False, {}), 1), 3)  # 2-step episodes, K = 3
    model = TacoSAC("CnnPolicy", env, buffer_size=100, learning_starts=10_000, taco_k=3, policy_kwargs=SMALL)
    model.learn(20)
    with pytest.raises(RuntimeError, match="steps left in its episode"):
        model.replay_buffer.sample(4)


def logged(path) -> list[dict[str, str]]:
    with open(path / "progress.csv", newline="") as f:
        return [r for r in csv.DictReader(f) if r.get("train/taco_loss")]


def test_learn_logs_taco_losses_and_save_load_round_trip(tmp_path):
    env = envs.make_env("point_reach", 0, action_repeat=1, image_size=32)
    model = TacoSAC("CnnPolicy", env, buffer_size=5000, learning_starts=64, batch_size=16, seed=0, policy_kwargs=SMALL)
    assert isinstance(model.policy, TacoSACPolicy)
    model.set_logger(configure(str(tmp_path / "log"), ["csv", "tensorboard"]))
    model.learn(150, log_interval=1)
    rows = logged(tmp_path / "log")
    assert len(rows) >= 2
    for key in (
        "train/taco_loss",
        "train/curl_loss",
        "train/reward_loss",
        "train/aux_loss",
        "train/critic_loss",
        "train/actor_loss",
        "train/ent_coef",
    ):
        assert all(math.isfinite(float(r[key])) for r in rows), key
    assert list((tmp_path / "log").glob("events.out.tfevents*"))

    model.save(tmp_path / "m.zip")
    loaded = TacoSAC.load(tmp_path / "m.zip", env=env)
    obs = np.stack([env.reset(seed=s)[0] for s in range(5)])
    assert (model.predict(obs, deterministic=True)[0] == loaded.predict(obs, deterministic=True)[0]).all()
    for a, b in zip(
        model.taco_optimizer.state_dict()["state"].values(),
        loaded.taco_optimizer.state_dict()["state"].values(),
        strict=True,
    ):
        assert torch.equal(a["exp_avg"], b["exp_avg"])
    assert loaded.policy.taco.k == 3 and loaded.replay_buffer.k == 3
    # the encoder is one module: critic, target critic and actor all read it
    policy = loaded.policy
    assert (
        policy.actor.features_extractor is policy.critic.features_extractor is policy.critic_target.features_extractor
    )
    assert policy.critic.action_encoder is policy.taco.tok is policy.critic_target.action_encoder
    loaded.learn(20, reset_num_timesteps=False)  # training goes on after load


def test_gradient_routing():
    """Critic loss -> encoder, tok, critic; actor loss -> actor only; TACO loss -> encoder, tok, TACO heads."""
    env = envs.make_env("point_reach", 0, action_repeat=1, image_size=32)
    model = TacoSAC("CnnPolicy", env, buffer_size=500, learning_starts=40, batch_size=8, seed=0, policy_kwargs=SMALL)
    model.learn(50)
    p = model.policy
    groups = {
        "encoder": p.critic.features_extractor,
        "tok": p.action_encoder,
        "critic_heads": p.critic.q_networks[0],
        "actor": p.actor.latent_pi,
        "taco_heads": p.taco.G,
        "target": p.critic_target.q_networks[0],
    }
    before = {k: [x.detach().clone() for x in m.parameters()] for k, m in groups.items()}
    data = model.replay_buffer.sample(8)
    model.critic.optimizer.step = model.actor.optimizer.step = lambda *a, **k: None  # look at gradients only
    model.ent_coef_optimizer.step = model.taco_optimizer.step = lambda *a, **k: None
    p.zero_grad(set_to_none=True)  # every module of the policy, TACO's included
    model._sac_step(data)
    grads = {k: any(x.grad is not None and x.grad.abs().sum() > 0 for x in m.parameters()) for k, m in groups.items()}
    assert grads == {
        "encoder": True,
        "tok": True,
        "critic_heads": True,
        "actor": True,
        "taco_heads": False,
        "target": False,
    }
    p.zero_grad(set_to_none=True)
    model._taco_step(data)
    grads = {k: any(x.grad is not None and x.grad.abs().sum() > 0 for x in m.parameters()) for k, m in groups.items()}
    assert grads == {
        "encoder": True,
        "tok": True,
        "critic_heads": False,
        "actor": False,
        "taco_heads": True,
        "target": False,
    }
    for k, m in groups.items():  # nothing was stepped
        assert all(torch.equal(a, b) for a, b in zip(before[k], m.parameters(), strict=True)), k


def test_cnn_policy_on_84x84_and_vec_envs():
    venv = make_vec_env("taco/point_reach-v0", n_envs=2, seed=0)  # 9x84x84 frames, like every MuJoCo task
    model = TacoSAC("CnnPolicy", venv, buffer_size=200, learning_starts=8, batch_size=4, policy_kwargs=SMALL)
    model.learn(12)
    assert model.replay_buffer.observations.shape[1:] == (2, 9, 84, 84)
    action, _ = model.predict(venv.reset(), deterministic=True)
    assert action.shape == (2, 2) and np.abs(action).max() <= 1
    # another features extractor (SB3's NatureCNN wants frames scaled to [0, 1] by SB3)
    from stable_baselines3.common.torch_layers import NatureCNN

    model = TacoSAC(
        "CnnPolicy",
        venv,
        buffer_size=200,
        learning_starts=8,
        batch_size=4,
        policy_kwargs=dict(SMALL, features_extractor_class=NatureCNN, normalize_images=True),
    )
    model.learn(12)
    assert isinstance(model.policy.critic.features_extractor, NatureCNN)
    assert math.isfinite(model.logger.name_to_value["train/taco_loss"])


def test_bad_arguments_say_what_is_wrong():
    env = envs.make_env("point_reach", 0, action_repeat=1, image_size=32)
    # a small buffer: the policy's checks run after SB3 has allocated the replay, and SB3's default
    # (1M x 9x32x32 bytes, 9 GB) is zeroed page by page in a test process where an in-process
    # `taco train` has set cpu_malloc=keep (freed heap reused by calloc: tens of seconds, 9 GB resident)
    small = dict(buffer_size=1000)
    with pytest.raises(ValueError, match="gSDE"):
        TacoSAC("CnnPolicy", env, use_sde=True, **small)
    with pytest.raises(ValueError, match="TacoReplayBuffer"):
        from stable_baselines3.common.buffers import ReplayBuffer

        TacoSAC("CnnPolicy", env, replay_buffer_class=ReplayBuffer, **small)
    with pytest.raises(ValueError, match="taco_k"):
        TacoSAC("CnnPolicy", env, taco_k=0, **small)
    with pytest.raises(ValueError, match="normalize_images=False"):
        TacoSAC("CnnPolicy", env, policy_kwargs=dict(normalize_images=True), **small)


# --- learning, honestly (same task and threshold as tests/test_learning.py) -----------------------

THRESHOLD = 35.0  # tests/test_learning.py: random actions return ~11.9, the scripted policy ~48.5


@pytest.mark.slow
def test_taco_sac_learns_point_reach_and_its_taco_loss_falls(tmp_path):
    from stable_baselines3.common.evaluation import evaluate_policy
    from stable_baselines3.common.monitor import Monitor

    env = envs.make_env("point_reach", 0, action_repeat=1, image_size=32)
    eval_env = Monitor(envs.make_env("point_reach", 10_000, action_repeat=1, image_size=32))
    # DrQ's published SAC lr (1e-3), 3-step returns, an update every 2 steps, small heads: ~600 updates
    model = TacoSAC(
        "CnnPolicy",
        env,
        learning_rate=1e-3,
        buffer_size=5000,
        learning_starts=250,
        batch_size=32,
        n_steps=3,
        train_freq=2,
        seed=0,
        policy_kwargs=dict(net_arch=[64, 64], taco_hidden_dim=64),
    )
    # lr=0 would leave these weights as they are: the untrained policy is the broken control
    untrained, _ = evaluate_policy(model, eval_env, n_eval_episodes=10)
    assert untrained < THRESHOLD
    model.set_logger(configure(str(tmp_path), ["csv"]))
    model.learn(1500, log_interval=1)
    trained, _ = evaluate_policy(model, eval_env, n_eval_episodes=10)
    assert trained > THRESHOLD, (untrained, trained)
    taco = [float(r["train/taco_loss"]) for r in logged(tmp_path)]
    # InfoNCE starts near log(batch) (uniform logits) and must fall well below it
    assert taco[-1] < 0.7 * math.log(32) and taco[-1] < 0.8 * taco[0], taco


@pytest.mark.slow
def test_cnn_policy_trains_on_mujoco_tasks():
    """Every MuJoCo id gives 9x84x84 frames; cheetah (6-d) and reach_duplo (9-d, rescaled) run through learn()."""
    try:
        envs.probe_render_backend()
    except envs.RenderBackendError as err:
        pytest.skip(f"no MuJoCo render backend: {err}")
    for task in ("cheetah_run", "reach_duplo"):
        env = gym.make(envs.gym_id(task), fast_render=True)
        model = TacoSAC("CnnPolicy", env, buffer_size=100, learning_starts=6, batch_size=4, policy_kwargs=SMALL, seed=0)
        model.learn(10)
        assert model.replay_buffer.observations.shape[1:] == (1, 9, 84, 84)
        assert model.predict(env.reset(seed=0)[0], deterministic=True)[0].shape == env.action_space.shape
        env.close()
