"""The public TacoLoss: the suite's TACO on anyone's encoder, from plain tensors.

What is pinned: on the same weights, batch and random shifts it gives the loss, metrics and gradients
of the suite's own batched path (the learner's `update_aux`); its switches are the suite's; its inputs
are checked with errors that say what was expected; `import taco_rl` stays light.
"""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
import torch.nn as nn
from tensordict import TensorDict

from taco_rl import TacoLoss
from taco_rl.agents import SAC, DrQV2
from taco_rl.agents.nets import ActionEncoder, Encoder

OBS = (9, 24, 24)
B, A, K = 8, 2, 3
GAMMA = 0.9
ATOL = 1e-5  # as tests/test_taco_math.py and tests/test_learner_math.py


def windows(seed: int = 0, b: int = B) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    frames = lambda: torch.randint(0, 256, (b, *OBS), dtype=torch.uint8, generator=g)  # noqa: E731
    return {
        "obs": frames(),
        "action_seq": torch.rand(b, K, A, generator=g) * 2 - 1,
        "reward_seq": torch.rand(b, K, generator=g) * 3,
        "future_obs": frames(),
    }


def suite_batch(w: dict[str, torch.Tensor]) -> TensorDict:
    """The suite's replay batch for the same windows: `reward` is the n-step return (n = K)."""
    reward = (w["reward_seq"] * GAMMA ** torch.arange(K)).sum(1, keepdim=True)
    return TensorDict(
        {"obs": w["obs"], "future_obs": w["future_obs"], "action_seq": w["action_seq"], "reward": reward},
        batch_size=[len(reward)],
    )


def pair(cls=SAC, aux: str = "taco", tok: bool = True, **weights):
    """A learner and a TacoLoss on the learner's encoder and action encoder, with its TACO's weights."""
    torch.manual_seed(0)
    ag = cls(OBS, A, hidden_dim=32, aux=aux, taco_k=K, action_encoder=tok, expl_steps=0, **weights)
    tok_or_raw = ag.tok if ag.tok is not None else False
    public = TacoLoss(
        ag.encoder, A, obs_shape=OBS, k=K, aux=aux, action_encoder=tok_or_raw, hidden_dim=32, gamma=GAMMA, **weights
    )
    public.taco.load_state_dict(ag.aux.state_dict())
    return ag, public


def learner_grads(ag) -> dict[str, torch.Tensor | None]:
    return {
        f"{m}.{n}": p.grad
        for m in ("encoder", "tok", "aux")
        if m in ag.modules()
        for n, p in ag.modules()[m].named_parameters()
    }


@pytest.mark.parametrize(
    "cls,aux,tok,weights",
    [
        (SAC, "taco", True, {"taco_weight": 1.3, "curl_weight": 0.7, "reward_weight": 0.4}),
        (DrQV2, "taco", True, {}),
        (SAC, "taco", False, {}),
        (SAC, "taco", True, {"curl_weight": 0.0}),
        (DrQV2, "curl", True, {}),
    ],
)
def test_loss_and_gradients_equal_the_learners_batched_path(cls, aux, tok, weights):
    ag, public = pair(cls, aux, tok, **weights)
    w = windows()
    ag.opts["aux"].step = lambda *args, **kwargs: None  # the learner's own update_aux, weights left as they are
    torch.manual_seed(7)
    suite_metrics = ag.update_aux(suite_batch(w))
    suite_grads = {k: None if g is None else g.clone() for k, g in learner_grads(ag).items()}
    for p in public.parameters():
        p.grad = None
    torch.manual_seed(7)  # the same shifts: the public module draws them in the learner's order
    loss, metrics = public(**w)
    loss.backward()
    assert set(metrics) == set(suite_metrics)
    for key, value in suite_metrics.items():
        assert torch.allclose(metrics[key], value, atol=ATOL), key
    assert torch.allclose(loss.detach(), suite_metrics["aux_loss"], atol=ATOL)
    public_grads = learner_grads(ag)  # the same parameter objects: the learner's encoder and tok are shared
    own = {f"aux.{n}": p.grad for n, p in public.taco.named_parameters()}
    assert set(own) <= set(public_grads)
    for name, want in suite_grads.items():
        got = own.get(name, public_grads[name])
        if want is None:  # unused by this configuration (e.g. G and R when only CURL is on)
            assert got is None, name
            continue
        assert got is not None and torch.allclose(got, want, atol=ATOL), name
    assert any(g is not None and g.abs().sum() > 0 for k, g in suite_grads.items() if k.startswith("encoder."))
    # the equality is not trivial: other shifts give another loss
    torch.manual_seed(8)
    assert not torch.allclose(public(**w)[0], loss, atol=1e-3)


