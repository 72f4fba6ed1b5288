"""Learner and TACO behaviour: gradient routing, target immutability, InfoNCE math, batched passes."""

from __future__ import annotations

import copy
import io

import pytest
import torch
import torch.nn.functional as F
from tensordict import TensorDict

from taco_rl.agents import SAC, TACO, DrQV2
from taco_rl.agents.nets import ActionEncoder, Encoder, RandomShift, cat_rows, latent_action_dim

OBS = (9, 24, 24)  # small frames keep these tests fast; the math does not depend on size


def make_batch(b: int = 8, a: int = 2, k: int = 3, obs=OBS, seed: int = 0) -> TensorDict:
    g = torch.Generator().manual_seed(seed)
    frames = lambda: torch.randint(0, 256, (b, *obs), dtype=torch.uint8, generator=g)  # noqa: E731
    return TensorDict(
        {
            "obs": frames(),
            "next_obs": frames(),
            "future_obs": frames(),
            "action": torch.rand(b, a, generator=g) * 2 - 1,
            "action_seq": torch.rand(b, k, a, generator=g) * 2 - 1,
            "reward": torch.rand(b, 1, generator=g),
            "discount": torch.full((b, 1), 0.97),
        },
        batch_size=[b],
    )


def learner(cls=DrQV2, aux="taco", **kw):
    torch.manual_seed(0)
    return cls(OBS, 2, hidden_dim=32, aux=aux, expl_steps=0, **kw)


def grads(module: torch.nn.Module) -> bool:
    return any(p.grad is not None and p.grad.abs().sum() > 0 for p in module.parameters())


def zero(ag) -> None:
    for m in ag.modules().values():
        m.zero_grad(set_to_none=True)


# ---------------------------------------------------------------- InfoNCE and shapes
def test_infonce_matches_explicit_loop():
    torch.manual_seed(0)
    taco = TACO(100, 2, k=3, feature_dim=8, hidden_dim=16, action_encoder=ActionEncoder(2, 3))
    anchors, targets = torch.randn(6, 8), torch.randn(6, 8)
    logits = taco.logits(anchors, targets)
    loss = F.cross_entropy(logits, torch.arange(6))
    per_row = []
    for i in range(6):
        row = torch.stack([anchors[i] @ taco.W @ targets[j] for j in range(6)])
        per_row.append(-torch.log_softmax(row, dim=0)[i])
    assert torch.allclose(loss, torch.stack(per_row).mean(), atol=1e-5)
    assert torch.allclose(logits.max(dim=1).values, torch.zeros(6))  # each row shifted by its max
    assert (taco.W >= 0).all() and (taco.W < 1).all()  # W ~ U[0, 1)


@pytest.mark.parametrize("a", [1, 2, 6, 12])
@pytest.mark.parametrize("k", [1, 3, 5])
def test_taco_shapes_and_dtypes(a, k):
    d_u = latent_action_dim(a)
    assert d_u == int(1.25 * a) + 1
    tok = ActionEncoder(a, d_u)
    taco = TACO(50, a, k=k, feature_dim=10, hidden_dim=16, action_encoder=tok)
    b = 5
    code = taco.encode_actions(torch.rand(b, k, a))
    assert code.shape == (b, k * d_u) and code.dtype == torch.float32
    assert tok(torch.rand(b, a)).shape == (b, d_u)
    batch = {"action_seq": torch.rand(b, k, a), "reward": torch.rand(b, 1)}
    loss, metrics = taco.loss(batch, torch.randn(b, 50), [torch.randn(b, 50), torch.randn(b, 50)])
    assert loss.shape == () and loss.dtype == torch.float32
    assert set(metrics) == {"curl_loss", "taco_loss", "reward_loss", "aux_loss"}
    assert taco.G[-1].out_features == 10 and taco.R[-1].out_features == 1


def test_taco_loss_near_log_batch_at_init_for_uniform_logits():
    """With W = 0 every logit is equal: the InfoNCE loss is exactly log(B)."""
    taco = TACO(50, 2, k=3, feature_dim=10, hidden_dim=16, action_encoder=ActionEncoder(2, 3))
    with torch.no_grad():
        taco.W.zero_()
    batch = {"action_seq": torch.rand(16, 3, 2), "reward": torch.rand(16, 1)}
    _, m = taco.loss(batch, torch.randn(16, 50), [torch.randn(16, 50), torch.randn(16, 50)])
    assert torch.isclose(m["taco_loss"], torch.log(torch.tensor(16.0)))


