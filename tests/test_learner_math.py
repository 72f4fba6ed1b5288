"""Each learner's math recomputed by hand from the same weights, batch and random draws.

The learners are tested through their stable seams (`_target_value`, `critic_loss`, `_actor_loss`,
`act`, `update`) so that the code behind them may be reorganised freely; what is pinned is what
they compute: targets, losses, log-probs, which inputs each step reads and which parameters it moves.
`python tests/mutants.py` plants one-line bugs and checks that these tests catch every one.
"""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from tensordict import TensorDict
from torch.distributions import Normal, TransformedDistribution
from torch.distributions.transforms import TanhTransform

from taco_rl.agents import BC, CQL, IQL, SAC, TD3BC, DrQV2
from taco_rl.agents.drqv2 import schedule
from taco_rl.agents.nets import Encoder

OBS = (9, 24, 24)
B, A, K = 8, 2, 3
ATOL = 1e-5
LEARNERS = [DrQV2, SAC, BC, TD3BC, CQL, IQL]  # online and offline: one shared update


def make_batch(seed: int = 0, b: int = B) -> TensorDict:
    """A batch whose every key differs from every other (discounts vary per sample, one is 0)."""
    g = torch.Generator().manual_seed(seed)
    frames = lambda: torch.randint(0, 256, (b, *OBS), dtype=torch.uint8, generator=g)  # noqa: E731
    discount = torch.rand(b, 1, generator=g)
    discount[0] = 0.0
    return TensorDict(
        {
            "obs": frames(),
            "next_obs": frames(),
            "future_obs": frames(),
            "action": torch.rand(b, A, generator=g) * 2 - 1,
            "action_seq": torch.rand(b, K, A, generator=g) * 2 - 1,
            "reward": torch.rand(b, 1, generator=g) * 3,
            "discount": discount,
        },
        batch_size=[b],
    )


def learner(cls=DrQV2, aux="taco", **kw):
    torch.manual_seed(0)
    kw = {"hidden_dim": 32, "aux": aux, "expl_steps": 0, **kw}
    ag = cls(OBS, A, **kw)
    with torch.no_grad():  # the online critic differs from its target (as after any update)
        for p in ag.critic.parameters() if ag.critic is not None else []:
            p.add_(0.1 * torch.randn_like(p))
    return ag


def features(ag, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 256, (B, *OBS), dtype=torch.uint8, generator=g)
    with torch.no_grad():
        return ag.encoder(x)


def heads(critic, feat, code):
    """Both Q heads on concat(trunk(feat), action code), written out."""
    h = torch.cat([critic.trunk(feat), code], dim=-1)
    return critic.q1(h), critic.q2(h)


def cross(critic, feat, action_code) -> None:
    """Shift Q1's output so that it lies below Q2 on some of these inputs and above on others: then
    min(Q1, Q2) differs from either head, and code that uses one head instead of the min is caught."""
    with torch.no_grad():
        q1, q2 = heads(critic, feat, action_code)
        critic.q1[-1].bias.sub_((q1 - q2).median())
        q1, q2 = heads(critic, feat, action_code)
    assert (q1 < q2).any() and (q1 > q2).any()


def one_head_differs(q1, q2) -> bool:
    low = torch.min(q1, q2)
    return not close(low, q1) and not close(low, q2)


def code(ag, action):
    return ag.tok(action) if ag.tok is not None else action


def drq_action(mean, std, clip):
    """mean + N(0, std) noise (clipped to +-clip when given), clamped inside (-1, 1): the draw order
    is one standard normal per action entry from the global RNG."""
    noise = torch.randn(mean.shape) * std
    if clip is not None:
        noise = noise.clamp(-clip, clip)
    return (mean + noise).clamp(-1 + 1e-6, 1 - 1e-6)


def sac_dist(ag, feat):
    mu, log_std = ag.actor(feat).chunk(2, dim=-1)
    log_std = -10.0 + 0.5 * (2.0 - -10.0) * (torch.tanh(log_std) + 1.0)  # DrQ's bounds [-10, 2]
    return mu, log_std.exp()


