"""Cost of TACO's auxiliary step through the public doors vs the suite's own batched path, same run.

Every path steps the same networks (the suite's SAC learner's encoder and action encoder; TACO's heads
copied from its TACO) on 9x84x84 uint8 frames, |A| = 6, batch 256 (default), the paper's TACO (K = 3,
feature 50, hidden 1024, CURL and reward terms). One step = augment, encode (anchor with gradients,
CURL and TACO targets in one no-grad call), loss, backward, Adam. Timed, interleaved so machine load
hits every path alike (median ms over --repeats):

- ``suite_aux_ms``: the learner's ``update_aux(batch)`` (agents/learner.py), on a replay batch;
- ``public_ms``: ``TacoLoss`` (taco_rl) on plain tensors: ``taco(obs, action_seq, reward_seq, future_obs)``;
- ``torchrl_ms``: ``taco_rl.torchrl.TacoLossModule`` on (B, K+1) slices (only with torchrl installed);
- ``windows_sample_ms``: ``WindowSampler.sample(B)`` over stored stacked observations, and
  ``replay_sample_ms``: the suite's ``Replay.sample(B)`` (frame stacks rebuilt from single frames).

``ratio_public`` = public / suite and ``ratio_torchrl`` = torchrl / suite, from the medians, and the
same ratios as the median over rounds of each round's ratio (``*_paired_median``).

    PYTHONPATH=. python results/public_module_cost.py --out results/public_module_cost_cpu.json
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from collections.abc import Callable

import numpy as np
import torch
from tensordict import TensorDict

from taco_rl import TacoLoss, WindowSampler
from taco_rl.agents import SAC
from taco_rl.runners.core.replay import Replay

K, A, STACK = 3, 6, 3


def timed_ms(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return (time.perf_counter() - start) * 1000.0


def adam_step(opt: torch.optim.Optimizer, loss: torch.Tensor) -> None:
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--size", type=int, default=84, help="frame height and width")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", default="")
    args = parser.parse_args()
    b, obs_shape = args.batch, (3 * STACK, args.size, args.size)

    torch.manual_seed(0)
    agent = SAC(obs_shape, A, aux="taco", taco_k=K, expl_steps=0)
    taco = TacoLoss(agent.encoder, A, obs_shape=obs_shape, k=K, action_encoder=agent.tok)
    taco.taco.load_state_dict(agent.aux.state_dict())
    public_opt = torch.optim.Adam(taco.parameters(), lr=1e-4, fused=True)

    # stored transitions: 4 episodes of 200 steps, long enough for any batch's windows
    length, episodes = 200, 4
    g = torch.Generator().manual_seed(0)
    frames = torch.randint(0, 256, (episodes, length + 1, 3, args.size, args.size), dtype=torch.uint8, generator=g)
    actions = torch.rand(episodes, length, A, generator=g) * 2 - 1
    rewards = torch.rand(episodes, length, generator=g)
    replay = Replay(episodes * (length + 1), (3, args.size, args.size), A, frame_stack=STACK, nstep=K, seq_len=K)
    for e in range(episodes):
        replay.add_episode(frames[e], actions[e], rewards[e], torch.ones(length))
    # the same kind of data as a learner's own storage of stacked observations
    obs_all = torch.randint(0, 256, (episodes * length, *obs_shape), dtype=torch.uint8, generator=g)
    next_all = torch.roll(obs_all, -1, 0)
    dones = (torch.arange(episodes * length) % length) == length - 1
    windows = WindowSampler(obs_all, actions.reshape(-1, A), rewards.reshape(-1), dones, next_obs=next_all, k=K)

    paths: dict[str, Callable[[], object]] = {}
    batch = replay.sample(b)
    w = windows.sample(b)
    paths["suite_aux_ms"] = lambda: agent.update_aux(batch)
    paths["public_ms"] = lambda: adam_step(public_opt, taco(**w)[0])
    try:
        from taco_rl.torchrl import TacoLossModule

        module = TacoLossModule(taco)
        pixels = torch.cat(
            [w["obs"][:, None], w["obs"][:, None].expand(-1, K - 1, -1, -1, -1), w["future_obs"][:, None]], dim=1
        ).contiguous()
        slices = TensorDict(
            {
                "pixels": pixels,
                "action": torch.cat([w["action_seq"], w["action_seq"][:, :1]], 1),
                "next": {
                    "reward": torch.cat([w["reward_seq"], w["reward_seq"][:, :1]], 1)[..., None],
                    "done": torch.zeros(b, K + 1, 1, dtype=torch.bool),
                },
            },
            batch_size=[b, K + 1],
        )
        paths["torchrl_ms"] = lambda: adam_step(public_opt, sum(module(slices).values()))
    except ImportError:
        pass
    paths["windows_sample_ms"] = lambda: windows.sample(b)
    paths["replay_sample_ms"] = lambda: replay.sample(b)

    times: dict[str, list[float]] = {key: [] for key in paths}
    for i in range(args.repeats + 1):  # the first round warms every path up
        for key, fn in paths.items():
            ms = timed_ms(fn)
            if i > 0:
                times[key].append(ms)
    result: dict[str, object] = {key: float(np.median(v)) for key, v in times.items()}
    for name in ("public", "torchrl"):
        if f"{name}_ms" in times:
            result[f"ratio_{name}"] = result[f"{name}_ms"] / result["suite_aux_ms"]  # type: ignore[operator]
            paired = [x / y for x, y in zip(times[f"{name}_ms"], times["suite_aux_ms"], strict=True)]
            result[f"ratio_{name}_paired_median"] = float(np.median(paired))
    result.update(
        batch=b,
        obs_shape=list(obs_shape),
        action_dim=A,
        k=K,
        repeats=args.repeats,
        torch=torch.__version__,
        threads=torch.get_num_threads(),
        machine=platform.processor() or "",
        rounds_ms={key: [round(v, 1) for v in values] for key, values in times.items()},
    )
    text = json.dumps(result, indent=1)
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