# ---------------------------------------------------------------- augmentation
def test_random_shift_gather_matches_grid_sample():
    aug, x = RandomShift(4), torch.randint(0, 256, (16, 9, 20, 20), dtype=torch.uint8)
    torch.manual_seed(3)
    fast = aug(x).float()
    aug.mode = "grid"
    torch.manual_seed(3)
    ref = aug(x)
    assert (fast - ref).abs().max() < 0.01  # same shifts, same values up to float rounding
    assert not torch.equal(fast, x.float())  # it does shift


# ---------------------------------------------------------------- gradient routing
@pytest.mark.parametrize("cls", [DrQV2, SAC])
def test_actor_loss_reaches_actor_only(cls):
    ag, batch = learner(cls), make_batch()
    feat = ag.encoder(ag.aug(batch["obs"]))
    zero(ag)
    loss, _ = ag._actor_loss(feat.detach(), 10)
    loss.backward(inputs=list(ag.actor.parameters()))
    assert grads(ag.actor)
    for name in ("encoder", "critic", "tok", "aux"):
        assert not grads(ag.modules()[name]), name


@pytest.mark.parametrize("cls", [DrQV2, SAC])
def test_critic_loss_reaches_encoder_tok_critic_not_actor(cls):
    ag, batch = learner(cls), make_batch()
    zero(ag)
    feat = ag.encoder(ag.aug(batch["obs"]))
    (next_feat,) = ag.encode_nograd([batch["next_obs"]])
    loss, _ = ag.critic_loss(feat, batch, next_feat, 10)
    loss.backward()
    assert grads(ag.encoder) and grads(ag.tok) and grads(ag.critic)
    assert not grads(ag.actor) and not grads(ag.critic_target)
    assert not any(p.grad is not None for p in ag.aux.own_parameters())


def test_aux_loss_routing():
    """aux -> encoder, tok, sequence encoder, proj_s, G, R, W; never actor or critic."""
    ag, batch = learner(), make_batch()
    zero(ag)
    anchor = ag.encoder(ag.aug(batch["obs"]))
    loss, _ = ag.aux.loss(batch, anchor, ag.encode_nograd([batch[k] for k in ag.aux.nograd_keys]))
    loss.backward()
    for name, mod in [
        ("encoder", ag.encoder),
        ("tok", ag.tok),
        ("seq", ag.aux.seq),
        ("proj_s", ag.aux.proj_s),
        ("G", ag.aux.G),
        ("R", ag.aux.R),
    ]:
        assert grads(mod), name
    assert ag.aux.W.grad is not None and ag.aux.W.grad.abs().sum() > 0
    assert not grads(ag.actor) and not grads(ag.critic)


def test_optimizers_follow_reference_semantics():
    ag = learner()
    ids = lambda opt: {id(p) for g in opt.param_groups for p in g["params"]}  # noqa: E731
    enc, tok = {id(p) for p in ag.encoder.parameters()}, {id(p) for p in ag.tok.parameters()}
    assert enc | tok <= ids(ag.opts["critic"]) and enc | tok <= ids(ag.opts["aux"])
    assert not ids(ag.opts["actor"]) & (enc | tok)
    assert {id(p) for p in ag.aux.G.parameters()} <= ids(ag.opts["aux"])
    single = learner(optimizer="single")
    assert "aux" not in single.opts and {id(p) for p in single.aux.G.parameters()} <= ids(single.opts["critic"])


