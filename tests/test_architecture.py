"""The networks against the reference's published shape (DrQ-v2's drqv2.py, TACO's taco.py): per-module
parameter counts for 9x84x84 inputs and 6-d actions, layer order and types, the trunk's LayerNorm,
the initialisation, and the encoder's normalisation computed without the suite's own modules."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from taco_rl.agents.drqv2 import DrQV2
from taco_rl.agents.nets import ActionEncoder, Actor, Critic, Encoder, latent_action_dim
from taco_rl.agents.sac import SAC

OBS, A = (9, 84, 84), 6


def count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def layers(module: nn.Module) -> list[tuple]:
    """Leaf layers in order: (type name, weight shape or LayerNorm width)."""
    out = []
    for m in module.modules():
        if list(m.children()):
            continue
        if isinstance(m, (nn.Linear, nn.Conv2d)):
            out.append((type(m).__name__, tuple(m.weight.shape), m.bias is not None))
        elif isinstance(m, nn.LayerNorm):
            out.append(("LayerNorm", tuple(m.normalized_shape), m.elementwise_affine))
        else:
            out.append((type(m).__name__,))
    return out


@pytest.fixture(scope="module")
def drqv2():
    torch.manual_seed(0)
    return DrQV2(OBS, A)


@pytest.fixture(scope="module")
def taco():
    torch.manual_seed(0)
    return DrQV2(OBS, A, aux="taco")


def test_reference_parameter_counts(drqv2, taco):
    # figures of the reference drqv2.py / TACO for 9x84x84 frames and 6-d actions
    assert drqv2.encoder.repr_dim == 32 * 35 * 35
    assert count(drqv2.encoder) == 30_368
    assert count(drqv2.actor) == 3_068_124
    assert count(drqv2.critic) == 4_178_136 and count(drqv2.critic_target) == 4_178_136
    assert latent_action_dim(A) == 8 and taco.tok.latent_dim == 8
    assert count(taco.critic) == 4_182_232  # Q heads read the 8-d latent action code
    assert count(taco.tok) == 6 * 64 + 64 + 64 * 8 + 8
    assert count(SAC(OBS, A).actor) == 3_068_124 + 1024 * 6 + 6  # mean and log-std heads


def test_reference_layer_order_and_types(drqv2):
    conv = [("Conv2d", (32, 9, 3, 3), True), ("ReLU",)] + [("Conv2d", (32, 32, 3, 3), True), ("ReLU",)] * 3
    assert layers(drqv2.encoder) == conv
    assert [c.stride for c in drqv2.encoder.convnet if isinstance(c, nn.Conv2d)] == [(2, 2), (1, 1), (1, 1), (1, 1)]
    assert all(c.padding == (0, 0) for c in drqv2.encoder.convnet if isinstance(c, nn.Conv2d))
    trunk = [("Linear", (50, 39200), True), ("LayerNorm", (50,), True), ("Tanh",)]

    def head(inp, out):
        return [
            ("Linear", (1024, inp), True),
            ("ReLU",),
            ("Linear", (1024, 1024), True),
            ("ReLU",),
            ("Linear", (out, 1024), True),
        ]

    assert layers(drqv2.actor) == trunk + head(50, A)
    assert layers(drqv2.critic) == trunk + head(50 + A, 1) + head(50 + A, 1)
    assert [type(m).__name__ for m in drqv2.actor.trunk] == ["Linear", "LayerNorm", "Tanh"]
    assert layers(ActionEncoder(A, 8)) == [("Linear", (64, A), True), ("Tanh",), ("Linear", (8, 64), True)]


def test_trunk_normalisation_is_layernorm_then_tanh():
    torch.manual_seed(1)
    actor = Actor(20, 2, 7, 16)
    with torch.no_grad():
        actor.trunk[1].weight.uniform_(0.5, 1.5)
        actor.trunk[1].bias.uniform_(-0.5, 0.5)
    x = torch.randn(5, 20) * 3
    lin, ln = actor.trunk[0], actor.trunk[1]
    h = x @ lin.weight.T + lin.bias
    mu, var = h.mean(-1, keepdim=True), h.var(-1, unbiased=False, keepdim=True)
    want = torch.tanh((h - mu) / torch.sqrt(var + 1e-5) * ln.weight + ln.bias)
    assert ln.eps == 1e-5
    torch.testing.assert_close(actor.trunk(x), want, rtol=1e-5, atol=1e-6)
    # the trunk output feeds the policy MLP directly
    torch.testing.assert_close(actor(x), actor.policy(want), rtol=1e-5, atol=1e-6)


def test_critic_heads_read_trunk_features_then_action():
    torch.manual_seed(2)
    critic = Critic(20, 3, 7, 16)
    x, a = torch.randn(4, 20), torch.randn(4, 3)
    z = critic.trunk(x)
    q1, q2 = critic(x, a)
    torch.testing.assert_close(q1, critic.q1(torch.cat([z, a], -1)))
    torch.testing.assert_close(q2, critic.q2(torch.cat([z, a], -1)))


def test_initialisation_orthogonal_zero_bias():
    torch.manual_seed(3)
    enc = Encoder((9, 32, 32))
    actor = Actor(enc.repr_dim, A, 50, 64)
    for m in [*enc.modules(), *actor.modules()]:
        if isinstance(m, (nn.Linear, nn.Conv2d)):
            w = m.weight.detach().flatten(1)
            gain = math.sqrt(2.0) if isinstance(m, nn.Conv2d) else 1.0
            small = w if w.shape[0] <= w.shape[1] else w.T
            torch.testing.assert_close(small @ small.T, gain**2 * torch.eye(small.shape[0]), atol=1e-4, rtol=1e-4)
            assert torch.count_nonzero(m.bias) == 0


@pytest.mark.parametrize("channels_last", [True, False])
def test_encoder_sees_obs_over_255_minus_half(channels_last):
    torch.manual_seed(4)
    enc = Encoder((9, 20, 20))
    enc.channels_last = channels_last
    with torch.no_grad():
        for c in enc.convnet:
            if isinstance(c, nn.Conv2d):
                c.bias.uniform_(-0.1, 0.1)
    obs = torch.randint(0, 256, (3, 9, 20, 20), dtype=torch.uint8)
    h = obs.double() / 255.0 - 0.5
    convs = [c for c in enc.convnet if isinstance(c, nn.Conv2d)]
    for c, stride in zip(convs, (2, 1, 1, 1), strict=True):
        h = F.relu(F.conv2d(h, c.weight.double(), c.bias.double(), stride=stride))
    out = enc(obs).double()
    want = h.permute(0, 2, 3, 1).flatten(1) if channels_last else h.flatten(1)
    torch.testing.assert_close(out, want, rtol=1e-4, atol=1e-5)
