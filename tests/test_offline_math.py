"""Offline learners' math by hand (CQL's penalty inside the critic loss, IQL's value and actor terms,
TD3+BC's gradient, BC's policy), with the same seams and helpers as tests/test_learner_math.py."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from taco_rl.agents import BC, CQL, IQL, TD3BC
from tests.test_learner_math import (
    A,
    B,
    close,
    code,
    cross,
    drq_action,
    features,
    heads,
    learner,
    make_batch,
    one_head_differs,
)


def grads_of(loss, params):
    return torch.autograd.grad(loss, params, allow_unused=True)


# ---------------------------------------------------------------- CQL
def test_cql_penalty_actions_by_hand():
    ag = learner(CQL, cql_samples=3, std_schedule="linear(1.0,0.2,100)")
    feat, nf = features(ag, 1), features(ag, 2)
    torch.manual_seed(4)
    got = ag.penalty_actions(feat, nf, 50)
    torch.manual_seed(4)
    with torch.no_grad():
        rand = torch.rand(B, 3, A) * 2 - 1
        pi = [drq_action(torch.tanh(ag.actor(f))[:, None].expand(-1, 3, -1), 0.6, 0.3) for f in (feat, nf)]
    assert close(got, torch.cat([rand, *pi], dim=1))


@pytest.mark.parametrize("aux", ["none", "taco"])
def test_cql_critic_loss_by_hand(aux):
    """TD loss on the data action + per head alpha * (temp * logsumexp(Q(s, .) / temp) - Q(s, a_data)),
    over [a_data, the sampled actions], every action scored at s."""
    ag, batch = learner(CQL, aux=aux, cql_alpha=2.0, cql_temp=0.7, cql_samples=3), make_batch()
    feat = ag.encoder(batch["obs"])
    nf = features(ag, 2)
    next_value = torch.randn(B, 1)
    seen = {}
    original = ag.penalty_actions

    def penalty_actions(f, n, step):
        out = original(f, n, step)
        seen.update(feat=f, next_feat=n, actions=out)
        return out

    ag.penalty_actions = penalty_actions
    ag._target_value = lambda n, step: next_value
    loss, metrics = ag.critic_loss(feat, batch, nf, 50)
    assert torch.equal(seen["feat"], feat.detach()) and not seen["feat"].requires_grad
    assert torch.equal(seen["next_feat"], nf) and seen["actions"].shape == (B, 9, A)

    y = batch["reward"] + batch["discount"] * next_value
    q1, q2 = heads(ag.critic, feat, code(ag, batch["action"]))
    td = ((q1 - y) ** 2).mean() + ((q2 - y) ** 2).mean()
    actions = torch.cat([batch["action"][:, None], seen["actions"]], dim=1)  # (B, 10, A)
    qs = [torch.stack([h[:, 0] for h in heads(ag.critic, feat, code(ag, actions[:, j]))], 0) for j in range(10)]
    qs = torch.stack(qs, dim=-1)  # (2 heads, B, 10)
    penalty = 2.0 * ((0.7 * torch.logsumexp(qs / 0.7, dim=-1) - qs[:, :, 0]).mean(dim=1)).sum()
    assert close(metrics["critic_td_loss"], td) and close(metrics["cql_penalty"], penalty, atol=1e-4)
    assert close(metrics["critic_loss"], td + penalty, atol=1e-4)  # V-D4RL logs the whole loss under this name
    assert close(metrics["cql_q_random"], qs[0, :, 1:4].mean()) and close(metrics["cql_q_policy"], qs[0, :, 4:].mean())
    assert close(loss, td + penalty, atol=1e-4)
    # the gradient (encoder features, critic, action encoder) is that of the hand-written loss
    params = [p for p in ag.critic.parameters()] + (list(ag.tok.parameters()) if ag.tok is not None else [])
    got = grads_of(loss, [feat] + params)
    want = grads_of(td + penalty, [feat] + params)
    for g, w in zip(got, want, strict=True):
        assert g is not None and close(g, w, atol=1e-4)


# ---------------------------------------------------------------- IQL
@pytest.mark.parametrize("aux", ["none", "taco"])
def test_iql_critic_loss_by_hand(aux):
    """TD loss bootstrapping from V(s') + expectile(min Q_target(s, a_data) - V(s)), tau = 0.7."""
    ag, batch = learner(IQL, aux=aux), make_batch()
    feat = ag.encoder(batch["obs"])
    nf = features(ag, 2)
    cross(ag.critic_target, feat, code(ag, batch["action"]))
    with torch.no_grad():  # V(s) straddles Q(s, a_data): both expectile branches and their weights count
        gap = torch.min(*ag.critic_target(feat, code(ag, batch["action"]))) - ag.value(feat)
        ag.value.net[-1][-1].bias.add_(gap.median())
    loss, metrics = ag.critic_loss(feat, batch, nf, 10)
    with torch.no_grad():
        y = batch["reward"] + batch["discount"] * ag.value(nf)
        q_data = torch.min(*heads(ag.critic_target, feat, code(ag, batch["action"])))
        online = torch.min(*heads(ag.critic, feat, code(ag, batch["action"])))
        assert one_head_differs(*heads(ag.critic_target, feat, code(ag, batch["action"])))
    assert not close(q_data, online)
    q1, q2 = heads(ag.critic, feat, code(ag, batch["action"]))
    td = ((q1 - y) ** 2).mean() + ((q2 - y) ** 2).mean()
    v = ag.value(feat.detach())
    diff = q_data - v
    assert (diff > 0).any() and (diff < 0).any()
    value_loss = (torch.where(diff > 0, 0.7, 0.3) * diff**2).mean()
    assert close(metrics["value_loss"], value_loss)
    assert close(loss, td + value_loss)
    got = grads_of(loss, list(ag.value.parameters()))
    want = grads_of(value_loss, list(ag.value.parameters()))
    for g, w in zip(got, want, strict=True):
        assert g is not None and close(g, w)


def test_iql_advantage_weights_clip_and_sign():
    """w = min(exp(beta (Q_target(s, a) - V(s))), 100): V below Q raises the weight, V above lowers it."""
    ag, batch = learner(IQL, iql_beta=3.0), make_batch()
    feat = features(ag)
    metrics = {}
    for bias in (-5.0, 0.0, 5.0):
        with torch.no_grad():
            ag.value.net[-1][-1].bias.fill_(bias)
        _, m = ag._actor_loss(feat, 0, batch)
        metrics[bias] = float(m["adv_weight"])
    assert metrics[-5.0] == 100.0  # exp(3 * ~5) clipped at the maximum weight
    assert metrics[5.0] < metrics[0.0] < metrics[-5.0]


@pytest.mark.parametrize("aux", ["none", "taco"])
def test_iql_update_computes_the_target_q_once_and_the_same_numbers(aux):
    """The actor step reuses the critic step's min Q_target(s, a_data): one target trunk pass per
    update (and one pass of the heads unless the action code is learned: with TACO's `tok`, which
    the critic step moves, the heads score the new code), and parameters after 2 updates equal
    those of recomputing Q_target(s, a_data) in the actor step."""
    cached, recomputed = learner(IQL, aux=aux), learner(IQL, aux=aux)
    recomputed._take_data_q_target = recomputed._data_q_target  # no cache: Q_target computed twice
    trunk_calls, head_calls = [], []
    cached.critic_target.trunk.register_forward_hook(lambda *_: trunk_calls.append(1))
    cached.critic_target.q1.register_forward_hook(lambda *_: head_calls.append(1))
    for ag in (cached, recomputed):
        torch.manual_seed(5)
        for step, seed in enumerate((0, 1)):
            ag.update(make_batch(seed), step)
    # IQL's TD target bootstraps from V(s'): the target critic scores only (s, a_data)
    assert len(trunk_calls) == 2 and len(head_calls) == (4 if aux == "taco" else 2)
    for name, mod in cached.modules().items():
        for (k, a), b in zip(mod.state_dict().items(), recomputed.modules()[name].state_dict().values(), strict=True):
            assert torch.equal(a, b), f"{name}.{k}"


def test_iql_actor_loss_ignores_a_cache_from_other_features_or_actions():
    ag, batch = learner(IQL), make_batch()
    feat, other = features(ag, 1), features(ag, 2)
    expected = {}
    for name, f, b in (("feat", other, batch), ("action", feat, make_batch(3))):
        expected[name] = ag._actor_loss(f, 0, b)[0]  # nothing cached: computed in the actor loss
    for name, f, b in (("feat", other, batch), ("action", feat, make_batch(3))):
        ag.critic_loss(feat, batch, features(ag, 4), 0)  # caches Q_target(feat, batch's actions)
        assert close(ag._actor_loss(f, 0, b)[0], expected[name]), name
    ag.critic_loss(feat, batch, features(ag, 4), 0)
    ag._actor_loss(feat, 0, batch)  # consumes the cache
    assert ag._q_data is None


# ---------------------------------------------------------------- TD3+BC
def test_td3bc_defaults_and_gradient_by_hand():
    assert learner(TD3BC).bc_alpha == 2.5
    ag, batch = learner(TD3BC, std_schedule="linear(1.0,0.2,100)"), make_batch()
    feat = features(ag)
    params = list(ag.actor.parameters())
    torch.manual_seed(3)
    with torch.no_grad():
        cross(ag.critic, feat, code(ag, drq_action(torch.tanh(ag.actor(feat)), 0.6, 0.3)))
    torch.manual_seed(3)
    loss, metrics = ag._actor_loss(feat, 50, batch)
    got = grads_of(loss, params)
    torch.manual_seed(3)
    action = drq_action(torch.tanh(ag.actor(feat)), 0.6, 0.3)
    action = torch.tanh(ag.actor(feat)) + (action - torch.tanh(ag.actor(feat))).detach()  # straight through
    q = torch.min(*heads(ag.critic, feat, code(ag, action)))
    assert one_head_differs(*heads(ag.critic, feat, code(ag, action)))
    lam = 2.5 / q.detach().abs().mean()  # a constant scale: no gradient through lambda
    bc = ((action - batch["action"]) ** 2).mean()
    expected = -lam * q.mean() + bc
    assert close(loss, expected) and close(metrics["bc_lambda"], lam) and close(metrics["bc_loss"], bc)
    assert close(metrics["actor_loss"], -q.mean()) and close(metrics["actor_total_loss"], expected)
    for g, w in zip(got, grads_of(expected, params), strict=True):
        assert g is not None and close(g, w)


# ---------------------------------------------------------------- BC
def test_bc_gradient_is_the_action_mse_gradient():
    ag, batch = learner(BC), make_batch()
    feat = ag.encoder(batch["obs"])
    params = [feat] + list(ag.actor.parameters())
    loss, _ = ag._actor_loss(feat, 0, batch)
    expected = F.mse_loss(torch.tanh(ag.actor(feat)), batch["action"])
    for g, w in zip(grads_of(loss, params), grads_of(expected, params), strict=True):
        assert close(g, w)


@pytest.mark.parametrize("eval_mode", [True, False])
def test_iql_act_by_hand(eval_mode):
    """Evaluation: tanh(mean); training: a sample of Normal(tanh(mean), std), std in [e^-5, e^2]."""
    ag = learner(IQL)
    obs = make_batch()["obs"][0]
    torch.manual_seed(2)
    got = ag.act(obs.numpy(), 10, eval_mode)
    torch.manual_seed(2)
    with torch.no_grad():
        mu, log_std = ag.actor(ag.encoder(obs[None])).chunk(2, dim=-1)
        std = (-5.0 + 0.5 * 7.0 * (torch.tanh(log_std) + 1.0)).exp()
        expected = torch.tanh(mu) if eval_mode else torch.tanh(mu) + std * torch.randn(mu.shape)
    assert close(torch.as_tensor(got), expected[0].clamp(-1, 1))