def sac_sample(ag, feat):
    """tanh(mu + std * eps) and its log-prob from torch.distributions (Normal + TanhTransform)."""
    mu, std = sac_dist(ag, feat)
    x = mu + std * torch.randn(mu.shape)
    tanh = TanhTransform(cache_size=1)
    action = tanh(x)
    log_prob = TransformedDistribution(Normal(mu, std), [tanh]).log_prob(action).sum(-1, keepdim=True)
    return action, log_prob


def set_alpha(ag, alpha: float) -> None:
    with torch.no_grad():
        ag.temperature.log_alpha.fill_(math.log(alpha))


def close(a, b, atol=ATOL):
    return torch.allclose(a.float(), b.float(), atol=atol, rtol=1e-5)


# ---------------------------------------------------------------- encoder and schedule
def test_encoder_sees_obs_over_255_minus_half():
    enc = Encoder(OBS)
    x = torch.randint(0, 256, (3, *OBS), dtype=torch.uint8)
    with torch.no_grad():
        ref = enc.convnet(x.float() / 255.0 - 0.5).flatten(1)
        out_u8, out_f = enc(x), enc(x.float())
    assert out_u8.shape == ref.shape
    # the flattened features may come in another order; as multisets they are the reference's
    assert close(out_u8.sort(dim=1).values, ref.sort(dim=1).values)
    assert close(out_f, out_u8)  # float input (0-255 scale) is scaled the same way
    assert not close((enc.convnet(x.float() / 255.0).flatten(1)).sort(dim=1).values, ref.sort(dim=1).values)
    enc.channels_last = False  # the reference layout (benchmarks' baseline): same scaling, NCHW flatten
    with torch.no_grad():
        assert close(enc(x), ref)


def test_std_schedule():
    assert schedule("linear(1.0,0.1,100)", 0) == 1.0
    assert math.isclose(schedule("linear(1.0,0.1,100)", 50), 0.55)
    assert math.isclose(schedule("linear(1.0,0.1,100)", 500), 0.1)
    assert schedule(0.3, 7) == 0.3
    with pytest.raises(ValueError, match="linear"):
        schedule("lin(1,2)", 0)


@pytest.mark.parametrize("cls", [DrQV2, SAC])
def test_construction_starts_where_the_spec_does(cls):
    torch.manual_seed(0)
    ag = cls(OBS, A, hidden_dim=32, aux="taco")
    target = ag.critic_target.state_dict()
    assert all(torch.equal(v, target[k]) for k, v in ag.critic.state_dict().items())  # target = online at start
    assert not any(p.requires_grad for p in ag.critic_target.parameters())
    if cls is SAC:
        assert math.isclose(float(ag.temperature().detach()), 0.1, rel_tol=1e-6)  # initial alpha
        assert ag.target_entropy == -A
        assert math.isclose(float(SAC(OBS, A, hidden_dim=32, init_alpha=0.5).temperature().detach()), 0.5, rel_tol=1e-6)


# ---------------------------------------------------------------- DrQ-v2
def test_drqv2_target_value_by_hand():
    ag = learner(DrQV2, std_schedule="linear(1.0,0.2,100)")
    nf = features(ag)
    torch.manual_seed(5)
    assert (torch.randn(B, A) * 0.6).abs().max() > 0.3  # these draws exceed the clip: clipping matters
    torch.manual_seed(5)
    with torch.no_grad():
        action = drq_action(torch.tanh(ag.actor(nf)), 0.6, 0.3)
    cross(ag.critic_target, nf, code(ag, action))
    torch.manual_seed(5)
    with torch.no_grad():
        got = ag._target_value(nf, 50)  # std 0.6 at step 50
        q1, q2 = heads(ag.critic_target, nf, code(ag, action))
        online = torch.min(*heads(ag.critic, nf, code(ag, action)))
    assert got.shape == (B, 1)
    assert one_head_differs(q1, q2) and not close(torch.min(q1, q2), online)
    assert close(got, torch.min(q1, q2))


