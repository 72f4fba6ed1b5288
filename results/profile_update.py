"""Profile one learner update on synthetic frames: `python results/profile_update.py [key=value ...]`.

Builds the learner `taco bench` would (same config keys), runs two warm-up updates, profiles a third
with torch.profiler and prints the top operators by self CPU time (and CUDA time on a GPU).
Add `--plain` to profile the reference-style path (`taco bench --baseline`).
"""

from __future__ import annotations

import sys

import torch
from tensordict import TensorDict
from torch.profiler import ProfilerActivity, profile

from taco_rl.runners.bench.bench import as_reference
from taco_rl.runners.core.config import resolve
from taco_rl.runners.online.train import build_agent, resolve_device


def main(argv: list[str]) -> None:
    plain = "--plain" in argv
    cfg = resolve([a for a in argv if a != "--plain"])
    device = resolve_device(cfg.device)
    torch.manual_seed(cfg.seed)
    obs_shape, action_dim, b = (3 * cfg.frame_stack, cfg.image_size, cfg.image_size), 6, cfg.batch_size
    agent = build_agent(cfg, obs_shape, action_dim, device)
    if plain:
        as_reference(agent)
    frames = lambda: torch.randint(0, 256, (b, *obs_shape), dtype=torch.uint8, device=device)  # noqa: E731
    batch = TensorDict(
        {
            "obs": frames(),
            "next_obs": frames(),
            "future_obs": frames(),
            "action": torch.rand(b, action_dim, device=device) * 2 - 1,
            "action_seq": torch.rand(b, cfg.taco_k, action_dim, device=device) * 2 - 1,
            "reward": torch.rand(b, 1, device=device),
            "discount": torch.ones(b, 1, device=device),
        },
        batch_size=[b],
    )
    step = cfg.expl_steps + 1
    for _ in range(2):
        agent.update(batch, step)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        [float(v) for v in agent.update(batch, step).values()]
    key = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
    print(prof.key_averages().table(sort_by=key, row_limit=25, max_name_column_width=40))


if __name__ == "__main__":
    main(sys.argv[1:])
