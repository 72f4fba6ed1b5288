"""The TACO / CURL / reward terms recomputed by hand, with their gradients and the inputs each reads."""

from __future__ import annotations

import copy

import pytest
import torch

from taco_rl.agents import TACO
from taco_rl.agents.nets import ActionEncoder

REPR, A, K, B, FEAT = 40, 2, 3, 8, 10
WEIGHTS = {"taco_weight": 1.3, "curl_weight": 0.7, "reward_weight": 0.4}


def module(tok: bool = True, **weights) -> TACO:
    torch.manual_seed(0)
    encoder = ActionEncoder(A, 3) if tok else None
    return TACO(REPR, A, k=K, feature_dim=FEAT, hidden_dim=16, action_encoder=encoder, **(weights or WEIGHTS))


def inputs(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    batch = {
        "action_seq": torch.rand(B, K, A, generator=g) * 2 - 1,
        "reward": torch.rand(B, 1, generator=g) * 3,
        "action": torch.rand(B, A, generator=g),
        "discount": torch.rand(B, 1, generator=g),
    }
    anchor = torch.randn(B, REPR, generator=g).requires_grad_()
    targets = {"obs": torch.randn(B, REPR, generator=g), "future_obs": torch.randn(B, REPR, generator=g)}
    return batch, anchor, targets


def info_nce(rows: torch.Tensor, cols: torch.Tensor, W: torch.Tensor) -> torch.Tensor:
    """-mean_i log softmax_j(rows_i^T W cols_j)[i], written as a loop over rows."""
    losses = []
    for i in range(len(rows)):
        scores = torch.stack([rows[i] @ W @ cols[j] for j in range(len(cols))])
        losses.append(torch.logsumexp(scores, 0) - scores[i])
    return torch.stack(losses).mean()


def by_hand(m: TACO, batch, anchor, targets):
    """(total, {term: value}) from the module's weights, every step written out."""
    z = m.proj_s(anchor)
    with torch.no_grad():
        positive, future = m.proj_s(targets["obs"]), m.proj_s(targets["future_obs"])
    terms = {}
    if m.curl_weight > 0:
        terms["curl_loss"] = info_nce(z, positive, m.W)
    if m.taco_weight > 0 or m.reward_weight > 0:
        seq = batch["action_seq"]
        steps = [m.tok(seq[:, i]) if m.tok is not None else seq[:, i] for i in range(K)]  # one code per step
        u = m.seq(torch.cat(steps, dim=-1))
        za = torch.cat([z, u], dim=-1)
        if m.taco_weight > 0:
            terms["taco_loss"] = info_nce(m.G(za), future, m.W)
        if m.reward_weight > 0:
            terms["reward_loss"] = ((m.R(za) - batch["reward"]) ** 2).mean()
    total = sum(getattr(m, k.replace("_loss", "_weight")) * v for k, v in terms.items())
    return total, terms


def run(m: TACO, batch, anchor, targets):
    return m.loss(batch, anchor, [targets[k] for k in m.nograd_keys])


def grads(m: TACO, anchor, loss) -> dict[str, torch.Tensor]:
    names = [n for n, _ in m.named_parameters()]
    out = torch.autograd.grad(loss, [anchor] + [p for _, p in m.named_parameters()], allow_unused=True)
    return dict(zip(["anchor"] + names, out, strict=True))


@pytest.mark.parametrize("tok", [True, False])
def test_taco_curl_reward_terms_and_gradients_by_hand(tok):
    m = module(tok)
    hand = copy.deepcopy(m)
    batch, anchor, targets = inputs()
    loss, metrics = run(m, batch, anchor, targets)
    expected, terms = by_hand(hand, batch, anchor, targets)
    assert set(terms) == {"curl_loss", "taco_loss", "reward_loss"}
    for k, v in terms.items():
        assert torch.allclose(metrics[k], v, atol=1e-5), k
    assert torch.allclose(loss, expected, atol=1e-5) and torch.allclose(metrics["aux_loss"], expected, atol=1e-5)
    got, want = grads(m, anchor, loss), grads(hand, anchor, expected)
    for name in want:  # the same gradients: targets are constants, the anchor and every head learn
        assert want[name] is not None, name
        assert got[name] is not None and torch.allclose(got[name], want[name], atol=1e-5), name


def test_curl_only_module_by_hand():
    m = module(tok=False, taco_weight=0.0, curl_weight=0.8, reward_weight=0.0)
    assert m.nograd_keys == ["obs"] and not hasattr(m, "G")
    batch, anchor, targets = inputs()
    loss, metrics = run(m, batch, anchor, targets)
    expected, terms = by_hand(copy.deepcopy(m), batch, anchor, targets)
    assert set(metrics) == {"curl_loss", "aux_loss"}
    assert torch.allclose(loss, expected, atol=1e-5) and torch.allclose(metrics["curl_loss"], terms["curl_loss"])


def test_nograd_keys_follow_the_weights():
    assert module().nograd_keys == ["obs", "future_obs"]
    assert module(taco_weight=1.0, curl_weight=0.0, reward_weight=1.0).nograd_keys == ["future_obs"]


@pytest.mark.parametrize(
    "weights,expected",
    [
        ({"taco_weight": 0.0, "curl_weight": 1.0, "reward_weight": 1.0}, {"curl_loss", "reward_loss"}),
        ({"taco_weight": 1.0, "curl_weight": 0.0, "reward_weight": 0.0}, {"taco_loss"}),
        ({"taco_weight": 0.0, "curl_weight": 0.0, "reward_weight": 2.0}, {"reward_loss"}),
    ],
)
def test_each_weight_switches_its_term(weights, expected):
    m = module(**weights)
    batch, anchor, targets = inputs()
    loss, metrics = run(m, batch, anchor, targets)
    hand, terms = by_hand(copy.deepcopy(m), batch, anchor, targets)
    assert set(terms) == expected and set(metrics) == expected | {"aux_loss"}
    assert torch.allclose(loss, hand, atol=1e-5)


def test_each_term_reads_its_own_inputs():
    m = module()
    batch, anchor, targets = inputs()
    _, base = run(m, batch, anchor, targets)

    def changed(batch=batch, targets=targets, anchor=anchor):
        _, metrics = run(m, batch, anchor, targets)
        return {k for k in ("curl_loss", "taco_loss", "reward_loss") if not torch.allclose(metrics[k], base[k])}

    other = torch.randn(B, REPR)
    assert changed(targets={**targets, "future_obs": other}) == {"taco_loss"}
    assert changed(targets={**targets, "obs": other}) == {"curl_loss"}
    assert changed(batch={**batch, "reward": batch["reward"] + 1}) == {"reward_loss"}
    for step in range(K):  # every action of the sequence reaches the TACO and reward terms
        seq = batch["action_seq"].clone()
        seq[:, step] = -seq[:, step]
        assert changed(batch={**batch, "action_seq": seq}) == {"taco_loss", "reward_loss"}, step
    for key in ("action", "discount"):
        assert changed(batch={**batch, key: torch.zeros_like(batch[key])}) == set(), key
    assert changed(anchor=torch.randn(B, REPR)) == {"curl_loss", "taco_loss", "reward_loss"}


def test_logits_are_bilinear_with_w_and_row_max_shifted():
    m = module()
    a, t = torch.randn(5, FEAT), torch.randn(6, FEAT)
    logits = m.logits(a, t)
    raw = torch.stack([torch.stack([a[i] @ m.W @ t[j] for j in range(6)]) for i in range(5)])
    assert torch.allclose(logits, raw - raw.max(dim=1, keepdim=True).values, atol=1e-5)
    assert not torch.allclose(m.W, m.W.T)  # W is not symmetric: a transposed W would be caught


def test_encode_actions_codes_each_step_in_order():
    m = module()
    seq = torch.rand(B, K, A) * 2 - 1
    codes = torch.cat([m.tok(seq[:, i]) for i in range(K)], dim=-1)
    assert torch.allclose(m.encode_actions(seq), m.seq(codes), atol=1e-6)
    raw = module(tok=False)
    assert torch.allclose(raw.encode_actions(seq), raw.seq(seq.flatten(1)), atol=1e-6)