@pytest.mark.parametrize("aux", ["none", "taco"])
def test_drqv2_actor_loss_by_hand(aux):
    ag = learner(DrQV2, aux=aux, std_schedule="linear(1.0,0.2,100)")
    feat = features(ag)
    torch.manual_seed(6)
    with torch.no_grad():
        action = drq_action(torch.tanh(ag.actor(feat)), 0.6, 0.3)
    cross(ag.critic, feat, code(ag, action))
    torch.manual_seed(6)
    loss, metrics = ag._actor_loss(feat, 50)
    with torch.no_grad():
        q1, q2 = heads(ag.critic, feat, code(ag, action))
        target_q = torch.min(*heads(ag.critic_target, feat, code(ag, action)))
    assert one_head_differs(q1, q2) and not close(torch.min(q1, q2), target_q)
    assert loss.shape == () and close(loss, -torch.min(q1, q2).mean())
    assert math.isclose(float(metrics["actor_std"]), 0.6, rel_tol=1e-6)
    # the gradient reaches the actor through the sampled action (straight through the clamp)
    loss.backward(inputs=list(ag.actor.parameters()))
    assert all(p.grad is not None for p in ag.actor.parameters())


@pytest.mark.parametrize("eval_mode", [True, False])
def test_drqv2_act_by_hand(eval_mode):
    ag = learner(DrQV2, expl_steps=0, std_schedule="linear(1.0,0.2,100)")
    obs = make_batch()["obs"][0]
    torch.manual_seed(8)
    got = ag.act(obs.numpy(), 50, eval_mode)
    torch.manual_seed(8)
    with torch.no_grad():
        mean = torch.tanh(ag.actor(ag.encoder(obs[None])))
        expected = mean if eval_mode else drq_action(mean, 0.6, None)  # acting does not clip the noise
    assert close(torch.as_tensor(got), expected[0])


# ---------------------------------------------------------------- SAC
@pytest.mark.parametrize("aux", ["none", "taco"])
def test_sac_actor_loss_and_log_prob_by_hand(aux):
    ag = learner(SAC, aux=aux)
    set_alpha(ag, 0.5)
    feat = features(ag)
    torch.manual_seed(9)
    with torch.no_grad():
        action, log_prob = sac_sample(ag, feat)
    cross(ag.critic, feat, code(ag, action))
    torch.manual_seed(9)
    loss, metrics = ag._actor_loss(feat, 10)
    with torch.no_grad():
        q1, q2 = heads(ag.critic, feat, code(ag, action))
    assert one_head_differs(q1, q2)
    assert close(loss, (0.5 * log_prob - torch.min(q1, q2)).mean())
    assert close(metrics["entropy"], -log_prob.mean())
    assert close(metrics["alpha"], torch.tensor(0.5))


def test_sac_log_prob_has_the_tanh_correction():
    """Large pre-tanh means: log-prob of the squashed sample = Normal log-prob - log(1 - tanh^2)."""
    ag = learner(SAC, aux="none")
    with torch.no_grad():
        ag.actor.policy[-1].bias[:A].fill_(3.0)  # mean far into tanh's tail
    set_alpha(ag, 1.0)
    feat = features(ag)
    torch.manual_seed(4)
    with torch.no_grad():
        loss, metrics = ag._actor_loss(feat, 10)
        torch.manual_seed(4)
        mu, std = sac_dist(ag, feat)
        x = mu + std * torch.randn(mu.shape)
        log_prob = (Normal(mu, std).log_prob(x) - torch.log(1 - torch.tanh(x) ** 2)).sum(-1)
    assert close(-metrics["entropy"], log_prob.mean(), atol=1e-3)


def test_sac_target_value_by_hand():
    ag = learner(SAC)
    set_alpha(ag, 0.5)
    nf = features(ag)
    torch.manual_seed(5)
    with torch.no_grad():
        action, log_prob = sac_sample(ag, nf)
    cross(ag.critic_target, nf, code(ag, action))
    torch.manual_seed(5)
    with torch.no_grad():
        got = ag._target_value(nf, 10)
        q1, q2 = heads(ag.critic_target, nf, code(ag, action))
        online = torch.min(*heads(ag.critic, nf, code(ag, action)))
    assert one_head_differs(q1, q2) and not close(torch.min(q1, q2), online)
    assert got.shape == (B, 1)
    assert close(got, torch.min(q1, q2) - 0.5 * log_prob)


