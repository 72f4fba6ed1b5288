"""TACO as a torchrl ``LossModule`` (the ``torchrl`` extra: ``pip install "taco-rl[torchrl]"``).

torchrl has SAC/DDPG/TD3 losses and a slice sampler but no temporal contrastive auxiliary loss. This
module reads the ``(B, K+1)`` slices that ``SliceSampler(slice_len=K+1)`` draws and writes
``loss_taco``, ``loss_curl`` and ``loss_reward`` (each weighted, those that are on), so that the sum of
every ``loss_*`` key of both losses is what a torchrl training loop minimises:

    taco = TacoLossModule(TacoLoss(encoder, action_dim, obs_shape=(9, 84, 84)))
    taco.set_keys(pixels="pixels", done="done")                  # the defaults
    rb = ReplayBuffer(storage=LazyTensorStorage(100_000), sampler=SliceSampler(slice_len=taco.slice_len),
                      batch_size=256 * taco.slice_len)
    losses = taco(rb.sample())                                     # flat (B*(K+1),) or (B, K+1)
    sum(v for key, v in losses.items() if key.startswith("loss_")).backward()

The math is TacoLoss's, which is the suite's TACO (agents/taco.py): a door, not a second copy.
Slice step 0 gives s_t; steps 0..K-1 give a_t..a_{t+K-1} and ``("next", reward)`` r_t..r_{t+K-1};
step K gives s_{t+K}. A slice must not cross an episode end before its last step: the module checks
``("next", done)`` on steps 0..K-1 and says so (a ``SliceSampler`` with ``strict_length=True`` and the
right ``end_key`` never does).

Versions: torchrl 0.14.1 (the newest release) declares ``tensordict<0.15`` but runs this module and
its test on torch 2.13 with tensordict 0.15.3; its compiled extension (used by prioritized samplers)
does not load against torch 2.13, which nothing here needs.
"""

from __future__ import annotations

from dataclasses import dataclass

from tensordict import TensorDict, TensorDictBase
from tensordict.utils import NestedKey

try:
    from torchrl.objectives import LossModule
except ImportError as e:  # pragma: no cover - depends on what is installed
    raise ImportError(
        'taco_rl.torchrl needs torchrl: pip install --no-deps "torchrl==0.14.1" "hoptorch>=0.1.4" '
        "(README: Use TACO in your own learner)"
    ) from e

from taco_rl.agents.taco_loss import TacoLoss

__all__ = ["TacoLossModule"]


def _under_next(key: NestedKey) -> NestedKey:
    return ("next", *key) if isinstance(key, tuple) else ("next", key)


class TacoLossModule(LossModule):
    """TACO's auxiliary losses from torchrl slices; ``taco`` is the TacoLoss that does the math
    (its ``parameters()`` are the encoder's, the action encoder's and TACO's heads)."""

    @dataclass
    class _AcceptedKeys:
        """Keys read from the slices; ``reward`` and ``done`` are read under ``"next"``.

        Attributes:
            pixels: the observations the encoder takes.
            action: the action taken at each step.
            reward: the reward of each step (read as ``("next", reward)``).
            done: the end-of-episode flag of each step (read as ``("next", done)``).
        """

        pixels: NestedKey = "pixels"
        action: NestedKey = "action"
        reward: NestedKey = "reward"
        done: NestedKey = "done"

    default_keys = _AcceptedKeys
    tensor_keys: _AcceptedKeys

    def __init__(self, taco: TacoLoss) -> None:
        if not isinstance(taco, TacoLoss):
            raise TypeError(f"taco: expected a taco_rl.TacoLoss, got {type(taco).__name__}")
        super().__init__()
        self.taco = taco

    @property
    def slice_len(self) -> int:
        """K + 1: the steps of one slice (``SliceSampler(slice_len=...)``)."""
        return self.taco.k + 1

    @property
    def in_keys(self) -> list[NestedKey]:
        keys = self.tensor_keys
        return [keys.pixels, keys.action, _under_next(keys.reward), _under_next(keys.done)]

    @property
    def out_keys(self) -> list[str]:
        return [f"loss_{term}" for term in ("curl", "taco", "reward") if self.taco.taco.weight(term) > 0]

    def _forward_value_estimator_keys(self, **kwargs) -> None:
        """No value estimator: nothing to forward."""

    def _slices(self, tensordict: TensorDictBase) -> TensorDictBase:
        t = self.slice_len
        if tensordict.batch_dims == 1:
            if tensordict.shape[0] % t:
                raise ValueError(
                    f"a flat batch of {tensordict.shape[0]} steps is not a whole number of slices of "
                    f"K+1={t} steps: sample with SliceSampler(slice_len={t})"
                )
            return tensordict.reshape(-1, t)
        if tensordict.batch_dims != 2 or tensordict.shape[1] != t:
            raise ValueError(
                f"expected slices of shape (B, K+1={t}) or a flat (B*{t},) batch, "
                f"got batch size {tuple(tensordict.shape)}"
            )
        return tensordict

    def forward(self, tensordict: TensorDictBase) -> TensorDictBase:
        """``loss_curl``, ``loss_taco``, ``loss_reward`` (weighted, those that are on) of a batch of slices."""
        td = self._slices(tensordict)
        keys, k, b = self.tensor_keys, self.taco.k, td.shape[0]
        done = td.get(_under_next(keys.done))
        if bool(done[:, :k].any()):
            slice_, step = (int(i) for i in done[:, :k].reshape(b, k, -1).any(-1).nonzero()[0])
            raise ValueError(
                f"slice {slice_} crosses an episode end at step {step} (< K={k}): sample with "
                f"SliceSampler(slice_len={k + 1}, end_key=('next', {keys.done!r}))"
            )
        pixels = td.get(keys.pixels)
        action = td.get(keys.action)[:, :k]
        reward = td.get(_under_next(keys.reward))[:, :k].reshape(b, k)
        terms = self.taco.terms(pixels[:, 0], action, reward, pixels[:, k])
        return TensorDict({f"loss_{term}": value for term, value in terms.items()}, batch_size=[])
