"""The offline protocol as V-D4RL's drqbc code runs it (SPEC 7): noise schedule per update, run length,
evaluation cadence, and logged metric names that mean what V-D4RL's mean."""

from __future__ import annotations

import pytest
import torch

from taco_rl.agents import CQL, TD3BC
from taco_rl.agents.drqv2 import schedule
from taco_rl.runners.core.config import resolve
from tests.test_learner_math import B, close, features, learner, make_batch

VD4RL_SCHEDULE = "linear(1.0,0.1,250000)"  # V-D4RL's offline_dmc.yaml, read by LOOP step
VD4RL_UPDATE_EVERY = 2  # drqbc algo cfgs: update() skips odd loop steps


@pytest.mark.parametrize("agent", ["td3bc", "cql", "bc", "iql"])
def test_offline_defaults_follow_vd4rl_loop(agent):
    cfg = resolve([f"agent={agent}", "task=walker_walk"], offline=True)
    # V-D4RL: 1.1M loop steps, one update per two -> 550,000 updates; eval every 10,000 loop steps
    assert cfg.updates == 1_100_000 // VD4RL_UPDATE_EVERY == 550_000
    assert cfg.eval_every_updates == 10_000 // VD4RL_UPDATE_EVERY == 5_000
    # update u happens at loop step 2u and reads the std there
    for update in (0, 1, 1000, 62_500, 100_000, 124_999, 125_000, 200_000, 550_000):
        assert schedule(cfg.std_schedule, update) == pytest.approx(
            schedule(VD4RL_SCHEDULE, VD4RL_UPDATE_EVERY * update), abs=1e-12
        ), update
    assert schedule(cfg.std_schedule, 62_500) == pytest.approx(0.55)
    assert schedule(cfg.std_schedule, 125_000) == pytest.approx(0.1)


@pytest.mark.parametrize("update, std", [(62_500, 0.55), (125_000, 0.1)])
def test_td3bc_and_cql_draw_their_noise_with_the_default_std(monkeypatch, update, std):
    from taco_rl.agents import cql, drqv2

    cfg = resolve(["agent=td3bc", "task=walker_walk"], offline=True)
    seen = []

    def recording(mean, s, clip=None, **kw):
        seen.append(s)
        return original(mean, s, clip, **kw)

    original = drqv2.truncated_normal_sample
    monkeypatch.setattr(drqv2, "truncated_normal_sample", recording)
    monkeypatch.setattr(cql, "truncated_normal_sample", recording)
    batch = make_batch()
    for cls in (TD3BC, CQL):
        ag = learner(cls, std_schedule=cfg.std_schedule)
        ag._actor_loss(features(ag), update, batch)
    ag.penalty_actions(features(ag), features(ag, 2), update)
    assert len(seen) == 4 and seen == pytest.approx([std] * 4)


def test_cql_critic_loss_is_td_plus_penalty():
    ag, batch = learner(CQL, cql_alpha=2.0, cql_samples=3), make_batch()
    feat = ag.encoder(batch["obs"])
    loss, m = ag.critic_loss(feat, batch, features(ag, 2), 10)
    assert close(m["critic_loss"], loss.detach()) and close(m["critic_loss"], m["critic_td_loss"] + m["cql_penalty"])
    assert float(m["cql_penalty"]) != 0.0 and float(m["critic_td_loss"]) > 0.0


def test_td3bc_actor_loss_is_minus_mean_q():
    ag, batch = learner(TD3BC, bc_alpha=2.5), make_batch()
    feat = features(ag)
    torch.manual_seed(1)
    loss, m = ag._actor_loss(feat, 10, batch)
    torch.manual_seed(1)  # the same policy sample
    action, q, _ = ag._policy_q(feat, 10)
    assert close(m["actor_loss"], -q.detach().mean()) and close(m["actor_q"], q.detach().mean())
    assert close(m["actor_total_loss"], loss.detach())
    assert close(loss, -m["bc_lambda"] * q.mean() + m["bc_loss"])
    assert feat.shape[0] == B


@pytest.mark.parametrize("mu, agrees", [(0.5, True), (-0.6, True), (0.9, False)])
def test_bc_mean_gradient_equals_the_noisy_sample_one_only_inside_the_clip_margin(mu, agrees):
    """agents/bc.py's claim: V-D4RL's BC regresses clamp(mu + clip(std * eps, 0.3)) (straight-through
    clamp); its expected gradient in mu is 2 (mu - y) only while |mu| <= 1 - 0.3."""
    from taco_rl.agents.drqv2 import truncated_normal_sample

    torch.manual_seed(0)
    y = torch.tensor(0.2)
    mean = torch.full((400_000,), mu, requires_grad=True)
    ((truncated_normal_sample(mean, 0.5, 0.3) - y) ** 2).sum().backward()
    reference = float(mean.grad.mean())  # Monte Carlo expectation of the per-sample gradient
    ours = 2 * (mu - float(y))
    assert (abs(reference - ours) < 0.005) is agrees, (reference, ours)