@pytest.mark.parametrize("cls", [DrQV2, SAC])
@pytest.mark.parametrize("aux", ["none", "curl", "taco"])
def test_target_network_moves_only_by_ema(cls, aux):
    ag, batch = learner(cls, aux=aux), make_batch()
    before = copy.deepcopy(ag.critic_target.state_dict())
    with torch.no_grad():  # changing online weights must not touch the target
        for p in ag.critic.parameters():
            p.add_(1.0)
    assert all(torch.equal(before[k], v) for k, v in ag.critic_target.state_dict().items())
    online = copy.deepcopy(ag.critic.state_dict())
    ag.update(batch, 10)
    after = ag.critic_target.state_dict()
    critic_after = ag.critic.state_dict()
    for k in before:  # target = lerp(old target, new online, tau)
        if before[k].dtype.is_floating_point:
            expected = before[k] + ag.critic_tau * (critic_after[k] - before[k])
            assert torch.allclose(after[k], expected, atol=1e-6), k
    assert not all(torch.equal(online[k], critic_after[k]) for k in online)


# ---------------------------------------------------------------- batched no-grad passes
@pytest.mark.parametrize("optimizer", ["reference", "single"])
@pytest.mark.parametrize("cls", [DrQV2, SAC])
def test_batched_nograd_passes_equal_separate(optimizer, cls):
    results = []
    for batched in (True, False):
        ag = learner(cls, optimizer=optimizer, batch_nograd=batched)
        torch.manual_seed(7)
        metrics = ag.update(make_batch(), 10)
        results.append((metrics, {k: v.clone() for k, v in ag.encoder.state_dict().items()}))
    (m1, s1), (m2, s2) = results
    for k in m1:
        assert torch.allclose(m1[k], m2[k], rtol=1e-4, atol=1e-5), k
    for k in s1:
        assert torch.allclose(s1[k], s2[k], rtol=1e-4, atol=1e-6), k


def test_single_optimizer_runs_one_nograd_call():
    ag = learner(optimizer="single")
    calls = []
    ag.encoder.register_forward_hook(lambda m, i, o: calls.append((torch.is_grad_enabled(), i[0].shape[0])))
    ag.update(make_batch(b=8), 10)
    nograd = [n for g, n in calls if not g]
    assert nograd == [24]  # next_obs, CURL positive and future_obs in one call


def test_reference_order_runs_aux_after_critic_with_fresh_augmentation():
    ag = learner()
    calls = []
    ag.encoder.register_forward_hook(lambda m, i, o: calls.append((torch.is_grad_enabled(), i[0].shape[0])))
    ag.update(make_batch(b=8), 10)
    # critic anchor (grad), next_obs (no-grad), aux anchor (grad), CURL positive + future (one no-grad call)
    assert calls == [(True, 8), (False, 8), (True, 8), (False, 16)]


# ---------------------------------------------------------------- state and options
def same(x, y) -> bool:
    """Equal nested state (dicts, lists, tensors, numbers), tensors compared exactly."""
    if isinstance(x, dict):
        return isinstance(y, dict) and x.keys() == y.keys() and all(same(x[k], y[k]) for k in x)
    if isinstance(x, (list, tuple)):
        return isinstance(y, (list, tuple)) and len(x) == len(y) and all(same(a, b) for a, b in zip(x, y, strict=True))
    if isinstance(x, torch.Tensor):
        return isinstance(y, torch.Tensor) and x.dtype == y.dtype and x.shape == y.shape and torch.equal(x, y)
    return x == y


def saved(state):
    """Through bytes, as a checkpoint goes (weights_only: tensors and plain values)."""
    buf = io.BytesIO()
    torch.save(state, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=True)


@pytest.mark.parametrize("optimizer", ["reference", "single"])
@pytest.mark.parametrize("cls", [DrQV2, SAC])
def test_state_dict_round_trip(cls, optimizer):
    a = learner(cls, optimizer=optimizer)
    torch.manual_seed(1)
    for i in range(2):
        a.update(make_batch(seed=i), 10 + i)
    state = a.state_dict()
    names = {k for k in state if k.startswith("opt/")}
    assert names == {f"opt/{k}" for k in a.opts} and "opt/actor" in names and "opt/critic" in names
    assert ("opt/alpha" in names) == (cls is SAC) and ("opt/aux" in names) == (optimizer == "reference")
    for k in names:  # Adam moments and step counts for every parameter each optimizer holds
        n_params = sum(len(g["params"]) for g in state[k]["param_groups"])
        assert len(state[k]["state"]) == n_params, k
        assert all({"step", "exp_avg", "exp_avg_sq"} <= set(s) for s in state[k]["state"].values()), k
        assert all(float(s["step"]) == 2 for s in state[k]["state"].values()), k
    torch.manual_seed(123)
    b = cls(OBS, 2, hidden_dim=32, aux="taco", expl_steps=0, optimizer=optimizer)  # other initial weights
    b.load_state_dict(saved(state))
    assert same(b.state_dict(), a.state_dict())  # networks and every optimizer's state
    # the next update is the one the original learner would have made
    batch = make_batch(seed=5)
    torch.manual_seed(9)
    ma = a.update(batch, 12)
    torch.manual_seed(9)
    mb = b.update(batch, 12)
    assert same(ma, mb)
    assert same(a.state_dict(), b.state_dict())
    with pytest.raises(ValueError, match="different agent"):
        learner(cls, aux="none").load_state_dict(a.state_dict())


