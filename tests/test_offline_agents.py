"""Offline learners (BC, TD3+BC, CQL, IQL): what each loss computes and what it reaches."""

from __future__ import annotations

import math

import pytest
import torch

from taco_rl.agents import BC, CQL, IQL, TD3BC
from taco_rl.agents.iql import advantage_weights, expectile_loss
from taco_rl.agents.learner import PixelActorCritic
from taco_rl.runners.core.config import resolve
from taco_rl.runners.core.run import build_agent
from tests import test_agents as online
from tests.test_agents import OBS, grads, make_batch, zero

OFFLINE = [BC, TD3BC, CQL, IQL]


def learner(cls, aux="none", **kw):
    torch.manual_seed(0)
    return cls(OBS, 2, hidden_dim=32, aux=aux, expl_steps=0, **kw)


# ---------------------------------------------------------------- every learner
@pytest.mark.parametrize("aux", ["none", "curl", "taco"])
@pytest.mark.parametrize("cls", OFFLINE)
def test_update_runs_round_trips_and_acts(cls, aux):
    ag = learner(cls, aux)
    metrics = ag.update(make_batch(), 5)
    assert all(torch.isfinite(v) for v in metrics.values())
    if aux == "taco":
        assert {"taco_loss", "curl_loss", "reward_loss"} <= set(metrics)
    other = learner(cls, aux)
    other.load_state_dict(ag.state_dict())
    obs = make_batch(b=1)["obs"][0].numpy()
    assert (ag.act(obs, 5, True) == other.act(obs, 5, True)).all()
    assert (abs(ag.act(obs, 5, True)) <= 1).all()


def test_bc_has_no_critic_and_its_loss_is_the_action_mse():
    ag, batch = learner(BC, "taco"), make_batch()
    assert ag.critic is None and "critic" not in ag.opts and not ag.latent_critic
    feat = ag.encoder(batch["obs"])
    loss, _ = ag._actor_loss(feat, 0, batch)
    assert torch.allclose(loss, ((torch.tanh(ag.actor(feat)) - batch["action"]) ** 2).mean())
    with pytest.raises(ValueError, match="no critic"):
        learner(BC, "taco", optimizer="single")


# ---------------------------------------------------------------- gradient routing
def test_bc_loss_reaches_actor_and_encoder_only():
    ag, batch = learner(BC, "taco"), make_batch()
    zero(ag)
    feat = ag.encoder(ag.aug(batch["obs"]))
    loss, _ = ag._actor_loss(feat, 0, batch)
    loss.backward(inputs=ag.actor_params)
    assert grads(ag.actor) and grads(ag.encoder)
    assert not grads(ag.tok) and not grads(ag.aux)
    ids = lambda opt: {id(p) for g in opt.param_groups for p in g["params"]}  # noqa: E731
    enc, tok = {id(p) for p in ag.encoder.parameters()}, {id(p) for p in ag.tok.parameters()}
    assert enc <= ids(ag.opts["actor"]) and not tok & ids(ag.opts["actor"])
    assert enc | tok <= ids(ag.opts["aux"])  # TACO still shapes the encoder and its action encoder


@pytest.mark.parametrize("cls", [TD3BC, CQL, IQL])
def test_actor_loss_reaches_actor_only(cls):
    ag, batch = learner(cls, "taco"), make_batch()
    zero(ag)
    feat = ag.encoder(ag.aug(batch["obs"])).detach()
    loss, _ = ag._actor_loss(feat, 10, batch)
    loss.backward(inputs=ag.actor_params)
    assert grads(ag.actor)
    for name, mod in ag.modules().items():
        if name != "actor":
            assert not grads(mod), name


@pytest.mark.parametrize("cls", [TD3BC, CQL, IQL])
def test_critic_loss_reaches_encoder_tok_critic_not_actor(cls):
    online.test_critic_loss_reaches_encoder_tok_critic_not_actor(cls)  # the online check, on each offline critic


