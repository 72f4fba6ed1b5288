"""Why the tests run one torch thread: update time of a test-sized learner with 1 vs 2 intra-op threads.

    python results/thread_barriers.py [--rounds 5] [--updates 20]

A test-sized learner (DrQ-v2 + TACO, hidden 32, batch 16, 9x32x32 frames, as the runner tests use)
is updated in alternating rounds with torch.set_num_threads(1) and (2), in one process, so both see
the same machine load. Prints one JSON line: median ms per update for each, their ratio, and the
load average (the effect is large only when other work competes for the cores: each OpenMP parallel
region waits at a barrier for every worker, and a descheduled worker costs a scheduler slice).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

import torch
from tensordict import TensorDict

from taco_rl.agents import DrQV2


def batch(b: int = 16, a: int = 2, k: int = 3) -> TensorDict:
    frames = lambda: torch.randint(0, 256, (b, 9, 32, 32), dtype=torch.uint8)  # noqa: E731
    return TensorDict(
        {
            "obs": frames(),
            "next_obs": frames(),
            "future_obs": frames(),
            "action": torch.rand(b, a) * 2 - 1,
            "action_seq": torch.rand(b, k, a) * 2 - 1,
            "reward": torch.rand(b, 1),
            "discount": torch.full((b, 1), 0.99),
        },
        batch_size=[b],
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--updates", type=int, default=20)
    args = ap.parse_args()
    torch.manual_seed(0)
    agent = DrQV2((9, 32, 32), 2, hidden_dim=32, aux="taco", expl_steps=0)
    data = batch()
    times: dict[int, list[float]] = {1: [], 2: []}
    for _ in range(args.rounds):
        for threads in (1, 2):
            torch.set_num_threads(threads)
            agent.update(data, 10)  # warm-up at this setting
            start = time.perf_counter()
            for _ in range(args.updates):
                agent.update(data, 10)
            times[threads].append((time.perf_counter() - start) / args.updates * 1e3)
    one, two = statistics.median(times[1]), statistics.median(times[2])
    print(
        json.dumps(
            {
                "update_ms_1_thread": round(one, 2),
                "update_ms_2_threads": round(two, 2),
                "ratio_2_over_1": round(two / one, 2),
                "load_average_1min": os.getloadavg()[0],
                "cpus": os.cpu_count(),
                "rounds": args.rounds,
                "updates_per_round": args.updates,
            }
        )
    )


if __name__ == "__main__":
    main()
