"""Cost of one TacoSAC (stable-baselines3) gradient step vs the suite's own SAC+TACO update, same run.

Both learners get 9x84x84 uint8 frames, |A| = 6, batch 256 (default), the paper's networks (feature 50,
hidden 1024, K = 3) and replays filled with the same kind of synthetic episodes.  Timed, interleaved
so machine load hits both alike (median ms over --repeats):

- ``sb3_train_ms``: ``TacoSAC.train(gradient_steps=1)``: SB3's gradient step, replay sampling included;
- ``sb3_sample_ms``: ``TacoReplayBuffer.sample`` alone;
- ``suite_update_ms``: ``SAC.update(batch)`` (agents/, aux=taco) on a sampled batch;
- ``suite_sample_ms``: the suite's ``Replay.sample`` alone.

Ratios: ``ratio_step`` = sb3_train / (suite_sample + suite_update) (a whole gradient step each) and
``ratio_vs_update_only`` = sb3_train / suite_update (the stricter one), from the medians, and
``ratio_step_paired_median``, the median over rounds of each round's ratio (robust to load changes).

    PYTHONPATH=. python results/sb3_update_cost.py --out results/sb3_update_cost_cpu.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time

import gymnasium as gym
import numpy as np
import torch

from taco_rl.runners.bench.bench import fill_replay
from taco_rl.runners.core.config import resolve
from taco_rl.runners.online.train import build_agent, make_replay
from taco_rl.sb3 import TacoSAC


class FrameEnv(gym.Env):
    """Random frames of the benchmark's shape; only its spaces matter here."""

    def __init__(self, obs_shape: tuple[int, int, int], action_dim: int) -> None:
        self.observation_space = gym.spaces.Box(0, 255, obs_shape, np.uint8)
        self.action_space = gym.spaces.Box(-1, 1, (action_dim,), np.float32)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return self.observation_space.sample(), {}

    def step(self, action):
        return self.observation_space.sample(), 0.0, False, False, {}


def fill_sb3(model: TacoSAC, episodes: int, length: int, gen: np.random.Generator) -> None:
    buf, (c, h, w), a = model.replay_buffer, model.observation_space.shape, model.action_space.shape[0]
    for _ in range(episodes):
        frames = gen.integers(0, 256, (length + 1, c, h, w), dtype=np.uint8)
        for t in range(length):
            end = t == length - 1
            buf.add(
                frames[t][None],
                frames[t + 1][None],
                gen.uniform(-1, 1, (1, a)).astype(np.float32),
                gen.random(1).astype(np.float32),
                np.array([end]),
                [{"TimeLimit.truncated": end}],
            )


def timed_ms(fn, device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    t = time.perf_counter()
    out = fn()
    if isinstance(out, dict):
        [float(v) for v in out.values()]
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return (time.perf_counter() - t) * 1000.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--size", type=int, default=84, help="frame height and width")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", default="")
    parser.add_argument("overrides", nargs="*", help="suite config overrides, e.g. hidden_dim=256")
    args = parser.parse_args()

    device = torch.device(args.device)
    cfg = resolve(
        [
            "agent=sac",
            "aux=taco",
            f"batch_size={args.batch}",
            f"image_size={args.size}",
            "nstep=1",
            f"device={args.device}",
            *args.overrides,
        ]
    )
    obs_shape, action_dim, length = (3 * cfg.frame_stack, args.size, args.size), 6, 200
    episodes = max(4, 2 * args.batch // length + 2)
    torch.manual_seed(0)
    replay = make_replay(
        dataclasses.replace(cfg, capacity=episodes * (length + 1)),
        (3, args.size, args.size),
        action_dim,
        torch.device("cpu") if device.type == "cpu" else device,
    )
    fill_replay(replay, episodes, length, action_dim, torch.Generator().manual_seed(0))
    agent = build_agent(cfg, obs_shape, action_dim, device)

    model = TacoSAC(
        "CnnPolicy",
        FrameEnv(obs_shape, action_dim),
        buffer_size=episodes * length,
        batch_size=args.batch,
        learning_rate=cfg.lr,
        tau=cfg.critic_tau,
        gamma=cfg.gamma,
        taco_k=cfg.taco_k,
        feature_dim=cfg.feature_dim,
        ent_coef=f"auto_{cfg.init_alpha}",
        policy_kwargs=dict(net_arch=[cfg.hidden_dim, cfg.hidden_dim]),
        device=device,
        seed=0,
    )
    fill_sb3(model, episodes, length, np.random.default_rng(0))
    model._logger = __import__("stable_baselines3.common.logger", fromlist=["configure"]).configure(None, [""])

    step = cfg.expl_steps + 1
    times: dict[str, list[float]] = {
        "suite_sample_ms": [],
        "suite_update_ms": [],
        "sb3_sample_ms": [],
        "sb3_train_ms": [],
    }
    for i in range(args.repeats + 1):  # the first round warms up both
        batch = replay.sample(args.batch)
        row = {
            "suite_sample_ms": timed_ms(lambda: replay.sample(args.batch), device),
            "sb3_sample_ms": timed_ms(lambda: model.replay_buffer.sample(args.batch), device),
            "suite_update_ms": timed_ms(lambda batch=batch: agent.update(batch, step), device),
            "sb3_train_ms": timed_ms(lambda: model.train(gradient_steps=1, batch_size=args.batch), device),
        }
        if i > 0:
            for key, value in row.items():
                times[key].append(value)
    result = {key: float(np.median(v)) for key, v in times.items()}
    result["ratio_step"] = result["sb3_train_ms"] / (result["suite_sample_ms"] + result["suite_update_ms"])
    result["ratio_vs_update_only"] = result["sb3_train_ms"] / result["suite_update_ms"]
    # the same ratios round by round (each round times both back to back), then their median
    paired = [
        a / (b + c)
        for a, b, c in zip(times["sb3_train_ms"], times["suite_sample_ms"], times["suite_update_ms"], strict=True)
    ]
    result["ratio_step_paired_median"] = float(np.median(paired))
    result.update(
        batch=args.batch,
        obs_shape=list(obs_shape),
        action_dim=action_dim,
        repeats=args.repeats,
        device=str(device),
        torch=torch.__version__,
        threads=torch.get_num_threads(),
        gpu=torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        samples={key: [round(x, 1) for x in v] for key, v in times.items()},
    )
    print(json.dumps(result, indent=1))
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