def test_iql_value_loss_reaches_only_the_value_head():
    """The encoder's gradient from IQL's critic loss equals that of its TD term alone."""
    ag, batch = learner(IQL), make_batch()
    feat = ag.encoder(ag.aug(batch["obs"]))
    (next_feat,) = ag.encode_nograd([batch["next_obs"]])
    encoder_grads = []
    for loss_fn in (ag.critic_loss, lambda *a: PixelActorCritic.critic_loss(ag, *a)):
        zero(ag)
        loss, _ = loss_fn(feat, batch, next_feat, 10)
        loss.backward(retain_graph=True)
        encoder_grads.append([p.grad.clone() for p in ag.encoder.parameters()])
    for a, b in zip(*encoder_grads, strict=True):
        assert torch.allclose(a, b, atol=1e-7)
    zero(ag)
    ag.critic_loss(feat, batch, next_feat, 10)[0].backward()
    assert grads(ag.value)
    ids = {id(p) for g in ag.opts["critic"].param_groups for p in g["params"]}
    assert {id(p) for p in ag.value.parameters()} <= ids  # V steps in the critic step


# ---------------------------------------------------------------- TD3+BC
def test_td3bc_lambda_is_alpha_over_mean_abs_q():
    ag, batch = learner(TD3BC, bc_alpha=2.5), make_batch()
    feat = ag.encoder(batch["obs"]).detach()
    torch.manual_seed(1)
    loss, m = ag._actor_loss(feat, 10, batch)
    torch.manual_seed(1)  # the same policy sample
    action, q, _ = ag._policy_q(feat, 10)
    lam = 2.5 / q.abs().mean()
    assert torch.isclose(m["bc_lambda"], lam)
    assert torch.isclose(loss, -lam * q.mean() + ((action - batch["action"]) ** 2).mean())


# ---------------------------------------------------------------- CQL
def test_cql_penalty_matches_direct_formula():
    ag = learner(CQL, cql_alpha=10.0, cql_temp=0.5)
    q = torch.randn(4, 31, 1)
    direct = []
    for row in q.squeeze(-1).tolist():
        direct.append(0.5 * math.log(sum(math.exp(v / 0.5) for v in row)) - row[0])
    assert torch.isclose(ag.conservative_penalty(q), torch.tensor(10.0 * sum(direct) / 4), rtol=1e-5)


def test_cql_penalty_actions_shapes_and_ranges():
    ag = learner(CQL, cql_samples=10)
    feat = torch.randn(6, ag.encoder.repr_dim)
    acts = ag.penalty_actions(feat, feat, 10)
    assert acts.shape == (6, 30, 2) and (acts.abs() <= 1).all()


@pytest.mark.slow
def test_cql_pushes_q_of_random_actions_below_dataset_actions():
    """On a fixed batch, the conservative penalty opens a gap Q(s, a_data) - Q(s, a_random) that the
    same learner without it (alpha = 0) does not."""
    batch = make_batch(b=32, seed=3)
    batch["action"] = torch.full((32, 2), 0.5)  # a narrow behaviour policy
    gaps = {}
    for alpha in (0.0, 10.0):
        ag = learner(CQL, cql_alpha=alpha, lr=1e-3)
        for _ in range(80):
            ag.update(batch, 10)
        with torch.no_grad():
            z = ag.critic.trunk(ag.encoder(batch["obs"]))
            rand = torch.rand(32, 50, 2) * 2 - 1
            q_rand = torch.min(*ag.critic.heads(z[:, None].expand(-1, 50, -1), rand)).mean()
            q_data = torch.min(*ag.critic(ag.encoder(batch["obs"]), batch["action"])).mean()
        gaps[alpha] = float(q_data - q_rand)
    assert gaps[10.0] > 0.5 and gaps[10.0] > 5 * abs(gaps[0.0]), gaps


