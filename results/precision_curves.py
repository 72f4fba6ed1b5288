"""Compare the TACO loss curve of fp32 and bf16 training on point_reach (same seeds).

    python results/precision_curves.py [seeds...]     # writes results/precision_point_reach.csv

Each run: DrQ-v2 + TACO, batch 64, 3000 frames, train.csv logged every 250 frames.
"""

from __future__ import annotations

import csv
import sys
import tempfile
from pathlib import Path

from taco_rl.runners.core.config import resolve
from taco_rl.runners.online.train import Trainer


def curve(precision: str, seed: int, root: Path) -> list[dict[str, float]]:
    cfg = resolve(
        [
            "task=point_reach",
            "aux=taco",
            "batch_size=64",
            "frames=3000",
            "eval_every_frames=3000",
            "eval_episodes=10",
            "save_video=false",
            "log_every_frames=250",
            f"seed={seed}",
            f"precision={precision}",
            f"run_dir={root / f'{precision}-{seed}'}",
        ]
    )
    trainer = Trainer(cfg, progress=False)
    trainer.train()
    with open(trainer.run_dir / "train.csv", newline="") as f:
        rows = [r for r in csv.DictReader(f) if r.get("taco_loss")]
    with open(trainer.run_dir / "eval.csv", newline="") as f:
        final = float(list(csv.DictReader(f))[-1]["episode_return"])
    return [
        {
            "precision": precision,
            "seed": seed,
            "frame": int(r["frame"]),
            "taco_loss": float(r["taco_loss"]),
            "curl_loss": float(r["curl_loss"]),
            "final_return": final,
        }
        for r in rows
    ]


def main() -> None:
    seeds = [int(s) for s in sys.argv[1:]] or [1, 2]
    out = Path(__file__).with_name("precision_point_reach.csv")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in seeds:
            for precision in ("fp32", "bf16"):
                rows += curve(precision, seed, Path(tmp))
    with open(out, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
