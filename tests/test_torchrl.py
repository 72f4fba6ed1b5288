"""taco_rl.torchrl: TACO as a torchrl LossModule beside torchrl's own SAC loss.

The learning test is a torchrl pipeline end to end: point_reach through torchrl's GymWrapper,
torchrl's ReplayBuffer with a SliceSampler of K+1 steps, torchrl's SACLoss on encoder features (the
critic loss and TacoLossModule train the encoder, the actor reads it detached, as in DrQ), one Adam.
It must beat tests/test_learning.py's threshold (35; random actions score about 12), and TACO's InfoNCE
term must fall below 0.7 log(batch) (log(batch) is its value for features that tell the windows
apart no better than chance) and below 0.7 of where it started: a module whose loss does not train
the encoder and TACO's heads cannot get there.
"""

from __future__ import annotations

import math

import pytest
import torch

torchrl = pytest.importorskip("torchrl", reason="the torchrl extra is not installed")

import gymnasium as gym  # noqa: E402
import torch.nn as nn  # noqa: E402
from tensordict import TensorDict  # noqa: E402
from tensordict.nn import TensorDictModule, TensorDictSequential  # noqa: E402
from torchrl.data import LazyTensorStorage, ReplayBuffer, SliceSampler  # noqa: E402
from torchrl.envs import ExplorationType, GymWrapper, set_exploration_type  # noqa: E402
from torchrl.modules import NormalParamExtractor, ProbabilisticActor, TanhNormal, ValueOperator  # noqa: E402
from torchrl.objectives import SACLoss, SoftUpdate  # noqa: E402

from taco_rl import TacoLoss  # noqa: E402
from taco_rl.agents.nets import Encoder, RandomShift, mlp, trunk  # noqa: E402
from taco_rl.envs.point import RANDOM_RETURN  # noqa: E402
from taco_rl.torchrl import TacoLossModule  # noqa: E402

OBS = (3, 24, 24)
A, K, B = 2, 3, 8


def slices(b: int = B, k: int = K, seed: int = 0) -> TensorDict:
    """(b, k+1) slices as SliceSampler returns them (reshaped), no episode end inside."""
    g = torch.Generator().manual_seed(seed)
    t = k + 1
    return TensorDict(
        {
            "pixels": torch.randint(0, 256, (b, t, *OBS), dtype=torch.uint8, generator=g),
            "action": torch.rand(b, t, A, generator=g) * 2 - 1,
            "next": {"reward": torch.rand(b, t, 1, generator=g), "done": torch.zeros(b, t, 1, dtype=torch.bool)},
        },
        batch_size=[b, t],
    )


def module(**kwargs) -> TacoLossModule:
    torch.manual_seed(0)
    return TacoLossModule(TacoLoss(Encoder(OBS), A, obs_shape=OBS, k=K, hidden_dim=16, **kwargs))


def test_losses_are_the_tacoloss_terms_of_the_slice_steps():
    loss = module(taco_weight=1.3, curl_weight=0.7, reward_weight=0.4)
    td = slices()
    torch.manual_seed(3)
    out = loss(td)
    assert set(out.keys()) == {"loss_curl", "loss_taco", "loss_reward"} == set(loss.out_keys)
    torch.manual_seed(3)  # the same shifts
    _, metrics = loss.taco(td["pixels"][:, 0], td["action"][:, :K], td["next", "reward"][:, :K, 0], td["pixels"][:, K])
    for term, weight in (("curl", 0.7), ("taco", 1.3), ("reward", 0.4)):
        assert torch.allclose(out[f"loss_{term}"], weight * metrics[f"{term}_loss"], atol=1e-5), term
    torch.manual_seed(3)  # SliceSampler's flat (B*(K+1),) batch is the same thing
    flat = loss(td.reshape(-1))
    assert all(torch.allclose(flat[key], out[key]) for key in loss.out_keys)
    sum(out.values()).backward()
    assert all(p.grad is not None for p in loss.taco.encoder.parameters())


def test_set_keys_reads_other_names():
    loss = module()
    td = slices()
    td.rename_key_("pixels", "observation")
    td["next"].rename_key_("done", "end")
    loss.set_keys(pixels="observation", done="end")
    assert set(loss.in_keys) == {"observation", "action", ("next", "reward"), ("next", "end")}
    assert torch.isfinite(sum(loss(td).values()))
    with pytest.raises(ValueError, match="not an accepted tensordict key"):
        loss.set_keys(frames="observation")


def test_curl_only_writes_loss_curl():
    loss = module(aux="curl")
    assert loss.out_keys == ["loss_curl"] and set(loss(slices()).keys()) == {"loss_curl"}


def test_bad_slices_say_what_was_expected():
    loss = module()
    td = slices()
    with pytest.raises(ValueError, match=r"not a whole number of slices of K\+1=4 steps"):
        loss(td.reshape(-1)[:-1])
    with pytest.raises(ValueError, match=r"expected slices of shape \(B, K\+1=4\)"):
        loss(td[:, :3])
    td["next", "done"][2, 1] = True  # an episode ends inside slice 2, before step K
    with pytest.raises(ValueError, match="slice 2 crosses an episode end at step 1"):
        loss(td)
    td["next", "done"][2, 1] = False
    td["next", "done"][:, K] = True  # an end at the slice's last step is fine: s_{t+K} is its observation
    assert torch.isfinite(sum(loss(td).values()))
    with pytest.raises(TypeError, match="expected a taco_rl.TacoLoss"):
        TacoLossModule(nn.Linear(2, 2))  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------------ learning