@pytest.mark.parametrize("eval_mode", [True, False])
def test_sac_act_by_hand(eval_mode):
    ag = learner(SAC, expl_steps=0)
    obs = make_batch()["obs"][0]
    torch.manual_seed(8)
    got = ag.act(obs.numpy(), 50, eval_mode)
    torch.manual_seed(8)
    with torch.no_grad():
        feat = ag.encoder(obs[None])
        expected = torch.tanh(sac_dist(ag, feat)[0]) if eval_mode else sac_sample(ag, feat)[0]
    assert close(torch.as_tensor(got), expected[0])


def sac_update_recording_alpha(target_entropy: float):
    """One SAC update; returns (log_alpha before, after, its gradient, hand-computed gradient)."""
    ag = learner(SAC, aux="none")
    set_alpha(ag, 0.3)
    ag.target_entropy = target_entropy
    seen = {}
    original = ag._actor_loss

    def recording(feat, step, *batch):
        seen.update(feat=feat.detach().clone(), actor=copy.deepcopy(ag.actor), rng=torch.get_rng_state())
        return original(feat, step, *batch)

    ag._actor_loss = recording
    log_alpha = ag.temperature.log_alpha
    log_alpha.register_hook(lambda g: seen.setdefault("grad", g.clone()))
    before = log_alpha.detach().clone()
    torch.manual_seed(0)
    ag.update(make_batch(), 10)
    torch.set_rng_state(seen["rng"])
    with torch.no_grad():
        shadow = copy.copy(ag)
        shadow.actor = seen["actor"]
        _, log_prob = sac_sample(shadow, seen["feat"])
    # d/dlog_alpha of mean(-alpha * (log_prob + target_entropy)), alpha = exp(log_alpha)
    expected = -0.3 * (log_prob.mean() + target_entropy)
    return before, log_alpha.detach().clone(), seen.get("grad"), expected


@pytest.mark.parametrize("target_entropy", [-2.0, 50.0, -50.0])
def test_sac_temperature_step_by_hand(target_entropy):
    before, after, grad, expected = sac_update_recording_alpha(target_entropy)
    assert grad is not None, "the temperature loss never reached log_alpha"
    assert close(grad, expected, atol=1e-4)
    # Adam's first step moves by lr against the gradient's sign
    assert close(after - before, -1e-4 * torch.sign(expected), atol=1e-6)


def test_sac_alpha_rises_when_entropy_is_below_target():
    before, after, _, _ = sac_update_recording_alpha(50.0)  # entropy far below a target of +50
    assert after > before
    before, after, _, _ = sac_update_recording_alpha(-50.0)
    assert after < before


# ---------------------------------------------------------------- shared critic loss
@pytest.mark.parametrize("cls", [DrQV2, SAC])
@pytest.mark.parametrize("aux", ["none", "taco"])
def test_critic_loss_by_hand(cls, aux):
    ag, batch = learner(cls, aux=aux), make_batch()
    feat = ag.encoder(batch["obs"])
    nf = features(ag, seed=3)
    next_value = torch.randn(B, 1) * 5
    calls = []

    def target_value(next_feat, step):
        calls.append((next_feat, step))
        return next_value

    ag._target_value = target_value
    loss, metrics = ag.critic_loss(feat, batch, nf, 17)
    assert len(calls) == 1 and torch.equal(calls[0][0], nf) and calls[0][1] == 17
    y = batch["reward"] + batch["discount"] * next_value
    q1, q2 = heads(ag.critic, feat, code(ag, batch["action"]))
    assert not close(q1, q2)
    assert close(loss, ((q1 - y) ** 2).mean() + ((q2 - y) ** 2).mean())
    assert close(metrics["critic_target_q"], y.mean())
    assert close(metrics["critic_q1"], q1.mean())
    loss.backward()
    for head in (ag.critic.q1, ag.critic.q2):
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in head.parameters())


