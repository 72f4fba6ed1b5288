"""What reaches the actor through a sampled action where the sample saturates: DrQ-v2's clipped
truncated normal (straight-through clamp, as the reference's TruncatedNormal) and SAC's tanh squash
(the log-prob's tanh correction in its stable form). The actor's raw outputs are a leaf tensor and
the critic a known function of the action, so the expected gradient is written out by hand."""

from __future__ import annotations

import math

import torch
import torch.nn as nn

from taco_rl.agents.drqv2 import DrQV2, truncated_normal_sample
from taco_rl.agents.sac import LOG_STD_MAX, LOG_STD_MIN, SAC

B, A = 64, 3
C = torch.tensor([0.2, -0.5, 0.7])  # the critic's optimum action


class FixedOutputs(nn.Module):
    """An actor whose outputs are one leaf tensor, whatever the features."""

    def __init__(self, out: torch.Tensor) -> None:
        super().__init__()
        self.out = nn.Parameter(out.clone())

    def forward(self, feat: torch.Tensor) -> torch.Tensor:
        return self.out


class QuadraticCritic(nn.Module):
    """Q1 = 10 - |a - c|^2 + 1 (never the min), Q2 = 10 - |a - c|^2: dmin/da = -2 (a - c)."""

    def forward(self, feat, code):
        q = 10.0 - (code - C).pow(2).sum(-1, keepdim=True)
        return q + 1.0, q


def test_truncated_normal_clamps_values_and_passes_gradient_straight_through():
    torch.manual_seed(0)
    mean = torch.full((1000, A), 0.95, requires_grad=True)
    x = truncated_normal_sample(mean, 0.3, 0.3)
    assert float(x.detach().max()) == float(torch.tensor(1.0 - 1e-6)) and (x < 1.0).all()
    saturated = (x.detach() >= 1.0 - 1e-6).float()
    assert 0.2 < saturated.mean() < 0.8
    torch.manual_seed(0)
    noise = (torch.randn(1000, A) * 0.3).clamp(-0.3, 0.3)
    torch.testing.assert_close(x.detach(), (0.95 + noise).clamp(-1 + 1e-6, 1 - 1e-6))
    w = torch.randn(1000, A)
    (g,) = torch.autograd.grad((x * w).sum(), mean)
    torch.testing.assert_close(g, w)  # d sample / d mean = 1, also where clamped


def test_drqv2_actor_gradient_through_a_saturated_sample():
    torch.manual_seed(1)
    agent = DrQV2((3, 16, 16), A, hidden_dim=8, std_schedule="0.3", std_clip=0.3)
    raw = torch.full((B, A), math.atanh(0.9))  # mean 0.9: about a third of the samples clamp at 1
    raw[:, 1] = -raw[:, 1]
    agent.actor, agent.critic = FixedOutputs(raw), QuadraticCritic()
    feat = torch.zeros(B, 4)
    torch.manual_seed(5)
    loss, _ = agent._actor_loss(feat, step=0)
    (g,) = torch.autograd.grad(loss, agent.actor.out)
    torch.manual_seed(5)
    mean = torch.tanh(raw)
    noise = (torch.randn(B, A) * 0.3).clamp(-0.3, 0.3)
    a = (mean + noise).clamp(-1 + 1e-6, 1 - 1e-6)
    assert ((a == 1 - 1e-6) | (a == -1 + 1e-6)).float().mean() > 0.15
    torch.testing.assert_close(loss, -(10.0 - (a - C).pow(2).sum(-1)).mean())
    # loss = -mean_b min Q(a_b): dL/draw = (1/B) 2 (a - c) (1 - tanh(raw)^2), a the clamped sample
    torch.testing.assert_close(g, 2.0 * (a - C) * (1 - mean.pow(2)) / B, rtol=1e-5, atol=1e-8)


def test_sac_actor_gradient_through_a_saturated_tanh():
    torch.manual_seed(2)
    agent = SAC((3, 16, 16), A, hidden_dim=8, init_alpha=0.5)
    mu = torch.tensor([12.0, -15.0, 0.3]).expand(B, A)  # two saturated dims, one not
    pre = torch.tensor([0.4, 0.6, -0.3]).expand(B, A)  # log-std pre-activations
    agent.actor, agent.critic = FixedOutputs(torch.cat([mu, pre], -1)), QuadraticCritic()
    torch.manual_seed(7)
    loss, _ = agent._actor_loss(torch.zeros(B, 4), step=0)
    (g,) = torch.autograd.grad(loss, agent.actor.out)
    torch.manual_seed(7)
    eps = torch.randn(B, A)
    log_std = LOG_STD_MIN + 0.5 * (LOG_STD_MAX - LOG_STD_MIN) * (torch.tanh(pre) + 1)
    std = log_std.exp()
    x = mu.double() + std.double() * eps.double()
    a = torch.tanh(x)
    # log pi = sum[N(eps) - log_std - log(1 - tanh(x)^2)], with log(1 - tanh^2) = 2 (log 2 - x - softplus(-2x))
    logp = (
        -0.5 * eps.double() ** 2
        - log_std.double()
        - 0.5 * math.log(2 * math.pi)
        - 2 * (math.log(2) - x - torch.nn.functional.softplus(-2 * x))
    ).sum(-1)
    q = 10.0 - (a - C.double()).pow(2).sum(-1)
    torch.testing.assert_close(loss.double(), (0.5 * logp - q).mean(), rtol=1e-5, atol=1e-5)
    # d/dx of -log(1 - tanh^2 x) is 2 tanh(x) (about +-2 where the tanh saturates, never 0 or inf)
    dx = (0.5 * 2 * a + 2 * (a - C.double()) * (1 - a**2)) / B
    g_mu = dx
    g_log_std = (0.5 * -1.0) / B + dx * std.double() * eps.double()
    g_pre = g_log_std * 0.5 * (LOG_STD_MAX - LOG_STD_MIN) * (1 - torch.tanh(pre.double()) ** 2)
    torch.testing.assert_close(g[:, :A].double(), g_mu, rtol=1e-4, atol=1e-7)
    torch.testing.assert_close(g[:, A:].double(), g_pre, rtol=1e-4, atol=1e-7)
    assert (g[:, :2].abs() > 0.9 / B).all()  # the saturated dims still get the entropy gradient


def test_actor_step_leaves_critic_and_encoder_alone():
    torch.manual_seed(3)
    for cls in (DrQV2, SAC):
        agent = cls((3, 16, 16), A, hidden_dim=8)
        critic = {k: v.clone() for k, v in agent.critic.state_dict().items()}
        enc = {k: v.clone() for k, v in agent.encoder.state_dict().items()}
        actor = {k: v.clone() for k, v in agent.actor.state_dict().items()}
        feat = agent.encoder(torch.randint(0, 256, (8, 3, 16, 16), dtype=torch.uint8))
        agent.update_actor(feat.detach(), step=0)
        assert all(torch.equal(v, agent.critic.state_dict()[k]) for k, v in critic.items())
        assert all(p.grad is None for p in agent.critic.parameters())
        assert all(torch.equal(v, agent.encoder.state_dict()[k]) for k, v in enc.items())
        assert any(not torch.equal(v, agent.actor.state_dict()[k]) for k, v in actor.items())