THRESHOLD = 35.0  # tests/test_learning.py's: random actions score about 12, the scripted policy 48.5
EPISODE = 50


class QNet(nn.Module):
    def __init__(self, repr_dim: int, hidden: int) -> None:
        super().__init__()
        self.trunk, self.q = trunk(repr_dim, 50), mlp(50 + A, hidden, 1)

    def forward(self, feat: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        return self.q(torch.cat([self.trunk(feat), action], dim=-1))


class OneOrMany(nn.Module):
    """The encoder on one observation (a rollout step) or a batch."""

    def __init__(self, encoder: nn.Module) -> None:
        super().__init__()
        self.encoder = encoder

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.encoder(obs[None])[0] if obs.dim() == 3 else self.encoder(obs)


def train(episodes: int, seed: int = 0, batch: int = 64, hidden: int = 256, lr: float = 1e-3):
    """SAC (torchrl's loss) + TACO (this module) on point_reach; returns (eval return, TACO losses)."""
    torch.manual_seed(seed)
    env = GymWrapper(gym.make("taco/point_reach-v0", seed=seed, action_repeat=1, frame_stack=1, image_size=OBS[1]))
    eval_env = GymWrapper(
        gym.make("taco/point_reach-v0", seed=seed + 1000, action_repeat=1, frame_stack=1, image_size=OBS[1])
    )
    encoder = Encoder(OBS)
    actor = ProbabilisticActor(
        TensorDictModule(
            nn.Sequential(trunk(encoder.repr_dim, 50), mlp(50, hidden, 2 * A), NormalParamExtractor()),
            in_keys=["feat"],
            out_keys=["loc", "scale"],
        ),
        in_keys=["loc", "scale"],
        spec=env.action_spec,
        distribution_class=TanhNormal,
    )
    qvalue = ValueOperator(QNet(encoder.repr_dim, hidden), in_keys=["feat", "action"])
    sac = SACLoss(actor, qvalue, num_qvalue_nets=2, alpha_init=0.1)
    sac.make_value_estimator(gamma=0.99)
    target_update = SoftUpdate(sac, tau=0.01)
    taco = TacoLossModule(TacoLoss(encoder, A, obs_shape=OBS, k=K, hidden_dim=hidden))
    taco.set_keys(pixels="observation")
    params = {id(p): p for p in [*sac.parameters(), *taco.parameters()]}
    opt = torch.optim.Adam(params.values(), lr=lr)
    features = TensorDictModule(OneOrMany(encoder), in_keys=["observation"], out_keys=["feat"])
    policy = TensorDictSequential(features, actor)
    rb = ReplayBuffer(
        storage=LazyTensorStorage(episodes * EPISODE), sampler=SliceSampler(slice_len=K + 1), batch_size=batch * (K + 1)
    )
    aug = RandomShift(pad=4)
    keep = [
        "observation",
        "action",
        ("next", "observation"),
        ("next", "reward"),
        ("next", "done"),
        ("next", "terminated"),
        ("next", "truncated"),
    ]
    taco_losses: list[float] = []
    for episode in range(episodes):
        with torch.no_grad(), set_exploration_type(ExplorationType.RANDOM):
            rollout = env.rollout(EPISODE, None if episode < 2 else policy, break_when_any_done=True)
        rb.extend(rollout.select(*keep))
        for _ in range(EPISODE if episode >= 1 else 0):
            sample = rb.sample()
            td = sample.reshape(-1, K + 1)[:, 0].clone()  # SAC's transitions: the first step of each slice
            td["feat"] = encoder(aug(td["observation"]))
            with torch.no_grad():
                td["next", "feat"] = encoder(aug(td["next", "observation"]))
            critic, _ = sac.qvalue_v2_loss(td)  # reaches the encoder
            detached = td.clone(recurse=False).set("feat", td["feat"].detach())
            actor_loss, info = sac.actor_loss(detached)  # the actor reads the encoder detached
            aux = taco(sample)  # loss_taco, loss_curl, loss_reward
            loss = critic + actor_loss + sac.alpha_loss(info["log_prob"]).mean() + sum(aux.values())
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            target_update.step()
            taco_losses.append(float(aux["loss_taco"].detach()))
    with torch.no_grad(), set_exploration_type(ExplorationType.DETERMINISTIC):
        returns = [float(eval_env.rollout(EPISODE, policy)["next", "reward"].sum()) for _ in range(5)]
    return sum(returns) / len(returns), taco_losses


@pytest.mark.slow
def test_torchrl_sac_with_taco_learns_point_reach():
    ret, losses = train(episodes=16)  # 750 updates
    assert RANDOM_RETURN + 15 < THRESHOLD
    assert ret > THRESHOLD, ret
    window = 100
    first, last = sum(losses[:window]) / window, sum(losses[-window:]) / window
    assert last < 0.7 * math.log(64) and last < 0.7 * first, (first, last)