@pytest.mark.parametrize("cls", [DrQV2, SAC])
def test_critic_target_is_not_differentiated(cls):
    """The target is a constant: the critic's gradient is that of MSE against a fixed y."""
    ag, batch = learner(cls), make_batch()
    feat = ag.encoder(batch["obs"]).detach()
    nf = features(ag, seed=3)
    torch.manual_seed(2)
    params = list(ag.critic.parameters()) + list(ag.tok.parameters())
    loss, _ = ag.critic_loss(feat, batch, nf, 10)
    got = torch.autograd.grad(loss, params, allow_unused=True)
    torch.manual_seed(2)
    with torch.no_grad():
        y = batch["reward"] + batch["discount"] * ag._target_value(nf, 10)
    q1, q2 = heads(ag.critic, feat, code(ag, batch["action"]))
    expected = torch.autograd.grad(F.mse_loss(q1, y) + F.mse_loss(q2, y), params)
    for g, e in zip(got, expected, strict=True):
        assert g is not None and close(g, e)


# ---------------------------------------------------------------- evaluation
@pytest.mark.parametrize("cls", LEARNERS)
def test_eval_act_is_the_mean_even_during_exploration(cls):
    ag = learner(cls, expl_steps=1000)
    obs = make_batch()["obs"][0]
    with torch.no_grad():
        out = ag.actor(ag.encoder(obs[None]))
        mean = torch.tanh(out[:, :A])[0]
    rng = torch.get_rng_state()
    acts = [torch.as_tensor(ag.act(obs.numpy(), 0, eval_mode=True)) for _ in range(3)]
    assert torch.equal(torch.get_rng_state(), rng)  # evaluation draws nothing
    assert all(close(a, mean) for a in acts)
    # training steps before expl_steps are uniform in [-1, 1], not the policy
    torch.manual_seed(3)
    explore = torch.as_tensor(ag.act(obs.numpy(), 0, eval_mode=False))
    torch.manual_seed(3)
    assert close(explore, torch.rand(A) * 2 - 1)
    assert not close(explore, mean)


