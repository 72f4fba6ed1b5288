"""Measure the offline-dataset targets on synthetic V-D4RL 84px files (kept in a temp folder, deleted after).

  PYTHONPATH=. python results/dataset_targets.py [--transitions 100000] [--out results/dataset_targets.json]

Reports: seconds to import the HDF5 shards (scan, read, checksum, write), the dataset's bytes on disk
(allocated blocks, `du`-style, and apparent size), and the median / p90 milliseconds to sample a batch of
256 on the CPU from the memory-mapped dataset with DrQ-v2 settings (frame stack 3, n-step 3) and TACO
settings (n-step 3, K = 3). Targets: import < 60 s, disk <= 2.2 GB, sampling <= 15 ms.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np
import torch

from taco_rl.runners.data.convert import import_dataset
from taco_rl.runners.data.datasets import dataset_info, load_dataset

EPISODE = 500  # V-D4RL: 500 transitions per episode (501 records with the reset)


def write_shards(folder: Path, transitions: int, episodes_per_shard: int = 20, action_dim: int = 6) -> None:
    """V-D4RL 84px layout: flat episodes, float64 action/reward/discount, int64 step_type, an extra key."""
    g = np.random.default_rng(0)
    episodes = transitions // EPISODE
    folder.mkdir(parents=True)
    for k, first in enumerate(range(0, episodes, episodes_per_shard)):
        n_eps = min(episodes_per_shard, episodes - first)
        n = n_eps * (EPISODE + 1)
        step_type = np.tile(np.r_[0, np.ones(EPISODE - 1), 2], n_eps).astype(np.int64)
        with h5py.File(folder / f"shard_{k:03d}.hdf5", "w") as f:
            obs = f.create_dataset("observation", (n, 3, 84, 84), np.uint8)
            for s in range(0, n, 2000):
                e = min(n, s + 2000)
                obs[s:e] = g.integers(0, 256, (e - s, 3, 84, 84), dtype=np.uint8)
            f["action"] = g.uniform(-1, 1, (n, action_dim))
            f["reward"] = g.uniform(0, 1, n)
            f["discount"] = np.ones(n)
            f["step_type"] = step_type
            f["physics"] = np.zeros((n, 4))


def disk_bytes(path: Path) -> tuple[int, int]:
    allocated = apparent = 0
    for p in path.rglob("*"):
        if p.is_file():
            st = p.stat()
            allocated += st.st_blocks * 512
            apparent += st.st_size
    return allocated, apparent


def time_samples(ds: Path, n: int, **settings) -> dict[str, float]:
    replay, _ = load_dataset(ds, device="cpu", **settings)
    for _ in range(20):  # warm-up
        replay.sample(256)
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        replay.sample(256)
        times.append((time.perf_counter() - t0) * 1e3)
    times.sort()
    return {"median_ms": round(statistics.median(times), 2), "p90_ms": round(times[int(0.9 * len(times))], 2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--transitions", type=int, default=100_000)
    ap.add_argument("--samples", type=int, default=100)
    ap.add_argument("--out", default="results/dataset_targets.json")
    ap.add_argument("--tmp", default=None, help="scratch folder (default: the system temp folder)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    tmp = Path(tempfile.mkdtemp(prefix="taco_ds_", dir=args.tmp))
    try:
        t0 = time.perf_counter()
        write_shards(tmp / "vd4rl" / "84px", args.transitions)
        gen_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        import_dataset("vd4rl", str(tmp / "vd4rl" / "84px"), str(tmp / "ds"), task="walker_walk")
        import_s = time.perf_counter() - t0
        info = dataset_info(tmp / "ds")
        allocated, apparent = disk_bytes(tmp / "ds")
        result = {
            "transitions": info["transitions"],
            "episodes": info["episodes"],
            "frame_shape": info["frame_shape"],
            "import_s": round(import_s, 1),
            "generate_files_s": round(gen_s, 1),
            "disk_gb": round(allocated / 1e9, 3),
            "disk_apparent_gb": round(apparent / 1e9, 3),
            "bytes_per_transition": round(allocated / info["transitions"], 1),
            "sample_256_drqv2_cpu": time_samples(tmp / "ds", args.samples, frame_stack=3, nstep=3),
            "sample_256_taco_cpu": time_samples(tmp / "ds", args.samples, frame_stack=3, nstep=3, seq_len=3),
            "load_average_1min": round(os.getloadavg()[0], 2),
            "torch_threads": torch.get_num_threads(),
            "cpus": os.cpu_count(),
            "machine": platform.processor() or platform.machine(),
            "torch": torch.__version__,
            "targets": {"import_s": "< 60", "disk_gb": "<= 2.2", "sample_ms": "<= 15"},
        }
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(json.dumps(result, indent=1))
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