def test_terms_are_weighted_and_sum_to_the_loss():
    _, public = pair(taco_weight=1.3, curl_weight=0.7, reward_weight=0.4)
    w = windows()
    torch.manual_seed(1)
    loss, metrics = public(**w)
    torch.manual_seed(1)
    terms = public.terms(**w)
    assert set(terms) == {"curl", "taco", "reward"}
    for name, weight in (("curl", 0.7), ("taco", 1.3), ("reward", 0.4)):
        assert torch.allclose(terms[name], weight * metrics[f"{name}_loss"], atol=ATOL), name
        assert terms[name].requires_grad, name
    assert torch.allclose(sum(terms.values()), loss, atol=ATOL)


def test_reward_target_is_the_discounted_sum_of_the_rewards_given():
    _, public = pair()
    w = windows()
    batch, _, _ = public.prepare(**w)
    r = w["reward_seq"]
    assert torch.allclose(batch["reward"], (r[:, 0] + GAMMA * r[:, 1] + GAMMA**2 * r[:, 2])[:, None], atol=1e-6)
    batch, _, _ = public.prepare(w["obs"], w["action_seq"], r[:, :1], w["future_obs"])  # n = 1: the reward itself
    assert torch.allclose(batch["reward"], r[:, :1])


def test_defaults_are_the_papers_and_switches_are_the_suites():
    encoder = Encoder(OBS)
    public = TacoLoss(encoder, 6, obs_shape=OBS)
    assert public.k == 3 and public.taco.nograd_keys == ["obs", "future_obs"]
    assert (public.taco.taco_weight, public.taco.curl_weight, public.taco.reward_weight) == (1.0, 1.0, 1.0)
    assert public.action_encoder is not None and public.action_encoder.latent_dim == int(1.25 * 6) + 1
    assert public.taco.G[0].out_features == 1024 and public.taco.W.shape == (50, 50)
    assert public.taco.proj_s[0].in_features == encoder.repr_dim  # read by the dry forward
    curl = TacoLoss(encoder, 6, obs_shape=OBS, aux="curl")
    assert curl.action_encoder is None and curl.taco.nograd_keys == ["obs"] and not curl.taco.uses_actions
    loss, metrics = curl(windows(b=4)["obs"])  # CURL reads obs alone
    assert set(metrics) == {"curl_loss", "aux_loss"} and loss.requires_grad


def test_parameters_are_encoder_action_encoder_and_heads():
    encoder = Encoder(OBS)
    tok = ActionEncoder(A, 3)
    public = TacoLoss(encoder, A, obs_shape=OBS, action_encoder=tok, hidden_dim=16)
    assert public.action_encoder is tok
    ids = {id(p) for p in public.parameters()}
    assert {id(p) for p in encoder.parameters()} <= ids and {id(p) for p in tok.parameters()} <= ids
    heads = {id(p) for p in public.head_parameters()}
    assert heads == {id(p) for p in public.taco.own_parameters()}
    assert heads.isdisjoint({id(p) for p in encoder.parameters()} | {id(p) for p in tok.parameters()})