# ---------------------------------------------------------------- IQL
def test_expectile_loss_matches_direct_formula():
    diff = torch.tensor([-2.0, -0.5, 0.0, 0.3, 1.5])
    direct = sum((0.7 if d >= 0 else 0.3) * d * d for d in diff.tolist()) / 5
    assert torch.isclose(expectile_loss(diff, 0.7), torch.tensor(direct))
    # tau = 0.5 is half the mean squared error
    assert torch.isclose(expectile_loss(diff, 0.5), 0.5 * (diff**2).mean())


def test_advantage_weights_match_direct_formula():
    adv = torch.tensor([-1.0, 0.0, 0.5, 1.0, 3.0])
    direct = [min(math.exp(3.0 * a), 100.0) for a in adv.tolist()]
    assert torch.allclose(advantage_weights(adv, 3.0, 100.0), torch.tensor(direct))
    assert advantage_weights(adv, 3.0, 100.0)[-1] == 100.0  # exp(9) clipped


def test_iql_actor_loss_is_weighted_log_likelihood():
    ag, batch = learner(IQL), make_batch()
    feat = ag.encoder(batch["obs"]).detach()
    loss, _ = ag._actor_loss(feat, 0, batch)
    with torch.no_grad():
        q = torch.min(*ag.critic_target(feat, batch["action"]))
        w = torch.exp(3.0 * (q - ag.value(feat))).clamp(max=100.0)
        mu, log_std = ag.actor(feat).chunk(2, dim=-1)
        log_std = -5.0 + 0.5 * 7.0 * (torch.tanh(log_std) + 1.0)
        logp = torch.distributions.Normal(torch.tanh(mu), log_std.exp()).log_prob(batch["action"]).sum(-1, True)
    assert torch.isclose(loss, -(w * logp).mean(), rtol=1e-5)


def test_iql_td_target_bootstraps_from_value():
    ag, batch = learner(IQL), make_batch()
    next_feat = torch.randn(8, ag.encoder.repr_dim)
    expected = batch["reward"] + batch["discount"] * ag.value(next_feat)
    assert torch.allclose(ag.td_target(batch, next_feat, 0), expected)


def test_offline_learner_checks_its_settings():
    with pytest.raises(ValueError, match="cql_temp"):
        learner(CQL, cql_temp=0.0)
    with pytest.raises(ValueError, match="iql_expectile"):
        learner(IQL, iql_expectile=1.0)


@pytest.mark.parametrize("cls", OFFLINE)
def test_bf16_update_stays_finite(cls):
    metrics = learner(cls, "taco", precision="bf16").update(make_batch(), 5)
    assert all(torch.isfinite(v) for v in metrics.values())


# ---------------------------------------------------------------- config keys reach the learner (SPEC 7)
def from_config(agent: str, *overrides: str):
    """The learner `taco offline agent=... KEY=VALUE` builds (runners/core/run.py build_agent)."""
    cfg = resolve([f"agent={agent}", "hidden_dim=32", "feature_dim=16", *overrides], offline=True)
    torch.manual_seed(0)
    return build_agent(cfg, OBS, 2, torch.device("cpu")), cfg


@pytest.mark.parametrize("alpha", [1.0, 4.0])
def test_td3bc_bc_alpha_from_the_config_weighs_the_q_term(alpha):
    """loss = -(bc_alpha / mean|Q|) * mean(Q) + MSE(pi(s), a_data), with the configured bc_alpha."""
    ag, _ = from_config("td3bc", f"bc_alpha={alpha}")
    batch = make_batch()
    feat = ag.encoder(batch["obs"]).detach()
    torch.manual_seed(1)
    loss, m = ag._actor_loss(feat, 10, batch)
    torch.manual_seed(1)  # the same policy sample
    action, q, _ = ag._policy_q(feat, 10)
    lam = alpha / q.abs().mean()
    assert torch.isclose(m["bc_lambda"], lam)
    assert torch.isclose(loss, -lam * q.mean() + ((action - batch["action"]) ** 2).mean())