def test_ablation_switches():
    raw = learner(action_encoder=False)
    assert raw.tok is None and not raw.latent_critic and raw.aux.tok is None
    assert raw.update(make_batch(), 10)["taco_loss"] > 0
    plain_q = learner(latent_critic=False)
    assert plain_q.tok is not None and plain_q.critic.q1[0].in_features == 50 + 2
    curl = learner(aux="curl")
    assert curl.aux.nograd_keys == ["obs"] and curl.tok is None
    no_terms = learner(curl_weight=0.0, reward_weight=0.0)
    assert set(no_terms.update(make_batch(), 10)) >= {"taco_loss"}
    assert "curl_loss" not in no_terms.update(make_batch(), 10)


def test_bf16_update_runs_and_stays_finite():
    ag = learner(precision="bf16")
    m = ag.update(make_batch(), 10)
    assert all(torch.isfinite(v) for v in m.values())


def test_act_outputs_bounded_actions():
    ag = learner(SAC)
    obs = torch.randint(0, 256, OBS, dtype=torch.uint8).numpy()
    for eval_mode in (True, False):
        a = ag.act(obs, 100, eval_mode)
        assert a.shape == (2,) and a.dtype.name == "float32" and (abs(a) <= 1).all()


def test_encoder_rejects_tiny_frames():
    with pytest.raises(ValueError, match="too small"):
        Encoder((9, 12, 12))


def test_bf16_keeps_q_values_and_logits_in_fp32():
    ag, batch = learner(precision="bf16"), make_batch()
    with ag.autocast():
        feat = ag.encoder(ag.aug(batch["obs"]))
        q1, _ = ag.critic(feat, ag.action_code(batch["action"]))
        logits = ag.aux.logits(torch.randn(4, 50), torch.randn(4, 50))
    assert feat.dtype == torch.bfloat16 and q1.dtype == torch.float32 and logits.dtype == torch.float32


def test_encoder_leaves_float_input_untouched():
    enc = Encoder(OBS)
    x = torch.rand(2, *OBS).mul(255).contiguous(memory_format=torch.channels_last)
    before = x.clone()
    enc(x)
    assert torch.equal(x, before)


def test_aux_without_any_loss_is_an_error():
    with pytest.raises(ValueError, match="curl_weight > 0"):
        learner(aux="curl", curl_weight=0.0)
    with pytest.raises(ValueError, match="aux=none"):
        learner(taco_weight=0.0, curl_weight=0.0, reward_weight=0.0)


def test_cat_rows_is_a_view_of_adjacent_splits_and_a_copy_otherwise():
    whole = torch.randn(10, 3, 4)
    parts = list(whole.split([4, 6]))
    joined = cat_rows(parts)
    assert torch.equal(joined, whole) and joined.data_ptr() == whole.data_ptr()
    for other in (
        [parts[1], parts[0]],  # out of order
        [whole[:4], whole[5:]],  # a gap
        [whole[:4], torch.randn(6, 3, 4)],
    ):  # another tensor
        joined = cat_rows(other)
        assert torch.equal(joined, torch.cat(other)) and joined.data_ptr() != whole.data_ptr()
    grad = torch.randn(6, 2, requires_grad=True)
    joined = cat_rows(list(grad.split([2, 4])))
    joined.sum().backward()
    assert torch.equal(grad.grad, torch.ones(6, 2))