def test_augment_none_and_callables():
    seen: list[tuple[int, ...]] = []

    def flip(x: torch.Tensor) -> torch.Tensor:
        seen.append(tuple(x.shape))
        return x.flip(-1)

    encoder = Encoder(OBS)
    public = TacoLoss(encoder, A, obs_shape=OBS, hidden_dim=16, augment=flip)
    w = windows()
    public(**w)
    assert seen == [(B, *OBS)] * 3  # anchor, CURL positive, TACO target
    plain = TacoLoss(encoder, A, obs_shape=OBS, hidden_dim=16, augment=None)
    _, anchor, targets = plain.prepare(**w)
    assert torch.allclose(anchor, targets[0], atol=1e-5)  # no augmentation: the CURL positive is the anchor's view
    with pytest.raises(ValueError, match="augment="):
        TacoLoss(encoder, A, obs_shape=OBS, augment="crop")  # type: ignore[arg-type]


def test_dry_forward_leaves_the_encoder_as_it_was():
    encoder = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Flatten())
    before = encoder[1].running_mean.clone()
    TacoLoss(encoder, A, obs_shape=(3, 16, 16), obs_dtype=torch.float32, hidden_dim=16)
    assert encoder.training and torch.equal(encoder[1].running_mean, before)


def test_bad_inputs_say_what_was_expected():
    public = TacoLoss(Encoder(OBS), A, obs_shape=OBS, hidden_dim=16)
    w = windows()
    cases = [
        ({"obs": w["obs"][:, :3]}, r"obs: expected shape \('B', 9, 24, 24\)"),
        ({"action_seq": w["action_seq"][:, :2]}, r"action_seq: expected shape \('B', 3, 2\) with B=8, got \(8, 2, 2\)"),
        ({"action_seq": w["action_seq"][:4]}, r"with B=8, got \(4, 3, 2\)"),
        ({"reward_seq": w["reward_seq"][:, 0]}, r"reward_seq: expected shape \('B', 'n'\)"),
        ({"reward_seq": w["reward_seq"][:, :0]}, r"reward_seq: expected shape"),
        ({"future_obs": w["future_obs"][:7]}, r"future_obs: expected shape"),
        ({"future_obs": None}, "future_obs is None, but the TACO term reads it"),
        ({"action_seq": None}, "action_seq is None"),
    ]
    for change, message in cases:
        with pytest.raises(ValueError, match=message):
            public(**{**w, **change})
    with pytest.raises(TypeError, match="expected a torch.Tensor"):
        public(**{**w, "action_seq": w["action_seq"].numpy()})


def test_bad_construction_says_what_was_expected():
    encoder = Encoder(OBS)
    with pytest.raises(ValueError, match=r"expected \(batch, features\).*got \(2, 32, 5, 5\)"):
        TacoLoss(encoder.convnet, A, obs_shape=OBS, obs_dtype=torch.float32)
    with pytest.raises(ValueError, match="aux='none'"):
        TacoLoss(encoder, A, obs_shape=OBS, aux="none")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="curl_weight > 0"):
        TacoLoss(encoder, A, obs_shape=OBS, aux="curl", curl_weight=0.0)
    with pytest.raises(ValueError, match="every weight 0"):
        TacoLoss(encoder, A, obs_shape=OBS, taco_weight=0.0, curl_weight=0.0, reward_weight=0.0)
    with pytest.raises(ValueError, match="reward_weight=-1"):
        TacoLoss(encoder, A, obs_shape=OBS, reward_weight=-1.0)
    with pytest.raises(ValueError, match="latent_dim"):
        TacoLoss(encoder, A, obs_shape=OBS, action_encoder=nn.Linear(A, 3))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="k and action_dim"):
        TacoLoss(encoder, A, obs_shape=OBS, k=0)


def test_import_taco_rl_stays_light():
    code = (
        "import sys, taco_rl; assert 'torch' not in sys.modules, 'torch imported';"
        "from taco_rl import TacoLoss, WindowSampler; assert 'torch' in sys.modules;"
        "assert 'TacoLoss' in dir(taco_rl);"
        "import pytest;"
        "pytest.raises(AttributeError, getattr, taco_rl, 'Nope')"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