def test_cql_alpha_and_temp_from_the_config_shape_the_penalty():
    """penalty = cql_alpha * mean_s(cql_temp * logsumexp(Q / cql_temp) - Q(s, a_data))."""
    ag, _ = from_config("cql", "cql_alpha=3.0", "cql_temp=0.5")
    q = torch.randn(4, 31, 1, generator=torch.Generator().manual_seed(2))
    rows = q.squeeze(-1).tolist()
    direct = sum(0.5 * math.log(sum(math.exp(v / 0.5) for v in row)) - row[0] for row in rows) / len(rows)
    assert torch.isclose(ag.conservative_penalty(q), torch.tensor(3.0 * direct), rtol=1e-5)


def test_cql_samples_from_the_config_count_the_penalty_actions():
    """cql_samples N: N random, N pi(s) and N pi(s') actions per state, and the critic loss scores them all."""
    ag, _ = from_config("cql", "cql_samples=4")
    batch = make_batch()
    feat = ag.encoder(batch["obs"])
    assert ag.penalty_actions(feat.detach(), feat.detach(), 10).shape == (8, 12, 2)
    seen = []
    heads = ag.critic.heads
    ag.critic.heads = lambda z, a: seen.append(a.shape) or heads(z, a)
    ag.critic_loss(feat, batch, feat.detach(), 10)
    assert seen == [(8, 13, 2)]  # the data action and 3 x 4 samples


@pytest.mark.parametrize("agent", ["td3bc", "cql"])
def test_policy_noise_settings_from_the_config_reach_the_sample(agent):
    """std_schedule gives the std at the update, std_clip bounds the noise of pi(s) (TD3+BC's BC target
    and CQL's policy actions alike)."""
    ag, _ = from_config(agent, "std_schedule=linear(0.9,0.1,100)", "std_clip=0.05")
    feat = ag.encoder(make_batch(b=32)["obs"]).detach()
    action, _, std = ag._policy_q(feat, 50)
    assert std == pytest.approx(0.5)
    noise = (action - ag._mean(feat)).abs()
    assert torch.isclose(noise.max(), torch.tensor(0.05), atol=1e-6)  # clipped at 0.05, reached at std 0.5
    if agent == "cql":  # its pi(s) and pi(s') penalty actions (here s' = s)
        policy = ag.penalty_actions(feat, feat, 50)[:, ag.cql_samples :]
        noise = (policy - ag._mean(feat).unsqueeze(1)).abs()
        assert torch.isclose(noise.max(), torch.tensor(0.05), atol=1e-6)


def test_iql_keys_from_the_config_shape_its_losses():
    """value loss = mean(|tau - 1(diff < 0)| * diff^2), diff = min Q_target(s, a) - V(s), tau = iql_expectile;
    actor loss = -mean(min(exp(iql_beta * diff), iql_max_weight) * log pi(a_data | s))."""
    ag, _ = from_config("iql", "iql_expectile=0.6", "iql_beta=2.0", "iql_max_weight=2.1")
    batch = make_batch()
    feat = ag.encoder(batch["obs"]).detach()
    _, m = ag.critic_loss(feat, batch, torch.randn_like(feat), 0)
    loss, _ = ag._actor_loss(feat, 0, batch)
    with torch.no_grad():
        diff = torch.min(*ag.critic_target(feat, batch["action"])) - ag.value(feat)
        value_loss = (torch.where(diff < 0, 0.4, 0.6) * diff**2).mean()
        weights = torch.exp(2.0 * diff).clamp(max=2.1)
        logp = ag._gaussian(feat).log_prob(batch["action"]).sum(-1, keepdim=True)
    assert (weights == 2.1).any() and (weights < 2.1).any()  # the clip acts on some states only
    assert torch.isclose(m["value_loss"], value_loss, rtol=1e-5)
    assert torch.isclose(loss, -(weights * logp).mean(), rtol=1e-5)


@pytest.mark.parametrize("agent", ["bc", "td3bc", "cql", "iql"])
def test_lr_from_the_config_reaches_every_optimizer(agent):
    ag, _ = from_config(agent, "lr=7e-4")
    groups = [g for opt in ag.opts.values() for g in opt.param_groups]
    assert groups and all(g["lr"] == 7e-4 for g in groups)