# ---------------------------------------------------------------- the update: inputs, augmentation, steps
@pytest.mark.parametrize("cls", LEARNERS)
def test_learner_augmentation_shifts_by_up_to_4_pixels(cls):
    """Frames whose pixels name their own row and column: the shift of every sample can be read off."""
    ag = learner(cls)
    n, size = 2000, 24
    grid = torch.arange(size, dtype=torch.uint8) * 4
    frame = torch.stack([grid[:, None].expand(size, size), grid[None, :].expand(size, size)])  # rows, cols
    out = ag.aug(frame.expand(n, 2, size, size).contiguous())
    centre = out[:, :, size // 2, size // 2].long() // 4 - size // 2  # (n, 2): the source offset
    shifts = {tuple(s) for s in centre.tolist()}
    assert shifts == {(dy, dx) for dy in range(-4, 5) for dx in range(-4, 5)}  # all 81, each independent
    # replicate padding: near the edge a shifted frame repeats its border row
    edge = out[:, 0, 0, 0].long() // 4
    assert edge.min() == 0 and edge.max() == 4


class RecordingShift(torch.nn.Module):
    """A replacement augmentation: a different non-zero shift at every call, every call recorded."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[torch.Tensor, torch.Tensor]] = []

    def forward(self, x):
        n = len(self.calls) % 4 + 1
        shifted = torch.roll(x, shifts=(n, -n), dims=(-2, -1))
        self.calls.append((x.clone(), shifted.clone()))
        return shifted


def rows(t: torch.Tensor) -> list[bytes]:
    return [r.to(torch.uint8).contiguous().numpy().tobytes() for r in t]


EXPECTED_AUGMENTED = {  # how many times each batch key is augmented (and encoded) per update
    "none": {"obs": 1, "next_obs": 1},
    "curl": {"obs": 3, "next_obs": 1},  # critic anchor, aux anchor (fresh shift), CURL positive
    "taco": {"obs": 3, "next_obs": 1, "future_obs": 1},
}


@pytest.mark.parametrize(
    "cls,optimizer",
    [
        (SAC, "reference"),
        (SAC, "single"),
        (DrQV2, "single"),
        (BC, "reference"),
        (TD3BC, "reference"),
        (CQL, "reference"),
        (IQL, "reference"),
    ],
)
@pytest.mark.parametrize("aux", ["none", "curl", "taco"])
def test_update_encodes_only_augmented_frames_of_the_right_keys(cls, aux, optimizer):
    ag, batch = learner(cls, aux=aux, optimizer=optimizer), make_batch()
    ag.aug = RecordingShift()
    encoded: list[torch.Tensor] = []
    ag.encoder.register_forward_pre_hook(lambda m, args: encoded.append(args[0].detach().clone()))
    ag.update(batch, 10)
    augmented_rows = {r for _, out in ag.aug.calls for r in rows(out)}
    for x in encoded:  # the encoder never sees a frame that was not augmented
        assert all(r in augmented_rows for r in rows(x))
    key_of = {r: k for k in ("obs", "next_obs", "future_obs") for r in rows(batch[k])}
    counts: dict[str, int] = {}
    for inp, _ in ag.aug.calls:
        for r in rows(inp):
            counts[key_of[r]] = counts.get(key_of[r], 0) + 1
    expected = dict(EXPECTED_AUGMENTED[aux])
    if optimizer == "single" and aux != "none":
        expected["obs"] -= 1  # the critic's anchor is the auxiliary anchor
    if cls is BC:
        del expected["next_obs"]  # no critic, no target
    assert counts == {k: n * B for k, n in expected.items()}
    n_rows = sum(len(x) for x in encoded)
    assert n_rows == sum(counts.values())  # each augmented frame encoded once


def snapshot(ag) -> dict[str, dict[str, torch.Tensor]]:
    return {name: {k: v.detach().clone() for k, v in m.state_dict().items()} for name, m in ag.modules().items()}


def moved(a, b) -> set[str]:
    """Modules with at least one tensor changed between two snapshots (aux: split into its parts)."""
    out = set()
    for name in a:
        for k in a[name]:
            if name == "aux" and k.startswith("tok."):
                continue  # the critic's action encoder, shared with the auxiliary module: reported as "tok"
            if not torch.equal(a[name][k], b[name][k]):
                out.add(f"aux.{k.split('.')[0]}" if name == "aux" else name)
    return out


def all_params_moved(a, b, name) -> bool:
    return all(not torch.equal(a[name][k], b[name][k]) for k in a[name] if a[name][k].is_floating_point())


@pytest.mark.parametrize("cls", LEARNERS)
@pytest.mark.parametrize("aux", ["none", "curl", "taco"])
def test_each_optimizer_step_moves_what_it_should(cls, aux):
    """critic step: encoder, tok, critic (IQL: and V). actor step: actor (+ SAC's temperature), then the
    target EMA (BC: actor and encoder, no critic). aux step (after them, reference semantics): encoder,
    tok and the auxiliary heads."""
    ag, batch = learner(cls, aux=aux, lr=3e-4), make_batch()
    snaps = [snapshot(ag)]
    original = ag._actor_loss
    ag._actor_loss = lambda *a: (snaps.append(snapshot(ag)), original(*a))[1]
    if ag.aux is not None:
        original_loss = ag.aux.loss

        def aux_loss(batch, anchor, targets):
            snaps.append(snapshot(ag))
            assert anchor.requires_grad  # the auxiliary loss reaches the encoder through its anchor
            return original_loss(batch, anchor, targets)

        ag.aux.loss = aux_loss
    ag.update(batch, 10)
    snaps.append(snapshot(ag))
    tok = {"tok"} if aux == "taco" else set()
    heads_ = {"aux.proj_s", "aux.W"} | ({"aux.seq", "aux.G", "aux.R"} if aux == "taco" else set())
    assert len(snaps) == (4 if ag.aux is not None else 3)
    if cls is BC:
        assert moved(snaps[0], snaps[1]) == set()
        assert moved(snaps[1], snaps[2]) == {"actor", "encoder"}
        assert all_params_moved(snaps[1], snaps[2], "encoder")
    else:
        assert moved(snaps[0], snaps[1]) == {"encoder", "critic"} | tok | ({"value"} if cls is IQL else set())
        assert all_params_moved(snaps[0], snaps[1], "critic") and all_params_moved(snaps[0], snaps[1], "encoder")
        assert moved(snaps[1], snaps[2]) == {"actor", "critic_target"} | ({"temperature"} if cls is SAC else set())
    assert all_params_moved(snaps[1], snaps[2], "actor")
    if ag.aux is not None:
        assert moved(snaps[2], snaps[3]) == {"encoder"} | tok | heads_
        assert all_params_moved(snaps[2], snaps[3], "encoder")
    # Adam's first step moves each parameter by at most lr, and by lr where the gradient is not tiny
    steps = [(0, 1, "critic"), (1, 2, "actor")] + ([(2, 3, "aux")] if ag.aux is not None else [])
    for i, j, name in steps:
        if name in snaps[i]:
            assert math.isclose(largest_change(snaps[i], snaps[j], name), 3e-4, rel_tol=1e-3), name


def largest_change(a, b, name) -> float:
    return max(float((a[name][k] - b[name][k]).abs().max()) for k in a[name] if a[name][k].is_floating_point())


@pytest.mark.parametrize("cls", [DrQV2, SAC])
def test_single_optimizer_moves_everything_but_the_actor_in_one_step(cls):
    ag, batch = learner(cls, optimizer="single"), make_batch()
    snaps, anchors = [snapshot(ag)], []
    original, original_loss = ag._actor_loss, ag.aux.loss
    ag._actor_loss = lambda *a: (snaps.append(snapshot(ag)), original(*a))[1]
    ag.aux.loss = lambda batch, anchor, targets: (anchors.append(anchor), original_loss(batch, anchor, targets))[1]
    ag.update(batch, 10)
    assert len(anchors) == 1 and anchors[0].requires_grad
    assert moved(snaps[0], snaps[1]) == {"encoder", "critic", "tok", "aux.proj_s", "aux.W", "aux.seq", "aux.G", "aux.R"}


def update_metrics(cls, batch, optimizer="reference"):
    ag = learner(cls, optimizer=optimizer)
    torch.manual_seed(11)
    return ag.update(batch, 10)


def perturbed(key, fn):
    batch = make_batch()
    batch[key] = fn(batch[key].clone())
    return batch


def differs(m1, m2) -> set[str]:
    keys = ("critic_loss", "curl_loss", "taco_loss", "reward_loss")
    return {k for k in keys if not torch.allclose(m1[k], m2[k], rtol=1e-6, atol=1e-7)}


@pytest.mark.parametrize("cls", [DrQV2, SAC])
@pytest.mark.parametrize("optimizer", ["reference", "single"])
def test_update_terms_read_the_right_batch_keys(cls, optimizer):
    base = update_metrics(cls, make_batch(), optimizer)
    flip = lambda x: 255 - x  # noqa: E731
    cases = {
        "future_obs": (flip, {"taco_loss"}),
        # every action of the sequence counts, not just the first
        "action_seq": (lambda s: torch.cat([s[:, :1], -s[:, 1:]], dim=1), {"taco_loss", "reward_loss"}),
    }
    for key, (fn, expected) in cases.items():
        assert differs(base, update_metrics(cls, perturbed(key, fn), optimizer)) == expected, key
    last_only = perturbed("action_seq", lambda s: torch.cat([s[:, :-1], -s[:, -1:]], dim=1))
    assert "taco_loss" in differs(base, update_metrics(cls, last_only, optimizer))
    # the critic reads obs, action, reward, discount and next_obs
    for key, fn in [
        ("next_obs", flip),
        ("action", lambda a: -a),
        ("reward", lambda r: r + 1),
        ("discount", lambda d: 1 - d),
        ("obs", flip),
    ]:
        assert "critic_loss" in differs(base, update_metrics(cls, perturbed(key, fn), optimizer)), key
